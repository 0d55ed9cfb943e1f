//! The operator CLI: `run start|list|status|cancel|watch`, `model
//! list|show|promote|rollback` and `clients`, over the admin API with an
//! operator certificate.
//!
//! ```toml
//! # operator.toml (paths relative to this file)
//! coordinator = "https://coordinator.example.org:50051"
//! [tls]
//! ca_cert = "ca.pem"
//! cert = "alice.pem"       # an operator certificate (certs issue --operator)
//! key = "alice.key"
//! server_name = "coordinator"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedprofile_config::{RawTls, TlsField};
use fedprofile_protocol::messages::{
    ClientInfo, ModelVersionInfo, RunInfo, RunProgress, UpdateDecisionInfo,
};
use fedprofile_protocol::pb::admin_client::AdminClient;
use fedprofile_protocol::pb::{self};
use fedprofile_protocol::tls::{self, TlsFiles};
use serde::Deserialize;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperatorConfig {
    coordinator: String,
    tls: Option<RawTls>,
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Coordinator URL.
    pub coordinator: String,
    /// Operator certificate files and the coordinator's certificate name.
    pub tls: Option<(TlsFiles, Option<String>)>,
}

impl OperatorConfig {
    /// Reads an operator config file.
    pub fn from_path(path: &Path) -> Result<OperatorConfig, String> {
        let raw: RawOperatorConfig = fedprofile_config::load(path).map_err(|e| e.to_string())?;
        if let Some(tls) = &raw.tls {
            tls.refuse(
                TlsField::Crl,
                path,
                "the coordinator checks revocations (its own config's tls.crl)",
            )
            .map_err(|e| e.to_string())?;
        }
        let base = fedprofile_config::base_dir(path);
        Ok(OperatorConfig {
            coordinator: raw.coordinator,
            tls: raw.tls.map(|t| {
                let files = TlsFiles::under(base, &t.ca_cert, &t.cert, &t.key);
                (files, t.server_name)
            }),
        })
    }
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub enum OperatorCommand {
    /// Queue a run file.
    Start(PathBuf),
    /// All runs.
    List,
    /// One run.
    Status(String),
    /// Cancel a run.
    Cancel(String, String),
    /// Follow a run live.
    Watch(String),
    /// The partners.
    Clients,
    /// The model registry (of one target).
    ModelList(Option<String>),
    /// One version (`TARGET@N`) or a target's champion (`TARGET`), and where
    /// to write its model file.
    ModelShow(String, Option<PathBuf>),
    /// Make `TARGET@N` champion, with a reason.
    ModelPromote(String, String),
    /// Restore the champion a target's champion replaced, with a reason.
    ModelRollback(String, String),
}

/// `TARGET@N` as (target, N); `TARGET` alone as (target, 0) when `bare` is
/// allowed (its champion).
pub fn parse_version(text: &str, bare: bool) -> Result<(String, u32), String> {
    match text.rsplit_once('@') {
        Some((target, n)) if !target.is_empty() => match n.parse::<u32>() {
            Ok(v) if v >= 1 => Ok((target.to_string(), v)),
            _ => Err(format!(
                "'{text}' does not name a version: the part after '@' must be a version number from 1, like Churn@2"
            )),
        },
        None if bare && !text.is_empty() => Ok((text.to_string(), 0)),
        _ => Err(format!(
            "'{text}' does not name a version: write TARGET@N, like Churn@2"
        )),
    }
}

fn print_versions(versions: &[ModelVersionInfo]) {
    println!(
        "{:<24} {:<20} {:<30} {:<42} {:<8} reason",
        "version", "status", "metrics", "run", "ε"
    );
    for v in versions {
        println!(
            "{:<24} {:<20} {:<30} {:<42} {:<8} {}",
            format!("{}@{}", v.target, v.version),
            v.status,
            v.metrics,
            v.run_id,
            v.epsilon.map_or("-".into(), |e| format!("{e:.4}")),
            v.reason
        );
    }
}

fn print_decision(d: &UpdateDecisionInfo) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
    println!(
        "update of {}: {} challenger {} vs champion {}@{} {} (min improvement {}): {} — {}",
        d.target,
        d.metric,
        opt(d.challenger),
        d.target,
        d.champion_version,
        opt(d.champion),
        d.min_improvement,
        if d.promoted { "promoted" } else { "rejected" },
        d.reason
    );
}

async fn connect(config: &OperatorConfig) -> Result<Connection, String> {
    let mut endpoint = Endpoint::from_shared(config.coordinator.clone())
        .map_err(|_| {
            format!(
                "coordinator address '{}' is not a valid URL",
                config.coordinator
            )
        })?
        .connect_timeout(Duration::from_secs(10));
    let mut tls_context = None;
    if let Some((files, name)) = &config.tls {
        let host = endpoint.uri().host().unwrap_or_default().to_string();
        let server_name = name.clone().unwrap_or(host);
        let tls = tls::client_config(files, &server_name).map_err(|e| e.to_string())?;
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            format!(
                "the TLS files of the operator config (ca_cert '{}', cert '{}', key '{}') cannot be used: {}",
                files.ca_cert.display(),
                files.cert.display(),
                files.key.display(),
                tls::root_cause(&e)
            )
        })?;
        tls_context = Some((files.clone(), server_name));
    }
    let channel = endpoint.connect().await.map_err(|e| {
        match tls::explain_tls_refusal(&e, tls_context.as_ref()) {
            Some(sentence) => format!("cannot connect to the coordinator at {}: {sentence}", config.coordinator),
            None => format!(
                "cannot reach the coordinator at {}: {} (check the URL and that the coordinator is running)",
                config.coordinator,
                tls::root_cause(&e)
            ),
        }
    })?;
    Ok(Connection {
        client: AdminClient::new(channel),
        tls: tls_context,
    })
}

/// A connection to the admin API, with what is needed to explain TLS refusals.
struct Connection {
    client: AdminClient<Channel>,
    tls: Option<(tls::TlsFiles, String)>,
}

/// A failed call in one sentence: a TLS refusal (under TLS 1.3 the
/// coordinator's verdict on our certificate arrives with the first call), a
/// refusal of the coordinator, or its message.
fn explain_status(s: tonic::Status, tls: Option<&(tls::TlsFiles, String)>) -> String {
    if let Some(sentence) = tls::explain_tls_refusal(&s, tls) {
        return format!("the coordinator refused the connection: {sentence}");
    }
    plain_status_text(s)
}

fn plain_status_text(s: tonic::Status) -> String {
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            format!("refused by the coordinator: {}", s.message())
        }
        _ => s.message().to_string(),
    }
}

fn print_run(r: &RunInfo) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
    let metrics = if r.quality.is_empty() {
        format!("auc {:<7} log loss {:<7}", opt(r.auc), opt(r.log_loss))
    } else {
        r.quality.clone()
    };
    println!(
        "{:<40} {:<10} {:>3}/{:<3} {metrics} ε {:<7} {}",
        r.run_id,
        r.state,
        r.rounds_done,
        r.rounds_planned,
        opt(r.epsilon),
        r.failure.as_deref().unwrap_or_default()
    );
}

/// Runs an operator command.
pub async fn run(config: &OperatorConfig, command: OperatorCommand) -> Result<(), String> {
    let Connection { mut client, tls } = connect(config).await?;
    // Set when a call failed at the transport without a TLS cause in the error.
    let unexplained = std::cell::Cell::new(false);
    let status_text = |s: tonic::Status| {
        if matches!(
            s.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        ) && tls::explain_tls_refusal(&s, tls.as_ref()).is_none()
        {
            unexplained.set(true);
        }
        explain_status(s, tls.as_ref())
    };
    let result = execute(&mut client, tls.as_ref(), command, status_text).await;
    match result {
        Err(message) if unexplained.get() => {
            // Under TLS 1.3 the coordinator's alert often does not reach
            // HTTP/2: ask the coordinator directly why it refuses us.
            let probed = match &tls {
                Some((files, server_name)) => {
                    let uri: Option<tonic::codegen::http::Uri> = config.coordinator.parse().ok();
                    let host = uri
                        .as_ref()
                        .and_then(|u| u.host())
                        .unwrap_or_default()
                        .trim_matches(|c| c == '[' || c == ']')
                        .to_string();
                    let port = uri.as_ref().and_then(|u| u.port_u16()).unwrap_or(443);
                    tls::probe_refusal(
                        tls::TlsContext { files, server_name },
                        &host,
                        port,
                        Duration::from_secs(2),
                    )
                    .await
                }
                None => None,
            };
            Err(probed.map_or(message, |sentence| {
                format!("the coordinator refused the connection: {sentence}")
            }))
        }
        other => other,
    }
}

/// The answer of an admin call, or the sentence for its refusal.
async fn answer<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    status_text: &impl Fn(tonic::Status) -> String,
) -> Result<T, String> {
    Ok(call.await.map_err(status_text)?.into_inner())
}

async fn execute(
    client: &mut AdminClient<Channel>,
    tls: Option<&(tls::TlsFiles, String)>,
    command: OperatorCommand,
    status_text: impl Fn(tonic::Status) -> String,
) -> Result<(), String> {
    match command {
        OperatorCommand::Start(path) => {
            let run_toml = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
            let info = answer(
                client.start_run(pb::StartRunRequest { run_toml }),
                &status_text,
            )
            .await?;
            println!("{}", info.run_id);
        }
        OperatorCommand::List => {
            let runs: Vec<RunInfo> = answer(client.list_runs(pb::ListRunsRequest {}), &status_text)
                .await?
                .runs
                .into_iter()
                .map(RunInfo::from)
                .collect();
            if runs.is_empty() {
                println!("no runs");
            }
            for r in &runs {
                print_run(r);
            }
        }
        OperatorCommand::Status(run_id) => {
            let r = RunInfo::from(
                answer(client.get_run(pb::GetRunRequest { run_id }), &status_text).await?,
            );
            print_run(&r);
            println!(
                "created {}  started {}  finished {}",
                r.created_at,
                r.started_at.as_deref().unwrap_or("-"),
                r.finished_at.as_deref().unwrap_or("-")
            );
            if let Some(version) = &r.model_version {
                println!(
                    "model {version} ({})",
                    r.model_status.as_deref().unwrap_or("-")
                );
            }
            if let Some(d) = &r.update {
                print_decision(d);
            }
        }
        OperatorCommand::ModelList(target) => {
            let request = pb::ListModelsRequest {
                target: target.unwrap_or_default(),
            };
            let versions: Vec<ModelVersionInfo> = answer(client.list_models(request), &status_text)
                .await?
                .versions
                .into_iter()
                .map(ModelVersionInfo::from)
                .collect();
            if versions.is_empty() {
                println!("no model versions");
            } else {
                print_versions(&versions);
            }
        }
        OperatorCommand::ModelShow(name, model_out) => {
            let (target, version) = parse_version(&name, true)?;
            let request = pb::GetModelRequest { target, version };
            let v = ModelVersionInfo::from(answer(client.get_model(request), &status_text).await?);
            print_versions(std::slice::from_ref(&v));
            println!(
                "family {}  parent {}  registered {}  data fingerprint {}",
                v.family,
                v.parent_version
                    .map_or("-".into(), |p| format!("{}@{p}", v.target)),
                v.registered_at,
                v.data_fingerprint
            );
            if let Some(d) = &v.decision {
                print_decision(d);
            }
            // The partners whose acknowledged copy of the target is this version.
            let held: Vec<&str> = v.partners.iter().map(|p| p.client_id.as_str()).collect();
            println!(
                "held by {} partners: {}",
                held.len(),
                if held.is_empty() {
                    "-".to_string()
                } else {
                    held.join(", ")
                }
            );
            if let (Some(path), Some(json)) = (model_out, &v.model_json) {
                std::fs::write(&path, json)
                    .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
                println!("model file written to {}", path.display());
            }
        }
        OperatorCommand::ModelPromote(name, reason) => {
            let (target, version) = parse_version(&name, false)?;
            let request = pb::PromoteModelRequest {
                target,
                version,
                reason,
            };
            let v =
                ModelVersionInfo::from(answer(client.promote_model(request), &status_text).await?);
            println!("{}@{} is now champion", v.target, v.version);
        }
        OperatorCommand::ModelRollback(target, reason) => {
            let request = pb::RollbackModelRequest { target, reason };
            let v =
                ModelVersionInfo::from(answer(client.rollback_model(request), &status_text).await?);
            println!("{}@{} is champion again", v.target, v.version);
        }
        OperatorCommand::Cancel(run_id, reason) => {
            let r = RunInfo::from(
                answer(
                    client.cancel_run(pb::CancelRunRequest { run_id, reason }),
                    &status_text,
                )
                .await?,
            );
            print_run(&r);
        }
        OperatorCommand::Watch(run_id) => watch(client, run_id, tls).await?,
        OperatorCommand::Clients => {
            let clients = answer(client.list_clients(pb::ListClientsRequest {}), &status_text)
                .await?
                .clients
                .into_iter()
                .map(ClientInfo::from);
            println!(
                "{:<20} {:<10} {:<26} {:>12}",
                "client", "connected", "last seen", "ε budget left"
            );
            for c in clients {
                println!(
                    "{:<20} {:<10} {:<26} {:>12}",
                    c.client_id,
                    if c.connected { "yes" } else { "no" },
                    c.last_seen,
                    c.budget_epsilon_left
                        .map_or("-".into(), |b| format!("{b:.4}"))
                );
            }
        }
    }
    Ok(())
}

async fn watch(
    client: &mut AdminClient<Channel>,
    run_id: String,
    tls: Option<&(tls::TlsFiles, String)>,
) -> Result<(), String> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let status_text = |s: tonic::Status| explain_status(s, tls);
    let mut stream = answer(
        client.watch_run(pb::WatchRunRequest { run_id }),
        &status_text,
    )
    .await?;
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} rounds  {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last_state = String::new();
    while let Some(item) = stream.next().await {
        let p = RunProgress::from(item.map_err(status_text)?);
        bar.set_prefix(p.run_id.clone());
        bar.set_length(u64::from(p.rounds_planned));
        bar.set_position(u64::from(p.round));
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        let metrics = if p.quality.is_empty() {
            format!("auc {} | log loss {}", opt(p.auc), opt(p.log_loss))
        } else {
            p.quality.clone()
        };
        bar.set_message(format!("{} | {metrics} | ε {}", p.state, opt(p.epsilon)));
        if !bar.is_hidden() {
            bar.tick();
        } else {
            eprintln!(
                "round {}/{} {} {metrics} ε {}",
                p.round,
                p.rounds_planned,
                p.state,
                opt(p.epsilon)
            );
        }
        last_state = p.state.clone();
        if !p.message.is_empty() && matches!(p.state.as_str(), "finished" | "failed" | "cancelled")
        {
            if bar.is_hidden() {
                eprintln!("{}", p.message);
            } else {
                bar.println(p.message.clone());
            }
        }
    }
    bar.finish();
    println!("run {last_state}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_named_target_at_number() {
        assert_eq!(
            parse_version("Churn@2", false).unwrap(),
            ("Churn".into(), 2)
        );
        assert_eq!(parse_version("a@b@3", false).unwrap(), ("a@b".into(), 3));
        assert_eq!(parse_version("Churn", true).unwrap(), ("Churn".into(), 0));
        let err = parse_version("Churn", false).unwrap_err();
        assert!(err.contains("write TARGET@N"), "{err}");
        let err = parse_version("Churn@0", true).unwrap_err();
        assert!(err.contains("from 1"), "{err}");
        assert!(parse_version("@2", true).is_err());
        assert!(parse_version("Churn@x", true).is_err());
    }
}
