//! What a finished run registers in the model registry (`crate::store`'s
//! `model_versions`): the version's target, metrics, ε and data fingerprint,
//! derived from the run's outcome. The store makes it durable together with
//! the run's finish.
//!
//! - **Target**: the model's target column (the label the clients' schema
//!   declares, as written in `model.json`). A k-means model has no label: its
//!   target is the run's name (`[run] name`), so the runs of one segment model
//!   share a name.
//! - **Metrics**: the pooled metrics of the run's last evaluation (JSON
//!   `{"metrics": …, "quality": …}`, as in `summary.json`).
//! - **ε**: the run's cumulative ε as the coordinator knows it: the largest ε
//!   any partner reported (record-level DP) or the coordinator's own ledger
//!   (client-level DP); none without DP.
//! - **Data fingerprint**: SHA-256 over the training examples each partner
//!   reported in the statistics phase and the model's feature encoding (the
//!   federated means and standard deviations): what the coordinator knows of
//!   the data, never rows. Two runs over the same partners' data have the same
//!   fingerprint.
//!
//! An update run (`[update]`) warm-starts from its target's champion: the
//! champion's model file is copied to the run folder (`champion.json`) when the
//! run starts, and a resumed run keeps that copy. A target without a champion
//! fails the update run at its start, with that reason (an update needs
//! something to challenge; the first version comes from a run without
//! `[update]`). At the finish, [`decide`] compares the two figures of the final
//! evaluation round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedprofile_config::run::{RunConfig, UpdateConfig, UpdateDecision};
use fedprofile_learning::{LabelNeed, ModelDocument};
use fedprofile_privacy::hash_chain::sha256_hex;

use crate::engine::{RoundRecord, RunOutcome};
use crate::store::Store;

/// The champion's copy in an update run's folder.
pub const CHAMPION_FILE: &str = "champion.json";

/// Copies the champion of `update.target` into `run_dir` (unless a resumed
/// run has it there already) and returns its path, the run's warm start.
/// `Err`: the sentence the run fails with.
pub fn prepare_update(
    store: &Store,
    run_dir: &Path,
    update: &UpdateConfig,
) -> Result<PathBuf, String> {
    let path = run_dir.join(CHAMPION_FILE);
    if path.exists() {
        return Ok(path);
    }
    let target = &update.target;
    let champion = store
        .champion(target)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "update.target '{target}' has no champion yet: train its first version with a run without [update]"
            )
        })?;
    std::fs::create_dir_all(run_dir)
        .and_then(|()| {
            let partial = run_dir.join(format!("{CHAMPION_FILE}.partial"));
            std::fs::write(&partial, champion.model_json.as_bytes())?;
            std::fs::rename(&partial, &path)
        })
        .map_err(|e| {
            format!(
                "cannot copy the champion {} to '{}': {e}",
                champion.name(),
                path.display()
            )
        })?;
    Ok(path)
}

/// The verdict of a finished update run: which champion it challenged (the
/// one its `champion.json` came from) and how the two models compare on the
/// final evaluation round's `update.metric`.
pub fn decide(
    store: &Store,
    run_dir: &Path,
    update: &UpdateConfig,
    outcome: &RunOutcome,
) -> Result<UpdateDecision, String> {
    let path = run_dir.join(CHAMPION_FILE);
    let doc = ModelDocument::load(&path).map_err(|e| e.to_string())?;
    let parent = store
        .model_version_of_run(&doc.provenance().run_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "'{}' names run {}, which registered no model version",
                path.display(),
                doc.provenance().run_id
            )
        })?;
    let last = outcome.rounds.last();
    let challenger = last.and_then(|r| update.metric.value(r.metrics.as_ref(), r.quality.as_ref()));
    let champion = last
        .and_then(|r| r.champion.as_ref())
        .and_then(|c| update.metric.value(c.metrics.as_ref(), c.quality.as_ref()));
    Ok(update.decide(parent.version, challenger, champion))
}

/// A version's target: the label column, or the run's name for a family
/// without a label (k-means).
pub fn target_of(config: &RunConfig, outcome: &RunOutcome) -> String {
    match (config.model.label_need(), &outcome.target) {
        (LabelNeed::None, _) | (_, None) => config.name.clone(),
        (_, Some((column, _))) => column.clone(),
    }
}

/// The pooled metrics of the last evaluation, as the registry stores them.
pub fn metrics_json(rounds: &[RoundRecord]) -> String {
    let metrics = rounds.iter().rev().find_map(|r| r.metrics);
    let quality = rounds.iter().rev().find_map(|r| r.quality.clone());
    serde_json::json!({ "metrics": metrics, "quality": quality }).to_string()
}

/// The stored metrics as one line (`auc 0.8507 | log loss 0.4121`, or the
/// family's quality headline).
pub fn metrics_headline(metrics_json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Stored {
        metrics: Option<fedprofile_learning::Metrics>,
        quality: Option<fedprofile_learning::Quality>,
    }
    match serde_json::from_str::<Stored>(metrics_json) {
        Ok(Stored {
            quality: Some(q), ..
        }) => crate::report::headline(&q),
        Ok(Stored {
            metrics: Some(m), ..
        }) => format!(
            "auc {} | log loss {:.4}",
            m.auc.map_or("-".into(), |a| format!("{a:.4}")),
            m.log_loss
        ),
        _ => "-".into(),
    }
}

/// The run's cumulative ε, as the last round reported it.
pub fn epsilon(rounds: &[RoundRecord]) -> Option<f64> {
    rounds.iter().rev().find_map(|r| r.epsilon)
}

/// The data fingerprint (see the module doc).
pub fn data_fingerprint(outcome: &RunOutcome) -> String {
    #[derive(serde::Serialize)]
    struct Fingerprinted<'a> {
        examples: &'a BTreeMap<String, u64>,
        features: Option<&'a fedprofile_learning::FeatureSpec>,
    }
    let text = serde_json::to_string(&Fingerprinted {
        examples: &outcome.reported_examples,
        features: outcome.model.as_ref().map(|m| &m.features),
    })
    .unwrap_or_default();
    sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_the_row_counts() {
        let mut outcome = RunOutcome {
            privacy: None,
            run_id: "r".into(),
            completed: true,
            cancelled: None,
            failure: None,
            model: None,
            rounds: Vec::new(),
            rejections: BTreeMap::new(),
            refusals: BTreeMap::new(),
            excluded: BTreeMap::new(),
            budget_refusals: BTreeMap::new(),
            contributors: Vec::new(),
            not_private: Vec::new(),
            target: None,
            classes: Vec::new(),
            reported_examples: BTreeMap::from([("a".to_string(), 10)]),
        };
        let first = data_fingerprint(&outcome);
        assert_eq!(first.len(), 64);
        assert_eq!(first, data_fingerprint(&outcome));
        outcome.reported_examples.insert("a".into(), 11);
        assert_ne!(first, data_fingerprint(&outcome));
    }
}
