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

/// The training target of every user, by the schema's kind of label.
#[derive(Debug, Clone, PartialEq)]
enum Labels {
    /// The schema declares no label, target or class column.
    None,
    /// A `type = "label"` column: true for the positive value.
    Binary(Vec<bool>),
    /// A `type = "target"` column: the parsed values.
    Numeric(Vec<f64>),
    /// A `type = "class"` column: the class indices, each below `classes`.
    Multiclass {
        /// Number of declared classes.
        classes: usize,
        /// 0-based class index per user, in declared order.
        index: Vec<u32>,
    },
}

impl Labels {
    /// The same kind of labels for the users at `rows` (all in range).
    fn subset(&self, rows: &[usize]) -> Labels {
        match self {
            Labels::None => Labels::None,
            Labels::Binary(l) => Labels::Binary(rows.iter().map(|&r| l[r]).collect()),
            Labels::Numeric(t) => Labels::Numeric(rows.iter().map(|&r| t[r]).collect()),
            Labels::Multiclass { classes, index } => Labels::Multiclass {
                classes: *classes,
                index: rows.iter().map(|&r| index[r]).collect(),
            },
        }
    }
}

/// The cleaned, fused rows of one split: one per user of the primary source.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    ids: Vec<String>,
    labels: Labels,
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
            labels: labels.map_or(Labels::None, Labels::Binary),
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
            labels: Labels::Numeric(targets),
            columns,
        }
    }

    /// A dataset with a multi-class label: one class index (below `classes`, the
    /// number of declared classes) per user.
    pub(crate) fn with_classes(
        ids: Vec<String>,
        classes: usize,
        index: Vec<u32>,
        columns: Vec<FeatureColumnData>,
    ) -> Self {
        Dataset {
            ids,
            labels: Labels::Multiclass { classes, index },
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
            labels: self.labels.subset(&rows),
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
    /// the parsed values; for a multi-class label (`type = "class"`) the 0-based index
    /// of the class in the schema's declared order (0.0, 1.0, 2.0, …). Rows with a
    /// missing or unparseable label, target or class were dropped (and counted) at
    /// cleaning, so this fails only when the schema declares none of them.
    pub fn labels(&self) -> Result<Array1<f64>, DataError> {
        match &self.labels {
            Labels::None => Err(DataError::NoLabel),
            Labels::Binary(l) => Ok(l.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect()),
            Labels::Numeric(t) => Ok(Array1::from(t.clone())),
            Labels::Multiclass { index, .. } => Ok(index.iter().map(|&i| f64::from(i)).collect()),
        }
    }

    /// Whether [`Dataset::labels`] holds a binary label, a numeric target or class
    /// indices (`None` if the schema declares none of them).
    pub fn label_kind(&self) -> Option<LabelKind> {
        match self.labels {
            Labels::None => None,
            Labels::Binary(_) => Some(LabelKind::Binary),
            Labels::Numeric(_) => Some(LabelKind::Numeric),
            Labels::Multiclass { .. } => Some(LabelKind::Multiclass),
        }
    }

    /// The numeric target values, if the schema declares a `type = "target"` column.
    pub(crate) fn targets(&self) -> Option<&[f64]> {
        match &self.labels {
            Labels::Numeric(t) => Some(t),
            _ => None,
        }
    }

    /// Users with the positive label, if the schema declares a binary label (`None`
    /// for a numeric target or a multi-class label).
    pub fn positives(&self) -> Option<usize> {
        match &self.labels {
            Labels::Binary(l) => Some(l.iter().filter(|b| **b).count()),
            _ => None,
        }
    }

    /// Users per class, one count per declared class in the schema's order (index `i`
    /// counts the users whose [`Dataset::labels`] value is `i`), if the schema declares
    /// a multi-class label (`None` otherwise). A class no user has counts 0.
    pub fn class_counts(&self) -> Option<Vec<u64>> {
        match &self.labels {
            Labels::Multiclass { classes, index } => {
                let mut counts = vec![0; *classes];
                for &i in index {
                    if let Some(c) = counts.get_mut(i as usize) {
                        *c += 1;
                    }
                }
                Some(counts)
            }
            _ => None,
        }
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
        d.labels = Labels::None;
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
        none.labels = Labels::None;
        assert_eq!(none.label_kind(), None);
        assert_eq!(none.class_counts(), None);
        assert_eq!(t.class_counts(), None);
        assert_eq!(d.class_counts(), None);
    }

    #[test]
    fn class_labels() {
        let d = Dataset::with_classes(
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            3,
            vec![2, 0, 2, 1],
            vec![FeatureColumnData {
                name: "n".into(),
                data: ColumnData::Numeric {
                    impute: NumericImpute::Mean,
                    values: vec![Some(1.0), None, Some(3.0), Some(4.0)],
                },
            }],
        );
        assert_eq!(d.label_kind(), Some(LabelKind::Multiclass));
        assert_eq!(d.labels().unwrap().to_vec(), [2.0, 0.0, 2.0, 1.0]);
        assert_eq!(d.class_counts(), Some(vec![1, 1, 2]));
        assert_eq!(d.positives(), None);
        assert_eq!(d.targets(), None);

        // subset keeps the kind and the number of classes, even for an absent class.
        let sub = d.subset(&[3, 0, 9, 2]);
        assert_eq!(sub.ids(), ["d", "a", "c"]);
        assert_eq!(sub.label_kind(), Some(LabelKind::Multiclass));
        assert_eq!(sub.labels().unwrap().to_vec(), [1.0, 2.0, 2.0]);
        assert_eq!(sub.class_counts(), Some(vec![0, 1, 2]));
        assert_eq!(sub.numeric_stats()[0].count, 3);
        let empty = d.subset(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.labels().unwrap().len(), 0);
        assert_eq!(empty.class_counts(), Some(vec![0, 0, 0]));
    }
}
