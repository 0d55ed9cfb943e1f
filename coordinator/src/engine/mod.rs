//! The round engine: one federated run as an explicit state machine, one
//! file per phase (in the xaynet style).
//!
//! ```text
//!  WaitingForClients ──► Statistics ──► Training(r) ──► Evaluating(r) ──► Training(r+1) … ──► Finished
//!        │                   │              │ (missed minimum: retry,         │
//!        └── timeout ──► Failed ◄───────────┘  then Failed)                   └─ only every k rounds
//!
//!  any state except Finished/Failed ── operator cancels ──► Cancelled
//! ```
//!
//! - **WaitingForClients** (`waiting.rs`): until `min_connected_to_start`
//!   clients are connected (bounded by `start_timeout`).
//! - **Statistics** (`statistics.rs`, `feature_stats.rs`): every connected
//!   client reports its feature template and per-column counts and sums (never
//!   rows); the engine builds the global feature spec (federated mean and
//!   standard deviation) and the family's initial model (or a warm-start
//!   model, checked by `fedprofile_learning::warm_start`).
//! - **Training(r)** (`training.rs`): select clients (fraction, minimum),
//!   send the global model, collect updates until all selected answered or the
//!   deadline passed with at least the minimum, then aggregate the way the
//!   run's family does (`fedprofile_learning::aggregate_round`: deltas through
//!   the run's strategy, statistics through the family). Bad updates are
//!   rejected, logged and counted; a round that misses its minimum is retried.
//! - **Evaluating(r)** (`evaluation.rs`): every connected client evaluates the
//!   global model on its test split; the family's summaries are pooled exactly
//!   (confusion counts, loss sums, merged score histograms for the AUC …).
//! - **Finished / Failed / Cancelled** (`finishing.rs`): a round is committed
//!   (durable, with its checkpoint) before the next starts; a failure is a
//!   [`RunError`], whose sentence is the run's failure reason.
//!
//! Every collection returns the answers sorted by client id
//! (`sessions.rs`), so everything pooled from them (statistics, aggregates,
//! evaluations) is summed in a fixed order and a seeded run is bit-for-bit
//! reproducible whatever order the clients answer in.
//!
//! The durable part of a run is one value, [`RunState`]; a [`Checkpoint`] is
//! that value with the round and the global model, and resuming a run is
//! taking it back.
//!
//! A client that lets `clients.max_missed_tasks` tasks in a row pass their
//! deadline without a result or a refusal has its session closed
//! ([`ClientHub::drop_session`]), so later phases do not wait for it; it is
//! selected again once it reconnects.
//!
//! The engine talks to clients only through [`ClientHub`] and an inbox of
//! [`Inbound`] events, so it never sees a transport type and tests drive it with
//! fakes.

mod collect;
pub mod dp;
mod evaluation;
mod feature_stats;
mod finishing;
mod sessions;
mod statistics;
mod training;
mod waiting;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedprofile_config::run::{PrivacyMode, RecordNoise};
use fedprofile_learning::metrics::Metrics;
use fedprofile_learning::strategy::ClientUpdate;
use fedprofile_learning::{
    AnyModel, FeatureSpec, LabelNeed, ModelFamily, ModelSettings, Quality, RoundAggregate,
    RoundUpdates, Statistics, WarmStartTarget, aggregate_round,
};
use fedprofile_protocol::messages::{
    ClientReply, LabelKindMsg, ModelSnapshot, RecordDpTask, RefusalKind, ResultBody, ServerEvent,
    StatsReport, Task, TaskBody, TaskKind, TrainReport, TrainTask,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use feature_stats::{global_feature_spec, stats_outliers};
use sessions::Next;

pub use collect::{Collector, Offer, RejectReason, TaskBook};
pub use evaluation::ChampionEval;

use crate::config::RunConfig;

/// Where the engine sends tasks: the set of connected client sessions.
pub trait ClientHub: Send + Sync {
    /// Ids of the clients connected now, sorted.
    fn connected(&self) -> Vec<String>;
    /// Queues an event for a client; false if it is not connected.
    fn send(&self, client: &str, event: ServerEvent) -> bool;
    /// Closes a client's session because it does not answer (`why`: a sentence
    /// for the client and the logs); it is not connected (nor selected) again
    /// until it reconnects. False if it was not connected.
    fn drop_session(&self, client: &str, why: &str) -> bool;
    /// Who is known to be missing and why, one sentence each (e.g.
    /// "partner-c's handshakes fail: its certificate expired at …"), given the
    /// clients connected now; empty when nothing is known. Used to explain a
    /// run that has too few clients.
    fn why_missing(&self, connected: &[String]) -> Vec<String> {
        let _ = connected;
        Vec::new()
    }
}

/// What reaches the engine from the sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A client opened a session.
    Connected(String),
    /// A client's session ended.
    Disconnected(String),
    /// A client answered.
    Reply {
        /// Who (from its certificate).
        client: String,
        /// What.
        reply: ClientReply,
    },
    /// A client sent something that does not decode.
    Malformed {
        /// Who.
        client: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// One finished round, as recorded in `metrics.csv` and in the database.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u32,
    /// Clients selected.
    pub selected: usize,
    /// Updates aggregated.
    pub accepted: usize,
    /// Answers rejected during the round.
    pub rejected: usize,
    /// Tasks refused by clients.
    pub refused: usize,
    /// Attempts needed (1 = no retry).
    pub attempts: u32,
    /// Example-weighted mean training loss reported by the clients.
    pub train_loss: f64,
    /// Wall time of the training phase, ms.
    pub train_phase_ms: f64,
    /// Slowest client's local training time, ms.
    pub max_client_train_ms: f64,
    /// Wall time of the evaluation phase, ms (0 when not evaluated).
    pub eval_phase_ms: f64,
    /// Slowest client's evaluation time is not reported; this is whole round wall time, ms.
    pub round_ms: f64,
    /// Pooled evaluation of a logistic-regression model after this round, when evaluated.
    pub metrics: Option<Metrics>,
    /// Pooled evaluation of a linear, softmax or k-means model, when evaluated.
    #[serde(default)]
    pub quality: Option<Quality>,
    /// Clients whose evaluation was pooled.
    pub evaluated_clients: usize,
    /// Cumulative ε after this round: the largest any client reported
    /// (record-level DP) or the coordinator's own (client-level DP).
    pub epsilon: Option<f64>,
    /// Tasks of this round that clients refused, with their kind and reason.
    #[serde(default)]
    pub refusals: Vec<RoundRefusal>,
    /// Set when the round was committed without changing the model, with why
    /// (e.g. its results were charged and then lost in a restart).
    #[serde(default)]
    pub skipped: Option<String>,
    /// The champion's evaluation on the same clients, in the final round of
    /// an update run (`[update]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<ChampionEval>,
}

/// One refused task of a round.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRefusal {
    /// The client that refused.
    pub client: String,
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// The client's sentence.
    pub reason: String,
}

impl RoundRecord {
    /// The mean training loss, when the clients released one: `None` when it
    /// is 0, which is what clients under record-level DP send (their loss is
    /// computed from raw rows without noise) and statistics families that
    /// release none record.
    pub fn released_train_loss(&self) -> Option<f64> {
        (self.train_loss > 0.0).then_some(self.train_loss)
    }

    /// Coordination overhead of the training phase: wall time not spent in the
    /// slowest client's local training.
    pub fn overhead_ms(&self) -> f64 {
        (self.train_phase_ms - self.max_client_train_ms).max(0.0)
    }
}

/// Receives progress as the run goes.
pub trait RunObserver: Send {
    /// A round finished.
    fn round_finished(&mut self, run: &RunSnapshot<'_>, record: &RoundRecord);
    /// A notable event (start, statistics done, retry, failure).
    fn note(&mut self, _message: &str) {}
    /// A robust strategy left clients' updates out of a round.
    fn excluded(&mut self, _run_id: &str, _round: u32, _strategy: &str, _clients: &[String]) {}
    /// An answer was rejected.
    fn update_rejected(
        &mut self,
        _run_id: &str,
        _client: &str,
        _task_id: &str,
        _reason: &RejectReason,
    ) {
    }
    /// A client refused a task.
    fn task_refused(&mut self, _run_id: &str, _client: &str, _task_id: &str, _reason: &str) {}
}

/// The model part of a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointModel {
    /// Model family.
    pub model_type: String,
    /// Feature encoding.
    pub features: FeatureSpec,
    /// Parameters.
    pub params: Vec<f64>,
    /// Rows of the parameters (classes or clusters; 1 otherwise).
    #[serde(default = "one")]
    pub outputs: usize,
}

fn one() -> usize {
    1
}

/// The durable state of a run besides its round and model: everything a
/// resumed run takes back. Serialised (flattened) inside a [`Checkpoint`], in
/// the JSON format every earlier coordinator wrote.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Label column and positive value.
    pub target: Option<(String, String)>,
    /// Class names of a multi-class label.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Clients with an accepted update so far.
    pub contributors: BTreeSet<String>,
    /// Rejections so far, by reason.
    pub rejections: BTreeMap<String, u64>,
    /// Refusals so far, by client.
    pub refusals: BTreeMap<String, String>,
    /// Clients that sent non-private (test-seeded) updates.
    pub not_private: BTreeSet<String>,
    /// The adaptive clip norm of client-level DP.
    pub server_clip_norm: Option<f64>,
    /// Clients left out of the rest of the run because they refused for good
    /// (privacy budget exhausted, policy), with their reason.
    #[serde(default)]
    pub excluded: BTreeMap<String, String>,
    /// Clients that refused a task because their privacy budget would be
    /// exceeded, with their reason (a schedule stops on these).
    #[serde(default)]
    pub budget_refusals: BTreeMap<String, String>,
    /// Training examples each client reported in the statistics phase (the
    /// bound on what its updates may claim).
    #[serde(default)]
    pub reported_examples: BTreeMap<String, u64>,
    /// The champion an update run warm-started from (evaluated next to the
    /// challenger in the final round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<CheckpointModel>,
}

/// Everything needed to continue a run after the round it was taken at
/// (round 0: after the statistics phase): the round, the global model and the
/// [`RunState`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The last completed round.
    pub round: u32,
    /// The global model after that round.
    pub model: CheckpointModel,
    /// The rest of the durable state.
    #[serde(flatten)]
    pub state: RunState,
}

/// The attempt of a round that was sent out when the run stopped; a resumed
/// run repeats it to the same clients under the same task ids, so nothing a
/// partner already charged is charged again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InFlight {
    /// The round.
    pub round: u32,
    /// The attempt.
    pub attempt: u32,
    /// The clients it selected.
    pub selected: Vec<String>,
    /// Clients connected when it sampled (client-level DP's denominator).
    pub population: usize,
}

/// Why a [`RoundSink`] could not persist a round or an attempt (one sentence).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

impl From<String> for SinkError {
    fn from(why: String) -> SinkError {
        SinkError(why)
    }
}

/// Why a run stopped early; its `Display` is the failure reason operators see
/// (in `summary.json`, the database and the clients' final message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// Too few clients connected in time (with who is missing and why).
    #[error("{0}")]
    NotEnoughClients(String),
    /// The federation service stopped (its inbox closed).
    #[error("the federation service stopped")]
    ServiceStopped,
    /// The run file's strategy cannot be built.
    #[error("strategy: {0}")]
    Strategy(String),
    /// Client-level DP cannot be set up (ledger, parameters).
    #[error("{0}")]
    Privacy(String),
    /// The clients' schema does not fit the run's family.
    #[error("{0}")]
    Schema(String),
    /// The warm-start model cannot be used.
    #[error("warm start: {0}")]
    WarmStart(String),
    /// The family's initial model cannot be built.
    #[error("cannot build the initial model: {0}")]
    InitialModel(String),
    /// A round (0: the statistics) could not be committed.
    #[error("cannot persist round {round}: {source}")]
    Persist {
        /// The round.
        round: u32,
        /// The sink's reason.
        source: SinkError,
    },
    /// An attempt could not be recorded before it was sent (DP runs).
    #[error("round {round}: cannot record the attempt before sending it: {source}")]
    RecordAttempt {
        /// The round.
        round: u32,
        /// The sink's reason.
        source: SinkError,
    },
    /// A round cannot go on (e.g. client-level DP refused to release it).
    #[error("round {0}: {1}")]
    Round(u32, String),
    /// A phase failed and has no retries left (the sentence says why).
    #[error("{0}; no retries left")]
    RetriesExhausted(String),
    /// Too few clients can still train, so no retry can succeed.
    #[error("{0}")]
    CannotTrain(String),
    /// The operator cancelled the run.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A broken invariant of the engine.
    #[error("internal: {0}")]
    Internal(String),
}

/// Where finished rounds are made durable. A round is committed before the next
/// one starts; if the commit fails, the run stops.
pub trait RoundSink: Send {
    /// Persists a round (`record` is `None` for round 0) with its checkpoint.
    fn commit(
        &mut self,
        record: Option<&RoundRecord>,
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError>;

    /// Persists the attempt about to be sent (under DP, before any task goes
    /// out), so a resumed run can repeat it exactly. The default keeps nothing.
    fn begin_attempt(&mut self, _attempt: &InFlight) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that keeps nothing (tests, one-off runs without a database).
#[derive(Debug, Default)]
pub struct NoSink;

impl RoundSink for NoSink {
    fn commit(&mut self, _: Option<&RoundRecord>, _: &Checkpoint) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Read-only view for observers.
#[derive(Debug)]
pub struct RunSnapshot<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Rounds planned.
    pub rounds: u32,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Run id.
    pub run_id: String,
    /// True if every round completed.
    pub completed: bool,
    /// Set when an operator cancelled the run (with the reason).
    pub cancelled: Option<String>,
    /// Why the run stopped early.
    pub failure: Option<String>,
    /// The global model (absent if the run failed before statistics).
    pub model: Option<ModelSnapshot>,
    /// One record per finished round.
    pub rounds: Vec<RoundRecord>,
    /// Rejected answers by reason key.
    pub rejections: BTreeMap<String, u64>,
    /// Refusals by client, with the last reason.
    pub refusals: BTreeMap<String, String>,
    /// Clients left out of the run after refusing for good (budget, policy).
    pub excluded: BTreeMap<String, String>,
    /// Clients that refused because their privacy budget would be exceeded.
    pub budget_refusals: BTreeMap<String, String>,
    /// Clients that contributed at least one accepted update.
    pub contributors: Vec<String>,
    /// Clients whose updates were made with a fixed test seed (not private).
    pub not_private: Vec<String>,
    /// The label column and its positive value, as the clients' schema declares.
    pub target: Option<(String, String)>,
    /// Class names of a multi-class label, in the schema's order.
    pub classes: Vec<String>,
    /// Training examples each client reported in the statistics phase.
    pub reported_examples: BTreeMap<String, u64>,
    /// The run's privacy mode and the ε (δ) it spent, for the model's provenance.
    pub privacy: Option<fedprofile_learning::PrivacyProvenance>,
}

/// The states of a run.
#[derive(Debug)]
enum State {
    WaitingForClients,
    Statistics { attempt: u32 },
    Training { round: u32, attempt: u32 },
    Evaluating { record: Box<RoundRecord> },
    Finished,
    Failed(RunError),
    Cancelled(String),
}

/// One run in progress.
pub struct Run {
    config: RunConfig,
    run_id: String,
    hub: Arc<dyn ClientHub>,
    inbox: mpsc::Receiver<Inbound>,
    observer: Box<dyn RunObserver>,
    rng: StdRng,
    book: TaskBook,
    /// The durable state (see [`RunState`]).
    state: RunState,
    global: Option<ModelSnapshot>,
    rounds: Vec<RoundRecord>,
    ledger_path: Option<std::path::PathBuf>,
    server_dp: Option<dp::ServerDp>,
    sink: Box<dyn RoundSink>,
    tail: std::collections::VecDeque<ndarray::Array1<f64>>,
    strategy: Option<Box<dyn fedprofile_learning::strategy::ServerStrategy>>,
    /// The round of the checkpoint the run resumed from.
    resumed: Option<u32>,
    in_flight: Option<InFlight>,
    cancel: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// Tasks each client missed in a row (deadline passed without an answer).
    missed: BTreeMap<String, u32>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("run_id", &self.run_id).finish()
    }
}

impl Run {
    /// Prepares a run; nothing is sent until [`Run::execute`].
    pub fn new(
        config: RunConfig,
        run_id: String,
        hub: Arc<dyn ClientHub>,
        inbox: mpsc::Receiver<Inbound>,
        observer: Box<dyn RunObserver>,
    ) -> Run {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Run {
            config,
            run_id,
            hub,
            inbox,
            observer,
            rng,
            book: TaskBook::default(),
            state: RunState::default(),
            global: None,
            rounds: Vec::new(),
            ledger_path: None,
            server_dp: None,
            sink: Box::new(NoSink),
            tail: Default::default(),
            strategy: None,
            resumed: None,
            in_flight: None,
            cancel: None,
            missed: BTreeMap::new(),
        }
    }

    /// Commits every round to `sink` before going on.
    pub fn with_sink(mut self, sink: Box<dyn RoundSink>) -> Run {
        self.sink = sink;
        self
    }

    /// Continues a run from its last committed round (`rounds`: the records so far).
    pub fn resume_from(mut self, checkpoint: Checkpoint, rounds: Vec<RoundRecord>) -> Run {
        let Checkpoint {
            round,
            model,
            state,
        } = checkpoint;
        self.global = Some(ModelSnapshot {
            model_type: model.model_type,
            features: model.features,
            params: ndarray::Array1::from_vec(model.params),
            outputs: model.outputs,
        });
        self.state = state;
        self.rounds = rounds;
        self.resumed = Some(round);
        self
    }

    /// The attempt that was in flight when the run stopped (see [`InFlight`]);
    /// ignored unless it is the round after the resumed checkpoint.
    pub fn with_in_flight(mut self, in_flight: Option<InFlight>) -> Run {
        self.in_flight = in_flight;
        self
    }

    /// Lets an operator cancel the run: when the value becomes `Some(reason)`.
    pub fn with_cancel(mut self, cancel: tokio::sync::watch::Receiver<Option<String>>) -> Run {
        self.cancel = Some(cancel);
        self
    }

    /// The model released for evaluation and saving: the mean of the last
    /// `tail_average_rounds` global models (the global model itself when 1).
    fn released(&self) -> Option<ModelSnapshot> {
        let mut model = self.global.clone()?;
        if self.config.tail_average_rounds > 1 && !self.tail.is_empty() {
            let mut sum = ndarray::Array1::<f64>::zeros(model.params.len());
            for p in &self.tail {
                sum += p;
            }
            model.params = sum / self.tail.len() as f64;
        }
        Some(model)
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn checkpoint(&self, round: u32) -> Option<Checkpoint> {
        let global = self.global.as_ref()?;
        let mut state = self.state.clone();
        state.server_clip_norm = self.server_dp.as_ref().map(dp::ServerDp::clip_norm);
        Some(Checkpoint {
            round,
            model: CheckpointModel {
                model_type: global.model_type.clone(),
                features: global.features.clone(),
                params: global.params.to_vec(),
                outputs: global.outputs,
            },
            state,
        })
    }

    /// Commits round `round` (0: after statistics); `Err` stops the run.
    fn commit(&mut self, record: Option<&RoundRecord>, round: u32) -> Result<(), RunError> {
        let Some(checkpoint) = self.checkpoint(round) else {
            return Err(RunError::Internal("no global model to checkpoint".into()));
        };
        self.sink
            .commit(record, &checkpoint)
            .map_err(|source| RunError::Persist { round, source })
    }

    /// The operator's cancellation reason, if any.
    fn cancelled(&self) -> Option<String> {
        self.cancel.as_ref().and_then(|c| c.borrow().clone())
    }

    /// Where the coordinator's privacy ledger lives (client-level DP).
    pub fn with_ledger(mut self, path: std::path::PathBuf) -> Run {
        self.ledger_path = Some(path);
        self
    }

    /// Runs the state machine to its end and tells every connected client.
    /// Returns the outcome and hands the inbox back for the next run.
    pub async fn execute(mut self) -> (RunOutcome, mpsc::Receiver<Inbound>) {
        let mut state = State::WaitingForClients;
        match self.config.strategy.build() {
            Ok(strategy) => self.strategy = Some(strategy),
            Err(e) => state = State::Failed(RunError::Strategy(e.to_string())),
        }
        if let fedprofile_config::run::PrivacyMode::Client(cfg) = self.config.privacy {
            match dp::ServerDp::new(
                cfg,
                self.config.fraction_per_round,
                self.ledger_path.as_deref(),
            ) {
                Ok(mut server_dp) => {
                    if let Some(clip) = self.resumed.and(self.state.server_clip_norm) {
                        server_dp.set_clip_norm(clip);
                    }
                    self.observer.note(&format!(
                        "client-level DP: each connected client is sampled with probability {} per round (Poisson, from a CSPRNG; the run file's seed and clients.min_per_round do not change who is sampled), and that rate is charged",
                        server_dp.sampling_rate()
                    ));
                    self.server_dp = Some(server_dp);
                }
                Err(e) => state = State::Failed(RunError::Privacy(e.to_string())),
            }
        }
        let (failure, cancelled) = loop {
            if let Some(reason) = self.cancelled()
                && !matches!(
                    state,
                    State::Finished | State::Failed(_) | State::Cancelled(_)
                )
            {
                state = State::Cancelled(reason);
            }
            state = match state {
                State::WaitingForClients => self.wait_for_clients().await,
                State::Statistics { attempt } => self.statistics(attempt).await,
                State::Training { round, attempt } => self.train_round(round, attempt).await,
                State::Evaluating { record } => self.evaluate(*record).await,
                State::Finished => break (None, None),
                State::Failed(error) => break (Some(error.to_string()), None),
                State::Cancelled(why) => {
                    break (
                        Some(RunError::Cancelled(why.clone()).to_string()),
                        Some(why),
                    );
                }
            };
        };
        let message = match &failure {
            None => format!("run finished after {} rounds", self.rounds.len()),
            Some(why) => format!("run stopped: {why}"),
        };
        self.observer.note(&message);
        for client in self.hub.connected() {
            self.hub.send(
                &client,
                ServerEvent::Finished {
                    run_id: self.run_id.clone(),
                    message: message.clone(),
                },
            );
        }
        let released = self.released();
        let privacy = Some(fedprofile_learning::PrivacyProvenance {
            mode: match self.config.privacy {
                PrivacyMode::None => "none",
                PrivacyMode::Record(_) => "record",
                PrivacyMode::Client(_) => "client",
            }
            .into(),
            epsilon: self.rounds.iter().rev().find_map(|r| r.epsilon),
            delta: match self.config.privacy {
                PrivacyMode::None => None,
                PrivacyMode::Record(r) => Some(r.delta),
                PrivacyMode::Client(c) => Some(c.delta),
            },
        });
        let outcome = RunOutcome {
            privacy,
            run_id: self.run_id,
            completed: failure.is_none(),
            cancelled,
            failure,
            model: released,
            rounds: self.rounds,
            rejections: self.state.rejections,
            refusals: self.state.refusals,
            excluded: self.state.excluded,
            budget_refusals: self.state.budget_refusals,
            contributors: self.state.contributors.into_iter().collect(),
            not_private: self.state.not_private.into_iter().collect(),
            target: self.state.target,
            classes: self.state.classes,
            reported_examples: self.state.reported_examples,
        };
        (outcome, self.inbox)
    }

    fn count_rejection(&mut self, client: &str, task: &str, reason: &RejectReason) {
        self.observer
            .update_rejected(&self.run_id, client, task, reason);
        tracing::warn!(
            run_id = %self.run_id,
            client = %client,
            task_id = %task,
            reason = reason.key(),
            "update rejected: {reason}"
        );
        *self
            .state
            .rejections
            .entry(reason.key().to_string())
            .or_default() += 1;
    }
}

/// Deadline arithmetic that never overflows.
fn deadline_after(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now()
        .checked_add(d)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests;
