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

use serde::{Deserialize, Serialize};

use crate::error::PrivacyError;
use crate::{pld, rdp};

/// Kind of mechanism a charge was produced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Composed RDP curve of `charges` at [`Accountant::orders`].
    pub fn rdp(&self, charges: &[Charge]) -> Result<Vec<f64>, PrivacyError> {
        let mut total = vec![0.0; self.orders.len()];
        for c in charges {
            for (t, r) in total.iter_mut().zip(c.rdp(&self.orders)?) {
                *t = crate::math::next_up(*t + r);
            }
        }
        Ok(total)
    }

    /// `(epsilon, order)` of `charges` at `delta` by RDP alone.
    pub fn rdp_epsilon(&self, charges: &[Charge], delta: f64) -> Result<(f64, f64), PrivacyError> {
        rdp::rdp_to_epsilon(&self.orders, &self.rdp(charges)?, delta)
    }

    /// Epsilon of the composition of `charges` at `delta` by both accountants.
    pub fn epsilon(&self, charges: &[Charge], delta: f64) -> Result<Report, PrivacyError> {
        let (rdp_epsilon, rdp_order) = self.rdp_epsilon(charges, delta)?;
        let pld_epsilon = if let Some(exact) = pld::exact_gaussian_epsilon(charges, delta)? {
            Some(exact)
        } else {
            let h = if rdp_epsilon.is_finite() {
                (rdp_epsilon * pld::MIN_INTERVAL).max(pld::MIN_INTERVAL)
            } else {
                pld::MIN_INTERVAL
            };
            match pld::epsilon_with_interval(charges, delta, h) {
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
