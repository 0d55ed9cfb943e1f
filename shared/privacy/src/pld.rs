//! Privacy-loss-distribution (PLD) accounting of the Poisson-subsampled
//! Gaussian mechanism.
//!
//! # Proof definition
//!
//! For the add/remove neighbouring relation the mechanism has two dominating
//! pairs: "remove" `((1-q) N(0, s^2) + q N(1, s^2), N(0, s^2))` and "add"
//! `(N(0, s^2), (1-q) N(0, s^2) + q N(1, s^2))` (sensitivity 1, `s = sigma`).
//! Each is discretised with the *connect-the-dots* algorithm (Doroshenko,
//! Ghazi, Kamath, Kumar & Manurangsi 2022): the hockey-stick divergence
//! `delta(eps)` is evaluated exactly on the grid `eps_i = i * h` and the
//! discrete PLD whose privacy profile linearly interpolates those points (in
//! `e^eps`) is built; it is a pessimistic (dominating) discretisation. The
//! tails beyond `|x| > 9.745 sigma` (mass `e^-50`) are handled as in
//! `dp-accounting`: their `delta` is kept exactly by the profile and the
//! remaining mass goes to `+inf`. Self-composition raises the FFT of the PMF
//! to the number of steps; the result is truncated with Chernoff bounds and
//! the truncated mass (at most `1e-15`) is added to the mass at `+inf`.
//! Heterogeneous charges are composed by FFT convolution, moving the lower
//! tail (at most `5e-16`) up to the smallest kept loss and the upper tail to
//! `+inf`. All of these steps only ever move probability to larger losses, so
//! the resulting epsilon is an upper bound.
//!
//! This is the algorithm of `dp-accounting` 0.6 (`PLDAccountant`,
//! `from_gaussian_mechanism(use_connect_dots=True)`), with two differences:
//! the discretisation interval is `max(1e-4, 1e-4 * eps_rdp)` (so large
//! epsilons stay cheap while the relative resolution is kept), and the
//! epsilon search runs in log space, so it stays valid above epsilon 700.
//! When every charge samples with `q = 1` the composition is a single
//! Gaussian mechanism and the exact analytic epsilon (Balle & Wang 2018) is
//! returned instead.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::accountant::Charge;
use crate::error::PrivacyError;
use crate::math::{log_add, log_ndtr, ndtr, plan_len, round_up};

/// `scipy.stats.norm.ppf(0.5 * exp(-50))`: where `dp-accounting` truncates the noise.
const X_TRUNCATION: f64 = -9.745_474_864_965_935;
/// Tail mass dropped (pessimistically) at each composition, as in `dp-accounting`.
const TAIL_MASS_TRUNCATION: f64 = 1e-15;
/// The smallest discretisation interval used (`dp-accounting`'s default).
pub const MIN_INTERVAL: f64 = 1e-4;
/// Largest PMF or FFT size allowed.
const MAX_BINS: usize = 1 << 24;

/// The FFT length for at least `n` bins ([`plan_len`]); more than [`MAX_BINS`]
/// is [`PrivacyError::PldTooLarge`].
fn fft_len(n: usize) -> Result<usize, PrivacyError> {
    let fast = plan_len(n);
    if fast > MAX_BINS {
        return Err(PrivacyError::PldTooLarge {
            bins: fast,
            limit: MAX_BINS,
        });
    }
    Ok(fast)
}

/// Direction of the neighbouring relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjacency {
    Remove,
    Add,
}

/// The privacy loss of one Gaussian step for one direction.
#[derive(Debug, Clone, Copy)]
struct GaussianLoss {
    q: f64,
    sigma: f64,
    adjacency: Adjacency,
}

impl GaussianLoss {
    fn ln_q(&self) -> f64 {
        self.q.ln()
    }
    fn ln_1mq(&self) -> f64 {
        (-self.q).ln_1p()
    }
    fn s2(&self) -> f64 {
        self.sigma * self.sigma
    }

    /// Privacy loss at output `x` (decreasing in `x`).
    fn loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => {
                let l0 = (-0.5 - x) / self.s2();
                if self.q == 1.0 {
                    l0
                } else {
                    log_add(self.ln_q() + l0, self.ln_1mq())
                }
            }
            Adjacency::Add => {
                let l0 = (-0.5 + x) / self.s2();
                if self.q == 1.0 {
                    -l0
                } else {
                    -log_add(self.ln_q() + l0, self.ln_1mq())
                }
            }
        }
    }

    /// `ln(e^l - (1 - q)) - ln q`: the loss without subsampling.
    fn unsubsample(&self, l: f64) -> f64 {
        let inner = if l > 0.0 {
            l + (-(1.0 - self.q) * (-l).exp()).ln_1p()
        } else {
            (self.q + l.exp_m1()).ln()
        };
        inner - self.ln_q()
    }

    /// Hockey-stick divergence `delta(eps)` of the pair.
    fn delta(&self, eps: f64) -> f64 {
        let s = self.sigma;
        let d = match self.adjacency {
            Adjacency::Remove => {
                let x = if self.q == 1.0 {
                    -0.5 - eps * self.s2()
                } else {
                    if eps <= self.ln_1mq() || is_close(eps, self.ln_1mq()) {
                        return (-(eps.exp_m1())).clamp(0.0, 1.0);
                    }
                    -0.5 - self.unsubsample(eps) * self.s2()
                };
                let upper = if self.q == 1.0 {
                    ndtr((x + 1.0) / s)
                } else {
                    (1.0 - self.q) * ndtr(x / s) + self.q * ndtr((x + 1.0) / s)
                };
                upper - (eps + log_ndtr(x / s)).exp()
            }
            Adjacency::Add => {
                let x = if self.q == 1.0 {
                    0.5 - eps * self.s2()
                } else {
                    let cap = -self.ln_1mq();
                    if eps >= cap || is_close(eps, cap) {
                        return 0.0;
                    }
                    0.5 + self.unsubsample(-eps) * self.s2()
                };
                let lower = if self.q == 1.0 {
                    log_ndtr((x - 1.0) / s)
                } else {
                    log_add(
                        self.ln_1mq() + log_ndtr(x / s),
                        self.ln_q() + log_ndtr((x - 1.0) / s),
                    )
                };
                ndtr(x / s) - (eps + lower).exp()
            }
        };
        if d.is_nan() { 1.0 } else { d.clamp(0.0, 1.0) }
    }

    /// Loss range covered by the connect-the-dots grid: `(eps_lower, eps_upper)`.
    fn bounds(&self) -> (f64, f64) {
        let mut lower_x = self.sigma * X_TRUNCATION;
        let mut upper_x = -lower_x;
        match self.adjacency {
            Adjacency::Add => upper_x += 1.0,
            Adjacency::Remove => lower_x -= 1.0,
        }
        (self.loss(upper_x), self.loss(lower_x))
    }
}

/// `math.isclose` with its default relative tolerance.
fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// A discrete privacy-loss distribution on the grid `(lower + i) * h`, plus
/// a mass at `+inf`.
#[derive(Debug, Clone)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
    h: f64,
}

impl Pmf {
    /// Connect-the-dots PMF of one step.
    fn connect_dots(loss: &GaussianLoss, h: f64) -> Result<Pmf, PrivacyError> {
        let (eps_lower, eps_upper) = loss.bounds();
        let lo = (eps_lower / h).floor();
        let hi = (eps_upper / h).ceil();
        let n = (hi - lo) as usize + 1;
        if !(lo.is_finite() && hi.is_finite()) || n > MAX_BINS {
            return Err(PrivacyError::PldTooLarge {
                bins: n,
                limit: MAX_BINS,
            });
        }
        let lo = lo as i64;
        let mut deltas: Vec<f64> = (0..n)
            .map(|i| loss.delta((lo + i as i64) as f64 * h))
            .collect();
        if n == 1 {
            return Ok(Pmf {
                lower: lo,
                probs: vec![1.0 - deltas[0]],
                infinity_mass: deltas[0],
                h,
            });
        }
        for i in 1..n {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        let diffs: Vec<f64> = deltas.windows(2).map(|w| w[1] - w[0]).collect();
        let em1 = h.exp_m1();
        let eh = h.exp();
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + diffs[0] / em1;
        for i in 1..n - 1 {
            probs[i] = (diffs[i] - diffs[i - 1] * eh) / em1;
        }
        probs[n - 1] = diffs[n - 2] / (-h).exp_m1();
        for p in &mut probs {
            *p = p.max(0.0);
        }
        Ok(Pmf {
            lower: lo,
            probs,
            infinity_mass: deltas[n - 1],
            h,
        })
    }

    /// Chernoff bounds `(lower, upper)` on the index offset of the `k`-fold
    /// sum outside which at most `TAIL_MASS_TRUNCATION` lies (as dp-accounting).
    fn chernoff_bounds(&self, k: u64) -> (usize, usize) {
        let n = self.probs.len();
        let kf = k as f64;
        let mut lower: f64 = 0.0;
        let mut upper: f64 = (n - 1) as f64 * kf;
        // MGF of the index at each order: sum_i p_i r^i with r = e^order,
        // the powers formed by repeated multiplication (|order * n| <= 20).
        for o in (-20i32..=20).filter(|&o| o != 0) {
            let order = f64::from(o) / n as f64;
            let r = order.exp();
            let mut pow = 1.0;
            let mut mgf = 0.0;
            for &p in &self.probs {
                mgf += p * pow;
                pow *= r;
            }
            let bound = (kf * mgf.ln() + (2.0 / TAIL_MASS_TRUNCATION).ln()) / order;
            if !bound.is_finite() {
                continue;
            }
            if order > 0.0 {
                upper = upper.min(bound.ceil());
            } else {
                lower = lower.max(bound.floor());
            }
        }
        let lower = lower.max(0.0);
        (lower as usize, upper.max(lower) as usize)
    }

    fn self_composed_from(
        &self,
        k: u64,
        lower: usize,
        out_len: usize,
        values: impl Fn(usize) -> f64,
    ) -> Pmf {
        let probs: Vec<f64> = (0..out_len).map(|j| values(j + lower).max(0.0)).collect();
        let infinity_mass =
            (TAIL_MASS_TRUNCATION - (k as f64 * (-self.infinity_mass).ln_1p()).exp_m1()).min(1.0);
        Pmf {
            lower: self.lower * k as i64 + lower as i64,
            probs,
            infinity_mass,
            h: self.h,
        }
    }

    /// `k`-fold compositions of `a` and of `b` with themselves, sharing one
    /// complex FFT pair (`a + i b`; both PMFs are real).
    fn self_compose_pair(
        a: &Pmf,
        b: &Pmf,
        k: u64,
        planner: &mut FftPlanner<f64>,
    ) -> Result<(Pmf, Pmf), PrivacyError> {
        let (la, ua) = a.chernoff_bounds(k);
        let (lb, ub) = b.chernoff_bounds(k);
        let (na, nb) = (ua - la + 1, ub - lb + 1);
        let fast = fft_len(na.max(nb).max(a.probs.len()).max(b.probs.len()))?;
        let mut buf = vec![Complex::new(0.0, 0.0); fast];
        for (i, &p) in a.probs.iter().enumerate() {
            buf[i].re = p;
        }
        for (i, &p) in b.probs.iter().enumerate() {
            buf[i].im = p;
        }
        planner.plan_fft_forward(fast).process(&mut buf);
        let spectrum = buf.clone();
        for j in 0..fast {
            let z = spectrum[j];
            let zc = spectrum[(fast - j) % fast].conj();
            let fa = (z + zc) * 0.5;
            let fb = (z - zc) * Complex::new(0.0, -0.5);
            buf[j] = complex_pow(fa, k) + Complex::new(0.0, 1.0) * complex_pow(fb, k);
        }
        planner.plan_fft_inverse(fast).process(&mut buf);
        let scale = 1.0 / fast as f64;
        let pa = a.self_composed_from(k, la, na, |i| buf[i % fast].re * scale);
        let pb = b.self_composed_from(k, lb, nb, |i| buf[i % fast].im * scale);
        Ok((pa, pb))
    }

    /// `k`-fold composition with itself.
    fn self_compose(&self, k: u64, planner: &mut FftPlanner<f64>) -> Result<Pmf, PrivacyError> {
        let n = self.probs.len();
        let (lower, upper) = self.chernoff_bounds(k);
        let out_len = upper - lower + 1;
        let fast = fft_len(out_len.max(n))?;
        let mut buf = vec![Complex::new(0.0, 0.0); fast];
        for (i, &p) in self.probs.iter().enumerate() {
            buf[i].re = p;
        }
        planner.plan_fft_forward(fast).process(&mut buf);
        for c in &mut buf {
            *c = complex_pow(*c, k);
        }
        planner.plan_fft_inverse(fast).process(&mut buf);
        let scale = 1.0 / fast as f64;
        Ok(self.self_composed_from(k, lower, out_len, |i| buf[i % fast].re * scale))
    }

    /// Composition with another PMF on the same grid.
    fn compose(&self, other: &Pmf, planner: &mut FftPlanner<f64>) -> Result<Pmf, PrivacyError> {
        let len = self.probs.len() + other.probs.len() - 1;
        let fast = fft_len(len)?;
        let to_buf = |p: &[f64]| -> Vec<Complex<f64>> {
            p.iter()
                .map(|&x| Complex::new(x, 0.0))
                .chain(std::iter::repeat(Complex::new(0.0, 0.0)))
                .take(fast)
                .collect()
        };
        let mut a = to_buf(&self.probs);
        let mut b = to_buf(&other.probs);
        let fwd = planner.plan_fft_forward(fast);
        fwd.process(&mut a);
        fwd.process(&mut b);
        for (x, y) in a.iter_mut().zip(&b) {
            *x *= y;
        }
        planner.plan_fft_inverse(fast).process(&mut a);
        let scale = 1.0 / fast as f64;
        let probs: Vec<f64> = a[..len].iter().map(|c| (c.re * scale).max(0.0)).collect();
        let inf =
            self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        // Pessimistic tail truncation.
        let half = TAIL_MASS_TRUNCATION / 2.0;
        let prefix = |it: &mut dyn Iterator<Item = f64>| -> usize {
            let mut s = 0.0;
            for (i, v) in it.enumerate() {
                s += v;
                if s > half {
                    return i;
                }
            }
            len
        };
        let left = prefix(&mut probs.iter().copied());
        let right = (len - prefix(&mut probs.iter().rev().copied())).max(left + 1);
        let left_mass: f64 = probs[..left].iter().sum();
        let right_mass: f64 = probs[right..].iter().sum();
        let mut kept = probs[left..right].to_vec();
        kept[0] += left_mass;
        Ok(Pmf {
            lower: self.lower + other.lower + left as i64,
            probs: kept,
            infinity_mass: (inf + right_mass).min(1.0),
            h: self.h,
        })
    }

    /// Smallest epsilon with `delta(epsilon) <= delta` (dp-accounting's
    /// search, with the lower mass kept in log space).
    fn epsilon_for_delta(&self, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let mut mass_upper = self.infinity_mass;
        let mut log_mass_lower = f64::NEG_INFINITY;
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let loss = (self.lower + i as i64) as f64 * self.h;
            if mass_upper > delta
                && log_mass_lower > f64::NEG_INFINITY
                && (mass_upper - delta).ln() - log_mass_lower >= loss
            {
                break;
            }
            mass_upper += p;
            if p > 0.0 {
                log_mass_lower = log_add(log_mass_lower, p.ln() - loss);
            }
            if mass_upper >= delta && log_mass_lower == f64::NEG_INFINITY {
                return loss.max(0.0);
            }
        }
        if mass_upper <= delta {
            return 0.0;
        }
        let eps = (mass_upper - delta).ln() - log_mass_lower;
        eps.max(0.0)
    }
}

fn complex_pow(c: Complex<f64>, k: u64) -> Complex<f64> {
    let mut result = Complex::new(1.0, 0.0);
    let mut base = c;
    let mut e = k;
    while e > 0 {
        if e & 1 == 1 {
            result *= base;
        }
        e >>= 1;
        if e > 0 {
            base = base * base;
        }
    }
    result
}

/// Epsilon at `delta` of the composition of `charges`, by the PLD.
///
/// The discretisation interval is chosen from the RDP epsilon of the same
/// charges: `max(1e-4, 1e-4 * eps_rdp)`. Charges with `q = 0` cost nothing;
/// if every charge has `q = 1` the exact Gaussian epsilon is returned.
pub fn epsilon(charges: &[Charge], delta: f64) -> Result<f64, PrivacyError> {
    let rdp_eps = crate::accountant::Accountant::default()
        .rdp_epsilon(charges, delta)?
        .0;
    let h = if rdp_eps.is_finite() {
        (rdp_eps * MIN_INTERVAL).max(MIN_INTERVAL)
    } else {
        MIN_INTERVAL
    };
    epsilon_with_interval(charges, delta, h)
}

/// Like [`epsilon`] with an explicit discretisation interval `h`
/// (`dp-accounting` uses `1e-4`). Always uses the discretised PLD.
///
/// The charges are composed in their grouped form
/// ([`crate::accountant::grouped`]): each distinct (mechanism, q, sigma) is
/// one self-composition by FFT power of the sum of its steps, and the groups
/// are convolved in first-seen order.
pub fn epsilon_with_interval(charges: &[Charge], delta: f64, h: f64) -> Result<f64, PrivacyError> {
    check_delta_interval(delta, h)?;
    let groups = crate::accountant::grouped(charges)?;
    // A pure function of its inputs: remembered, so the same composition (a
    // charge's own cost every round, or a run's cumulative figures planned
    // ahead by `Ledger::plan_ahead`) is computed once per process.
    let key = MemoKey::of(&groups, delta, h);
    if let Some(e) = memo().get(&key) {
        return Ok(*e);
    }
    let e = compose_and_search(&groups, delta, h)?;
    let mut memo = memo();
    if memo.len() >= MEMO_CAPACITY {
        memo.clear();
    }
    memo.insert(key, e);
    Ok(e)
}

/// Entries kept by the PLD memo before it is cleared.
const MEMO_CAPACITY: usize = 8192;

/// The exact inputs of one PLD computation (bit patterns of the floats).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    groups: Vec<(u64, u64, u64)>,
    delta: u64,
    h: u64,
}

impl MemoKey {
    fn of(groups: &[Charge], delta: f64, h: f64) -> MemoKey {
        MemoKey {
            groups: groups
                .iter()
                .map(|c| (c.q.to_bits(), c.sigma.to_bits(), c.steps))
                .collect(),
            delta: delta.to_bits(),
            h: h.to_bits(),
        }
    }
}

fn memo() -> std::sync::MutexGuard<'static, std::collections::HashMap<MemoKey, f64>> {
    static MEMO: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<MemoKey, f64>>> =
        std::sync::LazyLock::new(Default::default);
    // The map only ever holds finished results: a poisoned lock is still consistent.
    MEMO.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The old, ungrouped composition: one self-composition per charge, each
/// convolved with the running total. Kept to test the grouped form against.
#[cfg(test)]
pub(crate) fn epsilon_with_interval_sequential(
    charges: &[Charge],
    delta: f64,
    h: f64,
) -> Result<f64, PrivacyError> {
    check_delta_interval(delta, h)?;
    for c in charges {
        c.validate()?;
    }
    compose_and_search(charges, delta, h)
}

fn check_delta_interval(delta: f64, h: f64) -> Result<(), PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::InvalidDelta(delta));
    }
    if !(h.is_finite() && h > 0.0) {
        return Err(PrivacyError::Numerical("pld interval must be positive"));
    }
    Ok(())
}

/// Composes validated `charges` one after the other (each self-composed by
/// FFT power, then convolved with the total) and searches the epsilon.
fn compose_and_search(charges: &[Charge], delta: f64, h: f64) -> Result<f64, PrivacyError> {
    let active: Vec<&Charge> = charges
        .iter()
        .filter(|c| c.q > 0.0 && c.steps > 0)
        .collect();
    if active.is_empty() {
        return Ok(0.0);
    }
    // A panic while planning leaves the cache usable (plans are immutable once made).
    let mut planner = PLANNER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    compose_with(&active, delta, h, &mut planner)
}

/// FFT plans are reused across calls in a process (a client node accounts
/// every round, from whichever thread runs the task): planning (twiddle
/// factors) costs as much as the FFT itself. Sizes come from `plan_len`, so a
/// composition that grows round after round meets few sizes.
static PLANNER: std::sync::LazyLock<std::sync::Mutex<FftPlanner<f64>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(FftPlanner::new()));

fn compose_with(
    active: &[&Charge],
    delta: f64,
    h: f64,
    planner: &mut FftPlanner<f64>,
) -> Result<f64, PrivacyError> {
    let mut remove: Option<Pmf> = None;
    let mut add: Option<Pmf> = None;
    let join = |total: Option<Pmf>,
                pmf: Pmf,
                planner: &mut FftPlanner<f64>|
     -> Result<Option<Pmf>, PrivacyError> {
        Ok(Some(match total {
            None => pmf,
            Some(t) => t.compose(&pmf, planner)?,
        }))
    };
    for c in active {
        let loss = |adjacency| GaussianLoss {
            q: c.q,
            sigma: c.sigma,
            adjacency,
        };
        let r = Pmf::connect_dots(&loss(Adjacency::Remove), h)?;
        let (r, a) = if c.q == 1.0 {
            // Without subsampling both directions have the same PLD.
            let r = r.self_compose(c.steps, planner)?;
            (r.clone(), r)
        } else {
            let a = Pmf::connect_dots(&loss(Adjacency::Add), h)?;
            Pmf::self_compose_pair(&r, &a, c.steps, planner)?
        };
        remove = join(remove, r, planner)?;
        add = join(add, a, planner)?;
    }
    let mut worst: f64 = 0.0;
    for total in [remove, add].into_iter().flatten() {
        worst = worst.max(total.epsilon_for_delta(delta));
    }
    Ok(round_up(worst))
}

/// `delta(eps)` of the Gaussian mechanism with `mu = sensitivity / sigma`
/// (Balle & Wang 2018, Theorem 8).
fn gaussian_delta(mu: f64, eps: f64) -> f64 {
    ndtr(-eps / mu + mu / 2.0) - (eps + log_ndtr(-eps / mu - mu / 2.0)).exp()
}

/// Exact epsilon of the Gaussian mechanism with `mu = sensitivity / sigma`
/// at `delta` (analytic Gaussian mechanism, Balle & Wang 2018), found by
/// bisection and returned as the upper end of the final bracket, which is
/// verified to satisfy `delta(eps) <= delta`.
pub fn gaussian_epsilon(mu: f64, delta: f64) -> Result<f64, PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::InvalidDelta(delta));
    }
    if mu == 0.0 {
        return Ok(0.0);
    }
    if !(mu > 0.0 && mu.is_finite()) {
        return Ok(f64::INFINITY);
    }
    if gaussian_delta(mu, 0.0) <= delta {
        return Ok(0.0);
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while gaussian_delta(mu, hi) > delta {
        lo = hi;
        hi *= 2.0;
        if hi > 1e12 {
            return Ok(f64::INFINITY);
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if gaussian_delta(mu, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(round_up(hi))
}

/// Exact epsilon when every active charge has `q = 1`: the composition of
/// Gaussian mechanisms is a Gaussian mechanism with `mu^2 = sum steps / sigma^2`
/// (summed over the grouped charges, in first-seen order).
/// Returns `None` if some charge is subsampled.
pub(crate) fn exact_gaussian_epsilon(
    charges: &[Charge],
    delta: f64,
) -> Result<Option<f64>, PrivacyError> {
    let mut mu2 = 0.0;
    for c in &crate::accountant::grouped(charges)? {
        if c.q == 0.0 || c.steps == 0 {
            continue;
        }
        if c.q < 1.0 {
            return Ok(None);
        }
        mu2 += c.steps as f64 / (c.sigma * c.sigma);
    }
    gaussian_epsilon(mu2.sqrt(), delta).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytic_gaussian_sigma_one() {
        let eps = gaussian_epsilon(1.0, 1e-5).unwrap();
        assert!((eps - 4.377_18).abs() < 5e-6, "{eps}");
    }

    #[test]
    fn connect_dots_pmf_is_a_distribution() {
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            let loss = GaussianLoss {
                q: 0.01,
                sigma: 1.1,
                adjacency,
            };
            let pmf = Pmf::connect_dots(&loss, 1e-3).unwrap();
            let total: f64 = pmf.probs.iter().sum::<f64>() + pmf.infinity_mass;
            assert!((total - 1.0).abs() < 1e-9, "{adjacency:?}: {total}");
        }
    }

    #[test]
    fn pld_of_single_gaussian_matches_analytic() {
        let c = Charge::subsampled_gaussian(1.0, 1.0, 1).unwrap();
        let eps = epsilon_with_interval(&[c], 1e-5, 1e-4).unwrap();
        assert!((4.377_18 - 1e-5..4.3775).contains(&eps), "{eps}");
    }
}
