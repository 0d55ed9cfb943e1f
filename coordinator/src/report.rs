//! What a run leaves behind: `model.json`, `metrics.csv` (one row per round),
//! `summary.json`, and the live progress line printed per round.

use fedprofile_config::run::UpdateDecision;
use std::io::Write;
use std::path::{Path, PathBuf};

use fedprofile_learning::model_file::Target;
use fedprofile_learning::{
    AnyModel, ModelDocument, ModelFamily, ModelMetrics, ModelTarget, Quality, RunProvenance,
};
use fedprofile_protocol::messages::ModelSnapshot;
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

/// Writes `path` atomically: the contents go to a temporary file beside it,
/// which is flushed to disk and then renamed over `path`, so a reader (or a
/// crash) sees the old file or the new one, never half of one.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    use std::io::Write;
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map_or_else(|| std::ffi::OsString::from("report"), |n| n.to_os_string());
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(&name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(err)
}

/// A number written with a fixed number of decimals (`metrics.csv` keeps the
/// precision it always had: 6 decimals for metrics, 3 for milliseconds).
#[derive(Debug, Clone, Copy)]
struct Fixed<const DECIMALS: usize>(f64);

impl<const DECIMALS: usize> serde::Serialize for Fixed<DECIMALS> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:.*}", DECIMALS, self.0))
    }
}

type Metric = Option<Fixed<6>>;
type Millis = Fixed<3>;

/// One row of `metrics.csv` (one round); empty cells are metrics the run's
/// family does not have. The column names and order are a stable format.
#[derive(Debug, serde::Serialize)]
struct MetricsRow {
    round: u32,
    selected: usize,
    accepted: usize,
    rejected: usize,
    refused: usize,
    attempts: u32,
    train_loss: Metric,
    auc: Metric,
    log_loss: Metric,
    accuracy: Metric,
    precision: Metric,
    recall: Metric,
    f1: Metric,
    evaluated_clients: usize,
    epsilon: Metric,
    round_ms: Millis,
    train_phase_ms: Millis,
    max_client_train_ms: Millis,
    overhead_ms: Millis,
    eval_phase_ms: Millis,
    r2: Metric,
    rmse: Metric,
    mae: Metric,
    mse: Metric,
    macro_f1: Metric,
    inertia: Metric,
    mean_inertia: Metric,
}

impl MetricsRow {
    fn of(r: &RoundRecord) -> MetricsRow {
        let binary = |f: fn(&fedprofile_learning::metrics::Metrics) -> Option<f64>| {
            r.metrics.as_ref().and_then(f).map(Fixed)
        };
        let multiclass = |f: fn(&fedprofile_learning::MulticlassMetrics) -> f64| match &r.quality {
            Some(Quality::Multiclass(m)) => Some(Fixed(f(m))),
            _ => None,
        };
        let regression =
            |f: fn(&fedprofile_learning::RegressionMetrics) -> Option<f64>| match &r.quality {
                Some(Quality::Regression(m)) => f(m).map(Fixed),
                _ => None,
            };
        let clustering = |mean: bool| match &r.quality {
            Some(Quality::Clustering {
                inertia,
                mean_inertia,
                ..
            }) => Some(Fixed(if mean { *mean_inertia } else { *inertia })),
            _ => None,
        };
        MetricsRow {
            round: r.round,
            selected: r.selected,
            accepted: r.accepted,
            rejected: r.rejected,
            refused: r.refused,
            attempts: r.attempts,
            train_loss: r.released_train_loss().map(Fixed),
            auc: binary(|m| m.auc),
            log_loss: binary(|m| Some(m.log_loss)).or(multiclass(|m| m.log_loss)),
            accuracy: binary(|m| Some(m.accuracy)).or(multiclass(|m| m.accuracy)),
            precision: binary(|m| Some(m.precision)),
            recall: binary(|m| Some(m.recall)),
            f1: binary(|m| Some(m.f1)),
            evaluated_clients: r.evaluated_clients,
            epsilon: r.epsilon.map(Fixed),
            round_ms: Fixed(r.round_ms),
            train_phase_ms: Fixed(r.train_phase_ms),
            max_client_train_ms: Fixed(r.max_client_train_ms),
            overhead_ms: Fixed(r.overhead_ms()),
            eval_phase_ms: Fixed(r.eval_phase_ms),
            r2: regression(|m| m.r2),
            rmse: regression(|m| Some(m.rmse)),
            mae: regression(|m| Some(m.mae)),
            mse: regression(|m| Some(m.mse)),
            macro_f1: multiclass(|m| m.macro_f1),
            inertia: clustering(false),
            mean_inertia: clustering(true),
        }
    }
}

/// Prints one progress line per round on stdout.
#[derive(Debug, Default)]
pub struct ProgressPrinter;

impl RunObserver for ProgressPrinter {
    fn round_finished(&mut self, run: &RunSnapshot<'_>, r: &RoundRecord) {
        let metrics = match (&r.metrics, &r.quality) {
            (Some(m), _) => format!(
                "auc {} | log loss {:.4} | accuracy {:.4}",
                m.auc.map_or("n/a".to_string(), |a| format!("{a:.4}")),
                m.log_loss,
                m.accuracy
            ),
            (None, Some(q)) => headline(q),
            (None, None) => "not evaluated".to_string(),
        };
        let epsilon = r
            .epsilon
            .map(|e| format!(" | ε {e:.3}"))
            .unwrap_or_default();
        let notes = round_notes(r);
        let notes = if notes.is_empty() {
            notes
        } else {
            format!(" | {notes}")
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "round {:>3}/{} | clients {}/{} | {metrics}{epsilon}{notes} | {:.0} ms",
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

/// What a round's progress line and `run watch` say beyond the metrics: who
/// refused and why (kind), and whether the round changed nothing.
pub fn round_notes(r: &RoundRecord) -> String {
    let mut parts = Vec::new();
    if !r.refusals.is_empty() {
        let who: Vec<String> = r
            .refusals
            .iter()
            .map(|x| format!("{} ({}: {})", x.client, x.kind.as_str(), x.reason))
            .collect();
        parts.push(format!("refused: {}", who.join("; ")));
    }
    if r.skipped.is_some() {
        parts.push("no update (results charged and lost in a restart)".to_string());
    }
    parts.join(" | ")
}

/// One line of the pooled metrics of a linear, softmax or k-means model.
pub fn headline(q: &Quality) -> String {
    match q {
        Quality::Regression(m) => format!(
            "r2 {} | rmse {:.4} | mae {:.4}",
            m.r2.map_or("n/a".to_string(), |r| format!("{r:.4}")),
            m.rmse,
            m.mae
        ),
        Quality::Multiclass(m) => format!(
            "accuracy {:.4} | log loss {:.4} | macro f1 {:.4}",
            m.accuracy, m.log_loss, m.macro_f1
        ),
        Quality::Clustering {
            inertia,
            mean_inertia,
            counts,
            ..
        } => format!("inertia {inertia:.1} (mean {mean_inertia:.4}) | segment sizes {counts:?}"),
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
    model: &'a str,
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
    /// Pooled metrics of a linear, softmax or k-means model after the last evaluation.
    quality: Option<&'a Quality>,
    clients: &'a [String],
    epsilon: Option<f64>,
    not_private: &'a [String],
    rejected_updates: &'a std::collections::BTreeMap<String, u64>,
    refusals: &'a std::collections::BTreeMap<String, String>,
    /// Clients left out of the run after refusing for good (budget, policy), with why.
    excluded_clients: &'a std::collections::BTreeMap<String, String>,
    /// Rounds committed without an update, with why.
    skipped_rounds: Vec<SkippedRound<'a>>,
    median_round_ms: Option<f64>,
    median_train_phase_ms: Option<f64>,
    median_client_train_ms: Option<f64>,
    median_overhead_ms: Option<f64>,
    peak_rss_kib: Option<u64>,
    /// An update run's verdict: both figures, the margin, promoted or not and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    update: Option<&'a UpdateDecision>,
}

#[derive(Debug, Serialize)]
struct SkippedRound<'a> {
    round: u32,
    reason: &'a str,
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

/// The run's model as a [`ModelDocument`], the one writer of every family
/// (`model.json` in the run folder, and the model registry's copy).
pub fn model_document(
    outcome: &RunOutcome,
    model: &ModelSnapshot,
    target: &Target,
    created_at: &str,
) -> Result<ModelDocument, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Model(e.to_string());
    let family = ModelFamily::parse(&model.model_type)
        .ok_or_else(|| ReportError::Model(format!("unknown model type '{}'", model.model_type)))?;
    let last_metrics = outcome.rounds.iter().rev().find_map(|r| r.metrics);
    let last_quality = outcome.rounds.iter().rev().find_map(|r| r.quality.as_ref());
    ModelDocument::new(
        AnyModel::from_parts(family, model.params.clone(), model.outputs).map_err(|e| err(&e))?,
        model.features.clone(),
        ModelTarget {
            column: target.column.clone(),
            positive_value: Some(target.positive_value.clone()),
        },
        outcome.classes.clone(),
        RunProvenance {
            run_id: outcome.run_id.clone(),
            rounds: outcome.rounds.len() as u32,
            clients: outcome.contributors.clone(),
            created_at: created_at.to_string(),
            metrics: ModelMetrics::of_round(last_metrics, last_quality),
            privacy: outcome.privacy.clone(),
        },
    )
    .map_err(|e| err(&e))
}

/// Writes `model.json` through [`model_document`] (atomically, in the file
/// version its family is written in).
fn write_model(
    dir: &Path,
    outcome: &RunOutcome,
    model: &ModelSnapshot,
    target: &Target,
    created_at: &str,
) -> Result<(), ReportError> {
    model_document(outcome, model, target, created_at)?
        .save(dir.join("model.json"))
        .map_err(|e| ReportError::Model(e.to_string()))
}

/// Writes `model.json`, `metrics.csv` and `summary.json` into `dir`.
pub fn write_outputs(
    dir: &Path,
    outcome: &RunOutcome,
    target: &Target,
    created_at: &str,
    update: Option<&UpdateDecision>,
) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let last_metrics = outcome.rounds.iter().rev().find_map(|r| r.metrics);
    let last_quality = outcome.rounds.iter().rev().find_map(|r| r.quality.as_ref());
    if let Some(model) = &outcome.model {
        write_model(dir, outcome, model, target, created_at)?;
    }

    let mut csv = csv::Writer::from_writer(Vec::new());
    for r in &outcome.rounds {
        csv.serialize(MetricsRow::of(r))
            .map_err(|e| ReportError::Model(format!("metrics.csv: {e}")))?;
    }
    let csv = csv
        .into_inner()
        .map_err(|e| ReportError::Model(format!("metrics.csv: {e}")))?;
    write_file(&dir.join("metrics.csv"), &csv)?;

    let summary = Summary {
        run_id: &outcome.run_id,
        model: outcome.model.as_ref().map_or("", |m| m.model_type.as_str()),
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
        quality: last_quality,
        clients: &outcome.contributors,
        epsilon: outcome.rounds.iter().rev().find_map(|r| r.epsilon),
        not_private: &outcome.not_private,
        rejected_updates: &outcome.rejections,
        refusals: &outcome.refusals,
        excluded_clients: &outcome.excluded,
        skipped_rounds: outcome
            .rounds
            .iter()
            .filter_map(|r| {
                r.skipped.as_deref().map(|reason| SkippedRound {
                    round: r.round,
                    reason,
                })
            })
            .collect(),
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
        update,
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
    let quality = [
        series("pooled R²", |r| match &r.quality {
            Some(Quality::Regression(m)) => m.r2,
            _ => None,
        }),
        series("pooled test inertia per row", |r| match &r.quality {
            Some(Quality::Clustering { mean_inertia, .. }) => Some(*mean_inertia),
            _ => None,
        }),
        series("pooled accuracy", |r| match &r.quality {
            Some(Quality::Multiclass(m)) => Some(m.accuracy),
            _ => None,
        }),
    ];
    let quality_results: Vec<_> = quality
        .into_iter()
        .zip(["r2.png", "inertia.png", "accuracy.png"])
        .filter(|(s, _)| !s.points.is_empty())
        .map(|(s, file)| {
            let title = format!("{}, run {}", s.label, outcome.run_id);
            let label = s.label.clone();
            plot_series(&[s], &title, &label, &dir.join(file))
        })
        .collect();
    let loss = series("pooled log loss", |r| r.metrics.map(|m| m.log_loss));
    let train = series("mean training loss", RoundRecord::released_train_loss);
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
    for r in results
        .into_iter()
        .flatten()
        .chain(eps_result)
        .chain(quality_results)
    {
        if let Err(e) = r {
            tracing::warn!("plot not written: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write_file(&path, b"old").unwrap();
        write_file(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("summary.json")]);
        // A folder that does not exist is an error naming the file.
        let missing = dir.path().join("no/such/summary.json");
        let err = write_file(&missing, b"x").unwrap_err().to_string();
        assert!(err.contains("no/such/summary.json"), "{err}");
    }

    #[test]
    fn metrics_rows_keep_their_columns_and_precision() {
        let record = RoundRecord {
            round: 3,
            selected: 4,
            accepted: 3,
            rejected: 1,
            refused: 0,
            attempts: 1,
            train_loss: 0.5,
            train_phase_ms: 12.34567,
            max_client_train_ms: 10.0,
            eval_phase_ms: 1.0,
            round_ms: 20.0,
            metrics: None,
            quality: Some(Quality::Clustering {
                examples: 1408,
                inertia: 7543.268171962967,
                mean_inertia: 5.357434781223699,
                counts: vec![1, 2],
            }),
            evaluated_clients: 4,
            epsilon: Some(0.25),
            refusals: Vec::new(),
            skipped: None,
            champion: None,
        };
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.serialize(MetricsRow::of(&record)).unwrap();
        let text = String::from_utf8(csv.into_inner().unwrap()).unwrap();
        let overhead = format!("{:.3}", record.overhead_ms());
        // Under record-level DP the clients send no training loss: a blank cell.
        let mut csv = csv::Writer::from_writer(Vec::new());
        let private = RoundRecord {
            train_loss: 0.0,
            ..record.clone()
        };
        csv.serialize(MetricsRow::of(&private)).unwrap();
        let blank = String::from_utf8(csv.into_inner().unwrap()).unwrap();
        assert!(
            blank.lines().nth(1).unwrap().starts_with("3,4,3,1,0,1,,"),
            "{blank}"
        );
        assert_eq!(
            text,
            format!(
                "round,selected,accepted,rejected,refused,attempts,train_loss,auc,log_loss,accuracy,precision,recall,f1,evaluated_clients,epsilon,round_ms,train_phase_ms,max_client_train_ms,overhead_ms,eval_phase_ms,r2,rmse,mae,mse,macro_f1,inertia,mean_inertia\n\
                 3,4,3,1,0,1,0.500000,,,,,,,4,0.250000,20.000,12.346,10.000,{overhead},1.000,,,,,,7543.268172,5.357435\n"
            )
        );
    }
}
