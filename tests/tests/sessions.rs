//! Sessions that do not behave, over real mTLS next to real client nodes: a
//! session that never reads nor answers is dropped after
//! `clients.max_missed_tasks` missed tasks and no longer selected; a flooding
//! session is closed and the run goes on; a second node with the same
//! certificate is refused, audited once, and the first keeps working.

use std::time::{Duration, Instant};

use fedprofile_e2e::light::{Incoming, LightSession};
use fedprofile_e2e::{Sandbox, telco_run};
use fedprofile_protocol::messages::{ClientReply, RefusalKind};
use fedprofile_protocol::pb;

/// The `selected` column of `metrics.csv`, one entry per round.
fn selected_per_round(sandbox: &Sandbox) -> Vec<String> {
    let csv = std::fs::read_to_string(sandbox.path("out/metrics.csv")).expect("metrics.csv");
    let header: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "selected")
        .expect("a selected column");
    csv.lines()
        .skip(1)
        .map(|row| row.split(',').nth(col).unwrap_or_default().to_string())
        .collect()
}

fn audit(sandbox: &Sandbox) -> String {
    std::fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap_or_default()
}

/// Audit lines by `actor` with `action`.
fn audit_lines(sandbox: &Sandbox, actor: &str, action: &str) -> usize {
    audit(sandbox)
        .lines()
        .filter(|l| {
            l.contains(&format!("\"actor\":\"{actor}\""))
                && l.contains(&format!("\"action\":\"{action}\""))
        })
        .count()
}

/// Reads what is left of a session until it ends (bounded); returns why it ended.
async fn read_to_end(session: &mut LightSession) -> String {
    for _ in 0..1000 {
        match session.next(Duration::from_secs(60)).await {
            Incoming::Task(_) => {}
            Incoming::Finished => return "finished".into(),
            Incoming::Closed(why) => return why,
        }
    }
    "still open after 1000 messages".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_reads_nor_answers_is_dropped_after_its_missed_tasks() {
    let sandbox = Sandbox::new();
    let run = telco_run(4, 3, 4, 5.0).replace("[clients]\n", "[clients]\nmax_missed_tasks = 2\n");
    let (mut coordinator, port) = sandbox.start_run(&run);
    // partner-d opens a session and then neither reads nor writes (half-open).
    let mut silent = sandbox.open_light(port, "partner-d").await;
    let _honest = sandbox.start_clients(&["partner-a", "partner-b", "partner-c"], port, &[]);
    let status = coordinator.wait(Duration::from_secs(240));
    assert!(status.success(), "{}", coordinator.read_stderr());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], 4, "{summary}");
    // Missed: the statistics task, then round 1's training task; dropped, and
    // not selected in the following rounds.
    assert_eq!(selected_per_round(&sandbox), vec!["4", "3", "3", "3"]);
    assert_eq!(
        summary["clients"],
        serde_json::json!(["partner-a", "partner-b", "partner-c"])
    );
    let log = coordinator.read_stderr();
    assert!(
        log.contains("client partner-d missed 2 tasks in a row (no result or refusal within the 5 s deadline, clients.max_missed_tasks = 2)"),
        "{log}"
    );
    assert_eq!(audit_lines(&sandbox, "partner-d", "message.refused"), 1);
    assert!(audit(&sandbox).contains("message refused: missed_tasks"));
    // What the session reads once it reads again: its tasks, then why it was closed.
    let why = read_to_end(&mut silent).await;
    assert!(
        why.contains("session closed by the coordinator: client partner-d missed 2 tasks in a row")
            && why.contains("reconnect when the node can answer"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_session_is_closed_and_the_run_goes_on_with_the_honest_partners() {
    let sandbox = Sandbox::new();
    let (mut coordinator, port) = sandbox.start_run(&telco_run(2, 3, 4, 60.0));
    let mut flood = sandbox.open_light(port, "partner-d").await;
    let _honest = sandbox.start_clients(&["partner-a", "partner-b", "partner-c"], port, &[]);
    // At its first task, partner-d sends 10,000 refusals of tasks that do not exist.
    let first = flood.next(Duration::from_secs(60)).await;
    assert!(matches!(first, Incoming::Task(_)), "{first:?}");
    let tx = flood.tx.clone();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        for i in 0..10_000 {
            let junk = ClientReply::Refusal {
                task_id: format!("junk-{i}"),
                reason: "flood".into(),
                kind: RefusalKind::Other,
            };
            if tx.send(pb::ClientMessage::from(&junk)).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let why = read_to_end(&mut flood).await;
    assert!(
        why.contains("session closed by the coordinator: ")
            && why.contains("messages of client partner-d were refused within 10 s"),
        "{why}"
    );
    let sent = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("the flood ends once the session is closed")
        .unwrap();
    assert!(sent > 1000, "only {sent} messages were sent");
    drop(flood);
    let status = coordinator.wait(Duration::from_secs(180));
    assert!(status.success(), "{}", coordinator.read_stderr());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], 2, "{summary}");
    assert_eq!(
        summary["clients"],
        serde_json::json!(["partner-a", "partner-b", "partner-c"])
    );
    // partner-d was gone before the first round was selected.
    assert_eq!(selected_per_round(&sandbox), vec!["3", "3"]);
    // Audited once per reason, not once per message.
    let refused = audit_lines(&sandbox, "partner-d", "message.refused");
    assert!((1..=3).contains(&refused), "{refused} refusal lines");
    assert!(audit(&sandbox).contains("message refused: flooding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_certificate_is_refused_and_the_first_keeps_working() {
    let sandbox = Sandbox::new();
    let (mut coordinator, port) = sandbox.start_run(&telco_run(3, 3, 3, 30.0));
    let first_cfg = sandbox.write_client("partner-a", "certs", "partner-a");
    let _first = sandbox.start_client("partner-a", &first_cfg, port, &[]);
    let start = Instant::now();
    while audit_lines(&sandbox, "partner-a", "client.join") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "partner-a did not join"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another node (other data) holding partner-a's certificate.
    let twin_cfg = sandbox.write_client("partner-d", "certs", "partner-a");
    let mut twin = sandbox.start_client("twin", &twin_cfg, port, &[]);
    let start = Instant::now();
    while !twin.read_stderr().contains("already open") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the twin was not refused: {}",
            twin.read_stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _others = sandbox.start_clients(&["partner-b", "partner-c"], port, &[]);
    let status = coordinator.wait(Duration::from_secs(180));
    twin.kill();
    assert!(status.success(), "{}", coordinator.read_stderr());
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], 3, "{summary}");
    assert_eq!(selected_per_round(&sandbox), vec!["3", "3", "3"]);
    // The twin reads a sentence and backs off instead of hammering.
    let log = twin.read_stderr();
    assert!(
        log.contains("the coordinator refused this session: a session for client partner-a is already open (from 127.0.0.1:")
            && log.contains("two nodes must not share a certificate"),
        "{log}"
    );
    let attempts = log.matches("already open").count();
    assert!(
        attempts <= 6,
        "the twin hammered: {attempts} attempts\n{log}"
    );
    // The first session stayed: one join (two if the twin got in after the
    // first node left at the end), the refusal audited once.
    let joins = audit_lines(&sandbox, "partner-a", "client.join");
    assert!(joins <= 2, "{joins} join lines for partner-a");
    let refusals = audit(&sandbox)
        .lines()
        .filter(|l| l.contains("duplicate_session"))
        .count();
    assert_eq!(refusals, 1, "{}", audit(&sandbox));
}
