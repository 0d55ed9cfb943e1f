//! The long-lived coordinator: one gRPC port (federation for partners, admin for
//! operators, both over mutual TLS), a queue of runs trained one at a time, every
//! round committed to the database before the next starts, runs resumed after a
//! crash, an audit log, Prometheus metrics, and a report folder per finished run.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedprofile_config::run::{RunConfig, UpdateDecision};
use fedprofile_learning::model_file::Target;
use fedprofile_protocol::pb::admin_server::AdminServer;
use fedprofile_protocol::pb::federation_server::FederationServer;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tonic::transport::Server;

use crate::audit::AuditLog;
use crate::config::CoordinatorConfig;
use crate::engine::{
    Checkpoint, ClientHub, InFlight, Inbound, RejectReason, RoundRecord, RoundSink, Run,
    RunObserver, RunOutcome, RunSnapshot, SinkError,
};
use crate::metrics::{Metrics, Reason};
use crate::models;
use crate::report::{self, ReportError};
use crate::service::{FederationService, HubListener, IdentityMode, SessionHub};
use crate::store::{NewVersion, RoundCommit, RunRow, RunState, Store, StoreError};
use fedprofile_protocol::messages::{DataFingerprint, ServerEvent};

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls_reload::TlsReloadError),
    /// Plain-text gRPC on a non-loopback address.
    #[error("--insecure is only allowed on a loopback address, not {0}")]
    InsecureNotLoopback(std::net::SocketAddr),
    /// No TLS and no `--insecure`.
    #[error("the coordinator config has no [tls] section; add one, or pass --insecure on loopback")]
    NoTls,
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The state folder is damaged or incomplete (see [`crate::state`]).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The gRPC server stopped with an error.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Outputs could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The run file given with --run is invalid.
    #[error(transparent)]
    RunFile(#[from] fedprofile_config::ConfigError),
}

/// Options of one `serve` invocation.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Validated coordinator config.
    pub config: CoordinatorConfig,
    /// A run to queue at start (`--run`), as TOML text with its path.
    pub queue_run: Option<(PathBuf, String)>,
    /// Where to also write the outputs of the runs this process finishes (`--out`).
    pub out_dir: Option<PathBuf>,
    /// Exit once no run is queued or in progress.
    pub exit_when_idle: bool,
    /// Plain text on loopback.
    pub insecure: bool,
    /// File to write the bound address to.
    pub addr_file: Option<PathBuf>,
    /// Print one progress line per round on stdout.
    pub progress: bool,
    /// Start even if part of the state was lost, recording the loss in the
    /// audit log (`--accept-state-loss`, see [`crate::state`]).
    pub accept_state_loss: bool,
}

/// A progress message for `run watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Run id.
    pub run_id: String,
    /// Last finished round (0 before any).
    pub round: u32,
    /// Rounds planned.
    pub rounds_planned: u32,
    /// Run state.
    pub state: RunState,
    /// Updates aggregated in the round.
    pub accepted: u32,
    /// Clients selected in the round.
    pub selected: u32,
    /// Pooled AUC.
    pub auc: Option<f64>,
    /// Pooled log loss.
    pub log_loss: Option<f64>,
    /// Cumulative epsilon.
    pub epsilon: Option<f64>,
    /// One line of the pooled metrics of a linear, softmax or k-means model.
    pub quality: String,
    /// A line of text.
    pub message: String,
}

/// The run being trained now.
#[derive(Debug)]
pub struct ActiveRun {
    /// Its id.
    pub run_id: String,
    /// Set to `Some(reason)` to cancel it.
    pub cancel: watch::Sender<Option<String>>,
    /// Its progress, for watchers.
    pub progress: broadcast::Sender<Progress>,
}

/// State shared by the run manager, the admin service and the hub listener.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub store: Arc<Store>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Client sessions.
    pub hub: Arc<SessionHub>,
    /// Wakes the run manager when a run is queued.
    pub queue: Notify,
    /// The run in progress.
    pub active: Mutex<Option<ActiveRun>>,
    /// Reports, ledgers.
    pub state_dir: PathBuf,
    /// Recent failed TLS handshakes (who, from where, why), to explain a run
    /// that waits for partners.
    pub handshakes: Arc<crate::tls_reload::HandshakeFailures>,
    /// The clients the last run's final message was sent to (see [`drain`]).
    pub farewells: Arc<Farewells>,
}

/// The clients a run's final message was sent to: a client closes its session
/// once it has read it, so shutdown waits for these sessions ([`drain`]).
#[derive(Debug, Default)]
pub struct Farewells(Mutex<std::collections::BTreeSet<String>>);

impl Farewells {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the previous run's farewells (a new run starts).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The clients sent a final message, sorted.
    pub fn clients(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

/// A hub that remembers who was sent a run's final message.
struct FarewellHub {
    inner: Arc<dyn ClientHub>,
    farewells: Arc<Farewells>,
}

impl ClientHub for FarewellHub {
    fn connected(&self) -> Vec<String> {
        self.inner.connected()
    }

    fn send(&self, client: &str, event: ServerEvent) -> bool {
        let last = matches!(event, ServerEvent::Finished { .. });
        let sent = self.inner.send(client, event);
        if sent && last {
            self.farewells.lock().insert(client.to_string());
        }
        sent
    }

    fn drop_session(&self, client: &str, why: &str) -> bool {
        self.inner.drop_session(client, why)
    }

    fn why_missing(&self, connected: &[String]) -> Vec<String> {
        self.inner.why_missing(connected)
    }
}

/// How often [`drain`] looks at the sessions.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Waits until none of the clients sent a final message is connected any more
/// (each has read it and closed its session), or `bound` has passed. Returns
/// the clients still connected then (their final message may be lost).
pub async fn drain(hub: &dyn ClientHub, farewells: &Farewells, bound: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let connected = hub.connected();
        let waiting: Vec<String> = farewells
            .clients()
            .into_iter()
            .filter(|c| connected.contains(c))
            .collect();
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            return waiting;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

impl Shared {
    /// The active run, if it is `run_id`.
    pub fn with_active<T>(&self, f: impl FnOnce(Option<&ActiveRun>) -> T) -> T {
        let guard = self.active.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.as_ref())
    }
}

/// Now, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A run id from a run name: `<slug>-<utc stamp>-<4 hex>`.
pub fn make_run_id(name: &str) -> String {
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

/// What submitting a run file did.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// The run was queued.
    Run(RunRow),
    /// The file is an update run with `every`/`on_new_data`: a schedule was
    /// created, which queues its runs when they are due.
    Schedule(crate::store::ScheduleRow),
}

/// Validates a run file and queues it, or creates its schedule (an update run
/// file with `every` or `on_new_data`, see [`crate::schedule`]).
pub fn submit(
    shared: &Shared,
    run_toml: &str,
    origin: &Path,
    actor: &str,
) -> Result<Submitted, String> {
    let run = RunConfig::from_toml_str(run_toml, origin).map_err(|e| e.to_string())?;
    if run.update.as_ref().is_some_and(|u| u.schedule.is_some()) {
        let row = crate::schedule::create(shared, &run, run_toml, actor)?;
        // The run manager looks at the schedules when woken.
        shared.queue.notify_one();
        return Ok(Submitted::Schedule(row));
    }
    queue_run(shared, run_toml, origin, actor).map(Submitted::Run)
}

/// Validates a run file and queues it; returns the stored row.
pub fn queue_run(
    shared: &Shared,
    run_toml: &str,
    origin: &Path,
    actor: &str,
) -> Result<RunRow, String> {
    let run = RunConfig::from_toml_str(run_toml, origin).map_err(|e| e.to_string())?;
    let id = make_run_id(&run.name);
    shared
        .store
        .insert_run(&id, &run.name, run_toml, run.rounds, &now())
        .map_err(|e| e.to_string())?;
    shared.audit.note(
        actor,
        "run.queue",
        Some(&id),
        &format!("queued run '{}' ({} rounds)", run.name, run.rounds),
    );
    shared.queue.notify_one();
    shared
        .store
        .run(&id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("run {id} vanished from the database"))
}

/// Binds the federation/admin listener, checking the insecure rule.
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

/// Records partners joining and leaving, and their privacy budget.
#[derive(Debug)]
struct Registry {
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    budgets: Mutex<std::collections::HashMap<String, f64>>,
    /// (client, reason) pairs already written to the audit log: a flood is
    /// counted in the metrics, not written line by line.
    audited_refusals: Mutex<std::collections::HashSet<(String, String)>>,
    /// The sessions, to send champions to partners that follow them (weak: the
    /// hub owns this listener).
    hub: std::sync::Weak<SessionHub>,
}

impl HubListener for Registry {
    fn joined(&self, client: &str, connected: usize, budget: Option<f64>, spent: Option<f64>) {
        self.metrics.clients_connected.set(connected as i64);
        let left = match (budget, spent) {
            (Some(b), s) => {
                self.budgets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client.to_string(), b);
                Some(b - s.unwrap_or(0.0))
            }
            _ => None,
        };
        if let Err(e) = self.store.client_seen(client, true, &now(), left) {
            tracing::error!("{e}");
        }
        self.audit
            .note(client, "client.join", None, "partner session opened");
    }

    fn left(&self, client: &str, connected: usize) {
        self.metrics.clients_connected.set(connected as i64);
        if let Err(e) = self.store.client_seen(client, false, &now(), None) {
            tracing::error!("{e}");
        }
        self.audit
            .note(client, "client.leave", None, "partner session closed");
    }

    fn spent(&self, client: &str, epsilon: f64) {
        let budget = self
            .budgets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
            .copied();
        if let Some(b) = budget
            && let Err(e) = self
                .store
                .client_seen(client, true, &now(), Some(b - epsilon))
        {
            tracing::error!("{e}");
        }
    }

    fn fingerprint(&self, client: &str, fingerprint: &DataFingerprint) {
        let rows = serde_json::to_string(&fingerprint.rows).unwrap_or_else(|_| "{}".into());
        match self.store.record_fingerprint(
            client,
            &fingerprint.sha256,
            &rows,
            &now(),
            crate::schedule::unix_now(),
        ) {
            Ok(true) => self.audit.note(
                client,
                "data.changed",
                None,
                &format!(
                    "data fingerprint changed: rows {rows}, sha256 {}",
                    fingerprint.sha256
                ),
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("{e}"),
        }
    }

    fn refused(&self, client: &str, reason: &str) {
        self.metrics.refuse(reason);
        let first = self
            .audited_refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((client.to_string(), reason.to_string()));
        if first {
            self.audit.note(
                client,
                "message.refused",
                None,
                &format!(
                    "message refused: {reason} (further ones are counted in fedprofile_messages_refused_total)"
                ),
            );
        }
    }

    fn follows(&self, client: &str, held: &[fedprofile_protocol::messages::HeldModel]) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        match crate::follow::champions(&self.store) {
            Ok(champions) => {
                crate::follow::converge(&*hub, client, held, &champions);
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    fn acknowledged(&self, client: &str, ack: fedprofile_protocol::messages::ChampionAck) {
        let name = format!("{}@{}", ack.model.target, ack.model.version);
        if !ack.ok {
            tracing::warn!(client = %client, "partner could not follow {name}: {}", ack.message);
            self.audit.note(
                client,
                "model.follow_failed",
                None,
                &format!("{name} not written: {}", ack.message),
            );
            return;
        }
        let row = crate::store::PartnerModelRow {
            client_id: client.to_string(),
            target: ack.model.target,
            version: ack.model.version,
            fingerprint: ack.model.fingerprint,
            acknowledged_at: now(),
        };
        match self.store.record_partner_model(&row) {
            Ok(()) => {
                tracing::info!(client = %client, "partner holds {name}");
                self.audit.note(
                    client,
                    "model.follow",
                    None,
                    &format!("partner holds {name}: {}", ack.message),
                );
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
}

/// How long shutdown waits for the sessions to deliver the final message.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Runs the coordinator until `shutdown` resolves (or, with `exit_when_idle`,
/// until no run is left). Returns the outcome of the last run it finished.
pub async fn serve(
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Option<RunOutcome>, ServeError> {
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.config.listen,
        source,
    })?;
    let (inbox_tx, inbox_rx) = mpsc::channel(4096);
    let shared = open_shared(&options, SessionHub::new(inbox_tx))?;
    shared.audit.note(
        "coordinator",
        "coordinator.start",
        None,
        &format!("listening on {local}"),
    );
    if let Some((path, text)) = &options.queue_run {
        let submitted = submit(&shared, text, path, "coordinator").map_err(|problem| {
            fedprofile_config::ConfigError::Parse {
                path: path.clone(),
                message: problem,
            }
        })?;
        match submitted {
            Submitted::Run(row) => println!("queued run {}", row.id),
            Submitted::Schedule(row) => println!(
                "created schedule {}: {}",
                row.id,
                crate::schedule::describe(&row)
            ),
        }
    }
    let background = Background::start(&options, listener, &shared).await?;
    if let Some(path) = &options.addr_file {
        std::fs::write(path, local.to_string()).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
    }
    tracing::info!(address = %local, insecure = options.insecure, "coordinator listening");
    let metrics_stop = serve_metrics(&options, &shared.metrics).await?;

    let mut result = tokio::select! {
        r = manage_runs(Arc::clone(&shared), inbox_rx, &options) => r,
        () = shutdown => Ok(None),
    };
    // Files deleted or replaced under a running coordinator are never a clean exit.
    if let Err(e) = shared.store.check_files()
        && result.is_ok()
    {
        result = Err(e.into());
    }
    report_damage(&shared.store, &shared.audit, None);
    shared
        .audit
        .note("coordinator", "coordinator.stop", None, "shutting down");
    // Let the sessions deliver the final `RunFinished` and close (bounded).
    let left = drain(&*shared.hub, &shared.farewells, DRAIN_BOUND).await;
    if !left.is_empty() {
        tracing::warn!(
            clients = %left.join(","),
            "sessions still open {} s after the final message; closing them",
            DRAIN_BOUND.as_secs()
        );
    }
    if let Some(stop) = metrics_stop {
        let _ = stop.send(());
    }
    background.stop().await?;
    result
}

/// Opens the state directory (store and audit log) and the shared state of
/// the daemon's tasks around `hub`.
fn open_shared(options: &ServeOptions, hub: Arc<SessionHub>) -> Result<Arc<Shared>, ServeError> {
    let state_dir = options.config.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|source| ReportError::Write {
        path: state_dir.clone(),
        source,
    })?;
    let state = crate::state::open(&state_dir, options.accept_state_loss)?;
    if let Some(anchor) = &state.anchored
        && anchor.action == "state.lost"
    {
        tracing::warn!("started on a damaged state, as asked: {}", anchor.detail);
    }
    let (store, audit) = (state.store, state.audit);
    let metrics = Arc::new(Metrics::new());
    for version in store.model_versions(None)? {
        if version.status == crate::store::ModelStatus::Champion {
            metrics.set_champion(&version.target, version.version);
        }
    }
    hub.set_listener(Arc::new(Registry {
        store: Arc::clone(&store),
        audit: Arc::clone(&audit),
        metrics: Arc::clone(&metrics),
        budgets: Mutex::new(Default::default()),
        audited_refusals: Mutex::new(Default::default()),
        hub: Arc::downgrade(&hub),
    }));
    Ok(Arc::new(Shared {
        store,
        audit,
        metrics,
        hub,
        queue: Notify::new(),
        active: Mutex::new(None),
        state_dir,
        handshakes: Arc::default(),
        farewells: Arc::default(),
    }))
}

/// The tasks that serve beside the run manager: the gRPC server (federation
/// and admin on one port) and, with TLS, certificate reloading and the export
/// of handshake failures to the metrics.
struct Background {
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    helpers: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    async fn start(
        options: &ServeOptions,
        listener: TcpListener,
        shared: &Arc<Shared>,
    ) -> Result<Background, ServeError> {
        let identity = if options.insecure {
            IdentityMode::InsecureClaimed
        } else {
            IdentityMode::Certificate
        };
        let federation = FederationServer::new(
            FederationService::new(Arc::clone(&shared.hub), identity)
                .with_metrics(Arc::clone(&shared.metrics)),
        )
        .max_decoding_message_size(options.config.max_message_bytes)
        .max_encoding_message_size(options.config.max_message_bytes);
        let admin = AdminServer::new(crate::admin::AdminService::new(
            Arc::clone(shared),
            options.insecure,
        ))
        .max_decoding_message_size(options.config.max_message_bytes);
        let builder = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .concurrency_limit_per_connection(64)
            .add_service(federation)
            .add_service(admin);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stop_rx.await;
        };
        if options.insecure {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = tokio::spawn(builder.serve_with_incoming_shutdown(incoming, stopped));
            return Ok(Background {
                stop,
                server,
                helpers: Vec::new(),
            });
        }
        let files = options.config.tls.clone().ok_or(ServeError::NoTls)?;
        let tls = crate::tls_reload::ReloadableTls::load_with_failures(
            crate::tls_reload::TlsSources {
                ca_cert: files.ca_cert,
                cert: files.cert,
                key: files.key,
                crl: options.config.crl.clone(),
            },
            Arc::clone(&shared.handshakes),
        )?;
        let incoming = crate::tls_reload::incoming(listener, Arc::clone(&tls));
        let server = tokio::spawn(builder.serve_with_incoming_shutdown(incoming, stopped));
        let helpers = vec![
            tls.watch(Duration::from_secs(2)),
            tokio::spawn(reload_on_sighup(
                Arc::clone(&tls),
                Arc::clone(&shared.audit),
            )),
            tokio::spawn(export_handshake_failures(
                Arc::clone(&tls),
                Arc::clone(&shared.metrics),
            )),
        ];
        Ok(Background {
            stop,
            server,
            helpers,
        })
    }

    /// Stops the server (waiting for it at most 5 s) and the helpers.
    async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        for helper in self.helpers {
            helper.abort();
        }
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), self.server).await {
            return Err(e.into());
        }
        Ok(())
    }
}

/// Adds the TLS layer's handshake failures, by cause, to the metrics (every
/// second, until aborted).
async fn export_handshake_failures(
    tls: Arc<crate::tls_reload::ReloadableTls>,
    metrics: Arc<Metrics>,
) {
    let mut seen: std::collections::HashMap<&'static str, u64> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (cause, now) in tls.failures().by_cause() {
            let before = seen.entry(cause.label()).or_default();
            if now > *before {
                metrics
                    .tls_handshake_failures
                    .get_or_create(&crate::metrics::Cause {
                        cause: cause.label().to_string(),
                    })
                    .inc_by(now - *before);
                *before = now;
            }
        }
    }
}

/// Starts the metrics endpoint when the config asks for one; the sender stops it.
async fn serve_metrics(
    options: &ServeOptions,
    metrics: &Arc<Metrics>,
) -> Result<Option<oneshot::Sender<()>>, ServeError> {
    let Some(addr) = options.config.metrics_listen else {
        return Ok(None);
    };
    let listener = crate::metrics::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    if let Some(path) = &options.addr_file {
        let bound = listener.local_addr().map_or(addr, |a| a);
        let file = path.with_extension("metrics");
        let _ = std::fs::write(file, bound.to_string());
    }
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::metrics::serve(
        listener,
        Arc::clone(metrics),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Some(stop))
}

async fn reload_on_sighup(tls: Arc<crate::tls_reload::ReloadableTls>, audit: Arc<AuditLog>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => audit.note(
                    "coordinator",
                    "tls.reload",
                    None,
                    &format!(
                        "certificates reloaded on SIGHUP (generation {})",
                        tls.generation()
                    ),
                ),
                Err(e) => {
                    tracing::error!("certificate reload failed, keeping the previous ones: {e}");
                    audit.note("coordinator", "tls.reload_failed", None, &e.to_string());
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (tls, audit);
        std::future::pending::<()>().await;
    }
}

/// Trains queued runs one at a time; resumes a run left in progress first.
async fn manage_runs(
    shared: Arc<Shared>,
    mut inbox: mpsc::Receiver<Inbound>,
    options: &ServeOptions,
) -> Result<Option<RunOutcome>, ServeError> {
    let mut last = None;
    loop {
        let next = match shared.store.in_progress()?.into_iter().next() {
            Some(row) => Some(row),
            None => shared.store.next_queued()?,
        };
        let Some(row) = next else {
            // A schedule that is due queues its run (looked at again below).
            if !crate::schedule::tick(&shared, crate::schedule::unix_now())?.is_empty() {
                continue;
            }
            if options.exit_when_idle {
                return Ok(last);
            }
            // Drain session events while idle so the channel never fills;
            // look at the schedules every tick.
            tokio::select! {
                () = shared.queue.notified() => {}
                () = tokio::time::sleep(crate::schedule::TICK) => {}
                event = inbox.recv() => {
                    if event.is_none() {
                        return Ok(last);
                    }
                }
            }
            continue;
        };
        let (outcome, returned) = execute(&shared, row, inbox, options).await?;
        inbox = returned;
        if let Some(outcome) = &outcome {
            crate::schedule::after_run(&shared, outcome)?;
        }
        last = outcome.or(last);
    }
}

/// Trains one run (fresh or resumed) to its end.
type Resumable = (Option<Checkpoint>, Vec<RoundRecord>, Option<InFlight>);

/// What a run resumes from: the checkpoint of its last committed round, the
/// committed round records and (for a run that was running) the attempt in
/// flight when the coordinator stopped. A row that cannot be read is an error naming
/// the round (the database was damaged or written by an incompatible version).
fn resumable_state(shared: &Shared, row: &RunRow) -> Result<Resumable, String> {
    let unreadable = |what: String, e: &dyn std::fmt::Display| {
        format!(
            "the {what} of run '{}' in the coordinator's database cannot be read ({e}); \
             the run cannot resume without it and is not restarted from round 0",
            row.id
        )
    };
    let checkpoint = match shared.store.last_checkpoint(&row.id) {
        Ok(None) => None,
        Ok(Some(c)) => Some(
            serde_json::from_str::<Checkpoint>(&c.checkpoint_json)
                .map_err(|e| unreadable(format!("checkpoint of round {}", c.round), &e))?,
        ),
        Err(e) => return Err(unreadable("checkpoint".into(), &e)),
    };
    let rows = shared
        .store
        .rounds(&row.id)
        .map_err(|e| unreadable("round records".into(), &e))?;
    let mut rounds = Vec::new();
    for r in rows {
        match serde_json::from_str::<Option<RoundRecord>>(&r.record_json) {
            Ok(Some(record)) => rounds.push(record),
            Ok(None) => {}
            Err(e) => return Err(unreadable(format!("record of round {}", r.round), &e)),
        }
    }
    // The attempt in flight is repeated under the same task ids so that no
    // partner is charged twice; without it a resumed DP round would be.
    let in_flight = if row.state == RunState::Running {
        match shared.store.in_flight(&row.id) {
            Ok(None) => None,
            Ok(Some(a)) => Some(
                serde_json::from_str::<InFlight>(&a.selected_json)
                    .map_err(|e| unreadable("attempt in flight".into(), &e))?,
            ),
            Err(e) => return Err(unreadable("attempt in flight".into(), &e)),
        }
    } else {
        None
    };
    Ok((checkpoint, rounds, in_flight))
}

/// Marks run `run_id` failed before its engine started, for `why`: logged,
/// stored as the run's reason and noted in the audit log.
fn fail_before_start(shared: &Shared, run_id: &str, why: &str) -> Result<(), ServeError> {
    tracing::error!(run_id = %run_id, "{why}");
    shared
        .store
        .set_run_state(run_id, RunState::Failed, &now(), Some(why))?;
    shared
        .audit
        .note("coordinator", "run.failed", Some(run_id), why);
    Ok(())
}

async fn execute(
    shared: &Arc<Shared>,
    row: RunRow,
    inbox: mpsc::Receiver<Inbound>,
    options: &ServeOptions,
) -> Result<(Option<RunOutcome>, mpsc::Receiver<Inbound>), ServeError> {
    let origin = PathBuf::from(format!("run {}", row.id));
    let mut config = match RunConfig::from_toml_str(&row.run_toml, &origin) {
        Ok(c) => c,
        Err(e) => {
            shared
                .store
                .set_run_state(&row.id, RunState::Failed, &now(), Some(&e.to_string()))?;
            return Ok((None, inbox));
        }
    };
    if let Some(update) = &config.update {
        // An update run warm-starts from its target's champion (kept in the
        // run folder, so a resumed run keeps the champion it started with).
        let run_dir = shared.state_dir.join("runs").join(&row.id);
        match models::prepare_update(&shared.store, &run_dir, update) {
            Ok(path) => config.warm_start = Some(path),
            Err(why) => {
                fail_before_start(shared, &row.id, &why)?;
                shared.metrics.count_update("failed");
                return Ok((None, inbox));
            }
        }
    }
    let resumable = match resumable_state(shared, &row) {
        Ok(r) => r,
        Err(why) => {
            // Never restart from round 0 while the audit log says rounds were
            // committed: a checkpoint that cannot be read fails the run.
            fail_before_start(shared, &row.id, &why)?;
            return Ok((None, inbox));
        }
    };
    let (checkpoint, rounds, in_flight) = resumable;
    let resumed = row.state == RunState::Running;
    shared
        .store
        .set_run_state(&row.id, RunState::Running, &now(), None)?;
    shared.audit.note(
        "coordinator",
        if resumed { "run.resume" } else { "run.start" },
        Some(&row.id),
        &match &checkpoint {
            Some(c) if resumed => format!("resumed after round {}", c.round),
            _ if resumed => "restarted from the beginning (no round was committed)".into(),
            _ => format!("started '{}' ({} rounds)", config.name, config.rounds),
        },
    );
    let (cancel_tx, cancel_rx) = watch::channel(None);
    let (progress_tx, _) = broadcast::channel(256);
    *shared.active.lock().unwrap_or_else(|e| e.into_inner()) = Some(ActiveRun {
        run_id: row.id.clone(),
        cancel: cancel_tx,
        progress: progress_tx.clone(),
    });
    let run_dir = shared.state_dir.join("runs").join(&row.id);
    std::fs::create_dir_all(&run_dir).map_err(|source| ReportError::Write {
        path: run_dir.clone(),
        source,
    })?;
    let observer = DaemonObserver {
        audit: Arc::clone(&shared.audit),
        shared: Arc::clone(shared),
        run_id: row.id.clone(),
        rounds_planned: config.rounds,
        progress: progress_tx.clone(),
        print: options.progress,
        repeated: Default::default(),
    };
    // Only this run's final message is waited for at shutdown.
    shared.farewells.clear();
    let mut run = Run::new(
        config.clone(),
        row.id.clone(),
        // The sessions, plus who is missing and why (failed handshakes, absent partners).
        Arc::new(FarewellHub {
            inner: Arc::new(crate::missing::ExplainingHub::new(Arc::clone(shared))),
            farewells: Arc::clone(&shared.farewells),
        }) as Arc<dyn ClientHub>,
        inbox,
        Box::new(observer),
    )
    .with_ledger(run_dir.join("coordinator-ledger.jsonl"))
    .with_sink(Box::new(StoreSink {
        store: Arc::clone(&shared.store),
        audit: Arc::clone(&shared.audit),
        run_id: row.id.clone(),
    }))
    .with_cancel(cancel_rx);
    if let Some(checkpoint) = checkpoint {
        // The attempt in flight when the coordinator stopped, repeated under the
        // same task ids so that partners' charges are never made twice.
        run = run
            .resume_from(checkpoint, rounds)
            .with_in_flight(in_flight);
    }
    let span = tracing::info_span!("run", run_id = %row.id);
    let (outcome, inbox) = tracing::Instrument::instrument(run.execute(), span).await;
    // The run's deferred audit lines, before its end is recorded.
    shared.audit.flush();
    record_outcome(shared, &row.id, &config, &outcome, options, &progress_tx)?;
    *shared.active.lock().unwrap_or_else(|e| e.into_inner()) = None;
    Ok((Some(outcome), inbox))
}

/// Records how a run ended: its state in the store, the metrics, the audit
/// line, its reports (in its run folder and `--out`) and the last progress
/// message.
fn record_outcome(
    shared: &Arc<Shared>,
    run_id: &str,
    config: &RunConfig,
    outcome: &RunOutcome,
    options: &ServeOptions,
    progress_tx: &broadcast::Sender<Progress>,
) -> Result<(), ServeError> {
    let run_dir = shared.state_dir.join("runs").join(run_id);
    let state = if outcome.completed {
        RunState::Finished
    } else if outcome.cancelled.is_some() {
        RunState::Cancelled
    } else {
        RunState::Failed
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
    let finished_at = now();
    // An update run's verdict: the challenger against the champion, on the
    // final evaluation round.
    let decision = match (&config.update, outcome.completed) {
        (Some(update), true) => match models::decide(&shared.store, &run_dir, update, outcome) {
            Ok(decision) => Some(decision),
            Err(why) => {
                tracing::error!(run_id = %run_id, "{why}");
                None
            }
        },
        _ => None,
    };
    // The run's version is registered in the same transaction as its finish.
    let registration = match (&outcome.model, outcome.completed) {
        (Some(model), true) => match report::model_document(outcome, model, &target, &finished_at)
            .and_then(|doc| doc.to_json().map_err(|e| ReportError::Model(e.to_string())))
        {
            Ok(model_json) => Some(Registration::of(
                shared,
                config,
                outcome,
                model_json,
                decision.as_ref(),
            )?),
            Err(e) => {
                tracing::error!(run_id = %run_id, "the model cannot be registered: {e}");
                None
            }
        },
        _ => None,
    };
    let registered = shared.store.finish_run(
        run_id,
        state,
        &finished_at,
        outcome.failure.as_deref(),
        registration
            .as_ref()
            .map(Registration::new_version)
            .as_ref(),
    )?;
    if config.update.is_some() {
        let verdict = match (&decision, registered) {
            (Some(_), Some((_, true))) => "promoted",
            (Some(_), Some((_, false))) => "rejected",
            _ => "failed",
        };
        shared.metrics.count_update(verdict);
    }
    if let (Some(r), Some((version, champion))) = (&registration, registered) {
        if champion {
            shared.metrics.set_champion(&r.target, version);
            // Committed above; now the following partners are told.
            if let Err(e) = crate::follow::announce(&shared.store, &*shared.hub, &r.target) {
                tracing::error!("{e}");
            }
        }
        // The reason as stored (the registry may have refused a promotion).
        let reason = match shared.store.model_version(&r.target, version) {
            Ok(Some(row)) => row.reason,
            _ => r.reason.clone(),
        };
        let status = if champion {
            "champion"
        } else {
            "challenger-rejected"
        };
        shared.audit.note(
            "coordinator",
            "model.register",
            Some(run_id),
            &format!("{}@{version} registered ({status}): {reason}", r.target),
        );
        if let Some(d) = &decision {
            let (event, verdict) = if champion {
                ("model.promote", "promoted")
            } else {
                ("model.reject", "rejected")
            };
            shared.audit.note(
                "coordinator",
                event,
                Some(run_id),
                &format!(
                    "{target}@{version} {verdict} against {target}@{}: {reason}",
                    d.champion_version,
                    target = r.target,
                ),
            );
        }
    }
    shared.metrics.epsilon_spent.set(0.0);
    shared
        .metrics
        .runs_finished
        .get_or_create(&Reason {
            reason: state.as_str().to_string(),
        })
        .inc();
    shared.audit.note(
        "coordinator",
        &format!("run.{}", state.as_str()),
        Some(run_id),
        outcome.failure.as_deref().unwrap_or("all rounds completed"),
    );
    report::write_outputs(&run_dir, outcome, &target, &now(), decision.as_ref())?;
    report::write_plots(&run_dir, outcome);
    if let Some(out) = &options.out_dir {
        report::write_outputs(out, outcome, &target, &now(), decision.as_ref())?;
        report::write_plots(out, outcome);
        let ledger = run_dir.join("coordinator-ledger.jsonl");
        if ledger.exists() {
            let _ = std::fs::copy(&ledger, out.join("coordinator-ledger.jsonl"));
        }
    }
    let _ = progress_tx.send(Progress {
        run_id: run_id.to_string(),
        round: outcome.rounds.last().map_or(0, |r| r.round),
        rounds_planned: config.rounds,
        state,
        accepted: 0,
        selected: 0,
        auc: outcome
            .rounds
            .iter()
            .rev()
            .find_map(|r| r.metrics.and_then(|m| m.auc)),
        log_loss: outcome
            .rounds
            .iter()
            .rev()
            .find_map(|r| r.metrics.map(|m| m.log_loss)),
        epsilon: outcome.rounds.iter().rev().find_map(|r| r.epsilon),
        quality: outcome
            .rounds
            .iter()
            .rev()
            .find_map(|r| r.quality.as_ref())
            .map(report::headline)
            .unwrap_or_default(),
        message: match (&outcome.failure, &registration, registered) {
            (Some(failure), _, _) => failure.clone(),
            (None, Some(r), Some((version, champion))) if decision.is_some() => format!(
                "run finished; {}@{version} {}: {}",
                r.target,
                if champion {
                    "is the new champion"
                } else {
                    "was not promoted"
                },
                decision.as_ref().map_or("", |d| d.reason.as_str())
            ),
            _ => "run finished".into(),
        },
    });
    Ok(())
}

/// What a finished run registers in the model registry (see `crate::models`).
struct Registration {
    target: String,
    family: String,
    metrics_json: String,
    epsilon: Option<f64>,
    data_fingerprint: String,
    model_json: String,
    reason: String,
    promote: bool,
    parent_version: Option<u32>,
    decision_json: Option<String>,
}

impl Registration {
    /// A run without `[update]` becomes the first champion of its target;
    /// when the target has a champion already, it is registered as a rejected
    /// challenger (an operator may promote it).
    fn of(
        shared: &Shared,
        config: &RunConfig,
        outcome: &RunOutcome,
        model_json: String,
        decision: Option<&UpdateDecision>,
    ) -> Result<Registration, StoreError> {
        let target = models::target_of(config, outcome);
        if let Some(d) = decision {
            return Ok(Registration {
                target: d.target.clone(),
                family: config.model.name().to_string(),
                metrics_json: models::metrics_json(&outcome.rounds),
                epsilon: models::epsilon(&outcome.rounds),
                data_fingerprint: models::data_fingerprint(outcome),
                model_json,
                reason: d.reason.clone(),
                promote: d.promoted,
                parent_version: Some(d.champion_version),
                decision_json: serde_json::to_string(d).ok(),
            });
        }
        let reason = match shared.store.champion(&target)? {
            None => format!("the first version of '{target}' (run {})", outcome.run_id),
            Some(champion) => format!(
                "run {} is not an update run, so the champion {} stays (`model promote` makes it champion)",
                outcome.run_id,
                champion.name()
            ),
        };
        Ok(Registration {
            target,
            family: config.model.name().to_string(),
            metrics_json: models::metrics_json(&outcome.rounds),
            epsilon: models::epsilon(&outcome.rounds),
            data_fingerprint: models::data_fingerprint(outcome),
            model_json,
            reason,
            promote: false,
            parent_version: None,
            decision_json: None,
        })
    }

    fn new_version(&self) -> NewVersion<'_> {
        NewVersion {
            target: &self.target,
            family: &self.family,
            metrics_json: &self.metrics_json,
            epsilon: self.epsilon,
            data_fingerprint: &self.data_fingerprint,
            parent_version: self.parent_version,
            model_json: &self.model_json,
            promote: self.promote,
            reason: &self.reason,
            decision_json: self.decision_json.as_deref(),
        }
    }
}

/// Commits rounds to the database, and records each commit in the audit log
/// (with the run's deferred lines: one write per round).
struct StoreSink {
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    run_id: String,
}

impl StoreSink {
    /// If the store found its files deleted or replaced, says so in the audit
    /// log, so that the next start refuses the state.
    fn note_damage(&mut self, e: &StoreError) {
        if let Some(crate::store::Problem::FilesReplaced { .. }) = e.problem() {
            tracing::error!("{e}");
            report_damage(&self.store, &self.audit, Some(&self.run_id));
        }
    }
}

/// Writes a `state.damaged` event if the store found its files deleted or
/// replaced and nobody reported it yet.
fn report_damage(store: &Store, audit: &AuditLog, run_id: Option<&str>) {
    if let Some(file) = store.take_damage_report() {
        audit.note(
            "coordinator",
            "state.damaged",
            run_id,
            &format!(
                "'{}' was deleted or replaced while the coordinator had it open; what it committed since is lost",
                file.display()
            ),
        );
    }
}

impl RoundSink for StoreSink {
    fn commit(
        &mut self,
        record: Option<&RoundRecord>,
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError> {
        let record_json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        let checkpoint_json = serde_json::to_string(checkpoint).map_err(|e| e.to_string())?;
        let commit = || {
            self.store.commit_round(&RoundCommit {
                run_id: &self.run_id,
                round: checkpoint.round,
                record_json: &record_json,
                checkpoint_json: &checkpoint_json,
                committed_at: &now(),
            })
        };
        // One short SQLite transaction with an fsync: keep it off the async workers.
        if let Err(e) = tokio::task::block_in_place(commit) {
            self.note_damage(&e);
            return Err(SinkError(e.to_string()));
        }
        // After the commit: the audit log never shows a round the database
        // does not have (the reverse, after a crash in between, is allowed).
        tokio::task::block_in_place(|| {
            self.audit.note(
                "coordinator",
                "round.commit",
                Some(&self.run_id),
                &crate::state::round_commit_detail(checkpoint.round),
            )
        });
        Ok(())
    }

    fn begin_attempt(&mut self, attempt: &InFlight) -> Result<(), SinkError> {
        let json = serde_json::to_string(attempt).map_err(|e| e.to_string())?;
        let write = || {
            self.store
                .begin_attempt(&self.run_id, attempt.round, attempt.attempt, &json, &now())
        };
        tokio::task::block_in_place(write).map_err(|e| {
            self.note_damage(&e);
            SinkError(e.to_string())
        })
    }
}

/// Metrics, audit, watchers and the progress line, per run.
///
/// Rejections are audited so that a partner cannot flood the audit log: the
/// first rejection of a (client, reason) in an interval (a round, or the time
/// before the first round) is written at once; repeats are counted (they are
/// in `fedprofile_updates_rejected_total` at once) and written as one line with
/// their count when the round is committed or the run ends.
///
/// Its audit lines (refused tasks, rejected updates, exclusions) are deferred
/// ([`AuditLog::defer`]) and go out as one write with the round's
/// `round.commit` event, or when the run ends: 5,000 refusals in a round cost
/// one fsync, not 5,000.
struct DaemonObserver {
    audit: Arc<AuditLog>,
    shared: Arc<Shared>,
    run_id: String,
    rounds_planned: u32,
    progress: broadcast::Sender<Progress>,
    print: bool,
    repeated: std::collections::BTreeMap<(String, &'static str), Repeated>,
}

/// Repeats of one (client, reason) rejection not yet written to the audit log.
#[derive(Debug, Default)]
struct Repeated {
    count: u64,
    last: String,
}

impl DaemonObserver {
    /// Writes one line per (client, reason) that repeated since the last flush.
    fn flush_repeated(&mut self) {
        for ((client, key), r) in std::mem::take(&mut self.repeated) {
            if r.count > 0 {
                self.audit.defer(
                    &client,
                    "update.rejected",
                    Some(&self.run_id),
                    &format!(
                        "{} more '{key}' rejections since the first one (last: {})",
                        r.count, r.last
                    ),
                );
            }
        }
    }
}

impl Drop for DaemonObserver {
    fn drop(&mut self) {
        self.flush_repeated();
        self.audit.flush();
    }
}

impl RunObserver for DaemonObserver {
    fn round_finished(&mut self, run: &RunSnapshot<'_>, r: &RoundRecord) {
        self.flush_repeated();
        self.audit.flush();
        let m = &self.shared.metrics;
        m.rounds_completed.inc();
        m.round_duration.observe(r.round_ms / 1e3);
        m.updates_accepted.inc_by(r.accepted as u64);
        if let Some(e) = r.epsilon {
            m.epsilon_spent.set(e);
        }
        if self.print {
            report::ProgressPrinter.round_finished(run, r);
        }
        tracing::info!(run_id = %self.run_id, round = r.round, accepted = r.accepted, "round committed");
        let _ = self.progress.send(Progress {
            run_id: self.run_id.clone(),
            round: r.round,
            rounds_planned: self.rounds_planned,
            state: RunState::Running,
            accepted: r.accepted as u32,
            selected: r.selected as u32,
            auc: r.metrics.and_then(|m| m.auc),
            log_loss: r.metrics.map(|m| m.log_loss),
            epsilon: r.epsilon,
            quality: r.quality.as_ref().map(report::headline).unwrap_or_default(),
            message: report::round_notes(r),
        });
    }

    fn note(&mut self, message: &str) {
        if self.print {
            report::ProgressPrinter.note(message);
        }
        tracing::info!(run_id = %self.run_id, "{message}");
    }

    fn excluded(&mut self, run_id: &str, round: u32, strategy: &str, clients: &[String]) {
        let message = format!(
            "round {round}: {strategy} excluded the updates of {}",
            clients.join(", ")
        );
        if self.print {
            report::ProgressPrinter.note(&message);
        }
        self.audit.defer(
            "coordinator",
            "aggregation.excluded",
            Some(run_id),
            &message,
        );
    }

    fn update_rejected(
        &mut self,
        run_id: &str,
        client: &str,
        task_id: &str,
        reason: &RejectReason,
    ) {
        self.shared
            .metrics
            .updates_rejected
            .get_or_create(&Reason {
                reason: reason.key().to_string(),
            })
            .inc();
        let detail = format!("{task_id}: {reason}");
        match self.repeated.entry((client.to_string(), reason.key())) {
            std::collections::btree_map::Entry::Occupied(mut seen) => {
                let r = seen.get_mut();
                r.count += 1;
                r.last = detail;
            }
            std::collections::btree_map::Entry::Vacant(first) => {
                first.insert(Repeated::default());
                self.audit
                    .defer(client, "update.rejected", Some(run_id), &detail);
            }
        }
    }

    fn task_refused(&mut self, run_id: &str, client: &str, task_id: &str, reason: &str) {
        self.shared.metrics.tasks_refused.inc();
        self.audit.defer(
            client,
            "task.refused",
            Some(run_id),
            &format!("{task_id}: {reason}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub whose sessions are a list the test changes.
    #[derive(Default)]
    struct FakeHub {
        connected: Mutex<Vec<String>>,
        sent: Mutex<Vec<(String, ServerEvent)>>,
    }

    impl FakeHub {
        fn with(clients: &[&str]) -> Arc<FakeHub> {
            let hub = FakeHub::default();
            *hub.connected.lock().unwrap() = clients.iter().map(|c| c.to_string()).collect();
            Arc::new(hub)
        }

        fn leave(&self, client: &str) {
            self.connected.lock().unwrap().retain(|c| c != client);
        }
    }

    impl ClientHub for FakeHub {
        fn connected(&self) -> Vec<String> {
            self.connected.lock().unwrap().clone()
        }
        fn send(&self, client: &str, event: ServerEvent) -> bool {
            let ok = self.connected().iter().any(|c| c == client);
            if ok {
                self.sent.lock().unwrap().push((client.to_string(), event));
            }
            ok
        }
        fn drop_session(&self, client: &str, _why: &str) -> bool {
            let was = self.connected().iter().any(|c| c == client);
            self.leave(client);
            was
        }
    }

    fn finished() -> ServerEvent {
        ServerEvent::Finished {
            run_id: "r".into(),
            message: "run finished after 1 rounds".into(),
        }
    }

    #[test]
    fn only_a_delivered_final_message_is_remembered() {
        let inner = FakeHub::with(&["a", "b"]);
        let farewells = Arc::new(Farewells::default());
        let hub = FarewellHub {
            inner: Arc::clone(&inner) as Arc<dyn ClientHub>,
            farewells: Arc::clone(&farewells),
        };
        assert!(hub.send("a", finished()));
        assert!(!hub.send("gone", finished()));
        assert!(hub.send(
            "b",
            ServerEvent::Task(fedprofile_protocol::messages::Task {
                task_id: "t".into(),
                run_id: "r".into(),
                round: 0,
                body: fedprofile_protocol::messages::TaskBody::Stats {
                    binary_counts: false,
                },
            })
        ));
        assert_eq!(farewells.clients(), vec!["a".to_string()]);
        assert_eq!(inner.sent.lock().unwrap().len(), 2);
        farewells.clear();
        assert!(farewells.clients().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_sessions_to_close_then_returns() {
        let hub = FakeHub::with(&["a", "b", "idle"]);
        let farewells = Farewells::default();
        farewells.lock().extend(["a".to_string(), "b".to_string()]);
        let closer = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                hub.leave("a");
                tokio::time::sleep(Duration::from_millis(50)).await;
                hub.leave("b");
            })
        };
        let started = tokio::time::Instant::now();
        let left = drain(&*hub, &farewells, Duration::from_secs(2)).await;
        closer.await.unwrap();
        // Both read their final message and closed; "idle" was never sent one.
        assert!(left.is_empty(), "{left:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_is_bounded_and_names_the_sessions_left_open() {
        let hub = FakeHub::with(&["a", "stuck"]);
        let farewells = Farewells::default();
        farewells
            .lock()
            .extend(["a".to_string(), "stuck".to_string()]);
        hub.leave("a");
        let started = tokio::time::Instant::now();
        let left = drain(&*hub, &farewells, Duration::from_secs(2)).await;
        assert_eq!(left, vec!["stuck".to_string()]);
        assert!(started.elapsed() >= Duration::from_secs(2));
        // Nobody sent a final message: nothing to wait for.
        let none = Farewells::default();
        let started = tokio::time::Instant::now();
        assert!(drain(&*hub, &none, Duration::from_secs(2)).await.is_empty());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    const RUN: &str = r#"
[run]
name = "daemon-test"
rounds = 2
model = "logistic_regression"

[clients]
fraction_per_round = 1.0
min_per_round = 1
min_connected_to_start = 1
start_timeout_secs = 600

[round]
deadline_secs = 30
eval_every = 1
max_retries = 0

[training]
local_epochs = 1
batch_size = 32
learning_rate = 0.1
"#;

    fn shared(dir: &Path) -> Arc<Shared> {
        let state = crate::state::open(dir, false).unwrap();
        let (tx, _rx) = mpsc::channel(16);
        Arc::new(Shared {
            store: state.store,
            audit: state.audit,
            metrics: Arc::new(Metrics::new()),
            hub: SessionHub::new(tx),
            queue: Notify::new(),
            active: Mutex::new(None),
            state_dir: dir.to_path_buf(),
            handshakes: Arc::default(),
            farewells: Arc::default(),
        })
    }

    fn options(dir: &Path) -> ServeOptions {
        ServeOptions {
            config: CoordinatorConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                max_message_bytes: 1 << 20,
                tls: None,
                crl: None,
                state_dir: dir.to_path_buf(),
                metrics_listen: None,
            },
            queue_run: None,
            out_dir: None,
            exit_when_idle: true,
            insecure: true,
            addr_file: None,
            progress: false,
            accept_state_loss: false,
        }
    }

    #[test]
    fn queued_runs_are_trained_in_the_order_they_were_queued() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let origin = Path::new("run.toml");
        let first = queue_run(&shared, RUN, origin, "test").unwrap();
        let second = queue_run(&shared, RUN, origin, "test").unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(shared.store.next_queued().unwrap().unwrap().id, first.id);
        shared
            .store
            .set_run_state(&first.id, RunState::Finished, &now(), None)
            .unwrap();
        assert_eq!(shared.store.next_queued().unwrap().unwrap().id, second.id);
    }

    fn checkpoint_json(round: u32) -> String {
        serde_json::json!({
            "round": round,
            "model": {
                "model_type": "logistic_regression",
                "features": {"columns": []},
                "params": [0.5],
                "outputs": 1
            },
            "target": ["churn", "yes"],
            "contributors": ["a"],
            "rejections": {},
            "refusals": {},
            "not_private": [],
            "server_clip_norm": null
        })
        .to_string()
    }

    /// Shared state in a new folder with [`RUN`] queued; the folder, the state
    /// and the queued run.
    fn queued_run() -> (tempfile::TempDir, Arc<Shared>, RunRow) {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let row = queue_run(&shared, RUN, Path::new("run.toml"), "test").unwrap();
        (dir, shared, row)
    }

    fn commit(shared: &Shared, run_id: &str, round: u32, checkpoint_json: &str) {
        shared
            .store
            .commit_round(&RoundCommit {
                run_id,
                round,
                record_json: "null",
                checkpoint_json,
                committed_at: &now(),
            })
            .unwrap();
    }

    #[test]
    fn a_run_resumes_from_its_last_checkpoint() {
        let (_dir, shared, row) = queued_run();
        commit(&shared, &row.id, 0, &checkpoint_json(0));
        commit(&shared, &row.id, 1, &checkpoint_json(1));
        let (checkpoint, rounds, in_flight) = resumable_state(&shared, &row).unwrap();
        let checkpoint = checkpoint.unwrap();
        assert_eq!(checkpoint.round, 1);
        assert_eq!(checkpoint.model.params, vec![0.5]);
        assert!(checkpoint.state.contributors.contains("a"));
        assert!(rounds.is_empty() && in_flight.is_none());
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_naming_the_round() {
        let (_dir, shared, row) = queued_run();
        commit(&shared, &row.id, 0, &checkpoint_json(0));
        commit(
            &shared,
            &row.id,
            1,
            "{\"round\": 1, \"model\": \"garbage\"}",
        );
        let why = resumable_state(&shared, &row).unwrap_err();
        assert!(why.contains("checkpoint of round 1"), "{why}");
        assert!(why.contains("not restarted from round 0"), "{why}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_run_is_recorded_as_cancelled_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let options = options(dir.path());
        let row = queue_run(&shared, RUN, Path::new("run.toml"), "test").unwrap();
        let id = row.id.clone();
        let (_tx, inbox) = mpsc::channel(16);
        let run = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { execute(&shared, row, inbox, &options).await })
        };
        // No client connects: the run waits until it is cancelled.
        let mut cancelled = false;
        for _ in 0..500 {
            cancelled = shared.with_active(|a| {
                a.filter(|a| a.run_id == id)
                    .is_some_and(|a| a.cancel.send(Some("operator said stop".into())).is_ok())
            });
            if cancelled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cancelled, "the run never became active");
        let (outcome, _) = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the cancelled run did not stop")
            .unwrap()
            .unwrap();
        let outcome = outcome.unwrap();
        assert_eq!(outcome.cancelled.as_deref(), Some("operator said stop"));
        assert_eq!(
            outcome.failure.as_deref(),
            Some("cancelled: operator said stop")
        );
        let stored = shared.store.run(&id).unwrap().unwrap();
        assert_eq!(stored.state, RunState::Cancelled);
    }

    /// A finished outcome of `run_id` whose final round has AUC `auc` (and
    /// the champion's `champion_auc`, for an update run).
    fn finished_outcome(run_id: &str, auc: f64, champion_auc: Option<f64>) -> RunOutcome {
        use fedprofile_learning::{FeatureColumn, FeatureSpec, Metrics};
        let metrics = |auc| Metrics {
            examples: 10,
            accuracy: 0.8,
            precision: 0.5,
            recall: 0.5,
            f1: 0.5,
            log_loss: 0.4,
            auc: Some(auc),
        };
        let record = RoundRecord {
            round: 1,
            selected: 1,
            accepted: 1,
            rejected: 0,
            refused: 0,
            attempts: 1,
            train_loss: 0.5,
            train_phase_ms: 1.0,
            max_client_train_ms: 1.0,
            eval_phase_ms: 1.0,
            round_ms: 2.0,
            metrics: Some(metrics(auc)),
            quality: None,
            evaluated_clients: 1,
            epsilon: None,
            refusals: Vec::new(),
            skipped: None,
            champion: champion_auc.map(|a| crate::engine::ChampionEval {
                metrics: Some(metrics(a)),
                quality: None,
                evaluated_clients: 1,
            }),
        };
        RunOutcome {
            privacy: None,
            run_id: run_id.into(),
            completed: true,
            cancelled: None,
            failure: None,
            model: Some(fedprofile_protocol::messages::ModelSnapshot {
                model_type: "logistic_regression".into(),
                features: FeatureSpec {
                    reference: None,
                    columns: vec![FeatureColumn::Numeric {
                        name: "x".into(),
                        mean: 0.0,
                        std: 1.0,
                    }],
                },
                params: ndarray::Array1::from_vec(vec![0.5, 0.1]),
                outputs: 1,
            }),
            rounds: vec![record],
            rejections: Default::default(),
            refusals: Default::default(),
            excluded: Default::default(),
            budget_refusals: Default::default(),
            contributors: vec!["a".into()],
            not_private: Vec::new(),
            target: Some(("y".into(), "yes".into())),
            classes: Vec::new(),
            reported_examples: [("a".to_string(), 10)].into(),
        }
    }

    /// Queues `toml`, starts it (copying the champion of an update run, as
    /// `execute` does) and records `outcome(run_id)` as its end.
    fn finish(
        shared: &Arc<Shared>,
        toml: &str,
        outcome: impl Fn(&str) -> RunOutcome,
    ) -> Option<crate::store::ModelVersionRow> {
        let row = queue_run(shared, toml, Path::new("run.toml"), "test").unwrap();
        let config = RunConfig::from_toml_str(toml, Path::new("run.toml")).unwrap();
        shared
            .store
            .set_run_state(&row.id, RunState::Running, &now(), None)
            .unwrap();
        if let Some(update) = &config.update {
            let run_dir = shared.state_dir.join("runs").join(&row.id);
            models::prepare_update(&shared.store, &run_dir, update).unwrap();
        }
        let (progress, _) = broadcast::channel(4);
        let options = options(&shared.state_dir);
        record_outcome(
            shared,
            &row.id,
            &config,
            &outcome(&row.id),
            &options,
            &progress,
        )
        .unwrap();
        shared.store.model_version_of_run(&row.id).unwrap()
    }

    #[test]
    fn finished_runs_register_versions_and_update_runs_are_promoted_only_when_better() {
        use crate::store::ModelStatus;
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let update =
            format!("{RUN}\n[update]\ntarget = \"y\"\nmetric = \"auc\"\nmin_improvement = 0.01\n");
        let first = finish(&shared, RUN, |id| finished_outcome(id, 0.80, None)).unwrap();
        assert_eq!(
            (first.name(), first.status),
            ("y@1".into(), ModelStatus::Champion)
        );
        assert_eq!(first.parent_version, None);
        assert!(first.model_json.contains(&first.run_id));
        // Better by more than the margin: promoted, the champion retired.
        let better = finish(&shared, &update, |id| {
            finished_outcome(id, 0.85, Some(0.80))
        })
        .unwrap();
        assert_eq!(
            (better.name(), better.status),
            ("y@2".into(), ModelStatus::Champion)
        );
        assert_eq!(better.parent_version, Some(1));
        assert_eq!(
            better.reason,
            "auc 0.8500 is better than the champion's 0.8000 by 0.0500 (at least 0.01 required)"
        );
        let v1 = shared.store.model_version("y", 1).unwrap().unwrap();
        assert_eq!(v1.status, ModelStatus::Retired);
        // Better by less than the margin: rejected, the champion stays.
        let worse = finish(&shared, &update, |id| {
            finished_outcome(id, 0.855, Some(0.85))
        })
        .unwrap();
        assert_eq!(
            (worse.name(), worse.status),
            ("y@3".into(), ModelStatus::ChallengerRejected)
        );
        assert_eq!(
            worse.reason,
            "auc 0.8550 is not better than the champion's 0.8500 by 0.01"
        );
        assert_eq!(shared.store.champion("y").unwrap().unwrap().version, 2);
        // A run without [update] never replaces the champion.
        let plain = finish(&shared, RUN, |id| finished_outcome(id, 0.99, None)).unwrap();
        assert_eq!(plain.status, ModelStatus::ChallengerRejected);
        assert!(
            plain.reason.contains("not an update run"),
            "{}",
            plain.reason
        );
        // A failed run registers nothing.
        let failed = finish(&shared, RUN, |id| RunOutcome {
            privacy: None,
            completed: false,
            failure: Some("broken".into()),
            ..finished_outcome(id, 0.99, None)
        });
        assert!(failed.is_none());
        // The registry's figures are in summary.json and the audit log.
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                dir.path()
                    .join("runs")
                    .join(&worse.run_id)
                    .join("summary.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["update"]["promoted"], false);
        assert_eq!(summary["update"]["champion"], 0.85);
        assert_eq!(summary["update"]["challenger"], 0.855);
        shared.audit.flush();
        let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        for event in ["model.register", "model.promote", "model.reject"] {
            assert!(
                audit.contains(&format!("\"{event}\"")),
                "no {event}: {audit}"
            );
        }
    }

    #[test]
    fn an_update_of_a_target_without_champion_fails_at_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let update = fedprofile_config::run::UpdateConfig {
            target: "y".into(),
            metric: fedprofile_config::run::UpdateMetric::Auc,
            min_improvement: 0.0,
            schedule: None,
        };
        let err =
            models::prepare_update(&shared.store, &dir.path().join("r"), &update).unwrap_err();
        assert_eq!(
            err,
            "update.target 'y' has no champion yet: train its first version with a run without [update]"
        );
    }

    /// `RUN` as an update of `y` with the schedule rules `rules`.
    fn scheduled(rules: &str) -> String {
        format!("{RUN}\n[update]\ntarget = \"y\"\nmetric = \"auc\"\n{rules}\n")
    }

    fn audit_text(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default()
    }

    fn end(shared: &Shared, run_id: &str) {
        shared
            .store
            .set_run_state(run_id, RunState::Running, &now(), None)
            .unwrap();
        shared
            .store
            .set_run_state(run_id, RunState::Finished, &now(), None)
            .unwrap();
    }

    #[test]
    fn a_due_schedule_starts_one_run_and_respects_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let toml = scheduled("every = \"1h\"");
        let Submitted::Schedule(s) = submit(&shared, &toml, Path::new("u.toml"), "op").unwrap()
        else {
            panic!("a file with `every` creates a schedule");
        };
        assert!(
            shared.store.runs().unwrap().is_empty(),
            "nothing queued yet"
        );
        let t0 = s.created_unix;
        assert!(
            crate::schedule::tick(&shared, t0 + 3599)
                .unwrap()
                .is_empty()
        );
        let started = crate::schedule::tick(&shared, t0 + 3600).unwrap();
        assert_eq!(started.len(), 1);
        let run = shared.store.run(&started[0]).unwrap().unwrap();
        assert_eq!(
            (run.state, run.run_toml.as_str()),
            (RunState::Queued, toml.as_str())
        );
        // Never two runs of one target at once.
        assert!(
            crate::schedule::tick(&shared, t0 + 9000)
                .unwrap()
                .is_empty()
        );
        end(&shared, &started[0]);
        // Never before the interval since the last start.
        assert!(
            crate::schedule::tick(&shared, t0 + 7199)
                .unwrap()
                .is_empty()
        );
        assert_eq!(crate::schedule::tick(&shared, t0 + 7200).unwrap().len(), 1);
        assert_eq!(
            shared.store.schedule(&s.id).unwrap().unwrap().runs_started,
            2
        );
        assert!(audit_text(dir.path()).contains("schedule.start"));
        assert!(
            shared
                .metrics
                .encode()
                .contains("fedprofile_scheduled_runs_total{trigger=\"every\"} 2")
        );
    }

    #[test]
    fn a_data_trigger_fires_once_enough_partners_changed_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rules = "on_new_data = { min_partners = 2, min_interval = \"10m\" }";
        let (id, t0) = {
            let shared = shared(dir.path());
            let Submitted::Schedule(s) =
                submit(&shared, &scheduled(rules), Path::new("u.toml"), "op").unwrap()
            else {
                panic!("a file with `on_new_data` creates a schedule");
            };
            (s.id, s.created_unix)
        };
        // A restart keeps the schedule.
        let shared = shared(dir.path());
        let store = &shared.store;
        // First fingerprints are baselines, not changes.
        store
            .record_fingerprint("a", "a1", "{}", "t", t0 + 5)
            .unwrap();
        store
            .record_fingerprint("b", "b1", "{}", "t", t0 + 5)
            .unwrap();
        assert!(crate::schedule::tick(&shared, t0 + 10).unwrap().is_empty());
        store
            .record_fingerprint("a", "a2", "{}", "t", t0 + 20)
            .unwrap();
        assert!(
            crate::schedule::tick(&shared, t0 + 30).unwrap().is_empty(),
            "one partner changed, two asked"
        );
        store
            .record_fingerprint("b", "b2", "{}", "t", t0 + 40)
            .unwrap();
        let started = crate::schedule::tick(&shared, t0 + 50).unwrap();
        assert_eq!(started.len(), 1);
        end(&shared, &started[0]);
        // The baseline moved to the start: the same changes do not fire again.
        assert!(
            crate::schedule::tick(&shared, t0 + 5000)
                .unwrap()
                .is_empty()
        );
        store
            .record_fingerprint("a", "a3", "{}", "t", t0 + 100)
            .unwrap();
        store
            .record_fingerprint("b", "b3", "{}", "t", t0 + 100)
            .unwrap();
        assert!(
            crate::schedule::tick(&shared, t0 + 300).unwrap().is_empty(),
            "within the minimum interval"
        );
        assert_eq!(crate::schedule::tick(&shared, t0 + 650).unwrap().len(), 1);
        drop(shared);
        let reopened = crate::state::open(dir.path(), false).unwrap();
        let s = reopened.store.schedule(&id).unwrap().unwrap();
        assert_eq!((s.runs_started, s.min_partners), (2, Some(2)));
    }

    #[test]
    fn a_budget_refusal_stops_the_schedule_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let Submitted::Schedule(s) = submit(
            &shared,
            &scheduled("every = \"1m\""),
            Path::new("u.toml"),
            "op",
        )
        .unwrap() else {
            panic!("a schedule");
        };
        let run_id = crate::schedule::tick(&shared, s.created_unix + 60).unwrap()[0].clone();
        let outcome = RunOutcome {
            completed: false,
            failure: Some("too few clients".into()),
            budget_refusals: [(
                "bank-a".to_string(),
                "the privacy budget would be exceeded: ε 1.2 > 1".to_string(),
            )]
            .into(),
            ..finished_outcome(&run_id, 0.8, None)
        };
        end(&shared, &run_id);
        crate::schedule::after_run(&shared, &outcome).unwrap();
        let stopped = shared.store.schedule(&s.id).unwrap().unwrap();
        assert_eq!(stopped.state, crate::store::ScheduleState::Stopped);
        let reason = stopped.reason.unwrap();
        assert!(
            reason.contains("bank-a") && reason.contains("privacy budget"),
            "{reason}"
        );
        assert!(audit_text(dir.path()).contains("schedule.stop"));
        assert!(
            crate::schedule::tick(&shared, s.created_unix + 100_000)
                .unwrap()
                .is_empty()
        );
        // An operator's stop of a stopped schedule is refused with its reason.
        let err = crate::schedule::stop(&shared, &s.id, "op", "done").unwrap_err();
        assert!(err.contains("stopped already"), "{err}");
    }
}
