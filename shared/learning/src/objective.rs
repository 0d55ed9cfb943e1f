//! Training any model whose parameters are one flat vector: the [`Objective`]
//! trait and the SGD loop over it.
//!
//! The logistic-regression loop of [`crate::train`] is tied to
//! [`LogisticRegression`](crate::LogisticRegression) and stays as it is. This
//! module is the same loop, written against an [`Objective`] instead: an object
//! that knows the layout of a flat parameter vector, checks a labelled set and
//! computes per-example gradients and the mean loss at given parameters. The
//! objectives of this crate are
//!
//! - [`LogLoss`]: binary logistic regression (the math of [`crate::train`], so
//!   that the two loops can be compared);
//! - [`SquaredError`](crate::SquaredError): linear regression ([`crate::linear`]);
//! - [`SoftmaxCrossEntropy`](crate::SoftmaxCrossEntropy): multi-class softmax regression ([`crate::softmax`]).
//!
//! The loop reuses the [`BatchSampler`]s of [`crate::train`] and
//! [`crate::dp`] unchanged; a gradient step is an [`ObjectiveStep`], implemented
//! by [`MeanGradient`] (plain SGD) and by [`DpSgdStep`](crate::DpSgdStep)
//! (clipping of [`Objective::per_example_gradients`] plus Gaussian noise, see
//! [`train_dp_sgd_with_objective`](crate::train_dp_sgd_with_objective)).
//!
//! As in [`crate::train`], the L2 penalty `l2 / 2 * ||w||^2` covers every
//! parameter except the intercepts ([`Objective::is_intercept`]) and the FedProx
//! term `prox_mu / 2 * ||params - start||^2` covers all parameters; both are added
//! by the loop after the gradient step (never clipped or noised).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};
use rand::Rng;

use crate::error::LearningError;
use crate::model::{check_examples, example_log_loss, sigmoid};
use crate::train::{BatchSampler, MeanGradient, ShuffledBatches, ValidTrainParams};

/// A differentiable training loss over a flat parameter vector.
///
/// Implementations fix the model shape (number of features, classes, ...) and so
/// the parameter count; the same value is used on the client (training) and can
/// be rebuilt on the coordinator from the run's configuration.
pub trait Objective {
    /// Length of the parameter vector.
    fn param_count(&self) -> usize;

    /// Whether parameter `index` is an intercept (excluded from the L2 penalty).
    fn is_intercept(&self, index: usize) -> bool;

    /// Checks a labelled set: feature count, finite features, one valid label per
    /// row. Zero rows are accepted.
    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError>;

    /// The gradient of each example's loss at `params`, one row per example
    /// (`rows × param_count()`); what DP-SGD clips row by row. An empty batch gives
    /// `0 × param_count()`.
    fn per_example_gradients(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array2<f64>, LearningError>;

    /// The mean loss over the rows of `x` at `params`; at least one row is needed.
    fn loss(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<f64, LearningError>;

    /// The mean gradient over a non-empty batch: the column means of
    /// [`Objective::per_example_gradients`].
    fn mean_gradient(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array1<f64>, LearningError> {
        let grads = self.per_example_gradients(params, x, y)?;
        grads.mean_axis(Axis(0)).ok_or(LearningError::EmptyInput)
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
    if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(LearningError::NonFiniteParam { index, value });
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

/// Binary cross-entropy of logistic regression, parameters `[intercept, w..]`
/// (`dim + 1`), labels 0 or 1. Gradients and loss equal those of
/// [`crate::per_example_gradients`] and
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

    fn is_intercept(&self, index: usize) -> bool {
        index == 0
    }

    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError> {
        check_examples(x, y, self.dim)
    }

    fn per_example_gradients(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array2<f64>, LearningError> {
        check_params(self, params)?;
        self.check_examples(x, y)?;
        let mut r = linear_scores(params, x).mapv_into(sigmoid);
        r -= &y;
        let mut grads = Array2::zeros((x.nrows(), self.param_count()));
        scaled_design_rows(x, r.view(), grads.view_mut());
        Ok(grads)
    }

    fn loss(
        &self,
        params: ArrayView1<f64>,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<f64, LearningError> {
        check_params(self, params)?;
        self.check_examples(x, y)?;
        if x.nrows() == 0 {
            return Err(LearningError::EmptyInput);
        }
        let total: f64 = linear_scores(params, x)
            .iter()
            .zip(y)
            .map(|(&z, &label)| example_log_loss(sigmoid(z), label))
            .sum();
        Ok(total / x.nrows() as f64)
    }
}

/// `intercept + x · w` for `params = [intercept, w..]`; shapes must be checked.
pub(crate) fn linear_scores(params: ArrayView1<f64>, x: ArrayView2<f64>) -> Array1<f64> {
    x.dot(&params.slice_axis(Axis(0), Slice::from(1..))) + params[0]
}

/// Turns one batch into the gradient estimate of an SGD step on an [`Objective`];
/// the counterpart of [`crate::GradientStep`] for the generic loop. The result
/// must not include the L2 or FedProx terms (the loop adds them).
pub trait ObjectiveStep {
    /// Gradient estimate of the data loss at `params` on the batch.
    fn objective_gradient<O, R>(
        &mut self,
        objective: &O,
        params: ArrayView1<f64>,
        x_batch: ArrayView2<f64>,
        y_batch: ArrayView1<f64>,
        rng: &mut R,
    ) -> Result<Array1<f64>, LearningError>
    where
        O: Objective + ?Sized,
        R: Rng + ?Sized;
}

impl ObjectiveStep for MeanGradient {
    /// The mean gradient over the batch; an empty batch is
    /// [`LearningError::EmptyInput`].
    fn objective_gradient<O, R>(
        &mut self,
        objective: &O,
        params: ArrayView1<f64>,
        x_batch: ArrayView2<f64>,
        y_batch: ArrayView1<f64>,
        _rng: &mut R,
    ) -> Result<Array1<f64>, LearningError>
    where
        O: Objective + ?Sized,
        R: Rng + ?Sized,
    {
        if x_batch.nrows() == 0 {
            return Err(LearningError::EmptyInput);
        }
        objective.mean_gradient(params, x_batch, y_batch)
    }
}

/// Result of local training on an [`Objective`].
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveOutcome {
    /// The locally trained parameters.
    pub params: Array1<f64>,
    /// `params - start`; what a client sends.
    pub delta: Array1<f64>,
    /// Number of local training examples (rows of `x`); the natural FedAvg weight.
    pub examples: usize,
    /// Number of SGD steps taken.
    pub steps: usize,
    /// Mean loss ([`Objective::loss`]) of the final parameters over all local
    /// examples, without the L2 term.
    pub mean_loss: f64,
}

/// Plain local training on an objective: shuffled mini-batches of
/// `params.batch_size()` and the mean batch gradient, from `start` (the global
/// parameters). The generic counterpart of [`crate::train_local`].
pub fn train_local_with_objective<O, R>(
    objective: &O,
    start: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    params: &ValidTrainParams,
    rng: &mut R,
) -> Result<ObjectiveOutcome, LearningError>
where
    O: Objective + ?Sized,
    R: Rng + ?Sized,
{
    train_with_objective(
        objective,
        start,
        x,
        y,
        params,
        &mut ShuffledBatches::new(params.batch_size()),
        &mut MeanGradient,
        rng,
    )
}

/// The SGD loop on an objective with a pluggable batch sampler and gradient step;
/// the generic counterpart of [`crate::train_with`], with the same update
/// `params -= learning_rate * (gradient + l2 * w + prox_mu * (params - start))`
/// (`w`: every non-intercept parameter).
///
/// `start` must have `objective.param_count()` finite entries, `x`/`y` must pass
/// [`Objective::check_examples`] with at least one row. A parameter that becomes
/// NaN or infinite is [`LearningError::Diverged`].
#[allow(clippy::too_many_arguments)]
pub fn train_with_objective<O, S, G, R>(
    objective: &O,
    start: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    params: &ValidTrainParams,
    sampler: &mut S,
    step: &mut G,
    rng: &mut R,
) -> Result<ObjectiveOutcome, LearningError>
where
    O: Objective + ?Sized,
    S: BatchSampler + ?Sized,
    G: ObjectiveStep + ?Sized,
    R: Rng + ?Sized,
{
    check_params(objective, start)?;
    objective.check_examples(x, y)?;
    let examples = x.nrows();
    if examples == 0 {
        return Err(LearningError::EmptyInput);
    }
    let l2_mask: Array1<f64> = (0..objective.param_count())
        .map(|i| if objective.is_intercept(i) { 0.0 } else { 1.0 })
        .collect();
    let mut local = start.to_owned();
    let mut steps = 0;
    for _ in 0..params.epochs() {
        for batch in sampler.epoch_batches(examples, rng) {
            if let Some(&index) = batch.iter().find(|&&i| i >= examples) {
                return Err(LearningError::BatchIndex { index, examples });
            }
            let x_batch = x.select(Axis(0), &batch);
            let y_batch = y.select(Axis(0), &batch);
            let mut grad = step.objective_gradient(
                objective,
                local.view(),
                x_batch.view(),
                y_batch.view(),
                rng,
            )?;
            if grad.len() != local.len() {
                return Err(LearningError::ParamCount {
                    expected: local.len(),
                    got: grad.len(),
                });
            }
            if params.l2() > 0.0 {
                grad.scaled_add(params.l2(), &(&local * &l2_mask));
            }
            if params.prox_mu() > 0.0 {
                grad.scaled_add(params.prox_mu(), &(&local - &start));
            }
            steps += 1;
            local.scaled_add(-params.learning_rate(), &grad);
            if let Some((index, &value)) = local.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(LearningError::Diverged {
                    step: steps,
                    index,
                    value,
                });
            }
        }
    }
    let delta = &local - &start;
    let mean_loss = objective.loss(local.view(), x, y)?;
    Ok(ObjectiveOutcome {
        params: local,
        delta,
        examples,
        steps,
        mean_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogisticRegression;
    use crate::testutil::assert_close;
    use crate::train::{TrainParams, per_example_gradients, train_local};
    use ndarray::array;
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
        assert_eq!(g, per_example_gradients(&m, x.view(), y.view()).unwrap());
        let loss = o.loss(m.params().view(), x.view(), y.view()).unwrap();
        assert_eq!(loss, m.log_loss(x.view(), y.view()).unwrap());
    }

    /// The generic loop with the logistic objective reproduces `train_local`
    /// (same RNG, same batches, L2 and FedProx included) up to rounding.
    #[test]
    fn generic_loop_reproduces_train_local() {
        let (x, y) = data(50, 2);
        let start = LogisticRegression::from_params(array![0.1, -0.2, 0.3]).unwrap();
        let p = valid(3, 8, 0.3, 0.05, 0.1);
        let a = train_local(
            &start,
            x.view(),
            y.view(),
            &p,
            &mut ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap();
        let b = train_local_with_objective(
            &LogLoss { dim: 2 },
            start.params().view(),
            x.view(),
            y.view(),
            &p,
            &mut ChaCha8Rng::seed_from_u64(3),
        )
        .unwrap();
        assert_eq!((a.steps, a.examples), (b.steps, b.examples));
        assert_close(a.model.params(), &b.params, 1e-12);
        assert_close(&a.delta, &b.delta, 1e-12);
        assert!((a.mean_loss - b.mean_loss).abs() < 1e-12);
    }

    #[test]
    fn start_and_data_are_checked() {
        let o = LogLoss { dim: 2 };
        let p = valid(1, 4, 0.1, 0.0, 0.0);
        let r = &mut ChaCha8Rng::seed_from_u64(0);
        let (x, y) = data(4, 0);
        assert_eq!(
            train_local_with_objective(&o, array![0.0].view(), x.view(), y.view(), &p, r),
            Err(LearningError::ParamCount {
                expected: 3,
                got: 1
            })
        );
        assert_eq!(
            train_local_with_objective(
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
            train_local_with_objective(
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
            MeanGradient.objective_gradient(
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
