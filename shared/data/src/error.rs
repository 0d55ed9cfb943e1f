//! The crate's error type.
//!
//! Only problems that make a whole split unusable are errors: an invalid schema, a
//! missing file, a missing header column, or an encoding request that does not match
//! the schema; and, from [`LoadedSplit::problems`](crate::LoadedSplit::problems), a split
//! without usable rows or a numeric column without one usable value. Bad rows and cells
//! are never errors: they are counted, by reason, in the
//! [`QualityReport`](crate::QualityReport).

use std::path::PathBuf;

/// Everything that can go wrong while loading a schema, reading a split or encoding it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The schema file could not be read.
    #[error("{}: cannot read schema: {source}", path.display())]
    SchemaIo {
        /// The schema file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The schema is not valid TOML or violates a rule; `message` names the field.
    #[error("{origin}: {message}")]
    Schema {
        /// Where the schema came from (usually its file name).
        origin: String,
        /// What is wrong, naming the source, column and key.
        message: String,
    },

    /// The split name cannot be substituted into a source path.
    #[error("invalid split name '{split}': {reason}")]
    InvalidSplit {
        /// The split given by the caller.
        split: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A source file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The data file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The CSV reader failed in a way that is not a per-row problem (e.g. an I/O error
    /// in the middle of the file).
    #[error("{file}:{line}: cannot read csv: {source}")]
    Csv {
        /// The data file.
        file: String,
        /// 1-based line where reading stopped.
        line: u64,
        /// The underlying error.
        source: csv::Error,
    },

    /// The file has no header line.
    #[error("{file}: empty file, expected a header line")]
    EmptyFile {
        /// The data file.
        file: String,
    },

    /// A column declared in the schema is not in the file's header.
    #[error("{file}: missing header column '{column}'")]
    MissingColumn {
        /// The data file.
        file: String,
        /// The schema column that is missing.
        column: String,
    },

    /// The header names the same column twice.
    #[error("{file}: header column '{column}' appears more than once")]
    DuplicateColumn {
        /// The data file.
        file: String,
        /// The repeated column name.
        column: String,
    },

    /// A split has no usable rows (e.g. a header-only export): nothing to train or
    /// evaluate on.
    #[error("{file}: split '{split}' has no usable rows: {detail}")]
    NoUsableRows {
        /// The primary source file of the split.
        file: String,
        /// The split.
        split: String,
        /// Why (no data rows, or every row dropped).
        detail: String,
    },

    /// A numeric column has non-blank cells but not one usable number: it would train
    /// as a constant.
    #[error("{file}: column '{column}' has no usable value in split '{split}': {detail}")]
    NoUsableValues {
        /// The column's source file.
        file: String,
        /// The column.
        column: String,
        /// The split.
        split: String,
        /// How many cells were bad, with an example line.
        detail: String,
    },

    /// The schema declares no label column.
    #[error("the schema declares no label column")]
    NoLabel,

    /// A feature specification names a column the schema does not have as a feature.
    #[error("feature spec: column '{column}' is not a feature column of the schema")]
    UnknownFeatureColumn {
        /// The column named by the feature specification.
        column: String,
    },

    /// A feature specification gives a column another kind than the schema.
    #[error("feature spec: column '{column}' is {expected} in the schema, not {found}")]
    FeatureKindMismatch {
        /// The column.
        column: String,
        /// Its kind in the schema.
        expected: &'static str,
        /// Its kind in the feature specification.
        found: &'static str,
    },

    /// A feature specification carries an unusable value (e.g. a non-finite mean).
    #[error("feature spec: column '{column}': {message}")]
    InvalidFeatureSpec {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
}

impl DataError {
    pub(crate) fn schema(origin: &str, message: impl Into<String>) -> Self {
        DataError::Schema {
            origin: origin.to_owned(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_place() {
        let e = DataError::MissingColumn {
            file: "data/train/accounts.csv".into(),
            column: "tenure".into(),
        };
        assert_eq!(
            e.to_string(),
            "data/train/accounts.csv: missing header column 'tenure'"
        );
        let e = DataError::schema("schema.toml", "column 'tenure': unknown type 'numbr'");
        assert_eq!(
            e.to_string(),
            "schema.toml: column 'tenure': unknown type 'numbr'"
        );
    }

    #[test]
    fn error_is_send_sync() {
        fn assert_traits<T: Send + Sync + 'static>() {}
        assert_traits::<DataError>();
    }
}
