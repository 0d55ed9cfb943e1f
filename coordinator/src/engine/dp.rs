//! Client-level differential privacy at the coordinator: DP-FedAvg (McMahan et
//! al. 2018) with fixed or adaptive clipping (Andrew et al. 2021).
//!
//! Clients clip their whole update to norm S; the collector re-checks the norm
//! (an update above S is rejected); here the clipped updates are summed, Gaussian
//! noise of standard deviation z·S is added to the sum by the privacy crate's
//! mechanism, and the sum is divided by the fixed number of clients selected
//! (not by the number that answered, which would leak who dropped out).
//!
//! With adaptive clipping, S follows the γ-quantile of update norms: each round
//! the fraction of clients whose update norm was at most S is estimated with
//! Gaussian noise σ_b, and S ← S·exp(−η(b̃ − γ)). The pair (sum, count) then has
//! the privacy of one Gaussian mechanism of multiplier z when the sum's noise uses
//! z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) (Andrew et al., Theorem 1), which is what is
//! charged.
//!
//! Every round's charge is written to the coordinator's ledger before the noised
//! aggregate is used.

use std::path::Path;

use fedprofile_privacy::ledger::ChargeRecord;
use fedprofile_privacy::{
    Accountant, Charge, GaussianMechanism, Ledger, SubsampledGaussianMechanism,
};
use fedprofile_protocol::run::ClientDp;
use ndarray::Array1;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

/// Server-side DP failed (a ledger or accountant error): the round cannot be released.
#[derive(Debug, thiserror::Error)]
pub enum ServerDpError {
    /// The ledger could not be written.
    #[error("coordinator privacy ledger: {0}")]
    Ledger(#[from] fedprofile_privacy::LedgerError),
    /// The accountant refused the parameters.
    #[error("privacy accounting: {0}")]
    Privacy(#[from] fedprofile_privacy::PrivacyError),
}

/// The coordinator's DP-FedAvg state.
#[derive(Debug)]
pub struct ServerDp {
    config: ClientDp,
    clip_norm: f64,
    sampling_rate: f64,
    ledger: Option<Ledger>,
    charges: Vec<Charge>,
    rng: ChaCha20Rng,
    accountant: Accountant,
}

/// What one DP aggregation produced.
#[derive(Debug, Clone)]
pub struct DpAggregate {
    /// The noised mean update.
    pub delta: Array1<f64>,
    /// Cumulative ε of the run so far (at the configured δ).
    pub epsilon: f64,
    /// The clip norm for the next round.
    pub next_clip_norm: f64,
}

impl ServerDp {
    /// `sampling_rate`: the fraction of clients selected per round.
    pub fn new(
        config: ClientDp,
        sampling_rate: f64,
        ledger_path: Option<&Path>,
    ) -> Result<ServerDp, ServerDpError> {
        let ledger = ledger_path.map(Ledger::open).transpose()?;
        Ok(ServerDp {
            clip_norm: config.clip_norm,
            config,
            sampling_rate: sampling_rate.clamp(f64::MIN_POSITIVE, 1.0),
            ledger,
            charges: Vec::new(),
            rng: ChaCha20Rng::from_os_rng(),
            accountant: Accountant::default(),
        })
    }

    /// Restores the (adaptive) clip norm from a checkpoint.
    pub fn set_clip_norm(&mut self, clip_norm: f64) {
        if clip_norm.is_finite() && clip_norm > 0.0 {
            self.clip_norm = clip_norm;
        }
    }

    /// The clip norm S clients must use this round.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// Noise multiplier of the summed updates: z, or z_Δ with adaptive clipping.
    pub fn sum_noise_multiplier(&self) -> f64 {
        let z = self.config.noise_multiplier;
        match self.config.adaptive {
            None => z,
            Some(a) => {
                let inv = z.powi(-2) - (2.0 * a.count_noise_multiplier).powi(-2);
                // Validated at load: 2σ_b > z, so inv > 0.
                inv.max(f64::MIN_POSITIVE).powf(-0.5)
            }
        }
    }

    /// Aggregates clipped updates: noised sum divided by `selected`.
    /// `norms` are the clients' pre-clip update norms (for adaptive clipping).
    pub fn aggregate(
        &mut self,
        run_id: &str,
        round: u32,
        deltas: &[Array1<f64>],
        norms: &[f64],
        selected: usize,
    ) -> Result<DpAggregate, ServerDpError> {
        let dim = deltas.first().map_or(0, Array1::len);
        let mechanism = GaussianMechanism::new(self.sum_noise_multiplier(), self.clip_norm)?;
        // The charge comes from the mechanism's own privacy map, and is written
        // before the noised aggregate is released.
        let charge = SubsampledGaussianMechanism::new(
            GaussianMechanism::new(self.config.noise_multiplier, self.clip_norm)?,
            self.sampling_rate,
            1,
        )?
        .map(1)?;
        let epsilon = if let Some(ledger) = self.ledger.as_mut() {
            let appended = ledger.append(ChargeRecord {
                run_id: run_id.to_string(),
                round: u64::from(round),
                task_id: format!("{run_id}/r{round}/aggregate"),
                charge,
                clip_norm: self.clip_norm,
                delta: self.config.delta,
            })?;
            // A round re-run after a coordinator restart finds its charge already
            // in the ledger (same task id) and is not charged twice.
            appended.entry().cumulative_epsilon
        } else {
            self.charges.push(charge);
            self.accountant
                .epsilon(&self.charges, self.config.delta)?
                .epsilon
        };

        let mut sum = Array1::<f64>::zeros(dim);
        for d in deltas {
            sum += d;
        }
        let mut values = sum.to_vec();
        mechanism.add_noise(&mut values, &mut self.rng);
        let denominator = selected.max(1) as f64;
        let delta = Array1::from_vec(values) / denominator;

        if let Some(a) = self.config.adaptive {
            let below = norms.iter().filter(|n| **n <= self.clip_norm).count() as f64;
            let noise = Normal::new(0.0, a.count_noise_multiplier)
                .map(|n| n.sample(&mut self.rng))
                .unwrap_or(0.0);
            let fraction = (below + noise) / denominator;
            self.clip_norm *= (-a.learning_rate * (fraction - a.target_quantile)).exp();
        }
        Ok(DpAggregate {
            delta,
            epsilon,
            next_clip_norm: self.clip_norm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedprofile_protocol::run::AdaptiveClip;

    fn config(adaptive: Option<AdaptiveClip>) -> ClientDp {
        ClientDp {
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            delta: 1e-5,
            adaptive,
        }
    }

    #[test]
    fn noised_mean_divides_by_the_selected_count_and_charges_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut dp = ServerDp::new(config(None), 1.0, Some(&path)).unwrap();
        let deltas = vec![Array1::from_elem(2000, 0.5), Array1::from_elem(2000, 0.5)];
        let out = dp.aggregate("run", 1, &deltas, &[1.0, 1.0], 4).unwrap();
        // mean = (0.5 + 0.5) / 4 = 0.25; noise std on the mean = z·S / 4 = 0.25.
        let mean = out.delta.mean().unwrap();
        let std = out.delta.std(0.0);
        assert!((mean - 0.25).abs() < 0.03, "{mean}");
        assert!((std - 0.25).abs() < 0.02, "{std}");
        // The Gaussian mechanism with sigma 1, once, at delta 1e-5: 4.377 (Balle & Wang).
        assert!((out.epsilon - 4.377).abs() < 0.01, "{}", out.epsilon);
        let verified = fedprofile_privacy::ledger::verify(&path).unwrap();
        assert_eq!(verified.entries.len(), 1);
        // A coordinator restarted on the same ledger keeps counting from it.
        let mut again = ServerDp::new(config(None), 1.0, Some(&path)).unwrap();
        let out2 = again.aggregate("run", 2, &deltas, &[1.0, 1.0], 4).unwrap();
        assert!(out2.epsilon > out.epsilon);
        // Re-running round 2 (a resumed run) is not charged again.
        let mut resumed = ServerDp::new(config(None), 1.0, Some(&path)).unwrap();
        let out3 = resumed
            .aggregate("run", 2, &deltas, &[1.0, 1.0], 4)
            .unwrap();
        assert_eq!(out3.epsilon, out2.epsilon);
        assert_eq!(
            fedprofile_privacy::ledger::verify(&path)
                .unwrap()
                .entries
                .len(),
            2
        );
    }

    #[test]
    fn adaptive_clipping_moves_the_clip_norm_toward_the_quantile() {
        let adaptive = AdaptiveClip {
            target_quantile: 0.5,
            learning_rate: 0.2,
            count_noise_multiplier: 1e-3,
        };
        let mut dp = ServerDp::new(config(Some(adaptive)), 1.0, None).unwrap();
        let deltas = vec![Array1::zeros(3); 4];
        // Every update norm is far above S: the clip norm must grow.
        let out = dp.aggregate("run", 1, &deltas, &[10.0; 4], 4).unwrap();
        assert!((out.next_clip_norm - (0.2f64 * 0.5).exp()).abs() < 1e-3);
        // Every norm below S: it shrinks.
        let out = dp.aggregate("run", 2, &deltas, &[0.0; 4], 4).unwrap();
        assert!(out.next_clip_norm < (0.2f64 * 0.5).exp());
        // The sum's noise is larger than z to pay for the count.
        assert!(dp.sum_noise_multiplier() > 1.0);
    }
}
