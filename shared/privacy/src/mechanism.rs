//! Mechanisms that carry their own privacy map, in the OpenDP manner.
//!
//! Sensitivity is derived, never declared twice: [`L2Clip`] is a
//! transformation whose stability map turns an input distance `d_in` (the
//! number of records added or removed) into an L2 sensitivity
//! `clip_norm * d_in`; [`GaussianMechanism`] chains it with Gaussian noise of
//! standard deviation `noise_multiplier * clip_norm`, so its privacy map
//! `map(d_in)` yields the [`Charge`] with noise multiplier
//! `noise std / sensitivity`. Only the [`crate::accountant`] turns charges
//! into epsilons; `check(d_in, budget)` asks it.

use rand::Rng;

use crate::accountant::{Accountant, Charge};
use crate::budget::PrivacyBudget;
use crate::discrete::Grid;
use crate::error::PrivacyError;

/// Clipping of a vector to an L2 norm bound: the transformation in front of the noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct L2Clip {
    clip_norm: f64,
}

impl L2Clip {
    /// A clip to `clip_norm` (positive, finite).
    pub fn new(clip_norm: f64) -> Result<L2Clip, PrivacyError> {
        if !(clip_norm > 0.0 && clip_norm.is_finite()) {
            return Err(PrivacyError::InvalidClipNorm(clip_norm));
        }
        Ok(L2Clip { clip_norm })
    }

    /// The norm bound.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// Stability map: `d_in` records added or removed change the clipped sum
    /// by at most `clip_norm * d_in` in L2 norm.
    pub fn map(&self, d_in: u32) -> f64 {
        self.clip_norm * f64::from(d_in)
    }

    /// Scales `values` in place so that its L2 norm is at most the bound;
    /// returns the scale factor applied (1 if already within).
    pub fn apply(&self, values: &mut [f64]) -> f64 {
        let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm <= self.clip_norm || norm == 0.0 {
            return 1.0;
        }
        let scale = self.clip_norm / norm;
        for v in values.iter_mut() {
            *v *= scale;
        }
        scale
    }
}

/// The Gaussian mechanism on clipped vectors: adds `N(0, (noise_multiplier * clip_norm)^2)`
/// to every coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianMechanism {
    noise_multiplier: f64,
    clip: L2Clip,
}

impl GaussianMechanism {
    /// A Gaussian mechanism; both parameters positive and finite.
    pub fn new(noise_multiplier: f64, clip_norm: f64) -> Result<GaussianMechanism, PrivacyError> {
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(PrivacyError::InvalidNoiseMultiplier(noise_multiplier));
        }
        Ok(GaussianMechanism {
            noise_multiplier,
            clip: L2Clip::new(clip_norm)?,
        })
    }

    /// Noise standard deviation over clip norm.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// The clip norm.
    pub fn clip_norm(&self) -> f64 {
        self.clip.clip_norm()
    }

    /// The clipping transformation.
    pub fn clip(&self) -> L2Clip {
        self.clip
    }

    /// Standard deviation of the noise on each coordinate.
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * self.clip.clip_norm()
    }

    /// Privacy map of one release: sensitivity from the clip's stability
    /// map, then the Gaussian charge with `sigma = noise std / sensitivity`.
    /// `d_in = 0` costs nothing.
    pub fn map(&self, d_in: u32) -> Result<Charge, PrivacyError> {
        charge_for(self, 1.0, 1, d_in)
    }

    /// Whether one release at input distance `d_in` stays within `budget`.
    pub fn check(&self, d_in: u32, budget: &PrivacyBudget) -> Result<bool, PrivacyError> {
        check_charge(&self.map(d_in)?, budget)
    }

    /// Like [`GaussianMechanism::add_noise`], but a failure to draw noise is an
    /// error (fails closed): on `Err` nothing may be released.
    pub fn add_noise_checked<R: Rng + ?Sized>(
        &self,
        values: &mut [f64],
        rng: &mut R,
    ) -> Result<(), PrivacyError> {
        add_gaussian(
            values,
            self.noise_std(),
            self.noise_multiplier,
            rng,
            "the Gaussian mechanism",
        )
    }

    /// Adds independent discrete Gaussian noise on a grid (see
    /// [`crate::discrete::Grid`]) of std at least [`GaussianMechanism::noise_std`]
    /// to each value, drawing from the injected `rng`. If no noise can be drawn
    /// (a value beyond the grid's range, more than
    /// [`crate::discrete::MAX_RELEASE_DIM`] coordinates), every value becomes
    /// NaN so nothing about the input is released; prefer
    /// [`GaussianMechanism::add_noise_checked`].
    pub fn add_noise<R: Rng + ?Sized>(&self, values: &mut [f64], rng: &mut R) {
        if self.add_noise_checked(values, rng).is_err() {
            values.fill(f64::NAN);
        }
    }
}

fn charge_for(
    g: &GaussianMechanism,
    q: f64,
    steps: u64,
    d_in: u32,
) -> Result<Charge, PrivacyError> {
    let sensitivity = g.clip.map(d_in);
    if sensitivity == 0.0 {
        return Charge::subsampled_gaussian(0.0, g.noise_multiplier, steps);
    }
    if d_in > 1 && q < 1.0 {
        return Err(PrivacyError::UnsupportedDistance {
            d_in,
            reason: "amplification by subsampling is only accounted for one record",
        });
    }
    Charge::subsampled_gaussian(q, g.noise_std() / sensitivity, steps)
}

fn check_charge(charge: &Charge, budget: &PrivacyBudget) -> Result<bool, PrivacyError> {
    let report = Accountant::default().epsilon(&[*charge], budget.delta())?;
    Ok(report.epsilon <= budget.epsilon())
}

/// `steps` releases of a [`GaussianMechanism`] on Poisson samples drawn
/// with rate `sampling_rate` (DP-SGD / DP-FedAvg).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubsampledGaussianMechanism {
    gaussian: GaussianMechanism,
    sampling_rate: f64,
    steps: u64,
}

impl SubsampledGaussianMechanism {
    /// A subsampled Gaussian mechanism; `sampling_rate` in `[0, 1]`.
    pub fn new(
        gaussian: GaussianMechanism,
        sampling_rate: f64,
        steps: u64,
    ) -> Result<Self, PrivacyError> {
        if !(0.0..=1.0).contains(&sampling_rate) {
            return Err(PrivacyError::InvalidSamplingRate(sampling_rate));
        }
        Ok(SubsampledGaussianMechanism {
            gaussian,
            sampling_rate,
            steps,
        })
    }

    /// The underlying Gaussian mechanism (adds the noise of each step).
    pub fn gaussian(&self) -> &GaussianMechanism {
        &self.gaussian
    }

    /// Sampling rate.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// Number of steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Privacy map under add/remove of `d_in` records: `d_in = 0` costs
    /// nothing, `d_in = 1` is the subsampled Gaussian charge; larger
    /// distances are refused when subsampling (group privacy of the
    /// amplified mechanism is not accounted here).
    pub fn map(&self, d_in: u32) -> Result<Charge, PrivacyError> {
        charge_for(&self.gaussian, self.sampling_rate, self.steps, d_in)
    }

    /// Whether the whole run at input distance `d_in` stays within `budget`.
    pub fn check(&self, d_in: u32, budget: &PrivacyBudget) -> Result<bool, PrivacyError> {
        check_charge(&self.map(d_in)?, budget)
    }

    /// Adds the noise of one step (see [`GaussianMechanism::add_noise`]).
    pub fn add_noise<R: Rng + ?Sized>(&self, values: &mut [f64], rng: &mut R) {
        self.gaussian.add_noise(values, rng);
    }
}

/// DP-FedAvg with adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy
/// 2021) as one mechanism: it noises the sum of clipped client updates *and*
/// the count of clients whose update was within the clip norm, and its privacy
/// map charges the pair as one Gaussian mechanism.
///
/// # Proof sketch
///
/// Under add/remove of one client, the sum of updates clipped to `S` moves by
/// at most `S` (L2), and the centred count `Σ (b_i − ½)` with
/// `b_i = 1[‖Δ_i‖ ≤ S]` moves by exactly `½`. The sum gets `N(0, (z_Δ S)²)` per
/// coordinate and the count `N(0, σ_b²)`: two Gaussian mechanisms with
/// multipliers `z_Δ` and `2σ_b`. Their composition is one Gaussian mechanism
/// on the concatenated, rescaled vector, with multiplier
/// `(z_Δ⁻² + (2σ_b)⁻²)^(−½)`; choosing `z_Δ = (z⁻² − (2σ_b)⁻²)^(−½)` makes that
/// `z` (Andrew et al., Theorem 1; `tensorflow_federated`'s
/// `adaptive_clip_noise_params`). So [`AdaptiveClippingMechanism::map`]
/// charges a Gaussian of multiplier `z`, subsampled at the client sampling
/// rate. The clip-norm update `S ← S·exp(−η(b̃ − γ))` reads only the noised
/// count (and the public expected number of clients): post-processing.
///
/// Fails closed: any failure to draw noise is an error and the caller must not
/// release anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveClippingMechanism {
    noise_multiplier: f64,
    count_noise_multiplier: f64,
    sum_noise_multiplier: f64,
    clip: L2Clip,
}

/// What one release of [`AdaptiveClippingMechanism`] produced besides the noised sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisedCount {
    /// `Σ (b_i − ½) + N(0, σ_b²)`.
    pub centred: f64,
}

impl NoisedCount {
    /// Estimated fraction of clients whose update was within the clip norm,
    /// given the (public) expected number of clients per round, in `[0, 1]`.
    pub fn unclipped_fraction(&self, expected_clients: f64) -> f64 {
        (self.centred / expected_clients.max(f64::MIN_POSITIVE) + 0.5).clamp(0.0, 1.0)
    }
}

impl AdaptiveClippingMechanism {
    /// `noise_multiplier` z (the joint one, what is charged), the count's noise
    /// standard deviation σ_b (must exceed z / 2), and the current clip norm S.
    pub fn new(
        noise_multiplier: f64,
        count_noise_multiplier: f64,
        clip_norm: f64,
    ) -> Result<AdaptiveClippingMechanism, PrivacyError> {
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(PrivacyError::InvalidNoiseMultiplier(noise_multiplier));
        }
        if !(count_noise_multiplier.is_finite() && 2.0 * count_noise_multiplier > noise_multiplier)
        {
            return Err(PrivacyError::InvalidCountNoise {
                half: noise_multiplier / 2.0,
                count: count_noise_multiplier,
            });
        }
        let inv = noise_multiplier.powi(-2) - (2.0 * count_noise_multiplier).powi(-2);
        let sum_noise_multiplier = inv.powf(-0.5);
        if !(sum_noise_multiplier.is_finite() && sum_noise_multiplier >= noise_multiplier) {
            return Err(PrivacyError::Numerical(
                "adaptive clipping's sum noise multiplier",
            ));
        }
        Ok(AdaptiveClippingMechanism {
            noise_multiplier,
            count_noise_multiplier,
            sum_noise_multiplier,
            clip: L2Clip::new(clip_norm)?,
        })
    }

    /// z: the multiplier of the pair, as charged.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// z_Δ: the multiplier of the noise on the sum (larger than z).
    pub fn sum_noise_multiplier(&self) -> f64 {
        self.sum_noise_multiplier
    }

    /// σ_b: the standard deviation of the noise on the centred count.
    pub fn count_noise_multiplier(&self) -> f64 {
        self.count_noise_multiplier
    }

    /// The clip norm S.
    pub fn clip_norm(&self) -> f64 {
        self.clip.clip_norm()
    }

    /// Privacy map of one release on clients Poisson-sampled at
    /// `sampling_rate`: `d_in` clients added or removed. The pair (sum, count)
    /// is one Gaussian mechanism of multiplier z (see the type's proof sketch).
    pub fn map(&self, sampling_rate: f64, d_in: u32) -> Result<Charge, PrivacyError> {
        let joint = GaussianMechanism::new(self.noise_multiplier, self.clip.clip_norm())?;
        SubsampledGaussianMechanism::new(joint, sampling_rate, 1)?.map(d_in)
    }

    /// Adds the sum's noise to `sum` (the sum of updates already clipped to S)
    /// and returns the noised centred count of `norms` (the clients' pre-clip
    /// update norms) at or below S. On error nothing may be released: `sum`
    /// may hold partial noise.
    pub fn release<R: Rng + ?Sized>(
        &self,
        sum: &mut [f64],
        norms: &[f64],
        rng: &mut R,
    ) -> Result<NoisedCount, PrivacyError> {
        add_gaussian(
            sum,
            self.sum_noise_multiplier * self.clip.clip_norm(),
            self.sum_noise_multiplier,
            rng,
            "the adaptive-clipping sum",
        )?;
        let centred: f64 = norms
            .iter()
            .map(|n| {
                if *n <= self.clip.clip_norm() {
                    0.5
                } else {
                    -0.5
                }
            })
            .sum();
        let mut count = [centred];
        add_gaussian(
            &mut count,
            self.count_noise_multiplier,
            2.0 * self.count_noise_multiplier,
            rng,
            "the adaptive-clipping count",
        )?;
        Ok(NoisedCount { centred: count[0] })
    }
}

/// Adds discrete Gaussian noise of std (at least) `std` on the grid that pays
/// for its rounding at multiplier `multiplier = std / sensitivity` (see
/// [`crate::discrete::Grid`]); an invalid scale or a failed draw is an error
/// (fails closed).
pub(crate) fn add_gaussian<R: Rng + ?Sized>(
    values: &mut [f64],
    std: f64,
    multiplier: f64,
    rng: &mut R,
    what: &'static str,
) -> Result<(), PrivacyError> {
    let grid = Grid::new(std, multiplier).map_err(|_| PrivacyError::NoiseDraw(what))?;
    grid.add_noise(values, rng, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn map_derives_sensitivity_from_clip() {
        let g = GaussianMechanism::new(1.1, 2.5).unwrap();
        assert_eq!(g.clip().map(1), 2.5);
        let c = g.map(1).unwrap();
        assert_eq!((c.q, c.sigma, c.steps), (1.0, 1.1, 1));
        let c2 = g.map(2).unwrap();
        assert!((c2.sigma - 0.55).abs() < 1e-15);
        assert_eq!(g.map(0).unwrap().q, 0.0);
        let s = SubsampledGaussianMechanism::new(g, 0.01, 1000).unwrap();
        let c = s.map(1).unwrap();
        assert_eq!((c.q, c.sigma, c.steps), (0.01, 1.1, 1000));
        assert!(matches!(
            s.map(2),
            Err(PrivacyError::UnsupportedDistance { d_in: 2, .. })
        ));
    }

    #[test]
    fn check_uses_the_accountant() {
        let g = GaussianMechanism::new(1.0, 1.0).unwrap();
        assert!(
            g.check(1, &PrivacyBudget::new(4.378, 1e-5).unwrap())
                .unwrap()
        );
        assert!(
            !g.check(1, &PrivacyBudget::new(4.377, 1e-5).unwrap())
                .unwrap()
        );
    }

    #[test]
    fn invalid_parameters_are_errors() {
        assert_eq!(
            GaussianMechanism::new(1.0, 0.0).unwrap_err().to_string(),
            "clip norm must be positive and finite (got 0)"
        );
        assert!(GaussianMechanism::new(f64::NAN, 1.0).is_err());
        let g = GaussianMechanism::new(1.0, 1.0).unwrap();
        assert!(SubsampledGaussianMechanism::new(g, 1.5, 1).is_err());
    }

    #[test]
    fn clip_bounds_the_norm() {
        let clip = L2Clip::new(1.0).unwrap();
        let mut v = [3.0, 4.0];
        assert!((clip.apply(&mut v) - 0.2).abs() < 1e-15);
        assert!((v[0] - 0.6).abs() < 1e-15 && (v[1] - 0.8).abs() < 1e-15);
        let mut w = [0.1, 0.1];
        assert_eq!(clip.apply(&mut w), 1.0);
    }

    #[test]
    fn adaptive_clipping_is_one_mechanism_that_fails_closed() {
        // z = 1, σ_b = 1: z_Δ = (1 − 1/4)^(−1/2).
        let m = AdaptiveClippingMechanism::new(1.0, 1.0, 2.0).unwrap();
        assert!((m.sum_noise_multiplier() - (0.75f64).powf(-0.5)).abs() < 1e-12);
        // The charge is the joint multiplier z at the sampling rate.
        let c = m.map(0.25, 1).unwrap();
        assert_eq!((c.q, c.sigma, c.steps), (0.25, 1.0, 1));
        // A count noise at or below z / 2 cannot pay for the count.
        assert!(matches!(
            AdaptiveClippingMechanism::new(1.0, 0.5, 1.0),
            Err(PrivacyError::InvalidCountNoise { .. })
        ));
        assert!(AdaptiveClippingMechanism::new(1.0, f64::NAN, 1.0).is_err());
        // The noise on the sum has std z_Δ·S, the centred count's std σ_b.
        let m = AdaptiveClippingMechanism::new(1.0, 3.0, 2.0).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let n = 20_000;
        let mut sum = vec![0.0; n];
        let mut counts = Vec::new();
        for _ in 0..2_000 {
            // Three of four within S = 2: centred count 3·½ − ½ = 1.
            let c = m
                .release(&mut [0.0], &[1.0, 2.0, 0.5, 9.0], &mut rng)
                .unwrap();
            counts.push(c.centred);
        }
        m.release(&mut sum, &[], &mut rng).unwrap();
        let std = (sum.iter().map(|v| v * v).sum::<f64>() / n as f64).sqrt();
        assert!((std - 2.0 * m.sum_noise_multiplier()).abs() < 0.05, "{std}");
        let mean = counts.iter().sum::<f64>() / counts.len() as f64;
        assert!((mean - 1.0).abs() < 4.0 * 3.0 / (2_000f64).sqrt(), "{mean}");
        let estimate = NoisedCount { centred: 1.0 }.unclipped_fraction(4.0);
        assert!((estimate - 0.75).abs() < 1e-12);
        // An invalid noise scale is an error, never a release without noise.
        let mut v = [1.0];
        assert!(matches!(
            add_gaussian(&mut v, 0.0, 1.0, &mut rng, "test"),
            Err(PrivacyError::NoiseDraw("test"))
        ));
        assert!(add_gaussian(&mut v, f64::INFINITY, 1.0, &mut rng, "test").is_err());
    }

    /// Noise has mean 0 and the configured std, and is normal (KS test).
    #[test]
    fn noise_is_gaussian_with_the_right_scale() {
        let g = GaussianMechanism::new(1.5, 2.0).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let n = 20_000;
        let mut v = vec![0.0; n];
        g.add_noise(&mut v, &mut rng);
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!(mean.abs() < 4.0 * 3.0 / (n as f64).sqrt(), "mean {mean}");
        assert!((var.sqrt() - 3.0).abs() < 0.05, "std {}", var.sqrt());
        // Kolmogorov–Smirnov against N(0, 3^2); critical value at alpha 1e-3.
        v.sort_by(f64::total_cmp);
        let d = v
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = crate::math::ndtr(x / 3.0);
                (f - i as f64 / n as f64)
                    .abs()
                    .max(((i + 1) as f64 / n as f64 - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / (n as f64).sqrt(), "ks statistic {d}");
        // Same seed, same noise.
        let mut w = vec![0.0; n];
        g.add_noise(&mut w, &mut ChaCha20Rng::seed_from_u64(7));
        w.sort_by(f64::total_cmp);
        assert_eq!(v, w);
    }

    /// The charge of `map(1)` is the continuous formula at multiplier z, and
    /// the grid's inflated integer sensitivity `Δ/g + 2√D` over the integer
    /// noise's std `2^k` is at most `1/z`: the charge is sound for the
    /// discrete release.
    #[test]
    fn map_is_sound_with_the_inflated_sensitivity() {
        for (z, clip) in [(1.1, 2.5), (1.0, 1.0), (0.6, 0.1), (20.0, 3.0)] {
            let g = GaussianMechanism::new(z, clip).unwrap();
            let c = g.map(1).unwrap();
            assert_eq!(c.sigma, z);
            let grid = Grid::new(g.noise_std(), z).unwrap();
            let d = (crate::discrete::MAX_RELEASE_DIM as f64).sqrt();
            let inflated = clip / grid.step() + 2.0 * d;
            let sigma_z = f64::from(2u32).powi(grid.exponent() as i32);
            assert!(
                sigma_z / inflated >= c.sigma,
                "z {z}: {}",
                sigma_z / inflated
            );
            // The extra noise that pays for it is below 0.1 %.
            assert!(grid.noise_std() / g.noise_std() < 1.001);
        }
    }
}
