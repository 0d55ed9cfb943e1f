//! Training(r): select clients (fraction and minimum, or Poisson sampling
//! under client-level DP), send the global model, collect the updates until
//! every selected client answered or the deadline passed, and aggregate them
//! the way the run's family does. A round that misses its minimum is retried
//! (or committed without an update when partners lost charged results).

use super::*;

impl Run {
    /// Training(r): select, send, collect, aggregate.
    pub(super) async fn train_round(&mut self, round: u32, attempt: u32) -> State {
        let span = tracing::info_span!("round", round, attempt);
        tracing::Instrument::instrument(self.train_round_inner(round, attempt), span).await
    }

    async fn train_round_inner(&mut self, round: u32, attempt: u32) -> State {
        let started = Instant::now();
        let Some(global) = self.global.clone() else {
            return State::Failed(RunError::Internal("training without a global model".into()));
        };
        let (selected, population) = match self.select(round, attempt) {
            Ok(selection) => selection,
            Err(e) => return State::Failed(e),
        };
        let model =
            match AnyModel::from_parts(self.config.model, global.params.clone(), global.outputs) {
                Ok(model) => model,
                Err(e) => return State::Failed(RunError::Internal(e.to_string())),
            };
        let mut totals = RoundTotals::default();
        let plan = RoundPlan {
            round,
            attempt,
            started,
            global: &global,
            selected: &selected,
            population,
        };
        let Exchanged {
            next,
            excluded,
            train_loss,
            epsilon,
            got,
            exchanges,
        } = match self.exchange_until_done(&plan, model, &mut totals).await {
            Ok(done) => done,
            Err(state) => return state,
        };
        let family = self.config.model.ops();
        if !excluded.is_empty() {
            tracing::warn!(run_id = %self.run_id, round, excluded = %excluded.join(","), strategy = self.config.strategy.name(), "updates excluded by the strategy");
            self.observer
                .excluded(&self.run_id, round, self.config.strategy.name(), &excluded);
        }
        let keep = self.config.tail_average_rounds as usize;
        if keep > 1 && family.is_gradient_trained() {
            self.tail.push_back(next.params().clone());
            while self.tail.len() > keep {
                self.tail.pop_front();
            }
        }
        if let Some(g) = self.global.as_mut() {
            g.params = next.into_params();
        }
        self.state.contributors.extend(
            totals
                .contributors
                .into_iter()
                .filter(|c| !excluded.contains(c)),
        );
        let train_phase_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(run_id = %self.run_id, round, updates = got, exchanges, "round aggregated");
        let record = RoundRecord {
            round,
            selected: selected.len(),
            accepted: got,
            rejected: totals.rejected,
            refused: totals.refused,
            attempts: attempt + 1,
            train_loss,
            train_phase_ms,
            max_client_train_ms: totals.max_train_micros as f64 / 1e3,
            eval_phase_ms: 0.0,
            round_ms: train_phase_ms,
            metrics: None,
            quality: None,
            evaluated_clients: 0,
            epsilon,
            refusals: totals.refusals,
            skipped: None,
            champion: None,
        };
        self.after_training(record)
    }

    /// The exchanges of one training round with its selected clients until
    /// the round is done: one for a gradient-trained family, several for a
    /// statistics family (a tree grows one level per exchange). `Err` is the
    /// state to go to instead: a short round, a retry or a failure. Nothing is
    /// committed here; `totals` adds up what every exchange saw.
    async fn exchange_until_done(
        &mut self,
        plan: &RoundPlan<'_>,
        mut model: AnyModel,
        totals: &mut RoundTotals,
    ) -> Result<Exchanged, State> {
        let RoundPlan {
            round,
            attempt,
            started,
            global,
            selected,
            population,
        } = *plan;
        let update_clip_norm = self.server_dp.as_ref().map(dp::ServerDp::clip_norm);
        let family = self.config.model.ops();
        // A statistics family's round may take several exchanges with the
        // same clients; a short exchange retries the whole round from its start.
        let mut exchange = 0u32;
        loop {
            let snapshot = ModelSnapshot {
                params: model.params().clone(),
                ..global.clone()
            };
            let train = self.train_task(&snapshot, update_clip_norm);
            let tasks = self.send_tasks(round, attempt, exchange, selected, |_| {
                TaskBody::Train(train.clone())
            });
            let mut collector = if family.is_gradient_trained() {
                Collector::new(
                    round,
                    attempt,
                    TaskKind::Train,
                    tasks,
                    Some(global.params.len()),
                )
                .with_max_norm(update_clip_norm)
                .with_examples_bound(super::collect::ExamplesBound {
                    reported: self.state.reported_examples.clone(),
                })
            } else {
                Collector::new(round, attempt, TaskKind::Train, tasks, None)
                    .with_statistics(model.clone())
            };
            let mut gathered = self.collect(&mut collector).await;
            totals.refusals.append(&mut gathered.refusals);
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
            totals.rejected += gathered.rejected;
            totals.refused += gathered.refused;
            let answers = self.take_answers(gathered.accepted);
            totals.max_train_micros = totals.max_train_micros.max(answers.max_train_micros);
            let got = answers.deltas.len() + answers.statistics.len();
            // Client-level DP releases (and is charged for) every round, however
            // many sampled clients answered: min_per_round does not apply.
            let released_anyway = self.server_dp.is_some() && family.is_gradient_trained();
            if !released_anyway && got < self.config.min_per_round {
                return Err(self.short_round(
                    ShortRound {
                        round,
                        attempt,
                        got,
                        what: family.update_name(),
                        selected,
                        started,
                        rejected: totals.rejected,
                    },
                    std::mem::take(&mut totals.refusals),
                ));
            }
            let aggregated = match self.aggregate(round, &model, &answers, population) {
                Ok(aggregated) => aggregated,
                Err(AggregateFailure::Fatal(e)) => return Err(State::Failed(e)),
                Err(AggregateFailure::Retry(why)) => {
                    return Err(self
                        .retry_or_fail(attempt, &why, |a| State::Training { round, attempt: a }));
                }
            };
            for client in answers.contributors {
                if !totals.contributors.contains(&client) {
                    totals.contributors.push(client);
                }
            }
            match aggregated {
                (RoundAggregate::Step { aggregated, next }, epsilon) => {
                    let total_weight: f64 = answers.deltas.iter().map(|u| u.weight).sum();
                    let loss = if total_weight > 0.0 {
                        answers.loss_sum / total_weight
                    } else {
                        0.0
                    };
                    return Ok(Exchanged {
                        next,
                        excluded: aggregated.excluded,
                        train_loss: loss,
                        epsilon,
                        got,
                        exchanges: exchange + 1,
                    });
                }
                (RoundAggregate::Statistics { update, next }, epsilon) if update.round_done => {
                    let next =
                        match self.reseed_starved(round, next, &update.counts, update.examples) {
                            Ok(next) => next,
                            Err(e) => return Err(State::Failed(e)),
                        };
                    return Ok(Exchanged {
                        next,
                        excluded: Vec::new(),
                        train_loss: update.loss,
                        epsilon,
                        got,
                        exchanges: exchange + 1,
                    });
                }
                (RoundAggregate::Statistics { next, .. }, _) => {
                    exchange += 1;
                    if exchange >= MAX_EXCHANGES_PER_ROUND {
                        return Err(State::Failed(RunError::Internal(format!(
                            "round {round}: the {} round is not done after {MAX_EXCHANGES_PER_ROUND} exchanges",
                            model.family()
                        ))));
                    }
                    model = next;
                }
            }
        }
    }

    /// The clients of this attempt (sorted) and the population they were
    /// drawn from: the attempt in flight when the run stopped, repeated, or a
    /// new draw; under DP the attempt is recorded before anything is sent.
    fn select(&mut self, round: u32, attempt: u32) -> Result<(Vec<String>, usize), RunError> {
        let (mut selected, population) = match self.in_flight.take() {
            Some(f) if f.round == round && f.attempt == attempt => (f.selected, f.population),
            _ => {
                let connected: Vec<String> = self
                    .hub
                    .connected()
                    .into_iter()
                    .filter(|c| !self.state.excluded.contains_key(c))
                    .collect();
                if connected.is_empty() && !self.state.excluded.is_empty() {
                    return Err(RunError::CannotTrain(format!(
                        "round {round}: no connected client can train any more: {}",
                        self.excluded_list()
                    )));
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
            self.sink
                .begin_attempt(&in_flight)
                .map_err(|source| RunError::RecordAttempt { round, source })?;
        }
        Ok((selected, population))
    }

    /// How many releases of local statistics the run makes at most (what
    /// record-level DP calibrates its noise over): one per round, or what a
    /// statistics family with several exchanges per round says.
    fn planned_releases(&self) -> u32 {
        let rounds = self.config.rounds;
        let planned = self
            .global
            .as_ref()
            .and_then(|g| AnyModel::from_parts(self.config.model, g.params.clone(), g.outputs).ok())
            .map_or(u64::from(rounds), |m| m.ops().planned_releases(&m, rounds));
        u32::try_from(planned).unwrap_or(u32::MAX)
    }

    /// The training task of this round.
    fn train_task(&self, global: &ModelSnapshot, update_clip_norm: Option<f64>) -> TrainTask {
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
                planned_rounds: self.planned_releases(),
            }),
            _ => None,
        };
        TrainTask {
            model: global.clone(),
            local_epochs: self.config.local_epochs,
            batch_size: self.config.batch_size,
            learning_rate: self.config.learning_rate,
            record_dp,
            update_clip_norm,
            prox_mu: self.config.strategy.proximal_mu().unwrap_or(0.0),
        }
    }

    /// The next model of a statistics family, with its starved outputs
    /// re-seeded. Under record-level DP the counts are noisy: an output with a
    /// handful of (noisy) rows is mostly noise, so outputs below 2% of the
    /// pooled rows are treated as empty.
    fn reseed_starved(
        &mut self,
        round: u32,
        next: AnyModel,
        counts: &[u64],
        pooled_rows: u64,
    ) -> Result<AnyModel, RunError> {
        let min_rows = match self.config.privacy {
            PrivacyMode::Record(_) => (pooled_rows as f64 * 0.02).ceil() as u64,
            _ => 1,
        };
        let seed = self.config.seed.unwrap_or(0) ^ u64::from(round).wrapping_mul(0x9e37_79b9);
        match next.ops().reseed_starved(&next, counts, min_rows, seed) {
            Ok(None) => Ok(next),
            Ok(Some((reseeded, starved))) => {
                self.observer.note(&format!(
                    "round {round}: clusters {starved:?} received fewer than {min_rows} rows; re-seeded by splitting the largest clusters"
                ));
                Ok(reseeded)
            }
            Err(e) => Err(RunError::Internal(e.to_string())),
        }
    }

    /// The accepted training answers, in client-id order (the collection
    /// sorts them), split into deltas and statistics.
    fn take_answers(&mut self, accepted: Vec<(String, ResultBody)>) -> Answers {
        let mut answers = Answers::default();
        for (client, body) in accepted {
            let ResultBody::Train(mut t) = body else {
                continue;
            };
            answers.max_train_micros = answers.max_train_micros.max(t.train_micros);
            self.note_privacy(&client, &t, &mut answers.client_epsilon);
            match t.statistics.take() {
                Some(stats) => answers.statistics.push(stats),
                None => {
                    answers.loss_sum += t.train_loss * t.examples as f64;
                    answers.norms.push(t.update_norm);
                    answers.deltas.push(ClientUpdate {
                        client: client.clone(),
                        delta: t.delta,
                        weight: t.examples as f64,
                    });
                }
            }
            answers.contributors.push(client);
        }
        answers
    }

    /// The round's aggregate and the ε to record: deltas through the run's
    /// strategy (after client-level DP's noised mean, which the strategy then
    /// post-processes), statistics through the family.
    fn aggregate(
        &mut self,
        round: u32,
        model: &AnyModel,
        answers: &Answers,
        population: usize,
    ) -> Result<(RoundAggregate, Option<f64>), AggregateFailure> {
        let Some(strategy) = self.strategy.as_mut() else {
            return Err(AggregateFailure::Fatal(RunError::Internal(
                "training without a strategy".into(),
            )));
        };
        if !model.ops().is_gradient_trained() {
            return match aggregate_round(
                model,
                RoundUpdates::Statistics(&answers.statistics),
                &mut **strategy,
            ) {
                Ok(a) => Ok((a, answers.client_epsilon)),
                Err(e) => Err(AggregateFailure::Retry(format!(
                    "round {round}: aggregation failed: {e}"
                ))),
            };
        }
        let (inputs, epsilon) = match self.server_dp.as_mut() {
            Some(server_dp) => {
                let deltas: Vec<_> = answers.deltas.iter().map(|u| u.delta.clone()).collect();
                let out = server_dp
                    .aggregate(
                        &self.run_id,
                        round,
                        &deltas,
                        &answers.norms,
                        population,
                        model.params().len(),
                    )
                    .map_err(|e| AggregateFailure::Fatal(RunError::Round(round, e.to_string())))?;
                (
                    vec![ClientUpdate {
                        client: "dp-mean".into(),
                        delta: out.delta,
                        weight: 1.0,
                    }],
                    Some(out.epsilon),
                )
            }
            None => (answers.deltas.clone(), answers.client_epsilon),
        };
        aggregate_round(model, RoundUpdates::Deltas(&inputs), &mut **strategy)
            .map(|a| (a, epsilon))
            .map_err(|e| AggregateFailure::Retry(format!("round {round}: aggregation failed: {e}")))
    }

    /// The privacy side of an accepted training result: the largest cumulative ε
    /// the clients report, and a warning (once per client) for test-seeded updates.
    fn note_privacy(&mut self, client: &str, t: &TrainReport, client_epsilon: &mut Option<f64>) {
        if let Some(e) = t.epsilon_spent {
            *client_epsilon = Some(client_epsilon.map_or(e, |m: f64| m.max(e)));
        }
        if t.not_private && self.state.not_private.insert(client.to_string()) {
            self.observer.note(&format!(
                "warning: {client} trained with a fixed test seed: its updates are NOT private"
            ));
        }
    }

    /// The clients left out of the run, with their reasons, for messages.
    fn excluded_list(&self) -> String {
        self.state
            .excluded
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
                champion: None,
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
            .filter(|c| !self.state.excluded.contains_key(*c))
            .count();
        if !self.state.excluded.is_empty() && can_train < need {
            return State::Failed(RunError::CannotTrain(format!(
                "{why}; no retry can succeed: {can_train} connected clients can still train, {need} needed ({})",
                self.excluded_list()
            )));
        }
        self.retry_or_fail(attempt, &why, |a| State::Training { round, attempt: a })
    }
}

/// The accepted training answers of a round.
#[derive(Debug, Default)]
struct Answers {
    /// Deltas of a gradient-trained family, weighted by examples.
    deltas: Vec<ClientUpdate>,
    /// Their norms (client-level DP's adaptive clipping).
    norms: Vec<f64>,
    /// Statistics of a statistics family.
    statistics: Vec<Statistics>,
    /// Example-weighted sum of the reported training losses.
    loss_sum: f64,
    /// The slowest client's local training time.
    max_train_micros: u64,
    /// The largest cumulative ε a client reported.
    client_epsilon: Option<f64>,
    /// Who answered, in order.
    contributors: Vec<String>,
}

/// The most exchanges one round may take (a tree of the deepest allowed
/// depth, 12, takes 12; the first round one more for the binning).
const MAX_EXCHANGES_PER_ROUND: u32 = 64;

/// The fixed facts of one training round (attempt), for its exchanges.
#[derive(Clone, Copy)]
struct RoundPlan<'a> {
    round: u32,
    attempt: u32,
    started: Instant,
    global: &'a ModelSnapshot,
    selected: &'a [String],
    population: usize,
}

/// What the exchanges of a done training round produced.
struct Exchanged {
    /// The next global model.
    next: AnyModel,
    /// Clients whose update the strategy left out.
    excluded: Vec<String>,
    /// The weighted mean training loss (or the statistics family's loss).
    train_loss: f64,
    /// Client-level ε spent so far, if the round released under it.
    epsilon: Option<f64>,
    /// Answers aggregated in the last exchange.
    got: usize,
    /// Exchanges the round took.
    exchanges: u32,
}

/// What the exchanges of one round gathered, for its record.
#[derive(Debug, Default)]
struct RoundTotals {
    rejected: usize,
    refused: usize,
    refusals: Vec<RoundRefusal>,
    max_train_micros: u64,
    contributors: Vec<String>,
}

/// Why a round could not be aggregated.
enum AggregateFailure {
    /// The run cannot go on.
    Fatal(RunError),
    /// This attempt failed; another may not.
    Retry(String),
}

/// What [`Run::short_round`] needs to know about the round.
struct ShortRound<'a> {
    round: u32,
    attempt: u32,
    got: usize,
    what: &'static str,
    selected: &'a [String],
    started: Instant,
    rejected: usize,
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
            ResultBody::Train(t) if t.statistics.is_none() => Some((
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
