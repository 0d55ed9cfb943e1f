//! Model math for fedprofile: feature specification, models, local training,
//! aggregation and evaluation metrics, on `ndarray`. No transport types here.
//!
//! - [`features`]: how a user row becomes a model input vector;
//! - [`model`]: binary logistic regression, parameters `[intercept, w_1..w_dim]`;
//! - [`train`]: local mini-batch SGD from the global model, producing a delta;
//! - [`dp`]: record-level DP-SGD (Poisson sampling, per-example clipping, noise from
//!   the `fedprofile-privacy` mechanism), client-level update clipping, secure RNG;
//! - [`aggregate`]: FedAvg of client deltas behind the [`Aggregator`] trait;
//! - [`strategy`]: the configurable server strategies of a run ([`StrategyConfig`]:
//!   FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, median, trimmed mean,
//!   Krum, Multi-Krum, norm bounding) behind the [`ServerStrategy`] trait;
//! - [`metrics`]: exactly poolable evaluation summaries and the metrics they give;
//! - [`model_file`]: the versioned JSON file of the global model;
//! - [`error`]: the error types.
//!
//! Further model types, each with flat `Array1<f64>` parameters (one tensor on
//! the wire) and exactly poolable evaluation:
//!
//! - [`objective`]: the [`Objective`] trait (per-example gradients and loss over
//!   flat parameters) and the SGD loop over it ([`train_local_with_objective`],
//!   [`train_with_objective`], and DP-SGD with [`train_dp_sgd_with_objective`]);
//! - [`linear`]: linear regression, parameters `[intercept, w..]`, squared error;
//!   [`regression_metrics`]: [`RegressionSummary`] (MSE, RMSE, MAE, pooled R²);
//! - [`softmax`]: multi-class softmax regression, `k × (dim + 1)` parameters
//!   row-major; [`multiclass_metrics`]: [`MulticlassSummary`] (accuracy, log loss,
//!   macro precision / recall / F1);
//! - [`kmeans`]: federated k-means (client [`kmeans_local_stats`] or its DP form
//!   [`kmeans_local_stats_dp`], server [`kmeans_update`], data-free [`kmeans_init`]);
//! - [`family`]: the families a run can train ([`ModelFamily`]), one model of any
//!   family ([`AnyModel`]) and its poolable [`Evaluation`];
//! - [`model_file_v2`]: model file version 2 for these types, and
//!   [`VersionedModelFile`], which reads versions 1 and 2.

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
pub mod model_file_v2;
pub mod multiclass_metrics;
pub mod objective;
pub mod regression_metrics;
pub mod softmax;
pub mod strategy;
pub mod train;

pub use aggregate::{Aggregator, FedAvg, WeightedUpdate, fedavg, validate_update};
pub use dp::{
    DpSgdParams, DpSgdStep, PoissonSampler, ValidDpSgdParams, clip_update, secure_rng,
    seeded_test_rng, train_dp_sgd, train_dp_sgd_with_objective,
};
pub use error::{AggregationError, LearningError, ModelFileError, ModelFileProblem, StrategyError};
pub use family::{AnyModel, ClusteringSummary, Evaluation, LabelNeed, ModelFamily, Quality};
pub use features::{FeatureColumn, FeatureSpec};
pub use kmeans::{
    ClusterStats, KMeans, KMeansUpdate, kmeans_init, kmeans_local_stats, kmeans_local_stats_dp,
    kmeans_mechanism, kmeans_reseed_empty, kmeans_update,
};
pub use linear::{LinearRegression, SquaredError};
pub use metrics::{EvalSummary, Metrics, SCORE_BINS, roc_auc};
pub use model::LogisticRegression;
pub use model_file::{ModelFile, NamedWeight, Provenance, Target};
pub use model_file_v2::{
    Centroid, ClassCoefficients, KMeansFile, KMeansMetrics, LinearRegressionFile, ModelFileV2,
    NamedValue, RunProvenance, SoftmaxRegressionFile, TargetColumn, VersionedModelFile,
};
pub use multiclass_metrics::{ClassMetrics, MulticlassMetrics, MulticlassSummary};
pub use objective::{
    LogLoss, Objective, ObjectiveOutcome, ObjectiveStep, train_local_with_objective,
    train_with_objective,
};
pub use regression_metrics::{RegressionMetrics, RegressionSummary};
pub use softmax::{SoftmaxCrossEntropy, SoftmaxRegression};
pub use strategy::{Aggregated, ClientUpdate, ServerStrategy, StrategyConfig};
pub use train::{
    BatchSampler, GradientStep, MeanGradient, ShuffledBatches, TrainOutcome, TrainParams,
    ValidTrainParams, per_example_gradients, train_local, train_with,
};

#[cfg(test)]
pub(crate) mod testutil {
    use ndarray::ArrayView1;

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
