//! Exact samplers for noise that floating point cannot betray.
//!
//! Floating-point Gaussian samplers leak through the low bits of their
//! output (Mironov 2012). Every draw here is an integer, produced with exact
//! integer and rational arithmetic (`u128`, every operation overflow-checked)
//! from uniform integers of the injected RNG (unbiased: `random_range` on
//! integers rejects, it never takes a float modulo). The algorithms are those
//! of Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
//! Privacy" (NeurIPS 2020), Algorithms 1 to 3:
//!
//! - [`bernoulli_exp_neg`]: `Bernoulli(exp(−γ))` for rational `γ = n/d ≥ 0`;
//! - [`discrete_laplace`]: `P(x) ∝ exp(−|x|/t)` on the integers;
//! - [`discrete_gaussian`]: `N_Z(0, σ²)`, `P(x) ∝ exp(−x²/(2σ²))`, for rational
//!   `σ² = n/d`, by rejection from the discrete Laplace.
//!
//! Every loop is bounded: the rejection loops stop after [`MAX_TRIALS`]
//! (each trial accepts with probability above 0.2, so reaching the cap has
//! probability below 1e−900) and report an error rather than a draw; the
//! series loops end when a counter would overflow (probability 1/K! at
//! step K). An error releases nothing.
//!
//! Production callers pass a CSPRNG (`rand::rngs::OsRng`, or `StdRng` seeded
//! from the OS); tests pass a seeded `ChaCha20Rng`.

use rand::Rng;

use crate::error::PrivacyError;

/// Bound on the trials of a rejection loop (see the module docs).
pub const MAX_TRIALS: u32 = 4096;

const OVERFLOW: PrivacyError = PrivacyError::NoiseDraw("the discrete sampler (integer overflow)");
const EXHAUSTED: PrivacyError = PrivacyError::NoiseDraw("the discrete sampler (rejection bound)");

/// `Bernoulli(num / den)`, exactly; `num ≤ den`, `den > 0`.
fn bernoulli_ratio<R: Rng + ?Sized>(num: u128, den: u128, rng: &mut R) -> bool {
    rng.random_range(0..den) < num
}

/// `Bernoulli(exp(−num/den))`, exactly (CKS20 Algorithm 1). `den` must be positive.
pub fn bernoulli_exp_neg<R: Rng + ?Sized>(
    num: u128,
    den: u128,
    rng: &mut R,
) -> Result<bool, PrivacyError> {
    if den == 0 {
        return Err(PrivacyError::NoiseDraw(
            "the discrete sampler (zero denominator)",
        ));
    }
    // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋)).
    for _ in 0..num / den {
        if !bernoulli_exp_neg_unit(1, 1, rng)? {
            return Ok(false);
        }
    }
    bernoulli_exp_neg_unit(num % den, den, rng)
}

/// `Bernoulli(exp(−γ))` for `γ = num/den ∈ [0, 1]`: the first `K` with
/// `Bernoulli(γ/K) = 0` is odd with probability `exp(−γ)`.
fn bernoulli_exp_neg_unit<R: Rng + ?Sized>(
    num: u128,
    den: u128,
    rng: &mut R,
) -> Result<bool, PrivacyError> {
    let mut k: u128 = 1;
    loop {
        let scaled = den.checked_mul(k).ok_or(OVERFLOW)?;
        if !bernoulli_ratio(num, scaled, rng) {
            return Ok(k % 2 == 1);
        }
        k = k.checked_add(1).ok_or(OVERFLOW)?;
    }
}

/// A draw of the discrete Laplace distribution `P(x) ∝ exp(−|x|/t)`, `t ≥ 1`
/// (CKS20 Algorithm 2).
pub fn discrete_laplace<R: Rng + ?Sized>(t: u128, rng: &mut R) -> Result<i128, PrivacyError> {
    if t == 0 {
        return Err(PrivacyError::NoiseDraw("the discrete Laplace (scale 0)"));
    }
    for _ in 0..MAX_TRIALS {
        let u = rng.random_range(0..t);
        if !bernoulli_exp_neg(u, t, rng)? {
            continue;
        }
        // V ~ Geometric(1 − exp(−1)): count successes of Bernoulli(exp(−1)).
        let mut v: u128 = 0;
        while bernoulli_exp_neg_unit(1, 1, rng)? {
            v = v.checked_add(1).ok_or(OVERFLOW)?;
        }
        let x = v
            .checked_mul(t)
            .and_then(|x| x.checked_add(u))
            .ok_or(OVERFLOW)?;
        let x = i128::try_from(x).map_err(|_| OVERFLOW)?;
        let negative = rng.random::<bool>();
        if negative && x == 0 {
            continue;
        }
        return Ok(if negative { -x } else { x });
    }
    Err(EXHAUSTED)
}

/// Integer square root (floor).
fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = (n as f64).sqrt() as u128;
    // Correct the float estimate (at most a few steps, bounded).
    for _ in 0..128 {
        if x.checked_mul(x).is_none_or(|s| s > n) {
            x -= 1;
        } else if (x + 1).checked_mul(x + 1).is_some_and(|s| s <= n) {
            x += 1;
        } else {
            break;
        }
    }
    x
}

/// A draw of the discrete Gaussian `N_Z(0, σ²)` with `σ² = num/den > 0`
/// (CKS20 Algorithm 3): propose `Y` from the discrete Laplace of scale `t`,
/// accept with probability `exp(−(|Y| − σ²/t)²/(2σ²))`. The acceptance
/// identity holds for any `t > 0`; `t = σ` when σ is an integer (exact and
/// smaller numbers), else `t = ⌊σ⌋ + 1`.
pub fn discrete_gaussian<R: Rng + ?Sized>(
    num: u128,
    den: u128,
    rng: &mut R,
) -> Result<i128, PrivacyError> {
    if num == 0 || den == 0 {
        return Err(PrivacyError::NoiseDraw(
            "the discrete Gaussian (σ² must be positive)",
        ));
    }
    let root = isqrt(num / den);
    let exact = num % den == 0 && root * root == num / den;
    let t = if exact { root } else { root + 1 };
    // γ = (|Y|·den·t − num)² / (2·num·den·t²); with t = σ exactly this
    // reduces to (|Y| − σ)² / (2σ²).
    let (a_scale, sub, gden) = if exact {
        let sigma2 = num / den;
        (1u128, root, sigma2.checked_mul(2).ok_or(OVERFLOW)?)
    } else {
        let dt = den.checked_mul(t).ok_or(OVERFLOW)?;
        let gden = num
            .checked_mul(2)
            .and_then(|x| x.checked_mul(den))
            .and_then(|x| x.checked_mul(t))
            .and_then(|x| x.checked_mul(t))
            .ok_or(OVERFLOW)?;
        (dt, num, gden)
    };
    for _ in 0..MAX_TRIALS {
        let y = discrete_laplace(t, rng)?;
        let scaled = y.unsigned_abs().checked_mul(a_scale).ok_or(OVERFLOW)?;
        let a = scaled.abs_diff(sub);
        let gnum = a.checked_mul(a).ok_or(OVERFLOW)?;
        if bernoulli_exp_neg(gnum, gden, rng)? {
            return Ok(y);
        }
    }
    Err(EXHAUSTED)
}

/// Largest number of coordinates one release may noise, over all the calls
/// that make it up: the grid is chosen so the rounding error of up to this
/// many coordinates is paid for (see [`Grid`]).
pub const MAX_RELEASE_DIM: usize = 1 << 20;

/// Magnitude bound on `x / g`: below it the float division errs by less than
/// `2^−8`, so every coordinate's rounded difference is within 2 of the exact one.
const MAX_GRID_UNITS: f64 = (1u64 << 45) as f64;

/// The integer grid on which a Gaussian mechanism of standard deviation σ and
/// L2 sensitivity Δ (multiplier `z = σ/Δ`) releases.
///
/// A value `x` is released as `(round(x/g) + Z)·g` with `Z ~ N_Z(0, 4^k)`,
/// i.e. noise of standard deviation `s = g·2^k` in real units; the released
/// float is a function of the integer `round(x/g) + Z` only (post-processing).
///
/// **Sensitivity inflation.** For two neighbouring inputs with
/// `‖x − y‖₂ ≤ Δ`, each coordinate of `round(x/g) − round(y/g)` is within
/// `1 + 2^−7 < 2` of `(x_i − y_i)/g` (rounding, plus the float division's
/// error when `|x/g| < 2^45`), so over at most `D = MAX_RELEASE_DIM`
/// coordinates the integer vectors differ by at most `Δ/g + 2√D` in L2.
/// The discrete Gaussian with integer-vector sensitivity `Δ_Z` is
/// `Δ_Z²/(2σ_Z²)`-zCDP, i.e. `(α, αΔ_Z²/(2σ_Z²))`-RDP, exactly as the
/// continuous one (CKS20 Theorems 4 and 14). We choose `k` with
/// `2z√D·2^−k ≤ 2^−10` and `g = σ / (2^k − 2z√D)`, so
/// `Δ_Z/σ_Z = (Δ/g + 2√D)/2^k = Δ/σ`: the charge of the continuous
/// mechanism of multiplier `z` is exact for the discrete release, and the
/// price is a noise `s = σ/(1 − 2z√D/2^k) ≤ 1.00098·σ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    k: u32,
    step: f64,
}

impl Grid {
    /// The grid for noise `std` at multiplier `z = std / sensitivity`.
    pub fn new(std: f64, multiplier: f64) -> Result<Grid, PrivacyError> {
        if !(std > 0.0 && std.is_finite() && multiplier > 0.0 && multiplier.is_finite()) {
            return Err(PrivacyError::NoiseDraw("the discrete Gaussian (scale)"));
        }
        let slack = 2.0 * multiplier * (MAX_RELEASE_DIM as f64).sqrt();
        let k = (slack * 1024.0).log2().ceil().max(0.0);
        if !k.is_finite() || k > 52.0 {
            return Err(PrivacyError::NoiseDraw(
                "the discrete Gaussian (grid too fine)",
            ));
        }
        let k = k as u32;
        let pow = f64::from(2u32).powi(k as i32);
        // Round the step up a little so float error cannot shrink it below the bound.
        let step = std / (pow - slack) * (1.0 + 1e-12);
        if !(step > 0.0 && step.is_finite()) {
            return Err(PrivacyError::NoiseDraw("the discrete Gaussian (grid step)"));
        }
        Ok(Grid { k, step })
    }

    /// The grid step g.
    pub fn step(&self) -> f64 {
        self.step
    }

    /// The exponent k: the integer noise has variance `4^k`, exactly.
    pub fn exponent(&self) -> u32 {
        self.k
    }

    /// Standard deviation of the noise in real units, `g·2^k`.
    pub fn noise_std(&self) -> f64 {
        self.step * f64::from(2u32).powi(self.k as i32)
    }

    /// Rounds each value to the grid and adds `N_Z(0, 4^k)` grid units. On
    /// error nothing may be released: `values` may be partly noised.
    pub fn add_noise<R: Rng + ?Sized>(
        &self,
        values: &mut [f64],
        rng: &mut R,
        what: &'static str,
    ) -> Result<(), PrivacyError> {
        if values.len() > MAX_RELEASE_DIM {
            return Err(PrivacyError::NoiseDraw(what));
        }
        let variance = 1u128 << (2 * self.k);
        for v in values.iter_mut() {
            let units = (*v / self.step).round();
            if !units.is_finite() || units.abs() >= MAX_GRID_UNITS {
                return Err(PrivacyError::NoiseDraw(what));
            }
            let z = discrete_gaussian(variance, 1, rng)?;
            let total = (units as i128).checked_add(z).ok_or(OVERFLOW)?;
            if total.unsigned_abs() >= 1u128 << 53 {
                return Err(PrivacyError::NoiseDraw(what));
            }
            *v = total as f64 * self.step;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn pmf(sigma2: f64, x: i64) -> f64 {
        let w = |y: i64| (-(y * y) as f64 / (2.0 * sigma2)).exp();
        w(x) / (-200..=200).map(w).sum::<f64>()
    }

    /// Frequencies of 0, ±1, ±2 over 200k draws within 4 standard errors.
    #[test]
    fn small_scales_match_the_exact_pmf() {
        for (num, den) in [(1u128, 2u128), (2, 1)] {
            let sigma2 = num as f64 / den as f64;
            let mut rng = ChaCha20Rng::seed_from_u64(11);
            let n = 200_000;
            let mut counts = [0u32; 5];
            for _ in 0..n {
                let x = discrete_gaussian(num, den, &mut rng).unwrap();
                if (-2..=2).contains(&x) {
                    counts[(x + 2) as usize] += 1;
                }
            }
            for (i, c) in counts.iter().enumerate() {
                let p = pmf(sigma2, i as i64 - 2);
                let se = (p * (1.0 - p) / n as f64).sqrt();
                let f = f64::from(*c) / n as f64;
                assert!(
                    (f - p).abs() < 4.0 * se,
                    "σ²={sigma2} x={} f={f} p={p}",
                    i as i64 - 2
                );
            }
        }
    }

    #[test]
    fn bernoulli_exp_is_exact_for_rational_gamma() {
        for (num, den) in [(1u128, 3u128), (5, 2), (0, 1), (7, 7)] {
            let p = (-(num as f64) / den as f64).exp();
            let mut rng = ChaCha20Rng::seed_from_u64(5);
            let n = 100_000;
            let hits = (0..n)
                .filter(|_| bernoulli_exp_neg(num, den, &mut rng).unwrap())
                .count();
            let f = hits as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            assert!((f - p).abs() <= 4.0 * se, "γ={num}/{den} f={f} p={p}");
        }
        assert!(bernoulli_exp_neg(1, 0, &mut ChaCha20Rng::seed_from_u64(1)).is_err());
    }

    /// KS against N(0, 50²) and the variance, on 20k draws.
    #[test]
    fn large_scale_is_normal() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let n = 20_000;
        let mut v: Vec<f64> = (0..n)
            .map(|_| discrete_gaussian(2500, 1, &mut rng).unwrap() as f64)
            .collect();
        let var = v.iter().map(|x| x * x).sum::<f64>() / n as f64;
        // Var of N_Z(0, σ²) is below σ² by less than 1e-100 at σ = 50.
        assert!(
            (var.sqrt() - 50.0).abs() < 50.0 * 4.0 / (2.0 * n as f64).sqrt(),
            "{var}"
        );
        v.sort_by(f64::total_cmp);
        // Empirical cdf at each distinct integer against Φ((x + ½)/σ).
        let mut d: f64 = 0.0;
        for (i, &x) in v.iter().enumerate() {
            if i + 1 == n || v[i + 1] != x {
                let f = crate::math::ndtr((x + 0.5) / 50.0);
                d = d.max(((i + 1) as f64 / n as f64 - f).abs());
            }
        }
        assert!(d < 1.95 / (n as f64).sqrt(), "ks statistic {d}");
    }

    #[test]
    fn non_integer_sigma_has_the_right_variance() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let n = 50_000;
        // σ² = 10/3.
        let var = (0..n)
            .map(|_| (discrete_gaussian(10, 3, &mut rng).unwrap() as f64).powi(2))
            .sum::<f64>()
            / n as f64;
        let exact: f64 = (-60..=60i64)
            .map(|x| (x * x) as f64 * pmf(10.0 / 3.0, x))
            .sum();
        assert!(
            (var - exact).abs() < 4.0 * exact * (2.0 / n as f64).sqrt(),
            "{var} {exact}"
        );
        assert!(discrete_gaussian(0, 1, &mut rng).is_err());
        assert!(discrete_laplace(0, &mut rng).is_err());
    }

    #[test]
    fn grid_pays_for_its_rounding() {
        let g = Grid::new(1.0, 1.0).unwrap();
        let d = (MAX_RELEASE_DIM as f64).sqrt();
        let pow = f64::from(2u32).powi(g.exponent() as i32);
        // (Δ/g + 2√D)/2^k ≤ Δ/σ with Δ = σ = 1.
        assert!((1.0 / g.step() + 2.0 * d) / pow <= 1.0);
        assert!(
            g.noise_std() > 1.0 && g.noise_std() < 1.001,
            "{}",
            g.noise_std()
        );
        assert!(Grid::new(0.0, 1.0).is_err());
        assert!(Grid::new(f64::NAN, 1.0).is_err());
        assert!(Grid::new(1.0, f64::INFINITY).is_err());
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut v = [0.25, -3.0];
        g.add_noise(&mut v, &mut rng, "test").unwrap();
        // The release is an integer multiple of the step.
        for x in v {
            assert_eq!((x / g.step()).round() * g.step(), x);
        }
        assert!(g.add_noise(&mut [1e300], &mut rng, "test").is_err());
    }

    /// No floating-point Gaussian is left in the crate: no source file names
    /// a float normal sampler.
    #[test]
    fn no_float_gaussian_in_the_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let needles = [
            concat!("Normal", "::new"),
            concat!("rand", "_distr"),
            concat!("Standard", "Normal"),
        ];
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            seen += 1;
            for n in needles {
                assert!(!text.contains(n), "{} uses {n}", path.display());
            }
        }
        assert!(seen >= 10);
    }
}
