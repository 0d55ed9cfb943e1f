//! Evaluating(r): every connected client evaluates the released model on its
//! test split; the family's summaries are pooled exactly (in client-id order,
//! so a seeded run is reproducible to the last bit) and turned into the
//! round's metrics or quality.
//!
//! The final round of an update run (`[update]`) evaluates the champion it
//! warm-started from too, on the same clients in the same round (a second
//! evaluation task per client, after the challenger's); both are pooled over
//! the clients that answered both, so the two figures describe the same test
//! rows ([`ChampionEval`]).

use fedprofile_learning::Evaluation;

use super::*;

/// The champion's pooled evaluation in the final round of an update run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChampionEval {
    /// Pooled metrics of a logistic-regression champion.
    pub metrics: Option<Metrics>,
    /// Pooled metrics of the other families.
    pub quality: Option<Quality>,
    /// Clients whose evaluations of both models were pooled.
    pub evaluated_clients: usize,
}

impl Run {
    /// Evaluating(r): pooled metrics of the global model on every client's test split.
    pub(super) async fn evaluate(&mut self, mut record: RoundRecord) -> State {
        let started = Instant::now();
        let Some(global) = self.released() else {
            return State::Failed(RunError::Internal(
                "evaluation without a global model".into(),
            ));
        };
        let clients = self.hub.connected();
        let mut summaries = self.evaluations(&mut record, 0, &global, &clients).await;
        let champion = match self.state.champion.clone() {
            Some(c) if record.round >= self.config.rounds => Some(ModelSnapshot {
                model_type: c.model_type,
                features: c.features,
                params: ndarray::Array1::from_vec(c.params),
                outputs: c.outputs,
            }),
            _ => None,
        };
        let mut champion_summaries = None;
        if let Some(champion) = champion {
            // The same clients, in the same round: only those that evaluated
            // the challenger are asked, and only those that answered both count.
            let asked: Vec<String> = summaries.keys().cloned().collect();
            let theirs = self.evaluations(&mut record, 1, &champion, &asked).await;
            summaries.retain(|client, _| theirs.contains_key(client));
            champion_summaries = Some((champion, theirs));
        }
        let pooled = match self.pool(&global, &summaries) {
            Ok(pooled) => pooled,
            Err(e) => return State::Failed(e),
        };
        record.evaluated_clients = summaries.len();
        if record.evaluated_clients > 0 {
            record.metrics = pooled.metrics();
            record.quality = pooled.quality();
        }
        if let Some((champion, theirs)) = champion_summaries {
            let both: BTreeMap<String, Evaluation> = theirs
                .into_iter()
                .filter(|(client, _)| summaries.contains_key(client))
                .collect();
            let pooled = match self.pool(&champion, &both) {
                Ok(pooled) => pooled,
                Err(e) => return State::Failed(e),
            };
            let evaluated = both.len();
            record.champion = Some(ChampionEval {
                metrics: (evaluated > 0).then(|| pooled.metrics()).flatten(),
                quality: (evaluated > 0).then(|| pooled.quality()).flatten(),
                evaluated_clients: evaluated,
            });
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

    /// Sends `model` for evaluation to `clients` (task ids of `exchange`) and
    /// collects the summaries that merge into the family's empty evaluation.
    async fn evaluations(
        &mut self,
        record: &mut RoundRecord,
        exchange: u32,
        model: &ModelSnapshot,
        clients: &[String],
    ) -> BTreeMap<String, Evaluation> {
        let tasks = self.send_tasks(record.round, 0, exchange, clients, |_| {
            TaskBody::Eval(model.clone())
        });
        let mut collector = Collector::new(record.round, 0, TaskKind::Eval, tasks, None);
        let gathered = self.collect(&mut collector).await;
        record.rejected += gathered.rejected;
        let mut summaries = BTreeMap::new();
        let empty = self.pool(model, &BTreeMap::new());
        for (client, body) in gathered.accepted {
            let ResultBody::Eval(summary) = body else {
                continue;
            };
            if let Ok(empty) = &empty {
                let mut probe = empty.clone();
                if let Err(e) = probe.merge(&summary) {
                    let reason = RejectReason::Inconsistent(e.to_string());
                    self.count_rejection(&client, "eval", &reason);
                    continue;
                }
            }
            summaries.insert(client, summary);
        }
        summaries
    }

    /// The summaries pooled in client-id order.
    fn pool(
        &self,
        model: &ModelSnapshot,
        summaries: &BTreeMap<String, Evaluation>,
    ) -> Result<Evaluation, RunError> {
        let mut pooled =
            AnyModel::from_parts(self.config.model, model.params.clone(), model.outputs)
                .and_then(|m| m.ops().empty_evaluation_for(&m))
                .map_err(|e| RunError::Internal(e.to_string()))?;
        for summary in summaries.values() {
            pooled
                .merge(summary)
                .map_err(|e| RunError::Internal(e.to_string()))?;
        }
        Ok(pooled)
    }
}
