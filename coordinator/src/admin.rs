//! The operators' gRPC service: start, list, inspect, cancel and watch runs, and
//! list the partners. Only operator certificates (OU = fedprofile-operator) are
//! served; every command is written to the audit log with the operator's identity.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fedprofile_protocol::messages::{ClientInfo, RunInfo, RunProgress};
use fedprofile_protocol::pb::admin_server::Admin;
use fedprofile_protocol::pb::{self};
use fedprofile_protocol::tls::PeerRole;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::daemon::{Progress, Shared, now, queue_run};
use crate::engine::RoundRecord;
use crate::status::{AdminError, PeerError};
use crate::store::{RunRow, RunState};

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
    insecure: bool,
}

impl AdminService {
    /// Serves `shared`; with `insecure` (loopback development only) every caller is
    /// the operator `insecure-operator`.
    pub fn new(shared: Arc<Shared>, insecure: bool) -> AdminService {
        AdminService { shared, insecure }
    }

    fn operator<T>(&self, request: &Request<T>) -> Result<String, Status> {
        if self.insecure {
            return Ok("insecure-operator".into());
        }
        match crate::service::peer(request, "an operator certificate")? {
            (id, PeerRole::Operator) => Ok(id),
            (id, PeerRole::Partner) => {
                self.shared.metrics.refuse("partner_on_admin_api");
                self.shared.audit.note(
                    &id,
                    "admin.refused",
                    None,
                    "a partner certificate was refused on the admin API",
                );
                Err(PeerError::PartnerAsOperator(id).into())
            }
        }
    }

    fn info(&self, row: &RunRow) -> RunInfo {
        let last: Option<RoundRecord> = self.shared.store.rounds(&row.id).ok().and_then(|rows| {
            rows.into_iter().rev().find_map(|r| {
                serde_json::from_str::<Option<RoundRecord>>(&r.record_json)
                    .ok()
                    .flatten()
                    .filter(|rec| rec.metrics.is_some() || rec.quality.is_some())
            })
        });
        let epsilon = self.shared.store.rounds(&row.id).ok().and_then(|rows| {
            rows.into_iter().rev().find_map(|r| {
                serde_json::from_str::<Option<RoundRecord>>(&r.record_json)
                    .ok()
                    .flatten()
                    .and_then(|rec| rec.epsilon)
            })
        });
        RunInfo {
            run_id: row.id.clone(),
            name: row.name.clone(),
            state: row.state.as_str().to_string(),
            rounds_planned: row.rounds_planned,
            rounds_done: row.rounds_done,
            created_at: row.created_at.clone(),
            started_at: row.started_at.clone(),
            finished_at: row.finished_at.clone(),
            failure: row.failure.clone(),
            auc: last.as_ref().and_then(|r| r.metrics.and_then(|m| m.auc)),
            log_loss: last.as_ref().and_then(|r| r.metrics.map(|m| m.log_loss)),
            epsilon,
            quality: last
                .as_ref()
                .and_then(|r| r.quality.as_ref())
                .map(crate::report::headline)
                .unwrap_or_default(),
        }
    }

    fn row(&self, id: &str) -> Result<RunRow, Status> {
        self.shared
            .store
            .run(id)
            .map_err(AdminError::from)?
            .ok_or_else(|| AdminError::NoSuchRun(id.to_string()).into())
    }
}

fn progress_message(p: &Progress) -> pb::RunProgress {
    pb::RunProgress::from(RunProgress {
        run_id: p.run_id.clone(),
        round: p.round,
        rounds_planned: p.rounds_planned,
        state: p.state.as_str().to_string(),
        clients_accepted: p.accepted,
        clients_selected: p.selected,
        auc: p.auc,
        log_loss: p.log_loss,
        epsilon: p.epsilon,
        message: p.message.clone(),
        quality: p.quality.clone(),
    })
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::RunProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        let operator = self.operator(&request)?;
        let text = request.into_inner().run_toml;
        let row = queue_run(&self.shared, &text, &PathBuf::from("run file"), &operator)
            .map_err(AdminError::InvalidRunFile)?;
        Ok(Response::new(self.info(&row).into()))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.operator(&request)?;
        let rows = self.shared.store.runs().map_err(AdminError::from)?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: rows.iter().map(|r| self.info(r).into()).collect(),
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        self.operator(&request)?;
        let row = self.row(&request.into_inner().run_id)?;
        Ok(Response::new(self.info(&row).into()))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        let operator = self.operator(&request)?;
        let req = request.into_inner();
        let row = self.row(&req.run_id)?;
        let reason = if req.reason.is_empty() {
            format!("cancelled by {operator}")
        } else {
            format!("cancelled by {operator}: {}", req.reason)
        };
        match row.state {
            RunState::Queued => {
                self.shared
                    .store
                    .set_run_state(&row.id, RunState::Cancelled, &now(), Some(&reason))
                    .map_err(AdminError::from)?;
            }
            RunState::Running => {
                let sent = self.shared.with_active(|a| match a {
                    Some(active) if active.run_id == row.id => {
                        active.cancel.send(Some(reason.clone())).is_ok()
                    }
                    _ => false,
                });
                if !sent {
                    return Err(AdminError::NotActiveYet.into());
                }
            }
            terminal => {
                return Err(AdminError::AlreadyEnded {
                    run_id: row.id,
                    state: terminal.as_str(),
                }
                .into());
            }
        }
        self.shared
            .audit
            .note(&operator, "run.cancel", Some(&row.id), &reason);
        let row = self.row(&row.id)?;
        Ok(Response::new(self.info(&row).into()))
    }

    type WatchRunStream = ProgressStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        self.operator(&request)?;
        let id = request.into_inner().run_id;
        let row = self.row(&id)?;
        let shared = Arc::clone(&self.shared);
        let service = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            // Where the run stands now.
            let info = service.info(&row);
            let _ = tx
                .send(Ok(pb::RunProgress::from(RunProgress {
                    run_id: info.run_id,
                    round: info.rounds_done,
                    rounds_planned: info.rounds_planned,
                    state: info.state,
                    auc: info.auc,
                    log_loss: info.log_loss,
                    epsilon: info.epsilon,
                    message: info.failure.unwrap_or_default(),
                    quality: info.quality,
                    ..Default::default()
                })))
                .await;
            if row.state.is_terminal() {
                return;
            }
            // Wait (bounded by the run's own life) until it is active, then follow it.
            loop {
                let receiver = shared.with_active(|a| match a {
                    Some(active) if active.run_id == id => Some(active.progress.subscribe()),
                    _ => None,
                });
                if let Some(mut receiver) = receiver {
                    loop {
                        match receiver.recv().await {
                            Ok(p) => {
                                let done = p.state.is_terminal();
                                if tx.send(Ok(progress_message(&p))).await.is_err() || done {
                                    return;
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
                match shared.store.run(&id) {
                    Ok(Some(r)) if r.state.is_terminal() => {
                        let _ = tx
                            .send(Ok(progress_message(&Progress {
                                run_id: id.clone(),
                                round: r.rounds_done,
                                rounds_planned: r.rounds_planned,
                                state: r.state,
                                accepted: 0,
                                selected: 0,
                                auc: None,
                                log_loss: None,
                                epsilon: None,
                                quality: String::new(),
                                message: r.failure.unwrap_or_default(),
                            })))
                            .await;
                        return;
                    }
                    Ok(Some(_)) => {}
                    _ => return,
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        self.operator(&request)?;
        let connected = crate::engine::ClientHub::connected(self.shared.hub.as_ref());
        let rows = self.shared.store.clients().map_err(AdminError::from)?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: rows
                .into_iter()
                .map(|c| {
                    pb::ClientInfo::from(ClientInfo {
                        connected: connected.contains(&c.id),
                        client_id: c.id,
                        first_seen: c.first_seen,
                        last_seen: c.last_seen,
                        budget_epsilon_left: c.budget_epsilon_left,
                    })
                })
                .collect(),
        }))
    }
}
