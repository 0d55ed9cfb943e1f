//! Mutual TLS whose certificates change without a restart.
//!
//! tonic's `ServerTlsConfig` is fixed when the server starts. Here the coordinator
//! terminates TLS itself: [`ReloadableTls`] holds the current
//! [`rustls::ServerConfig`] (built from the CA bundle, the server certificate chain
//! and key, and optional certificate revocation lists), and [`incoming`] turns a
//! [`TcpListener`] into a stream of finished TLS connections for
//! `tonic::transport::Server::serve_with_incoming_shutdown`.
//!
//! - Every accepted TCP connection handshakes with the configuration current at
//!   accept time. Handshakes run concurrently (a slow client cannot hold up the
//!   others), each bounded by a timeout, with a cap on how many run at once.
//! - [`ReloadableTls::reload`] re-reads every file and swaps the configuration in
//!   one step; on any error the previous configuration stays in force. Connections
//!   already established keep their session; the next handshake uses the new
//!   certificate, CA bundle and CRLs. Each configuration has its own session
//!   cache, so a client cannot resume a session from before a revocation.
//! - [`ReloadableTls::watch`] polls the files (size, modification time, inode) and
//!   reloads when they change and have stayed unchanged for one more interval (so
//!   a certificate and key replaced one after the other are read together).
//! - Failed handshakes are never yielded to tonic as errors. Each one is counted
//!   ([`ReloadableTls::handshake_failures`], and per cause in
//!   [`HandshakeFailures::by_cause`]), recorded with the cause in words and the
//!   CN of the certificate refused (if any) in the [`HandshakeFailures`]
//!   registry, and logged at info level with the peer address and the cause;
//!   repeats per (address, cause) are logged once a minute with a count (see
//!   [`failures`]).
//!
//! The streams are `tokio_rustls::server::TlsStream<TcpStream>`, for which tonic
//! implements `Connected` (tokio-rustls 0.26, the version tonic 0.14 uses), so
//! `Request::peer_certs()` keeps working in the service.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;

use fedprofile_protocol::tls::{PemError, PemFile};

pub mod failures;

pub use failures::{FailureCause, HandshakeFailure, HandshakeFailures};

/// A TLS file that cannot be used; the previous configuration (if any) stays in force.
#[derive(Debug, thiserror::Error)]
pub enum TlsReloadError {
    /// A PEM file cannot be read or holds no usable block.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate in the file cannot be used.
    #[error("{what} '{path}' cannot be used: {detail}")]
    BadCertificate {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The server certificate has expired (clients would refuse it).
    #[error("certificate '{path}' expired at {not_after}")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its end of validity.
        not_after: String,
    },
    /// The certificate revocation list cannot be used.
    #[error("certificate revocation list '{path}' cannot be used: {detail}")]
    Crl {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The certificate and private key do not go together (or the key is unusable).
    #[error("certificate '{cert}' and private key '{key}' cannot be used together: {detail}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration for another reason.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The files the coordinator's TLS configuration is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSources {
    /// CA certificate(s) that client certificates must chain to; the file may hold
    /// several certificates (a bundle, e.g. the old and the new CA during a CA change).
    pub ca_cert: PathBuf,
    /// The server certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Optional certificate revocation list(s), PEM "X509 CRL" blocks, one per issuer.
    pub crl: Option<PathBuf>,
}

impl TlsSources {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![
            self.ca_cert.as_path(),
            self.cert.as_path(),
            self.key.as_path(),
        ];
        if let Some(crl) = &self.crl {
            paths.push(crl.as_path());
        }
        paths
    }
}

impl From<&fedprofile_protocol::tls::TlsFiles> for TlsSources {
    fn from(files: &fedprofile_protocol::tls::TlsFiles) -> TlsSources {
        TlsSources {
            ca_cert: files.ca_cert.clone(),
            cert: files.cert.clone(),
            key: files.key.clone(),
            crl: None,
        }
    }
}

/// What the watcher compares: per file, (length, modification time, device, inode),
/// or `None` when the file cannot be inspected.
type Fingerprint = Vec<Option<(u64, Option<SystemTime>, u64, u64)>>;

fn fingerprint(sources: &TlsSources) -> Fingerprint {
    sources
        .paths()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            #[cfg(unix)]
            let (dev, ino) = {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino())
            };
            #[cfg(not(unix))]
            let (dev, ino) = (0, 0);
            Some((meta.len(), meta.modified().ok(), dev, ino))
        })
        .collect()
}

/// The coordinator's TLS configuration, replaceable while the server runs.
#[derive(Debug)]
pub struct ReloadableTls {
    sources: TlsSources,
    current: RwLock<Arc<ServerConfig>>,
    /// Serializes reloads; holds the fingerprint of the files last loaded successfully.
    loaded: Mutex<Fingerprint>,
    generation: AtomicU64,
    handshake_failures: AtomicU64,
    handshakes: AtomicU64,
    reload_failures: AtomicU64,
    failures: Arc<HandshakeFailures>,
}

impl ReloadableTls {
    /// Reads the files and builds the first configuration: a client certificate
    /// chaining to one of the CAs (and not revoked) is required, ALPN is "h2".
    pub fn load(sources: TlsSources) -> Result<Arc<ReloadableTls>, TlsReloadError> {
        ReloadableTls::load_with_failures(sources, Arc::default())
    }

    /// [`load`](Self::load), recording failed handshakes in `failures` (a
    /// registry the caller also holds, to explain who cannot connect).
    pub fn load_with_failures(
        sources: TlsSources,
        failures: Arc<HandshakeFailures>,
    ) -> Result<Arc<ReloadableTls>, TlsReloadError> {
        let fp = fingerprint(&sources);
        let config = build_config(&sources)?;
        Ok(Arc::new(ReloadableTls {
            sources,
            current: RwLock::new(Arc::new(config)),
            loaded: Mutex::new(fp),
            generation: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            failures,
        }))
    }

    /// Re-reads every file and, if all of them are usable, makes the new
    /// configuration current (new handshakes use it; established connections are
    /// untouched). On any error the previous configuration stays current.
    pub fn reload(&self) -> Result<(), TlsReloadError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let fp = fingerprint(&self.sources);
        match build_config(&self.sources) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                *loaded = fp;
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(
                    generation,
                    cert = %self.sources.cert.display(),
                    ca = %self.sources.ca_cert.display(),
                    crl = ?self.sources.crl,
                    "TLS configuration reloaded; new connections use it"
                );
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many successful reloads there have been (0 right after [`load`](Self::load)).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Handshakes that failed or timed out (refused certificates included).
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Counts one failed handshake from `peer` and records it now (`refused`:
    /// the certificate our verifier refused, if that was why).
    fn handshake_failed(
        &self,
        peer: SocketAddr,
        cause: FailureCause,
        refused: Option<&failures::PresentedCertificate>,
        error: &str,
    ) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
        self.failures.record(HandshakeFailure::new(
            peer,
            cause,
            refused,
            error,
            SystemTime::now(),
        ));
    }

    /// The registry of recent failed handshakes: who, from where, why.
    pub fn failures(&self) -> &Arc<HandshakeFailures> {
        &self.failures
    }

    /// Handshakes that succeeded.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Reloads that failed (the previous configuration stayed current).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// The files this configuration is built from.
    pub fn sources(&self) -> &TlsSources {
        &self.sources
    }

    /// Polls the files every `interval` and reloads when one changed (size,
    /// modification time or inode, so atomic renames and symlink swaps count) and
    /// then stayed the same for one more interval. A failed reload is logged
    /// (`tracing::warn!`) once and retried when the files change again. The task
    /// ends when this `ReloadableTls` is dropped, or when the handle is aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            // A changed fingerprint seen once (reload when seen again), and the
            // fingerprint of files that failed to load (not retried until they change).
            let mut pending: Option<Fingerprint> = None;
            let mut failed: Option<Fingerprint> = None;
            loop {
                ticker.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                let state = (pending.take(), failed.take());
                let step = tokio::task::spawn_blocking(move || tls.watch_step(state)).await;
                (pending, failed) = step.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "TLS file watcher step failed");
                    (None, None)
                });
            }
        })
    }

    /// One poll of [`watch`](Self::watch): takes and returns (pending, failed).
    fn watch_step(
        &self,
        (pending, failed): (Option<Fingerprint>, Option<Fingerprint>),
    ) -> (Option<Fingerprint>, Option<Fingerprint>) {
        let fp = fingerprint(&self.sources);
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if fp == loaded {
            return (None, None);
        }
        if failed.as_ref() == Some(&fp) {
            return (None, failed);
        }
        if pending.as_ref() != Some(&fp) {
            tracing::debug!("TLS files changed; reloading once they are stable");
            return (Some(fp), failed);
        }
        match self.reload() {
            Ok(()) => (None, None),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "TLS files changed but cannot be used; keeping the previous configuration"
                );
                (None, Some(fp))
            }
        }
    }
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsReloadError> {
    let crls = PemFile::read("certificate revocation list", path)?.revocation_lists()?;
    for crl in &crls {
        match x509_parser::parse_x509_crl(crl.as_ref()) {
            Ok((_, parsed)) => {
                if let Some(next) = parsed.next_update()
                    && next.timestamp() < time_now()
                {
                    tracing::warn!(
                        crl = %path.display(),
                        next_update = %next,
                        "certificate revocation list is past its next update; publish a fresh one"
                    );
                }
            }
            Err(e) => {
                return Err(TlsReloadError::Crl {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                });
            }
        }
    }
    Ok(crls)
}

fn time_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Refuses an expired server certificate (every client would refuse it).
fn check_leaf(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsReloadError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        TlsReloadError::BadCertificate {
            what: "certificate",
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    let validity = cert.validity();
    let now = time_now();
    if validity.not_after.timestamp() < now {
        return Err(TlsReloadError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before.timestamp() > now {
        tracing::warn!(
            cert = %path.display(),
            not_before = %validity.not_before,
            "server certificate is not valid yet; clients will refuse it until then"
        );
    }
    let mut serial = String::new();
    for byte in cert.raw_serial() {
        let _ = write!(serial, "{byte:02x}");
    }
    tracing::debug!(cert = %path.display(), serial, not_after = %validity.not_after, "server certificate");
    Ok(())
}

fn build_config(sources: &TlsSources) -> Result<ServerConfig, TlsReloadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    for ca in PemFile::read("CA certificate", &sources.ca_cert)?.certificates()? {
        roots.add(ca).map_err(|e| TlsReloadError::BadCertificate {
            what: "CA certificate",
            path: sources.ca_cert.clone(),
            detail: e.to_string(),
        })?;
    }
    let chain = PemFile::read("certificate", &sources.cert)?.certificates()?;
    check_leaf(&sources.cert, &chain[0])?;
    let key = PemFile::read("private key", &sources.key)?.private_key()?;

    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            // A CA in the bundle without a CRL in the file: its clients are accepted
            // (as without any CRL). A CRL from a CA is applied to the whole chain.
            .allow_unknown_revocation_status();
    if let Some(crl_path) = &sources.crl {
        verifier = verifier.with_crls(read_crls(crl_path)?);
    }
    let verifier = verifier.build().map_err(|e| match (&sources.crl, e) {
        (Some(path), rustls::server::VerifierBuilderError::InvalidCrl(e)) => TlsReloadError::Crl {
            path: path.clone(),
            detail: format!("{e:?}"),
        },
        (_, e) => TlsReloadError::Config(e.to_string()),
    })?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsReloadError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(failures::RecordingVerifier::new(verifier)))
        .with_single_cert(chain, key)
        .map_err(|e| TlsReloadError::KeyMismatch {
            cert: sources.cert.clone(),
            key: sources.key.clone(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// How [`incoming_with`] accepts connections.
#[derive(Debug, Clone, Copy)]
pub struct IncomingOptions {
    /// A handshake not finished within this time is dropped (and counted as failed).
    pub handshake_timeout: Duration,
    /// At most this many handshakes run at once; further connections wait in the
    /// listen backlog.
    pub max_concurrent_handshakes: usize,
    /// Set `TCP_NODELAY` on accepted connections.
    pub nodelay: bool,
    /// Connections that have not sent their first byte yet (unauthenticated and
    /// silent) are kept at most this many; a new connection closes the oldest.
    /// They never hold a handshake slot, so idle TCP connections cannot lock
    /// real partners out: a partner's connection sends its TLS hello at once.
    pub max_silent: usize,
    /// The same, per source address.
    pub max_silent_per_address: usize,
}

impl Default for IncomingOptions {
    fn default() -> IncomingOptions {
        IncomingOptions {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            nodelay: true,
            max_silent: 1024,
            max_silent_per_address: 256,
        }
    }
}

/// A stream of accepted TLS connections for
/// `tonic::transport::Server::serve_with_incoming_shutdown`, with the default
/// [`IncomingOptions`] (10 s handshake timeout, 256 concurrent handshakes,
/// nodelay, at most 1,024 silent connections and 256 per address).
///
/// Must be called inside a tokio runtime (it spawns the accept loop).
pub fn incoming(listener: TcpListener, tls: Arc<ReloadableTls>) -> TlsIncoming {
    incoming_with(listener, tls, IncomingOptions::default())
}

/// [`incoming`] with explicit options.
pub fn incoming_with(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    options: IncomingOptions,
) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(listener, tls, options, tx));
    TlsIncoming {
        rx,
        accept: accept.abort_handle(),
    }
}

/// Accepted TLS connections. Never yields an error: failed handshakes are logged
/// and counted in [`ReloadableTls::handshake_failures`]. Dropping it stops
/// accepting (and closes the listener).
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
    accept: AbortHandle,
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|next| next.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Connections accepted but silent so far (no byte received), oldest first.
#[derive(Debug, Default)]
struct SilentPool {
    next: u64,
    order: std::collections::VecDeque<(u64, std::net::IpAddr, tokio::sync::oneshot::Sender<()>)>,
}

impl SilentPool {
    /// Admits a connection from `ip`, closing the oldest silent one (of that
    /// address first) when a cap is reached. Returns its id and how many were closed.
    fn admit(
        &mut self,
        ip: std::net::IpAddr,
        evict: tokio::sync::oneshot::Sender<()>,
        options: &IncomingOptions,
    ) -> (u64, usize) {
        let mut closed = 0;
        let per_address = options.max_silent_per_address.max(1);
        if self.order.iter().filter(|e| e.1 == ip).count() >= per_address
            && let Some(pos) = self.order.iter().position(|e| e.1 == ip)
            && let Some((_, _, old)) = self.order.remove(pos)
        {
            let _ = old.send(());
            closed += 1;
        }
        while self.order.len() >= options.max_silent.max(1) {
            match self.order.pop_front() {
                Some((_, _, old)) => {
                    let _ = old.send(());
                    closed += 1;
                }
                None => break,
            }
        }
        let id = self.next;
        self.next += 1;
        self.order.push_back((id, ip, evict));
        (id, closed)
    }

    /// The connection spoke (or ended): it is no longer silent.
    fn leave(&mut self, id: u64) {
        if let Some(pos) = self.order.iter().position(|e| e.0 == id) {
            self.order.remove(pos);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    options: IncomingOptions,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let slots = Arc::new(Semaphore::new(options.max_concurrent_handshakes.max(1)));
    let silent = Arc::new(std::sync::Mutex::new(SilentPool::default()));
    loop {
        // Accepting never waits for a handshake slot: a flood of idle
        // connections is held in the silent pool (bounded) instead.
        let (tcp, peer) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a TCP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if options.nodelay
            && let Err(e) = tcp.set_nodelay(true)
        {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (evict_tx, evict_rx) = tokio::sync::oneshot::channel();
        let (id, closed) = silent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(peer.ip(), evict_tx, &options);
        if closed > 0 {
            tls.handshake_failures
                .fetch_add(closed as u64, Ordering::Relaxed);
            tls.failures.count(FailureCause::Timeout, closed as u64);
            tracing::debug!(%peer, closed, "silent connections closed to admit a new one");
        }
        let tls = Arc::clone(&tls);
        let tx = tx.clone();
        let slots = Arc::clone(&slots);
        let silent = Arc::clone(&silent);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + options.handshake_timeout;
            // Wait for the first byte (the TLS hello) without holding a slot.
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                () = tx.closed() => None,
                _ = evict_rx => None,
                peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut first)) => Some(peeked),
            };
            silent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .leave(id);
            match spoke {
                Some(Ok(Ok(n))) if n > 0 => {}
                Some(Err(_)) => {
                    let millis = options.handshake_timeout.as_millis();
                    let error = format!("the connection sent nothing for {millis} ms");
                    tls.handshake_failed(peer, FailureCause::Timeout, None, &error);
                    return;
                }
                _ => return,
            }
            let Ok(permit) = slots.acquire_owned().await else {
                return;
            };
            let acceptor = TlsAcceptor::from(tls.current());
            // The verifier leaves the certificate it refused in a slot of this task.
            let handshake = tokio::time::timeout_at(
                deadline,
                failures::with_refused_slot(acceptor.accept(tcp)),
            );
            let result = tokio::select! {
                () = tx.closed() => return,
                result = handshake => result,
            };
            drop(permit);
            match result {
                Ok((Ok(stream), _)) => {
                    tls.handshakes.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(stream).await;
                }
                Ok((Err(e), refused)) => {
                    let cause = FailureCause::of_io(&e);
                    tls.handshake_failed(peer, cause, refused.as_ref(), &e.to_string());
                }
                Err(_) => {
                    let millis = options.handshake_timeout.as_millis();
                    let error = format!("no complete handshake within {millis} ms");
                    tls.handshake_failed(peer, FailureCause::Timeout, None, &error);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
        DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevocationReason, RevokedCertParams, SanType, SerialNumber,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use time::OffsetDateTime;
    use tokio::sync::oneshot;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use fedprofile_protocol::pb;
    use fedprofile_protocol::pb::federation_client::FederationClient;
    use fedprofile_protocol::pb::federation_server::{Federation, FederationServer};

    const SERVER_NAME: &str = "coordinator";
    const WAIT: Duration = Duration::from_secs(10);

    // ---- PKI -------------------------------------------------------------------

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    struct Leaf {
        cert_pem: String,
        key_pem: String,
        der: CertificateDer<'static>,
        serial: u64,
    }

    fn params(cn: &str, serial: u64) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(serial));
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        params
    }

    fn new_ca(cn: &str) -> Ca {
        let mut params = params(cn, 1);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn issue(ca: &Ca, cn: &str, serial: u64, server: bool) -> Leaf {
        issue_with(ca, cn, serial, server, |_| {})
    }

    fn issue_with(
        ca: &Ca,
        cn: &str,
        serial: u64,
        server: bool,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params = params(cn, serial);
        adjust(&mut params);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if server {
            params.subject_alt_names = vec![SanType::DnsName(SERVER_NAME.try_into().unwrap())];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            serial,
        }
    }

    fn crl(ca: &Ca, number: u64, revoked: &[u64]) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// Replaces a file the way deployment tools do: write aside, then rename over.
    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Writes the CA bundle, the server certificate and key and, if given, the
    /// CRL into `dir`; returns their paths.
    fn write_sources(dir: &Path, ca: &Ca, server: &Leaf, crl: Option<String>) -> TlsSources {
        let sources = TlsSources {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            crl: crl.as_ref().map(|_| dir.join("crl.pem")),
        };
        replace(&sources.ca_cert, &ca.pem);
        replace(&sources.cert, &server.cert_pem);
        replace(&sources.key, &server.key_pem);
        if let (Some(path), Some(crl)) = (&sources.crl, crl) {
            replace(path, &crl);
        }
        sources
    }

    // ---- a tiny service: every message gets a Welcome with the peer's CN ----------

    struct Echo;

    type EchoStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

    #[tonic::async_trait]
    impl Federation for Echo {
        type SessionStream = EchoStream;

        async fn session(
            &self,
            request: Request<Streaming<pb::ClientMessage>>,
        ) -> Result<Response<EchoStream>, Status> {
            let certs = request
                .peer_certs()
                .ok_or_else(|| Status::unauthenticated("no peer certificates"))?;
            let leaf = certs
                .first()
                .ok_or_else(|| Status::unauthenticated("empty peer certificates"))?;
            let cn = fedprofile_protocol::tls::identity_from_der(leaf.as_ref())
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            let mut inbound = request.into_inner();
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(async move {
                while let Ok(Some(_)) = inbound.message().await {
                    let welcome = pb::ServerMessage {
                        body: Some(pb::server_message::Body::Welcome(pb::Welcome {
                            client_id: cn.clone(),
                            ..Default::default()
                        })),
                    };
                    if tx.send(Ok(welcome)).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    fn hello() -> pb::ClientMessage {
        pb::ClientMessage {
            body: Some(pb::client_message::Body::Hello(pb::Hello {
                client_version: "test".into(),
                protocol_version: 1,
                ..Default::default()
            })),
        }
    }

    /// A channel to the server at `addr` as `leaf`, trusting `ca_pem`.
    async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        leaf: &Leaf,
    ) -> Result<Channel, tonic::transport::Error> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem))
            .domain_name(SERVER_NAME);
        Channel::from_shared(format!("https://{addr}"))
            .expect("a valid URL")
            .tls_config(tls)?
            .connect_timeout(WAIT)
            .connect()
            .await
    }

    /// A long-lived streaming call.
    struct Session {
        tx: mpsc::Sender<pb::ClientMessage>,
        rx: Streaming<pb::ServerMessage>,
    }

    impl Session {
        async fn open(addr: SocketAddr, ca_pem: &str, leaf: &Leaf) -> Result<Session, String> {
            let channel = connect(addr, ca_pem, leaf)
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let (tx, rx) = mpsc::channel(8);
            let response = FederationClient::new(channel)
                .session(ReceiverStream::new(rx))
                .await
                .map_err(|e| format!("session: {e:?}"))?;
            Ok(Session {
                tx,
                rx: response.into_inner(),
            })
        }

        /// One more call on this session must be answered as `cn`.
        async fn assert_hello(&mut self, cn: &str) {
            assert_eq!(self.hello().await.as_deref(), Ok(cn));
        }

        async fn hello(&mut self) -> Result<String, String> {
            self.tx.send(hello()).await.map_err(|e| e.to_string())?;
            let reply = tokio::time::timeout(WAIT, self.rx.message())
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| format!("message: {e:?}"))?;
            match reply.and_then(|m| m.body) {
                Some(pb::server_message::Body::Welcome(w)) => Ok(w.client_id),
                other => Err(format!("unexpected reply {other:?}")),
            }
        }
    }

    /// A fresh connection and one call; the client id the server saw.
    async fn try_hello(addr: SocketAddr, ca_pem: &str, leaf: &Leaf) -> Result<String, String> {
        tokio::time::timeout(WAIT, async {
            Session::open(addr, ca_pem, leaf).await?.hello().await
        })
        .await
        .map_err(|_| "timed out".to_string())?
    }

    /// The leaf certificate the server presents to a new connection.
    async fn server_leaf(addr: SocketAddr, ca_pem: &str, client: &Leaf) -> CertificateDer<'static> {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client.der.clone()],
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream = tokio::time::timeout(
            WAIT,
            connector.connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp),
        )
        .await
        .unwrap()
        .unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    // ---- the fixture: a coordinator-like server on 127.0.0.1:0 -------------------

    struct Fixture {
        _dir: tempfile::TempDir,
        ca: Ca,
        server_cert: Leaf,
        sources: TlsSources,
        tls: Arc<ReloadableTls>,
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    }

    impl Fixture {
        async fn start(options: IncomingOptions) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let ca = new_ca("fedprofile test CA");
            let server_cert = issue(&ca, SERVER_NAME, 10, true);
            let sources = write_sources(dir.path(), &ca, &server_cert, Some(crl(&ca, 1, &[])));
            let tls = ReloadableTls::load(sources.clone()).unwrap();
            assert_eq!(tls.generation(), 0);

            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let server = tokio::spawn(
                Server::builder()
                    .add_service(FederationServer::new(Echo))
                    .serve_with_incoming_shutdown(
                        incoming_with(listener, Arc::clone(&tls), options),
                        async {
                            let _ = stopped.await;
                        },
                    ),
            );
            Fixture {
                _dir: dir,
                ca,
                server_cert,
                sources,
                tls,
                addr,
                stop: Some(stop),
                server: Some(server),
            }
        }

        /// A fixture on the default options, and partner-a's certificate.
        async fn with_partner_a() -> (Fixture, Leaf) {
            let f = Fixture::start(IncomingOptions::default()).await;
            let a = f.partner_a();
            (f, a)
        }

        /// A fresh connection as `leaf` must be accepted as `cn`.
        async fn assert_accepted(&self, leaf: &Leaf, cn: &str) {
            assert_eq!(self.hello_as(leaf).await.as_deref(), Ok(cn));
        }

        /// Replaces the file at `path` with `contents` and reloads (which must succeed).
        fn reload_with(&self, path: &Path, contents: &str) {
            replace(path, contents);
            self.tls.reload().unwrap();
        }

        /// A fresh connection as `leaf` and one call; the client id the server saw.
        async fn hello_as(&self, leaf: &Leaf) -> Result<String, String> {
            try_hello(self.addr, &self.ca.pem, leaf).await
        }

        /// The certificate the server presents to a new connection as `leaf`.
        async fn leaf_seen_by(&self, leaf: &Leaf) -> CertificateDer<'static> {
            server_leaf(self.addr, &self.ca.pem, leaf).await
        }

        /// A client certificate of the federation's CA for partner-a.
        fn partner_a(&self) -> Leaf {
            issue(&self.ca, "partner-a", 20, false)
        }

        /// Puts `server`'s certificate and key in place of the served ones (not reloaded).
        fn install_server(&self, server: &Leaf) {
            replace(&self.sources.key, &server.key_pem);
            replace(&self.sources.cert, &server.cert_pem);
        }

        /// The recorded handshake failure of `identity`, once there is one.
        async fn failure_of(&self, identity: &str) -> HandshakeFailure {
            wait_until(|| self.tls.failures().for_identity(identity).is_some()).await;
            self.tls.failures().for_identity(identity).unwrap()
        }

        /// `n` TCP connections to the server that never say anything.
        async fn open_silent(&self, n: usize) -> Vec<TcpStream> {
            let mut open = Vec::with_capacity(n);
            for _ in 0..n {
                open.push(TcpStream::connect(self.addr).await.unwrap());
            }
            open
        }

        /// Closes `open` (sessions, sockets), then shuts the server down.
        async fn shutdown_after<T>(self, open: T) {
            drop(open);
            self.shutdown().await;
        }

        async fn shutdown(mut self) {
            let _ = self.stop.take().unwrap().send(());
            let server = self.server.take().unwrap();
            // Open sessions may keep the graceful shutdown waiting; that is fine here.
            if let Ok(result) = tokio::time::timeout(Duration::from_secs(2), server).await {
                result.unwrap().unwrap();
            }
        }
    }

    // ---- tests --------------------------------------------------------------------

    #[tokio::test]
    async fn a_valid_client_connects_and_the_service_sees_its_certificate() {
        let (f, a) = Fixture::with_partner_a().await;
        f.assert_accepted(&a, "partner-a").await;
        assert_eq!(f.tls.handshakes(), 1);
        assert_eq!(f.tls.handshake_failures(), 0);

        // A client from another CA is refused, counted, and does not stop the server.
        let other_ca = new_ca("someone else");
        let stranger = issue(&other_ca, "stranger", 20, false);
        assert!(f.hello_as(&stranger).await.is_err());
        wait_until(|| f.tls.handshake_failures() == 1).await;
        f.assert_accepted(&a, "partner-a").await;
        f.shutdown().await;
    }

    /// The error a client gets when it opens a session (at connect, or at the
    /// first call under TLS 1.3, where the server's verdict comes after the
    /// client finished its side of the handshake).
    async fn session_error(
        addr: SocketAddr,
        ca_pem: &str,
        leaf: &Leaf,
    ) -> Box<dyn std::error::Error> {
        let channel = match connect(addr, ca_pem, leaf).await {
            Ok(channel) => channel,
            Err(e) => return Box::new(e),
        };
        let (tx, rx) = mpsc::channel(8);
        tx.send(hello()).await.unwrap();
        let call = tokio::time::timeout(
            WAIT,
            FederationClient::new(channel).session(ReceiverStream::new(rx)),
        )
        .await
        .expect("the refused session did not end in time");
        match call {
            Err(status) => Box::new(status),
            Ok(_) => panic!("a refused certificate opened a session"),
        }
    }

    /// What the client says when its session as `leaf` (trusting `ca_pem`) is refused.
    async fn refusal_text(
        addr: SocketAddr,
        ca_pem: &str,
        leaf: &Leaf,
        ctx: fedprofile_protocol::tls::TlsContext<'_>,
    ) -> String {
        let err = session_error(addr, ca_pem, leaf).await;
        fedprofile_protocol::tls::explain_tls_failure(&*err, ctx)
            .unwrap_or_else(|| panic!("no TLS cause found in {err:?}"))
    }

    #[tokio::test]
    async fn a_refused_certificate_is_recorded_with_its_cn_and_the_client_gets_a_sentence() {
        let f = Fixture::start(IncomingOptions::default()).await;
        let files = fedprofile_protocol::tls::TlsFiles {
            ca_cert: "certs/ca.pem".into(),
            cert: "certs/stranger.pem".into(),
            key: "certs/stranger.key".into(),
        };
        let ctx = fedprofile_protocol::tls::TlsContext {
            files: &files,
            server_name: SERVER_NAME,
        };

        // Another CA.
        let other_ca = new_ca("someone else");
        let stranger = issue(&other_ca, "stranger", 20, false);
        let text = refusal_text(f.addr, &f.ca.pem, &stranger, ctx).await;
        assert!(
            text.starts_with("the coordinator does not trust our certificate (certs/stranger.pem)"),
            "{text}"
        );
        let seen = f.failure_of("stranger").await;
        assert_eq!(seen.cause, FailureCause::UnknownCa);
        assert!(seen.detail.contains("someone else"), "{}", seen.detail);
        assert!(seen.peer.ip().is_loopback());

        // The federation's CA, but expired.
        let expired = issue_with(&f.ca, "partner-old", 30, false, |p| {
            let now = OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::days(30);
            p.not_after = now - time::Duration::days(1);
        });
        let text = refusal_text(f.addr, &f.ca.pem, &expired, ctx).await;
        assert!(
            text.contains("it has expired or is not valid yet"),
            "{text}"
        );
        let seen = f.failure_of("partner-old").await;
        assert_eq!(seen.cause, FailureCause::Expired);
        assert!(
            seen.detail.starts_with("its certificate expired at 20"),
            "{}",
            seen.detail
        );

        // Revoked.
        let revoked = issue(&f.ca, "partner-gone", 31, false);
        f.reload_with(f.sources.crl.as_ref().unwrap(), &crl(&f.ca, 2, &[31]));
        let text = refusal_text(f.addr, &f.ca.pem, &revoked, ctx).await;
        assert!(text.contains("it has been revoked"), "{text}");
        assert_eq!(
            f.failure_of("partner-gone").await.cause,
            FailureCause::Revoked
        );

        // The client does not trust the coordinator (it holds another CA).
        let a = issue(&f.ca, "partner-a", 32, false);
        let text = refusal_text(f.addr, &other_ca.pem, &a, ctx).await;
        assert_eq!(
            text.split(" (").next().unwrap(),
            "the coordinator's certificate is not signed by certs/ca.pem"
        );
        wait_until(|| {
            f.tls
                .failures()
                .by_cause()
                .contains(&(FailureCause::ClientRefusedServer, 1))
        })
        .await;
        let counts = f.tls.failures().by_cause();
        assert!(counts.contains(&(FailureCause::UnknownCa, 1)), "{counts:?}");
        assert!(counts.contains(&(FailureCause::Expired, 1)), "{counts:?}");
        assert_eq!(f.tls.handshake_failures(), 4);
        f.shutdown().await;
    }

    #[tokio::test]
    async fn a_renewed_server_certificate_is_used_by_new_connections_only() {
        let (f, a) = Fixture::with_partner_a().await;
        let mut running = Session::open(f.addr, &f.ca.pem, &a).await.unwrap();
        running.assert_hello("partner-a").await;
        assert_eq!(f.leaf_seen_by(&a).await, f.server_cert.der);

        let renewed = issue(&f.ca, SERVER_NAME, 11, true);
        f.install_server(&renewed);
        f.tls.reload().unwrap();
        assert_eq!(f.tls.generation(), 1);

        // The running call (and its connection) is untouched.
        running.assert_hello("partner-a").await;
        // A new connection gets the renewed certificate.
        assert_eq!(f.leaf_seen_by(&a).await, renewed.der);
        assert_ne!(renewed.serial, f.server_cert.serial);
        f.assert_accepted(&a, "partner-a").await;
        running.assert_hello("partner-a").await;
        f.shutdown_after(running).await;
    }

    #[tokio::test]
    async fn a_changed_ca_bundle_decides_which_clients_may_connect() {
        let (f, a) = Fixture::with_partner_a().await;
        let new_ca = new_ca("fedprofile test CA 2");
        let c = issue(&new_ca, "partner-c", 30, false);
        assert!(f.hello_as(&c).await.is_err());

        // Both CAs during the change-over.
        f.reload_with(&f.sources.ca_cert, &format!("{}{}", f.ca.pem, new_ca.pem));
        f.assert_accepted(&a, "partner-a").await;
        f.assert_accepted(&c, "partner-c").await;

        // Only the new CA afterwards.
        f.reload_with(&f.sources.ca_cert, &new_ca.pem);
        assert!(f.hello_as(&a).await.is_err());
        f.assert_accepted(&c, "partner-c").await;
        assert_eq!(f.tls.generation(), 2);
        f.shutdown().await;
    }

    #[tokio::test]
    async fn a_revoked_client_is_refused_after_the_crl_is_reloaded() {
        let (f, a) = Fixture::with_partner_a().await;
        let b = issue(&f.ca, "partner-b", 21, false);
        f.assert_accepted(&b, "partner-b").await;
        let mut b_running = Session::open(f.addr, &f.ca.pem, &b).await.unwrap();
        b_running.assert_hello("partner-b").await;

        f.reload_with(f.sources.crl.as_ref().unwrap(), &crl(&f.ca, 2, &[b.serial]));
        let failures = f.tls.handshake_failures();

        let refused = f.hello_as(&b).await;
        assert!(refused.is_err(), "a revoked client connected: {refused:?}");
        wait_until(|| f.tls.handshake_failures() == failures + 1).await;
        f.assert_accepted(&a, "partner-a").await;
        // Connections established before the revocation are not touched (documented).
        b_running.assert_hello("partner-b").await;
        f.shutdown_after(b_running).await;
    }

    #[tokio::test]
    async fn a_broken_file_is_refused_and_the_previous_configuration_stays() {
        let (f, a) = Fixture::with_partner_a().await;
        let previous = f.tls.current();

        replace(&f.sources.cert, "this is not a certificate\n");
        let e = f.tls.reload().unwrap_err();
        let message = e.to_string();
        assert!(message.contains("server.pem"), "{message}");
        assert!(message.starts_with("certificate '"), "{message}");

        replace(
            &f.sources.cert,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        assert!(
            f.tls
                .reload()
                .unwrap_err()
                .to_string()
                .contains("server.pem")
        );

        // A renewed certificate with the old key.
        let renewed = issue(&f.ca, SERVER_NAME, 11, true);
        replace(&f.sources.cert, &renewed.cert_pem);
        let e = f.tls.reload().unwrap_err();
        assert!(matches!(e, TlsReloadError::KeyMismatch { .. }), "{e}");

        replace(&f.sources.cert, &f.server_cert.cert_pem);
        replace(f.sources.crl.as_ref().unwrap(), "garbage");
        let e = f.tls.reload().unwrap_err().to_string();
        assert!(e.contains("crl.pem"), "{e}");

        std::fs::remove_file(&f.sources.ca_cert).unwrap();
        let e = f.tls.reload().unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read CA certificate") && e.contains("ca.pem"),
            "{e}"
        );

        assert_eq!(f.tls.generation(), 0);
        assert_eq!(f.tls.reload_failures(), 5);
        assert!(Arc::ptr_eq(&previous, &f.tls.current()));
        f.assert_accepted(&a, "partner-a").await;
        assert_eq!(f.leaf_seen_by(&a).await, f.server_cert.der);
        f.shutdown().await;
    }

    #[test]
    fn load_reports_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("ca");
        let server = issue(&ca, SERVER_NAME, 10, true);
        let sources = write_sources(dir.path(), &ca, &server, None);
        std::fs::remove_file(&sources.ca_cert).unwrap();
        let e = ReloadableTls::load(sources.clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read CA certificate") && e.contains("ca.pem"),
            "{e}"
        );
        replace(&sources.ca_cert, &ca.pem);
        replace(&sources.key, "");
        let e = ReloadableTls::load(sources.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.key") && e.contains("PRIVATE KEY"), "{e}");
        replace(&sources.key, &server.key_pem);
        let tls = ReloadableTls::load(sources).unwrap();
        assert_eq!(tls.current().alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[tokio::test]
    async fn watch_picks_up_changed_files() {
        let (f, a) = Fixture::with_partner_a().await;
        let watcher = f.tls.watch(Duration::from_millis(50));

        let renewed = issue(&f.ca, SERVER_NAME, 11, true);
        f.install_server(&renewed);
        wait_until(|| f.tls.generation() == 1).await;
        assert_eq!(f.leaf_seen_by(&a).await, renewed.der);

        // A broken file: one failed reload, the server keeps serving.
        replace(&f.sources.cert, "garbage");
        wait_until(|| f.tls.reload_failures() == 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            f.tls.reload_failures(),
            1,
            "a broken file is not retried until it changes"
        );
        assert_eq!(f.tls.generation(), 1);
        f.assert_accepted(&a, "partner-a").await;

        // Fixed again.
        replace(&f.sources.cert, &renewed.cert_pem);
        wait_until(|| f.tls.generation() == 2).await;
        watcher.abort();
        f.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_others_and_times_out() {
        let f = Fixture::start(IncomingOptions {
            handshake_timeout: Duration::from_millis(500),
            max_concurrent_handshakes: 4,
            ..IncomingOptions::default()
        })
        .await;
        let a = f.partner_a();
        // Connections that never say anything.
        let mut silent = f.open_silent(3).await;
        f.assert_accepted(&a, "partner-a").await;
        wait_until(|| f.tls.handshake_failures() == 3).await;
        // The slots are free again.
        silent.extend(f.open_silent(4).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.assert_accepted(&a, "partner-a").await;
        f.shutdown_after(silent).await;
    }

    /// Idle TCP connections (more than the handshake slots, more than the
    /// silent-pool caps) cannot lock a real client out: they never hold a
    /// slot, and the oldest are closed to admit new ones. (Before, four idle
    /// connections took the four slots and a real client waited out its timeout.)
    #[tokio::test]
    async fn idle_connections_cannot_lock_a_real_client_out() {
        let f = Fixture::start(IncomingOptions {
            // Far longer than the client's own bound (`WAIT`): before, the real
            // client could only get a slot when an idle one timed out.
            handshake_timeout: Duration::from_secs(120),
            max_concurrent_handshakes: 4,
            max_silent: 16,
            max_silent_per_address: 8,
            ..IncomingOptions::default()
        })
        .await;
        let a = f.partner_a();
        let idle = f.open_silent(50).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.assert_accepted(&a, "partner-a").await;
        // The pool kept at most its cap: the others were closed.
        wait_until(|| f.tls.handshake_failures() >= 42).await;
        f.shutdown_after(idle).await;
    }

    #[tokio::test]
    async fn the_watcher_ends_when_the_configuration_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("ca");
        let server = issue(&ca, SERVER_NAME, 10, true);
        let tls = ReloadableTls::load(write_sources(dir.path(), &ca, &server, None)).unwrap();
        let watcher = tls.watch(Duration::from_millis(10));
        drop(tls);
        tokio::time::timeout(WAIT, watcher).await.unwrap().unwrap();
    }

    async fn wait_until(condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
