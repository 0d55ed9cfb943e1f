//! The coordinator's command line: errors are one clear sentence, never a panic.

use std::process::Command;

/// `serve` with a plain config (no `[tls]`) and the run file `run_toml`; it
/// must exit with status 1: returns what it printed on stderr.
fn serve_fails(run_toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
    let run = dir.path().join("run.toml");
    std::fs::write(&run, run_toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fedprofile-coordinator"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_run_file_is_reported_with_its_field() {
    let stderr = serve_fails("[run]\nname = \"x\"\nrounds = 0\n");
    assert!(
        stderr.contains("field 'run.rounds' must be at least 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn serving_without_tls_requires_insecure() {
    let stderr = serve_fails("[run]\nname = \"x\"\nrounds = 1\n");
    assert!(stderr.contains("has no [tls] section"), "{stderr}");
}
