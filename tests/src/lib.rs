//! A sandbox for end-to-end tests: the real `fedprofile-coordinator` and
//! `fedprofile-client` binaries as processes, over mutual TLS on 127.0.0.1 with
//! OS-assigned ports. Every wait is bounded; every process is killed on drop.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test
//! executable (the coordinator and client packages have integration tests, so
//! cargo builds their binaries before any test runs).

pub mod in_process;
pub mod light;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The demo federation folder (data, schema).
pub fn demo_dir() -> PathBuf {
    repo_root().join("deploy/demo")
}

/// Path of a workspace binary built beside the running test.
///
/// `cargo test --workspace` builds the client with its `testutils` feature
/// (this crate's dev-dependency enables it), which the robust-aggregation tests
/// need; after a plain `cargo build --bins`, rebuild with
/// `cargo build --bins --features fedprofile-client/testutils`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable has a target folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so that cargo builds the binaries",
        path.display()
    );
    path
}

/// The partners of the Telco demo.
pub const PARTNERS: [&str; 4] = ["partner-a", "partner-b", "partner-c", "partner-d"];

/// Runs a command to completion with a time limit; panics with its output if it overruns.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes while waiting, so that a command that writes more than
    // a pipe holds (64 KiB) does not block and run into the limit.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "command {cmd:?} ran over {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A child process that is killed when dropped; its output goes to files.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Option<Child>,
    /// Captured stdout.
    pub stdout: PathBuf,
    /// Captured stderr.
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts `cmd`, sending stdout/stderr to `<dir>/<name>.out` / `.log`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.log"));
        let child = cmd
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Waits for exit, at most `limit`; panics with the logs on overrun.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("process already reaped");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "{} did not exit within {limit:?}\nstdout:\n{}\nstderr (tail):\n{}",
                    self.name,
                    self.read_stdout(),
                    tail(&self.read_stderr(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit, at most `limit`; panics with the logs unless it succeeded.
    pub fn wait_success(&mut self, limit: Duration) {
        let status = self.wait(limit);
        assert!(
            status.success(),
            "{} failed ({status})\nstderr (tail):\n{}",
            self.name,
            tail(&self.read_stderr(), 40)
        );
    }

    /// The OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGHUP (reload certificates).
    pub fn hup(&self) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .expect("kill -HUP");
            assert!(status.success());
        }
    }

    /// Waits until `pred(stdout)` holds, at most `limit`.
    pub fn wait_for_stdout(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !pred(&self.read_stdout()) {
            assert!(
                self.is_running(),
                "{} exited while waiting:\n{}\n{}",
                self.name,
                self.read_stdout(),
                tail(&self.read_stderr(), 30)
            );
            assert!(
                start.elapsed() < limit,
                "{}: condition not met within {limit:?}; stdout:\n{}",
                self.name,
                self.read_stdout()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// What it printed on stdout so far.
    pub fn read_stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn read_stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Kills the process now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Panics, showing `text`, unless it contains every one of `needles`.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

/// A CSV file with a header line: (header, rows); panics when it cannot be read.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let fields = |r: &csv::StringRecord| r.iter().map(str::to_string).collect();
    let header = fields(reader.headers().expect("a CSV header"));
    let rows = reader
        .records()
        .map(|r| fields(&r.expect("a CSV row")))
        .collect();
    (header, rows)
}

/// Panics unless the contributions of a scores row (`user_id, …, name1,
/// contribution1, …, other_contribution`, the first driver in field 4) add up
/// to `explained` (the model's raw output minus its reference score).
pub fn assert_contributions_add_up<S: AsRef<str>>(row: &[S], explained: f64) {
    let number = |i: usize| -> f64 {
        let cell = row[i].as_ref();
        cell.parse()
            .unwrap_or_else(|e| panic!("field {i} '{cell}' of a scores row: {e}"))
    };
    let last = row.len() - 1;
    let sum: f64 = (5..last).step_by(2).map(number).sum::<f64>() + number(last);
    assert!(
        (sum - explained).abs() < 1e-4,
        "contributions {sum} vs {explained} (output - reference)"
    );
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A federation in a temporary folder: certificates, configs, outputs, logs.
#[derive(Debug)]
pub struct Sandbox {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Creates the folder and a development CA with coordinator and partner certificates.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = Sandbox { dir };
        sandbox.make_ca("certs", &PARTNERS);
        sandbox
    }

    /// Path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `certs init` into `<sandbox>/<folder>`.
    pub fn make_ca(&self, folder: &str, clients: &[&str]) {
        let mut cmd = Command::new(bin("fedprofile-coordinator"));
        cmd.args(["certs", "init", "--dir"]).arg(self.path(folder));
        for c in clients {
            cmd.args(["--client", c]);
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(30));
        assert!(out.status.success(), "certs init failed: {out:?}");
    }

    /// Writes the coordinator config and a run file; returns (config, run) paths.
    pub fn write_coordinator(&self, run_toml: &str) -> (PathBuf, PathBuf) {
        self.write_coordinator_with(run_toml, "")
    }

    /// Same, with extra top-level config lines (e.g. `max_message_bytes = 4096`).
    pub fn write_coordinator_with(&self, run_toml: &str, extra: &str) -> (PathBuf, PathBuf) {
        let certs = self.path("certs");
        let config = self.path("coordinator.toml");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n{extra}\n[tls]\nca_cert = \"{0}/ca.pem\"\ncert = \"{0}/coordinator.pem\"\nkey = \"{0}/coordinator.key\"\n",
                certs.display()
            ),
        )
        .expect("write coordinator.toml");
        let run = self.path("run.toml");
        fs::write(&run, run_toml).expect("write run.toml");
        (config, run)
    }

    /// Writes a client config for `partner` (data from the demo) using the
    /// certificate `<certs>/<cert_name>.pem`.
    pub fn write_client(&self, partner: &str, certs: &str, cert_name: &str) -> PathBuf {
        self.write_client_with(partner, certs, cert_name, "")
    }

    /// Same, with extra TOML appended (e.g. a `[privacy]` section).
    pub fn write_client_with(
        &self,
        partner: &str,
        certs: &str,
        cert_name: &str,
        extra: &str,
    ) -> PathBuf {
        self.write_client_schema(partner, certs, cert_name, "schema.toml", extra)
    }

    /// Same, with another schema of `deploy/demo/` (e.g. `schema-value.toml`).
    pub fn write_client_schema(
        &self,
        partner: &str,
        certs: &str,
        cert_name: &str,
        schema: &str,
        extra: &str,
    ) -> PathBuf {
        let certs = self.path(certs);
        let demo = demo_dir();
        let stem = schema.trim_end_matches(".toml");
        let path = self.path(&format!("{partner}-{cert_name}-{stem}.toml"));
        fs::write(
            &path,
            format!(
                "coordinator = \"https://localhost:1\"\ndata_dir = \"{data}\"\nschema = \"{schema}\"\n\
                 [tls]\nca_cert = \"{certs}/ca.pem\"\ncert = \"{certs}/{cert_name}.pem\"\nkey = \"{certs}/{cert_name}.key\"\nserver_name = \"coordinator\"\n\
                 [connect]\nattempts = 20\ninitial_backoff_ms = 100\nmax_backoff_ms = 1000\n",
                data = demo.join("data").join(partner).display(),
                schema = demo.join(schema).display(),
                certs = certs.display(),
            ) + extra,
        )
        .expect("write client config");
        path
    }

    /// Writes the coordinator config and `run_toml` and starts the coordinator
    /// on them (see [`Sandbox::start_coordinator`]); returns it and its port.
    pub fn start_run(&self, run_toml: &str) -> (Proc, u16) {
        let (config, run) = self.write_coordinator(run_toml);
        self.start_coordinator(&config, &run, &[])
    }

    /// Starts the coordinator on an OS-assigned port; returns it and its port.
    pub fn start_coordinator(
        &self,
        config: &Path,
        run: &Path,
        env: &[(&str, &str)],
    ) -> (Proc, u16) {
        self.start_coordinator_with(config, Some(run), &[], env)
    }

    /// Starts the coordinator (`--run` optional, extra arguments) on an OS-assigned port.
    pub fn start_coordinator_with(
        &self,
        config: &Path,
        run: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Proc, u16) {
        let addr_file = self.path("coordinator.addr");
        let _ = fs::remove_file(&addr_file);
        let mut cmd = Command::new(bin("fedprofile-coordinator"));
        cmd.arg("serve").arg("--config").arg(config);
        if let Some(run) = run {
            cmd.arg("--run").arg(run);
        }
        cmd.args(extra)
            .arg("--out")
            .arg(self.path("out"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--addr-file")
            .arg(&addr_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("coordinator", &mut cmd, self.dir.path());
        let start = Instant::now();
        loop {
            if let Ok(text) = fs::read_to_string(&addr_file)
                && let Some(port) = text.trim().rsplit(':').next().and_then(|p| p.parse().ok())
            {
                return (proc, port);
            }
            assert!(
                proc.is_running(),
                "coordinator exited early:\n{}",
                proc.read_stderr()
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "coordinator did not write its address within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `serve` to completion on the sandbox's state folder (output to
    /// `<sandbox>/out2`, on 127.0.0.1:0, exiting once idle, bounded), with
    /// `extra` arguments: for checks of what the coordinator does at start.
    pub fn serve_until_idle(&self, config: &Path, extra: &[&str]) -> Output {
        let mut cmd = Command::new(bin("fedprofile-coordinator"));
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--out")
            .arg(self.path("out2"))
            .args(["--listen", "127.0.0.1:0", "--exit-when-idle"])
            .args(extra);
        run_bounded(&mut cmd, Duration::from_secs(60))
    }

    /// Starts a client node for `config` against the coordinator on `port`.
    pub fn start_client(&self, name: &str, config: &Path, port: u16, extra: &[&str]) -> Proc {
        let mut cmd = Command::new(bin("fedprofile-client"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .arg("--coordinator")
            .arg(format!("https://localhost:{port}"))
            .args(extra);
        Proc::spawn(name, &mut cmd, self.dir.path())
    }

    /// Starts a client node for each of `partners` (their demo data and
    /// certificates, no other settings) against the coordinator on `port`.
    pub fn start_clients(&self, partners: &[&str], port: u16, extra: &[&str]) -> Vec<Proc> {
        partners
            .iter()
            .map(|p| {
                let config = self.write_client(p, "certs", p);
                self.start_client(p, &config, port, extra)
            })
            .collect()
    }

    /// Starts a client node for each (partner, config) pair against the
    /// coordinator on `port`.
    pub fn start_configured(
        &self,
        partners: &[&str],
        configs: &[PathBuf],
        port: u16,
        extra: &[&str],
    ) -> Vec<Proc> {
        partners
            .iter()
            .zip(configs)
            .map(|(p, config)| self.start_client(p, config, port, extra))
            .collect()
    }

    /// The privacy ledger `<sandbox>/ledgers/<partner>.jsonl`.
    pub fn ledger(&self, partner: &str) -> PathBuf {
        self.path(&format!("ledgers/{partner}.jsonl"))
    }

    /// Writes a client config for `partner` with record-level DP: a budget of
    /// `epsilon` (δ 1e-5) charged to its [`Sandbox::ledger`].
    pub fn write_dp_client(&self, partner: &str, epsilon: f64) -> PathBuf {
        let privacy = format!(
            "[privacy]\nepsilon = {epsilon}\ndelta = 1e-5\nledger = \"{}\"\n",
            self.ledger(partner).display()
        );
        self.write_client_with(partner, "certs", partner, &privacy)
    }

    /// Writes a [`Sandbox::write_dp_client`] config of budget `epsilon` for each
    /// of [`PARTNERS`] and starts their nodes against the coordinator on `port`
    /// with `extra` arguments; returns the configs and the nodes.
    pub fn start_dp_clients(
        &self,
        epsilon: f64,
        port: u16,
        extra: &[&str],
    ) -> (Vec<PathBuf>, Vec<Proc>) {
        let configs: Vec<PathBuf> = PARTNERS
            .iter()
            .map(|p| self.write_dp_client(p, epsilon))
            .collect();
        let nodes = self.start_configured(&PARTNERS, &configs, port, extra);
        (configs, nodes)
    }

    /// Restarts the coordinator from its state on the address the clients know
    /// (`127.0.0.1:<port>`, no run file), exiting once the run is over.
    pub fn restart_coordinator(&self, config: &Path, port: u16) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        let extra = ["--exit-when-idle", "--listen", &listen];
        self.start_coordinator_with(config, None, &extra, &[]).0
    }

    /// Opens a lightweight session (see [`light`]) as the certificate
    /// `<certs>/<name>.pem` on the coordinator at `port`; panics on failure.
    pub async fn open_light(&self, port: u16, name: &str) -> light::LightSession {
        light::open_session(port, self.client_tls(name))
            .await
            .unwrap_or_else(|e| panic!("{name} cannot open a session: {e}"))
    }

    /// mTLS client settings for the certificate `<certs>/<name>.pem`.
    pub fn client_tls(&self, name: &str) -> tonic::transport::ClientTlsConfig {
        let files = fedprofile_protocol::tls::TlsFiles {
            ca_cert: self.path("certs/ca.pem"),
            cert: self.path(&format!("certs/{name}.pem")),
            key: self.path(&format!("certs/{name}.key")),
        };
        fedprofile_protocol::tls::client_config(&files, "coordinator").expect("client tls")
    }

    /// The metrics address the coordinator wrote (config `metrics_listen`).
    pub fn metrics_addr(&self) -> String {
        fs::read_to_string(self.path("coordinator.metrics"))
            .expect("metrics address file")
            .trim()
            .to_string()
    }

    /// `certs issue ARGS… --dir <sandbox>/certs` (e.g. `--name x --expired`);
    /// panics unless it succeeds.
    pub fn issue(&self, args: &[&str]) {
        let out = run_bounded(
            Command::new(bin("fedprofile-coordinator"))
                .args(["certs", "issue"])
                .args(args)
                .arg("--dir")
                .arg(self.path("certs")),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "certs issue {args:?} failed: {out:?}");
    }

    /// Starts a coordinator that waits for 99 clients, so that nothing but
    /// handshakes happen; returns it and its port.
    pub fn start_idle_coordinator(&self) -> (Proc, u16) {
        self.start_run(&telco_run(1, 1, 99, 120.0))
    }

    /// Writes `<name>-operator.toml` for `port`, issuing an operator certificate
    /// `name` first when `issue` (else `name` must exist, e.g. a partner's).
    pub fn operator_config(&self, name: &str, port: u16, issue: bool) -> PathBuf {
        if issue {
            self.issue(&["--operator", "--name", name]);
        }
        let certs = self.path("certs");
        let path = self.path(&format!("{name}-operator.toml"));
        fs::write(
            &path,
            format!(
                "coordinator = \"https://localhost:{port}\"\n[tls]\nca_cert = \"{0}/ca.pem\"\ncert = \"{0}/{name}.pem\"\nkey = \"{0}/{name}.key\"\nserver_name = \"coordinator\"\n",
                certs.display()
            ),
        )
        .expect("operator config");
        path
    }

    /// Runs `fedprofile-coordinator ARGS… --operator-config CONFIG` (bounded).
    pub fn operator(&self, config: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("fedprofile-coordinator"));
        cmd.args(args).arg("--operator-config").arg(config);
        run_bounded(&mut cmd, Duration::from_secs(120))
    }

    /// Writes `toml` to `<sandbox>/name`, starts it as the operator of
    /// `config` (`run start`), waits for its end (`run watch`); returns its id
    /// and its `run status` and `run watch` texts.
    pub fn run_to_end(&self, config: &Path, name: &str, toml: &str) -> (String, String) {
        let path = self.path(name);
        fs::write(&path, toml).unwrap();
        let started = self.operator(config, &["run", "start", path.to_str().unwrap()]);
        assert!(started.status.success(), "{}", output_text(&started));
        let run_id = String::from_utf8_lossy(&started.stdout).trim().to_string();
        let watched = self.operator(config, &["run", "watch", &run_id]);
        assert!(watched.status.success(), "{}", output_text(&watched));
        let status = self.operator(config, &["run", "status", &run_id]);
        assert!(status.status.success(), "{}", output_text(&status));
        (run_id, output_text(&status) + &output_text(&watched))
    }

    /// `model show NAME --model-out OUT` as the operator of `config`; returns
    /// what it printed (it must succeed).
    pub fn show_model(&self, config: &Path, name: &str, out: &Path) -> String {
        let args = ["model", "show", name, "--model-out", out.to_str().unwrap()];
        let shown = self.operator(config, &args);
        assert!(shown.status.success(), "{}", output_text(&shown));
        output_text(&shown)
    }

    /// Reads `<out>/summary.json`.
    pub fn summary(&self) -> serde_json::Value {
        let text = fs::read_to_string(self.path("out/summary.json")).expect("summary.json");
        serde_json::from_str(&text).expect("summary.json parses")
    }
}

/// A Telco run of `rounds` rounds (three partners a round, all four connected
/// to start, `deadline_secs` a round) in a new sandbox, with partners a, b
/// and c as client nodes and partner-d as a lightweight session for the test
/// to script; returns the sandbox, the coordinator, the nodes and the session.
pub async fn start_three_and_light(
    rounds: u32,
    deadline_secs: f64,
) -> (Sandbox, Proc, Vec<Proc>, light::LightSession) {
    let sandbox = Sandbox::new();
    let (coordinator, port) = sandbox.start_run(&telco_run(rounds, 3, 4, deadline_secs));
    let honest = sandbox.start_clients(&PARTNERS[..3], port, &[]);
    let session = sandbox.open_light(port, PARTNERS[3]).await;
    (sandbox, coordinator, honest, session)
}

/// Runs `fedprofile-client ARGS…` to completion (bounded).
pub fn client_cmd(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("fedprofile-client"));
    cmd.args(args);
    run_bounded(&mut cmd, Duration::from_secs(120))
}

/// The entries of a privacy ledger (`privacy ledger show --json`); panics
/// unless the command succeeds.
pub fn ledger_entries(ledger: &Path) -> Vec<serde_json::Value> {
    let path = ledger.to_str().expect("a UTF-8 ledger path");
    let out = client_cmd(&["privacy", "ledger", "show", path, "--json"]);
    assert!(
        out.status.success(),
        "ledger show {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("ledger show prints JSON") {
        serde_json::Value::Array(entries) => entries,
        other => panic!("ledger show {path} printed {other}, not a list"),
    }
}

/// The cumulative ε of a ledger's last entry (0 for no entry).
pub fn spent_epsilon(entries: &[serde_json::Value]) -> f64 {
    entries.last().map_or(0.0, |e| {
        e["cumulative_epsilon"]
            .as_f64()
            .expect("cumulative_epsilon is a number")
    })
}

/// Runs `privacy ledger verify LEDGER` (bounded).
pub fn verify_ledger(ledger: &Path) -> Output {
    let path = ledger.to_str().expect("a UTF-8 ledger path");
    client_cmd(&["privacy", "ledger", "verify", path])
}

/// Runs `fedprofile-client ARGS… [FLAG PATH]…` to completion (bounded): each
/// path follows its flag (an empty flag: the path alone).
pub fn client_tool(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(bin("fedprofile-client"));
    cmd.args(args);
    for (flag, path) in paths {
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        cmd.arg(path);
    }
    run_bounded(&mut cmd, Duration::from_secs(60))
}

/// Waits for a federation to end: the coordinator within `limit`, then every
/// client within 30 s. Panics unless all of them succeeded; for a failed
/// coordinator the message is `why`, its stdout, the tail of its stderr and
/// the tail of every client's stderr.
pub fn finish_federation(coordinator: &mut Proc, clients: &mut [Proc], limit: Duration, why: &str) {
    let status = coordinator.wait(limit);
    if !status.success() {
        let clients: String = clients
            .iter()
            .map(|c| format!("{}:\n{}\n", c.name, tail(&c.read_stderr(), 30)))
            .collect();
        panic!(
            "{why} ({status}):\n{}\n{}\n{clients}",
            coordinator.read_stdout(),
            tail(&coordinator.read_stderr(), 30)
        );
    }
    for c in clients {
        c.wait_success(Duration::from_secs(30));
    }
}

/// What a command printed: its stdout followed by its stderr.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The whole HTTP/1.1 response (status line, headers and body) to a `GET path`
/// on `addr`, such as the coordinator's metrics endpoint; reads time out after 10 s.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// The JSON a successful command printed on stdout; panics, with the
/// command's stderr, if it failed or printed something else.
pub fn json_output(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// The run file used by the Telco tests: the demo's hyperparameters.
pub fn telco_run(
    rounds: u32,
    min_per_round: usize,
    min_connected: usize,
    deadline_secs: f64,
) -> String {
    format!(
        "[run]\nname = \"e2e\"\nrounds = {rounds}\n\
         [clients]\nfraction_per_round = 1.0\nmin_per_round = {min_per_round}\nmin_connected_to_start = {min_connected}\nstart_timeout_secs = 60\n\
         [round]\ndeadline_secs = {deadline_secs}\neval_every = 1\nmax_retries = 1\n\
         [training]\nlocal_epochs = 1\nbatch_size = 32\nlearning_rate = 0.1\n"
    )
}

/// One finished federation: its sandbox (outputs in `out/`) and its stdout.
pub struct Finished {
    /// The sandbox; the run's outputs are in `out/`.
    pub sandbox: Sandbox,
    /// The coordinator's stdout.
    pub stdout: String,
}

/// Runs `run_toml` with the four partners loading `schema` (a file of
/// `deploy/demo/`); `client_extra` is appended to every client config.
pub fn federate(schema: &str, run_toml: &str, client_extra: &str) -> Finished {
    let sandbox = Sandbox::new();
    let (mut coordinator, port) = sandbox.start_run(run_toml);
    let mut clients: Vec<_> = PARTNERS
        .iter()
        .map(|p| {
            let extra = client_extra.replace("{partner}", p);
            let cfg = sandbox.write_client_schema(p, "certs", p, schema, &extra);
            sandbox.start_client(p, &cfg, port, &[])
        })
        .collect();
    let limit = Duration::from_secs(300);
    finish_federation(&mut coordinator, &mut clients, limit, "coordinator failed");
    let stdout = coordinator.read_stdout();
    Finished { sandbox, stdout }
}
