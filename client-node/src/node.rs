//! The client node's work, free of transport: load and clean the partner's data
//! once, then answer tasks (statistics, training, evaluation). Raw rows stay here;
//! only counts, sums, model updates and score histograms leave.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fedprofile_data::{Dataset, FeatureSpec, LabelKind, LoadedSplit, Schema};
use fedprofile_learning::dp::ValidDpSgdParams;
use fedprofile_learning::dp::{secure_rng, seeded_test_rng};
use fedprofile_learning::train::{TrainParams, ValidTrainParams};
use fedprofile_learning::{
    AnyModel, Evaluation, FeatureColumn, GradientTraining, LabelNeed, ModelFamily, StatisticsDp,
    Training, local_update,
};
use fedprofile_privacy::Charge;
use fedprofile_protocol::messages::{
    BinaryStats, ClientReply, ColumnStats, LabelKindMsg, ModelSnapshot, RefusalKind, ResultBody,
    StatsReport, Task, TaskBody, TrainReport, TrainTask,
};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand_chacha::ChaCha20Rng;

use crate::privacy::{self, PrivacyGuard, PrivacyRefusal, PrivacySettings};
use fedprofile_protocol::messages::RecordDpTask;

/// The node could not load its data.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The schema or a split could not be loaded.
    #[error(transparent)]
    Data(#[from] fedprofile_data::DataError),
    /// The privacy ledger or budget is unusable.
    #[error(transparent)]
    Privacy(#[from] PrivacyRefusal),
    /// A split has no rows after cleaning.
    #[error("the {split} split in '{dir}' has no usable rows after cleaning (see check-data)")]
    Empty {
        /// Split name.
        split: String,
        /// Data folder.
        dir: String,
    },
}

/// A task the node could not do; sent to the coordinator as a refusal.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task's feature spec does not fit the local schema.
    #[error("cannot encode features for this model: {0}")]
    Encode(fedprofile_data::DataError),
    /// Model or training failure.
    #[error("{0}")]
    Learning(#[from] fedprofile_learning::LearningError),
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// Privacy refused the task.
    #[error(transparent)]
    Privacy(#[from] PrivacyRefusal),
    /// The model type is not one this node can train.
    #[error("model type '{0}' is not supported by this client")]
    ModelType(String),
    /// The model needs a label this node's schema does not declare.
    #[error("a {family} model needs {needs} in this client's schema, which declares {has}")]
    Label {
        /// The model family.
        family: ModelFamily,
        /// What it needs.
        needs: &'static str,
        /// What the schema has.
        has: &'static str,
    },
}

impl TaskError {
    /// What the coordinator should make of this refusal.
    pub fn refusal_kind(&self) -> RefusalKind {
        match self {
            TaskError::Privacy(p) => p.refusal_kind(),
            _ => RefusalKind::Other,
        }
    }
}

/// Logs (file:line, column) the numeric cells that were too large to be numbers or
/// outside their declared bounds: one broken export must be visible in the client log,
/// not only in `check-data`.
fn log_numeric_issues(report: &fedprofile_data::QualityReport) {
    use fedprofile_data::Reason;
    for issue in &report.issues {
        if matches!(
            issue.reason,
            Reason::NumberTooLarge | Reason::OutOfRangeClipped | Reason::OutOfRangeRejected
        ) {
            let examples: Vec<String> = issue.examples.iter().map(ToString::to_string).collect();
            tracing::warn!(
                split = %report.split,
                count = issue.count,
                "{}: {}",
                issue.reason.describe(),
                examples.join("; ")
            );
        }
    }
}

/// The schema's label kind as the protocol reports it.
fn label_kind_msg(kind: Option<LabelKind>) -> LabelKindMsg {
    match kind {
        None => LabelKindMsg::None,
        Some(LabelKind::Binary) => LabelKindMsg::Binary,
        Some(LabelKind::Numeric) => LabelKindMsg::Numeric,
        Some(LabelKind::Multiclass) => LabelKindMsg::Classes,
    }
}

/// One loaded, cleaned split with its labels (if the schema has a label) and
/// an encoding cache.
#[derive(Debug)]
struct Split {
    dataset: Dataset,
    labels: Option<Array1<f64>>,
    encoded: Option<(FeatureSpec, Array2<f64>)>,
}

impl Split {
    fn new(loaded: LoadedSplit, name: &str, dir: &Path) -> Result<Split, NodeError> {
        if loaded.dataset.is_empty() {
            return Err(NodeError::Empty {
                split: name.into(),
                dir: dir.display().to_string(),
            });
        }
        let labels = match loaded.dataset.label_kind() {
            Some(_) => Some(loaded.dataset.labels()?),
            None => None,
        };
        Ok(Split {
            dataset: loaded.dataset,
            labels,
            encoded: None,
        })
    }

    /// The encoded features (cached per spec) and the labels.
    fn xy(
        &mut self,
        spec: &FeatureSpec,
    ) -> Result<(ArrayView2<'_, f64>, ArrayView1<'_, f64>), TaskError> {
        let (x, y) = self.x_and_labels(spec)?;
        Ok((
            x,
            y.ok_or(TaskError::Internal("labels checked before use"))?,
        ))
    }

    /// The encoded features (cached per spec) and the labels, if any.
    fn x_and_labels(
        &mut self,
        spec: &FeatureSpec,
    ) -> Result<(ArrayView2<'_, f64>, Option<ArrayView1<'_, f64>>), TaskError> {
        let stale = self
            .encoded
            .as_ref()
            .is_none_or(|(cached, _)| cached != spec);
        if stale {
            let x = self.dataset.encode(spec).map_err(TaskError::Encode)?;
            self.encoded = Some((spec.clone(), x));
        }
        match &self.encoded {
            Some((_, x)) => Ok((x.view(), self.labels.as_ref().map(|y| y.view()))),
            None => Err(TaskError::Internal("feature cache empty after encoding")),
        }
    }
}

/// A deliberately bad update, for robustness tests only (`--insecure-test-poison`,
/// in binaries built with the `testutils` feature; release binaries have neither).
#[cfg(feature = "testutils")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poison {
    /// The honest update scaled by 20.
    Scaled,
    /// The honest update negated and scaled by 5.
    SignFlip,
    /// Gaussian noise with 10 times the honest update's norm.
    Random,
}

#[cfg(feature = "testutils")]
impl std::str::FromStr for Poison {
    type Err = String;
    fn from_str(s: &str) -> Result<Poison, String> {
        match s {
            "scaled" => Ok(Poison::Scaled),
            "sign-flip" | "sign_flip" => Ok(Poison::SignFlip),
            "random" => Ok(Poison::Random),
            other => Err(format!(
                "'{other}' is not a poisoning mode (scaled, sign-flip, random)"
            )),
        }
    }
}

/// One of `count` disjoint parts of a partner's users (by a hash of the user id),
/// to run one partner as several clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, from 0.
    pub index: u32,
    /// Number of parts.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("'{s}' is not a shard like 0/2 (index/count, index < count)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) =
            (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    fn keep(&self, dataset: &Dataset) -> Dataset {
        // FNV-1a: stable across platforms and releases.
        let hash = |id: &str| {
            id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        let rows: Vec<usize> = dataset
            .ids()
            .iter()
            .enumerate()
            .filter(|(_, id)| hash(id) % u64::from(self.count) == u64::from(self.index))
            .map(|(i, _)| i)
            .collect();
        dataset.subset(&rows)
    }
}

/// Test-only options of a node.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestOptions {
    /// Seed the RNG (updates are then NOT private).
    pub seed: Option<u64>,
    /// Send poisoned updates.
    #[cfg(feature = "testutils")]
    pub poison: Option<Poison>,
    /// Use only a part of the partner's users.
    pub shard: Option<Shard>,
    /// Stall forever after charging a training task of this round.
    pub stall_after_charge: Option<u32>,
}

/// Where a node's splits come from, to load them again when the export changes.
#[derive(Debug, Clone)]
struct DataSource {
    data_dir: PathBuf,
    train_split: String,
    test_split: String,
    shard: Option<Shard>,
}

impl DataSource {
    /// Loads and cleans both splits. The verdict of `check-data` (an empty
    /// split, or a numeric column without one usable number) is an error.
    fn load(&self, schema: &Schema) -> Result<(Split, Split), NodeError> {
        let mut splits = Vec::with_capacity(2);
        for name in [&self.train_split, &self.test_split] {
            let mut loaded = fedprofile_data::load_split(schema, &self.data_dir, name)?;
            loaded.check()?;
            log_numeric_issues(&loaded.report);
            if let Some(shard) = self.shard {
                loaded.dataset = shard.keep(&loaded.dataset);
            }
            splits.push(Split::new(loaded, name, &self.data_dir)?);
        }
        let test = splits.pop().ok_or_else(|| NodeError::Empty {
            split: self.test_split.clone(),
            dir: self.data_dir.display().to_string(),
        })?;
        let train = splits.pop().ok_or_else(|| NodeError::Empty {
            split: self.train_split.clone(),
            dir: self.data_dir.display().to_string(),
        })?;
        tracing::info!(
            train_rows = train.dataset.len(),
            test_rows = test.dataset.len(),
            "data loaded and cleaned"
        );
        Ok((train, test))
    }
}

/// A partner's node: its schema, its cleaned splits, its RNG.
#[derive(Debug)]
pub struct Node {
    schema: Schema,
    train: Split,
    test: Split,
    source: DataSource,
    rng: ChaCha20Rng,
    test_seed: bool,
    #[cfg(feature = "testutils")]
    poison: Option<Poison>,
    stall_after_charge: Option<u32>,
    guard: Option<PrivacyGuard>,
    require_dp: bool,
    calibrated: HashMap<String, f64>,
    /// Training results by task id: a task sent again is answered from here,
    /// never trained (or charged) twice.
    answered: HashMap<String, ClientReply>,
    /// Runs whose DP-SGD plan was already assessed (warned once per run).
    warned_runs: std::collections::HashSet<String>,
}

impl Node {
    /// Loads the schema and both splits, and opens the privacy ledger.
    /// `test_seed` makes training reproducible and NOT private.
    pub fn load(
        schema_path: &Path,
        data_dir: &Path,
        train_split: &str,
        test_split: &str,
        privacy: Option<&PrivacySettings>,
        test: TestOptions,
    ) -> Result<Node, NodeError> {
        let test_options = test;
        let schema = Schema::from_path(schema_path)?;
        let source = DataSource {
            data_dir: data_dir.to_path_buf(),
            train_split: train_split.to_string(),
            test_split: test_split.to_string(),
            shard: test_options.shard,
        };
        let (train, test) = source.load(&schema)?;
        #[cfg(feature = "testutils")]
        if let Some(poison) = test_options.poison {
            tracing::warn!(?poison, "TEST MODE: this node sends poisoned updates");
        }
        let test_seed = test_options.seed;
        Ok(Node {
            train,
            test,
            source,
            schema,
            rng: match test_seed {
                Some(seed) => seeded_test_rng(seed),
                None => secure_rng(),
            },
            test_seed: test_seed.is_some(),
            #[cfg(feature = "testutils")]
            poison: test_options.poison,
            stall_after_charge: test_options.stall_after_charge,
            guard: privacy.map(PrivacyGuard::open).transpose()?,
            require_dp: privacy.is_some_and(|p| p.require_dp),
            calibrated: HashMap::new(),
            answered: HashMap::new(),
            warned_runs: Default::default(),
        })
    }

    /// The data folder the splits are read from.
    pub fn data_dir(&self) -> &Path {
        &self.source.data_dir
    }

    /// Cleaned rows per split (`train` and `test` under their split names).
    pub fn rows(&self) -> std::collections::BTreeMap<String, u64> {
        [
            (&self.source.train_split, &self.train),
            (&self.source.test_split, &self.test),
        ]
        .into_iter()
        .map(|(name, split)| (name.clone(), split.dataset.len() as u64))
        .collect()
    }

    /// Loads both splits again (the export changed). On error the node keeps
    /// the splits it had.
    pub fn reload_data(&mut self) -> Result<(), NodeError> {
        let (train, test) = self.source.load(&self.schema)?;
        self.train = train;
        self.test = test;
        Ok(())
    }

    /// The budget ε and what the ledger has spent, when this client has a budget.
    pub fn privacy_status(&self) -> (Option<f64>, Option<f64>) {
        match &self.guard {
            Some(g) => (Some(g.budget().epsilon()), Some(g.spent())),
            None => (None, None),
        }
    }

    /// Does one task; any failure becomes a refusal with its reason.
    pub fn handle(&mut self, task: &Task) -> ClientReply {
        if let Some(reply) = self.answered.get(&task.task_id) {
            tracing::info!(task_id = %task.task_id, "task sent again: answering from the cache");
            return reply.clone();
        }
        let result = match &task.body {
            TaskBody::Stats { binary_counts } => self.stats(*binary_counts).map(ResultBody::Stats),
            TaskBody::Train(t) => self.train(task, t).map(ResultBody::Train),
            TaskBody::Eval(m) => self.evaluate(m).map(ResultBody::Eval),
        };
        match result {
            Ok(body) => {
                let reply = ClientReply::Result {
                    task_id: task.task_id.clone(),
                    body,
                };
                if matches!(task.body, TaskBody::Train(_)) {
                    self.answered.insert(task.task_id.clone(), reply.clone());
                }
                reply
            }
            Err(e) => {
                let kind = e.refusal_kind();
                tracing::warn!(task_id = %task.task_id, kind = kind.as_str(), "task refused: {e}");
                ClientReply::Refusal {
                    task_id: task.task_id.clone(),
                    reason: e.to_string(),
                    kind,
                }
            }
        }
    }

    fn stats(&self, binary_counts: bool) -> Result<StatsReport, TaskError> {
        let template = self.schema.feature_template();
        let binary = if binary_counts {
            let x = self
                .train
                .dataset
                .encode(&template)
                .map_err(TaskError::Encode)?;
            binary_stats(&template, &x)
        } else {
            Vec::new()
        };
        Ok(StatsReport {
            binary,
            template,
            numeric: self
                .train
                .dataset
                .numeric_stats()
                .into_iter()
                .map(|s| ColumnStats {
                    column: s.column,
                    count: s.count,
                    sum: s.sum,
                    sum_sq: s.sum_sq,
                })
                .collect(),
            train_examples: self.train.dataset.len() as u64,
            label_column: self.schema.label_name().unwrap_or_default().to_string(),
            label_positive: self.schema.label_positive().unwrap_or_default().to_string(),
            label_kind: label_kind_msg(self.schema.label_kind()),
            label_classes: self
                .schema
                .label_classes()
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
        })
    }

    /// The task's model, checked against what this node's schema can train.
    fn model(&self, snapshot: &ModelSnapshot) -> Result<AnyModel, TaskError> {
        let family = ModelFamily::parse(&snapshot.model_type)
            .ok_or_else(|| TaskError::ModelType(snapshot.model_type.clone()))?;
        let has = label_kind_msg(self.schema.label_kind());
        let needs = match family.label_need() {
            LabelNeed::Binary => LabelKindMsg::Binary,
            LabelNeed::Numeric => LabelKindMsg::Numeric,
            LabelNeed::Classes => LabelKindMsg::Classes,
            LabelNeed::Supervised if has == LabelKindMsg::Numeric => has,
            LabelNeed::Supervised => LabelKindMsg::Binary,
            LabelNeed::None => has,
        };
        if has != needs {
            return Err(TaskError::Label {
                family,
                needs: needs.describe(),
                has: has.describe(),
            });
        }
        Ok(AnyModel::from_parts(
            family,
            snapshot.params.clone(),
            snapshot.outputs,
        )?)
    }

    fn train(&mut self, task: &Task, train: &TrainTask) -> Result<TrainReport, TaskError> {
        let model = self.model(&train.model)?;
        match model.training() {
            Training::Gradient(_) => self.train_gradient(task, train, &model),
            Training::Statistics => self.train_statistics(task, train, &model),
        }
    }

    /// A gradient-trained family: the one SGD loop (or DP-SGD, charged first)
    /// on the family's objective; the client sends the delta.
    fn train_gradient(
        &mut self,
        task: &Task,
        train: &TrainTask,
        model: &AnyModel,
    ) -> Result<TrainReport, TaskError> {
        let started = Instant::now();
        let (how, epsilon_spent) = match &train.record_dp {
            None => (GradientTraining::Plain(self.plain_params(train)?), None),
            Some(record) => {
                let (params, epsilon) = self.charge_dp_sgd(task, train, record)?;
                (GradientTraining::DpSgd(params), Some(epsilon))
            }
        };
        let (x, y) = self.train.xy(&train.model.features)?;
        let outcome = local_update(model, x, y, &how, &mut self.rng)?;
        let train_micros = started.elapsed().as_micros() as u64;
        self.finish_update(
            train,
            outcome.delta,
            outcome.examples,
            outcome.steps,
            outcome.mean_loss,
            train_micros,
            epsilon_spent,
        )
    }

    /// A statistics family: the family's local statistics of the rows (noised
    /// and charged under record-level DP); the client sends them.
    fn train_statistics(
        &mut self,
        task: &Task,
        train: &TrainTask,
        model: &AnyModel,
    ) -> Result<TrainReport, TaskError> {
        let started = Instant::now();
        let (dp, epsilon_spent) = match &train.record_dp {
            None => {
                if self.require_dp {
                    return Err(PrivacyRefusal::DpRequired.into());
                }
                (None, None)
            }
            Some(record) => {
                let plan = privacy::plan_statistics(model, record, &mut self.calibrated)?;
                let epsilon_spent = self.charge(task, plan.charge, record.clip_norm)?;
                let dp = StatisticsDp {
                    clip_norm: record.clip_norm,
                    noise_multiplier: plan.noise_multiplier,
                };
                (Some(dp), Some(epsilon_spent))
            }
        };
        let (x, y) = self.train.x_and_labels(&train.model.features)?;
        let stats = model
            .ops()
            .local_statistics(model, x, y, dp, &mut self.rng)?;
        Ok(TrainReport::of_statistics(
            stats,
            started.elapsed().as_micros() as u64,
            epsilon_spent,
            self.test_seed,
        ))
    }

    /// Charges `task`'s privacy cost to the budget (before any training on
    /// the rows), then stalls if a test asked for it; the cumulative ε after
    /// the charge.
    fn charge(&mut self, task: &Task, charge: Charge, clip_norm: f64) -> Result<f64, TaskError> {
        let guard = self.guard.as_mut().ok_or(PrivacyRefusal::NoBudget)?;
        let entry = guard.charge(&task.run_id, task.round, &task.task_id, charge, clip_norm)?;
        self.stall_if_asked(task);
        Ok(entry.cumulative_epsilon)
    }

    /// Test only (`--insecure-test-stall-after-charge`): stop answering after
    /// the charge of the chosen round, so a test can kill every process between
    /// the partners' charges and the round's commit.
    fn stall_if_asked(&self, task: &Task) {
        if self.stall_after_charge == Some(task.round) {
            tracing::warn!(task_id = %task.task_id, "TEST MODE: charged, now stalling without answering");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    /// Plain local-training parameters of a task; refused when this client
    /// trains only with record-level DP.
    fn plain_params(&self, train: &TrainTask) -> Result<ValidTrainParams, TaskError> {
        if self.require_dp {
            return Err(PrivacyRefusal::DpRequired.into());
        }
        Ok(TrainParams {
            epochs: train.local_epochs as usize,
            batch_size: train.batch_size as usize,
            learning_rate: train.learning_rate,
            l2: 0.0,
            prox_mu: train.prox_mu,
        }
        .check()?)
    }

    /// Record-level DP-SGD: plans the task on this client's data, then refuses it
    /// or charges it to the ledger (synced to disk) before any noise is drawn.
    /// Returns the DP-SGD parameters (with the task's FedProx μ) and the
    /// cumulative ε after the charge.
    fn charge_dp_sgd(
        &mut self,
        task: &Task,
        train: &TrainTask,
        record: &RecordDpTask,
    ) -> Result<(ValidDpSgdParams, f64), TaskError> {
        let plan = privacy::plan(
            record,
            self.train.dataset.len(),
            train.batch_size as usize,
            train.local_epochs as usize,
            train.learning_rate,
            &mut self.calibrated,
        )?;
        if self.warned_runs.insert(task.run_id.clone()) {
            let warnings = fedprofile_privacy::utility::assess_dp_sgd(
                self.train.dataset.len(),
                train.batch_size as usize,
                plan.params.sampling_rate(),
                plan.charge.sigma,
                train.model.params.len(),
            );
            for w in warnings {
                tracing::warn!(run_id = %task.run_id, kind = w.kind(), "{w}");
            }
            if let Some(guard) = self.guard.as_ref() {
                let left = record.planned_rounds.saturating_sub(task.round) + 1;
                guard.plan_ahead(plan.charge, left);
            }
        }
        let epsilon_spent = self.charge(task, plan.charge, record.clip_norm)?;
        Ok((plan.params.with_prox_mu(train.prox_mu)?, epsilon_spent))
    }

    /// Makes `delta` a poisoned update if this node was told to send them.
    #[cfg(feature = "testutils")]
    fn poison_update(&mut self, delta: &mut Array1<f64>) -> Result<(), TaskError> {
        let Some(poison) = self.poison else {
            return Ok(());
        };
        let norm = delta.dot(&*delta).sqrt().max(1e-6);
        match poison {
            Poison::Scaled => *delta *= 20.0,
            Poison::SignFlip => *delta *= -5.0,
            Poison::Random => {
                let noise = rand_distr::Normal::new(0.0, 10.0 * norm / (delta.len() as f64).sqrt())
                    .map_err(|_| TaskError::Internal("poison noise"))?;
                delta.mapv_inplace(|_| rand::Rng::sample(&mut self.rng, noise));
            }
        }
        Ok(())
    }

    /// Poisoning (tests only), client-level clipping and the report of a delta.
    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &mut self,
        train: &TrainTask,
        mut delta: Array1<f64>,
        examples: usize,
        steps: usize,
        mean_loss: f64,
        train_micros: u64,
        epsilon_spent: Option<f64>,
    ) -> Result<TrainReport, TaskError> {
        #[cfg(feature = "testutils")]
        self.poison_update(&mut delta)?;
        let update_norm = delta.dot(&delta).sqrt();
        if let Some(clip) = train.update_clip_norm
            && update_norm > clip
        {
            delta *= clip / update_norm;
        }
        Ok(TrainReport {
            delta,
            examples: examples as u64,
            steps: steps as u64,
            // The training loss is computed from raw rows without noise: under
            // record-level DP it is not sent.
            train_loss: if epsilon_spent.is_some() {
                0.0
            } else {
                mean_loss
            },
            train_micros,
            update_norm,
            epsilon_spent,
            not_private: self.test_seed,
            statistics: None,
        })
    }

    fn evaluate(&mut self, snapshot: &ModelSnapshot) -> Result<Evaluation, TaskError> {
        let model = self.model(snapshot)?;
        let (x, y) = self.test.x_and_labels(&snapshot.features)?;
        Ok(model.evaluate(x, y)?)
    }
}

/// Per boolean or categorical column of `spec`, how many rows of `x` (encoded
/// with `spec`) set each of its entries: counts, never rows.
fn binary_stats(spec: &FeatureSpec, x: &Array2<f64>) -> Vec<BinaryStats> {
    spec.columns
        .iter()
        .zip(spec.column_ranges())
        .filter(|(c, _)| !matches!(c, FeatureColumn::Numeric { .. }))
        .map(|(c, range)| BinaryStats {
            column: c.name().to_string(),
            counts: range
                .map(|j| x.column(j).iter().filter(|v| **v > 0.5).count() as u64)
                .collect(),
        })
        .collect()
}
