//! The behaviour of each state of the run (see the diagram in `mod.rs`).

use std::collections::HashMap;
use std::time::Instant;

use fedprofile_config::run::{PrivacyMode, RecordNoise};
use fedprofile_learning::aggregate::{WeightedUpdate, fedavg};
use fedprofile_learning::strategy::{Aggregated, ClientUpdate};
use fedprofile_learning::{
    Evaluation, FeatureColumn, FeatureSpec, KMeans, LabelNeed, ModelFamily, kmeans_reseed_empty,
    kmeans_update,
};
use fedprofile_protocol::messages::{
    ClientReply, LabelKindMsg, ModelSnapshot, RecordDpTask, ResultBody, ServerEvent, StatsReport,
    Task, TaskBody, TaskKind, TrainReport, TrainTask,
};
use ndarray::Array1;
use rand::seq::IndexedRandom;
use tokio::time::timeout_at;

use super::{
    Collector, InFlight, Inbound, Offer, RejectReason, RoundRecord, RoundRefusal, Run, State,
    deadline_after, dp,
};
use fedprofile_protocol::messages::RefusalKind;

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

impl Run {
    /// WaitingForClients: until enough clients are connected or the start timeout.
    pub(super) async fn wait_for_clients(&mut self) -> State {
        let need = self.config.min_connected_to_start;
        let deadline = deadline_after(self.config.start_timeout);
        loop {
            let connected = self.hub.connected();
            if connected.len() >= need {
                self.observer.note(&format!(
                    "run {} starting with {} connected clients: {}",
                    self.run_id,
                    connected.len(),
                    connected.join(", ")
                ));
                if let Some(checkpoint) = &self.resume {
                    let next = checkpoint.round + 1;
                    self.observer.note(&format!(
                        "run {} resumed after round {}",
                        self.run_id, checkpoint.round
                    ));
                    // Repeat the attempt that was in flight, to the same clients
                    // under the same task ids: a partner that already charged it
                    // answers from its cache or says the result is lost.
                    self.in_flight.take_if(|f| f.round != next);
                    let attempt = match &self.in_flight {
                        Some(f) => {
                            self.observer.note(&format!(
                                "round {next} was in flight (attempt {}, sent to {}): repeating it under the same task ids, so nothing is charged twice",
                                f.attempt + 1,
                                f.selected.join(", ")
                            ));
                            f.attempt
                        }
                        None => 0,
                    };
                    return if next > self.config.rounds {
                        State::Finished
                    } else {
                        State::Training {
                            round: next,
                            attempt,
                        }
                    };
                }
                return State::Statistics { attempt: 0 };
            }
            match self.next_event(deadline).await {
                Next::Deadline => {
                    let connected = self.hub.connected();
                    let mut why = format!(
                        "only {} of the {need} clients needed were connected after {:.0} s",
                        connected.len(),
                        self.config.start_timeout.as_secs_f64()
                    );
                    for missing in self.hub.why_missing(&connected) {
                        why.push_str("; ");
                        why.push_str(&missing);
                    }
                    return State::Failed(why);
                }
                Next::Closed => return State::Failed("the federation service stopped".into()),
                Next::Cancelled(why) => return State::Cancelled(why),
                Next::Event(event) => self.unexpected(event),
            }
        }
    }

    /// Statistics: build the global feature spec from counts and sums.
    pub(super) async fn statistics(&mut self, attempt: u32) -> State {
        let clients = self.hub.connected();
        let tasks = self.send_tasks(0, attempt, &clients, |_| TaskBody::Stats);
        let mut collector = Collector::new(0, attempt, TaskKind::Stats, tasks, None);
        let gathered = self.collect(&mut collector).await;

        let reports: Vec<(String, StatsReport)> = gathered
            .accepted
            .into_iter()
            .filter_map(|(c, body)| match body {
                ResultBody::Stats(s) => Some((c, s)),
                _ => None,
            })
            .collect();
        // The federation's template is the one most clients share.
        let key = |r: &StatsReport| {
            (
                r.template.clone(),
                r.label_column.clone(),
                r.label_positive.clone(),
                r.label_kind,
                r.label_classes.clone(),
            )
        };
        type Key = (FeatureSpec, String, String, LabelKindMsg, Vec<String>);
        let mut counts: Vec<(Key, usize)> = Vec::new();
        for (_, r) in &reports {
            let k = key(r);
            match counts.iter_mut().find(|(t, _)| *t == k) {
                Some((_, n)) => *n += 1,
                None => counts.push((k, 1)),
            }
        }
        let Some((template, label, positive, label_kind, classes)) = counts
            .iter()
            .max_by_key(|(_, n)| *n)
            .map(|(t, _)| t.clone())
        else {
            return self.retry_or_fail(attempt, "statistics: no client answered", |a| {
                State::Statistics { attempt: a }
            });
        };
        let mut agreeing = Vec::new();
        let mut names = Vec::new();
        let mut rejected = gathered.rejections;
        for (client, report) in reports {
            if report.template == template
                && report.label_column == label
                && report.label_positive == positive
                && report.label_kind == label_kind
                && report.label_classes == classes
            {
                agreeing.push(report);
                names.push(client);
            } else {
                let reason = RejectReason::Inconsistent(
                    "feature template differs from the federation's (check the schema version)"
                        .into(),
                );
                self.count_rejection(&client, "stats", &reason);
                self.exclude_for_statistics(&client, &reason);
                rejected.push((client, reason.to_string()));
            }
        }
        // One partner's absurd (but finite, self-consistent) statistics would
        // skew every partner's standardisation: compared with the others'.
        for (i, why) in stats_outliers(&names, &agreeing).into_iter().rev() {
            let client = names.remove(i);
            agreeing.remove(i);
            let reason = RejectReason::Inconsistent(why);
            self.count_rejection(&client, "stats", &reason);
            self.exclude_for_statistics(&client, &reason);
            rejected.push((client, reason.to_string()));
        }
        if agreeing.len() < self.config.min_per_round {
            let mut why = format!(
                "statistics: {} usable answers, {} needed",
                agreeing.len(),
                self.config.min_per_round
            );
            if !rejected.is_empty() {
                let list: Vec<String> = rejected.iter().map(|(c, r)| format!("{c}: {r}")).collect();
                why.push_str(&format!("; rejected: {}", list.join("; ")));
            }
            return self.retry_or_fail(attempt, &why, |a| State::Statistics { attempt: a });
        }
        self.reported_examples = names
            .iter()
            .cloned()
            .zip(agreeing.iter().map(|r| r.train_examples))
            .collect();
        let family = self.config.model;
        if let Err(why) = label_fits(family, label_kind, &label, &classes) {
            return State::Failed(why);
        }
        let mut spec = global_feature_spec(&template, &agreeing);
        let mut start = None;
        if let Some(path) = &self.config.warm_start {
            let expected = WarmStartTarget {
                family,
                label: &label,
                positive: &positive,
                classes: &classes,
                clusters: self.config.clusters as usize,
            };
            match warm_start(path, &template, &expected) {
                Ok((features, params)) => {
                    self.observer.note(&format!(
                        "warm start from {} (its feature encoding is kept)",
                        path.display()
                    ));
                    spec = features;
                    start = Some(params);
                }
                Err(why) => return State::Failed(format!("warm start: {why}")),
            }
        }
        let dim = spec.dim();
        self.observer.note(&format!(
            "feature statistics from {} clients ({} training examples): {} model inputs",
            agreeing.len(),
            agreeing.iter().map(|r| r.train_examples).sum::<u64>(),
            dim
        ));
        let outputs = match family {
            ModelFamily::SoftmaxRegression => classes.len(),
            ModelFamily::KMeans => self.config.clusters as usize,
            _ => 1,
        };
        let params = match start {
            Some(params) => params,
            None => match family.initial(dim, outputs, self.config.seed.unwrap_or(0)) {
                Ok(model) => model.params().clone(),
                Err(e) => return State::Failed(format!("cannot build the initial model: {e}")),
            },
        };
        self.global = Some(ModelSnapshot {
            model_type: family.name().to_string(),
            features: spec.clone(),
            params,
            outputs,
        });
        self.features = Some(spec);
        self.target = (label_kind != LabelKindMsg::None).then_some((label, positive));
        self.classes = classes;
        if let Err(e) = self.commit(None, 0) {
            return State::Failed(e);
        }
        State::Training {
            round: 1,
            attempt: 0,
        }
    }

    /// Training(r): select, send, collect, aggregate.
    pub(super) async fn train_round(&mut self, round: u32, attempt: u32) -> State {
        let span = tracing::info_span!("round", round, attempt);
        tracing::Instrument::instrument(self.train_round_inner(round, attempt), span).await
    }

    async fn train_round_inner(&mut self, round: u32, attempt: u32) -> State {
        let started = Instant::now();
        let Some(global) = self.global.clone() else {
            return State::Failed("internal: training without a global model".into());
        };
        let (mut selected, population) = match self.in_flight.take() {
            Some(f) if f.round == round && f.attempt == attempt => (f.selected, f.population),
            _ => {
                let connected: Vec<String> = self
                    .hub
                    .connected()
                    .into_iter()
                    .filter(|c| !self.excluded.contains_key(c))
                    .collect();
                if connected.is_empty() && !self.excluded.is_empty() {
                    return State::Failed(format!(
                        "round {round}: no connected client can train any more: {}",
                        self.excluded_list()
                    ));
                }
                let selected = match self.server_dp.as_mut() {
                    // Client-level DP: Poisson sampling at the charged rate,
                    // from a CSPRNG (never the run file's seed).
                    Some(server_dp) => server_dp.sample(&connected),
                    None => {
                        let want =
                            ((self.config.fraction_per_round * connected.len() as f64).ceil()
                                as usize)
                                .max(self.config.min_per_round)
                                .min(connected.len());
                        connected
                            .choose_multiple(&mut self.rng, want)
                            .cloned()
                            .collect()
                    }
                };
                (selected, connected.len())
            }
        };
        selected.sort();
        if !matches!(self.config.privacy, PrivacyMode::None) {
            let in_flight = InFlight {
                round,
                attempt,
                selected: selected.clone(),
                population,
            };
            if let Err(e) = self.sink.begin_attempt(&in_flight) {
                return State::Failed(format!(
                    "round {round}: cannot record the attempt before sending it: {e}"
                ));
            }
        }
        let record_dp = match self.config.privacy {
            PrivacyMode::Record(r) => Some(RecordDpTask {
                clip_norm: r.clip_norm,
                noise_multiplier: match r.noise {
                    RecordNoise::Multiplier(z) => Some(z),
                    RecordNoise::TargetEpsilon(_) => None,
                },
                target_epsilon: match r.noise {
                    RecordNoise::TargetEpsilon(e) => Some(e),
                    RecordNoise::Multiplier(_) => None,
                },
                delta: r.delta,
                planned_rounds: self.config.rounds,
            }),
            _ => None,
        };
        let update_clip_norm = self.server_dp.as_ref().map(dp::ServerDp::clip_norm);
        let train = TrainTask {
            model: global.clone(),
            local_epochs: self.config.local_epochs,
            batch_size: self.config.batch_size,
            learning_rate: self.config.learning_rate,
            record_dp,
            update_clip_norm,
            prox_mu: self.config.strategy.proximal_mu().unwrap_or(0.0),
        };
        let tasks = self.send_tasks(round, attempt, &selected, |_| {
            TaskBody::Train(train.clone())
        });
        let kmeans = self.config.model == ModelFamily::KMeans;
        let mut collector = if kmeans {
            let dim = global.params.len() / global.outputs.max(1);
            Collector::new(round, attempt, TaskKind::Train, tasks, None)
                .with_clusters(global.outputs, dim)
        } else {
            Collector::new(
                round,
                attempt,
                TaskKind::Train,
                tasks,
                Some(global.params.len()),
            )
            .with_max_norm(update_clip_norm)
            .with_examples_bound(super::collect::ExamplesBound {
                reported: self.reported_examples.clone(),
            })
        };
        let mut gathered = self.collect(&mut collector).await;
        if kmeans {
            return self.kmeans_step(round, attempt, started, &selected, gathered, &global);
        }
        let refusals = std::mem::take(&mut gathered.refusals);
        // Bounded updates whatever the strategy: an update far larger than the
        // round's others is rejected (client-level DP clips them already).
        if self.server_dp.is_none() {
            let outliers = norm_outliers(&gathered.accepted, self.config.max_update_norm_ratio);
            for (i, reason) in outliers.into_iter().rev() {
                let (client, _) = gathered.accepted.remove(i);
                gathered.rejected += 1;
                self.count_rejection(&client, "train", &reason);
            }
        }

        let mut updates = Vec::new();
        let mut norms = Vec::new();
        let mut loss_sum = 0.0;
        let mut max_train_micros = 0u64;
        let mut client_epsilon: Option<f64> = None;
        let mut contributors = Vec::new();
        for (client, body) in gathered.accepted {
            if let ResultBody::Train(t) = body {
                loss_sum += t.train_loss * t.examples as f64;
                max_train_micros = max_train_micros.max(t.train_micros);
                norms.push(t.update_norm);
                self.note_privacy(&client, &t, &mut client_epsilon);
                updates.push(WeightedUpdate {
                    delta: t.delta,
                    weight: t.examples as f64,
                });
                contributors.push(client);
            }
        }
        // Client-level DP releases (and is charged for) every round, however
        // many sampled clients answered: min_per_round does not apply.
        if self.server_dp.is_none() && updates.len() < self.config.min_per_round {
            return self.short_round(
                ShortRound {
                    round,
                    attempt,
                    got: updates.len(),
                    what: "updates",
                    selected: &selected,
                    started,
                    rejected: gathered.rejected,
                },
                refusals,
            );
        }
        // Client-level DP first releases the noised mean; the strategy (a server
        // optimizer, validated to compose with DP) then post-processes that mean.
        let (inputs, epsilon) = if let Some(server_dp) = self.server_dp.as_mut() {
            let deltas: Vec<_> = updates.iter().map(|u| u.delta.clone()).collect();
            match server_dp.aggregate(
                &self.run_id,
                round,
                &deltas,
                &norms,
                population,
                global.params.len(),
            ) {
                Ok(out) => (
                    vec![ClientUpdate {
                        client: "dp-mean".into(),
                        delta: out.delta,
                        weight: 1.0,
                    }],
                    Some(out.epsilon),
                ),
                Err(e) => return State::Failed(format!("round {round}: {e}")),
            }
        } else {
            (
                contributors
                    .iter()
                    .zip(&updates)
                    .map(|(client, u)| ClientUpdate {
                        client: client.clone(),
                        delta: u.delta.clone(),
                        weight: u.weight,
                    })
                    .collect(),
                client_epsilon,
            )
        };
        let aggregated = match self.strategy.as_mut() {
            Some(strategy) => strategy.aggregate(&inputs),
            None => fedavg(&updates).map(|step| Aggregated {
                step,
                excluded: Vec::new(),
            }),
        };
        let (delta, excluded) = match aggregated {
            Ok(a) => (a.step, a.excluded),
            Err(e) => {
                let why = format!("round {round}: aggregation failed: {e}");
                return self
                    .retry_or_fail(attempt, &why, |a| State::Training { round, attempt: a });
            }
        };
        if !excluded.is_empty() {
            tracing::warn!(run_id = %self.run_id, round, excluded = %excluded.join(","), strategy = self.config.strategy.name(), "updates excluded by the strategy");
            self.observer
                .excluded(&self.run_id, round, self.config.strategy.name(), &excluded);
        }
        let contributors: Vec<String> = contributors
            .into_iter()
            .filter(|c| !excluded.contains(c))
            .collect();
        let total_weight: f64 = updates.iter().map(|u| u.weight).sum();
        if let Some(g) = self.global.as_mut() {
            g.params += &delta;
            let keep = self.config.tail_average_rounds as usize;
            if keep > 1 {
                self.tail.push_back(g.params.clone());
                while self.tail.len() > keep {
                    self.tail.pop_front();
                }
            }
        }
        self.contributors.extend(contributors);
        let train_phase_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(run_id = %self.run_id, round, updates = updates.len(), "round aggregated");
        let record = RoundRecord {
            round,
            selected: selected.len(),
            accepted: updates.len(),
            rejected: gathered.rejected,
            refused: gathered.refused,
            attempts: attempt + 1,
            train_loss: if total_weight > 0.0 {
                loss_sum / total_weight
            } else {
                0.0
            },
            train_phase_ms,
            max_client_train_ms: max_train_micros as f64 / 1e3,
            eval_phase_ms: 0.0,
            round_ms: train_phase_ms,
            metrics: None,
            quality: None,
            evaluated_clients: 0,
            epsilon,
            refusals,
            skipped: None,
        };
        self.after_training(record)
    }

    /// Evaluating(r): pooled metrics of the global model on every client's test split.
    pub(super) async fn evaluate(&mut self, mut record: RoundRecord) -> State {
        let started = Instant::now();
        let Some(global) = self.released() else {
            return State::Failed("internal: evaluation without a global model".into());
        };
        let clients = self.hub.connected();
        let tasks = self.send_tasks(record.round, 0, &clients, |_| {
            TaskBody::Eval(global.clone())
        });
        let mut collector = Collector::new(record.round, 0, TaskKind::Eval, tasks, None);
        let gathered = self.collect(&mut collector).await;
        record.rejected += gathered.rejected;
        let mut pooled = match Evaluation::empty(self.config.model, global.outputs) {
            Ok(pooled) => pooled,
            Err(e) => return State::Failed(format!("internal: {e}")),
        };
        for (client, body) in gathered.accepted {
            let ResultBody::Eval(summary) = body else {
                continue;
            };
            if let Err(e) = pooled.merge(&summary) {
                let reason = RejectReason::Inconsistent(e.to_string());
                self.count_rejection(&client, "eval", &reason);
                continue;
            }
            record.evaluated_clients += 1;
        }
        if record.evaluated_clients > 0 {
            match &pooled {
                Evaluation::Binary(summary) => record.metrics = Some(summary.metrics()),
                other => record.quality = other.quality(),
            }
        }
        if record.metrics.is_none() && record.quality.is_none() {
            self.observer.note(&format!(
                "round {}: no client returned an evaluation",
                record.round
            ));
        }
        record.eval_phase_ms = started.elapsed().as_secs_f64() * 1e3;
        record.round_ms = record.train_phase_ms + record.eval_phase_ms;
        self.finish_round(record)
    }

    /// The k-means half of Training(r): pool the accepted per-cluster sums and
    /// counts and move every centroid to the mean of its pooled rows.
    fn kmeans_step(
        &mut self,
        round: u32,
        attempt: u32,
        started: Instant,
        selected: &[String],
        gathered: Gathered,
        global: &ModelSnapshot,
    ) -> State {
        let mut stats = Vec::new();
        let mut contributors = Vec::new();
        let mut max_train_micros = 0u64;
        let mut client_epsilon: Option<f64> = None;
        for (client, body) in gathered.accepted {
            if let ResultBody::Train(mut t) = body
                && let Some(c) = t.clusters.take()
            {
                max_train_micros = max_train_micros.max(t.train_micros);
                self.note_privacy(&client, &t, &mut client_epsilon);
                stats.push(c);
                contributors.push(client);
            }
        }
        let refusals = gathered.refusals;
        if stats.len() < self.config.min_per_round {
            return self.short_round(
                ShortRound {
                    round,
                    attempt,
                    got: stats.len(),
                    what: "cluster statistics",
                    selected,
                    started,
                    rejected: gathered.rejected,
                },
                refusals,
            );
        }
        let old = match KMeans::from_params(global.params.clone(), global.outputs) {
            Ok(m) => m,
            Err(e) => return State::Failed(format!("internal: {e}")),
        };
        let update = match kmeans_update(&old, &stats) {
            Ok(u) => u,
            Err(e) => {
                let why = format!("round {round}: k-means update failed: {e}");
                return self
                    .retry_or_fail(attempt, &why, |a| State::Training { round, attempt: a });
            }
        };
        let mut next = update.model;
        // Under record-level DP the counts are noisy: a cluster with a handful of
        // (noisy) rows has a centroid made mostly of noise, so clusters below 2%
        // of the pooled rows are treated as empty.
        let min_rows = match self.config.privacy {
            PrivacyMode::Record(_) => (update.examples as f64 * 0.02).ceil() as u64,
            _ => 1,
        };
        let starved: Vec<usize> = (0..update.counts.len())
            .filter(|&c| update.counts[c] < min_rows)
            .collect();
        if !starved.is_empty() {
            let seed = self.config.seed.unwrap_or(0) ^ u64::from(round).wrapping_mul(0x9e37_79b9);
            match kmeans_reseed_empty(&next, &update.counts, &starved, seed) {
                Ok(reseeded) => {
                    self.observer.note(&format!(
                        "round {round}: clusters {starved:?} received fewer than {min_rows} rows; re-seeded by splitting the largest clusters"
                    ));
                    next = reseeded;
                }
                Err(e) => return State::Failed(format!("internal: {e}")),
            }
        }
        if let Some(g) = self.global.as_mut() {
            g.params = next.into_params();
        }
        self.contributors.extend(contributors);
        let train_phase_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(run_id = %self.run_id, round, updates = stats.len(), inertia = update.inertia, "k-means round aggregated");
        let record = RoundRecord {
            round,
            selected: selected.len(),
            accepted: stats.len(),
            rejected: gathered.rejected,
            refused: gathered.refused,
            attempts: attempt + 1,
            // Mean training inertia of the centroids the clients were sent (0
            // under record-level DP, where the inertia is not released).
            train_loss: update.inertia / update.examples.max(1) as f64,
            train_phase_ms,
            max_client_train_ms: max_train_micros as f64 / 1e3,
            eval_phase_ms: 0.0,
            round_ms: train_phase_ms,
            metrics: None,
            quality: None,
            evaluated_clients: 0,
            epsilon: client_epsilon,
            refusals,
            skipped: None,
        };
        self.after_training(record)
    }

    /// The privacy side of an accepted training result: the largest cumulative ε
    /// the clients report, and a warning (once per client) for test-seeded updates.
    fn note_privacy(&mut self, client: &str, t: &TrainReport, client_epsilon: &mut Option<f64>) {
        if let Some(e) = t.epsilon_spent {
            *client_epsilon = Some(client_epsilon.map_or(e, |m: f64| m.max(e)));
        }
        if t.not_private && self.not_private.insert(client.to_string()) {
            self.observer.note(&format!(
                "warning: {client} trained with a fixed test seed: its updates are NOT private"
            ));
        }
    }

    /// Evaluating(r) every `eval_every` rounds and after the last; otherwise the
    /// round is committed now.
    fn after_training(&mut self, record: RoundRecord) -> State {
        let round = record.round;
        if round.is_multiple_of(self.config.eval_every) || round == self.config.rounds {
            State::Evaluating {
                record: Box::new(record),
            }
        } else {
            self.finish_round(record)
        }
    }

    fn finish_round(&mut self, record: RoundRecord) -> State {
        let round = record.round;
        // Durable before anyone hears of it: a crash after this line resumes
        // from this round, a crash before it re-runs the round.
        if let Err(e) = self.commit(Some(&record), round) {
            return State::Failed(e);
        }
        let snapshot = super::RunSnapshot {
            run_id: &self.run_id,
            rounds: self.config.rounds,
        };
        self.observer.round_finished(&snapshot, &record);
        self.rounds.push(record);
        if round >= self.config.rounds {
            State::Finished
        } else {
            State::Training {
                round: round + 1,
                attempt: 0,
            }
        }
    }

    /// The clients left out of the run, with their reasons, for messages.
    fn excluded_list(&self) -> String {
        self.excluded
            .iter()
            .map(|(c, why)| format!("{c} refused for good: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A training round with fewer usable answers than needed. It is retried
    /// only when a retry can succeed and charges nobody twice:
    /// - results that partners charged and then lost (a restart) are not asked
    ///   for again under any task id: the round is committed without an update;
    /// - when the clients that can still train (not refused for budget or
    ///   policy) are fewer than the minimum, the run fails at once, naming them;
    /// - otherwise the round is retried as before.
    fn short_round(&mut self, short: ShortRound<'_>, refusals: Vec<RoundRefusal>) -> State {
        let ShortRound {
            round,
            attempt,
            got,
            what,
            selected,
            started,
            rejected,
        } = short;
        let need = self.config.min_per_round;
        let lost: Vec<&str> = refusals
            .iter()
            .filter(|r| r.kind == RefusalKind::ResultLost)
            .map(|r| r.client.as_str())
            .collect();
        if !lost.is_empty() {
            let why = format!(
                "round {round}: the results of {} were charged to their privacy ledgers and lost in a restart; the round is committed without an update (asking again would charge them twice)",
                lost.join(", ")
            );
            self.observer.note(&why);
            tracing::warn!(run_id = %self.run_id, round, "{why}");
            let train_phase_ms = started.elapsed().as_secs_f64() * 1e3;
            let record = RoundRecord {
                round,
                selected: selected.len(),
                accepted: 0,
                rejected,
                refused: refusals.len(),
                attempts: attempt + 1,
                train_loss: 0.0,
                train_phase_ms,
                max_client_train_ms: 0.0,
                eval_phase_ms: 0.0,
                round_ms: train_phase_ms,
                metrics: None,
                quality: None,
                evaluated_clients: 0,
                epsilon: self.rounds.iter().rev().find_map(|r| r.epsilon),
                refusals,
                skipped: Some(why),
            };
            return self.after_training(record);
        }
        let mut why = format!(
            "round {round}: {got} of the {need} {what} needed arrived usable (selected: {})",
            selected.join(", ")
        );
        if !refusals.is_empty() {
            let refused: Vec<String> = refusals
                .iter()
                .map(|r| format!("{} ({}): {}", r.client, r.kind.as_str(), r.reason))
                .collect();
            why.push_str(&format!("; refused: {}", refused.join("; ")));
        }
        let can_train = self
            .hub
            .connected()
            .iter()
            .filter(|c| !self.excluded.contains_key(*c))
            .count();
        if !self.excluded.is_empty() && can_train < need {
            return State::Failed(format!(
                "{why}; no retry can succeed: {can_train} connected clients can still train, {need} needed ({})",
                self.excluded_list()
            ));
        }
        self.retry_or_fail(attempt, &why, |a| State::Training { round, attempt: a })
    }

    /// A partner whose feature statistics were rejected trains on data the
    /// federation's standardisation does not describe (a broken cell, another
    /// schema): it is left out of the rest of the run, and the run says so.
    fn exclude_for_statistics(&mut self, client: &str, reason: &RejectReason) {
        if self.excluded.contains_key(client) {
            return;
        }
        self.observer.note(&format!(
            "{client} is left out of the rest of run {}: its feature statistics were rejected ({reason})",
            self.run_id
        ));
        self.excluded.insert(
            client.to_string(),
            format!("its feature statistics were rejected: {reason}"),
        );
    }

    fn retry_or_fail(&mut self, attempt: u32, why: &str, again: impl Fn(u32) -> State) -> State {
        if attempt < self.config.max_retries {
            self.observer.note(&format!(
                "{why}; retrying (attempt {} of {})",
                attempt + 2,
                self.config.max_retries + 1
            ));
            again(attempt + 1)
        } else {
            State::Failed(format!("{why}; no retries left"))
        }
    }

    /// Sends one task per client; returns task id -> client for those sent.
    fn send_tasks(
        &mut self,
        round: u32,
        attempt: u32,
        clients: &[String],
        body: impl Fn(&str) -> TaskBody,
    ) -> HashMap<String, String> {
        let mut sent = HashMap::new();
        for client in clients {
            let body = body(client);
            let kind = body.kind();
            let task_id = format!("{}/r{round}/a{attempt}/{kind}/{client}", self.run_id);
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

    /// Waits until every task is answered or the deadline passes.
    async fn collect(&mut self, collector: &mut Collector) -> Gathered {
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
                            if kind.is_permanent() && !self.excluded.contains_key(&client) {
                                self.observer.note(&format!(
                                    "{client} is left out of the rest of run {}: it refused for good ({})",
                                    self.run_id,
                                    kind.as_str()
                                ));
                                self.excluded.insert(client.clone(), reason.clone());
                            }
                            self.refusals.insert(client.clone(), reason.clone());
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
        gathered
    }

    /// The deadline of a collection passed while `clients` still owed an
    /// answer: each has missed one more task in a row; a client at
    /// `clients.max_missed_tasks` has its session closed.
    fn missed_deadline(&mut self, clients: Vec<String>) {
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
    fn unexpected(&mut self, event: Inbound) {
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

/// What [`Run::short_round`] needs to know about the round.
pub(super) struct ShortRound<'a> {
    round: u32,
    attempt: u32,
    got: usize,
    what: &'static str,
    selected: &'a [String],
    started: Instant,
    rejected: usize,
}

/// Checks that the clients' label column is what the run's model family trains on.
fn label_fits(
    family: ModelFamily,
    kind: LabelKindMsg,
    column: &str,
    classes: &[String],
) -> Result<(), String> {
    let need = match family.label_need() {
        LabelNeed::Binary => LabelKindMsg::Binary,
        LabelNeed::Numeric => LabelKindMsg::Numeric,
        LabelNeed::Classes => LabelKindMsg::Classes,
        LabelNeed::None => return Ok(()),
    };
    if kind != need {
        let has = match kind {
            LabelKindMsg::None => "no label column".to_string(),
            other => format!("'{column}' as {}", other.describe()),
        };
        return Err(format!(
            "the run trains a {family} model, which needs {} in the clients' schema; their schema declares {has}",
            need.describe()
        ));
    }
    if need == LabelKindMsg::Classes && classes.len() < 2 {
        return Err(format!(
            "the clients' class column '{column}' declares {} classes, at least 2 are needed",
            classes.len()
        ));
    }
    Ok(())
}

/// What a warm-start model must predict to continue this run.
struct WarmStartTarget<'a> {
    family: ModelFamily,
    label: &'a str,
    positive: &'a str,
    classes: &'a [String],
    clusters: usize,
}

/// Loads an earlier global model (model file version 1 or 2) for a warm start
/// and checks that it fits the federation's current schema (same columns,
/// kinds, vocabularies and target) and the run (same family, classes, clusters).
fn warm_start(
    path: &std::path::Path,
    template: &FeatureSpec,
    expected: &WarmStartTarget<'_>,
) -> Result<(FeatureSpec, Array1<f64>), String> {
    use fedprofile_learning::{ModelFileV2, VersionedModelFile};
    let file = VersionedModelFile::load(path).map_err(|e| e.to_string())?;
    let shown = path.display();
    if file.model_type() != expected.family.name() {
        return Err(format!(
            "{shown} is a {} model, the run trains {}",
            file.model_type(),
            expected.family
        ));
    }
    let shape = |spec: &FeatureSpec| -> Vec<FeatureColumn> {
        spec.columns
            .iter()
            .map(|c| match c {
                FeatureColumn::Numeric { name, .. } => FeatureColumn::Numeric {
                    name: name.clone(),
                    mean: 0.0,
                    std: 1.0,
                },
                other => other.clone(),
            })
            .collect()
    };
    if shape(file.features()) != shape(template) {
        return Err(format!(
            "{shown} was trained on other features than the clients' schema declares"
        ));
    }
    let (label, positive) = (expected.label, expected.positive);
    let target_differs = |column: &str| {
        Err(format!(
            "{shown} predicts '{column}', the clients' schema's label is '{label}'"
        ))
    };
    let params = match &file {
        VersionedModelFile::V1(f) => {
            if f.target.column != label || f.target.positive_value != positive {
                return Err(format!(
                    "{shown} predicts '{}' = '{}', the clients' schema labels '{label}' = '{positive}'",
                    f.target.column, f.target.positive_value
                ));
            }
            f.to_model().map_err(|e| e.to_string())?.into_params()
        }
        VersionedModelFile::V2(ModelFileV2::LinearRegression(f)) => {
            if f.target.column != label {
                return target_differs(&f.target.column);
            }
            f.to_model().map_err(|e| e.to_string())?.into_params()
        }
        VersionedModelFile::V2(ModelFileV2::SoftmaxRegression(f)) => {
            if f.target.column != label {
                return target_differs(&f.target.column);
            }
            if f.classes != expected.classes {
                return Err(format!(
                    "{shown} has the classes {:?}, the clients' schema declares {:?}",
                    f.classes, expected.classes
                ));
            }
            f.to_model().map_err(|e| e.to_string())?.into_params()
        }
        VersionedModelFile::V2(ModelFileV2::KMeans(f)) => {
            if f.clusters != expected.clusters {
                return Err(format!(
                    "{shown} has {} clusters, the run file asks for {}",
                    f.clusters, expected.clusters
                ));
            }
            f.to_model().map_err(|e| e.to_string())?.into_params()
        }
    };
    Ok((file.features().clone(), params))
}

/// The global feature spec: the template with federated means and standard deviations.
pub(super) fn global_feature_spec(template: &FeatureSpec, reports: &[StatsReport]) -> FeatureSpec {
    let mut sums: HashMap<&str, (u64, f64, f64)> = HashMap::new();
    for report in reports {
        for c in &report.numeric {
            let e = sums.entry(c.column.as_str()).or_default();
            e.0 += c.count;
            e.1 += c.sum;
            e.2 += c.sum_sq;
        }
    }
    let columns = template
        .columns
        .iter()
        .map(|column| match column {
            FeatureColumn::Numeric { name, .. } => {
                let (mean, std) = match sums.get(name.as_str()) {
                    Some(&(n, s, ss)) if n > 0 => {
                        let mean = s / n as f64;
                        let var = (ss / n as f64 - mean * mean).max(0.0);
                        let std = var.sqrt();
                        (mean, if std > 1e-12 { std } else { 1.0 })
                    }
                    _ => (0.0, 1.0),
                };
                FeatureColumn::Numeric {
                    name: name.clone(),
                    mean,
                    std,
                }
            }
            other => other.clone(),
        })
        .collect();
    FeatureSpec { columns }
}

/// Accepted training answers whose update norm exceeds `ratio` × the median
/// norm of the round's accepted updates (index, reason), ascending. Needs three
/// updates or more (with two, the median cannot tell which one is off);
/// `ratio = 0` turns the check off.
pub(super) fn norm_outliers(
    accepted: &[(String, ResultBody)],
    ratio: f64,
) -> Vec<(usize, RejectReason)> {
    if ratio <= 0.0 {
        return Vec::new();
    }
    let norms: Vec<(usize, f64)> = accepted
        .iter()
        .enumerate()
        .filter_map(|(i, (_, body))| match body {
            ResultBody::Train(t) if t.clusters.is_none() => Some((
                i,
                super::collect::robust_norm(t.delta.as_slice().unwrap_or(&[])),
            )),
            _ => None,
        })
        .collect();
    if norms.len() < 3 {
        return Vec::new();
    }
    let mut sorted: Vec<f64> = norms.iter().map(|(_, n)| *n).collect();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    };
    if !(median > 0.0 && median.is_finite()) {
        return Vec::new();
    }
    norms
        .into_iter()
        .filter(|(_, n)| n.is_nan() || *n > ratio * median)
        .map(|(i, norm)| {
            (
                i,
                RejectReason::NormOutlier {
                    norm,
                    median,
                    ratio,
                },
            )
        })
        .collect()
}

/// Partners whose statistics are absurd next to everyone else's (index into
/// `reports`, reason naming the column): a column whose mean or root mean
/// square is more than a million times the largest root mean square of the
/// other partners' (plus 1, so columns near zero everywhere are not flagged).
/// Real partners differ by far less; one broken cell (1e300, a unit error of
/// 1e9) does not. Needs three partners or more.
pub(super) fn stats_outliers(names: &[String], reports: &[StatsReport]) -> Vec<(usize, String)> {
    const FAR: f64 = 1e6;
    if reports.len() < 3 {
        return Vec::new();
    }
    let mut out: Vec<(usize, String)> = Vec::new();
    let columns: Vec<&str> = reports[0]
        .numeric
        .iter()
        .map(|c| c.column.as_str())
        .collect();
    for column in columns {
        // (mean, root mean square) of each partner that has values.
        let moments: Vec<Option<(f64, f64)>> = reports
            .iter()
            .map(|r| {
                r.numeric
                    .iter()
                    .find(|c| c.column == column && c.count > 0)
                    .map(|c| {
                        let n = c.count as f64;
                        (c.sum / n, (c.sum_sq / n).max(0.0).sqrt())
                    })
            })
            .collect();
        for (i, m) in moments.iter().enumerate() {
            let Some((mean, rms)) = m else { continue };
            let others = moments
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .filter_map(|(_, o)| o.map(|o| o.1))
                .fold(None, |acc: Option<f64>, r| {
                    Some(acc.map_or(r, |a| a.max(r)))
                });
            let Some(others) = others else { continue };
            let limit = FAR * (others + 1.0);
            if (mean.abs() > limit || *rms > limit) && !out.iter().any(|(j, _)| *j == i) {
                out.push((
                    i,
                    format!(
                        "statistics of column '{column}' (mean {mean:.6e}, root mean square {rms:.6e}) are absurd next to the other partners' (largest root mean square {others:.6e}): a cell of that column at {} is probably broken",
                        names[i]
                    ),
                ));
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}
