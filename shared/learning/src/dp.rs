//! Differential privacy in local training: record-level DP-SGD, client-level
//! update clipping, and the random number generators they draw from.
//!
//! # Record-level DP-SGD (Abadi et al. 2016, as Opacus does it)
//!
//! [`train_dp_sgd`] runs the one SGD loop of every gradient-trained family
//! ([`train_with`], on the family's [`Objective`]) with two replacements:
//! - [`PoissonSampler`]: at every step each example joins the batch
//!   independently with probability `q` (batches vary in size and may be empty);
//! - [`DpSgdStep`]: per-example gradients ([`Objective::per_example_gradients`]) are each
//!   clipped to L2 norm `C`, summed, noised with `N(0, (sigma * C)^2)` on every
//!   coordinate, and divided by the *expected* batch size `q * n` (never the
//!   realized one, which would leak the batch size).
//!
//! Adding or removing one record changes the clipped sum by at most `C`, so each
//! step is a Gaussian mechanism with noise multiplier `sigma` on a Poisson sample
//! of rate `q`: exactly the [`SubsampledGaussianMechanism`] that
//! [`ValidDpSgdParams::mechanism`] returns. The noise is drawn by that mechanism
//! (the object that also carries the privacy map), and this crate never computes
//! epsilon: ask the accountant of `fedprofile-privacy` for the cost of
//! `params.mechanism().map(1)` *before* training, and refuse to train if the
//! budget does not allow it. [`DpSgdStep`] refuses to release more noisy
//! gradients than the mechanism accounts for.
//!
//! With [`ValidDpSgdParams::with_prox_mu`] the loop also adds the FedProx
//! proximal gradient `mu * (params - start)`. It depends only on the current
//! parameters (themselves a post-processing of earlier noisy releases) and on the
//! global model the client received, never on the data, so it is added *after*
//! the noise, is not clipped, and does not change the accounting.
//!
//! Each example's whole gradient vector is clipped (all `k * (dim + 1)`
//! parameters of a softmax model), so the mechanism and the accounting are the
//! same for every family.
//!
//! The guarantee covers the model (and so the delta) only: [`TrainOutcome::examples`]
//! and [`TrainOutcome::mean_loss`] are computed from the raw data without noise.
//!
//! # Client-level DP (DP-FedAvg, McMahan et al. 2018)
//!
//! [`clip_update`] bounds a client's whole delta to L2 norm `C` before it is
//! sent; the noise is then added to the aggregate with a Gaussian mechanism of
//! the same clip norm.
//!
//! # Randomness
//!
//! Production code draws from [`secure_rng`] (ChaCha20 seeded by the operating
//! system); [`seeded_test_rng`] exists only to make tests reproducible and gives
//! no privacy at all.

use fedprofile_privacy::{GaussianMechanism, L2Clip, SubsampledGaussianMechanism};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::distr::{Bernoulli, Distribution};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{LearningError, check_count, check_positive, invalid};
use crate::objective::Objective;
use crate::train::{
    BatchSampler, GradientStep, TrainOutcome, TrainParams, ValidTrainParams, train_with,
};

/// Unchecked DP-SGD hyperparameters; call [`DpSgdParams::check`] with the number
/// of local examples to train.
///
/// Every field is required when deserialized (no defaults for privacy settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSgdParams {
    /// L2 bound `C` on each per-example gradient; positive and finite.
    pub clip_norm: f64,
    /// Noise standard deviation over clip norm, `sigma`; positive and finite.
    pub noise_multiplier: f64,
    /// Expected number of examples per step, `b`; positive. It sets the Poisson
    /// sampling rate `q = min(1, b / n)`.
    pub expected_batch_size: usize,
    /// Passes over the local data (see [`DpSgdParams::check`]); positive.
    pub epochs: usize,
    /// SGD step size; positive and finite.
    pub learning_rate: f64,
}

impl DpSgdParams {
    /// Validates every field for training on `examples` rows and derives the
    /// sampling schedule:
    ///
    /// - sampling rate `q = min(1, expected_batch_size / examples)`;
    /// - `steps_per_epoch = ceil(1 / q)` (computed exactly as
    ///   `ceil(examples / min(expected_batch_size, examples))`), so that one
    ///   epoch samples `examples` rows in expectation, as in Opacus; with
    ///   `expected_batch_size >= examples` every step uses every row (`q = 1`)
    ///   and an epoch is a single step;
    /// - `steps = epochs * steps_per_epoch`, the number of noisy releases the
    ///   mechanism accounts for.
    ///
    /// `examples = 0` is [`LearningError::EmptyInput`]; a bad field is
    /// [`LearningError::InvalidParam`] naming the field and its value.
    pub fn check(&self, examples: usize) -> Result<ValidDpSgdParams, LearningError> {
        if examples == 0 {
            return Err(LearningError::EmptyInput);
        }
        check_positive("clip_norm", self.clip_norm)?;
        check_positive("noise_multiplier", self.noise_multiplier)?;
        check_count("expected_batch_size", self.expected_batch_size)?;
        check_count("epochs", self.epochs)?;
        check_positive("learning_rate", self.learning_rate)?;
        let batch = self.expected_batch_size.min(examples);
        let sampling_rate = batch as f64 / examples as f64;
        let steps_per_epoch = examples.div_ceil(batch);
        let too_many = || {
            invalid(
                "epochs",
                self.epochs,
                "small enough that epochs * steps per epoch fits in 64 bits",
            )
        };
        let steps = self
            .epochs
            .checked_mul(steps_per_epoch)
            .ok_or_else(too_many)?;
        let gaussian = GaussianMechanism::new(self.noise_multiplier, self.clip_norm)
            .map_err(|e| invalid("noise_multiplier", e, "accepted by the mechanism"))?;
        let mechanism = SubsampledGaussianMechanism::new(
            gaussian,
            sampling_rate,
            u64::try_from(steps).map_err(|_| too_many())?,
        )
        .map_err(|e| invalid("expected_batch_size", e, "accepted by the mechanism"))?;
        // The loop reads epochs, learning rate and l2 (0: the penalty would be
        // data-independent, but DP-SGD here trains without it).
        let train = TrainParams {
            epochs: self.epochs,
            batch_size: batch,
            learning_rate: self.learning_rate,
            l2: 0.0,
            prox_mu: 0.0,
        }
        .check()?;
        Ok(ValidDpSgdParams {
            params: self.clone(),
            examples,
            sampling_rate,
            steps_per_epoch,
            steps,
            mechanism,
            train,
        })
    }
}

/// DP-SGD hyperparameters that passed [`DpSgdParams::check`] for a given number
/// of examples, with the derived sampling schedule and privacy mechanism.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDpSgdParams {
    params: DpSgdParams,
    examples: usize,
    sampling_rate: f64,
    steps_per_epoch: usize,
    steps: usize,
    mechanism: SubsampledGaussianMechanism,
    train: ValidTrainParams,
}

impl ValidDpSgdParams {
    /// The validated values.
    pub fn params(&self) -> &DpSgdParams {
        &self.params
    }

    /// The number of examples the schedule was derived for; [`train_dp_sgd`]
    /// refuses data with another number of rows.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Poisson sampling rate `q = min(1, expected_batch_size / examples)`.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// Steps per epoch, `ceil(1 / q)`.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// Total number of noisy steps, `epochs * steps_per_epoch`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The divisor of the noisy gradient sum: `q * examples` (the expected batch
    /// size, capped at the number of examples).
    pub fn expected_batch_size(&self) -> f64 {
        self.sampling_rate * self.examples as f64
    }

    /// Standard deviation of the noise added to each coordinate of the clipped
    /// gradient *sum*, `sigma * C`; on the gradient itself it is divided by
    /// [`ValidDpSgdParams::expected_batch_size`].
    pub fn noise_std(&self) -> f64 {
        self.mechanism.gaussian().noise_std()
    }

    /// The whole run as a privacy mechanism: `steps` releases of the Gaussian
    /// mechanism (`sigma`, `C`) on Poisson samples of rate `q`. Its
    /// `map(1)` is the [`fedprofile_privacy::Charge`] to submit to the
    /// accountant / budget filter before training.
    pub fn mechanism(&self) -> SubsampledGaussianMechanism {
        self.mechanism
    }

    /// The same parameters with the FedProx proximal coefficient `prox_mu`
    /// (non-negative and finite; see [`TrainParams::prox_mu`]). The proximal
    /// gradient is data-independent and added after the noise, so the schedule,
    /// the mechanism and the privacy cost are unchanged.
    pub fn with_prox_mu(mut self, prox_mu: f64) -> Result<Self, LearningError> {
        self.train = TrainParams {
            prox_mu,
            ..self.train.params().clone()
        }
        .check()?;
        Ok(self)
    }

    /// The FedProx proximal coefficient (0 unless set by
    /// [`ValidDpSgdParams::with_prox_mu`]).
    pub fn prox_mu(&self) -> f64 {
        self.train.prox_mu()
    }

    /// A fresh Poisson sampler with this schedule.
    pub fn sampler(&self) -> PoissonSampler {
        PoissonSampler {
            sampling_rate: self.sampling_rate,
            steps_per_epoch: self.steps_per_epoch,
            bernoulli: bernoulli(self.sampling_rate),
        }
    }

    /// A fresh gradient step that may release [`ValidDpSgdParams::steps`] noisy
    /// gradients.
    pub fn gradient_step(&self) -> DpSgdStep {
        DpSgdStep {
            mechanism: self.mechanism,
            expected_batch_size: self.expected_batch_size(),
            max_steps: self.steps,
            steps_taken: 0,
        }
    }
}

fn bernoulli(p: f64) -> Bernoulli {
    // p is in [0, 1] wherever this is called.
    Bernoulli::new(p).unwrap_or_else(|_| unreachable!("sampling rate {p} outside [0, 1]"))
}

/// Poisson sampling: at every step each example is included independently with
/// probability `q`. Batches vary in size and can be empty; an epoch is
/// `steps_per_epoch` steps.
///
/// Costs one Bernoulli draw per example per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoissonSampler {
    sampling_rate: f64,
    steps_per_epoch: usize,
    bernoulli: Bernoulli,
}

impl PoissonSampler {
    /// A sampler with inclusion probability `sampling_rate` (in `[0, 1]`) and
    /// `steps_per_epoch` batches per epoch (positive). Prefer
    /// [`ValidDpSgdParams::sampler`], which matches the accounted mechanism.
    pub fn new(sampling_rate: f64, steps_per_epoch: usize) -> Result<Self, LearningError> {
        if !(0.0..=1.0).contains(&sampling_rate) {
            return Err(invalid("sampling_rate", sampling_rate, "in [0, 1]"));
        }
        if steps_per_epoch == 0 {
            return Err(invalid("steps_per_epoch", steps_per_epoch, "positive"));
        }
        Ok(PoissonSampler {
            sampling_rate,
            steps_per_epoch,
            bernoulli: bernoulli(sampling_rate),
        })
    }

    /// Inclusion probability `q`.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// Batches per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// One Poisson batch over `examples` rows: the included row indices, ascending.
    pub fn sample<R: Rng + ?Sized>(&self, examples: usize, rng: &mut R) -> Vec<usize> {
        (0..examples)
            .filter(|_| self.bernoulli.sample(rng))
            .collect()
    }
}

impl BatchSampler for PoissonSampler {
    fn epoch_batches<R: Rng + ?Sized>(&mut self, examples: usize, rng: &mut R) -> Vec<Vec<usize>> {
        (0..self.steps_per_epoch)
            .map(|_| self.sample(examples, rng))
            .collect()
    }
}

/// The DP-SGD gradient: clip each per-example gradient to L2 norm `C`, sum, add
/// `N(0, (sigma * C)^2)` to every coordinate with the privacy mechanism, divide by
/// the expected batch size `q * n`.
///
/// An empty batch gives pure noise (the step is still taken). After the
/// accounted number of steps every further call is
/// [`LearningError::DpStepsExhausted`]. Build it with
/// [`ValidDpSgdParams::gradient_step`].
#[derive(Debug, Clone, PartialEq)]
pub struct DpSgdStep {
    mechanism: SubsampledGaussianMechanism,
    expected_batch_size: f64,
    max_steps: usize,
    steps_taken: usize,
}

impl DpSgdStep {
    /// Noisy gradients released so far.
    pub fn steps_taken(&self) -> usize {
        self.steps_taken
    }

    /// The clip norm `C`.
    pub fn clip_norm(&self) -> f64 {
        self.mechanism.gaussian().clip_norm()
    }

    /// The pre-noise part of a step: the sum over the batch of the
    /// objective's per-example gradients at `params`, each clipped to L2 norm
    /// `C` by the mechanism's own clip (so the sum has sensitivity `C`). Not
    /// private on its own.
    pub fn clipped_sum<O: Objective + ?Sized>(
        &self,
        objective: &O,
        params: ArrayView1<f64>,
        x_batch: ArrayView2<f64>,
        y_batch: ArrayView1<f64>,
    ) -> Result<Array1<f64>, LearningError> {
        let grads = objective.per_example_gradients(params, x_batch, y_batch)?;
        Ok(clip_rows_and_sum(&self.mechanism.gaussian().clip(), &grads))
    }
}

/// Each row clipped to the clip's L2 norm, then summed.
fn clip_rows_and_sum(clip: &L2Clip, grads: &Array2<f64>) -> Array1<f64> {
    let mut sum = Array1::zeros(grads.ncols());
    let mut row_buf = vec![0.0; grads.ncols()];
    for row in grads.rows() {
        for (b, g) in row_buf.iter_mut().zip(row) {
            *b = *g;
        }
        clip.apply(&mut row_buf);
        sum += &ArrayView1::from(&row_buf[..]);
    }
    sum
}

impl DpSgdStep {
    fn check_budget(&self) -> Result<(), LearningError> {
        if self.steps_taken >= self.max_steps {
            return Err(LearningError::DpStepsExhausted {
                steps: self.max_steps,
            });
        }
        Ok(())
    }

    /// Noises a clipped sum, counts the release and divides by `q * n`.
    fn release<R: Rng + ?Sized>(&mut self, clipped_sum: Array1<f64>, rng: &mut R) -> Array1<f64> {
        let mut noisy = clipped_sum.to_vec();
        self.mechanism.add_noise(&mut noisy, rng);
        self.steps_taken += 1;
        let mut grad = Array1::from(noisy);
        grad /= self.expected_batch_size;
        grad
    }
}

/// The objective's per-example gradients (the whole flat vector of each
/// example, e.g. all `k * (dim + 1)` softmax parameters) are clipped to L2 norm
/// `C`, summed, noised and divided by `q * n`, whatever the family, so the same
/// mechanism and accounting apply.
impl GradientStep for DpSgdStep {
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
        R: Rng + ?Sized,
    {
        self.check_budget()?;
        let sum = self.clipped_sum(objective, params, x_batch, y_batch)?;
        Ok(self.release(sum, rng))
    }
}

/// Record-level DP-SGD on any [`Objective`] from `start` (the global
/// parameters) on `x`, `y`: Poisson sampling, per-example clipping and Gaussian
/// noise from `params.mechanism()`, `params.steps()` steps of `params -=
/// learning_rate * noisy_gradient` (plus the FedProx term of
/// [`ValidDpSgdParams::with_prox_mu`]).
///
/// `x` must have exactly `params.examples()` rows (the schedule and its privacy
/// cost were derived for that size) and pass [`Objective::check_examples`];
/// `start` must have `objective.param_count()` finite entries. Draw `rng` from
/// [`secure_rng`] in production.
pub fn train_dp_sgd<O, R>(
    objective: &O,
    start: ArrayView1<f64>,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    params: &ValidDpSgdParams,
    rng: &mut R,
) -> Result<TrainOutcome, LearningError>
where
    O: Objective + ?Sized,
    R: Rng + ?Sized,
{
    objective.check_examples(x, y)?;
    if x.nrows() != params.examples {
        return Err(LearningError::DpExamplesMismatch {
            checked: params.examples,
            got: x.nrows(),
        });
    }
    train_with(
        objective,
        start,
        x,
        y,
        &params.train,
        &mut params.sampler(),
        &mut params.gradient_step(),
        rng,
    )
}

/// Clips a client's update in place to L2 norm at most `clip_norm` (DP-FedAvg):
/// scales it by `clip_norm / norm` only if `norm > clip_norm`. Returns the norm
/// before clipping.
///
/// `clip_norm` must be positive and finite and `delta` finite
/// ([`LearningError::InvalidParam`] otherwise, `delta` left unchanged). The norm
/// is computed without intermediate overflow. Use the clip norm of the Gaussian
/// mechanism that will noise the aggregate.
pub fn clip_update(delta: &mut Array1<f64>, clip_norm: f64) -> Result<f64, LearningError> {
    L2Clip::new(clip_norm).map_err(|_| invalid("clip_norm", clip_norm, "positive and finite"))?;
    if let Some((index, value)) = delta.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(invalid(
            "delta",
            format!("{value} at index {index}"),
            "finite",
        ));
    }
    let norm = delta.iter().fold(0.0_f64, |acc, v| acc.hypot(*v));
    if norm > clip_norm {
        let scale = clip_norm / norm;
        delta.mapv_inplace(|v| v * scale);
    }
    Ok(norm)
}

/// The production RNG: ChaCha20, a CSPRNG, seeded from the operating system.
///
/// Panics if the operating system's random source fails (as
/// `SeedableRng::from_os_rng` does); there is no safe fallback for DP noise.
pub fn secure_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

/// A ChaCha20 RNG from a fixed seed, **for reproducibility tests only**.
///
/// Its output is predictable from the seed, so noise drawn from it gives **no
/// privacy**: never use it for a real training run or a release; use
/// [`secure_rng`].
pub fn seeded_test_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogisticRegression;
    use crate::objective::LogLoss;

    /// [`super::train_dp_sgd`] on the log loss from `model`.
    fn train_dp_sgd<R: Rng + ?Sized>(
        model: &LogisticRegression,
        x: ArrayView2<f64>,
        y: ArrayView1<f64>,
        params: &ValidDpSgdParams,
        rng: &mut R,
    ) -> Result<LogisticOutcome, LearningError> {
        let o = LogLoss { dim: model.dim() };
        super::train_dp_sgd(&o, model.params().view(), x, y, params, rng)
            .and_then(LogisticOutcome::new)
    }
    use crate::testutil::{LogisticOutcome, accuracy, assert_close, logistic_blobs};
    use ndarray::{Array2, Axis, Slice, array};

    fn params(
        clip_norm: f64,
        noise_multiplier: f64,
        expected_batch_size: usize,
        epochs: usize,
        learning_rate: f64,
    ) -> DpSgdParams {
        DpSgdParams {
            clip_norm,
            noise_multiplier,
            expected_batch_size,
            epochs,
            learning_rate,
        }
    }

    /// Labels from a known logistic model (2, -1.5, 0.5), intercept -0.3.
    fn synthetic(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        logistic_blobs(n, &mut seeded_test_rng(seed))
    }

    fn normal_cdf(z: f64) -> f64 {
        0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
    }

    #[test]
    fn check_derives_rate_steps_and_mechanism() {
        let v = params(1.0, 1.1, 32, 2, 0.1).check(2000).unwrap();
        assert_eq!(v.sampling_rate(), 0.016);
        assert_eq!(v.steps_per_epoch(), 63); // ceil(1 / 0.016) = ceil(62.5)
        assert_eq!(v.steps(), 126);
        assert_eq!(v.examples(), 2000);
        assert!((v.expected_batch_size() - 32.0).abs() < 1e-12);
        assert!((v.noise_std() - 1.1).abs() < 1e-15);
        let charge = v.mechanism().map(1).unwrap();
        assert_eq!((charge.q, charge.sigma, charge.steps), (0.016, 1.1, 126));

        // q = 1/3 exactly divides: 3 steps, not 4 from float round-off.
        let v = params(1.0, 1.0, 1, 1, 0.1).check(3).unwrap();
        assert_eq!((v.steps_per_epoch(), v.steps()), (3, 3));

        // batch larger than the data: q = 1, one full-batch step per epoch.
        let v = params(2.0, 0.5, 500, 4, 0.1).check(100).unwrap();
        assert_eq!(v.sampling_rate(), 1.0);
        assert_eq!((v.steps_per_epoch(), v.steps()), (1, 4));
        assert_eq!(v.expected_batch_size(), 100.0);
        assert!((v.noise_std() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn check_names_the_bad_field() {
        let ok = params(1.0, 1.0, 16, 1, 0.1);
        assert_eq!(ok.check(0).unwrap_err(), LearningError::EmptyInput);
        let cases: [(DpSgdParams, &str); 8] = [
            (
                DpSgdParams {
                    clip_norm: 0.0,
                    ..ok.clone()
                },
                "clip_norm",
            ),
            (
                DpSgdParams {
                    clip_norm: f64::NAN,
                    ..ok.clone()
                },
                "clip_norm",
            ),
            (
                DpSgdParams {
                    noise_multiplier: 0.0,
                    ..ok.clone()
                },
                "noise_multiplier",
            ),
            (
                DpSgdParams {
                    noise_multiplier: f64::INFINITY,
                    ..ok.clone()
                },
                "noise_multiplier",
            ),
            (
                DpSgdParams {
                    expected_batch_size: 0,
                    ..ok.clone()
                },
                "expected_batch_size",
            ),
            (
                DpSgdParams {
                    epochs: 0,
                    ..ok.clone()
                },
                "epochs",
            ),
            (
                DpSgdParams {
                    learning_rate: -0.1,
                    ..ok.clone()
                },
                "learning_rate",
            ),
            (
                DpSgdParams {
                    epochs: usize::MAX,
                    ..ok.clone()
                },
                "epochs",
            ),
        ];
        for (p, name) in cases {
            let err = p.check(100).unwrap_err();
            assert!(
                matches!(err, LearningError::InvalidParam { field, .. } if field == name),
                "{p:?}: {err}"
            );
        }
        assert_eq!(
            DpSgdParams {
                noise_multiplier: 0.0,
                ..ok.clone()
            }
            .check(10)
            .unwrap_err()
            .to_string(),
            "invalid training parameter `noise_multiplier` = 0 (must be positive and finite)"
        );
        // every field is required, unknown fields are refused
        let p: DpSgdParams = serde_json::from_str(
            r#"{"clip_norm": 1.0, "noise_multiplier": 1.1, "expected_batch_size": 64,
                "epochs": 2, "learning_rate": 0.5}"#,
        )
        .unwrap();
        assert_eq!(p, params(1.0, 1.1, 64, 2, 0.5));
        assert!(serde_json::from_str::<DpSgdParams>(r#"{"clip_norm": 1.0}"#).is_err());
    }

    /// The noise released by a step on an empty batch is N(0, (sigma C / (q n))^2):
    /// sample std within a chi-square bound, mean ~0, KS test against the normal CDF.
    #[test]
    fn noise_has_the_configured_std_and_is_gaussian() {
        // n = 1000, b = 10: q = 0.01, 100 steps per epoch, 10 epochs = 1000 steps.
        let v = params(0.7, 1.3, 10, 10, 0.1).check(1000).unwrap();
        let expected_std: f64 = 1.3 * 0.7 / 10.0;
        let dim = 49;
        let model = LogisticRegression::zeros(dim);
        let (x, y) = (Array2::zeros((0, dim)), Array1::zeros(0));
        let mut step = v.gradient_step();
        let mut rng = seeded_test_rng(11);
        let mut draws = Vec::with_capacity(v.steps() * (dim + 1));
        for _ in 0..v.steps() {
            let g = step
                .batch_gradient(
                    &LogLoss { dim: model.dim() },
                    model.params().view(),
                    x.view(),
                    y.view(),
                    &mut rng,
                )
                .unwrap();
            draws.extend(g.iter().copied());
        }
        let n = draws.len();
        assert_eq!(n, 50_000);
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // (n-1) s^2 / sigma^2 ~ chi^2(n-1): s^2 / sigma^2 - 1 has sd sqrt(2 / (n-1)).
        let ratio = var / expected_std.powi(2);
        let bound = 4.5 * (2.0 / (n - 1) as f64).sqrt(); // ~0.028 on the variance, ~1.4% on the std
        assert!((ratio - 1.0).abs() < bound, "variance ratio {ratio}");
        assert!(
            (var.sqrt() / expected_std - 1.0).abs() < 0.03,
            "std {}",
            var.sqrt()
        );
        assert!(
            mean.abs() < 4.5 * expected_std / (n as f64).sqrt(),
            "mean {mean}"
        );
        // Kolmogorov–Smirnov against N(0, expected_std^2); critical value at alpha 1e-3.
        draws.sort_by(f64::total_cmp);
        let d = draws
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                let f = normal_cdf(z / expected_std);
                (f - i as f64 / n as f64)
                    .abs()
                    .max(((i + 1) as f64 / n as f64 - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / (n as f64).sqrt(), "ks statistic {d}");
        // The KS test has power: a 10% larger std is rejected.
        let d_wrong = draws
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                let f = normal_cdf(z / (1.1 * expected_std));
                (f - i as f64 / n as f64)
                    .abs()
                    .max(((i + 1) as f64 / n as f64 - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d_wrong > 1.95 / (n as f64).sqrt(), "ks statistic {d_wrong}");

        // No more noisy releases than the mechanism accounts for.
        assert_eq!(step.steps_taken(), 1000);
        assert_eq!(
            step.batch_gradient(
                &LogLoss { dim: model.dim() },
                model.params().view(),
                x.view(),
                y.view(),
                &mut rng
            ),
            Err(LearningError::DpStepsExhausted { steps: 1000 })
        );
    }

    #[test]
    fn per_example_clipping_bounds_each_contribution() {
        let v = params(1.5, 1.0, 1, 1, 0.1).check(10).unwrap();
        let step = v.gradient_step();
        assert_eq!(step.clip_norm(), 1.5);
        let model = LogisticRegression::zeros(2);
        let objective = LogLoss { dim: model.dim() };
        let clipped_sum = |x: ArrayView2<f64>, y: ArrayView1<f64>| {
            step.clipped_sum(&objective, model.params().view(), x, y)
                .unwrap()
        };
        // p = 0.5, y = 0: gradient 0.5 * [1, sqrt(399), 0], norm 0.5 * 20 = 10.
        let big = array![[399.0_f64.sqrt(), 0.0]];
        let raw = objective
            .per_example_gradients(model.params().view(), big.view(), array![0.0].view())
            .unwrap();
        assert!((raw.row(0).dot(&raw.row(0)).sqrt() - 10.0).abs() < 1e-12);
        let s = clipped_sum(big.view(), array![0.0].view());
        assert!((s.dot(&s).sqrt() - 1.5).abs() < 1e-12, "norm {}", s.dot(&s));
        assert_close(&s, &(&raw.row(0) * 0.15), 1e-12); // direction kept
        // A gradient within the bound is not changed: [0.5, 0, 0].
        let small = array![[0.0, 0.0]];
        let s = clipped_sum(small.view(), array![0.0].view());
        assert_close(&s, &array![0.5, 0.0, 0.0], 0.0);
        // Sum of two clipped rows, one big, one small.
        let both = array![[399.0_f64.sqrt(), 0.0], [0.0, 0.0]];
        let s = clipped_sum(both.view(), array![0.0, 0.0].view());
        assert_close(
            &s,
            &array![0.15 * 0.5 + 0.5, 0.15 * 0.5 * 399.0_f64.sqrt(), 0.0],
            1e-12,
        );
        // Empty batch: zero sum.
        let s = clipped_sum(Array2::zeros((0, 2)).view(), Array1::zeros(0).view());
        assert_eq!(s, Array1::<f64>::zeros(3));
    }

    /// The noisy gradient is centred on clipped sum / (q n): averaged over many
    /// draws of a one-example batch with a norm-10 gradient, it has norm C / (q n).
    #[test]
    fn noisy_gradient_is_centred_on_the_clipped_sum() {
        let v = params(1.5, 1.0, 2, 1000, 0.1).check(10).unwrap(); // q = 0.2, 5000 steps
        let mut step = v.gradient_step();
        let model = LogisticRegression::zeros(2);
        let x = array![[399.0_f64.sqrt(), 0.0]];
        let mut rng = seeded_test_rng(3);
        let mut mean = Array1::<f64>::zeros(3);
        for _ in 0..v.steps() {
            mean += &step
                .batch_gradient(
                    &LogLoss { dim: model.dim() },
                    model.params().view(),
                    x.view(),
                    array![0.0].view(),
                    &mut rng,
                )
                .unwrap();
        }
        mean /= v.steps() as f64;
        // noise of the mean: (1.5 / 2) / sqrt(5000) ~ 0.0106 per coordinate
        let target = &LogLoss { dim: model.dim() }
            .per_example_gradients(model.params().view(), x.view(), array![0.0].view())
            .unwrap()
            .row(0)
            * (0.15 / 2.0);
        assert_close(&mean, &target, 0.05);
        assert!((target.dot(&target).sqrt() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn clip_update_scales_down_only_above_the_bound() {
        let mut d = array![6.0, 8.0];
        assert_eq!(clip_update(&mut d, 5.0).unwrap(), 10.0);
        assert_close(&d, &array![3.0, 4.0], 1e-15);
        let mut d = array![0.3, 0.4];
        assert!((clip_update(&mut d, 1.0).unwrap() - 0.5).abs() < 1e-15);
        assert_eq!(d, array![0.3, 0.4]);
        let mut d = array![0.0, 0.0];
        assert_eq!(clip_update(&mut d, 1.0).unwrap(), 0.0);
        assert_eq!(d, array![0.0, 0.0]);
        // no overflow in the norm
        let mut d = array![1e300, -1e300];
        let norm = clip_update(&mut d, 2.0).unwrap();
        assert!((norm / (1e300 * 2.0_f64.sqrt()) - 1.0).abs() < 1e-12);
        assert!((d.dot(&d).sqrt() - 2.0).abs() < 1e-12);
        // bad inputs
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = clip_update(&mut array![1.0], c).unwrap_err();
            assert!(matches!(
                err,
                LearningError::InvalidParam {
                    field: "clip_norm",
                    ..
                }
            ));
        }
        let mut d = array![1.0, f64::NAN];
        let err = clip_update(&mut d, 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid training parameter `delta` = NaN at index 1 (must be finite)"
        );
        assert_eq!(d[0], 1.0);
    }

    #[test]
    fn same_seed_same_run_secure_rng_differs() {
        let (x, y) = synthetic(300, 5);
        let v = params(1.0, 1.0, 30, 2, 0.5).check(300).unwrap();
        let start = LogisticRegression::zeros(3);
        let run =
            |rng: &mut ChaCha20Rng| train_dp_sgd(&start, x.view(), y.view(), &v, rng).unwrap();
        let a = run(&mut seeded_test_rng(42));
        let b = run(&mut seeded_test_rng(42));
        assert_eq!(a.delta, b.delta);
        assert_eq!(a, b);
        assert_eq!(a.steps, v.steps());
        assert_eq!(a.steps, 20);
        assert_ne!(a.delta, run(&mut seeded_test_rng(43)).delta);
        let s1 = run(&mut secure_rng());
        let s2 = run(&mut secure_rng());
        assert_ne!(s1.delta, s2.delta);
        assert_ne!(s1.delta, a.delta);
    }

    #[test]
    fn poisson_sampler_includes_each_example_with_rate_q() {
        let v = params(1.0, 1.0, 50, 1, 0.1).check(1000).unwrap(); // q = 0.05
        let mut sampler = v.sampler();
        assert_eq!(
            (sampler.sampling_rate(), sampler.steps_per_epoch()),
            (0.05, 20)
        );
        let mut rng = seeded_test_rng(9);
        let mut sizes = vec![];
        let mut per_example = vec![0_usize; 1000];
        for _ in 0..10 {
            let batches = sampler.epoch_batches(1000, &mut rng);
            assert_eq!(batches.len(), 20);
            for batch in batches {
                assert!(batch.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
                assert!(batch.iter().all(|&i| i < 1000));
                for &i in &batch {
                    per_example[i] += 1;
                }
                sizes.push(batch.len() as f64);
            }
        }
        // 200 steps x 1000 examples = 200,000 Bernoulli(0.05) draws
        let trials = 200_000.0;
        let rate = sizes.iter().sum::<f64>() / trials;
        let sd = (0.05 * 0.95 / trials).sqrt();
        assert!((rate - 0.05).abs() < 4.5 * sd, "rate {rate}");
        // batch sizes vary like Binomial(1000, 0.05): variance 47.5
        let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (sizes.len() - 1) as f64;
        assert!((var / 47.5 - 1.0).abs() < 0.45, "batch size variance {var}");
        // every example is sampled ~10 times (200 steps x 0.05), none is privileged
        let max = per_example.iter().max().copied().unwrap_or(0);
        assert!(max < 30, "an example was sampled {max} times");

        // q = 1 takes everything; q = 0 nothing.
        let all = PoissonSampler::new(1.0, 2).unwrap();
        assert_eq!(all.sample(5, &mut rng), vec![0, 1, 2, 3, 4]);
        assert!(
            PoissonSampler::new(0.0, 1)
                .unwrap()
                .sample(5, &mut rng)
                .is_empty()
        );
        assert!(PoissonSampler::new(1.5, 1).is_err());
        assert!(PoissonSampler::new(0.5, 0).is_err());
    }

    /// With q n small, many batches are empty; each still takes a noisy step.
    #[test]
    fn empty_batches_still_take_a_step() {
        let (x, y) = synthetic(10, 6);
        let v = params(1.0, 1.0, 1, 50, 0.1).check(10).unwrap(); // q = 0.1, 10 steps/epoch
        let mut sampler = v.sampler();
        let mut rng = seeded_test_rng(1);
        let empty = (0..50)
            .flat_map(|_| sampler.epoch_batches(10, &mut rng))
            .filter(Vec::is_empty)
            .count();
        // P(empty) = 0.9^10 = 0.349: ~174 of 500
        assert!((120..230).contains(&empty), "{empty} empty batches");
        let out = train_dp_sgd(
            &LogisticRegression::zeros(3),
            x.view(),
            y.view(),
            &v,
            &mut seeded_test_rng(2),
        )
        .unwrap();
        assert_eq!(out.steps, 500);
    }

    #[test]
    fn train_dp_sgd_checks_its_inputs() {
        let v = params(1.0, 1.0, 4, 1, 0.1).check(8).unwrap();
        let (x, y) = synthetic(9, 1);
        let m = LogisticRegression::zeros(3);
        let r = &mut seeded_test_rng(0);
        assert_eq!(
            train_dp_sgd(&m, x.view(), y.view(), &v, r),
            Err(LearningError::DpExamplesMismatch { checked: 8, got: 9 })
        );
        assert_eq!(
            train_dp_sgd(&m, x.view(), y.view(), &v, r)
                .unwrap_err()
                .to_string(),
            "dp-sgd parameters were checked for 8 examples but the data has 9 rows"
        );
        assert!(matches!(
            train_dp_sgd(&LogisticRegression::zeros(2), x.view(), y.view(), &v, r),
            Err(LearningError::FeatureCount { .. })
        ));
    }

    /// DP-SGD with sigma 1, C 1 still learns the synthetic problem.
    #[test]
    fn dp_sgd_still_learns() {
        let (x, y) = synthetic(2000, 2);
        let start = LogisticRegression::zeros(3);
        let initial_loss = start.log_loss(x.view(), y.view()).unwrap();
        let v = params(1.0, 1.0, 64, 3, 1.0).check(2000).unwrap();
        let out = train_dp_sgd(&start, x.view(), y.view(), &v, &mut seeded_test_rng(7)).unwrap();
        assert_eq!(out.steps, 3 * 32);
        assert!(
            out.mean_loss < initial_loss - 0.2,
            "loss {initial_loss} -> {}",
            out.mean_loss
        );
        let w = out.model.weights();
        assert!(w[0] > 0.7 && w[1] < -0.5 && w[2] > 0.0, "weights {w}");
        let accuracy = accuracy(&out.model, x.view(), y.view());
        assert!(accuracy > 0.8, "accuracy {accuracy}");
    }

    /// The FedProx term rides on the DP-SGD loop without touching its noise:
    /// same seed, same batches and noise, only the pull towards the start differs.
    #[test]
    fn dp_sgd_accepts_a_proximal_term() {
        let (x, y) = synthetic(500, 3);
        let start = LogisticRegression::zeros(3);
        let v = params(1.0, 1.0, 50, 2, 0.5).check(500).unwrap();
        assert_eq!(v.prox_mu(), 0.0);
        let err = v.clone().with_prox_mu(-1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid training parameter `prox_mu` = -1 (must be non-negative and finite)"
        );
        let plain = train_dp_sgd(&start, x.view(), y.view(), &v, &mut seeded_test_rng(3)).unwrap();
        let zero = v.clone().with_prox_mu(0.0).unwrap();
        assert_eq!(
            train_dp_sgd(&start, x.view(), y.view(), &zero, &mut seeded_test_rng(3)).unwrap(),
            plain
        );
        let prox = v.clone().with_prox_mu(1.0).unwrap();
        assert_eq!(prox.prox_mu(), 1.0);
        assert_eq!(prox.mechanism(), v.mechanism());
        assert_eq!(prox.steps(), v.steps());
        let pulled =
            train_dp_sgd(&start, x.view(), y.view(), &prox, &mut seeded_test_rng(3)).unwrap();
        assert_eq!(pulled.steps, plain.steps);
        let norm = |d: &Array1<f64>| d.dot(d).sqrt();
        assert!(
            norm(&pulled.delta) < norm(&plain.delta),
            "{} vs {}",
            pulled.delta,
            plain.delta
        );
    }

    /// Data of another size than the schedule was derived for is refused.
    #[test]
    fn dp_sgd_refuses_data_of_another_size() {
        let (x, y) = synthetic(300, 4);
        let v = params(1.0, 1.0, 30, 2, 0.5).check(300).unwrap();
        let err = super::train_dp_sgd(
            &LogLoss { dim: 3 },
            array![0.1, 0.0, -0.2, 0.3].view(),
            x.slice_axis(Axis(0), Slice::from(..10)),
            y.slice_axis(Axis(0), Slice::from(..10)),
            &v,
            &mut seeded_test_rng(5),
        )
        .unwrap_err();
        assert_eq!(
            err,
            LearningError::DpExamplesMismatch {
                checked: 300,
                got: 10
            }
        );
    }

    /// Every release is counted on the objective path too.
    #[test]
    fn objective_dp_step_refuses_unaccounted_releases() {
        let v = params(1.0, 1.0, 2, 1, 0.1).check(2).unwrap();
        let mut step = v.gradient_step();
        let o = LogLoss { dim: 1 };
        let (x, y) = (array![[1.0], [2.0]], array![1.0, 0.0]);
        let r = &mut seeded_test_rng(1);
        assert_eq!(v.steps(), 1);
        step.batch_gradient(&o, array![0.0, 0.0].view(), x.view(), y.view(), r)
            .unwrap();
        assert_eq!(step.steps_taken(), 1);
        assert_eq!(
            step.batch_gradient(&o, array![0.0, 0.0].view(), x.view(), y.view(), r),
            Err(LearningError::DpStepsExhausted { steps: 1 })
        );
    }
}
