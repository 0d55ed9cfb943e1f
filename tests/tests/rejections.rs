//! A rogue participant over real mTLS: every kind of bad update is rejected,
//! logged and counted, and the run goes on with the honest partners.

use std::time::Duration;

use fedprofile_e2e::light::{Incoming, open_session, refusal, train_reply};
use fedprofile_e2e::{Sandbox, start_three_and_light, telco_run};
use fedprofile_protocol::messages::{ClientReply, ResultBody, TaskBody};
use fedprofile_protocol::pb;
use ndarray::Array1;

fn train(task_id: &str, delta: Vec<f64>, examples: u64) -> ClientReply {
    train_reply(task_id, Array1::from_vec(delta), examples, 0.1)
}

fn refuse(task_id: &str) -> ClientReply {
    refusal(task_id, "rogue declines")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_update_is_rejected_and_counted() {
    // The rogue holds a valid certificate (partner-d) but sends bad updates.
    let (sandbox, mut coordinator, _honest, mut rogue) = start_three_and_light(3, 30.0).await;
    assert_eq!(rogue.client_id, "partner-d");
    let mut first_train_task = None;
    while let Some((task, dim)) = rogue
        .next_training(Duration::from_secs(120), "rogue declines")
        .await
    {
        let id = task.task_id.clone();
        match task.round {
            1 => {
                rogue.send(&train("no-such-task", vec![0.0; dim], 10)).await;
                let others = id.replace("partner-d", "partner-a");
                rogue.send(&train(&others, vec![0.0; dim], 10)).await;
                rogue.send(&train(&id, vec![0.0; dim + 1], 10)).await;
                rogue.send(&train(&id, vec![0.0; dim], 10)).await;
                first_train_task = Some(id);
            }
            2 => {
                // A tensor whose bytes do not match its shape: malformed.
                let broken = pb::ClientMessage {
                    body: Some(pb::client_message::Body::Result(pb::TaskResult {
                        task_id: id.clone(),
                        body: Some(pb::task_result::Body::Train(pb::TrainResult {
                            delta: Some(pb::Tensor {
                                shape: vec![dim as u32],
                                dtype: pb::DType::DtypeF64 as i32,
                                data: vec![0; 3],
                            }),
                            examples: 10,
                            ..Default::default()
                        })),
                    })),
                };
                let _ = rogue.tx.send(broken).await;
                let mut delta = vec![0.0; dim];
                delta[2] = f64::NAN;
                rogue.send(&train(&id, delta, 10)).await;
            }
            _ => {
                let stale = first_train_task.clone().unwrap();
                rogue.send(&train(&stale, vec![0.0; dim], 10)).await;
                rogue.send(&train(&id, vec![0.0; dim], 0)).await;
            }
        }
    }

    let status = coordinator.wait(Duration::from_secs(120));
    assert!(status.success(), "{}", coordinator.read_stderr());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true);
    assert_eq!(summary["rounds"], 3);
    let rejected = &summary["rejected_updates"];
    for key in [
        "unknown_task",
        "not_selected",
        "wrong_dimension",
        "duplicate",
        "malformed",
        "non_finite",
        "stale_round",
        "no_examples",
    ] {
        assert!(
            rejected[key].as_u64().unwrap_or(0) >= 1,
            "no '{key}' rejection counted: {rejected}"
        );
    }
    // Only the honest partners contributed, and the model is still good.
    assert_eq!(
        summary["clients"],
        serde_json::json!(["partner-a", "partner-b", "partner-c"])
    );
    assert!(summary["auc"].as_f64().unwrap() > 0.8, "{summary}");
    assert_eq!(summary["refusals"]["partner-d"], "rogue declines");
    // Each rejection is logged with its reason.
    let log = coordinator.read_stderr();
    assert!(log.contains("update rejected: update has"), "{log}");
    assert!(
        log.contains("reason=\"not_selected\"") || log.contains("reason=not_selected"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_closes_the_round_with_the_minimum_when_a_client_never_answers() {
    // partner-d joins, then never answers a training task.
    let (sandbox, mut coordinator, _honest, mut silent) = start_three_and_light(2, 2.0).await;
    let mut train_tasks = 0;
    loop {
        match silent.next(Duration::from_secs(60)).await {
            Incoming::Task(t) if matches!(t.body, TaskBody::Train(_)) => train_tasks += 1,
            Incoming::Task(t) => silent.send(&refuse(&t.task_id)).await,
            Incoming::Finished => break,
            Incoming::Closed(why) => panic!("silent session closed: {why}"),
        }
    }
    assert_eq!(train_tasks, 2, "partner-d was selected in both rounds");
    assert!(coordinator.wait(Duration::from_secs(60)).success());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    let csv = std::fs::read_to_string(sandbox.path("out/metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for row in csv.lines().skip(1) {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(
            (cols[col("selected")], cols[col("accepted")]),
            ("4", "3"),
            "selected 4, closed with 3: {row}"
        );
        let train_phase_ms: f64 = cols[col("train_phase_ms")].parse().unwrap();
        assert!(
            train_phase_ms >= 2000.0,
            "the round waited for its deadline: {row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_the_coordinator_carries_on() {
    let sandbox = Sandbox::new();
    let (config, run) =
        sandbox.write_coordinator_with(&telco_run(1, 1, 99, 60.0), "max_message_bytes = 4096");
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut big = sandbox.open_light(port, "partner-a").await;
    big.send(&train("whatever", vec![0.5; 2_000], 1)).await;
    match big.next(Duration::from_secs(20)).await {
        Incoming::Closed(why) => assert!(
            why.contains("session closed by the coordinator")
                && why.contains("message length too large"),
            "{why}"
        ),
        other => panic!("an oversized message was accepted: {other:?}"),
    }
    assert!(coordinator.is_running(), "the coordinator died");
    let again = sandbox.open_light(port, "partner-b").await;
    assert_eq!(again.client_id, "partner-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_is_refused_and_counted_without_harming_the_process() {
    let sandbox = Sandbox::new();
    let (config, run) = sandbox.write_coordinator_with(
        &telco_run(1, 1, 99, 60.0),
        "metrics_listen = \"127.0.0.1:0\"",
    );
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let flood = sandbox.open_light(port, "partner-a").await;
    for i in 0..6000 {
        flood.send(&refuse(&format!("junk-{i}"))).await;
    }
    // Still serving: a new session is welcomed.
    let other = sandbox.open_light(port, "partner-b").await;
    assert_eq!(other.client_id, "partner-b");
    assert!(coordinator.is_running());
    let addr = sandbox.metrics_addr();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut b = String::new();
            s.read_to_string(&mut b).unwrap();
            b
        };
        let refused = body
            .lines()
            .find(|l| l.starts_with("fedprofile_messages_refused_total{reason=\"rate_limited\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if refused > 100.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rate-limit refusals counted:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The audit log records the flood once, not 4,000 times.
    let audit = std::fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    assert_eq!(audit.matches("rate_limited").count(), 1);
    coordinator.kill();
}

/// A hostile fifth client with a valid certificate, under the default strategy
/// (FedAvg): an update of 1e300 everywhere and an update claiming 2^63 examples
/// are rejected and counted, and the demo still reaches its AUC. (Before, both
/// were averaged in: AUC 0.5000, log loss 24.9.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_fifth_client_cannot_wreck_fedavg() {
    let sandbox = Sandbox::new();
    let mut all = fedprofile_e2e::PARTNERS.to_vec();
    all.push("partner-e");
    sandbox.make_ca("certs", &all);
    let run_file = std::fs::read_to_string(fedprofile_e2e::demo_dir().join("run.toml")).unwrap();
    let (mut coordinator, port) = sandbox.start_run(&run_file);
    let mut hostile = sandbox.open_light(port, "partner-e").await;
    let _honest = sandbox.start_clients(&fedprofile_e2e::PARTNERS, port, &[]);
    let mut rounds = 0;
    while let Some((task, dim)) = hostile
        .next_training(Duration::from_secs(120), "rogue declines")
        .await
    {
        rounds += 1;
        if task.round % 2 == 1 {
            hostile
                .send(&train(&task.task_id, vec![1e300; dim], 1000))
                .await;
        } else {
            hostile
                .send(&train(&task.task_id, vec![0.01; dim], 1 << 63))
                .await;
        }
    }
    assert!(coordinator.wait(Duration::from_secs(120)).success());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(rounds, 20, "the hostile client was asked every round");
    let rejected = &summary["rejected_updates"];
    assert_eq!(rejected["norm_outlier"], 10, "{rejected}");
    let log = coordinator.read_stderr();
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("too_many"))
        .take(3)
        .collect();
    assert_eq!(rejected["too_many_examples"], 10, "{rejected}\n{why:#?}");
    assert!(summary["auc"].as_f64().unwrap() >= 0.84, "{summary}");
    assert!(summary["log_loss"].as_f64().unwrap() <= 0.45, "{summary}");
    assert!(
        !summary["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "partner-e"),
        "{summary}"
    );
}

/// A partner flooding the coordinator with junk answers cannot grow the audit
/// log without limit: the first rejection of each (client, reason) is written
/// at once and its repeats as one line with their count. (Before: one audit
/// line per rejected message.) Answers beyond one per task and a burst of 32
/// do not even reach the engine: they are refused at the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rejections_are_audited_once_with_their_count() {
    let sandbox = Sandbox::new();
    let (config, run) = sandbox.write_coordinator(&telco_run(1, 3, 4, 30.0));
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    // partner-d floods (below the rate limit's burst) before the run starts, then
    // behaves: answers its tasks honestly.
    let flood = sandbox.open_light(port, "partner-d").await;
    let junk = 800;
    for i in 0..junk {
        flood
            .send(&train(&format!("junk-{i}"), vec![0.0; 3], 1))
            .await;
    }
    let _honest = sandbox.start_clients(&["partner-a", "partner-b", "partner-c"], port, &[]);
    let served = fedprofile_e2e::light::serve_honestly(flood, 41).await;
    assert!(served > 0);
    assert!(coordinator.wait(Duration::from_secs(120)).success());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    let audit = std::fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    let lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"update.rejected\"") && l.contains("junk-"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // Only a burst of 32 stray answers (plus the refill while sending) reaches
    // the engine; the rest is refused at the session, counted, audited once.
    let counted = lines.iter().any(|l| {
        l.split(" more 'unknown_task' rejections")
            .next()
            .and_then(|head| head.rsplit('"').next())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (31..=60).contains(&n))
    });
    assert!(counted, "{lines:#?}");
    assert_eq!(audit.matches("message refused: rate_limited").count(), 1);
}

/// 1,500 idle TCP connections (no TLS, no credential) opened against the
/// coordinator: the four demo partners still connect and the run completes.
/// Idle connections never hold a handshake slot, and the oldest are closed
/// once the silent pool is full. (Before, 256 of them took every handshake
/// slot for 10 s, the rest filled the listen backlog, and real clients failed
/// with "tcp connect error: deadline has elapsed".)
#[test]
fn idle_connections_do_not_lock_the_partners_out() {
    let sandbox = Sandbox::new();
    let run_file = std::fs::read_to_string(fedprofile_e2e::demo_dir().join("run.toml")).unwrap();
    let (mut coordinator, port) = sandbox.start_run(&run_file);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let idle: Vec<std::net::TcpStream> = (0..1500)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(
        idle.len() >= 1000,
        "only {} idle connections opened",
        idle.len()
    );
    // Two tries each (10 s connect timeout): no waiting out the flood.
    let mut clients = sandbox.start_clients(
        &fedprofile_e2e::PARTNERS,
        port,
        &["--connect-attempts", "2"],
    );
    let status = coordinator.wait(Duration::from_secs(180));
    assert!(status.success(), "{}", coordinator.read_stderr());
    for c in &mut clients {
        c.wait_success(Duration::from_secs(60));
    }
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert!(summary["auc"].as_f64().unwrap() >= 0.845, "{summary}");
    drop(idle);
}

/// Serves one session: statistics from `stats`, every other task honestly.
async fn serve_with_stats(
    mut session: fedprofile_e2e::light::LightSession,
    stats: fedprofile_protocol::messages::StatsReport,
    dim: usize,
) {
    loop {
        match session.next(Duration::from_secs(120)).await {
            Incoming::Task(task) => {
                let reply = match task.body {
                    TaskBody::Stats { .. } => ClientReply::Result {
                        task_id: task.task_id.clone(),
                        body: ResultBody::Stats(stats.clone()),
                    },
                    _ => fedprofile_e2e::light::honest_answer(&task, dim),
                };
                session.send(&reply).await;
            }
            Incoming::Finished | Incoming::Closed(_) => return,
        }
    }
}

/// One partner's absurd feature statistics (a mean of 1e19 with a spread the
/// sums cannot hold, as one broken cell gives) are rejected and the partner is
/// named: with enough honest partners the run completes on their
/// standardisation; with too few, the run's failure names the partner that
/// sent them, not the honest ones. (Before: the statistics were pooled, the
/// honest partners' training diverged to NaN, and the failure blamed them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_statistics_are_rejected_and_the_run_names_their_sender() {
    let dim = 6;
    let mut absurd = fedprofile_e2e::light::synthetic_stats(dim);
    absurd.numeric[2].sum = 1e20;
    for (honest, min, completes) in [(3, 3, true), (2, 3, false)] {
        let sandbox = Sandbox::new();
        let (config, run) = sandbox.write_coordinator(&telco_run(2, min, honest + 1, 30.0));
        let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
        let mut sessions = Vec::new();
        for p in &fedprofile_e2e::PARTNERS[..honest] {
            let s = open_session(port, sandbox.client_tls(p)).await.unwrap();
            sessions.push(tokio::spawn(fedprofile_e2e::light::serve_honestly(s, dim)));
        }
        let bad = sandbox.open_light(port, "partner-d").await;
        let bad = tokio::spawn(serve_with_stats(bad, absurd.clone(), dim));
        let status = coordinator.wait(Duration::from_secs(120));
        for s in sessions {
            let _ = tokio::time::timeout(Duration::from_secs(30), s).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), bad).await;
        let summary = sandbox.summary();
        assert_eq!(summary["completed"], completes, "{summary}");
        assert_eq!(status.success(), completes, "{summary}");
        // Once per statistics attempt (the failing run retries once).
        let rejected = summary["rejected_updates"]["inconsistent"].as_u64();
        assert_eq!(rejected, Some(if completes { 1 } else { 2 }), "{summary}");
        assert!(
            summary["excluded_clients"]["partner-d"]
                .as_str()
                .is_some_and(|why| why.contains("feature statistics were rejected")),
            "{summary}"
        );
        let audit = std::fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
        assert!(
            audit.lines().any(|l| l.contains("update.rejected")
                && l.contains("partner-d")
                && l.contains("f2")),
            "{audit}"
        );
        if completes {
            let clients = summary["clients"].as_array().unwrap();
            assert!(!clients.iter().any(|c| c == "partner-d"), "{summary}");
        } else {
            let why = summary["failure"].as_str().unwrap_or_default().to_string();
            assert!(why.contains("partner-d") && why.contains("'f2'"), "{why}");
            for p in &fedprofile_e2e::PARTNERS[..honest] {
                assert!(!why.contains(p), "an honest partner is blamed: {why}");
            }
        }
    }
}
