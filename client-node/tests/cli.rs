//! The client's command line: `check-data` works offline and errors are clear.

use std::path::Path;
use std::process::Command;

fn client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedprofile-client"))
}

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo")
}

#[test]
fn check_data_json_reports_both_splits_of_a_partner() {
    let out = client()
        .args(["check-data", "--json", "--config"])
        .arg(demo().join("clients/partner-b.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = v.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["split"], "train");
    assert_eq!(reports[0]["report"]["users"], 1290);
    assert_eq!(reports[1]["split"], "test");
    assert_eq!(reports[1]["report"]["users"], 322);
}

#[test]
fn check_data_text_names_the_faults() {
    let out = client()
        .args(["check-data", "--config"])
        .arg(demo().join("clients/partner-a.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("== split 'train'") && text.contains("== split 'test'"),
        "{text}"
    );
    assert!(text.contains("1892"), "{text}");
}

#[test]
fn a_missing_config_is_one_clear_error() {
    let out = client()
        .args(["check-data", "--config", "/nonexistent/client.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read '/nonexistent/client.toml'"),
        "{stderr}"
    );
}
