//! `fedprofile-client privacy …`: `ledger verify` of an empty ledger, and
//! `cost --run` composed with the partner's ledger and its warnings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fedprofile_privacy::Charge;
use fedprofile_privacy::ledger::{ChargeRecord, Ledger};

fn client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedprofile-client"))
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client config of partner-b's data (or `data_dir`) with budget epsilon 1
/// at delta 1e-5 and its ledger at `ledger`.
fn config(dir: &Path, data_dir: &Path, ledger: &Path) -> PathBuf {
    let path = dir.join("client.toml");
    let text = format!(
        "coordinator = \"https://localhost:50051\"\n\
         data_dir = \"{}\"\n\
         schema = \"{}\"\n\n\
         [privacy]\n\
         epsilon = 1.0\n\
         delta = 1e-5\n\
         ledger = \"{}\"\n",
        data_dir.display(),
        demo().join("schema.toml").display(),
        ledger.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `privacy ledger verify [FLAGS] LEDGER`.
fn verify(flags: &[&str], ledger: &Path) -> Output {
    client()
        .args(["privacy", "ledger", "verify"])
        .args(flags)
        .arg(ledger)
        .output()
        .unwrap()
}

/// `privacy cost` of the demo's DP run file for the client `config`, as text or JSON.
fn cost(config: &Path, json: bool) -> Output {
    let mut cmd = client();
    cmd.args(["privacy", "cost"]);
    if json {
        cmd.arg("--json");
    }
    cmd.arg("--run")
        .arg(demo().join("run-dp.toml"))
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn cost_json(config: &Path) -> (Output, serde_json::Value) {
    let out = cost(config, true);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&out), stderr(&out)));
    (out, v)
}

#[test]
fn ledger_verify_of_a_missing_or_empty_ledger_fails_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let out = verify(&[], &missing);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("missing.jsonl does not exist: there is no charged task to verify"),
        "{}",
        stderr(&out)
    );

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = verify(&[], &empty);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));

    for file in [&missing, &empty] {
        let out = verify(&["--allow-empty"], file);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("no charged tasks"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn cost_of_a_run_with_a_missing_ledger_spends_nothing_and_fits() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let cfg = config(dir.path(), &demo().join("data/partner-b"), &ledger);
    let (out, v) = cost_json(&cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["spent_epsilon"], 0.0);
    assert_eq!(v["ledger_exists"], false);
    assert_eq!(v["total_epsilon"], v["run_epsilon"]);
    assert_eq!(v["budget_epsilon"], 1.0);
    assert_eq!(v["fits"], true);
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(0));
    assert!(!ledger.exists(), "costing a run must not create the ledger");
}

#[test]
fn cost_of_a_run_reports_the_ledgers_charges_and_fails_when_the_run_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let spent_charge = Charge::subsampled_gaussian(0.1, 1.5, 50).unwrap();
    let entry = Ledger::open(&ledger)
        .unwrap()
        .append(ChargeRecord {
            run_id: "earlier".to_string(),
            round: 1,
            task_id: "earlier-1".to_string(),
            charge: spent_charge,
            clip_norm: 1.0,
            delta: 1e-5,
        })
        .unwrap()
        .entry()
        .clone();
    let cfg = config(dir.path(), &demo().join("data/partner-b"), &ledger);
    let (out, v) = cost_json(&cfg);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (spent, run, total) = (f("spent_epsilon"), f("run_epsilon"), f("total_epsilon"));
    assert!((spent - entry.cumulative_epsilon).abs() < 1e-9, "{v}");
    assert_eq!(v["ledger_entries"], 1);
    // A composition: above either part, below their sum.
    assert!(total > spent && total > run && total < spent + run, "{v}");
    assert!(total > 1.0, "{v}");
    assert_eq!(v["fits"], false);
    assert!((f("budget_left") - (1.0 - spent)).abs() < 1e-12, "{v}");
    assert!(f("budget_left_after_run") < 0.0, "{v}");
    let err = stderr(&out);
    assert!(
        err.contains("this run does not fit the budget: its 20 rounds would bring epsilon to")
            && err.contains("above the budget 1;")
            && err.contains(&format!("{spent:.4} spent so far")),
        "{err}"
    );

    // The text output says the same.
    let out = cost(&cfg, false);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("1 charged tasks, spent so far epsilon")
            && text.contains(&format!("total after the run: epsilon {total:.4}"))
            && text.contains("(does not fit)"),
        "{text}"
    );
}

/// A partner with the first 50 customers of partner-b's training accounts.
fn small_partner(dir: &Path) -> PathBuf {
    let src = demo().join("data/partner-b/train");
    let data = dir.join("data");
    let train = data.join("train");
    std::fs::create_dir_all(&train).unwrap();
    let accounts = std::fs::read_to_string(src.join("accounts.csv")).unwrap();
    let mut lines = accounts.lines();
    let mut kept = vec![lines.next().unwrap().to_string()];
    let mut ids = std::collections::HashSet::new();
    for line in lines {
        let id = line.split(',').next().unwrap().to_string();
        if ids.len() == 50 && !ids.contains(&id) {
            break;
        }
        ids.insert(id);
        kept.push(line.to_string());
    }
    std::fs::write(train.join("accounts.csv"), kept.join("\n") + "\n").unwrap();
    std::fs::copy(src.join("services.csv"), train.join("services.csv")).unwrap();
    data
}

#[test]
fn cost_warns_a_small_partner_that_its_update_is_mostly_noise() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_partner(dir.path());
    let cfg = config(dir.path(), &data, &dir.path().join("ledger.jsonl"));
    let (out, v) = cost_json(&cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["plan"]["examples"], 50, "{v}");
    assert_eq!(v["plan"]["sampling_rate"], 1.0, "{v}");
    let warnings = v["warnings"].as_array().unwrap();
    let kinds: Vec<&str> = warnings.iter().filter_map(|w| w["kind"].as_str()).collect();
    assert_eq!(kinds, ["no_subsampling", "mostly_noise"], "{v}");
    assert!(
        warnings[1]["signal_to_noise"].as_f64().unwrap() < 1.0,
        "{v}"
    );
    assert!(
        warnings[1]["message"]
            .as_str()
            .unwrap()
            .contains("a larger expected batch is impossible"),
        "{v}"
    );

    let out = cost(&cfg, false);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: this partner has 50 training rows")
            && err.contains("warning: the update will be mostly noise"),
        "{err}"
    );
}
