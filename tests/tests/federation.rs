//! The Telco federation end to end: four real client processes and a coordinator
//! over mutual TLS on loopback, 20 rounds of FedAvg.

use std::collections::HashMap;
use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use fedprofile_e2e::{PARTNERS, Sandbox, client_tool, demo_dir, telco_run};
use ndarray::Array1;

/// One federation run shared by the tests of this file (it takes a few seconds).
struct DemoRun {
    sandbox: Sandbox,
    coordinator_stdout: String,
    coordinator_stderr: String,
}

fn demo_run() -> &'static DemoRun {
    static RUN: OnceLock<DemoRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let sandbox = Sandbox::new();
        let (config, run) = sandbox.write_coordinator(&telco_run(20, 4, 4, 60.0));
        // Debug logging on the coordinator: the "no customer id" check must hold
        // even at the most verbose level of our own crates.
        let (mut coordinator, port) = sandbox.start_coordinator(
            &config,
            &run,
            &[(
                "RUST_LOG",
                "debug,h2=info,hyper=info,tower=info,rustls=info",
            )],
        );
        let mut clients = sandbox.start_clients(&PARTNERS, port, &[]);
        let limit = Duration::from_secs(300);
        fedprofile_e2e::finish_federation(
            &mut coordinator,
            &mut clients,
            limit,
            "coordinator failed",
        );
        DemoRun {
            coordinator_stdout: coordinator.read_stdout(),
            coordinator_stderr: coordinator.read_stderr(),
            sandbox,
        }
    })
}

#[test]
fn telco_federation_over_mtls_meets_the_auc_floor() {
    let run = demo_run();
    let summary = run.sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], 20);
    let auc = summary["auc"].as_f64().unwrap();
    let log_loss = summary["log_loss"].as_f64().unwrap();
    assert!(auc >= 0.845, "pooled AUC {auc} below the 0.845 floor");
    assert!(log_loss <= 0.43, "pooled log loss {log_loss} above 0.43");
    assert_eq!(summary["clients"].as_array().unwrap().len(), 4);
    assert_eq!(
        summary["evaluated_examples"], 1408,
        "all four test splits are pooled"
    );
    // One progress line per round, with the pooled figures.
    let lines: Vec<&str> = run
        .coordinator_stdout
        .lines()
        .filter(|l| l.starts_with("round "))
        .collect();
    assert_eq!(lines.len(), 20, "{}", run.coordinator_stdout);
    assert!(
        lines[19].contains("clients 4/4") && lines[19].contains("auc 0.8"),
        "{}",
        lines[19]
    );
    // metrics.csv: a header and one row per round.
    let csv = fs::read_to_string(run.sandbox.path("out/metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 21);
}

#[test]
fn scores_written_by_partners_give_the_pooled_auc() {
    let run = demo_run();
    let model = run.sandbox.path("out/model.json");
    let schema = fedprofile_data::Schema::from_path(&demo_dir().join("schema.toml")).unwrap();
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for partner in PARTNERS {
        let config = run.sandbox.write_client(partner, "certs", partner);
        let out = run.sandbox.path(&format!("{partner}-scores.csv"));
        let result = client_tool(
            &["score", "--split", "test"],
            &[("--config", &config), ("--model", &model), ("--out", &out)],
        );
        assert!(result.status.success(), "score failed: {result:?}");
        let truth =
            fedprofile_data::load_split(&schema, &demo_dir().join("data").join(partner), "test")
                .unwrap()
                .dataset;
        let truth: HashMap<String, f64> = truth
            .ids()
            .iter()
            .cloned()
            .zip(truth.labels().unwrap())
            .collect();
        let mut reader = csv::Reader::from_path(&out).unwrap();
        assert_eq!(reader.headers().unwrap(), vec!["user_id", "score"]);
        let mut rows = 0;
        for record in reader.records() {
            let record = record.unwrap();
            let p: f64 = record[1].parse().unwrap();
            assert!((0.0..=1.0).contains(&p));
            scores.push(p);
            labels.push(truth[&record[0]]);
            rows += 1;
        }
        assert_eq!(rows, truth.len(), "{partner}: one row per user");
    }
    let auc = fedprofile_learning::roc_auc(
        Array1::from_vec(scores).view(),
        Array1::from_vec(labels).view(),
    )
    .unwrap();
    let pooled = run.sandbox.summary()["auc"].as_f64().unwrap();
    assert!(
        (auc - pooled).abs() <= 0.005,
        "AUC of the partners' scores {auc} differs from the pooled {pooled}"
    );
}

#[test]
fn no_customer_id_reaches_the_coordinator() {
    let run = demo_run();
    let is_customer_id =
        |w: &str| w.len() == 6 && w.starts_with('C') && w[1..].chars().all(|c| c.is_ascii_digit());
    let mut texts = vec![
        (
            "coordinator stdout".to_string(),
            run.coordinator_stdout.clone(),
        ),
        (
            "coordinator log".to_string(),
            run.coordinator_stderr.clone(),
        ),
    ];
    // Every file the coordinator wrote: outputs, plots, its database (with its
    // write-ahead log), the audit log, run reports. Binary files are scanned as bytes.
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let bytes = fs::read(&path).unwrap();
                out.push((
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    let before = texts.len();
    walk(&run.sandbox.path("out"), &mut texts);
    walk(&run.sandbox.path("state"), &mut texts);
    let names: Vec<&str> = texts.iter().map(|(n, _)| n.as_str()).collect();
    assert!(texts.len() > before + 5, "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("coordinator.db")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("audit.jsonl")),
        "{names:?}"
    );
    assert!(
        run.coordinator_stderr.len() > 1000,
        "the debug log is suspiciously short: {}",
        run.coordinator_stderr
    );
    for (name, text) in texts {
        let hit = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| is_customer_id(w));
        assert!(hit.is_none(), "customer id {hit:?} found in {name}");
    }
    // The check itself works: the partners' data does contain such ids.
    let sample = fs::read_to_string(demo_dir().join("data/partner-a/test/accounts.csv")).unwrap();
    assert!(
        sample
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(is_customer_id)
    );
}

#[test]
fn profiles_have_one_row_per_user_and_contributions_that_add_up() {
    let run = demo_run();
    let model = run.sandbox.path("out/model.json");
    let config = run.sandbox.write_client("partner-a", "certs", "partner-a");
    let out = run.sandbox.path("profiles.csv");
    let result = client_tool(
        &["profile"],
        &[("--config", &config), ("--model", &model), ("--out", &out)],
    );
    assert!(result.status.success(), "profile failed: {result:?}");
    let (header, records) = fedprofile_e2e::read_csv(&out);
    assert_eq!(
        &header[..6],
        [
            "user_id",
            "churn_probability",
            "churn_logit",
            "churn_reference",
            "churn_driver_1",
            "churn_contribution_1"
        ]
    );
    assert_eq!(header.last().unwrap(), "churn_other_contribution");
    // The model file holds the federation's mean encoded row: the reference.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let reference = doc["features"]["reference"]
        .as_array()
        .expect("reference row");
    // 0 for the standardised numbers, a share of users for every 0/1 entry.
    assert!(
        reference
            .iter()
            .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())),
        "{reference:?}"
    );
    let mut ids = std::collections::HashSet::new();
    let mut rows = 0;
    for r in &records {
        assert!(ids.insert(r[0].to_string()), "user {} twice", &r[0]);
        let p: f64 = r[1].parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
        let logit: f64 = r[2].parse().unwrap();
        let reference: f64 = r[3].parse().unwrap();
        // sigmoid(logit) is the probability.
        assert!((1.0 / (1.0 + (-logit).exp()) - p).abs() < 1e-5);
        fedprofile_e2e::assert_contributions_add_up(r.as_slice(), logit - reference);
        assert!(r.iter().all(|c| !c.is_empty()), "{r:?}");
        // The named features are the largest in magnitude, in order.
        let c1: f64 = r[5].parse().unwrap();
        let c2: f64 = r[7].parse().unwrap();
        assert!(c1.abs() >= c2.abs());
        rows += 1;
    }
    assert_eq!(rows, 473, "partner-a's test split has 473 users");
}

#[test]
fn a_run_can_warm_start_from_an_earlier_global_model() {
    let run = demo_run();
    let sandbox = Sandbox::new();
    let earlier = run.sandbox.path("out/model.json");
    let run_toml = telco_run(1, 4, 4, 60.0).replace(
        "[run]\n",
        &format!("[run]\nwarm_start = \"{}\"\n", earlier.display()),
    );
    let (config, run_file) = sandbox.write_coordinator(&run_toml);
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run_file, &[]);
    let _clients = sandbox.start_clients(&PARTNERS, port, &[]);
    coordinator.wait_success(Duration::from_secs(120));
    assert!(coordinator.read_stdout().contains("warm start from"));
    // One round from the 20-round model is already at its level (a cold first
    // round reaches about 0.834).
    let auc = sandbox.summary()["auc"].as_f64().unwrap();
    assert!(auc >= 0.848, "warm-started AUC after one round: {auc}");
    let warm: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(sandbox.path("out/model.json")).unwrap()).unwrap();
    let cold: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&earlier).unwrap()).unwrap();
    assert_eq!(warm["features"], cold["features"], "the encoding is kept");
}
