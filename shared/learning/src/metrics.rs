//! Federated evaluation that pools exactly.
//!
//! Each client scores its local test split and reports an [`EvalSummary`]: counts,
//! the summed log loss, the confusion matrix at threshold 0.5 and a histogram of
//! scores per class. Summaries are sums, so merging them gives exactly the summary
//! of the pooled data; [`EvalSummary::metrics`] then derives the metrics. The AUC
//! from the histograms is the Mann–Whitney statistic with pairs whose scores share
//! a bin counted as ties (1/2); with [`SCORE_BINS`] bins it differs from the exact
//! AUC ([`roc_auc`]) only through pairs closer than `1 / SCORE_BINS`.

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::LearningError;
use crate::model::example_log_loss;

/// Number of equal-width score bins on `[0, 1]`.
pub const SCORE_BINS: usize = 10_000;

/// A score at or above this is a predicted positive.
pub const DECISION_THRESHOLD: f64 = 0.5;

/// The bin of a probability: `floor(p * SCORE_BINS)`, clamped to
/// `[0, SCORE_BINS - 1]` (so `p = 1` falls in the last bin).
pub fn score_bin(p: f64) -> usize {
    bin_of(p, SCORE_BINS)
}

fn bin_of(p: f64, bins: usize) -> usize {
    // `as` saturates: negative and NaN become 0.
    ((p * bins as f64).floor() as usize).min(bins.saturating_sub(1))
}

/// Additive evaluation statistics of one client (or of several, merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Number of scored examples.
    pub examples: u64,
    /// How many of them have label 1.
    pub positives: u64,
    /// Sum of per-example log losses (probabilities clamped to `[1e-15, 1 - 1e-15]`).
    pub loss_sum: f64,
    /// Label 1, score >= 0.5.
    pub tp: u64,
    /// Label 0, score >= 0.5.
    pub fp: u64,
    /// Label 0, score < 0.5.
    pub tn: u64,
    /// Label 1, score < 0.5.
    pub fn_: u64,
    /// Scores of positives per bin ([`score_bin`]); `SCORE_BINS` long.
    pub hist_pos: Vec<u64>,
    /// Scores of negatives per bin; `SCORE_BINS` long.
    pub hist_neg: Vec<u64>,
}

impl Default for EvalSummary {
    fn default() -> Self {
        EvalSummary::empty()
    }
}

/// Metrics derived from an [`EvalSummary`].
///
/// Conventions for undefined ratios: with no examples, accuracy and log loss are 0;
/// precision is 0 when nothing is predicted positive, recall is 0 when there are no
/// positives, F1 is 0 when precision + recall is 0; the AUC is `None` unless both
/// classes occur.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of scored examples.
    pub examples: u64,
    /// `(tp + tn) / examples`.
    pub accuracy: f64,
    /// `tp / (tp + fp)`.
    pub precision: f64,
    /// `tp / (tp + fn)`.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Mean log loss.
    pub log_loss: f64,
    /// Area under the ROC curve, from the score histograms.
    pub auc: Option<f64>,
}

impl EvalSummary {
    /// A summary of no examples, with `SCORE_BINS` zero bins; the neutral element
    /// of [`EvalSummary::merge`].
    pub fn empty() -> Self {
        EvalSummary {
            examples: 0,
            positives: 0,
            loss_sum: 0.0,
            tp: 0,
            fp: 0,
            tn: 0,
            fn_: 0,
            hist_pos: vec![0; SCORE_BINS],
            hist_neg: vec![0; SCORE_BINS],
        }
    }

    /// Summarises predicted probabilities against 0/1 labels.
    ///
    /// Every probability must be in `[0, 1]` (NaN is rejected) and every label 0 or
    /// 1; no examples give [`EvalSummary::empty`].
    pub fn from_predictions(
        probs: ArrayView1<f64>,
        labels: ArrayView1<f64>,
    ) -> Result<Self, LearningError> {
        check_counts(probs.len(), labels.len())?;
        check_scores(probs)?;
        crate::model::check_labels(labels)?;
        let mut s = EvalSummary::empty();
        for (&p, &y) in probs.iter().zip(&labels) {
            let positive = y == 1.0;
            let predicted = p >= DECISION_THRESHOLD;
            s.examples += 1;
            s.loss_sum += example_log_loss(p, y);
            let bin = score_bin(p);
            match (positive, predicted) {
                (true, true) => s.tp += 1,
                (true, false) => s.fn_ += 1,
                (false, true) => s.fp += 1,
                (false, false) => s.tn += 1,
            }
            if positive {
                s.positives += 1;
                s.hist_pos[bin] += 1;
            } else {
                s.hist_neg[bin] += 1;
            }
        }
        Ok(s)
    }

    /// Checks that the counts agree with each other (useful for summaries received
    /// from the network): equal, non-zero histogram lengths, confusion matrix and
    /// histograms adding up to `examples` and `positives`, finite non-negative loss.
    pub fn check(&self) -> Result<(), LearningError> {
        let inconsistent = |reason: String| Err(LearningError::InconsistentSummary { reason });
        if self.hist_pos.len() != self.hist_neg.len() {
            return inconsistent(format!(
                "hist_pos has {} bins but hist_neg has {}",
                self.hist_pos.len(),
                self.hist_neg.len()
            ));
        }
        if self.hist_pos.is_empty() {
            return inconsistent("the score histograms have no bins".to_string());
        }
        if self.positives > self.examples {
            return inconsistent(format!(
                "{} positives among {} examples",
                self.positives, self.examples
            ));
        }
        let confusion = sum_u64([self.tp, self.fp, self.tn, self.fn_]);
        if confusion != u128::from(self.examples) {
            return inconsistent(format!(
                "confusion matrix counts {confusion} examples but examples is {}",
                self.examples
            ));
        }
        let actual_pos = u128::from(self.tp) + u128::from(self.fn_);
        if actual_pos != u128::from(self.positives) {
            return inconsistent(format!(
                "tp + fn is {actual_pos} but positives is {}",
                self.positives
            ));
        }
        let hist_pos = sum_u64(self.hist_pos.iter().copied());
        if hist_pos != u128::from(self.positives) {
            return inconsistent(format!(
                "hist_pos counts {hist_pos} examples but positives is {}",
                self.positives
            ));
        }
        let negatives = self.examples - self.positives;
        let hist_neg = sum_u64(self.hist_neg.iter().copied());
        if hist_neg != u128::from(negatives) {
            return inconsistent(format!(
                "hist_neg counts {hist_neg} examples but there are {negatives} negatives"
            ));
        }
        if !(self.loss_sum.is_finite() && self.loss_sum >= 0.0) {
            return inconsistent(format!(
                "loss_sum is {} (expected finite and non-negative)",
                self.loss_sum
            ));
        }
        Ok(())
    }

    /// Adds `other` into `self`, so that the result summarises both example sets.
    ///
    /// Fails without changing `self` if the histograms have different bin counts or
    /// `other` is inconsistent ([`EvalSummary::check`]). Counts saturate at
    /// `u64::MAX` instead of overflowing.
    pub fn merge(&mut self, other: &EvalSummary) -> Result<(), LearningError> {
        for (left, right) in [
            (self.hist_pos.len(), other.hist_pos.len()),
            (self.hist_neg.len(), other.hist_neg.len()),
        ] {
            if left != right {
                return Err(LearningError::BinCountMismatch { left, right });
            }
        }
        other.check()?;
        self.examples = self.examples.saturating_add(other.examples);
        self.positives = self.positives.saturating_add(other.positives);
        self.loss_sum += other.loss_sum;
        self.tp = self.tp.saturating_add(other.tp);
        self.fp = self.fp.saturating_add(other.fp);
        self.tn = self.tn.saturating_add(other.tn);
        self.fn_ = self.fn_.saturating_add(other.fn_);
        for (a, b) in self.hist_pos.iter_mut().zip(&other.hist_pos) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.hist_neg.iter_mut().zip(&other.hist_neg) {
            *a = a.saturating_add(*b);
        }
        Ok(())
    }

    /// Accuracy, precision, recall, F1, mean log loss and histogram AUC; see
    /// [`Metrics`] for the conventions on undefined ratios.
    pub fn metrics(&self) -> Metrics {
        let precision = ratio(self.tp, u128::from(self.tp) + u128::from(self.fp));
        let recall = ratio(self.tp, u128::from(self.tp) + u128::from(self.fn_));
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let log_loss = if self.examples == 0 {
            0.0
        } else {
            self.loss_sum / self.examples as f64
        };
        Metrics {
            examples: self.examples,
            accuracy: ratio_u128(
                u128::from(self.tp) + u128::from(self.tn),
                u128::from(self.examples),
            ),
            precision,
            recall,
            f1,
            log_loss,
            auc: self.histogram_auc(),
        }
    }

    /// Mann–Whitney AUC from the histograms: the probability that a random positive
    /// scores in a higher bin than a random negative, plus half the probability that
    /// they share a bin. `None` unless both classes occur.
    pub fn histogram_auc(&self) -> Option<f64> {
        mann_whitney(
            self.hist_pos
                .iter()
                .zip(&self.hist_neg)
                .map(|(&p, &n)| (u128::from(p), u128::from(n))),
        )
    }
}

/// Exact ROC AUC of `scores` against 0/1 `labels` (Mann–Whitney with tied scores
/// counted 1/2), by sorting; use it to check the histogram AUC or to score small
/// sets.
///
/// `None` when the AUC is undefined (no positive or no negative) or the input is
/// invalid: different lengths, a NaN score, or a label other than 0 and 1.
pub fn roc_auc(scores: ArrayView1<f64>, labels: ArrayView1<f64>) -> Option<f64> {
    if scores.len() != labels.len()
        || scores.iter().any(|s| s.is_nan())
        || crate::model::check_labels(labels).is_err()
    {
        return None;
    }
    let mut pairs: Vec<(f64, bool)> = scores
        .iter()
        .zip(&labels)
        .map(|(&s, &y)| (s, y == 1.0))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // group equal scores, ascending
    let groups = pairs.chunk_by(|a, b| a.0 == b.0).map(|group| {
        let pos = group.iter().filter(|(_, positive)| *positive).count() as u128;
        (pos, group.len() as u128 - pos)
    });
    mann_whitney(groups)
}

/// AUC from (positives, negatives) counts of tie groups in ascending score order.
fn mann_whitney(groups: impl Iterator<Item = (u128, u128)>) -> Option<f64> {
    // Twice the Mann–Whitney U, kept in integers: Σ pos_g * (2 * neg_below + neg_g).
    let mut twice_u: u128 = 0;
    let mut neg_below: u128 = 0;
    let mut pos_total: u128 = 0;
    for (pos, neg) in groups {
        twice_u = twice_u
            .saturating_add(pos.saturating_mul(neg_below.saturating_mul(2).saturating_add(neg)));
        neg_below = neg_below.saturating_add(neg);
        pos_total = pos_total.saturating_add(pos);
    }
    if pos_total == 0 || neg_below == 0 {
        return None;
    }
    Some(twice_u as f64 / (2.0 * pos_total as f64 * neg_below as f64))
}

fn check_scores(probs: ArrayView1<f64>) -> Result<(), LearningError> {
    match probs
        .iter()
        .enumerate()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        Some((index, &value)) => Err(LearningError::InvalidScore { index, value }),
        None => Ok(()),
    }
}

fn sum_u64(values: impl IntoIterator<Item = u64>) -> u128 {
    values.into_iter().map(u128::from).sum()
}

fn ratio(num: u64, den: u128) -> f64 {
    ratio_u128(u128::from(num), den)
}

/// `scores` predictions for `labels` labels: [`LearningError::ScoreMismatch`]
/// unless they are as many.
pub(crate) fn check_counts(scores: usize, labels: usize) -> Result<(), LearningError> {
    if scores != labels {
        return Err(LearningError::ScoreMismatch { scores, labels });
    }
    Ok(())
}

/// `num / den`, 0 when `den` is 0.
pub(crate) fn ratio_u128(num: u128, den: u128) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array1, Axis, Slice, array};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Scores that depend on the label, so the AUC is well inside (0.5, 1).
    fn random_scores(n: usize, seed: u64) -> (Array1<f64>, Array1<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut scores = Array1::zeros(n);
        let mut labels = Array1::zeros(n);
        for i in 0..n {
            let positive = rng.random_bool(0.3);
            let z: f64 = rng.random_range(-3.0..3.0) + if positive { 1.0 } else { 0.0 };
            scores[i] = crate::model::sigmoid(z);
            labels[i] = if positive { 1.0 } else { 0.0 };
        }
        (scores, labels)
    }

    #[test]
    fn bins() {
        let expected = [
            (0.0, 0),
            (0.00009, 0),
            (0.00015, 1),
            (0.5, 5000),
            (0.99999, 9999),
            (1.0, SCORE_BINS - 1),
        ];
        for (score, bin) in expected {
            assert_eq!(score_bin(score), bin, "score {score}");
        }
    }

    #[test]
    fn summary_by_hand() {
        let probs = array![0.9, 0.4, 0.6, 0.1, 0.5];
        let labels = array![1.0, 1.0, 0.0, 0.0, 1.0];
        let s = EvalSummary::from_predictions(probs.view(), labels.view()).unwrap();
        assert_eq!((s.examples, s.positives), (5, 3));
        // 0.9 -> tp, 0.4 -> fn, 0.6 -> fp, 0.1 -> tn, 0.5 -> tp (threshold inclusive)
        assert_eq!((s.tp, s.fp, s.tn, s.fn_), (2, 1, 1, 1));
        assert_eq!(s.hist_pos[9000] + s.hist_pos[4000] + s.hist_pos[5000], 3);
        assert_eq!(s.hist_neg[6000] + s.hist_neg[1000], 2);
        s.check().unwrap();

        let m = s.metrics();
        assert_eq!(m.examples, 5);
        assert_abs_diff_eq!(m.accuracy, 3.0 / 5.0);
        assert_abs_diff_eq!(m.precision, 2.0 / 3.0);
        assert_abs_diff_eq!(m.recall, 2.0 / 3.0);
        assert_abs_diff_eq!(m.f1, 2.0 / 3.0, epsilon = 1e-15);
        let loss = -(0.9f64.ln() + 0.4f64.ln() + 0.4f64.ln() + 0.9f64.ln() + 0.5f64.ln()) / 5.0;
        assert_abs_diff_eq!(m.log_loss, loss, epsilon = 1e-12);
        // pairs (pos, neg): 0.9 beats both, 0.4 beats 0.1, 0.5 beats 0.1 => 4 of 6
        assert_abs_diff_eq!(m.auc.unwrap(), 4.0 / 6.0, epsilon = 1e-15);
        assert_abs_diff_eq!(
            roc_auc(probs.view(), labels.view()).unwrap(),
            4.0 / 6.0,
            epsilon = 1e-15
        );
    }

    #[test]
    fn exact_auc_handles_ties() {
        // positive 0.5 ties with negative 0.5 (1/2), beats 0.2 (1); positive 0.8 beats both
        let scores = array![0.5, 0.5, 0.2, 0.8];
        let labels = array![1.0, 0.0, 0.0, 1.0];
        assert_abs_diff_eq!(
            roc_auc(scores.view(), labels.view()).unwrap(),
            3.5 / 4.0,
            epsilon = 1e-15
        );
        // all scores equal -> 0.5
        assert_eq!(
            roc_auc(array![0.3, 0.3, 0.3].view(), array![1.0, 0.0, 1.0].view()),
            Some(0.5)
        );
        // perfect and reversed ranking
        let labels = array![0.0, 0.0, 1.0, 1.0];
        assert_eq!(
            roc_auc(array![0.1, 0.2, 0.3, 0.4].view(), labels.view()),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(array![0.4, 0.3, 0.2, 0.1].view(), labels.view()),
            Some(0.0)
        );
    }

    #[test]
    fn exact_auc_undefined_or_invalid_is_none() {
        assert_eq!(
            roc_auc(array![0.1, 0.9].view(), array![1.0, 1.0].view()),
            None
        );
        assert_eq!(roc_auc(array![0.1].view(), array![1.0, 0.0].view()), None);
        assert_eq!(
            roc_auc(array![f64::NAN, 0.2].view(), array![1.0, 0.0].view()),
            None
        );
        assert_eq!(
            roc_auc(array![0.1, 0.2].view(), array![1.0, 2.0].view()),
            None
        );
        assert_eq!(
            roc_auc(Array1::zeros(0).view(), Array1::zeros(0).view()),
            None
        );
    }

    #[test]
    fn histogram_auc_matches_exact_auc() {
        for seed in 0..5 {
            let (scores, labels) = random_scores(5000, seed);
            let exact = roc_auc(scores.view(), labels.view()).unwrap();
            let s = EvalSummary::from_predictions(scores.view(), labels.view()).unwrap();
            let approx = s.metrics().auc.unwrap();
            assert!(exact > 0.55 && exact < 0.95, "exact {exact}");
            assert!((approx - exact).abs() < 1e-3, "{approx} vs {exact}");
        }
    }

    #[test]
    fn merging_halves_equals_the_whole() {
        let (scores, labels) = random_scores(3001, 11);
        let whole = EvalSummary::from_predictions(scores.view(), labels.view()).unwrap();
        let mut merged = EvalSummary::empty();
        for range in [Slice::from(..1200), Slice::from(1200..)] {
            let part = EvalSummary::from_predictions(
                scores.slice_axis(Axis(0), range),
                labels.slice_axis(Axis(0), range),
            )
            .unwrap();
            merged.merge(&part).unwrap();
        }
        assert_abs_diff_eq!(merged.loss_sum, whole.loss_sum, epsilon = 1e-9);
        merged.loss_sum = whole.loss_sum;
        assert_eq!(merged, whole);
        merged.check().unwrap();
        assert_eq!(merged.metrics(), whole.metrics());
    }

    #[test]
    fn edge_cases_are_zero_or_none() {
        let empty = EvalSummary::empty();
        let m = empty.metrics();
        assert_eq!(
            m,
            Metrics {
                examples: 0,
                accuracy: 0.0,
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                log_loss: 0.0,
                auc: None,
            }
        );
        assert_eq!(
            EvalSummary::from_predictions(Array1::zeros(0).view(), Array1::zeros(0).view())
                .unwrap(),
            empty
        );

        // nothing predicted positive: precision 0 (not NaN), recall 0, f1 0
        let s = EvalSummary::from_predictions(array![0.1, 0.2].view(), array![1.0, 0.0].view())
            .unwrap();
        let m = s.metrics();
        assert_eq!((m.precision, m.recall, m.f1), (0.0, 0.0, 0.0));
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.auc, Some(0.0)); // the positive scores below the negative

        // no positives at all: recall 0, AUC undefined
        let s = EvalSummary::from_predictions(array![0.7, 0.2].view(), array![0.0, 0.0].view())
            .unwrap();
        let m = s.metrics();
        assert_eq!((m.precision, m.recall, m.f1, m.auc), (0.0, 0.0, 0.0, None));
    }

    #[test]
    fn invalid_predictions_are_errors() {
        assert_eq!(
            EvalSummary::from_predictions(array![0.5].view(), array![1.0, 0.0].view()),
            Err(LearningError::ScoreMismatch {
                scores: 1,
                labels: 2
            })
        );
        let err = EvalSummary::from_predictions(array![0.5, 1.5].view(), array![1.0, 0.0].view())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "score at index 1 is 1.5 (expected a probability in [0, 1])"
        );
        assert!(matches!(
            EvalSummary::from_predictions(array![f64::NAN].view(), array![1.0].view()),
            Err(LearningError::InvalidScore { index: 0, .. })
        ));
        assert_eq!(
            EvalSummary::from_predictions(array![0.5].view(), array![-1.0].view()),
            Err(LearningError::InvalidLabel {
                index: 0,
                value: -1.0
            })
        );
    }

    #[test]
    fn merge_rejects_mismatched_or_inconsistent_summaries() {
        let mut acc = EvalSummary::empty();
        let mut coarse = EvalSummary::empty();
        coarse.hist_pos.truncate(100);
        coarse.hist_neg.truncate(100);
        let err = acc.merge(&coarse).unwrap_err();
        assert_eq!(
            err,
            LearningError::BinCountMismatch {
                left: 10_000,
                right: 100
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot merge evaluation summaries with 10000 and 100 score bins"
        );

        let mut lying =
            EvalSummary::from_predictions(array![0.9].view(), array![1.0].view()).unwrap();
        lying.examples = 2;
        let err = acc.merge(&lying).unwrap_err();
        assert!(matches!(err, LearningError::InconsistentSummary { .. }));
        assert_eq!(
            err.to_string(),
            "evaluation summary is inconsistent: confusion matrix counts 1 examples but examples is 2"
        );
        assert_eq!(acc, EvalSummary::empty(), "a failed merge changes nothing");
    }

    #[test]
    fn metrics_serialize() {
        let s = EvalSummary::from_predictions(array![0.9, 0.2].view(), array![1.0, 0.0].view())
            .unwrap();
        let m = s.metrics();
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
