//! Linear regression on encoded feature vectors.
//!
//! The parameters are one vector of length `dim + 1`, `[intercept, w_1, .., w_dim]`
//! (the layout of [`crate::LogisticRegression`]), and the model predicts
//! `ŷ = intercept + w · x`. Training minimises the squared error
//! `½ (ŷ - y)²` ([`SquaredError`]) with the generic loop of [`crate::objective`],
//! so plain SGD, FedProx and DP-SGD all apply; evaluation pools exactly with
//! [`RegressionSummary`](crate::RegressionSummary).
//!
//! Under DP-SGD, note that the squared-error gradient `(ŷ - y) [1, x]` grows with
//! the residual: standardise the target (as the features are) so that the clip
//! norm bites on outliers only.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};

use crate::error::LearningError;
use crate::model::{check_features, check_rows_and_features, intercept_model_methods};
use crate::objective::{Batch, Objective, design_gradients, linear_scores, mean_design_gradient};

/// A linear regression model with finite parameters `[intercept, w_1..w_dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearRegression {
    params: Array1<f64>,
}

impl LinearRegression {
    intercept_model_methods!(LinearRegression, "its prediction", "0");

    /// The training objective of this model's shape.
    pub fn objective(&self) -> SquaredError {
        SquaredError { dim: self.dim() }
    }

    /// Predictions `intercept + x · w`, one per row of `x` (`dim()` finite
    /// columns; zero rows give an empty result).
    pub fn predict(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, LearningError> {
        check_features(x, self.dim())?;
        Ok(linear_scores(self.params.view(), x))
    }
}

/// Checks that every regression target is finite.
pub(crate) fn check_finite_labels(y: ArrayView1<f64>) -> Result<(), LearningError> {
    match y.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(LearningError::NonFiniteLabel { index, value }),
        None => Ok(()),
    }
}

/// The squared error `½ (ŷ - y)²` of linear regression, parameters
/// `[intercept, w..]` (`dim + 1`), finite real targets.
///
/// Per-example gradient: `(ŷ - y) [1, x]`. [`Objective::loss`] is the mean of
/// `½ (ŷ - y)²`, i.e. half the mean squared error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquaredError {
    /// Number of features.
    pub dim: usize,
}

impl SquaredError {
    fn residuals(&self, Batch { params, x, y }: Batch<'_>) -> Array1<f64> {
        let mut r = linear_scores(params, x);
        r -= &y;
        r
    }
}

impl Objective for SquaredError {
    fn param_count(&self) -> usize {
        self.dim + 1
    }

    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError> {
        check_rows_and_features(x, y, self.dim)?;
        check_finite_labels(y)
    }

    fn checked_gradients(&self, batch: Batch<'_>) -> Array2<f64> {
        design_gradients(batch.x, self.residuals(batch).view())
    }

    fn checked_loss(&self, batch: Batch<'_>) -> f64 {
        let r = self.residuals(batch);
        0.5 * r.dot(&r) / batch.x.nrows() as f64
    }

    fn checked_mean_gradient(&self, batch: Batch<'_>) -> Array1<f64> {
        mean_design_gradient(batch.x, self.residuals(batch).view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::{DpSgdParams, seeded_test_rng};
    use crate::regression_metrics::RegressionSummary;
    use crate::testutil::assert_close;
    use crate::train::{test_params, train_seeded};
    use ndarray::array;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn model(p: Array1<f64>) -> LinearRegression {
        LinearRegression::from_params(p).unwrap()
    }

    /// `y = 1 + 2 x1 - 3 x2 + 0.5 x3 + N(0, 0.1²)`-ish noise, x uniform in [-2, 2].
    fn synthetic(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w = [2.0, -3.0, 0.5];
        let x = Array2::from_shape_fn((n, 3), |_| rng.random_range(-2.0..2.0));
        let y = x
            .rows()
            .into_iter()
            .map(|r| {
                let noise: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
                1.0 + r.dot(&ArrayView1::from(&w[..])) + 0.1 * noise
            })
            .collect();
        (x, y)
    }

    #[test]
    fn predict_and_contributions_by_hand() {
        let m = model(array![1.0, 2.0, -1.0]);
        let x = array![[1.0, 1.0], [0.0, 3.0], [0.5, 0.0]];
        assert_eq!(m.predict(x.view()).unwrap(), array![2.0, -2.0, 2.0]);
        let c = m.contributions(array![3.0, 4.0].view()).unwrap();
        assert_eq!(c, array![6.0, -4.0]);
        assert_eq!(c.sum() + m.intercept(), 3.0);
        assert_eq!(
            LinearRegression::zeros(2).predict(x.view()).unwrap(),
            array![0.0, 0.0, 0.0]
        );
        assert_eq!((m.dim(), m.intercept()), (2, 1.0));
        assert_eq!(m.weights(), array![2.0, -1.0]);
    }

    #[test]
    fn bad_models_and_inputs_are_typed_errors() {
        assert_eq!(
            LinearRegression::from_params(Array1::zeros(0)),
            Err(LearningError::EmptyParams)
        );
        assert_eq!(
            LinearRegression::from_params(array![0.0, f64::NEG_INFINITY]),
            Err(LearningError::NonFiniteParam {
                index: 1,
                value: f64::NEG_INFINITY
            })
        );
        let m = LinearRegression::zeros(2);
        let features = |expected, got| -> Result<Array1<f64>, _> {
            Err(LearningError::FeatureCount { expected, got })
        };
        assert_eq!(m.predict(Array2::zeros((1, 3)).view()), features(2, 3));
        assert_eq!(m.contributions(array![1.0].view()), features(2, 1));
        let o = m.objective();
        let err = o
            .loss(
                m.params().view(),
                array![[0.0, 0.0]].view(),
                array![f64::NAN].view(),
            )
            .unwrap_err();
        assert!(matches!(err, LearningError::NonFiniteLabel { index: 0, value } if value.is_nan()));
        assert_eq!(err.to_string(), "label at row 0 is not finite: NaN");
        assert_eq!(
            m.apply_delta(array![1.0].view()),
            Err(LearningError::ParamCount {
                expected: 3,
                got: 1
            })
        );
        assert_eq!(
            m.apply_delta(array![1.0, 0.5, -0.5].view())
                .unwrap()
                .params(),
            &array![1.0, 0.5, -0.5]
        );
    }

    /// params [1, 2], rows x = 1, 0, -1 with y = 4, 1, 0:
    /// ŷ = 3, 1, -1; residuals -1, 0, -1;
    /// per-example gradients r [1, x] = [-1, -1], [0, 0], [-1, 1];
    /// mean gradient [-2/3, 0]; loss ½ (1 + 0 + 1) / 3 = 1/3.
    /// One full-batch SGD step with lr 0.3: [1 + 0.2, 2] = [1.2, 2].
    #[test]
    fn gradients_loss_and_one_step_by_hand() {
        let o = SquaredError { dim: 1 };
        let p = array![1.0, 2.0];
        let x = array![[1.0], [0.0], [-1.0]];
        let y = array![4.0, 1.0, 0.0];
        let g = o
            .per_example_gradients(p.view(), x.view(), y.view())
            .unwrap();
        assert_eq!(g, array![[-1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]]);
        let mean = o.mean_gradient(p.view(), x.view(), y.view()).unwrap();
        assert_close(&mean, &array![-2.0 / 3.0, 0.0], 1e-15);
        assert_close(&mean, &g.mean_axis(Axis(0)).unwrap(), 1e-15);
        let loss = o.loss(p.view(), x.view(), y.view()).unwrap();
        assert!((loss - 1.0 / 3.0).abs() < 1e-15);

        let params = test_params(1, 3, 0.3, 0.0);
        let out = train_seeded(&o, p.view(), x.view(), y.view(), &params, 1);
        assert_eq!(out.steps, 1);
        assert_close(&out.params, &array![1.2, 2.0], 1e-15);
        assert_close(&out.delta, &array![0.2, 0.0], 1e-15);
        // after the step: ŷ = 3.2, 1.2, -0.8, residuals -0.8, 0.2, -0.8
        assert!((out.mean_loss - 0.5 * (0.64 + 0.04 + 0.64) / 3.0).abs() < 1e-15);
    }

    /// L2 shrinks the weights, not the intercept: x = 0, y = 0, params [0, 1]:
    /// data gradient [0, 0]; l2 0.5 gives [0, 0.5]; lr 0.1 => [0, 0.95].
    #[test]
    fn l2_skips_the_intercept() {
        let params = test_params(1, 1, 0.1, 0.5);
        let out = train_seeded(
            &SquaredError { dim: 1 },
            array![0.0, 1.0].view(),
            array![[0.0]].view(),
            array![0.0].view(),
            &params,
            1,
        );
        assert_close(&out.params, &array![0.0, 0.95], 1e-15);
    }

    #[test]
    fn converges_on_a_noisy_linear_target() {
        let (x, y) = synthetic(2000, 5);
        let params = test_params(20, 32, 0.05, 0.0);
        let start = LinearRegression::zeros(3);
        let o = start.objective();
        let out = train_seeded(&o, start.params().view(), x.view(), y.view(), &params, 9);
        let m = LinearRegression::from_params(out.params).unwrap();
        assert_close(m.params(), &array![1.0, 2.0, -3.0, 0.5], 0.05);
        let (xt, yt) = synthetic(500, 6);
        let summary =
            RegressionSummary::from_predictions(m.predict(xt.view()).unwrap().view(), yt.view())
                .unwrap();
        let metrics = summary.metrics();
        let r2 = metrics.r2.unwrap();
        assert!(r2 > 0.95, "r2 {r2}");
        // the noise has variance 0.01: the MSE of a good fit is close to it
        assert!(metrics.mse < 0.02, "mse {}", metrics.mse);
    }

    /// DP-SGD reuses the same objective: with a large clip norm and small noise it
    /// still fits; every step is accounted.
    #[test]
    fn dp_sgd_trains_linear_regression() {
        let (x, y) = synthetic(1000, 7);
        let dp = DpSgdParams {
            clip_norm: 20.0,
            noise_multiplier: 0.05,
            expected_batch_size: 100,
            epochs: 10,
            learning_rate: 0.05,
        }
        .check(1000)
        .unwrap();
        let start = LinearRegression::zeros(3);
        let out = crate::dp::train_dp_sgd(
            &start.objective(),
            start.params().view(),
            x.view(),
            y.view(),
            &dp,
            &mut seeded_test_rng(3),
        )
        .unwrap();
        assert_eq!(out.steps, dp.steps());
        assert_close(&out.params, &array![1.0, 2.0, -3.0, 0.5], 0.2);
    }
}
