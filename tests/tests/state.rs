//! State that cannot vanish silently, with the real binaries over mTLS: the
//! coordinator refuses to start when its database or audit log was deleted,
//! emptied, cut or corrupted, or when the database's write-ahead log was
//! deleted mid-run, each with one sentence naming what is wrong and what to do;
//! `serve --accept-state-loss` starts anyway and audits the loss. (Before: a
//! deleted database started as "no runs", an emptied audit log as a new chain
//! that verified, a cut last line went unnoticed, a corrupt database was
//! served, and a deleted WAL made the running run vanish with exit 0.)

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use fedprofile_e2e::{PARTNERS, Sandbox, bin, run_bounded, telco_run};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A sandbox whose state folder holds one finished one-round run.
fn finished_run() -> (Sandbox, PathBuf) {
    let sandbox = Sandbox::new();
    let (config, run) = sandbox.write_coordinator(&telco_run(1, 4, 4, 30.0));
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut clients = sandbox.start_clients(&PARTNERS, port, &[]);
    let status = coordinator.wait(Duration::from_secs(120));
    assert!(status.success(), "{}", coordinator.read_stderr());
    for c in &mut clients {
        let _ = c.wait(Duration::from_secs(30));
    }
    (sandbox, config)
}

fn verify_audit(sandbox: &Sandbox) -> Output {
    let mut cmd = Command::new(bin("fedprofile-coordinator"));
    cmd.args(["audit", "verify"])
        .arg(sandbox.path("state/audit.jsonl"));
    run_bounded(&mut cmd, Duration::from_secs(30))
}

/// Refused with exit 1, one message naming the state folder and the way out.
fn assert_refused(out: &Output, sandbox: &Sandbox, needle: &str) -> String {
    let why = text(out);
    assert_eq!(out.status.code(), Some(1), "not refused: {why}");
    assert!(why.contains(needle), "{why}");
    assert!(
        why.contains(&sandbox.path("state").display().to_string()),
        "{why}"
    );
    assert!(why.contains("--accept-state-loss"), "{why}");
    assert!(!why.contains("panicked"), "{why}");
    why
}

#[test]
fn a_deleted_database_is_refused_and_accepting_the_loss_is_audited() {
    let (sandbox, config) = finished_run();
    let run_id = fs::read_to_string(sandbox.path("out/summary.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["run_id"].as_str().map(str::to_string));
    for f in ["coordinator.db", "coordinator.db-wal", "coordinator.db-shm"] {
        let _ = fs::remove_file(sandbox.path(&format!("state/{f}")));
    }
    let refused = sandbox.serve_until_idle(&config, &[]);
    let why = assert_refused(&refused, &sandbox, "is missing or empty");
    assert!(why.contains("last committed round 1 of run e2e-"), "{why}");
    // A refusal changes nothing: refused again.
    assert_refused(
        &sandbox.serve_until_idle(&config, &[]),
        &sandbox,
        "missing or empty",
    );

    let accepted = sandbox.serve_until_idle(&config, &["--accept-state-loss"]);
    assert!(accepted.status.success(), "{}", text(&accepted));
    let log = fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    let lost = log
        .lines()
        .find(|l| l.contains("\"action\":\"state.lost\""))
        .unwrap_or_else(|| panic!("no state.lost event in\n{log}"));
    assert!(lost.contains("database"), "{lost}");
    assert!(
        lost.contains("last committed round 1 of run e2e-"),
        "{lost}"
    );
    if let Some(id) = run_id {
        assert!(lost.contains(&id), "{lost}");
    }
    let verified = verify_audit(&sandbox);
    assert!(verified.status.success(), "{}", text(&verified));
    // Re-anchored: the next start needs no flag.
    let again = sandbox.serve_until_idle(&config, &[]);
    assert!(again.status.success(), "{}", text(&again));
}

#[test]
fn an_emptied_audit_log_is_refused() {
    let (sandbox, config) = finished_run();
    fs::write(sandbox.path("state/audit.jsonl"), b"").unwrap();
    let refused = sandbox.serve_until_idle(&config, &[]);
    let why = assert_refused(&refused, &sandbox, "is missing or empty");
    assert!(why.contains("audit.jsonl"), "{why}");
    // It verifies (an empty chain), which is why the database must say otherwise.
    assert!(verify_audit(&sandbox).status.success());
}

#[test]
fn the_audit_logs_last_line_deleted_is_refused() {
    let (sandbox, config) = finished_run();
    let path = sandbox.path("state/audit.jsonl");
    let log = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let n = lines.len();
    fs::write(&path, lines[..n - 1].join("\n") + "\n").unwrap();
    assert!(
        verify_audit(&sandbox).status.success(),
        "a cut log verifies"
    );
    let refused = sandbox.serve_until_idle(&config, &[]);
    let why = assert_refused(&refused, &sandbox, "lines were removed from its end");
    assert!(why.contains(&format!("ends at line {}", n - 1)), "{why}");
}

#[test]
fn a_database_that_fails_its_integrity_check_is_refused_naming_the_file() {
    let (sandbox, config) = finished_run();
    let db = sandbox.path("state/coordinator.db");
    let mut bytes = fs::read(&db).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages >= 4, "the database has only {pages} pages");
    for p in 1..pages - 1 {
        for b in &mut bytes[p * page + 8..p * page + 400] {
            *b = 0x5a;
        }
    }
    fs::write(&db, &bytes).unwrap();
    let refused = sandbox.serve_until_idle(&config, &[]);
    let why = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "served: {why}");
    assert!(why.contains(&db.display().to_string()), "{why}");
    assert!(why.contains("integrity check"), "{why}");
    assert!(!why.contains("panicked"), "{why}");
}

#[test]
fn a_write_ahead_log_deleted_mid_run_stops_the_coordinator_and_the_restart_is_refused() {
    let sandbox = Sandbox::new();
    let rounds = 60;
    let (config, run) = sandbox.write_coordinator(&telco_run(rounds, 4, 4, 30.0));
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let _clients = sandbox.start_clients(&PARTNERS, port, &["--keep-running"]);
    coordinator.wait_for_stdout(Duration::from_secs(120), |s| {
        s.contains(&format!("  2/{rounds}"))
    });
    let wal = sandbox.path("state/coordinator.db-wal");
    assert!(wal.exists());
    fs::remove_file(&wal).unwrap();
    let status = coordinator.wait(Duration::from_secs(120));
    let stderr = coordinator.read_stderr();
    assert!(
        !status.success(),
        "exited 0 after losing its WAL:\n{stderr}"
    );
    assert!(stderr.contains("was deleted or replaced"), "{stderr}");
    assert!(
        !coordinator
            .read_stdout()
            .contains(&format!("{rounds}/{rounds}")),
        "the run went on to its end"
    );

    let refused = sandbox.serve_until_idle(&config, &[]);
    assert_refused(&refused, &sandbox, "damaged while the coordinator ran");
    let log = fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    assert!(log.contains("\"action\":\"state.damaged\""), "{log}");
}
