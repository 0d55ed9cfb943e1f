//! Who a run is waiting for, and why.
//!
//! When a run has too few clients, the engine asks its hub
//! ([`ClientHub::why_missing`]); the daemon's hub ([`ExplainingHub`]) answers from
//! two sources:
//!
//! - the recent-handshake-failures registry of the TLS layer
//!   ([`HandshakeFailures`]): a certificate refused in the last
//!   [`RECENT`] names its holder (its CN), the cause and the last address, e.g.
//!   "partner-c's handshakes fail: its certificate expired at
//!   2026-11-30T00:00:00Z (last try from 127.0.0.1:41234, 3 s ago)"; failures
//!   without a usable certificate are named by address;
//! - the client registry of the database: partners seen before that are not
//!   connected now and whose handshakes did not fail ("not connected:
//!   partner-d (last seen …)").
//!
//! Each list is capped so a failure reason stays one readable line.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::tls_reload::HandshakeFailure;
use crate::tls_reload::failures::explain;
use fedprofile_protocol::messages::ServerEvent;

use crate::daemon::Shared;
use crate::engine::ClientHub;

#[cfg(doc)]
use crate::tls_reload::HandshakeFailures;

/// How far back failed handshakes count as the reason a partner is missing.
pub const RECENT: Duration = Duration::from_secs(15 * 60);

/// At most this many named failures, anonymous failures and absent partners.
const MAX_NAMED: usize = 5;
const MAX_ANONYMOUS: usize = 3;
const MAX_ABSENT: usize = 5;

/// The daemon's sessions, plus what is known about the partners that are not
/// connected.
#[derive(Debug)]
pub struct ExplainingHub {
    shared: Arc<Shared>,
}

impl ExplainingHub {
    /// Wraps the sessions of `shared`.
    pub fn new(shared: Arc<Shared>) -> ExplainingHub {
        ExplainingHub { shared }
    }
}

impl ClientHub for ExplainingHub {
    fn connected(&self) -> Vec<String> {
        self.shared.hub.connected()
    }

    fn send(&self, client: &str, event: ServerEvent) -> bool {
        self.shared.hub.send(client, event)
    }

    fn drop_session(&self, client: &str, why: &str) -> bool {
        self.shared.hub.drop_session(client, why)
    }

    fn why_missing(&self, connected: &[String]) -> Vec<String> {
        let now = SystemTime::now();
        let failures = self
            .shared
            .handshakes
            .since(now.checked_sub(RECENT).unwrap_or(SystemTime::UNIX_EPOCH));
        let known: Vec<(String, String)> = match self.shared.store.clients() {
            Ok(rows) => rows.into_iter().map(|r| (r.id, r.last_seen)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the client registry to explain who is missing");
                Vec::new()
            }
        };
        explain_missing(&known, &failures, connected, now)
    }
}

/// The sentences for [`ClientHub::why_missing`]: `known` are (id, last seen)
/// from the client registry, `failures` the recent failed handshakes (newest
/// first), `connected` the clients connected now.
pub fn explain_missing(
    known: &[(String, String)],
    failures: &[HandshakeFailure],
    connected: &[String],
    now: SystemTime,
) -> Vec<String> {
    let is_connected = |id: &str| connected.iter().any(|c| c == id);
    let mut out = Vec::new();
    let mut named: Vec<&HandshakeFailure> = failures
        .iter()
        .filter(|f| f.identity.as_deref().is_some_and(|id| !is_connected(id)))
        .collect();
    named.sort_by(|a, b| a.identity.cmp(&b.identity));
    let failing: Vec<&str> = named.iter().filter_map(|f| f.identity.as_deref()).collect();
    out.extend(named.iter().take(MAX_NAMED).map(|f| explain(f, now)));
    if named.len() > MAX_NAMED {
        out.push(format!(
            "{} more partners' handshakes fail",
            named.len() - MAX_NAMED
        ));
    }
    let anonymous: Vec<&HandshakeFailure> =
        failures.iter().filter(|f| f.identity.is_none()).collect();
    out.extend(
        anonymous
            .iter()
            .take(MAX_ANONYMOUS)
            .map(|f| explain(f, now)),
    );

    let absent: Vec<String> = known
        .iter()
        .filter(|(id, _)| !is_connected(id) && !failing.contains(&id.as_str()))
        .map(|(id, last_seen)| format!("{id} (last seen {last_seen})"))
        .collect();
    if !absent.is_empty() {
        let mut list = absent
            .iter()
            .take(MAX_ABSENT)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if absent.len() > MAX_ABSENT {
            list.push_str(&format!(" and {} more", absent.len() - MAX_ABSENT));
        }
        out.push(format!(
            "not connected, with no failed handshake seen: {list}"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::tls_reload::FailureCause;

    use super::*;

    fn failure(identity: Option<&str>, port: u16, ago: u64, now: SystemTime) -> HandshakeFailure {
        HandshakeFailure {
            identity: identity.map(str::to_string),
            cause: FailureCause::Expired,
            detail: "its certificate expired at 2026-11-30T00:00:00Z".into(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            at: now - Duration::from_secs(ago),
            count: 1,
        }
    }

    #[test]
    fn missing_partners_are_named_with_the_cause_of_their_failed_handshakes() {
        let now = SystemTime::now();
        let failures = [
            failure(Some("partner-c"), 41_234, 3, now),
            // Connected since: not a reason any more.
            failure(Some("partner-a"), 41_000, 60, now),
            failure(None, 41_500, 5, now),
        ];
        let known = [
            ("partner-a".to_string(), "2026-12-01T10:00:00Z".to_string()),
            ("partner-c".to_string(), "2026-12-01T10:00:00Z".to_string()),
            ("partner-d".to_string(), "2026-11-01T09:00:00Z".to_string()),
        ];
        let connected = ["partner-a".to_string(), "partner-b".to_string()];
        let why = explain_missing(&known, &failures, &connected, now);
        assert_eq!(
            why,
            [
                "partner-c's handshakes fail: its certificate expired at 2026-11-30T00:00:00Z (last try from 127.0.0.1:41234, 3 s ago)",
                "handshakes from 127.0.0.1 fail: its certificate expired at 2026-11-30T00:00:00Z (last 5 s ago)",
                "not connected, with no failed handshake seen: partner-d (last seen 2026-11-01T09:00:00Z)",
            ]
        );
        assert!(explain_missing(&[], &[], &connected, now).is_empty());
    }

    #[test]
    fn long_lists_are_capped() {
        let now = SystemTime::now();
        let known: Vec<(String, String)> = (0..20)
            .map(|i| (format!("p{i:02}"), "t".to_string()))
            .collect();
        let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let failures: Vec<HandshakeFailure> =
            names.iter().map(|n| failure(Some(n), 1, 1, now)).collect();
        let why = explain_missing(&known, &failures, &[], now);
        assert_eq!(why.len(), MAX_NAMED + 2);
        assert_eq!(why[MAX_NAMED], "5 more partners' handshakes fail");
        assert!(why[MAX_NAMED + 1].ends_with("p04 (last seen t) and 15 more"));
    }
}
