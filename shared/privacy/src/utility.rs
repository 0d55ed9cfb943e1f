//! Will a DP-SGD update carry any signal? A rough, reusable assessment for
//! the partner's `privacy cost` and its training log.
//!
//! Each step averages the clipped gradients of an expected batch of `B`
//! examples (Poisson rate `q`, `B = q * n`): the mean has norm at most `C`
//! (the clip norm), while the Gaussian noise added to it, of standard
//! deviation `sigma * C / B` per coordinate, has expected norm about
//! `sigma * C * sqrt(d) / B` over `d` parameters. Their ratio,
//! `SNR = B / (sigma * sqrt(d))`, is at best the signal-to-noise of one step
//! (the mean gradient is usually shorter than `C`). Below 1 the update is
//! mostly noise.

use std::fmt;

use serde::Serialize;

/// Upper estimate of one DP-SGD step's signal-to-noise ratio:
/// `expected_batch / (sigma * sqrt(dim))` (see the module docs).
/// `dim` is the model's parameter count (at least 1 is used);
/// `sigma = 0` gives infinity.
pub fn dp_sgd_signal_to_noise(expected_batch: f64, sigma: f64, dim: usize) -> f64 {
    let d = dim.max(1) as f64;
    if sigma <= 0.0 {
        return f64::INFINITY;
    }
    expected_batch / (sigma * d.sqrt())
}

/// Why a DP-SGD plan may not learn much.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum UtilityWarning {
    /// The partner has no more rows than the expected batch: every step
    /// samples every row (`q = 1`), so there is no amplification by subsampling.
    NoSubsampling {
        /// Training rows.
        examples: usize,
        /// The run's expected batch size.
        expected_batch_size: usize,
    },
    /// The noise dominates the averaged gradient.
    MostlyNoise {
        /// Estimated signal-to-noise ratio of one step.
        signal_to_noise: f64,
        /// Expected batch (`q * examples`).
        expected_batch: f64,
        /// Noise multiplier.
        sigma: f64,
        /// Parameter count.
        dim: usize,
        /// Whether the batch already holds every row (`q = 1`).
        all_rows: bool,
    },
}

impl UtilityWarning {
    /// A short machine-readable name (`no_subsampling`, `mostly_noise`).
    pub fn kind(&self) -> &'static str {
        match self {
            UtilityWarning::NoSubsampling { .. } => "no_subsampling",
            UtilityWarning::MostlyNoise { .. } => "mostly_noise",
        }
    }
}

impl fmt::Display for UtilityWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UtilityWarning::NoSubsampling {
                examples,
                expected_batch_size,
            } => write!(
                f,
                "this partner has {examples} training rows, no more than the expected batch of \
                 {expected_batch_size}: every step uses all rows (q = 1), so subsampling gives no \
                 privacy amplification and each round costs a full Gaussian mechanism; a larger \
                 expected batch cannot help with so few rows, but fewer rounds, a larger budget, \
                 or client-level DP (noise added to the average of the partners' updates) would"
            ),
            UtilityWarning::MostlyNoise {
                signal_to_noise,
                expected_batch,
                sigma,
                dim,
                all_rows,
            } => {
                write!(
                    f,
                    "the update will be mostly noise: an expected batch of {expected_batch:.1} rows, \
                     noise multiplier {sigma:.3} and {dim} parameters give a signal-to-noise ratio \
                     of about {signal_to_noise:.3} per step (batch / (sigma * sqrt(parameters)), \
                     below 1); "
                )?;
                if *all_rows {
                    write!(
                        f,
                        "a larger expected batch is impossible with that few rows, so fewer \
                         rounds, a larger budget or client-level DP would help"
                    )
                } else {
                    write!(
                        f,
                        "a larger expected batch, fewer rounds, a larger budget or client-level \
                         DP would help"
                    )
                }
            }
        }
    }
}

/// Warnings for a DP-SGD plan of `examples` training rows, an expected batch
/// of `expected_batch_size`, sampling rate `q`, noise multiplier `sigma` and
/// `dim` parameters: [`UtilityWarning::NoSubsampling`] when `q >= 1`, and
/// [`UtilityWarning::MostlyNoise`] when [`dp_sgd_signal_to_noise`] is below 1.
pub fn assess_dp_sgd(
    examples: usize,
    expected_batch_size: usize,
    q: f64,
    sigma: f64,
    dim: usize,
) -> Vec<UtilityWarning> {
    let mut warnings = Vec::new();
    let all_rows = q >= 1.0;
    if all_rows {
        warnings.push(UtilityWarning::NoSubsampling {
            examples,
            expected_batch_size,
        });
    }
    let expected_batch = q.clamp(0.0, 1.0) * examples as f64;
    let snr = dp_sgd_signal_to_noise(expected_batch, sigma, dim);
    if snr < 1.0 {
        warnings.push(UtilityWarning::MostlyNoise {
            signal_to_noise: snr,
            expected_batch,
            sigma,
            dim,
            all_rows,
        });
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_to_noise_is_batch_over_sigma_sqrt_d() {
        assert!((dp_sgd_signal_to_noise(128.0, 2.0, 16) - 16.0).abs() < 1e-12);
        assert_eq!(dp_sgd_signal_to_noise(1.0, 0.0, 4), f64::INFINITY);
    }

    #[test]
    fn a_fifty_row_partner_with_batch_128_is_warned() {
        // q = min(1, 128 / 50) = 1, a sigma that a tight budget needs, 46 parameters.
        let w = assess_dp_sgd(50, 128, 1.0, 10.0, 46);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].kind(), "no_subsampling");
        assert!(w[0].to_string().contains("50 training rows"), "{}", w[0]);
        assert_eq!(w[1].kind(), "mostly_noise");
        let text = w[1].to_string();
        assert!(
            text.contains("signal-to-noise ratio of about 0.737") && text.contains("impossible"),
            "{text}"
        );
        // Even with little noise, q = 1 alone is a warning.
        assert_eq!(assess_dp_sgd(50, 128, 1.0, 0.5, 46).len(), 1);
    }

    #[test]
    fn a_large_partner_is_not_warned() {
        assert!(assess_dp_sgd(1290, 128, 128.0 / 1290.0, 1.0, 46).is_empty());
    }
}
