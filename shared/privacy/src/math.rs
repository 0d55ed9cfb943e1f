//! Small numerical helpers shared by the accountants (crate-private).

/// `ln(e^a + e^b)`, exact at `-inf`.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `ln(sum_i e^{x_i})` over an iterator, stable.
pub(crate) fn log_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        return max;
    }
    let s: f64 = xs.iter().map(|x| (x - max).exp()).sum();
    max + s.ln()
}

/// Standard normal CDF.
pub(crate) fn ndtr(z: f64) -> f64 {
    0.5 * libm::erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// `ln` of the standard normal CDF, accurate in both tails.
pub(crate) fn log_ndtr(z: f64) -> f64 {
    if z > 0.0 {
        // 1 - Phi(-z), with Phi(-z) small.
        (-ndtr(-z)).ln_1p()
    } else if z > -37.0 {
        ndtr(z).ln()
    } else {
        // Asymptotic expansion of ln(erfc) far in the lower tail.
        let x2 = z * z;
        let series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2);
        -0.5 * x2 - (-z).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() + series.ln()
    }
}

/// `ln Gamma(x)` for `x > 0`.
pub(crate) fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// Rounds a non-negative privacy quantity upwards by a relative safety margin
/// (`1e-10`, far above the floating-point error of the computations it guards)
/// plus one unit in the last place, so that reported losses never fall below
/// the exact value because of rounding.
pub(crate) fn round_up(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let y = x + x.abs() * 1e-10;
    next_up(y)
}

/// The next representable `f64` above `x` (for finite `x`).
pub(crate) fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let bits = x.to_bits();
    if x > 0.0 {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}

/// The FFT length used for `n` bins: the smallest `2^k` or `3·2^k` at least
/// `n`. At most half of padding, and only two sizes per octave, so the
/// plans that a thread's FFT planner caches are reused as a composition grows
/// round after round (planning costs as much as the transform itself).
pub(crate) fn plan_len(n: usize) -> usize {
    let p = n.max(1).next_power_of_two();
    let three = (p / 4) * 3;
    if three >= n && three > 0 { three } else { p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ndtr_matches_reference_values() {
        // scipy.special.log_ndtr
        assert!((log_ndtr(0.0) - (0.5f64).ln()).abs() < 1e-15);
        assert!((log_ndtr(-10.0) - (-53.231_285_150_512_48)).abs() < 1e-9);
        assert!((log_ndtr(-40.0) - (-804.608_442_013_753_9)).abs() < 1e-7);
        assert!((log_ndtr(5.0) - (-2.866_516_129_637_629_4e-7)).abs() < 1e-20);
    }

    #[test]
    fn plan_len_is_a_power_of_two_or_three_times_one() {
        assert_eq!(plan_len(0), 1);
        assert_eq!(plan_len(1), 1);
        assert_eq!(plan_len(3), 3);
        assert_eq!(plan_len(5), 6);
        assert_eq!(plan_len(7), 8);
        assert_eq!(plan_len(11), 12);
        assert_eq!(plan_len(13), 16);
        assert_eq!(plan_len(1025), 1536);
        for n in 1..5000 {
            let m = plan_len(n);
            assert!(m >= n && 2 * m <= 3 * n + 3, "{n} -> {m}");
        }
    }

    #[test]
    fn round_up_never_decreases() {
        for x in [0.0, 1e-300, 1.0, 4.377_18, 1e300] {
            assert!(round_up(x) > x);
        }
    }
}
