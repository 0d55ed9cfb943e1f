//! Federated averaging of client updates, the base of every strategy.
//!
//! A client sends the delta of its local model from the global model together with
//! a weight (its number of training examples). [`validate_update`] checks one
//! update; [`fedavg`] is the weighted mean of a round's deltas. The coordinator's
//! strategies (FedAvg and its server optimizers, the robust ones, server-side DP)
//! are the `ServerStrategy` implementations in [`crate::strategy`]; this module
//! holds only the arithmetic they share.

use ndarray::Array1;

use crate::error::AggregationError;

/// One client's contribution to a round.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedUpdate {
    /// Local minus global parameters, `[intercept, w_1..w_dim]`.
    pub delta: Array1<f64>,
    /// Relative weight, e.g. the number of local examples; positive and finite.
    pub weight: f64,
}

/// Checks one update against the model's parameter count (`dim + 1`): length,
/// finite values, positive finite weight.
pub fn validate_update(
    update: &WeightedUpdate,
    expected_len: usize,
) -> Result<(), AggregationError> {
    check_delta(&update.delta, update.weight, expected_len)
}

/// Checks one client's `delta` (length `expected_len`, finite values) and its
/// `weight` (positive, finite): the check of [`validate_update`] and of the
/// strategies' updates.
pub(crate) fn check_delta(
    delta: &Array1<f64>,
    weight: f64,
    expected_len: usize,
) -> Result<(), AggregationError> {
    if delta.len() != expected_len {
        return Err(AggregationError::WrongDimension {
            expected: expected_len,
            got: delta.len(),
        });
    }
    if let Some((index, &value)) = delta.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(AggregationError::NonFiniteValue { index, value });
    }
    if !(weight.is_finite() && weight > 0.0) {
        return Err(AggregationError::InvalidWeight { weight });
    }
    Ok(())
}

/// Weighted mean of the deltas, `Σ w_k Δ_k / Σ w_k`.
///
/// Every update is validated against the length of the first one; an invalid
/// update is reported with its position. An empty slice is
/// [`AggregationError::NoUpdates`].
pub fn fedavg(updates: &[WeightedUpdate]) -> Result<Array1<f64>, AggregationError> {
    let first = updates.first().ok_or(AggregationError::NoUpdates)?;
    let len = first.delta.len();
    for (position, update) in updates.iter().enumerate() {
        validate_update(update, len).map_err(|error| AggregationError::InUpdate {
            position,
            error: Box::new(error),
        })?;
    }
    let total: f64 = updates.iter().map(|u| u.weight).sum();
    if !total.is_finite() {
        return Err(AggregationError::NonFiniteTotalWeight { total });
    }
    // Normalised weights are in (0, 1], so the products cannot overflow.
    let mut mean = Array1::zeros(len);
    for update in updates {
        mean.scaled_add(update.weight / total, &update.delta);
    }
    if let Some((index, &value)) = mean.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(AggregationError::NonFiniteResult { index, value });
    }
    Ok(mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::assert_close;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    fn upd(delta: Array1<f64>, weight: f64) -> WeightedUpdate {
        WeightedUpdate { delta, weight }
    }

    #[test]
    fn weighted_mean_by_hand() {
        // (1 * [1, 2] + 3 * [3, 6]) / 4 = [2.5, 5]
        let updates = [upd(array![1.0, 2.0], 1.0), upd(array![3.0, 6.0], 3.0)];
        assert_close(&fedavg(&updates).unwrap(), &array![2.5, 5.0], 1e-15);
    }

    #[test]
    fn single_update_is_returned_unchanged() {
        let d = array![0.1, -0.2, 0.3];
        assert_eq!(fedavg(&[upd(d.clone(), 17.0)]).unwrap(), d);
    }

    #[test]
    fn equal_weights_give_plain_mean() {
        let updates = [
            upd(array![1.0, 0.0], 5.0),
            upd(array![0.0, 1.0], 5.0),
            upd(array![2.0, 2.0], 5.0),
        ];
        assert_close(&fedavg(&updates).unwrap(), &array![1.0, 1.0], 1e-15);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let updates = [upd(array![1.0], 1e308), upd(array![3.0], 1e307)];
        let mean = fedavg(&updates).unwrap();
        assert_abs_diff_eq!(mean[0], (1.0 * 10.0 + 3.0) / 11.0, epsilon = 1e-12);
        let updates = [upd(array![1.0], 1e308), upd(array![3.0], 1e308)];
        assert!(matches!(
            fedavg(&updates),
            Err(AggregationError::NonFiniteTotalWeight { .. })
        ));
    }

    #[test]
    fn validation_errors_quote_values() {
        let err = validate_update(&upd(array![1.0, 2.0], 1.0), 3).unwrap_err();
        assert_eq!(
            err,
            AggregationError::WrongDimension {
                expected: 3,
                got: 2
            }
        );
        assert_eq!(err.to_string(), "update has 2 values, expected 3");

        let err = validate_update(&upd(array![1.0, f64::INFINITY], 1.0), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "update value at index 1 is not finite: inf"
        );

        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = validate_update(&upd(array![1.0], w), 1).unwrap_err();
            assert!(matches!(err, AggregationError::InvalidWeight { .. }), "{w}");
        }
        assert_eq!(
            validate_update(&upd(array![1.0], 0.0), 1)
                .unwrap_err()
                .to_string(),
            "update weight must be positive and finite, got 0"
        );
        assert_eq!(validate_update(&upd(array![1.0], 2.0), 1), Ok(()));
    }

    #[test]
    fn fedavg_reports_the_bad_update() {
        assert_eq!(fedavg(&[]), Err(AggregationError::NoUpdates));
        let err = fedavg(&[upd(array![1.0, 2.0], 1.0), upd(array![1.0], 1.0)]).unwrap_err();
        assert_eq!(err.to_string(), "update 1: update has 1 values, expected 2");
        let err = fedavg(&[upd(array![f64::NAN], 1.0)]).unwrap_err();
        assert!(matches!(
            err,
            AggregationError::InUpdate { position: 0, ref error }
                if matches!(**error, AggregationError::NonFiniteValue { index: 0, .. })
        ));
    }
}
