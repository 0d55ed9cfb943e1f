//! Failed handshakes name their cause: on the client, on the operator CLI, in
//! the coordinator's log (default level, throttled), and in the failure reason
//! of a run that waits for a partner whose handshakes keep failing.

use std::fs;
use std::time::{Duration, Instant};

use fedprofile_e2e::{Proc, Sandbox, assert_contains, telco_run};

/// `<sandbox>/other-ca`: another CA's certificates for `names`, with the
/// federation CA as `ca.pem` (so the client trusts the coordinator, and only
/// the coordinator has a reason to refuse).
fn foreign_certificates(sandbox: &Sandbox, names: &[&str]) {
    sandbox.make_ca("other-ca", names);
    fs::copy(
        sandbox.path("certs/ca.pem"),
        sandbox.path("other-ca/ca.pem"),
    )
    .unwrap();
}

fn wait_for_stderr(proc: &Proc, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = proc.read_stderr();
        if pred(&text) {
            return text;
        }
        assert!(
            start.elapsed() < limit,
            "{}: expected line not logged within {limit:?}; stderr:\n{text}",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_with_another_cas_certificate_is_told_why_and_the_coordinator_logs_it() {
    let sandbox = Sandbox::new();
    foreign_certificates(&sandbox, &["partner-a"]);
    let (coordinator, port) = sandbox.start_idle_coordinator();
    let config = sandbox.write_client("partner-a", "other-ca", "partner-a");
    let mut client = sandbox.start_client("foreign", &config, port, &["--connect-attempts", "3"]);
    assert_eq!(client.wait(Duration::from_secs(60)).code(), Some(1));
    let stderr = client.read_stderr();
    // Was: "could not reach the coordinator … transport error". The last
    // attempt's message is the one the client exits with.
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default();
    let cause = format!(
        "the coordinator does not trust our certificate ({}): it is not signed by a CA the coordinator knows",
        sandbox.path("other-ca/partner-a.pem").display()
    );
    assert!(last.contains(&cause), "{stderr}");
    assert!(last.contains("after 3 attempts"), "{stderr}");
    assert!(!stderr.contains("transport error"), "{stderr}");

    // The coordinator, at its default log level: peer address, identity, cause.
    let line = "refused: its certificate (issued by ";
    let log = wait_for_stderr(&coordinator, Duration::from_secs(20), |t| t.contains(line));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
    assert_contains(
        lines[0],
        &[
            "TLS handshake from 127.0.0.1:",
            "is not signed by a CA the coordinator trusts",
            "partner-a",
        ],
    );
    // Three refused handshakes from one address and cause: one line (the
    // next is due after 60 s, with the count).
    assert_eq!(lines.len(), 1, "{log}");
}

#[test]
fn the_operator_cli_with_an_expired_certificate_says_it_expired_and_names_the_file() {
    let sandbox = Sandbox::new();
    sandbox.issue(&["--operator", "--name", "old-ops", "--expired"]);
    let (_coordinator, port) = sandbox.start_idle_coordinator();
    let config = sandbox.operator_config("old-ops", port, false);
    let out = sandbox.operator(&config, &["run", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = format!(
        "certificate '{}' is not valid now",
        sandbox.path("certs/old-ops.pem").display()
    );
    assert_contains(&stderr, &[&named, ", so it expired at 20"]);
    assert!(!stderr.contains("transport error"), "{stderr}");
}

#[test]
fn a_run_short_of_partners_names_the_one_whose_handshakes_fail_and_why() {
    let sandbox = Sandbox::new();
    foreign_certificates(&sandbox, &["partner-c"]);
    let run = telco_run(1, 3, 3, 30.0).replace("start_timeout_secs = 60", "start_timeout_secs = 8");
    let (config, run) = sandbox.write_coordinator(&run);
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut clients = Vec::new();
    for partner in ["partner-a", "partner-b"] {
        let config = sandbox.write_client(partner, "certs", partner);
        clients.push(sandbox.start_client(partner, &config, port, &[]));
    }
    // partner-c keeps trying (20 attempts, backoff up to 1 s) with another CA's certificate.
    let foreign = sandbox.write_client("partner-c", "other-ca", "partner-c");
    let _c = sandbox.start_client("partner-c", &foreign, port, &[]);

    coordinator.wait(Duration::from_secs(90));
    let summary = sandbox.summary();
    let failure = summary["failure"].as_str().unwrap_or_default().to_string();
    assert!(
        failure.starts_with("only 2 of the 3 clients needed were connected after 8 s; "),
        "{failure}"
    );
    assert_contains(
        &failure,
        &[
            "partner-c's handshakes fail: its certificate (issued by ",
            "is not signed by a CA the coordinator trusts",
            "last try from 127.0.0.1:",
        ],
    );
    for mut c in clients {
        c.kill();
    }
}
