//! Collecting the answers to one batch of tasks, and rejecting the ones that do
//! not belong. Pure bookkeeping, no I/O: every rule here has a unit test.

use std::collections::{HashMap, HashSet};

use fedprofile_learning::{AnyModel, LearningError};
use fedprofile_protocol::messages::{ClientReply, RefusalKind, ResultBody, TaskKind};

/// Everything ever sent in this run: task id -> who, which round, what kind.
#[derive(Debug, Default)]
pub struct TaskBook {
    issued: HashMap<String, Issued>,
}

#[derive(Debug, Clone)]
struct Issued {
    client: String,
    round: u32,
    attempt: u32,
    kind: TaskKind,
}

impl TaskBook {
    /// The round a task was sent for, if it was sent at all.
    pub fn round_of(&self, task_id: &str) -> Option<u32> {
        self.issued.get(task_id).map(|i| i.round)
    }

    /// Records a task as sent.
    pub fn record(
        &mut self,
        task_id: &str,
        client: &str,
        round: u32,
        attempt: u32,
        kind: TaskKind,
    ) {
        self.issued.insert(
            task_id.to_string(),
            Issued {
                client: client.to_string(),
                round,
                attempt,
                kind,
            },
        );
    }
}

/// Why an answer was not used.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// No task with this id was ever sent.
    UnknownTask,
    /// The task was sent to another client.
    NotSelected {
        /// The client the task was sent to.
        assigned_to: String,
    },
    /// The task belongs to another round (or an earlier attempt or phase).
    Stale {
        /// The round the task was for.
        task_round: u32,
    },
    /// The task was already answered.
    Duplicate,
    /// The answer is for another kind of task.
    WrongKind {
        /// The kind expected.
        expected: TaskKind,
        /// The kind received.
        got: TaskKind,
    },
    /// The update has the wrong number of parameters.
    WrongDimension {
        /// Parameters of the global model.
        expected: usize,
        /// Parameters received.
        got: usize,
    },
    /// The update's L2 norm exceeds the clip norm of client-level DP.
    NormTooLarge {
        /// Norm received.
        norm: f64,
        /// Clip norm of the round.
        clip_norm: f64,
    },
    /// The update holds NaN or an infinity.
    NonFinite {
        /// First offending index.
        index: usize,
    },
    /// The update claims no examples.
    NoExamples,
    /// The update claims more examples than the client has.
    TooManyExamples {
        /// Training examples the client reported in the statistics phase (or,
        /// for a client that reported none, what all reporting clients hold).
        bound: u64,
        /// Examples claimed.
        got: u64,
    },
    /// The update's norm is far outside the round's others.
    NormOutlier {
        /// Norm received.
        norm: f64,
        /// The round's median update norm.
        median: f64,
        /// The allowed multiple of the median (`round.max_update_norm_ratio`).
        ratio: f64,
    },
    /// An evaluation or statistics answer whose figures do not add up.
    Inconsistent(String),
    /// The message could not be decoded.
    Malformed(String),
}

impl RejectReason {
    /// Stable short key for counters and CSV columns.
    pub fn key(&self) -> &'static str {
        match self {
            RejectReason::UnknownTask => "unknown_task",
            RejectReason::NotSelected { .. } => "not_selected",
            RejectReason::Stale { .. } => "stale_round",
            RejectReason::Duplicate => "duplicate",
            RejectReason::WrongKind { .. } => "wrong_kind",
            RejectReason::WrongDimension { .. } => "wrong_dimension",
            RejectReason::NonFinite { .. } => "non_finite",
            RejectReason::NormTooLarge { .. } => "norm_too_large",
            RejectReason::NoExamples => "no_examples",
            RejectReason::TooManyExamples { .. } => "too_many_examples",
            RejectReason::NormOutlier { .. } => "norm_outlier",
            RejectReason::Inconsistent(_) => "inconsistent",
            RejectReason::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::UnknownTask => write!(f, "no such task was sent"),
            RejectReason::NotSelected { assigned_to } => {
                write!(
                    f,
                    "client was not selected for this task (it was sent to {assigned_to})"
                )
            }
            RejectReason::Stale { task_round } => {
                write!(
                    f,
                    "the task belongs to round {task_round}, not the current one"
                )
            }
            RejectReason::Duplicate => write!(f, "the task was already answered"),
            RejectReason::WrongKind { expected, got } => {
                write!(f, "expected a {expected} result, got a {got} result")
            }
            RejectReason::WrongDimension { expected, got } => {
                write!(f, "update has {got} parameters, the model has {expected}")
            }
            RejectReason::NonFinite { index } => {
                write!(f, "update holds a non-finite value at index {index}")
            }
            RejectReason::NoExamples => write!(f, "update claims zero examples"),
            RejectReason::TooManyExamples { bound, got } => write!(
                f,
                "update claims {got} examples, more than the {bound} training examples reported in the statistics phase"
            ),
            RejectReason::NormOutlier {
                norm,
                median,
                ratio,
            } => write!(
                f,
                "update norm {norm:.6e} is more than {ratio} times the round's median update norm {median:.6e} (round.max_update_norm_ratio)"
            ),
            RejectReason::NormTooLarge { norm, clip_norm } => {
                write!(
                    f,
                    "update norm {norm:.6} exceeds the clip norm {clip_norm:.6}"
                )
            }
            RejectReason::Inconsistent(why) => write!(f, "{why}"),
            RejectReason::Malformed(why) => write!(f, "malformed message: {why}"),
        }
    }
}

/// The fate of one answer offered to a [`Collector`].
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// The answer counts.
    Accepted(ResultBody),
    /// The client declined the task, with its reason and its kind.
    Refused {
        /// The client's sentence.
        reason: String,
        /// Whether asking again can help.
        kind: RefusalKind,
    },
    /// The answer was thrown away.
    Rejected(RejectReason),
}

/// Waits for the answers to the tasks of one phase of one round.
#[derive(Debug)]
pub struct Collector {
    round: u32,
    attempt: u32,
    kind: TaskKind,
    expected_dim: Option<usize>,
    statistics: Option<AnyModel>,
    max_norm: Option<f64>,
    pending: HashMap<String, String>,
    answered: HashSet<String>,
    examples_bound: Option<ExamplesBound>,
}

/// What clients may claim as their example count in a training answer: what
/// each reported in the statistics phase; a client that reported nothing (it
/// joined after that phase) may claim at most what all reporting clients hold
/// together.
#[derive(Debug, Clone, Default)]
pub struct ExamplesBound {
    /// Training examples per client, from the statistics phase.
    pub reported: std::collections::BTreeMap<String, u64>,
}

impl ExamplesBound {
    /// The most examples `client` may claim (`None`: nothing to check against).
    pub fn of(&self, client: &str) -> Option<u64> {
        self.reported.get(client).copied().or_else(|| {
            (!self.reported.is_empty()).then(|| {
                self.reported
                    .values()
                    .fold(0u64, |a, b| a.saturating_add(*b))
            })
        })
    }
}

impl Collector {
    /// Whether this collector gathers feature statistics.
    pub fn is_stats(&self) -> bool {
        matches!(self.kind, TaskKind::Stats)
    }

    /// `tasks`: task id -> client for the tasks just sent. `expected_dim`: the
    /// parameter count a training update must have.
    pub fn new(
        round: u32,
        attempt: u32,
        kind: TaskKind,
        tasks: HashMap<String, String>,
        expected_dim: Option<usize>,
    ) -> Collector {
        Collector {
            round,
            attempt,
            kind,
            expected_dim,
            statistics: None,
            max_norm: None,
            pending: tasks,
            answered: HashSet::new(),
            examples_bound: None,
        }
    }

    /// Rejects training answers that claim more examples than the client has.
    pub fn with_examples_bound(mut self, bound: ExamplesBound) -> Collector {
        self.examples_bound = Some(bound);
        self
    }

    /// Rejects training updates whose L2 norm exceeds `max_norm` (client-level DP).
    pub fn with_max_norm(mut self, max_norm: Option<f64>) -> Collector {
        self.max_norm = max_norm;
        self
    }

    /// Expects the local statistics of a statistics family for `model`
    /// (checked by the family) instead of deltas.
    pub fn with_statistics(mut self, model: AnyModel) -> Collector {
        self.statistics = Some(model);
        self
    }

    /// True once every task has been answered (or its client left).
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// Clients that still owe an answer.
    pub fn waiting_for(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pending.values().cloned().collect();
        v.sort();
        v
    }

    /// True while `client` owes an answer.
    pub fn owes(&self, client: &str) -> bool {
        self.pending.values().any(|c| c == client)
    }

    /// A client disconnected: stop waiting for it.
    pub fn client_left(&mut self, client: &str) {
        self.pending.retain(|_, c| c != client);
    }

    /// Judges one answer.
    pub fn offer(&mut self, book: &TaskBook, client: &str, reply: ClientReply) -> Offer {
        let task_id = reply.task_id().to_string();
        let Some(issued) = book.issued.get(&task_id) else {
            return Offer::Rejected(RejectReason::UnknownTask);
        };
        if issued.client != client {
            return Offer::Rejected(RejectReason::NotSelected {
                assigned_to: issued.client.clone(),
            });
        }
        if issued.round != self.round || issued.attempt != self.attempt || issued.kind != self.kind
        {
            return Offer::Rejected(RejectReason::Stale {
                task_round: issued.round,
            });
        }
        if self.answered.contains(&task_id) {
            return Offer::Rejected(RejectReason::Duplicate);
        }
        let outcome = match reply {
            ClientReply::Refusal { reason, kind, .. } => Offer::Refused { reason, kind },
            ClientReply::Result { body, .. } => match self.check(client, &body) {
                Ok(()) => Offer::Accepted(body),
                Err(reason) => Offer::Rejected(reason),
            },
        };
        // Any answer (good or bad) closes the task: a client gets one try.
        self.answered.insert(task_id.clone());
        self.pending.remove(&task_id);
        outcome
    }

    fn check(&self, client: &str, body: &ResultBody) -> Result<(), RejectReason> {
        if body.kind() != self.kind {
            return Err(RejectReason::WrongKind {
                expected: self.kind,
                got: body.kind(),
            });
        }
        match body {
            ResultBody::Train(t) => {
                if let Some(model) = &self.statistics {
                    let Some(s) = &t.statistics else {
                        return Err(RejectReason::Inconsistent(format!(
                            "a {} round needs {}, got a model delta",
                            model.family(),
                            model.ops().update_name()
                        )));
                    };
                    model
                        .ops()
                        .check_statistics(model, s)
                        .map_err(|e| match e {
                            LearningError::ParamCount { expected, got } => {
                                RejectReason::WrongDimension { expected, got }
                            }
                            LearningError::NonFiniteParam { index, .. } => {
                                RejectReason::NonFinite { index }
                            }
                            other => RejectReason::Inconsistent(other.to_string()),
                        })?;
                    if s.examples() == 0 {
                        return Err(RejectReason::NoExamples);
                    }
                    return Ok(());
                }
                if let Some(s) = &t.statistics {
                    return Err(RejectReason::Inconsistent(format!(
                        "{} sent for a gradient-trained model",
                        s.kind()
                    )));
                }
                if let Some(expected) = self.expected_dim
                    && t.delta.len() != expected
                {
                    return Err(RejectReason::WrongDimension {
                        expected,
                        got: t.delta.len(),
                    });
                }
                if let Some(index) = t.delta.iter().position(|v| !v.is_finite()) {
                    return Err(RejectReason::NonFinite { index });
                }
                if t.examples == 0 {
                    return Err(RejectReason::NoExamples);
                }
                if let Some(bound) = self.examples_bound.as_ref().and_then(|b| b.of(client))
                    && t.examples > bound
                {
                    return Err(RejectReason::TooManyExamples {
                        bound,
                        got: t.examples,
                    });
                }
                if let Some(clip_norm) = self.max_norm {
                    let norm = t.delta.dot(&t.delta).sqrt();
                    // Tolerance for the client's own floating-point clipping.
                    if norm > clip_norm * (1.0 + 1e-9) {
                        return Err(RejectReason::NormTooLarge { norm, clip_norm });
                    }
                }
                Ok(())
            }
            ResultBody::Eval(e) => e
                .check()
                .map_err(|e| RejectReason::Inconsistent(e.to_string())),
            ResultBody::Stats(s) => check_stats(s),
        }
    }
}

/// Per-column statistics must be finite and consistent with their counts:
/// `count ≤ train_examples`, `sum² ≤ count · sum_sq` (Cauchy–Schwarz, with a
/// rounding tolerance), and a mean and spread below 1e15 in magnitude (no
/// real feature is that large; such a value is a broken cell).
pub fn check_stats(s: &fedprofile_protocol::messages::StatsReport) -> Result<(), RejectReason> {
    const ABSURD: f64 = 1e15;
    for (index, c) in s.numeric.iter().enumerate() {
        let column = &c.column;
        if !c.sum.is_finite() || !c.sum_sq.is_finite() || c.sum_sq < 0.0 {
            return Err(RejectReason::Inconsistent(format!(
                "statistics of column '{column}' are not finite (sum {}, sum of squares {}): a cell of that column is broken (index {index})",
                c.sum, c.sum_sq
            )));
        }
        if c.count > s.train_examples {
            return Err(RejectReason::Inconsistent(format!(
                "column '{column}' counts {} values but the split has {} training examples",
                c.count, s.train_examples
            )));
        }
        if c.count == 0 {
            if c.sum != 0.0 || c.sum_sq != 0.0 {
                return Err(RejectReason::Inconsistent(format!(
                    "column '{column}' has sums but no values"
                )));
            }
            continue;
        }
        let n = c.count as f64;
        if c.sum * c.sum > n * c.sum_sq * (1.0 + 1e-9) + 1e-12 {
            return Err(RejectReason::Inconsistent(format!(
                "column '{column}': the sum of squares {} is smaller than the sum {} allows for {} values",
                c.sum_sq, c.sum, c.count
            )));
        }
        let mean = c.sum / n;
        let mean_sq = c.sum_sq / n;
        if mean.abs() > ABSURD || mean_sq.sqrt() > ABSURD {
            return Err(RejectReason::Inconsistent(format!(
                "column '{column}' has an absurd mean {mean:e} or root mean square {:e} (above 1e15): a cell of that column is broken",
                mean_sq.sqrt()
            )));
        }
    }
    Ok(())
}

/// L2 norm without overflow: scaled by the largest magnitude.
pub fn robust_norm(v: &[f64]) -> f64 {
    let scale = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    scale * v.iter().map(|x| (x / scale).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedprofile_protocol::messages::TrainReport;
    use ndarray::Array1;

    fn train(delta: Vec<f64>, examples: u64) -> ResultBody {
        ResultBody::Train(TrainReport {
            delta: Array1::from_vec(delta),
            examples,
            steps: 1,
            train_loss: 0.5,
            train_micros: 10,
            update_norm: 0.0,
            epsilon_spent: None,
            not_private: false,
            statistics: None,
        })
    }

    fn reply(task: &str, body: ResultBody) -> ClientReply {
        ClientReply::Result {
            task_id: task.into(),
            body,
        }
    }

    /// Round 2 sends t-a to a and t-b to b; round 1 had sent old-a to a.
    fn setup() -> (TaskBook, Collector) {
        let mut book = TaskBook::default();
        book.record("old-a", "a", 1, 0, TaskKind::Train);
        book.record("t-a", "a", 2, 0, TaskKind::Train);
        book.record("t-b", "b", 2, 0, TaskKind::Train);
        let tasks = HashMap::from([("t-a".into(), "a".into()), ("t-b".into(), "b".into())]);
        (book, Collector::new(2, 0, TaskKind::Train, tasks, Some(3)))
    }

    /// [`setup`], then `client` answers `task` with `body`: the offer's
    /// verdict and the collector after it.
    fn offered(client: &str, task: &str, body: ResultBody) -> (Offer, Collector) {
        let (book, mut c) = setup();
        let offer = c.offer(&book, client, reply(task, body));
        (offer, c)
    }

    #[test]
    fn a_good_update_is_accepted_and_closes_the_task() {
        let (offer, c) = offered("a", "t-a", train(vec![0.1, 0.2, 0.3], 10));
        assert!(matches!(offer, Offer::Accepted(_)));
        assert_eq!(c.waiting_for(), vec!["b".to_string()]);
        assert!(!c.is_complete());
    }

    #[test]
    fn update_from_a_client_not_selected_is_rejected() {
        // c was connected but not selected; it replays a's task id.
        let (offer, c) = offered("c", "t-a", train(vec![0.0; 3], 10));
        assert_eq!(
            offer,
            Offer::Rejected(RejectReason::NotSelected {
                assigned_to: "a".into()
            })
        );
        // a's task stays open for a.
        assert_eq!(c.waiting_for(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn update_with_an_unknown_task_id_is_rejected() {
        let (offer, _) = offered("c", "made-up", train(vec![0.0; 3], 10));
        assert_eq!(offer, Offer::Rejected(RejectReason::UnknownTask));
    }

    #[test]
    fn update_for_another_round_is_rejected() {
        let (offer, _) = offered("a", "old-a", train(vec![0.0; 3], 10));
        assert_eq!(
            offer,
            Offer::Rejected(RejectReason::Stale { task_round: 1 })
        );
    }

    #[test]
    fn a_second_update_for_the_same_task_is_rejected() {
        let (book, mut c) = setup();
        assert!(matches!(
            c.offer(&book, "a", reply("t-a", train(vec![0.0; 3], 10))),
            Offer::Accepted(_)
        ));
        assert_eq!(
            c.offer(&book, "a", reply("t-a", train(vec![0.0; 3], 10))),
            Offer::Rejected(RejectReason::Duplicate)
        );
    }

    #[test]
    fn wrong_dimension_is_rejected_with_both_sizes() {
        let (offer, _) = offered("a", "t-a", train(vec![0.0; 4], 10));
        let Offer::Rejected(reason) = offer else {
            panic!("accepted a 4-parameter update")
        };
        assert_eq!(
            reason,
            RejectReason::WrongDimension {
                expected: 3,
                got: 4
            }
        );
        assert_eq!(
            reason.to_string(),
            "update has 4 parameters, the model has 3"
        );
    }

    #[test]
    fn non_finite_values_are_rejected_with_their_index() {
        let (book, mut c) = setup();
        assert_eq!(
            c.offer(
                &book,
                "a",
                reply("t-a", train(vec![0.0, f64::NAN, 0.0], 10))
            ),
            Offer::Rejected(RejectReason::NonFinite { index: 1 })
        );
        assert_eq!(
            c.offer(
                &book,
                "b",
                reply("t-b", train(vec![0.0, 0.0, f64::INFINITY], 10))
            ),
            Offer::Rejected(RejectReason::NonFinite { index: 2 })
        );
    }

    #[test]
    fn zero_examples_and_wrong_kind_are_rejected() {
        let (book, mut c) = setup();
        assert_eq!(
            c.offer(&book, "a", reply("t-a", train(vec![0.0; 3], 0))),
            Offer::Rejected(RejectReason::NoExamples)
        );
        let eval = ResultBody::Eval(fedprofile_learning::Evaluation::Binary(
            fedprofile_learning::metrics::EvalSummary::from_predictions(
                Array1::from_vec(vec![0.2]).view(),
                Array1::from_vec(vec![1.0]).view(),
            )
            .unwrap(),
        ));
        assert!(matches!(
            c.offer(&book, "b", reply("t-b", eval)),
            Offer::Rejected(RejectReason::WrongKind { .. })
        ));
    }

    #[test]
    fn an_update_above_the_clip_norm_is_rejected() {
        let (book, mut c) = setup();
        let mut c2 = Collector::new(2, 0, TaskKind::Train, c.pending.clone(), Some(3))
            .with_max_norm(Some(1.0));
        // Norm 0.999... is fine, norm 2 is not.
        assert!(matches!(
            c2.offer(&book, "a", reply("t-a", train(vec![0.5, 0.5, 0.7], 10))),
            Offer::Accepted(_)
        ));
        assert_eq!(
            c2.offer(&book, "b", reply("t-b", train(vec![2.0, 0.0, 0.0], 10))),
            Offer::Rejected(RejectReason::NormTooLarge {
                norm: 2.0,
                clip_norm: 1.0
            })
        );
        c.client_left("a");
    }

    #[test]
    fn a_refusal_closes_the_task_with_its_reason() {
        let (book, mut c) = setup();
        let offer = c.offer(
            &book,
            "b",
            ClientReply::Refusal {
                task_id: "t-b".into(),
                reason: "budget".into(),
                kind: RefusalKind::BudgetExhausted,
            },
        );
        assert_eq!(
            offer,
            Offer::Refused {
                reason: "budget".into(),
                kind: RefusalKind::BudgetExhausted
            }
        );
        c.client_left("a");
        assert!(c.is_complete());
    }
}
