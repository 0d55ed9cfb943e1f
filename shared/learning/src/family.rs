//! The model families a run can train, behind one dispatch point.
//!
//! A run names its family (`logistic_regression`, `linear_regression`,
//! `softmax_regression`, `kmeans`); every family has flat `Array1<f64>`
//! parameters plus a number of *outputs* (classes of a softmax model, clusters
//! of a k-means model, 1 otherwise), so the parameters travel as one tensor of
//! shape `outputs × per_output`.
//!
//! - [`ModelFamily`]: the name, the label it needs, its parameter count;
//! - [`AnyModel`]: a model of any family, built from `(family, params, outputs)`,
//!   with its training objective (the supervised families) and its evaluation;
//! - [`Evaluation`]: the exactly poolable evaluation summary of each family, and
//!   [`Quality`], the metrics of the non-binary families for reports.

use ndarray::{Array1, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::LearningError;
use crate::kmeans::{KMeans, kmeans_init};
use crate::linear::LinearRegression;
use crate::metrics::EvalSummary;
use crate::model::LogisticRegression;
use crate::multiclass_metrics::{MulticlassMetrics, MulticlassSummary};
use crate::objective::{LogLoss, Objective};
use crate::regression_metrics::{RegressionMetrics, RegressionSummary};
use crate::softmax::SoftmaxRegression;

/// A model family a run can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// Binary logistic regression (a `label` column).
    LogisticRegression,
    /// Linear regression (a numeric `target` column).
    LinearRegression,
    /// Multi-class softmax regression (a `class` column).
    SoftmaxRegression,
    /// Federated k-means segmentation (no label needed).
    #[serde(rename = "kmeans")]
    KMeans,
}

/// What a family needs from the clients' schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelNeed {
    /// A binary `label` column.
    Binary,
    /// A numeric `target` column.
    Numeric,
    /// A multi-class `class` column.
    Classes,
    /// Nothing (unsupervised).
    None,
}

impl ModelFamily {
    /// Every family, in documentation order.
    pub const ALL: [ModelFamily; 4] = [
        ModelFamily::LogisticRegression,
        ModelFamily::LinearRegression,
        ModelFamily::SoftmaxRegression,
        ModelFamily::KMeans,
    ];

    /// The family's name in run files, model files and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::LogisticRegression => "logistic_regression",
            ModelFamily::LinearRegression => "linear_regression",
            ModelFamily::SoftmaxRegression => "softmax_regression",
            ModelFamily::KMeans => "kmeans",
        }
    }

    /// The family named `name`, if any.
    pub fn parse(name: &str) -> Option<ModelFamily> {
        ModelFamily::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The names of every family, comma-separated (for error messages).
    pub fn names() -> String {
        ModelFamily::ALL.map(ModelFamily::name).join(", ")
    }

    /// The label column the family trains on.
    pub fn label_need(self) -> LabelNeed {
        match self {
            ModelFamily::LogisticRegression => LabelNeed::Binary,
            ModelFamily::LinearRegression => LabelNeed::Numeric,
            ModelFamily::SoftmaxRegression => LabelNeed::Classes,
            ModelFamily::KMeans => LabelNeed::None,
        }
    }

    /// Whether clients train with gradients (and send deltas); k-means clients
    /// send per-cluster sums and counts instead.
    pub fn is_gradient_based(self) -> bool {
        self != ModelFamily::KMeans
    }

    /// Parameters per output row for `dim` features: `dim + 1` (intercept and
    /// weights) for the regressions, `dim` for k-means centroids.
    pub fn per_output(self, dim: usize) -> usize {
        match self {
            ModelFamily::KMeans => dim,
            _ => dim + 1,
        }
    }

    /// The starting parameters for `dim` features and `outputs` rows: zeros for
    /// the regressions, data-free random centroids (from `seed`) for k-means.
    pub fn initial(self, dim: usize, outputs: usize, seed: u64) -> Result<AnyModel, LearningError> {
        Ok(match self {
            ModelFamily::LogisticRegression => AnyModel::Logistic(LogisticRegression::zeros(dim)),
            ModelFamily::LinearRegression => AnyModel::Linear(LinearRegression::zeros(dim)),
            ModelFamily::SoftmaxRegression => {
                AnyModel::Softmax(SoftmaxRegression::zeros(dim, outputs)?)
            }
            ModelFamily::KMeans => AnyModel::KMeans(kmeans_init(outputs, dim, seed)?),
        })
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A model of any family.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyModel {
    /// Binary logistic regression.
    Logistic(LogisticRegression),
    /// Linear regression.
    Linear(LinearRegression),
    /// Softmax regression.
    Softmax(SoftmaxRegression),
    /// k-means centroids.
    KMeans(KMeans),
}

impl AnyModel {
    /// A model of `family` from its flat parameters and number of outputs
    /// (classes or clusters; ignored by the single-output families).
    pub fn from_parts(
        family: ModelFamily,
        params: Array1<f64>,
        outputs: usize,
    ) -> Result<AnyModel, LearningError> {
        Ok(match family {
            ModelFamily::LogisticRegression => {
                AnyModel::Logistic(LogisticRegression::from_params(params)?)
            }
            ModelFamily::LinearRegression => {
                AnyModel::Linear(LinearRegression::from_params(params)?)
            }
            ModelFamily::SoftmaxRegression => {
                AnyModel::Softmax(SoftmaxRegression::from_params(params, outputs)?)
            }
            ModelFamily::KMeans => AnyModel::KMeans(KMeans::from_params(params, outputs)?),
        })
    }

    /// The family.
    pub fn family(&self) -> ModelFamily {
        match self {
            AnyModel::Logistic(_) => ModelFamily::LogisticRegression,
            AnyModel::Linear(_) => ModelFamily::LinearRegression,
            AnyModel::Softmax(_) => ModelFamily::SoftmaxRegression,
            AnyModel::KMeans(_) => ModelFamily::KMeans,
        }
    }

    /// The flat parameters.
    pub fn params(&self) -> &Array1<f64> {
        match self {
            AnyModel::Logistic(m) => m.params(),
            AnyModel::Linear(m) => m.params(),
            AnyModel::Softmax(m) => m.params(),
            AnyModel::KMeans(m) => m.params(),
        }
    }

    /// Classes or clusters; 1 for the single-output families.
    pub fn outputs(&self) -> usize {
        match self {
            AnyModel::Softmax(m) => m.classes(),
            AnyModel::KMeans(m) => m.clusters(),
            _ => 1,
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        match self {
            AnyModel::Logistic(m) => m.dim(),
            AnyModel::Linear(m) => m.dim(),
            AnyModel::Softmax(m) => m.dim(),
            AnyModel::KMeans(m) => m.dim(),
        }
    }

    /// The training loss of a supervised family (`None` for k-means).
    pub fn objective(&self) -> Option<Box<dyn Objective>> {
        match self {
            AnyModel::Logistic(m) => Some(Box::new(LogLoss { dim: m.dim() })),
            AnyModel::Linear(m) => Some(Box::new(m.objective())),
            AnyModel::Softmax(m) => Some(Box::new(m.objective())),
            AnyModel::KMeans(_) => None,
        }
    }

    /// Evaluates on a test split: `y` holds the labels of a supervised family
    /// (ignored by k-means, which reports its inertia).
    pub fn evaluate(
        &self,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError> {
        let labels = || y.ok_or(LearningError::EmptyInput);
        Ok(match self {
            AnyModel::Logistic(m) => Evaluation::Binary(EvalSummary::from_predictions(
                m.predict_proba(x)?.view(),
                labels()?,
            )?),
            AnyModel::Linear(m) => Evaluation::Regression(RegressionSummary::from_predictions(
                m.predict(x)?.view(),
                labels()?,
            )?),
            AnyModel::Softmax(m) => Evaluation::Multiclass(MulticlassSummary::from_predictions(
                m.predict_proba(x)?.view(),
                labels()?,
            )?),
            AnyModel::KMeans(m) => {
                let assigned = m.assign(x)?;
                let mut counts = vec![0u64; m.clusters()];
                for (cluster, _) in &assigned {
                    counts[*cluster] += 1;
                }
                Evaluation::Clustering(ClusteringSummary {
                    examples: assigned.len() as u64,
                    inertia: assigned.iter().map(|(_, d)| d).sum(),
                    counts,
                })
            }
        })
    }
}

/// Pooled inertia and segment sizes of a k-means model on test rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringSummary {
    /// Rows assigned.
    pub examples: u64,
    /// Sum over the rows of the squared distance to the nearest centroid.
    pub inertia: f64,
    /// Rows assigned to each cluster.
    pub counts: Vec<u64>,
}

impl ClusteringSummary {
    /// Checks a summary received from the network.
    pub fn check(&self) -> Result<(), LearningError> {
        if !(self.inertia.is_finite() && self.inertia >= 0.0) {
            return Err(LearningError::InconsistentSummary {
                reason: format!(
                    "inertia is {} (expected finite and non-negative)",
                    self.inertia
                ),
            });
        }
        if self.examples == 0 && self.inertia != 0.0 {
            return Err(LearningError::InconsistentSummary {
                reason: "inertia is non-zero but no rows are counted".into(),
            });
        }
        let counted: u128 = self.counts.iter().map(|&c| u128::from(c)).sum();
        if counted != u128::from(self.examples) {
            return Err(LearningError::InconsistentSummary {
                reason: format!(
                    "cluster sizes add up to {counted}, not to the {} rows reported",
                    self.examples
                ),
            });
        }
        Ok(())
    }
}

/// One client's (or several merged) evaluation of a model of any family.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// Logistic regression: confusion counts, log loss, score histograms.
    Binary(EvalSummary),
    /// Linear regression: sums for MSE, MAE and R².
    Regression(RegressionSummary),
    /// Softmax regression: confusion matrix and log loss.
    Multiclass(MulticlassSummary),
    /// k-means: rows and inertia.
    Clustering(ClusteringSummary),
}

impl Evaluation {
    /// The family this evaluation belongs to.
    pub fn family(&self) -> ModelFamily {
        match self {
            Evaluation::Binary(_) => ModelFamily::LogisticRegression,
            Evaluation::Regression(_) => ModelFamily::LinearRegression,
            Evaluation::Multiclass(_) => ModelFamily::SoftmaxRegression,
            Evaluation::Clustering(_) => ModelFamily::KMeans,
        }
    }

    /// Number of examples evaluated.
    pub fn examples(&self) -> u64 {
        match self {
            Evaluation::Binary(s) => s.examples,
            Evaluation::Regression(s) => s.examples,
            Evaluation::Multiclass(s) => s.examples,
            Evaluation::Clustering(s) => s.examples,
        }
    }

    /// The neutral element of [`Evaluation::merge`] for `family` (`outputs`:
    /// classes of a softmax model).
    pub fn empty(family: ModelFamily, outputs: usize) -> Result<Evaluation, LearningError> {
        Ok(match family {
            ModelFamily::LogisticRegression => Evaluation::Binary(EvalSummary::empty()),
            ModelFamily::LinearRegression => Evaluation::Regression(RegressionSummary::empty()),
            ModelFamily::SoftmaxRegression => {
                Evaluation::Multiclass(MulticlassSummary::empty(outputs)?)
            }
            ModelFamily::KMeans => Evaluation::Clustering(ClusteringSummary {
                examples: 0,
                inertia: 0.0,
                counts: vec![0; outputs],
            }),
        })
    }

    /// Adds `other` into `self`; a different family or a bad summary is refused
    /// without changing `self`.
    pub fn merge(&mut self, other: &Evaluation) -> Result<(), LearningError> {
        match (self, other) {
            (Evaluation::Binary(a), Evaluation::Binary(b)) => a.merge(b),
            (Evaluation::Regression(a), Evaluation::Regression(b)) => a.merge(b),
            (Evaluation::Multiclass(a), Evaluation::Multiclass(b)) => a.merge(b),
            (Evaluation::Clustering(a), Evaluation::Clustering(b)) => {
                b.check()?;
                if b.counts.len() != a.counts.len() {
                    return Err(LearningError::InconsistentSummary {
                        reason: format!(
                            "{} cluster sizes for a model of {} clusters",
                            b.counts.len(),
                            a.counts.len()
                        ),
                    });
                }
                for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                    *x = x.saturating_add(*y);
                }
                a.examples = a.examples.checked_add(b.examples).ok_or_else(|| {
                    LearningError::InconsistentSummary {
                        reason: "pooled row count overflows".into(),
                    }
                })?;
                a.inertia += b.inertia;
                Ok(())
            }
            (a, b) => Err(LearningError::InconsistentSummary {
                reason: format!(
                    "a {} evaluation cannot be pooled with a {} one",
                    b.family(),
                    a.family()
                ),
            }),
        }
    }

    /// The metrics of a non-binary family (`None` for logistic regression, whose
    /// metrics are [`EvalSummary::metrics`]).
    pub fn quality(&self) -> Option<Quality> {
        match self {
            Evaluation::Binary(_) => None,
            Evaluation::Regression(s) => Some(Quality::Regression(s.metrics())),
            Evaluation::Multiclass(s) => Some(Quality::Multiclass(s.metrics())),
            Evaluation::Clustering(s) => Some(Quality::Clustering {
                examples: s.examples,
                inertia: s.inertia,
                counts: s.counts.clone(),
                mean_inertia: if s.examples == 0 {
                    0.0
                } else {
                    s.inertia / s.examples as f64
                },
            }),
        }
    }
}

/// Pooled metrics of a linear, softmax or k-means model after a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Quality {
    /// Linear regression: MSE, RMSE, MAE, R².
    Regression(RegressionMetrics),
    /// Softmax regression: accuracy, log loss, macro precision / recall / F1.
    Multiclass(MulticlassMetrics),
    /// k-means: pooled inertia of the test rows.
    Clustering {
        /// Rows assigned.
        examples: u64,
        /// Sum of squared distances to the nearest centroid.
        inertia: f64,
        /// `inertia / examples`.
        mean_inertia: f64,
        /// Rows per cluster (segment sizes).
        counts: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn names_round_trip() {
        for f in ModelFamily::ALL {
            assert_eq!(ModelFamily::parse(f.name()), Some(f));
        }
        assert_eq!(ModelFamily::parse("svm"), None);
        assert_eq!(
            ModelFamily::names(),
            "logistic_regression, linear_regression, softmax_regression, kmeans"
        );
    }

    #[test]
    fn initial_shapes() {
        let m = ModelFamily::SoftmaxRegression.initial(3, 4, 0).unwrap();
        assert_eq!((m.params().len(), m.outputs(), m.dim()), (16, 4, 3));
        let k = ModelFamily::KMeans.initial(3, 5, 7).unwrap();
        assert_eq!((k.params().len(), k.outputs(), k.dim()), (15, 5, 3));
        assert_eq!(k, ModelFamily::KMeans.initial(3, 5, 7).unwrap());
        let l = ModelFamily::LinearRegression.initial(3, 1, 0).unwrap();
        assert_eq!(l.params().to_vec(), vec![0.0; 4]);
        assert!(k.objective().is_none());
        assert_eq!(l.objective().unwrap().param_count(), 4);
    }

    #[test]
    fn kmeans_evaluation_is_the_inertia() {
        let m = AnyModel::from_parts(ModelFamily::KMeans, array![0.0, 0.0, 10.0, 10.0], 2).unwrap();
        let x = array![[1.0, 0.0], [10.0, 12.0], [0.0, -2.0]];
        let Evaluation::Clustering(s) = m.evaluate(x.view(), None).unwrap() else {
            panic!("not a clustering evaluation")
        };
        assert_eq!(s.examples, 3);
        assert_eq!(s.counts, vec![2, 1]);
        assert!((s.inertia - (1.0 + 4.0 + 4.0)).abs() < 1e-12);
    }

    #[test]
    fn linear_evaluation_pools_exactly() {
        let m = AnyModel::from_parts(ModelFamily::LinearRegression, array![1.0, 2.0], 1).unwrap();
        let x = array![[0.0], [1.0], [2.0], [3.0]];
        let y = array![1.0, 3.0, 4.0, 8.0];
        let whole = m.evaluate(x.view(), Some(y.view())).unwrap();
        let mut a = m
            .evaluate(
                x.slice_axis(ndarray::Axis(0), (0..2).into()),
                Some(y.slice_axis(ndarray::Axis(0), (0..2).into())),
            )
            .unwrap();
        let b = m
            .evaluate(
                x.slice_axis(ndarray::Axis(0), (2..4).into()),
                Some(y.slice_axis(ndarray::Axis(0), (2..4).into())),
            )
            .unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, whole);
        let Some(Quality::Regression(q)) = whole.quality() else {
            panic!("no regression metrics")
        };
        // predictions 1, 3, 5, 7: errors 0, 0, 1, -1
        assert!((q.mse - 0.5).abs() < 1e-12);
        assert!((q.mae - 0.5).abs() < 1e-12);
    }

    #[test]
    fn families_do_not_mix() {
        let mut a = Evaluation::empty(ModelFamily::KMeans, 3).unwrap();
        let b = Evaluation::empty(ModelFamily::LinearRegression, 1).unwrap();
        let err = a.merge(&b).unwrap_err().to_string();
        assert!(
            err.contains("linear_regression evaluation cannot be pooled with a kmeans"),
            "{err}"
        );
        let bad = Evaluation::Clustering(ClusteringSummary {
            examples: 2,
            inertia: f64::NAN,
            counts: vec![1, 1, 0],
        });
        assert!(a.merge(&bad).is_err());
        let bad = Evaluation::Clustering(ClusteringSummary {
            examples: 2,
            inertia: 1.0,
            counts: vec![1, 0, 0],
        });
        assert!(a.merge(&bad).is_err());
        assert_eq!(a.examples(), 0);
    }

    #[test]
    fn supervised_evaluation_needs_labels() {
        let m = ModelFamily::LinearRegression.initial(1, 1, 0).unwrap();
        assert!(m.evaluate(array![[1.0]].view(), None).is_err());
    }
}
