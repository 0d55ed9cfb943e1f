//! Prometheus metrics, served as text on their own port (`/metrics`, loopback by
//! default): rounds, round duration, connected clients, updates accepted and
//! rejected by reason, refused tasks and messages, TLS handshake failures and the
//! privacy loss of the current run, the champion's version per target and the
//! update runs by outcome.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// A `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Short reason key.
    pub reason: String,
}

/// A `cause` label (of a failed TLS handshake: `unknown_ca`, `expired`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cause {
    /// Short cause key.
    pub cause: String,
}

/// A `target` label (of the model registry).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// The model's target.
    pub target: String,
}

/// An `outcome` label (of an update run: `promoted`, `rejected`, `failed`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The outcome.
    pub outcome: String,
}

/// The coordinator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Rounds aggregated and committed.
    pub rounds_completed: Counter,
    /// Wall time of a round, seconds.
    pub round_duration: Histogram,
    /// Client sessions open now.
    pub clients_connected: Gauge,
    /// Updates aggregated.
    pub updates_accepted: Counter,
    /// Answers rejected, by reason.
    pub updates_rejected: Family<Reason, Counter>,
    /// Tasks refused by clients (e.g. privacy budget).
    pub tasks_refused: Counter,
    /// Messages or connections refused at the transport edge, by reason.
    pub messages_refused: Family<Reason, Counter>,
    /// Failed TLS handshakes, by cause.
    pub tls_handshake_failures: Family<Cause, Counter>,
    /// Cumulative epsilon of the run in progress (the largest a client reported,
    /// or the coordinator's own under client-level DP).
    pub epsilon_spent: Gauge<f64, AtomicU64>,
    /// Runs finished, by outcome.
    pub runs_finished: Family<Reason, Counter>,
    /// The champion's version, per target (the model registry).
    pub champion_version: Family<TargetLabel, Gauge>,
    /// Update runs (`[update]`) ended, by outcome.
    pub updates: Family<Outcome, Counter>,
    /// Schedule events, by trigger: a run started (`every`, `new_data`) or a
    /// schedule stopped by a budget refusal (`stopped_budget`).
    pub scheduled: Family<TriggerLabel, Counter>,
}

/// A `trigger` label (of a schedule event: `every`, `new_data`, `stopped_budget`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// The trigger.
    pub trigger: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fedprofile");
        let m = Metrics {
            rounds_completed: Counter::default(),
            round_duration: Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
            ]),
            clients_connected: Gauge::default(),
            updates_accepted: Counter::default(),
            updates_rejected: Family::default(),
            tasks_refused: Counter::default(),
            messages_refused: Family::default(),
            tls_handshake_failures: Family::default(),
            epsilon_spent: Gauge::default(),
            runs_finished: Family::default(),
            champion_version: Family::default(),
            updates: Family::default(),
            scheduled: Family::default(),
            registry: Registry::default(),
        };
        // Each metric under its name, with its help text.
        macro_rules! register {
            ($($field:ident: $name:literal, $help:literal;)*) => {
                $(registry.register($name, $help, m.$field.clone());)*
            };
        }
        register! {
            rounds_completed: "rounds_completed", "Rounds aggregated and committed";
            round_duration: "round_duration_seconds", "Wall time of a round";
            clients_connected: "clients_connected", "Client sessions open now";
            updates_accepted: "updates_accepted", "Updates aggregated";
            updates_rejected: "updates_rejected", "Answers rejected, by reason";
            tasks_refused: "tasks_refused", "Tasks refused by clients";
            messages_refused: "messages_refused", "Messages or connections refused at the transport edge, by reason";
            tls_handshake_failures: "tls_handshake_failures", "Failed TLS handshakes, by cause (unknown_ca, expired, not_yet_valid, revoked, no_client_certificate, bad_certificate, client_refused_server, not_tls, timeout, other)";
            epsilon_spent: "epsilon_spent", "Cumulative epsilon of the current run";
            runs_finished: "runs_finished", "Runs finished, by outcome";
            champion_version: "champion_version", "The champion's version, per target";
            updates: "updates", "Update runs ended, by outcome (promoted, rejected, failed)";
            scheduled: "scheduled_runs", "Schedule events, by trigger (every, new_data: a run started; stopped_budget: a schedule stopped by a budget refusal)";
        }
        Metrics { registry, ..m }
    }

    /// Counts a transport-level refusal.
    pub fn refuse(&self, reason: &str) {
        self.messages_refused
            .get_or_create(&Reason {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets the champion's version of `target`.
    pub fn set_champion(&self, target: &str, version: u32) {
        self.champion_version
            .get_or_create(&TargetLabel {
                target: target.to_string(),
            })
            .set(i64::from(version));
    }

    /// Counts an update run that ended `outcome` (promoted, rejected, failed).
    pub fn count_update(&self, outcome: &str) {
        self.updates
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a schedule event (`every`, `new_data`, `stopped_budget`).
    pub fn count_scheduled(&self, trigger: &str) {
        self.scheduled
            .get_or_create(&TriggerLabel {
                trigger: trigger.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let served = Arc::new(AtomicU64::new(0));
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    served.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let response = if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(metrics.encode())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                        };
                        response.map_err(|e| std::io::Error::other(e.to_string()))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_holds_every_metric_with_labels() {
        let m = Metrics::new();
        m.rounds_completed.inc();
        m.round_duration.observe(0.004);
        m.clients_connected.set(4);
        m.updates_rejected
            .get_or_create(&Reason {
                reason: "wrong_dimension".into(),
            })
            .inc();
        m.epsilon_spent.set(0.75);
        let text = m.encode();
        for name in [
            "fedprofile_rounds_completed_total 1",
            "fedprofile_clients_connected 4",
            "fedprofile_updates_rejected_total{reason=\"wrong_dimension\"} 1",
            "fedprofile_epsilon_spent 0.75",
            "fedprofile_round_duration_seconds_count 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
