//! Lightweight in-process clients that speak the real protocol over mTLS, for
//! load, rogue-client and overhead measurements. They hold no data: their
//! answers are synthetic but well-formed (or deliberately malformed).

use std::time::Duration;

use fedprofile_learning::metrics::EvalSummary;
use fedprofile_learning::{FeatureColumn, FeatureSpec};
use fedprofile_protocol::messages::{
    ClientReply, ColumnStats, ResultBody, StatsReport, Task, TaskBody, TrainReport,
};
use fedprofile_protocol::pb::federation_client::FederationClient;
use fedprofile_protocol::pb::{self, server_message};
use ndarray::Array1;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// An open session: send answers on `tx`, read tasks from `stream`.
#[derive(Debug)]
pub struct LightSession {
    /// The identity the coordinator gave us (from our certificate).
    pub client_id: String,
    /// Outgoing messages.
    pub tx: mpsc::Sender<pb::ClientMessage>,
    /// Incoming messages after the welcome.
    pub stream: tonic::Streaming<pb::ServerMessage>,
}

/// What the coordinator sent next.
#[derive(Debug)]
pub enum Incoming {
    /// A task.
    Task(Box<Task>),
    /// The run ended.
    Finished,
    /// The stream ended or failed.
    Closed(String),
}

impl LightSession {
    /// The next task, bounded by `limit`; none once the run finished. Panics,
    /// naming the client, when the session closes first.
    pub async fn next_task(&mut self, limit: Duration) -> Option<Box<Task>> {
        match self.next(limit).await {
            Incoming::Task(task) => Some(task),
            Incoming::Finished => None,
            Incoming::Closed(why) => panic!("{}'s session closed: {why}", self.client_id),
        }
    }

    /// The next training task and the number of its model's parameters,
    /// refusing every other task for `reason`; none once the run finished.
    /// Panics, naming the client, when the session closes first.
    pub async fn next_training(
        &mut self,
        limit: Duration,
        reason: &str,
    ) -> Option<(Box<Task>, usize)> {
        loop {
            let task = self.next_task(limit).await?;
            match &task.body {
                TaskBody::Train(t) => {
                    let dim = t.model.params.len();
                    return Some((task, dim));
                }
                _ => self.send(&refusal(&task.task_id, reason)).await,
            }
        }
    }

    /// Next message, bounded by `limit`.
    pub async fn next(&mut self, limit: Duration) -> Incoming {
        match tokio::time::timeout(limit, self.stream.next()).await {
            Err(_) => Incoming::Closed("timeout".into()),
            Ok(None) => Incoming::Closed("end of stream".into()),
            Ok(Some(Err(status))) => Incoming::Closed(status.to_string()),
            Ok(Some(Ok(message))) => match message.body {
                Some(server_message::Body::Task(t)) => match Task::try_from(t) {
                    Ok(task) => Incoming::Task(Box::new(task)),
                    Err(e) => Incoming::Closed(format!("bad task: {e}")),
                },
                Some(server_message::Body::Finished(_)) => Incoming::Finished,
                other => Incoming::Closed(format!("unexpected message {other:?}")),
            },
        }
    }

    /// Sends one reply.
    pub async fn send(&self, reply: &ClientReply) {
        let _ = self.tx.send(pb::ClientMessage::from(reply)).await;
    }
}

/// Opens a session (hello, welcome) on the coordinator at `localhost:port`.
pub async fn open_session(port: u16, tls: ClientTlsConfig) -> Result<LightSession, String> {
    fedprofile_protocol::tls::install_crypto_provider();
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = FederationClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::ClientMessage {
        body: Some(pb::client_message::Body::Hello(pb::Hello {
            client_version: "light".into(),
            protocol_version: fedprofile_protocol::PROTOCOL_VERSION,
            // Ignored under mTLS: identity comes from the certificate.
            insecure_name: "someone-else".into(),
            ..Default::default()
        })),
    };
    tx.send(hello).await.map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.session(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|s| format!("session: {s:?}"))?;
    let mut stream = response.into_inner();
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(pb::ServerMessage {
            body: Some(server_message::Body::Welcome(w)),
        }))) => Ok(LightSession {
            client_id: w.client_id,
            tx,
            stream,
        }),
        other => Err(format!("no welcome: {other:?}")),
    }
}

/// A training report of `delta` over `examples` examples at `train_loss`: one
/// step, no privacy spent, no cluster statistics.
pub fn train_report(delta: Array1<f64>, examples: u64, train_loss: f64) -> TrainReport {
    TrainReport {
        delta,
        examples,
        steps: 1,
        train_loss,
        train_micros: 1,
        update_norm: 0.0,
        epsilon_spent: None,
        not_private: false,
        statistics: None,
    }
}

/// The answer to the training task `task_id`: [`train_report`] of its arguments.
pub fn train_reply(
    task_id: &str,
    delta: Array1<f64>,
    examples: u64,
    train_loss: f64,
) -> ClientReply {
    ClientReply::Result {
        task_id: task_id.to_string(),
        body: ResultBody::Train(train_report(delta, examples, train_loss)),
    }
}

/// A refusal of the task `task_id` (kind `Other`) for `reason`.
pub fn refusal(task_id: &str, reason: &str) -> ClientReply {
    ClientReply::Refusal {
        task_id: task_id.to_string(),
        reason: reason.to_string(),
        kind: fedprofile_protocol::messages::RefusalKind::Other,
    }
}

/// A template of `dim` numeric columns `f0..`, label `y` positive `1`.
pub fn synthetic_stats(dim: usize) -> StatsReport {
    StatsReport {
        template: FeatureSpec {
            reference: None,
            columns: (0..dim)
                .map(|i| FeatureColumn::Numeric {
                    name: format!("f{i}"),
                    mean: 0.0,
                    std: 1.0,
                })
                .collect(),
        },
        numeric: (0..dim)
            .map(|i| ColumnStats {
                column: format!("f{i}"),
                count: 10,
                sum: 5.0,
                sum_sq: 10.0,
            })
            .collect(),
        train_examples: 100,
        label_column: "y".into(),
        label_positive: "1".into(),
        label_kind: fedprofile_protocol::messages::LabelKindMsg::Binary,
        label_classes: Vec::new(),
        binary: Vec::new(),
    }
}

/// A well-formed answer to any task (training: a small constant delta, or for
/// k-means cluster statistics with every cluster populated).
pub fn honest_answer(task: &Task, dim: usize) -> ClientReply {
    let body = match &task.body {
        TaskBody::Stats { .. } => ResultBody::Stats(synthetic_stats(dim)),
        TaskBody::Train(t) if t.model.model_type == "kmeans" => {
            let k = t.model.outputs.max(1);
            ResultBody::Train(TrainReport {
                steps: 1,
                train_loss: 0.0,
                statistics: Some(fedprofile_learning::Statistics::Clusters(
                    fedprofile_learning::ClusterStats {
                        sums: Array1::from_elem(t.model.params.len(), 0.5),
                        counts: (0..k)
                            .map(|c| if c == 0 { 100 - (k as u64 - 1) } else { 1 })
                            .collect(),
                        inertia: 50.0,
                    },
                )),
                ..train_report(Array1::zeros(0), 100, 0.0)
            })
        }
        TaskBody::Eval(m) if m.model_type == "kmeans" => {
            let k = m.outputs.max(1);
            ResultBody::Eval(fedprofile_learning::Evaluation::Clustering(
                fedprofile_learning::ClusteringSummary {
                    examples: k as u64,
                    inertia: 5.0,
                    counts: vec![1; k],
                },
            ))
        }
        TaskBody::Train(t) => ResultBody::Train(TrainReport {
            steps: 4,
            ..train_report(Array1::from_elem(t.model.params.len(), 0.01), 100, 0.5)
        }),
        TaskBody::Eval(_) => ResultBody::Eval(fedprofile_learning::Evaluation::Binary(
            EvalSummary::from_predictions(
                Array1::from_vec(vec![0.8, 0.3, 0.6, 0.1]).view(),
                Array1::from_vec(vec![1.0, 0.0, 1.0, 0.0]).view(),
            )
            .unwrap_or_default(),
        )),
    };
    ClientReply::Result {
        task_id: task.task_id.clone(),
        body,
    }
}

/// Answers every task honestly until the run finishes; returns tasks answered.
pub async fn serve_honestly(mut session: LightSession, dim: usize) -> usize {
    let mut answered = 0;
    loop {
        match session.next(Duration::from_secs(120)).await {
            Incoming::Task(task) => {
                session.send(&honest_answer(&task, dim)).await;
                answered += 1;
            }
            Incoming::Finished | Incoming::Closed(_) => return answered,
        }
    }
}
