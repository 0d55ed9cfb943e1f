//! The gRPC federation service: the transport edge of the coordinator.
//!
//! Each client session is a bidirectional stream the client opened. This module
//! authenticates the session (identity = CN of the verified client certificate),
//! converts messages with `fedprofile_protocol::convert`, and hands domain events
//! to the round engine through [`SessionHub`]. Nothing here knows about rounds.
//!
//! Contracts of a session (see `docs/operations.md`, "Sessions"):
//! - **One session per identity.** A second session with the identity of an
//!   open one is refused (`already_exists`, with a sentence naming the open
//!   session's address and start time); the open one keeps working. A session
//!   whose connection died is closed by HTTP/2 keepalive within 30 s, after
//!   which the node gets back in.
//! - **Bounded outgoing queue.** At most [`OUTGOING_QUEUE`] messages wait for a
//!   client; a client that does not read its stream fills it and its session is
//!   closed (`resource_exhausted`), so memory stays bounded.
//! - **Answers are rationed.** A session may send one answer per task it was
//!   sent, plus a burst of [`RateLimit::extra_burst`] others (late, duplicate or
//!   unknown answers, which the engine then rejects), at most
//!   [`RateLimit::per_second`] messages a second. Beyond that, messages are
//!   dropped here, before the engine's inbox, and counted as `rate_limited`: one
//!   flooding session cannot delay the other partners' answers.
//! - **Floods close the session.** More than [`RateLimit::max_refused`] refused
//!   messages within [`RateLimit::refused_window`] close it (`resource_exhausted`).
//! - **The engine may give up on a session** ([`ClientHub::drop_session`]) that
//!   missed its tasks; it is closed (`deadline_exceeded`) and not selected again
//!   until it reconnects.
//!
//! - **Champions go to the partners that follow them** (`Hello.follows`):
//!   [`crate::follow`] sends them through [`SessionHub`] after the registry
//!   committed the change, and on connect for every champion the client's
//!   `Hello.held` lacks. A client's `ChampionAck` goes to
//!   [`HubListener::acknowledged`], never to the engine, and does not use the
//!   session's ration of answers.
//!
//! Every close ends the client's stream with a status whose message starts with
//! "session closed by the coordinator: " and says why; the partner is told with
//! [`HubListener::refused`] (audited once per (client, reason), counted always)
//! and [`HubListener::left`].

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use fedprofile_protocol::messages::{
    ChampionAck, ClientReply, DataFingerprint, HeldModel, ServerEvent,
};
use fedprofile_protocol::pb::federation_server::Federation;
use fedprofile_protocol::pb::{self, client_message};
use fedprofile_protocol::{PROTOCOL_VERSION, tls};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::status::{PeerError, SessionError, to_status};

use crate::engine::{ClientHub, Inbound};

/// Messages that may wait for one client before its session is closed as not
/// reading. A client has at most a task and a run-finished message pending in
/// normal operation; 64 leaves room for a client that is slow to read.
pub const OUTGOING_QUEUE: usize = 64;

/// How clients are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// From the verified client certificate's CN (the only production mode).
    Certificate,
    /// From `Hello.insecure_name` (plain-text loopback deployments only).
    InsecureClaimed,
}

struct Session {
    serial: u64,
    tx: mpsc::Sender<pb::ServerMessage>,
    /// Ends the outgoing stream with a status.
    close: Option<oneshot::Sender<Status>>,
    /// Stops the task reading the client's messages.
    stop: Arc<Notify>,
    /// Tasks sent and not answered yet.
    owed: Arc<AtomicUsize>,
    /// Where the session comes from, and since when (for the duplicate refusal).
    peer: String,
    since: String,
    /// The client follows the champions (`Hello.follows`).
    follows: bool,
}

impl Session {
    /// Ends the session's streams: the client reads `status`, the reader stops.
    fn end(mut self, status: Status) {
        if let Some(close) = self.close.take() {
            let _ = close.send(status);
        }
        self.stop.notify_one();
    }
}

/// Told when partners come and go (registry, audit, metrics).
pub trait HubListener: Send + Sync + std::fmt::Debug {
    /// A partner opened a session; `connected` sessions are open now.
    fn joined(&self, client: &str, connected: usize, budget: Option<f64>, spent: Option<f64>);
    /// A partner's session closed.
    fn left(&self, client: &str, connected: usize);
    /// A partner reported its cumulative epsilon.
    fn spent(&self, _client: &str, _epsilon: f64) {}
    /// A message or session of this partner was refused at the transport edge.
    fn refused(&self, _client: &str, _reason: &str) {}
    /// A partner that follows the champions opened a session, holding `held`
    /// (see `crate::follow`).
    fn follows(&self, _client: &str, _held: &[HeldModel]) {}
    /// A partner answered a champion it was sent.
    fn acknowledged(&self, _client: &str, _ack: ChampionAck) {}
    /// A client sent its data fingerprint.
    fn fingerprint(&self, _client: &str, _fingerprint: &DataFingerprint) {}
}

/// The connected sessions, shared by the service (which adds and removes them)
/// and the engine (which sends tasks through it).
pub struct SessionHub {
    sessions: Mutex<HashMap<String, Session>>,
    next_serial: Mutex<u64>,
    inbox: mpsc::Sender<Inbound>,
    listener: Mutex<Option<Arc<dyn HubListener>>>,
}

impl std::fmt::Debug for SessionHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHub").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the map inconsistent (every
    // critical section is a single insert/remove), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`SessionHub::register`] hands the task reading a session.
struct Registered {
    serial: u64,
    stop: Arc<Notify>,
    owed: Arc<AtomicUsize>,
}

/// The outgoing half of a session: its queue, ended early by a close status.
struct Outgoing {
    rx: mpsc::Receiver<pb::ServerMessage>,
    close: Option<oneshot::Receiver<Status>>,
    done: bool,
}

impl Stream for Outgoing {
    type Item = Result<pb::ServerMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(close) = self.close.as_mut() {
            match Pin::new(close).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.done = true;
                    self.close = None;
                    return Poll::Ready(Some(Err(status)));
                }
                // The session was dropped without a status: drain the queue.
                Poll::Ready(Err(_)) => self.close = None,
                Poll::Pending => {}
            }
        }
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

/// A status ending a session, in the words the client reads.
fn closed(code: tonic::Code, why: &str) -> Status {
    to_status(SessionError::Closed {
        code,
        why: why.to_string(),
    })
}

impl SessionHub {
    /// A hub that forwards client events into `inbox`.
    pub fn new(inbox: mpsc::Sender<Inbound>) -> Arc<SessionHub> {
        Arc::new(SessionHub {
            sessions: Mutex::new(HashMap::new()),
            next_serial: Mutex::new(0),
            inbox,
            listener: Mutex::new(None),
        })
    }

    /// Installs the listener told about joins and leaves.
    pub fn set_listener(&self, listener: Arc<dyn HubListener>) {
        *lock(&self.listener) = Some(listener);
    }

    fn listener(&self) -> Option<Arc<dyn HubListener>> {
        lock(&self.listener).clone()
    }

    fn count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Adds a session, or refuses it (`already_exists`) while another session
    /// of the same client is open.
    fn register(
        &self,
        client: &str,
        peer: &str,
        tx: mpsc::Sender<pb::ServerMessage>,
        close: oneshot::Sender<Status>,
        follows: bool,
    ) -> Result<Registered, Status> {
        let mut sessions = lock(&self.sessions);
        if let Some(open) = sessions.get(client) {
            return Err(to_status(SessionError::AlreadyOpen {
                client: client.to_string(),
                peer: open.peer.clone(),
                since: open.since.clone(),
            }));
        }
        let serial = {
            let mut n = lock(&self.next_serial);
            *n += 1;
            *n
        };
        let stop = Arc::new(Notify::new());
        let owed = Arc::new(AtomicUsize::new(0));
        sessions.insert(
            client.to_string(),
            Session {
                serial,
                tx,
                close: Some(close),
                stop: Arc::clone(&stop),
                owed: Arc::clone(&owed),
                peer: peer.to_string(),
                since: crate::daemon::now(),
                follows,
            },
        );
        Ok(Registered { serial, stop, owed })
    }

    /// Removes `serial`'s session of `client`, if it is still the open one.
    fn unregister(&self, client: &str, serial: u64) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        if sessions.get(client).is_some_and(|s| s.serial == serial) {
            sessions.remove(client)
        } else {
            None
        }
    }

    /// Closes the session of `client` (only `serial`'s, when given) with
    /// `status`; tells the listener (`refused` with `key`, then `left`). False
    /// if no such session is open.
    fn close(&self, client: &str, serial: Option<u64>, key: &str, status: Status) -> bool {
        let removed = {
            let mut sessions = lock(&self.sessions);
            match serial {
                Some(n) => {
                    if sessions.get(client).is_some_and(|s| s.serial == n) {
                        sessions.remove(client)
                    } else {
                        None
                    }
                }
                None => sessions.remove(client),
            }
        };
        let Some(session) = removed else {
            return false;
        };
        tracing::warn!(client = %client, reason = key, "{}", status.message());
        session.end(status);
        if let Some(l) = self.listener() {
            l.refused(client, key);
            l.left(client, self.count());
        }
        true
    }
}

impl ClientHub for SessionHub {
    fn connected(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        ids.sort();
        ids
    }

    fn send(&self, client: &str, event: ServerEvent) -> bool {
        let is_task = matches!(event, ServerEvent::Task(_));
        let message = pb::ServerMessage::from(&event);
        let full = {
            let sessions = lock(&self.sessions);
            let Some(session) = sessions.get(client) else {
                return false;
            };
            if is_task {
                // Counted before the client can possibly answer.
                session.owed.fetch_add(1, Ordering::SeqCst);
            }
            match session.tx.try_send(message) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(_)) => session.serial,
            }
        };
        self.close(
            client,
            Some(full),
            "not_reading",
            closed(
                tonic::Code::ResourceExhausted,
                &format!(
                    "{OUTGOING_QUEUE} messages are waiting for client {client}, which does not read its stream; reconnect"
                ),
            ),
        );
        false
    }

    fn drop_session(&self, client: &str, why: &str) -> bool {
        self.close(
            client,
            None,
            "missed_tasks",
            closed(
                tonic::Code::DeadlineExceeded,
                &format!("{why}; reconnect when the node can answer"),
            ),
        )
    }
}

impl crate::follow::Followers for SessionHub {
    fn followers(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.sessions)
            .iter()
            .filter(|(_, s)| s.follows)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    fn send_to(&self, client: &str, event: ServerEvent) -> bool {
        self.send(client, event)
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct FederationService {
    hub: Arc<SessionHub>,
    identity: IdentityMode,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    rate: RateLimit,
}

/// Per-session message limits.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Burst size of the message rate (token bucket).
    pub burst: f64,
    /// Sustained messages per second.
    pub per_second: f64,
    /// Answers beyond one per task sent that may reach the engine in a burst
    /// (refilled at one per second): late, duplicate or unknown answers.
    pub extra_burst: f64,
    /// Refused messages within [`RateLimit::refused_window`] above which the
    /// session is closed.
    pub max_refused: u32,
    /// The window of [`RateLimit::max_refused`].
    pub refused_window: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        // A client sends two or three messages a round, one per task; this leaves
        // room for very fast rounds and a few stray answers, while a flood is cut
        // before the engine and closed after 1,000 refusals (an honest node is
        // never refused at all).
        RateLimit {
            burst: 2000.0,
            per_second: 1000.0,
            extra_burst: 32.0,
            max_refused: 1000,
            refused_window: Duration::from_secs(10),
        }
    }
}

/// The limits of one session as it goes (see [`RateLimit`]).
struct Budget {
    rate: RateLimit,
    tokens: f64,
    extra: f64,
    refilled: tokio::time::Instant,
    refused: u32,
    window_start: tokio::time::Instant,
}

/// What [`Budget`] says about one message.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Pass it on.
    Pass,
    /// Drop it, counted.
    Refuse,
    /// Drop it and close the session: it floods.
    Close(u32),
}

impl Budget {
    fn new(rate: RateLimit) -> Budget {
        let now = tokio::time::Instant::now();
        Budget {
            rate,
            tokens: rate.burst,
            extra: rate.extra_burst,
            refilled: now,
            refused: 0,
            window_start: now,
        }
    }

    /// Judges one message; `answer`: it would reach the engine (it then uses
    /// one of the `owed` answers, or the extra allowance).
    fn judge(&mut self, answer: bool, owed: &AtomicUsize) -> Verdict {
        let now = tokio::time::Instant::now();
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate.per_second).min(self.rate.burst);
        self.extra = (self.extra + dt).min(self.rate.extra_burst);
        self.refilled = now;
        // Not an answer (a repeated hello), an answer to a task it was sent,
        // or one of the few extra answers allowed.
        let allowed = self.tokens >= 1.0
            && (!answer
                || owed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                || self.extra >= 1.0 && {
                    self.extra -= 1.0;
                    true
                });
        if allowed {
            self.tokens -= 1.0;
            return Verdict::Pass;
        }
        if now.duration_since(self.window_start) > self.rate.refused_window {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.rate.max_refused {
            Verdict::Close(self.refused)
        } else {
            Verdict::Refuse
        }
    }
}

impl FederationService {
    /// A service feeding `hub`.
    pub fn new(hub: Arc<SessionHub>, identity: IdentityMode) -> FederationService {
        FederationService {
            hub,
            identity,
            metrics: None,
            rate: RateLimit::default(),
        }
    }

    /// Counts refusals in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> FederationService {
        self.metrics = Some(metrics);
        self
    }

    /// Overrides the per-session rate limit.
    pub fn with_rate_limit(mut self, rate: RateLimit) -> FederationService {
        self.rate = rate;
        self
    }
}

/// The caller's certificate identity and role; `needed` names the kind of
/// certificate the API asks for (in the error when there is none).
pub(crate) fn peer<T>(
    request: &Request<T>,
    needed: &'static str,
) -> Result<(String, tls::PeerRole), PeerError> {
    let leaf = request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .ok_or(PeerError::NoCertificate { needed })?;
    Ok(tls::peer_from_der(leaf.as_ref())?)
}

fn identity_from_certificate<T>(request: &Request<T>) -> Result<String, PeerError> {
    match peer(request, "a client certificate")? {
        (id, tls::PeerRole::Partner) => Ok(id),
        (id, tls::PeerRole::Operator) => Err(PeerError::OperatorAsPartner(id)),
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Federation for FederationService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::ClientMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let cert_identity = match self.identity {
            IdentityMode::Certificate => match identity_from_certificate(&request) {
                Ok(id) => Some(id),
                Err(error) => {
                    if let Some(m) = &self.metrics {
                        m.refuse("wrong_role_or_identity");
                    }
                    return Err(error.into());
                }
            },
            IdentityMode::InsecureClaimed => None,
        };
        let peer = request
            .remote_addr()
            .map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::ClientMessage {
                body: Some(client_message::Body::Hello(hello)),
            }) => hello,
            _ => return Err(SessionError::NoHello.into()),
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(SessionError::ProtocolVersion(hello.protocol_version).into());
        }
        let client = match cert_identity {
            Some(id) => id,
            None => {
                let name = hello.insecure_name.trim().to_string();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(SessionError::InsecureName.into());
                }
                name
            }
        };

        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let (close_tx, close_rx) = oneshot::channel();
        let _ = tx.try_send(pb::ServerMessage {
            body: Some(pb::server_message::Body::Welcome(pb::Welcome {
                client_id: client.clone(),
                protocol_version: PROTOCOL_VERSION,
            })),
        });
        let hub = Arc::clone(&self.hub);
        let Registered { serial, stop, owed } = match hub.register(
            &client,
            &peer,
            tx,
            close_tx,
            hello.follows,
        ) {
            Ok(r) => r,
            Err(status) => {
                tracing::warn!(client = %client, peer = %peer, "session refused: {}", status.message());
                if let Some(l) = hub.listener() {
                    l.refused(&client, "duplicate_session");
                }
                return Err(status);
            }
        };
        tracing::info!(client = %client, version = %hello.client_version, "client session opened");
        if let Some(l) = hub.listener() {
            l.joined(
                &client,
                hub.count(),
                hello.budget_epsilon,
                hello.epsilon_spent,
            );
            if hello.follows {
                let held: Vec<HeldModel> = hello.held.into_iter().map(Into::into).collect();
                l.follows(&client, &held);
            }
        }
        let _ = hub.inbox.send(Inbound::Connected(client.clone())).await;
        let rate = self.rate;

        tokio::spawn(async move {
            let mut budget = Budget::new(rate);
            let mut ending = None;
            loop {
                let next = tokio::select! {
                    biased;
                    () = stop.notified() => break,
                    next = inbound.message() => next,
                };
                let event = match next {
                    Ok(Some(message)) => {
                        // A repeated hello is ignored, and a champion's acknowledgement
                        // and a data fingerprint go to the listener; everything else would
                        // reach the engine and uses one answer of the session's ration.
                        let answer = !matches!(
                            message.body,
                            Some(
                                client_message::Body::Hello(_)
                                    | client_message::Body::ChampionAck(_)
                                    | client_message::Body::Fingerprint(_)
                            )
                        );
                        match budget.judge(answer, &owed) {
                            Verdict::Pass => {}
                            Verdict::Refuse => {
                                if let Some(l) = hub.listener() {
                                    l.refused(&client, "rate_limited");
                                }
                                continue;
                            }
                            Verdict::Close(refused) => {
                                let why = format!(
                                    "{refused} messages of client {client} were refused within {} s (a session may send one answer per task it was sent, and at most {} messages a second); reconnect and send only answers to tasks",
                                    rate.refused_window.as_secs(),
                                    rate.per_second
                                );
                                if hub.close(
                                    &client,
                                    Some(serial),
                                    "flooding",
                                    closed(tonic::Code::ResourceExhausted, &why),
                                ) {
                                    let _ = hub.inbox.send(Inbound::Disconnected(client)).await;
                                }
                                return;
                            }
                        }
                        if let Some(client_message::Body::ChampionAck(ack)) = message.body {
                            match (ChampionAck::try_from(ack), hub.listener()) {
                                (Ok(ack), Some(l)) => l.acknowledged(&client, ack),
                                (Ok(_), None) => {}
                                (Err(e), _) => {
                                    tracing::warn!(client = %client, "ignoring a champion acknowledgement: {e}");
                                }
                            }
                            continue;
                        }
                        if let Some(client_message::Body::Fingerprint(f)) = message.body {
                            // Not an engine event: the listener records it.
                            if let Some(l) = hub.listener() {
                                l.fingerprint(&client, &DataFingerprint::from(f));
                            }
                            continue;
                        }
                        match decode(message) {
                            Ok(Some(reply)) => {
                                if let ClientReply::Result {
                                    body: fedprofile_protocol::messages::ResultBody::Train(t),
                                    ..
                                } = &reply
                                    && let (Some(e), Some(l)) = (t.epsilon_spent, hub.listener())
                                {
                                    l.spent(&client, e);
                                }
                                Inbound::Reply {
                                    client: client.clone(),
                                    reply,
                                }
                            }
                            Ok(None) => continue,
                            Err(reason) => {
                                if let Some(l) = hub.listener() {
                                    l.refused(&client, "malformed");
                                }
                                Inbound::Malformed {
                                    client: client.clone(),
                                    reason,
                                }
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(status) if client_went_away(&status) => {
                        // The client closed its connection (it stopped after the
                        // run, or was stopped): a normal end, not an error.
                        tracing::debug!(client = %client, "session ended: the client disconnected ({})", status.message());
                        break;
                    }
                    Err(status) => {
                        if status.message().contains("too large")
                            && let Some(l) = hub.listener()
                        {
                            l.refused(&client, "oversized");
                        }
                        // Transport-level refusals (oversized or undecodable frames) end
                        // the session; the client is told why and may reconnect.
                        tracing::info!(client = %client, code = ?status.code(), "session ended: {}", status.message());
                        ending = Some(closed(status.code(), status.message()));
                        break;
                    }
                };
                if hub.inbox.send(event).await.is_err() {
                    break;
                }
            }
            if let Some(session) = hub.unregister(&client, serial) {
                if let Some(status) = ending {
                    session.end(status);
                }
                tracing::info!(client = %client, "client session closed");
                if let Some(l) = hub.listener() {
                    l.left(&client, hub.count());
                }
                let _ = hub.inbox.send(Inbound::Disconnected(client)).await;
            }
        });

        Ok(Response::new(Box::pin(Outgoing {
            rx,
            close: Some(close_rx),
            done: false,
        })))
    }
}

/// Converts one client message; `Ok(None)` for a message to ignore (a repeated hello).
fn decode(message: pb::ClientMessage) -> Result<Option<ClientReply>, String> {
    match message.body {
        Some(client_message::Body::Result(result)) => ClientReply::try_from(result)
            .map(Some)
            .map_err(|e| e.to_string()),
        Some(client_message::Body::Refusal(r)) => Ok(Some(ClientReply::from(r))),
        Some(
            client_message::Body::Hello(_)
            | client_message::Body::ChampionAck(_)
            | client_message::Body::Fingerprint(_),
        ) => Ok(None),
        None => Err("message has no body".into()),
    }
}

/// Whether a stream error is only the client going away (end of stream, an h2
/// GOAWAY or reset, a broken pipe after its run ended) rather than a refusal
/// or a protocol fault worth an info line.
fn client_went_away(status: &Status) -> bool {
    const GONE: [&str; 6] = [
        "error reading a body from connection",
        "connection reset",
        "broken pipe",
        "stream no longer needed",
        "go away",
        "goaway",
    ];
    if !matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled) {
        return false;
    }
    let message = status.message().to_lowercase();
    GONE.iter().any(|g| message.contains(g))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_disconnecting_is_not_a_protocol_error() {
        let gone = Status::unknown(
            "h2 protocol error: error reading a body from connection: stream closed because of a broken pipe",
        );
        assert!(client_went_away(&gone));
        assert!(client_went_away(&Status::cancelled(
            "connection reset by peer"
        )));
        assert!(!client_went_away(&Status::out_of_range(
            "message too large"
        )));
        assert!(!client_went_away(&Status::unknown("invalid frame")));
    }

    use super::*;
    use fedprofile_protocol::messages::Task;
    use tokio_stream::StreamExt;

    /// Records what the hub tells its listener.
    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<String>>);

    impl HubListener for Record {
        fn joined(&self, client: &str, _: usize, _: Option<f64>, _: Option<f64>) {
            lock(&self.0).push(format!("joined {client}"));
        }
        fn left(&self, client: &str, connected: usize) {
            lock(&self.0).push(format!("left {client} ({connected} open)"));
        }
        fn refused(&self, client: &str, reason: &str) {
            lock(&self.0).push(format!("refused {client}: {reason}"));
        }
    }

    struct Opened {
        registered: Registered,
        stream: Outgoing,
    }

    fn hub() -> (Arc<SessionHub>, Arc<Record>, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(16);
        let hub = SessionHub::new(tx);
        let record = Arc::new(Record::default());
        hub.set_listener(Arc::clone(&record) as Arc<dyn HubListener>);
        (hub, record, rx)
    }

    fn open(hub: &SessionHub, client: &str, peer: &str) -> Result<Opened, Status> {
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let (close_tx, close_rx) = oneshot::channel();
        let registered = hub.register(client, peer, tx, close_tx, false)?;
        Ok(Opened {
            registered,
            stream: Outgoing {
                rx,
                close: Some(close_rx),
                done: false,
            },
        })
    }

    fn task(n: u32) -> ServerEvent {
        ServerEvent::Task(Task {
            task_id: format!("t{n}"),
            run_id: "r".into(),
            round: n,
            body: fedprofile_protocol::messages::TaskBody::Stats {
                binary_counts: false,
            },
        })
    }

    #[tokio::test]
    async fn a_second_session_with_the_same_identity_is_refused_and_the_first_keeps_working() {
        let (hub, _, _inbox) = hub();
        let mut first = open(&hub, "partner-a", "127.0.0.1:1000").unwrap();
        let Err(status) = open(&hub, "partner-a", "127.0.0.1:2000") else {
            panic!("a second session of partner-a was accepted");
        };
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        let message = status.message();
        assert!(
            message.starts_with(
                "a session for client partner-a is already open (from 127.0.0.1:1000 since "
            ) && message.ends_with("); two nodes must not share a certificate"),
            "{message}"
        );
        // The first session still gets its tasks.
        assert!(hub.send("partner-a", task(1)));
        assert!(matches!(first.stream.next().await, Some(Ok(_))));
        assert_eq!(hub.connected(), vec!["partner-a"]);
        // Once it is gone, the node gets back in.
        assert!(
            hub.unregister("partner-a", first.registered.serial)
                .is_some()
        );
        assert!(open(&hub, "partner-a", "127.0.0.1:2000").is_ok());
    }

    #[tokio::test]
    async fn a_session_that_does_not_read_is_closed_when_its_queue_is_full() {
        let (hub, record, _inbox) = hub();
        let mut session = open(&hub, "partner-a", "peer").unwrap();
        for n in 0..OUTGOING_QUEUE as u32 {
            assert!(hub.send("partner-a", task(n)), "message {n} was not queued");
        }
        assert!(!hub.send("partner-a", task(999)));
        assert!(hub.connected().is_empty());
        // The client reads why (before the queued tasks), then the end.
        let Some(Err(status)) = session.stream.next().await else {
            panic!("no status");
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().starts_with(
                "session closed by the coordinator: 64 messages are waiting for client partner-a, which does not read its stream"
            ),
            "{}",
            status.message()
        );
        assert!(session.stream.next().await.is_none());
        // The reader is told to stop.
        tokio::time::timeout(Duration::from_secs(5), session.registered.stop.notified())
            .await
            .unwrap();
        assert_eq!(
            *lock(&record.0),
            vec!["refused partner-a: not_reading", "left partner-a (0 open)"]
        );
    }

    #[tokio::test]
    async fn the_engine_can_drop_a_session_with_a_sentence() {
        let (hub, record, _inbox) = hub();
        let mut session = open(&hub, "partner-d", "peer").unwrap();
        let _other = open(&hub, "partner-a", "peer").unwrap();
        assert!(hub.drop_session("partner-d", "client partner-d missed 3 tasks in a row"));
        assert!(!hub.drop_session("partner-d", "again"));
        assert_eq!(hub.connected(), vec!["partner-a"]);
        assert!(!hub.send("partner-d", task(1)));
        let Some(Err(status)) = session.stream.next().await else {
            panic!("no status");
        };
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "session closed by the coordinator: client partner-d missed 3 tasks in a row; reconnect when the node can answer"
        );
        assert_eq!(
            *lock(&record.0),
            vec!["refused partner-d: missed_tasks", "left partner-d (1 open)"]
        );
        // It may come back.
        assert!(open(&hub, "partner-d", "peer").is_ok());
    }

    #[tokio::test]
    async fn tasks_are_counted_so_a_session_can_answer_each_one() {
        let (hub, _, _inbox) = hub();
        let session = open(&hub, "partner-a", "peer").unwrap();
        for n in 0..3 {
            assert!(hub.send("partner-a", task(n)));
        }
        hub.send(
            "partner-a",
            ServerEvent::Finished {
                run_id: "r".into(),
                message: "done".into(),
            },
        );
        assert_eq!(session.registered.owed.load(Ordering::SeqCst), 3);
    }

    fn strict() -> RateLimit {
        RateLimit {
            burst: 100.0,
            per_second: 10.0,
            extra_burst: 2.0,
            max_refused: 5,
            refused_window: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_to_tasks_pass_and_a_flood_is_refused_then_closed() {
        let owed = AtomicUsize::new(3);
        let mut budget = Budget::new(strict());
        // Three answers to three tasks, then two stray answers.
        for _ in 0..5 {
            assert_eq!(budget.judge(true, &owed), Verdict::Pass);
        }
        // A repeated hello does not use the ration.
        assert_eq!(budget.judge(false, &owed), Verdict::Pass);
        // Beyond: refused, and closed after max_refused.
        for _ in 0..5 {
            assert_eq!(budget.judge(true, &owed), Verdict::Refuse);
        }
        assert_eq!(budget.judge(true, &owed), Verdict::Close(6));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_spread_over_windows_do_not_close_and_the_extra_ration_refills() {
        let owed = AtomicUsize::new(0);
        let mut budget = Budget::new(strict());
        assert_eq!(budget.judge(true, &owed), Verdict::Pass);
        assert_eq!(budget.judge(true, &owed), Verdict::Pass);
        for _ in 0..3 {
            for _ in 0..5 {
                assert_eq!(budget.judge(true, &owed), Verdict::Refuse);
            }
            tokio::time::advance(Duration::from_millis(10_001)).await;
            // One extra answer per second came back (two at most).
            assert_eq!(budget.judge(true, &owed), Verdict::Pass);
            assert_eq!(budget.judge(true, &owed), Verdict::Pass);
        }
        // An honest session answering every task at full speed is never refused.
        let mut budget = Budget::new(RateLimit::default());
        for _ in 0..1500 {
            owed.fetch_add(1, Ordering::SeqCst);
            assert_eq!(budget.judge(true, &owed), Verdict::Pass);
        }
    }
}
