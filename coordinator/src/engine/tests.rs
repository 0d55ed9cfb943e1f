//! Engine tests with a fake hub and scripted clients, on paused time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedprofile_learning::metrics::EvalSummary;
use fedprofile_learning::{FeatureColumn, FeatureSpec};
use fedprofile_protocol::messages::{
    ClientReply, ColumnStats, LabelKindMsg, RefusalKind, ResultBody, ServerEvent, StatsReport,
    TaskBody, TrainReport,
};
use ndarray::Array1;
use tokio::sync::mpsc;

use super::*;

struct FakeHub {
    clients: Mutex<Vec<String>>,
    outbox: mpsc::UnboundedSender<(String, ServerEvent)>,
}

impl ClientHub for FakeHub {
    fn connected(&self) -> Vec<String> {
        self.clients.lock().unwrap().clone()
    }
    fn send(&self, client: &str, event: ServerEvent) -> bool {
        self.outbox.send((client.to_string(), event)).is_ok()
    }
    fn drop_session(&self, client: &str, _why: &str) -> bool {
        let mut clients = self.clients.lock().unwrap();
        let before = clients.len();
        clients.retain(|c| c != client);
        clients.len() < before
    }
}

/// What the fake hub sends the scripted clients: (client, event).
type Events = mpsc::UnboundedReceiver<(String, ServerEvent)>;

/// The engine's end of its inbox.
type Inbox = mpsc::Receiver<Inbound>;

/// A fake hub with `clients` connected; returns it, the events it sends (for
/// the scripted clients), and both ends of the engine's inbox.
fn fake_hub(clients: Vec<String>) -> (Arc<FakeHub>, Events, mpsc::Sender<Inbound>, Inbox) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(64);
    let hub = Arc::new(FakeHub {
        clients: Mutex::new(clients),
        outbox: out_tx,
    });
    (hub, out_rx, in_tx, in_rx)
}

/// What each scripted client holds or does, by client name.
fn by_name<T, const N: usize>(list: [(&str, T); N]) -> BTreeMap<String, T> {
    list.into_iter().map(|(c, t)| (c.to_string(), t)).collect()
}

/// The clients a, b and c, behaving as given.
fn abc(a: Behaviour, b: Behaviour, c: Behaviour) -> BTreeMap<String, Behaviour> {
    by_name([("a", a), ("b", b), ("c", c)])
}

/// An honest client whose delta is `[v, v, v]` over `examples` examples.
fn weighted(v: f64, examples: u64) -> Behaviour {
    Behaviour::Honest { v, examples }
}

/// A training report of `delta` over `examples` examples: one step, no loss,
/// no privacy spent, no cluster statistics.
fn train_report(delta: Array1<f64>, examples: u64) -> TrainReport {
    TrainReport {
        delta,
        examples,
        steps: 1,
        train_loss: 0.0,
        train_micros: 1,
        update_norm: 0.0,
        epsilon_spent: None,
        not_private: false,
        statistics: None,
    }
}

/// Sends `client`'s result `body` for `task_id` to the engine; false once the
/// engine is gone.
async fn answer(
    inbox: &mpsc::Sender<Inbound>,
    client: String,
    task_id: &str,
    body: ResultBody,
) -> bool {
    let reply = ClientReply::Result {
        task_id: task_id.to_string(),
        body,
    };
    inbox.send(Inbound::Reply { client, reply }).await.is_ok()
}

/// The next task the engine sends, with the client it is for (other events
/// are skipped); none once the engine is gone.
async fn next_task(outbox: &mut Events) -> Option<(String, fedprofile_protocol::messages::Task)> {
    while let Some((client, event)) = outbox.recv().await {
        if let ServerEvent::Task(task) = event {
            return Some((client, task));
        }
    }
    None
}

/// The statistics of a client holding the rows `x`: the test template, no
/// numeric column statistics, a label `label_column` of `kind`.
fn row_stats(x: &ndarray::Array2<f64>, label_column: &str, kind: LabelKindMsg) -> StatsReport {
    StatsReport {
        template: template(),
        numeric: vec![],
        train_examples: x.nrows() as u64,
        label_column: label_column.into(),
        label_positive: String::new(),
        label_kind: kind,
        label_classes: Vec::new(),
        binary: Vec::new(),
    }
}

struct Quiet;
impl RunObserver for Quiet {
    fn round_finished(&mut self, _: &RunSnapshot<'_>, _: &RoundRecord) {}
}

fn config(rounds: u32, min_per_round: usize) -> RunConfig {
    RunConfig {
        name: "t".into(),
        rounds,
        model: fedprofile_learning::ModelFamily::LogisticRegression,
        clusters: 0,
        seed: Some(1),
        warm_start: None,
        fraction_per_round: 1.0,
        min_per_round,
        min_connected_to_start: 3,
        start_timeout: Duration::from_secs(10),
        max_missed_tasks: 0,
        deadline: Duration::from_secs(30),
        eval_every: 1,
        max_retries: 0,
        max_update_norm_ratio: fedprofile_config::run::DEFAULT_MAX_UPDATE_NORM_RATIO,
        local_epochs: 1,
        batch_size: 32,
        learning_rate: 0.1,
        tail_average_rounds: 1,
        privacy: fedprofile_config::run::PrivacyMode::None,
        strategy: fedprofile_learning::strategy::StrategyConfig::FedAvg,
        trees: Default::default(),
        update: None,
    }
}

/// The numeric feature `x` standardised with `mean` and `std`.
fn x_column(mean: f64, std: f64) -> FeatureColumn {
    FeatureColumn::Numeric {
        name: "x".into(),
        mean,
        std,
    }
}

fn template() -> FeatureSpec {
    FeatureSpec {
        reference: None,
        columns: vec![
            x_column(0.0, 1.0),
            FeatureColumn::Boolean { name: "b".into() },
        ],
    }
}

/// How each scripted client behaves.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Answers everything; its training delta is `[v, v, v]` with `examples` weight.
    Honest { v: f64, examples: u64 },
    /// Answers statistics and evaluation, never training.
    SilentInTraining,
    /// Refuses training tasks of rounds up to `until` with `kind`, then is honest.
    Refuses { kind: RefusalKind, until: u32 },
    /// Honest in training, but its statistics for `x` have this mean (sum and
    /// sum of squares of two values equal to it).
    StatsMean(f64),
}

/// Plays the clients: answers every task per its behaviour.
async fn play(
    outbox: Events,
    inbox: mpsc::Sender<Inbound>,
    behaviours: BTreeMap<String, Behaviour>,
) {
    play_recording(outbox, inbox, behaviours, Arc::default()).await;
}

/// [`play`], noting the id of every training task received in `seen`.
async fn play_recording(
    mut outbox: Events,
    inbox: mpsc::Sender<Inbound>,
    behaviours: BTreeMap<String, Behaviour>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    while let Some((client, task)) = next_task(&mut outbox).await {
        if matches!(task.body, TaskBody::Train(_)) {
            seen.lock().unwrap().push(task.task_id.clone());
        }
        let mut behaviour = behaviours[&client];
        if let Behaviour::Refuses { kind, until } = behaviour {
            if matches!(task.body, TaskBody::Train(_)) && task.round <= until {
                let reply = ClientReply::Refusal {
                    task_id: task.task_id.clone(),
                    reason: format!("scripted {} refusal", kind.as_str()),
                    kind,
                };
                if inbox.send(Inbound::Reply { client, reply }).await.is_err() {
                    break;
                }
                continue;
            }
            behaviour = weighted(1.0, 1);
        }
        let (sum, sum_sq) = match behaviour {
            Behaviour::StatsMean(m) => (2.0 * m, 2.0 * m * m),
            _ => (4.0, 10.0),
        };
        if let Behaviour::StatsMean(_) = behaviour
            && !matches!(task.body, TaskBody::Stats { .. })
        {
            behaviour = honest(1.0);
        }
        let body = match (&task.body, behaviour) {
            (TaskBody::Stats { .. }, _) => ResultBody::Stats(StatsReport {
                template: template(),
                numeric: vec![ColumnStats {
                    column: "x".into(),
                    count: 2,
                    sum,
                    sum_sq,
                }],
                train_examples: 2,
                label_column: "y".into(),
                label_positive: "yes".into(),
                label_kind: fedprofile_protocol::messages::LabelKindMsg::Binary,
                label_classes: Vec::new(),
                binary: Vec::new(),
            }),
            (TaskBody::Train(_), Behaviour::SilentInTraining) => continue,
            (TaskBody::Train(_), Behaviour::Refuses { .. } | Behaviour::StatsMean(_)) => continue,
            (TaskBody::Train(_), Behaviour::Honest { v, examples }) => {
                ResultBody::Train(TrainReport {
                    train_loss: 0.5,
                    train_micros: 100,
                    ..train_report(Array1::from_elem(3, v), examples)
                })
            }
            (TaskBody::Eval(_), _) => ResultBody::Eval(fedprofile_learning::Evaluation::Binary(
                EvalSummary::from_predictions(
                    Array1::from_vec(vec![0.9, 0.1, 0.6]).view(),
                    Array1::from_vec(vec![1.0, 0.0, 0.0]).view(),
                )
                .unwrap(),
            )),
        };
        if !answer(&inbox, client, &task.task_id, body).await {
            break;
        }
    }
}

fn start(
    cfg: RunConfig,
    behaviours: BTreeMap<String, Behaviour>,
) -> tokio::task::JoinHandle<RunOutcome> {
    let (hub, out_rx, in_tx, in_rx) = fake_hub(behaviours.keys().cloned().collect());
    tokio::spawn(play(out_rx, in_tx, behaviours));
    let run = Run::new(cfg, "run-1".into(), hub, in_rx, Box::new(Quiet));
    tokio::spawn(async move { run.execute().await.0 })
}

#[tokio::test(start_paused = true)]
async fn fedavg_weights_updates_by_examples_and_pools_evaluation() {
    let behaviours = abc(weighted(1.0, 1), weighted(4.0, 2), weighted(0.0, 1));
    let outcome = start(config(2, 3), behaviours).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    // Each round adds (1*1 + 4*2 + 0*1) / 4 = 2.25.
    let model = outcome.model.unwrap();
    assert_eq!(model.params.to_vec(), vec![4.5, 4.5, 4.5]);
    // Global mean of x: 12 / 6 = 2; variance 30/6 - 4 = 1.
    assert_eq!(model.features.columns[0], x_column(2.0, 1.0));
    assert_eq!(outcome.rounds.len(), 2);
    let m = outcome.rounds[1].metrics.unwrap();
    assert_eq!(m.examples, 9);
    assert_eq!(outcome.rounds[1].evaluated_clients, 3);
    // Pooled over three identical clients: the AUC of one (positive 0.9 beats 0.1 and 0.6).
    assert_eq!(m.auc, Some(1.0));
    assert_eq!(outcome.target, Some(("y".into(), "yes".into())));
}

#[tokio::test(start_paused = true)]
async fn deadline_closes_a_round_with_the_minimum_when_one_client_never_answers() {
    let behaviours = abc(
        weighted(1.0, 1),
        weighted(3.0, 1),
        Behaviour::SilentInTraining,
    );
    let before = tokio::time::Instant::now();
    let outcome = start(config(1, 2), behaviours).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    let r = &outcome.rounds[0];
    assert_eq!((r.selected, r.accepted), (3, 2));
    // The round waited for its deadline (paused time advances exactly to it).
    assert!(before.elapsed() >= Duration::from_secs(30));
    assert!(before.elapsed() < Duration::from_secs(31));
    assert_eq!(outcome.model.unwrap().params.to_vec(), vec![2.0, 2.0, 2.0]);
    assert_eq!(outcome.contributors, vec!["a".to_string(), "b".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn a_round_below_the_minimum_fails_the_run_with_a_reason() {
    let behaviours = abc(
        weighted(1.0, 1),
        Behaviour::SilentInTraining,
        Behaviour::SilentInTraining,
    );
    let outcome = start(config(3, 2), behaviours).await.unwrap();
    assert!(!outcome.completed);
    let why = outcome.failure.unwrap();
    assert!(why.contains("round 1: 1 of the 2 updates needed"), "{why}");
}

#[tokio::test(start_paused = true)]
async fn too_few_clients_to_start_fails_after_the_start_timeout() {
    let behaviours = by_name([("a", Behaviour::SilentInTraining)]);
    let outcome = start(config(1, 1), behaviours).await.unwrap();
    let why = outcome.failure.unwrap();
    assert!(why.contains("only 1 of the 3 clients needed"), "{why}");
}

/// A run that waits for clients says so every 10 s, with how many are
/// connected of how many needed and how long until it gives up.
#[tokio::test(start_paused = true)]
async fn a_waiting_run_prints_a_status_line_every_ten_seconds() {
    let mut cfg = config(1, 1);
    cfg.min_connected_to_start = 4;
    cfg.start_timeout = Duration::from_secs(35);
    let (hub, _out_rx, _in_tx, in_rx) = fake_hub(vec!["a".into(), "b".into()]);
    let (run, notes) = noted_run(cfg, &hub, in_rx);
    let before = tokio::time::Instant::now();
    let outcome = run.execute().await.0;
    let why = outcome.failure.unwrap();
    assert!(why.contains("only 2 of the 4 clients needed"), "{why}");
    // It still gives up at the start timeout, not at a status line.
    assert!(before.elapsed() >= Duration::from_secs(35));
    assert!(before.elapsed() < Duration::from_secs(36));
    let notes = notes.lock().unwrap();
    let waiting: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains("waiting for clients"))
        .collect();
    assert_eq!(waiting.len(), 3, "{notes:?}");
    assert!(
        waiting[0].contains("2 of the 4 needed connected: a, b; it gives up in 25 s"),
        "{waiting:?}"
    );
    assert!(waiting[2].contains("it gives up in 5 s"), "{waiting:?}");
}

/// A hub that knows why a partner is missing.
struct KnowsWhy(Vec<String>);

impl ClientHub for KnowsWhy {
    fn connected(&self) -> Vec<String> {
        self.0.clone()
    }
    fn send(&self, _: &str, _: ServerEvent) -> bool {
        true
    }
    fn drop_session(&self, _: &str, _: &str) -> bool {
        false
    }
    fn why_missing(&self, connected: &[String]) -> Vec<String> {
        assert_eq!(connected, self.0.as_slice());
        vec!["partner-c's handshakes fail: its certificate is revoked".into()]
    }
}

#[tokio::test(start_paused = true)]
async fn too_few_clients_to_start_names_the_missing_ones_the_hub_knows() {
    let hub = Arc::new(KnowsWhy(vec!["a".into(), "b".into()]));
    let (_in_tx, in_rx) = mpsc::channel(4);
    let run = Run::new(config(1, 1), "run-1".into(), hub, in_rx, Box::new(Quiet));
    let outcome = run.execute().await.0;
    assert_eq!(
        outcome.failure.as_deref(),
        Some(
            "only 2 of the 3 clients needed were connected after 10 s; partner-c's handshakes fail: its certificate is revoked"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn the_released_model_is_the_mean_of_the_last_rounds_with_tail_averaging() {
    let behaviours = abc(weighted(1.0, 1), weighted(4.0, 2), weighted(0.0, 1));
    let mut cfg = config(3, 3);
    cfg.tail_average_rounds = 2;
    let outcome = start(cfg, behaviours).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    // Global after rounds 1..3: 2.25, 4.5, 6.75; released: (4.5 + 6.75) / 2.
    assert_eq!(outcome.model.unwrap().params.to_vec(), vec![5.625; 3]);
}

/// Plays k-means clients: each holds fixed rows and answers with real
/// per-cluster statistics and evaluations; `liar` sends a model delta instead.
async fn play_kmeans(
    mut outbox: Events,
    inbox: mpsc::Sender<Inbound>,
    rows: BTreeMap<String, ndarray::Array2<f64>>,
    liar: Option<String>,
) {
    use fedprofile_learning::{AnyModel, ModelFamily, kmeans_local_stats};
    while let Some((client, task)) = next_task(&mut outbox).await {
        let x = &rows[&client];
        let model = |m: &fedprofile_protocol::messages::ModelSnapshot| {
            AnyModel::from_parts(ModelFamily::KMeans, m.params.clone(), m.outputs).unwrap()
        };
        let body = match &task.body {
            TaskBody::Stats { .. } => ResultBody::Stats(row_stats(x, "", LabelKindMsg::None)),
            TaskBody::Train(_) if liar.as_deref() == Some(client.as_str()) => {
                ResultBody::Train(train_report(Array1::zeros(4), 3))
            }
            TaskBody::Train(t) => {
                let m = fedprofile_learning::KMeans::from_params(
                    t.model.params.clone(),
                    t.model.outputs,
                )
                .unwrap();
                let stats = kmeans_local_stats(&m, x.view()).unwrap();
                let examples = stats.examples() as u64;
                ResultBody::Train(TrainReport {
                    statistics: Some(fedprofile_learning::Statistics::Clusters(stats)),
                    ..train_report(Array1::zeros(0), examples)
                })
            }
            TaskBody::Eval(m) => ResultBody::Eval(model(m).evaluate(x.view(), None).unwrap()),
        };
        if !answer(&inbox, client, &task.task_id, body).await {
            break;
        }
    }
}

fn kmeans_config(rounds: u32) -> RunConfig {
    RunConfig {
        model: fedprofile_learning::ModelFamily::KMeans,
        clusters: 2,
        ..config(rounds, 2)
    }
}

fn kmeans_rows() -> BTreeMap<String, ndarray::Array2<f64>> {
    use ndarray::array;
    by_name([
        ("a", array![[-4.0, -5.0], [-6.0, -5.0], [5.0, 4.0]]),
        ("b", array![[-5.0, -4.0], [4.0, 5.0], [6.0, 6.0]]),
        ("c", array![[-5.0, -6.0], [5.0, 5.0], [5.0, 5.0]]),
    ])
}

/// A k-means run of `cfg` over the clients of [`kmeans_rows`]; `liar` sends a
/// model delta instead of cluster statistics.
fn kmeans_run(cfg: RunConfig, liar: Option<&str>) -> Run {
    let rows = kmeans_rows();
    let (hub, out_rx, in_tx, in_rx) = fake_hub(rows.keys().cloned().collect());
    tokio::spawn(play_kmeans(out_rx, in_tx, rows, liar.map(str::to_string)));
    Run::new(cfg, "run-k".into(), hub, in_rx, Box::new(Quiet))
}

fn start_kmeans(cfg: RunConfig, liar: Option<&str>) -> tokio::task::JoinHandle<RunOutcome> {
    let run = kmeans_run(cfg, liar);
    tokio::spawn(async move { run.execute().await.0 })
}

#[tokio::test(start_paused = true)]
async fn kmeans_rounds_are_exact_lloyd_steps_on_pooled_statistics() {
    let outcome = start_kmeans(kmeans_config(6), None).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    let model = outcome.model.unwrap();
    assert_eq!((model.model_type.as_str(), model.outputs), ("kmeans", 2));
    // The pooled rows form two groups whose means are (-5, -5) (4 rows) and
    // (5, 5) (5 rows: (5,4), (4,5), (6,6), (5,5), (5,5)).
    let mut centroids: Vec<(f64, f64)> = model
        .params
        .to_vec()
        .chunks(2)
        .map(|c| (c[0], c[1]))
        .collect();
    centroids.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(centroids, vec![(-5.0, -5.0), (5.0, 5.0)]);
    let inertia: Vec<f64> = outcome
        .rounds
        .iter()
        .map(|r| match &r.quality {
            Some(fedprofile_learning::Quality::Clustering { inertia, .. }) => *inertia,
            other => panic!("no clustering quality: {other:?}"),
        })
        .collect();
    for w in inertia.windows(2) {
        assert!(w[1] <= w[0] + 1e-9, "inertia rose: {inertia:?}");
    }
    // Converged: 4 rows at distance² 2 or 1 from (-5,-5): 1+1+1+1 = 4; the other
    // group: 1 + 1 + 2 + 0 + 0 = 4.
    assert!((inertia.last().unwrap() - 8.0).abs() < 1e-9, "{inertia:?}");
    match &outcome.rounds.last().unwrap().quality {
        Some(fedprofile_learning::Quality::Clustering { counts, .. }) => {
            let mut c = counts.clone();
            c.sort();
            assert_eq!(c, vec![4, 5]);
        }
        other => panic!("{other:?}"),
    }
    assert!(outcome.rounds.iter().all(|r| r.metrics.is_none()));
    assert_eq!(outcome.target, None);
}

#[tokio::test(start_paused = true)]
async fn a_delta_in_a_kmeans_round_is_rejected_and_the_round_goes_on() {
    let outcome = start_kmeans(kmeans_config(2), Some("c")).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    assert_eq!(outcome.rejections.get("inconsistent"), Some(&2));
    assert!(outcome.rounds.iter().all(|r| r.accepted == 2));
}

#[tokio::test(start_paused = true)]
async fn a_family_that_needs_another_label_fails_after_statistics_with_the_reason() {
    let behaviours = abc(weighted(1.0, 1), weighted(1.0, 1), weighted(1.0, 1));
    let cfg = RunConfig {
        model: fedprofile_learning::ModelFamily::SoftmaxRegression,
        ..config(2, 3)
    };
    let outcome = start(cfg, behaviours).await.unwrap();
    assert!(!outcome.completed);
    let why = outcome.failure.unwrap();
    assert_eq!(
        why,
        "the run trains a softmax_regression model, which needs a multi-class label (type = \"class\") in the clients' schema; their schema declares 'y' as a binary label (type = \"label\")"
    );
    assert!(outcome.rounds.is_empty());
}

/// Keeps every checkpoint it is given.
struct Keep(Arc<Mutex<Vec<Checkpoint>>>);

impl RoundSink for Keep {
    fn commit(
        &mut self,
        _: Option<&RoundRecord>,
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(checkpoint.clone());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_kmeans_run_resumes_from_its_checkpoint_with_its_clusters() {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let run = kmeans_run(kmeans_config(4), None).with_sink(Box::new(Keep(Arc::clone(&kept))));
    let (full, _) = run.execute().await;
    assert!(full.completed);

    // The checkpoint after round 2, through JSON as the store keeps it.
    let json = serde_json::to_string(&kept.lock().unwrap()[2]).unwrap();
    let checkpoint: Checkpoint = serde_json::from_str(&json).unwrap();
    assert_eq!((checkpoint.round, checkpoint.model.outputs), (2, 2));
    let resumed =
        kmeans_run(kmeans_config(4), None).resume_from(checkpoint, full.rounds[..2].to_vec());
    let (outcome, _) = resumed.execute().await;
    assert!(outcome.completed, "{:?}", outcome.failure);
    assert_eq!(outcome.rounds.len(), 4);
    let (a, b) = (outcome.model.unwrap(), full.model.unwrap());
    assert_eq!((a.outputs, &a.params), (2, &b.params));
}

#[test]
fn checkpoints_written_before_model_families_still_load() {
    let old = r#"{"round":3,"model":{"model_type":"logistic_regression","features":{"columns":[]},"params":[0.5]},"target":["y","yes"],"contributors":[],"rejections":{},"refusals":{},"not_private":[],"server_clip_norm":null}"#;
    let c: Checkpoint = serde_json::from_str(old).unwrap();
    assert_eq!((c.model.outputs, c.state.classes.len()), (1, 0));
    let record = r#"{"round":1,"selected":3,"accepted":3,"rejected":0,"refused":0,"attempts":1,"train_loss":0.5,"train_phase_ms":1.0,"max_client_train_ms":0.5,"eval_phase_ms":1.0,"round_ms":2.0,"metrics":null,"evaluated_clients":3,"epsilon":null}"#;
    let r: RoundRecord = serde_json::from_str(record).unwrap();
    assert_eq!(r.quality, None);
}

fn honest(v: f64) -> Behaviour {
    weighted(v, 1)
}

/// Partners whose budget is spent refuse for good: the run stops at once,
/// without the retries that cannot succeed, and names them. (Before, the round
/// was retried and the run ended "… arrived before the deadline".)
#[tokio::test(start_paused = true)]
async fn budget_refusals_stop_the_run_at_once_and_name_the_partners() {
    let refuses = Behaviour::Refuses {
        kind: RefusalKind::BudgetExhausted,
        until: u32::MAX,
    };
    let behaviours = abc(honest(1.0), refuses, refuses);
    let mut cfg = config(3, 2);
    cfg.max_retries = 3;
    let before = tokio::time::Instant::now();
    let outcome = start(cfg, behaviours).await.unwrap();
    assert!(!outcome.completed);
    let why = outcome.failure.unwrap();
    assert!(why.contains("no retry can succeed"), "{why}");
    assert!(!why.contains("no retries left"), "{why}");
    assert!(
        why.contains("b (budget_exhausted)") && why.contains("c (budget_exhausted)"),
        "{why}"
    );
    assert_eq!(
        outcome.excluded.keys().cloned().collect::<Vec<_>>(),
        vec!["b".to_string(), "c".to_string()]
    );
    // Nobody waited for a deadline.
    assert!(before.elapsed() < Duration::from_secs(30));
}

/// A budget refusal leaves that partner out of later rounds; the others go on.
#[tokio::test(start_paused = true)]
async fn a_partner_out_of_budget_is_left_out_and_the_others_go_on() {
    let out_of_budget = Behaviour::Refuses {
        kind: RefusalKind::BudgetExhausted,
        until: u32::MAX,
    };
    let behaviours = abc(honest(1.0), honest(1.0), out_of_budget);
    let outcome = start(config(3, 2), behaviours).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    assert_eq!(outcome.rounds[0].refusals[0].client, "c");
    assert_eq!(outcome.rounds[0].selected, 3);
    // Not asked again after its refusal.
    assert_eq!(
        (outcome.rounds[1].selected, outcome.rounds[1].refused),
        (2, 0)
    );
    assert!(outcome.excluded.contains_key("c"));
}

/// Results charged and then lost in a restart are never asked for again (that
/// would charge twice): the round is committed without an update.
#[tokio::test(start_paused = true)]
async fn lost_results_commit_the_round_without_an_update_and_no_retry() {
    let lost = Behaviour::Refuses {
        kind: RefusalKind::ResultLost,
        until: 1,
    };
    let behaviours = abc(lost, lost, honest(3.0));
    let mut cfg = config(2, 2);
    cfg.max_retries = 2;
    let (hub, out_rx, in_tx, in_rx) = fake_hub(behaviours.keys().cloned().collect());
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(play_recording(out_rx, in_tx, behaviours, Arc::clone(&seen)));
    let run = Run::new(cfg, "run-1".into(), hub, in_rx, Box::new(Quiet));
    let (outcome, _) = run.execute().await;
    assert!(outcome.completed, "{:?}", outcome.failure);
    let r1 = &outcome.rounds[0];
    assert!(
        r1.skipped.as_deref().unwrap().contains("lost in a restart"),
        "{r1:?}"
    );
    assert_eq!((r1.accepted, r1.attempts), (0, 1));
    // Round 1 changed nothing; round 2 is the mean of 1, 1 and 3.
    let params = outcome.model.unwrap().params.to_vec();
    assert!(
        params.iter().all(|p| (p - 5.0 / 3.0).abs() < 1e-12),
        "{params:?}"
    );
    // Three round-1 tasks (no retry under a new id) and three round-2 tasks.
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().filter(|t| t.contains("/r1/")).count(),
        3,
        "{seen:?}"
    );
    assert!(seen.iter().all(|t| !t.contains("/a1/")), "{seen:?}");
}

/// A run resumed with an attempt in flight repeats it: same attempt, same
/// clients, same task ids (so partners that charged it are not charged again).
#[tokio::test(start_paused = true)]
async fn a_resumed_run_repeats_the_attempt_in_flight_under_the_same_task_ids() {
    let behaviours = abc(honest(1.0), honest(1.0), honest(1.0));
    // Round 0's checkpoint from a first run.
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (hub, out_rx, in_tx, in_rx) = fake_hub(behaviours.keys().cloned().collect());
    tokio::spawn(play(out_rx, in_tx, behaviours.clone()));
    let run = Run::new(config(2, 2), "run-1".into(), hub, in_rx, Box::new(Quiet))
        .with_sink(Box::new(Keep(Arc::clone(&kept))));
    assert!(run.execute().await.0.completed);
    let checkpoint = kept.lock().unwrap()[0].clone();

    let (hub, out_rx, in_tx, in_rx) = fake_hub(behaviours.keys().cloned().collect());
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(play_recording(out_rx, in_tx, behaviours, Arc::clone(&seen)));
    let in_flight = InFlight {
        round: 1,
        attempt: 1,
        selected: vec!["a".into(), "c".into()],
        population: 3,
    };
    let resumed = Run::new(config(2, 2), "run-1".into(), hub, in_rx, Box::new(Quiet))
        .resume_from(checkpoint, Vec::new())
        .with_in_flight(Some(in_flight));
    let (outcome, _) = resumed.execute().await;
    assert!(outcome.completed, "{:?}", outcome.failure);
    let seen = seen.lock().unwrap();
    let round1: Vec<&String> = seen.iter().filter(|t| t.contains("/r1/")).collect();
    assert_eq!(
        round1,
        vec!["run-1/r1/a1/train/a", "run-1/r1/a1/train/c"],
        "{seen:?}"
    );
    assert_eq!(outcome.rounds[0].selected, 2);
    assert_eq!(outcome.rounds[1].selected, 3);
}

/// Client-level DP through the engine: with q = 0.1 and four clients, and
/// `min_per_round = 3`, clients are Poisson-sampled at q (round sizes vary,
/// the mean is q·N) and the run's ε is exactly the accountant's for q. Before,
/// three clients took part in every round (75 %) and 10 % was charged.
#[tokio::test(start_paused = true)]
async fn client_level_dp_samples_each_client_at_the_charged_rate() {
    let behaviours: BTreeMap<String, Behaviour> =
        (0..4).map(|i| (format!("c{i}"), honest(0.1))).collect();
    let rounds = 150;
    let mut cfg = config(rounds, 3);
    cfg.min_connected_to_start = 4;
    cfg.fraction_per_round = 0.1;
    cfg.eval_every = rounds;
    cfg.privacy = fedprofile_config::run::PrivacyMode::Client(fedprofile_config::run::ClientDp {
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        delta: 1e-5,
        adaptive: None,
    });
    let outcome = start(cfg, behaviours).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    let selected: Vec<usize> = outcome.rounds.iter().map(|r| r.selected).collect();
    let mean = selected.iter().sum::<usize>() as f64 / (4.0 * f64::from(rounds));
    let se = (0.1f64 * 0.9 / (4.0 * f64::from(rounds))).sqrt();
    assert!((mean - 0.1).abs() <= 4.0 * se, "mean rate {mean}");
    assert!(selected.contains(&0) && selected.iter().any(|&n| n > 0));
    // Every round was released and charged at q = 0.1, however many were sampled.
    let charge =
        fedprofile_privacy::Charge::subsampled_gaussian(0.1, 1.0, u64::from(rounds)).unwrap();
    let expected = fedprofile_privacy::accountant::epsilon(&[charge], 1e-5)
        .unwrap()
        .epsilon;
    let reported = outcome.rounds.last().unwrap().epsilon.unwrap();
    assert!(
        (reported - expected).abs() <= 1e-9 * expected,
        "{reported} vs {expected}"
    );
}

/// Under the default strategy (FedAvg), an update of 1e300 everywhere and an
/// update claiming 2^63 examples are rejected and counted; the model is the
/// honest partners' mean. (Before, both were averaged in.)
#[tokio::test(start_paused = true)]
async fn absurd_updates_are_rejected_under_the_default_strategy() {
    let behaviours = by_name([
        ("a", honest(1.0)),
        ("b", honest(2.0)),
        ("c", honest(3.0)),
        ("d", weighted(1e300, 1)),
        ("e", weighted(1.0, 1 << 63)),
    ]);
    let outcome = start(config(2, 3), behaviours).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    assert_eq!(
        outcome.rejections.get("norm_outlier"),
        Some(&2),
        "{:?}",
        outcome.rejections
    );
    assert_eq!(
        outcome.rejections.get("too_many_examples"),
        Some(&2),
        "{:?}",
        outcome.rejections
    );
    // Two rounds of the mean of 1, 2 and 3.
    assert_eq!(outcome.model.unwrap().params.to_vec(), vec![4.0, 4.0, 4.0]);
    assert_eq!(outcome.contributors, vec!["a", "b", "c"]);
}

/// One partner's absurd statistics are rejected and named; the federation's
/// standardisation comes from the others (whether the values are absurd in
/// themselves or only far from everyone else's).
#[tokio::test(start_paused = true)]
async fn absurd_statistics_are_rejected_and_the_partner_named() {
    for bad in [1e20, 1e9] {
        let behaviours = by_name([
            ("a", honest(1.0)),
            ("b", honest(1.0)),
            ("c", honest(1.0)),
            ("d", Behaviour::StatsMean(bad)),
        ]);
        let outcome = start(config(1, 3), behaviours).await.unwrap();
        assert!(outcome.completed, "{:?}", outcome.failure);
        assert_eq!(outcome.rejections.get("inconsistent"), Some(&1), "{bad}");
        let model = outcome.model.unwrap();
        assert_eq!(model.features.columns[0], x_column(2.0, 1.0), "{bad}");
        // With only the bad partner and one other, the failure names it.
        let behaviours = by_name([
            ("a", honest(1.0)),
            ("b", honest(1.0)),
            ("d", Behaviour::StatsMean(1e20)),
        ]);
        let outcome = start(config(1, 3), behaviours).await.unwrap();
        let why = outcome.failure.unwrap();
        assert!(
            why.contains("rejected: d: ") && why.contains("column 'x'"),
            "{why}"
        );
    }
}

/// Notes every message, for assertions on them.
struct Notes(Arc<Mutex<Vec<String>>>);

/// Run `run-1` on `hub`, with the notes it makes collected for assertions.
fn noted_run(cfg: RunConfig, hub: &Arc<FakeHub>, inbox: Inbox) -> (Run, Arc<Mutex<Vec<String>>>) {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let run = Run::new(
        cfg,
        "run-1".into(),
        Arc::clone(hub) as Arc<dyn ClientHub>,
        inbox,
        Box::new(Notes(Arc::clone(&notes))),
    );
    (run, notes)
}
impl RunObserver for Notes {
    fn round_finished(&mut self, _: &RunSnapshot<'_>, _: &RoundRecord) {}
    fn note(&mut self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_misses_its_tasks_is_dropped_and_no_longer_waited_for() {
    // d answers nothing at all (a half-open session); with max_missed_tasks = 2
    // it misses the statistics task and round 1's training task, is dropped,
    // and rounds 2 and 3 go on without waiting for it.
    let behaviours = abc(honest(1.0), honest(1.0), honest(1.0));
    let mut cfg = config(3, 2);
    cfg.max_missed_tasks = 2;
    cfg.eval_every = 10;
    let (hub, out_rx, in_tx, in_rx) =
        fake_hub(vec!["a".into(), "b".into(), "c".into(), "d".into()]);
    // d's tasks go nowhere: filter them out before the scripted clients.
    let (honest_tx, honest_rx) = mpsc::unbounded_channel();
    let seen_by_d = Arc::new(Mutex::new(Vec::new()));
    let d_tasks = Arc::clone(&seen_by_d);
    tokio::spawn(async move {
        let mut out_rx = out_rx;
        while let Some((client, event)) = out_rx.recv().await {
            if client == "d" {
                if let ServerEvent::Task(t) = &event {
                    d_tasks.lock().unwrap().push(t.task_id.clone());
                }
                continue;
            }
            let _ = honest_tx.send((client, event));
        }
    });
    tokio::spawn(play(honest_rx, in_tx, behaviours));
    let (run, notes) = noted_run(cfg, &hub, in_rx);
    let before = tokio::time::Instant::now();
    let outcome = run.execute().await.0;
    assert!(outcome.completed, "{:?}", outcome.failure);
    let selected: Vec<usize> = outcome.rounds.iter().map(|r| r.selected).collect();
    assert_eq!(
        selected,
        vec![4, 3, 3],
        "d is not selected after it was dropped"
    );
    assert_eq!(
        *seen_by_d.lock().unwrap(),
        vec![
            "run-1/r0/a0/stats/d".to_string(),
            "run-1/r1/a0/train/d".to_string()
        ]
    );
    assert_eq!(hub.connected(), vec!["a", "b", "c"]);
    // Two deadlines were waited out (statistics, round 1), not one per phase.
    assert!(before.elapsed() >= Duration::from_secs(60));
    assert!(before.elapsed() < Duration::from_secs(61));
    let notes = notes.lock().unwrap();
    assert!(
        notes.iter().any(|n| n.contains(
            "client d missed 2 tasks in a row (no result or refusal within the 30 s deadline"
        ) && n.contains("its session is closed")),
        "{notes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_resets_the_missed_count_and_zero_never_drops() {
    // c answers statistics and evaluation but never trains: it misses one task
    // in a row at most, so max_missed_tasks = 2 never drops it.
    let behaviours = abc(honest(1.0), honest(3.0), Behaviour::SilentInTraining);
    let mut cfg = config(3, 2);
    cfg.max_missed_tasks = 2;
    let outcome = start(cfg.clone(), behaviours.clone()).await.unwrap();
    assert!(outcome.completed, "{:?}", outcome.failure);
    let selected: Vec<usize> = outcome.rounds.iter().map(|r| r.selected).collect();
    assert_eq!(selected, vec![3, 3, 3]);
    // Without evaluations in between it misses three in a row, and is dropped
    // after two; with 0 it never is.
    cfg.eval_every = 10;
    cfg.rounds = 4;
    let outcome = start(cfg.clone(), behaviours.clone()).await.unwrap();
    let selected: Vec<usize> = outcome.rounds.iter().map(|r| r.selected).collect();
    assert_eq!(selected, vec![3, 3, 2, 2]);
    cfg.max_missed_tasks = 0;
    let outcome = start(cfg, behaviours).await.unwrap();
    let selected: Vec<usize> = outcome.rounds.iter().map(|r| r.selected).collect();
    assert_eq!(selected, vec![3, 3, 3, 3]);
}

/// Plays clients of the test-only toy family (a linear model through the
/// origin, on `y = 2·x₀ − x₁`): the engine knows nothing of it; the clients
/// train and evaluate through the family's generic paths.
async fn play_toy(
    mut outbox: Events,
    inbox: mpsc::Sender<Inbound>,
    rows: BTreeMap<String, ndarray::Array2<f64>>,
) {
    use fedprofile_learning::{AnyModel, GradientTraining, ModelFamily, TrainParams, local_update};
    use rand::SeedableRng;
    let truth = ndarray::array![2.0, -1.0];
    while let Some((client, task)) = next_task(&mut outbox).await {
        let x = &rows[&client];
        let y = x.dot(&truth);
        let model = |m: &fedprofile_protocol::messages::ModelSnapshot| {
            AnyModel::from_parts(ModelFamily::Toy, m.params.clone(), m.outputs).unwrap()
        };
        let body = match &task.body {
            TaskBody::Stats { .. } => ResultBody::Stats(row_stats(x, "y", LabelKindMsg::Numeric)),
            TaskBody::Train(t) => {
                let how = GradientTraining::Plain(
                    TrainParams {
                        epochs: t.local_epochs as usize,
                        batch_size: t.batch_size as usize,
                        learning_rate: t.learning_rate,
                        l2: 0.0,
                        prox_mu: 0.0,
                    }
                    .check()
                    .unwrap(),
                );
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                let out =
                    local_update(&model(&t.model), x.view(), y.view(), &how, &mut rng).unwrap();
                ResultBody::Train(TrainReport {
                    update_norm: out.delta.dot(&out.delta).sqrt(),
                    steps: out.steps as u64,
                    train_loss: out.mean_loss,
                    ..train_report(out.delta, out.examples as u64)
                })
            }
            TaskBody::Eval(m) => {
                ResultBody::Eval(model(m).evaluate(x.view(), Some(y.view())).unwrap())
            }
        };
        if !answer(&inbox, client, &task.task_id, body).await {
            break;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_family_the_engine_does_not_know_trains_through_it() {
    let rows: BTreeMap<String, ndarray::Array2<f64>> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = i as f64;
            (
                c.to_string(),
                ndarray::array![
                    [1.0, 0.0],
                    [0.0, 1.0],
                    [1.0 + k, 1.0],
                    [0.5, -k],
                    [-1.0, 0.5 * k]
                ],
            )
        })
        .collect();
    let (hub, out_rx, in_tx, in_rx) = fake_hub(rows.keys().cloned().collect());
    tokio::spawn(play_toy(out_rx, in_tx, rows));
    let cfg = RunConfig {
        model: fedprofile_learning::ModelFamily::Toy,
        batch_size: 5,
        learning_rate: 0.2,
        local_epochs: 5,
        ..config(8, 3)
    };
    let run = Run::new(cfg, "toy".into(), hub, in_rx, Box::new(Quiet));
    let outcome = run.execute().await.0;
    assert!(outcome.completed, "{:?}", outcome.failure);
    let model = outcome.model.unwrap();
    assert_eq!((model.model_type.as_str(), model.params.len()), ("toy", 2));
    // The weights approach the truth (2, −1) and the pooled MSE falls.
    assert!((model.params[0] - 2.0).abs() < 0.1, "{:?}", model.params);
    assert!((model.params[1] + 1.0).abs() < 0.1, "{:?}", model.params);
    let mse = |r: &RoundRecord| match &r.quality {
        Some(fedprofile_learning::Quality::Regression(q)) => {
            assert_eq!(q.examples, 15);
            q.mse
        }
        other => panic!("no regression quality: {other:?}"),
    };
    let (first, last) = (mse(&outcome.rounds[0]), mse(&outcome.rounds[7]));
    assert!(last < first / 10.0, "{first} -> {last}");
    assert_eq!(outcome.contributors.len(), 3);
    assert_eq!(outcome.target, Some(("y".into(), String::new())));
}

/// The evaluations the clients of an update run answered: `(round, client,
/// first weight of the model evaluated)`.
type Evaluations = Arc<Mutex<Vec<(u32, String, f64)>>>;

/// Plays the clients of an update run: honest in training (delta `[1, 1, 1]`),
/// and in evaluation a model whose first weight is `champion_weight` (the
/// champion) scores `champion_scores`, any other model `challenger_scores`.
/// Every evaluation task's model is recorded in `evaluated` as (round, first weight).
async fn play_update(
    mut outbox: Events,
    inbox: mpsc::Sender<Inbound>,
    champion_weight: f64,
    scores: [[f64; 3]; 2],
    evaluated: Evaluations,
) {
    while let Some((client, task)) = next_task(&mut outbox).await {
        let body = match &task.body {
            TaskBody::Stats { .. } => ResultBody::Stats(StatsReport {
                template: template(),
                numeric: vec![ColumnStats {
                    column: "x".into(),
                    count: 2,
                    sum: 4.0,
                    sum_sq: 10.0,
                }],
                train_examples: 2,
                label_column: "y".into(),
                label_positive: "yes".into(),
                label_kind: LabelKindMsg::Binary,
                label_classes: Vec::new(),
                binary: Vec::new(),
            }),
            TaskBody::Train(_) => ResultBody::Train(train_report(Array1::from_elem(3, 1.0), 1)),
            TaskBody::Eval(model) => {
                let w = model.params[0];
                evaluated
                    .lock()
                    .unwrap()
                    .push((task.round, client.clone(), w));
                let s = if w == champion_weight {
                    scores[0]
                } else {
                    scores[1]
                };
                ResultBody::Eval(fedprofile_learning::Evaluation::Binary(
                    EvalSummary::from_predictions(
                        Array1::from_vec(s.to_vec()).view(),
                        Array1::from_vec(vec![1.0, 0.0, 0.0]).view(),
                    )
                    .unwrap(),
                ))
            }
        };
        if !answer(&inbox, client, &task.task_id, body).await {
            break;
        }
    }
}

/// A champion's model file: logistic regression on the test template with
/// every weight `w`, target `y` = `yes`.
fn champion_file(dir: &std::path::Path, w: f64) -> std::path::PathBuf {
    use fedprofile_learning::{ModelDocument, ModelTarget, RunProvenance};
    let spec = global_feature_spec_for_tests();
    let doc = ModelDocument::new(
        AnyModel::from_parts(ModelFamily::LogisticRegression, Array1::from_elem(3, w), 1).unwrap(),
        spec,
        ModelTarget {
            column: "y".into(),
            positive_value: Some("yes".into()),
        },
        Vec::new(),
        RunProvenance {
            run_id: "first".into(),
            rounds: 1,
            clients: vec!["a".into()],
            created_at: "t0".into(),
            metrics: None,
            privacy: None,
        },
    )
    .unwrap();
    let path = dir.join("champion.json");
    doc.save(&path).unwrap();
    path
}

/// The template as the statistics of [`play_update`] standardise it.
fn global_feature_spec_for_tests() -> FeatureSpec {
    FeatureSpec {
        reference: None,
        columns: vec![
            x_column(2.0, 1.0),
            FeatureColumn::Boolean { name: "b".into() },
        ],
    }
}

/// Clients a, b and c playing an update run whose champion has weights 0.5
/// ([`play_update`] with `scores`), and the evaluations they answer.
fn update_clients(scores: [[f64; 3]; 2]) -> (Arc<FakeHub>, Inbox, Evaluations) {
    let (hub, out_rx, in_tx, in_rx) = fake_hub(vec!["a".into(), "b".into(), "c".into()]);
    let evaluated = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(play_update(
        out_rx,
        in_tx,
        0.5,
        scores,
        Arc::clone(&evaluated),
    ));
    (hub, in_rx, evaluated)
}

/// An update of target `y` judged on AUC.
fn auc_update(min_improvement: f64) -> fedprofile_config::run::UpdateConfig {
    fedprofile_config::run::UpdateConfig {
        target: "y".into(),
        metric: fedprofile_config::run::UpdateMetric::Auc,
        min_improvement,
        schedule: None,
    }
}

/// Runs an update of the champion (weights 0.5) over two rounds; the champion
/// scores `champion`, the challenger `challenger` on every client.
async fn update_run(
    champion: [f64; 3],
    challenger: [f64; 3],
) -> (RunOutcome, Vec<(u32, String, f64)>) {
    let dir = tempfile::tempdir().unwrap();
    let (hub, in_rx, evaluated) = update_clients([champion, challenger]);
    let cfg = RunConfig {
        warm_start: Some(champion_file(dir.path(), 0.5)),
        update: Some(auc_update(0.01)),
        ..config(2, 3)
    };
    let run = Run::new(cfg, "update-1".into(), hub, in_rx, Box::new(Quiet));
    let outcome = run.execute().await.0;
    let evaluated = evaluated.lock().unwrap().clone();
    (outcome, evaluated)
}

#[tokio::test(start_paused = true)]
async fn an_update_run_evaluates_the_champion_beside_the_challenger_in_its_final_round() {
    // The challenger ranks the positive first (AUC 1), the champion does not (AUC 0.5).
    let (outcome, evaluated) = update_run([0.5, 0.5, 0.5], [0.9, 0.1, 0.6]).await;
    assert!(outcome.completed, "{:?}", outcome.failure);
    // Warm start from the champion: 0.5 + 1 + 1 after two rounds.
    assert_eq!(
        outcome.model.as_ref().unwrap().params.to_vec(),
        vec![2.5; 3]
    );
    // Round 1 evaluates the challenger only; round 2 both, on the same clients.
    let round = |r: u32, w: f64| {
        let mut clients: Vec<String> = evaluated
            .iter()
            .filter(|(round, _, weight)| *round == r && *weight == w)
            .map(|(_, c, _)| c.clone())
            .collect();
        clients.sort();
        clients
    };
    let all = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    assert_eq!(round(1, 1.5), all);
    assert!(round(1, 0.5).is_empty());
    assert_eq!(round(2, 2.5), all);
    assert_eq!(round(2, 0.5), all);
    assert!(outcome.rounds[0].champion.is_none());
    let last = outcome.rounds.last().unwrap();
    let champion = last.champion.as_ref().unwrap();
    assert_eq!(champion.evaluated_clients, 3);
    assert_eq!(last.evaluated_clients, 3);
    assert_eq!(champion.metrics.unwrap().auc, Some(0.5));
    assert_eq!(last.metrics.unwrap().auc, Some(1.0));
    let update = fedprofile_config::run::UpdateConfig {
        target: "y".into(),
        metric: fedprofile_config::run::UpdateMetric::Auc,
        min_improvement: 0.01,
        schedule: None,
    };
    let decision = update.decide(1, last.metrics.unwrap().auc, champion.metrics.unwrap().auc);
    assert!(decision.promoted, "{}", decision.reason);
    assert_eq!(
        decision.reason,
        "auc 1.0000 is better than the champion's 0.5000 by 0.5000 (at least 0.01 required)"
    );
}

#[tokio::test(start_paused = true)]
async fn an_update_run_whose_challenger_is_worse_is_not_promoted() {
    let (outcome, _) = update_run([0.9, 0.1, 0.6], [0.5, 0.5, 0.5]).await;
    assert!(outcome.completed, "{:?}", outcome.failure);
    let last = outcome.rounds.last().unwrap();
    let update = fedprofile_config::run::UpdateConfig {
        target: "y".into(),
        metric: fedprofile_config::run::UpdateMetric::Auc,
        min_improvement: 0.01,
        schedule: None,
    };
    let decision = update.decide(
        1,
        last.metrics.unwrap().auc,
        last.champion.as_ref().unwrap().metrics.unwrap().auc,
    );
    assert!(!decision.promoted);
    assert_eq!(
        decision.reason,
        "auc 0.5000 is not better than the champion's 1.0000 by 0.01"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_update_run_still_evaluates_the_champion_it_started_from() {
    // The checkpoint of round 1 as a crash left it, in the JSON a coordinator
    // writes: the champion (weights 0.5) is part of the run's durable state.
    let model = |w: f64| CheckpointModel {
        model_type: "logistic_regression".into(),
        features: global_feature_spec_for_tests(),
        params: vec![w; 3],
        outputs: 1,
    };
    let checkpoint = Checkpoint {
        round: 1,
        model: model(1.5),
        state: RunState {
            target: Some(("y".into(), "yes".into())),
            champion: Some(model(0.5)),
            ..RunState::default()
        },
    };
    let json = serde_json::to_string(&checkpoint).unwrap();
    let checkpoint: Checkpoint = serde_json::from_str(&json).unwrap();
    assert_eq!(checkpoint.state.champion, Some(model(0.5)));

    let (hub, in_rx, evaluated) = update_clients([[0.5, 0.5, 0.5], [0.9, 0.1, 0.6]]);
    let cfg = RunConfig {
        update: Some(auc_update(0.0)),
        ..config(2, 3)
    };
    let run = Run::new(cfg, "update-1".into(), hub, in_rx, Box::new(Quiet))
        .resume_from(checkpoint, Vec::new());
    let outcome = run.execute().await.0;
    assert!(outcome.completed, "{:?}", outcome.failure);
    let last = outcome.rounds.last().unwrap();
    assert_eq!(last.round, 2);
    assert_eq!(
        last.champion.as_ref().unwrap().metrics.unwrap().auc,
        Some(0.5)
    );
    assert_eq!(last.metrics.unwrap().auc, Some(1.0));
    let champion_evals = evaluated
        .lock()
        .unwrap()
        .iter()
        .filter(|(round, _, w)| *round == 2 && *w == 0.5)
        .count();
    assert_eq!(champion_evals, 3);
}
