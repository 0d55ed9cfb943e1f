//! Calibration: the smallest noise multiplier that meets a target.

use crate::accountant::{Accountant, Charge};
use crate::error::PrivacyError;

/// Largest noise multiplier the search will try.
pub const MAX_SIGMA: f64 = 1e4;
/// Relative width of the final bisection bracket.
const REL_TOL: f64 = 1e-4;

/// The smallest noise multiplier (to a relative `1e-4`) for which `steps`
/// steps of the Poisson-subsampled Gaussian mechanism with rate `q` meet
/// `(target_epsilon, delta)` according to [`Accountant::epsilon`].
///
/// Bisection keeps a bracket `(lo, hi)` in which `hi` has been *evaluated*
/// to meet the target; `hi` is returned, so the result provably meets it
/// (under the accountant's own sound bound).
pub fn noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
) -> Result<f64, PrivacyError> {
    noise_multiplier_with(&Accountant::default(), target_epsilon, delta, q, steps)
}

/// [`noise_multiplier`] with a given accountant.
pub fn noise_multiplier_with(
    accountant: &Accountant,
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
) -> Result<f64, PrivacyError> {
    if !(target_epsilon.is_finite() && target_epsilon >= 0.0) {
        return Err(PrivacyError::InvalidEpsilon(target_epsilon));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::InvalidDelta(delta));
    }
    if !(0.0..=1.0).contains(&q) {
        return Err(PrivacyError::InvalidSamplingRate(q));
    }
    if steps == 0 {
        return Err(PrivacyError::InvalidSteps(steps));
    }
    let fail = PrivacyError::CalibrationFailed {
        target_epsilon,
        delta,
        q,
        steps,
        max_sigma: MAX_SIGMA,
    };
    let meets_full = |sigma: f64| -> Result<bool, PrivacyError> {
        let c = Charge::subsampled_gaussian(q, sigma, steps)?;
        Ok(accountant.epsilon(&[c], delta)?.epsilon <= target_epsilon)
    };
    let meets_rdp = |sigma: f64| -> Result<bool, PrivacyError> {
        let c = Charge::subsampled_gaussian(q, sigma, steps)?;
        Ok(accountant.rdp_epsilon(&[c], delta)?.0 <= target_epsilon)
    };
    // Upper end: RDP alone is cheap and never below the reported epsilon.
    let mut hi = 1.0;
    while !meets_rdp(hi)? {
        hi *= 2.0;
        if hi > MAX_SIGMA {
            // RDP may be loose: try the full accountant at the limit.
            if meets_full(MAX_SIGMA)? {
                hi = MAX_SIGMA;
                break;
            }
            return Err(fail);
        }
    }
    // Tighten the upper end with RDP bisection, then search below with the full accountant.
    let (hi, at_floor) = lower(hi, meets_rdp)?;
    if at_floor {
        return Ok(hi);
    }
    // Now hi meets the target by RDP; the PLD may allow less noise.
    Ok(lower(hi, meets_full)?.0)
}

/// From `hi`, which `meets` the target: halves while the half still meets
/// it, then bisects the last bracket to [`REL_TOL`]. Returns the smallest
/// value found to meet the target, and whether the halving went below `1e-6`
/// (then without the bisection).
fn lower(
    mut hi: f64,
    meets: impl Fn(f64) -> Result<bool, PrivacyError>,
) -> Result<(f64, bool), PrivacyError> {
    let mut lo = hi / 2.0;
    while meets(lo)? {
        hi = lo;
        lo /= 2.0;
        if lo < 1e-6 {
            return Ok((hi, true));
        }
    }
    while hi - lo > REL_TOL * hi {
        let mid = 0.5 * (lo + hi);
        if meets(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok((hi, false))
}
