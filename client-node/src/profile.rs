//! Per-user profiles: for every user of a split, the model's prediction, the
//! few columns that pushed the user's score most away from a reference, and
//! the user's segment. Written locally; nothing leaves the partner.
//!
//! The reference of a linear family is the federation's mean encoded row
//! (the model file's `features.reference`, from the statistics phase): a
//! numeric column's contribution is `w·(x − mean)`, a category's is measured
//! against its base rate, so a category most users have pushes nobody's score
//! much. Model files without that row (older files, runs under differential
//! privacy) fall back to the partner's own mean row of the split, and say so.
//! Trees are explained by TreeSHAP against their expected value. Either way
//! `reference + Σ contributions = score` exactly. A column's encoded entries
//! (the one-hot slots of a category) are summed into one driver, named after
//! the user's value (`contract=month-to-month`).

use std::ops::Range;
use std::path::Path;

use fedprofile_data::{Dataset, Schema};
use fedprofile_learning::{FeatureColumn, FeatureSpec, ModelDocument, ProfileRow};
use ndarray::{Array1, Array2, ArrayView1, Axis};

use crate::score::{CsvOut, ScoreError};

fn mismatch(path: &Path) -> impl Fn(String) -> ScoreError + '_ {
    move |reason| ScoreError::Mismatch {
        path: path.to_path_buf(),
        reason,
    }
}

/// A loaded supervised model: the model, the names of its prediction columns
/// (the last one, `score`, is the score the contributions explain) and its
/// target column.
struct Loaded {
    model: ModelDocument,
    columns: Vec<String>,
    score: String,
}

fn load_predictor(path: &Path) -> Result<Loaded, ScoreError> {
    let model = ModelDocument::load(path)?;
    let Some(mut columns) = model.model().ops().profile_header(&model) else {
        return Err(mismatch(path)(format!(
            "it is a segmentation ({}) model: pass it with --segments",
            model.model_type()
        )));
    };
    let score = columns.pop().unwrap_or_else(|| "score".into());
    Ok(Loaded {
        model,
        columns,
        score,
    })
}

fn load_segments(path: &Path) -> Result<ModelDocument, ScoreError> {
    let model = ModelDocument::load(path)?;
    if model
        .model()
        .ops()
        .segments(&model, Array2::zeros((0, model.features().dim())).view())
        .is_none()
    {
        return Err(mismatch(path)(format!(
            "--segments needs a k-means model, this is a {} model",
            model.model_type()
        )));
    }
    Ok(model)
}

fn encode(dataset: &Dataset, spec: &FeatureSpec, path: &Path) -> Result<Array2<f64>, ScoreError> {
    dataset
        .encode(spec)
        .map_err(|e| mismatch(path)(e.to_string()))
}

/// What `profile` wrote: the number of users, and one note per model whose
/// contributions are measured against the partner's own mean row (the model
/// file has no federation reference row).
#[derive(Debug, Clone, PartialEq)]
pub struct Profiled {
    /// Rows written (users of the split).
    pub rows: usize,
    /// Sentences for the operator, one per model that fell back.
    pub notes: Vec<String>,
}

/// The reference row a linear family's contributions are measured against:
/// the federation's (from the model file) or, without one, the column means of
/// the partner's own encoded rows `x` (with a note saying so).
fn reference_row(
    features: &FeatureSpec,
    x: &Array2<f64>,
    path: &Path,
    split: &str,
) -> (Array1<f64>, Option<String>) {
    if let Some(reference) = &features.reference
        && reference.len() == features.dim()
    {
        return (Array1::from_vec(reference.clone()), None);
    }
    let local = x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(features.dim()));
    let note = format!(
        "{}: the model file has no federation reference row (written before it existed, or trained under differential privacy); contributions are measured against this partner's own mean row of split '{split}'",
        path.display()
    );
    (local, Some(note))
}

/// One driver per column of `features`: its name for this user (a category:
/// `column=value` of the user's one-hot slot; a boolean: `column=true|false`;
/// a number: the column) and the sum of its entries' contributions.
fn drivers(
    features: &FeatureSpec,
    ranges: &[Range<usize>],
    names: &[String],
    x: ArrayView1<f64>,
    contributions: &Array1<f64>,
) -> Vec<(String, f64)> {
    features
        .columns
        .iter()
        .zip(ranges)
        .map(|(column, range)| {
            let name = match column {
                FeatureColumn::Numeric { name, .. } => name.clone(),
                FeatureColumn::Boolean { name } => format!("{name}={}", x[range.start] > 0.5),
                FeatureColumn::Categorical { name, .. } => range
                    .clone()
                    .find(|&j| x[j] > 0.5)
                    .and_then(|j| names.get(j).cloned())
                    .unwrap_or_else(|| name.clone()),
            };
            let sum = range.clone().map(|j| contributions[j]).sum();
            (name, sum)
        })
        .collect()
}

/// One model's profile: its rows, its encoding and how many drivers a row shows.
struct Explained {
    rows: Vec<ProfileRow>,
    x: Array2<f64>,
    features: FeatureSpec,
    shown: usize,
}

impl Explained {
    /// The model's cells of user `row`: its prediction columns, the reference
    /// score, the `shown` largest drivers and, when some are not shown, the
    /// sum of the others.
    fn cells(&self, row: usize, record: &mut Vec<String>) {
        let p = &self.rows[row];
        record.extend(p.columns.iter().cloned());
        record.push(format!("{:.6}", p.reference));
        let ranges = self.features.column_ranges();
        let names = self.features.entry_names();
        let mut drivers = drivers(
            &self.features,
            &ranges,
            &names,
            self.x.row(row),
            &p.contributions,
        );
        drivers.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        for (name, c) in &drivers[..self.shown] {
            record.push(name.clone());
            record.push(format!("{c:.6}"));
        }
        if self.shown < drivers.len() {
            let other: f64 = drivers[self.shown..].iter().map(|d| d.1).sum();
            record.push(format!("{other:.6}"));
        }
    }
}

/// Writes `out` with one row per user of `split`.
///
/// Columns: `user_id`; for each of `models`, with `<target>_` before every
/// column (the same with one model or several): its prediction columns
/// (logistic: `<target>_probability`, `<target>_logit`; linear:
/// `<target>_predicted`, `<target>_score`; softmax: `<target>_predicted`,
/// `<target>_probability` (of the predicted class), one
/// `<target>_probability_<class>` per class, `<target>_score` (the predicted
/// class's logit); trees: as logistic or linear), then `<target>_reference`
/// (the reference's score), the `top` largest |contributions| as
/// `<target>_driver_i`, `<target>_contribution_i` (one per column of the
/// schema, never more than it has), and `<target>_other_contribution` (the sum
/// of the others, only when some are not shown), so that `reference + Σ
/// contributions = score` (the last prediction column); with `segments`,
/// `segment` and `segment_distance` (squared distance to the segment's
/// centroid).
pub fn profile(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    model_paths: &[std::path::PathBuf],
    segments_path: Option<&Path>,
    top: usize,
    out: &Path,
) -> Result<Profiled, ScoreError> {
    let schema = Schema::from_path(schema_path)?;
    let models = model_paths
        .iter()
        .map(|p| load_predictor(p))
        .collect::<Result<Vec<_>, _>>()?;
    if models.len() > 1 {
        for (i, m) in models.iter().enumerate() {
            let target = m.model.target_column();
            if let Some(j) = models[..i]
                .iter()
                .position(|o| o.model.target_column() == target)
            {
                return Err(mismatch(&model_paths[i])(format!(
                    "it predicts '{target}' like {}: profile one model per target",
                    model_paths[j].display()
                )));
            }
        }
    }
    let segments = segments_path.map(load_segments).transpose()?;
    // Every user is scored, also those whose label is blank or not yet known.
    let loaded = fedprofile_data::load_split(&schema.without_label(), data_dir, split)?;
    let dataset = &loaded.dataset;

    let mut header = vec!["user_id".to_string()];
    let mut explained = Vec::new();
    let mut notes = Vec::new();
    for (model, path) in models.iter().zip(model_paths) {
        let target = model.model.target_column();
        let prefix = if target.is_empty() {
            String::new()
        } else {
            format!("{target}_")
        };
        let features = model.model.features().clone();
        let x = encode(dataset, &features, path)?;
        let (reference, note) = reference_row(&features, &x, path, split);
        let rows = model
            .model
            .model()
            .ops()
            .profile_rows(&model.model, x.view(), reference.view())
            .map_err(|e| mismatch(path)(e.to_string()))?;
        if model.model.model().ops().profile_uses_reference() {
            notes.extend(note);
        }
        let shown = top.min(features.columns.len());
        header.extend(model.columns.iter().cloned());
        header.push(model.score.clone());
        header.push(format!("{prefix}reference"));
        for i in 1..=shown {
            header.push(format!("{prefix}driver_{i}"));
            header.push(format!("{prefix}contribution_{i}"));
        }
        if shown < features.columns.len() {
            header.push(format!("{prefix}other_contribution"));
        }
        explained.push(Explained {
            rows,
            x,
            features,
            shown,
        });
    }
    let assigned = match (&segments, segments_path) {
        (Some(model), Some(path)) => {
            header.push("segment".into());
            header.push("segment_distance".into());
            let x = encode(dataset, model.features(), path)?;
            let assigned = model
                .model()
                .ops()
                .segments(model, x.view())
                .unwrap_or_else(|| Ok(Vec::new()))
                .map_err(|e| mismatch(path)(e.to_string()))?;
            Some(assigned)
        }
        _ => None,
    };

    let mut writer = CsvOut::create(out, &header)?;
    for (row, id) in dataset.ids().iter().enumerate() {
        let mut record = vec![id.clone()];
        for model in &explained {
            model.cells(row, &mut record);
        }
        if let Some(assigned) = &assigned {
            let (segment, distance) = assigned[row];
            record.push(segment.to_string());
            record.push(format!("{distance:.6}"));
        }
        writer.row(&record)?;
    }
    writer.finish()?;
    Ok(Profiled {
        rows: dataset.len(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedprofile_learning::{AnyModel, ModelFamily, ModelTarget, RunProvenance};
    use ndarray::array;

    /// `balance` (better / good / bad, + unseen), `age` (standardised) and
    /// `partner` (a flag): a logistic model whose weight on `balance=better`
    /// is the largest of the model, on a federation where 90 % of the users
    /// are `better`.
    fn fixture() -> (ModelDocument, Array2<f64>) {
        let features = FeatureSpec {
            columns: vec![
                FeatureColumn::Categorical {
                    name: "balance".into(),
                    vocabulary: vec!["better".into(), "good".into(), "bad".into()],
                },
                FeatureColumn::Numeric {
                    name: "age".into(),
                    mean: 40.0,
                    std: 10.0,
                },
                FeatureColumn::Boolean {
                    name: "partner".into(),
                },
            ],
            reference: Some(vec![0.9, 0.05, 0.05, 0.0, 0.0, 0.5]),
        };
        // [intercept, better, good, bad, unseen, age, partner]
        let params = array![-1.0, 2.0, -0.5, 1.0, 0.0, 0.8, 1.0];
        let doc = ModelDocument::new(
            AnyModel::from_parts(ModelFamily::LogisticRegression, params, 1).unwrap(),
            features,
            ModelTarget {
                column: "churn".into(),
                positive_value: Some("yes".into()),
            },
            Vec::new(),
            RunProvenance {
                run_id: "r".into(),
                rounds: 1,
                clients: vec!["a".into()],
                created_at: "t0".into(),
                metrics: None,
                privacy: None,
            },
        )
        .unwrap();
        // 20 users: 18 `better`, one `good`, one `bad`; ages and flags vary.
        let mut x = Array2::zeros((20, 6));
        for row in 0..20 {
            let slot = match row {
                18 => 1,
                19 => 2,
                _ => 0,
            };
            x[[row, slot]] = 1.0;
            x[[row, 4]] = (row as f64 - 9.5) / 5.0;
            x[[row, 5]] = (row % 2) as f64;
        }
        (doc, x)
    }

    fn explain(doc: &ModelDocument, x: &Array2<f64>, top: usize) -> Explained {
        let reference = Array1::from_vec(doc.features().reference.clone().unwrap());
        let rows = doc
            .model()
            .ops()
            .profile_rows(doc, x.view(), reference.view())
            .unwrap();
        Explained {
            rows,
            x: x.clone(),
            features: doc.features().clone(),
            shown: top.min(doc.features().columns.len()),
        }
    }

    #[test]
    fn reference_and_contributions_add_up_to_the_logit() {
        let (doc, x) = fixture();
        let explained = explain(&doc, &x, 3);
        for p in &explained.rows {
            let total = p.reference + p.contributions.sum();
            assert!((total - p.score).abs() < 1e-9, "{total} vs {}", p.score);
        }
        // The reference score is the score of the federation's mean row:
        // -1 + 2·0.9 − 0.5·0.05 + 1·0.05 + 1·0.5.
        assert!((explained.rows[0].reference - 1.325).abs() < 1e-12);
    }

    #[test]
    fn the_common_category_is_not_a_driver_for_being_common() {
        let (doc, x) = fixture();
        let explained = explain(&doc, &x, 1);
        let names = doc.features().entry_names();
        let ranges = doc.features().column_ranges();
        for row in 0..18 {
            let p = &explained.rows[row];
            let drivers = drivers(
                doc.features(),
                &ranges,
                &names,
                x.row(row),
                &p.contributions,
            );
            assert_eq!(drivers[0].0, "balance=better");
            // Against its base rate `better` moves the logit by 2 − 1.825.
            assert!((drivers[0].1 - 0.175).abs() < 1e-12);
            let mut record = Vec::new();
            explained.cells(row, &mut record);
            assert_ne!(record[3], "balance=better", "row {row}: {record:?}");
            // Measured against "no category" (w·x), it was everyone's top
            // driver: 2 against at most 0.8·|age| and 1·partner.
            assert!(2.0 > (0.8 * x[[row, 4]]).abs().max(x[[row, 5]]));
        }
        // A rare category far from the base rate stands out: `good` moves
        // the logit by −0.5 − 1.825.
        let mut record = Vec::new();
        explained.cells(18, &mut record);
        assert_eq!(record[3], "balance=good");
    }

    #[test]
    fn no_padding_past_the_columns() {
        let (doc, x) = fixture();
        let explained = explain(&doc, &x, 100);
        let mut record = Vec::new();
        explained.cells(0, &mut record);
        // probability, logit, reference, then 3 drivers and no "other".
        assert_eq!(record.len(), 3 + 2 * 3);
        assert!(record.iter().all(|c| !c.is_empty()));
        let names: Vec<&String> = record[3..].iter().step_by(2).collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&&"partner=false".to_string()));
    }
}
