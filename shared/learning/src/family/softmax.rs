//! Multi-class softmax regression as a [`Family`]: a `class` column, `k ×
//! (dim + 1)` parameters row-major, trained on
//! [`SoftmaxCrossEntropy`](crate::SoftmaxCrossEntropy), evaluated with
//! [`MulticlassSummary`]; `score` writes the predicted class and its
//! probability, `profile` also every class's probability and the predicted
//! class's logit with its per-feature contributions.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use super::common::{family_kind, supervised_evaluation};
use super::{
    AnyModel, Evaluation, Family, LabelNeed, ModelFamily, ProfileRow, ScoreTable, Training, labels,
};
use crate::error::LearningError;
use crate::model_file::ModelDocument;
use crate::multiclass_metrics::MulticlassSummary;
use crate::softmax::SoftmaxRegression;

/// Softmax regression.
#[derive(Debug, Clone, Copy)]
pub struct Softmax;

fn model(m: &AnyModel) -> Result<SoftmaxRegression, LearningError> {
    SoftmaxRegression::from_params(m.params().clone(), m.outputs())
}

impl Family for Softmax {
    family_kind!(ModelFamily::SoftmaxRegression, LabelNeed::Classes);

    fn per_output(&self, dim: usize) -> usize {
        dim + 1
    }

    fn outputs(&self, requested: usize) -> usize {
        requested
    }

    fn run_outputs(&self, classes: usize, _clusters: usize) -> usize {
        classes
    }

    fn check(&self, params: &Array1<f64>, outputs: usize) -> Result<(), LearningError> {
        SoftmaxRegression::from_params(params.clone(), outputs).map(drop)
    }

    fn dim(&self, params: usize, outputs: usize) -> usize {
        (params / outputs.max(1)).saturating_sub(1)
    }

    fn initial(&self, dim: usize, outputs: usize, _: u64) -> Result<Array1<f64>, LearningError> {
        Ok(SoftmaxRegression::zeros(dim, outputs)?.params().clone())
    }

    fn training(&self, m: &AnyModel) -> Training {
        Training::Gradient(Box::new(crate::softmax::SoftmaxCrossEntropy {
            dim: m.dim(),
            classes: m.outputs(),
        }))
    }

    supervised_evaluation!(
        Multiclass(MulticlassSummary),
        |m, x| model(m)?.predict_proba(x)?,
        |outputs| MulticlassSummary::empty(outputs)?,
    );

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        let m = model(doc.model())?;
        let probs = m.predict_proba(x)?;
        let classes = m.predict(x)?;
        Ok(ScoreTable {
            header: vec!["class".into(), "probability".into()],
            rows: classes
                .iter()
                .enumerate()
                .map(|(row, &c)| predicted(doc, &probs, row, c))
                .collect(),
        })
    }

    fn profile_header(&self, doc: &ModelDocument) -> Option<Vec<String>> {
        let target = doc.target_column();
        let mut header = vec![
            format!("{target}_predicted"),
            format!("{target}_probability"),
        ];
        header.extend(
            doc.classes()
                .iter()
                .map(|c| format!("{target}_probability_{}", c.replace(' ', "_"))),
        );
        header.push(super::common::target_column(target, "score"));
        Some(header)
    }

    fn profile_rows(
        &self,
        doc: &ModelDocument,
        x: ArrayView2<f64>,
        reference: ArrayView1<f64>,
    ) -> Result<Vec<ProfileRow>, LearningError> {
        class_profile(doc, &model(doc.model())?, x, reference)
    }
}

/// The predicted class of a row and its probability (`probs`: one row per
/// example, one column per class).
fn predicted(doc: &ModelDocument, probs: &Array2<f64>, row: usize, class: usize) -> Vec<String> {
    vec![
        doc.classes().get(class).cloned().unwrap_or_default(),
        format!("{:.6}", probs[[row, class]]),
    ]
}

/// The profile rows of `m` on `x`: the predicted class and its probability,
/// every class's probability, and the predicted class's logit with its
/// per-feature contributions against the encoded row `reference`.
fn class_profile(
    doc: &ModelDocument,
    m: &SoftmaxRegression,
    x: ArrayView2<f64>,
    reference: ArrayView1<f64>,
) -> Result<Vec<ProfileRow>, LearningError> {
    let probs = m.predict_proba(x)?;
    let logits = m.logits(x)?;
    m.predict(x)?
        .iter()
        .enumerate()
        .map(|(row, &class)| {
            let mut columns = predicted(doc, &probs, row, class);
            columns.extend(probs.row(row).iter().map(|p| format!("{p:.6}")));
            let score = logits[[row, class]];
            columns.push(format!("{score:.6}"));
            Ok(ProfileRow::linear(
                columns,
                score,
                m.intercepts()[class],
                m.contributions(x.row(row), class)?,
                &m.contributions(reference, class)?,
            ))
        })
        .collect()
}
