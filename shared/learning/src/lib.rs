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

pub mod aggregate;
pub mod dp;
pub mod error;
pub mod features;
pub mod metrics;
pub mod model;
pub mod model_file;
pub mod strategy;
pub mod train;

pub use aggregate::{Aggregator, FedAvg, WeightedUpdate, fedavg, validate_update};
pub use dp::{
    DpSgdParams, DpSgdStep, PoissonSampler, ValidDpSgdParams, clip_update, secure_rng,
    seeded_test_rng, train_dp_sgd,
};
pub use error::{AggregationError, LearningError, ModelFileError, ModelFileProblem, StrategyError};
pub use features::{FeatureColumn, FeatureSpec};
pub use metrics::{EvalSummary, Metrics, SCORE_BINS, roc_auc};
pub use model::LogisticRegression;
pub use model_file::{ModelFile, NamedWeight, Provenance, Target};
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
