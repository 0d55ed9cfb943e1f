//! Prints the cost of accounting (no assertions):
//!
//! * `N` ledger appends of DP-SGD-like charges (q 0.09, sigma 1.0, 40 steps
//!   each) into a fresh file, with the time of the first and last 10;
//! * the composition of a 500-round plan (500 identical charges) by the accountant.
//!
//! `cargo bench -p fedprofile-privacy` (N = 1000; set `BENCH_APPENDS` to change it).
//! Only public API that predates the incremental accountant is used, so the
//! same file measures older revisions.

use std::time::{Duration, Instant};

use fedprofile_privacy::ledger::{ChargeRecord, Ledger};
use fedprofile_privacy::{Accountant, Charge};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("BENCH_APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let charge = Charge::subsampled_gaussian(0.09, 1.0, 40)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.jsonl");
    let mut ledger = Ledger::open(&path)?;
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    let mut last = 0.0;
    for i in 0..n {
        let t = Instant::now();
        let appended = ledger.append(ChargeRecord {
            run_id: "bench".to_string(),
            round: i as u64,
            task_id: format!("task-{i}"),
            charge,
            clip_norm: 1.0,
            delta: 1e-5,
        })?;
        times.push(t.elapsed());
        last = appended.entry().cumulative_epsilon;
    }
    let total = start.elapsed();
    let k = n.min(10);
    let first: Duration = times[..k].iter().sum();
    let tail: Duration = times[n - k..].iter().sum();
    println!(
        "ledger: {n} appends (q 0.09, sigma 1.0, 40 steps each) in {:.1} ms, {:.2} ms per append; \
         first {k}: {:.2} ms each, last {k}: {:.2} ms each; cumulative epsilon {last:.4}",
        ms(total),
        ms(total) / n as f64,
        ms(first) / k as f64,
        ms(tail) / k as f64,
    );

    let t = Instant::now();
    let reopened = Ledger::open(&path)?;
    println!(
        "ledger: open (verify {} lines) in {:.1} ms",
        reopened.entries().len(),
        ms(t.elapsed())
    );

    let plan = vec![charge; 500];
    let acc = Accountant::default();
    let t = Instant::now();
    let report = acc.epsilon(&plan, 1e-5)?;
    println!(
        "accountant: 500-round plan (500 identical charges) composed in {:.1} ms: epsilon {:.4} ({:?})",
        ms(t.elapsed()),
        report.epsilon,
        report.accountant
    );
    Ok(())
}
