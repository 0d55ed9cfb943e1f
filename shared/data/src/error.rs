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
    #[error("{file}: missing header column '{column}'{}", near_hint(.near.as_deref()))]
    MissingColumn {
        /// The data file.
        file: String,
        /// The schema column that is missing.
        column: String,
        /// A header name that nearly matches ([`near_match`]), for the hint.
        near: Option<String>,
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

/// The hint after a missing header column: the header's near match, if any.
fn near_hint(near: Option<&str>) -> String {
    near.map(|n| format!(" (line 1); the header has '{n}' — column names are matched exactly"))
        .unwrap_or_default()
}

/// The header name that nearly matches `wanted`, for a "missing header column"
/// hint: the same name up to case and surrounding whitespace, or else (for
/// names of 4 characters or more) the closest within edit distance 2 of the
/// lower-cased, trimmed names. `None` when nothing is that close.
pub fn near_match<'a>(wanted: &str, header: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let fold = |s: &str| s.trim().to_lowercase();
    let want = fold(wanted);
    let mut best: Option<(usize, &str)> = None;
    for name in header {
        let d = edit_distance(&want, &fold(name));
        if d == 0 {
            return Some(name.to_string());
        }
        if d <= 2 && want.chars().count() >= 4 && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, name));
        }
    }
    best.map(|(_, n)| n.to_string())
}

/// Levenshtein distance between `a` and `b`, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_header_column_hints_its_near_match() {
        let header = ["EmployeeID", " Attrition ", "Age", "MonthlyIncome"];
        assert_eq!(
            near_match("attrition", header).as_deref(),
            Some(" Attrition ")
        );
        assert_eq!(
            near_match("monthly_income", header).as_deref(),
            Some("MonthlyIncome")
        );
        assert_eq!(near_match("tenure", header), None);
        // Short names need the same spelling up to case.
        assert_eq!(near_match("ag", header), None);
        assert_eq!(near_match("AGE", header).as_deref(), Some("Age"));
        let e = DataError::MissingColumn {
            file: "hr.csv".into(),
            column: "attrition".into(),
            near: near_match("attrition", ["Attrition"]),
        };
        assert_eq!(
            e.to_string(),
            "hr.csv: missing header column 'attrition' (line 1); the header has 'Attrition' — column names are matched exactly"
        );
    }

    #[test]
    fn messages_are_lowercase_and_name_the_place() {
        let e = DataError::MissingColumn {
            file: "data/train/accounts.csv".into(),
            column: "tenure".into(),
            near: None,
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
