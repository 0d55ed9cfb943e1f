//! docs/quickstart.md, run as written: three partners' CSV exports (two
//! sources each, joined on a user id) to a trained, evaluated and profiled
//! model with `schema infer`, `schema merge`, `schema check`,
//! `fedprofile-coordinator local`, `score` and `profile`; and `local` on the
//! Caravan federation.
//!
//! The commands and files below are checked to appear verbatim in the
//! quickstart, so the document and this test cannot drift apart.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fedprofile_e2e::{bin, read_csv, repo_root, run_bounded, tail};

const LIMIT: Duration = Duration::from_secs(300);

/// The quickstart's partners and their user counts (train, test).
const PARTNERS: [(&str, usize, usize); 3] =
    [("acme", 400, 150), ("birch", 300, 120), ("cedar", 500, 180)];

/// The quickstart's commands, in order (`$` lines of docs/quickstart.md).
const COMMANDS: &[&str] = &[
    "fedprofile-client schema infer --source accounts=acme/train/accounts.csv --source usage=acme/train/usage.csv --key user_id --label churned --positive yes --out acme.schema.toml",
    "fedprofile-client schema infer --source accounts=birch/train/accounts.csv --source usage=birch/train/usage.csv --key user_id --label churned --positive yes --out birch.schema.toml",
    "fedprofile-client schema infer --source accounts=cedar/train/accounts.csv --source usage=cedar/train/usage.csv --key user_id --label churned --positive yes --out cedar.schema.toml",
    "fedprofile-client schema merge acme.schema.toml birch.schema.toml cedar.schema.toml --out schema.toml",
    "fedprofile-client schema check --schema schema.toml --data-dir acme --split train",
    "fedprofile-client schema check --schema schema.toml --data-dir acme --split test",
    "fedprofile-coordinator local --federation federation.toml --out out",
    "fedprofile-client score --config out/clients/acme.toml --model out/model.json --split test --out acme-scores.csv",
    "fedprofile-client profile --config out/clients/acme.toml --model out/model.json --split test --top 3 --out acme-profiles.csv",
];

/// The quickstart's run file.
const RUN_TOML: &str = r#"[run]
name = "quickstart-churn"
rounds = 15
model = "logistic_regression"

[clients]
min_per_round = 3
min_connected_to_start = 3
start_timeout_secs = 60

[round]
deadline_secs = 30

[training]
local_epochs = 1
batch_size = 32
learning_rate = 0.1
"#;

/// The quickstart's federation file.
const FEDERATION_TOML: &str = r#"run = "run.toml"

[[partner]]
name = "acme"
data_dir = "acme"
schema = "schema.toml"

[[partner]]
name = "birch"
data_dir = "birch"
schema = "schema.toml"

[[partner]]
name = "cedar"
data_dir = "cedar"
schema = "schema.toml"
"#;

/// A small deterministic generator (xorshift64*), so the data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[((self.next() * items.len() as f64) as usize).min(items.len() - 1)]
    }
}

/// Writes one partner's split: accounts.csv (plan, region, tenure, fee, the
/// label) and usage.csv (calls, data, support tickets), the rows of usage in
/// another order. The label depends on the features non-linearly (a plan by
/// data interaction and a tenure threshold).
fn write_split(dir: &Path, partner: &str, split: &str, users: usize, rng: &mut Rng) {
    let folder = dir.join(partner).join(split);
    fs::create_dir_all(&folder).expect("create the export folder");
    let mut accounts = String::from("user_id,plan,region,tenure_months,monthly_fee,churned\n");
    let mut usage = Vec::new();
    for i in 0..users {
        let id = format!("{partner}-{split}-{i:05}");
        let plan = rng.pick(&["basic", "plus", "pro"]);
        let region = rng.pick(&["north", "south", "east", "west"]);
        let tenure = (rng.next() * 72.0).floor();
        let fee = 20.0 + rng.next() * 80.0;
        let calls = (rng.next() * 300.0).floor();
        let data_gb = rng.next() * 20.0;
        let tickets = (rng.next() * rng.next() * 8.0).floor();
        let mut logit = -1.0 + 0.5 * tickets - 0.04 * tenure + 0.02 * (fee - 60.0);
        if plan == "basic" && data_gb > 10.0 {
            logit += 2.0;
        }
        if tenure < 6.0 {
            logit += 1.5;
        }
        let churned = rng.next() < 1.0 / (1.0 + (-logit).exp());
        let label = if churned { "yes" } else { "no" };
        writeln!(accounts, "{id},{plan},{region},{tenure},{fee:.2},{label}").expect("format");
        usage.push(format!("{id},{calls},{data_gb:.3},{tickets}"));
    }
    usage.reverse();
    let usage = format!(
        "user_id,calls,data_gb,support_tickets\n{}\n",
        usage.join("\n")
    );
    fs::write(folder.join("accounts.csv"), accounts).expect("write accounts.csv");
    fs::write(folder.join("usage.csv"), usage).expect("write usage.csv");
}

/// Runs one quickstart command line in `dir` (the first word names the binary).
fn run_line(dir: &Path, line: &str) -> String {
    let mut words = line.split_whitespace();
    let program = words.next().expect("a command");
    let out = run_bounded(
        Command::new(bin(program)).args(words).current_dir(dir),
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{line}` failed ({}):\n{}\n{}",
        out.status,
        tail(&stdout, 30),
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
    stdout
}

/// `fedprofile-coordinator local --federation FEDERATION EXTRA --out OUT`, bounded.
fn local(federation: &Path, extra: &[&std::ffi::OsStr], out: &Path) -> std::process::Output {
    run_bounded(
        Command::new(bin("fedprofile-coordinator"))
            .arg("local")
            .arg("--federation")
            .arg(federation)
            .args(extra)
            .arg("--out")
            .arg(out),
        LIMIT,
    )
}

fn quickstart_text() -> String {
    fs::read_to_string(repo_root().join("docs/quickstart.md")).expect("read docs/quickstart.md")
}

#[test]
fn the_quickstart_lists_exactly_the_commands_and_files_of_this_test() {
    let doc = quickstart_text();
    for line in COMMANDS {
        assert!(
            doc.contains(&format!("$ {line}\n")),
            "docs/quickstart.md does not have the command `{line}`"
        );
    }
    for (name, text) in [("run.toml", RUN_TOML), ("federation.toml", FEDERATION_TOML)] {
        assert!(
            doc.contains(text),
            "docs/quickstart.md does not show this test's {name}:\n{text}"
        );
    }
}

#[test]
fn the_quickstart_trains_evaluates_scores_and_profiles_three_partners() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (partner, train, test) in PARTNERS {
        write_split(dir, partner, "train", train, &mut rng);
        write_split(dir, partner, "test", test, &mut rng);
    }
    fs::write(dir.join("run.toml"), RUN_TOML).expect("write run.toml");
    fs::write(dir.join("federation.toml"), FEDERATION_TOML).expect("write federation.toml");
    let mut printed = Vec::new();
    for line in COMMANDS {
        printed.push(run_line(dir, line));
    }

    // The merged schema has both sources, the key, and the label.
    let schema = fs::read_to_string(dir.join("schema.toml")).expect("read schema.toml");
    for needle in ["accounts", "usage", "user_id", "churned", "plan"] {
        assert!(
            schema.contains(needle),
            "schema.toml lacks {needle}:\n{schema}"
        );
    }
    // Trained on all three partners, evaluated on their test splits.
    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("out/summary.json")).expect("read out/summary.json"),
    )
    .expect("summary.json is JSON");
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], 15, "{summary}");
    assert_eq!(
        summary["clients"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
    let auc = summary["auc"].as_f64().expect("auc");
    assert!(
        auc > 0.7,
        "pooled test AUC {auc} is not well above chance: {summary}"
    );
    println!(
        "quickstart: pooled test AUC {auc:.4}\n{}",
        tail(&printed[6], 40)
    );
    let test_users: u64 = PARTNERS.iter().map(|p| p.2 as u64).sum();
    assert_eq!(summary["evaluated_examples"], test_users, "{summary}");
    assert!(
        printed[6].contains("round  15/15"),
        "no progress lines:\n{}",
        tail(&printed[6], 20)
    );

    // One score and one profile per acme test user.
    let acme_test = PARTNERS[0].2;
    let (header, rows) = read_csv(&dir.join("acme-scores.csv"));
    assert_eq!(header[0], "user_id");
    assert_eq!(rows.len(), acme_test);
    for row in &rows {
        let score: f64 = row[1].parse().expect("a numeric score");
        assert!(
            (0.0..=1.0).contains(&score),
            "score {score} is not a probability"
        );
    }
    let (header, rows) = read_csv(&dir.join("acme-profiles.csv"));
    assert_eq!(header[0], "user_id");
    assert_eq!(rows.len(), acme_test);
    println!("{}\n{}", header.join(","), rows[0].join(","));
    let ids: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(ids.len(), acme_test, "a user profiled twice");
}

#[test]
fn local_runs_the_caravan_federation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let caravan = repo_root().join("deploy/demo/caravan");
    // The Caravan run file, cut to 5 rounds to keep the test short.
    let run = fs::read_to_string(caravan.join("run.toml"))
        .expect("read the Caravan run file")
        .replace("rounds = 20", "rounds = 5");
    let run_file = dir.path().join("run.toml");
    fs::write(&run_file, run).expect("write the run file");
    let out = dir.path().join("out");
    let output = local(
        &caravan.join("federation.toml"),
        &["--run".as_ref(), run_file.as_os_str()],
        &out,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "local failed:\n{}\n{}",
        tail(&stdout, 30),
        tail(&String::from_utf8_lossy(&output.stderr), 30)
    );
    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(out.join("summary.json")).expect("read summary.json"),
    )
    .expect("summary.json is JSON");
    assert_eq!(summary["completed"], true, "{summary}");
    assert_eq!(summary["rounds"], 5, "{summary}");
    let clients = summary["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 3, "{summary}");
    for file in [
        "model.json",
        "metrics.csv",
        "logs/insurer-a.log",
        "certs/insurer-c.pem",
    ] {
        assert!(out.join(file).is_file(), "{file} is missing in OUT");
    }
}

#[test]
fn local_names_the_partner_whose_client_node_exits_early() {
    let dir = tempfile::tempdir().expect("temp dir");
    let caravan = repo_root().join("deploy/demo/caravan");
    let federation = format!(
        "run = \"{}\"\n\n[[partner]]\nname = \"nowhere\"\ndata_dir = \"no-such-folder\"\nschema = \"{}\"\n",
        caravan.join("run.toml").display(),
        caravan.join("schema.toml").display()
    );
    let file = dir.path().join("federation.toml");
    fs::write(&file, federation).expect("write federation.toml");
    let output = local(&file, &[], &dir.path().join("out"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "local succeeded without data");
    assert!(
        stderr.contains("the client node of nowhere exited before the run ended")
            && stderr.contains("no-such-folder"),
        "{stderr}"
    );
    // And it warned that the run waits for more partners than it has.
    assert!(stderr.contains("min_connected_to_start = 3"), "{stderr}");
}
