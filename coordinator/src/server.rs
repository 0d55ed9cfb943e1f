//! Serving one federated run: bind, accept client sessions over mutual TLS, drive
//! the round engine, write the outputs, shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedprofile_learning::model_file::Target;
use fedprofile_protocol::pb::federation_server::FederationServer;
use fedprofile_protocol::tls::{self, TlsError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::{CoordinatorConfig, RunConfig};
use crate::engine::{Run, RunObserver, RunOutcome};
use crate::report::{self, ReportError};
use crate::service::{FederationService, IdentityMode, SessionHub};

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Plain-text gRPC was asked for on a non-loopback address.
    #[error("--insecure is only allowed on a loopback address, not {0}")]
    InsecureNotLoopback(SocketAddr),
    /// No TLS configuration and no `--insecure`.
    #[error("the coordinator config has no [tls] section; add one, or pass --insecure on loopback")]
    NoTls,
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The outputs could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Options of one `serve` invocation.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Validated coordinator config.
    pub config: CoordinatorConfig,
    /// Validated run.
    pub run: RunConfig,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Plain text on loopback.
    pub insecure: bool,
    /// File to write the bound address to (for scripts using port 0).
    pub addr_file: Option<PathBuf>,
}

/// Binds the listener (port 0 lets the OS choose), checking the insecure rule.
pub async fn bind(options: &ServeOptions) -> Result<TcpListener, ServeError> {
    let addr = options.config.listen;
    if options.insecure && !addr.ip().is_loopback() {
        return Err(ServeError::InsecureNotLoopback(addr));
    }
    if !options.insecure && options.config.tls.is_none() {
        return Err(ServeError::NoTls);
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Runs one federated run on `listener` until it ends or `shutdown` resolves.
pub async fn serve_run(
    options: ServeOptions,
    listener: TcpListener,
    observer: Box<dyn RunObserver>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunOutcome, ServeError> {
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.config.listen,
        source,
    })?;
    if let Some(path) = &options.addr_file {
        std::fs::write(path, local.to_string()).map_err(|source| {
            ServeError::Report(ReportError::Write {
                path: path.clone(),
                source,
            })
        })?;
    }
    tracing::info!(address = %local, insecure = options.insecure, "coordinator listening");

    let (inbox_tx, inbox_rx) = mpsc::channel(1024);
    let hub = SessionHub::new(inbox_tx);
    let identity = if options.insecure {
        IdentityMode::InsecureClaimed
    } else {
        IdentityMode::Certificate
    };
    let service = FederationServer::new(FederationService::new(Arc::clone(&hub), identity))
        .max_decoding_message_size(options.config.max_message_bytes)
        .max_encoding_message_size(options.config.max_message_bytes);

    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if !options.insecure {
        let files = options.config.tls.as_ref().ok_or(ServeError::NoTls)?;
        builder = builder.tls_config(tls::server_config(files)?)?;
    }
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(
        incoming,
        async {
            let _ = stop_rx.await;
        },
    ));

    let run_id = make_run_id(&options.run.name);
    let engine = Run::new(options.run.clone(), run_id, hub, inbox_rx, observer)
        .with_ledger(options.out_dir.join("coordinator-ledger.jsonl"));
    if let Err(source) = std::fs::create_dir_all(&options.out_dir) {
        return Err(ServeError::Report(ReportError::Write {
            path: options.out_dir.clone(),
            source,
        }));
    }
    let outcome = tokio::select! {
        outcome = engine.execute() => Some(outcome),
        () = shutdown => None,
    };
    // Give the sessions a moment to deliver the final `RunFinished` before closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), server).await {
        return Err(e.into());
    }
    let Some(outcome) = outcome else {
        return Ok(RunOutcome {
            run_id: "interrupted".into(),
            completed: false,
            failure: Some("interrupted by a signal".into()),
            model: None,
            rounds: Vec::new(),
            rejections: Default::default(),
            refusals: Default::default(),
            contributors: Vec::new(),
            not_private: Vec::new(),
            target: None,
        });
    };
    let target = outcome
        .target
        .clone()
        .map(|(column, positive_value)| Target {
            column,
            positive_value,
        })
        .unwrap_or(Target {
            column: String::new(),
            positive_value: String::new(),
        });
    report::write_outputs(&options.out_dir, &outcome, &target, &now_rfc3339())?;
    Ok(outcome)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn make_run_id(name: &str) -> String {
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]"
        ))
        .unwrap_or_default();
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{slug}-{stamp}-{:04x}", rand::random::<u16>())
}
