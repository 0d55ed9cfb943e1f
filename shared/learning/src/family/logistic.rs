//! Binary logistic regression as a [`Family`]: a binary `label`, parameters
//! `[intercept, w..]`, trained on [`LogLoss`], evaluated with
//! [`EvalSummary`]; `score` writes the probability, `profile` the probability
//! and the logit with its per-feature contributions.

use ndarray::{Array1, ArrayView1, ArrayView2};

use super::{
    AnyModel, Evaluation, Family, LabelNeed, ModelFamily, ProfileRow, ScoreTable, Training, labels,
};
use crate::error::LearningError;
use crate::metrics::EvalSummary;
use crate::model::LogisticRegression;
use crate::model_file::ModelDocument;
use crate::objective::LogLoss;

/// Binary logistic regression.
#[derive(Debug, Clone, Copy)]
pub struct Logistic;

fn model(m: &AnyModel) -> Result<LogisticRegression, LearningError> {
    LogisticRegression::from_params(m.params().clone())
}

impl Family for Logistic {
    fn family(&self) -> ModelFamily {
        ModelFamily::LogisticRegression
    }

    fn label_need(&self) -> LabelNeed {
        LabelNeed::Binary
    }

    fn per_output(&self, dim: usize) -> usize {
        dim + 1
    }

    fn check(&self, params: &Array1<f64>, _outputs: usize) -> Result<(), LearningError> {
        LogisticRegression::from_params(params.clone()).map(drop)
    }

    fn dim(&self, params: usize, _outputs: usize) -> usize {
        params.saturating_sub(1)
    }

    fn initial(&self, dim: usize, _: usize, _: u64) -> Result<Array1<f64>, LearningError> {
        Ok(LogisticRegression::zeros(dim).params().clone())
    }

    fn training(&self, model: &AnyModel) -> Training {
        Training::Gradient(Box::new(LogLoss { dim: model.dim() }))
    }

    fn evaluate(
        &self,
        m: &AnyModel,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError> {
        let p = model(m)?.predict_proba(x)?;
        Ok(Evaluation::Binary(EvalSummary::from_predictions(
            p.view(),
            labels(y)?,
        )?))
    }

    fn empty_evaluation(&self, _: usize) -> Result<Evaluation, LearningError> {
        Ok(Evaluation::Binary(EvalSummary::empty()))
    }

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        let probs = model(doc.model())?.predict_proba(x)?;
        Ok(ScoreTable {
            header: vec!["score".into()],
            rows: probs.iter().map(|p| vec![format!("{p:.6}")]).collect(),
        })
    }

    fn profile_header(&self, doc: &ModelDocument) -> Option<Vec<String>> {
        let target = doc.target_column();
        let name = if target.is_empty() {
            "score".to_string()
        } else {
            format!("{target}_probability")
        };
        Some(vec![name, "logit".into()])
    }

    fn profile_rows(
        &self,
        doc: &ModelDocument,
        x: ArrayView2<f64>,
    ) -> Result<Vec<ProfileRow>, LearningError> {
        let m = model(doc.model())?;
        let probs = m.predict_proba(x)?;
        let logits = m.logits(x)?;
        probs
            .iter()
            .zip(&logits)
            .enumerate()
            .map(|(row, (p, z))| {
                Ok(ProfileRow {
                    columns: vec![format!("{p:.6}"), format!("{z:.6}")],
                    score: *z,
                    intercept: m.intercept(),
                    contributions: m.contributions(x.row(row))?,
                })
            })
            .collect()
    }
}
