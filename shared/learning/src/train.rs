//! Local training: the one mini-batch SGD loop of every gradient-trained model
//! family, starting from the global model.
//!
//! The loop works on an [`Objective`] (a loss over one flat parameter vector:
//! [`LogLoss`](crate::LogLoss) for logistic regression,
//! [`SquaredError`](crate::SquaredError), [`SoftmaxCrossEntropy`](crate::SoftmaxCrossEntropy))
//! and is split into three replaceable parts:
//! - a [`BatchSampler`] decides which examples form each batch of an epoch
//!   ([`ShuffledBatches`] for plain SGD, [`PoissonSampler`](crate::PoissonSampler)
//!   for DP-SGD);
//! - a [`GradientStep`] turns a batch into a gradient estimate ([`MeanGradient`]
//!   for plain SGD; per-example clipping of [`Objective::per_example_gradients`]
//!   plus Gaussian noise, [`DpSgdStep`](crate::DpSgdStep), for DP-SGD);
//! - [`train_with`] applies `params -= learning_rate * (gradient + l2 * w)` and
//!   checks that the model stays finite.
//!
//! [`train_local`] is plain SGD; [`train_dp_sgd`](crate::train_dp_sgd) is DP-SGD.
//! Both are this loop.
//!
//! The L2 penalty `l2 / 2 * ||w||^2` covers every parameter except the
//! intercepts ([`Objective::is_intercept`]); it is added by the loop, after the
//! gradient step, because it does not depend on the data and must not be
//! clipped or noised.
//!
//! # FedProx
//!
//! With `prox_mu > 0` the loop also adds the gradient of the FedProx proximal
//! term (Li et al. 2020, "Federated Optimization in Heterogeneous Networks")
//! `prox_mu / 2 * ||params - params_start||^2`, i.e. `prox_mu * (params -
//! params_start)`, where `params_start` is the model training started from (the
//! global model). As in the paper it covers *all* parameters, intercepts
//! included. Like the L2 term it is data-independent and is added after the
//! gradient step, so under DP-SGD it is added after the noise and is never
//! clipped; it changes nothing in the privacy accounting.

use ndarray::{Array1, ArrayView1, ArrayView2, Axis};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{LearningError, check_count, check_non_negative, check_positive};
use crate::objective::{Objective, check_params};

/// Unchecked training hyperparameters; call [`TrainParams::check`] to train.
///
/// Defaults: 1 epoch, batch size 32, learning rate 0.1, no L2 penalty, no FedProx
/// proximal term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainParams {
    /// Passes over the local data; must be positive.
    pub epochs: usize,
    /// Examples per mini-batch (the last batch of an epoch may be smaller); must be
    /// positive.
    pub batch_size: usize,
    /// SGD step size; must be positive and finite.
    pub learning_rate: f64,
    /// L2 penalty `l2 / 2 * ||w||^2` on the weights (not the intercept); must be
    /// non-negative and finite.
    pub l2: f64,
    /// FedProx proximal coefficient `mu`: the loss gets `mu / 2 * ||params -
    /// params_start||^2` over all parameters (intercept included); must be
    /// non-negative and finite, 0 (the default) is plain SGD.
    pub prox_mu: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
            l2: 0.0,
            prox_mu: 0.0,
        }
    }
}

impl TrainParams {
    /// Validates every field; the error names the first bad field and its value.
    pub fn check(&self) -> Result<ValidTrainParams, LearningError> {
        check_count("epochs", self.epochs)?;
        check_count("batch_size", self.batch_size)?;
        check_positive("learning_rate", self.learning_rate)?;
        check_non_negative("l2", self.l2)?;
        check_non_negative("prox_mu", self.prox_mu)?;
        Ok(ValidTrainParams(self.clone()))
    }
}

impl TryFrom<TrainParams> for ValidTrainParams {
    type Error = LearningError;

    fn try_from(params: TrainParams) -> Result<Self, Self::Error> {
        params.check()
    }
}

/// Training hyperparameters that passed [`TrainParams::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTrainParams(TrainParams);

impl ValidTrainParams {
    /// Passes over the local data (at least 1).
    pub fn epochs(&self) -> usize {
        self.0.epochs
    }

    /// Mini-batch size (at least 1).
    pub fn batch_size(&self) -> usize {
        self.0.batch_size
    }

    /// SGD step size (positive, finite).
    pub fn learning_rate(&self) -> f64 {
        self.0.learning_rate
    }

    /// L2 penalty on the weights (non-negative, finite).
    pub fn l2(&self) -> f64 {
        self.0.l2
    }

    /// FedProx proximal coefficient (non-negative, finite; 0 = plain SGD).
    pub fn prox_mu(&self) -> f64 {
        self.0.prox_mu
    }

    /// The validated values.
    pub fn params(&self) -> &TrainParams {
        &self.0
    }
}

/// Result of one local training task.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The locally trained parameters.
    pub params: Array1<f64>,
    /// `params - start`; what a client sends.
    pub delta: Array1<f64>,
    /// Number of local training examples (rows of `x`); the natural FedAvg weight.
    pub examples: usize,
    /// Number of SGD steps taken.
    pub steps: usize,
    /// Mean loss ([`Objective::loss`]) of the *final* parameters over all local
    /// training examples (without the L2 term), computed in one extra pass after
    /// training.
    pub mean_loss: f64,
}

/// Chooses the examples of each batch of an epoch.
pub trait BatchSampler {
    /// Row indices of the batches of one epoch over `examples` rows.
    ///
    /// Batches may be empty (e.g. under Poisson sampling); the [`GradientStep`]
    /// decides what an empty batch means.
    fn epoch_batches<R: Rng + ?Sized>(&mut self, examples: usize, rng: &mut R) -> Vec<Vec<usize>>;
}

/// Shuffles the rows each epoch and cuts them into consecutive batches of
/// `batch_size` (the last one may be smaller): every row is used once per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffledBatches {
    batch_size: usize,
}

impl ShuffledBatches {
    /// Batches of `batch_size` rows; a size of 0 is treated as 1.
    pub fn new(batch_size: usize) -> Self {
        ShuffledBatches {
            batch_size: batch_size.max(1),
        }
    }
}

impl BatchSampler for ShuffledBatches {
    fn epoch_batches<R: Rng + ?Sized>(&mut self, examples: usize, rng: &mut R) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..examples).collect();
        order.shuffle(rng);
        order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }
}

/// Turns one batch into the gradient estimate of an SGD step on an [`Objective`].
///
/// The returned vector has the objective's parameter layout and must not
/// include the L2 or FedProx terms (the training loop adds them).
pub trait GradientStep {
    /// Gradient estimate of the data loss at `params` on the batch.
    fn batch_gradient<O, R>(
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

/// Plain SGD: the mean gradient over the batch ([`Objective::mean_gradient`]).
/// Deterministic (ignores the RNG); an empty batch is an
/// [`LearningError::EmptyInput`] error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeanGradient;

impl GradientStep for MeanGradient {
    fn batch_gradient<O, R>(
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

/// Plain local training: shuffled mini-batches of `params.batch_size()` and the mean
/// batch gradient ([`ShuffledBatches`] + [`MeanGradient`]).
///
/// Starts from `start` (the global parameters), runs `params.epochs()` epochs,
/// and returns the local parameters, their delta from `start`, and counts. `x`
/// and `y` must pass [`Objective::check_examples`] with at least one row.
pub fn train_local<O, R>(
    objective: &O,
    start: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    params: &ValidTrainParams,
    rng: &mut R,
) -> Result<TrainOutcome, LearningError>
where
    O: Objective + ?Sized,
    R: Rng + ?Sized,
{
    train_with(
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

/// The SGD loop with a pluggable batch sampler and gradient step.
///
/// Uses `epochs`, `learning_rate`, `l2` and `prox_mu` from `params`; the batches
/// come from `sampler` alone (`params.batch_size()` is not read here). Each step
/// applies `params -= learning_rate * (gradient + l2 * w + prox_mu * (params -
/// start))` (`w`: every non-intercept parameter).
///
/// `start` must have `objective.param_count()` finite entries, `x`/`y` must pass
/// [`Objective::check_examples`] with at least one row. A parameter that becomes
/// NaN or infinite is [`LearningError::Diverged`].
#[allow(clippy::too_many_arguments)]
pub fn train_with<O, S, G, R>(
    objective: &O,
    start: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    params: &ValidTrainParams,
    sampler: &mut S,
    step: &mut G,
    rng: &mut R,
) -> Result<TrainOutcome, LearningError>
where
    O: Objective + ?Sized,
    S: BatchSampler + ?Sized,
    G: GradientStep + ?Sized,
    R: Rng + ?Sized,
{
    check_params(objective, start)?;
    objective.check_examples(x, y)?;
    let examples = x.nrows();
    if examples == 0 {
        return Err(LearningError::EmptyInput);
    }
    let penalised: Vec<usize> = (0..objective.param_count())
        .filter(|&i| !objective.is_intercept(i))
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
            let mut grad =
                step.batch_gradient(objective, local.view(), x_batch.view(), y_batch.view(), rng)?;
            if grad.len() != local.len() {
                return Err(LearningError::ParamCount {
                    expected: local.len(),
                    got: grad.len(),
                });
            }
            if params.l2() > 0.0 {
                for &i in &penalised {
                    grad[i] += params.l2() * local[i];
                }
            }
            if params.prox_mu() > 0.0 {
                // FedProx: gradient of mu / 2 * ||local - start||^2, all parameters.
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
    Ok(TrainOutcome {
        params: local,
        delta,
        examples,
        steps,
        mean_loss,
    })
}

/// Test parameters: `epochs`, `batch_size`, `learning_rate` and `l2`, without FedProx.
#[cfg(test)]
pub(crate) fn test_params(
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    l2: f64,
) -> ValidTrainParams {
    TrainParams {
        epochs,
        batch_size,
        learning_rate,
        l2,
        prox_mu: 0.0,
    }
    .check()
    .unwrap()
}

/// [`train_local`] with a `ChaCha8Rng` seeded with `seed`, for tests that expect success.
#[cfg(test)]
pub(crate) fn train_seeded<O: Objective + ?Sized>(
    objective: &O,
    start: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    params: &ValidTrainParams,
    seed: u64,
) -> TrainOutcome {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    train_local(objective, start, x, y, params, &mut rng).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogisticRegression, sigmoid};
    use crate::objective::LogLoss;
    use crate::testutil::{LogisticOutcome, accuracy, assert_close, logistic_blobs};
    use ndarray::Array2;

    /// [`super::train_local`] on the log loss from `model`.
    fn train_local<R: Rng + ?Sized>(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
        params: &ValidTrainParams,
        rng: &mut R,
    ) -> Result<LogisticOutcome, LearningError> {
        let o = LogLoss { dim: model.dim() };
        super::train_local(&o, model.params().view(), x, y, params, rng)
            .and_then(LogisticOutcome::new)
    }

    /// [`train_local`] with the tests' seeded rng.
    fn train(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
        params: &ValidTrainParams,
    ) -> Result<LogisticOutcome, LearningError> {
        train_local(model, x, y, params, &mut rng())
    }

    /// [`train`] on owned rows `x` and labels `y`.
    fn train_rows(
        model: &LogisticRegression,
        x: Array2<f64>,
        y: Array1<f64>,
        params: &ValidTrainParams,
    ) -> Result<LogisticOutcome, LearningError> {
        train(model, x.view(), y.view(), params)
    }

    /// [`super::train_with`] on the log loss from `model`.
    fn train_with<S, G, R>(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
        params: &ValidTrainParams,
        sampler: &mut S,
        step: &mut G,
        rng: &mut R,
    ) -> Result<LogisticOutcome, LearningError>
    where
        S: BatchSampler + ?Sized,
        G: GradientStep + ?Sized,
        R: Rng + ?Sized,
    {
        let o = LogLoss { dim: model.dim() };
        super::train_with(&o, model.params().view(), x, y, params, sampler, step, rng)
            .and_then(LogisticOutcome::new)
    }

    fn per_example_gradients(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array2<f64>, LearningError> {
        LogLoss { dim: model.dim() }.per_example_gradients(model.params().view(), x, y)
    }

    fn mean_gradient(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
    ) -> Result<Array1<f64>, LearningError> {
        LogLoss { dim: model.dim() }.mean_gradient(model.params().view(), x, y)
    }
    use approx::assert_abs_diff_eq;
    use ndarray::array;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn valid(epochs: usize, batch_size: usize, learning_rate: f64, l2: f64) -> ValidTrainParams {
        TrainParams {
            l2,
            ..with_prox(epochs, batch_size, learning_rate, 0.0)
        }
        .check()
        .unwrap()
    }

    /// Parameters without L2, with FedProx `prox_mu`.
    fn with_prox(
        epochs: usize,
        batch_size: usize,
        learning_rate: f64,
        prox_mu: f64,
    ) -> TrainParams {
        TrainParams {
            epochs,
            batch_size,
            learning_rate,
            l2: 0.0,
            prox_mu,
        }
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    /// Two Gaussian blobs, labels from a known logistic model.
    fn synthetic(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        logistic_blobs(n, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    #[test]
    fn check_names_field_and_value() {
        let ok = TrainParams::default().check().unwrap();
        assert_eq!(
            (ok.epochs(), ok.batch_size(), ok.learning_rate(), ok.l2()),
            (1, 32, 0.1, 0.0)
        );
        let err = TrainParams {
            epochs: 0,
            ..TrainParams::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid training parameter `epochs` = 0 (must be positive)"
        );
        let err = TrainParams {
            batch_size: 0,
            ..TrainParams::default()
        }
        .check()
        .unwrap_err();
        assert!(matches!(
            err,
            LearningError::InvalidParam {
                field: "batch_size",
                ..
            }
        ));
        for lr in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            let err = TrainParams {
                learning_rate: lr,
                ..TrainParams::default()
            }
            .check()
            .unwrap_err();
            assert!(
                matches!(err, LearningError::InvalidParam { field: "learning_rate", ref value, .. } if *value == lr.to_string())
            );
        }
        let err = ValidTrainParams::try_from(TrainParams {
            l2: -1.0,
            ..TrainParams::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid training parameter `l2` = -1 (must be non-negative and finite)"
        );
    }

    #[test]
    fn params_deserialize_with_defaults() {
        let p: TrainParams = serde_json::from_str(r#"{"learning_rate": 0.5}"#).unwrap();
        assert_eq!(p.learning_rate, 0.5);
        assert_eq!(p.batch_size, 32);
        assert!(serde_json::from_str::<TrainParams>(r#"{"lr": 0.5}"#).is_err());
    }

    #[test]
    fn one_example_one_step_by_hand() {
        // p = 0.5, gradient (p - y) * [1, x] = [-0.5, -0.5], step 0.1 => [0.05, 0.05]
        let start = LogisticRegression::zeros(1);
        let out = train_rows(&start, array![[1.0]], array![1.0], &valid(1, 32, 0.1, 0.0)).unwrap();
        assert_close(out.model.params(), &array![0.05, 0.05], 1e-15);
        assert_close(&out.delta, &array![0.05, 0.05], 1e-15);
        assert_eq!((out.examples, out.steps), (1, 1));
        assert_abs_diff_eq!(out.mean_loss, -sigmoid(0.1).ln(), epsilon = 1e-12);
    }

    #[test]
    fn full_batch_step_by_hand() {
        // p = 0.5 for both rows; residuals (-0.5, 0.5)
        // mean gradient: intercept (-0.5 + 0.5) / 2 = 0
        //                w1 (-0.5 * 1 + 0.5 * 0) / 2 = -0.25
        //                w2 (-0.5 * 0 + 0.5 * 2) / 2 = 0.5
        let x = array![[1.0, 0.0], [0.0, 2.0]];
        let y = array![1.0, 0.0];
        let start = LogisticRegression::zeros(2);
        let g = mean_gradient(&start, x.view(), y.view()).unwrap();
        assert_close(&g, &array![0.0, -0.25, 0.5], 1e-15);
        let out = train(&start, x.view(), y.view(), &valid(1, 2, 0.1, 0.0)).unwrap();
        assert_close(&out.delta, &array![0.0, 0.025, -0.05], 1e-15);
        assert_eq!(out.steps, 1);
    }

    #[test]
    fn delta_is_relative_to_the_start_model() {
        let start = LogisticRegression::from_params(array![1.0, -2.0]).unwrap();
        let (x, y) = (array![[0.5], [1.5]], array![0.0, 1.0]);
        let out = train(&start, x.view(), y.view(), &valid(3, 1, 0.2, 0.0)).unwrap();
        assert_eq!(out.delta, out.model.params() - start.params());
        assert_eq!(out.steps, 6);
    }

    #[test]
    fn l2_shrinks_weights_but_not_intercept() {
        // x = 0, y = 0, w = 1: p = 0.5, data gradient [0.5, 0]; l2 term 0.1 * 1 on w
        // => params [0 - 0.1 * 0.5, 1 - 0.1 * 0.1] = [-0.05, 0.99]
        let start = LogisticRegression::from_params(array![0.0, 1.0]).unwrap();
        let out = train_rows(&start, array![[0.0]], array![0.0], &valid(1, 1, 0.1, 0.1)).unwrap();
        assert_close(out.model.params(), &array![-0.05, 0.99], 1e-15);
    }

    #[test]
    fn per_example_gradients_by_hand_and_mean_matches() {
        let m = LogisticRegression::from_params(array![0.0, 1.0, -1.0]).unwrap();
        let x = array![[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]];
        let y = array![1.0, 0.0, 1.0];
        let g = per_example_gradients(&m, x.view(), y.view()).unwrap();
        assert_eq!(g.dim(), (3, 3));
        // row 0: logit 0, p = 0.5, residual -0.5
        assert_close(g.row(0), &array![-0.5, -0.5, -0.5], 1e-15);
        // row 1: logit 2, residual sigmoid(2)
        let r1 = sigmoid(2.0);
        assert_close(g.row(1), &array![r1, 2.0 * r1, 0.0], 1e-15);
        // row 2: logit -3, residual sigmoid(-3) - 1
        let r2 = sigmoid(-3.0) - 1.0;
        assert_close(g.row(2), &array![r2, 0.0, 3.0 * r2], 1e-15);

        let mean = mean_gradient(&m, x.view(), y.view()).unwrap();
        assert_close(&mean, &g.mean_axis(Axis(0)).unwrap(), 1e-15);

        let empty =
            per_example_gradients(&m, Array2::zeros((0, 2)).view(), Array1::zeros(0).view())
                .unwrap();
        assert_eq!(empty.dim(), (0, 3));
    }

    #[test]
    fn shuffled_batches_cover_every_row_once() {
        let mut sampler = ShuffledBatches::new(4);
        let batches = sampler.epoch_batches(10, &mut rng());
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        let mut all: Vec<usize> = batches.concat();
        assert_ne!(all, (0..10).collect::<Vec<_>>(), "seed 7 shuffles");
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(sampler.epoch_batches(0, &mut rng()).is_empty());
    }

    #[test]
    fn same_seed_same_model() {
        let (x, y) = synthetic(200, 1);
        let params = valid(2, 16, 0.1, 0.01);
        let start = LogisticRegression::zeros(3);
        let a = train(&start, x.view(), y.view(), &params).unwrap();
        let b = train(&start, x.view(), y.view(), &params).unwrap();
        assert_eq!(a, b);
        let c = train_local(
            &start,
            x.view(),
            y.view(),
            &params,
            &mut ChaCha8Rng::seed_from_u64(8),
        )
        .unwrap();
        assert_ne!(a.model, c.model);
    }

    #[test]
    fn sanity_target_one_epoch_batch_32_lr_0_1() {
        let (x, y) = synthetic(2000, 2);
        let start = LogisticRegression::zeros(3);
        let out = train(
            &start,
            x.view(),
            y.view(),
            &TrainParams::default().check().unwrap(),
        )
        .unwrap();
        assert_eq!(out.examples, 2000);
        assert_eq!(out.steps, 63); // ceil(2000 / 32)
        assert!(out.mean_loss < 0.45, "loss {}", out.mean_loss);
        let w = out.model.weights();
        // one epoch is not converged yet but has the signs and rough sizes of (2, -1.5, 0.5)
        assert!(w[0] > 0.7 && w[1] < -0.5 && w[2] > 0.1, "weights {w}");

        // more epochs get close to the generating weights (2, -1.5, 0.5)
        let out = train(&start, x.view(), y.view(), &valid(30, 32, 0.1, 0.0)).unwrap();
        let w = out.model.weights();
        assert_close(w, &array![2.0, -1.5, 0.5], 0.35);
        let accuracy = accuracy(&out.model, x.view(), y.view());
        assert!(accuracy > 0.8, "accuracy {accuracy}");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let m = LogisticRegression::zeros(2);
        let p = valid(1, 8, 0.1, 0.0);
        let r = &mut rng();
        for (x, y, expected) in [
            (
                Array2::zeros((0, 2)),
                Array1::zeros(0),
                LearningError::EmptyInput,
            ),
            (
                Array2::zeros((3, 2)),
                Array1::zeros(2),
                LearningError::RowMismatch { rows: 3, labels: 2 },
            ),
            (
                Array2::zeros((2, 3)),
                Array1::zeros(2),
                LearningError::FeatureCount {
                    expected: 2,
                    got: 3,
                },
            ),
            (
                Array2::zeros((2, 2)),
                array![0.0, 2.0],
                LearningError::InvalidLabel {
                    index: 1,
                    value: 2.0,
                },
            ),
        ] {
            assert_eq!(train_local(&m, x.view(), y.view(), &p, r), Err(expected));
        }
        assert_eq!(
            mean_gradient(&m, Array2::zeros((0, 2)).view(), Array1::zeros(0).view()),
            Err(LearningError::EmptyInput)
        );
    }

    #[test]
    fn divergence_is_an_error() {
        let m = LogisticRegression::zeros(1);
        let err =
            train_rows(&m, array![[1e300]], array![0.0], &valid(1, 1, 1e10, 0.0)).unwrap_err();
        assert!(matches!(
            err,
            LearningError::Diverged {
                step: 1,
                index: 1,
                ..
            }
        ));
    }

    #[test]
    fn out_of_range_batches_are_an_error() {
        struct Broken;
        impl BatchSampler for Broken {
            fn epoch_batches<R: Rng + ?Sized>(
                &mut self,
                examples: usize,
                _: &mut R,
            ) -> Vec<Vec<usize>> {
                vec![vec![0, examples]]
            }
        }
        let err = train_with(
            &LogisticRegression::zeros(1),
            array![[1.0], [2.0]].view(),
            array![1.0, 0.0].view(),
            &valid(1, 1, 0.1, 0.0),
            &mut Broken,
            &mut MeanGradient,
            &mut rng(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            LearningError::BatchIndex {
                index: 2,
                examples: 2
            }
        );
    }

    /// A replacement gradient step (as DP-SGD will be) plugs into the same loop.
    #[test]
    fn custom_gradient_step_slots_in() {
        struct Recording {
            batch_sizes: Vec<usize>,
        }
        impl GradientStep for Recording {
            fn batch_gradient<O: Objective + ?Sized, R: Rng + ?Sized>(
                &mut self,
                objective: &O,
                params: ArrayView1<f64>,
                x_batch: ArrayView2<f64>,
                y_batch: ArrayView1<f64>,
                _rng: &mut R,
            ) -> Result<Array1<f64>, LearningError> {
                self.batch_sizes.push(y_batch.len());
                // sum of per-example gradients instead of the mean
                Ok(objective
                    .per_example_gradients(params, x_batch, y_batch)?
                    .sum_axis(Axis(0)))
            }
        }
        let (x, y) = synthetic(10, 3);
        let mut step = Recording {
            batch_sizes: vec![],
        };
        let out = train_with(
            &LogisticRegression::zeros(3),
            x.view(),
            y.view(),
            &valid(2, 4, 0.01, 0.0),
            &mut ShuffledBatches::new(4),
            &mut step,
            &mut rng(),
        )
        .unwrap();
        assert_eq!(step.batch_sizes, vec![4, 4, 2, 4, 4, 2]);
        assert_eq!(out.steps, 6);
    }

    #[test]
    fn prox_mu_is_checked_and_defaults_to_zero() {
        assert_eq!(TrainParams::default().prox_mu, 0.0);
        let p: TrainParams = serde_json::from_str(r#"{"prox_mu": 0.01}"#).unwrap();
        assert_eq!(p.check().unwrap().prox_mu(), 0.01);
        for mu in [-0.1, f64::NAN, f64::INFINITY] {
            let err = TrainParams {
                prox_mu: mu,
                ..TrainParams::default()
            }
            .check()
            .unwrap_err();
            assert!(
                matches!(err, LearningError::InvalidParam { field: "prox_mu", ref value, .. } if *value == mu.to_string()),
                "{err}"
            );
        }
        assert_eq!(
            TrainParams {
                prox_mu: -1.0,
                ..TrainParams::default()
            }
            .check()
            .unwrap_err()
            .to_string(),
            "invalid training parameter `prox_mu` = -1 (must be non-negative and finite)"
        );
    }

    /// FedProx by hand with a constant data gradient g = 1 on both parameters,
    /// learning rate 0.5, mu = 1, starting from [1, -2]; d = local - start:
    /// step 1: d = 0 - 0.5 * (1 + 1 * 0)       = -0.5
    /// step 2: d = -0.5 - 0.5 * (1 + 1 * -0.5)  = -0.75
    /// step 3: d = -0.75 - 0.5 * (1 + 1 * -0.75) = -0.875
    /// (the fixed point is -g / mu = -1: the proximal term holds the model near the
    /// start). The intercept is pulled like the weights.
    #[test]
    fn proximal_term_by_hand() {
        struct Constant;
        impl GradientStep for Constant {
            fn batch_gradient<O: Objective + ?Sized, R: Rng + ?Sized>(
                &mut self,
                _: &O,
                _: ArrayView1<f64>,
                _: ArrayView2<f64>,
                _: ArrayView1<f64>,
                _: &mut R,
            ) -> Result<Array1<f64>, LearningError> {
                Ok(array![1.0, 1.0])
            }
        }
        let start = LogisticRegression::from_params(array![1.0, -2.0]).unwrap();
        let run = |prox_mu| {
            let params = with_prox(3, 1, 0.5, prox_mu).check().unwrap();
            let (x, y) = (array![[0.0]], array![0.0]);
            let (sampler, step) = (&mut ShuffledBatches::new(1), &mut Constant);
            train_with(
                &start,
                x.view(),
                y.view(),
                &params,
                sampler,
                step,
                &mut rng(),
            )
            .unwrap()
        };
        let out = run(1.0);
        assert_eq!(out.steps, 3);
        assert_close(&out.delta, &array![-0.875, -0.875], 1e-15);
        assert_close(out.model.params(), &array![0.125, -2.875], 1e-15);

        // without the term: 3 steps of -0.5
        let out = run(0.0);
        assert_close(&out.delta, &array![-1.5, -1.5], 1e-15);
    }

    /// On real log-loss gradients, one example x = 1, y = 1, full batch, lr 0.1,
    /// mu = 2, from zeros: step 1 is plain ([0.05, 0.05], the start has no pull);
    /// step 2 at p = sigmoid(0.1): params = 0.05 - 0.1 * ((p - 1) + 2 * 0.05).
    #[test]
    fn proximal_term_on_log_loss_by_hand() {
        let params = with_prox(2, 32, 0.1, 2.0).check().unwrap();
        let out = train_rows(
            &LogisticRegression::zeros(1),
            array![[1.0]],
            array![1.0],
            &params,
        )
        .unwrap();
        let expected = 0.05 - 0.1 * ((sigmoid(0.1) - 1.0) + 2.0 * 0.05);
        assert_close(&out.delta, &array![expected, expected], 1e-15);
    }
}
