//! Record-level differential privacy on the client: the DP-SGD plan of a task,
//! the budget that this partner's config sets, and the ledger that records every
//! charge. The budget is enforced here, where the data lives: a task whose cost,
//! composed with everything the ledger holds, would exceed the budget is refused
//! before any noise is drawn; a task is charged (and the charge flushed to disk)
//! before its update leaves.

use std::collections::HashMap;
use std::path::PathBuf;

use fedprofile_learning::dp::{DpSgdParams, ValidDpSgdParams};
use fedprofile_privacy::ledger::{ChargeRecord, Guarded, LedgerEntry};
use fedprofile_privacy::{Charge, Ledger, PrivacyBudget};
use fedprofile_protocol::messages::{RecordDpTask, RefusalKind};

/// A privacy step that cannot go ahead; becomes the task's refusal reason.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyRefusal {
    /// The task asks for DP but this client has no budget.
    #[error("this client has no privacy budget configured (add a [privacy] section to its config)")]
    NoBudget,
    /// The task does not use record-level DP and this client requires it.
    #[error("this client trains only with record-level differential privacy (privacy.require_dp)")]
    DpRequired,
    /// Composition with the ledger would exceed the budget.
    #[error(
        "privacy budget would be exceeded: this task would bring epsilon to {after:.4} (delta {delta}), above the budget of {budget}; {spent:.4} spent so far"
    )]
    OverBudget {
        /// ε after the task.
        after: f64,
        /// ε spent before.
        spent: f64,
        /// The budget's ε.
        budget: f64,
        /// δ.
        delta: f64,
    },
    /// The task was charged before but its result is gone (e.g. a restart).
    #[error(
        "task {0} was already charged in the ledger but its result was lost (this client restarted); it is not trained again, so it is not charged twice"
    )]
    AlreadyCharged(String),
    /// Bad parameters.
    #[error("invalid DP parameters: {0}")]
    Invalid(String),
    /// The ledger could not be read or written.
    #[error("privacy ledger: {0}")]
    Ledger(#[from] fedprofile_privacy::LedgerError),
    /// The accountant failed.
    #[error("privacy accounting: {0}")]
    Accounting(#[from] fedprofile_privacy::PrivacyError),
}

impl PrivacyRefusal {
    /// What the coordinator should make of this refusal: a budget or policy
    /// refusal cannot succeed on retry; a lost result must not be re-asked
    /// under a new task id (that would charge twice).
    pub fn refusal_kind(&self) -> RefusalKind {
        match self {
            PrivacyRefusal::OverBudget { .. } => RefusalKind::BudgetExhausted,
            PrivacyRefusal::AlreadyCharged(_) => RefusalKind::ResultLost,
            PrivacyRefusal::NoBudget | PrivacyRefusal::DpRequired => RefusalKind::Policy,
            PrivacyRefusal::Invalid(_)
            | PrivacyRefusal::Ledger(_)
            | PrivacyRefusal::Accounting(_) => RefusalKind::Other,
        }
    }
}

/// The DP-SGD parameters of a task on this client's data, with its cost.
#[derive(Debug, Clone)]
pub struct DpPlan {
    /// Checked DP-SGD parameters (q, steps, σ, C).
    pub params: ValidDpSgdParams,
    /// What one task costs (from the mechanism's privacy map).
    pub charge: Charge,
}

/// Works out σ (calibrating to the run's target ε when asked) and the charge of
/// one training task for `examples` rows.
pub fn plan(
    task: &RecordDpTask,
    examples: usize,
    expected_batch_size: usize,
    epochs: usize,
    learning_rate: f64,
    calibrated: &mut HashMap<String, f64>,
) -> Result<DpPlan, PrivacyRefusal> {
    let invalid = |e: &dyn std::fmt::Display| PrivacyRefusal::Invalid(e.to_string());
    // σ is irrelevant for q and steps: derive them first with a placeholder.
    let shape = DpSgdParams {
        clip_norm: task.clip_norm,
        noise_multiplier: 1.0,
        expected_batch_size,
        epochs,
        learning_rate,
    }
    .check(examples)
    .map_err(|e| invalid(&e))?;
    let sigma = match (task.noise_multiplier, task.target_epsilon) {
        (Some(z), _) => z,
        (None, Some(target)) => {
            let total = shape.steps() as u64 * u64::from(task.planned_rounds.max(1));
            let key = format!("{target}/{}/{}/{total}", task.delta, shape.sampling_rate());
            match calibrated.get(&key) {
                Some(z) => *z,
                None => {
                    let z = fedprofile_privacy::calibrate::noise_multiplier(
                        target,
                        task.delta,
                        shape.sampling_rate(),
                        total,
                    )?;
                    calibrated.insert(key, z);
                    z
                }
            }
        }
        (None, None) => {
            return Err(PrivacyRefusal::Invalid(
                "the task has neither a noise multiplier nor a target epsilon".into(),
            ));
        }
    };
    let params = DpSgdParams {
        clip_norm: task.clip_norm,
        noise_multiplier: sigma,
        expected_batch_size,
        epochs,
        learning_rate,
    }
    .check(examples)
    .map_err(|e| invalid(&e))?;
    let charge = params.mechanism().map(1).map_err(|e| invalid(&e))?;
    Ok(DpPlan { params, charge })
}

/// The noise and the cost of one k-means round on this client.
#[derive(Debug, Clone, Copy)]
pub struct StatisticsPlan {
    /// σ of the Gaussian release of `(C · counts, sums)`.
    pub noise_multiplier: f64,
    /// What one round costs.
    pub charge: Charge,
}

/// A statistics family (k-means) under record-level DP: one Gaussian release
/// per round over all of the client's rows (no subsampling, the family's
/// mechanism), with σ given or calibrated so that `planned_rounds` releases
/// cost the run's target ε.
pub fn plan_statistics(
    model: &fedprofile_learning::AnyModel,
    task: &RecordDpTask,
    calibrated: &mut HashMap<String, f64>,
) -> Result<StatisticsPlan, PrivacyRefusal> {
    let sigma = match (task.noise_multiplier, task.target_epsilon) {
        (Some(z), _) => z,
        (None, Some(target)) => {
            let rounds = u64::from(task.planned_rounds.max(1));
            let key = format!("{}/{target}/{}/{rounds}", model.family(), task.delta);
            match calibrated.get(&key) {
                Some(z) => *z,
                None => {
                    let z = fedprofile_privacy::calibrate::noise_multiplier(
                        target, task.delta, 1.0, rounds,
                    )?;
                    calibrated.insert(key, z);
                    z
                }
            }
        }
        (None, None) => {
            return Err(PrivacyRefusal::Invalid(
                "the task has neither a noise multiplier nor a target epsilon".into(),
            ));
        }
    };
    let mechanism = model
        .ops()
        .statistics_mechanism(model, sigma, task.clip_norm)
        .map_err(|e| PrivacyRefusal::Invalid(e.to_string()))?;
    let charge = mechanism
        .map(1)
        .map_err(|e| PrivacyRefusal::Invalid(e.to_string()))?;
    Ok(StatisticsPlan {
        noise_multiplier: sigma,
        charge,
    })
}

/// This partner's budget and ledger.
#[derive(Debug)]
pub struct PrivacyGuard {
    budget: PrivacyBudget,
    ledger: Ledger,
}

/// The `[privacy]` settings of a client config.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacySettings {
    /// Budget ε for everything this ledger holds.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The ledger file.
    pub ledger: PathBuf,
    /// Refuse training tasks without record-level DP.
    pub require_dp: bool,
}

impl PrivacyGuard {
    /// Opens (and verifies) the ledger.
    pub fn open(settings: &PrivacySettings) -> Result<PrivacyGuard, PrivacyRefusal> {
        if let Some(dir) = settings.ledger.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                PrivacyRefusal::Invalid(format!(
                    "cannot create the ledger folder '{}': {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(PrivacyGuard {
            budget: PrivacyBudget::new(settings.epsilon, settings.delta)?,
            ledger: Ledger::open(settings.ledger.clone())?,
        })
    }

    /// The budget.
    pub fn budget(&self) -> &PrivacyBudget {
        &self.budget
    }

    /// Cumulative ε of everything the ledger holds.
    pub fn spent(&self) -> f64 {
        self.ledger
            .entries()
            .last()
            .map_or(0.0, |e| e.cumulative_epsilon)
    }

    /// Computes the cumulative figures of the run's remaining `rounds` charges
    /// ahead (at most 500), so later rounds' accounting does not grow with the
    /// run (see `Ledger::plan_ahead`). A failure only loses the head start.
    pub fn plan_ahead(&self, charge: Charge, rounds: u32) {
        if let Err(e) = self
            .ledger
            .plan_ahead(charge, rounds.min(500), self.budget.delta())
        {
            tracing::warn!("could not plan the run's privacy accounting ahead: {e}");
        }
    }

    /// Refuses if `task_id` is charged already or if `charge` would exceed the
    /// budget; otherwise writes the charge (synced to disk) and returns the entry.
    pub fn charge(
        &mut self,
        run_id: &str,
        round: u32,
        task_id: &str,
        charge: Charge,
        clip_norm: f64,
    ) -> Result<LedgerEntry, PrivacyRefusal> {
        if self.ledger.entries().iter().any(|e| e.task_id == task_id) {
            return Err(PrivacyRefusal::AlreadyCharged(task_id.to_string()));
        }
        let spent = self.spent();
        let guarded = self.ledger.append_within(
            ChargeRecord {
                run_id: run_id.to_string(),
                round: u64::from(round),
                task_id: task_id.to_string(),
                charge,
                clip_norm,
                delta: self.budget.delta(),
            },
            &self.budget,
        )?;
        let appended = match guarded {
            Guarded::Charged(appended) => appended,
            Guarded::Refused { after } => {
                return Err(PrivacyRefusal::OverBudget {
                    after,
                    spent,
                    budget: self.budget.epsilon(),
                    delta: self.budget.delta(),
                });
            }
        };
        Ok(appended.entry().clone())
    }
}
