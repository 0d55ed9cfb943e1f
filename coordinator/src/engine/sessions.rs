//! How the phases talk to the clients: tasks out through the [`ClientHub`],
//! answers in through the inbox, bounded by the phase's deadline and the
//! operator's cancellation. Clients that keep missing deadlines have their
//! session closed.

use super::*;

impl Run {
    /// Sends one task per client; returns task id -> client for those sent.
    pub(super) fn send_tasks(
        &mut self,
        round: u32,
        attempt: u32,
        exchange: u32,
        clients: &[String],
        body: impl Fn(&str) -> TaskBody,
    ) -> HashMap<String, String> {
        let mut sent = HashMap::new();
        for client in clients {
            let body = body(client);
            let kind = body.kind();
            // A round's later exchanges (a tree's levels) get ids of their own.
            let task_id = match exchange {
                0 => format!("{}/r{round}/a{attempt}/{kind}/{client}", self.run_id),
                x => format!("{}/r{round}/a{attempt}/x{x}/{kind}/{client}", self.run_id),
            };
            self.book.record(&task_id, client, round, attempt, kind);
            let task = Task {
                task_id: task_id.clone(),
                run_id: self.run_id.clone(),
                round,
                body,
            };
            if self.hub.send(client, ServerEvent::Task(task)) {
                sent.insert(task_id, client.clone());
            } else {
                tracing::info!(client = %client, "client left before its task could be sent");
            }
        }
        sent
    }

    /// Waits until every task is answered or the deadline passes; the
    /// accepted answers come back sorted by client id.
    pub(super) async fn collect(&mut self, collector: &mut Collector) -> Gathered {
        let deadline = deadline_after(self.config.deadline);
        let mut gathered = Gathered::default();
        while !collector.is_complete() {
            let event = match self.next_event(deadline).await {
                Next::Event(event) => event,
                Next::Closed => break,
                Next::Cancelled(_) => break,
                Next::Deadline => {
                    tracing::warn!(
                        run_id = %self.run_id,
                        waiting_for = %collector.waiting_for().join(","),
                        "deadline passed"
                    );
                    self.missed_deadline(collector.waiting_for());
                    break;
                }
            };
            match event {
                Inbound::Connected(client) => {
                    tracing::info!(client = %client, "client connected");
                    self.missed.remove(&client);
                }
                Inbound::Disconnected(client) => {
                    tracing::info!(client = %client, "client disconnected");
                    collector.client_left(&client);
                }
                Inbound::Malformed { client, reason } => {
                    gathered.rejected += 1;
                    self.count_rejection(&client, "?", &RejectReason::Malformed(reason));
                }
                Inbound::Reply { client, reply } => {
                    let task_id = reply.task_id().to_string();
                    let owed = collector.owes(&client);
                    let offer = collector.offer(&self.book, &client, reply);
                    if owed && !collector.owes(&client) {
                        // Answered (even with a refusal or a rejected result).
                        self.missed.remove(&client);
                    }
                    match offer {
                        Offer::Accepted(body) => gathered.accepted.push((client, body)),
                        Offer::Refused { reason, kind } => {
                            tracing::warn!(run_id = %self.run_id, client = %client, task_id = %task_id, kind = kind.as_str(), "task refused: {reason}");
                            self.observer
                                .note(&format!("{client} refused {task_id}: {reason}"));
                            self.observer
                                .task_refused(&self.run_id, &client, &task_id, &reason);
                            if kind.is_permanent() && !self.state.excluded.contains_key(&client) {
                                self.observer.note(&format!(
                                    "{client} is left out of the rest of run {}: it refused for good ({})",
                                    self.run_id,
                                    kind.as_str()
                                ));
                                self.state.excluded.insert(client.clone(), reason.clone());
                            }
                            if kind == RefusalKind::BudgetExhausted {
                                self.state
                                    .budget_refusals
                                    .insert(client.clone(), reason.clone());
                            }
                            self.state.refusals.insert(client.clone(), reason.clone());
                            gathered.refusals.push(RoundRefusal {
                                client,
                                kind,
                                reason,
                            });
                            gathered.refused += 1;
                        }
                        Offer::Rejected(reason) => {
                            gathered.rejected += 1;
                            self.count_rejection(&client, &task_id, &reason);
                            if collector.is_stats()
                                && matches!(reason, RejectReason::Inconsistent(_))
                            {
                                self.exclude_for_statistics(&client, &reason);
                            }
                            gathered.rejections.push((client, reason.to_string()));
                        }
                    }
                }
            }
        }
        // A fixed order, whatever order the clients answered in: everything
        // pooled from these answers is summed in it (bit-reproducible runs).
        gathered.accepted.sort_by(|a, b| a.0.cmp(&b.0));
        gathered
    }

    /// The deadline of a collection passed while `clients` still owed an
    /// answer: each has missed one more task in a row; a client at
    /// `clients.max_missed_tasks` has its session closed.
    pub(super) fn missed_deadline(&mut self, clients: Vec<String>) {
        let limit = self.config.max_missed_tasks;
        for client in clients {
            let missed = self.missed.entry(client.clone()).or_default();
            *missed += 1;
            if limit == 0 || *missed < limit {
                continue;
            }
            self.missed.remove(&client);
            let why = format!(
                "client {client} missed {limit} tasks in a row (no result or refusal within the {} s deadline, clients.max_missed_tasks = {limit})",
                self.config.deadline.as_secs_f64()
            );
            if self.hub.drop_session(&client, &why) {
                self.observer.note(&format!(
                    "{why}: its session is closed, and it is selected again once it reconnects"
                ));
            }
        }
    }

    /// The next session event, the deadline, or a cancellation, whichever is first.
    pub(super) async fn next_event(&mut self, deadline: tokio::time::Instant) -> Next {
        if let Some(reason) = self.cancelled() {
            return Next::Cancelled(reason);
        }
        let cancel = self.cancel.clone();
        let cancelled = async move {
            match cancel {
                Some(mut rx) => loop {
                    if let Some(reason) = rx.borrow_and_update().clone() {
                        return reason;
                    }
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = timeout_at(deadline, self.inbox.recv()) => match event {
                Ok(Some(event)) => Next::Event(event),
                Ok(None) => Next::Closed,
                Err(_) => Next::Deadline,
            },
            reason = cancelled => Next::Cancelled(reason),
        }
    }

    /// An event outside any collection: replies can only be stale or unknown.
    pub(super) fn unexpected(&mut self, event: Inbound) {
        match event {
            Inbound::Connected(c) => {
                tracing::info!(client = %c, "client connected");
                self.missed.remove(&c);
            }
            Inbound::Disconnected(c) => tracing::info!(client = %c, "client disconnected"),
            Inbound::Malformed { client, reason } => {
                self.count_rejection(&client, "?", &RejectReason::Malformed(reason));
            }
            Inbound::Reply { client, reply } => {
                let task_id = reply.task_id().to_string();
                let reason = match self.book.round_of(&task_id) {
                    Some(task_round) => RejectReason::Stale { task_round },
                    None => RejectReason::UnknownTask,
                };
                if let ClientReply::Refusal { .. } = reply {
                    tracing::info!(client = %client, task_id = %task_id, "late refusal ignored");
                } else {
                    self.count_rejection(&client, &task_id, &reason);
                }
            }
        }
    }
}

/// What waiting produced.
// Lives on the stack for one `select!`; boxing the event would add an allocation per reply.
#[allow(clippy::large_enum_variant)]
pub(super) enum Next {
    /// An event from the sessions.
    Event(Inbound),
    /// The deadline passed.
    Deadline,
    /// The federation service stopped.
    Closed,
    /// An operator cancelled the run.
    Cancelled(String),
}

/// Answers gathered by one collection.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    pub(super) accepted: Vec<(String, ResultBody)>,
    pub(super) refused: usize,
    pub(super) rejected: usize,
    pub(super) refusals: Vec<RoundRefusal>,
    /// Rejected answers: who, and why.
    pub(super) rejections: Vec<(String, String)>,
}
