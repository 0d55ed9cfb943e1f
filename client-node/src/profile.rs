//! Per-user profiles: for every user of a split, the model's prediction, the
//! few features that pushed the user's score most (per-feature contributions
//! `w_i·x_i` of the linear score, which add up to the score minus the
//! intercept), and the user's segment. Written locally; nothing leaves the
//! partner.

use std::path::Path;

use fedprofile_data::{Dataset, Schema};
use fedprofile_learning::{
    FeatureSpec, KMeans, LinearRegression, LogisticRegression, ModelFileV2, SoftmaxRegression,
    VersionedModelFile,
};
use ndarray::{Array1, Array2};

use crate::score::ScoreError;

/// A supervised model of any family, as a profile uses it.
enum Predictor {
    Logistic(LogisticRegression),
    Linear(LinearRegression),
    Softmax(SoftmaxRegression, Vec<String>),
}

/// One user's prediction columns and the linear score the contributions explain.
struct Prediction {
    columns: Vec<String>,
    score: f64,
    intercept: f64,
    contributions: Array1<f64>,
}

fn mismatch(path: &Path) -> impl Fn(String) -> ScoreError + '_ {
    move |reason| ScoreError::Mismatch {
        path: path.to_path_buf(),
        reason,
    }
}

/// A loaded supervised model: the predictor, its encoding, the names of its
/// prediction columns (the last one is the score the contributions explain)
/// and its target column.
struct Loaded {
    predictor: Predictor,
    features: FeatureSpec,
    columns: Vec<String>,
    score: String,
    target: String,
}

fn load_predictor(path: &Path) -> Result<Loaded, ScoreError> {
    let (predictor, features, mut columns, target) = load_parts(path)?;
    let score = columns.pop().unwrap_or_else(|| "score".into());
    Ok(Loaded {
        predictor,
        features,
        columns,
        score,
        target,
    })
}

type Parts = (Predictor, FeatureSpec, Vec<String>, String);

fn load_parts(path: &Path) -> Result<Parts, ScoreError> {
    let err = mismatch(path);
    match VersionedModelFile::load(path)? {
        VersionedModelFile::V1(file) => {
            let name = if file.target.column.is_empty() {
                "score".to_string()
            } else {
                format!("{}_probability", file.target.column)
            };
            let model = file.to_model()?;
            let target = file.target.column.clone();
            Ok((
                Predictor::Logistic(model),
                file.features,
                vec![name, "logit".into()],
                target,
            ))
        }
        VersionedModelFile::V2(ModelFileV2::LinearRegression(file)) => {
            let model = file.to_model()?;
            Ok((
                Predictor::Linear(model),
                file.features,
                vec![format!("{}_predicted", file.target.column), "score".into()],
                file.target.column,
            ))
        }
        VersionedModelFile::V2(ModelFileV2::SoftmaxRegression(file)) => {
            let model = file.to_model()?;
            let target = &file.target.column;
            let mut header = vec![
                format!("{target}_predicted"),
                format!("{target}_probability"),
            ];
            header.extend(
                file.classes
                    .iter()
                    .map(|c| format!("{target}_probability_{}", c.replace(' ', "_"))),
            );
            header.push("score".into());
            Ok((
                Predictor::Softmax(model, file.classes.clone()),
                file.features,
                header,
                file.target.column,
            ))
        }
        VersionedModelFile::V2(ModelFileV2::KMeans(_)) => Err(err(
            "it is a segmentation (k-means) model: pass it with --segments".into(),
        )),
    }
}

fn predict(p: &Predictor, x: &Array2<f64>) -> Result<Vec<Prediction>, String> {
    let e = |e: fedprofile_learning::LearningError| e.to_string();
    let mut out = Vec::with_capacity(x.nrows());
    match p {
        Predictor::Logistic(m) => {
            let probs = m.predict_proba(x.view()).map_err(e)?;
            let logits = m.logits(x.view()).map_err(e)?;
            for (row, (p, z)) in probs.iter().zip(&logits).enumerate() {
                out.push(Prediction {
                    columns: vec![format!("{p:.6}"), format!("{z:.6}")],
                    score: *z,
                    intercept: m.intercept(),
                    contributions: m.contributions(x.row(row)).map_err(e)?,
                });
            }
        }
        Predictor::Linear(m) => {
            let predictions = m.predict(x.view()).map_err(e)?;
            for (row, y) in predictions.iter().enumerate() {
                out.push(Prediction {
                    columns: vec![format!("{y:.6}"), format!("{y:.6}")],
                    score: *y,
                    intercept: m.intercept(),
                    contributions: m.contributions(x.row(row)).map_err(e)?,
                });
            }
        }
        Predictor::Softmax(m, classes) => {
            let probs = m.predict_proba(x.view()).map_err(e)?;
            let logits = m.logits(x.view()).map_err(e)?;
            let predicted = m.predict(x.view()).map_err(e)?;
            for (row, &class) in predicted.iter().enumerate() {
                let mut columns = vec![
                    classes.get(class).cloned().unwrap_or_default(),
                    format!("{:.6}", probs[[row, class]]),
                ];
                columns.extend(probs.row(row).iter().map(|p| format!("{p:.6}")));
                let score = logits[[row, class]];
                columns.push(format!("{score:.6}"));
                out.push(Prediction {
                    columns,
                    score,
                    intercept: m.intercepts()[class],
                    contributions: m.contributions(x.row(row), class).map_err(e)?,
                });
            }
        }
    }
    Ok(out)
}

fn load_segments(path: &Path) -> Result<(KMeans, FeatureSpec), ScoreError> {
    match VersionedModelFile::load(path)? {
        VersionedModelFile::V2(ModelFileV2::KMeans(file)) => Ok((file.to_model()?, file.features)),
        other => Err(mismatch(path)(format!(
            "--segments needs a k-means model, this is a {} model",
            other.model_type()
        ))),
    }
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
            if let Some(j) = models[..i].iter().position(|o| o.target == m.target) {
                return Err(mismatch(&model_paths[i])(format!(
                    "it predicts '{}' like {}: profile one model per target",
                    m.target,
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
            format!("{}_", model.target)
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
        let x = encode(dataset, &model.features, path)?;
        predictions.push((
            predict(&model.predictor, &x).map_err(mismatch(path))?,
            model.features.entry_names(),
        ));
    }
    let assigned = match (&segments, segments_path) {
        (Some((model, spec)), Some(path)) => {
            header.push("segment".into());
            header.push("segment_distance".into());
            let x = encode(dataset, spec, path)?;
            Some(
                model
                    .assign(x.view())
                    .map_err(|e| mismatch(path)(e.to_string()))?,
            )
        }
        _ => None,
    };

    let write_err = |reason: String| ScoreError::Write {
        path: out.to_path_buf(),
        reason,
    };
    let mut writer = csv::Writer::from_path(out).map_err(|e| write_err(e.to_string()))?;
    writer
        .write_record(&header)
        .map_err(|e| write_err(e.to_string()))?;
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
        writer
            .write_record(&record)
            .map_err(|e| write_err(e.to_string()))?;
    }
    writer.flush().map_err(|e| write_err(e.to_string()))?;
    Ok(dataset.len())
}
