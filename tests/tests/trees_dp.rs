//! Gradient-boosted trees under record-level DP end to end: the demo's
//! `run-trees-dp.toml` on the four Telco partners (ε = 1 each) over real
//! processes. Each tree is one release (its random structure's leaf sums),
//! each partner's ledger holds exactly the releases `privacy cost --run`
//! planned and ends at the ε it predicted, and the model is useful.

use std::fs;
use std::time::Duration;

use fedprofile_e2e::{PARTNERS, Sandbox, client_cmd, demo_dir};
use fedprofile_learning::ModelDocument;
use fedprofile_learning::trees::TreeModel;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

fn privacy_section(sandbox: &Sandbox, partner: &str) -> String {
    format!(
        "[privacy]\nepsilon = 1.0\ndelta = 1e-5\nledger = \"{}\"\n",
        sandbox.path(&format!("ledgers/{partner}.jsonl")).display()
    )
}

#[test]
fn a_dp_tree_run_charges_what_privacy_cost_planned_and_meets_the_floor() {
    let run_toml = fs::read_to_string(demo_dir().join("run-trees-dp.toml")).unwrap();
    let trees: u64 = 150;
    assert!(
        run_toml.contains(&format!("rounds = {trees} ")),
        "the demo's run file grows {trees} trees"
    );
    let sandbox = Sandbox::new();
    let (config, run) = sandbox.write_coordinator(&run_toml);
    let configs: Vec<_> = PARTNERS
        .iter()
        .map(|p| sandbox.write_client_with(p, "certs", p, &privacy_section(&sandbox, p)))
        .collect();

    // Before the run, on empty ledgers: what the run will cost, in releases.
    let mut planned = Vec::new();
    for (partner, cfg) in PARTNERS.iter().zip(&configs) {
        let before = sandbox.path(&format!("ledgers/{partner}-before.jsonl"));
        let args = [
            "privacy",
            "cost",
            "--run",
            run.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--ledger",
            before.to_str().unwrap(),
        ];
        let cost = json(&client_cmd(&[&args[..], &["--json"]].concat()));
        assert_eq!(cost["plan"]["releases"], trees, "{partner}: {cost}");
        let text = client_cmd(&args);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains(&format!(
                "plan: {trees} releases of local statistics over {trees} rounds"
            )),
            "{partner}: {text}"
        );
        planned.push(cost["epsilon"].as_f64().unwrap());
    }

    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut clients: Vec<_> = PARTNERS
        .iter()
        .zip(&configs)
        .map(|(p, cfg)| sandbox.start_client(p, cfg, port, &[]))
        .collect();
    let status = coordinator.wait(Duration::from_secs(600));
    assert!(
        status.success(),
        "{}",
        fedprofile_e2e::tail(&coordinator.read_stderr(), 30)
    );
    for c in &mut clients {
        assert!(
            c.wait(Duration::from_secs(30)).success(),
            "{}",
            c.read_stderr()
        );
    }

    // Every release is charged, and the ledger ends where the plan said.
    for ((partner, predicted), cfg) in PARTNERS.iter().zip(&planned).zip(&configs) {
        let ledger = sandbox.path(&format!("ledgers/{partner}.jsonl"));
        let verify = client_cmd(&["privacy", "ledger", "verify", ledger.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&verify.stdout);
        assert!(verify.status.success(), "{partner}: {verify:?}");
        assert!(
            said.contains(&format!("intact, {trees} charged tasks")),
            "{partner}: {said}"
        );
        // The ledger (verified above) is JSON lines; its last entry holds the
        // cumulative ε. (`ledger show --json` of 150 entries overflows the
        // pipe that `client_cmd` reads only after the command exits.)
        let text = fs::read_to_string(&ledger).unwrap();
        let entry: serde_json::Value =
            serde_json::from_str(text.lines().last().expect("a charged ledger")).unwrap();
        let last = entry["cumulative_epsilon"].as_f64().unwrap();
        assert!(last <= 1.0, "{partner} spent {last} > its budget");
        assert!(
            last > 0.9,
            "{partner} spent only {last} of a calibrated ε = 1"
        );
        assert!(
            (predicted - last).abs() <= 1e-9 * last.max(1.0),
            "{partner}: privacy cost said {predicted}, the ledger shows {last}"
        );
        // The same run again does not fit the rest of the budget.
        let again = client_cmd(&[
            "privacy",
            "cost",
            "--run",
            run.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(again.status.code(), Some(1), "{partner}: {again:?}");
    }

    // The model file holds the trees (at most depth 2), one per release.
    let doc = ModelDocument::load(sandbox.path("out/model.json")).expect("model.json");
    let model = TreeModel::from_flat(doc.model().params().view()).expect("a tree model");
    assert_eq!(model.complete_trees() as u64, trees);
    assert!(model.trees().iter().all(|t| t.max_depth() <= 2));

    // Utility: the noise is unseeded, so the figures vary from run to run
    // (see FLOOR_AUC). Leaf values without the shrinkage by the noise gave
    // 0.79-0.82, level histograms ~0.70, a broken release ~0.5.
    let summary = sandbox.summary();
    let (auc, log_loss) = (
        summary["auc"].as_f64().unwrap(),
        summary["log_loss"].as_f64().unwrap(),
    );
    eprintln!("DP tree run: AUC {auc:.4}, log loss {log_loss:.4}");
    assert!(auc >= FLOOR_AUC, "DP tree run AUC {auc} below {FLOOR_AUC}");
    assert!(
        log_loss <= CEILING_LOG_LOSS,
        "DP tree run log loss {log_loss} above {CEILING_LOG_LOSS}"
    );
}

/// Below every AUC the demo's run file reached (2026-12-02; docs/privacy.md,
/// "Gradient-boosted trees"): 0.8185-0.8347 over five demo runs with seeds
/// 0-4, and 0.8182-0.8290 in five more with seed 0 (this test's; standard
/// deviation ~0.004), with a margin of four of those deviations.
const FLOOR_AUC: f64 = 0.80;
/// Above every log loss those runs reached (0.439-0.454).
const CEILING_LOG_LOSS: f64 = 0.47;
