//! The end of a round and of the attempts: a round is evaluated every
//! `eval_every` rounds and after the last, then committed (durable before any
//! observer hears of it); a failed attempt is retried up to `max_retries`.

use super::*;

impl Run {
    /// Evaluating(r) every `eval_every` rounds and after the last; otherwise the
    /// round is committed now.
    pub(super) fn after_training(&mut self, record: RoundRecord) -> State {
        let round = record.round;
        if round.is_multiple_of(self.config.eval_every) || round == self.config.rounds {
            State::Evaluating {
                record: Box::new(record),
            }
        } else {
            self.finish_round(record)
        }
    }

    pub(super) fn finish_round(&mut self, record: RoundRecord) -> State {
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

    pub(super) fn retry_or_fail(
        &mut self,
        attempt: u32,
        why: &str,
        again: impl Fn(u32) -> State,
    ) -> State {
        if attempt < self.config.max_retries {
            self.observer.note(&format!(
                "{why}; retrying (attempt {} of {})",
                attempt + 2,
                self.config.max_retries + 1
            ));
            again(attempt + 1)
        } else {
            State::Failed(RunError::RetriesExhausted(why.to_string()))
        }
    }
}
