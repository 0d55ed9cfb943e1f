//! Binary logistic regression as a [`Family`]: a binary `label`, parameters
//! `[intercept, w..]`, trained on [`LogLoss`], evaluated with
//! [`EvalSummary`]; `score` writes the probability, `profile` the probability
//! and the logit with its per-feature contributions.

use ndarray::{Array1, ArrayView1, ArrayView2};

use super::common::{
    family_kind, one_column, single_output_params, single_output_profile, supervised_evaluation,
    target_column,
};
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
    family_kind!(ModelFamily::LogisticRegression, LabelNeed::Binary);
    single_output_params!(LogisticRegression);

    fn training(&self, model: &AnyModel) -> Training {
        Training::Gradient(Box::new(LogLoss { dim: model.dim() }))
    }

    supervised_evaluation!(
        Binary(EvalSummary),
        |m, x| model(m)?.predict_proba(x)?,
        |_| EvalSummary::empty(),
    );

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        Ok(one_column(
            "score",
            &model(doc.model())?.predict_proba(x)?,
            6,
        ))
    }

    fn profile_header(&self, doc: &ModelDocument) -> Option<Vec<String>> {
        let target = doc.target_column();
        let name = if target.is_empty() {
            "score".to_string()
        } else {
            format!("{target}_probability")
        };
        Some(vec![name, target_column(target, "logit")])
    }

    single_output_profile!(predict_proba, logits);
}
