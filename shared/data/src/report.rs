//! The data-quality report of one loaded split.
//!
//! Every row or cell that could not be used as-is is counted under exactly one
//! [`Reason`], with a few example locations (`file:line`, column, raw value). The report
//! holds counts and at most [`MAX_EXAMPLES`] examples per reason; it is meant for the
//! partner's own operator (raw values in examples never leave the partner).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// How many example locations are kept per reason (and per column for noise).
pub const MAX_EXAMPLES: usize = 5;

/// Why a row or cell could not be used as-is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Row dropped: its field count differs from the header's.
    MalformedRow,
    /// Row dropped: a declared cell is not valid UTF-8.
    InvalidEncoding,
    /// Row dropped: the key cell is blank.
    MissingId,
    /// Row dropped: the label, target or class cell is blank.
    MissingLabel,
    /// Row dropped: the label is neither the positive nor the negative value, the
    /// numeric target is not a finite number, or the class is not one of the declared
    /// classes.
    UnparseableLabel,
    /// Cell imputed: blank numeric, categorical or boolean cell.
    BlankCell,
    /// Cell imputed: a numeric cell that is not a finite number (e.g. `N/A`).
    UnparseableNumber,
    /// Cell imputed: a numeric cell of magnitude above
    /// [`MAX_MAGNITUDE`](crate::MAX_MAGNITUDE) (e.g. `1e300`), treated as unparseable.
    NumberTooLarge,
    /// Cell clipped to the nearest bound: a numeric cell outside its column's declared
    /// `min`/`max` (`out_of_range = "clip"`, the default).
    OutOfRangeClipped,
    /// Cell imputed: a numeric cell outside its column's declared `min`/`max`
    /// (`out_of_range = "reject"`).
    OutOfRangeRejected,
    /// A categorical cell outside the vocabulary (encoded in the unseen slot), or a
    /// boolean cell matching neither spelling (imputed).
    OutsideVocabulary,
    /// Cell used, but only after trimming white space or case-folding (see the docs).
    CaseOrWhitespaceNoise,
    /// The keep-newest date is blank or not a date (the row counts as the oldest).
    UnparseableDate,
    /// Row dropped: identical, after cleaning, to an earlier row of the same file.
    ExactDuplicateRow,
    /// Row dropped: a newer row of the same user exists (keep newest).
    StaleDuplicateRow,
    /// Row dropped: another row of the same user has the same newest date; the later line wins.
    KeepNewestTie,
    /// Row dropped: the user already has a row in this source and no rule picks one; the first wins.
    DuplicateId,
    /// Row of a secondary source whose user is not in the primary source (not joined).
    OrphanRow,
    /// A primary user without a row in a secondary source (its columns are imputed).
    MissingFromSource,
}

impl Reason {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::MalformedRow => "malformed rows (wrong field count), dropped",
            Reason::InvalidEncoding => "rows with invalid utf-8, dropped",
            Reason::MissingId => "rows with a blank id, dropped",
            Reason::MissingLabel => "rows with a blank label, target or class, dropped",
            Reason::UnparseableLabel => {
                "rows with an unparseable label or target, or an unknown class, dropped"
            }
            Reason::BlankCell => "blank cells, imputed",
            Reason::UnparseableNumber => "unparseable numbers, imputed",
            Reason::NumberTooLarge => "numbers of magnitude above 1e15, imputed",
            Reason::OutOfRangeClipped => "numbers outside the declared min/max, clipped",
            Reason::OutOfRangeRejected => "numbers outside the declared min/max, imputed",
            Reason::OutsideVocabulary => "values outside the vocabulary",
            Reason::CaseOrWhitespaceNoise => "case or white-space noise cells, cleaned",
            Reason::UnparseableDate => "unparseable keep-newest dates, row treated as oldest",
            Reason::ExactDuplicateRow => "exact duplicate rows, dropped",
            Reason::StaleDuplicateRow => "stale duplicate rows (a newer row exists), dropped",
            Reason::KeepNewestTie => {
                "duplicate rows with the same newest date, earlier line dropped"
            }
            Reason::DuplicateId => "duplicate ids without a dedup rule, later rows dropped",
            Reason::OrphanRow => "secondary rows whose id is not in the primary source, not joined",
            Reason::MissingFromSource => "primary users missing from a secondary source, imputed",
        }
    }
}

/// Where an issue was seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The data file.
    pub file: String,
    /// 1-based line of the row.
    pub line: u64,
    /// The column, for cell-level issues.
    pub column: Option<String>,
    /// The raw value, or a short explanation for row-level issues.
    pub value: String,
}

impl fmt::Display for Example {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(c) = &self.column {
            write!(f, ": column '{c}'")?;
        }
        write!(f, ": {:?}", self.value)
    }
}

/// All occurrences of one reason in the split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// The reason.
    pub reason: Reason,
    /// How many rows or cells.
    pub count: u64,
    /// The first few locations, in file and line order.
    pub examples: Vec<Example>,
}

/// What happened to one source file.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SourceReport {
    /// Source name from the schema.
    pub name: String,
    /// The file read.
    pub file: String,
    /// Whether this is the primary source.
    pub primary: bool,
    /// Data records read (header excluded).
    pub rows_read: u64,
    /// Rows dropped for a wrong field count.
    pub malformed_rows: u64,
    /// Rows dropped for invalid UTF-8.
    pub invalid_encoding_rows: u64,
    /// Rows dropped for a blank id.
    pub rows_missing_id: u64,
    /// Rows dropped for a blank label, target or class.
    pub rows_missing_label: u64,
    /// Rows dropped for an unparseable label or target, or an undeclared class.
    pub rows_unparseable_label: u64,
    /// Rows dropped as exact duplicates (after cleaning).
    pub exact_duplicates_removed: u64,
    /// Rows dropped by keep-newest (strictly older rows and tie losers).
    pub stale_duplicates_removed: u64,
    /// Of `stale_duplicates_removed`, rows whose date equalled the kept row's.
    pub keep_newest_ties: u64,
    /// Rows dropped because their id repeated and no rule chose one.
    pub duplicate_ids_removed: u64,
    /// Rows left after cleaning and de-duplication (one per id).
    pub rows_kept: u64,
    /// Primary users with no row in this source (0 for the primary).
    pub users_missing: u64,
    /// Rows of this source whose id is not in the primary (0 for the primary).
    pub orphan_rows: u64,
    /// Header columns the schema does not declare (not read).
    pub undeclared_columns: Vec<String>,
}

/// Cell-level counts for one declared column.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ColumnReport {
    /// Column name.
    pub name: String,
    /// Its source.
    pub source: String,
    /// Its schema type.
    pub kind: String,
    /// Blank cells (all cleaned rows, before de-duplication).
    pub blank: u64,
    /// Unparseable cells: numbers that are not finite numbers or whose magnitude is
    /// above [`MAX_MAGNITUDE`](crate::MAX_MAGNITUDE), dates that are not dates.
    pub unparseable: u64,
    /// Numeric cells outside the column's declared `min`/`max` (clipped or imputed).
    pub out_of_range: u64,
    /// Cells outside the vocabulary / boolean spellings.
    pub outside_vocabulary: u64,
    /// Case or white-space noise cells.
    pub noise: u64,
    /// Missing cells in the fused dataset, filled by imputation at encoding
    /// (blank, unparseable or boolean outside spellings, or user missing from the source).
    pub imputed: u64,
}

/// Label balance of the fused dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelSummary {
    /// The label column.
    pub column: String,
    /// The positive value.
    pub positive: String,
    /// Users with the positive label.
    pub positives: u64,
    /// `positives / users` (0 when there are no users).
    pub positive_rate: f64,
}

/// Distribution of a numeric target (`type = "target"`) over the fused dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSummary {
    /// The target column.
    pub column: String,
    /// Users with a target (every user: rows without one were dropped).
    pub count: u64,
    /// Mean of the target (0 when there are no users).
    pub mean: f64,
    /// Smallest target (0 when there are no users).
    pub min: f64,
    /// Largest target (0 when there are no users).
    pub max: f64,
}

impl LabelSummary {
    /// The summary of `positives` users with the `positive` label out of `users`.
    pub fn of(column: &str, positive: &str, positives: usize, users: u64) -> LabelSummary {
        LabelSummary {
            column: column.to_owned(),
            positive: positive.to_owned(),
            positives: positives as u64,
            positive_rate: if users == 0 {
                0.0
            } else {
                positives as f64 / users as f64
            },
        }
    }
}

impl TargetSummary {
    /// The summary of `values` (finite numbers).
    pub fn of(column: &str, values: &[f64]) -> TargetSummary {
        let count = values.len() as u64;
        let (mean, min, max) = if values.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                values.iter().sum::<f64>() / values.len() as f64,
                values.iter().copied().fold(f64::INFINITY, f64::min),
                values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        TargetSummary {
            column: column.to_owned(),
            count,
            mean,
            min,
            max,
        }
    }
}

/// Class balance of a multi-class label (`type = "class"`) over the fused dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSummary {
    /// The class column.
    pub column: String,
    /// The declared classes, in declared order (class index order).
    pub classes: Vec<String>,
    /// Users per class, in the order of `classes`.
    pub counts: Vec<u64>,
}

/// The data-quality report of one split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// The split name.
    pub split: String,
    /// The partner data directory.
    pub data_dir: String,
    /// Rows of the fused dataset (one per user of the primary source).
    pub users: u64,
    /// Label balance, if the schema has a binary label (`type = "label"`).
    pub label: Option<LabelSummary>,
    /// Target distribution, if the schema has a numeric target (`type = "target"`);
    /// omitted from the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSummary>,
    /// Class counts, if the schema has a multi-class label (`type = "class"`); omitted
    /// from the JSON otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassSummary>,
    /// One entry per source, in schema order.
    pub sources: Vec<SourceReport>,
    /// One entry per declared column except the key, in schema order.
    pub columns: Vec<ColumnReport>,
    /// One entry per reason that occurred, in [`Reason`] order.
    pub issues: Vec<Issue>,
}

impl QualityReport {
    /// Occurrences of a reason (0 if none).
    pub fn count(&self, reason: Reason) -> u64 {
        self.issues
            .iter()
            .find(|i| i.reason == reason)
            .map_or(0, |i| i.count)
    }

    /// The report of a source, by name.
    pub fn source(&self, name: &str) -> Option<&SourceReport> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The report of a column, by name.
    pub fn column(&self, name: &str) -> Option<&ColumnReport> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Rate of the positive label, if the schema has a label.
    pub fn positive_rate(&self) -> Option<f64> {
        self.label.as_ref().map(|l| l.positive_rate)
    }
}

impl fmt::Display for QualityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "data quality report: split '{}' in {}",
            self.split, self.data_dir
        )?;
        write!(f, "users after cleaning and fusion: {}", self.users)?;
        if let Some(l) = &self.label {
            write!(
                f,
                " ({} = {}: {}, {:.2}%)",
                l.column,
                l.positive,
                l.positives,
                100.0 * l.positive_rate
            )?;
        }
        if let Some(t) = &self.target {
            write!(
                f,
                " ({}: {} values, mean {:.2}, min {:.2}, max {:.2})",
                t.column, t.count, t.mean, t.min, t.max
            )?;
        }
        if let Some(c) = &self.classes {
            write!(f, " ({}: ", c.column)?;
            for (i, (class, n)) in c.classes.iter().zip(&c.counts).enumerate() {
                let pct = if self.users == 0 {
                    0.0
                } else {
                    100.0 * *n as f64 / self.users as f64
                };
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{class} = {n} ({pct:.2}%)")?;
            }
            write!(f, ")")?;
        }
        writeln!(f)?;

        writeln!(f, "\nsources:")?;
        for s in &self.sources {
            let role = if s.primary { "primary" } else { "left-joined" };
            writeln!(f, "  {} ({role}) {}", s.name, s.file)?;
            writeln!(f, "    rows read                  {:>7}", s.rows_read)?;
            let lines = [
                ("malformed rows dropped", s.malformed_rows),
                ("invalid utf-8 rows dropped", s.invalid_encoding_rows),
                ("blank-id rows dropped", s.rows_missing_id),
                ("blank-label rows dropped", s.rows_missing_label),
                ("bad-label rows dropped", s.rows_unparseable_label),
                ("exact duplicates dropped", s.exact_duplicates_removed),
                ("stale duplicates dropped", s.stale_duplicates_removed),
                ("  of which date ties", s.keep_newest_ties),
                ("duplicate ids dropped", s.duplicate_ids_removed),
            ];
            for (label, n) in lines {
                if n > 0 {
                    writeln!(f, "    {label:<26} {n:>7}")?;
                }
            }
            writeln!(f, "    rows kept                  {:>7}", s.rows_kept)?;
            if !s.primary {
                writeln!(f, "    primary users missing      {:>7}", s.users_missing)?;
                writeln!(f, "    rows not in primary        {:>7}", s.orphan_rows)?;
            }
            if !s.undeclared_columns.is_empty() {
                writeln!(
                    f,
                    "    undeclared columns (not read): {}",
                    s.undeclared_columns.join(", ")
                )?;
            }
        }

        let noisy: Vec<&ColumnReport> = self
            .columns
            .iter()
            .filter(|c| {
                c.blank
                    + c.unparseable
                    + c.out_of_range
                    + c.outside_vocabulary
                    + c.noise
                    + c.imputed
                    > 0
            })
            .collect();
        if noisy.is_empty() {
            writeln!(f, "\ncolumns: no cell-level issues")?;
        } else {
            let w = noisy.iter().map(|c| c.name.len()).max().unwrap_or(6).max(6);
            writeln!(f, "\ncolumns with cell-level issues:")?;
            writeln!(
                f,
                "  {:<w$}  {:<11}  {:>6}  {:>11}  {:>12}  {:>10}  {:>6}  {:>7}",
                "column",
                "type",
                "blank",
                "unparseable",
                "out of range",
                "outside",
                "noise",
                "imputed"
            )?;
            for c in noisy {
                writeln!(
                    f,
                    "  {:<w$}  {:<11}  {:>6}  {:>11}  {:>12}  {:>10}  {:>6}  {:>7}",
                    c.name,
                    c.kind,
                    c.blank,
                    c.unparseable,
                    c.out_of_range,
                    c.outside_vocabulary,
                    c.noise,
                    c.imputed
                )?;
            }
        }

        if self.issues.is_empty() {
            writeln!(f, "\nissues: none")?;
        } else {
            writeln!(f, "\nissues:")?;
            for i in &self.issues {
                writeln!(f, "  {:>6}  {}", i.count, i.reason.describe())?;
                for e in &i.examples {
                    writeln!(f, "          e.g. {e}")?;
                }
            }
        }
        Ok(())
    }
}

/// Accumulates issue counts and examples while a split is loaded.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    issues: BTreeMap<Reason, (u64, Vec<Example>)>,
}

impl Collector {
    /// Counts one occurrence; the example is built only while fewer than
    /// `MAX_EXAMPLES` are held.
    pub(crate) fn record(&mut self, reason: Reason, example: impl FnOnce() -> Example) {
        let entry = self.issues.entry(reason).or_default();
        entry.0 += 1;
        if entry.1.len() < MAX_EXAMPLES {
            entry.1.push(example());
        }
    }

    /// Counts `count` occurrences with already collected example candidates (kept in
    /// file and line order, capped).
    pub(crate) fn record_many(&mut self, reason: Reason, count: u64, examples: Vec<Example>) {
        if count == 0 {
            return;
        }
        let entry = self.issues.entry(reason).or_default();
        entry.0 += count;
        entry.1.extend(examples);
        entry
            .1
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        entry.1.truncate(MAX_EXAMPLES);
    }

    pub(crate) fn into_issues(self) -> Vec<Issue> {
        self.issues
            .into_iter()
            .map(|(reason, (count, examples))| Issue {
                reason,
                count,
                examples,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(line: u64) -> Example {
        Example {
            file: "a.csv".into(),
            line,
            column: Some("c".into()),
            value: " x".into(),
        }
    }

    #[test]
    fn collector_caps_examples_and_keeps_counting() {
        let mut c = Collector::default();
        for line in 2..20 {
            c.record(Reason::BlankCell, || ex(line));
        }
        c.record_many(Reason::CaseOrWhitespaceNoise, 7, vec![ex(9), ex(3)]);
        c.record_many(Reason::OrphanRow, 0, vec![]);
        let issues = c.into_issues();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].reason, Reason::BlankCell);
        assert_eq!(issues[0].count, 18);
        assert_eq!(issues[0].examples.len(), MAX_EXAMPLES);
        assert_eq!(issues[1].count, 7);
        assert_eq!(issues[1].examples[0].line, 3);
    }

    #[test]
    fn example_display_names_file_line_column_value() {
        assert_eq!(ex(4).to_string(), "a.csv:4: column 'c': \" x\"");
    }

    #[test]
    fn reason_serializes_snake_case() {
        let json = serde_json::to_string(&Reason::CaseOrWhitespaceNoise).unwrap();
        assert_eq!(json, "\"case_or_whitespace_noise\"");
    }

    #[test]
    fn target_summary() {
        let t = TargetSummary::of("m", &[20.0, 30.0, 70.0]);
        assert_eq!(t.count, 3);
        assert!((t.mean - 40.0).abs() < 1e-12);
        assert_eq!((t.min, t.max), (20.0, 70.0));
        let e = TargetSummary::of("m", &[]);
        assert_eq!((e.count, e.mean, e.min, e.max), (0, 0.0, 0.0, 0.0));
    }

    fn report(users: u64, classes: Option<ClassSummary>) -> QualityReport {
        QualityReport {
            split: "train".into(),
            data_dir: "d".into(),
            users,
            label: None,
            target: None,
            classes,
            sources: Vec::new(),
            columns: Vec::new(),
            issues: Vec::new(),
        }
    }

    #[test]
    fn class_summary_text_and_json() {
        let summary = ClassSummary {
            column: "contract".into(),
            classes: vec!["month-to-month".into(), "one year".into()],
            counts: vec![3, 1],
        };
        let r = report(4, Some(summary.clone()));
        let text = r.to_string();
        assert!(
            text.contains(
                "users after cleaning and fusion: 4 (contract: month-to-month = 3 (75.00%), one year = 1 (25.00%))\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["classes"],
            serde_json::json!({
                "column": "contract",
                "classes": ["month-to-month", "one year"],
                "counts": [3, 1]
            })
        );
        // No users: rates are 0, not NaN.
        let empty = report(
            0,
            Some(ClassSummary {
                counts: vec![0, 0],
                ..summary
            }),
        );
        assert!(
            empty
                .to_string()
                .contains("(contract: month-to-month = 0 (0.00%), one year = 0 (0.00%))"),
            "{empty}"
        );
        // Absent for other label kinds.
        let none = serde_json::to_value(report(4, None)).unwrap();
        assert!(none.get("classes").is_none());
        assert!(!report(4, None).to_string().contains("(contract"));
    }
}
