//! Per-user profiles: for every user of a split, the model's prediction, the
//! few features that pushed the user's score most (per-feature contributions
//! `w_i·x_i` of the linear score, which add up to the score minus the
//! intercept), and the user's segment. Written locally; nothing leaves the
//! partner.

use std::path::Path;

use fedprofile_data::{Dataset, Schema};
use fedprofile_learning::{FeatureSpec, ModelDocument};
use ndarray::Array2;

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

/// Writes `out` with one row per user of `split`; returns the row count.
///
/// Columns: `user_id`; for each of `models`, its prediction columns (logistic:
/// `<target>_probability`, `logit`; linear: `<target>_predicted`, `score`;
/// softmax: `<target>_predicted`, `<target>_probability` (of the predicted
/// class), one `<target>_probability_<class>` per class, `score` (the predicted
/// class's logit)), then `intercept`, the `top` largest |contributions| as
/// `feature_i`, `contribution_i`, and `other_contribution` (the sum of all the
/// others), so that `Σ contribution_i + other_contribution = score − intercept`
/// (the logit for logistic regression); with several models, these per-model
/// columns (all but the prediction columns, which name their target already)
/// are prefixed with `<target>_`; with `segments`, `segment` and
/// `segment_distance` (squared distance to the segment's centroid).
pub fn profile(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    model_paths: &[std::path::PathBuf],
    segments_path: Option<&Path>,
    top: usize,
    out: &Path,
) -> Result<usize, ScoreError> {
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
    let mut predictions = Vec::new();
    for (model, path) in models.iter().zip(model_paths) {
        let prefix = if models.len() > 1 {
            format!("{}_", model.model.target_column())
        } else {
            String::new()
        };
        header.extend(model.columns.iter().cloned());
        header.push(format!("{prefix}{}", model.score));
        header.push(format!("{prefix}intercept"));
        for i in 1..=top {
            header.push(format!("{prefix}feature_{i}"));
            header.push(format!("{prefix}contribution_{i}"));
        }
        header.push(format!("{prefix}other_contribution"));
        let features = model.model.features();
        let x = encode(dataset, features, path)?;
        let rows = model
            .model
            .model()
            .ops()
            .profile_rows(&model.model, x.view())
            .map_err(|e| mismatch(path)(e.to_string()))?;
        predictions.push((rows, features.entry_names()));
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
        for (predictions, names) in &predictions {
            let p = &predictions[row];
            record.extend(p.columns.iter().cloned());
            record.push(format!("{:.6}", p.intercept));
            let c = &p.contributions;
            let mut order: Vec<usize> = (0..c.len()).collect();
            order.sort_by(|&a, &b| c[b].abs().total_cmp(&c[a].abs()));
            let shown = top.min(order.len());
            for &j in &order[..shown] {
                record.push(names.get(j).cloned().unwrap_or_default());
                record.push(format!("{:.6}", c[j]));
            }
            for _ in shown..top {
                record.push(String::new());
                record.push(String::new());
            }
            let other: f64 = order[shown..].iter().map(|&j| c[j]).sum();
            record.push(format!("{other:.6}"));
            debug_assert!((c.sum() - (p.score - p.intercept)).abs() < 1e-6);
        }
        if let Some(assigned) = &assigned {
            let (segment, distance) = assigned[row];
            record.push(segment.to_string());
            record.push(format!("{distance:.6}"));
        }
        writer.row(&record)?;
    }
    writer.finish()?;
    Ok(dataset.len())
}
