//! Multi-class (softmax) logistic regression on encoded feature vectors.
//!
//! With `k` classes and `dim` features the parameters are one flat vector of
//! length `k * (dim + 1)`, the `k × (dim + 1)` coefficient matrix in row-major
//! order: `[class 0: intercept, w_1..w_dim; class 1: intercept, w..; ...]`. The
//! model is `P(y = c | x) = softmax(z)_c` with `z_c = intercept_c + w_c · x`.
//!
//! Labels are class indices `0..k` stored as `f64` (`0.0, 1.0, 2.0, ...`) in the
//! usual `ArrayView1<f64>` label vector. The parameterisation has one redundant
//! direction (adding the same vector to every class changes nothing); plain SGD
//! from zeros never moves along it, and an L2 penalty removes it.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};

use crate::error::LearningError;
use crate::model::{LOG_LOSS_EPS, check_features, check_rows_and_features};
use crate::objective::{Batch, Objective};

/// A softmax regression model with finite parameters over `classes >= 2` classes.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxRegression {
    params: Array1<f64>,
    classes: usize,
}

fn check_classes(classes: usize) -> Result<(), LearningError> {
    if classes < 2 {
        return Err(LearningError::InvalidParam {
            field: "classes",
            value: classes.to_string(),
            requirement: "at least 2",
        });
    }
    Ok(())
}

impl SoftmaxRegression {
    /// The all-zero model over `dim` features and `classes` classes: predicts the
    /// uniform distribution. `classes` must be at least 2.
    pub fn zeros(dim: usize, classes: usize) -> Result<Self, LearningError> {
        check_classes(classes)?;
        Ok(SoftmaxRegression {
            params: Array1::zeros(classes * (dim + 1)),
            classes,
        })
    }

    /// A model from the flat row-major `classes × (dim + 1)` coefficients.
    ///
    /// Rejects fewer than 2 classes, a length that is not a positive multiple of
    /// `classes` ([`LearningError::ParamRows`]) and any NaN or infinite entry.
    pub fn from_params(params: Array1<f64>, classes: usize) -> Result<Self, LearningError> {
        check_classes(classes)?;
        crate::model::check_param_rows(&params, classes, "classes")?;
        Ok(SoftmaxRegression { params, classes })
    }

    /// All parameters, flat, row-major.
    pub fn params(&self) -> &Array1<f64> {
        &self.params
    }

    /// Consumes the model and returns its flat parameters.
    pub fn into_params(self) -> Array1<f64> {
        self.params
    }

    /// Number of classes `k`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.params.len() / self.classes - 1
    }

    /// The coefficients as a `classes × (dim + 1)` matrix (column 0: intercepts),
    /// copied out of the flat parameters.
    pub fn coefficients(&self) -> Array2<f64> {
        let width = self.dim() + 1;
        Array2::from_shape_fn((self.classes, width), |(c, j)| self.params[c * width + j])
    }

    /// The intercept of each class.
    pub fn intercepts(&self) -> ArrayView1<'_, f64> {
        self.params
            .slice_axis(Axis(0), Slice::new(0, None, (self.dim() + 1) as isize))
    }

    /// The `classes × dim` weight matrix (row `c`: the weights of class `c`),
    /// copied out of the flat parameters.
    pub fn weights(&self) -> Array2<f64> {
        let width = self.dim() + 1;
        Array2::from_shape_fn((self.classes, self.dim()), |(c, j)| {
            self.params[c * width + j + 1]
        })
    }

    /// The training objective of this model's shape.
    pub fn objective(&self) -> SoftmaxCrossEntropy {
        SoftmaxCrossEntropy {
            dim: self.dim(),
            classes: self.classes,
        }
    }

    /// The model moved by `delta` (e.g. an aggregate): `params + delta`.
    pub fn apply_delta(&self, delta: ArrayView1<f64>) -> Result<Self, LearningError> {
        if delta.len() != self.params.len() {
            return Err(LearningError::ParamCount {
                expected: self.params.len(),
                got: delta.len(),
            });
        }
        SoftmaxRegression::from_params(&self.params + &delta, self.classes)
    }

    /// Class scores `z_c = intercept_c + w_c · x`, `rows × classes`.
    pub fn logits(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, LearningError> {
        check_features(x, self.dim())?;
        Ok(logits(self.params.view(), self.classes, x))
    }

    /// `P(y = c | x)`, `rows × classes`, each row a probability distribution,
    /// computed with the max-shifted softmax (no overflow for large scores).
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, LearningError> {
        let mut z = self.logits(x)?;
        z.rows_mut().into_iter().for_each(softmax_in_place);
        Ok(z)
    }

    /// The most probable class of each row (the lowest index on ties).
    pub fn predict(&self, x: ArrayView2<f64>) -> Result<Vec<usize>, LearningError> {
        Ok(self.logits(x)?.rows().into_iter().map(argmax).collect())
    }

    /// Per-feature contributions `w_{c,i} * x_i` of one row to the score of class
    /// `class` (intercept not included), for explanations.
    pub fn contributions(
        &self,
        x_row: ArrayView1<f64>,
        class: usize,
    ) -> Result<Array1<f64>, LearningError> {
        crate::model::check_row(x_row, self.dim())?;
        if class >= self.classes {
            return Err(LearningError::InvalidClassLabel {
                index: 0,
                value: class as f64,
                classes: self.classes,
            });
        }
        let width = self.dim() + 1;
        let w = self
            .params
            .slice_axis(Axis(0), Slice::from(class * width + 1..(class + 1) * width));
        Ok(&w * &x_row)
    }
}

/// `x · Wᵀ + b`, `rows × classes`, for checked shapes (`params` of length
/// `classes * (x.ncols() + 1)`, any memory layout).
fn logits(params: ArrayView1<f64>, classes: usize, x: ArrayView2<f64>) -> Array2<f64> {
    let width = x.ncols() + 1;
    let weights = Array2::from_shape_fn((x.ncols(), classes), |(j, c)| params[c * width + j + 1]);
    let intercepts = Array1::from_shape_fn(classes, |c| params[c * width]);
    let mut z = x.dot(&weights);
    z += &intercepts;
    z
}

/// Replaces scores by their softmax, shifting by the maximum first.
pub(crate) fn softmax_in_place(mut z: ndarray::ArrayViewMut1<f64>) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    z.mapv_inplace(|v| (v - max).exp());
    let total = z.sum();
    z /= total;
}

/// Index of the largest value, the lowest index on ties.
pub(crate) fn argmax(v: ArrayView1<f64>) -> usize {
    let mut best = 0;
    for (i, &value) in v.iter().enumerate() {
        if value > v[best] {
            best = i;
        }
    }
    best
}

/// Checks that every label is a class index in `0..classes`.
pub(crate) fn check_class_labels(y: ArrayView1<f64>, classes: usize) -> Result<(), LearningError> {
    match y
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.fract() == 0.0 && **v >= 0.0 && **v < classes as f64))
    {
        Some((index, &value)) => Err(LearningError::InvalidClassLabel {
            index,
            value,
            classes,
        }),
        None => Ok(()),
    }
}

/// The cross-entropy `-ln P(y | x)` of softmax regression (probabilities clamped
/// at `1e-15` as in the binary log loss), flat row-major parameters
/// `classes × (dim + 1)`, labels `0..classes`.
///
/// Per-example gradient, block of class `c`: `(p_c - [y = c]) [1, x]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxCrossEntropy {
    /// Number of features.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

impl SoftmaxCrossEntropy {
    fn probabilities(&self, params: ArrayView1<f64>, x: ArrayView2<f64>) -> Array2<f64> {
        let mut p = logits(params, self.classes, x);
        p.rows_mut().into_iter().for_each(softmax_in_place);
        p
    }

    /// `p - onehot(y)`, `rows × classes`: the residuals of every class.
    fn residuals(&self, Batch { params, x, y }: Batch<'_>) -> Array2<f64> {
        let mut r = self.probabilities(params, x);
        for (mut row, &label) in r.rows_mut().into_iter().zip(&y) {
            row[label as usize] -= 1.0;
        }
        r
    }
}

impl Objective for SoftmaxCrossEntropy {
    fn param_count(&self) -> usize {
        self.classes * (self.dim + 1)
    }

    fn is_intercept(&self, index: usize) -> bool {
        index.is_multiple_of(self.dim + 1)
    }

    /// Also checks the class count (at least 2) first.
    fn check_examples(&self, x: ArrayView2<f64>, y: ArrayView1<f64>) -> Result<(), LearningError> {
        check_classes(self.classes)?;
        check_rows_and_features(x, y, self.dim)?;
        check_class_labels(y, self.classes)
    }

    fn checked_gradients(&self, batch: Batch<'_>) -> Array2<f64> {
        let r = self.residuals(batch);
        let width = self.dim + 1;
        let mut grads = Array2::zeros((batch.x.nrows(), self.param_count()));
        for c in 0..self.classes {
            crate::objective::scaled_design_rows(
                batch.x,
                r.column(c),
                grads.slice_axis_mut(Axis(1), Slice::from(c * width..(c + 1) * width)),
            );
        }
        grads
    }

    fn checked_loss(&self, Batch { params, x, y }: Batch<'_>) -> f64 {
        let p = self.probabilities(params, x);
        let total: f64 = p
            .rows()
            .into_iter()
            .zip(&y)
            .map(|(row, &label)| class_log_loss(row[label as usize]))
            .sum();
        total / x.nrows() as f64
    }

    fn checked_mean_gradient(&self, batch: Batch<'_>) -> Array1<f64> {
        let (x, n) = (batch.x, batch.x.nrows());
        let r = self.residuals(batch);
        // k × (dim + 1): column 0 the residual sums, the rest rᵀ x
        let mut grad = Array2::zeros((self.classes, self.dim + 1));
        grad.column_mut(0).assign(&r.sum_axis(Axis(0)));
        grad.slice_axis_mut(Axis(1), Slice::from(1..))
            .assign(&r.t().dot(&x));
        grad /= n as f64;
        grad.into_iter().collect()
    }
}

/// `-ln p` with `p` clamped to `[1e-15, 1]`.
pub(crate) fn class_log_loss(p: f64) -> f64 {
    -p.clamp(LOG_LOSS_EPS, 1.0).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiclass_metrics::MulticlassSummary;
    use crate::testutil::assert_close;
    use crate::train::{test_params, train_seeded};
    use ndarray::array;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Three separable blobs around (-3, 0), (3, 0), (0, 4), labels 0, 1, 2.
    pub(crate) fn blobs(n_per: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres = [(-3.0, 0.0), (3.0, 0.0), (0.0, 4.0)];
        let n = 3 * n_per;
        let mut x = Array2::zeros((n, 2));
        let mut y = Array1::zeros(n);
        for i in 0..n {
            let c = i % 3;
            x[[i, 0]] = centres[c].0 + rng.random_range(-1.0..1.0);
            x[[i, 1]] = centres[c].1 + rng.random_range(-1.0..1.0);
            y[i] = c as f64;
        }
        (x, y)
    }

    #[test]
    fn layout_and_shape_errors() {
        let m =
            SoftmaxRegression::from_params(array![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 3)
                .unwrap();
        assert_eq!((m.classes(), m.dim()), (3, 2));
        assert_eq!(m.intercepts(), array![1.0, 4.0, 7.0]);
        assert_eq!(m.weights(), array![[2.0, 3.0], [5.0, 6.0], [8.0, 9.0]]);
        assert_eq!(m.objective().param_count(), 9);
        let o = m.objective();
        let intercepts: Vec<usize> = (0..9).filter(|&i| o.is_intercept(i)).collect();
        assert_eq!(intercepts, [0, 3, 6]);

        let err = SoftmaxRegression::from_params(array![1.0, 2.0, 3.0, 4.0], 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "got 4 parameters, which is not a positive multiple of 3 classes"
        );
        let err = SoftmaxRegression::zeros(2, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid training parameter `classes` = 1 (must be at least 2)"
        );
        assert_eq!(
            SoftmaxRegression::from_params(array![0.0, f64::NAN], 2)
                .unwrap_err()
                .to_string(),
            "model parameter 1 is not finite: NaN"
        );
        let err = o
            .loss(
                m.params().view(),
                array![[0.0, 0.0], [0.0, 0.0]].view(),
                array![2.0, 3.0].view(),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "label at row 1 is 3 (expected a class index in 0..3)"
        );
        assert!(
            check_class_labels(array![0.5].view(), 3).is_err()
                && check_class_labels(array![-1.0].view(), 3).is_err()
                && check_class_labels(array![f64::NAN].view(), 3).is_err()
        );
        assert_eq!(
            m.contributions(array![1.0, -1.0].view(), 1).unwrap(),
            array![5.0, -6.0]
        );
        assert!(m.contributions(array![1.0, -1.0].view(), 3).is_err());
    }

    /// Two classes, one feature, params [class 0: 0, 1; class 1: 0, -1], x = 1:
    /// z = (1, -1), p = (e/(e+1/e), ...) = (σ(2), σ(-2)).
    #[test]
    fn probabilities_are_stable_and_by_hand() {
        let m = SoftmaxRegression::from_params(array![0.0, 1.0, 0.0, -1.0], 2).unwrap();
        let p = m.predict_proba(array![[1.0]].view()).unwrap();
        let s2 = crate::model::sigmoid(2.0);
        assert_close(p.row(0), &array![s2, 1.0 - s2], 1e-15);
        // huge scores do not overflow
        let big = SoftmaxRegression::from_params(array![1000.0, 0.0, 999.0, 0.0, -1000.0, 0.0], 3)
            .unwrap();
        let p = big.predict_proba(array![[0.0]].view()).unwrap();
        let e = (-1.0f64).exp();
        assert_close(
            p.row(0),
            &array![1.0 / (1.0 + e), e / (1.0 + e), 0.0],
            1e-15,
        );
        assert_eq!(big.predict(array![[0.0]].view()).unwrap(), vec![0]);
        // ties go to the lowest index
        let zero = SoftmaxRegression::zeros(1, 3).unwrap();
        assert_eq!(zero.predict(array![[5.0]].view()).unwrap(), vec![0]);
        assert_close(
            zero.predict_proba(array![[5.0]].view()).unwrap().row(0),
            &array![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
            1e-15,
        );
    }

    /// 3 classes, 1 feature, zero params: p = 1/3 each.
    /// Row x = 2, y = 1: residuals (1/3, -2/3, 1/3), gradient blocks r_c [1, 2]:
    /// [1/3, 2/3, -2/3, -4/3, 1/3, 2/3]. Row x = -1, y = 0: residuals
    /// (-2/3, 1/3, 1/3): [-2/3, 2/3, 1/3, -1/3, 1/3, -1/3].
    /// Loss ln 3. One full-batch step with lr 0.3 moves by -0.3 × mean gradient
    /// [-1/6, 2/3, -1/6, -5/6, 1/3, 1/6].
    #[test]
    fn gradients_loss_and_one_step_by_hand() {
        let o = SoftmaxCrossEntropy { dim: 1, classes: 3 };
        let p = Array1::zeros(6);
        let x = array![[2.0], [-1.0]];
        let y = array![1.0, 0.0];
        let t = 1.0 / 3.0;
        let g = o
            .per_example_gradients(p.view(), x.view(), y.view())
            .unwrap();
        assert_close(
            g.row(0),
            &array![t, 2.0 * t, -2.0 * t, -4.0 * t, t, 2.0 * t],
            1e-15,
        );
        assert_close(g.row(1), &array![-2.0 * t, 2.0 * t, t, -t, t, -t], 1e-15);
        let mean_expected = array![
            -1.0 / 6.0,
            2.0 / 3.0,
            -1.0 / 6.0,
            -5.0 / 6.0,
            1.0 / 3.0,
            1.0 / 6.0
        ];
        let mean = o.mean_gradient(p.view(), x.view(), y.view()).unwrap();
        assert_close(&mean, &mean_expected, 1e-15);
        assert_close(&mean, &g.mean_axis(Axis(0)).unwrap(), 1e-15);
        let loss = o.loss(p.view(), x.view(), y.view()).unwrap();
        assert!((loss - 3.0f64.ln()).abs() < 1e-15);

        let params = test_params(1, 2, 0.3, 0.0);
        let out = train_seeded(&o, p.view(), x.view(), y.view(), &params, 0);
        assert_close(&out.params, &(&mean_expected * -0.3), 1e-15);
        assert!(out.mean_loss < 3.0f64.ln());
    }

    /// Finite differences agree with the analytic mean gradient at a random point.
    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs(4, 3);
        let o = SoftmaxCrossEntropy { dim: 2, classes: 3 };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let p: Array1<f64> = (0..9).map(|_| rng.random_range(-0.5..0.5)).collect();
        let g = o.mean_gradient(p.view(), x.view(), y.view()).unwrap();
        let h = 1e-6;
        for i in 0..9 {
            let mut up = p.clone();
            up[i] += h;
            let mut down = p.clone();
            down[i] -= h;
            let fd = (o.loss(up.view(), x.view(), y.view()).unwrap()
                - o.loss(down.view(), x.view(), y.view()).unwrap())
                / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-6, "param {i}: {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn learns_three_separable_blobs() {
        let (x, y) = blobs(200, 1);
        let start = SoftmaxRegression::zeros(2, 3).unwrap();
        let params = test_params(10, 16, 0.1, 0.001);
        let o = start.objective();
        let out = train_seeded(&o, start.params().view(), x.view(), y.view(), &params, 2);
        let m = SoftmaxRegression::from_params(out.params, 3).unwrap();
        let (xt, yt) = blobs(100, 9);
        let summary = MulticlassSummary::from_predictions(
            m.predict_proba(xt.view()).unwrap().view(),
            yt.view(),
        )
        .unwrap();
        let metrics = summary.metrics();
        assert_eq!(metrics.accuracy, 1.0, "{metrics:?}");
        assert_eq!(metrics.macro_f1, 1.0);
        assert!(metrics.log_loss < 0.1, "{metrics:?}");
        assert!(out.mean_loss < 0.1, "training loss {}", out.mean_loss);
    }
}
