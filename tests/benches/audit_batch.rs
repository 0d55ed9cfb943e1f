//! The cost of auditing refusals: 5,000 refused tasks (one round of a large
//! federation) written to the audit log one by one (one write and one fsync
//! per line, plus the database's recorded audit head after each) versus
//! deferred and flushed as one batch (one write, one fsync, one head update).
//! The log is in cargo's target folder, on a real disk, so fsyncs are real;
//! both chains are verified afterwards.
//!
//! Run: `cargo bench -p fedprofile-e2e --bench audit_batch`

use std::path::Path;
use std::time::Instant;

use fedprofile_coordinator::audit::{self, AuditLog};
use fedprofile_coordinator::state;

const REFUSALS: usize = 5_000;

fn refusal(log: &AuditLog, i: usize, batched: bool) {
    let client = format!("client-{:04}", i % 5_000);
    let detail = format!("task-r1-a0-{i}: privacy budget exhausted (epsilon 0.98 of 1.0 spent)");
    if batched {
        log.defer(&client, "task.refused", Some("bench-run"), &detail);
    } else {
        log.note(&client, "task.refused", Some("bench-run"), &detail);
    }
}

/// Audits the refusals into a fresh state folder; returns the seconds taken.
fn scenario(dir: &Path, batched: bool, with_db: bool) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
    let opened;
    let bare;
    let log: &AuditLog = if with_db {
        opened = state::open(dir, false).expect("open state");
        &opened.audit
    } else {
        bare = AuditLog::open(&dir.join(state::AUDIT_FILE)).expect("open log");
        &bare
    };
    let start = Instant::now();
    for i in 0..REFUSALS {
        refusal(log, i, batched);
    }
    log.flush();
    let secs = start.elapsed().as_secs_f64();
    let entries = audit::verify(&dir.join(state::AUDIT_FILE)).expect("the chain verifies");
    assert!(entries.len() >= REFUSALS, "{} lines", entries.len());
    secs
}

fn main() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-batch-bench");
    println!(
        "auditing {REFUSALS} refused tasks (log under {})",
        root.display()
    );
    let report = |name: &str, secs: f64| {
        println!(
            "  {name:<44} {:>9.1} ms total  {:>8.3} ms per refusal",
            secs * 1e3,
            secs * 1e3 / REFUSALS as f64
        );
    };
    report(
        "one by one, audit log only (before)",
        scenario(&root.join("bare-single"), false, false),
    );
    report(
        "one by one, audit log + recorded head",
        scenario(&root.join("db-single"), false, true),
    );
    report(
        "batched, audit log + recorded head (now)",
        scenario(&root.join("db-batched"), true, true),
    );
    let _ = std::fs::remove_dir_all(&root);
}
