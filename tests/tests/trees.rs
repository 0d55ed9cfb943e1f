//! Gradient-boosted trees end to end on the four Telco partners: the model a
//! federation grows (over mutual TLS, one level per exchange) equals the model
//! the same algorithm trains in one process on the pooled rows; its TreeSHAP
//! contributions add up for every test user; `score` and `profile` read it.

use std::fs;
use std::sync::OnceLock;

use fedprofile_e2e::{Finished, PARTNERS, client_cmd, demo_dir, federate};
use fedprofile_learning::trees::{NodeKind, TreeLoss, TreeModel, train_pooled, tree_shap};
use fedprofile_learning::{FeatureSpec, ModelDocument};
use ndarray::{Array1, Array2, Axis, concatenate};

/// Trees of the federated run (few and shallow, to keep the test short).
const TREES: u32 = 6;
const DEPTH: u32 = 4;

fn run_file(trees: u32, depth: u32) -> String {
    format!(
        "[run]\nname = \"e2e-trees\"\nrounds = {trees}\nmodel = \"gradient_boosted_trees\"\n\
         [clients]\nmin_per_round = 4\nmin_connected_to_start = 4\nstart_timeout_secs = 60\n\
         [round]\ndeadline_secs = 60\neval_every = {trees}\nmax_retries = 1\n\
         [trees]\nmax_depth = {depth}\nlearning_rate = 0.3\n"
    )
}

fn trees_run() -> &'static Finished {
    static RUN: OnceLock<Finished> = OnceLock::new();
    RUN.get_or_init(|| federate("schema.toml", &run_file(TREES, DEPTH), ""))
}

fn tree_model(doc: &ModelDocument) -> TreeModel {
    TreeModel::from_flat(doc.model().params().view()).expect("a tree model")
}

/// One split of every partner, encoded with `spec` exactly as a client node
/// encodes it, stacked in partner order: (rows, labels).
fn pooled(split: &str, spec: &FeatureSpec) -> (Array2<f64>, Array1<f64>) {
    let schema = fedprofile_data::Schema::from_path(&demo_dir().join("schema.toml")).unwrap();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for partner in PARTNERS {
        let dir = demo_dir().join("data").join(partner);
        let loaded = fedprofile_data::load_split(&schema, &dir, split).unwrap();
        xs.push(loaded.dataset.encode(spec).unwrap());
        ys.push(loaded.dataset.labels().unwrap());
    }
    let xv: Vec<_> = xs.iter().map(|x| x.view()).collect();
    let yv: Vec<_> = ys.iter().map(|y| y.view()).collect();
    (
        concatenate(Axis(0), &xv).unwrap(),
        concatenate(Axis(0), &yv).unwrap(),
    )
}

#[test]
fn the_federated_trees_equal_the_trees_grown_in_one_process_on_the_pooled_rows() {
    let run = trees_run();
    let doc = ModelDocument::load(run.sandbox.path("out/model.json")).expect("model.json");
    let federated = tree_model(&doc);
    assert_eq!(federated.complete_trees(), TREES as usize);
    let (x, y) = pooled("train", doc.features());
    let reference = train_pooled(
        x.view(),
        y.view(),
        TreeLoss::Logistic,
        *federated.params(),
        TREES,
    )
    .unwrap();
    assert_eq!(
        federated.binning().unwrap(),
        reference.binning().unwrap(),
        "the federation's bins differ from the pooled rows' bins"
    );
    let mut splits = 0;
    for (t, (a, b)) in federated.trees().iter().zip(reference.trees()).enumerate() {
        assert_eq!(a.nodes().len(), b.nodes().len(), "tree {t}: node counts");
        for (n, (p, q)) in a.nodes().iter().zip(b.nodes()).enumerate() {
            match (p.kind(), q.kind()) {
                (
                    NodeKind::Split {
                        feature: f1,
                        bin: b1,
                        left: l1,
                        right: r1,
                        ..
                    },
                    NodeKind::Split {
                        feature: f2,
                        bin: b2,
                        left: l2,
                        right: r2,
                        ..
                    },
                ) => {
                    assert_eq!((f1, b1, l1, r1), (f2, b2, l2, r2), "tree {t} node {n}");
                    splits += 1;
                }
                (NodeKind::Leaf, NodeKind::Leaf) => {}
                (k1, k2) => panic!("tree {t} node {n}: {k1:?} federated, {k2:?} pooled"),
            }
            assert!(
                (p.value() - q.value()).abs() <= 1e-9,
                "tree {t} node {n}: value {} federated, {} pooled",
                p.value(),
                q.value()
            );
            assert!((p.cover() - q.cover()).abs() <= 1e-9 * q.cover().abs().max(1.0));
        }
    }
    // Depth-4 trees on 5,600 rows split: the comparison is not of stumps.
    assert!(splits >= TREES as usize * 7, "only {splits} splits");
}

#[test]
fn treeshap_contributions_add_up_for_every_test_user_and_profile_reads_the_model() {
    let run = trees_run();
    let path = run.sandbox.path("out/model.json");
    let doc = ModelDocument::load(&path).unwrap();
    let model = tree_model(&doc);
    let (x, _) = pooled("test", doc.features());
    let margins = model.margin(x.view()).unwrap();
    for (i, row) in x.rows().into_iter().enumerate() {
        let (expected, contributions) = tree_shap(&model, row).unwrap();
        let gap = margins[i] - expected - contributions.sum();
        assert!(gap.abs() <= 1e-9, "user {i}: contributions miss by {gap}");
    }
    assert!(x.nrows() > 1_000, "{} test users", x.nrows());

    // The partner's tools: a probability per user, and drivers per user.
    let config = run.sandbox.write_client("partner-a", "certs", "partner-a");
    let scores = run.sandbox.path("scores.csv");
    let out = client_cmd(&[
        "score",
        "--config",
        config.to_str().unwrap(),
        "--model",
        path.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&scores).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("user_id,score"));
    let probabilities: Vec<f64> = lines
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(probabilities.iter().any(|p| *p > 0.5) && probabilities.iter().any(|p| *p < 0.2));

    let profiles = run.sandbox.path("profiles.csv");
    let out = client_cmd(&[
        "profile",
        "--config",
        config.to_str().unwrap(),
        "--model",
        path.to_str().unwrap(),
        "--top",
        "3",
        "--out",
        profiles.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&profiles).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert_eq!(
        header,
        "user_id,churn_probability,churn_logit,churn_reference,churn_driver_1,churn_contribution_1,churn_driver_2,churn_contribution_2,churn_driver_3,churn_contribution_3,churn_other_contribution"
    );
    // The written drivers explain the written logit (6 decimals each).
    let mut users = 0;
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let number = |i: usize| cells[i].parse::<f64>().unwrap();
        let explained = number(3) + number(5) + number(7) + number(9) + number(10);
        assert!((explained - number(2)).abs() < 1e-5, "{line}");
        users += 1;
    }
    assert!(users > 100, "{users} profiles");
}

#[test]
fn a_tree_run_reports_pooled_metrics_and_writes_a_readable_model_file() {
    let run = trees_run();
    assert!(run.stdout.contains("auc"), "{}", run.stdout);
    let summary = run.sandbox.summary();
    let auc = summary["auc"].as_f64().unwrap();
    // Six depth-4 trees with learning rate 0.3 already rank churners well.
    assert!(auc > 0.80, "pooled AUC {auc}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.sandbox.path("out/model.json")).unwrap())
            .unwrap();
    assert_eq!(json["model_type"], "gradient_boosted_trees");
    assert_eq!(json["settings"]["max_depth"], DEPTH);
    assert_eq!(json["trees"].as_array().unwrap().len(), TREES as usize);
    let root = &json["trees"][0]["nodes"][0];
    assert_eq!(root["leaf"], false);
    assert!(root["feature"].is_string(), "{root}");
    let doc = ModelDocument::load(run.sandbox.path("out/model.json")).unwrap();
    assert_eq!(
        json["binning"].as_array().unwrap().len(),
        doc.features().entry_names().len()
    );
}

#[test]
fn a_warm_started_tree_run_adds_trees_to_the_earlier_model() {
    let first = trees_run();
    let earlier = first.sandbox.path("out/model.json");
    let run = run_file(2, DEPTH).replace(
        "model = \"gradient_boosted_trees\"\n",
        &format!(
            "model = \"gradient_boosted_trees\"\nwarm_start = \"{}\"\n",
            earlier.display()
        ),
    );
    let second = federate("schema.toml", &run, "");
    assert!(
        second.stdout.contains("warm start from"),
        "{}",
        second.stdout
    );
    let before = tree_model(&ModelDocument::load(&earlier).unwrap());
    let after = tree_model(&ModelDocument::load(second.sandbox.path("out/model.json")).unwrap());
    assert_eq!(after.complete_trees(), TREES as usize + 2);
    assert_eq!(after.binning(), before.binning(), "the bins are kept");
    assert_eq!(&after.trees()[..TREES as usize], before.trees());
}
