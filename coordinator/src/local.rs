//! `fedprofile-coordinator local`: a whole federation on one machine.
//!
//! From a small federation file it makes a development CA and certificates in
//! `OUT/certs`, writes the coordinator's config and one client config per
//! partner into `OUT`, starts the coordinator (this executable, `serve --run`)
//! on `127.0.0.1` with an OS-assigned port and one `fedprofile-client run` per
//! partner, shows the coordinator's progress lines, and stops everything it
//! started when the run ends, fails, or on Ctrl-C. The outputs stay in `OUT`:
//! `model.json`, `metrics.csv`, `summary.json`, `logs/`, and under record-level
//! DP `ledgers/` (verified at the end, and costed before anything runs).
//!
//! ```toml
//! run = "run.toml"                 # the run file (relative to this file); --run overrides it
//!
//! [coordinator]                    # optional
//! max_message_bytes = 16777216     # largest gRPC message
//! startup_timeout_secs = 30        # how long the coordinator may take to listen
//! run_timeout_secs = 3600          # the whole run, after which everything is stopped
//!
//! [[partner]]                      # a partner with its own client config ...
//! name = "partner-a"               # its id (certificate CN, log and ledger file names)
//! config = "clients/partner-a.toml"
//!
//! [[partner]]                      # ... or a data folder and a schema
//! name = "partner-b"
//! data_dir = "data/partner-b"
//! schema = "schema.toml"
//! epsilon = 1.0                    # optional: a [privacy] budget (delta 1e-5 unless given)
//! ```
//!
//! A partner's own config keeps its splits, `[connect]` and `[privacy]`
//! settings; the launcher replaces its `[tls]` files with `OUT/certs`, its
//! ledger with `OUT/ledgers/<name>.jsonl`, and passes the coordinator's address.
//! The coordinator never reads partner data: this module only spawns processes.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fedprofile_config::run::{PrivacyMode, RunConfig};
use serde::Deserialize;

use crate::certs::{self, CertError};

/// What `local` was asked to do.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The federation file.
    pub federation: PathBuf,
    /// A run file overriding the federation file's `run`.
    pub run: Option<PathBuf>,
    /// The output folder.
    pub out: PathBuf,
    /// The `fedprofile-client` executable (default: next to this one).
    pub client_bin: Option<PathBuf>,
}

/// Why a local federation did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The federation file, or a partner's config, is wrong.
    #[error("{path}: {field}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field (dotted).
        field: String,
        /// What is wrong, as a sentence.
        problem: String,
    },
    /// A file or folder could not be read or written.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// "read", "write", "create".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The development certificates could not be made.
    #[error("certificates in OUT/certs: {0}")]
    Certs(#[from] CertError),
    /// An executable could not be found or started.
    #[error("cannot start '{program}': {problem}")]
    Start {
        /// The executable.
        program: PathBuf,
        /// Why.
        problem: String,
    },
    /// A process failed; `tail` is the end of its log.
    #[error("{what} ({status}); the end of {log}:\n{tail}")]
    Failed {
        /// Which process, as a phrase.
        what: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The run file is wrong.
    #[error(transparent)]
    Run(#[from] fedprofile_config::ConfigError),
    /// A step run with the client binary (privacy cost, ledger verify) failed.
    #[error("{0} failed; see the lines above")]
    Step(String),
    /// A bounded wait ran out.
    #[error("{0}")]
    TimedOut(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted: stopped the coordinator and the client nodes")]
    Interrupted,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    run: Option<PathBuf>,
    #[serde(default)]
    coordinator: RawCoordinator,
    #[serde(default)]
    partner: Vec<RawPartner>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCoordinator {
    max_message_bytes: usize,
    startup_timeout_secs: u64,
    run_timeout_secs: u64,
}

impl Default for RawCoordinator {
    fn default() -> Self {
        RawCoordinator {
            max_message_bytes: 16 * 1024 * 1024,
            startup_timeout_secs: 30,
            run_timeout_secs: 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    name: String,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    schema: Option<PathBuf>,
    epsilon: Option<f64>,
    delta: Option<f64>,
}

/// One partner: its id and the client config the launcher writes for it.
#[derive(Debug, Clone)]
struct Partner {
    name: String,
    config: toml::Table,
}

/// A validated federation file.
#[derive(Debug)]
struct Federation {
    /// The run file, when the federation file names one.
    run: Option<PathBuf>,
    coordinator: RawCoordinator,
    partners: Vec<Partner>,
}

fn invalid(path: &Path, field: impl Into<String>, problem: impl Into<String>) -> LocalError {
    LocalError::Invalid {
        path: path.to_path_buf(),
        field: field.into(),
        problem: problem.into(),
    }
}

fn read(path: &Path) -> Result<String, LocalError> {
    fs::read_to_string(path).map_err(|source| LocalError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), LocalError> {
    fs::write(path, text).map_err(|source| LocalError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), LocalError> {
    fs::create_dir_all(path).map_err(|source| LocalError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })
}

/// The folder of `path`, absolute (the written configs live elsewhere).
fn base_dir(path: &Path) -> PathBuf {
    let base = match fedprofile_config::base_dir(path) {
        b if b.as_os_str().is_empty() => Path::new("."),
        b => b,
    };
    std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf())
}

fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.display().to_string())
}

impl Federation {
    fn from_path(path: &Path, out: &Path) -> Result<Federation, LocalError> {
        let raw: RawFederation =
            toml::from_str(&read(path)?).map_err(|e| invalid(path, "toml", e.message()))?;
        let base = base_dir(path);
        if raw.partner.is_empty() {
            return Err(invalid(
                path,
                "partner",
                "no partners: add a [[partner]] with a name and a config (or data_dir and schema)",
            ));
        }
        if raw.coordinator.startup_timeout_secs == 0 || raw.coordinator.run_timeout_secs == 0 {
            return Err(invalid(
                path,
                "coordinator",
                "timeouts must be at least 1 s",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut partners = Vec::new();
        for (i, p) in raw.partner.into_iter().enumerate() {
            let field = |f: &str| format!("partner[{i}].{f}");
            let ok = !p.name.is_empty()
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(invalid(
                    path,
                    field("name"),
                    format!(
                        "'{}' is not a partner id (use letters, digits, '-', '_', '.')",
                        p.name
                    ),
                ));
            }
            if !seen.insert(p.name.clone()) {
                return Err(invalid(
                    path,
                    field("name"),
                    format!("'{}' is named twice", p.name),
                ));
            }
            let config = partner_config(path, &base, &field, &p, out)?;
            partners.push(Partner {
                name: p.name,
                config,
            });
        }
        Ok(Federation {
            run: raw.run.map(|r| base.join(r)),
            coordinator: raw.coordinator,
            partners,
        })
    }
}

/// The client config the launcher writes for a partner: its own config (paths
/// made absolute) or one made from `data_dir` and `schema`, with the launcher's
/// certificates and ledger.
fn partner_config(
    path: &Path,
    base: &Path,
    field: &dyn Fn(&str) -> String,
    p: &RawPartner,
    out: &Path,
) -> Result<toml::Table, LocalError> {
    let mut table = match (&p.config, &p.data_dir, &p.schema) {
        (Some(config), None, None) => {
            let config = base.join(config);
            if !config.is_file() {
                return Err(invalid(
                    path,
                    field("config"),
                    format!("'{}' is not a file", config.display()),
                ));
            }
            let mut table: toml::Table = toml::from_str(&read(&config)?)
                .map_err(|e| invalid(&config, "toml", e.message()))?;
            let own = base_dir(&config);
            for key in ["data_dir", "schema"] {
                let value = table
                    .get(key)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| invalid(&config, key, "missing (a path)"))?;
                let absolute = own.join(value);
                table.insert(key.into(), path_value(&absolute));
            }
            table
        }
        (None, Some(data_dir), Some(schema)) => {
            let mut table = toml::Table::new();
            table.insert("data_dir".into(), path_value(&base.join(data_dir)));
            table.insert("schema".into(), path_value(&base.join(schema)));
            table
        }
        _ => {
            return Err(invalid(
                path,
                field("config"),
                "give either `config` (a client config) or both `data_dir` and `schema`",
            ));
        }
    };
    if let Some(epsilon) = p.epsilon {
        let mut privacy = toml::Table::new();
        privacy.insert("epsilon".into(), toml::Value::Float(epsilon));
        privacy.insert("delta".into(), toml::Value::Float(p.delta.unwrap_or(1e-5)));
        table.insert("privacy".into(), toml::Value::Table(privacy));
    }
    if let Some(toml::Value::Table(privacy)) = table.get_mut("privacy") {
        let ledger = out.join("ledgers").join(format!("{}.jsonl", p.name));
        privacy.insert("ledger".into(), path_value(&ledger));
    }
    // The launcher passes the real address with --coordinator.
    table.insert(
        "coordinator".into(),
        toml::Value::String("https://localhost:50051".into()),
    );
    let certs = out.join("certs");
    let mut tls = toml::Table::new();
    tls.insert("ca_cert".into(), path_value(&certs::ca_cert_path(&certs)));
    tls.insert(
        "cert".into(),
        path_value(&certs::cert_path(&certs, &p.name)),
    );
    tls.insert("key".into(), path_value(&certs::key_path(&certs, &p.name)));
    tls.insert(
        "server_name".into(),
        toml::Value::String(SERVER_NAME.into()),
    );
    table.insert("tls".into(), toml::Value::Table(tls));
    Ok(table)
}

const SERVER_NAME: &str = "coordinator";
const POLL: Duration = Duration::from_millis(100);
/// How long the client nodes may take to exit on their own after the run.
const CLIENT_EXIT_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the coordinator's verdict after a client failed.
const VERDICT_GRACE: Duration = Duration::from_secs(5);

/// The processes the launcher started; dropping it kills and reaps the ones
/// still running (success, failure, Ctrl-C alike).
struct Children {
    procs: Vec<(String, Child)>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// The last `n` lines of a log file (or a note that it cannot be read).
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

fn log_file(path: &Path) -> Result<fs::File, LocalError> {
    fs::File::create(path).map_err(|source| LocalError::Io {
        action: "create",
        path: path.to_path_buf(),
        source,
    })
}

fn spawn(program: &Path, cmd: &mut Command) -> Result<Child, LocalError> {
    cmd.spawn().map_err(|e| LocalError::Start {
        program: program.to_path_buf(),
        problem: e.to_string(),
    })
}

/// Runs a short command of the client binary with inherited output; fails
/// naming what it was doing.
fn run_client_tool(client: &Path, args: &[&std::ffi::OsStr], what: &str) -> Result<(), LocalError> {
    let status = Command::new(client)
        .args(args)
        .status()
        .map_err(|e| LocalError::Start {
            program: client.to_path_buf(),
            problem: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(LocalError::Step(format!("{what} ({status})")))
    }
}

/// Sets a flag on Ctrl-C or SIGTERM (a background thread; it ends with the process).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(crate::cli::shutdown_signal());
        set.store(true, Ordering::SeqCst);
    });
    flag
}

fn client_binary(options: &LocalOptions) -> Result<PathBuf, LocalError> {
    let path = match &options.client_bin {
        Some(path) => path.clone(),
        None => {
            let me = std::env::current_exe().map_err(|e| LocalError::Start {
                program: "fedprofile-coordinator".into(),
                problem: format!("cannot find this executable ({e})"),
            })?;
            me.with_file_name(format!("fedprofile-client{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(LocalError::Start {
            program: path,
            problem: "no such file (build fedprofile-client next to fedprofile-coordinator, or pass --client-bin)".into(),
        })
    }
}

/// Runs the federation to the end of its run; the outputs are left in `options.out`.
pub fn run(options: &LocalOptions) -> Result<(), LocalError> {
    let interrupted = interrupt_flag();
    create_dir(&options.out)?;
    let out = std::path::absolute(&options.out).map_err(|source| LocalError::Io {
        action: "resolve",
        path: options.out.clone(),
        source,
    })?;
    let federation = Federation::from_path(&options.federation, &out)?;
    let run_file = match (&options.run, &federation.run) {
        (Some(run), _) => std::path::absolute(run).unwrap_or_else(|_| run.clone()),
        (None, Some(run)) => run.clone(),
        (None, None) => {
            return Err(invalid(
                &options.federation,
                "run",
                "missing: name the run file (or pass --run)",
            ));
        }
    };
    let run = RunConfig::from_path(&run_file)?;
    let client = client_binary(options)?;
    let coordinator_bin = std::env::current_exe().map_err(|e| LocalError::Start {
        program: "fedprofile-coordinator".into(),
        problem: e.to_string(),
    })?;
    let names: Vec<String> = federation.partners.iter().map(|p| p.name.clone()).collect();
    if run.min_connected_to_start > names.len() {
        eprintln!(
            "warning: {}: clients.min_connected_to_start = {} but the federation has {} partners; the run will wait {} s and fail",
            run_file.display(),
            run.min_connected_to_start,
            names.len(),
            run.start_timeout.as_secs()
        );
    }

    let logs = out.join("logs");
    create_dir(&logs)?;
    // Each local run is a fresh federation: new ledgers (a real partner never deletes its ledger).
    let ledgers = out.join("ledgers");
    let _ = fs::remove_dir_all(&ledgers);
    create_dir(&ledgers)?;
    let clients_dir = out.join("clients");
    create_dir(&clients_dir)?;
    let mut configs = Vec::new();
    for p in &federation.partners {
        let path = clients_dir.join(format!("{}.toml", p.name));
        let text = toml::to_string(&p.config).map_err(|e| invalid(&path, "toml", e.to_string()))?;
        write(
            &path,
            &format!(
                "# Written by `fedprofile-coordinator local` for {}; the launcher passes --coordinator.\n{text}",
                p.name
            ),
        )?;
        configs.push(path);
    }

    if matches!(run.privacy, PrivacyMode::Record(_)) {
        println!(
            "== privacy: what this run will cost each partner, composed with its ledger (before anything runs)"
        );
        for (p, config) in federation.partners.iter().zip(&configs) {
            if p.config.contains_key("privacy") {
                run_client_tool(
                    &client,
                    &[
                        "privacy".as_ref(),
                        "cost".as_ref(),
                        "--run".as_ref(),
                        run_file.as_os_str(),
                        "--config".as_ref(),
                        config.as_os_str(),
                    ],
                    &format!("privacy cost for {}", p.name),
                )?;
            }
        }
    }

    let certs_dir = out.join("certs");
    println!(
        "== certificates (development CA) in {}",
        certs_dir.display()
    );
    certs::init_federation(&certs_dir, SERVER_NAME, &[], &names, 365)?;
    let coordinator_config = out.join("coordinator.toml");
    write(
        &coordinator_config,
        &format!(
            "# Written by `fedprofile-coordinator local`. Paths are relative to this file.\n\
             listen = \"127.0.0.1:0\"\nmax_message_bytes = {}\nstate_dir = \"state\"\n\n\
             [tls]\nca_cert = \"certs/ca.pem\"\ncert = \"certs/{SERVER_NAME}.pem\"\nkey = \"certs/{SERVER_NAME}.key\"\n",
            federation.coordinator.max_message_bytes
        ),
    )?;

    let mut children = Children { procs: Vec::new() };
    println!("== coordinator");
    let addr_file = out.join("coordinator.addr");
    let _ = fs::remove_file(&addr_file);
    let coordinator_log = logs.join("coordinator.log");
    let mut coordinator = spawn(
        &coordinator_bin,
        Command::new(&coordinator_bin)
            .arg("serve")
            .arg("--config")
            .arg(&coordinator_config)
            .arg("--run")
            .arg(&run_file)
            .arg("--out")
            .arg(&out)
            .arg("--state-dir")
            .arg(out.join("state"))
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .stdout(Stdio::piped())
            .stderr(log_file(&coordinator_log)?),
    )?;
    // Progress: the coordinator's lines, on our stdout and in logs/coordinator.out.
    let progress = coordinator.stdout.take().map(|stdout| {
        let mut copy = log_file(&logs.join("coordinator.out"));
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                if let Ok(file) = &mut copy {
                    let _ = writeln!(file, "{line}");
                }
            }
        })
    });
    children.procs.push(("coordinator".into(), coordinator));
    let coordinator_failed = |status: String| LocalError::Failed {
        what: "the coordinator stopped".into(),
        status,
        log: coordinator_log.clone(),
        tail: log_tail(&coordinator_log, 20),
    };

    let started = Instant::now();
    let startup = Duration::from_secs(federation.coordinator.startup_timeout_secs);
    let port = loop {
        if let Some(port) = fs::read_to_string(&addr_file)
            .ok()
            .and_then(|a| a.trim().rsplit(':').next()?.parse::<u16>().ok())
        {
            break port;
        }
        if let Ok(Some(status)) = children.procs[0].1.try_wait() {
            return Err(coordinator_failed(status.to_string()));
        }
        bounded(&interrupted, started, startup, || {
            format!(
                "the coordinator did not listen within {} s ([coordinator] startup_timeout_secs in {}); the end of {}:\n{}",
                startup.as_secs(),
                options.federation.display(),
                coordinator_log.display(),
                log_tail(&coordinator_log, 20)
            )
        })?;
        thread::sleep(POLL);
    };
    println!("   listening on 127.0.0.1:{port} (mutual TLS)");

    println!(
        "== client nodes: {} (configs in {})",
        names.join(" "),
        clients_dir.display()
    );
    let url = format!("https://localhost:{port}");
    for (name, config) in names.iter().zip(&configs) {
        let child = spawn(
            &client,
            Command::new(&client)
                .arg("run")
                .arg("--config")
                .arg(config)
                .arg("--coordinator")
                .arg(&url)
                .stdout(log_file(&logs.join(format!("{name}.out")))?)
                .stderr(log_file(&logs.join(format!("{name}.log")))?),
        )?;
        children.procs.push((name.clone(), child));
    }

    println!("== training");
    let limit = Duration::from_secs(federation.coordinator.run_timeout_secs);
    let status = supervise(&mut children, &interrupted, limit, &logs)?;
    if let Some(handle) = progress {
        let _ = handle.join();
    }
    if !status.success() {
        return Err(coordinator_failed(status.to_string()));
    }
    // The clients leave on their own once the run is over; bounded, then killed.
    let grace = Instant::now();
    while grace.elapsed() < CLIENT_EXIT_GRACE
        && children.procs[1..]
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
    {
        thread::sleep(POLL);
    }
    drop(children);

    println!(
        "== done: {}, {}, {} (logs in {})",
        out.join("model.json").display(),
        out.join("metrics.csv").display(),
        out.join("summary.json").display(),
        logs.display()
    );
    println!("{}", read(&out.join("summary.json"))?.trim_end());
    let kept: Vec<(String, PathBuf)> = names
        .iter()
        .map(|n| (n.clone(), ledgers.join(format!("{n}.jsonl"))))
        .filter(|(_, l)| l.is_file())
        .collect();
    if !kept.is_empty() {
        println!("== privacy: each partner's ledger, verified");
        for (name, ledger) in kept {
            run_client_tool(
                &client,
                &[
                    "privacy".as_ref(),
                    "ledger".as_ref(),
                    "verify".as_ref(),
                    ledger.as_os_str(),
                ],
                &format!("the ledger of {name}"),
            )?;
        }
    }
    Ok(())
}

/// Waits, bounded by `limit`, for the coordinator (`children.procs[0]`) to
/// exit, and returns its status. A client node that fails while the
/// coordinator runs stops the federation (unless the coordinator finishes
/// anyway within a few seconds), with the end of its log.
fn supervise(
    children: &mut Children,
    interrupted: &AtomicBool,
    limit: Duration,
    logs: &Path,
) -> Result<ExitStatus, LocalError> {
    let started = Instant::now();
    let mut failed: Option<(String, ExitStatus, Instant)> = None;
    loop {
        if let Ok(Some(status)) = children.procs[0].1.try_wait() {
            if let Some((name, client_status, _)) = &failed
                && !status.success()
            {
                return Err(client_failure(logs, name, client_status));
            }
            return Ok(status);
        }
        bounded(interrupted, started, limit, || {
            format!(
                "the run did not end within {} s ([coordinator] run_timeout_secs); stopped everything (logs in {})",
                limit.as_secs(),
                logs.display()
            )
        })?;
        match &failed {
            Some((name, status, at)) => {
                if at.elapsed() > VERDICT_GRACE {
                    return Err(client_failure(logs, name, status));
                }
            }
            None => {
                for (name, child) in &mut children.procs[1..] {
                    if let Ok(Some(status)) = child.try_wait()
                        && !status.success()
                    {
                        failed = Some((name.clone(), status, Instant::now()));
                        break;
                    }
                }
            }
        }
        thread::sleep(POLL);
    }
}

/// One step of a bounded wait: fails on Ctrl-C, or once `limit` has passed
/// since `started` (with the message `timed_out` makes).
fn bounded(
    interrupted: &AtomicBool,
    started: Instant,
    limit: Duration,
    timed_out: impl FnOnce() -> String,
) -> Result<(), LocalError> {
    if interrupted.load(Ordering::SeqCst) {
        Err(LocalError::Interrupted)
    } else if started.elapsed() > limit {
        Err(LocalError::TimedOut(timed_out()))
    } else {
        Ok(())
    }
}

fn client_failure(logs: &Path, name: &str, status: &ExitStatus) -> LocalError {
    let log = logs.join(format!("{name}.log"));
    LocalError::Failed {
        what: format!("the client node of {name} exited before the run ended"),
        status: status.to_string(),
        tail: log_tail(&log, 20),
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn federation(dir: &Path, text: &str) -> Result<Federation, LocalError> {
        let path = dir.join("federation.toml");
        fs::write(&path, text).expect("write federation.toml");
        Federation::from_path(&path, &dir.join("out"))
    }

    fn problem(result: Result<Federation, LocalError>) -> String {
        match result {
            Ok(f) => panic!("accepted: {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_partner_made_of_a_data_folder_gets_the_launchers_certificates_and_ledger() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = federation(
            dir.path(),
            "run = \"run.toml\"\n[[partner]]\nname = \"acme\"\ndata_dir = \"acme\"\nschema = \"schema.toml\"\nepsilon = 2.0\n",
        )
        .expect("a valid federation");
        assert_eq!(f.run, Some(dir.path().join("run.toml")));
        let config = &f.partners[0].config;
        assert_eq!(
            config["data_dir"].as_str(),
            Some(dir.path().join("acme").to_str().expect("utf-8"))
        );
        let out = dir.path().join("out");
        let tls = config["tls"].as_table().expect("[tls]");
        assert_eq!(
            tls["cert"].as_str(),
            Some(out.join("certs/acme.pem").to_str().expect("utf-8"))
        );
        let privacy = config["privacy"].as_table().expect("[privacy]");
        assert_eq!(privacy["epsilon"].as_float(), Some(2.0));
        assert_eq!(privacy["delta"].as_float(), Some(1e-5));
        assert_eq!(
            privacy["ledger"].as_str(),
            Some(out.join("ledgers/acme.jsonl").to_str().expect("utf-8"))
        );
    }

    #[test]
    fn a_partners_own_config_keeps_its_settings_with_paths_from_its_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("clients")).expect("mkdir");
        fs::write(
            dir.path().join("clients/a.toml"),
            "coordinator = \"https://x:1\"\ndata_dir = \"../data/a\"\nschema = \"../s.toml\"\ntest_split = \"holdout\"\n[tls]\nca_cert = \"old.pem\"\ncert = \"old.pem\"\nkey = \"old.key\"\n",
        )
        .expect("write the client config");
        let f = federation(
            dir.path(),
            "run = \"r.toml\"\n[[partner]]\nname = \"a\"\nconfig = \"clients/a.toml\"\n",
        )
        .expect("a valid federation");
        let config = &f.partners[0].config;
        assert_eq!(config["test_split"].as_str(), Some("holdout"));
        let data = PathBuf::from(config["data_dir"].as_str().expect("data_dir"));
        assert_eq!(data, dir.path().join("clients").join("../data/a"));
        assert!(
            !config["tls"]["cert"]
                .as_str()
                .expect("cert")
                .contains("old")
        );
        assert!(config.get("privacy").is_none());
    }

    #[test]
    fn federation_mistakes_are_named_by_file_and_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |text: &str| problem(federation(dir.path(), text));
        let missing = p("run = \"r.toml\"\n[[partner]]\nname = \"a\"\nconfig = \"nope.toml\"\n");
        assert!(
            missing.contains("federation.toml: partner[0].config:")
                && missing.contains("nope.toml' is not a file"),
            "{missing}"
        );
        let twice = p(
            "run = \"r.toml\"\n[[partner]]\nname = \"a\"\ndata_dir = \"d\"\nschema = \"s\"\n[[partner]]\nname = \"a\"\ndata_dir = \"d\"\nschema = \"s\"\n",
        );
        assert!(
            twice.contains("partner[1].name: 'a' is named twice"),
            "{twice}"
        );
        let neither = p("run = \"r.toml\"\n[[partner]]\nname = \"a\"\ndata_dir = \"d\"\n");
        assert!(
            neither.contains("partner[0].config: give either"),
            "{neither}"
        );
        let bad_name =
            p("run = \"r.toml\"\n[[partner]]\nname = \"a b\"\ndata_dir = \"d\"\nschema = \"s\"\n");
        assert!(
            bad_name.contains("partner[0].name: 'a b' is not a partner id"),
            "{bad_name}"
        );
        let none = p("run = \"r.toml\"\n");
        assert!(none.contains("partner: no partners"), "{none}");
    }
}
