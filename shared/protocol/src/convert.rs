//! The one place where protobuf types and domain types meet.
//!
//! Decoding checks every field a peer could get wrong (missing oneof, tensor
//! length not matching its shape, unknown dtype) and says which field.

use fedprofile_learning::metrics::EvalSummary;
use fedprofile_learning::trees::{Histograms, Sketch, TreeStatistics};
use fedprofile_learning::{
    ClusterStats, ClusteringSummary, Evaluation, FeatureColumn, FeatureSpec, MulticlassSummary,
    RegressionSummary, Statistics,
};
use ndarray::Array1;

use crate::messages::{
    BinaryStats, ChampionAck, ChampionPush, ClientInfo, ClientReply, ColumnStats, DataFingerprint,
    HeldModel, LabelKindMsg, ModelSnapshot, ModelVersionInfo, PartnerHolding, RecordDpTask,
    RefusalKind, ResultBody, RunInfo, RunProgress, ServerEvent, StatsReport, Task, TaskBody,
    TrainReport, TrainTask, UpdateDecisionInfo,
};
use crate::pb;

/// A protobuf message that does not decode into its domain form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// A required field or oneof was absent.
    #[error("message field '{0}' is missing")]
    Missing(&'static str),
    /// A tensor's byte length does not match its shape and dtype.
    #[error("tensor has {bytes} bytes but shape {shape:?} of {dtype} needs {expected}")]
    TensorLength {
        /// Bytes received.
        bytes: usize,
        /// Declared shape.
        shape: Vec<u32>,
        /// Declared element type.
        dtype: &'static str,
        /// Bytes the shape implies.
        expected: usize,
    },
    /// A tensor without a known element type.
    #[error("tensor dtype {0} is not supported (expected f32 or f64)")]
    DType(i32),
    /// A tensor that is not one-dimensional where a vector is expected.
    #[error("expected a one-dimensional tensor, got shape {0:?}")]
    NotAVector(Vec<u32>),
    /// A tensor of more than two dimensions, or with a zero dimension, where a
    /// vector or a matrix is expected.
    #[error("expected a vector or a matrix, got shape {0:?}")]
    NotAMatrix(Vec<u32>),
    /// A field with a value outside its range.
    #[error("message field '{field}' {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

// ----- tensors ---------------------------------------------------------------

/// Packs a vector as little-endian f64 with its shape.
pub fn tensor_from_array(values: &Array1<f64>) -> pb::Tensor {
    let mut data = Vec::with_capacity(values.len() * 8);
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    pb::Tensor {
        shape: vec![values.len() as u32],
        dtype: pb::DType::DtypeF64 as i32,
        data,
    }
}

/// Packs flat row-major values as a `rows × (len / rows)` matrix (a vector when
/// `rows` is 1).
pub fn tensor_from_rows(values: &Array1<f64>, rows: usize) -> pb::Tensor {
    let mut t = tensor_from_array(values);
    if rows > 1 && values.len().is_multiple_of(rows) {
        t.shape = vec![rows as u32, (values.len() / rows) as u32];
    }
    t
}

/// Packs gradient-boosted-trees statistics: the sketch as a
/// `features × cells` matrix, or one level's sums as `nodes × bins` matrices.
fn tree_stats_to_pb(s: &TreeStatistics) -> pb::TreeStats {
    let rows_of =
        |values: &[f64], rows: usize| tensor_from_rows(&Array1::from_vec(values.to_vec()), rows);
    match s {
        TreeStatistics::Sketch(k) => pb::TreeStats {
            sketch: Some(rows_of(k.counts(), k.dim())),
            grad: None,
            hess: None,
            rows: k.rows(),
            noise_std: k.noise_std(),
        },
        TreeStatistics::Level(h) => pb::TreeStats {
            sketch: None,
            grad: Some(rows_of(h.grad(), h.nodes())),
            hess: Some(rows_of(h.hess(), h.nodes())),
            rows: h.rows(),
            noise_std: h.noise_std(),
        },
    }
}

/// Unpacks [`tree_stats_to_pb`]'s message; the shapes are checked again by
/// the family against the task's model.
fn tree_stats_from_pb(t: &pb::TreeStats) -> Result<TreeStatistics, ConvertError> {
    let invalid = |field: &'static str| {
        move |e: fedprofile_learning::LearningError| ConvertError::Invalid {
            field,
            problem: e.to_string(),
        }
    };
    match (&t.sketch, &t.grad, &t.hess) {
        (Some(sketch), None, None) => {
            let (counts, features) = rows_from_tensor(sketch)?;
            Sketch::from_parts(features, counts.to_vec(), t.rows, t.noise_std)
                .map(TreeStatistics::Sketch)
                .map_err(invalid("TreeStats.sketch"))
        }
        (None, Some(grad), Some(hess)) => {
            let (grad, nodes) = rows_from_tensor(grad)?;
            let (hess, _) = rows_from_tensor(hess)?;
            Histograms::from_parts(nodes, grad.to_vec(), hess.to_vec(), t.rows, t.noise_std)
                .map(TreeStatistics::Level)
                .map_err(invalid("TreeStats.grad"))
        }
        _ => Err(ConvertError::Invalid {
            field: "TreeStats",
            problem: "must hold either a sketch or both gradient and hessian sums".into(),
        }),
    }
}

/// Unpacks a vector or a matrix (flattened row-major) and its number of rows
/// (1 for a vector).
pub fn rows_from_tensor(tensor: &pb::Tensor) -> Result<(Array1<f64>, usize), ConvertError> {
    match tensor.shape.as_slice() {
        [_] => Ok((array_from_tensor(tensor)?, 1)),
        &[rows, cols] if rows > 0 && cols > 0 => {
            let flat = pb::Tensor {
                shape: vec![rows.saturating_mul(cols)],
                dtype: tensor.dtype,
                data: tensor.data.clone(),
            };
            let values = array_from_tensor(&flat).map_err(|e| match e {
                ConvertError::TensorLength {
                    bytes,
                    dtype,
                    expected,
                    ..
                } => ConvertError::TensorLength {
                    bytes,
                    shape: tensor.shape.clone(),
                    dtype,
                    expected,
                },
                other => other,
            })?;
            Ok((values, rows as usize))
        }
        other => Err(ConvertError::NotAMatrix(other.to_vec())),
    }
}

/// Unpacks a one-dimensional tensor (f32 or f64, little-endian).
pub fn array_from_tensor(tensor: &pb::Tensor) -> Result<Array1<f64>, ConvertError> {
    let (width, name) = match pb::DType::try_from(tensor.dtype) {
        Ok(pb::DType::DtypeF64) => (8, "f64"),
        Ok(pb::DType::DtypeF32) => (4, "f32"),
        _ => return Err(ConvertError::DType(tensor.dtype)),
    };
    if tensor.shape.len() != 1 {
        return Err(ConvertError::NotAVector(tensor.shape.clone()));
    }
    let len = tensor.shape[0] as usize;
    let expected = len.saturating_mul(width);
    if tensor.data.len() != expected {
        return Err(ConvertError::TensorLength {
            bytes: tensor.data.len(),
            shape: tensor.shape.clone(),
            dtype: name,
            expected,
        });
    }
    let values = if width == 8 {
        tensor
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    } else {
        tensor
            .data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    };
    Ok(Array1::from_vec(values))
}

// ----- features and models ---------------------------------------------------

impl From<&FeatureSpec> for pb::FeatureSpec {
    fn from(spec: &FeatureSpec) -> Self {
        let columns = spec
            .columns
            .iter()
            .map(|c| {
                let kind = match c {
                    FeatureColumn::Numeric { mean, std, .. } => {
                        pb::feature_column::Kind::Numeric(pb::NumericColumn {
                            mean: *mean,
                            std: *std,
                        })
                    }
                    FeatureColumn::Boolean { .. } => {
                        pb::feature_column::Kind::Boolean(pb::BooleanColumn {})
                    }
                    FeatureColumn::Categorical { vocabulary, .. } => {
                        pb::feature_column::Kind::Categorical(pb::CategoricalColumn {
                            vocabulary: vocabulary.clone(),
                        })
                    }
                };
                pb::FeatureColumn {
                    name: c.name().to_string(),
                    kind: Some(kind),
                }
            })
            .collect();
        pb::FeatureSpec { columns }
    }
}

impl TryFrom<pb::FeatureSpec> for FeatureSpec {
    type Error = ConvertError;
    fn try_from(spec: pb::FeatureSpec) -> Result<Self, ConvertError> {
        let columns = spec
            .columns
            .into_iter()
            .map(|c| {
                Ok(
                    match c.kind.ok_or(ConvertError::Missing("FeatureColumn.kind"))? {
                        pb::feature_column::Kind::Numeric(n) => FeatureColumn::Numeric {
                            name: c.name,
                            mean: n.mean,
                            std: n.std,
                        },
                        pb::feature_column::Kind::Boolean(_) => {
                            FeatureColumn::Boolean { name: c.name }
                        }
                        pb::feature_column::Kind::Categorical(k) => FeatureColumn::Categorical {
                            name: c.name,
                            vocabulary: k.vocabulary,
                        },
                    },
                )
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(FeatureSpec::new(columns))
    }
}

impl From<&ModelSnapshot> for pb::Model {
    fn from(m: &ModelSnapshot) -> Self {
        pb::Model {
            model_type: m.model_type.clone(),
            features: Some((&m.features).into()),
            params: Some(tensor_from_rows(&m.params, m.outputs)),
        }
    }
}

impl TryFrom<pb::Model> for ModelSnapshot {
    type Error = ConvertError;
    fn try_from(m: pb::Model) -> Result<Self, ConvertError> {
        let (params, outputs) = rows_from_tensor(
            m.params
                .as_ref()
                .ok_or(ConvertError::Missing("Model.params"))?,
        )?;
        Ok(ModelSnapshot {
            model_type: m.model_type,
            features: m
                .features
                .ok_or(ConvertError::Missing("Model.features"))?
                .try_into()?,
            params,
            outputs,
        })
    }
}

// ----- tasks -----------------------------------------------------------------

impl From<&Task> for pb::Task {
    fn from(t: &Task) -> Self {
        let body = match &t.body {
            TaskBody::Stats { binary_counts } => pb::task::Body::Stats(pb::StatsTask {
                binary_counts: *binary_counts,
            }),
            TaskBody::Train(tt) => pb::task::Body::Train(pb::TrainTask {
                model: Some((&tt.model).into()),
                local_epochs: tt.local_epochs,
                batch_size: tt.batch_size,
                learning_rate: tt.learning_rate,
                record_dp: tt.record_dp.map(|r| pb::RecordDp {
                    clip_norm: r.clip_norm,
                    noise_multiplier: r.noise_multiplier.unwrap_or(0.0),
                    target_epsilon: r.target_epsilon.unwrap_or(0.0),
                    delta: r.delta,
                    planned_rounds: r.planned_rounds,
                }),
                update_clip_norm: tt.update_clip_norm.unwrap_or(0.0),
                prox_mu: tt.prox_mu,
            }),
            TaskBody::Eval(m) => pb::task::Body::Eval(pb::EvalTask {
                model: Some(m.into()),
            }),
        };
        pb::Task {
            task_id: t.task_id.clone(),
            run_id: t.run_id.clone(),
            round: t.round,
            body: Some(body),
        }
    }
}

impl TryFrom<pb::Task> for Task {
    type Error = ConvertError;
    fn try_from(t: pb::Task) -> Result<Self, ConvertError> {
        let body = match t.body.ok_or(ConvertError::Missing("Task.body"))? {
            pb::task::Body::Stats(s) => TaskBody::Stats {
                binary_counts: s.binary_counts,
            },
            pb::task::Body::Train(tt) => TaskBody::Train(TrainTask {
                model: tt
                    .model
                    .ok_or(ConvertError::Missing("TrainTask.model"))?
                    .try_into()?,
                local_epochs: tt.local_epochs,
                batch_size: tt.batch_size,
                learning_rate: tt.learning_rate,
                record_dp: tt.record_dp.map(|r| RecordDpTask {
                    clip_norm: r.clip_norm,
                    noise_multiplier: (r.noise_multiplier > 0.0).then_some(r.noise_multiplier),
                    target_epsilon: (r.target_epsilon > 0.0).then_some(r.target_epsilon),
                    delta: r.delta,
                    planned_rounds: r.planned_rounds,
                }),
                update_clip_norm: (tt.update_clip_norm > 0.0).then_some(tt.update_clip_norm),
                prox_mu: tt.prox_mu.max(0.0),
            }),
            pb::task::Body::Eval(e) => TaskBody::Eval(
                e.model
                    .ok_or(ConvertError::Missing("EvalTask.model"))?
                    .try_into()?,
            ),
        };
        Ok(Task {
            task_id: t.task_id,
            run_id: t.run_id,
            round: t.round,
            body,
        })
    }
}

impl From<&ServerEvent> for pb::ServerMessage {
    fn from(e: &ServerEvent) -> Self {
        let body = match e {
            ServerEvent::Task(t) => pb::server_message::Body::Task(t.into()),
            ServerEvent::Finished { run_id, message } => {
                pb::server_message::Body::Finished(pb::RunFinished {
                    run_id: run_id.clone(),
                    message: message.clone(),
                })
            }
            ServerEvent::Champion(c) => pb::server_message::Body::Champion(pb::ChampionModel {
                target: c.model.target.clone(),
                version: c.model.version,
                fingerprint: c.model.fingerprint.clone(),
                model_json: c.model_json.clone(),
            }),
        };
        pb::ServerMessage { body: Some(body) }
    }
}

// ----- results ---------------------------------------------------------------

impl From<&Evaluation> for pb::EvalResult {
    fn from(e: &Evaluation) -> Self {
        let other = match e {
            Evaluation::Binary(s) => return s.into(),
            Evaluation::Regression(s) => pb::eval_result::Other::Regression(pb::RegressionEval {
                examples: s.examples,
                sum_y: s.sum_y,
                sum_y2: s.sum_y2,
                sse: s.sse,
                sae: s.sae,
            }),
            Evaluation::Multiclass(s) => pb::eval_result::Other::Multiclass(pb::MulticlassEval {
                classes: s.classes as u32,
                examples: s.examples,
                loss_sum: s.loss_sum,
                confusion: s.confusion.clone(),
            }),
            Evaluation::Clustering(s) => pb::eval_result::Other::Clustering(pb::ClusteringEval {
                examples: s.examples,
                inertia: s.inertia,
                counts: s.counts.clone(),
            }),
        };
        pb::EvalResult {
            other: Some(other),
            ..Default::default()
        }
    }
}

impl From<pb::EvalResult> for Evaluation {
    fn from(r: pb::EvalResult) -> Self {
        match r.other {
            None => Evaluation::Binary(r.into()),
            Some(pb::eval_result::Other::Regression(s)) => {
                Evaluation::Regression(RegressionSummary {
                    examples: s.examples,
                    sum_y: s.sum_y,
                    sum_y2: s.sum_y2,
                    sse: s.sse,
                    sae: s.sae,
                })
            }
            Some(pb::eval_result::Other::Multiclass(s)) => {
                Evaluation::Multiclass(MulticlassSummary {
                    classes: s.classes as usize,
                    examples: s.examples,
                    loss_sum: s.loss_sum,
                    confusion: s.confusion,
                })
            }
            Some(pb::eval_result::Other::Clustering(s)) => {
                Evaluation::Clustering(ClusteringSummary {
                    examples: s.examples,
                    inertia: s.inertia,
                    counts: s.counts,
                })
            }
        }
    }
}

impl From<&EvalSummary> for pb::EvalResult {
    fn from(s: &EvalSummary) -> Self {
        pb::EvalResult {
            examples: s.examples,
            positives: s.positives,
            loss_sum: s.loss_sum,
            tp: s.tp,
            fp: s.fp,
            tn: s.tn,
            r#fn: s.fn_,
            hist_pos: s.hist_pos.clone(),
            hist_neg: s.hist_neg.clone(),
            other: None,
        }
    }
}

impl From<pb::EvalResult> for EvalSummary {
    fn from(r: pb::EvalResult) -> Self {
        EvalSummary {
            examples: r.examples,
            positives: r.positives,
            loss_sum: r.loss_sum,
            tp: r.tp,
            fp: r.fp,
            tn: r.tn,
            fn_: r.r#fn,
            hist_pos: r.hist_pos,
            hist_neg: r.hist_neg,
        }
    }
}

impl From<&ClientReply> for pb::ClientMessage {
    fn from(r: &ClientReply) -> Self {
        let body = match r {
            ClientReply::Refusal {
                task_id,
                reason,
                kind,
            } => pb::client_message::Body::Refusal(pb::TaskRefusal {
                task_id: task_id.clone(),
                reason: reason.clone(),
                kind: pb::RefusalKind::from(*kind) as i32,
            }),
            ClientReply::Result { task_id, body } => {
                let body = match body {
                    ResultBody::Stats(s) => pb::task_result::Body::Stats(pb::StatsResult {
                        template: Some((&s.template).into()),
                        numeric: s
                            .numeric
                            .iter()
                            .map(|c| pb::NumericStats {
                                column: c.column.clone(),
                                count: c.count,
                                sum: c.sum,
                                sum_sq: c.sum_sq,
                            })
                            .collect(),
                        train_examples: s.train_examples,
                        label_column: s.label_column.clone(),
                        label_positive: s.label_positive.clone(),
                        label_kind: s.label_kind.as_str().to_string(),
                        label_classes: s.label_classes.clone(),
                        binary: s
                            .binary
                            .iter()
                            .map(|b| pb::BinaryStats {
                                column: b.column.clone(),
                                counts: b.counts.clone(),
                            })
                            .collect(),
                    }),
                    ResultBody::Train(t) => pb::task_result::Body::Train(pb::TrainResult {
                        delta: t.statistics.is_none().then(|| tensor_from_array(&t.delta)),
                        examples: t.examples,
                        steps: t.steps,
                        train_loss: t.train_loss,
                        train_micros: t.train_micros,
                        update_norm: t.update_norm,
                        epsilon_spent: t.epsilon_spent,
                        not_private: t.not_private,
                        clusters: match &t.statistics {
                            Some(Statistics::Clusters(c)) => Some(pb::ClusterStats {
                                sums: Some(tensor_from_rows(&c.sums, c.counts.len())),
                                counts: c.counts.clone(),
                                inertia: c.inertia,
                            }),
                            _ => None,
                        },
                        trees: match &t.statistics {
                            Some(Statistics::Trees(s)) => Some(tree_stats_to_pb(s)),
                            _ => None,
                        },
                    }),
                    ResultBody::Eval(e) => pb::task_result::Body::Eval(e.into()),
                };
                pb::client_message::Body::Result(pb::TaskResult {
                    task_id: task_id.clone(),
                    body: Some(body),
                })
            }
        };
        pb::ClientMessage { body: Some(body) }
    }
}

impl From<&DataFingerprint> for pb::ClientMessage {
    fn from(f: &DataFingerprint) -> Self {
        pb::ClientMessage {
            body: Some(pb::client_message::Body::Fingerprint(pb::DataFingerprint {
                splits: f
                    .rows
                    .iter()
                    .map(|(split, rows)| pb::SplitRows {
                        split: split.clone(),
                        rows: *rows,
                    })
                    .collect(),
                sha256: f.sha256.clone(),
            })),
        }
    }
}

impl From<pb::DataFingerprint> for DataFingerprint {
    fn from(f: pb::DataFingerprint) -> Self {
        DataFingerprint {
            rows: f.splits.into_iter().map(|s| (s.split, s.rows)).collect(),
            sha256: f.sha256,
        }
    }
}

impl From<RefusalKind> for pb::RefusalKind {
    fn from(k: RefusalKind) -> Self {
        match k {
            RefusalKind::Other => pb::RefusalKind::Other,
            RefusalKind::BudgetExhausted => pb::RefusalKind::BudgetExhausted,
            RefusalKind::ResultLost => pb::RefusalKind::ResultLost,
            RefusalKind::Policy => pb::RefusalKind::Policy,
        }
    }
}

/// A refusal; an unknown kind (from a newer client) is treated as
/// [`RefusalKind::Other`], which only means the coordinator may retry.
impl From<pb::TaskRefusal> for ClientReply {
    fn from(r: pb::TaskRefusal) -> Self {
        let kind = match pb::RefusalKind::try_from(r.kind) {
            Ok(pb::RefusalKind::BudgetExhausted) => RefusalKind::BudgetExhausted,
            Ok(pb::RefusalKind::ResultLost) => RefusalKind::ResultLost,
            Ok(pb::RefusalKind::Policy) => RefusalKind::Policy,
            Ok(pb::RefusalKind::Other) | Err(_) => RefusalKind::Other,
        };
        ClientReply::Refusal {
            task_id: r.task_id,
            reason: r.reason,
            kind,
        }
    }
}

impl TryFrom<pb::TaskResult> for ClientReply {
    type Error = ConvertError;
    fn try_from(r: pb::TaskResult) -> Result<Self, ConvertError> {
        let body = match r.body.ok_or(ConvertError::Missing("TaskResult.body"))? {
            pb::task_result::Body::Stats(s) => ResultBody::Stats(StatsReport {
                template: s
                    .template
                    .ok_or(ConvertError::Missing("StatsResult.template"))?
                    .try_into()?,
                numeric: s
                    .numeric
                    .into_iter()
                    .map(|n| ColumnStats {
                        column: n.column,
                        count: n.count,
                        sum: n.sum,
                        sum_sq: n.sum_sq,
                    })
                    .collect(),
                train_examples: s.train_examples,
                label_kind: match s.label_kind.as_str() {
                    "binary" => LabelKindMsg::Binary,
                    "numeric" => LabelKindMsg::Numeric,
                    "classes" => LabelKindMsg::Classes,
                    "" if !s.label_positive.is_empty() => LabelKindMsg::Binary,
                    "" => LabelKindMsg::None,
                    other => {
                        return Err(ConvertError::Invalid {
                            field: "StatsResult.label_kind",
                            problem: format!(
                                "is '{other}' (expected binary, numeric, classes or empty)"
                            ),
                        });
                    }
                },
                label_classes: s.label_classes,
                binary: s
                    .binary
                    .into_iter()
                    .map(|b| BinaryStats {
                        column: b.column,
                        counts: b.counts,
                    })
                    .collect(),
                label_column: s.label_column,
                label_positive: s.label_positive,
            }),
            pb::task_result::Body::Train(t) => ResultBody::Train(TrainReport {
                statistics: match (&t.clusters, &t.trees) {
                    (None, None) => None,
                    (Some(_), Some(_)) => {
                        return Err(ConvertError::Invalid {
                            field: "TrainResult.trees",
                            problem: "is present together with TrainResult.clusters".into(),
                        });
                    }
                    (None, Some(s)) => Some(Statistics::Trees(tree_stats_from_pb(s)?)),
                    (Some(c), None) => Some(Statistics::Clusters(ClusterStats {
                        sums: rows_from_tensor(
                            c.sums
                                .as_ref()
                                .ok_or(ConvertError::Missing("ClusterStats.sums"))?,
                        )?
                        .0,
                        counts: c.counts.clone(),
                        inertia: c.inertia,
                    })),
                },
                delta: match (&t.delta, t.clusters.is_some() || t.trees.is_some()) {
                    (Some(delta), _) => array_from_tensor(delta)?,
                    (None, true) => Array1::zeros(0),
                    (None, false) => return Err(ConvertError::Missing("TrainResult.delta")),
                },
                examples: t.examples,
                steps: t.steps,
                train_loss: t.train_loss,
                train_micros: t.train_micros,
                update_norm: t.update_norm,
                epsilon_spent: t.epsilon_spent,
                not_private: t.not_private,
            }),
            pb::task_result::Body::Eval(e) => ResultBody::Eval(e.into()),
        };
        Ok(ClientReply::Result {
            task_id: r.task_id,
            body,
        })
    }
}

// ----- admin API -------------------------------------------------------------

/// An absent text is the empty string on the wire.
fn text(value: Option<String>) -> String {
    value.unwrap_or_default()
}

/// The empty string on the wire is an absent text.
fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// `From` both ways between a domain message and its protobuf twin with the
/// same fields: each field moves as it is, except the `texts` (optional texts,
/// the empty string on the wire: [`text`] and [`optional`]) and the `nested`
/// (optional messages, converted by their own `From`) and the `lists`
/// (repeated messages, each converted by its own `From`).
macro_rules! mirror {
    ($message:ident = pb::$pb:ident {
        $($field:ident),* $(,)?
    } $(texts { $($text:ident),* $(,)? })? $(nested { $($nested:ident),* $(,)? })?
    $(lists { $($list:ident),* $(,)? })?) => {
        impl From<$message> for pb::$pb {
            fn from(m: $message) -> pb::$pb {
                pb::$pb {
                    $($field: m.$field,)*
                    $($($text: text(m.$text),)*)?
                    $($($nested: m.$nested.map(Into::into),)*)?
                    $($($list: m.$list.into_iter().map(Into::into).collect(),)*)?
                }
            }
        }

        impl From<pb::$pb> for $message {
            fn from(m: pb::$pb) -> $message {
                $message {
                    $($field: m.$field,)*
                    $($($text: optional(m.$text),)*)?
                    $($($nested: m.$nested.map(Into::into),)*)?
                    $($($list: m.$list.into_iter().map(Into::into).collect(),)*)?
                }
            }
        }
    };
}

mirror! {
    RunInfo = pb::RunInfo {
        run_id, name, state, rounds_planned, rounds_done, created_at, auc, log_loss, epsilon,
        quality,
    }
    texts { started_at, finished_at, failure, model_version, model_status }
    nested { update }
}

mirror! {
    UpdateDecisionInfo = pb::UpdateDecision {
        target, metric, champion_version, challenger, champion, min_improvement, promoted, reason,
    }
}

mirror! {
    ModelVersionInfo = pb::ModelVersion {
        target, version, run_id, family, status, reason, metrics, epsilon, data_fingerprint,
        parent_version, registered_at,
    }
    texts { model_json }
    nested { decision }
    lists { partners }
}

mirror! {
    PartnerHolding = pb::PartnerHolding { client_id, fingerprint, acknowledged_at }
}

mirror! {
    HeldModel = pb::HeldModel { target, version, fingerprint }
}

impl From<pb::ChampionModel> for ChampionPush {
    fn from(c: pb::ChampionModel) -> ChampionPush {
        ChampionPush {
            model: HeldModel {
                target: c.target,
                version: c.version,
                fingerprint: c.fingerprint,
            },
            model_json: c.model_json,
        }
    }
}

impl From<&ChampionAck> for pb::ClientMessage {
    fn from(a: &ChampionAck) -> pb::ClientMessage {
        pb::ClientMessage {
            body: Some(pb::client_message::Body::ChampionAck(pb::ChampionAck {
                model: Some(a.model.clone().into()),
                ok: a.ok,
                message: a.message.clone(),
            })),
        }
    }
}

impl TryFrom<pb::ChampionAck> for ChampionAck {
    type Error = ConvertError;

    fn try_from(a: pb::ChampionAck) -> Result<ChampionAck, ConvertError> {
        Ok(ChampionAck {
            model: a
                .model
                .ok_or(ConvertError::Missing("champion_ack.model"))?
                .into(),
            ok: a.ok,
            message: a.message,
        })
    }
}

mirror! {
    RunProgress = pb::RunProgress {
        run_id, round, rounds_planned, state, clients_accepted, clients_selected, auc, log_loss,
        epsilon, message, quality,
    }
}

mirror! {
    ClientInfo = pb::ClientInfo { client_id, connected, first_seen, last_seen, budget_epsilon_left }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_is_exact() {
        let a = Array1::from_vec(vec![0.0, -1.5, 1e-300, f64::MAX, 3.25]);
        let t = tensor_from_array(&a);
        assert_eq!(t.data.len(), 40);
        assert_eq!(&t.data[8..16], &(-1.5f64).to_le_bytes());
        assert_eq!(array_from_tensor(&t).unwrap(), a);
    }

    #[test]
    fn f32_tensor_decodes() {
        let t = pb::Tensor {
            shape: vec![2],
            dtype: pb::DType::DtypeF32 as i32,
            data: [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat(),
        };
        assert_eq!(array_from_tensor(&t).unwrap().to_vec(), vec![1.5, -2.0]);
    }

    #[test]
    fn short_tensor_is_refused_with_sizes() {
        let mut t = tensor_from_array(&Array1::from_vec(vec![1.0, 2.0]));
        t.data.pop();
        let err = array_from_tensor(&t).unwrap_err();
        assert!(err.to_string().contains("15 bytes"), "{err}");
        t.dtype = 7;
        assert_eq!(array_from_tensor(&t).unwrap_err(), ConvertError::DType(7));
    }

    #[test]
    fn task_round_trip() {
        let spec = FeatureSpec {
            reference: None,
            columns: vec![
                FeatureColumn::Numeric {
                    name: "tenure".into(),
                    mean: 30.0,
                    std: 20.0,
                },
                FeatureColumn::Categorical {
                    name: "contract".into(),
                    vocabulary: vec!["one year".into()],
                },
            ],
        };
        let task = Task {
            task_id: "t-1".into(),
            run_id: "r".into(),
            round: 3,
            body: TaskBody::Train(TrainTask {
                model: ModelSnapshot {
                    model_type: "softmax_regression".into(),
                    features: spec,
                    params: Array1::from_vec(vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0]),
                    outputs: 2,
                },
                local_epochs: 1,
                batch_size: 32,
                learning_rate: 0.1,
                record_dp: Some(RecordDpTask {
                    clip_norm: 1.0,
                    noise_multiplier: None,
                    target_epsilon: Some(1.0),
                    delta: 1e-5,
                    planned_rounds: 20,
                }),
                update_clip_norm: Some(0.5),
                prox_mu: 0.01,
            }),
        };
        let wire = pb::Task::from(&task);
        let Some(pb::task::Body::Train(t)) = &wire.body else {
            panic!("not a train task")
        };
        assert_eq!(
            t.model.as_ref().unwrap().params.as_ref().unwrap().shape,
            [2, 3]
        );
        let back = Task::try_from(wire).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn matrices_decode_with_their_rows() {
        let a = Array1::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = tensor_from_rows(&a, 3);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(rows_from_tensor(&t).unwrap(), (a.clone(), 3));
        assert_eq!(rows_from_tensor(&tensor_from_rows(&a, 1)).unwrap().1, 1);
        let mut short = t.clone();
        short.data.truncate(40);
        assert!(
            rows_from_tensor(&short)
                .unwrap_err()
                .to_string()
                .contains("40 bytes")
        );
        let cube = pb::Tensor {
            shape: vec![1, 2, 3],
            ..t
        };
        assert_eq!(
            rows_from_tensor(&cube).unwrap_err(),
            ConvertError::NotAMatrix(vec![1, 2, 3])
        );
    }

    #[test]
    fn results_of_every_family_round_trip() {
        let bodies = vec![
            ResultBody::Eval(Evaluation::Binary(EvalSummary::empty())),
            ResultBody::Eval(Evaluation::Regression(RegressionSummary {
                examples: 3,
                sum_y: 6.0,
                sum_y2: 14.0,
                sse: 0.5,
                sae: 1.0,
            })),
            ResultBody::Eval(Evaluation::Multiclass(MulticlassSummary {
                classes: 2,
                examples: 3,
                loss_sum: 1.5,
                confusion: vec![1, 0, 1, 1],
            })),
            ResultBody::Eval(Evaluation::Clustering(ClusteringSummary {
                examples: 4,
                inertia: 2.5,
                counts: vec![3, 1],
            })),
            ResultBody::Train(TrainReport {
                delta: Array1::zeros(0),
                examples: 4,
                steps: 1,
                train_loss: 0.0,
                train_micros: 10,
                update_norm: 0.0,
                epsilon_spent: Some(0.3),
                not_private: false,
                statistics: Some(Statistics::Clusters(ClusterStats {
                    sums: Array1::from_vec(vec![1.0, 2.0, 3.0, 4.0]),
                    counts: vec![1, 3],
                    inertia: 0.0,
                })),
            }),
            ResultBody::Stats(StatsReport {
                template: FeatureSpec::new(vec![]),
                numeric: vec![],
                train_examples: 9,
                label_column: "contract".into(),
                label_positive: String::new(),
                label_kind: LabelKindMsg::Classes,
                label_classes: vec!["a".into(), "b".into()],
                binary: vec![BinaryStats {
                    column: "contract".into(),
                    counts: vec![4, 5, 0],
                }],
            }),
        ];
        for body in bodies {
            let reply = ClientReply::Result {
                task_id: "t".into(),
                body,
            };
            let pb::client_message::Body::Result(r) = pb::ClientMessage::from(&reply).body.unwrap()
            else {
                panic!("not a result")
            };
            assert_eq!(ClientReply::try_from(r).unwrap(), reply);
        }
    }

    #[test]
    fn missing_body_names_the_field() {
        let err = Task::try_from(pb::Task::default()).unwrap_err();
        assert_eq!(err.to_string(), "message field 'Task.body' is missing");
    }
}
