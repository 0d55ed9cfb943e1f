//! Model math for fedprofile: feature specification, model families, local
//! training, aggregation and evaluation metrics, on `ndarray`. No transport
//! types here.
//!
//! - [`family`]: **the model-family abstraction**: the [`Family`] trait (label,
//!   initial model, local work, what a client sends, round aggregation,
//!   pooled evaluation, `score` / `profile` columns), the registration
//!   [`ModelFamily::ops`], one model of any family ([`AnyModel`]) and its
//!   poolable [`Evaluation`]; one module per family under `family/`;
//! - [`features`]: how a user row becomes a model input vector;
//! - [`objective`]: the [`Objective`] trait (per-example gradients and loss
//!   over flat parameters) of the gradient-trained families, and [`LogLoss`];
//! - [`train`]: the one local SGD loop ([`train_with`], [`train_local`]) over
//!   an [`Objective`], with one [`GradientStep`] trait;
//! - [`dp`]: record-level DP-SGD on that loop ([`train_dp_sgd`]: Poisson
//!   sampling, per-example clipping, noise from the `fedprofile-privacy`
//!   mechanism), client-level update clipping, secure RNG;
//! - [`aggregate`]: the weighted mean of client deltas (FedAvg's arithmetic);
//! - [`strategy`]: the configurable server strategies of a run ([`StrategyConfig`]:
//!   FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, median, trimmed mean,
//!   Krum, Multi-Krum, norm bounding) behind the [`ServerStrategy`] trait;
//! - the model math of each family: [`model`] (binary logistic regression,
//!   `[intercept, w..]`), [`linear`] (linear regression, squared error),
//!   [`softmax`] (`k × (dim + 1)` parameters row-major), [`kmeans`] (client
//!   [`kmeans_local_stats`] or [`kmeans_local_stats_dp`], server
//!   [`kmeans_update`], data-free [`kmeans_init`]);
//! - [`metrics`], [`regression_metrics`], [`multiclass_metrics`]: exactly
//!   poolable evaluation summaries and the metrics they give;
//! - [`trees`]: histogram-based gradient-boosted trees (federated binning
//!   sketch, per-level gradient/hessian histograms, split decisions, TreeSHAP),
//!   transport-free;
//! - [`model_file`]: the global model file: [`ModelDocument`], the one
//!   in-memory model of every family, read from any file version
//!   ([`VersionedModelFile`]: version 1 for logistic regression,
//!   [`model_file_v2`] for the others) and written in its family's version;
//! - [`error`]: the error types.

pub mod aggregate;
pub mod dp;
pub mod error;
pub mod family;
pub mod features;
pub mod kmeans;
pub mod linear;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod model_file_trees;
pub mod model_file_v2;
pub mod multiclass_metrics;
pub mod objective;
pub mod regression_metrics;
pub mod softmax;
pub mod strategy;
pub mod train;
pub mod trees;
pub mod warm_start;

pub use aggregate::{WeightedUpdate, fedavg, validate_update};
pub use dp::{
    DpSgdParams, DpSgdStep, PoissonSampler, ValidDpSgdParams, clip_update, secure_rng,
    seeded_test_rng, train_dp_sgd,
};
pub use error::{AggregationError, LearningError, ModelFileError, ModelFileProblem, StrategyError};
pub use family::{
    AnyModel, ClusteringSummary, Evaluation, Family, GradientTraining, LabelNeed, LocalUpdate,
    ModelFamily, ModelSettings, ProfileRow, Quality, RoundAggregate, RoundError, RoundUpdates,
    ScoreTable, Statistics, StatisticsDp, StatisticsRules, StatisticsUpdate, Training,
    aggregate_round, local_update,
};
pub use features::{FeatureColumn, FeatureSpec};
pub use kmeans::{
    ClusterStats, KMeans, KMeansUpdate, kmeans_init, kmeans_local_stats, kmeans_local_stats_dp,
    kmeans_mechanism, kmeans_reseed_empty, kmeans_update,
};
pub use linear::{LinearRegression, SquaredError};
pub use metrics::{EvalSummary, Metrics, SCORE_BINS, roc_auc};
pub use model::LogisticRegression;
pub use model_file::{
    ModelDocument, ModelFile, ModelMetrics, ModelTarget, NamedWeight, Provenance, Target,
};
pub use model_file_v2::{
    Centroid, ClassCoefficients, KMeansFile, KMeansMetrics, LinearRegressionFile, ModelFileV2,
    NamedValue, PrivacyProvenance, RunProvenance, SoftmaxRegressionFile, TargetColumn,
    VersionedModelFile,
};
pub use multiclass_metrics::{ClassMetrics, MulticlassMetrics, MulticlassSummary};
pub use objective::{LogLoss, Objective};
pub use regression_metrics::{RegressionMetrics, RegressionSummary};
pub use softmax::{SoftmaxCrossEntropy, SoftmaxRegression};
pub use strategy::{Aggregated, ClientUpdate, ServerStrategy, StrategyConfig};
pub use train::{
    BatchSampler, GradientStep, MeanGradient, ShuffledBatches, TrainOutcome, TrainParams,
    ValidTrainParams, train_local, train_with,
};
pub use warm_start::{WarmStartError, WarmStartTarget, warm_start};

#[cfg(test)]
pub(crate) mod testutil {
    use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
    use rand::Rng;

    use crate::error::LearningError;
    use crate::model::{LogisticRegression, sigmoid};
    use crate::train::TrainOutcome;

    /// A logistic outcome with its model, as the training tests (written when
    /// the loops were logistic-only) read it.
    #[derive(Debug, PartialEq)]
    pub(crate) struct LogisticOutcome {
        pub(crate) model: LogisticRegression,
        pub(crate) delta: Array1<f64>,
        pub(crate) examples: usize,
        pub(crate) steps: usize,
        pub(crate) mean_loss: f64,
    }

    impl LogisticOutcome {
        /// The outcome of training a logistic model.
        pub(crate) fn new(out: TrainOutcome) -> Result<Self, LearningError> {
            Ok(LogisticOutcome {
                model: LogisticRegression::from_params(out.params)?,
                delta: out.delta,
                examples: out.examples,
                steps: out.steps,
                mean_loss: out.mean_loss,
            })
        }
    }

    /// `n` rows of 3 features uniform in `[-2, 2]`, with 0/1 labels drawn from
    /// the logistic model `-0.3 + (2, -1.5, 0.5) · x`.
    pub(crate) fn logistic_blobs(n: usize, rng: &mut impl Rng) -> (Array2<f64>, Array1<f64>) {
        let true_w = [2.0, -1.5, 0.5];
        let mut x = Array2::zeros((n, 3));
        let mut y = Array1::zeros(n);
        for i in 0..n {
            let mut z = -0.3;
            for j in 0..3 {
                let v: f64 = rng.random_range(-2.0..2.0);
                x[[i, j]] = v;
                z += true_w[j] * v;
            }
            y[i] = f64::from(u8::from(rng.random::<f64>() < sigmoid(z)));
        }
        (x, y)
    }

    /// The share of the rows of `x` whose 0/1 label `y` the model gets right
    /// (a probability of at least 0.5 predicts 1).
    pub(crate) fn accuracy(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> f64 {
        model
            .predict_proba(x)
            .unwrap()
            .iter()
            .zip(&y)
            .filter(|(p, l)| (**p >= 0.5) == (**l == 1.0))
            .count() as f64
            / x.nrows() as f64
    }

    /// Asserts equal lengths and `|actual_i - expected_i| <= eps` for every `i`.
    #[track_caller]
    pub(crate) fn assert_close<'a, 'b>(
        actual: impl Into<ArrayView1<'a, f64>>,
        expected: impl Into<ArrayView1<'b, f64>>,
        eps: f64,
    ) {
        let (actual, expected) = (actual.into(), expected.into());
        assert_eq!(actual.len(), expected.len(), "{actual} vs {expected}");
        for (a, e) in actual.iter().zip(&expected) {
            assert!((a - e).abs() <= eps, "{actual} vs {expected} (eps {eps})");
        }
    }
}
