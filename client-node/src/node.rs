//! The client node's work, free of transport: load and clean the partner's data
//! once, then answer tasks (statistics, training, evaluation). Raw rows stay here;
//! only counts, sums, model updates and score histograms leave.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use fedprofile_data::{Dataset, FeatureSpec, LoadedSplit, Schema};
use fedprofile_learning::LogisticRegression;
use fedprofile_learning::dp::{secure_rng, seeded_test_rng, train_dp_sgd};
use fedprofile_learning::metrics::EvalSummary;
use fedprofile_learning::train::{TrainParams, train_local};
use fedprofile_protocol::messages::{
    ClientReply, ColumnStats, ModelSnapshot, ResultBody, StatsReport, Task, TaskBody, TrainReport,
    TrainTask,
};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand_chacha::ChaCha20Rng;

use crate::privacy::{self, PrivacyGuard, PrivacyRefusal, PrivacySettings};

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
}

/// One loaded, cleaned split with its labels and an encoding cache.
#[derive(Debug)]
struct Split {
    dataset: Dataset,
    labels: Array1<f64>,
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
        let labels = loaded.dataset.labels()?;
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
        let stale = self
            .encoded
            .as_ref()
            .is_none_or(|(cached, _)| cached != spec);
        if stale {
            let x = self.dataset.encode(spec).map_err(TaskError::Encode)?;
            self.encoded = Some((spec.clone(), x));
        }
        match &self.encoded {
            Some((_, x)) => Ok((x.view(), self.labels.view())),
            None => Err(TaskError::Internal("feature cache empty after encoding")),
        }
    }
}

/// A partner's node: its schema, its cleaned splits, its RNG.
#[derive(Debug)]
pub struct Node {
    schema: Schema,
    train: Split,
    test: Split,
    rng: ChaCha20Rng,
    test_seed: bool,
    guard: Option<PrivacyGuard>,
    require_dp: bool,
    calibrated: HashMap<String, f64>,
    /// Training results by task id: a task sent again is answered from here,
    /// never trained (or charged) twice.
    answered: HashMap<String, ClientReply>,
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
        test_seed: Option<u64>,
    ) -> Result<Node, NodeError> {
        let schema = Schema::from_path(schema_path)?;
        let train = fedprofile_data::load_split(&schema, data_dir, train_split)?;
        let test = fedprofile_data::load_split(&schema, data_dir, test_split)?;
        tracing::info!(
            train_rows = train.dataset.len(),
            test_rows = test.dataset.len(),
            "data loaded and cleaned"
        );
        Ok(Node {
            train: Split::new(train, train_split, data_dir)?,
            test: Split::new(test, test_split, data_dir)?,
            schema,
            rng: match test_seed {
                Some(seed) => seeded_test_rng(seed),
                None => secure_rng(),
            },
            test_seed: test_seed.is_some(),
            guard: privacy.map(PrivacyGuard::open).transpose()?,
            require_dp: privacy.is_some_and(|p| p.require_dp),
            calibrated: HashMap::new(),
            answered: HashMap::new(),
        })
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
            TaskBody::Stats => Ok(ResultBody::Stats(self.stats())),
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
                tracing::warn!(task_id = %task.task_id, "task refused: {e}");
                ClientReply::Refusal {
                    task_id: task.task_id.clone(),
                    reason: e.to_string(),
                }
            }
        }
    }

    fn stats(&self) -> StatsReport {
        StatsReport {
            template: self.schema.feature_template(),
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
        }
    }

    fn model(snapshot: &ModelSnapshot) -> Result<LogisticRegression, TaskError> {
        if snapshot.model_type != "logistic_regression" {
            return Err(TaskError::ModelType(snapshot.model_type.clone()));
        }
        Ok(LogisticRegression::from_params(snapshot.params.clone())?)
    }

    fn train(&mut self, task: &Task, train: &TrainTask) -> Result<TrainReport, TaskError> {
        let model = Self::model(&train.model)?;
        let examples = self.train.dataset.len();
        let started = Instant::now();
        let (outcome, epsilon_spent) = match &train.record_dp {
            None => {
                if self.require_dp {
                    return Err(PrivacyRefusal::DpRequired.into());
                }
                let params = TrainParams {
                    epochs: train.local_epochs as usize,
                    batch_size: train.batch_size as usize,
                    learning_rate: train.learning_rate,
                    l2: 0.0,
                }
                .check()?;
                let (x, y) = self.train.xy(&train.model.features)?;
                (train_local(&model, x, y, &params, &mut self.rng)?, None)
            }
            Some(record) => {
                let plan = privacy::plan(
                    record,
                    examples,
                    train.batch_size as usize,
                    train.local_epochs as usize,
                    train.learning_rate,
                    &mut self.calibrated,
                )?;
                let guard = self.guard.as_mut().ok_or(PrivacyRefusal::NoBudget)?;
                // Refuse or charge (synced to disk) before any noise is drawn.
                let entry = guard.charge(
                    &task.run_id,
                    task.round,
                    &task.task_id,
                    plan.charge,
                    record.clip_norm,
                )?;
                let (x, y) = self.train.xy(&train.model.features)?;
                let outcome = train_dp_sgd(&model, x, y, &plan.params, &mut self.rng)?;
                (outcome, Some(entry.cumulative_epsilon))
            }
        };
        let train_micros = started.elapsed().as_micros() as u64;
        let mut delta = outcome.delta;
        let update_norm = delta.dot(&delta).sqrt();
        if let Some(clip) = train.update_clip_norm
            && update_norm > clip
        {
            delta *= clip / update_norm;
        }
        Ok(TrainReport {
            delta,
            examples: outcome.examples as u64,
            steps: outcome.steps as u64,
            // The training loss is computed from raw rows without noise: under
            // record-level DP it is not sent.
            train_loss: if epsilon_spent.is_some() {
                0.0
            } else {
                outcome.mean_loss
            },
            train_micros,
            update_norm,
            epsilon_spent,
            not_private: self.test_seed,
        })
    }

    fn evaluate(&mut self, snapshot: &ModelSnapshot) -> Result<EvalSummary, TaskError> {
        let model = Self::model(snapshot)?;
        let (x, y) = self.test.xy(&snapshot.features)?;
        let probs = model.predict_proba(x)?;
        Ok(EvalSummary::from_predictions(probs.view(), y)?)
    }
}
