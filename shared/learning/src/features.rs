//! The feature specification: how a fused user row becomes a model input vector.
//!
//! A `FeatureSpec` is built by the coordinator from the clients' statistics (global
//! means and standard deviations for numeric columns) and the schema's vocabularies,
//! sent with every training and evaluation task, and stored in the model file, so
//! that a partner scores its users with exactly the encoding the model was trained on.
//!
//! Layout of the encoded vector, column by column in `columns` order:
//! - `Numeric`: one value, `(x - mean) / std` (`std` of 0 is treated as 1);
//! - `Boolean`: one value, 1.0 for true and 0.0 for false;
//! - `Categorical`: one-hot over `vocabulary`, followed by one extra "unseen" slot
//!   that is set for any value outside the vocabulary (and for a missing value
//!   imputed as unknown).
//!
//! `reference` (optional, absent in model files written before it existed and
//! in runs under differential privacy) is the federation's mean encoded row
//! from the statistics phase: 0 for a numeric entry (the federated mean, once
//! standardised) and the federation's share of users in each 0/1 entry (a
//! boolean, a one-hot slot). `profile` measures contributions against it.

use serde::{Deserialize, Serialize};

/// One input column of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureColumn {
    /// A standardized number.
    Numeric {
        /// Column name in the schema.
        name: String,
        /// Global (federated) mean.
        mean: f64,
        /// Global (federated) standard deviation.
        std: f64,
    },
    /// A 0/1 flag.
    Boolean {
        /// Column name in the schema.
        name: String,
    },
    /// A one-hot encoded category with an extra slot for unseen values.
    Categorical {
        /// Column name in the schema.
        name: String,
        /// Known values, already trimmed and case-folded.
        vocabulary: Vec<String>,
    },
}

impl FeatureColumn {
    /// The schema column this feature comes from.
    pub fn name(&self) -> &str {
        match self {
            FeatureColumn::Numeric { name, .. }
            | FeatureColumn::Boolean { name }
            | FeatureColumn::Categorical { name, .. } => name,
        }
    }

    /// How many entries of the encoded vector this column takes.
    pub fn width(&self) -> usize {
        match self {
            FeatureColumn::Numeric { .. } | FeatureColumn::Boolean { .. } => 1,
            FeatureColumn::Categorical { vocabulary, .. } => vocabulary.len() + 1,
        }
    }

    /// Names of the encoded entries, e.g. `tenure`, `contract=one year`, `contract=<unseen>`.
    pub fn entry_names(&self) -> Vec<String> {
        match self {
            FeatureColumn::Numeric { name, .. } | FeatureColumn::Boolean { name } => {
                vec![name.clone()]
            }
            FeatureColumn::Categorical { name, vocabulary } => vocabulary
                .iter()
                .map(|v| format!("{name}={v}"))
                .chain(std::iter::once(format!("{name}=<unseen>")))
                .collect(),
        }
    }
}

/// The ordered list of model input columns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Columns in encoding order.
    pub columns: Vec<FeatureColumn>,
    /// The federation's mean encoded row (`dim()` long), when the statistics
    /// phase pooled the partners' 0/1 counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Vec<f64>>,
}

impl FeatureSpec {
    /// A spec of these columns, without a reference row.
    pub fn new(columns: Vec<FeatureColumn>) -> FeatureSpec {
        FeatureSpec {
            columns,
            reference: None,
        }
    }

    /// The encoded entries each column takes, as index ranges, in order.
    pub fn column_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut start = 0;
        self.columns
            .iter()
            .map(|c| {
                let range = start..start + c.width();
                start = range.end;
                range
            })
            .collect()
    }

    /// Length of the encoded feature vector (without the intercept).
    pub fn dim(&self) -> usize {
        self.columns.iter().map(FeatureColumn::width).sum()
    }

    /// Names of every encoded entry, in order; `dim()` long.
    pub fn entry_names(&self) -> Vec<String> {
        self.columns
            .iter()
            .flat_map(FeatureColumn::entry_names)
            .collect()
    }

    /// Whether each encoded entry is a 0/1 column (a boolean, or a one-hot
    /// slot of a categorical column) rather than a standardised number, in
    /// encoding order; `dim()` long.
    pub fn binary_entries(&self) -> Vec<bool> {
        self.columns
            .iter()
            .flat_map(|c| {
                let binary = !matches!(c, FeatureColumn::Numeric { .. });
                std::iter::repeat_n(binary, c.width())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dim_counts_unseen_slot() {
        let spec = FeatureSpec {
            reference: None,
            columns: vec![
                FeatureColumn::Numeric {
                    name: "tenure".into(),
                    mean: 1.0,
                    std: 2.0,
                },
                FeatureColumn::Boolean {
                    name: "partner".into(),
                },
                FeatureColumn::Categorical {
                    name: "contract".into(),
                    vocabulary: vec!["month-to-month".into(), "one year".into()],
                },
            ],
        };
        assert_eq!(spec.dim(), 5);
        assert_eq!(spec.entry_names()[4], "contract=<unseen>");
        let json = serde_json::to_string(&spec).unwrap();
        let back: FeatureSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
