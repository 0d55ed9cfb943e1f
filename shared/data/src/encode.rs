//! Encoding a dataset into the model's input matrix, following the layout of
//! [`fedprofile_learning::features`] exactly, with imputation:
//!
//! - numeric: `(x - mean) / std` (std 0 treated as 1); a missing cell is the spec
//!   mean for `impute = "mean"` (so 0) or the constant, standardized, otherwise;
//! - boolean: 1.0 / 0.0; a missing cell takes the schema constant;
//! - categorical: one-hot over the spec vocabulary plus the unseen slot; values outside
//!   the spec vocabulary go to the unseen slot; a missing cell goes to the unseen slot
//!   for `impute = "unknown"` or to its constant's slot otherwise.

use std::collections::HashMap;

use fedprofile_learning::{FeatureColumn, FeatureSpec};
use ndarray::Array2;

use crate::dataset::{Cat, ColumnData, Dataset};
use crate::error::DataError;
use crate::schema::{CategoricalImpute, NumericImpute};

fn spec_kind(c: &FeatureColumn) -> &'static str {
    match c {
        FeatureColumn::Numeric { .. } => "numeric",
        FeatureColumn::Boolean { .. } => "boolean",
        FeatureColumn::Categorical { .. } => "categorical",
    }
}

impl Dataset {
    /// Encodes every user into a row of `spec.dim()` values, in `spec` column order.
    ///
    /// Fails, naming the column, if the spec names a column that is not a feature of
    /// the schema, gives it another kind, or carries a non-finite mean or an invalid std.
    pub fn encode(&self, spec: &FeatureSpec) -> Result<Array2<f64>, DataError> {
        let n = self.len();
        let mut out = Array2::<f64>::zeros((n, spec.dim()));
        let mut offset = 0;
        for fc in &spec.columns {
            let name = fc.name();
            let column = self
                .columns
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| DataError::UnknownFeatureColumn {
                    column: name.to_owned(),
                })?;
            let mismatch = || DataError::FeatureKindMismatch {
                column: name.to_owned(),
                expected: column.data.kind_name(),
                found: spec_kind(fc),
            };
            match (fc, &column.data) {
                (
                    FeatureColumn::Numeric { mean, std, .. },
                    ColumnData::Numeric { impute, values },
                ) => {
                    if !mean.is_finite() {
                        return Err(invalid(name, format!("mean {mean} is not finite")));
                    }
                    if !std.is_finite() || *std < 0.0 {
                        return Err(invalid(
                            name,
                            format!("std {std} is not a finite non-negative number"),
                        ));
                    }
                    let std = if *std == 0.0 { 1.0 } else { *std };
                    let fill = match impute {
                        NumericImpute::Mean => *mean,
                        NumericImpute::Constant(c) => *c,
                    };
                    for (u, v) in values.iter().enumerate() {
                        out[[u, offset]] = (v.unwrap_or(fill) - mean) / std;
                    }
                }
                (FeatureColumn::Boolean { .. }, ColumnData::Boolean { impute, values }) => {
                    for (u, v) in values.iter().enumerate() {
                        out[[u, offset]] = if v.unwrap_or(*impute) { 1.0 } else { 0.0 };
                    }
                }
                (
                    FeatureColumn::Categorical {
                        vocabulary: spec_vocab,
                        ..
                    },
                    ColumnData::Categorical {
                        vocabulary,
                        impute,
                        values,
                    },
                ) => {
                    let unseen = spec_vocab.len();
                    let slot_of: HashMap<&str, usize> = spec_vocab
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v.as_str(), i))
                        .collect();
                    let slot = |v: &str| slot_of.get(v).copied().unwrap_or(unseen);
                    // schema vocabulary index -> spec slot
                    let known: Vec<usize> = vocabulary.iter().map(|v| slot(v)).collect();
                    let missing = match impute {
                        CategoricalImpute::Unknown => unseen,
                        CategoricalImpute::Constant(v) => slot(v),
                    };
                    for (u, v) in values.iter().enumerate() {
                        let s = match v {
                            Cat::Known(i) => known.get(*i as usize).copied().unwrap_or(unseen),
                            Cat::Unseen => unseen,
                            Cat::Missing => missing,
                        };
                        out[[u, offset + s]] = 1.0;
                    }
                }
                _ => return Err(mismatch()),
            }
            offset += fc.width();
        }
        Ok(out)
    }
}

fn invalid(column: &str, message: String) -> DataError {
    DataError::InvalidFeatureSpec {
        column: column.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::FeatureColumnData;

    fn dataset() -> Dataset {
        Dataset::new(
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            None,
            vec![
                FeatureColumnData {
                    name: "n".into(),
                    data: ColumnData::Numeric {
                        impute: NumericImpute::Mean,
                        values: vec![Some(4.0), None, Some(0.0), Some(2.0)],
                    },
                },
                FeatureColumnData {
                    name: "k".into(),
                    data: ColumnData::Numeric {
                        impute: NumericImpute::Constant(0.0),
                        values: vec![None, Some(2.0), Some(2.0), Some(2.0)],
                    },
                },
                FeatureColumnData {
                    name: "c".into(),
                    data: ColumnData::Categorical {
                        vocabulary: vec!["x".into(), "y".into(), "z".into()],
                        impute: CategoricalImpute::Unknown,
                        values: vec![Cat::Known(0), Cat::Known(1), Cat::Unseen, Cat::Missing],
                    },
                },
                FeatureColumnData {
                    name: "d".into(),
                    data: ColumnData::Categorical {
                        vocabulary: vec!["p".into(), "q".into()],
                        impute: CategoricalImpute::Constant("q".into()),
                        values: vec![Cat::Known(0), Cat::Missing, Cat::Known(1), Cat::Known(0)],
                    },
                },
                FeatureColumnData {
                    name: "f".into(),
                    data: ColumnData::Boolean {
                        impute: true,
                        values: vec![Some(false), None, Some(true), Some(false)],
                    },
                },
            ],
        )
    }

    fn spec() -> FeatureSpec {
        FeatureSpec {
            reference: None,
            columns: vec![
                FeatureColumn::Numeric {
                    name: "n".into(),
                    mean: 2.0,
                    std: 2.0,
                },
                FeatureColumn::Numeric {
                    name: "k".into(),
                    mean: 1.0,
                    std: 0.0,
                },
                // spec vocabulary differs from the schema: "z" is unseen for this model
                FeatureColumn::Categorical {
                    name: "c".into(),
                    vocabulary: vec!["y".into(), "x".into()],
                },
                FeatureColumn::Categorical {
                    name: "d".into(),
                    vocabulary: vec!["p".into(), "q".into()],
                },
                FeatureColumn::Boolean { name: "f".into() },
            ],
        }
    }

    /// Entries `from..to` of row `r` (the `s!` macro trips `forbid(unsafe_code)`).
    fn part(x: &Array2<f64>, r: usize, from: usize, to: usize) -> Vec<f64> {
        x.row(r)
            .iter()
            .skip(from)
            .take(to - from)
            .copied()
            .collect()
    }

    #[test]
    fn layout_and_imputation() {
        let x = dataset().encode(&spec()).unwrap();
        assert_eq!(x.dim(), (4, 1 + 1 + 3 + 3 + 1));
        // n: (x - 2) / 2, missing -> mean -> 0
        assert_eq!(x.column(0).to_vec(), [1.0, 0.0, -1.0, 0.0]);
        // k: std 0 -> 1, missing -> constant 0 -> (0 - 1) / 1
        assert_eq!(x.column(1).to_vec(), [-1.0, 1.0, 1.0, 1.0]);
        // c: [y, x, unseen]; z and missing -> unseen
        assert_eq!(part(&x, 0, 2, 5), [0.0, 1.0, 0.0]);
        assert_eq!(part(&x, 1, 2, 5), [1.0, 0.0, 0.0]);
        assert_eq!(part(&x, 2, 2, 5), [0.0, 0.0, 1.0]);
        assert_eq!(part(&x, 3, 2, 5), [0.0, 0.0, 1.0]);
        // d: missing -> constant q
        assert_eq!(part(&x, 1, 5, 8), [0.0, 1.0, 0.0]);
        // f: missing -> true
        assert_eq!(x.column(8).to_vec(), [0.0, 1.0, 1.0, 0.0]);
        // every categorical block is one-hot
        for r in 0..x.nrows() {
            assert_eq!(part(&x, r, 2, 5).iter().sum::<f64>(), 1.0);
            assert_eq!(part(&x, r, 5, 8).iter().sum::<f64>(), 1.0);
        }
    }

    #[test]
    fn unknown_column_and_kind_mismatch_are_named() {
        let d = dataset();
        let spec = FeatureSpec {
            reference: None,
            columns: vec![FeatureColumn::Boolean {
                name: "nope".into(),
            }],
        };
        assert_eq!(
            d.encode(&spec).unwrap_err().to_string(),
            "feature spec: column 'nope' is not a feature column of the schema"
        );
        let spec = FeatureSpec {
            reference: None,
            columns: vec![FeatureColumn::Boolean { name: "n".into() }],
        };
        assert_eq!(
            d.encode(&spec).unwrap_err().to_string(),
            "feature spec: column 'n' is numeric in the schema, not boolean"
        );
        let spec = FeatureSpec {
            reference: None,
            columns: vec![FeatureColumn::Numeric {
                name: "n".into(),
                mean: f64::NAN,
                std: 1.0,
            }],
        };
        assert!(matches!(
            d.encode(&spec),
            Err(DataError::InvalidFeatureSpec { .. })
        ));
    }

    #[test]
    fn empty_spec_and_subset() {
        let d = dataset();
        assert_eq!(d.encode(&FeatureSpec::default()).unwrap().dim(), (4, 0));
        let spec = FeatureSpec {
            reference: None,
            columns: vec![FeatureColumn::Boolean { name: "f".into() }],
        };
        assert_eq!(d.encode(&spec).unwrap().dim(), (4, 1));
    }
}
