//! Partners follow the champion, over real processes: a long-lived
//! coordinator and two Telco partners with `--keep-running` and `[follow]`.
//! A first run registers churn@1: both write its model file, scores, profiles
//! and a change report (everyone new). An update run promotes churn@2: both
//! re-score, and the change report's counts are the ones computed here from
//! the two scores files. With partner-b stopped, `model rollback` restores
//! churn@1: partner-a follows at once, partner-b when it connects again (it
//! reports churn@2 and is sent churn@1); both model files are then v1's bytes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedprofile_e2e::{Sandbox, read_csv, telco_run};

const FOLLOWERS: [&str; 2] = ["partner-a", "partner-b"];

use fedprofile_e2e::output_text as text;

fn follow_dir(sandbox: &Sandbox, partner: &str) -> PathBuf {
    sandbox.path(&format!("follow/{partner}"))
}

/// Starts `toml` as the operator, waits for its end; returns `run status`.
fn run_to_end(sandbox: &Sandbox, operator: &Path, name: &str, toml: &str) -> String {
    sandbox.run_to_end(operator, name, toml).1
}

/// Waits (at most 60 s) until `model show name` says `partners` hold it.
fn wait_held(sandbox: &Sandbox, operator: &Path, name: &str, partners: &[&str]) -> String {
    let wanted = format!(
        "held by {} partners: {}",
        partners.len(),
        partners.join(", ")
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = text(&sandbox.operator(operator, &["model", "show", name]));
        if shown.contains(&wanted) {
            return shown;
        }
        assert!(Instant::now() < until, "never '{wanted}':\n{shown}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A scores file as user id -> score.
fn scores(path: &Path) -> BTreeMap<String, f64> {
    let (header, rows) = read_csv(path);
    assert_eq!(header, ["user_id", "score"], "{}", path.display());
    rows.into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
}

fn report(sandbox: &Sandbox, partner: &str, name: &str) -> serde_json::Value {
    let path = follow_dir(sandbox, partner).join(format!("profiles/{name}.changes.json"));
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn partners_follow_promotions_and_rollbacks_and_report_what_changed() {
    let sandbox = Sandbox::new();
    let run = |rounds: u32, update: &str| telco_run(rounds, 2, 2, 30.0) + update;
    let (config, _) = sandbox.write_coordinator(&run(1, ""));
    let (mut coordinator, port) = sandbox.start_coordinator_with(&config, None, &[], &[]);
    let configs: Vec<PathBuf> = FOLLOWERS
        .iter()
        .map(|p| {
            let dir = follow_dir(&sandbox, p);
            let follow = format!(
                "[follow]\nmodel_dir = \"{}\"\nprofiles_dir = \"{}\"\ntop = 3\n",
                dir.join("models").display(),
                dir.join("profiles").display()
            );
            sandbox.write_client_with(p, "certs", p, &follow)
        })
        .collect();
    let mut clients = sandbox.start_configured(&FOLLOWERS, &configs, port, &["--keep-running"]);
    let alice = sandbox.operator_config("alice", port, true);

    // churn@1: both partners write it, score everyone for the first time.
    let status = run_to_end(&sandbox, &alice, "first.toml", &run(1, ""));
    assert!(status.contains("model churn@1 (champion)"), "{status}");
    wait_held(&sandbox, &alice, "churn@1", &FOLLOWERS);
    let v1 = sandbox.path("v1.json");
    sandbox.show_model(&alice, "churn@1", &v1);
    let v1 = fs::read(&v1).unwrap();
    for p in FOLLOWERS {
        let dir = follow_dir(&sandbox, p);
        assert_eq!(fs::read(dir.join("models/churn.json")).unwrap(), v1, "{p}");
        let first = scores(&dir.join("profiles/churn@1.scores.csv"));
        let (_, profiles) = read_csv(&dir.join("profiles/churn@1.profiles.csv"));
        assert_eq!(profiles.len(), first.len(), "{p}: one profile per user");
        let r = report(&sandbox, p, "churn@1");
        assert_eq!(r["from_version"], serde_json::Value::Null, "{r}");
        assert_eq!(r["new_users"].as_array().unwrap().len(), first.len(), "{r}");
        assert_eq!(r["compared"], 0, "{r}");
    }

    // churn@2, promoted: both re-score; the report counts what the files show.
    let update = "[update]\ntarget = \"churn\"\nmetric = \"log_loss\"\nmin_improvement = 0.0\n";
    let status = run_to_end(&sandbox, &alice, "better.toml", &run(4, update));
    assert!(status.contains("model churn@2 (champion)"), "{status}");
    wait_held(&sandbox, &alice, "churn@2", &FOLLOWERS);
    let mut changed_total = 0;
    for p in FOLLOWERS {
        let dir = follow_dir(&sandbox, p);
        let before = scores(&dir.join("profiles/churn@1.scores.csv"));
        let after = scores(&dir.join("profiles/churn@2.scores.csv"));
        let band = |s: f64| (s / 0.1).floor() as i64;
        let changed = after
            .iter()
            .filter(|(id, s)| before.get(*id).is_some_and(|b| band(*b) != band(**s)))
            .count();
        let mut deltas: Vec<(f64, &String)> = after
            .iter()
            .map(|(id, s)| ((s - before[id]).abs(), id))
            .collect();
        deltas.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let r = report(&sandbox, p, "churn@2");
        eprintln!(
            "{p}: {}",
            fs::read_to_string(dir.join("profiles/churn@2.changes.txt")).unwrap()
        );
        assert_eq!(r["from_version"], 1, "{r}");
        assert_eq!(r["users"], after.len(), "{r}");
        assert_eq!(r["compared"], after.len(), "{r}");
        assert_eq!(r["band_changed"], changed, "{p}: {r}");
        assert_eq!(r["segment_changed"], 0, "{r}");
        assert!(r["new_users"].as_array().unwrap().is_empty(), "{r}");
        assert!(r["gone_users"].as_array().unwrap().is_empty(), "{r}");
        let movers: Vec<&str> = r["top_movers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = deltas.iter().take(3).map(|(_, id)| id.as_str()).collect();
        assert_eq!(movers, expected, "{p}: top movers by |Δscore|");
        changed_total += changed;
    }
    assert!(changed_total > 0, "four more rounds move some users' bands");

    // Roll back with partner-b stopped: a follows now, b when it comes back.
    clients[1].kill();
    let rolled = sandbox.operator(
        &alice,
        &["model", "rollback", "churn", "--reason", "back to v1"],
    );
    assert!(rolled.status.success(), "{}", text(&rolled));
    wait_held(&sandbox, &alice, "churn@1", &["partner-a"]);
    let b = follow_dir(&sandbox, "partner-b").join("models/churn.json");
    assert_ne!(fs::read(&b).unwrap(), v1, "partner-b was away");
    clients[1] = sandbox.start_client("partner-b", &configs[1], port, &["--keep-running"]);
    wait_held(&sandbox, &alice, "churn@1", &FOLLOWERS);
    for p in FOLLOWERS {
        let dir = follow_dir(&sandbox, p);
        assert_eq!(fs::read(dir.join("models/churn.json")).unwrap(), v1, "{p}");
        let r = report(&sandbox, p, "churn@1");
        assert_eq!(
            (&r["from_version"], &r["to_version"]),
            (&2.into(), &1.into()),
            "{r}"
        );
    }
    // A segment model: seg@1, then seg@2 (another seed, not an update run:
    // rejected) made champion by `model promote`; the report counts the users
    // whose segment changed, as the two scores files show.
    let segments = |rounds: u32, seed: u32| {
        format!(
            "[run]\nname = \"seg\"\nrounds = {rounds}\nmodel = \"kmeans\"\nclusters = 3\nseed = {seed}\n\
             [clients]\nfraction_per_round = 1.0\nmin_per_round = 2\nmin_connected_to_start = 2\nstart_timeout_secs = 60\n\
             [round]\ndeadline_secs = 30\neval_every = 1\nmax_retries = 1\n"
        )
    };
    let status = run_to_end(&sandbox, &alice, "seg1.toml", &segments(2, 7));
    assert!(status.contains("model seg@1 (champion)"), "{status}");
    let status = run_to_end(&sandbox, &alice, "seg2.toml", &segments(4, 11));
    assert!(
        status.contains("model seg@2 (challenger-rejected)"),
        "{status}"
    );
    wait_held(&sandbox, &alice, "seg@1", &FOLLOWERS);
    let promoted = sandbox.operator(
        &alice,
        &["model", "promote", "seg@2", "--reason", "seed 11"],
    );
    assert!(promoted.status.success(), "{}", text(&promoted));
    wait_held(&sandbox, &alice, "seg@2", &FOLLOWERS);
    for p in FOLLOWERS {
        let dir = follow_dir(&sandbox, p);
        let segment = |v: u32| -> BTreeMap<String, String> {
            let (header, rows) = read_csv(&dir.join(format!("profiles/seg@{v}.scores.csv")));
            assert_eq!(header, ["user_id", "segment", "distance"]);
            rows.into_iter()
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect()
        };
        let (before, after) = (segment(1), segment(2));
        let changed = after.iter().filter(|(id, s)| before[*id] != **s).count();
        let r = report(&sandbox, p, "seg@2");
        eprintln!(
            "{p}: seg@1 -> seg@2: {changed} of {} users changed segment",
            after.len()
        );
        assert_eq!(r["segment_changed"], changed, "{p}: {r}");
        assert_eq!(r["band_changed"], 0, "{r}");
        let (header, _) = read_csv(&dir.join("profiles/seg@2.profiles.csv"));
        assert!(header.contains(&"segment".to_string()), "{header:?}");
    }

    let b_log = clients[1].read_stderr();
    assert!(b_log.contains("following churn@1"), "{b_log}");
    let audit = fs::read_to_string(sandbox.path("state/audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"model.follow\""),
        "acknowledgements are audited"
    );

    coordinator.kill();
    for c in &mut clients {
        c.kill();
    }
}
