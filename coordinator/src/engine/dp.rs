//! Client-level differential privacy at the coordinator: DP-FedAvg (McMahan et
//! al. 2018) with fixed or adaptive clipping (Andrew et al. 2021).
//!
//! Each connected client is sampled independently with probability
//! q = `clients.fraction_per_round` (Poisson sampling from a CSPRNG, never from
//! the run file's seed); that same q is charged ([`fedprofile_privacy::sampling`]).
//! Sampled clients clip their whole update to norm S; the collector re-checks the
//! norm (an update above S is rejected); here the clipped updates are summed,
//! the privacy crate's mechanism adds Gaussian noise, and the sum is divided by
//! the expected number of sampled clients q·N (N: clients connected when the
//! round sampled), not by the number that answered, which would leak who
//! dropped out. Every round releases and is charged, however many clients were
//! sampled or answered.
//!
//! With adaptive clipping, S follows the γ-quantile of update norms through
//! [`AdaptiveClippingMechanism`]: one mechanism that noises the sum and the
//! centred count of clients within S, and charges the pair as one Gaussian of
//! multiplier z (Andrew et al., Theorem 1). Any failure to draw noise fails the
//! round: nothing is released.
//!
//! Every round's charge is written to the coordinator's ledger before the noised
//! aggregate is used.

use std::path::Path;

use fedprofile_config::run::ClientDp;
use fedprofile_privacy::ledger::ChargeRecord;
use fedprofile_privacy::{
    Accountant, AdaptiveClippingMechanism, Charge, GaussianMechanism, Ledger, PoissonSampling,
    SubsampledGaussianMechanism,
};
use ndarray::Array1;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Server-side DP failed (a ledger or accountant error): the round cannot be released.
#[derive(Debug, thiserror::Error)]
pub enum ServerDpError {
    /// The ledger could not be written.
    #[error("coordinator privacy ledger: {0}")]
    Ledger(#[from] fedprofile_privacy::LedgerError),
    /// The accountant or a mechanism refused the parameters, or noise could not be drawn.
    #[error("privacy accounting: {0}")]
    Privacy(#[from] fedprofile_privacy::PrivacyError),
}

/// The coordinator's DP-FedAvg state.
#[derive(Debug)]
pub struct ServerDp {
    config: ClientDp,
    clip_norm: f64,
    sampling: PoissonSampling,
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
    /// `sampling_rate`: the probability that a connected client is sampled in a round.
    pub fn new(
        config: ClientDp,
        sampling_rate: f64,
        ledger_path: Option<&Path>,
    ) -> Result<ServerDp, ServerDpError> {
        let ledger = ledger_path.map(Ledger::open).transpose()?;
        Ok(ServerDp {
            clip_norm: config.clip_norm,
            config,
            sampling: PoissonSampling::new(sampling_rate)?,
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

    /// The sampling rate q that is both sampled and charged.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling.rate()
    }

    /// This round's clients: each of `connected` independently with probability q.
    pub fn sample(&mut self, connected: &[String]) -> Vec<String> {
        self.sampling.sample(connected, &mut self.rng)
    }

    /// Noise multiplier of the summed updates: z, or z_Δ with adaptive clipping.
    pub fn sum_noise_multiplier(&self) -> Result<f64, ServerDpError> {
        Ok(match self.config.adaptive {
            None => self.config.noise_multiplier,
            Some(a) => AdaptiveClippingMechanism::new(
                self.config.noise_multiplier,
                a.count_noise_multiplier,
                self.clip_norm,
            )?
            .sum_noise_multiplier(),
        })
    }

    /// Aggregates clipped updates: the noised sum divided by q·`population`
    /// (the expected number of sampled clients). `norms` are the clients'
    /// pre-clip update norms (for adaptive clipping).
    pub fn aggregate(
        &mut self,
        run_id: &str,
        round: u32,
        deltas: &[Array1<f64>],
        norms: &[f64],
        population: usize,
        dim: usize,
    ) -> Result<DpAggregate, ServerDpError> {
        let q = self.sampling.rate();
        // One mechanism gives both the noise and the charge.
        let adaptive = self
            .config
            .adaptive
            .map(|a| {
                AdaptiveClippingMechanism::new(
                    self.config.noise_multiplier,
                    a.count_noise_multiplier,
                    self.clip_norm,
                )
                .map(|m| (a, m))
            })
            .transpose()?;
        let fixed = SubsampledGaussianMechanism::new(
            GaussianMechanism::new(self.config.noise_multiplier, self.clip_norm)?,
            q,
            1,
        )?;
        let charge = match &adaptive {
            Some((_, m)) => m.map(q, 1)?,
            None => fixed.map(1)?,
        };
        // Written before the noised aggregate is released.
        let epsilon = if let Some(ledger) = self.ledger.as_mut() {
            // A round re-run after a coordinator restart releases a second noised
            // aggregate (fresh noise: the first may have reached clients in the
            // evaluation before the crash), so it is a second release and is
            // charged again, under the next free task id of the round.
            let mut again = 0u32;
            loop {
                let task_id = match again {
                    0 => format!("{run_id}/r{round}/aggregate"),
                    k => format!("{run_id}/r{round}/aggregate/again-{k}"),
                };
                let appended = ledger.append(ChargeRecord {
                    run_id: run_id.to_string(),
                    round: u64::from(round),
                    task_id,
                    charge,
                    clip_norm: self.clip_norm,
                    delta: self.config.delta,
                })?;
                if let fedprofile_privacy::ledger::Appended::New(entry) = appended {
                    break entry.cumulative_epsilon;
                }
                again += 1;
            }
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
        let expected_clients = (q * population as f64).max(1.0);
        match adaptive {
            Some((a, m)) => {
                let count = m.release(&mut values, norms, &mut self.rng)?;
                let fraction = count.unclipped_fraction(expected_clients);
                self.clip_norm *= (-a.learning_rate * (fraction - a.target_quantile)).exp();
            }
            None => fixed
                .gaussian()
                .add_noise_checked(&mut values, &mut self.rng)?,
        }
        let delta = Array1::from_vec(values) / expected_clients;
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
    use fedprofile_config::run::AdaptiveClip;

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
        let out = dp
            .aggregate("run", 1, &deltas, &[1.0, 1.0], 4, 2000)
            .unwrap();
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
        let out2 = again
            .aggregate("run", 2, &deltas, &[1.0, 1.0], 4, 2000)
            .unwrap();
        assert!(out2.epsilon > out.epsilon);
        // Re-running round 2 (a resumed run) releases fresh noise: a second
        // release, charged again under the round's next task id.
        let mut resumed = ServerDp::new(config(None), 1.0, Some(&path)).unwrap();
        let out3 = resumed
            .aggregate("run", 2, &deltas, &[1.0, 1.0], 4, 2000)
            .unwrap();
        assert!(out3.epsilon > out2.epsilon);
        let entries = fedprofile_privacy::ledger::verify(&path).unwrap().entries;
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].task_id, "run/r2/aggregate/again-1");
    }

    #[test]
    fn adaptive_clipping_moves_the_clip_norm_toward_the_quantile() {
        let adaptive = AdaptiveClip {
            target_quantile: 0.5,
            learning_rate: 0.2,
            count_noise_multiplier: 1e-3,
        };
        // σ_b must exceed z / 2: a small z keeps the count's noise small too.
        let mut cfg = config(Some(adaptive));
        cfg.noise_multiplier = 1e-3;
        let mut dp = ServerDp::new(cfg, 1.0, None).unwrap();
        let deltas = vec![Array1::zeros(3); 4];
        // Every update norm is far above S: the clip norm must grow.
        let out = dp.aggregate("run", 1, &deltas, &[10.0; 4], 4, 3).unwrap();
        assert!((out.next_clip_norm - (0.2f64 * 0.5).exp()).abs() < 1e-3);
        // Every norm below S: it shrinks.
        let out = dp.aggregate("run", 2, &deltas, &[0.0; 4], 4, 3).unwrap();
        assert!(out.next_clip_norm < (0.2f64 * 0.5).exp());
        // The sum's noise is larger than z to pay for the count.
        assert!(dp.sum_noise_multiplier().unwrap() > 1e-3);
        // A count noise that cannot pay for the count fails closed: no release.
        let mut bad = config(Some(AdaptiveClip {
            count_noise_multiplier: 0.4,
            ..adaptive
        }));
        bad.noise_multiplier = 1.0;
        let mut dp = ServerDp::new(bad, 1.0, None).unwrap();
        assert!(dp.aggregate("run", 1, &deltas, &[1.0; 4], 4, 3).is_err());
    }

    /// The sampling rate that selects the clients is the one charged: over
    /// 2,000 rounds of 8 clients at q = 0.5 each client is sampled within four
    /// standard errors of q, and the ledger's charges all say q = 0.5. (Before,
    /// `ceil(q·n).max(min_per_round)` clients were chosen without replacement
    /// and charged as Poisson sampling at q.)
    #[test]
    fn the_charged_sampling_rate_is_the_sampled_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut dp = ServerDp::new(config(None), 0.5, Some(&path)).unwrap();
        let clients: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let rounds = 2_000;
        let mut hits = std::collections::HashMap::<String, u32>::new();
        for _ in 0..rounds {
            for c in dp.sample(&clients) {
                *hits.entry(c).or_default() += 1;
            }
        }
        let se = (0.25f64 / f64::from(rounds)).sqrt();
        for c in &clients {
            let f = f64::from(hits.get(c).copied().unwrap_or(0)) / f64::from(rounds);
            assert!((f - 0.5).abs() <= 4.0 * se, "{c}: {f}");
        }
        assert_eq!(dp.sampling_rate(), 0.5);
        let deltas = vec![Array1::from_elem(5, 0.1); 3];
        for round in 1..=3 {
            dp.aggregate("run", round, &deltas, &[0.5; 3], 8, 5)
                .unwrap();
        }
        let verified = fedprofile_privacy::ledger::verify(&path).unwrap();
        assert_eq!(verified.entries.len(), 3);
        assert!(
            verified
                .entries
                .iter()
                .all(|e| e.q == 0.5 && e.sigma == 1.0)
        );
    }
}
