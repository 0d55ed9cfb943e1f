//! The operators' gRPC service: start, list, inspect, cancel and watch runs,
//! list the partners, and manage the model registry (list, show, promote,
//! roll back; each change of champion is audited as `model.promote` or
//! `model.rollback` with the operator's reason). Only operator certificates (OU = fedprofile-operator) are
//! served; every command is written to the audit log with the operator's identity.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fedprofile_protocol::messages::{
    ClientInfo, ModelVersionInfo, PartnerHolding, RunInfo, RunProgress, UpdateDecisionInfo,
};
use fedprofile_protocol::pb::admin_server::Admin;
use fedprofile_protocol::pb::{self};
use fedprofile_protocol::tls::PeerRole;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::daemon::{Progress, Shared, Submitted, now, submit};
use crate::engine::RoundRecord;
use crate::status::{AdminError, PeerError};
use crate::store::{
    ChampionChange, ModelVersionRow, Problem, RunRow, RunState, ScheduleRow, ScheduleState,
    StoreError,
};

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

    /// After `operator` moved the champion of `target` (`action`, audit `note`):
    /// the metrics and the audit log say so, and the new champion is the answer.
    fn champion_changed(
        &self,
        operator: &str,
        action: &str,
        target: &str,
        change: &ChampionChange,
        note: &str,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        self.shared.metrics.set_champion(target, change.to);
        self.announce(target);
        self.shared.audit.note(operator, action, None, note);
        let row = self
            .shared
            .store
            .model_version(target, change.to)
            .map_err(AdminError::from)?
            .ok_or_else(|| AdminError::NoSuchModel(format!("{target}@{}", change.to)))?;
        Ok(Response::new(self.version_info(&row, false).into()))
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
        let version = self
            .shared
            .store
            .model_version_of_run(&row.id)
            .ok()
            .flatten();
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
            model_version: version.as_ref().map(ModelVersionRow::name),
            model_status: version.as_ref().map(|v| v.status.as_str().to_string()),
            update: version.as_ref().and_then(decision_of),
        }
    }

    /// A registry row for the admin API (`with_file`: with its model file),
    /// with the partners that acknowledged holding it.
    fn version_info(&self, v: &ModelVersionRow, with_file: bool) -> ModelVersionInfo {
        let partners = match self.shared.store.partners_holding(&v.target, v.version) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("{e}");
                Vec::new()
            }
        };
        ModelVersionInfo {
            partners: partners
                .into_iter()
                .map(|p| PartnerHolding {
                    client_id: p.client_id,
                    fingerprint: p.fingerprint,
                    acknowledged_at: p.acknowledged_at,
                })
                .collect(),
            ..version_info(v, with_file)
        }
    }

    /// Sends the (committed) champion of `target` to the following partners.
    fn announce(&self, target: &str) {
        if let Err(e) = crate::follow::announce(&self.shared.store, &*self.shared.hub, target) {
            tracing::error!("{e}");
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

/// A schedule as the admin API shows it: a row of `run list` whose state is
/// `scheduled` (active) or `schedule-stopped`, its rules, its last run and
/// why it stopped in the `failure` text.
fn schedule_info(s: &ScheduleRow) -> RunInfo {
    let mut text = crate::schedule::describe(s);
    text.push_str(&format!("; {} runs started", s.runs_started));
    if let Some(run) = &s.last_run_id {
        text.push_str(&format!(", the last {run}"));
    }
    if let Some(reason) = &s.reason {
        text.push_str(&format!("; {reason}"));
    }
    RunInfo {
        run_id: s.id.clone(),
        name: s.name.clone(),
        state: match s.state {
            ScheduleState::Active => "scheduled",
            ScheduleState::Stopped => "schedule-stopped",
        }
        .to_string(),
        created_at: unix_text(s.created_unix),
        started_at: s.last_started_unix.map(unix_text),
        failure: Some(text),
        ..Default::default()
    }
}

/// Unix seconds as RFC 3339.
fn unix_text(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// An update run's verdict, as stored with its version.
fn decision_of(v: &ModelVersionRow) -> Option<UpdateDecisionInfo> {
    serde_json::from_str(v.decision_json.as_deref()?).ok()
}

/// A registry row for the admin API (`with_file`: with its model file).
fn version_info(v: &ModelVersionRow, with_file: bool) -> ModelVersionInfo {
    ModelVersionInfo {
        target: v.target.clone(),
        version: v.version,
        run_id: v.run_id.clone(),
        family: v.family.clone(),
        status: v.status.as_str().to_string(),
        reason: v.reason.clone(),
        metrics: crate::models::metrics_headline(&v.metrics_json),
        epsilon: v.epsilon,
        data_fingerprint: v.data_fingerprint.clone(),
        parent_version: v.parent_version,
        registered_at: v.registered_at.clone(),
        decision: decision_of(v),
        model_json: with_file.then(|| v.model_json.clone()),
        partners: Vec::new(),
    }
}

/// A registry refusal as the operator reads it: the store's sentence
/// without the database's path.
fn registry_error(e: StoreError) -> AdminError {
    match e.problem() {
        Some(p @ (Problem::UnknownTarget(_) | Problem::UnknownVersion(_))) => {
            AdminError::NoSuchModel(p.to_string())
        }
        Some(p @ (Problem::NothingToRollBack(_) | Problem::AlreadyChampion(_))) => {
            AdminError::ModelPrecondition(p.to_string())
        }
        _ => AdminError::Store(e),
    }
}

/// The operator's reason, required for a change of champion.
fn required_reason(reason: String, command: &str) -> Result<String, AdminError> {
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err(AdminError::InvalidModelCommand(format!(
            "model {command} needs a reason (--reason \"…\"); it is written to the audit log"
        )));
    }
    Ok(reason)
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
        let info = match submit(&self.shared, &text, &PathBuf::from("run file"), &operator)
            .map_err(AdminError::InvalidRunFile)?
        {
            Submitted::Run(row) => self.info(&row),
            Submitted::Schedule(row) => schedule_info(&row),
        };
        Ok(Response::new(info.into()))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.operator(&request)?;
        let rows = self.shared.store.runs().map_err(AdminError::from)?;
        let schedules = self.shared.store.schedules().map_err(AdminError::from)?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: rows
                .iter()
                .map(|r| self.info(r))
                .chain(schedules.iter().map(schedule_info))
                .map(Into::into)
                .collect(),
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        self.operator(&request)?;
        let id = request.into_inner().run_id;
        if let Some(schedule) = self.shared.store.schedule(&id).map_err(AdminError::from)? {
            return Ok(Response::new(schedule_info(&schedule).into()));
        }
        let row = self.row(&id)?;
        Ok(Response::new(self.info(&row).into()))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        let operator = self.operator(&request)?;
        let req = request.into_inner();
        if self
            .shared
            .store
            .schedule(&req.run_id)
            .map_err(AdminError::from)?
            .is_some()
        {
            // `run cancel <schedule id>` stops the schedule (audited).
            let reason = if req.reason.is_empty() {
                "no reason given".to_string()
            } else {
                req.reason
            };
            let row = crate::schedule::stop(&self.shared, &req.run_id, &operator, &reason)
                .map_err(AdminError::InvalidModelCommand)?;
            return Ok(Response::new(schedule_info(&row).into()));
        }
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

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.operator(&request)?;
        let target = request.into_inner().target;
        let target = (!target.is_empty()).then_some(target);
        let rows = self
            .shared
            .store
            .model_versions(target.as_deref())
            .map_err(AdminError::from)?;
        if let (Some(target), true) = (&target, rows.is_empty()) {
            return Err(AdminError::NoSuchModel(
                Problem::UnknownTarget(target.clone()).to_string(),
            )
            .into());
        }
        Ok(Response::new(pb::ListModelsResponse {
            versions: rows
                .iter()
                .map(|v| self.version_info(v, false).into())
                .collect(),
        }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        self.operator(&request)?;
        let req = request.into_inner();
        let store = &self.shared.store;
        let row = if req.version == 0 {
            store.champion(&req.target)
        } else {
            store.model_version(&req.target, req.version)
        }
        .map_err(AdminError::from)?;
        let row = match row {
            Some(row) => row,
            None => {
                let known = !store
                    .model_versions(Some(&req.target))
                    .map_err(AdminError::from)?
                    .is_empty();
                let problem = match (known, req.version) {
                    (false, _) => Problem::UnknownTarget(req.target),
                    (true, 0) => Problem::UnknownVersion(format!("champion of '{}'", req.target)),
                    (true, v) => Problem::UnknownVersion(format!("{}@{v}", req.target)),
                };
                return Err(AdminError::NoSuchModel(problem.to_string()).into());
            }
        };
        Ok(Response::new(self.version_info(&row, true).into()))
    }

    async fn promote_model(
        &self,
        request: Request<pb::PromoteModelRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let operator = self.operator(&request)?;
        let req = request.into_inner();
        let reason = required_reason(req.reason, "promote")?;
        let store = &self.shared.store;
        let change = store
            .promote(
                &req.target,
                req.version,
                &format!("promoted by {operator}: {reason}"),
            )
            .map_err(registry_error)?;
        let from = change
            .from
            .map_or("no champion".to_string(), |v| format!("{}@{v}", req.target));
        let note = format!(
            "{}@{} is champion (was {from}): {reason}",
            req.target, change.to
        );
        self.champion_changed(&operator, "model.promote", &req.target, &change, &note)
    }

    async fn rollback_model(
        &self,
        request: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let operator = self.operator(&request)?;
        let req = request.into_inner();
        let reason = required_reason(req.reason, "rollback")?;
        let store = &self.shared.store;
        let change = store
            .rollback(&req.target, &format!("by {operator}: {reason}"))
            .map_err(registry_error)?;
        let note = format!(
            "{target}@{to} is champion again (was {target}@{from}): {reason}",
            target = req.target,
            to = change.to,
            from = change.from.unwrap_or_default()
        );
        self.champion_changed(&operator, "model.rollback", &req.target, &change, &note)
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
