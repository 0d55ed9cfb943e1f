//! The losses of the gradient-trained model families: the [`Objective`] trait
//! (per-example gradients and loss over one flat parameter vector) that the one
//! SGD / DP-SGD loop of [`crate::train`] trains on.
//!
//! An objective knows the layout of a flat parameter vector, checks a labelled
//! set and computes per-example gradients and the mean loss at given
//! parameters. The objectives of this crate are
//!
//! - [`LogLoss`]: binary logistic regression;
//! - [`SquaredError`](crate::SquaredError): linear regression ([`crate::linear`]);
//! - [`SoftmaxCrossEntropy`](crate::SoftmaxCrossEntropy): multi-class softmax regression ([`crate::softmax`]).
//!
//! Plain SGD steps on [`Objective::mean_gradient`] ([`MeanGradient`](crate::MeanGradient));
//! DP-SGD clips the rows of [`Objective::per_example_gradients`]
//! ([`DpSgdStep`](crate::DpSgdStep)). The L2 and FedProx terms are added by the
//! loop, never by an objective.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};

use crate::error::LearningError;
use crate::model::{check_examples, example_log_loss, sigmoid};

/// The parameters and labelled rows one objective call is evaluated on; the
/// `checked_*` methods of [`Objective`] receive it after the checks.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Flat parameters, of the objective's length and finite.
    pub params: ArrayView1<'a, f64>,
    /// Feature rows.
    pub x: ArrayView2<'a, f64>,
    /// One label per row.
    pub y: ArrayView1<'a, f64>,
}

/// A differentiable training loss over a flat parameter vector.
///
/// Implementations fix the model shape (number of features, classes, ...) and so
/// the parameter count; the same value is used on the client (training) and can
/// be rebuilt on the coordinator from the run's configuration.
///
/// An implementation writes the math on checked input (the `checked_*`
/// methods); the provided methods [`Objective::per_example_gradients`],
/// [`Objective::loss`] and [`Objective::mean_gradient`] check the parameters
/// ([`check_params`]) and the examples ([`Objective::check_examples`]) first.
pub trait Objective {
    /// Length of the parameter vector.
    fn param_count(&self) -> usize;

    /// Whether parameter `index` is an intercept (excluded from the L2 penalty);
    /// by default the layout is `[intercept, w_1..w_dim]`.
    fn is_intercept(&self, index: usize) -> bool {
        index == 0
    }

    /// Checks a labelled set: feature count, finite features, one valid label per
    /// row. Zero rows are accepted.
    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError>;

    /// [`Objective::per_example_gradients`] of a checked batch (possibly empty).
    fn checked_gradients(&self, batch: Batch<'_>) -> Array2<f64>;

    /// [`Objective::loss`] of a checked batch of at least one row.
    fn checked_loss(&self, batch: Batch<'_>) -> f64;

    /// [`Objective::mean_gradient`] of a checked batch of at least one row: by
    /// default the column means of [`Objective::checked_gradients`].
    fn checked_mean_gradient(&self, batch: Batch<'_>) -> Array1<f64> {
        // `sum / n` is what `mean_axis` computes, to the bit.
        self.checked_gradients(batch).sum_axis(Axis(0)) / batch.x.nrows() as f64
    }

    /// The gradient of each example's loss at `params`, one row per example
    /// (`rows × param_count()`); what DP-SGD clips row by row. An empty batch gives
    /// `0 × param_count()`.
    fn per_example_gradients(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array2<f64>, LearningError> {
        check_params(self, params)?;
        self.check_examples(x, y)?;
        Ok(self.checked_gradients(Batch { params, x, y }))
    }

    /// The mean loss over the rows of `x` at `params`; at least one row is needed.
    fn loss(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<f64, LearningError> {
        check_batch(self, params, x, y)?;
        Ok(self.checked_loss(Batch { params, x, y }))
    }

    /// The mean gradient over a non-empty batch: the column means of
    /// [`Objective::per_example_gradients`].
    fn mean_gradient(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array1<f64>, LearningError> {
        check_batch(self, params, x, y)?;
        Ok(self.checked_mean_gradient(Batch { params, x, y }))
    }
}

/// Checks that `params` has the objective's length and only finite entries.
pub fn check_params<O: Objective + ?Sized>(
    objective: &O,
    params: ArrayView1<f64>,
) -> Result<(), LearningError> {
    if params.len() != objective.param_count() {
        return Err(LearningError::ParamCount {
            expected: objective.param_count(),
            got: params.len(),
        });
    }
    crate::model::check_finite_params(params)
}

/// What a loss or mean gradient checks first: `params` (see [`check_params`]), the
/// examples, and that there is at least one.
pub(crate) fn check_batch<O: Objective + ?Sized>(
    objective: &O,
    params: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
) -> Result<(), LearningError> {
    check_params(objective, params)?;
    objective.check_examples(x, y)?;
    if x.nrows() == 0 {
        return Err(LearningError::EmptyInput);
    }
    Ok(())
}

/// Rows `[1, x_i]` scaled by `residual_i`, written into `out` (`rows × (dim + 1)`).
pub(crate) fn scaled_design_rows(
    x: ArrayView2<f64>,
    residuals: ArrayView1<f64>,
    mut out: ndarray::ArrayViewMut2<f64>,
) {
    out.column_mut(0).assign(&residuals);
    out.slice_axis_mut(Axis(1), Slice::from(1..))
        .assign(&(&x * &residuals.insert_axis(Axis(1))));
}

/// The per-example gradients `r_i * [1, x_i]` (`rows × (dim + 1)`) of an objective on
/// linear scores with residuals `r`.
pub(crate) fn design_gradients(x: ArrayView2<f64>, residuals: ArrayView1<f64>) -> Array2<f64> {
    let mut grads = Array2::zeros((x.nrows(), x.ncols() + 1));
    scaled_design_rows(x, residuals, grads.view_mut());
    grads
}

/// `[sum(r), x^T r] / n` for the residuals `r` of a non-empty batch: the column means of
/// [`design_gradients`] without materialising the rows (the operations of the loops before
/// they were merged, so that seeded runs give the same bits).
pub(crate) fn mean_design_gradient(x: ArrayView2<f64>, residuals: ArrayView1<f64>) -> Array1<f64> {
    let mut grad = Array1::zeros(x.ncols() + 1);
    grad[0] = residuals.sum();
    grad.slice_axis_mut(Axis(0), Slice::from(1..))
        .assign(&x.t().dot(&residuals));
    grad /= x.nrows() as f64;
    grad
}

/// `p_i - y_i` with `p_i = sigmoid(intercept + w · x_i)`; shapes must be checked.
fn logistic_residuals(Batch { params, x, y }: Batch<'_>) -> Array1<f64> {
    let mut r = linear_scores(params, x).mapv_into(sigmoid);
    r -= &y;
    r
}

/// Binary cross-entropy of logistic regression, parameters `[intercept, w..]`
/// (`dim + 1`), labels 0 or 1: per-example gradients `(p_i - y_i) * [1, x_i]`
/// with `p_i = sigmoid(intercept + w · x_i)`, and the loss of
/// [`LogisticRegression::log_loss`](crate::LogisticRegression::log_loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLoss {
    /// Number of features.
    pub dim: usize,
}

impl Objective for LogLoss {
    fn param_count(&self) -> usize {
        self.dim + 1
    }

    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError> {
        check_examples(x, y, self.dim)
    }

    fn checked_gradients(&self, batch: Batch<'_>) -> Array2<f64> {
        design_gradients(batch.x, logistic_residuals(batch).view())
    }

    /// `[sum(r), x^T r] / n` with `r_i = p_i - y_i`, without materialising the
    /// per-example rows (the operations of the logistic loop before the loops
    /// were merged, so that seeded runs give the same bits).
    fn checked_mean_gradient(&self, batch: Batch<'_>) -> Array1<f64> {
        mean_design_gradient(batch.x, logistic_residuals(batch).view())
    }

    fn checked_loss(&self, Batch { params, x, y }: Batch<'_>) -> f64 {
        let total: f64 = linear_scores(params, x)
            .iter()
            .zip(y)
            .map(|(&z, &label)| example_log_loss(sigmoid(z), label))
            .sum();
        total / x.nrows() as f64
    }
}

/// `intercept + x · w` for `params = [intercept, w..]`; shapes must be checked.
pub(crate) fn linear_scores(params: ArrayView1<f64>, x: ArrayView2<f64>) -> Array1<f64> {
    x.dot(&params.slice_axis(Axis(0), Slice::from(1..))) + params[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogisticRegression;
    use crate::testutil::assert_close;
    use crate::train::{GradientStep, MeanGradient, TrainParams, ValidTrainParams, train_local};
    use ndarray::array;
    use rand::Rng;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn valid(epochs: usize, batch_size: usize, lr: f64, l2: f64, mu: f64) -> ValidTrainParams {
        TrainParams {
            epochs,
            batch_size,
            learning_rate: lr,
            l2,
            prox_mu: mu,
        }
        .check()
        .unwrap()
    }

    fn data(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((n, 2), |_| rng.random_range(-2.0..2.0));
        let y = x
            .rows()
            .into_iter()
            .map(|r| if r[0] - r[1] > 0.3 { 1.0 } else { 0.0 })
            .collect();
        (x, y)
    }

    #[test]
    fn log_loss_objective_matches_the_logistic_functions() {
        let m = LogisticRegression::from_params(array![0.2, 1.0, -0.5]).unwrap();
        let (x, y) = data(7, 1);
        let o = LogLoss { dim: 2 };
        let g = o
            .per_example_gradients(m.params().view(), x.view(), y.view())
            .unwrap();
        let p = m.predict_proba(x.view()).unwrap();
        for (i, row) in g.rows().into_iter().enumerate() {
            let r = p[i] - y[i];
            assert_close(row, &array![r, r * x[[i, 0]], r * x[[i, 1]]], 1e-15);
        }
        let mean = o
            .mean_gradient(m.params().view(), x.view(), y.view())
            .unwrap();
        assert_close(&mean, &g.mean_axis(Axis(0)).unwrap(), 1e-12);
        let loss = o.loss(m.params().view(), x.view(), y.view()).unwrap();
        assert_eq!(loss, m.log_loss(x.view(), y.view()).unwrap());
    }

    /// Logistic regression trains through this objective with the numerics of
    /// the logistic-only loop it replaced: the figures below were printed by
    /// that loop (`train_local` / `train_dp_sgd` on a `LogisticRegression`,
    /// same data, seeds and parameters) and must match to the last bit.
    #[test]
    fn logistic_training_is_bit_identical_to_the_loop_it_replaced() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x = Array2::from_shape_fn((60, 3), |_| rng.random_range(-2.0..2.0));
        let y: Array1<f64> = x
            .rows()
            .into_iter()
            .map(|r| {
                if r[0] - 0.5 * r[1] + 0.2 * r[2] > 0.1 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let start = array![0.1, -0.2, 0.3, 0.05];
        let o = LogLoss { dim: 3 };
        let expected = [
            (
                0.0,
                0.0,
                [
                    -0.1900073338842013,
                    1.414736894089348,
                    -0.6895487004157708,
                    0.21743850155454747,
                ],
                0.2670724347073107,
            ),
            (
                0.05,
                0.1,
                [
                    -0.13063140840972282,
                    0.8946124242082332,
                    -0.3918208544668331,
                    0.13452947121424091,
                ],
                0.3651114942949781,
            ),
        ];
        for (l2, prox_mu, params, loss) in expected {
            let p = valid(3, 8, 0.3, l2, prox_mu);
            let out = train_local(
                &o,
                start.view(),
                x.view(),
                y.view(),
                &p,
                &mut crate::seeded_test_rng(3),
            )
            .unwrap();
            assert_eq!(
                out.params.to_vec(),
                params.to_vec(),
                "l2 {l2}, mu {prox_mu}"
            );
            assert_eq!((out.steps, out.mean_loss), (24, loss));
        }
        let dp = crate::DpSgdParams {
            clip_norm: 1.0,
            noise_multiplier: 0.8,
            expected_batch_size: 8,
            epochs: 2,
            learning_rate: 0.5,
        }
        .check(60)
        .unwrap()
        .with_prox_mu(0.1)
        .unwrap();
        let out = crate::train_dp_sgd(
            &o,
            start.view(),
            x.view(),
            y.view(),
            &dp,
            &mut crate::seeded_test_rng(5),
        )
        .unwrap();
        assert_eq!(
            out.params.to_vec(),
            vec![
                -0.13945349114972605,
                1.3259056506499638,
                -0.7211050974283821,
                0.14183507026679992
            ]
        );
        assert_eq!((out.steps, out.mean_loss), (16, 0.27888655406451485));
    }

    #[test]
    fn start_and_data_are_checked() {
        let o = LogLoss { dim: 2 };
        let p = valid(1, 4, 0.1, 0.0, 0.0);
        let r = &mut ChaCha8Rng::seed_from_u64(0);
        let (x, y) = data(4, 0);
        assert_eq!(
            train_local(&o, array![0.0].view(), x.view(), y.view(), &p, r),
            Err(LearningError::ParamCount {
                expected: 3,
                got: 1
            })
        );
        assert_eq!(
            train_local(
                &o,
                array![0.0, f64::INFINITY, 0.0].view(),
                x.view(),
                y.view(),
                &p,
                r
            ),
            Err(LearningError::NonFiniteParam {
                index: 1,
                value: f64::INFINITY
            })
        );
        assert_eq!(
            train_local(
                &o,
                Array1::zeros(3).view(),
                Array2::zeros((0, 2)).view(),
                Array1::zeros(0).view(),
                &p,
                r
            ),
            Err(LearningError::EmptyInput)
        );
        assert_eq!(
            MeanGradient.batch_gradient(
                &o,
                Array1::zeros(3).view(),
                Array2::zeros((0, 2)).view(),
                Array1::zeros(0).view(),
                r
            ),
            Err(LearningError::EmptyInput)
        );
    }
}
