//! Prints the cost of exact noise (no assertions): discrete Gaussian draws
//! per second at σ = 1, 10 and 1000 (CKS20 sampler, exact integers), the
//! cost of noising a 50-dimensional vector through [`GaussianMechanism`]
//! (grid rounding included), and the same figures for the floating-point
//! `rand_distr::Normal` the crate used before (kept here for comparison only).
//!
//! `cargo bench -p fedprofile-privacy --bench sampler` (set `BENCH_DRAWS` to
//! change the number of draws, default 200 000).

use std::hint::black_box;
use std::time::Instant;

use fedprofile_privacy::GaussianMechanism;
use fedprofile_privacy::discrete::discrete_gaussian;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::var("BENCH_DRAWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for sigma in [1u128, 10, 1000] {
        let t = Instant::now();
        let mut acc = 0i128;
        for _ in 0..n {
            acc += discrete_gaussian(sigma * sigma, 1, &mut rng)?;
        }
        black_box(acc);
        let discrete = f64::from(n) / t.elapsed().as_secs_f64();
        let normal = Normal::new(0.0, sigma as f64)?;
        let t = Instant::now();
        let mut acc = 0.0;
        for _ in 0..n {
            acc += normal.sample(&mut rng);
        }
        black_box(acc);
        let float = f64::from(n) / t.elapsed().as_secs_f64();
        println!(
            "sigma {sigma:>5}: discrete {discrete:>12.0} draws/s, float {float:>12.0} draws/s"
        );
    }
    let mechanism = GaussianMechanism::new(1.0, 1.0)?;
    let vectors = (n / 50).max(1);
    let mut v = vec![0.1; 50];
    let t = Instant::now();
    for _ in 0..vectors {
        mechanism.add_noise_checked(&mut v, &mut rng)?;
        v.fill(0.1);
    }
    let discrete = t.elapsed().as_secs_f64() / f64::from(vectors) * 1e6;
    let normal = Normal::new(0.0, 1.0)?;
    let t = Instant::now();
    for _ in 0..vectors {
        for x in v.iter_mut() {
            *x += normal.sample(&mut rng);
        }
        black_box(&v);
        v.fill(0.1);
    }
    let float = t.elapsed().as_secs_f64() / f64::from(vectors) * 1e6;
    println!(
        "50-dim vector, z = 1, clip 1: discrete grid {discrete:.2} us, float {float:.2} us ({vectors} vectors)"
    );
    Ok(())
}
