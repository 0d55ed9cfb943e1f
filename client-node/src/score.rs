//! Scoring a partner's users with the global model: one row per user, written
//! locally. Nothing leaves the partner.

use std::path::{Path, PathBuf};

use fedprofile_data::Schema;
use fedprofile_learning::ModelDocument;

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
/// the row count. `user_id`, then the columns of the model's family
/// ([`fedprofile_learning::Family::score`]): logistic regression `score` (the
/// probability); linear regression `prediction`; softmax regression
/// `class,probability`; k-means `segment,distance`.
pub fn score(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    model_path: &Path,
    out: &Path,
) -> Result<usize, ScoreError> {
    let schema = Schema::from_path(schema_path)?;
    let model = ModelDocument::load(model_path)?;
    // Every user is scored, also those whose label is blank or not yet known.
    let loaded = fedprofile_data::load_split(&schema.without_label(), data_dir, split)?;
    let mismatch = |reason: String| ScoreError::Mismatch {
        path: model_path.to_path_buf(),
        reason,
    };
    let x = loaded
        .dataset
        .encode(model.features())
        .map_err(|e| mismatch(e.to_string()))?;
    let table = model.score(x.view()).map_err(|e| mismatch(e.to_string()))?;
    let mut header = vec!["user_id"];
    header.extend(table.header.iter().map(String::as_str));
    let rows = table.rows;
    let mut writer = CsvOut::create(out, &header)?;
    for (id, values) in loaded.dataset.ids().iter().zip(rows) {
        let mut record = vec![id.clone()];
        record.extend(values);
        writer.row(&record)?;
    }
    writer.finish()?;
    Ok(loaded.dataset.len())
}

/// A CSV file being written: every failure is a [`ScoreError::Write`] naming the file.
pub(crate) struct CsvOut<'a> {
    path: &'a Path,
    writer: csv::Writer<std::fs::File>,
}

impl<'a> CsvOut<'a> {
    /// Creates (or truncates) `path` and writes the `header` row.
    pub(crate) fn create<T: AsRef<[u8]>>(path: &'a Path, header: &[T]) -> Result<Self, ScoreError> {
        let writer = csv::Writer::from_path(path).map_err(|e| write_error(path, e))?;
        let mut out = CsvOut { path, writer };
        out.row(header)?;
        Ok(out)
    }

    /// Writes one row.
    pub(crate) fn row<T: AsRef<[u8]>>(&mut self, record: &[T]) -> Result<(), ScoreError> {
        self.writer
            .write_record(record)
            .map_err(|e| write_error(self.path, e))
    }

    /// Flushes the file.
    pub(crate) fn finish(mut self) -> Result<(), ScoreError> {
        self.writer.flush().map_err(|e| write_error(self.path, e))
    }
}

fn write_error(path: &Path, e: impl ToString) -> ScoreError {
    ScoreError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}
