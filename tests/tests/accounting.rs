//! Privacy accounting around the accountant, end to end over real processes:
//! a crash between the partners' charges and the round's commit spends
//! nothing twice, and a partner whose budget is spent ends its part of the run
//! at once, named, instead of being retried and reported as late.

use std::fs;
use std::time::{Duration, Instant};

use fedprofile_e2e::{PARTNERS, Sandbox, demo_dir, ledger_entries, spent_epsilon, verify_ledger};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The DP demo's run file with `rounds` rounds (ε 1 for the whole run).
fn dp_run(rounds: u32) -> String {
    fs::read_to_string(demo_dir().join("run-dp.toml"))
        .unwrap()
        .replace("rounds = 20", &format!("rounds = {rounds}"))
        .replace("deadline_secs = 60", "deadline_secs = 30")
}

fn ledger_lines(sandbox: &Sandbox, partner: &str) -> usize {
    fs::read_to_string(sandbox.ledger(partner))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Kill -9 of the coordinator and of every client after each partner charged
/// round 2 and before round 2 was committed. Today's code then re-sent round 2
/// under a new task id, which every partner charged again, and the last round
/// was refused for budget. Now the resumed run repeats round 2 under the same
/// task ids; the partners (their results lost with their processes) say so,
/// the round is committed without an update, and the run completes every
/// round within each partner's budget of ε 1, with one ledger line per round.
#[test]
fn a_crash_between_the_partners_charge_and_the_commit_spends_nothing_twice() {
    let sandbox = Sandbox::new();
    let rounds = 5u32;
    let (config, run) = sandbox.write_coordinator(&dp_run(rounds));
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let stall = ["--insecure-test-stall-after-charge", "2"];
    let (configs, mut clients) = sandbox.start_dp_clients(1.0, port, &stall);
    // Every partner has charged round 2 (two lines), and none answered it.
    let start = Instant::now();
    while !PARTNERS.iter().all(|p| ledger_lines(&sandbox, p) == 2) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "partners did not charge round 2: {:?}\n{}",
            PARTNERS
                .iter()
                .map(|p| ledger_lines(&sandbox, p))
                .collect::<Vec<_>>(),
            coordinator.read_stdout()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    coordinator.kill();
    for c in &mut clients {
        c.kill();
    }
    assert!(
        !coordinator.read_stdout().contains("round   2/"),
        "round 2 must not have been committed before the crash"
    );

    let mut restarted = sandbox.restart_coordinator(&config, port);
    let mut clients = sandbox.start_configured(&PARTNERS, &configs, port, &[]);
    let status = restarted.wait(Duration::from_secs(300));
    let out = restarted.read_stdout();
    assert!(status.success(), "{out}\n{}", restarted.read_stderr());
    for c in &mut clients {
        c.wait_success(Duration::from_secs(60));
    }
    assert!(
        out.contains("repeating it under the same task ids"),
        "{out}"
    );
    assert!(out.contains("lost in a restart"), "{out}");
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], rounds, "{summary}");
    let skipped = summary["skipped_rounds"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{summary}");
    assert_eq!(skipped[0]["round"], 2);
    let epsilon = summary["epsilon"].as_f64().unwrap();
    assert!(epsilon <= 1.0 + 1e-9, "ε {epsilon} above the budget");

    for p in PARTNERS {
        let ledger = sandbox.ledger(p);
        let verify = verify_ledger(&ledger);
        assert!(verify.status.success(), "{p}: {}", text(&verify));
        let entries = ledger_entries(&ledger);
        // One charge per round: round 2 charged once, before the crash.
        assert_eq!(entries.len(), rounds as usize, "{p}: {entries:?}");
        let mut tasks: Vec<&str> = entries
            .iter()
            .map(|e| e["task_id"].as_str().unwrap())
            .collect();
        tasks.sort();
        tasks.dedup();
        assert_eq!(tasks.len(), rounds as usize, "{p}: a task charged twice");
        let rounds_charged: Vec<u64> = entries
            .iter()
            .map(|e| e["round"].as_u64().unwrap())
            .collect();
        assert_eq!(rounds_charged, (1..=u64::from(rounds)).collect::<Vec<_>>());
        let last = spent_epsilon(&entries);
        assert!(last <= 1.0 + 1e-9, "{p}: ε {last}");
    }
}

/// A partner whose budget cannot pay for the run refuses for budget; the run
/// stops at once (no retry of a round that cannot succeed) and says which
/// partners refused and why, instead of "… arrived before the deadline".
#[test]
fn budget_refusals_end_the_run_at_once_and_name_the_partners() {
    let sandbox = Sandbox::new();
    // ε 1 planned over 6 rounds; three partners can afford about half of it.
    let run_file = dp_run(6).replace("max_retries = 1", "max_retries = 3");
    let (config, run) = sandbox.write_coordinator(&run_file);
    let (mut coordinator, port) = sandbox.start_coordinator(&config, &run, &[]);
    let mut clients: Vec<_> = PARTNERS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let budget = if i == 0 { 1.0 } else { 0.6 };
            let cfg = sandbox.write_dp_client(p, budget);
            sandbox.start_client(p, &cfg, port, &[])
        })
        .collect();
    let status = coordinator.wait(Duration::from_secs(300));
    assert!(!status.success(), "the run cannot complete");
    for c in &mut clients {
        let _ = c.wait(Duration::from_secs(60));
    }
    let out = coordinator.read_stdout();
    assert!(
        !out.contains("retrying"),
        "a budget refusal was retried:\n{out}"
    );
    let summary = sandbox.summary();
    assert_eq!(summary["completed"], false, "{summary}");
    let failure = summary["failure"].as_str().unwrap();
    assert!(failure.contains("no retry can succeed"), "{failure}");
    assert!(!failure.contains("deadline"), "{failure}");
    let excluded = summary["excluded_clients"].as_object().unwrap();
    for p in &PARTNERS[1..] {
        assert!(failure.contains(p), "{p} not named: {failure}");
        let why = excluded[*p].as_str().unwrap();
        assert!(why.contains("privacy budget would be exceeded"), "{why}");
    }
    assert!(!excluded.contains_key(PARTNERS[0]), "{summary}");
    // Nobody's ledger went over its budget.
    for (i, p) in PARTNERS.iter().enumerate() {
        let budget = if i == 0 { 1.0 } else { 0.6 };
        let spent = spent_epsilon(&ledger_entries(&sandbox.ledger(p)));
        assert!(spent <= budget, "{p} spent {spent} > its budget {budget}");
    }
}
