//! Differential privacy for fedprofile: mechanisms with their privacy maps,
//! RDP and PLD accounting of the Poisson-subsampled Gaussian mechanism,
//! calibration, a budget filter and a tamper-evident ledger.
//!
//! The flow follows OpenDP: a [`mechanism`] derives its sensitivity from its
//! clip norm and maps an input distance to a [`Charge`]; the
//! [`accountant`] (the only code that computes epsilon) composes charges and
//! reports the tighter of its RDP and PLD bounds; the [`budget`] filter
//! refuses a charge before any noise is drawn; the [`ledger`] records what
//! was spent.
//!
//! ```
//! use fedprofile_privacy::{Charge, accountant};
//!
//! let charge = Charge::subsampled_gaussian(0.01, 1.1, 1000)?;
//! let report = accountant::epsilon(&[charge], 1e-5)?;
//! assert!((report.rdp_epsilon - 1.7118).abs() < 1e-4);
//! assert!((report.epsilon - 1.5154).abs() < 2e-3);
//! # Ok::<(), fedprofile_privacy::PrivacyError>(())
//! ```

pub mod accountant;
pub mod budget;
pub mod calibrate;
pub mod discrete;
pub mod error;
pub mod hash_chain;
pub mod ledger;
mod math;
pub mod mechanism;
pub mod pld;
pub mod rdp;
pub mod sampling;
pub mod utility;

pub use accountant::{Accountant, AccountantKind, Charge, Composition, MechanismKind, Report};
pub use budget::{Decision, PrivacyBudget, would_exceed};
pub use error::PrivacyError;
pub use ledger::{Ledger, LedgerEntry, LedgerError, VerifiedLedger};
pub use mechanism::{
    AdaptiveClippingMechanism, GaussianMechanism, L2Clip, NoisedCount, SubsampledGaussianMechanism,
};
pub use sampling::PoissonSampling;
pub use utility::{UtilityWarning, assess_dp_sgd, dp_sgd_signal_to_noise};
