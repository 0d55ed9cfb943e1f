//! Typed errors of the privacy crate.

use thiserror::Error;

/// Errors of mechanisms, accountants, calibration and the budget filter.
///
/// Messages are lowercase and quote the offending value.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// The sampling rate is outside `[0, 1]` or not a number.
    #[error("sampling rate must be in [0, 1] (got {0})")]
    InvalidSamplingRate(f64),
    /// The noise multiplier is negative, zero where it must be positive, or not a number.
    #[error("noise multiplier must be positive and finite (got {0})")]
    InvalidNoiseMultiplier(f64),
    /// The clip norm is not positive and finite.
    #[error("clip norm must be positive and finite (got {0})")]
    InvalidClipNorm(f64),
    /// An RDP order is not a finite number above 1.
    #[error("rdp order must be finite and greater than 1 (got {0})")]
    InvalidOrder(f64),
    /// Orders and RDP values have different lengths, or are empty.
    #[error("rdp curve has {orders} orders but {values} values")]
    CurveLength {
        /// Number of orders.
        orders: usize,
        /// Number of RDP values.
        values: usize,
    },
    /// An RDP value is negative or not a number.
    #[error("rdp value must be non-negative (got {value} at order {order})")]
    InvalidRdp {
        /// The order.
        order: f64,
        /// The offending value.
        value: f64,
    },
    /// Delta is outside `(0, 1)`.
    #[error("delta must be in (0, 1) (got {0})")]
    InvalidDelta(f64),
    /// Epsilon is negative or not a number.
    #[error("epsilon must be non-negative and finite (got {0})")]
    InvalidEpsilon(f64),
    /// The number of steps is zero where at least one is needed.
    #[error("steps must be at least 1 (got {0})")]
    InvalidSteps(u64),
    /// The total number of steps of a group of charges does not fit in a `u64`.
    #[error("the composition would have more than 2^64 - 1 steps ({steps} plus {more})")]
    TooManySteps {
        /// Steps already in the group.
        steps: u64,
        /// Steps of the charge being added.
        more: u64,
    },
    /// The sensitivity (input distance) is not supported by the mechanism.
    #[error("input distance {d_in} is not supported: {reason}")]
    UnsupportedDistance {
        /// The input distance.
        d_in: u32,
        /// Why it is not supported.
        reason: &'static str,
    },
    /// The privacy-loss distribution would need more memory than allowed.
    #[error("privacy loss distribution needs {bins} bins, above the limit of {limit}")]
    PldTooLarge {
        /// Bins needed.
        bins: usize,
        /// The limit.
        limit: usize,
    },
    /// No noise multiplier up to the search limit meets the target.
    #[error(
        "no noise multiplier up to {max_sigma} reaches epsilon {target_epsilon} at delta {delta} (q {q}, {steps} steps)"
    )]
    CalibrationFailed {
        /// Target epsilon.
        target_epsilon: f64,
        /// Target delta.
        delta: f64,
        /// Sampling rate.
        q: f64,
        /// Steps.
        steps: u64,
        /// Largest noise multiplier tried.
        max_sigma: f64,
    },
    /// Adaptive clipping's count noise is too small to pay for the count.
    #[error(
        "count noise multiplier must exceed half the noise multiplier ({half}) for adaptive clipping to be private (got {count})"
    )]
    InvalidCountNoise {
        /// Half the joint noise multiplier.
        half: f64,
        /// The count noise multiplier given.
        count: f64,
    },
    /// Noise could not be drawn: nothing is released.
    #[error("cannot draw the noise of {0}: nothing is released")]
    NoiseDraw(&'static str),
    /// A numerical routine failed to produce a finite, valid value.
    #[error("numerical failure in {0}")]
    Numerical(&'static str),
}
