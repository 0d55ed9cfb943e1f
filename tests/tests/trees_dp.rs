//! Gradient-boosted trees under record-level DP end to end: the demo's
//! `run-trees-dp.toml` on the four Telco partners (ε = 1 each) over real
//! processes. Each tree is one release (its random structure's leaf sums),
//! each partner's ledger holds exactly the releases `privacy cost --run`
//! planned and ends at the ε it predicted, and the model is useful; a DP run
//! warm-started from a DP tree model grows random trees too and charges what
//! was planned.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fedprofile_e2e::{PARTNERS, Sandbox, client_cmd, demo_dir};
use fedprofile_learning::ModelDocument;
use fedprofile_learning::trees::{TreeGrowth, TreeModel};

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// A client config for each partner with a budget of `epsilon`, charging
/// the ledger `ledgers/<partner>.jsonl` of `ledgers` (another sandbox's, for
/// the partners of an earlier run).
fn dp_configs(sandbox: &Sandbox, ledgers: &Sandbox, epsilon: f64) -> Vec<PathBuf> {
    PARTNERS
        .iter()
        .map(|p| {
            let privacy = format!(
                "[privacy]\nepsilon = {epsilon}\ndelta = 1e-5\nledger = \"{}\"\n",
                ledgers.ledger(p).display()
            );
            sandbox.write_client_with(p, "certs", p, &privacy)
        })
        .collect()
}

/// `privacy cost --run RUN --config CFG --ledger LEDGER`, as JSON or text.
fn privacy_cost(run: &Path, cfg: &Path, ledger: &Path, as_json: bool) -> Output {
    let args = [
        "privacy",
        "cost",
        "--run",
        run.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--ledger",
        ledger.to_str().unwrap(),
    ];
    if as_json {
        client_cmd(&[&args[..], &["--json"]].concat())
    } else {
        client_cmd(&args)
    }
}

/// Runs the coordinator on `run` with the four partners on `configs`, to the end.
fn federate_dp(sandbox: &Sandbox, run_toml: &str, configs: &[PathBuf]) {
    let (config, run) = sandbox.write_coordinator(run_toml);
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut clients = sandbox.start_configured(&PARTNERS, configs, port, &[]);
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
}

/// Verifies `ledger` (`tasks` charged tasks) and returns its cumulative ε.
fn ledger_end(partner: &str, ledger: &Path, tasks: u64) -> f64 {
    let verify = client_cmd(&["privacy", "ledger", "verify", ledger.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{partner}: {verify:?}");
    assert!(
        said.contains(&format!("intact, {tasks} charged tasks")),
        "{partner}: {said}"
    );
    // The ledger (verified above) is JSON lines; its last entry holds the
    // cumulative ε. (`ledger show --json` of 150 entries overflows the pipe
    // that `client_cmd` reads only after the command exits.)
    let text = fs::read_to_string(ledger).unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a charged ledger")).unwrap();
    entry["cumulative_epsilon"].as_f64().unwrap()
}

/// The demo's DP run file with `trees` rounds (and, if given, a warm start).
fn dp_run_file(trees: u64, warm_start: Option<&Path>) -> String {
    let demo = fs::read_to_string(demo_dir().join("run-trees-dp.toml")).unwrap();
    assert!(demo.contains("rounds = 150 "), "the demo grows 150 trees");
    let mut run = demo.replace("rounds = 150 ", &format!("rounds = {trees} "));
    if let Some(path) = warm_start {
        run = run.replace(
            "model = \"gradient_boosted_trees\"\n",
            &format!(
                "model = \"gradient_boosted_trees\"\nwarm_start = \"{}\"\n",
                path.display()
            ),
        );
        assert!(run.contains("warm_start"), "{run}");
    }
    run
}

#[test]
fn a_dp_tree_run_charges_what_privacy_cost_planned_and_meets_the_floor() {
    let trees: u64 = 150;
    let run_toml = dp_run_file(trees, None);
    let sandbox = Sandbox::new();
    let (_, run) = sandbox.write_coordinator(&run_toml);
    let configs = dp_configs(&sandbox, &sandbox, 1.0);

    // Before the run, on empty ledgers: what the run will cost, in releases.
    let mut planned = Vec::new();
    for (partner, cfg) in PARTNERS.iter().zip(&configs) {
        let before = sandbox.path(&format!("ledgers/{partner}-before.jsonl"));
        let cost = json(&privacy_cost(&run, cfg, &before, true));
        assert_eq!(cost["plan"]["releases"], trees, "{partner}: {cost}");
        let text = privacy_cost(&run, cfg, &before, false);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains(&format!(
                "plan: {trees} releases of local statistics over {trees} rounds"
            )),
            "{partner}: {text}"
        );
        planned.push(cost["epsilon"].as_f64().unwrap());
    }

    federate_dp(&sandbox, &run_toml, &configs);

    // Every release is charged, and the ledger ends where the plan said.
    for ((partner, predicted), cfg) in PARTNERS.iter().zip(&planned).zip(&configs) {
        let ledger = sandbox.ledger(partner);
        let last = ledger_end(partner, &ledger, trees);
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
        let again = privacy_cost(&run, cfg, &ledger, true);
        assert_eq!(again.status.code(), Some(1), "{partner}: {again:?}");
    }

    // The model file holds the trees (at most depth 2), one per release, and
    // says how they were grown.
    let doc = ModelDocument::load(sandbox.path("out/model.json")).expect("model.json");
    let model = TreeModel::from_flat(doc.model().params().view()).expect("a tree model");
    assert_eq!(model.complete_trees() as u64, trees);
    assert!(model.trees().iter().all(|t| t.max_depth() <= 2));
    assert!(matches!(model.growth(), TreeGrowth::Random { .. }));

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

#[test]
fn a_dp_warm_start_from_a_dp_tree_model_grows_random_trees_and_charges_the_plan() {
    let (first_trees, more_trees) = (20u64, 10u64);
    // The first run: the partners' budgets of ε = 2 hold both runs.
    let first = Sandbox::new();
    let configs = dp_configs(&first, &first, 2.0);
    federate_dp(&first, &dp_run_file(first_trees, None), &configs);
    let earlier = first.path("out/model.json");
    let json_file: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&earlier).unwrap()).unwrap();
    assert_eq!(
        json_file["settings"]["growth"]["kind"], "random",
        "{json_file}"
    );
    let before = TreeModel::from_flat(
        ModelDocument::load(&earlier)
            .unwrap()
            .model()
            .params()
            .view(),
    )
    .unwrap();
    assert_eq!(before.complete_trees() as u64, first_trees);

    // The second run starts from it, charging the same partners' ledgers.
    let second = Sandbox::new();
    let configs = dp_configs(&second, &first, 2.0);
    let run_toml = dp_run_file(more_trees, Some(&earlier));
    let (_, run) = second.write_coordinator(&run_toml);
    let mut planned = Vec::new();
    for (partner, cfg) in PARTNERS.iter().zip(&configs) {
        let cost = json(&privacy_cost(&run, cfg, &first.ledger(partner), true));
        assert_eq!(cost["plan"]["releases"], more_trees, "{partner}: {cost}");
        assert_eq!(cost["ledger_entries"], first_trees, "{partner}: {cost}");
        planned.push(cost["total_epsilon"].as_f64().unwrap());
    }
    federate_dp(&second, &run_toml, &configs);
    for (partner, predicted) in PARTNERS.iter().zip(&planned) {
        let last = ledger_end(partner, &first.ledger(partner), first_trees + more_trees);
        assert!(
            (predicted - last).abs() <= 1e-9 * last.max(1.0),
            "{partner}: privacy cost said {predicted} after both runs, the ledger shows {last}"
        );
        assert!(last <= 2.0, "{partner} spent {last} > its budget");
    }

    // The model has the earlier trees and the new ones, grown as random
    // structures from the earlier model's seed.
    let after = TreeModel::from_flat(
        ModelDocument::load(second.path("out/model.json"))
            .unwrap()
            .model()
            .params()
            .view(),
    )
    .unwrap();
    assert_eq!(after.complete_trees() as u64, first_trees + more_trees);
    assert_eq!(&after.trees()[..first_trees as usize], before.trees());
    assert_eq!(after.growth(), before.growth());
    assert_eq!(after.binning(), before.binning(), "the bins are kept");
    let next = before.next_structure().expect("a random model");
    let splits = |t: &fedprofile_learning::trees::Tree| -> Vec<_> {
        t.nodes().iter().map(|n| (n.feature(), n.bin())).collect()
    };
    assert_eq!(
        splits(&after.trees()[first_trees as usize]),
        splits(&next),
        "the first new tree has the structure the earlier model draws next"
    );
}

/// Below every AUC the demo's run file reached (2026-12-02, features
/// weighted by the released leaf sums; docs/privacy.md, "Gradient-boosted
/// trees"): 0.828-0.845 over ten demo runs (seeds 0-4 twice) and 0.836 in
/// this test; the rule "lowest seen minus 0.01" gives 0.818, but the
/// in-process simulation's 40 runs reach down to 0.819, so the floor keeps
/// about four standard deviations (~0.006) below the mean of 0.837.
const FLOOR_AUC: f64 = 0.81;
/// Above every log loss those runs reached (0.426-0.442; 0.454 in the simulation).
const CEILING_LOG_LOSS: f64 = 0.47;
