//! Linear regression as a [`Family`]: a numeric `target`, parameters
//! `[intercept, w..]`, trained on [`SquaredError`](crate::SquaredError),
//! evaluated with [`RegressionSummary`]; `score` writes the prediction,
//! `profile` the prediction with its per-feature contributions.

use ndarray::{Array1, ArrayView1, ArrayView2};

use super::common::{
    family_kind, one_column, single_output_params, single_output_profile, supervised_evaluation,
    target_column,
};
use super::{
    AnyModel, Evaluation, Family, LabelNeed, ModelFamily, ProfileRow, ScoreTable, Training, labels,
};
use crate::error::LearningError;
use crate::linear::LinearRegression;
use crate::model_file::ModelDocument;
use crate::regression_metrics::RegressionSummary;

/// Linear regression.
#[derive(Debug, Clone, Copy)]
pub struct Linear;

fn model(m: &AnyModel) -> Result<LinearRegression, LearningError> {
    LinearRegression::from_params(m.params().clone())
}

impl Family for Linear {
    family_kind!(ModelFamily::LinearRegression, LabelNeed::Numeric);
    single_output_params!(LinearRegression);

    fn training(&self, m: &AnyModel) -> Training {
        Training::Gradient(Box::new(crate::linear::SquaredError { dim: m.dim() }))
    }

    supervised_evaluation!(
        Regression(RegressionSummary),
        |m, x| model(m)?.predict(x)?,
        |_| RegressionSummary::empty(),
    );

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        Ok(one_column(
            "prediction",
            &model(doc.model())?.predict(x)?,
            6,
        ))
    }

    fn profile_header(&self, doc: &ModelDocument) -> Option<Vec<String>> {
        let target = doc.target_column();
        Some(vec![
            target_column(target, "predicted"),
            target_column(target, "score"),
        ])
    }

    single_output_profile!(predict, predict);
}
