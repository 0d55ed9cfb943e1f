//! A test-only family, to show that a family is one module and one
//! registration: a linear model through the origin (`dim` weights, no
//! intercept) on a numeric target. It only implements [`Family`]; training
//! (plain and DP-SGD), aggregation, evaluation and scoring all go through the
//! generic paths of [`crate::family`].

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use super::common::{family_kind, one_column, supervised_evaluation};
use super::{AnyModel, Evaluation, Family, LabelNeed, ModelFamily, ScoreTable, Training, labels};
use crate::error::LearningError;
use crate::model_file::ModelDocument;
use crate::objective::{Batch, Objective, check_params};
use crate::regression_metrics::RegressionSummary;

/// A linear model through the origin.
#[derive(Debug, Clone, Copy)]
pub struct Toy;

/// Squared error of `x · w` (no intercept).
struct ThroughOrigin {
    dim: usize,
}

impl Objective for ThroughOrigin {
    fn param_count(&self) -> usize {
        self.dim
    }

    fn is_intercept(&self, _: usize) -> bool {
        false
    }

    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError> {
        if x.ncols() != self.dim {
            return Err(LearningError::FeatureCount {
                expected: self.dim,
                got: x.ncols(),
            });
        }
        if x.nrows() != y.len() {
            return Err(LearningError::RowMismatch {
                rows: x.nrows(),
                labels: y.len(),
            });
        }
        Ok(())
    }

    fn checked_gradients(&self, Batch { params, x, y }: Batch<'_>) -> Array2<f64> {
        let r = x.dot(&params) - y;
        &x * &r.insert_axis(Axis(1))
    }

    fn checked_loss(&self, Batch { params, x, y }: Batch<'_>) -> f64 {
        let r = x.dot(&params) - y;
        r.mapv(|v| v * v / 2.0).mean().unwrap_or(0.0)
    }
}

impl Family for Toy {
    family_kind!(ModelFamily::Toy, LabelNeed::Numeric);

    fn per_output(&self, dim: usize) -> usize {
        dim
    }

    fn check(&self, params: &Array1<f64>, _: usize) -> Result<(), LearningError> {
        check_params(&ThroughOrigin { dim: params.len() }, params.view())
    }

    fn dim(&self, params: usize, _: usize) -> usize {
        params
    }

    fn initial(&self, dim: usize, _: usize, _: u64) -> Result<Array1<f64>, LearningError> {
        Ok(Array1::zeros(dim))
    }

    fn training(&self, m: &AnyModel) -> Training {
        Training::Gradient(Box::new(ThroughOrigin { dim: m.dim() }))
    }

    supervised_evaluation!(
        Regression(RegressionSummary),
        |m, x| x.dot(m.params()),
        |_| RegressionSummary::empty(),
    );

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        Ok(one_column("toy", &x.dot(doc.model().params()), 3))
    }

    fn profile_header(&self, _: &ModelDocument) -> Option<Vec<String>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::{DpSgdParams, seeded_test_rng};
    use crate::family::{
        GradientTraining, RoundAggregate, RoundUpdates, aggregate_round, local_update,
    };
    use crate::strategy::{ClientUpdate, StrategyConfig};
    use crate::train::test_params;
    use ndarray::array;

    fn client(seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut rng = seeded_test_rng(seed);
        let x = Array2::from_shape_fn((40, 2), |_| rand::Rng::random_range(&mut rng, -1.0..1.0));
        let y = x.dot(&array![2.0, -1.0]);
        (x, y)
    }

    /// The toy family trains (plain and DP-SGD), is aggregated by FedAvg,
    /// evaluated with pooling and scored, through the generic paths only.
    #[test]
    fn a_new_family_runs_through_the_generic_paths() {
        let family = ModelFamily::Toy;
        assert!(family.is_gradient_based());
        assert_eq!(family.label_need(), LabelNeed::Numeric);
        let mut global = family.initial(2, 1, 0).unwrap();
        assert_eq!(global.params().to_vec(), vec![0.0, 0.0]);
        let clients = [client(1), client(2)];
        let plain = GradientTraining::Plain(test_params(5, 8, 0.5, 0.0));
        let mut strategy = StrategyConfig::defaults("fed_avg")
            .unwrap()
            .build()
            .unwrap();
        let mut rng = seeded_test_rng(3);
        for _ in 0..5 {
            let updates: Vec<ClientUpdate> = clients
                .iter()
                .enumerate()
                .map(|(i, (x, y))| {
                    let out = local_update(&global, x.view(), y.view(), &plain, &mut rng).unwrap();
                    ClientUpdate {
                        client: format!("c{i}"),
                        delta: out.delta,
                        weight: out.examples as f64,
                    }
                })
                .collect();
            let RoundAggregate::Step { next, .. } =
                aggregate_round(&global, RoundUpdates::Deltas(&updates), &mut *strategy).unwrap()
            else {
                panic!("a gradient family aggregates by steps")
            };
            global = next;
        }
        let w = global.params();
        assert!(
            (w[0] - 2.0).abs() < 0.05 && (w[1] + 1.0).abs() < 0.05,
            "{w}"
        );

        let (x, y) = &clients[0];
        let dp = GradientTraining::DpSgd(
            DpSgdParams {
                clip_norm: 1.0,
                noise_multiplier: 1.0,
                expected_batch_size: 10,
                epochs: 1,
                learning_rate: 0.1,
            }
            .check(x.nrows())
            .unwrap(),
        );
        let out = local_update(&global, x.view(), y.view(), &dp, &mut rng).unwrap();
        assert_eq!(out.steps, 4);

        let mut pooled = Evaluation::empty(family, 1).unwrap();
        for (x, y) in &clients {
            pooled
                .merge(&global.evaluate(x.view(), Some(y.view())).unwrap())
                .unwrap();
        }
        assert_eq!(pooled.examples(), 80);
        let Some(crate::Quality::Regression(q)) = pooled.quality() else {
            panic!("regression metrics")
        };
        assert!(q.rmse < 0.05, "{q:?}");

        let doc = ModelDocument::new_unchecked(global, Default::default());
        let table = doc.score(array![[1.0, 0.0], [0.0, 1.0]].view()).unwrap();
        assert_eq!(table.header, vec!["toy"]);
        assert_eq!(table.rows.len(), 2);
        assert!(table.rows[0][0].starts_with("2.0") || table.rows[0][0].starts_with("1.9"));
    }
}
