//! Composition of charges and the report of their privacy loss.
//!
//! The accountant is the only place that turns charges into an epsilon. It
//! composes a heterogeneous list of [`Charge`]s two ways, both sound upper
//! bounds, and reports the smaller:
//!
//! * RDP: per-order sum of each charge's RDP curve times its steps, converted
//!   with [`rdp::rdp_to_epsilon`] over `dp-accounting`'s default orders;
//! * PLD: [`pld::epsilon`] (connect-the-dots discretisation, FFT composition),
//!   or the exact analytic Gaussian epsilon when nothing is subsampled.
//!
//! # Canonical (grouped) composition
//!
//! A list of charges is composed in its *grouped* form: charges of the same
//! mechanism with the same `q` and `sigma` (equal `f64` bits) are one charge
//! whose steps are the sum of theirs (the composition of `k` identical
//! mechanisms is their `k`-fold self-composition, which the PLD computes at
//! once by an FFT power), and the groups are composed in the order their
//! first charge appears. [`Composition`] keeps that grouped form
//! incrementally, so the epsilon of a history grown one charge at a time is
//! exactly the figure [`Accountant::epsilon`] gives for the whole list, at a
//! cost that depends on the number of distinct groups, not on the number of
//! charges.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::PrivacyError;
use crate::{pld, rdp};

/// Kind of mechanism a charge was produced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MechanismKind {
    /// Poisson-subsampled Gaussian mechanism (DP-SGD, DP-FedAvg).
    #[serde(rename = "subsampled_gaussian")]
    SubsampledGaussian,
}

impl MechanismKind {
    /// The name used in ledgers and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MechanismKind::SubsampledGaussian => "subsampled_gaussian",
        }
    }
}

/// The privacy cost of running a mechanism: what a privacy map returns and
/// what the accountant composes.
///
/// `sigma` is the noise multiplier relative to the L2 sensitivity already
/// derived by the mechanism (noise std / sensitivity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// The mechanism.
    pub mechanism: MechanismKind,
    /// Poisson sampling rate in `[0, 1]`.
    pub q: f64,
    /// Noise multiplier (noise standard deviation over sensitivity), positive.
    pub sigma: f64,
    /// Number of steps (self-compositions).
    pub steps: u64,
}

impl Charge {
    /// A validated charge of the Poisson-subsampled Gaussian mechanism.
    pub fn subsampled_gaussian(q: f64, sigma: f64, steps: u64) -> Result<Charge, PrivacyError> {
        let c = Charge {
            mechanism: MechanismKind::SubsampledGaussian,
            q,
            sigma,
            steps,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks the parameters (also of deserialised charges).
    pub fn validate(&self) -> Result<(), PrivacyError> {
        if !(0.0..=1.0).contains(&self.q) {
            return Err(PrivacyError::InvalidSamplingRate(self.q));
        }
        if !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return Err(PrivacyError::InvalidNoiseMultiplier(self.sigma));
        }
        Ok(())
    }

    /// RDP curve of the whole charge (all its steps) at `orders`.
    pub fn rdp(&self, orders: &[f64]) -> Result<Vec<f64>, PrivacyError> {
        self.validate()?;
        let per_step = rdp::subsampled_gaussian_rdp(self.q, self.sigma, orders)?;
        let steps = self.steps as f64;
        Ok(per_step
            .into_iter()
            .map(|r| crate::math::next_up(r * steps))
            .collect())
    }
}

/// Which accountant gave the reported epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountantKind {
    /// Rényi DP with the Canonne–Kamath–Steinke conversion.
    Rdp,
    /// Privacy-loss distribution.
    Pld,
}

/// The privacy loss of a composition at one delta.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The delta all epsilons refer to.
    pub delta: f64,
    /// Epsilon by RDP.
    pub rdp_epsilon: f64,
    /// The RDP order that attains `rdp_epsilon`.
    pub rdp_order: f64,
    /// Epsilon by PLD (`None` if the PLD could not be computed, e.g. too large).
    pub pld_epsilon: Option<f64>,
    /// The reported epsilon: the smaller of the two.
    pub epsilon: f64,
    /// Which accountant gave `epsilon`.
    pub accountant: AccountantKind,
}

/// Composes charges; configured by its RDP order set.
#[derive(Debug, Clone, PartialEq)]
pub struct Accountant {
    orders: Vec<f64>,
}

impl Default for Accountant {
    fn default() -> Self {
        Accountant {
            orders: rdp::default_orders(),
        }
    }
}

impl Accountant {
    /// An accountant over the given RDP orders (each finite and above 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Accountant, PrivacyError> {
        if orders.is_empty() {
            return Err(PrivacyError::CurveLength {
                orders: 0,
                values: 0,
            });
        }
        if let Some(&bad) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
            return Err(PrivacyError::InvalidOrder(bad));
        }
        Ok(Accountant { orders })
    }

    /// The RDP orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Composed RDP curve of `charges` at [`Accountant::orders`] (grouped form).
    pub fn rdp(&self, charges: &[Charge]) -> Result<Vec<f64>, PrivacyError> {
        Ok(self.compose(charges)?.rdp())
    }

    /// `(epsilon, order)` of `charges` at `delta` by RDP alone.
    pub fn rdp_epsilon(&self, charges: &[Charge], delta: f64) -> Result<(f64, f64), PrivacyError> {
        self.compose(charges)?.rdp_epsilon(delta)
    }

    /// Epsilon of the composition of `charges` at `delta` by both accountants
    /// (grouped form: the same figure as [`Composition::epsilon`] after
    /// pushing the same charges).
    pub fn epsilon(&self, charges: &[Charge], delta: f64) -> Result<Report, PrivacyError> {
        self.compose(charges)?.epsilon(delta)
    }

    /// An empty incremental composition over this accountant's orders.
    pub fn composition(&self) -> Composition {
        Composition {
            orders: self.orders.clone(),
            groups: Vec::new(),
            per_step_rdp: Vec::new(),
            index: HashMap::new(),
            charges: 0,
        }
    }

    /// The incremental composition of `charges`.
    pub fn compose(&self, charges: &[Charge]) -> Result<Composition, PrivacyError> {
        let mut c = self.composition();
        for charge in charges {
            c.push(*charge)?;
        }
        Ok(c)
    }
}

/// What makes two charges one group: mechanism, and the exact bits of `q`
/// and `sigma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GroupKey {
    mechanism: MechanismKind,
    q: u64,
    sigma: u64,
}

impl GroupKey {
    fn of(c: &Charge) -> GroupKey {
        GroupKey {
            mechanism: c.mechanism,
            q: c.q.to_bits(),
            sigma: c.sigma.to_bits(),
        }
    }
}

/// The grouped form of `charges` (see the module docs): one charge per
/// distinct (mechanism, q, sigma), with the sum of their steps, in
/// first-seen order. Every charge is validated.
pub fn grouped(charges: &[Charge]) -> Result<Vec<Charge>, PrivacyError> {
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<Charge> = Vec::new();
    for c in charges {
        c.validate()?;
        match index.get(&GroupKey::of(c)) {
            Some(&i) => groups[i].steps = add_steps(groups[i].steps, c.steps)?,
            None => {
                index.insert(GroupKey::of(c), groups.len());
                groups.push(*c);
            }
        }
    }
    Ok(groups)
}

fn add_steps(a: u64, b: u64) -> Result<u64, PrivacyError> {
    a.checked_add(b)
        .ok_or(PrivacyError::TooManySteps { steps: a, more: b })
}

/// An incremental composition: the grouped charges and each group's per-step
/// RDP curve.
///
/// [`Composition::push`] costs one hash look-up when the charge's group
/// exists, and one per-step RDP curve (over the orders) when it is new.
/// [`Composition::epsilon`] sums the groups' curves (groups x orders) and
/// runs one PLD self-composition per distinct group, never one per charge.
/// Its figure equals [`Accountant::epsilon`] of every charge pushed, bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    orders: Vec<f64>,
    /// Grouped charges (steps summed), in first-seen order.
    groups: Vec<Charge>,
    /// Per-step RDP of each group at `orders`.
    per_step_rdp: Vec<Vec<f64>>,
    index: HashMap<GroupKey, usize>,
    charges: usize,
}

impl Default for Composition {
    fn default() -> Self {
        Accountant::default().composition()
    }
}

impl Composition {
    /// Adds one charge (validated first; nothing changes on error).
    pub fn push(&mut self, charge: Charge) -> Result<(), PrivacyError> {
        charge.validate()?;
        let key = GroupKey::of(&charge);
        match self.index.get(&key) {
            Some(&i) => {
                let g = &mut self.groups[i];
                g.steps = add_steps(g.steps, charge.steps)?;
            }
            None => {
                let per_step = rdp::subsampled_gaussian_rdp(charge.q, charge.sigma, &self.orders)?;
                self.index.insert(key, self.groups.len());
                self.groups.push(charge);
                self.per_step_rdp.push(per_step);
            }
        }
        self.charges += 1;
        Ok(())
    }

    /// The grouped charges, in first-seen order.
    pub fn groups(&self) -> &[Charge] {
        &self.groups
    }

    /// Number of charges pushed.
    pub fn len(&self) -> usize {
        self.charges
    }

    /// Whether no charge was pushed.
    pub fn is_empty(&self) -> bool {
        self.charges == 0
    }

    /// The RDP orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Composed RDP curve: per order, the sum over groups of the group's
    /// per-step RDP times its steps (each product and sum rounded up).
    pub fn rdp(&self) -> Vec<f64> {
        let mut total = vec![0.0; self.orders.len()];
        for (g, per_step) in self.groups.iter().zip(&self.per_step_rdp) {
            let steps = g.steps as f64;
            for (t, r) in total.iter_mut().zip(per_step) {
                *t = crate::math::next_up(*t + crate::math::next_up(r * steps));
            }
        }
        total
    }

    /// `(epsilon, order)` at `delta` by RDP alone.
    pub fn rdp_epsilon(&self, delta: f64) -> Result<(f64, f64), PrivacyError> {
        rdp::rdp_to_epsilon(&self.orders, &self.rdp(), delta)
    }

    /// Epsilon at `delta` by both accountants, the smaller reported. The PLD
    /// interval is `max(1e-4, 1e-4 * eps_rdp)`.
    pub fn epsilon(&self, delta: f64) -> Result<Report, PrivacyError> {
        let (rdp_epsilon, rdp_order) = self.rdp_epsilon(delta)?;
        let pld_epsilon = if let Some(exact) = pld::exact_gaussian_epsilon(&self.groups, delta)? {
            Some(exact)
        } else {
            let h = if rdp_epsilon.is_finite() {
                (rdp_epsilon * pld::MIN_INTERVAL).max(pld::MIN_INTERVAL)
            } else {
                pld::MIN_INTERVAL
            };
            match pld::epsilon_with_interval(&self.groups, delta, h) {
                Ok(e) => Some(e),
                Err(PrivacyError::PldTooLarge { .. }) => None,
                Err(e) => return Err(e),
            }
        };
        let (epsilon, accountant) = match pld_epsilon {
            Some(p) if p < rdp_epsilon => (p, AccountantKind::Pld),
            _ => (rdp_epsilon, AccountantKind::Rdp),
        };
        Ok(Report {
            delta,
            rdp_epsilon,
            rdp_order,
            pld_epsilon,
            epsilon,
            accountant,
        })
    }
}

/// Epsilon of `charges` at `delta` with the default accountant.
pub fn epsilon(charges: &[Charge], delta: f64) -> Result<Report, PrivacyError> {
    Accountant::default().epsilon(charges, delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    #[test]
    fn incremental_composition_equals_full_recomposition_over_1000_mixed_charges() {
        let kinds = [
            Charge::subsampled_gaussian(0.09, 1.0, 40).unwrap(),
            Charge::subsampled_gaussian(0.01, 1.1, 100).unwrap(),
            Charge::subsampled_gaussian(0.5, 2.0, 3).unwrap(),
            Charge::subsampled_gaussian(1.0, 8.0, 1).unwrap(),
            Charge::subsampled_gaussian(1.0, 4.0, 2).unwrap(),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut all: Vec<Charge> = (0..1000)
            .map(|_| kinds[rng.random_range(0..kinds.len())])
            .collect();
        all.shuffle(&mut rng);
        let delta = 1e-5;
        let acc = Accountant::default();
        let mut state = acc.composition();
        for (i, c) in all.iter().enumerate() {
            state.push(*c).unwrap();
            let n = i + 1;
            if n == 1 || n % 50 == 0 {
                let inc = state.epsilon(delta).unwrap();
                let full = acc.epsilon(&all[..n], delta).unwrap();
                assert!(
                    (inc.epsilon - full.epsilon).abs() <= 1e-9,
                    "after {n}: incremental {inc:?} full {full:?}"
                );
                assert_eq!(inc, full, "after {n}");
                assert!(inc.epsilon > 0.0 && inc.epsilon.is_finite());
            }
        }
        assert_eq!(state.len(), 1000);
        assert_eq!(state.groups().len(), kinds.len());
        let steps: u64 = state.groups().iter().map(|g| g.steps).sum();
        assert_eq!(steps, all.iter().map(|c| c.steps).sum::<u64>());
    }

    #[test]
    fn grouping_sums_steps_like_composing_one_by_one() {
        let a = Charge::subsampled_gaussian(0.05, 1.0, 20).unwrap();
        let b = Charge::subsampled_gaussian(0.2, 2.0, 5).unwrap();
        // 10 charges of two kinds, interleaved: 6 x a, 4 x b.
        let charges = [a, b, a, a, b, a, b, a, a, b];
        let g = grouped(&charges).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].steps, g[1].steps), (120, 20));
        let (delta, h) = (1e-5, 1e-4);
        let by_group = pld::epsilon_with_interval(&charges, delta, h).unwrap();
        let one_by_one = pld::epsilon_with_interval_sequential(&charges, delta, h).unwrap();
        assert!(
            (by_group - one_by_one).abs() <= 1e-3 * one_by_one,
            "grouped {by_group} one by one {one_by_one}"
        );
        // The RDP curve of the groups is the per-charge sum (up to rounding).
        let acc = Accountant::default();
        let grouped_rdp = acc.rdp(&charges).unwrap();
        let mut summed = vec![0.0; acc.orders().len()];
        for c in &charges {
            for (s, r) in summed.iter_mut().zip(c.rdp(acc.orders()).unwrap()) {
                *s += r;
            }
        }
        for (x, y) in grouped_rdp.iter().zip(&summed) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1e-300), "{x} vs {y}");
        }
        // And the report is the same whatever the order of the charges.
        let mut reordered = charges;
        reordered.reverse();
        let e1 = acc.epsilon(&charges, delta).unwrap().epsilon;
        let e2 = acc.epsilon(&reordered, delta).unwrap().epsilon;
        assert!((e1 - e2).abs() <= 1e-3 * e1, "{e1} vs {e2}");
    }

    #[test]
    fn composition_rejects_bad_charges_and_step_overflow_unchanged() {
        let mut c = Composition::default();
        let bad = Charge {
            mechanism: MechanismKind::SubsampledGaussian,
            q: 1.5,
            sigma: 1.0,
            steps: 1,
        };
        assert!(c.push(bad).is_err());
        assert!(c.is_empty());
        let big = Charge::subsampled_gaussian(0.1, 1.0, u64::MAX).unwrap();
        c.push(big).unwrap();
        let err = c.push(big).unwrap_err();
        assert!(matches!(err, PrivacyError::TooManySteps { .. }), "{err}");
        assert_eq!(c.len(), 1);
        assert_eq!(c.groups()[0].steps, u64::MAX);
    }
}
