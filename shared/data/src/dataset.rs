//! The fused, cleaned dataset of one split: one row per user, feature columns kept
//! with their missing cells (imputation happens at encoding, with the federation's
//! statistics).

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::schema::{CategoricalImpute, LabelKind, NumericImpute};

/// A categorical cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cat {
    /// Index into the schema vocabulary.
    Known(u32),
    /// Observed but outside the vocabulary.
    Unseen,
    /// Blank or user missing from the source.
    Missing,
}

/// The values of one feature column (`None` / `Cat::Missing` = to impute).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ColumnData {
    Numeric {
        impute: NumericImpute,
        values: Vec<Option<f64>>,
    },
    Categorical {
        vocabulary: Vec<String>,
        impute: CategoricalImpute,
        values: Vec<Cat>,
    },
    Boolean {
        impute: bool,
        values: Vec<Option<bool>>,
    },
}

impl ColumnData {
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            ColumnData::Numeric { .. } => "numeric",
            ColumnData::Categorical { .. } => "categorical",
            ColumnData::Boolean { .. } => "boolean",
        }
    }
}

/// One feature column of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FeatureColumnData {
    pub name: String,
    pub data: ColumnData,
}

impl FeatureColumnData {
    /// Cells that will be imputed at encoding.
    pub(crate) fn missing_count(&self) -> usize {
        match &self.data {
            ColumnData::Numeric { values, .. } => values.iter().filter(|v| v.is_none()).count(),
            ColumnData::Categorical { values, .. } => {
                values.iter().filter(|v| **v == Cat::Missing).count()
            }
            ColumnData::Boolean { values, .. } => values.iter().filter(|v| v.is_none()).count(),
        }
    }
}

/// Sufficient statistics of one numeric column over its observed (non-missing) cells;
/// the coordinator sums them across partners into global means and standard deviations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    /// The column.
    pub column: String,
    /// Observed cells.
    pub count: u64,
    /// Sum of observed values.
    pub sum: f64,
    /// Sum of squared observed values.
    pub sum_sq: f64,
}

/// The cleaned, fused rows of one split: one per user of the primary source.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    ids: Vec<String>,
    labels: Option<Vec<bool>>,
    /// The numeric target (a `type = "target"` schema); `labels` is then `None`.
    targets: Option<Vec<f64>>,
    pub(crate) columns: Vec<FeatureColumnData>,
}

impl Dataset {
    pub(crate) fn new(
        ids: Vec<String>,
        labels: Option<Vec<bool>>,
        columns: Vec<FeatureColumnData>,
    ) -> Self {
        Dataset {
            ids,
            labels,
            targets: None,
            columns,
        }
    }

    /// A dataset with a numeric target (one value per user) instead of a binary label.
    pub(crate) fn with_targets(
        ids: Vec<String>,
        targets: Vec<f64>,
        columns: Vec<FeatureColumnData>,
    ) -> Self {
        Dataset {
            ids,
            labels: None,
            targets: Some(targets),
            columns,
        }
    }

    /// The rows at `rows` (in that order), e.g. to split one partner's data into
    /// several clients; indices out of range are skipped.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let rows: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&r| r < self.ids.len())
            .collect();
        let columns = self
            .columns
            .iter()
            .map(|c| FeatureColumnData {
                name: c.name.clone(),
                data: match &c.data {
                    ColumnData::Numeric { impute, values } => ColumnData::Numeric {
                        impute: *impute,
                        values: rows.iter().map(|&r| values[r]).collect(),
                    },
                    ColumnData::Categorical {
                        vocabulary,
                        impute,
                        values,
                    } => ColumnData::Categorical {
                        vocabulary: vocabulary.clone(),
                        impute: impute.clone(),
                        values: rows.iter().map(|&r| values[r]).collect(),
                    },
                    ColumnData::Boolean { impute, values } => ColumnData::Boolean {
                        impute: *impute,
                        values: rows.iter().map(|&r| values[r]).collect(),
                    },
                },
            })
            .collect();
        Dataset {
            ids: rows.iter().map(|&r| self.ids[r].clone()).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| rows.iter().map(|&r| l[r]).collect()),
            targets: self
                .targets
                .as_ref()
                .map(|t| rows.iter().map(|&r| t[r]).collect()),
            columns,
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// One id per user, in order of first appearance in the primary source.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Names of the feature columns, in schema order.
    pub fn feature_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The training targets, one per user: for a binary label (`type = "label"`) 1.0 for
    /// the positive value and 0.0 otherwise; for a numeric target (`type = "target"`)
    /// the parsed values. Rows with a missing or unparseable label or target were
    /// dropped (and counted) at cleaning, so this fails only when the schema declares
    /// neither.
    pub fn labels(&self) -> Result<Array1<f64>, DataError> {
        if let Some(targets) = &self.targets {
            return Ok(Array1::from(targets.clone()));
        }
        let labels = self.labels.as_ref().ok_or(DataError::NoLabel)?;
        Ok(labels.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect())
    }

    /// Whether [`Dataset::labels`] holds a binary label or a numeric target (`None` if
    /// the schema declares neither).
    pub fn label_kind(&self) -> Option<LabelKind> {
        if self.targets.is_some() {
            Some(LabelKind::Numeric)
        } else if self.labels.is_some() {
            Some(LabelKind::Binary)
        } else {
            None
        }
    }

    /// The numeric target values, if the schema declares a `type = "target"` column.
    pub(crate) fn targets(&self) -> Option<&[f64]> {
        self.targets.as_deref()
    }

    /// Users with the positive label, if the schema declares a binary label (`None`
    /// for a numeric target).
    pub fn positives(&self) -> Option<usize> {
        self.labels
            .as_ref()
            .map(|l| l.iter().filter(|b| **b).count())
    }

    /// Per numeric feature column, in schema order: count, sum and sum of squares of
    /// the observed (non-missing, non-imputed) cells.
    pub fn numeric_stats(&self) -> Vec<NumericStats> {
        self.columns
            .iter()
            .filter_map(|c| match &c.data {
                ColumnData::Numeric { values, .. } => {
                    let mut stats = NumericStats {
                        column: c.name.clone(),
                        count: 0,
                        sum: 0.0,
                        sum_sq: 0.0,
                    };
                    for x in values.iter().flatten() {
                        stats.count += 1;
                        stats.sum += x;
                        stats.sum_sq += x * x;
                    }
                    Some(stats)
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        Dataset::new(
            vec!["a".into(), "b".into(), "c".into()],
            Some(vec![true, false, true]),
            vec![
                FeatureColumnData {
                    name: "n".into(),
                    data: ColumnData::Numeric {
                        impute: NumericImpute::Mean,
                        values: vec![Some(1.0), None, Some(3.0)],
                    },
                },
                FeatureColumnData {
                    name: "f".into(),
                    data: ColumnData::Boolean {
                        impute: false,
                        values: vec![Some(true), None, None],
                    },
                },
            ],
        )
    }

    #[test]
    fn labels_and_stats() {
        let d = dataset();
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(d.labels().unwrap().to_vec(), [1.0, 0.0, 1.0]);
        assert_eq!(d.positives(), Some(2));
        assert_eq!(
            d.numeric_stats(),
            [NumericStats {
                column: "n".into(),
                count: 2,
                sum: 4.0,
                sum_sq: 10.0
            }]
        );
        assert_eq!(d.columns[1].missing_count(), 2);
        assert_eq!(d.feature_names(), ["n", "f"]);
    }

    #[test]
    fn no_label_is_an_error() {
        let mut d = dataset();
        d.labels = None;
        assert!(matches!(d.labels(), Err(DataError::NoLabel)));
    }

    #[test]
    fn numeric_targets() {
        let d = dataset();
        assert_eq!(d.label_kind(), Some(LabelKind::Binary));
        let t = Dataset::with_targets(
            vec!["a".into(), "b".into(), "c".into()],
            vec![20.5, 99.0, 64.25],
            d.columns.clone(),
        );
        assert_eq!(t.label_kind(), Some(LabelKind::Numeric));
        assert_eq!(t.labels().unwrap().to_vec(), [20.5, 99.0, 64.25]);
        assert_eq!(t.positives(), None);
        let sub = t.subset(&[2, 0, 7]);
        assert_eq!(sub.labels().unwrap().to_vec(), [64.25, 20.5]);
        assert_eq!(sub.label_kind(), Some(LabelKind::Numeric));
        let mut none = dataset();
        none.labels = None;
        assert_eq!(none.label_kind(), None);
    }
}
