//! Partners follow the champion: the coordinator sends each following client
//! (a client node whose config has a `[follow]` section, `Hello.follows`) the
//! champion of every target it does not hold, and records what it holds.
//!
//! The contract (`docs/updates.md`, "Partners follow the champion"):
//! - **The registry change is committed first, then sent.** A champion is
//!   pushed ([`announce`]) only after the transaction that made it champion
//!   (a run's finish, `model promote`, `model rollback`) committed. A crash in
//!   between loses the push, never the change.
//! - **A push may be lost; the next connection repairs it.** A client reports
//!   the versions it holds completely (`Hello.held`: target, version and the
//!   SHA-256 of its model file) when it connects; [`converge`] sends it every
//!   champion whose version or fingerprint differs. So after a restart of
//!   either side, or a push that never arrived, the client ends with the
//!   registry's champion at its next connection.
//! - **The client writes atomically and acknowledges.** It writes the model
//!   and its outputs (temp file, fsync, rename), then records the version as
//!   held, then acknowledges ([`crate::store::PartnerModelRow`], `model show`).
//!   A client that crashed half way still reports its previous version and is
//!   sent the champion again.

use fedprofile_protocol::messages::{ChampionPush, HeldModel, ServerEvent};

use crate::store::{ModelVersionRow, Store, StoreError};

/// Where champions are sent: the connected clients that follow them.
pub trait Followers {
    /// The connected clients that follow the champions.
    fn followers(&self) -> Vec<String>;
    /// Sends `event` to `client`; false if it is not connected.
    fn send_to(&self, client: &str, event: ServerEvent) -> bool;
}

/// The version a registry row is, with its model file's fingerprint.
pub fn held(row: &ModelVersionRow) -> HeldModel {
    HeldModel {
        target: row.target.clone(),
        version: row.version,
        fingerprint: fedprofile_privacy::hash_chain::sha256_hex(row.model_json.as_bytes()),
    }
}

/// The message carrying `champion`.
pub fn push(champion: &ModelVersionRow) -> ServerEvent {
    ServerEvent::Champion(ChampionPush {
        model: held(champion),
        model_json: champion.model_json.clone(),
    })
}

/// The champions a client holding `holds` lacks: every champion whose
/// target it does not hold at that version with that fingerprint.
pub fn lacking<'a>(
    holds: &[HeldModel],
    champions: &'a [ModelVersionRow],
) -> Vec<&'a ModelVersionRow> {
    champions
        .iter()
        .filter(|c| !holds.contains(&held(c)))
        .collect()
}

/// Sends a client that just connected, holding `holds`, every champion it
/// lacks; returns how many were sent.
pub fn converge(
    hub: &dyn Followers,
    client: &str,
    holds: &[HeldModel],
    champions: &[ModelVersionRow],
) -> usize {
    lacking(holds, champions)
        .into_iter()
        .filter(|c| {
            tracing::info!(client = %client, "sending champion {}", c.name());
            hub.send_to(client, push(c))
        })
        .count()
}

/// Sends the (just committed) champion of `target` to every follower;
/// returns how many it was sent to. Nothing is sent when `target` has no
/// champion.
pub fn announce(store: &Store, hub: &dyn Followers, target: &str) -> Result<usize, StoreError> {
    let Some(champion) = store.champion(target)? else {
        return Ok(0);
    };
    let event = push(&champion);
    let sent = hub
        .followers()
        .iter()
        .filter(|client| hub.send_to(client, event.clone()))
        .count();
    tracing::info!(
        "champion {} sent to {sent} following partners",
        champion.name()
    );
    Ok(sent)
}

/// Every target's champion.
pub fn champions(store: &Store) -> Result<Vec<ModelVersionRow>, StoreError> {
    Ok(store
        .model_versions(None)?
        .into_iter()
        .filter(|v| v.status == crate::store::ModelStatus::Champion)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use crate::store::ModelStatus;

    fn version(target: &str, version: u32, model: &str) -> ModelVersionRow {
        ModelVersionRow {
            target: target.into(),
            version,
            run_id: format!("run-{version}"),
            family: "logistic_regression".into(),
            metrics_json: "{}".into(),
            epsilon: None,
            data_fingerprint: String::new(),
            parent_version: None,
            model_json: model.into(),
            status: ModelStatus::Champion,
            reason: String::new(),
            replaced_version: None,
            decision_json: None,
            registered_at: String::new(),
        }
    }

    /// Followers whose connections the test opens and cuts; a client that is
    /// cut loses what is sent to it. `holds` is what each client has written
    /// (a client writes every champion it receives).
    #[derive(Default)]
    struct Net {
        connected: Mutex<Vec<String>>,
        holds: Mutex<BTreeMap<String, Vec<HeldModel>>>,
    }

    impl Followers for Net {
        fn followers(&self) -> Vec<String> {
            self.connected.lock().unwrap().clone()
        }
        fn send_to(&self, client: &str, event: ServerEvent) -> bool {
            if !self.connected.lock().unwrap().iter().any(|c| c == client) {
                return false;
            }
            let ServerEvent::Champion(push) = event else {
                return false;
            };
            let mut holds = self.holds.lock().unwrap();
            let held = holds.entry(client.to_string()).or_default();
            held.retain(|h| h.target != push.model.target);
            held.push(push.model);
            true
        }
    }

    impl Net {
        fn held(&self, client: &str) -> Vec<HeldModel> {
            self.holds
                .lock()
                .unwrap()
                .get(client)
                .cloned()
                .unwrap_or_default()
        }
    }

    #[test]
    fn a_client_lacks_a_champion_it_holds_at_another_version_or_fingerprint() {
        let v2 = version("churn", 2, "{\"v\":2}");
        let seg = version("segments", 1, "{\"k\":3}");
        let champions = [v2.clone(), seg.clone()];
        assert_eq!(lacking(&[], &champions).len(), 2);
        let mut holds = vec![held(&v2), held(&seg)];
        assert!(lacking(&holds, &champions).is_empty());
        // Same version number, other bytes (a file the client wrote badly).
        holds[0].fingerprint = "0".repeat(64);
        assert_eq!(lacking(&holds, &champions), [&v2]);
        // An older version.
        holds[0] = held(&version("churn", 1, "{\"v\":1}"));
        assert_eq!(lacking(&holds, &champions), [&v2]);
    }

    #[test]
    fn a_lost_push_is_repaired_when_the_client_reconnects() {
        let net = Net::default();
        *net.connected.lock().unwrap() = vec!["a".into(), "b".into()];
        let v1 = version("churn", 1, "{\"v\":1}");
        // v1 is champion and announced: both write it.
        for client in ["a", "b"] {
            assert_eq!(
                converge(&net, client, &net.held(client), std::slice::from_ref(&v1)),
                1
            );
        }
        // b is cut off, then v2 is promoted and announced: b's push is lost.
        net.connected.lock().unwrap().retain(|c| c != "b");
        let v2 = version("churn", 2, "{\"v\":2}");
        let sent = net
            .followers()
            .iter()
            .filter(|c| net.send_to(c, push(&v2)))
            .count();
        assert_eq!(sent, 1);
        assert_eq!(net.held("a"), [held(&v2)]);
        assert_eq!(net.held("b"), [held(&v1)]);
        // b reconnects reporting v1: it is sent v2; a, holding v2, nothing.
        net.connected.lock().unwrap().push("b".into());
        let champions = [v2.clone()];
        assert_eq!(converge(&net, "b", &net.held("b"), &champions), 1);
        assert_eq!(converge(&net, "a", &net.held("a"), &champions), 0);
        assert_eq!(net.held("b"), [held(&v2)]);
        // A rollback to v1 while b is away again converges the same way.
        net.connected.lock().unwrap().retain(|c| c != "b");
        let champions = [v1.clone()];
        for c in net.followers() {
            net.send_to(&c, push(&v1));
        }
        net.connected.lock().unwrap().push("b".into());
        assert_eq!(converge(&net, "b", &net.held("b"), &champions), 1);
        assert_eq!(net.held("a"), net.held("b"));
        assert_eq!(net.held("b"), [held(&v1)]);
    }
}
