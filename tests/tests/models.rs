//! Model families beyond logistic regression, end to end on the Telco partners,
//! each trained from a schema file and a run file of `deploy/demo/` alone:
//! linear regression of `monthly_charges` (R² on the pooled test splits),
//! federated k-means segmentation (pooled inertia falling over rounds, also
//! under record-level DP with charged ledgers), softmax regression of the
//! contract type, and the profiles and scores written from those models.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use fedprofile_e2e::{Finished, PARTNERS, Sandbox, client_tool, demo_dir, federate, read_csv};

/// A run file of `deploy/demo/`, with the start timeout shortened for tests.
fn demo_run_file(rel: &str) -> String {
    let text = fs::read_to_string(demo_dir().join(rel)).expect("demo run file");
    text.replace("start_timeout_secs = 120", "start_timeout_secs = 60")
}

fn value_run() -> &'static Finished {
    static RUN: OnceLock<Finished> = OnceLock::new();
    RUN.get_or_init(|| federate("schema-value.toml", &demo_run_file("value/run.toml"), ""))
}

fn segments_run() -> &'static Finished {
    static RUN: OnceLock<Finished> = OnceLock::new();
    RUN.get_or_init(|| federate("schema.toml", &demo_run_file("run-segments.toml"), ""))
}

/// metrics.csv as (header, rows).
fn metrics(sandbox: &Sandbox) -> Vec<std::collections::HashMap<String, String>> {
    let (header, rows) = read_csv(&sandbox.path("out/metrics.csv"));
    rows.into_iter()
        .map(|r| header.iter().cloned().zip(r).collect())
        .collect()
}

fn column(rows: &[std::collections::HashMap<String, String>], name: &str) -> Vec<f64> {
    rows.iter()
        .map(|r| {
            r[name]
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{name} = '{}'", r[name]))
        })
        .collect()
}

/// `run_toml` over the four partners with the demo schema `schema` must fail,
/// the coordinator saying `reason`.
fn assert_run_stops_saying(run_toml: &str, schema: &str, reason: &str) {
    let sandbox = Sandbox::new();
    let (mut coordinator, port) = sandbox.start_run(run_toml);
    let mut clients: Vec<_> = PARTNERS
        .iter()
        .map(|p| {
            let cfg = sandbox.write_client_schema(p, "certs", p, schema, "");
            sandbox.start_client(p, &cfg, port, &[])
        })
        .collect();
    assert!(!coordinator.wait(Duration::from_secs(120)).success());
    let text = coordinator.read_stdout() + &coordinator.read_stderr();
    assert!(text.contains(reason), "{text}");
    for c in &mut clients {
        c.wait(Duration::from_secs(30));
    }
}

fn model_json(sandbox: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(sandbox.path("out/model.json")).unwrap()).unwrap()
}

#[test]
fn linear_regression_of_monthly_charges_reaches_r2_095_on_the_pooled_test_splits() {
    let run = value_run();
    let summary = run.sandbox.summary();
    assert_eq!(summary["model"], "linear_regression", "{summary}");
    assert_eq!(summary["completed"], true);
    let q = &summary["quality"];
    assert_eq!(q["kind"], "regression", "{summary}");
    let r2 = q["r2"].as_f64().unwrap();
    println!(
        "linear regression: R² {r2:.4}, RMSE {:.3}, MAE {:.3}, MSE {:.3} over {} test users",
        q["rmse"], q["mae"], q["mse"], q["examples"]
    );
    assert!(r2 >= 0.95, "pooled R² {r2} below 0.95");
    let mse = q["mse"].as_f64().unwrap();
    assert!((q["rmse"].as_f64().unwrap() - mse.sqrt()).abs() < 1e-9);
    assert!(q["mae"].as_f64().unwrap() <= q["rmse"].as_f64().unwrap());
    // Every partner's test users with a target (4 x ~470) are pooled.
    assert!(q["examples"].as_u64().unwrap() > 1300, "{summary}");
    // The per-round figures are in metrics.csv, and R² improves over the run.
    let rows = metrics(&run.sandbox);
    assert_eq!(rows.len(), 20);
    let r2s = column(&rows, "r2");
    assert!(r2s[19] > r2s[0], "R² per round: {r2s:?}");
    assert!((r2s[19] - r2).abs() < 1e-5);
    assert!(rows.iter().all(|r| r["auc"].is_empty()));
    // The model file is version 2, names its target and its weights.
    let model = model_json(&run.sandbox);
    assert_eq!(model["version"], 2);
    assert_eq!(model["model_type"], "linear_regression");
    assert_eq!(model["target"]["column"], "monthly_charges");
    assert!(model["provenance"]["metrics"]["r2"].as_f64().unwrap() >= 0.95);
    assert!(run.stdout.contains("r2 0.9"), "{}", run.stdout);
}

#[test]
fn a_linear_model_gives_profiles_whose_contributions_add_up_to_the_prediction() {
    let run = value_run();
    let config =
        run.sandbox
            .write_client_schema("partner-b", "certs", "partner-b", "schema-value.toml", "");
    let out = run.sandbox.path("value-profiles.csv");
    let model = run.sandbox.path("out/model.json");
    let result = client_tool(
        &["profile", "--top", "4"],
        &[("--config", &config), ("--model", &model), ("--out", &out)],
    );
    assert!(result.status.success(), "profile failed: {result:?}");
    let (header, rows) = read_csv(&out);
    assert_eq!(
        &header[..4],
        [
            "user_id",
            "monthly_charges_predicted",
            "monthly_charges_score",
            "monthly_charges_reference"
        ]
    );
    assert_eq!(header.len(), 4 + 2 * 4 + 1);
    assert_eq!(header[4], "monthly_charges_driver_1");
    // Every one of partner-b's 322 test customers, including the one whose
    // monthly_charges is N/A (dropped for training and evaluation, not for scoring).
    assert_eq!(rows.len(), 322, "{} rows", rows.len());
    let mut ids = std::collections::HashSet::new();
    for r in &rows {
        assert!(ids.insert(r[0].clone()), "user {} twice", r[0]);
        let prediction: f64 = r[1].parse().unwrap();
        let reference: f64 = r[3].parse().unwrap();
        assert!((10.0..150.0).contains(&prediction), "{r:?}");
        fedprofile_e2e::assert_contributions_add_up(r.as_slice(), prediction - reference);
    }
    // `score` writes the same predictions.
    let scores = run.sandbox.path("value-scores.csv");
    let result = client_tool(
        &["score"],
        &[
            ("--config", &config),
            ("--model", &model),
            ("--out", &scores),
        ],
    );
    assert!(result.status.success(), "score failed: {result:?}");
    let (header, scored) = read_csv(&scores);
    assert_eq!(header, ["user_id", "prediction"]);
    assert_eq!(scored.len(), rows.len());
    assert_eq!(scored[0][1], rows[0][1]);
}

#[test]
fn kmeans_segmentation_reports_a_falling_pooled_inertia() {
    let run = segments_run();
    let summary = run.sandbox.summary();
    assert_eq!(summary["model"], "kmeans", "{summary}");
    let rows = metrics(&run.sandbox);
    assert_eq!(rows.len(), 15);
    let test_inertia = column(&rows, "inertia");
    let train_inertia = column(&rows, "train_loss");
    println!("k-means pooled test inertia per round: {test_inertia:?}");
    println!("k-means pooled mean training inertia per round: {train_inertia:?}");
    assert!(
        test_inertia[14] < 0.8 * test_inertia[0],
        "pooled test inertia did not fall: {test_inertia:?}"
    );
    // Lloyd steps never raise the training inertia (rounds after any re-seeding).
    for w in train_inertia[2..].windows(2) {
        assert!(
            w[1] <= w[0] + 1e-9,
            "training inertia rose: {train_inertia:?}"
        );
    }
    let q = &summary["quality"];
    assert_eq!(q["kind"], "clustering");
    let counts: Vec<u64> = q["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 4);
    assert!(
        counts.iter().all(|&c| c > 0),
        "an empty segment: {counts:?}"
    );
    assert_eq!(counts.iter().sum::<u64>(), q["examples"].as_u64().unwrap());
    let model = model_json(&run.sandbox);
    assert_eq!(model["model_type"], "kmeans");
    assert_eq!(model["clusters"], 4);
    assert_eq!(model["centroids"].as_array().unwrap().len(), 4);
}

#[test]
fn one_profile_holds_churn_probability_predicted_value_and_segment_per_user() {
    let segments = segments_run();
    let value = value_run();
    // A churn model from a short run of the churn demo.
    let churn = federate("schema.toml", &fedprofile_e2e::telco_run(5, 4, 4, 30.0), "");
    // The partner's churn config scores with all three models: the value model's
    // inputs are features of the churn schema too.
    let config =
        churn
            .sandbox
            .write_client_schema("partner-c", "certs", "partner-c", "schema.toml", "");
    let out = churn.sandbox.path("profiles.csv");
    let result = client_tool(
        &["profile", "--top", "2"],
        &[
            ("--config", &config),
            ("--model", &churn.sandbox.path("out/model.json")),
            ("--model", &value.sandbox.path("out/model.json")),
            ("--segments", &segments.sandbox.path("out/model.json")),
            ("--out", &out),
        ],
    );
    assert!(result.status.success(), "profile failed: {result:?}");
    let (header, rows) = read_csv(&out);
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert_eq!(
        &header[..4],
        [
            "user_id",
            "churn_probability",
            "churn_logit",
            "churn_reference"
        ]
    );
    assert_eq!(&header[header.len() - 2..], ["segment", "segment_distance"]);
    // partner-c's test split: every user once.
    assert_eq!(rows.len(), 309, "{} rows", rows.len());
    let mut ids = std::collections::HashSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        assert!(ids.insert(r[0].clone()), "user {} twice", r[0]);
        let p: f64 = r[at("churn_probability")].parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
        for (score, first, other) in [
            (
                "churn_logit",
                "churn_contribution_1",
                "churn_other_contribution",
            ),
            (
                "monthly_charges_score",
                "monthly_charges_contribution_1",
                "monthly_charges_other_contribution",
            ),
        ] {
            let reference_col = score
                .replace("logit", "reference")
                .replace("score", "reference");
            let score_v: f64 = r[at(score)].parse().unwrap();
            let reference: f64 = r[at(&reference_col)].parse().unwrap();
            let sum: f64 = (at(first)..at(other))
                .step_by(2)
                .map(|i| r[i].parse::<f64>().unwrap())
                .sum::<f64>()
                + r[at(other)].parse::<f64>().unwrap();
            assert!(
                (sum - (score_v - reference)).abs() < 1e-4,
                "{score}: contributions {sum} vs score - reference {}",
                score_v - reference
            );
        }
        let predicted: f64 = r[at("monthly_charges_predicted")].parse().unwrap();
        assert!((10.0..150.0).contains(&predicted), "{r:?}");
        let segment: usize = r[at("segment")].parse().unwrap();
        assert!(segment < 4);
        assert!(r[at("segment_distance")].parse::<f64>().unwrap() >= 0.0);
        seen.insert(segment);
    }
    assert!(seen.len() >= 3, "users fall in segments {seen:?}");
    // A segmentation model passed as --model is refused with a clear sentence.
    let refused = client_tool(
        &["profile"],
        &[
            ("--config", &config),
            ("--model", &segments.sandbox.path("out/model.json")),
            ("--out", &out),
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("pass it with --segments"), "{err}");
    // Two models of the same target would give clashing columns: refused.
    let value_model = value.sandbox.path("out/model.json");
    let twice = client_tool(
        &["profile"],
        &[
            ("--config", &config),
            ("--model", &value_model),
            ("--model", &value_model),
            ("--out", &out),
        ],
    );
    assert!(!twice.status.success());
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("it predicts 'monthly_charges' like"), "{err}");
}

#[test]
fn kmeans_under_record_level_dp_charges_every_partner_and_still_converges() {
    let run_toml = demo_run_file("run-segments.toml")
        + "[privacy]\nmode = \"record\"\ndelta = 1e-5\n[privacy.record]\nclip_norm = 8.0\ntarget_epsilon = 2.0\n";
    let ledgers = "[privacy]\nepsilon = 3.0\ndelta = 1e-5\nledger = \"{partner}-ledger.jsonl\"\n";
    let run = federate("schema.toml", &run_toml, ledgers);
    let summary = run.sandbox.summary();
    let epsilon = summary["epsilon"].as_f64().unwrap();
    println!("k-means with record-level DP: epsilon {epsilon:.4}, {summary}");
    assert!(
        epsilon > 1.9 && epsilon <= 2.0 + 1e-6,
        "epsilon {epsilon} (target 2)"
    );
    let rows = metrics(&run.sandbox);
    let inertia = column(&rows, "inertia");
    println!("k-means (DP) pooled test inertia per round: {inertia:?}");
    assert!(inertia[14] < 0.85 * inertia[0], "{inertia:?}");
    // The raw training inertia is not released under DP: the cell is blank.
    assert!(
        rows.iter().all(|r| r["train_loss"].is_empty()),
        "train_loss under DP: {:?}",
        rows.iter().map(|r| &r["train_loss"]).collect::<Vec<_>>()
    );
    // What `privacy cost` predicts for this run file is what the ledgers hold.
    let run_file = run.sandbox.path("run.toml");
    let config =
        run.sandbox
            .write_client_schema("partner-a", "certs", "partner-a", "schema.toml", ledgers);
    // Planned as before the run: against an empty ledger.
    let before = run.sandbox.path("partner-a-before-ledger.jsonl");
    let cost = client_tool(
        &["privacy", "cost", "--json"],
        &[
            ("--run", &run_file),
            ("--config", &config),
            ("--ledger", &before),
        ],
    );
    assert!(cost.status.success(), "{cost:?}");
    let cost: serde_json::Value = serde_json::from_slice(&cost.stdout).unwrap();
    assert_eq!(cost["plan"]["sampling_rate"], 1.0, "{cost}");
    assert_eq!(cost["plan"]["steps_per_round"], 1, "{cost}");
    let predicted = cost["epsilon"].as_f64().unwrap();
    let ledger_a = fs::read_to_string(run.sandbox.path("partner-a-ledger.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(ledger_a.lines().last().unwrap()).unwrap();
    let charged = last["cumulative_epsilon"].as_f64().unwrap();
    assert!(
        (predicted - charged).abs() < 1e-9,
        "privacy cost {predicted} vs ledger {charged}"
    );
    for p in PARTNERS {
        let ledger: PathBuf = run.sandbox.path(&format!("{p}-ledger.jsonl"));
        let verified = client_tool(&["privacy", "ledger", "verify"], &[("", &ledger)]);
        let text = String::from_utf8_lossy(&verified.stdout).to_string()
            + &String::from_utf8_lossy(&verified.stderr);
        assert!(verified.status.success(), "{p}: {text}");
        let entries = fs::read_to_string(&ledger).unwrap().lines().count();
        assert_eq!(entries, 15, "{p}: one charge per round");
    }
}

#[test]
fn softmax_regression_of_the_contract_type_beats_the_class_prior() {
    let run = federate(
        "schema-contract.toml",
        &demo_run_file("contract/run.toml"),
        "",
    );
    let summary = run.sandbox.summary();
    assert_eq!(summary["model"], "softmax_regression", "{summary}");
    let q = &summary["quality"];
    assert_eq!(q["kind"], "multiclass", "{summary}");
    let accuracy = q["accuracy"].as_f64().unwrap();
    let log_loss = q["log_loss"].as_f64().unwrap();
    let model = model_json(&run.sandbox);
    assert_eq!(
        model["classes"],
        serde_json::json!(["month-to-month", "one year", "two year"])
    );
    // The pooled class prior of the test splits (from each partner's quality
    // report): the log loss of always predicting the class frequencies, and
    // the share of the majority class.
    let mut prior = [0u64; 3];
    let mut config = PathBuf::new();
    for p in PARTNERS {
        config = run
            .sandbox
            .write_client_schema(p, "certs", p, "schema-contract.toml", "");
        let report = client_tool(&["check-data", "--json"], &[("--config", &config)]);
        assert!(report.status.success(), "{report:?}");
        let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
        let test = json
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["split"] == "test")
            .unwrap();
        for (i, c) in test["report"]["classes"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            prior[i] += c.as_u64().unwrap();
        }
    }
    let total = prior.iter().sum::<u64>() as f64;
    assert_eq!(total as u64, q["examples"].as_u64().unwrap());
    let entropy: f64 = prior
        .iter()
        .map(|&c| c as f64 / total)
        .map(|p| -p * p.ln())
        .sum();
    let majority = *prior.iter().max().unwrap() as f64 / total;
    let scores = run.sandbox.path("contract-scores.csv");
    let scored = client_tool(
        &["score"],
        &[
            ("--config", &config),
            ("--model", &run.sandbox.path("out/model.json")),
            ("--out", &scores),
        ],
    );
    assert!(scored.status.success(), "{scored:?}");
    let (header, rows) = read_csv(&scores);
    assert_eq!(header, ["user_id", "class", "probability"]);
    let mut counts = std::collections::BTreeMap::new();
    for r in &rows {
        *counts.entry(r[1].clone()).or_insert(0u32) += 1;
    }
    println!(
        "softmax: accuracy {accuracy:.4} (majority class {majority:.4}), log loss {log_loss:.4} (class prior {entropy:.4}), macro F1 {}; predicted classes on partner-d: {counts:?}",
        q["macro_f1"]
    );
    assert!(
        log_loss < entropy - 0.2,
        "log loss {log_loss} vs prior {entropy}"
    );
    assert!(
        accuracy > majority + 0.1,
        "accuracy {accuracy} vs majority {majority}"
    );
    assert!(counts.len() >= 2, "predicts a single class: {counts:?}");
}

#[test]
fn a_model_family_that_does_not_fit_the_clients_label_stops_the_run_with_a_reason() {
    let run_toml = demo_run_file("value/run.toml");
    assert_run_stops_saying(
        &run_toml,
        "schema.toml",
        "the run trains a linear_regression model, which needs a numeric target (type = \"target\") in the clients' schema; their schema declares 'churn' as a binary label",
    );
}

#[test]
fn operators_see_the_pooled_metrics_of_a_kmeans_run_in_status_and_watch() {
    let sandbox = Sandbox::new();
    let (config, _) = sandbox.write_coordinator(&fedprofile_e2e::telco_run(1, 1, 1, 10.0));
    let (_coordinator, port) = sandbox.start_coordinator_with(&config, None, &[], &[]);
    let _clients = sandbox.start_clients(&PARTNERS, port, &["--keep-running"]);
    let operator = sandbox.operator_config("ops", port, true);
    let run_file = sandbox.path("segments.toml");
    fs::write(&run_file, demo_run_file("run-segments.toml")).unwrap();
    let started = sandbox.operator(&operator, &["run", "start", run_file.to_str().unwrap()]);
    assert!(started.status.success(), "{started:?}");
    let id = String::from_utf8_lossy(&started.stdout).trim().to_string();
    let watched = sandbox.operator(&operator, &["run", "watch", &id]);
    assert!(watched.status.success(), "{watched:?}");
    let watch_text = String::from_utf8_lossy(&watched.stderr).to_string()
        + &String::from_utf8_lossy(&watched.stdout);
    assert!(watch_text.contains("inertia"), "{watch_text}");
    let status = sandbox.operator(&operator, &["run", "status", &id]);
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("finished") && text.contains("inertia") && text.contains("segment sizes"),
        "{text}"
    );
}

#[test]
fn a_kmeans_run_can_warm_start_from_earlier_segments() {
    let earlier = segments_run();
    let earlier_model = earlier.sandbox.path("out/model.json");
    let earlier_inertia = column(&metrics(&earlier.sandbox), "inertia");
    let run_toml = demo_run_file("run-segments.toml")
        .replace("rounds = 15", "rounds = 2")
        .replace(
            "seed = 7",
            &format!("seed = 7\nwarm_start = \"{}\"", earlier_model.display()),
        );
    let run = federate("schema.toml", &run_toml, "");
    assert!(run.stdout.contains("warm start from"), "{}", run.stdout);
    let inertia = column(&metrics(&run.sandbox), "inertia");
    // The first round already assigns against the earlier (converged) centroids.
    let converged = *earlier_inertia.last().unwrap();
    assert!(
        (inertia[0] - converged).abs() <= 0.01 * converged,
        "warm-started round 1 inertia {} vs earlier final {converged}",
        inertia[0]
    );
    assert!(inertia[0] < 0.8 * earlier_inertia[0]);
}

#[test]
fn a_warm_start_from_another_family_is_refused_with_the_reason() {
    let earlier = segments_run();
    let run_toml = demo_run_file("value/run.toml").replace(
        "model = \"linear_regression\"",
        &format!(
            "model = \"linear_regression\"\nwarm_start = \"{}\"",
            earlier.sandbox.path("out/model.json").display()
        ),
    );
    assert_run_stops_saying(
        &run_toml,
        "schema-value.toml",
        "is a kmeans model, the run trains linear_regression",
    );
}

#[test]
fn linear_regression_trains_under_record_level_dp_and_softmax_under_client_level_dp() {
    // Record-level DP-SGD on the squared error: each partner calibrates sigma
    // to epsilon 2 for the run and charges its ledger every round.
    let run_toml = demo_run_file("value/run.toml").replace("rounds = 20", "rounds = 5")
        + "[privacy]\nmode = \"record\"\ndelta = 1e-5\n[privacy.record]\nclip_norm = 50.0\ntarget_epsilon = 2.0\n";
    let ledgers = "[privacy]\nepsilon = 3.0\ndelta = 1e-5\nledger = \"{partner}-ledger.jsonl\"\n";
    let run = federate("schema-value.toml", &run_toml, ledgers);
    let summary = run.sandbox.summary();
    let epsilon = summary["epsilon"].as_f64().unwrap();
    let r2 = summary["quality"]["r2"].as_f64().unwrap();
    println!("linear regression, record-level DP: epsilon {epsilon:.4}, R² {r2:.4}");
    assert!(epsilon > 1.9 && epsilon <= 2.0 + 1e-6, "{summary}");
    assert!(r2 > 0.8, "{summary}");
    for p in PARTNERS {
        let ledger = run.sandbox.path(&format!("{p}-ledger.jsonl"));
        assert_eq!(
            fs::read_to_string(&ledger).unwrap().lines().count(),
            5,
            "{p}"
        );
    }

    // DP-FedAvg at the coordinator acts on the softmax model's deltas like on any other.
    let run_toml = demo_run_file("contract/run.toml")
        + "[privacy]\nmode = \"client\"\ndelta = 1e-5\n[privacy.client]\nclip_norm = 1.0\nnoise_multiplier = 0.3\n";
    let run = federate("schema-contract.toml", &run_toml, "");
    let summary = run.sandbox.summary();
    println!(
        "softmax regression, client-level DP: {}",
        summary["quality"]
    );
    assert_eq!(summary["completed"], true, "{summary}");
    assert!(summary["epsilon"].as_f64().unwrap() > 0.0, "{summary}");
    assert_eq!(summary["quality"]["kind"], "multiclass");
    assert!(run.sandbox.path("out/coordinator-ledger.jsonl").exists());
}
