//! Scoring a partner's users with the global model: one row per user, written
//! locally. Nothing leaves the partner.

use std::path::{Path, PathBuf};

use fedprofile_data::Schema;
use fedprofile_learning::{ModelFileV2, VersionedModelFile};

/// Scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] fedprofile_data::DataError),
    /// The model file is unusable.
    #[error(transparent)]
    Model(#[from] fedprofile_learning::ModelFileError),
    /// The model does not fit this partner's data.
    #[error("model '{path}' does not fit this partner's data: {reason}")]
    Mismatch {
        /// The model file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output could not be written.
    #[error("cannot write '{path}': {reason}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Scores every user of `split` and writes one row per user to `out`; returns
/// the row count. Columns by model type: logistic regression `user_id,score`
/// (the probability); linear regression `user_id,prediction`; softmax
/// regression `user_id,class,probability`; k-means `user_id,segment,distance`.
pub fn score(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    model_path: &Path,
    out: &Path,
) -> Result<usize, ScoreError> {
    let schema = Schema::from_path(schema_path)?;
    let file = VersionedModelFile::load(model_path)?;
    // Every user is scored, also those whose label is blank or not yet known.
    let loaded = fedprofile_data::load_split(&schema.without_label(), data_dir, split)?;
    let mismatch = |reason: String| ScoreError::Mismatch {
        path: model_path.to_path_buf(),
        reason,
    };
    let x = loaded
        .dataset
        .encode(file.features())
        .map_err(|e| mismatch(e.to_string()))?;
    let e = |e: fedprofile_learning::LearningError| mismatch(e.to_string());
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match &file {
        VersionedModelFile::V1(f) => {
            let probs = f.to_model()?.predict_proba(x.view()).map_err(e)?;
            (
                vec!["user_id", "score"],
                probs.iter().map(|p| vec![format!("{p:.6}")]).collect(),
            )
        }
        VersionedModelFile::V2(ModelFileV2::LinearRegression(f)) => {
            let y = f.to_model()?.predict(x.view()).map_err(e)?;
            (
                vec!["user_id", "prediction"],
                y.iter().map(|v| vec![format!("{v:.6}")]).collect(),
            )
        }
        VersionedModelFile::V2(ModelFileV2::SoftmaxRegression(f)) => {
            let model = f.to_model()?;
            let probs = model.predict_proba(x.view()).map_err(e)?;
            let classes = model.predict(x.view()).map_err(e)?;
            (
                vec!["user_id", "class", "probability"],
                classes
                    .iter()
                    .enumerate()
                    .map(|(row, &c)| {
                        vec![
                            f.classes.get(c).cloned().unwrap_or_default(),
                            format!("{:.6}", probs[[row, c]]),
                        ]
                    })
                    .collect(),
            )
        }
        VersionedModelFile::V2(ModelFileV2::KMeans(f)) => {
            let assigned = f.to_model()?.assign(x.view()).map_err(e)?;
            (
                vec!["user_id", "segment", "distance"],
                assigned
                    .iter()
                    .map(|(c, d)| vec![c.to_string(), format!("{d:.6}")])
                    .collect(),
            )
        }
    };
    let write_err = |reason: String| ScoreError::Write {
        path: out.to_path_buf(),
        reason,
    };
    let mut writer = csv::Writer::from_path(out).map_err(|e| write_err(e.to_string()))?;
    writer
        .write_record(&header)
        .map_err(|e| write_err(e.to_string()))?;
    for (id, values) in loaded.dataset.ids().iter().zip(rows) {
        let mut record = vec![id.clone()];
        record.extend(values);
        writer
            .write_record(&record)
            .map_err(|e| write_err(e.to_string()))?;
    }
    writer.flush().map_err(|e| write_err(e.to_string()))?;
    Ok(loaded.dataset.len())
}
