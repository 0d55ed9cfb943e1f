//! The deployment files under `deploy/` (systemd units, Dockerfile, Kubernetes
//! manifests, example production configs, the deployment guide) are checked here,
//! without docker, kubectl or systemd: every YAML document parses and names itself,
//! pods run unprivileged with a read-only root filesystem, the coordinator's state and
//! TLS Secret are mounted where its config says, every command line (systemd
//! `ExecStart`, container `command`/`args`, Docker `CMD`, the guide's examples) is
//! accepted by the real command-line parsers, and the example configs hold the keys
//! the binaries read.
//!
//! Each check returns the list of problems it found, so that `checks_catch_real_mistakes`
//! can prove, on broken copies of the real files, that a mistake does not pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;
use serde_norway::Value as Yaml;

// ------------------------------------------------------------------ common

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Files below `dir` (recursively) whose name ends with one of `suffixes`, sorted.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && suffixes.iter().any(|s| name.ends_with(s))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What the real command-line parser of `binary` says about `args` (without argv[0]).
fn cli_accepts(binary: &str, args: &[String]) -> Result<(), String> {
    let argv = std::iter::once(binary.to_string()).chain(args.iter().cloned());
    let result = match binary {
        "fedprofile-coordinator" => {
            fedprofile_coordinator::cli::Cli::try_parse_from(argv).map(drop)
        }
        "fedprofile-client" => fedprofile_client::cli::Cli::try_parse_from(argv).map(drop),
        other => return Err(format!("unknown binary '{other}'")),
    };
    result.map_err(|e| {
        let text = e.to_string();
        text.lines().next().unwrap_or("").trim().to_string()
    })
}

/// The value following `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .or_else(|| {
            let prefix = format!("{flag}=");
            args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
        })
}

/// Checks a production command line: the right binary, subcommand and config file,
/// and accepted by the real parser.
fn check_command(
    what: &str,
    argv: &[String],
    binary: &str,
    subcommand: &[&str],
    config: &str,
    required_flags: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((program, args)) = argv.split_first() else {
        return vec![format!("{what}: empty command line")];
    };
    if !program.starts_with('/')
        || Path::new(program).file_name().and_then(|n| n.to_str()) != Some(binary)
    {
        problems.push(format!(
            "{what}: runs '{program}', expected an absolute path to {binary}"
        ));
    }
    let sub: Vec<&str> = args
        .iter()
        .take(subcommand.len())
        .map(String::as_str)
        .collect();
    if sub != subcommand {
        problems.push(format!(
            "{what}: subcommand {sub:?}, expected {subcommand:?}"
        ));
    }
    if flag_value(args, "--config") != Some(config) {
        problems.push(format!("{what}: expected --config {config}, got {args:?}"));
    }
    for flag in required_flags {
        if !args.iter().any(|a| a == flag) {
            problems.push(format!("{what}: missing {flag}"));
        }
    }
    if let Err(e) = cli_accepts(binary, args) {
        problems.push(format!("{what}: {binary} rejects {args:?}: {e}"));
    }
    problems
}

const COORDINATOR_CONFIG: &str = "/etc/fedprofile/coordinator.toml";
const CLIENT_CONFIG: &str = "/etc/fedprofile/client.toml";
const COORDINATOR_STATE: &str = "/var/lib/fedprofile";
const CLIENT_STATE: &str = "/var/lib/fedprofile-client";
const TLS_DIR: &str = "/etc/fedprofile/tls";

// ------------------------------------------------------------------ TOML configs

fn parse_toml(what: &str, text: &str) -> Result<toml::Table, String> {
    text.parse::<toml::Table>()
        .map_err(|e| format!("{what}: not TOML: {}", e.to_string().replace('\n', " ")))
}

/// Keys of `table` (or of its sub-table `section`) outside `allowed`, and `required` keys missing.
fn check_keys(
    what: &str,
    table: &toml::Table,
    allowed: &[&str],
    required: &[&str],
    problems: &mut Vec<String>,
) {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            problems.push(format!(
                "{what}: unknown key '{key}' (the binary refuses unknown keys)"
            ));
        }
    }
    for key in required {
        if !table.contains_key(*key) {
            problems.push(format!("{what}: missing key '{key}'"));
        }
    }
}

/// A type a config value must have.
trait KeyType {
    /// What the value must be, for the problem's message.
    const MUST_BE: &'static str;
    /// The value as this type, or none.
    fn pick(value: &toml::Value) -> Option<&Self>;
}

impl KeyType for toml::Table {
    const MUST_BE: &'static str = "a table";
    fn pick(value: &toml::Value) -> Option<&Self> {
        value.as_table()
    }
}

impl KeyType for str {
    const MUST_BE: &'static str = "a non-empty string";
    fn pick(value: &toml::Value) -> Option<&Self> {
        value.as_str().filter(|s| !s.is_empty())
    }
}

/// The value of `key` as a `T`: none when it is absent, and none with a problem
/// when it is there as something else.
fn typed_key<'a, T: KeyType + ?Sized>(
    what: &str,
    table: &'a toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<&'a T> {
    let value = table.get(key)?;
    let picked = T::pick(value);
    if picked.is_none() {
        problems.push(format!(
            "{what}: '{key}' must be {}, got {value}",
            T::MUST_BE
        ));
    }
    picked
}

fn absolute_path_key<'a>(
    what: &str,
    table: &'a toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<&'a str> {
    let value = typed_key::<str>(what, table, key, problems)?;
    if !value.starts_with('/') {
        problems.push(format!(
            "{what}: '{key}' = '{value}' must be an absolute path in production"
        ));
    }
    Some(value)
}

fn socket_addr_key(
    what: &str,
    table: &toml::Table,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let value = typed_key::<str>(what, table, key, problems)?;
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(e) => {
            problems.push(format!(
                "{what}: '{key}' = '{value}' is not an address:port ({e})"
            ));
            None
        }
    }
}

fn https_url_key(what: &str, table: &toml::Table, key: &str, problems: &mut Vec<String>) {
    if let Some(url) = typed_key::<str>(what, table, key, problems) {
        let port_ok = url
            .strip_prefix("https://")
            .and_then(|rest| rest.rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            problems.push(format!(
                "{what}: '{key}' = '{url}' must be https://HOST:PORT (mutual TLS)"
            ));
        }
    }
}

/// The `[tls]` section of a config: `ca_cert`, `cert` and `key` required, `optional`
/// keys allowed, every file key a non-empty string (an absolute path when
/// `absolute`; `server_name` is not a file). Production is mutual TLS only.
fn check_tls(
    what: &str,
    table: &toml::Table,
    optional: &[&str],
    absolute: bool,
    problems: &mut Vec<String>,
) {
    let Some(tls) = typed_key::<toml::Table>(what, table, "tls", problems) else {
        problems.push(format!(
            "{what}: no [tls] section: production is mutual TLS only"
        ));
        return;
    };
    let what = format!("{what} [tls]");
    let required = ["ca_cert", "cert", "key"];
    let allowed: Vec<&str> = required.iter().chain(optional).copied().collect();
    check_keys(&what, tls, &allowed, &required, problems);
    for key in allowed.into_iter().filter(|k| *k != "server_name") {
        if absolute {
            absolute_path_key(&what, tls, key, problems);
        } else {
            typed_key::<str>(&what, tls, key, problems);
        }
    }
}

/// Where the metrics endpoint may listen.
#[derive(Clone, Copy, PartialEq)]
enum Metrics {
    /// Loopback only (a host install).
    Loopback,
    /// All interfaces on 9464, behind a NetworkPolicy (Kubernetes).
    AllInterfaces,
}

/// Parses a config, checks its top-level keys (`[allowed, required]`) and runs
/// `check` on it: the problems and the table (none when the text is not TOML).
fn check_config(
    what: &str,
    text: &str,
    [allowed, required]: &[&[&str]; 2],
    check: impl FnOnce(&toml::Table, &mut Vec<String>),
) -> (Vec<String>, Option<toml::Table>) {
    let table = match parse_toml(what, text) {
        Ok(t) => t,
        Err(e) => return (vec![e], None),
    };
    let mut problems = Vec::new();
    check_keys(what, &table, allowed, required, &mut problems);
    check(&table, &mut problems);
    (problems, Some(table))
}

/// Returns the problems and the parsed table of a coordinator config.
fn check_coordinator_config(
    what: &str,
    text: &str,
    metrics: Metrics,
) -> (Vec<String>, Option<toml::Table>) {
    check_config(
        what,
        text,
        &[
            &[
                "listen",
                "state_dir",
                "metrics_listen",
                "max_message_bytes",
                "tls",
            ],
            &["listen", "state_dir", "metrics_listen", "tls"],
        ],
        |table, problems| {
            if let Some(addr) = socket_addr_key(what, table, "listen", problems)
                && addr.port() != 50051
            {
                problems.push(format!(
                    "{what}: listen port {} (the deployment files expose 50051)",
                    addr.port()
                ));
            }
            if let Some(addr) = socket_addr_key(what, table, "metrics_listen", problems) {
                let ok = match metrics {
                    Metrics::Loopback => addr.ip().is_loopback(),
                    Metrics::AllInterfaces => addr.ip().is_unspecified() && addr.port() == 9464,
                };
                if !ok {
                    problems.push(format!(
                        "{what}: metrics_listen = {addr}: expected {}",
                        match metrics {
                            Metrics::Loopback => "a loopback address",
                            Metrics::AllInterfaces =>
                                "0.0.0.0:9464 (restricted by the NetworkPolicy)",
                        }
                    ));
                }
            }
            if let Some(state) = absolute_path_key(what, table, "state_dir", problems)
                && state != COORDINATOR_STATE
            {
                problems.push(format!(
                    "{what}: state_dir = '{state}', the units and manifests use {COORDINATOR_STATE}"
                ));
            }
            match table.get("max_message_bytes") {
                None => {}
                Some(toml::Value::Integer(n)) if *n > 0 => {}
                Some(other) => problems.push(format!(
                    "{what}: max_message_bytes must be a positive integer, got {other}"
                )),
            }
            check_tls(what, table, &["crl"], true, problems);
        },
    )
}

fn check_client_config(what: &str, text: &str) -> (Vec<String>, Option<toml::Table>) {
    check_config(
        what,
        text,
        &[
            &[
                "coordinator",
                "data_dir",
                "schema",
                "train_split",
                "test_split",
                "tls",
                "connect",
                "privacy",
            ],
            &["coordinator", "data_dir", "schema", "tls", "privacy"],
        ],
        |table, problems| {
            https_url_key(what, table, "coordinator", problems);
            absolute_path_key(what, table, "data_dir", problems);
            absolute_path_key(what, table, "schema", problems);
            check_tls(what, table, &["server_name"], true, problems);
            if let Some(privacy) = typed_key::<toml::Table>(what, table, "privacy", problems) {
                let p_what = format!("{what} [privacy]");
                check_keys(
                    &p_what,
                    privacy,
                    &["epsilon", "delta", "ledger", "require_dp"],
                    &["epsilon", "ledger"],
                    problems,
                );
                if let Some(ledger) = absolute_path_key(&p_what, privacy, "ledger", problems)
                    && !ledger.starts_with(&format!("{CLIENT_STATE}/"))
                {
                    problems.push(format!(
                    "{p_what}: ledger '{ledger}' must be on the persistent state dir {CLIENT_STATE}/"
                ));
                }
                match privacy.get("epsilon").and_then(toml::Value::as_float) {
                    Some(e) if e > 0.0 && e.is_finite() => {}
                    _ => problems.push(format!("{p_what}: epsilon must be a positive float")),
                }
                if let Some(d) = privacy.get("delta") {
                    match d.as_float() {
                        Some(d) if d > 0.0 && d < 1.0 => {}
                        _ => problems.push(format!("{p_what}: delta must be a float in (0, 1)")),
                    }
                }
            }
            if let Some(connect) = typed_key::<toml::Table>(what, table, "connect", problems) {
                let c_what = format!("{what} [connect]");
                check_keys(
                    &c_what,
                    connect,
                    &["attempts", "initial_backoff_ms", "max_backoff_ms"],
                    &[],
                    problems,
                );
                for (key, value) in connect {
                    if !matches!(value, toml::Value::Integer(n) if *n > 0) {
                        problems.push(format!("{c_what}: '{key}' must be a positive integer"));
                    }
                }
            }
        },
    )
}

fn check_operator_config(what: &str, text: &str) -> Vec<String> {
    let keys = ["coordinator", "tls"];
    check_config(what, text, &[&keys, &keys], |table, problems| {
        https_url_key(what, table, "coordinator", problems);
        check_tls(what, table, &["server_name"], false, problems);
    })
    .0
}

#[test]
fn example_configs_hold_the_keys_the_binaries_read() {
    let dir = root().join("deploy/config");
    let mut problems = Vec::new();
    let text = |name: &str| read(&dir.join(name));
    problems.extend(
        check_coordinator_config(
            "deploy/config/coordinator.toml",
            &text("coordinator.toml"),
            Metrics::Loopback,
        )
        .0,
    );
    problems.extend(check_client_config("deploy/config/client.toml", &text("client.toml")).0);
    problems.extend(check_operator_config(
        "deploy/config/operator.toml",
        &text("operator.toml"),
    ));
    // The run file goes through the coordinator's own validator.
    if let Err(e) = fedprofile_config::run::RunConfig::from_path(&dir.join("run.toml")) {
        problems.push(format!("deploy/config/run.toml: {e}"));
    }
    // Nothing else hides there unchecked.
    for file in files_under(&dir, &[""]) {
        let name = file.file_name().unwrap().to_str().unwrap();
        if ![
            "coordinator.toml",
            "client.toml",
            "operator.toml",
            "run.toml",
        ]
        .contains(&name)
        {
            problems.push(format!(
                "{}: not checked by tests/tests/deploy.rs",
                rel(&file)
            ));
        }
    }
    assert_no_problems("deploy/config", &problems);
}

// ------------------------------------------------------------------ systemd

type Unit = BTreeMap<String, Vec<(String, String)>>;

/// Parses a unit file: `[Section]` headers, `Key=Value` lines (keys may repeat),
/// `#`/`;` comments and backslash continuations; anything else is an error.
fn parse_unit(text: &str) -> Result<Unit, String> {
    let mut unit: Unit = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let mut line = raw.trim().to_string();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => {
                    line.push(' ');
                    line.push_str(next.trim());
                }
                None => {
                    return Err(format!(
                        "line {}: continuation at the end of the file",
                        i + 1
                    ));
                }
            }
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: unterminated section header '{line}'", i + 1))?;
            if unit.contains_key(name) {
                return Err(format!("line {}: section [{name}] appears twice", i + 1));
            }
            unit.insert(name.to_string(), Vec::new());
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: neither a [Section] nor Key=Value: '{line}'",
                i + 1
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("line {}: bad key '{key}'", i + 1));
        }
        let Some(section) = &section else {
            return Err(format!("line {}: '{key}' before any [Section]", i + 1));
        };
        unit.get_mut(section)
            .unwrap()
            .push((key.to_string(), value.trim().to_string()));
    }
    Ok(unit)
}

fn unit_values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section)
        .map(|entries| {
            entries
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn yes(value: &str) -> bool {
    matches!(value, "yes" | "true" | "on" | "1")
}

struct UnitSpec {
    binary: &'static str,
    subcommand: &'static [&'static str],
    config: &'static str,
    required_flags: &'static [&'static str],
    state_dir: &'static str,
}

const COORDINATOR_UNIT: UnitSpec = UnitSpec {
    binary: "fedprofile-coordinator",
    subcommand: &["serve"],
    config: COORDINATOR_CONFIG,
    required_flags: &[],
    state_dir: COORDINATOR_STATE,
};

const CLIENT_UNIT: UnitSpec = UnitSpec {
    binary: "fedprofile-client",
    subcommand: &["run"],
    config: CLIENT_CONFIG,
    required_flags: &["--keep-running"],
    state_dir: CLIENT_STATE,
};

fn check_unit(what: &str, text: &str, spec: &UnitSpec) -> Vec<String> {
    let unit = match parse_unit(text) {
        Ok(u) => u,
        Err(e) => return vec![format!("{what}: {e}")],
    };
    let mut problems = Vec::new();
    for section in ["Unit", "Service", "Install"] {
        if !unit.contains_key(section) {
            problems.push(format!("{what}: no [{section}] section"));
        }
    }
    let one = |key: &str, problems: &mut Vec<String>| -> Option<String> {
        let values = unit_values(&unit, "Service", key);
        match values.as_slice() {
            [v] => Some(v.to_string()),
            [] => {
                problems.push(format!("{what}: [Service] has no {key}="));
                None
            }
            _ => {
                problems.push(format!(
                    "{what}: [Service] has {key}= {} times",
                    values.len()
                ));
                None
            }
        }
    };
    // ExecStart: the binary, its subcommand and the production config, accepted by the real CLI.
    if let Some(exec) = one("ExecStart", &mut problems) {
        let argv: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
        problems.extend(check_command(
            &format!("{what} ExecStart"),
            &argv,
            spec.binary,
            spec.subcommand,
            spec.config,
            spec.required_flags,
        ));
    }
    if let Some(reload) = one("ExecReload", &mut problems) {
        let words: Vec<&str> = reload.split_whitespace().collect();
        let kill = words.first().is_some_and(|w| w.ends_with("/kill"));
        let hup = words.windows(2).any(|w| w == ["-s", "HUP"])
            || words.contains(&"-HUP")
            || words.contains(&"-SIGHUP");
        if !(kill && hup && words.last() == Some(&"$MAINPID")) {
            problems.push(format!(
                "{what}: ExecReload='{reload}' must send SIGHUP to $MAINPID"
            ));
        }
    }
    if let Some("root" | "0") = one("User", &mut problems).as_deref() {
        problems.push(format!("{what}: User= must be a dedicated non-root user"));
    }
    one("Group", &mut problems);
    if let Some(restart) = one("Restart", &mut problems)
        && !matches!(restart.as_str(), "on-failure" | "always")
    {
        problems.push(format!("{what}: Restart={restart}, expected on-failure"));
    }
    for (key, ok) in [
        ("NoNewPrivileges", yes as fn(&str) -> bool),
        ("PrivateTmp", yes),
        ("ProtectSystem", |v: &str| v == "strict"),
        ("ProtectHome", |v: &str| {
            yes(v) || v == "read-only" || v == "tmpfs"
        }),
        ("PrivateDevices", yes),
    ] {
        if let Some(value) = one(key, &mut problems)
            && !ok(&value)
        {
            problems.push(format!("{what}: {key}={value} is not the hardened setting"));
        }
    }
    let name = spec.state_dir.trim_start_matches("/var/lib/");
    if let Some(state) = one("StateDirectory", &mut problems)
        && state.split_whitespace().next() != Some(name)
    {
        problems.push(format!(
            "{what}: StateDirectory={state}, expected {name} ({})",
            spec.state_dir
        ));
    }
    let writable: Vec<&str> = unit_values(&unit, "Service", "ReadWritePaths")
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(|p| p.trim_start_matches(['-', '+']))
        .collect();
    if !writable
        .iter()
        .any(|p| spec.state_dir.starts_with(p.trim_end_matches('/')) && !p.is_empty())
    {
        problems.push(format!(
            "{what}: ReadWritePaths= does not cover {} (ProtectSystem=strict makes it read-only)",
            spec.state_dir
        ));
    }
    if !unit_values(&unit, "Install", "WantedBy")
        .iter()
        .any(|v| v.split_whitespace().any(|t| t == "multi-user.target"))
    {
        problems.push(format!(
            "{what}: [Install] WantedBy=multi-user.target is missing"
        ));
    }
    problems
}

#[test]
fn systemd_units_start_the_binaries_hardened_and_reload_on_hup() {
    let dir = root().join("deploy/systemd");
    let mut problems = Vec::new();
    problems.extend(check_unit(
        "fedprofile-coordinator.service",
        &read(&dir.join("fedprofile-coordinator.service")),
        &COORDINATOR_UNIT,
    ));
    problems.extend(check_unit(
        "fedprofile-client.service",
        &read(&dir.join("fedprofile-client.service")),
        &CLIENT_UNIT,
    ));
    // The configs the units start with keep their state where the units allow writes.
    let coordinator = read(&root().join("deploy/config/coordinator.toml"));
    if !coordinator.contains(&format!("state_dir = \"{COORDINATOR_STATE}\"")) {
        problems.push(format!(
            "deploy/config/coordinator.toml: state_dir is not {COORDINATOR_STATE}"
        ));
    }
    // EnvironmentFile examples are KEY=VALUE lines.
    for env in files_under(&dir, &[".env"]) {
        for (i, line) in read(&env).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let ok = line.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if !ok {
                problems.push(format!("{}:{}: not KEY=VALUE", rel(&env), i + 1));
            }
        }
    }
    assert_no_problems("deploy/systemd", &problems);
}

// ------------------------------------------------------------------ Dockerfile

struct Instruction {
    line: usize,
    keyword: String,
    rest: String,
}

/// Logical instructions: comments and blank lines dropped, continuations joined.
fn dockerfile_instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b.trim(), true),
            None => (trimmed, false),
        };
        match &mut current {
            Some(ins) => {
                ins.rest.push(' ');
                ins.rest.push_str(body);
            }
            None => {
                let (keyword, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                current = Some(Instruction {
                    line: i + 1,
                    keyword: keyword.to_ascii_uppercase(),
                    rest: rest.trim().to_string(),
                });
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// Substitutes `${NAME}` / `$NAME` with the global ARG defaults.
fn substitute(value: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = value.to_string();
    for (name, default) in args {
        out = out
            .replace(&format!("${{{name}}}"), default)
            .replace(&format!("${name}"), default);
    }
    out
}

fn exec_form(what: &str, ins: &Instruction) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(&ins.rest).map_err(|e| {
        format!(
            "{what}:{}: {} must be in exec (JSON) form: {e}",
            ins.line, ins.keyword
        )
    })
}

fn check_dockerfile(what: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let instructions = dockerfile_instructions(text);
    for ins in &instructions {
        if !ins.keyword.chars().all(|c| c.is_ascii_alphabetic()) {
            problems.push(format!(
                "{what}:{}: '{}' is not an instruction",
                ins.line, ins.keyword
            ));
        }
    }
    // Global ARGs (before the first FROM) may name the base images.
    let mut global_args = BTreeMap::new();
    for ins in instructions.iter().take_while(|i| i.keyword != "FROM") {
        if ins.keyword == "ARG"
            && let Some((name, default)) = ins.rest.split_once('=')
        {
            global_args.insert(name.trim().to_string(), default.trim().to_string());
        }
    }
    // Stages.
    struct Stage<'a> {
        image: String,
        name: Option<String>,
        body: Vec<&'a Instruction>,
    }
    let mut stages: Vec<Stage> = Vec::new();
    for ins in &instructions {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => {
                    problems.push(format!(
                        "{what}:{}: cannot read 'FROM {}'",
                        ins.line, ins.rest
                    ));
                    None
                }
            };
            stages.push(Stage {
                image: substitute(words.first().copied().unwrap_or(""), &global_args),
                name,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(ins);
        }
    }
    if stages.len() < 2 {
        problems.push(format!(
            "{what}: {} FROM, expected a multi-stage build (builder + runtime)",
            stages.len()
        ));
        return problems;
    }
    let (last, earlier) = stages.split_last().unwrap();
    // The builder compiles both binaries in release mode, reproducibly.
    let builds = earlier.iter().flat_map(|s| &s.body).any(|i| {
        i.keyword == "RUN"
            && i.rest.contains("cargo build")
            && i.rest.contains("--release")
            && i.rest.contains("--locked")
    });
    if !builds {
        problems.push(format!(
            "{what}: no builder stage runs `cargo build --release --locked`"
        ));
    }
    if last.image.contains("rust:") || last.image.starts_with("rust") {
        problems.push(format!(
            "{what}: the runtime stage is based on the Rust toolchain image '{}'",
            last.image
        ));
    }
    // The runtime stage: both binaries from an earlier stage, a non-root user, port 50051.
    let stage_names: BTreeSet<&str> = earlier.iter().filter_map(|s| s.name.as_deref()).collect();
    let mut copied = BTreeSet::new();
    for ins in &last.body {
        if ins.keyword == "COPY" || ins.keyword == "ADD" {
            let words: Vec<&str> = ins.rest.split_whitespace().collect();
            let from = words.iter().find_map(|w| w.strip_prefix("--from="));
            let paths: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| !w.starts_with("--"))
                .collect();
            match from {
                Some(stage) if stage_names.contains(stage) => {}
                Some(stage) => problems.push(format!("{what}:{}: COPY --from={stage}: no earlier stage of that name", ins.line)),
                None => problems.push(format!(
                    "{what}:{}: the runtime stage copies from the build context; copy from the builder only",
                    ins.line
                )),
            }
            // A binary counts when it lands in a bin/ folder of the image.
            if let Some((dest, sources)) = paths.split_last()
                && dest.contains("/bin")
            {
                for source in sources {
                    for binary in ["fedprofile-coordinator", "fedprofile-client"] {
                        if Path::new(source).file_name().and_then(|n| n.to_str()) == Some(binary) {
                            copied.insert(binary);
                        }
                    }
                }
            }
        }
    }
    for binary in ["fedprofile-coordinator", "fedprofile-client"] {
        if !copied.contains(binary) {
            problems.push(format!(
                "{what}: the runtime stage does not copy {binary} from the builder"
            ));
        }
    }
    match last.body.iter().rfind(|i| i.keyword == "USER") {
        None => problems.push(format!(
            "{what}: no USER in the runtime stage: the container would run as root"
        )),
        Some(user) => {
            let name = user.rest.split(':').next().unwrap_or("").trim();
            if name.is_empty() || name == "root" || name == "0" {
                problems.push(format!("{what}:{}: USER {} is root", user.line, user.rest));
            }
        }
    }
    let exposes: Vec<&str> = last
        .body
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.rest.split_whitespace())
        .collect();
    if !exposes
        .iter()
        .any(|p| p.trim_end_matches("/tcp") == "50051")
    {
        problems.push(format!("{what}: the runtime stage does not EXPOSE 50051"));
    }
    // The default command is the production coordinator.
    match last.body.iter().rfind(|i| i.keyword == "CMD") {
        None => problems.push(format!("{what}: no CMD in the runtime stage")),
        Some(cmd) => match exec_form(what, cmd) {
            Ok(argv) => problems.extend(check_command(
                &format!("{what} CMD"),
                &argv,
                "fedprofile-coordinator",
                &["serve"],
                COORDINATOR_CONFIG,
                &[],
            )),
            Err(e) => problems.push(e),
        },
    }
    // No secrets baked in, in any stage.
    for ins in &instructions {
        let upper = ins.rest.to_ascii_uppercase();
        if matches!(ins.keyword.as_str(), "COPY" | "ADD")
            && ins.rest.split_whitespace().any(|w| {
                let w = w.to_ascii_lowercase();
                w.ends_with(".key")
                    || w.ends_with(".pem")
                    || w.ends_with(".p12")
                    || w.contains("certs/")
            })
        {
            problems.push(format!(
                "{what}:{}: copies key or certificate material into the image",
                ins.line
            ));
        }
        if matches!(ins.keyword.as_str(), "ENV" | "ARG")
            && ["PASSWORD", "SECRET", "TOKEN", "PRIVATE", "_KEY"]
                .iter()
                .any(|s| upper.contains(s))
        {
            problems.push(format!(
                "{what}:{}: {} looks like a secret baked into the image",
                ins.line, ins.keyword
            ));
        }
    }
    problems
}

/// The ignore file: keeps keys and build output out, and keeps every workspace member in.
fn check_dockerignore(what: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for required in ["target", "**/*.key", ".git"] {
        if !patterns.contains(&required) {
            problems.push(format!("{what}: does not exclude {required}"));
        }
    }
    let manifest: toml::Table = read(&root().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml");
    let members: Vec<String> = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let needed =
        members
            .iter()
            .map(String::as_str)
            .chain(["Cargo.toml", "Cargo.lock", "proto", "docs"]);
    for path in needed {
        for pattern in &patterns {
            let p = pattern.trim_start_matches('/').trim_end_matches('/');
            if !pattern.starts_with('!')
                && (p == path || path.starts_with(&format!("{p}/")) || p == "*" || p == "**")
            {
                problems.push(format!(
                    "{what}: '{pattern}' excludes {path}, which the build needs"
                ));
            }
        }
    }
    problems
}

#[test]
fn dockerfile_is_multi_stage_unprivileged_and_ships_both_binaries() {
    let dir = root().join("deploy/docker");
    let mut problems = check_dockerfile("deploy/docker/Dockerfile", &read(&dir.join("Dockerfile")));
    problems.extend(check_dockerignore(
        "deploy/docker/Dockerfile.dockerignore",
        &read(&dir.join("Dockerfile.dockerignore")),
    ));
    assert!(
        root().join("Cargo.lock").exists(),
        "the image builds with --locked: Cargo.lock must be committed"
    );
    assert_no_problems("deploy/docker", &problems);
}

// ------------------------------------------------------------------ Kubernetes

struct Doc {
    file: String,
    index: usize,
    value: Yaml,
}

impl Doc {
    fn at(&self, path: &str) -> Option<&Yaml> {
        at(&self.value, path)
    }
    fn kind(&self) -> &str {
        self.at("kind").and_then(Yaml::as_str).unwrap_or("")
    }
    fn name(&self) -> &str {
        self.at("metadata.name")
            .and_then(Yaml::as_str)
            .unwrap_or("")
    }
    fn whence(&self) -> String {
        format!(
            "{} (document {}, {} {})",
            self.file,
            self.index + 1,
            self.kind(),
            self.name()
        )
    }
}

/// `a.b.0.c`: mapping keys and sequence indices.
fn at<'a>(value: &'a Yaml, path: &str) -> Option<&'a Yaml> {
    path.split('.')
        .try_fold(value, |v, segment| match segment.parse::<usize>() {
            Ok(i) if v.is_sequence() => v.get(i),
            _ => v.get(segment),
        })
}

fn seq(value: Option<&Yaml>) -> &[Yaml] {
    value
        .and_then(Yaml::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn str_of<'a>(value: &'a Yaml, path: &str) -> Option<&'a str> {
    at(value, path).and_then(Yaml::as_str)
}

/// Every document of every YAML text; parse errors as problems. Multi-document aware.
fn load_docs(files: &[(String, String)]) -> (Vec<Doc>, Vec<String>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (file, text) in files {
        for (index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
            match Yaml::deserialize(de) {
                Ok(value) if value.is_null() => {}
                Ok(value) => docs.push(Doc {
                    file: file.clone(),
                    index,
                    value,
                }),
                Err(e) => {
                    problems.push(format!("{file}: document {}: {e}", index + 1));
                    break;
                }
            }
        }
    }
    (docs, problems)
}

fn k8s_files() -> Vec<(String, String)> {
    files_under(&root().join("deploy/k8s"), &[".yaml", ".yml"])
        .into_iter()
        .map(|p| (rel(&p), read(&p)))
        .collect()
}

const WORKLOADS: [&str; 5] = ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"];
const NAMESPACE: &str = "fedprofile";

fn pod_spec(doc: &Doc) -> Option<&Yaml> {
    match doc.kind() {
        "CronJob" => doc.at("spec.jobTemplate.spec.template.spec"),
        k if WORKLOADS.contains(&k) => doc.at("spec.template.spec"),
        _ => None,
    }
}

fn containers(pod: &Yaml) -> impl Iterator<Item = &Yaml> {
    seq(pod.get("containers"))
        .iter()
        .chain(seq(pod.get("initContainers")))
}

/// Container `command` + `args` as one argv.
fn container_argv(container: &Yaml) -> Vec<String> {
    seq(container.get("command"))
        .iter()
        .chain(seq(container.get("args")))
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            other => serde_norway::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
        .collect()
}

/// The volume (or volumeClaimTemplate name) mounted at `path` in `container`, and whether via subPath.
fn mount_at<'a>(container: &'a Yaml, path: &str) -> Option<(&'a str, Option<&'a str>)> {
    seq(container.get("volumeMounts")).iter().find_map(|m| {
        (str_of(m, "mountPath") == Some(path))
            .then(|| (str_of(m, "name").unwrap_or(""), str_of(m, "subPath")))
    })
}

fn volume<'a>(pod: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    seq(pod.get("volumes"))
        .iter()
        .find(|v| str_of(v, "name") == Some(name))
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| d.kind() == kind && d.name() == name)
}

/// apiVersion, kind, metadata.name; one namespace; no duplicate objects.
fn check_identity(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in docs {
        let w = doc.whence();
        if !doc.value.is_mapping() {
            problems.push(format!("{w}: not a mapping"));
            continue;
        }
        for key in ["apiVersion", "kind"] {
            if doc.at(key).and_then(Yaml::as_str).is_none_or(str::is_empty) {
                problems.push(format!("{w}: no {key}"));
            }
        }
        if doc.kind() == "Kustomization" {
            continue;
        }
        if doc.name().is_empty() {
            problems.push(format!("{w}: no metadata.name"));
        }
        if doc.kind() != "Namespace" {
            let ns = doc.at("metadata.namespace").and_then(Yaml::as_str);
            if ns != Some(NAMESPACE) {
                problems.push(format!(
                    "{w}: metadata.namespace {ns:?}, expected \"{NAMESPACE}\""
                ));
            }
        }
        if !seen.insert((doc.kind().to_string(), doc.name().to_string())) {
            problems.push(format!("{w}: defined twice"));
        }
    }
    problems
}

/// Non-root, read-only root filesystem, no privilege escalation, every mount declared.
fn check_pod_security(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in docs {
        let Some(pod) = pod_spec(doc) else {
            if WORKLOADS.contains(&doc.kind()) {
                problems.push(format!("{}: no pod template spec", doc.whence()));
            }
            continue;
        };
        let w = doc.whence();
        if str_of(pod, "securityContext.seccompProfile.type") != Some("RuntimeDefault") {
            problems.push(format!(
                "{w}: pod securityContext.seccompProfile.type is not RuntimeDefault"
            ));
        }
        if at(pod, "automountServiceAccountToken").and_then(Yaml::as_bool) != Some(false) {
            problems.push(format!(
                "{w}: automountServiceAccountToken is not false (nothing here talks to the API)"
            ));
        }
        let pod_non_root =
            at(pod, "securityContext.runAsNonRoot").and_then(Yaml::as_bool) == Some(true);
        if at(pod, "securityContext.runAsUser").and_then(Yaml::as_u64) == Some(0) {
            problems.push(format!("{w}: pod runAsUser is 0"));
        }
        let claim_templates: Vec<&str> = seq(doc.at("spec.volumeClaimTemplates"))
            .iter()
            .filter_map(|t| str_of(t, "metadata.name"))
            .collect();
        let list = seq(pod.get("containers"));
        if list.is_empty() {
            problems.push(format!("{w}: no containers"));
        }
        for c in containers(pod) {
            let cw = format!("{w} container {}", str_of(c, "name").unwrap_or("?"));
            let sc = |key: &str| at(c, &format!("securityContext.{key}"));
            let non_root = sc("runAsNonRoot")
                .and_then(Yaml::as_bool)
                .unwrap_or(pod_non_root);
            if !non_root {
                problems.push(format!("{cw}: runAsNonRoot is not true"));
            }
            if sc("runAsUser").and_then(Yaml::as_u64) == Some(0) {
                problems.push(format!("{cw}: runAsUser is 0"));
            }
            if sc("readOnlyRootFilesystem").and_then(Yaml::as_bool) != Some(true) {
                problems.push(format!("{cw}: readOnlyRootFilesystem is not true"));
            }
            if sc("allowPrivilegeEscalation").and_then(Yaml::as_bool) != Some(false) {
                problems.push(format!("{cw}: allowPrivilegeEscalation is not false"));
            }
            if sc("privileged").and_then(Yaml::as_bool) == Some(true) {
                problems.push(format!("{cw}: privileged"));
            }
            if !seq(sc("capabilities.drop"))
                .iter()
                .any(|v| v.as_str() == Some("ALL"))
            {
                problems.push(format!("{cw}: capabilities.drop does not hold ALL"));
            }
            if str_of(c, "image").is_none_or(str::is_empty) {
                problems.push(format!("{cw}: no image"));
            }
            for key in [
                "resources.requests.cpu",
                "resources.requests.memory",
                "resources.limits.memory",
            ] {
                if at(c, key).is_none() {
                    problems.push(format!("{cw}: no {key}"));
                }
            }
            for m in seq(c.get("volumeMounts")) {
                let name = str_of(m, "name").unwrap_or("");
                if str_of(m, "mountPath").is_none_or(|p| !p.starts_with('/')) {
                    problems.push(format!(
                        "{cw}: volumeMount '{name}' has no absolute mountPath"
                    ));
                }
                if volume(pod, name).is_none() && !claim_templates.contains(&name) {
                    problems.push(format!(
                        "{cw}: volumeMount '{name}' names no volume or volumeClaimTemplate"
                    ));
                }
            }
        }
        // ConfigMaps and PVCs named by volumes exist in the manifests (Secrets and the
        // federation schema are created by hand: deploy/README.md).
        for v in seq(pod.get("volumes")) {
            if let Some(cm) = str_of(v, "configMap.name")
                && cm != "fedprofile-schema"
                && find(docs, "ConfigMap", cm).is_none()
            {
                problems.push(format!(
                    "{w}: volume uses ConfigMap '{cm}', defined nowhere in deploy/k8s"
                ));
            }
            if let Some(pvc) = str_of(v, "persistentVolumeClaim.claimName")
                && find(docs, "PersistentVolumeClaim", pvc).is_none()
            {
                problems.push(format!(
                    "{w}: volume uses PersistentVolumeClaim '{pvc}', defined nowhere in deploy/k8s"
                ));
            }
            if let Some(secret) = at(v, "secret")
                && str_of(secret, "secretName").is_none_or(str::is_empty)
            {
                problems.push(format!("{w}: a secret volume without secretName"));
            }
        }
    }
    problems
}

/// The string at a dotted path of a TOML table.
fn toml_str(table: &toml::Table, path: &str) -> Option<String> {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    match table.get(head)? {
        toml::Value::Table(t) if !rest.is_empty() => toml_str(t, rest),
        toml::Value::String(s) if rest.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The ConfigMap entry mounted (by subPath) at `path`: its text.
fn mounted_config<'a>(
    docs: &'a [Doc],
    pod: &Yaml,
    container: &Yaml,
    path: &str,
) -> Result<&'a str, String> {
    let (name, sub) =
        mount_at(container, path).ok_or_else(|| format!("nothing is mounted at {path}"))?;
    let cm = volume(pod, name)
        .and_then(|v| str_of(v, "configMap.name"))
        .ok_or_else(|| format!("{path} is not mounted from a ConfigMap"))?;
    let key = sub.ok_or_else(|| format!("{path}: mount the file with subPath"))?;
    find(docs, "ConfigMap", cm)
        .and_then(|d| d.at("data"))
        .and_then(|data| data.get(key))
        .and_then(Yaml::as_str)
        .ok_or_else(|| format!("ConfigMap {cm} has no data key '{key}'"))
}

/// The Secret volume mounted as a directory at `dir`.
fn secret_dir(pod: &Yaml, container: &Yaml, dir: &str) -> Result<String, String> {
    match mount_at(container, dir) {
        None => Err(format!("no Secret is mounted at {dir}")),
        Some((_, Some(_))) => Err(format!(
            "{dir} is mounted with subPath: Secret updates would never reach the pod"
        )),
        Some((name, None)) => volume(pod, name)
            .and_then(|v| str_of(v, "secret.secretName"))
            .map(str::to_string)
            .ok_or_else(|| format!("{dir} is not mounted from a Secret")),
    }
}

fn check_coordinator(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let sets: Vec<&Doc> = docs.iter().filter(|d| d.kind() == "StatefulSet").collect();
    let [sts] = sets.as_slice() else {
        return vec![format!(
            "expected exactly one StatefulSet (the coordinator), found {}",
            sets.len()
        )];
    };
    let w = sts.whence();
    if sts.at("spec.replicas").and_then(Yaml::as_u64) != Some(1) {
        problems.push(format!(
            "{w}: replicas must be 1 (single writer of the state dir)"
        ));
    }
    let Some(pod) = pod_spec(sts) else {
        return vec![format!("{w}: no pod template")];
    };
    let Some(c) = seq(pod.get("containers")).first() else {
        return vec![format!("{w}: no container")];
    };
    problems.extend(check_command(
        &format!("{w} command"),
        &container_argv(c),
        "fedprofile-coordinator",
        &["serve"],
        COORDINATOR_CONFIG,
        &[],
    ));
    // State on a volumeClaimTemplate at /var/lib/fedprofile.
    let templates: Vec<&str> = seq(sts.at("spec.volumeClaimTemplates"))
        .iter()
        .filter_map(|t| str_of(t, "metadata.name"))
        .collect();
    match mount_at(c, COORDINATOR_STATE) {
        Some((name, None)) if templates.contains(&name) => {}
        other => problems.push(format!(
            "{w}: {COORDINATOR_STATE} must be a volumeClaimTemplate {templates:?} mounted without subPath, got {other:?}"
        )),
    }
    for t in seq(sts.at("spec.volumeClaimTemplates")) {
        if str_of(t, "spec.resources.requests.storage").is_none() {
            problems.push(format!(
                "{w}: volumeClaimTemplate without spec.resources.requests.storage"
            ));
        }
    }
    // The TLS Secret as a directory, where the config looks for the files.
    let tls_secret = secret_dir(pod, c, TLS_DIR);
    if let Err(e) = &tls_secret {
        problems.push(format!("{w}: {e}"));
    }
    match mounted_config(docs, pod, c, COORDINATOR_CONFIG) {
        Err(e) => problems.push(format!("{w}: {e}")),
        Ok(text) => {
            let what = format!("{w}: ConfigMap coordinator.toml");
            let (p, table) = check_coordinator_config(&what, text, Metrics::AllInterfaces);
            problems.extend(p);
            if let Some(tls) = table
                .as_ref()
                .and_then(|t| t.get("tls"))
                .and_then(toml::Value::as_table)
            {
                for (key, value) in tls {
                    if let Some(path) = value.as_str()
                        && Path::new(path).parent() != Some(Path::new(TLS_DIR))
                    {
                        problems.push(format!(
                            "{what}: tls.{key} = {path} is not in the Secret mount {TLS_DIR}"
                        ));
                    }
                }
            }
        }
    }
    // Ports and TCP probes on the gRPC port.
    let ports: BTreeMap<&str, u64> = seq(c.get("ports"))
        .iter()
        .filter_map(|p| {
            Some((
                str_of(p, "name").unwrap_or(""),
                at(p, "containerPort")?.as_u64()?,
            ))
        })
        .collect();
    for port in [50051, 9464] {
        if !ports.values().any(|p| *p == port) {
            problems.push(format!("{w}: no containerPort {port}"));
        }
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = at(c, &format!("{probe}.tcpSocket.port"));
        let number = port.and_then(Yaml::as_u64).or_else(|| {
            port.and_then(Yaml::as_str)
                .and_then(|n| ports.get(n).copied())
        });
        if number != Some(50051) {
            problems.push(format!("{w}: {probe} must be a tcpSocket probe on 50051"));
        }
    }
    // The governing Service is headless.
    let service = sts
        .at("spec.serviceName")
        .and_then(Yaml::as_str)
        .unwrap_or("");
    match find(docs, "Service", service) {
        Some(s) if str_of(&s.value, "spec.clusterIP") == Some("None") => {}
        _ => problems.push(format!(
            "{w}: serviceName '{service}' is not a headless Service in deploy/k8s"
        )),
    }
    problems
}

fn check_client_nodes(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut nodes = 0;
    for doc in docs.iter().filter(|d| d.kind() == "Deployment") {
        let w = doc.whence();
        let Some(pod) = pod_spec(doc) else { continue };
        let Some(c) = seq(pod.get("containers")).iter().find(|c| {
            container_argv(c)
                .first()
                .is_some_and(|p| p.ends_with("/fedprofile-client"))
        }) else {
            continue;
        };
        nodes += 1;
        if doc.at("spec.replicas").and_then(Yaml::as_u64) != Some(1) {
            problems.push(format!(
                "{w}: replicas must be 1 (one node per partner identity and ledger)"
            ));
        }
        if str_of(&doc.value, "spec.strategy.type") != Some("Recreate") {
            problems.push(format!(
                "{w}: strategy must be Recreate: two pods must never write one ledger"
            ));
        }
        problems.extend(check_command(
            &format!("{w} command"),
            &container_argv(c),
            "fedprofile-client",
            &["run"],
            CLIENT_CONFIG,
            &["--keep-running"],
        ));
        if let Err(e) = secret_dir(pod, c, TLS_DIR) {
            problems.push(format!("{w}: {e}"));
        }
        let text = match mounted_config(docs, pod, c, CLIENT_CONFIG) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{w}: {e}"));
                continue;
            }
        };
        let what = format!("{w}: ConfigMap client.toml");
        let (p, table) = check_client_config(&what, text);
        problems.extend(p);
        let Some(table) = table else { continue };
        let get = |path: &str| toml_str(&table, path);
        // The ledger lives on a PersistentVolumeClaim.
        if let Some(ledger) = get("privacy.ledger") {
            let dir = Path::new(&ledger)
                .parent()
                .and_then(Path::to_str)
                .unwrap_or("");
            let on_pvc = mount_at(c, dir)
                .and_then(|(name, _)| volume(pod, name))
                .and_then(|v| at(v, "persistentVolumeClaim"))
                .is_some();
            if !on_pvc {
                problems.push(format!(
                    "{w}: the ledger folder {dir} is not a PersistentVolumeClaim mount"
                ));
            }
        }
        for key in ["tls.ca_cert", "tls.cert", "tls.key"] {
            if let Some(path) = get(key)
                && Path::new(&path).parent() != Some(Path::new(TLS_DIR))
            {
                problems.push(format!(
                    "{what}: {key} = {path} is not in the Secret mount {TLS_DIR}"
                ));
            }
        }
        for key in ["data_dir", "schema"] {
            if let Some(path) = get(key)
                && mount_at(c, &path).is_none()
            {
                problems.push(format!("{what}: {key} = {path} is not mounted"));
            }
        }
    }
    if nodes == 0 {
        problems.push(
            "no client-node Deployment (a container running /usr/local/bin/fedprofile-client)"
                .into(),
        );
    }
    problems
}

/// Services select a pod template and name its ports; metrics are fenced by a NetworkPolicy.
fn check_services(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let templates: Vec<(&Doc, &Yaml)> = docs
        .iter()
        .filter_map(|d| Some((d, pod_spec(d)?)))
        .collect();
    let labels_of = |d: &Doc| -> BTreeMap<String, String> {
        let path = if d.kind() == "CronJob" {
            "spec.jobTemplate.spec.template.metadata.labels"
        } else {
            "spec.template.metadata.labels"
        };
        d.at(path)
            .and_then(Yaml::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let selects = |selector: &Yaml, labels: &BTreeMap<String, String>| -> bool {
        selector.as_mapping().is_some_and(|m| {
            !m.is_empty()
                && m.iter().all(|(k, v)| {
                    k.as_str().and_then(|k| labels.get(k)).map(String::as_str) == v.as_str()
                })
        })
    };
    // Workload selectors match their own templates.
    for (doc, _) in &templates {
        if doc.kind() == "CronJob" || doc.kind() == "Job" {
            continue;
        }
        match doc.at("spec.selector.matchLabels") {
            Some(sel) if selects(sel, &labels_of(doc)) => {}
            _ => problems.push(format!(
                "{}: spec.selector.matchLabels does not match the template labels",
                doc.whence()
            )),
        }
    }
    let mut metrics_service = false;
    for svc in docs.iter().filter(|d| d.kind() == "Service") {
        let w = svc.whence();
        let Some(selector) = svc.at("spec.selector") else {
            problems.push(format!("{w}: no selector"));
            continue;
        };
        let targets: Vec<&(&Doc, &Yaml)> = templates
            .iter()
            .filter(|(d, _)| selects(selector, &labels_of(d)))
            .collect();
        if targets.is_empty() {
            problems.push(format!("{w}: selector matches no pod template"));
        }
        for port in seq(svc.at("spec.ports")) {
            let number = at(port, "port").and_then(Yaml::as_u64);
            if number == Some(9464) {
                metrics_service = true;
            }
            let target = at(port, "targetPort").unwrap_or(&Yaml::Null);
            let target_ok = |pod: &Yaml| {
                containers(pod)
                    .flat_map(|c| seq(c.get("ports")))
                    .any(|p| match target {
                        Yaml::String(name) => str_of(p, "name") == Some(name),
                        Yaml::Number(n) => {
                            at(p, "containerPort").and_then(Yaml::as_u64) == n.as_u64()
                        }
                        Yaml::Null => at(p, "containerPort").and_then(Yaml::as_u64) == number,
                        _ => false,
                    })
            };
            if !targets.is_empty() && !targets.iter().all(|(_, pod)| target_ok(pod)) {
                problems.push(format!(
                    "{w}: port {number:?} targets {target:?}, which the selected pods do not expose"
                ));
            }
        }
    }
    if !metrics_service {
        problems.push("no Service for the metrics port 9464".into());
    }
    // Port 9464 is reachable only from the sources a NetworkPolicy names.
    let coordinator_labels = find(docs, "StatefulSet", "fedprofile-coordinator")
        .map(labels_of)
        .unwrap_or_default();
    let policies: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == "NetworkPolicy")
        .filter(|d| {
            d.at("spec.podSelector.matchLabels")
                .is_some_and(|s| selects(s, &coordinator_labels))
        })
        .collect();
    if policies.is_empty() {
        problems.push(
            "no NetworkPolicy selects the coordinator pods (metrics listen on 0.0.0.0:9464)".into(),
        );
    }
    for policy in policies {
        if !seq(policy.at("spec.policyTypes"))
            .iter()
            .any(|t| t.as_str() == Some("Ingress"))
        {
            problems.push(format!("{}: policyTypes lacks Ingress", policy.whence()));
        }
        let mut fenced = false;
        for rule in seq(policy.at("spec.ingress")) {
            let ports = seq(rule.get("ports"));
            let covers_metrics = ports.is_empty()
                || ports.iter().any(|p| {
                    let port = p.get("port");
                    port.and_then(Yaml::as_u64) == Some(9464)
                        || port.and_then(Yaml::as_str) == Some("metrics")
                });
            if !covers_metrics {
                continue;
            }
            if seq(rule.get("from")).is_empty() {
                problems.push(format!(
                    "{}: an ingress rule opens port 9464 to everyone",
                    policy.whence()
                ));
            } else {
                fenced = true;
            }
        }
        if !fenced {
            problems.push(format!(
                "{}: no ingress rule admits Prometheus to port 9464",
                policy.whence()
            ));
        }
    }
    problems
}

/// Kustomizations list files and folders that exist; every manifest is listed.
fn check_kustomizations(files: &[(String, String)], docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    let exists = |path: &str| files.iter().any(|(f, _)| f == path);
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut queue = vec!["deploy/k8s".to_string()];
    while let Some(dir) = queue.pop() {
        let file = format!("{dir}/kustomization.yaml");
        let Some(k) = docs
            .iter()
            .find(|d| d.file == file && d.kind() == "Kustomization")
        else {
            problems.push(format!(
                "{dir}: no kustomization.yaml holding a Kustomization"
            ));
            continue;
        };
        reached.insert(file.clone());
        let resources = seq(k.at("resources"));
        if resources.is_empty() {
            problems.push(format!("{file}: no resources"));
        }
        for r in resources {
            let Some(r) = r.as_str() else {
                problems.push(format!("{file}: a resource that is not a string"));
                continue;
            };
            let path = format!("{dir}/{}", r.trim_end_matches('/'));
            if r.contains("..") || r.contains("://") {
                problems.push(format!("{file}: resource '{r}' leaves deploy/k8s"));
            } else if exists(&path) {
                if !reached.insert(path.clone()) {
                    problems.push(format!("{file}: '{r}' is listed twice"));
                }
            } else if root().join(&path).is_dir() {
                queue.push(path);
            } else {
                problems.push(format!("{file}: resource '{r}' does not exist"));
            }
        }
        if let Some(ns) = k.at("namespace").and_then(Yaml::as_str)
            && ns != NAMESPACE
        {
            problems.push(format!(
                "{file}: namespace '{ns}', the manifests use '{NAMESPACE}'"
            ));
        }
    }
    for (file, _) in files {
        if !reached.contains(file) {
            problems.push(format!("{file}: not listed by any kustomization reachable from deploy/k8s/kustomization.yaml"));
        }
    }
    problems
}

fn check_k8s(files: &[(String, String)]) -> Vec<String> {
    let (docs, mut problems) = load_docs(files);
    if docs.is_empty() {
        problems.push("no YAML document under deploy/k8s".into());
    }
    problems.extend(check_identity(&docs));
    problems.extend(check_pod_security(&docs));
    problems.extend(check_coordinator(&docs));
    problems.extend(check_client_nodes(&docs));
    problems.extend(check_services(&docs));
    problems.extend(check_kustomizations(files, &docs));
    if find(&docs, "Namespace", NAMESPACE).is_none() {
        problems.push(format!("no Namespace {NAMESPACE}"));
    }
    problems
}

#[test]
fn kubernetes_manifests_parse_and_run_the_coordinator_and_a_client_node_safely() {
    let files = k8s_files();
    assert!(
        files.len() >= 5,
        "deploy/k8s holds only {} YAML files",
        files.len()
    );
    assert_no_problems("deploy/k8s", &check_k8s(&files));
}

// ------------------------------------------------------------------ the guide

/// Commands of the guide's code blocks that start with one of the two binaries.
fn guide_commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let mut command = trimmed
            .trim_start_matches("$ ")
            .trim_start_matches("sudo -u fedprofile ")
            .to_string();
        while command.ends_with('\\') {
            command.pop();
            if let Some((_, next)) = lines.next() {
                command.push(' ');
                command.push_str(next.trim());
            }
        }
        let command = match command.find(" #") {
            Some(at) => command[..at].trim().to_string(),
            None => command,
        };
        let Some(first) = command.split_whitespace().next() else {
            continue;
        };
        let binary = Path::new(first)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if binary != "fedprofile-coordinator" && binary != "fedprofile-client" {
            continue;
        }
        // Shell plumbing cannot be checked word by word.
        if command.contains(['|', '>', '<', '`', '$', '&', ';', '"', '\'']) {
            continue;
        }
        let mut argv = vec![binary.to_string()];
        argv.extend(command.split_whitespace().skip(1).map(str::to_string));
        out.push((i + 1, argv));
    }
    out
}

#[test]
fn the_guide_uses_real_commands_and_existing_files() {
    let path = root().join("deploy/README.md");
    let text = read(&path);
    let mut problems = Vec::new();
    let commands = guide_commands(&text);
    assert!(
        commands.len() >= 15,
        "deploy/README.md: only {} commands found to check",
        commands.len()
    );
    for (line, argv) in &commands {
        if let Err(e) = cli_accepts(&argv[0], &argv[1..]) {
            problems.push(format!(
                "deploy/README.md:{line}: `{}` is rejected: {e}",
                argv.join(" ")
            ));
        }
    }
    // Every repository path the guide names exists.
    for (i, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices("deploy/") {
            if at > 0
                && line[..at]
                    .ends_with(|c: char| c.is_alphanumeric() || c == '/' || c == '.' || c == '-')
            {
                continue;
            }
            let end = line[at..]
                .find(|c: char| !(c.is_alphanumeric() || "/._-".contains(c)))
                .map_or(line.len(), |e| at + e);
            let named = line[at..end].trim_end_matches(['.', ',']);
            if !root().join(named).exists() {
                problems.push(format!(
                    "deploy/README.md:{}: '{named}' does not exist",
                    i + 1
                ));
            }
        }
    }
    for section in [
        "certificates",
        "systemd",
        "Kubernetes",
        "Docker",
        "metrics",
        "rotat",
        "revok",
        "backup",
        "audit verify",
        "ledger verify",
        "Troubleshooting",
    ] {
        if !text.to_lowercase().contains(&section.to_lowercase()) {
            problems.push(format!("deploy/README.md: nothing about '{section}'"));
        }
    }
    assert_no_problems("deploy/README.md", &problems);
}

// ------------------------------------------------------------------ the checks themselves

/// The problems of `found` that the unbroken files do not have: a mistake counts as
/// caught only through a problem of its own, not through one the real files already have.
fn new_problems(baseline: &[String], found: Vec<String>) -> Vec<String> {
    found
        .into_iter()
        .filter(|p| !baseline.contains(p))
        .collect()
}

/// `text` with `from` replaced by `to` (each `from` below stands once in its
/// file); panics when `from` is gone (the case would then test nothing).
fn broken(file: &str, text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{file} no longer contains {from:?}: update this test"
    );
    text.replacen(from, to, 1)
}

/// The problems the checks find in the deployment file `file` (relative to the
/// root) when it reads `text`; a Kubernetes manifest is checked within the whole
/// set of real manifests.
fn problems_of(file: &str, text: &str) -> Vec<String> {
    match file {
        "deploy/systemd/fedprofile-coordinator.service" => {
            check_unit(file, text, &COORDINATOR_UNIT)
        }
        "deploy/systemd/fedprofile-client.service" => check_unit(file, text, &CLIENT_UNIT),
        "deploy/docker/Dockerfile" => check_dockerfile(file, text),
        "deploy/config/client.toml" => check_client_config(file, text).0,
        "deploy/config/coordinator.toml" => {
            check_coordinator_config(file, text, Metrics::Loopback).0
        }
        "deploy/config/operator.toml" => check_operator_config(file, text),
        manifest if manifest.starts_with("deploy/k8s/") => {
            let mut files = k8s_files();
            let entry = files
                .iter_mut()
                .find(|(f, _)| f == manifest)
                .unwrap_or_else(|| panic!("{manifest} is missing"));
            entry.1 = text.to_string();
            check_k8s(&files)
        }
        other => panic!("no check reads {other}"),
    }
}

/// Broken copies of the real files must be caught, each through a problem of its own.
#[test]
fn checks_catch_real_mistakes() {
    // (mistake, file below deploy/, text in the real file, broken text)
    #[rustfmt::skip]
    let cases = [
        // Kubernetes.
        ("indentation error in a volumeMount", "k8s/coordinator/statefulset.yaml", "            - name: state\n              mountPath", "            - name: state\n             mountPath"),
        ("a key indented into the wrong mapping", "k8s/coordinator/statefulset.yaml", "            readOnlyRootFilesystem: true", "          readOnlyRootFilesystem: true"),
        ("writable root filesystem", "k8s/coordinator/statefulset.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
        ("state not on the claim template", "k8s/coordinator/statefulset.yaml", "mountPath: /var/lib/fedprofile", "mountPath: /var/lib/fedprofil"),
        ("TLS Secret not mounted", "k8s/coordinator/statefulset.yaml", "mountPath: /etc/fedprofile/tls", "mountPath: /etc/fedprofile/certs"),
        ("two coordinators", "k8s/coordinator/statefulset.yaml", "replicas: 1", "replicas: 2"),
        ("wrong subcommand", "k8s/coordinator/statefulset.yaml", "- serve", "- server"),
        ("runs as root", "k8s/coordinator/statefulset.yaml", "runAsUser: 65532", "runAsUser: 0"),
        ("missing kustomization entry", "k8s/coordinator/kustomization.yaml", "  - service.yaml\n", ""),
        ("kustomization names a missing file", "k8s/coordinator/kustomization.yaml", "service.yaml", "services.yaml"),
        ("metrics open to all", "k8s/coordinator/networkpolicy.yaml", "        - port: 50051", "        - port: 9464"),
        ("typo in the embedded config", "k8s/coordinator/configmap.yaml", "state_dir =", "statedir ="),
        ("client scaled up", "k8s/client-partner-a/deployment.yaml", "replicas: 1", "replicas: 2"),
        ("client without --keep-running", "k8s/client-partner-a/deployment.yaml", "            - --keep-running\n", ""),
        ("ledger off the PVC", "k8s/client-partner-a/configmap.yaml", "/var/lib/fedprofile-client/privacy", "/tmp/privacy"),
        ("no metadata.name", "k8s/namespace.yaml", "  name: fedprofile\n", ""),
        ("duplicate key", "k8s/coordinator/service.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n  type: NodePort\n"),
        // systemd.
        ("User=root", "systemd/fedprofile-coordinator.service", "User=fedprofile\n", "User=root\n"),
        ("no ExecReload", "systemd/fedprofile-coordinator.service", "ExecReload=", "#ExecReload="),
        ("reload with SIGTERM", "systemd/fedprofile-coordinator.service", "-HUP", "-TERM"),
        ("unknown flag", "systemd/fedprofile-coordinator.service", "--config", "--confg"),
        ("a line without '='", "systemd/fedprofile-coordinator.service", "Restart=on-failure", "Restart on-failure"),
        ("state dir read-only", "systemd/fedprofile-coordinator.service", "ReadWritePaths=/var/lib/fedprofile\n", ""),
        ("not hardened", "systemd/fedprofile-coordinator.service", "ProtectSystem=strict", "ProtectSystem=full"),
        ("client exits after one run", "systemd/fedprofile-client.service", " --keep-running", ""),
        ("client runs the coordinator", "systemd/fedprofile-client.service", "bin/fedprofile-client ", "bin/fedprofile-coordinator "),
        // Dockerfile.
        ("no USER", "docker/Dockerfile", "\nUSER ", "\n# USER "),
        ("USER root", "docker/Dockerfile", "\nUSER 65532:65532", "\nUSER root"),
        ("one binary missing", "docker/Dockerfile", "COPY --from=builder /out/bin/fedprofile-client", "# "),
        ("key baked in", "docker/Dockerfile", "\nUSER ", "\nCOPY deploy/demo/certs/coordinator.key /etc/fedprofile/tls/\nUSER "),
        ("no EXPOSE", "docker/Dockerfile", "EXPOSE 50051", ""),
        // Example configs.
        ("typo", "config/client.toml", "ledger =", "ledgr ="),
        ("no tls", "config/client.toml", "[tls]", "[tsl]"),
        ("bad toml", "config/client.toml", "epsilon = 1.0", "epsilon = "),
        ("public metrics", "config/coordinator.toml", "127.0.0.1:9464", "0.0.0.0:9464"),
        ("no state", "config/coordinator.toml", "state_dir", "# state_dir"),
        ("plain http", "config/operator.toml", "https://", "http://"),
    ];
    let caught = |file: &str, text: &str| {
        let baseline = problems_of(file, &read(&root().join(file)));
        !new_problems(&baseline, problems_of(file, text)).is_empty()
    };
    for (case, file, from, to) in cases {
        let file = format!("deploy/{file}");
        let text = broken(&file, &read(&root().join(&file)), from, to);
        assert!(caught(&file, &text), "{file}: '{case}' was not caught");
    }
    let dockerfile = "deploy/docker/Dockerfile";
    let docker_text = read(&root().join(dockerfile));
    let runtime_from = docker_text
        .find("\nFROM ${RUNTIME_IMAGE}")
        .expect("the runtime FROM line");
    assert!(
        caught(dockerfile, &docker_text[runtime_from..]),
        "{dockerfile}: 'single stage' was not caught"
    );
    assert!(
        !check_dockerignore("ignore", "target\n**/*.key\n.git\ntests\n").is_empty(),
        "ignoring a workspace member was not caught"
    );
}
