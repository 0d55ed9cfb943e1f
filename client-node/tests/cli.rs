//! The client's command line: `check-data` works offline and errors are clear.

use std::path::Path;
use std::process::{Child, Command, Stdio};

fn client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fedprofile-client"))
}

/// `check-data` of the demo's partner-a.
fn check_data_partner_a() -> Command {
    let mut cmd = client();
    cmd.args(["check-data", "--config"])
        .arg(demo().join("clients/partner-a.toml"));
    cmd
}

/// Starts `cmd` with its stdout and stderr piped to this test.
fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`, which must exit 0 without a panic; returns its stderr.
fn exits_quietly(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo")
}

#[test]
fn check_data_json_reports_both_splits_of_a_partner() {
    let out = client()
        .args(["check-data", "--json", "--config"])
        .arg(demo().join("clients/partner-b.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = v.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["split"], "train");
    assert_eq!(reports[0]["report"]["users"], 1290);
    assert_eq!(reports[1]["split"], "test");
    assert_eq!(reports[1]["report"]["users"], 322);
}

#[test]
fn check_data_text_names_the_faults() {
    let out = check_data_partner_a().output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("== split 'train'") && text.contains("== split 'test'"),
        "{text}"
    );
    assert!(text.contains("1892"), "{text}");
}

#[test]
fn a_missing_config_is_one_clear_error() {
    let out = client()
        .args(["check-data", "--config", "/nonexistent/client.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read '/nonexistent/client.toml'"),
        "{stderr}"
    );
}

/// A copy of partner-b's demo data in a temporary folder, with a client config
/// (no TLS, an unreachable coordinator) and, if given, a copy of the demo schema
/// with `schema_edit` applied.
struct Partner {
    dir: tempfile::TempDir,
}

impl Partner {
    fn new(schema_edit: impl Fn(String) -> String) -> Partner {
        let dir = tempfile::tempdir().unwrap();
        for split in ["train", "test"] {
            let to = dir.path().join("data").join(split);
            std::fs::create_dir_all(&to).unwrap();
            for file in ["accounts.csv", "services.csv"] {
                std::fs::copy(
                    demo().join("data/partner-b").join(split).join(file),
                    to.join(file),
                )
                .unwrap();
            }
        }
        let schema = std::fs::read_to_string(demo().join("schema.toml")).unwrap();
        std::fs::write(dir.path().join("schema.toml"), schema_edit(schema)).unwrap();
        std::fs::write(
            dir.path().join("client.toml"),
            "coordinator = \"https://localhost:1\"\ndata_dir = \"data\"\nschema = \"schema.toml\"\n",
        )
        .unwrap();
        Partner { dir }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("client.toml")
    }

    fn file(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("data").join(rel)
    }

    /// Rewrites one cell: `line` is the 1-based line in the file.
    fn set_cell(&self, rel: &str, line: usize, column: &str, value: &str) {
        let text = std::fs::read_to_string(self.file(rel)).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let i = lines[0].split(',').position(|h| h == column).unwrap();
        let mut cells: Vec<&str> = lines[line - 1].split(',').collect();
        cells[i] = value;
        lines[line - 1] = cells.join(",");
        std::fs::write(self.file(rel), lines.join("\n") + "\n").unwrap();
    }

    fn check_data(&self, json: bool) -> std::process::Output {
        let mut cmd = client();
        cmd.arg("check-data");
        if json {
            cmd.arg("--json");
        }
        cmd.arg("--config").arg(self.config()).output().unwrap()
    }

    /// `run` must fail (exit 1) at data loading, saying `sentence`.
    fn assert_run_fails_with(&self, sentence: &str) {
        let run = self.run();
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(sentence), "{stderr}");
    }

    /// `run` without TLS against nothing: fails at data loading or at connecting.
    fn run(&self) -> std::process::Output {
        client()
            .args(["run", "--insecure", "partner-b", "--connect-attempts", "1"])
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_header_only_split_fails_check_data_and_run_with_the_same_sentence() {
    let p = Partner::new(|s| s);
    let header = std::fs::read_to_string(p.file("test/accounts.csv")).unwrap();
    let header = header.lines().next().unwrap().to_owned() + "\n";
    std::fs::write(p.file("test/accounts.csv"), header).unwrap();
    let sentence = format!(
        "{}: split 'test' has no usable rows: the file has a header but no data rows",
        p.file("test/accounts.csv").display()
    );

    let check = p.check_data(false);
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end(), format!("error: {sentence}"));
    // The report is still printed, so the operator sees the details.
    assert!(text(&check.stdout).contains("== split 'test'"));

    p.assert_run_fails_with(&sentence);
}

#[test]
fn a_numeric_column_without_one_number_fails_check_data_and_run() {
    let p = Partner::new(|s| s);
    let rel = "train/accounts.csv";
    let rows = std::fs::read_to_string(p.file(rel))
        .unwrap()
        .lines()
        .count();
    for line in 2..=rows {
        p.set_cell(rel, line, "tenure", "N/A");
    }
    let sentence = format!(
        "{}: column 'tenure' has no usable value in split 'train': none of its {} non-blank cells is a usable number (unparseable, too large or out of range), e.g. line 2: \"N/A\"",
        p.file(rel).display(),
        rows - 1
    );
    let check = p.check_data(true);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(text(&check.stderr).trim_end(), format!("error: {sentence}"));
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(v[0]["problems"][0], sentence.as_str());
    assert_eq!(v[1]["problems"].as_array().unwrap().len(), 0);

    p.assert_run_fails_with(&sentence);
}

#[test]
fn a_1e300_cell_is_reported_with_file_line_and_column_and_imputed() {
    let p = Partner::new(|s| s);
    p.set_cell("train/accounts.csv", 5, "tenure", "1e300");
    let out = p.check_data(false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("numbers of magnitude above 1e15, imputed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}:5: column 'tenure': \"1e300\"",
            p.file("train/accounts.csv").display()
        )),
        "{stdout}"
    );
}

#[test]
fn declared_bounds_clip_and_are_reported_with_file_and_line() {
    let p = Partner::new(|s| {
        s.replace(
            "name = \"tenure\"\ntype = \"numeric\"\nimpute = \"mean\"",
            "name = \"tenure\"\ntype = \"numeric\"\nimpute = \"mean\"\nmin = 0\nmax = 72",
        )
    });
    p.set_cell("train/accounts.csv", 7, "tenure", "400");
    let out = p.check_data(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let issues = v[0]["report"]["issues"].as_array().unwrap();
    let clipped = issues
        .iter()
        .find(|i| i["reason"] == "out_of_range_clipped")
        .unwrap_or_else(|| panic!("{issues:?}"));
    assert_eq!(clipped["count"], 1);
    assert_eq!(clipped["examples"][0]["line"], 7);
    assert_eq!(clipped["examples"][0]["column"], "tenure");
    assert_eq!(clipped["examples"][0]["value"], "400");
    let tenure = v[0]["report"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tenure")
        .unwrap();
    assert_eq!(tenure["out_of_range"], 1);
}

#[test]
fn crlf_exports_report_the_same_lines_as_lf_exports() {
    let lf = Partner::new(|s| s);
    let crlf = Partner::new(|s| s);
    for split in ["train", "test"] {
        for file in ["accounts.csv", "services.csv"] {
            let rel = format!("{split}/{file}");
            let text = std::fs::read_to_string(crlf.file(&rel)).unwrap();
            std::fs::write(crlf.file(&rel), text.replace('\n', "\r\n")).unwrap();
        }
    }
    let examples = |p: &Partner| -> Vec<(String, u64)> {
        let out = p.check_data(true);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut all = Vec::new();
        for split in v.as_array().unwrap() {
            for issue in split["report"]["issues"].as_array().unwrap() {
                for e in issue["examples"].as_array().unwrap() {
                    let file = e["file"].as_str().unwrap();
                    let name = file.rsplit("data/").next().unwrap().to_owned();
                    all.push((name, e["line"].as_u64().unwrap()));
                }
            }
        }
        all
    };
    let (a, b) = (examples(&lf), examples(&crlf));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn check_data_exits_quietly_when_stdout_is_closed() {
    let mut child = spawn_piped(&mut check_data_partner_a());
    // Like `| head -n 0`: the reader is gone before the client has written anything
    // (it is still loading the data), so its first write meets a closed pipe.
    drop(child.stdout.take());
    let stderr = exits_quietly(child);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn check_data_exits_quietly_after_head_reads_the_first_line() {
    use std::io::{BufRead, BufReader};
    let mut child = spawn_piped(&mut check_data_partner_a());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "== split 'train'\n");
    exits_quietly(child);
}

#[test]
fn privacy_commands_exit_quietly_when_stdout_is_closed() {
    let mut child = spawn_piped(client().args([
        "privacy",
        "cost",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
    ]));
    // The reader is gone before the accountant has finished.
    drop(child.stdout.take());
    exits_quietly(child);
}
