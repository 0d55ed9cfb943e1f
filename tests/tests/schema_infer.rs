//! Issue 14: `fedprofile-client schema infer` on each Telco partner's train
//! exports, `schema merge` of the four, then `check-data` with the merged schema
//! reports the same users and counts as the hand-written schema's `faults.json`;
//! `schema check` notes a rare value without writing it and exits 1 only on a
//! blocking problem. Only the client binary runs (no coordinator, no network).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fedprofile_e2e::{PARTNERS, bin, demo_dir, run_bounded};

fn client(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = Command::new(bin("fedprofile-client"));
    cmd.args(args);
    cmd.args(paths);
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `schema infer` on `<data>/train/{accounts,services}.csv` into `out`.
fn infer(data: &Path, out: &Path) -> Output {
    let accounts = format!("accounts={}", data.join("train/accounts.csv").display());
    let services = format!("services={}", data.join("train/services.csv").display());
    let mut cmd = Command::new(bin("fedprofile-client"));
    cmd.args([
        "schema", "infer", "--source", &accounts, "--source", &services,
    ])
    .args([
        "--key",
        "customer_id",
        "--label",
        "churn",
        "--positive",
        "yes",
        "--out",
    ])
    .arg(out);
    run_bounded(&mut cmd, Duration::from_secs(60))
}

fn copy_data(partner: &str, to: &Path) {
    for split in ["train", "test"] {
        fs::create_dir_all(to.join(split)).unwrap();
        for file in ["accounts.csv", "services.csv"] {
            let from = demo_dir().join("data").join(partner).join(split).join(file);
            fs::copy(from, to.join(split).join(file)).unwrap();
        }
    }
}

#[test]
fn infer_merge_then_check_data_reports_the_hand_written_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut inferred: Vec<PathBuf> = Vec::new();
    for p in PARTNERS {
        let out = dir.path().join(format!("{p}.toml"));
        let run = infer(&demo_dir().join("data").join(p), &out);
        assert!(run.status.success(), "{}", text(&run));
        assert!(String::from_utf8_lossy(&run.stderr).contains("review it before sharing"));
        inferred.push(out);
    }
    let federation = dir.path().join("federation.toml");
    let mut args: Vec<&Path> = inferred.iter().map(PathBuf::as_path).collect();
    args.push(Path::new("--out"));
    args.push(&federation);
    let run = client(&["schema", "merge"], &args);
    assert!(run.status.success(), "{}", text(&run));
    let merged = fs::read_to_string(&federation).unwrap();
    assert!(
        merged.contains("keep_newest_by = \"updated_at\""),
        "{merged}"
    );

    let faults: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(demo_dir().join("data/faults.json")).unwrap())
            .unwrap();
    for p in PARTNERS {
        let config = dir.path().join(format!("{p}-client.toml"));
        fs::write(
            &config,
            format!(
                "coordinator = \"https://localhost:1\"\ndata_dir = \"{}\"\nschema = \"{}\"\n",
                demo_dir().join("data").join(p).display(),
                federation.display()
            ),
        )
        .unwrap();
        let run = client(&["check-data", "--json", "--config"], &[&config]);
        assert!(run.status.success(), "{p}: {}", text(&run));
        let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        for split in json.as_array().unwrap() {
            let name = format!("{p}/{}", split["split"].as_str().unwrap());
            let expected = &faults[&name];
            let report = &split["report"];
            assert_eq!(report["users"], expected["customers"], "{name}");
            let accounts = &report["sources"][0];
            let services = &report["sources"][1];
            assert_eq!(
                accounts["stale_duplicates_removed"], expected["stale_duplicate_accounts"],
                "{name}"
            );
            assert_eq!(
                services["exact_duplicates_removed"], expected["exact_duplicate_services"],
                "{name}"
            );
            assert_eq!(
                services["users_missing"], expected["customers_missing_from_services"],
                "{name}"
            );
            let noise = report["issues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["reason"] == "case_or_whitespace_noise")
                .map_or(0, |i| i["count"].as_u64().unwrap());
            assert_eq!(
                noise,
                expected["case_or_whitespace_noise_cells"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(split["problems"], serde_json::json!([]), "{name}");
        }
        // `schema check` of the test split against the merged schema: usable.
        let data = demo_dir().join("data").join(p);
        let run = client(
            &["schema", "check", "--split", "test", "--schema"],
            &[&federation, Path::new("--data-dir"), &data],
        );
        assert!(run.status.success(), "{p}: {}", text(&run));
        assert!(
            String::from_utf8_lossy(&run.stdout).contains("no blocking problem"),
            "{}",
            text(&run)
        );
    }
}

#[test]
fn a_rare_category_is_not_written_and_check_notes_it_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("partner-a");
    copy_data("partner-a", &data);
    // Three users (fewer than --min-count 10) get a contract nobody else has.
    let accounts = data.join("train/accounts.csv");
    let csv = fs::read_to_string(&accounts).unwrap();
    let mut changed = 0;
    let lines: Vec<String> = csv
        .lines()
        .map(|l| {
            if changed < 3 && l.contains(",Month-to-month,") {
                changed += 1;
                l.replacen(",Month-to-month,", ",Three year,", 1)
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_eq!(changed, 3);
    fs::write(&accounts, lines.join("\n") + "\n").unwrap();

    let schema = dir.path().join("schema.toml");
    let run = infer(&data, &schema);
    assert!(run.status.success(), "{}", text(&run));
    let written = fs::read_to_string(&schema).unwrap();
    assert!(
        written.contains("vocabulary = [\"month-to-month\", \"one year\", \"two year\"]"),
        "{written}"
    );
    assert!(!written.to_lowercase().contains("three year"), "{written}");
    assert!(written.contains("1 rare value(s) (fewer than 10 users each) left out"));

    // The partner's own check names the value and its count (it stays local) ...
    let run = client(
        &["schema", "check", "--schema"],
        &[&schema, Path::new("--data-dir"), &data],
    );
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("column 'contract': 1 value(s) not in its vocabulary (encoded as unknown): \"three year\" (3 cells)"),
        "{}",
        text(&run)
    );
    // ... and a missing header column is blocking.
    let services = data.join("train/services.csv");
    let csv = fs::read_to_string(&services).unwrap();
    fs::write(
        &services,
        csv.replacen("streaming_tv", "streaming_television", 1),
    )
    .unwrap();
    let run = client(
        &["schema", "check", "--schema"],
        &[&schema, Path::new("--data-dir"), &data],
    );
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("missing header column 'streaming_tv'"),
        "{}",
        text(&run)
    );
}
