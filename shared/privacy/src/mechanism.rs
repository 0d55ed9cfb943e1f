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
use rand_distr::{Distribution, Normal};

use crate::accountant::{Accountant, Charge};
use crate::budget::PrivacyBudget;
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

    /// Adds independent Gaussian noise of std [`GaussianMechanism::noise_std`]
    /// to each value, drawing from the injected `rng`.
    pub fn add_noise<R: Rng + ?Sized>(&self, values: &mut [f64], rng: &mut R) {
        // noise_std is positive and finite by construction.
        let normal = Normal::new(0.0, self.noise_std()).unwrap_or_else(|_| unreachable!());
        for v in values.iter_mut() {
            *v += normal.sample(rng);
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
}
