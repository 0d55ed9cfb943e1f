//! Binary logistic regression on encoded feature vectors.
//!
//! The parameters are one vector of length `dim + 1` laid out as
//! `[intercept, w_1, .., w_dim]`; this is also the layout of training deltas and
//! of the parameters sent over the wire. The model is
//! `P(y = 1 | x) = sigmoid(intercept + w · x)`.

use ndarray::{Array1, ArrayView1, ArrayView2, Axis, Slice};

use crate::error::LearningError;

/// Probabilities are clamped to `[EPS, 1 - EPS]` before taking logarithms.
pub const LOG_LOSS_EPS: f64 = 1e-15;

/// The methods of a single-output model `$model` whose parameters are
/// `[intercept, w_1..w_dim]`, all finite (logistic and linear regression);
/// `$score` names what the weights add up to and `$zero` what the all-zero
/// model predicts (for the docs).
macro_rules! intercept_model_methods {
    ($model:ident, $score:literal, $zero:literal) => {
        #[doc = concat!("The all-zero model over `dim` features: predicts ", $zero, " everywhere.")]
        pub fn zeros(dim: usize) -> Self {
            $model {
                params: Array1::zeros(dim + 1),
            }
        }

        /// A model from `[intercept, w_1..w_dim]`; rejects an empty vector and
        /// any NaN or infinite entry.
        pub fn from_params(params: Array1<f64>) -> Result<Self, LearningError> {
            if params.is_empty() {
                return Err(LearningError::EmptyParams);
            }
            $crate::model::check_finite_params(params.view())?;
            Ok($model { params })
        }

        /// All parameters, `[intercept, w_1..w_dim]`.
        pub fn params(&self) -> &Array1<f64> {
            &self.params
        }

        /// Consumes the model and returns its parameters.
        pub fn into_params(self) -> Array1<f64> {
            self.params
        }

        /// Number of features (parameters minus the intercept).
        pub fn dim(&self) -> usize {
            self.params.len() - 1
        }

        /// The intercept (bias).
        pub fn intercept(&self) -> f64 {
            self.params[0]
        }

        /// The feature weights `w_1..w_dim`.
        pub fn weights(&self) -> ArrayView1<'_, f64> {
            self.params.slice_axis(Axis(0), Slice::from(1..))
        }

        /// The model moved by `delta` (e.g. an aggregate): `params + delta`.
        pub fn apply_delta(&self, delta: ArrayView1<f64>) -> Result<Self, LearningError> {
            if delta.len() != self.params.len() {
                return Err(LearningError::ParamCount {
                    expected: self.params.len(),
                    got: delta.len(),
                });
            }
            $model::from_params(&self.params + &delta)
        }

        #[doc = concat!("Per-feature contributions `w_i * x_i` of one row to ", $score, " (the")]
        /// intercept is not included), for explanations.
        pub fn contributions(&self, x_row: ArrayView1<f64>) -> Result<Array1<f64>, LearningError> {
            $crate::model::check_row(x_row, self.dim())?;
            Ok(&self.weights() * &x_row)
        }
    };
}
pub(crate) use intercept_model_methods;

/// A binary logistic regression model with finite parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    params: Array1<f64>,
}

impl LogisticRegression {
    intercept_model_methods!(LogisticRegression, "its logit", "0.5");

    /// A model from parameters the caller has already checked (non-empty, finite).
    pub(crate) fn from_validated_params(params: Array1<f64>) -> Self {
        debug_assert!(!params.is_empty() && params.iter().all(|v| v.is_finite()));
        LogisticRegression { params }
    }

    /// Linear scores `intercept + x · w`, one per row of `x`.
    ///
    /// `x` must have `dim()` columns and finite entries; zero rows give an empty
    /// result.
    pub fn logits(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, LearningError> {
        check_features(x, self.dim())?;
        Ok(self.logits_unchecked(x))
    }

    /// `P(y = 1 | x)` per row of `x`, with a sigmoid that neither overflows nor
    /// returns NaN for large logits.
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, LearningError> {
        Ok(self.logits(x)?.mapv_into(sigmoid))
    }

    /// Mean binary cross-entropy over the rows of `x`, with probabilities clamped
    /// to `[1e-15, 1 - 1e-15]`. Labels must be 0 or 1; at least one row is needed.
    pub fn log_loss(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<f64, LearningError> {
        check_examples(x, y, self.dim())?;
        if x.nrows() == 0 {
            return Err(LearningError::EmptyInput);
        }
        Ok(self.log_loss_unchecked(x, y))
    }

    /// Logits without input checks; `x` must have `dim()` columns.
    pub(crate) fn logits_unchecked(&self, x: ArrayView2<f64>) -> Array1<f64> {
        x.dot(&self.weights()) + self.intercept()
    }

    /// Mean log loss without input checks; `x` must be non-empty with `dim()` columns.
    pub(crate) fn log_loss_unchecked(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> f64 {
        let total: f64 = self
            .logits_unchecked(x)
            .iter()
            .zip(y)
            .map(|(&z, &label)| example_log_loss(sigmoid(z), label))
            .sum();
        total / x.nrows() as f64
    }
}

/// The logistic function, computed so that `exp` never overflows.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Log loss of one example: `-(y ln p + (1 - y) ln(1 - p))`, `p` clamped to
/// `[1e-15, 1 - 1e-15]`.
pub fn example_log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Checks flat parameters of `rows` equal rows (`what`: "classes",
/// "clusters"): a positive multiple of `rows` long, every entry finite.
pub(crate) fn check_param_rows(
    params: &Array1<f64>,
    rows: usize,
    what: &'static str,
) -> Result<(), LearningError> {
    if params.is_empty() || !params.len().is_multiple_of(rows) {
        return Err(LearningError::ParamRows {
            got: params.len(),
            rows,
            what,
        });
    }
    check_finite_params(params.view())
}

/// Checks that every parameter is finite ([`LearningError::NonFiniteParam`]
/// names the first one that is not).
pub(crate) fn check_finite_params(params: ArrayView1<f64>) -> Result<(), LearningError> {
    match params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(LearningError::NonFiniteParam { index, value }),
        None => Ok(()),
    }
}

/// Checks one feature row: `dim` finite values (reported as row 0).
pub(crate) fn check_row(x_row: ArrayView1<f64>, dim: usize) -> Result<(), LearningError> {
    check_features(x_row.insert_axis(Axis(0)), dim)
}

/// Checks that `x` has `dim` columns and only finite entries.
pub(crate) fn check_features(x: ArrayView2<f64>, dim: usize) -> Result<(), LearningError> {
    if x.ncols() != dim {
        return Err(LearningError::FeatureCount {
            expected: dim,
            got: x.ncols(),
        });
    }
    for (row, values) in x.axis_iter(Axis(0)).enumerate() {
        if let Some((column, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(LearningError::NonFiniteFeature { row, column, value });
        }
    }
    Ok(())
}

/// Checks that every label is exactly 0 or 1.
pub(crate) fn check_labels(y: ArrayView1<f64>) -> Result<(), LearningError> {
    match y.iter().enumerate().find(|(_, v)| **v != 0.0 && **v != 1.0) {
        Some((index, &value)) => Err(LearningError::InvalidLabel { index, value }),
        None => Ok(()),
    }
}

/// Checks a labelled set: `dim` finite columns, one 0/1 label per row.
pub(crate) fn check_examples(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    dim: usize,
) -> Result<(), LearningError> {
    check_rows_and_features(x, y, dim)?;
    check_labels(y)
}

/// Checks that there is one label per row and `dim` finite features per row
/// (the labels themselves are the caller's to check).
pub(crate) fn check_rows_and_features(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    dim: usize,
) -> Result<(), LearningError> {
    if x.nrows() != y.len() {
        return Err(LearningError::RowMismatch {
            rows: x.nrows(),
            labels: y.len(),
        });
    }
    check_features(x, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, array};

    fn model(params: Array1<f64>) -> LogisticRegression {
        LogisticRegression::from_params(params).unwrap()
    }

    #[test]
    fn zeros_predicts_one_half() {
        let m = LogisticRegression::zeros(3);
        assert_eq!(m.dim(), 3);
        assert_eq!(m.params().len(), 4);
        let p = m.predict_proba(Array2::ones((2, 3)).view()).unwrap();
        assert_eq!(p, array![0.5, 0.5]);
    }

    #[test]
    fn from_params_rejects_empty_and_non_finite() {
        assert_eq!(
            LogisticRegression::from_params(Array1::zeros(0)),
            Err(LearningError::EmptyParams)
        );
        let err = LogisticRegression::from_params(array![0.0, f64::NAN]).unwrap_err();
        assert!(matches!(
            err,
            LearningError::NonFiniteParam { index: 1, value } if value.is_nan()
        ));
        assert_eq!(
            LogisticRegression::from_params(array![0.0, 1.0, f64::INFINITY]),
            Err(LearningError::NonFiniteParam {
                index: 2,
                value: f64::INFINITY
            })
        );
        // An intercept-only model is valid.
        assert_eq!(LogisticRegression::zeros(0).dim(), 0);
    }

    #[test]
    fn logits_by_hand() {
        // intercept 1, weights (2, -1)
        let m = model(array![1.0, 2.0, -1.0]);
        let x = array![[1.0, 1.0], [0.0, 3.0], [0.5, 0.0]];
        let z = m.logits(x.view()).unwrap();
        assert_eq!(z, array![2.0, -2.0, 2.0]);
        let p = m.predict_proba(x.view()).unwrap();
        assert_abs_diff_eq!(p[0], 1.0 / (1.0 + (-2.0f64).exp()), epsilon = 1e-15);
        assert_abs_diff_eq!(p[1], 1.0 - p[0], epsilon = 1e-15);
        assert_eq!(m.intercept(), 1.0);
        assert_eq!(m.weights(), array![2.0, -1.0]);
    }

    #[test]
    fn logits_of_no_rows_is_empty() {
        let m = LogisticRegression::zeros(2);
        assert_eq!(m.logits(Array2::zeros((0, 2)).view()).unwrap().len(), 0);
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!(sigmoid(-745.0) >= 0.0);
        assert_abs_diff_eq!(sigmoid(-40.0), (-40.0f64).exp(), epsilon = 1e-30);
        for z in [-30.0, -2.5, 0.1, 7.0] {
            assert_abs_diff_eq!(sigmoid(z) + sigmoid(-z), 1.0, epsilon = 1e-15);
        }
    }

    #[test]
    fn shape_errors_name_both_sizes() {
        let m = LogisticRegression::zeros(2);
        assert_eq!(
            m.logits(Array2::zeros((1, 3)).view()),
            Err(LearningError::FeatureCount {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            m.log_loss(Array2::zeros((2, 2)).view(), array![1.0].view()),
            Err(LearningError::RowMismatch { rows: 2, labels: 1 })
        );
        assert_eq!(
            m.contributions(array![1.0].view()),
            Err(LearningError::FeatureCount {
                expected: 2,
                got: 1
            })
        );
        let err = m.logits(array![[1.0, f64::NAN]].view()).unwrap_err();
        assert!(matches!(
            err,
            LearningError::NonFiniteFeature {
                row: 0,
                column: 1,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "feature value at row 0, column 1 is not finite: NaN"
        );
    }

    #[test]
    fn contributions_are_elementwise_products() {
        let m = model(array![5.0, 2.0, -1.0, 0.5]);
        let c = m.contributions(array![3.0, 4.0, -2.0].view()).unwrap();
        assert_eq!(c, array![6.0, -4.0, -1.0]);
        // contributions + intercept = logit
        let z = m.logits(array![[3.0, 4.0, -2.0]].view()).unwrap()[0];
        assert_abs_diff_eq!(c.sum() + m.intercept(), z, epsilon = 1e-12);
    }

    #[test]
    fn log_loss_by_hand() {
        let m = LogisticRegression::zeros(1);
        let x = array![[1.0], [2.0]];
        let loss = m.log_loss(x.view(), array![1.0, 0.0].view()).unwrap();
        assert_abs_diff_eq!(loss, std::f64::consts::LN_2, epsilon = 1e-15);

        // intercept ln 3 => p = 0.75 for every row
        let m = model(array![3.0f64.ln(), 0.0]);
        let loss = m.log_loss(x.view(), array![1.0, 0.0].view()).unwrap();
        let expected = -(0.75f64.ln() + 0.25f64.ln()) / 2.0;
        assert_abs_diff_eq!(loss, expected, epsilon = 1e-12);
    }

    #[test]
    fn log_loss_clamps_confident_mistakes() {
        let m = model(array![1000.0, 0.0]);
        let loss = m
            .log_loss(array![[0.0]].view(), array![0.0].view())
            .unwrap();
        assert_abs_diff_eq!(loss, -(1e-15f64).ln(), epsilon = 1e-3);
        assert!(loss.is_finite());
    }

    #[test]
    fn log_loss_rejects_empty_and_bad_labels() {
        let m = LogisticRegression::zeros(1);
        assert_eq!(
            m.log_loss(Array2::zeros((0, 1)).view(), Array1::zeros(0).view()),
            Err(LearningError::EmptyInput)
        );
        assert_eq!(
            m.log_loss(array![[0.0]].view(), array![0.5].view()),
            Err(LearningError::InvalidLabel {
                index: 0,
                value: 0.5
            })
        );
    }

    #[test]
    fn apply_delta_adds_and_checks_length() {
        let m = model(array![1.0, 2.0]);
        let moved = m.apply_delta(array![0.5, -1.0].view()).unwrap();
        assert_eq!(moved.params(), &array![1.5, 1.0]);
        assert_eq!(
            m.apply_delta(array![0.5].view()),
            Err(LearningError::ParamCount {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn autotraits() {
        fn has_autotraits<T: Send + Sync + Sized + Unpin>() {}
        has_autotraits::<LogisticRegression>();
        has_autotraits::<LearningError>();
    }
}
