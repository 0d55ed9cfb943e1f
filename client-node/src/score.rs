//! Scoring a partner's users with the global model: one row per user, written
//! locally. Nothing leaves the partner.

use std::path::{Path, PathBuf};

use fedprofile_data::Schema;
use fedprofile_learning::ModelFile;

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

/// Scores every user of `split` and writes `user_id,score` to `out`; returns the row count.
pub fn score(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    model_path: &Path,
    out: &Path,
) -> Result<usize, ScoreError> {
    let schema = Schema::from_path(schema_path)?;
    let file = ModelFile::load(model_path)?;
    let model = file.to_model()?;
    let loaded = fedprofile_data::load_split(&schema, data_dir, split)?;
    let mismatch = |reason: String| ScoreError::Mismatch {
        path: model_path.to_path_buf(),
        reason,
    };
    let x = loaded
        .dataset
        .encode(&file.features)
        .map_err(|e| mismatch(e.to_string()))?;
    let probs = model
        .predict_proba(x.view())
        .map_err(|e| mismatch(e.to_string()))?;
    let write_err = |reason: String| ScoreError::Write {
        path: out.to_path_buf(),
        reason,
    };
    let mut writer = csv::Writer::from_path(out).map_err(|e| write_err(e.to_string()))?;
    writer
        .write_record(["user_id", "score"])
        .map_err(|e| write_err(e.to_string()))?;
    for (id, p) in loaded.dataset.ids().iter().zip(probs.iter()) {
        writer
            .write_record([id.as_str(), &format!("{p:.6}")])
            .map_err(|e| write_err(e.to_string()))?;
    }
    writer.flush().map_err(|e| write_err(e.to_string()))?;
    Ok(loaded.dataset.len())
}
