//! The client node's task handling on the demo data: DP charges, the result
//! cache for re-sent tasks, seeded reproducibility and budget refusal.

use std::path::{Path, PathBuf};

use fedprofile_client::node::Node;
use fedprofile_client::privacy::PrivacySettings;
use fedprofile_data::Schema;
use fedprofile_protocol::messages::{
    ClientReply, ModelSnapshot, RecordDpTask, ResultBody, Task, TaskBody, TrainTask,
};
use ndarray::Array1;

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo")
}

fn node(ledger: &Path, epsilon: f64, seed: Option<u64>) -> Node {
    let settings = PrivacySettings {
        epsilon,
        delta: 1e-5,
        ledger: ledger.to_path_buf(),
        require_dp: false,
    };
    Node::load(
        &demo().join("schema.toml"),
        &demo().join("data/partner-b"),
        "train",
        "test",
        Some(&settings),
        fedprofile_client::node::TestOptions {
            seed,
            ..Default::default()
        },
    )
    .unwrap()
}

fn dp_task(id: &str, round: u32, sigma: f64) -> Task {
    let features = Schema::from_path(&demo().join("schema.toml"))
        .unwrap()
        .feature_template();
    let dim = features.dim();
    Task {
        task_id: id.into(),
        run_id: "run".into(),
        round,
        body: TaskBody::Train(TrainTask {
            model: ModelSnapshot {
                model_type: "logistic_regression".into(),
                features,
                params: Array1::zeros(dim + 1),
                outputs: 1,
            },
            local_epochs: 1,
            batch_size: 256,
            learning_rate: 0.5,
            record_dp: Some(RecordDpTask {
                clip_norm: 3.0,
                noise_multiplier: Some(sigma),
                target_epsilon: None,
                delta: 1e-5,
                planned_rounds: 20,
            }),
            update_clip_norm: None,
            prox_mu: 0.0,
        }),
    }
}

fn delta(reply: &ClientReply) -> Array1<f64> {
    match reply {
        ClientReply::Result {
            body: ResultBody::Train(t),
            ..
        } => t.delta.clone(),
        other => panic!("expected a training result, got {other:?}"),
    }
}

fn ledger_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_task_sent_again_is_answered_from_the_cache_and_charged_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let mut node = node(&ledger, 10.0, None);
    let task = dp_task("t-1", 1, 2.0);
    let first = node.handle(&task);
    let again = node.handle(&task);
    assert_eq!(first, again, "the re-sent task got a new answer");
    assert_eq!(
        ledger_lines(&ledger),
        1,
        "the re-sent task was charged twice"
    );
    let ClientReply::Result {
        body: ResultBody::Train(t),
        ..
    } = &first
    else {
        panic!("{first:?}")
    };
    assert!(t.epsilon_spent.unwrap() > 0.0);
    assert!(!t.not_private);
    // A restarted node (empty cache) refuses the charged task rather than train it again.
    let mut restarted = self::node(&ledger, 10.0, None);
    match restarted.handle(&task) {
        ClientReply::Refusal { reason, .. } => {
            assert!(reason.contains("already charged"), "{reason}")
        }
        other => panic!("a charged task was trained again: {other:?}"),
    }
    assert_eq!(ledger_lines(&ledger), 1);
}

#[test]
fn the_same_test_seed_gives_identical_updates_and_no_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed| {
        let mut n = node(&dir.path().join(name), 10.0, seed);
        n.handle(&dp_task("t-1", 1, 2.0))
    };
    let (a, b) = (run("a.jsonl", Some(7)), run("b.jsonl", Some(7)));
    assert_eq!(delta(&a), delta(&b));
    if let ClientReply::Result {
        body: ResultBody::Train(t),
        ..
    } = &a
    {
        assert!(t.not_private, "a seeded update must be marked not private");
    }
    let (c, d) = (run("c.jsonl", None), run("d.jsonl", None));
    assert_ne!(delta(&c), delta(&d));
}

#[test]
fn a_task_over_budget_is_refused_before_training_and_not_charged() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let mut node = node(&ledger, 0.2, None);
    // sigma 0.8 over ~5 steps at q ~0.2 costs far more than 0.2.
    match node.handle(&dp_task("t-1", 1, 0.8)) {
        ClientReply::Refusal { reason, .. } => {
            assert!(
                reason.contains("privacy budget would be exceeded"),
                "{reason}"
            );
            assert!(reason.contains("above the budget of 0.2"), "{reason}");
        }
        other => panic!("an over-budget task was trained: {other:?}"),
    }
    assert_eq!(ledger_lines(&ledger), 0);
}

#[test]
fn fedprox_applies_under_record_level_dp_at_the_same_cost() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, mu: f64| {
        let mut n = node(&dir.path().join(name), 10.0, Some(3));
        let mut task = dp_task("t-1", 1, 2.0);
        if let TaskBody::Train(t) = &mut task.body {
            // Start away from zero so that the proximal pull is visible.
            t.model.params.fill(0.5);
            t.prox_mu = mu;
        }
        let reply = n.handle(&task);
        let epsilon = match &reply {
            ClientReply::Result {
                body: ResultBody::Train(t),
                ..
            } => t.epsilon_spent.unwrap(),
            other => panic!("{other:?}"),
        };
        (delta(&reply), epsilon)
    };
    let (plain, e0) = run("a.jsonl", 0.0);
    let (prox, e1) = run("b.jsonl", 1.0);
    assert_eq!(e0, e1, "the proximal term is data-independent: same charge");
    // Same seed, same noise: only the proximal pull differs, and it shrinks the update.
    assert_ne!(plain, prox);
    assert!(prox.dot(&prox) < plain.dot(&plain), "{prox} vs {plain}");
}
