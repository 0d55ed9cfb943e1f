//! Operating the coordinator with the real binaries over mTLS: the admin API and
//! operator CLI, metrics, audit log, crash and resume, client faults, stragglers,
//! certificate rotation and revocation.

use std::fs;
use std::io::Write;
use std::time::Duration;

use fedprofile_e2e::light::{Incoming, open_session, refusal, train_reply};
use fedprofile_e2e::{
    PARTNERS, Sandbox, client_tool, demo_dir, http_get, ledger_entries, output_text, run_bounded,
    spent_epsilon, start_three_and_light, telco_run,
};
use fedprofile_protocol::messages::TaskBody;
use ndarray::Array1;

fn daemon_config(sandbox: &Sandbox) -> std::path::PathBuf {
    let (config, _) = sandbox.write_coordinator_with(
        &telco_run(1, 1, 1, 10.0),
        "metrics_listen = \"127.0.0.1:0\"",
    );
    config
}

#[test]
fn operators_start_watch_and_cancel_runs_and_partners_are_refused_on_the_admin_api() {
    let sandbox = Sandbox::new();
    let config = daemon_config(&sandbox);
    let (mut coordinator, port) = sandbox.start_coordinator_with(&config, None, &[], &[]);
    let _clients = sandbox.start_clients(&PARTNERS, port, &["--keep-running"]);
    let alice = sandbox.operator_config("alice", port, true);

    // A partner certificate is refused on the admin API.
    let as_partner = sandbox.operator_config("partner-a", port, false);
    let refused = sandbox.operator(&as_partner, &["run", "list"]);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("partner certificate"),
        "{}",
        output_text(&refused)
    );

    // Start a run and watch it to the end.
    let run_file = sandbox.path("short.toml");
    fs::write(&run_file, telco_run(3, 4, 4, 30.0)).unwrap();
    let started = sandbox.operator(&alice, &["run", "start", run_file.to_str().unwrap()]);
    assert!(started.status.success(), "{}", output_text(&started));
    let run_id = String::from_utf8_lossy(&started.stdout).trim().to_string();
    assert!(run_id.starts_with("e2e-"), "{run_id}");
    let watched = sandbox.operator(&alice, &["run", "watch", &run_id]);
    assert!(watched.status.success(), "{}", output_text(&watched));
    assert!(
        output_text(&watched).contains("run finished"),
        "{}",
        output_text(&watched)
    );
    let status = sandbox.operator(&alice, &["run", "status", &run_id]);
    let status = output_text(&status);
    assert!(
        status.contains("finished") && status.contains("3/3"),
        "{status}"
    );
    let list = sandbox.operator(&alice, &["run", "list"]);
    assert!(output_text(&list).contains(&run_id));
    let clients = output_text(&sandbox.operator(&alice, &["clients"]));
    for p in PARTNERS {
        assert!(clients.contains(p), "{clients}");
    }
    // Its report folder.
    let report = sandbox.path(&format!("state/runs/{run_id}"));
    for f in [
        "model.json",
        "metrics.csv",
        "summary.json",
        "auc.png",
        "log_loss.png",
    ] {
        assert!(
            report.join(f).exists(),
            "missing {f} in {}",
            report.display()
        );
    }

    // /metrics parses as Prometheus text and holds the figures.
    let response = http_get(&sandbox.metrics_addr(), "/metrics");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    assert_eq!(value("fedprofile_rounds_completed_total"), 3.0);
    assert_eq!(value("fedprofile_clients_connected"), 4.0);
    assert_eq!(value("fedprofile_updates_accepted_total"), 12.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "fedprofile_messages_refused_total"
                && s.labels.get("reason") == Some("partner_on_admin_api")),
        "{body}"
    );

    // Cancel a long run while it trains.
    fs::write(&run_file, telco_run(100_000, 4, 4, 30.0)).unwrap();
    let started = sandbox.operator(&alice, &["run", "start", run_file.to_str().unwrap()]);
    let long_id = String::from_utf8_lossy(&started.stdout).trim().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = output_text(&sandbox.operator(&alice, &["run", "status", &long_id]));
        if s.contains("running") && !s.contains(" 0/") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never started: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancel = sandbox.operator(&alice, &["run", "cancel", &long_id, "--reason", "test"]);
    assert!(cancel.status.success(), "{}", output_text(&cancel));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = output_text(&sandbox.operator(&alice, &["run", "status", &long_id]));
        if s.contains("cancelled") {
            assert!(s.contains("cancelled by alice: test"), "{s}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not cancelled: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The audit log holds who did what, and verifies; an edited line is named.
    let audit = sandbox.path("state/audit.jsonl");
    let verify = run_bounded(
        std::process::Command::new(fedprofile_e2e::bin("fedprofile-coordinator"))
            .args(["audit", "verify"])
            .arg(&audit),
        Duration::from_secs(30),
    );
    assert!(verify.status.success(), "{}", output_text(&verify));
    let log = fs::read_to_string(&audit).unwrap();
    for needle in [
        "\"actor\":\"alice\",\"action\":\"run.queue\"",
        "\"actor\":\"alice\",\"action\":\"run.cancel\"",
        "\"actor\":\"partner-a\",\"action\":\"admin.refused\"",
        "\"action\":\"client.join\"",
        "\"action\":\"run.finished\"",
    ] {
        assert!(log.contains(needle), "no {needle} in the audit log");
    }
    coordinator.kill();
    let lines: Vec<&str> = log.lines().collect();
    let edited = lines[2].replacen("\"detail\":\"", "\"detail\":\"x", 1);
    let mut tampered = lines.clone();
    tampered[2] = &edited;
    fs::write(&audit, tampered.join("\n") + "\n").unwrap();
    let verify = run_bounded(
        std::process::Command::new(fedprofile_e2e::bin("fedprofile-coordinator"))
            .args(["audit", "verify"])
            .arg(&audit),
        Duration::from_secs(30),
    );
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        output_text(&verify).contains("line 3: edited"),
        "{}",
        output_text(&verify)
    );
}

fn dp_run(rounds: u32, target_epsilon: f64) -> String {
    fs::read_to_string(demo_dir().join("run-dp.toml"))
        .unwrap()
        .replace("rounds = 20", &format!("rounds = {rounds}"))
        .replace(
            "target_epsilon = 1.0",
            &format!("target_epsilon = {target_epsilon}"),
        )
        .replace("deadline_secs = 60", "deadline_secs = 30")
}

#[test]
fn a_coordinator_killed_mid_run_resumes_and_no_task_is_charged_twice() {
    let sandbox = Sandbox::new();
    let rounds = 40;
    let (config, run) = sandbox.write_coordinator(&dp_run(rounds, 20.0));
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let (configs, mut clients) = sandbox.start_dp_clients(25.0, port, &[]);
    coordinator.wait_for_stdout(Duration::from_secs(300), |s| s.contains("round   5/40"));
    coordinator.kill(); // SIGKILL, mid-run
    assert!(!sandbox.path("out/summary.json").exists());

    // Same port is gone; restart on a new one and point nobody anywhere: clients
    // were told the old port, so restart on the same address via --listen.
    let mut restarted = sandbox.restart_coordinator(&config, port);
    let status = restarted.wait(Duration::from_secs(300));
    assert!(status.success(), "{}", restarted.read_stderr());
    assert!(
        restarted.read_stdout().contains("resumed after round"),
        "{}",
        restarted.read_stdout()
    );
    for c in &mut clients {
        c.wait_success(Duration::from_secs(60));
    }
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], rounds);
    let auc = summary["auc"].as_f64().unwrap();
    assert!(auc >= 0.845, "AUC {auc} after resume");
    let csv = fs::read_to_string(sandbox.path("out/metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        rounds as usize + 1,
        "one row per round, none twice"
    );

    for (p, cfg) in PARTNERS.iter().zip(&configs) {
        let entries = ledger_entries(&sandbox.ledger(p));
        // One charge per round, never two for a round (a re-sent task is answered from the cache).
        assert_eq!(entries.len(), rounds as usize, "{p}");
        let mut seen: Vec<u64> = entries
            .iter()
            .map(|e| e["round"].as_u64().unwrap())
            .collect();
        seen.dedup();
        assert_eq!(
            seen.len(),
            rounds as usize,
            "{p}: a round was charged twice"
        );
        let cost = client_tool(
            &["privacy", "cost", "--json"],
            &[("--run", &run), ("--config", cfg)],
        );
        let cost: serde_json::Value = serde_json::from_slice(&cost.stdout).unwrap();
        let last = spent_epsilon(&entries);
        assert!(
            (cost["epsilon"].as_f64().unwrap() - last).abs() <= 1e-9 * last,
            "{p}"
        );
    }
    let audit = fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    assert!(audit.contains("\"action\":\"run.resume\""));
}

#[test]
fn a_client_killed_mid_round_is_not_waited_for_and_rejoins_when_restarted() {
    let sandbox = Sandbox::new();
    let run_toml = telco_run(400, 3, 4, 20.0).replace("eval_every = 1", "eval_every = 50");
    let (mut coordinator, port) = sandbox.start_run(&run_toml);
    let configs: Vec<_> = PARTNERS
        .iter()
        .map(|p| sandbox.write_client(p, "certs", p))
        .collect();
    let mut clients = sandbox.start_configured(&PARTNERS, &configs, port, &[]);
    coordinator.wait_for_stdout(Duration::from_secs(120), |s| s.contains("round  50/400"));
    clients[3].kill(); // partner-d, SIGKILL
    std::thread::sleep(Duration::from_millis(500));
    let restarted = sandbox.start_client("partner-d-again", &configs[3], port, &[]);
    let status = coordinator.wait(Duration::from_secs(300));
    assert!(status.success(), "{}", coordinator.read_stderr());
    drop(restarted);
    let csv = fs::read_to_string(sandbox.path("out/metrics.csv")).unwrap();
    let accepted: Vec<u32> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(accepted.len(), 400);
    assert!(accepted.contains(&3), "rounds went on with three partners");
    assert_eq!(
        *accepted.last().unwrap(),
        4,
        "partner-d rejoined: {accepted:?}"
    );
    assert!(sandbox.summary()["auc"].as_f64().unwrap() >= 0.845);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_client_is_not_waited_for_and_its_late_update_is_rejected_as_stale() {
    let (sandbox, mut coordinator, _honest, mut slow) = start_three_and_light(3, 2.0).await;
    loop {
        match slow.next(Duration::from_secs(60)).await {
            Incoming::Task(task) => match &task.body {
                TaskBody::Train(t) => {
                    // Answer well after the 2 s deadline.
                    tokio::time::sleep(Duration::from_millis(2600)).await;
                    let delta = Array1::zeros(t.model.params.len());
                    slow.send(&train_reply(&task.task_id, delta, 10, 0.5)).await;
                }
                _ => slow.send(&refusal(&task.task_id, "slow")).await,
            },
            Incoming::Finished => break,
            Incoming::Closed(why) => panic!("{why}"),
        }
    }
    assert!(coordinator.wait(Duration::from_secs(60)).success());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true);
    assert!(
        summary["rejected_updates"]["stale_round"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{summary}"
    );
    assert_eq!(
        summary["clients"],
        serde_json::json!(["partner-a", "partner-b", "partner-c"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_during_a_run_and_a_revoked_partner_is_refused() {
    let sandbox = Sandbox::new();
    let run_toml = telco_run(100_000, 3, 3, 30.0).replace("eval_every = 1", "eval_every = 1000");
    let crl = format!("crl = \"{}\"\n", sandbox.path("certs/crl.pem").display());
    let (config, run) = sandbox.write_coordinator(&run_toml);
    let with_crl = fs::read_to_string(&config)
        .unwrap()
        .replace("[tls]\n", &format!("[tls]\n{crl}"));
    fs::write(&config, with_crl).unwrap();
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let _clients = sandbox.start_clients(&["partner-a", "partner-b", "partner-c"], port, &[]);
    coordinator.wait_for_stdout(Duration::from_secs(120), |s| s.contains("round   3/"));
    let tls_as = |name: &str, server_name: &str| {
        let files = fedprofile_protocol::tls::TlsFiles {
            ca_cert: sandbox.path("certs/ca.pem"),
            cert: sandbox.path(&format!("certs/{name}.pem")),
            key: sandbox.path(&format!("certs/{name}.key")),
        };
        fedprofile_protocol::tls::client_config(&files, server_name).unwrap()
    };
    // Before rotation the coordinator's certificate does not name "rotated.example".
    assert!(
        open_session(port, tls_as("partner-d", "rotated.example"))
            .await
            .is_err()
    );

    // Renew the coordinator's certificate (with that name) and reload on SIGHUP.
    let certs = |args: &[&str]| {
        let out = run_bounded(
            std::process::Command::new(fedprofile_e2e::bin("fedprofile-coordinator"))
                .arg("certs")
                .args(args)
                .arg("--dir")
                .arg(sandbox.path("certs")),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", output_text(&out));
    };
    certs(&[
        "issue",
        "--server",
        "--name",
        "coordinator",
        "--san",
        "rotated.example",
    ]);
    let reloads = || {
        fs::read_to_string(sandbox.path("state/audit.jsonl"))
            .unwrap()
            .matches("\"action\":\"tls.reload\"")
            .count()
    };
    assert_eq!(reloads(), 0);
    coordinator.hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reloads() < 1 {
        assert!(std::time::Instant::now() < deadline, "no reload recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next handshake uses the new chain.
    let renewed = open_session(port, tls_as("partner-d", "rotated.example")).await;
    assert!(renewed.is_ok(), "{:?}", renewed.err());
    drop(renewed);
    // The run was not disturbed: rounds go on with all three partners.
    let done = coordinator.read_stdout().matches("round ").count();
    coordinator.wait_for_stdout(Duration::from_secs(60), |s| {
        s.matches("round ").count() > done + 5
    });
    let last = coordinator
        .read_stdout()
        .lines()
        .rev()
        .find(|l| l.starts_with("round "))
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("clients 3/3"), "{last}");

    // Revoke partner-c and reload: its next handshake is refused, partner-d's is not.
    certs(&["revoke", "--name", "partner-c"]);
    coordinator.hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reloads() < 2 {
        assert!(std::time::Instant::now() < deadline, "no second reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_session(port, tls_as("partner-c", "coordinator"))
            .await
            .is_err(),
        "a revoked partner was accepted"
    );
    let a = open_session(port, tls_as("partner-d", "coordinator")).await;
    assert!(a.is_ok(), "{:?}", a.err());
    coordinator.kill();
}

/// A power loss that tears the audit log's last line: the coordinator refuses
/// to start with a sentence naming the line and the recovery command; `audit
/// recover` saves the torn bytes, records the recovery, and the coordinator
/// then starts and runs. (Before, it refused to start with no documented way out.)
#[test]
fn a_torn_audit_line_is_detected_and_recovered_by_an_audited_step() {
    let sandbox = Sandbox::new();
    let (config, run) = sandbox.write_coordinator(&telco_run(1, 4, 4, 30.0));
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut clients = sandbox.start_clients(&PARTNERS, port, &[]);
    assert!(coordinator.wait(Duration::from_secs(120)).success());
    for c in &mut clients {
        let _ = c.wait(Duration::from_secs(30));
    }
    let audit = sandbox.path("state/audit.jsonl");
    let mut file = fs::OpenOptions::new().append(true).open(&audit).unwrap();
    file.write_all(b"{\"seq\":99,\"at\":\"2026-12-").unwrap();
    drop(file);

    let refused = sandbox.serve_until_idle(&config, &[]);
    assert!(!refused.status.success(), "started on a torn audit log");
    let why = output_text(&refused);
    assert!(why.contains("incomplete last line"), "{why}");
    assert!(why.contains("audit recover"), "{why}");
    assert!(!why.contains("panicked"), "{why}");

    let mut cmd = std::process::Command::new(fedprofile_e2e::bin("fedprofile-coordinator"));
    cmd.args(["audit", "recover"]).arg(&audit);
    let recovered = run_bounded(&mut cmd, Duration::from_secs(30));
    assert!(recovered.status.success(), "{}", output_text(&recovered));
    let mut cmd = std::process::Command::new(fedprofile_e2e::bin("fedprofile-coordinator"));
    cmd.args(["audit", "verify"]).arg(&audit);
    let verified = run_bounded(&mut cmd, Duration::from_secs(30));
    assert!(verified.status.success(), "{}", output_text(&verified));
    let log = fs::read_to_string(&audit).unwrap();
    assert!(log.contains("\"action\":\"audit.recovered\""), "{log}");
    let started = sandbox.serve_until_idle(&config, &[]);
    assert!(started.status.success(), "{}", output_text(&started));
}

/// A run whose last checkpoint cannot be read (a damaged database, or one
/// written by an incompatible version) fails with a reason naming the round; it
/// is never silently restarted from round 0 while the audit log says rounds
/// were committed. (Before: the checkpoint was dropped and the run restarted.)
#[test]
fn a_run_whose_checkpoint_cannot_be_read_fails_with_the_reason() {
    let sandbox = Sandbox::new();
    let run_toml = telco_run(400, 4, 4, 20.0).replace("eval_every = 1", "eval_every = 50");
    let (config, run) = sandbox.write_coordinator(&run_toml);
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let _clients = sandbox.start_clients(&PARTNERS, port, &[]);
    coordinator.wait_for_stdout(Duration::from_secs(120), |s| s.contains("round   3/400"));
    coordinator.kill(); // SIGKILL, mid-run

    let db = sandbox.path("state/coordinator.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let damaged = conn
        .execute(
            "UPDATE checkpoints SET checkpoint_json = '{\"round\": \"three\"}'",
            [],
        )
        .unwrap();
    assert!(damaged >= 3, "{damaged} checkpoints");
    drop(conn);

    let (mut restarted, _) =
        sandbox.start_coordinator_with(&config, None, &["--exit-when-idle"], &[]);
    restarted.wait(Duration::from_secs(120));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (state, failure, done): (String, String, u32) = conn
        .query_row("SELECT state, failure, rounds_done FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(state, "failed", "{failure}");
    assert!(
        failure.contains("checkpoint of round") && failure.contains("cannot be read"),
        "{failure}"
    );
    assert!(done >= 3, "rounds done {done}");
    let audit = fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"action\":\"run.failed\"")
            && !audit.contains("restarted from the beginning"),
        "{audit}"
    );
}
