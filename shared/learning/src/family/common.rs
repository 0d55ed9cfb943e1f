//! The [`Family`](super::Family) methods that several families write the same
//! way, as macros used inside their `impl Family` blocks (so that each family
//! module states only what differs), and the helpers their `score` columns
//! share.

use ndarray::Array1;

use super::ScoreTable;

/// `family` and `label_need`: the family's registered name and the label
/// column it trains on.
macro_rules! family_kind {
    ($family:expr, $labels:expr) => {
        fn family(&self) -> ModelFamily {
            $family
        }

        fn label_need(&self) -> LabelNeed {
            $labels
        }
    };
}
pub(super) use family_kind;

/// `per_output`, `check`, `dim` and `initial` of a single-output regression
/// whose parameters are `[intercept, w..]` (`dim + 1`): `$model` is its model
/// type, with `from_params(params)` (the check) and `zeros(dim)` (the start).
macro_rules! single_output_params {
    ($model:ident) => {
        fn per_output(&self, dim: usize) -> usize {
            dim + 1
        }

        fn check(&self, params: &Array1<f64>, _outputs: usize) -> Result<(), LearningError> {
            $model::from_params(params.clone()).map(drop)
        }

        fn dim(&self, params: usize, _outputs: usize) -> usize {
            params.saturating_sub(1)
        }

        fn initial(&self, dim: usize, _: usize, _: u64) -> Result<Array1<f64>, LearningError> {
            Ok($model::zeros(dim).params().clone())
        }
    };
}
pub(super) use single_output_params;

/// `evaluate` and `empty_evaluation` of a supervised family: the predictions
/// `$predict` of model `$m` on rows `$x` are pooled by `$summary` (with the
/// test labels) into [`Evaluation::$variant`](super::Evaluation), whose
/// neutral element for `$outputs` rows is `$empty`.
macro_rules! supervised_evaluation {
    (
        $variant:ident($summary:ident),
        |$m:ident, $x:ident| $predict:expr,
        |$outputs:pat_param| $empty:expr $(,)?
    ) => {
        fn evaluate(
            &self,
            $m: &AnyModel,
            $x: ArrayView2<f64>,
            y: Option<ArrayView1<f64>>,
        ) -> Result<Evaluation, LearningError> {
            let p = $predict;
            Ok(Evaluation::$variant($summary::from_predictions(
                p.view(),
                labels(y)?,
            )?))
        }

        fn empty_evaluation(&self, $outputs: usize) -> Result<Evaluation, LearningError> {
            Ok(Evaluation::$variant($empty))
        }
    };
}
pub(super) use supervised_evaluation;

/// `profile_rows` of a single-output regression: per row, the columns
/// `$prediction` (the model's prediction) and `$score` (the score the
/// reference score and the per-feature contributions add up to), the latter
/// being the score.
macro_rules! single_output_profile {
    ($prediction:ident, $score:ident) => {
        fn profile_rows(
            &self,
            doc: &ModelDocument,
            x: ArrayView2<f64>,
            reference: ArrayView1<f64>,
        ) -> Result<Vec<ProfileRow>, LearningError> {
            let m = model(doc.model())?;
            let predictions = m.$prediction(x)?;
            let scores = m.$score(x)?;
            let at_reference = m.contributions(reference)?;
            predictions
                .iter()
                .zip(&scores)
                .enumerate()
                .map(|(row, (p, z))| {
                    Ok(ProfileRow::linear(
                        vec![format!("{p:.6}"), format!("{z:.6}")],
                        *z,
                        m.intercept(),
                        m.contributions(x.row(row))?,
                        &at_reference,
                    ))
                })
                .collect()
        }
    };
}
pub(super) use single_output_profile;

/// A `profile` column of the model of `target`: `<target>_<name>`, or `name`
/// for a model without a target column.
pub(super) fn target_column(target: &str, name: &str) -> String {
    if target.is_empty() {
        name.to_string()
    } else {
        format!("{target}_{name}")
    }
}

/// A `score` table of one column `name`: each value with `decimals` decimals.
pub(super) fn one_column(name: &str, values: &Array1<f64>, decimals: usize) -> ScoreTable {
    ScoreTable {
        header: vec![name.into()],
        rows: values
            .iter()
            .map(|v| vec![format!("{v:.decimals$}")])
            .collect(),
    }
}
