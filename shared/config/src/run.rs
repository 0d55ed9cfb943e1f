//! The run file (TOML): what a federated run trains and how. The coordinator
//! drives rounds from it; a partner's `privacy cost --run` reads the same file to
//! see what the run would spend before anything runs. Raw `deny_unknown_fields`
//! structs are parsed, then validated; errors name the file and the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedprofile_learning::metrics::Metrics;
use fedprofile_learning::strategy::StrategyConfig;
use fedprofile_learning::trees::TreeParams;
use fedprofile_learning::{ModelFamily, Quality};
use serde::Deserialize;

use crate::ConfigError;

// ----- run file --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunFile {
    run: RawRun,
    #[serde(default)]
    clients: RawClients,
    #[serde(default)]
    round: RawRound,
    #[serde(default)]
    training: RawTraining,
    #[serde(default)]
    privacy: RawPrivacy,
    strategy: Option<StrategyConfig>,
    trees: Option<RawTrees>,
    update: Option<RawUpdate>,
}

/// `[update]`: the run is an update of a target's champion (champion /
/// challenger, see `docs/updates.md`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    target: String,
    metric: String,
    #[serde(default)]
    min_improvement: f64,
    /// `every = "24h"`: run this update on a schedule.
    every: Option<String>,
    /// `on_new_data = { min_partners = 2, min_interval = "1h" }`.
    on_new_data: Option<RawOnNewData>,
}

/// `[update] on_new_data`: a data trigger.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnNewData {
    min_partners: u32,
    min_interval: Option<String>,
}

/// The metric an update run is judged on, with its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMetric {
    /// Area under the ROC curve (binary labels; higher is better).
    Auc,
    /// Mean log loss (binary or multi-class; lower is better).
    LogLoss,
    /// Accuracy (binary or multi-class; higher is better).
    Accuracy,
    /// F1 (binary) or macro F1 (multi-class); higher is better.
    F1,
    /// R² (regression; higher is better).
    R2,
    /// Root mean squared error (regression; lower is better).
    Rmse,
    /// Mean absolute error (regression; lower is better).
    Mae,
    /// Mean inertia of the test rows, `inertia / rows` (k-means; lower is better).
    Inertia,
}

impl UpdateMetric {
    /// Every metric, in the order the error messages list them.
    pub const ALL: [UpdateMetric; 8] = [
        UpdateMetric::Auc,
        UpdateMetric::LogLoss,
        UpdateMetric::Accuracy,
        UpdateMetric::F1,
        UpdateMetric::R2,
        UpdateMetric::Rmse,
        UpdateMetric::Mae,
        UpdateMetric::Inertia,
    ];

    /// Its name in run files.
    pub fn name(self) -> &'static str {
        match self {
            UpdateMetric::Auc => "auc",
            UpdateMetric::LogLoss => "log_loss",
            UpdateMetric::Accuracy => "accuracy",
            UpdateMetric::F1 => "f1",
            UpdateMetric::R2 => "r2",
            UpdateMetric::Rmse => "rmse",
            UpdateMetric::Mae => "mae",
            UpdateMetric::Inertia => "inertia",
        }
    }

    /// The metric named `name`, if any.
    pub fn parse(name: &str) -> Option<UpdateMetric> {
        UpdateMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// True when a higher value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            UpdateMetric::Auc | UpdateMetric::Accuracy | UpdateMetric::F1 | UpdateMetric::R2
        )
    }

    /// The metrics a family's evaluation produces.
    pub fn of_family(family: ModelFamily) -> &'static [UpdateMetric] {
        use UpdateMetric::*;
        match family {
            ModelFamily::LogisticRegression => &[Auc, LogLoss, Accuracy, F1],
            ModelFamily::SoftmaxRegression => &[LogLoss, Accuracy, F1],
            ModelFamily::LinearRegression => &[R2, Rmse, Mae],
            ModelFamily::KMeans => &[Inertia],
            // Binary or numeric label, decided by the clients' schema.
            ModelFamily::GradientBoostedTrees => &[Auc, LogLoss, Accuracy, F1, R2, Rmse, Mae],
            #[allow(unreachable_patterns)]
            _ => &[Auc, LogLoss, Accuracy, F1],
        }
    }

    /// This metric's value in a pooled evaluation, if it holds one.
    pub fn value(self, metrics: Option<&Metrics>, quality: Option<&Quality>) -> Option<f64> {
        use UpdateMetric::*;
        if let Some(m) = metrics {
            return match self {
                Auc => m.auc,
                LogLoss => Some(m.log_loss),
                Accuracy => Some(m.accuracy),
                F1 => Some(m.f1),
                _ => None,
            };
        }
        match (self, quality?) {
            (R2, Quality::Regression(r)) => r.r2,
            (Rmse, Quality::Regression(r)) => Some(r.rmse),
            (Mae, Quality::Regression(r)) => Some(r.mae),
            (LogLoss, Quality::Multiclass(m)) => Some(m.log_loss),
            (Accuracy, Quality::Multiclass(m)) => Some(m.accuracy),
            (F1, Quality::Multiclass(m)) => Some(m.macro_f1),
            (Inertia, Quality::Clustering { mean_inertia, .. }) => Some(*mean_inertia),
            _ => None,
        }
    }

    /// How much better `challenger` is than `champion` (negative: worse).
    pub fn improvement(self, challenger: f64, champion: f64) -> f64 {
        if self.higher_is_better() {
            challenger - champion
        } else {
            champion - challenger
        }
    }
}

/// A validated `[update]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// The target whose champion the run challenges.
    pub target: String,
    /// The metric both models are judged on.
    pub metric: UpdateMetric,
    /// The challenger is promoted only if better by at least this (≥ 0).
    pub min_improvement: f64,
    /// When the long-lived coordinator runs this update by itself (`every`,
    /// `on_new_data`); `None` for a run started once.
    pub schedule: Option<ScheduleConfig>,
}

/// When an update run is started by the coordinator (see `docs/updates.md`,
/// "Schedules and triggers").
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// `every`: start an update this long after the last one started.
    pub every: Option<std::time::Duration>,
    /// `on_new_data.min_partners`: start an update once this many partners'
    /// data fingerprints changed since the champion was trained.
    pub min_partners: Option<u32>,
    /// Never start two updates of the schedule closer than this
    /// (`on_new_data.min_interval`, default 1 h; `every` alone: `every`).
    pub min_interval: std::time::Duration,
}

/// Default of `update.on_new_data.min_interval`.
pub const DEFAULT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Seconds as the shortest `1d2h3m4s`-style text (what [`parse_duration`]
/// reads back).
pub fn show_duration_secs(secs: u64) -> String {
    let mut out = String::new();
    let mut left = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// Parses a duration such as `90s`, `15m`, `24h`, `7d` or `1h30m` (units `s`,
/// `m`, `h`, `d`; at least one second).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "'{text}' is not a duration (write e.g. \"90s\", \"15m\", \"24h\", \"7d\" or \"1h30m\")"
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// The verdict of an update run: is the challenger better than the champion?
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct UpdateDecision {
    /// The target.
    pub target: String,
    /// The metric's name.
    pub metric: String,
    /// The champion that was challenged.
    pub champion_version: u32,
    /// The challenger's value on the final evaluation round.
    pub challenger: Option<f64>,
    /// The champion's value on the same partners' test splits in that round.
    pub champion: Option<f64>,
    /// The required margin.
    pub min_improvement: f64,
    /// Promoted or not.
    pub promoted: bool,
    /// Why, one sentence.
    pub reason: String,
}

impl UpdateConfig {
    /// Compares the two figures of the final evaluation round.
    pub fn decide(
        &self,
        champion_version: u32,
        challenger: Option<f64>,
        champion: Option<f64>,
    ) -> UpdateDecision {
        let metric = self.metric.name();
        let margin = self.min_improvement;
        let (promoted, reason) = match (challenger, champion) {
            (Some(new), Some(old)) if new.is_finite() => {
                let gain = self.metric.improvement(new, old);
                if gain > 0.0 && gain >= margin {
                    (
                        true,
                        format!(
                            "{metric} {new:.4} is better than the champion's {old:.4} by {gain:.4} (at least {margin} required)"
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "{metric} {new:.4} is not better than the champion's {old:.4} by {margin}"
                        ),
                    )
                }
            }
            (Some(new), Some(_)) => (
                false,
                format!("the challenger's {metric} is not a number ({new})"),
            ),
            (None, _) => (
                false,
                format!("the final evaluation round has no {metric} for the challenger"),
            ),
            (_, None) => (
                false,
                format!("the final evaluation round has no {metric} for the champion"),
            ),
        };
        UpdateDecision {
            target: self.target.clone(),
            metric: metric.to_string(),
            champion_version,
            challenger,
            champion,
            min_improvement: margin,
            promoted,
            reason,
        }
    }
}

/// `[trees]`: the settings of a `gradient_boosted_trees` run; every key is
/// optional (XGBoost-like defaults, [`TreeParams::default`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrees {
    max_depth: Option<u32>,
    learning_rate: Option<f64>,
    lambda: Option<f64>,
    min_child_weight: Option<f64>,
    gamma: Option<f64>,
    bins: Option<u32>,
}

impl RawTrees {
    fn params(&self) -> TreeParams {
        let d = TreeParams::default();
        TreeParams {
            max_depth: self.max_depth.unwrap_or(d.max_depth),
            learning_rate: self.learning_rate.unwrap_or(d.learning_rate),
            lambda: self.lambda.unwrap_or(d.lambda),
            min_child_weight: self.min_child_weight.unwrap_or(d.min_child_weight),
            gamma: self.gamma.unwrap_or(d.gamma),
            max_bins: self.bins.unwrap_or(d.max_bins),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    delta: Option<f64>,
    #[serde(default)]
    record: Option<RawRecordDp>,
    #[serde(default)]
    client: Option<RawClientDp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecordDp {
    clip_norm: f64,
    target_epsilon: Option<f64>,
    noise_multiplier: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientDp {
    clip_norm: f64,
    noise_multiplier: f64,
    #[serde(default)]
    adaptive: bool,
    #[serde(default = "default_quantile")]
    target_quantile: f64,
    #[serde(default = "default_clip_lr")]
    clip_learning_rate: f64,
    #[serde(default = "default_count_noise")]
    count_noise_multiplier: f64,
}

fn default_quantile() -> f64 {
    0.5
}
fn default_clip_lr() -> f64 {
    0.2
}
fn default_count_noise() -> f64 {
    10.0
}

/// How σ of record-level DP-SGD is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordNoise {
    /// A fixed noise multiplier.
    Multiplier(f64),
    /// Each client calibrates σ so the whole run costs at most this ε.
    TargetEpsilon(f64),
}

/// Record-level DP (DP-SGD on every client).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordDp {
    /// C: per-example gradient clip norm.
    pub clip_norm: f64,
    /// σ, fixed or calibrated.
    pub noise: RecordNoise,
    /// δ.
    pub delta: f64,
}

/// Adaptive clipping by a privately estimated quantile (Andrew et al. 2021).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveClip {
    /// γ: the quantile of update norms the clip norm tracks.
    pub target_quantile: f64,
    /// η: geometric step of the clip-norm update.
    pub learning_rate: f64,
    /// σ_b: noise multiplier of the clipped-count estimate.
    pub count_noise_multiplier: f64,
}

/// Client-level DP (DP-FedAvg at the coordinator, McMahan et al. 2018).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientDp {
    /// S: whole-update clip norm (initial value when adaptive).
    pub clip_norm: f64,
    /// z: noise multiplier of the summed updates.
    pub noise_multiplier: f64,
    /// δ.
    pub delta: f64,
    /// Adaptive clipping, when on.
    pub adaptive: Option<AdaptiveClip>,
}

/// The differential-privacy mode of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PrivacyMode {
    /// No differential privacy.
    None,
    /// DP-SGD on every client (the unit of privacy: one user's row).
    Record(RecordDp),
    /// DP-FedAvg at the coordinator (the unit of privacy: one partner).
    Client(ClientDp),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: String,
    rounds: u32,
    #[serde(default = "default_model")]
    model: String,
    clusters: Option<u32>,
    seed: Option<u64>,
    warm_start: Option<PathBuf>,
}

fn default_model() -> String {
    "logistic_regression".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClients {
    fraction_per_round: f64,
    min_per_round: usize,
    min_connected_to_start: usize,
    start_timeout_secs: f64,
    max_missed_tasks: u32,
}

impl Default for RawClients {
    fn default() -> Self {
        RawClients {
            fraction_per_round: 1.0,
            min_per_round: 1,
            min_connected_to_start: 1,
            start_timeout_secs: 300.0,
            max_missed_tasks: DEFAULT_MAX_MISSED_TASKS,
        }
    }
}

/// Default of `clients.max_missed_tasks`: a client whose session let this many
/// tasks in a row pass their deadline without a result or a refusal is
/// disconnected. An honest node answers every task (a refusal is an answer), so
/// only a stalled, half-open or hostile session misses one; three is one
/// statistics, training and evaluation cycle, enough to ride out one slow task,
/// while a dead session costs at most three deadlines instead of one per phase
/// for the rest of the run. A node that was dropped by mistake reconnects.
pub const DEFAULT_MAX_MISSED_TASKS: u32 = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRound {
    deadline_secs: f64,
    eval_every: u32,
    max_retries: u32,
    max_update_norm_ratio: f64,
}

impl Default for RawRound {
    fn default() -> Self {
        RawRound {
            deadline_secs: 60.0,
            eval_every: 1,
            max_retries: 3,
            max_update_norm_ratio: DEFAULT_MAX_UPDATE_NORM_RATIO,
        }
    }
}

/// Default of `round.max_update_norm_ratio`: an update whose L2 norm is more
/// than this many times the round's median norm is rejected. Honest partners'
/// update norms on the demo differ by less than 3× (partners of different sizes
/// and label rates); 10× leaves room for that heterogeneity while an update
/// scaled to dominate FedAvg (or holding absurd values) is caught. Robust
/// strategies (median, trimmed mean, Krum) are the defence against subtler ones.
pub const DEFAULT_MAX_UPDATE_NORM_RATIO: f64 = 10.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTraining {
    local_epochs: u32,
    batch_size: u32,
    learning_rate: f64,
    tail_average_rounds: u32,
}

impl Default for RawTraining {
    fn default() -> Self {
        RawTraining {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
            tail_average_rounds: 1,
        }
    }
}

/// A validated run description.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Human name of the run; the run id is derived from it.
    pub name: String,
    /// Number of training rounds.
    pub rounds: u32,
    /// Model family.
    pub model: ModelFamily,
    /// Number of clusters of a k-means run (0 for the other families).
    pub clusters: u32,
    /// Seed of the client-selection RNG (random when absent).
    pub seed: Option<u64>,
    /// Start from this earlier global model (a `model.json` on the coordinator's
    /// host) instead of zeros; its feature encoding is kept.
    pub warm_start: Option<PathBuf>,
    /// Fraction of connected clients selected per round.
    pub fraction_per_round: f64,
    /// Fewest updates a round may close with.
    pub min_per_round: usize,
    /// Clients that must be connected before the run starts.
    pub min_connected_to_start: usize,
    /// How long to wait for them.
    pub start_timeout: Duration,
    /// A client that misses this many tasks in a row (deadline passed without
    /// a result or refusal) has its session closed; 0 never closes it.
    pub max_missed_tasks: u32,
    /// A round's (and a statistics or evaluation task's) deadline.
    pub deadline: Duration,
    /// Evaluate every k rounds (and always after the last).
    pub eval_every: u32,
    /// How often a round that misses its minimum is retried before the run fails.
    pub max_retries: u32,
    /// Updates whose norm exceeds this multiple of the round's median norm are
    /// rejected (needs 3 updates or more; 0 turns the check off).
    pub max_update_norm_ratio: f64,
    /// Local epochs per training task.
    pub local_epochs: u32,
    /// Local batch size.
    pub batch_size: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// The released (evaluated and saved) model is the mean of the last this-many
    /// global models (tail averaging; 1 = the last one). Post-processing: free
    /// under DP, and it damps the noise of the last rounds.
    pub tail_average_rounds: u32,
    /// Differential privacy.
    pub privacy: PrivacyMode,
    /// Server strategy (aggregation and server optimizer); FedAvg by default.
    pub strategy: StrategyConfig,
    /// `[trees]`: the settings of a `gradient_boosted_trees` run (defaults
    /// for the other families, which ignore them).
    pub trees: TreeParams,
    /// `[update]`: the run challenges a target's champion (it warm-starts
    /// from it and is promoted only if better).
    pub update: Option<UpdateConfig>,
}

impl RunConfig {
    /// Reads and validates a run file.
    pub fn from_path(path: &Path) -> Result<RunConfig, ConfigError> {
        Self::from_toml_str(&crate::read(path)?, path)
    }

    /// Parses and validates run-file text; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<RunConfig, ConfigError> {
        let raw: RawRunFile = crate::parse(text, path)?;
        let invalid = |field: &'static str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        };
        let secs = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 && v < 1e7 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(invalid(
                    field,
                    format!("must be a positive number of seconds, got {v}"),
                ))
            }
        };
        let at_least_one = |field: &'static str, count: u64| {
            if count == 0 {
                Err(invalid(field, "must be at least 1".into()))
            } else {
                Ok(())
            }
        };
        if raw.run.name.trim().is_empty() {
            return Err(invalid("run.name", "must not be empty".into()));
        }
        at_least_one("run.rounds", u64::from(raw.run.rounds))?;
        let model = ModelFamily::parse(&raw.run.model).ok_or_else(|| {
            invalid(
                "run.model",
                format!(
                    "'{}' is not a model family (supported: {})",
                    raw.run.model,
                    ModelFamily::names()
                ),
            )
        })?;
        let clusters = match (model, raw.run.clusters) {
            (ModelFamily::KMeans, Some(k)) if (2..=256).contains(&k) => k,
            (ModelFamily::KMeans, Some(k)) => {
                return Err(invalid(
                    "run.clusters",
                    format!("must be between 2 and 256, got {k}"),
                ));
            }
            (ModelFamily::KMeans, None) => {
                return Err(invalid(
                    "run.clusters",
                    "is required when run.model = \"kmeans\" (the number of segments)".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "run.clusters",
                    format!(
                        "applies only to run.model = \"kmeans\", not '{}'",
                        model.name()
                    ),
                ));
            }
            (_, None) => 0,
        };
        let c = &raw.clients;
        if !(c.fraction_per_round > 0.0 && c.fraction_per_round <= 1.0) {
            return Err(invalid(
                "clients.fraction_per_round",
                format!("must be in (0, 1], got {}", c.fraction_per_round),
            ));
        }
        at_least_one("clients.min_per_round", c.min_per_round as u64)?;
        if c.min_connected_to_start < c.min_per_round {
            return Err(invalid(
                "clients.min_connected_to_start",
                format!(
                    "must be at least clients.min_per_round ({}), got {}",
                    c.min_per_round, c.min_connected_to_start
                ),
            ));
        }
        let t = &raw.training;
        at_least_one("training.local_epochs", u64::from(t.local_epochs))?;
        at_least_one("training.batch_size", u64::from(t.batch_size))?;
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err(invalid(
                "training.learning_rate",
                format!("must be positive, got {}", t.learning_rate),
            ));
        }
        at_least_one(
            "training.tail_average_rounds",
            u64::from(t.tail_average_rounds),
        )?;
        at_least_one("round.eval_every", u64::from(raw.round.eval_every))?;
        let ratio = raw.round.max_update_norm_ratio;
        if !(ratio == 0.0 || (ratio.is_finite() && ratio > 1.0)) {
            return Err(invalid(
                "round.max_update_norm_ratio",
                format!("must be above 1 (or 0 to turn the check off), got {ratio}"),
            ));
        }
        let trees = match (&raw.trees, model.ops().settings_table()) {
            (Some(t), Some("trees")) => t.params(),
            (Some(_), _) => {
                return Err(invalid(
                    "trees",
                    format!(
                        "applies only to run.model = \"gradient_boosted_trees\", not '{}'",
                        model.name()
                    ),
                ));
            }
            (None, _) => TreeParams::default(),
        };
        trees
            .validate()
            .map_err(|e| invalid("trees", e.to_string()))?;
        let privacy = validate_privacy(&raw.privacy, &invalid)?;
        let strategy = raw.strategy.unwrap_or(StrategyConfig::FedAvg);
        strategy
            .validate()
            .map_err(|e| invalid("strategy", e.to_string()))?;
        strategy
            .check_clients(c.min_per_round)
            .map_err(|e| invalid("clients.min_per_round", e.to_string()))?;
        if let Some(rules) = model.ops().statistics_rules() {
            if !matches!(strategy, StrategyConfig::FedAvg) {
                return Err(invalid(
                    "strategy.name",
                    format!(
                        "'{}' cannot be used with {}: {}, it has no update to optimize or filter",
                        strategy.name(),
                        rules.name,
                        rules.round
                    ),
                ));
            }
            if let PrivacyMode::Client(_) = privacy {
                return Err(invalid(
                    "privacy.mode",
                    format!(
                        "\"client\" is not available for {} (no update to clip); use \"record\": {}",
                        rules.name, rules.record_dp
                    ),
                ));
            }
            if t.tail_average_rounds > 1 {
                return Err(invalid(
                    "training.tail_average_rounds",
                    format!("must be 1 for {} ({})", rules.name, rules.averaging),
                ));
            }
        }
        if let PrivacyMode::Client(_) = privacy
            && let Err(why) = strategy.compatible_with_client_level_dp()
        {
            return Err(invalid(
                "strategy.name",
                format!(
                    "'{}' does not compose with client-level DP (privacy.mode = \"client\"): {why}",
                    strategy.name()
                ),
            ));
        }
        let update = match &raw.update {
            None => None,
            Some(u) => Some(validate_update(
                u,
                model,
                raw.run.warm_start.is_some(),
                &invalid,
            )?),
        };
        Ok(RunConfig {
            name: raw.run.name,
            rounds: raw.run.rounds,
            model,
            clusters,
            seed: raw.run.seed,
            warm_start: raw.run.warm_start.map(|p| {
                if p.is_relative() {
                    path.parent().map_or(p.clone(), |dir| dir.join(&p))
                } else {
                    p
                }
            }),
            fraction_per_round: c.fraction_per_round,
            min_per_round: c.min_per_round,
            min_connected_to_start: c.min_connected_to_start,
            start_timeout: secs("clients.start_timeout_secs", c.start_timeout_secs)?,
            max_missed_tasks: c.max_missed_tasks,
            deadline: secs("round.deadline_secs", raw.round.deadline_secs)?,
            eval_every: raw.round.eval_every,
            max_retries: raw.round.max_retries,
            max_update_norm_ratio: raw.round.max_update_norm_ratio,
            local_epochs: t.local_epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            tail_average_rounds: t.tail_average_rounds,
            privacy,
            strategy,
            trees,
            update,
        })
    }
}

fn validate_update(
    raw: &RawUpdate,
    model: ModelFamily,
    warm_start: bool,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<UpdateConfig, ConfigError> {
    if warm_start {
        return Err(invalid(
            "run.warm_start",
            "cannot be used with [update]: an update run warm-starts from its target's champion"
                .into(),
        ));
    }
    if raw.target.trim().is_empty() {
        return Err(invalid("update.target", "must not be empty".into()));
    }
    let names = || {
        UpdateMetric::ALL
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let metric = UpdateMetric::parse(&raw.metric).ok_or_else(|| {
        invalid(
            "update.metric",
            format!("'{}' is not a metric (supported: {})", raw.metric, names()),
        )
    })?;
    let produced = UpdateMetric::of_family(model);
    if !produced.contains(&metric) {
        return Err(invalid(
            "update.metric",
            format!(
                "'{}' is not produced by {} (it produces {})",
                metric.name(),
                model.name(),
                produced
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if !(raw.min_improvement.is_finite() && raw.min_improvement >= 0.0) {
        return Err(invalid(
            "update.min_improvement",
            format!("must be a number ≥ 0, got {}", raw.min_improvement),
        ));
    }
    Ok(UpdateConfig {
        target: raw.target.clone(),
        metric,
        min_improvement: raw.min_improvement,
        schedule: validate_schedule(raw, invalid)?,
    })
}

fn validate_schedule(
    raw: &RawUpdate,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<Option<ScheduleConfig>, ConfigError> {
    let every = match &raw.every {
        None => None,
        Some(text) => Some(parse_duration(text).map_err(|e| invalid("update.every", e))?),
    };
    let (min_partners, min_interval) = match &raw.on_new_data {
        None => (None, None),
        Some(trigger) => {
            if trigger.min_partners == 0 {
                return Err(invalid(
                    "update.on_new_data.min_partners",
                    "must be at least 1".into(),
                ));
            }
            let interval = match &trigger.min_interval {
                None => DEFAULT_MIN_INTERVAL,
                Some(text) => parse_duration(text)
                    .map_err(|e| invalid("update.on_new_data.min_interval", e))?,
            };
            (Some(trigger.min_partners), Some(interval))
        }
    };
    if every.is_none() && min_partners.is_none() {
        return Ok(None);
    }
    Ok(Some(ScheduleConfig {
        every,
        min_partners,
        min_interval: min_interval.or(every).unwrap_or(DEFAULT_MIN_INTERVAL),
    }))
}

fn validate_privacy(
    raw: &RawPrivacy,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<PrivacyMode, ConfigError> {
    let positive = |field: &'static str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(invalid(
                field,
                format!("must be a positive number, got {v}"),
            ))
        }
    };
    let delta = match raw.delta {
        Some(d) if d > 0.0 && d < 1.0 => d,
        Some(d) => {
            return Err(invalid(
                "privacy.delta",
                format!("must be in (0, 1), got {d}"),
            ));
        }
        None => 1e-5,
    };
    match raw.mode.as_deref().unwrap_or("none") {
        "none" => {
            if raw.record.is_some() || raw.client.is_some() {
                return Err(invalid(
                    "privacy.mode",
                    "is \"none\" but a [privacy.record] or [privacy.client] section is present"
                        .into(),
                ));
            }
            Ok(PrivacyMode::None)
        }
        "record" => {
            let r = raw.record.as_ref().ok_or_else(|| {
                invalid(
                    "privacy.record",
                    "is required when privacy.mode = \"record\"".into(),
                )
            })?;
            let noise = match (r.target_epsilon, r.noise_multiplier) {
                (Some(e), None) => {
                    RecordNoise::TargetEpsilon(positive("privacy.record.target_epsilon", e)?)
                }
                (None, Some(z)) => {
                    RecordNoise::Multiplier(positive("privacy.record.noise_multiplier", z)?)
                }
                _ => {
                    return Err(invalid(
                        "privacy.record",
                        "needs exactly one of target_epsilon and noise_multiplier".into(),
                    ));
                }
            };
            Ok(PrivacyMode::Record(RecordDp {
                clip_norm: positive("privacy.record.clip_norm", r.clip_norm)?,
                noise,
                delta,
            }))
        }
        "client" => {
            let c = raw.client.as_ref().ok_or_else(|| {
                invalid(
                    "privacy.client",
                    "is required when privacy.mode = \"client\"".into(),
                )
            })?;
            let adaptive = if c.adaptive {
                if !(c.target_quantile > 0.0 && c.target_quantile < 1.0) {
                    return Err(invalid(
                        "privacy.client.target_quantile",
                        format!("must be in (0, 1), got {}", c.target_quantile),
                    ));
                }
                let sigma_b = positive(
                    "privacy.client.count_noise_multiplier",
                    c.count_noise_multiplier,
                )?;
                if 2.0 * sigma_b <= c.noise_multiplier {
                    return Err(invalid(
                        "privacy.client.count_noise_multiplier",
                        format!(
                            "must exceed noise_multiplier / 2 ({}) for adaptive clipping to be private, got {sigma_b}",
                            c.noise_multiplier / 2.0
                        ),
                    ));
                }
                Some(AdaptiveClip {
                    target_quantile: c.target_quantile,
                    learning_rate: positive(
                        "privacy.client.clip_learning_rate",
                        c.clip_learning_rate,
                    )?,
                    count_noise_multiplier: sigma_b,
                })
            } else {
                None
            };
            Ok(PrivacyMode::Client(ClientDp {
                clip_norm: positive("privacy.client.clip_norm", c.clip_norm)?,
                noise_multiplier: positive("privacy.client.noise_multiplier", c.noise_multiplier)?,
                delta,
                adaptive,
            }))
        }
        other => Err(invalid(
            "privacy.mode",
            format!("'{other}' is not one of none, record, client"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig, ConfigError> {
        RunConfig::from_toml_str(text, Path::new("run.toml"))
    }

    #[test]
    fn defaults_fill_a_minimal_run_file() {
        let c = parse("[run]\nname = \"x\"\nrounds = 3\n").unwrap();
        assert_eq!(c.rounds, 3);
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.deadline, Duration::from_secs(60));
        assert_eq!(c.privacy, PrivacyMode::None);
        assert_eq!(c.max_missed_tasks, DEFAULT_MAX_MISSED_TASKS);
        let c =
            parse("[run]\nname = \"x\"\nrounds = 3\n[clients]\nmax_missed_tasks = 0\n").unwrap();
        assert_eq!(c.max_missed_tasks, 0);
    }

    #[test]
    fn an_update_section_is_validated_and_names_its_field() {
        let head = "[run]\nname = \"x\"\nrounds = 3\n";
        let c = parse(&format!(
            "{head}[update]\ntarget = \"Churn\"\nmetric = \"auc\"\nmin_improvement = 0.002\n"
        ))
        .unwrap();
        let u = c.update.unwrap();
        assert_eq!(
            (u.target.as_str(), u.metric, u.min_improvement),
            ("Churn", UpdateMetric::Auc, 0.002)
        );
        let err = |text: String| parse(&text).unwrap_err().to_string();
        let e = err(format!(
            "{head}[update]\ntarget = \"Churn\"\nmetric = \"gini\"\n"
        ));
        assert!(
            e.contains("update.metric") && e.contains("'gini' is not a metric"),
            "{e}"
        );
        let e = err(format!(
            "{head}[update]\ntarget = \"Churn\"\nmetric = \"r2\"\n"
        ));
        assert!(
            e.contains("update.metric")
                && e.contains("'r2' is not produced by logistic_regression"),
            "{e}"
        );
        let e = err(
            "[run]\nname = \"x\"\nrounds = 3\nwarm_start = \"m.json\"\n[update]\ntarget = \"Churn\"\nmetric = \"auc\"\n".to_string());
        assert!(
            e.contains("run.warm_start") && e.contains("[update]"),
            "{e}"
        );
        let e = err(format!(
            "{head}[update]\ntarget = \"Churn\"\nmetric = \"auc\"\nmin_improvement = -1.0\n"
        ));
        assert!(e.contains("update.min_improvement"), "{e}");
        let e = err(format!("{head}[update]\ntarget = \"\"\nmetric = \"auc\"\n"));
        assert!(e.contains("update.target"), "{e}");
    }

    #[test]
    fn an_update_decision_knows_each_metrics_direction() {
        let u = |metric, min_improvement| UpdateConfig {
            target: "t".into(),
            metric,
            min_improvement,
            schedule: None,
        };
        assert!(
            u(UpdateMetric::Auc, 0.002)
                .decide(1, Some(0.86), Some(0.85))
                .promoted
        );
        let d = u(UpdateMetric::Auc, 0.002).decide(1, Some(0.8431), Some(0.8507));
        assert!(!d.promoted);
        assert_eq!(
            d.reason,
            "auc 0.8431 is not better than the champion's 0.8507 by 0.002"
        );
        // Lower is better for losses and errors.
        assert!(
            u(UpdateMetric::LogLoss, 0.0)
                .decide(1, Some(0.3), Some(0.4))
                .promoted
        );
        assert!(
            !u(UpdateMetric::Rmse, 0.0)
                .decide(1, Some(2.0), Some(1.0))
                .promoted
        );
        // Better, but by less than the margin.
        assert!(
            !u(UpdateMetric::R2, 0.1)
                .decide(1, Some(0.85), Some(0.8))
                .promoted
        );
        // A diverged challenger is never promoted.
        let d = u(UpdateMetric::LogLoss, 0.0).decide(1, Some(f64::NAN), Some(0.4));
        assert!(
            !d.promoted && d.reason.contains("not a number"),
            "{}",
            d.reason
        );
        let d = u(UpdateMetric::Auc, 0.0).decide(1, Some(0.9), None);
        assert!(
            !d.promoted && d.reason.contains("for the champion"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse("[run]\nname = \"x\"\nrounds = 3\n[training]\nlearning_rate = -1.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("training.learning_rate"), "{err}");
        let err = parse("[run]\nname = \"x\"\nrounds = 3\nroundz = 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("roundz"), "{err}");
        let err = parse("[run]\nname = \"x\"\nrounds = 3\n[clients]\nmin_per_round = 3\nmin_connected_to_start = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_connected_to_start"), "{err}");
    }

    #[test]
    fn model_families_and_their_settings() {
        let head = "[run]\nname = \"x\"\nrounds = 3\n";
        let t = parse(&format!("{head}model = \"gradient_boosted_trees\"\n")).unwrap();
        assert_eq!(t.model, ModelFamily::GradientBoostedTrees);
        assert_eq!(t.trees, TreeParams::default());
        let t = parse(&format!(
            "{head}model = \"gradient_boosted_trees\"\n[trees]\nmax_depth = 3\nbins = 32\nlambda = 2.5\n"
        ))
        .unwrap();
        assert_eq!(
            (
                t.trees.max_depth,
                t.trees.max_bins,
                t.trees.lambda,
                t.trees.learning_rate
            ),
            (3, 32, 2.5, 0.1)
        );
        let c = parse(&format!("{head}model = \"kmeans\"\nclusters = 4\n")).unwrap();
        assert_eq!((c.model, c.clusters), (ModelFamily::KMeans, 4));
        let c = parse(&format!("{head}model = \"linear_regression\"\n")).unwrap();
        assert_eq!((c.model, c.clusters), (ModelFamily::LinearRegression, 0));
        assert_eq!(parse(head).unwrap().model, ModelFamily::LogisticRegression);
        let refused = [
            (
                "model = \"svm\"\n",
                "'svm' is not a model family (supported: logistic_regression, linear_regression, softmax_regression, kmeans, gradient_boosted_trees)",
            ),
            ("model = \"kmeans\"\n", "run.clusters' is required"),
            (
                "model = \"kmeans\"\nclusters = 1\n",
                "between 2 and 256, got 1",
            ),
            (
                "model = \"linear_regression\"\nclusters = 3\n",
                "applies only to run.model = \"kmeans\"",
            ),
            (
                "model = \"kmeans\"\nclusters = 3\n[strategy]\nname = \"median\"\n",
                "'median' cannot be used with k-means",
            ),
            (
                "model = \"kmeans\"\nclusters = 3\n[privacy]\nmode = \"client\"\n[privacy.client]\nclip_norm = 1.0\nnoise_multiplier = 1.0\n",
                "not available for k-means",
            ),
            (
                "model = \"kmeans\"\nclusters = 3\n[training]\ntail_average_rounds = 3\n",
                "must be 1 for k-means",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[strategy]\nname = \"median\"\n",
                "'median' cannot be used with gradient-boosted trees: a tree is grown from the clients' pooled gradient and hessian histograms",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[strategy]\nname = \"fed_adam\"\n",
                "'fed_adam' cannot be used with gradient-boosted trees",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[privacy]\nmode = \"client\"\n[privacy.client]\nclip_norm = 1.0\nnoise_multiplier = 1.0\n",
                "\"client\" is not available for gradient-boosted trees",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[training]\ntail_average_rounds = 3\n",
                "must be 1 for gradient-boosted trees (the trees of different rounds add up",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[trees]\nmax_depth = 13\n",
                "max_depth",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[trees]\nbins = 300\n",
                "bins",
            ),
            (
                "model = \"gradient_boosted_trees\"\n[trees]\ndepth = 3\n",
                "unknown field `depth`",
            ),
            (
                "model = \"logistic_regression\"\n[trees]\nmax_depth = 3\n",
                "applies only to run.model = \"gradient_boosted_trees\", not 'logistic_regression'",
            ),
        ];
        for (extra, want) in refused {
            let err = parse(&format!("{head}{extra}")).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }
}

#[cfg(test)]
mod privacy_tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig, ConfigError> {
        RunConfig::from_toml_str(text, Path::new("run.toml"))
    }

    const HEAD: &str = "[run]\nname = \"x\"\nrounds = 3\n";

    /// Asserts that a run file of [`HEAD`] and `rest` is rejected with an
    /// error containing `needle`.
    #[track_caller]
    fn assert_rejected(rest: &str, needle: &str) {
        let err = rejected(rest);
        assert!(err.contains(needle), "{err}");
    }

    /// The error of a run file of [`HEAD`] and `rest`.
    fn rejected(rest: &str) -> String {
        parse(&format!("{HEAD}{rest}")).unwrap_err().to_string()
    }

    #[test]
    fn record_mode_parses_with_a_target_epsilon() {
        let c = parse(&format!(
            "{HEAD}[privacy]\nmode = \"record\"\ndelta = 1e-6\n[privacy.record]\nclip_norm = 1.0\ntarget_epsilon = 2.0\n"
        ))
        .unwrap();
        assert_eq!(
            c.privacy,
            PrivacyMode::Record(RecordDp {
                clip_norm: 1.0,
                noise: RecordNoise::TargetEpsilon(2.0),
                delta: 1e-6
            })
        );
    }

    #[test]
    fn record_mode_needs_exactly_one_noise_setting() {
        assert_rejected(
            "[privacy]\nmode = \"record\"\n[privacy.record]\nclip_norm = 1.0\ntarget_epsilon = 2.0\nnoise_multiplier = 1.0\n",
            "exactly one of target_epsilon and noise_multiplier",
        );
    }

    #[test]
    fn adaptive_clipping_refuses_a_count_noise_that_breaks_the_guarantee() {
        assert_rejected(
            "[privacy]\nmode = \"client\"\n[privacy.client]\nclip_norm = 1.0\nnoise_multiplier = 1.0\nadaptive = true\ncount_noise_multiplier = 0.4\n",
            "privacy.client.count_noise_multiplier",
        );
    }

    #[test]
    fn strategies_are_parsed_validated_and_refused_with_client_level_dp() {
        let c = parse(&format!("{HEAD}[strategy]\nname = \"fed_adam\"\n")).unwrap();
        assert_eq!(c.strategy.name(), "fed_adam");
        assert_rejected("[strategy]\nname = \"trimmed_mean\"\nbeta = 0.7\n", "beta");
        assert_rejected(
            "[clients]\nmin_per_round = 4\nmin_connected_to_start = 4\n[strategy]\nname = \"krum\"\nbyzantine = 1\n",
            "clients.min_per_round",
        );
        assert_rejected(
            "[privacy]\nmode = \"client\"\n[privacy.client]\nclip_norm = 1.0\nnoise_multiplier = 1.0\n[strategy]\nname = \"median\"\n",
            "does not compose with client-level DP",
        );
    }

    #[test]
    fn unknown_modes_are_named() {
        assert_rejected(
            "[privacy]\nmode = \"local\"\n",
            "'local' is not one of none, record, client",
        );
    }

    #[test]
    fn schedule_durations_parse_and_bad_ones_name_the_text() {
        use std::time::Duration;
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        for bad in ["", "24", "h", "1w", "0s", "1.5h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }
}
