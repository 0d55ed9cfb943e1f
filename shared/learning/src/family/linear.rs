//! Linear regression as a [`Family`]: a numeric `target`, parameters
//! `[intercept, w..]`, trained on [`SquaredError`](crate::SquaredError),
//! evaluated with [`RegressionSummary`]; `score` writes the prediction,
//! `profile` the prediction with its per-feature contributions.

use ndarray::{Array1, ArrayView1, ArrayView2};

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
    fn family(&self) -> ModelFamily {
        ModelFamily::LinearRegression
    }

    fn label_need(&self) -> LabelNeed {
        LabelNeed::Numeric
    }

    fn per_output(&self, dim: usize) -> usize {
        dim + 1
    }

    fn check(&self, params: &Array1<f64>, _outputs: usize) -> Result<(), LearningError> {
        LinearRegression::from_params(params.clone()).map(drop)
    }

    fn dim(&self, params: usize, _outputs: usize) -> usize {
        params.saturating_sub(1)
    }

    fn initial(&self, dim: usize, _: usize, _: u64) -> Result<Array1<f64>, LearningError> {
        Ok(LinearRegression::zeros(dim).params().clone())
    }

    fn training(&self, m: &AnyModel) -> Training {
        Training::Gradient(Box::new(crate::linear::SquaredError { dim: m.dim() }))
    }

    fn evaluate(
        &self,
        m: &AnyModel,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError> {
        let p = model(m)?.predict(x)?;
        Ok(Evaluation::Regression(RegressionSummary::from_predictions(
            p.view(),
            labels(y)?,
        )?))
    }

    fn empty_evaluation(&self, _: usize) -> Result<Evaluation, LearningError> {
        Ok(Evaluation::Regression(RegressionSummary::empty()))
    }

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        let y = model(doc.model())?.predict(x)?;
        Ok(ScoreTable {
            header: vec!["prediction".into()],
            rows: y.iter().map(|v| vec![format!("{v:.6}")]).collect(),
        })
    }

    fn profile_header(&self, doc: &ModelDocument) -> Option<Vec<String>> {
        Some(vec![
            format!("{}_predicted", doc.target_column()),
            "score".into(),
        ])
    }

    fn profile_rows(
        &self,
        doc: &ModelDocument,
        x: ArrayView2<f64>,
    ) -> Result<Vec<ProfileRow>, LearningError> {
        let m = model(doc.model())?;
        let predictions = m.predict(x)?;
        predictions
            .iter()
            .enumerate()
            .map(|(row, y)| {
                Ok(ProfileRow {
                    columns: vec![format!("{y:.6}"), format!("{y:.6}")],
                    score: *y,
                    intercept: m.intercept(),
                    contributions: m.contributions(x.row(row))?,
                })
            })
            .collect()
    }
}
