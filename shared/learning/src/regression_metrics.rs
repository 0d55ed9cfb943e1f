//! Federated evaluation of regression models that pools exactly.
//!
//! Each client reports a [`RegressionSummary`] of its test split: the count, the
//! sums `Σy` and `Σy²` of the targets, and the sums of squared and absolute
//! errors. These are sums, so merging summaries gives the summary of the pooled
//! data, and [`RegressionSummary::metrics`] computes the MSE, RMSE, MAE and R² of
//! the pooled data: R² = 1 − SSE/SST with `SST = Σy² − (Σy)²/n` over *all*
//! clients (not an average of per-client R², which would measure each client
//! against its own mean).
//!
//! `SST` from raw sums loses precision when the targets have a large common
//! offset compared with their spread (`Σy²` and `(Σy)²/n` nearly cancel):
//! standardise or centre the target with federation-wide statistics first.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::LearningError;
use crate::linear::check_finite_labels;

/// Additive evaluation statistics of a regression model on one client (or
/// several, merged).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionSummary {
    /// Number of scored examples.
    pub examples: u64,
    /// `Σ y`.
    pub sum_y: f64,
    /// `Σ y²`.
    pub sum_y2: f64,
    /// Sum of squared errors `Σ (ŷ − y)²`.
    pub sse: f64,
    /// Sum of absolute errors `Σ |ŷ − y|`.
    pub sae: f64,
}

/// Metrics derived from a [`RegressionSummary`].
///
/// With no examples the errors are 0 (as for [`crate::Metrics`]); `r2` is `None`
/// when it is undefined: no examples, or targets without spread (`SST` not above
/// `1e-12 · Σy²`, i.e. zero up to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Number of scored examples.
    pub examples: u64,
    /// Mean squared error `SSE / n`.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error `SAE / n`.
    pub mae: f64,
    /// Coefficient of determination `1 − SSE / SST` of the pooled data.
    pub r2: Option<f64>,
}

impl Default for RegressionSummary {
    fn default() -> Self {
        RegressionSummary::empty()
    }
}

impl RegressionSummary {
    /// A summary of no examples; the neutral element of [`RegressionSummary::merge`].
    pub fn empty() -> Self {
        RegressionSummary {
            examples: 0,
            sum_y: 0.0,
            sum_y2: 0.0,
            sse: 0.0,
            sae: 0.0,
        }
    }

    /// Summarises predictions against targets (equal lengths, all finite); no
    /// examples give [`RegressionSummary::empty`].
    pub fn from_predictions(
        predictions: ArrayView1<f64>,
        targets: ArrayView1<f64>,
    ) -> Result<Self, LearningError> {
        crate::metrics::check_counts(predictions.len(), targets.len())?;
        if let Some((index, &value)) = predictions.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(LearningError::NonFinitePrediction { index, value });
        }
        check_finite_labels(targets)?;
        let mut s = RegressionSummary::empty();
        for (&p, &y) in predictions.iter().zip(&targets) {
            let e = p - y;
            s.examples += 1;
            s.sum_y += y;
            s.sum_y2 += y * y;
            s.sse += e * e;
            s.sae += e.abs();
        }
        s.check()?;
        Ok(s)
    }

    /// Checks a summary (e.g. received from the network): all sums finite, `Σy²`,
    /// SSE and SAE non-negative, and nothing but zeros when `examples` is 0.
    pub fn check(&self) -> Result<(), LearningError> {
        for (name, value) in [
            ("sum_y", self.sum_y),
            ("sum_y2", self.sum_y2),
            ("sse", self.sse),
            ("sae", self.sae),
        ] {
            if !value.is_finite() {
                return Err(LearningError::InconsistentSummary {
                    reason: format!("{name} is {value} (expected finite)"),
                });
            }
            if name != "sum_y" && value < 0.0 {
                return Err(LearningError::InconsistentSummary {
                    reason: format!("{name} is {value} (expected non-negative)"),
                });
            }
            if self.examples == 0 && value != 0.0 {
                return Err(LearningError::InconsistentSummary {
                    reason: format!("{name} is {value} but examples is 0"),
                });
            }
        }
        Ok(())
    }

    /// Adds `other` into `self`, so that the result summarises both example sets.
    /// Fails without changing `self` if `other` is inconsistent
    /// ([`RegressionSummary::check`]) or the counts would overflow.
    pub fn merge(&mut self, other: &RegressionSummary) -> Result<(), LearningError> {
        other.check()?;
        let examples = self.examples.checked_add(other.examples).ok_or_else(|| {
            LearningError::InconsistentSummary {
                reason: format!(
                    "merging {} and {} examples overflows",
                    self.examples, other.examples
                ),
            }
        })?;
        let merged = RegressionSummary {
            examples,
            sum_y: self.sum_y + other.sum_y,
            sum_y2: self.sum_y2 + other.sum_y2,
            sse: self.sse + other.sse,
            sae: self.sae + other.sae,
        };
        merged.check()?;
        *self = merged;
        Ok(())
    }

    /// Total sum of squares about the pooled mean, `Σy² − (Σy)²/n` (0 with no
    /// examples, clamped at 0 against rounding).
    pub fn sst(&self) -> f64 {
        if self.examples == 0 {
            return 0.0;
        }
        (self.sum_y2 - self.sum_y * self.sum_y / self.examples as f64).max(0.0)
    }

    /// MSE, RMSE, MAE and R² of the pooled data; see [`RegressionMetrics`] for the
    /// conventions when they are undefined.
    pub fn metrics(&self) -> RegressionMetrics {
        if self.examples == 0 {
            return RegressionMetrics {
                examples: 0,
                mse: 0.0,
                rmse: 0.0,
                mae: 0.0,
                r2: None,
            };
        }
        let n = self.examples as f64;
        let mse = self.sse / n;
        let sst = self.sst();
        let r2 = (sst > 1e-12 * self.sum_y2).then(|| 1.0 - self.sse / sst);
        RegressionMetrics {
            examples: self.examples,
            mse,
            rmse: mse.sqrt(),
            mae: self.sae / n,
            r2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Axis, Slice, array};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(a: f64, b: f64, eps: f64) {
        assert!((a - b).abs() <= eps, "{a} vs {b}");
    }

    /// y = 1, 2, 3, 6 and ŷ = 2, 2, 2, 5: errors 1, 0, -1, -1;
    /// SSE 3, SAE 3, MSE 0.75, MAE 0.75; mean y 3, SST 4 + 1 + 0 + 9 = 14;
    /// R² = 1 - 3/14 = 11/14.
    #[test]
    fn metrics_by_hand() {
        let s = RegressionSummary::from_predictions(
            array![2.0, 2.0, 2.0, 5.0].view(),
            array![1.0, 2.0, 3.0, 6.0].view(),
        )
        .unwrap();
        assert_eq!(
            s,
            RegressionSummary {
                examples: 4,
                sum_y: 12.0,
                sum_y2: 50.0,
                sse: 3.0,
                sae: 3.0
            }
        );
        assert_eq!(s.sst(), 14.0);
        let m = s.metrics();
        assert_eq!((m.examples, m.mse, m.mae), (4, 0.75, 0.75));
        close(m.rmse, 0.75f64.sqrt(), 1e-15);
        close(m.r2.unwrap(), 11.0 / 14.0, 1e-15);
    }

    #[test]
    fn pooled_r2_is_not_the_mean_of_client_r2() {
        // client a: y = 0, 2, ŷ = 1, 1 (R² 0 about its own mean 1)
        // client b: y = 10, 12, ŷ = 11, 11 (R² 0 about its own mean 11)
        // pooled: SSE 4, mean 6, SST 36 + 16 + 16 + 36 = 104 => R² = 1 - 4/104
        let a =
            RegressionSummary::from_predictions(array![1.0, 1.0].view(), array![0.0, 2.0].view())
                .unwrap();
        let b = RegressionSummary::from_predictions(
            array![11.0, 11.0].view(),
            array![10.0, 12.0].view(),
        )
        .unwrap();
        close(a.metrics().r2.unwrap(), 0.0, 1e-15);
        close(b.metrics().r2.unwrap(), 0.0, 1e-15);
        let mut pooled = a;
        pooled.merge(&b).unwrap();
        close(pooled.metrics().r2.unwrap(), 1.0 - 4.0 / 104.0, 1e-15);
    }

    #[test]
    fn merging_halves_equals_the_whole_and_a_direct_computation() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let n = 1001;
        let y: Array1<f64> = (0..n).map(|_| rng.random_range(-5.0..20.0)).collect();
        let p: Array1<f64> = y.mapv(|v| v + rng.random_range(-1.0..1.0));
        let whole = RegressionSummary::from_predictions(p.view(), y.view()).unwrap();
        let mut merged = RegressionSummary::empty();
        for (lo, hi) in [(0, 400), (400, 401), (401, n)] {
            let part = RegressionSummary::from_predictions(
                p.slice_axis(Axis(0), Slice::from(lo..hi)),
                y.slice_axis(Axis(0), Slice::from(lo..hi)),
            )
            .unwrap();
            merged.merge(&part).unwrap();
        }
        assert_eq!(merged.examples, whole.examples);
        let (mw, mm) = (whole.metrics(), merged.metrics());
        close(mm.mse, mw.mse, 1e-12);
        close(mm.mae, mw.mae, 1e-12);
        close(mm.r2.unwrap(), mw.r2.unwrap(), 1e-12);

        // direct, two-pass computation
        let e = &p - &y;
        let mean = y.mean().unwrap();
        let sst: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
        let mse = e.dot(&e) / n as f64;
        close(mm.mse, mse, 1e-10);
        close(mm.mae, e.mapv(f64::abs).sum() / n as f64, 1e-12);
        close(mm.r2.unwrap(), 1.0 - e.dot(&e) / sst, 1e-12);
    }

    #[test]
    fn undefined_and_invalid_cases() {
        let m = RegressionSummary::empty().metrics();
        assert_eq!((m.examples, m.mse, m.r2), (0, 0.0, None));
        // constant targets: SST is 0, R² undefined
        let s = RegressionSummary::from_predictions(
            array![0.1, 0.2, 0.3].view(),
            array![0.3, 0.3, 0.3].view(),
        )
        .unwrap();
        assert_eq!(s.metrics().r2, None);
        assert!(s.metrics().mse > 0.0);

        assert_eq!(
            RegressionSummary::from_predictions(array![1.0].view(), array![1.0, 2.0].view()),
            Err(LearningError::ScoreMismatch {
                scores: 1,
                labels: 2
            })
        );
        let err = RegressionSummary::from_predictions(array![f64::NAN].view(), array![1.0].view())
            .unwrap_err();
        assert_eq!(err.to_string(), "prediction at index 0 is not finite: NaN");
        let err =
            RegressionSummary::from_predictions(array![1.0].view(), array![f64::INFINITY].view())
                .unwrap_err();
        assert_eq!(err.to_string(), "label at row 0 is not finite: inf");

        let mut total = RegressionSummary::empty();
        let bad = RegressionSummary { sse: -1.0, ..s };
        let err = total.merge(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "evaluation summary is inconsistent: sse is -1 (expected non-negative)"
        );
        let bad = RegressionSummary { examples: 0, ..s };
        assert!(total.merge(&bad).is_err());
        assert_eq!(total, RegressionSummary::empty());
    }
}
