//! Federated evaluation of multi-class models that pools exactly.
//!
//! Each client reports a [`MulticlassSummary`] of its test split: the count, the
//! summed cross-entropy and the `k × k` confusion matrix (row = true class,
//! column = predicted class, prediction = the most probable class, the lowest
//! index on ties). Merging sums them, so [`MulticlassSummary::metrics`] on the
//! merged summary gives the metrics of the pooled data.

use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::LearningError;
use crate::softmax::{argmax, check_class_labels, class_log_loss};

/// Additive evaluation statistics of a `classes`-class model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticlassSummary {
    /// Number of classes `k` (at least 2).
    pub classes: usize,
    /// Number of scored examples.
    pub examples: u64,
    /// Sum of `-ln p_y` (probabilities clamped at `1e-15`).
    pub loss_sum: f64,
    /// `k × k` counts, row-major: `confusion[t * k + p]` examples of true class `t`
    /// predicted as `p`.
    pub confusion: Vec<u64>,
}

/// Precision, recall and F1 of one class (one-vs-rest) and its support.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Examples of this class (row sum).
    pub support: u64,
    /// Examples predicted as this class (column sum).
    pub predicted: u64,
    /// `tp / predicted`, 0 when nothing is predicted as this class.
    pub precision: f64,
    /// `tp / support`, 0 when the class does not occur.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub f1: f64,
}

/// Metrics derived from a [`MulticlassSummary`].
///
/// The macro averages are unweighted means over the classes that occur in the
/// data or in the predictions (as scikit-learn does without an explicit label
/// list); a class absent from both says nothing about the model and is left out.
/// Macro F1 is the mean of per-class F1 scores. With no examples everything is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MulticlassMetrics {
    /// Number of scored examples.
    pub examples: u64,
    /// Trace of the confusion matrix over `examples`.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub log_loss: f64,
    /// Mean per-class precision.
    pub macro_precision: f64,
    /// Mean per-class recall.
    pub macro_recall: f64,
    /// Mean per-class F1.
    pub macro_f1: f64,
}

fn inconsistent(reason: String) -> LearningError {
    LearningError::InconsistentSummary { reason }
}

impl MulticlassSummary {
    /// A summary of no examples over `classes` (at least 2) classes; the neutral
    /// element of [`MulticlassSummary::merge`].
    pub fn empty(classes: usize) -> Result<Self, LearningError> {
        if classes < 2 {
            return Err(LearningError::InvalidParam {
                field: "classes",
                value: classes.to_string(),
                requirement: "at least 2",
            });
        }
        let cells = classes
            .checked_mul(classes)
            .ok_or(LearningError::InvalidParam {
                field: "classes",
                value: classes.to_string(),
                requirement: "small enough for a classes × classes matrix",
            })?;
        Ok(MulticlassSummary {
            classes,
            examples: 0,
            loss_sum: 0.0,
            confusion: vec![0; cells],
        })
    }

    /// Summarises predicted class probabilities (`rows × classes`, every entry in
    /// `[0, 1]`) against class-index labels `0..classes`.
    pub fn from_predictions(
        probs: ArrayView2<f64>,
        labels: ArrayView1<f64>,
    ) -> Result<Self, LearningError> {
        let k = probs.ncols();
        let mut s = MulticlassSummary::empty(k)?;
        crate::metrics::check_counts(probs.nrows(), labels.len())?;
        for (row, values) in probs.rows().into_iter().enumerate() {
            if let Some((class, &value)) = values
                .iter()
                .enumerate()
                .find(|(_, p)| !(0.0..=1.0).contains(*p))
            {
                return Err(LearningError::InvalidClassProbability { row, class, value });
            }
        }
        check_class_labels(labels, k)?;
        for (values, &y) in probs.rows().into_iter().zip(&labels) {
            let truth = y as usize;
            let predicted = argmax(values);
            s.examples += 1;
            s.loss_sum += class_log_loss(values[truth]);
            s.confusion[truth * k + predicted] += 1;
        }
        Ok(s)
    }

    /// Checks a summary (e.g. received from the network): at least 2 classes, a
    /// `k × k` confusion matrix adding up to `examples`, a finite non-negative loss.
    pub fn check(&self) -> Result<(), LearningError> {
        if self.classes < 2 {
            return Err(inconsistent(format!(
                "classes is {} (expected at least 2)",
                self.classes
            )));
        }
        if self.classes.checked_mul(self.classes) != Some(self.confusion.len()) {
            return Err(inconsistent(format!(
                "confusion has {} cells but {} classes need {}",
                self.confusion.len(),
                self.classes,
                self.classes.saturating_mul(self.classes)
            )));
        }
        let total: u128 = self.confusion.iter().map(|&c| u128::from(c)).sum();
        if total != u128::from(self.examples) {
            return Err(inconsistent(format!(
                "confusion matrix counts {total} examples but examples is {}",
                self.examples
            )));
        }
        if !(self.loss_sum.is_finite() && self.loss_sum >= 0.0) {
            return Err(inconsistent(format!(
                "loss_sum is {} (expected finite and non-negative)",
                self.loss_sum
            )));
        }
        Ok(())
    }

    /// Adds `other` into `self`. Fails without changing `self` if the class counts
    /// differ, `other` is inconsistent, or a count would overflow.
    pub fn merge(&mut self, other: &MulticlassSummary) -> Result<(), LearningError> {
        if self.classes != other.classes {
            return Err(LearningError::ClassCountMismatch {
                left: self.classes,
                right: other.classes,
            });
        }
        other.check()?;
        let overflow = || inconsistent("merging the summaries overflows a count".to_string());
        let examples = self
            .examples
            .checked_add(other.examples)
            .ok_or_else(overflow)?;
        let confusion = self
            .confusion
            .iter()
            .zip(&other.confusion)
            .map(|(a, b)| a.checked_add(*b).ok_or_else(overflow))
            .collect::<Result<Vec<u64>, _>>()?;
        self.examples = examples;
        self.confusion = confusion;
        self.loss_sum += other.loss_sum;
        Ok(())
    }

    /// Count of true class `truth` predicted as `predicted` (0 outside the matrix).
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        if truth >= self.classes || predicted >= self.classes {
            return 0;
        }
        self.confusion
            .get(truth * self.classes + predicted)
            .copied()
            .unwrap_or(0)
    }

    /// One-vs-rest metrics of each class.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        let k = self.classes;
        (0..k)
            .map(|c| {
                let tp = self.count(c, c);
                let support: u64 = (0..k).map(|p| self.count(c, p)).sum();
                let predicted: u64 = (0..k).map(|t| self.count(t, c)).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    support,
                    predicted,
                    precision,
                    recall,
                    f1,
                }
            })
            .collect()
    }

    /// Accuracy, mean log loss and macro precision / recall / F1; see
    /// [`MulticlassMetrics`] for the conventions.
    pub fn metrics(&self) -> MulticlassMetrics {
        let correct: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        let present: Vec<ClassMetrics> = self
            .per_class()
            .into_iter()
            .filter(|m| m.support > 0 || m.predicted > 0)
            .collect();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if present.is_empty() {
                0.0
            } else {
                present.iter().map(f).sum::<f64>() / present.len() as f64
            }
        };
        MulticlassMetrics {
            examples: self.examples,
            accuracy: ratio(correct, self.examples),
            log_loss: if self.examples == 0 {
                0.0
            } else {
                self.loss_sum / self.examples as f64
            },
            macro_precision: mean(|m| m.precision),
            macro_recall: mean(|m| m.recall),
            macro_f1: mean(|m| m.f1),
        }
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    crate::metrics::ratio_u128(u128::from(num), u128::from(den))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, Axis, Slice, array};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    /// Four examples, three classes:
    /// row 0: p (0.7, 0.2, 0.1), y 0 -> predicted 0, loss -ln 0.7
    /// row 1: p (0.1, 0.6, 0.3), y 1 -> predicted 1, loss -ln 0.6
    /// row 2: p (0.5, 0.3, 0.2), y 2 -> predicted 0, loss -ln 0.2
    /// row 3: p (0.2, 0.2, 0.6), y 2 -> predicted 2, loss -ln 0.6
    /// confusion [[1,0,0],[0,1,0],[1,0,1]]: accuracy 3/4;
    /// precision (1/2, 1, 1), recall (1, 1, 1/2), F1 (2/3, 1, 2/3);
    /// macro P 5/6, R 5/6, F1 7/9.
    #[test]
    fn metrics_by_hand() {
        let probs = array![
            [0.7, 0.2, 0.1],
            [0.1, 0.6, 0.3],
            [0.5, 0.3, 0.2],
            [0.2, 0.2, 0.6]
        ];
        let s =
            MulticlassSummary::from_predictions(probs.view(), array![0.0, 1.0, 2.0, 2.0].view())
                .unwrap();
        assert_eq!(s.confusion, vec![1, 0, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!((s.classes, s.examples), (3, 4));
        let m = s.metrics();
        close(m.accuracy, 0.75);
        close(
            m.log_loss,
            -(0.7f64.ln() + 0.6f64.ln() + 0.2f64.ln() + 0.6f64.ln()) / 4.0,
        );
        close(m.macro_precision, 5.0 / 6.0);
        close(m.macro_recall, 5.0 / 6.0);
        close(m.macro_f1, 7.0 / 9.0);
        let per = s.per_class();
        assert_eq!(per[2].support, 2);
        assert_eq!(per[0].predicted, 2);
    }

    #[test]
    fn absent_classes_are_left_out_of_macro_averages() {
        // class 2 neither occurs nor is predicted
        let probs = array![[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]];
        let s = MulticlassSummary::from_predictions(probs.view(), array![0.0, 1.0].view()).unwrap();
        let m = s.metrics();
        assert_eq!(
            (m.macro_precision, m.macro_recall, m.macro_f1),
            (1.0, 1.0, 1.0)
        );
        let empty = MulticlassSummary::empty(3).unwrap().metrics();
        assert_eq!(
            (empty.accuracy, empty.macro_f1, empty.log_loss),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn merging_parts_equals_the_whole() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 301;
        let mut probs = Array2::from_shape_fn((n, 4), |_| rng.random_range(0.01..1.0));
        for mut row in probs.rows_mut() {
            let t = row.sum();
            row /= t;
        }
        let y: Array1<f64> = (0..n)
            .map(|_| f64::from(rng.random_range(0u8..4)))
            .collect();
        let whole = MulticlassSummary::from_predictions(probs.view(), y.view()).unwrap();
        let mut merged = MulticlassSummary::empty(4).unwrap();
        for (lo, hi) in [(0, 100), (100, 100), (100, 250), (250, n)] {
            let part = MulticlassSummary::from_predictions(
                probs.slice_axis(Axis(0), Slice::from(lo..hi)),
                y.slice_axis(Axis(0), Slice::from(lo..hi)),
            )
            .unwrap();
            merged.merge(&part).unwrap();
        }
        assert_eq!(merged.confusion, whole.confusion);
        assert_eq!(merged.examples, whole.examples);
        let (a, b) = (merged.metrics(), whole.metrics());
        assert_eq!(
            (a.accuracy, a.macro_precision, a.macro_recall, a.macro_f1),
            (b.accuracy, b.macro_precision, b.macro_recall, b.macro_f1)
        );
        close(a.log_loss, b.log_loss);
    }

    #[test]
    fn bad_inputs_and_summaries_are_typed_errors() {
        let err =
            MulticlassSummary::from_predictions(array![[0.5, 1.5]].view(), array![0.0].view())
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "probability of class 1 at row 0 is 1.5 (expected a probability in [0, 1])"
        );
        assert_eq!(
            MulticlassSummary::from_predictions(array![[0.5, 0.5]].view(), array![2.0].view()),
            Err(LearningError::InvalidClassLabel {
                index: 0,
                value: 2.0,
                classes: 2
            })
        );
        assert_eq!(
            MulticlassSummary::from_predictions(array![[0.5, 0.5]].view(), array![0.0, 1.0].view()),
            Err(LearningError::ScoreMismatch {
                scores: 1,
                labels: 2
            })
        );
        assert!(
            MulticlassSummary::from_predictions(array![[1.0]].view(), array![0.0].view()).is_err()
        );

        let mut a = MulticlassSummary::empty(2).unwrap();
        let b = MulticlassSummary::empty(3).unwrap();
        assert_eq!(
            a.merge(&b).unwrap_err().to_string(),
            "cannot merge multiclass summaries over 2 and 3 classes"
        );
        let bad = MulticlassSummary {
            classes: 2,
            examples: 5,
            loss_sum: 1.0,
            confusion: vec![1, 1, 1, 1],
        };
        assert_eq!(
            a.merge(&bad).unwrap_err().to_string(),
            "evaluation summary is inconsistent: confusion matrix counts 4 examples but \
             examples is 5"
        );
        let bad = MulticlassSummary {
            confusion: vec![1, 1, 1],
            ..bad
        };
        assert!(a.merge(&bad).is_err());
        let overflow = MulticlassSummary {
            classes: 2,
            examples: u64::MAX,
            loss_sum: 0.0,
            confusion: vec![u64::MAX, 0, 0, 0],
        };
        a.merge(&overflow).unwrap();
        let one = MulticlassSummary {
            classes: 2,
            examples: 1,
            loss_sum: 0.0,
            confusion: vec![1, 0, 0, 0],
        };
        assert!(a.merge(&one).is_err());
        assert_eq!(a.examples, u64::MAX);
    }
}
