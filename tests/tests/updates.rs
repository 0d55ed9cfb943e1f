//! The model registry and champion/challenger update runs over real processes:
//! a long-lived coordinator, the four Telco partners (`--keep-running`) and an
//! operator certificate. A first run registers version 1 as champion; an
//! update run with more rounds is promoted to version 2; an update run whose
//! learning rate diverges is rejected and the champion stays; `model rollback`
//! restores version 1; everything is in `run status`, `model list`, the audit
//! log and the metrics.

use std::fs;
use std::path::Path;

use fedprofile_e2e::output_text as text;
use fedprofile_e2e::{PARTNERS, Sandbox, http_get, telco_run};

/// A Telco run of `rounds` rounds at `learning_rate`, with `update` appended.
fn run_file(rounds: u32, learning_rate: f64, update: &str) -> String {
    telco_run(rounds, 4, 4, 30.0).replace(
        "learning_rate = 0.1\n",
        &format!("learning_rate = {learning_rate}\n"),
    ) + update
}

const UPDATE: &str =
    "[update]\ntarget = \"churn\"\nmetric = \"log_loss\"\nmin_improvement = 0.001\n";

/// Starts `toml` as operator `alice`, waits for its end; returns its id
/// and its `run status` text.
fn run_to_end(sandbox: &Sandbox, alice: &Path, name: &str, toml: &str) -> (String, String) {
    sandbox.run_to_end(alice, name, toml)
}

/// The `update` section of a run's summary.json.
fn verdict(sandbox: &Sandbox, run_id: &str) -> serde_json::Value {
    let path = sandbox.path(&format!("state/runs/{run_id}/summary.json"));
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    summary["update"].clone()
}

/// `model list` as (version, status) pairs, in order.
fn versions(sandbox: &Sandbox, alice: &Path) -> Vec<(String, String)> {
    let out = sandbox.operator(alice, &["model", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(v, s)| (v.to_string(), s.to_string()))
        .collect()
}

#[test]
fn update_runs_are_promoted_when_better_rejected_when_worse_and_rollback_restores_the_champion() {
    let sandbox = Sandbox::new();
    let (config, _) = sandbox.write_coordinator_with(
        &telco_run(1, 1, 1, 10.0),
        "metrics_listen = \"127.0.0.1:0\"",
    );
    let (mut coordinator, port) = sandbox.start_coordinator_with(&config, None, &[], &[]);
    let mut clients = sandbox.start_clients(&PARTNERS, port, &["--keep-running"]);
    let alice = sandbox.operator_config("alice", port, true);

    // An update of a target without champion fails at its start, with the reason.
    let (_, status) = run_to_end(&sandbox, &alice, "orphan.toml", &run_file(1, 0.1, UPDATE));
    assert!(
        status.contains("failed") && status.contains("update.target 'churn' has no champion yet"),
        "{status}"
    );

    // The first run: version 1, champion.
    let (first, status) = run_to_end(&sandbox, &alice, "first.toml", &run_file(1, 0.05, ""));
    assert!(status.contains("model churn@1 (champion)"), "{status}");
    assert_eq!(
        versions(&sandbox, &alice),
        pairs(&[("churn@1", "champion")])
    );

    // More rounds, warm-started from the champion: better, promoted.
    let (better, status) = run_to_end(&sandbox, &alice, "better.toml", &run_file(4, 0.1, UPDATE));
    assert!(status.contains("model churn@2 (champion)"), "{status}");
    assert!(
        status.contains("run finished; churn@2 is the new champion: log_loss"),
        "run watch tells the verdict: {status}"
    );
    let v = verdict(&sandbox, &better);
    eprintln!("promoted update: {v}");
    assert_eq!(v["promoted"], true, "{v}");
    assert_eq!(v["champion_version"], 1, "{v}");
    let (challenger, champion) = (
        v["challenger"].as_f64().unwrap(),
        v["champion"].as_f64().unwrap(),
    );
    assert!(challenger + 0.001 <= champion, "{v}");
    assert!(
        status.contains(&format!(
            "log_loss challenger {challenger:.4} vs champion churn@1 {champion:.4}"
        )) && status.contains("promoted"),
        "{status}"
    );

    // A learning rate that diverges: worse, rejected; the champion stays.
    let (worse, status) = run_to_end(&sandbox, &alice, "worse.toml", &run_file(2, 50.0, UPDATE));
    assert!(
        status.contains("model churn@3 (challenger-rejected)"),
        "{status}"
    );
    let v = verdict(&sandbox, &worse);
    eprintln!("rejected update: {v}");
    // The champion evaluated beside the challenger reproduces its own final
    // figure: the same partners' test splits.
    assert_eq!(
        v["champion"],
        verdict(&sandbox, &better)["challenger"],
        "{v}"
    );
    assert_eq!(v["promoted"], false, "{v}");
    assert_eq!(v["champion_version"], 2, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("is not better than the champion's"),
        "{v}"
    );
    assert!(status.contains("rejected"), "{status}");
    assert_eq!(
        versions(&sandbox, &alice),
        pairs(&[
            ("churn@1", "retired"),
            ("churn@2", "champion"),
            ("churn@3", "challenger-rejected"),
        ])
    );

    // Show one version, and write its model file.
    let model_out = sandbox.path("v2.json");
    let shown = sandbox.show_model(&alice, "churn@2", &model_out);
    assert!(shown.contains(&better), "{shown}");
    assert!(shown.contains("parent churn@1"), "{shown}");
    let doc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&model_out).unwrap()).unwrap();
    assert!(
        doc.to_string().contains(&better),
        "the model file names its run"
    );

    // Rollback: version 1 is champion again; a second one has nothing to go to.
    let rolled = sandbox.operator(
        &alice,
        &["model", "rollback", "churn", "--reason", "v2 misbehaves"],
    );
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert!(
        text(&rolled).contains("churn@1 is champion again"),
        "{}",
        text(&rolled)
    );
    assert_eq!(
        versions(&sandbox, &alice),
        pairs(&[
            ("churn@1", "champion"),
            ("churn@2", "retired"),
            ("churn@3", "challenger-rejected"),
        ])
    );
    let again = sandbox.operator(&alice, &["model", "rollback", "churn", "--reason", "x"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("nothing to roll back to: churn@1 is the first champion"),
        "{}",
        text(&again)
    );
    // Clear errors for unknown targets and versions.
    let unknown = sandbox.operator(&alice, &["model", "show", "nope@1"]);
    assert!(
        text(&unknown).contains("no model has the target 'nope'"),
        "{}",
        text(&unknown)
    );
    let unknown = sandbox.operator(&alice, &["model", "promote", "churn@9", "--reason", "x"]);
    assert!(
        text(&unknown).contains("there is no model version churn@9"),
        "{}",
        text(&unknown)
    );

    // The audit log and the metrics.
    let audit = fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    for event in [
        "model.register",
        "model.promote",
        "model.reject",
        "model.rollback",
    ] {
        assert!(
            audit.contains(&format!("\"{event}\"")),
            "no {event} in the audit log"
        );
    }
    assert!(
        audit.contains("v2 misbehaves"),
        "the rollback's reason is audited"
    );
    let response = http_get(&sandbox.metrics_addr(), "/metrics");
    assert!(
        response.contains("fedprofile_champion_version{target=\"churn\"} 1"),
        "{response}"
    );
    for (outcome, n) in [("promoted", 1), ("rejected", 1), ("failed", 1)] {
        assert!(
            response.contains(&format!(
                "fedprofile_updates_total{{outcome=\"{outcome}\"}} {n}"
            )),
            "{response}"
        );
    }
    eprintln!(
        "model list after rollback:\n{}",
        text(&sandbox.operator(&alice, &["model", "list"]))
    );
    let _ = first;

    coordinator.kill();
    for c in &mut clients {
        c.kill();
    }
}
