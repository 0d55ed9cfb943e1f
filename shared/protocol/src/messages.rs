//! Domain form of the protocol messages. No tonic or prost types appear here;
//! [`crate::convert`] translates to and from [`crate::pb`].

use fedprofile_learning::{Evaluation, FeatureSpec, Statistics};
use ndarray::Array1;

/// Version of the federation protocol spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;

/// A model as it travels: type, feature encoding and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSnapshot {
    /// Model family, e.g. `logistic_regression` (see
    /// [`fedprofile_learning::ModelFamily`]).
    pub model_type: String,
    /// The feature encoding the parameters expect.
    pub features: FeatureSpec,
    /// Parameters, flat row-major: `[intercept, weights...]` per output row.
    pub params: Array1<f64>,
    /// Rows of the parameters: classes (softmax), clusters (k-means), else 1.
    pub outputs: usize,
}

/// Hyperparameters and starting point of one local training task.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTask {
    /// The global model to start from.
    pub model: ModelSnapshot,
    /// Passes over the local training split.
    pub local_epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// SGD step size.
    pub learning_rate: f64,
    /// Record-level DP-SGD; `None` for plain SGD. `batch_size` is then the
    /// expected Poisson batch size.
    pub record_dp: Option<RecordDpTask>,
    /// Client-level DP: clip the whole update to this L2 norm.
    pub update_clip_norm: Option<f64>,
    /// FedProx proximal coefficient μ (0: plain local training).
    pub prox_mu: f64,
}

/// Record-level DP settings of a training task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordDpTask {
    /// C: per-example gradient clip norm.
    pub clip_norm: f64,
    /// σ, or `None` to calibrate to `target_epsilon` over `planned_rounds`.
    pub noise_multiplier: Option<f64>,
    /// Target ε for the whole run (with `noise_multiplier: None`).
    pub target_epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Rounds the run plans (for calibration).
    pub planned_rounds: u32,
}

/// What a task asks a client to do.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskBody {
    /// Report the feature template and per-column counts and sums.
    Stats {
        /// Also the per-entry counts of the 0/1 columns ([`BinaryStats`]),
        /// asked only in runs without differential privacy.
        binary_counts: bool,
    },
    /// Train locally from the global model and send the update.
    Train(TrainTask),
    /// Evaluate the global model on the local test split.
    Eval(ModelSnapshot),
}

impl TaskBody {
    /// Short name of the task kind, for logs and reasons.
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskBody::Stats { .. } => TaskKind::Stats,
            TaskBody::Train(_) => TaskKind::Train,
            TaskBody::Eval(_) => TaskKind::Eval,
        }
    }
}

/// Kind of a task or of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Feature statistics.
    Stats,
    /// Local training.
    Train,
    /// Evaluation.
    Eval,
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskKind::Stats => "stats",
            TaskKind::Train => "train",
            TaskKind::Eval => "eval",
        })
    }
}

/// One unit of work sent to one client.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Unique id; a result names the task it answers.
    pub task_id: String,
    /// The run the task belongs to.
    pub run_id: String,
    /// Round number (0 for the statistics task).
    pub round: u32,
    /// What to do.
    pub body: TaskBody,
}

/// Counts and sums of one numeric column over a client's observed cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// Column name.
    pub column: String,
    /// Number of observed (non-missing) cells.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
    /// Sum of the squared observed values.
    pub sum_sq: f64,
}

/// How many training rows of a client set each encoded 0/1 entry of one
/// boolean or categorical column.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryStats {
    /// Column name.
    pub column: String,
    /// One count per encoded entry of the column (a boolean: its true count;
    /// a categorical column: per vocabulary value, then the unseen slot).
    pub counts: Vec<u64>,
}

/// Answer to a statistics task.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsReport {
    /// The encoding the client's schema implies (numeric mean/std are placeholders).
    pub template: FeatureSpec,
    /// Per numeric column counts and sums.
    pub numeric: Vec<ColumnStats>,
    /// Number of training examples the client holds.
    pub train_examples: u64,
    /// The label column of the schema.
    pub label_column: String,
    /// The label's positive value (binary labels).
    pub label_positive: String,
    /// What the label column holds.
    pub label_kind: LabelKindMsg,
    /// Class names of a multi-class label, in the schema's order.
    pub label_classes: Vec<String>,
    /// Per 0/1 column, the entries' counts (empty unless the task asked).
    pub binary: Vec<BinaryStats>,
}

/// What a client's label column holds, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelKindMsg {
    /// No label.
    None,
    /// A binary label (`type = "label"`).
    Binary,
    /// A numeric target (`type = "target"`).
    Numeric,
    /// A multi-class label (`type = "class"`).
    Classes,
}

impl LabelKindMsg {
    /// The wire name (`""`, `binary`, `numeric`, `classes`).
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKindMsg::None => "",
            LabelKindMsg::Binary => "binary",
            LabelKindMsg::Numeric => "numeric",
            LabelKindMsg::Classes => "classes",
        }
    }

    /// For messages: "a binary label", "a numeric target", ...
    pub fn describe(self) -> &'static str {
        match self {
            LabelKindMsg::None => "no label",
            LabelKindMsg::Binary => "a binary label (type = \"label\")",
            LabelKindMsg::Numeric => "a numeric target (type = \"target\")",
            LabelKindMsg::Classes => "a multi-class label (type = \"class\")",
        }
    }
}

/// Answer to a training task.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Local model minus the global model of the task.
    pub delta: Array1<f64>,
    /// Examples behind the update.
    pub examples: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Training loss reported by the client.
    pub train_loss: f64,
    /// Local training wall time in microseconds.
    pub train_micros: u64,
    /// L2 norm of the update before client-level clipping.
    pub update_norm: f64,
    /// The client's cumulative ε after this task (record-level DP).
    pub epsilon_spent: Option<f64>,
    /// Produced with a fixed test seed: not private.
    pub not_private: bool,
    /// A statistics family's local statistics (`delta` is then empty).
    pub statistics: Option<Statistics>,
}

impl TrainReport {
    /// The answer of a statistics family: its local `statistics` over
    /// [`Statistics::examples`] rows in place of a delta (empty), as one step
    /// with no training loss and no update norm.
    pub fn of_statistics(
        statistics: Statistics,
        train_micros: u64,
        epsilon_spent: Option<f64>,
        not_private: bool,
    ) -> TrainReport {
        TrainReport {
            delta: Array1::zeros(0),
            examples: statistics.examples(),
            steps: 1,
            train_loss: 0.0,
            train_micros,
            update_norm: 0.0,
            epsilon_spent,
            not_private,
            statistics: Some(statistics),
        }
    }
}

/// The body of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultBody {
    /// Answer to a statistics task.
    Stats(StatsReport),
    /// Answer to a training task.
    Train(TrainReport),
    /// Answer to an evaluation task.
    Eval(Evaluation),
}

impl ResultBody {
    /// The kind of task this body answers.
    pub fn kind(&self) -> TaskKind {
        match self {
            ResultBody::Stats(_) => TaskKind::Stats,
            ResultBody::Train(_) => TaskKind::Train,
            ResultBody::Eval(_) => TaskKind::Eval,
        }
    }
}

/// A message from a client after its hello.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientReply {
    /// A finished task.
    Result {
        /// The task answered.
        task_id: String,
        /// Its outcome.
        body: ResultBody,
    },
    /// A task the client will not do, with its reason.
    Refusal {
        /// The task refused.
        task_id: String,
        /// Why.
        reason: String,
        /// Whether asking again can help.
        kind: RefusalKind,
    },
}

/// A partner's data fingerprint: cleaned rows per split and a SHA-256 of its
/// export (never rows). A long-lived client sends it when its session opens and
/// whenever its export changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataFingerprint {
    /// Cleaned rows per split name.
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Hex SHA-256 of the export files.
    pub sha256: String,
}

/// Why a client refused a task, as far as the coordinator must act on it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// Anything else: a retry may succeed.
    #[default]
    Other,
    /// The partner's privacy budget would be exceeded: no retry can succeed.
    BudgetExhausted,
    /// Charged in the partner's ledger, but the result was lost (a restart):
    /// asking again, under any task id, would charge twice.
    ResultLost,
    /// The partner's policy forbids the task (no budget, DP required).
    Policy,
}

impl RefusalKind {
    /// True when no retry in this run can succeed for this partner.
    pub fn is_permanent(self) -> bool {
        matches!(self, RefusalKind::BudgetExhausted | RefusalKind::Policy)
    }

    /// Short name for logs, status and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Other => "other",
            RefusalKind::BudgetExhausted => "budget_exhausted",
            RefusalKind::ResultLost => "result_lost",
            RefusalKind::Policy => "policy",
        }
    }
}

impl ClientReply {
    /// The task this reply is about.
    pub fn task_id(&self) -> &str {
        match self {
            ClientReply::Result { task_id, .. } | ClientReply::Refusal { task_id, .. } => task_id,
        }
    }
}

/// A message from the coordinator to a client.
// One event per task sent, moved straight into a channel: boxing the task
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// Work to do.
    Task(Task),
    /// The run is over; the client may disconnect.
    Finished {
        /// The run that ended.
        run_id: String,
        /// A short human-readable outcome.
        message: String,
    },
    /// The champion of a target, for a client that follows the champions.
    Champion(ChampionPush),
}

/// A champion sent to a following client (see `docs/updates.md`, "Partners
/// follow the champion").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChampionPush {
    /// The version: target, number and the SHA-256 of `model_json`.
    pub model: HeldModel,
    /// The model file, byte for byte as the registry holds it.
    pub model_json: String,
}

/// A model version a client holds: its target, number and the SHA-256 (hex)
/// of the model file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeldModel {
    /// The target.
    pub target: String,
    /// Its number within the target.
    pub version: u32,
    /// SHA-256 (hex) of the model file.
    pub fingerprint: String,
}

/// A client's answer to a [`ChampionPush`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChampionAck {
    /// The version it was sent.
    pub model: HeldModel,
    /// It wrote the model and its outputs.
    pub ok: bool,
    /// Why not, when it could not (or a one-line summary).
    pub message: String,
}

// ----- admin API -------------------------------------------------------------

/// A run as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: String,
    /// The run file's name.
    pub name: String,
    /// `queued`, `running`, `finished`, `failed` or `cancelled`.
    pub state: String,
    /// Rounds the run file asks for.
    pub rounds_planned: u32,
    /// Rounds committed.
    pub rounds_done: u32,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it started, if it has.
    pub started_at: Option<String>,
    /// When it ended, if it has.
    pub finished_at: Option<String>,
    /// Why it failed or was cancelled.
    pub failure: Option<String>,
    /// AUC of the last evaluated round.
    pub auc: Option<f64>,
    /// Log loss of the last evaluated round.
    pub log_loss: Option<f64>,
    /// Epsilon spent so far (client-level DP).
    pub epsilon: Option<f64>,
    /// The family's quality headline (empty for logistic regression, which
    /// reports AUC and log loss).
    pub quality: String,
    /// The model version the run registered (`Churn@2`), if any.
    pub model_version: Option<String>,
    /// That version's status (`champion`, `challenger-rejected`, `retired`).
    pub model_status: Option<String>,
    /// An update run's verdict.
    pub update: Option<UpdateDecisionInfo>,
}

/// The verdict of an update run, as the admin API reports it: the verdict the
/// coordinator stores with the version (one type for both).
pub use fedprofile_config::run::UpdateDecision as UpdateDecisionInfo;

/// A model version of the registry, as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelVersionInfo {
    /// The target.
    pub target: String,
    /// Its number within the target.
    pub version: u32,
    /// The run that trained it.
    pub run_id: String,
    /// The model family.
    pub family: String,
    /// `champion`, `challenger-rejected` or `retired`.
    pub status: String,
    /// Why it has that status.
    pub reason: String,
    /// The pooled metrics of its run's last evaluation, one line.
    pub metrics: String,
    /// ε its run reported.
    pub epsilon: Option<f64>,
    /// The federation's data fingerprint.
    pub data_fingerprint: String,
    /// The champion its run warm-started from.
    pub parent_version: Option<u32>,
    /// When it was registered.
    pub registered_at: String,
    /// Its update run's verdict.
    pub decision: Option<UpdateDecisionInfo>,
    /// The model file (only when one version is asked for).
    pub model_json: Option<String>,
    /// The partners whose acknowledged copy of its target is this version.
    pub partners: Vec<PartnerHolding>,
}

/// A partner's acknowledged copy of a champion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PartnerHolding {
    /// The partner.
    pub client_id: String,
    /// SHA-256 of the model file it wrote.
    pub fingerprint: String,
    /// When it acknowledged it.
    pub acknowledged_at: String,
}

/// One step of a run, streamed to `run watch`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunProgress {
    /// The run's id.
    pub run_id: String,
    /// The round reached.
    pub round: u32,
    /// Rounds the run file asks for.
    pub rounds_planned: u32,
    /// The run's state.
    pub state: String,
    /// Updates accepted in the round.
    pub clients_accepted: u32,
    /// Clients selected for the round.
    pub clients_selected: u32,
    /// AUC after the round.
    pub auc: Option<f64>,
    /// Log loss after the round.
    pub log_loss: Option<f64>,
    /// Epsilon spent so far.
    pub epsilon: Option<f64>,
    /// What happened, in words (empty if nothing to say).
    pub message: String,
    /// The family's quality headline.
    pub quality: String,
}

/// A partner as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientInfo {
    /// The partner's certificate identity.
    pub client_id: String,
    /// Whether a session is open now.
    pub connected: bool,
    /// First session (RFC 3339).
    pub first_seen: String,
    /// Last session (RFC 3339).
    pub last_seen: String,
    /// Epsilon left in the coordinator's view of its budget.
    pub budget_epsilon_left: Option<f64>,
}
