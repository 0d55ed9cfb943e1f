//! The gRPC federation service: the transport edge of the coordinator.
//!
//! Each client session is a bidirectional stream the client opened. This module
//! authenticates the session (identity = CN of the verified client certificate),
//! converts messages with `fedprofile_protocol::convert`, and hands domain events
//! to the round engine through [`SessionHub`]. Nothing here knows about rounds.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use fedprofile_protocol::messages::{ClientReply, ServerEvent};
use fedprofile_protocol::pb::federation_server::Federation;
use fedprofile_protocol::pb::{self, client_message};
use fedprofile_protocol::{PROTOCOL_VERSION, tls};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{ClientHub, Inbound};

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
    tx: mpsc::UnboundedSender<Result<pb::ServerMessage, Status>>,
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

    fn register(
        &self,
        client: &str,
        tx: mpsc::UnboundedSender<Result<pb::ServerMessage, Status>>,
    ) -> u64 {
        let serial = {
            let mut n = lock(&self.next_serial);
            *n += 1;
            *n
        };
        // A newer session of the same client replaces the older one.
        if let Some(old) = lock(&self.sessions).insert(client.to_string(), Session { serial, tx }) {
            let _ = old.tx.send(Err(Status::already_exists(
                "a newer session of this client replaced this one",
            )));
        }
        serial
    }

    fn unregister(&self, client: &str, serial: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        if sessions.get(client).is_some_and(|s| s.serial == serial) {
            sessions.remove(client);
            true
        } else {
            false
        }
    }
}

impl ClientHub for SessionHub {
    fn connected(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        ids.sort();
        ids
    }

    fn send(&self, client: &str, event: ServerEvent) -> bool {
        let message = pb::ServerMessage::from(&event);
        lock(&self.sessions)
            .get(client)
            .is_some_and(|s| s.tx.send(Ok(message)).is_ok())
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

/// Per-session message rate limit (token bucket).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Burst size.
    pub burst: f64,
    /// Sustained messages per second.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        // A client sends two or three messages a round; this leaves room for very
        // fast rounds while cutting floods.
        RateLimit {
            burst: 2000.0,
            per_second: 1000.0,
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

fn identity_from_certificate<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    match tls::peer_from_der(leaf.as_ref()) {
        Ok((id, tls::PeerRole::Partner)) => Ok(id),
        Ok((id, tls::PeerRole::Operator)) => Err(Status::permission_denied(format!(
            "'{id}' holds an operator certificate, which cannot join the federation as a partner"
        ))),
        Err(e) => Err(Status::unauthenticated(e.to_string())),
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
                Err(status) => {
                    if let Some(m) = &self.metrics {
                        m.refuse("wrong_role_or_identity");
                    }
                    return Err(status);
                }
            },
            IdentityMode::InsecureClaimed => None,
        };
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::ClientMessage {
                body: Some(client_message::Body::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported (this coordinator speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            )));
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
                    return Err(Status::invalid_argument(
                        "insecure mode: hello.insecure_name must be a valid client id",
                    ));
                }
                name
            }
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(pb::ServerMessage {
            body: Some(pb::server_message::Body::Welcome(pb::Welcome {
                client_id: client.clone(),
                protocol_version: PROTOCOL_VERSION,
            })),
        }));
        let error_tx = tx.clone();
        let serial = self.hub.register(&client, tx);
        tracing::info!(client = %client, version = %hello.client_version, "client session opened");
        let hub = Arc::clone(&self.hub);
        if let Some(l) = hub.listener() {
            l.joined(
                &client,
                hub.count(),
                hello.budget_epsilon,
                hello.epsilon_spent,
            );
        }
        let _ = hub.inbox.send(Inbound::Connected(client.clone())).await;
        let rate = self.rate;

        tokio::spawn(async move {
            let mut tokens = rate.burst;
            let mut refilled = tokio::time::Instant::now();
            loop {
                let event = match inbound.message().await {
                    Ok(Some(message)) => {
                        // Token bucket: a burst beyond the limit is dropped and counted,
                        // without touching the round or the session.
                        let now = tokio::time::Instant::now();
                        tokens = (tokens
                            + now.duration_since(refilled).as_secs_f64() * rate.per_second)
                            .min(rate.burst);
                        refilled = now;
                        if tokens < 1.0 {
                            if let Some(l) = hub.listener() {
                                l.refused(&client, "rate_limited");
                            }
                            continue;
                        }
                        tokens -= 1.0;
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
                    Err(status) => {
                        if status.message().contains("too large")
                            && let Some(l) = hub.listener()
                        {
                            l.refused(&client, "oversized");
                        }
                        // Transport-level refusals (oversized or undecodable frames) end
                        // the session; the client is told why and may reconnect.
                        tracing::info!(client = %client, code = ?status.code(), "session ended: {}", status.message());
                        let _ = error_tx.send(Err(Status::new(
                            status.code(),
                            format!("session closed by the coordinator: {}", status.message()),
                        )));
                        break;
                    }
                };
                if hub.inbox.send(event).await.is_err() {
                    break;
                }
            }
            if hub.unregister(&client, serial) {
                tracing::info!(client = %client, "client session closed");
                if let Some(l) = hub.listener() {
                    l.left(&client, hub.count());
                }
                let _ = hub.inbox.send(Inbound::Disconnected(client)).await;
            }
        });

        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// Converts one client message; `Ok(None)` for a message to ignore (a repeated hello).
fn decode(message: pb::ClientMessage) -> Result<Option<ClientReply>, String> {
    match message.body {
        Some(client_message::Body::Result(result)) => ClientReply::try_from(result)
            .map(Some)
            .map_err(|e| e.to_string()),
        Some(client_message::Body::Refusal(r)) => Ok(Some(ClientReply::from(r))),
        Some(client_message::Body::Hello(_)) => Ok(None),
        None => Err("message has no body".into()),
    }
}
