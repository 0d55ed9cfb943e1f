//! What a run leaves behind: `model.json`, `metrics.csv` (one row per round),
//! `summary.json`, and the live progress line printed per round.

use std::io::Write;
use std::path::{Path, PathBuf};

use fedprofile_learning::model_file::{ModelFile, Provenance, Target};
use serde::Serialize;

use crate::engine::{RoundRecord, RunObserver, RunOutcome, RunSnapshot};

/// Writing an output file failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written.
    #[error("cannot write '{path}': {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model file could not be built or saved.
    #[error("cannot save the model: {0}")]
    Model(String),
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, contents).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Prints one progress line per round on stdout.
#[derive(Debug, Default)]
pub struct ProgressPrinter;

impl RunObserver for ProgressPrinter {
    fn round_finished(&mut self, run: &RunSnapshot<'_>, r: &RoundRecord) {
        let metrics = match &r.metrics {
            Some(m) => format!(
                "auc {} | log loss {:.4} | accuracy {:.4}",
                m.auc.map_or("n/a".to_string(), |a| format!("{a:.4}")),
                m.log_loss,
                m.accuracy
            ),
            None => "not evaluated".to_string(),
        };
        let epsilon = r
            .epsilon
            .map(|e| format!(" | ε {e:.3}"))
            .unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "round {:>3}/{} | clients {}/{} | {metrics}{epsilon} | {:.0} ms",
            r.round, run.rounds, r.accepted, r.selected, r.round_ms
        );
        let _ = out.flush();
    }

    fn note(&mut self, message: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{message}");
        let _ = out.flush();
    }
}

/// The coordinator's peak resident memory in KiB, where the OS tells it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    run_id: &'a str,
    completed: bool,
    failure: Option<&'a str>,
    rounds: usize,
    auc: Option<f64>,
    log_loss: Option<f64>,
    accuracy: Option<f64>,
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
    evaluated_examples: Option<u64>,
    clients: &'a [String],
    epsilon: Option<f64>,
    not_private: &'a [String],
    rejected_updates: &'a std::collections::BTreeMap<String, u64>,
    refusals: &'a std::collections::BTreeMap<String, String>,
    median_round_ms: Option<f64>,
    median_train_phase_ms: Option<f64>,
    median_client_train_ms: Option<f64>,
    median_overhead_ms: Option<f64>,
    peak_rss_kib: Option<u64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Writes `model.json`, `metrics.csv` and `summary.json` into `dir`.
pub fn write_outputs(
    dir: &Path,
    outcome: &RunOutcome,
    target: &Target,
    created_at: &str,
) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let last_metrics = outcome.rounds.iter().rev().find_map(|r| r.metrics);

    if let Some(model) = &outcome.model {
        let lr = fedprofile_learning::LogisticRegression::from_params(model.params.clone())
            .map_err(|e| ReportError::Model(e.to_string()))?;
        let file = ModelFile::new(
            target.clone(),
            model.features.clone(),
            &lr,
            Provenance {
                run_id: outcome.run_id.clone(),
                rounds: outcome.rounds.len() as u32,
                clients: outcome.contributors.clone(),
                created_at: created_at.to_string(),
                metrics: last_metrics,
            },
        )
        .map_err(|e| ReportError::Model(e.to_string()))?;
        file.save(dir.join("model.json"))
            .map_err(|e| ReportError::Model(e.to_string()))?;
    }

    let mut csv = String::from(
        "round,selected,accepted,rejected,refused,attempts,train_loss,auc,log_loss,accuracy,precision,recall,f1,evaluated_clients,epsilon,round_ms,train_phase_ms,max_client_train_ms,overhead_ms,eval_phase_ms\n",
    );
    for r in &outcome.rounds {
        let m = |f: fn(&fedprofile_learning::metrics::Metrics) -> Option<f64>| {
            r.metrics
                .as_ref()
                .and_then(f)
                .map(|v| format!("{v:.6}"))
                .unwrap_or_default()
        };
        csv.push_str(&format!(
            "{},{},{},{},{},{},{:.6},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3}\n",
            r.round,
            r.selected,
            r.accepted,
            r.rejected,
            r.refused,
            r.attempts,
            r.train_loss,
            m(|m| m.auc),
            m(|m| Some(m.log_loss)),
            m(|m| Some(m.accuracy)),
            m(|m| Some(m.precision)),
            m(|m| Some(m.recall)),
            m(|m| Some(m.f1)),
            r.evaluated_clients,
            r.epsilon.map(|e| format!("{e:.6}")).unwrap_or_default(),
            r.round_ms,
            r.train_phase_ms,
            r.max_client_train_ms,
            r.overhead_ms(),
            r.eval_phase_ms,
        ));
    }
    write_file(&dir.join("metrics.csv"), csv.as_bytes())?;

    let summary = Summary {
        run_id: &outcome.run_id,
        completed: outcome.completed,
        failure: outcome.failure.as_deref(),
        rounds: outcome.rounds.len(),
        auc: last_metrics.as_ref().and_then(|m| m.auc),
        log_loss: last_metrics.as_ref().map(|m| m.log_loss),
        accuracy: last_metrics.as_ref().map(|m| m.accuracy),
        precision: last_metrics.as_ref().map(|m| m.precision),
        recall: last_metrics.as_ref().map(|m| m.recall),
        f1: last_metrics.as_ref().map(|m| m.f1),
        evaluated_examples: last_metrics.as_ref().map(|m| m.examples),
        clients: &outcome.contributors,
        epsilon: outcome.rounds.iter().rev().find_map(|r| r.epsilon),
        not_private: &outcome.not_private,
        rejected_updates: &outcome.rejections,
        refusals: &outcome.refusals,
        median_round_ms: median(outcome.rounds.iter().map(|r| r.round_ms).collect()),
        median_train_phase_ms: median(outcome.rounds.iter().map(|r| r.train_phase_ms).collect()),
        median_client_train_ms: median(
            outcome
                .rounds
                .iter()
                .map(|r| r.max_client_train_ms)
                .collect(),
        ),
        median_overhead_ms: median(
            outcome
                .rounds
                .iter()
                .map(RoundRecord::overhead_ms)
                .collect(),
        ),
        peak_rss_kib: peak_rss_kib(),
    };
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| ReportError::Model(e.to_string()))?;
    write_file(&dir.join("summary.json"), json.as_bytes())?;
    Ok(())
}

/// Writes `auc.png`, `log_loss.png` and, under DP, `epsilon.png` into `dir`
/// (best effort: a plot that cannot be drawn is logged, not fatal).
pub fn write_plots(dir: &Path, outcome: &RunOutcome) {
    use fedprofile_plot::{EpsilonPoint, Series, plot_cumulative_epsilon, plot_series};
    let series = |label: &str, f: fn(&RoundRecord) -> Option<f64>| Series {
        label: label.to_string(),
        points: outcome
            .rounds
            .iter()
            .filter_map(|r| f(r).map(|v| (u64::from(r.round), v)))
            .collect(),
    };
    let auc = series("pooled AUC", |r| r.metrics.and_then(|m| m.auc));
    let loss = series("pooled log loss", |r| r.metrics.map(|m| m.log_loss));
    let train = series("mean training loss", |r| {
        (r.train_loss > 0.0).then_some(r.train_loss)
    });
    let results = [
        (!auc.points.is_empty()).then(|| {
            plot_series(
                &[auc],
                &format!("pooled AUC, run {}", outcome.run_id),
                "AUC",
                &dir.join("auc.png"),
            )
        }),
        (!loss.points.is_empty()).then(|| {
            plot_series(
                &[loss, train],
                &format!("log loss, run {}", outcome.run_id),
                "log loss",
                &dir.join("log_loss.png"),
            )
        }),
    ];
    let mut previous = 0.0;
    let eps: Vec<EpsilonPoint> = outcome
        .rounds
        .iter()
        .filter_map(|r| {
            r.epsilon.map(|e| {
                let p = EpsilonPoint {
                    round: u64::from(r.round),
                    epsilon_spent: (e - previous).max(0.0),
                    cumulative: e,
                };
                previous = e;
                p
            })
        })
        .collect();
    let eps_result = (!eps.is_empty()).then(|| {
        plot_cumulative_epsilon(
            &eps,
            None,
            &format!("privacy loss, run {}", outcome.run_id),
            &dir.join("epsilon.png"),
        )
    });
    for r in results.into_iter().flatten().chain(eps_result) {
        if let Err(e) = r {
            tracing::warn!("plot not written: {e}");
        }
    }
}
