//! Prints how long loading a partner's split takes (no assertions): reading,
//! cleaning and fusing the exports of every demo partner's `train` split, and
//! encoding them under the federation's feature template, for the Telco demo
//! (`deploy/demo/`) and the Caravan demo (`deploy/demo/caravan/`).
//!
//! `cargo bench -p fedprofile-data --bench load`; `BENCH_REPEAT` (default 20)
//! sets how many loads each figure is the median of (after one warm-up load
//! that fills the file cache).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedprofile_data::{Schema, load_split};

fn demo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/demo")
        .join(path)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    println!(
        "{:<28} {:>8} {:>8} {:>12} {:>12}",
        "split", "users", "dim", "load ms", "encode ms"
    );
    for (schema_file, data, partners) in [
        (
            "schema.toml",
            "data",
            &["partner-a", "partner-b", "partner-c", "partner-d"][..],
        ),
        (
            "caravan/schema.toml",
            "caravan/data",
            &["insurer-a", "insurer-b", "insurer-c"][..],
        ),
    ] {
        let schema_path = demo(schema_file);
        let schema = match Schema::from_path(&schema_path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", schema_path.display());
                std::process::exit(1);
            }
        };
        for partner in partners {
            let dir = demo(data).join(partner);
            let first = match load_split(&schema, &dir, "train") {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{}: {e}", dir.display());
                    std::process::exit(1);
                }
            };
            let spec = schema.feature_template();
            let (mut loads, mut encodes) = (Vec::new(), Vec::new());
            let mut dim = 0;
            for _ in 0..repeat {
                let start = Instant::now();
                let loaded = load_split(&schema, &dir, "train").expect("loaded once already");
                loads.push(start.elapsed());
                let start = Instant::now();
                let x = loaded.dataset.encode(&spec).expect("its own template");
                encodes.push(start.elapsed());
                dim = x.ncols();
            }
            println!(
                "{:<28} {:>8} {:>8} {:>12.2} {:>12.2}",
                format!("{data}/{partner}/train"),
                first.dataset.len(),
                dim,
                median(loads),
                median(encodes)
            );
        }
    }
}
