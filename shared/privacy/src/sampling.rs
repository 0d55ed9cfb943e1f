//! Poisson sampling of clients, the sampling that client-level DP accounts.
//!
//! # Proof sketch
//!
//! The accountant's subsampled Gaussian charge at rate `q` assumes that each
//! record (here: each client) is included in a round independently with
//! probability `q`, and that nobody who sees the release learns who was
//! included. [`PoissonSampling::sample`] includes each member of the
//! population independently with probability exactly `q`, drawing from a
//! cryptographically secure generator (the type bound), so the selection is
//! neither fixed-size nor predictable from a run file's seed. The caller
//! charges [`PoissonSampling::rate`], the same `q`: one value is both what is
//! sampled and what is charged. A round that samples few (or no) clients still
//! releases a noised aggregate and is charged like any other.

use rand::{CryptoRng, Rng};

use crate::error::PrivacyError;

/// Independent inclusion of each client with probability `rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoissonSampling {
    rate: f64,
}

impl PoissonSampling {
    /// A sampler at `rate` in `(0, 1]`.
    pub fn new(rate: f64) -> Result<PoissonSampling, PrivacyError> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(PrivacyError::InvalidSamplingRate(rate));
        }
        Ok(PoissonSampling { rate })
    }

    /// The inclusion probability: what the accountant must charge.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The members of `population` included this round, in their order.
    pub fn sample<T: Clone, R: Rng + CryptoRng + ?Sized>(
        &self,
        population: &[T],
        rng: &mut R,
    ) -> Vec<T> {
        population
            .iter()
            .filter(|_| self.rate >= 1.0 || rng.random::<f64>() < self.rate)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Over 2,000 rounds each client is selected with frequency within four
    /// standard errors of q, and the round sizes vary (not fixed-size sampling).
    #[test]
    fn each_client_is_selected_with_probability_q() {
        let clients: Vec<String> = (0..8).map(|i| format!("client-{i}")).collect();
        for q in [0.1, 0.5] {
            let sampling = PoissonSampling::new(q).unwrap();
            let mut rng = ChaCha20Rng::from_os_rng();
            let rounds = 2_000;
            let mut hits = vec![0u32; clients.len()];
            let mut sizes = std::collections::BTreeSet::new();
            for _ in 0..rounds {
                let chosen = sampling.sample(&clients, &mut rng);
                sizes.insert(chosen.len());
                for c in chosen {
                    let i = clients.iter().position(|x| *x == c).unwrap();
                    hits[i] += 1;
                }
            }
            let se = (q * (1.0 - q) / f64::from(rounds)).sqrt();
            for (c, h) in clients.iter().zip(&hits) {
                let f = f64::from(*h) / f64::from(rounds);
                assert!((f - q).abs() <= 4.0 * se, "{c}: {f} vs q {q} (se {se})");
            }
            assert!(sizes.len() > 3, "round sizes {sizes:?}");
            assert_eq!(sampling.rate(), q);
        }
    }

    #[test]
    fn rate_one_takes_everyone_and_bad_rates_are_errors() {
        let s = PoissonSampling::new(1.0).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(s.sample(&[1, 2, 3], &mut rng), vec![1, 2, 3]);
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(PoissonSampling::new(bad).is_err(), "{bad}");
        }
    }
}
