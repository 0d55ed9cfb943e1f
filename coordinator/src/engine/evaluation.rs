//! Evaluating(r): every connected client evaluates the released model on its
//! test split; the family's summaries are pooled exactly (in client-id order,
//! so a seeded run is reproducible to the last bit) and turned into the
//! round's metrics or quality.

use super::*;

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
        let tasks = self.send_tasks(record.round, 0, 0, &clients, |_| {
            TaskBody::Eval(global.clone())
        });
        let mut collector = Collector::new(record.round, 0, TaskKind::Eval, tasks, None);
        let gathered = self.collect(&mut collector).await;
        record.rejected += gathered.rejected;
        let pooled = AnyModel::from_parts(self.config.model, global.params.clone(), global.outputs)
            .and_then(|m| m.ops().empty_evaluation_for(&m));
        let mut pooled = match pooled {
            Ok(pooled) => pooled,
            Err(e) => return State::Failed(RunError::Internal(e.to_string())),
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
            record.metrics = pooled.metrics();
            record.quality = pooled.quality();
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
}
