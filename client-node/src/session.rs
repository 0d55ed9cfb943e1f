//! The transport edge of the client node: dial the coordinator over mutual TLS,
//! open the long-lived session stream, hand each task to the [`Node`], send the
//! answer back. The client always dials out; the coordinator never connects to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedprofile_protocol::messages::{ChampionAck, ChampionPush, Task};
use fedprofile_protocol::pb::federation_client::FederationClient;
use fedprofile_protocol::pb::{self, server_message};
use fedprofile_protocol::{DEFAULT_MAX_MESSAGE_BYTES, PROTOCOL_VERSION, tls};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::config::{ClientConfig, ConnectPolicy};
use crate::node::Node;

/// The session could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The coordinator URL is not valid.
    #[error("coordinator address '{0}' is not a valid URL")]
    BadUrl(String),
    /// Plain text to a non-loopback host.
    #[error(
        "--insecure is only allowed for a coordinator on loopback (127.0.0.1 or localhost), not '{0}'"
    )]
    InsecureNotLoopback(String),
    /// TLS is required but not configured.
    #[error(
        "the client config has no [tls] section; add one, or pass --insecure for a loopback coordinator"
    )]
    NoTls,
    /// The TLS files passed the checks but the transport cannot use them.
    #[error(
        "the TLS files of the client config (ca_cert '{ca_cert}', cert '{cert}', key '{key}') cannot be used: {detail}"
    )]
    TlsSetup {
        /// The CA file.
        ca_cert: String,
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        detail: String,
    },
    /// Every connection attempt failed.
    #[error("could not reach the coordinator at {url} after {attempts} attempts: {last}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error, in words.
        last: String,
    },
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The coordinator said the run is over.
    RunFinished(String),
}

/// Transport options from the command line.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Plain text (loopback only); the claimed name is then the client id.
    pub insecure_name: Option<String>,
    /// Stay connected after a run finishes, for the next one.
    pub keep_running: bool,
    /// Follow the champions (`[follow]` in the config).
    pub follow: Option<Arc<crate::follow::Follower>>,
    /// With `keep_running`: how often the export's files are looked at (their
    /// sizes and modification times); a change reloads the data between runs
    /// and sends a new data fingerprint. Zero means the default (5 s).
    pub data_poll: Duration,
}

/// Default of [`TransportOptions::data_poll`].
pub const DEFAULT_DATA_POLL: Duration = Duration::from_secs(5);

/// Sends the node's data fingerprint for `stamp` (with `keep_running` only).
async fn send_fingerprint(
    tx: &mpsc::Sender<pb::ClientMessage>,
    node: &Arc<Mutex<Node>>,
    stamp: crate::fingerprint::ExportStamp,
) -> Result<(), Retry> {
    let node = Arc::clone(node);
    let fingerprint = tokio::task::spawn_blocking(move || {
        let rows = node.lock().map(|n| n.rows()).unwrap_or_default();
        crate::fingerprint::fingerprint(&stamp, rows)
    })
    .await
    .map_err(|e| Retry::from(format!("fingerprinting the export failed: {e}")))?;
    tracing::info!(sha256 = %fingerprint.sha256, rows = ?fingerprint.rows, "data fingerprint sent");
    tx.send(pb::ClientMessage::from(&fingerprint))
        .await
        .map_err(|_| {
            Retry::from("the session closed while sending the data fingerprint".to_string())
        })
}

/// Loads the node's data again after its export changed; keeps the old data
/// (with a warning) if the new export does not load.
async fn reload(node: &Arc<Mutex<Node>>) -> Result<(), Retry> {
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || {
        let mut node = node.lock().unwrap_or_else(|e| e.into_inner());
        match node.reload_data() {
            Ok(()) => tracing::info!(rows = ?node.rows(), "the export changed: data reloaded"),
            Err(e) => tracing::warn!(
                "the export changed but does not load, keeping the previous data: {e}"
            ),
        }
    })
    .await
    .map_err(|e| Retry::from(format!("reloading the data failed: {e}")))
}

fn endpoint(config: &ClientConfig, options: &TransportOptions) -> Result<Endpoint, SessionError> {
    let url = config.coordinator.clone();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|_| SessionError::BadUrl(url.clone()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let host = endpoint.uri().host().unwrap_or_default().to_string();
    if options.insecure_name.is_some() {
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback || url.starts_with("https://") {
            return Err(SessionError::InsecureNotLoopback(url));
        }
        return Ok(endpoint);
    }
    let (files, server_name) = config.tls.as_ref().ok_or(SessionError::NoTls)?;
    let name = server_name.clone().unwrap_or(host);
    endpoint = endpoint
        .tls_config(tls::client_config(files, &name)?)
        .map_err(|e| SessionError::TlsSetup {
            ca_cert: files.ca_cert.display().to_string(),
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            detail: tls::root_cause(&e),
        })?;
    Ok(endpoint)
}

/// The TLS files and the coordinator's certificate name, to explain refusals.
fn tls_context(config: &ClientConfig) -> Option<(tls::TlsFiles, String)> {
    let (files, server_name) = config.tls.as_ref()?;
    let host = Endpoint::from_shared(config.coordinator.clone())
        .ok()
        .and_then(|e| e.uri().host().map(str::to_string))
        .unwrap_or_default();
    Some((files.clone(), server_name.clone().unwrap_or(host)))
}

fn backoff(policy: &ConnectPolicy, attempt: u32) -> Duration {
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(policy.max_backoff);
    // Full jitter in [base/2, base].
    let half = base / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis() as u64))
}

/// The least a node waits before trying again after the coordinator refused it
/// because a session with its certificate is already open. The coordinator
/// closes a session whose connection died within 30 s (an HTTP/2 ping every
/// 10 s, 20 s to answer it), so a node that restarted after a network cut gets
/// back in at its next attempt; two nodes sharing a certificate do not hammer.
pub const ALREADY_OPEN_BACKOFF: Duration = Duration::from_secs(31);

/// Why a session ended and it is worth trying again, and the least wait.
struct Retry {
    why: String,
    at_least: Duration,
}

impl From<String> for Retry {
    fn from(why: String) -> Retry {
        Retry {
            why,
            at_least: Duration::ZERO,
        }
    }
}

/// Explains a failed call in words a partner can act on: a TLS refusal (the
/// coordinator's alert, or our verdict on its certificate) as a sentence
/// naming the files, anything else as code and message.
fn explain(status: &tonic::Status, tls: Option<&(tls::TlsFiles, String)>) -> String {
    if let Some(sentence) = tls::explain_tls_refusal(status, tls) {
        return sentence;
    }
    let text = format!("{}: {}", status.code(), status.message());
    let lower = format!("{status:?}").to_lowercase();
    if lower.contains("certificate") || lower.contains("handshake") || lower.contains("tls") {
        format!(
            "{text} (the TLS handshake failed: check that this client's certificate is issued by the federation CA, is not expired, and that ca_cert is the federation CA)"
        )
    } else {
        text
    }
}

/// Connects (with bounded, jittered exponential backoff) and serves tasks until
/// the coordinator finishes the run. A dropped session is re-opened under the
/// same policy.
pub async fn run(
    config: &ClientConfig,
    options: &TransportOptions,
    node: Node,
) -> Result<SessionEnd, SessionError> {
    // Validate the settings once up front (clear errors before any network I/O).
    endpoint(config, options)?;
    let node = Arc::new(Mutex::new(node));
    #[cfg(unix)]
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: certificates are re-read at the next reconnect");
            }
        }
    });
    let policy = config.connect;
    let tls_files = tls_context(config);
    let mut failures = 0u32;
    loop {
        let mut joined = false;
        // A transport failure whose error chain names no TLS cause.
        let mut unexplained = false;
        // Rebuilt on every attempt so renewed certificate files are picked up at
        // the next reconnect.
        let endpoint = endpoint(config, options)?;
        let outcome = match endpoint.connect().await {
            Ok(channel) => {
                serve(
                    channel,
                    options,
                    Arc::clone(&node),
                    &mut joined,
                    &mut unexplained,
                    tls_files.as_ref(),
                )
                .await
            }
            Err(e) => Err(Retry::from(
                match tls::explain_tls_refusal(&e, tls_files.as_ref()) {
                    Some(sentence) => sentence,
                    None => {
                        unexplained = true;
                        format!("connection failed: {e}{}", source_chain(&e))
                    }
                },
            )),
        };
        // A session refused before it began, without a TLS cause in the error:
        // ask the coordinator directly (its alert often does not reach HTTP/2).
        let outcome = match outcome {
            Err(last) if !joined && unexplained => {
                match probe(&endpoint, tls_files.as_ref(), Duration::from_secs(2)).await {
                    Some(sentence) => Err(Retry::from(sentence)),
                    None => Err(last),
                }
            }
            other => other,
        };
        if joined {
            // A session was established: the next outage gets the full policy again.
            failures = 0;
        }
        match outcome {
            Ok(end) => return Ok(end),
            Err(Retry {
                why: last,
                at_least,
            }) => {
                failures += 1;
                if failures >= policy.attempts {
                    return Err(SessionError::Unreachable {
                        url: config.coordinator.clone(),
                        attempts: failures,
                        last,
                    });
                }
                let wait = backoff(&policy, failures - 1).max(at_least);
                tracing::warn!("{last}; retrying in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Writes a champion the coordinator sent ([`crate::follow`]) off the async
/// threads, logs one line, and returns the acknowledgement.
async fn follow_champion(
    follower: Arc<crate::follow::Follower>,
    push: ChampionPush,
) -> ChampionAck {
    let model = push.model.clone();
    let name = format!("{}@{}", model.target, model.version);
    let done = tokio::task::spawn_blocking(move || follower.follow(&push))
        .await
        .map_err(|e| format!("the follow task failed: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    match done {
        Ok(outcome) => {
            let headline = outcome.report.headline();
            tracing::info!(model = %name, "following {name}: {headline}");
            ChampionAck {
                model,
                ok: true,
                message: headline,
            }
        }
        Err(message) => {
            tracing::warn!(model = %name, "cannot follow {name}: {message}");
            ChampionAck {
                model,
                ok: false,
                message,
            }
        }
    }
}

/// [`tls::probe_refusal`] for the coordinator of `endpoint`.
async fn probe(
    endpoint: &Endpoint,
    tls: Option<&(tls::TlsFiles, String)>,
    wait: Duration,
) -> Option<String> {
    let (files, server_name) = tls?;
    let uri = endpoint.uri();
    let host = uri.host()?.trim_matches(|c| c == '[' || c == ']');
    let port = uri.port_u16().unwrap_or(443);
    tls::probe_refusal(tls::TlsContext { files, server_name }, host, port, wait).await
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(&format!(": {s}"));
        cur = s.source();
    }
    out
}

/// One session on an open channel. `Err` means "try again".
async fn serve(
    channel: Channel,
    options: &TransportOptions,
    node: Arc<Mutex<Node>>,
    joined: &mut bool,
    unexplained: &mut bool,
    tls: Option<&(tls::TlsFiles, String)>,
) -> Result<SessionEnd, Retry> {
    let mut describe = |status: &tonic::Status| {
        *unexplained = matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        ) && tls::explain_tls_refusal(status, tls).is_none();
        explain(status, tls)
    };
    let (budget_epsilon, epsilon_spent) = node
        .lock()
        .map(|n| n.privacy_status())
        .unwrap_or((None, None));
    let mut client = FederationClient::new(channel)
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<pb::ClientMessage>(16);
    let hello = pb::ClientMessage {
        body: Some(pb::client_message::Body::Hello(pb::Hello {
            client_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: PROTOCOL_VERSION,
            insecure_name: options.insecure_name.clone().unwrap_or_default(),
            budget_epsilon,
            epsilon_spent,
            follows: options.follow.is_some(),
            held: options
                .follow
                .as_ref()
                .map(|f| f.held().into_iter().map(Into::into).collect())
                .unwrap_or_default(),
        })),
    };
    tx.send(hello)
        .await
        .map_err(|_| Retry::from("session closed before hello".to_string()))?;
    let mut stream = match client.session(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            return Err(Retry {
                why: format!(
                    "the coordinator refused this session: {} (if this node was cut off from the network, the coordinator closes its old session within 30 s)",
                    status.message()
                ),
                at_least: ALREADY_OPEN_BACKOFF,
            });
        }
        Err(status) => return Err(describe(&status).into()),
    };
    // A long-lived node watches its export: its fingerprint is sent now and
    // after each change, the data reloaded between runs (never mid-run).
    let data_dir = node.lock().map(|n| n.data_dir().to_path_buf()).ok();
    let mut stamp = match (&data_dir, options.keep_running) {
        (Some(dir), true) => {
            let stamp = crate::fingerprint::ExportStamp::of(dir);
            send_fingerprint(&tx, &node, stamp.clone()).await?;
            Some(stamp)
        }
        _ => None,
    };
    let poll = if options.data_poll.is_zero() {
        DEFAULT_DATA_POLL
    } else {
        options.data_poll
    };
    let mut in_run = false;
    let mut changed = false;
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            () = tokio::time::sleep(poll), if stamp.is_some() => {
                if let (Some(dir), Some(old)) = (&data_dir, stamp.as_mut()) {
                    let now = crate::fingerprint::ExportStamp::of(dir);
                    if now != *old {
                        *old = now;
                        changed = true;
                    }
                }
                if changed && !in_run {
                    changed = false;
                    reload(&node).await?;
                    if let Some(s) = &stamp {
                        send_fingerprint(&tx, &node, s.clone()).await?;
                    }
                }
                continue;
            }
        };
        let message = match next {
            Ok(Some(m)) => m,
            Ok(None) => return Err("the coordinator closed the session".to_string().into()),
            Err(status) => return Err(describe(&status).into()),
        };
        match message.body {
            Some(server_message::Body::Welcome(w)) => {
                *joined = true;
                tracing::info!(client_id = %w.client_id, "joined the federation");
            }
            Some(server_message::Body::Task(task)) => {
                let task = match Task::try_from(task) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!("ignoring a task that does not decode: {e}");
                        continue;
                    }
                };
                in_run = true;
                tracing::info!(task_id = %task.task_id, kind = %task.body.kind(), round = task.round, "task received");
                let node = Arc::clone(&node);
                let reply = tokio::task::spawn_blocking(move || {
                    let mut node = node.lock().unwrap_or_else(|e| e.into_inner());
                    node.handle(&task)
                })
                .await
                .map_err(|e| Retry::from(format!("task handler failed: {e}")))?;
                if tx.send(pb::ClientMessage::from(&reply)).await.is_err() {
                    return Err("the session closed while sending a result"
                        .to_string()
                        .into());
                }
            }
            Some(server_message::Body::Champion(c)) => {
                let Some(follower) = options.follow.clone() else {
                    continue;
                };
                let ack = follow_champion(follower, ChampionPush::from(c)).await;
                if tx.send(pb::ClientMessage::from(&ack)).await.is_err() {
                    return Err("the session closed while acknowledging a champion"
                        .to_string()
                        .into());
                }
            }
            Some(server_message::Body::Finished(f)) => {
                tracing::info!(run_id = %f.run_id, "{}", f.message);
                in_run = false;
                if options.keep_running {
                    println!("{}: {}", f.run_id, f.message);
                    continue;
                }
                return Ok(SessionEnd::RunFinished(f.message));
            }
            None => {}
        }
    }
}
