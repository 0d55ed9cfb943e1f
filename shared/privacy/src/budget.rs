//! Privacy budget and the filter that refuses before anything is spent.

use serde::{Deserialize, Serialize};

use crate::accountant::{Accountant, Charge, Report};
use crate::error::PrivacyError;

/// An `(epsilon, delta)` guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyBudget {
    epsilon: f64,
    delta: f64,
}

impl PrivacyBudget {
    /// A budget with `epsilon >= 0` finite and `delta` in `(0, 1)`.
    pub fn new(epsilon: f64, delta: f64) -> Result<PrivacyBudget, PrivacyError> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(PrivacyError::InvalidEpsilon(epsilon));
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(PrivacyError::InvalidDelta(delta));
        }
        Ok(PrivacyBudget { epsilon, delta })
    }

    /// Epsilon.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Delta.
    pub fn delta(&self) -> f64 {
        self.delta
    }
}

/// The filter's verdict on a new charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The composition with the new charge stays within the budget.
    Allow {
        /// Privacy loss of everything including the new charge.
        after: Report,
    },
    /// The composition with the new charge would exceed the budget: do not run it.
    Refuse {
        /// Privacy loss of everything including the new charge.
        after: Report,
    },
}

impl Decision {
    /// Whether the charge may be spent.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The report of the composition including the new charge.
    pub fn report(&self) -> &Report {
        match self {
            Decision::Allow { after } | Decision::Refuse { after } => after,
        }
    }
}

/// Privacy filter (Rogers, Roth, Ullman & Vadhan 2016): composes every
/// charge already spent with `new_charge` (composition of mechanisms, not a
/// sum of epsilons) and refuses if the result exceeds `budget`.
pub fn would_exceed(
    ledger_charges: &[Charge],
    new_charge: &Charge,
    budget: &PrivacyBudget,
) -> Result<Decision, PrivacyError> {
    let mut all = Vec::with_capacity(ledger_charges.len() + 1);
    all.extend_from_slice(ledger_charges);
    all.push(*new_charge);
    let after = Accountant::default().epsilon(&all, budget.delta)?;
    Ok(if after.epsilon <= budget.epsilon {
        Decision::Allow { after }
    } else {
        Decision::Refuse { after }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_composes_rather_than_sums() {
        let c = Charge::subsampled_gaussian(0.01, 1.1, 500).unwrap();
        let budget = PrivacyBudget::new(1.6, 1e-5).unwrap();
        // Two halves of the q 0.01, sigma 1.1, 1000-step run: ~1.515 < 1.6,
        // although each half alone costs more than 0.8.
        let half = Accountant::default().epsilon(&[c], 1e-5).unwrap().epsilon;
        assert!(half > 0.8);
        let d = would_exceed(&[c], &c, &budget).unwrap();
        assert!(d.is_allowed(), "{d:?}");
        let d = would_exceed(&[c, c], &c, &budget).unwrap();
        assert!(!d.is_allowed(), "{d:?}");
    }

    #[test]
    fn budget_validates() {
        assert_eq!(
            PrivacyBudget::new(-1.0, 1e-5).unwrap_err().to_string(),
            "epsilon must be non-negative and finite (got -1)"
        );
        assert!(PrivacyBudget::new(1.0, 1.0).is_err());
    }
}
