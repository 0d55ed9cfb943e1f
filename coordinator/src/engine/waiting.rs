//! WaitingForClients: the run starts once `min_connected_to_start` clients are
//! connected, or fails after `start_timeout` naming who is missing and why. A
//! resumed run goes on with the round after its checkpoint (repeating the
//! attempt that was in flight, under the same task ids). While it waits, a
//! status line every [`WAIT_STATUS_EVERY`] says how many clients are connected
//! of how many needed, and how long until it gives up.

use super::*;

/// How often a run that waits for clients says so.
pub(super) const WAIT_STATUS_EVERY: Duration = Duration::from_secs(10);

impl Run {
    /// WaitingForClients: until enough clients are connected or the start timeout.
    pub(super) async fn wait_for_clients(&mut self) -> State {
        let need = self.config.min_connected_to_start;
        let deadline = deadline_after(self.config.start_timeout);
        let mut status_at = deadline_after(WAIT_STATUS_EVERY);
        loop {
            let connected = self.hub.connected();
            if connected.len() >= need {
                self.observer.note(&format!(
                    "run {} starting with {} connected clients: {}",
                    self.run_id,
                    connected.len(),
                    connected.join(", ")
                ));
                if let Some(resumed) = self.resumed {
                    let next = resumed + 1;
                    self.observer.note(&format!(
                        "run {} resumed after round {resumed}",
                        self.run_id
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
            match self.next_event(deadline.min(status_at)).await {
                Next::Deadline if tokio::time::Instant::now() < deadline => {
                    let connected = self.hub.connected();
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    self.observer.note(&format!(
                        "run {} waiting for clients: {} of the {need} needed connected{}{}; it gives up in {:.0} s",
                        self.run_id,
                        connected.len(),
                        if connected.is_empty() { "" } else { ": " },
                        connected.join(", "),
                        left.as_secs_f64()
                    ));
                    status_at += WAIT_STATUS_EVERY;
                }
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
                    return State::Failed(RunError::NotEnoughClients(why));
                }
                Next::Closed => return State::Failed(RunError::ServiceStopped),
                Next::Cancelled(why) => return State::Cancelled(why),
                Next::Event(event) => self.unexpected(event),
            }
        }
    }
}
