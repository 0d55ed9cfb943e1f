//! The model families a run can train, behind one abstraction: the [`Family`]
//! trait.
//!
//! A run names its family (`logistic_regression`, `linear_regression`,
//! `softmax_regression`, `kmeans`); every family has flat `Array1<f64>`
//! parameters plus a number of *outputs* (classes of a softmax model, clusters
//! of a k-means model, 1 otherwise), so the parameters travel as one tensor of
//! shape `outputs × per_output`, and one [`AnyModel`] holds a model of any
//! family.
//!
//! # What a family owns
//!
//! Everything that differs between families is a method of its [`Family`]
//! implementation, one module each ([`logistic`], [`linear`], [`softmax`],
//! [`kmeans`]):
//!
//! - the label it needs ([`Family::label_need`]) and its parameter layout
//!   ([`Family::per_output`], [`Family::outputs`], [`Family::check`]);
//! - its initial model ([`Family::initial`]);
//! - its local work ([`Family::training`]): a gradient-trained family gives its
//!   [`Objective`], which the one SGD / DP-SGD loop of [`crate::train`] trains
//!   ([`local_update`]); a statistics family (k-means) computes its local
//!   statistics ([`Family::local_statistics`]);
//! - what a client sends ([`LocalUpdate`]: a delta, or statistics);
//! - how a round is aggregated ([`aggregate_round`]: the deltas through the
//!   run's [`ServerStrategy`], or the family's [`Family::aggregate_statistics`]);
//! - its pooled evaluation ([`Family::evaluate`], [`Family::empty_evaluation`])
//!   and quality ([`Evaluation::quality`]);
//! - its `score` and `profile` columns ([`Family::score`],
//!   [`Family::profile_header`], [`Family::profile_rows`],
//!   [`Family::segments`]).
//!
//! Code outside this module calls [`ModelFamily::ops`] (or the methods of
//! [`AnyModel`], [`ModelDocument`](crate::ModelDocument)) and never matches on
//! a family.
//!
//! # Adding a family
//!
//! 1. Write a module under `family/` with a unit struct implementing
//!    [`Family`] (a gradient-trained family only needs an [`Objective`] and an
//!    evaluation; see the test-only `toy` module for the smallest one);
//! 2. register it: a variant of [`ModelFamily`] (its name in run files) and
//!    its arm in [`ModelFamily::ops`];
//! 3. give it a model-file section in [`crate::model_file`] (if it is saved).

use ndarray::{Array1, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::dp::{ValidDpSgdParams, train_dp_sgd};
use crate::error::{AggregationError, LearningError};
use crate::kmeans::ClusterStats;
use crate::metrics::EvalSummary;
use crate::model_file::ModelDocument;
use crate::multiclass_metrics::{MulticlassMetrics, MulticlassSummary};
use crate::objective::Objective;
use crate::regression_metrics::{RegressionMetrics, RegressionSummary};
use crate::strategy::{Aggregated, ClientUpdate, ServerStrategy};
use crate::train::{TrainOutcome, ValidTrainParams, train_local};

mod common;
pub mod kmeans;
pub mod linear;
pub mod logistic;
pub mod softmax;
#[cfg(any(test, feature = "testutils"))]
pub(crate) mod toy;
pub mod trees;

/// A model family a run can train: its name in run files, model files and on
/// the wire. [`ModelFamily::ops`] is the registration of each family's
/// [`Family`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// Binary logistic regression (a `label` column).
    LogisticRegression,
    /// Linear regression (a numeric `target` column).
    LinearRegression,
    /// Multi-class softmax regression (a `class` column).
    SoftmaxRegression,
    /// Federated k-means segmentation (no label needed).
    #[serde(rename = "kmeans")]
    KMeans,
    /// Histogram-based gradient-boosted trees (a `label` or a `target`).
    GradientBoostedTrees,
    /// A test-only family that shows the generic paths (see `family/toy.rs`).
    #[cfg(any(test, feature = "testutils"))]
    Toy,
}

/// What a family needs from the clients' schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelNeed {
    /// A binary `label` column.
    Binary,
    /// A numeric `target` column.
    Numeric,
    /// A multi-class `class` column.
    Classes,
    /// A binary `label` or a numeric `target` column (the family fits either;
    /// [`ModelSettings::numeric_label`] says which).
    Supervised,
    /// Nothing (unsupervised).
    None,
}

/// What a run says about its model beyond the family and the shape, for
/// [`Family::initial_for`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSettings {
    /// The clients' label is a numeric `target` (not a binary `label`).
    pub numeric_label: bool,
    /// `[trees]` of the run file (gradient-boosted trees only).
    pub trees: crate::trees::TreeParams,
    /// Under record-level DP: which encoded entries are 0/1 columns
    /// ([`crate::FeatureSpec::binary_entries`]), so that a family that would
    /// release statistics of the data to fix its inputs (the trees' binning
    /// sketch) uses a data-free layout instead, at no privacy cost.
    pub data_free: Option<Vec<bool>>,
}

/// How a family's clients work on their rows.
pub enum Training {
    /// SGD (or DP-SGD) on this objective; the client sends a delta.
    Gradient(Box<dyn Objective>),
    /// Local statistics ([`Family::local_statistics`]); the client sends them.
    Statistics,
}

/// How a client of a gradient-trained family trains.
#[derive(Debug, Clone)]
pub enum GradientTraining {
    /// Plain mini-batch SGD.
    Plain(ValidTrainParams),
    /// Record-level DP-SGD (already planned and charged).
    DpSgd(ValidDpSgdParams),
}

/// Record-level DP for a statistics family: one Gaussian release of the local
/// statistics (already planned and charged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatisticsDp {
    /// Per-record L2 bound `C`.
    pub clip_norm: f64,
    /// Noise standard deviation over sensitivity.
    pub noise_multiplier: f64,
}

/// Why a statistics family refuses the settings made for model deltas (see
/// [`Family::statistics_rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatisticsRules {
    /// The family as the messages name it ("k-means").
    pub name: &'static str,
    /// What its round does instead ("a k-means round pools the clients'
    /// per-cluster sums and counts (the exact Lloyd step)").
    pub round: &'static str,
    /// How record-level DP protects it instead of client-level DP.
    pub record_dp: &'static str,
    /// Why the models of different rounds are not averaged.
    pub averaging: &'static str,
}

/// What a client sends after its local work.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalUpdate {
    /// A gradient-trained family: the trained delta and its counts.
    Delta(TrainOutcome),
    /// A statistics family: the local statistics.
    Statistics(Statistics),
}

/// The local statistics a client of a statistics family sends instead of a
/// delta: sums over its rows, never rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Statistics {
    /// k-means: per-cluster sums and counts against the task's centroids.
    Clusters(ClusterStats),
    /// Gradient-boosted trees: the binning sketch or one level's histograms.
    Trees(crate::trees::TreeStatistics),
}

impl Statistics {
    /// Rows the statistics summarise.
    pub fn examples(&self) -> u64 {
        match self {
            Statistics::Clusters(c) => u64::try_from(c.examples()).unwrap_or(u64::MAX),
            Statistics::Trees(t) => t.rows(),
        }
    }

    /// What the statistics are, for messages ("cluster statistics").
    pub fn kind(&self) -> &'static str {
        match self {
            Statistics::Clusters(_) => "cluster statistics",
            Statistics::Trees(_) => "tree statistics",
        }
    }
}

/// What a statistics family's exchange gave besides the next model.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticsUpdate {
    /// Pooled rows per output (k-means: per cluster, for re-seeding); empty
    /// when the family has none.
    pub counts: Vec<u64>,
    /// Pooled rows.
    pub examples: u64,
    /// The round's training loss (k-means: the mean inertia of the centroids
    /// the clients were sent; 0 when not released).
    pub loss: f64,
    /// Whether the round is complete; when `false` the engine runs another
    /// exchange of the same round with the same clients and the next model
    /// (a tree grows one level per exchange).
    pub round_done: bool,
}

/// What the clients of a round sent, for [`aggregate_round`].
#[derive(Debug, Clone, Copy)]
pub enum RoundUpdates<'a> {
    /// Deltas (gradient-trained families).
    Deltas(&'a [ClientUpdate]),
    /// Statistics (statistics families).
    Statistics(&'a [Statistics]),
}

/// A round aggregated by [`aggregate_round`].
#[derive(Debug, Clone, PartialEq)]
pub enum RoundAggregate {
    /// The strategy's step and the next global model (`global + step`).
    Step {
        /// The strategy's output.
        aggregated: Aggregated,
        /// The next global model.
        next: AnyModel,
    },
    /// The statistics family's update (for k-means the exact Lloyd step) and
    /// the next global model.
    Statistics {
        /// The update (pooled counts, loss, whether the round is done).
        update: StatisticsUpdate,
        /// The next global model.
        next: AnyModel,
    },
}

/// A round that [`aggregate_round`] could not aggregate.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The strategy refused the deltas.
    #[error(transparent)]
    Strategy(#[from] AggregationError),
    /// The statistics or the next model are invalid.
    #[error(transparent)]
    Model(#[from] LearningError),
}

/// The `score` output of a model: a header (after `user_id`) and one row per
/// user.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreTable {
    /// Column names after `user_id`.
    pub header: Vec<String>,
    /// One row of values per input row.
    pub rows: Vec<Vec<String>>,
}

/// One user's `profile` prediction columns and the score the contributions
/// explain, measured from a reference score.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// The prediction columns (formatted).
    pub columns: Vec<String>,
    /// The score the contributions explain.
    pub score: f64,
    /// The score of the reference: a linear family's score of the reference
    /// row (`intercept + Σ w_j·ref_j`), the trees' expected value (TreeSHAP's
    /// base value).
    pub reference: f64,
    /// Per-entry contributions (`w_j·(x_j − ref_j)` for a linear family); they
    /// add up to `score - reference`.
    pub contributions: Array1<f64>,
}

impl ProfileRow {
    /// A linear score's row: `at_row` holds the per-entry terms `w_j·x_j` of
    /// the user, `at_reference` the terms `w_j·ref_j` of the reference row.
    pub(crate) fn linear(
        columns: Vec<String>,
        score: f64,
        intercept: f64,
        at_row: Array1<f64>,
        at_reference: &Array1<f64>,
    ) -> ProfileRow {
        ProfileRow {
            columns,
            score,
            reference: intercept + at_reference.sum(),
            contributions: at_row - at_reference,
        }
    }
}

/// Everything that differs between model families (see the module doc).
pub trait Family: Sync {
    /// The family's registered name.
    fn family(&self) -> ModelFamily;

    /// The label column the family trains on.
    fn label_need(&self) -> LabelNeed;

    /// Parameters per output row for `dim` features.
    fn per_output(&self, dim: usize) -> usize;

    /// The number of outputs of a model when the run asks for `requested`
    /// (classes or clusters); 1 for the single-output families.
    fn outputs(&self, requested: usize) -> usize {
        let _ = requested;
        1
    }

    /// The number of outputs a run's model has, given the classes the
    /// clients' schema declares and the clusters the run file asks for.
    fn run_outputs(&self, classes: usize, clusters: usize) -> usize {
        let _ = (classes, clusters);
        1
    }

    /// What a client's answer to a training task is called in messages
    /// ("updates", "cluster statistics").
    fn update_name(&self) -> &'static str {
        "updates"
    }

    /// Checks flat parameters for `outputs` rows (length, finite values).
    fn check(&self, params: &Array1<f64>, outputs: usize) -> Result<(), LearningError>;

    /// Number of features of checked parameters.
    fn dim(&self, params: usize, outputs: usize) -> usize;

    /// Number of features of checked parameters, when the layout says it
    /// rather than the length.
    fn dim_of(&self, params: &Array1<f64>, outputs: usize) -> usize {
        self.dim(params.len(), outputs)
    }

    /// The starting parameters for `dim` features and `outputs` rows.
    fn initial(&self, dim: usize, outputs: usize, seed: u64) -> Result<Array1<f64>, LearningError>;

    /// For a statistics family: why the run-file settings made for model
    /// deltas (strategies other than FedAvg, client-level DP, tail
    /// averaging) do not apply to it, in words for the run file's errors;
    /// `None` for a gradient-trained family.
    fn statistics_rules(&self) -> Option<StatisticsRules> {
        None
    }

    /// The starting parameters of a run's model, with what the run says
    /// beyond the shape (the initial model of most families needs nothing
    /// more than [`Family::initial`]).
    fn initial_for(
        &self,
        dim: usize,
        outputs: usize,
        seed: u64,
        settings: &ModelSettings,
    ) -> Result<Array1<f64>, LearningError> {
        let _ = settings;
        self.initial(dim, outputs, seed)
    }

    /// The parameters a run continues from when it warm-starts from a model
    /// file's `params`, with what the run says beyond the shape (`seed`:
    /// the run's seed): most families continue from the file's parameters
    /// as they are; the trees grow their new trees as the run's privacy
    /// mode says (random structures under record-level DP).
    fn warm_started(
        &self,
        params: Array1<f64>,
        seed: u64,
        settings: &ModelSettings,
    ) -> Result<Array1<f64>, LearningError> {
        let _ = (seed, settings);
        Ok(params)
    }

    /// The run-file table of this family's own settings (`[trees]`), if any.
    fn settings_table(&self) -> Option<&'static str> {
        None
    }

    /// Whether [`Family::training`] is [`Training::Gradient`].
    fn is_gradient_trained(&self) -> bool {
        true
    }

    /// How clients work on their rows.
    fn training(&self, model: &AnyModel) -> Training;

    /// The local statistics of a statistics family for `model` (`y`: the
    /// labels of a supervised family; `dp`: noised under record-level DP).
    /// Gradient-trained families never get here.
    fn local_statistics(
        &self,
        model: &AnyModel,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
        dp: Option<StatisticsDp>,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Statistics, LearningError> {
        let _ = (model, x, y, dp, rng);
        Err(not_for(self.family(), "local statistics"))
    }

    /// Checks one client's statistics against the model the task carried
    /// (their kind and shape, finite sums, counts that add up).
    fn check_statistics(&self, model: &AnyModel, stats: &Statistics) -> Result<(), LearningError> {
        let _ = (model, stats);
        Err(not_for(self.family(), "local statistics"))
    }

    /// The Gaussian mechanism of one release of a statistics family's local
    /// statistics for `model` under record-level DP, for `noise_multiplier`
    /// and `clip_norm`; its privacy map is what the client charges per
    /// release.
    fn statistics_mechanism(
        &self,
        model: &AnyModel,
        noise_multiplier: f64,
        clip_norm: f64,
    ) -> Result<fedprofile_privacy::GaussianMechanism, LearningError> {
        let _ = (model, noise_multiplier, clip_norm);
        Err(not_for(self.family(), "a release of local statistics"))
    }

    /// How many releases of local statistics (exchanges) a run of `rounds`
    /// rounds from `initial` makes at most: one per round unless a round has
    /// several exchanges.
    fn planned_releases(&self, initial: &AnyModel, rounds: u32) -> u64 {
        let _ = initial;
        u64::from(rounds)
    }

    /// The next model of a statistics family from the clients' statistics,
    /// and what the exchange gave.
    fn aggregate_statistics(
        &self,
        global: &AnyModel,
        stats: &[Statistics],
    ) -> Result<(AnyModel, StatisticsUpdate), LearningError> {
        let _ = (global, stats);
        Err(not_for(self.family(), "statistics aggregation"))
    }

    /// The next model of a statistics family after [`Family::aggregate_statistics`],
    /// with the outputs that received fewer than `min_rows` pooled rows
    /// re-seeded (from `seed`), and which they were; `None` when none
    /// starved (or the family has nothing to re-seed).
    fn reseed_starved(
        &self,
        next: &AnyModel,
        counts: &[u64],
        min_rows: u64,
        seed: u64,
    ) -> Result<Option<(AnyModel, Vec<usize>)>, LearningError> {
        let _ = (next, counts, min_rows, seed);
        Ok(None)
    }

    /// Evaluates on a test split (`y`: the labels of a supervised family).
    fn evaluate(
        &self,
        model: &AnyModel,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError>;

    /// The neutral element of [`Evaluation::merge`] for `outputs` rows.
    fn empty_evaluation(&self, outputs: usize) -> Result<Evaluation, LearningError>;

    /// The neutral element of [`Evaluation::merge`] for evaluations of
    /// `model` (when the kind of evaluation depends on the model).
    fn empty_evaluation_for(&self, model: &AnyModel) -> Result<Evaluation, LearningError> {
        self.empty_evaluation(model.outputs())
    }

    /// The `score` columns of `model` on the encoded rows `x`.
    fn score(&self, model: &ModelDocument, x: ArrayView2<f64>)
    -> Result<ScoreTable, LearningError>;

    /// The `profile` prediction columns (the last one is the score the
    /// contributions explain), or `None` when the family predicts nothing a
    /// profile explains (k-means: pass it as segments).
    fn profile_header(&self, model: &ModelDocument) -> Option<Vec<String>>;

    /// The `profile` prediction of each row of `x` (families with a
    /// [`Family::profile_header`]); a linear family measures contributions
    /// against the encoded row `reference` (the trees against their expected
    /// value, which needs none).
    fn profile_rows(
        &self,
        model: &ModelDocument,
        x: ArrayView2<f64>,
        reference: ArrayView1<f64>,
    ) -> Result<Vec<ProfileRow>, LearningError> {
        let _ = (model, x, reference);
        Err(not_for(self.family(), "profile predictions"))
    }

    /// Whether [`Family::profile_rows`] measures contributions against its
    /// `reference` row (a linear family) rather than against a base value of
    /// its own (the trees' expected value).
    fn profile_uses_reference(&self) -> bool {
        true
    }

    /// The segment and squared distance of each row, for a segmentation family
    /// (`None` otherwise).
    fn segments(
        &self,
        model: &ModelDocument,
        x: ArrayView2<f64>,
    ) -> Option<Result<Vec<(usize, f64)>, LearningError>> {
        let _ = (model, x);
        None
    }
}

fn not_for(family: ModelFamily, what: &str) -> LearningError {
    LearningError::InvalidParam {
        field: "model_type",
        value: family.name().to_string(),
        requirement: match what {
            "local statistics" => "a statistics family (local statistics)",
            "statistics aggregation" => "a statistics family (statistics aggregation)",
            _ => "a family with profile predictions",
        },
    }
}

impl ModelFamily {
    /// Every family a run file may name, in documentation order.
    pub const ALL: [ModelFamily; 5] = [
        ModelFamily::LogisticRegression,
        ModelFamily::LinearRegression,
        ModelFamily::SoftmaxRegression,
        ModelFamily::KMeans,
        ModelFamily::GradientBoostedTrees,
    ];

    /// The registration: each family's implementation of [`Family`].
    pub fn ops(self) -> &'static dyn Family {
        match self {
            ModelFamily::LogisticRegression => &logistic::Logistic,
            ModelFamily::LinearRegression => &linear::Linear,
            ModelFamily::SoftmaxRegression => &softmax::Softmax,
            ModelFamily::KMeans => &kmeans::Segments,
            ModelFamily::GradientBoostedTrees => &trees::Trees,
            #[cfg(any(test, feature = "testutils"))]
            ModelFamily::Toy => &toy::Toy,
        }
    }

    /// The family's name in run files, model files and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::LogisticRegression => "logistic_regression",
            ModelFamily::LinearRegression => "linear_regression",
            ModelFamily::SoftmaxRegression => "softmax_regression",
            ModelFamily::KMeans => "kmeans",
            ModelFamily::GradientBoostedTrees => "gradient_boosted_trees",
            #[cfg(any(test, feature = "testutils"))]
            ModelFamily::Toy => "toy",
        }
    }

    /// The family named `name`, if any.
    pub fn parse(name: &str) -> Option<ModelFamily> {
        ModelFamily::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The names of every family, comma-separated (for error messages).
    pub fn names() -> String {
        ModelFamily::ALL.map(ModelFamily::name).join(", ")
    }

    /// The label column the family trains on.
    pub fn label_need(self) -> LabelNeed {
        self.ops().label_need()
    }

    /// Whether clients train with gradients (and send deltas); a statistics
    /// family (k-means) sends its local statistics instead.
    pub fn is_gradient_based(self) -> bool {
        self.ops().is_gradient_trained()
    }

    /// Parameters per output row for `dim` features: `dim + 1` (intercept and
    /// weights) for the regressions, `dim` for k-means centroids.
    pub fn per_output(self, dim: usize) -> usize {
        self.ops().per_output(dim)
    }

    /// The starting model for `dim` features and `outputs` rows: zeros for
    /// the regressions, data-free random centroids (from `seed`) for k-means.
    pub fn initial(self, dim: usize, outputs: usize, seed: u64) -> Result<AnyModel, LearningError> {
        let outputs = self.ops().outputs(outputs);
        AnyModel::from_parts(self, self.ops().initial(dim, outputs, seed)?, outputs)
    }

    /// The starting model of a run: [`ModelFamily::initial`] with what the
    /// run says beyond the shape.
    pub fn initial_for(
        self,
        dim: usize,
        outputs: usize,
        seed: u64,
        settings: &ModelSettings,
    ) -> Result<AnyModel, LearningError> {
        let outputs = self.ops().outputs(outputs);
        let params = self.ops().initial_for(dim, outputs, seed, settings)?;
        AnyModel::from_parts(self, params, outputs)
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A model of any family: its family, flat parameters and number of outputs,
/// checked by the family.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyModel {
    family: ModelFamily,
    params: Array1<f64>,
    outputs: usize,
}

impl AnyModel {
    /// A model of `family` from its flat parameters and number of outputs
    /// (classes or clusters; ignored by the single-output families).
    pub fn from_parts(
        family: ModelFamily,
        params: Array1<f64>,
        outputs: usize,
    ) -> Result<AnyModel, LearningError> {
        let outputs = family.ops().outputs(outputs);
        family.ops().check(&params, outputs)?;
        Ok(AnyModel {
            family,
            params,
            outputs,
        })
    }

    /// The family.
    pub fn family(&self) -> ModelFamily {
        self.family
    }

    /// The family's implementation.
    pub fn ops(&self) -> &'static dyn Family {
        self.family.ops()
    }

    /// The flat parameters.
    pub fn params(&self) -> &Array1<f64> {
        &self.params
    }

    /// The flat parameters, by value.
    pub fn into_params(self) -> Array1<f64> {
        self.params
    }

    /// Classes or clusters; 1 for the single-output families.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.ops().dim_of(&self.params, self.outputs)
    }

    /// How clients work on their rows.
    pub fn training(&self) -> Training {
        self.ops().training(self)
    }

    /// The training loss of a gradient-trained family (`None` for k-means).
    pub fn objective(&self) -> Option<Box<dyn Objective>> {
        match self.training() {
            Training::Gradient(o) => Some(o),
            Training::Statistics => None,
        }
    }

    /// This model moved by `step` (the same layout), checked by the family.
    pub fn apply_step(&self, step: ArrayView1<f64>) -> Result<AnyModel, LearningError> {
        if step.len() != self.params.len() {
            return Err(LearningError::ParamCount {
                expected: self.params.len(),
                got: step.len(),
            });
        }
        AnyModel::from_parts(self.family, &self.params + &step, self.outputs)
    }

    /// Evaluates on a test split: `y` holds the labels of a supervised family
    /// (ignored by k-means, which reports its inertia).
    pub fn evaluate(
        &self,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError> {
        self.ops().evaluate(self, x, y)
    }
}

/// The labels of a supervised family's evaluation.
pub(crate) fn labels(y: Option<ArrayView1<'_, f64>>) -> Result<ArrayView1<'_, f64>, LearningError> {
    y.ok_or(LearningError::EmptyInput)
}

/// The local work of a gradient-trained family: the one SGD loop (plain or
/// DP-SGD) on the family's objective, from `model`.
pub fn local_update<R: rand::Rng + ?Sized>(
    model: &AnyModel,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    how: &GradientTraining,
    rng: &mut R,
) -> Result<TrainOutcome, LearningError> {
    let Training::Gradient(objective) = model.training() else {
        return Err(LearningError::InvalidParam {
            field: "model_type",
            value: model.family().name().to_string(),
            requirement: "a gradient-trained family",
        });
    };
    let start = model.params().view();
    match how {
        GradientTraining::Plain(params) => train_local(&*objective, start, x, y, params, rng),
        GradientTraining::DpSgd(params) => train_dp_sgd(&*objective, start, x, y, params, rng),
    }
}

/// Aggregates a round of `global`: deltas through `strategy` (the next model
/// is `global + step`), statistics through the family's
/// [`Family::aggregate_statistics`].
pub fn aggregate_round(
    global: &AnyModel,
    updates: RoundUpdates<'_>,
    strategy: &mut dyn ServerStrategy,
) -> Result<RoundAggregate, RoundError> {
    match updates {
        RoundUpdates::Deltas(deltas) => {
            let aggregated = strategy.aggregate(deltas)?;
            let next = global.apply_step(aggregated.step.view())?;
            Ok(RoundAggregate::Step { aggregated, next })
        }
        RoundUpdates::Statistics(stats) => {
            let (next, update) = global.ops().aggregate_statistics(global, stats)?;
            Ok(RoundAggregate::Statistics { update, next })
        }
    }
}

/// Pooled inertia and segment sizes of a k-means model on test rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringSummary {
    /// Rows assigned.
    pub examples: u64,
    /// Sum over the rows of the squared distance to the nearest centroid.
    pub inertia: f64,
    /// Rows assigned to each cluster.
    pub counts: Vec<u64>,
}

impl ClusteringSummary {
    /// Checks a summary received from the network.
    pub fn check(&self) -> Result<(), LearningError> {
        if !(self.inertia.is_finite() && self.inertia >= 0.0) {
            return Err(LearningError::InconsistentSummary {
                reason: format!(
                    "inertia is {} (expected finite and non-negative)",
                    self.inertia
                ),
            });
        }
        if self.examples == 0 && self.inertia != 0.0 {
            return Err(LearningError::InconsistentSummary {
                reason: "inertia is non-zero but no rows are counted".into(),
            });
        }
        let counted: u128 = self.counts.iter().map(|&c| u128::from(c)).sum();
        if counted != u128::from(self.examples) {
            return Err(LearningError::InconsistentSummary {
                reason: format!(
                    "cluster sizes add up to {counted}, not to the {} rows reported",
                    self.examples
                ),
            });
        }
        Ok(())
    }
}

/// One client's (or several merged) evaluation of a model of any family.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// Logistic regression: confusion counts, log loss, score histograms.
    Binary(EvalSummary),
    /// Linear regression: sums for MSE, MAE and R².
    Regression(RegressionSummary),
    /// Softmax regression: confusion matrix and log loss.
    Multiclass(MulticlassSummary),
    /// k-means: rows and inertia.
    Clustering(ClusteringSummary),
}

impl Evaluation {
    /// The family this evaluation belongs to.
    pub fn family(&self) -> ModelFamily {
        match self {
            Evaluation::Binary(_) => ModelFamily::LogisticRegression,
            Evaluation::Regression(_) => ModelFamily::LinearRegression,
            Evaluation::Multiclass(_) => ModelFamily::SoftmaxRegression,
            Evaluation::Clustering(_) => ModelFamily::KMeans,
        }
    }

    /// Number of examples evaluated.
    pub fn examples(&self) -> u64 {
        match self {
            Evaluation::Binary(s) => s.examples,
            Evaluation::Regression(s) => s.examples,
            Evaluation::Multiclass(s) => s.examples,
            Evaluation::Clustering(s) => s.examples,
        }
    }

    /// Checks a summary received from the network (its counts add up, its
    /// figures are finite).
    pub fn check(&self) -> Result<(), LearningError> {
        match self {
            Evaluation::Binary(e) => {
                let bins = crate::metrics::SCORE_BINS;
                if e.hist_pos.len() != bins || e.hist_neg.len() != bins {
                    return Err(LearningError::EvaluationCounts {
                        reason: format!(
                            "score histograms have {} and {} bins, expected {bins}",
                            e.hist_pos.len(),
                            e.hist_neg.len()
                        ),
                    });
                }
                let pos: u64 = e.hist_pos.iter().sum();
                let neg: u64 = e.hist_neg.iter().sum();
                if pos != e.positives || pos + neg != e.examples || !e.loss_sum.is_finite() {
                    return Err(LearningError::EvaluationCounts {
                        reason: format!(
                            "evaluation counts do not add up ({pos} + {neg} in histograms, {} examples, {} positives)",
                            e.examples, e.positives
                        ),
                    });
                }
                Ok(())
            }
            Evaluation::Regression(s) => s.check(),
            Evaluation::Multiclass(s) => s.check(),
            Evaluation::Clustering(s) => s.check(),
        }
    }

    /// The neutral element of [`Evaluation::merge`] for `family` (`outputs`:
    /// classes of a softmax model).
    pub fn empty(family: ModelFamily, outputs: usize) -> Result<Evaluation, LearningError> {
        family.ops().empty_evaluation(outputs)
    }

    /// Adds `other` into `self`; a different family or a bad summary is refused
    /// without changing `self`.
    pub fn merge(&mut self, other: &Evaluation) -> Result<(), LearningError> {
        match (self, other) {
            (Evaluation::Binary(a), Evaluation::Binary(b)) => a.merge(b),
            (Evaluation::Regression(a), Evaluation::Regression(b)) => a.merge(b),
            (Evaluation::Multiclass(a), Evaluation::Multiclass(b)) => a.merge(b),
            (Evaluation::Clustering(a), Evaluation::Clustering(b)) => {
                b.check()?;
                if b.counts.len() != a.counts.len() {
                    return Err(LearningError::InconsistentSummary {
                        reason: format!(
                            "{} cluster sizes for a model of {} clusters",
                            b.counts.len(),
                            a.counts.len()
                        ),
                    });
                }
                for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                    *x = x.saturating_add(*y);
                }
                a.examples = a.examples.checked_add(b.examples).ok_or_else(|| {
                    LearningError::InconsistentSummary {
                        reason: "pooled row count overflows".into(),
                    }
                })?;
                a.inertia += b.inertia;
                Ok(())
            }
            (a, b) => Err(LearningError::InconsistentSummary {
                reason: format!(
                    "a {} evaluation cannot be pooled with a {} one",
                    b.family(),
                    a.family()
                ),
            }),
        }
    }

    /// The metrics of a logistic-regression evaluation (`None` for the other
    /// families, whose metrics are [`Evaluation::quality`]).
    pub fn metrics(&self) -> Option<crate::metrics::Metrics> {
        match self {
            Evaluation::Binary(s) => Some(s.metrics()),
            _ => None,
        }
    }

    /// The metrics of a non-binary family (`None` for logistic regression, whose
    /// metrics are [`EvalSummary::metrics`]).
    pub fn quality(&self) -> Option<Quality> {
        match self {
            Evaluation::Binary(_) => None,
            Evaluation::Regression(s) => Some(Quality::Regression(s.metrics())),
            Evaluation::Multiclass(s) => Some(Quality::Multiclass(s.metrics())),
            Evaluation::Clustering(s) => Some(Quality::Clustering {
                examples: s.examples,
                inertia: s.inertia,
                counts: s.counts.clone(),
                mean_inertia: if s.examples == 0 {
                    0.0
                } else {
                    s.inertia / s.examples as f64
                },
            }),
        }
    }
}

/// Pooled metrics of a linear, softmax or k-means model after a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Quality {
    /// Linear regression: MSE, RMSE, MAE, R².
    Regression(RegressionMetrics),
    /// Softmax regression: accuracy, log loss, macro precision / recall / F1.
    Multiclass(MulticlassMetrics),
    /// k-means: pooled inertia of the test rows.
    Clustering {
        /// Rows assigned.
        examples: u64,
        /// Sum of squared distances to the nearest centroid.
        inertia: f64,
        /// `inertia / examples`.
        mean_inertia: f64,
        /// Rows per cluster (segment sizes).
        counts: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn names_round_trip() {
        for f in ModelFamily::ALL {
            assert_eq!(ModelFamily::parse(f.name()), Some(f));
        }
        assert_eq!(ModelFamily::parse("svm"), None);
        assert_eq!(
            ModelFamily::names(),
            "logistic_regression, linear_regression, softmax_regression, kmeans, gradient_boosted_trees"
        );
    }

    #[test]
    fn initial_shapes() {
        let m = ModelFamily::SoftmaxRegression.initial(3, 4, 0).unwrap();
        assert_eq!((m.params().len(), m.outputs(), m.dim()), (16, 4, 3));
        let k = ModelFamily::KMeans.initial(3, 5, 7).unwrap();
        assert_eq!((k.params().len(), k.outputs(), k.dim()), (15, 5, 3));
        assert_eq!(k, ModelFamily::KMeans.initial(3, 5, 7).unwrap());
        let l = ModelFamily::LinearRegression.initial(3, 1, 0).unwrap();
        assert_eq!(l.params().to_vec(), vec![0.0; 4]);
        assert!(k.objective().is_none());
        assert_eq!(l.objective().unwrap().param_count(), 4);
    }

    #[test]
    fn kmeans_evaluation_is_the_inertia() {
        let m = AnyModel::from_parts(ModelFamily::KMeans, array![0.0, 0.0, 10.0, 10.0], 2).unwrap();
        let x = array![[1.0, 0.0], [10.0, 12.0], [0.0, -2.0]];
        let Evaluation::Clustering(s) = m.evaluate(x.view(), None).unwrap() else {
            panic!("not a clustering evaluation")
        };
        assert_eq!(s.examples, 3);
        assert_eq!(s.counts, vec![2, 1]);
        assert!((s.inertia - (1.0 + 4.0 + 4.0)).abs() < 1e-12);
    }

    #[test]
    fn linear_evaluation_pools_exactly() {
        let m = AnyModel::from_parts(ModelFamily::LinearRegression, array![1.0, 2.0], 1).unwrap();
        let x = array![[0.0], [1.0], [2.0], [3.0]];
        let y = array![1.0, 3.0, 4.0, 8.0];
        let whole = m.evaluate(x.view(), Some(y.view())).unwrap();
        let mut a = m
            .evaluate(
                x.slice_axis(ndarray::Axis(0), (0..2).into()),
                Some(y.slice_axis(ndarray::Axis(0), (0..2).into())),
            )
            .unwrap();
        let b = m
            .evaluate(
                x.slice_axis(ndarray::Axis(0), (2..4).into()),
                Some(y.slice_axis(ndarray::Axis(0), (2..4).into())),
            )
            .unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, whole);
        let Some(Quality::Regression(q)) = whole.quality() else {
            panic!("no regression metrics")
        };
        // predictions 1, 3, 5, 7: errors 0, 0, 1, -1
        assert!((q.mse - 0.5).abs() < 1e-12);
        assert!((q.mae - 0.5).abs() < 1e-12);
    }

    #[test]
    fn families_do_not_mix() {
        let mut a = Evaluation::empty(ModelFamily::KMeans, 3).unwrap();
        let b = Evaluation::empty(ModelFamily::LinearRegression, 1).unwrap();
        let err = a.merge(&b).unwrap_err().to_string();
        assert!(
            err.contains("linear_regression evaluation cannot be pooled with a kmeans"),
            "{err}"
        );
        let bad = Evaluation::Clustering(ClusteringSummary {
            examples: 2,
            inertia: f64::NAN,
            counts: vec![1, 1, 0],
        });
        assert!(a.merge(&bad).is_err());
        let bad = Evaluation::Clustering(ClusteringSummary {
            examples: 2,
            inertia: 1.0,
            counts: vec![1, 0, 0],
        });
        assert!(a.merge(&bad).is_err());
        assert_eq!(a.examples(), 0);
    }

    #[test]
    fn supervised_evaluation_needs_labels() {
        let m = ModelFamily::LinearRegression.initial(1, 1, 0).unwrap();
        assert!(m.evaluate(array![[1.0]].view(), None).is_err());
    }
}
