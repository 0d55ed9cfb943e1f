//! Client-side data loading for fedprofile. Raw rows never leave a partner: this crate
//! turns a partner's CSV exports into a cleaned, fused [`Dataset`] and a
//! [`QualityReport`], and encodes the dataset into model inputs.
//!
//! Pipeline of [`load_split`]:
//! 1. [`Schema`]: the federation-wide TOML schema (sources, join key, de-duplication
//!    rules, column types, vocabularies, imputation); see `docs/schema.md`.
//! 2. Ingestion and cleaning (`ingest` module): every source CSV is
//!    read with 1-based line numbers, cells are trimmed, case-folded and parsed, and
//!    every unusable row or cell is counted by [`Reason`].
//! 3. Fusion: de-duplication per source, then a left join of the secondary sources
//!    onto the primary source's users.
//! 4. [`Dataset::encode`] applies a [`FeatureSpec`] (built by the coordinator from
//!    [`Schema::feature_template`] and the federated [`Dataset::numeric_stats`]) with
//!    imputation.

mod dataset;
mod encode;
mod error;
mod fuse;
pub mod infer;
mod ingest;
mod report;
mod schema;
#[cfg(test)]
mod testkit;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

pub use dataset::{Dataset, NumericStats};
pub use error::DataError;
pub use fedprofile_learning::{FeatureColumn, FeatureSpec};
pub use report::{
    ClassSummary, ColumnReport, Example, Issue, LabelSummary, MAX_EXAMPLES, QualityReport, Reason,
    SourceReport, TargetSummary,
};
pub use schema::{
    Bounds, CategoricalImpute, ColumnDef, ColumnKind, LabelKind, MAX_MAGNITUDE, NumericImpute,
    OutOfRange, SPLIT_PLACEHOLDER, Schema, SourceDef,
};

use report::Collector;

/// A loaded split: the dataset and what was done to get it.
#[derive(Debug, Clone)]
pub struct LoadedSplit {
    /// One row per user of the primary source.
    pub dataset: Dataset,
    /// Counts of everything that was dropped, cleaned or imputed.
    pub report: QualityReport,
}

impl LoadedSplit {
    /// Everything that makes this split unusable for a run, one sentence each naming
    /// the file (empty when the split is usable). `check-data` and the client's `run`
    /// apply the same verdict:
    ///
    /// - the split has no usable rows (e.g. a header-only primary export, or every row
    ///   dropped) ([`DataError::NoUsableRows`]);
    /// - a numeric column has non-blank cells but none of them is usable (unparseable,
    ///   of magnitude above [`MAX_MAGNITUDE`], or outside its bounds with
    ///   `out_of_range = "reject"`): it would train as a constant
    ///   ([`DataError::NoUsableValues`]). A column that is blank throughout is not an
    ///   error: it is imputed like any missing cell.
    pub fn problems(&self) -> Vec<DataError> {
        let report = &self.report;
        let primary = report.sources.iter().find(|s| s.primary);
        if self.dataset.is_empty() {
            let (file, rows_read) = primary.map_or((report.data_dir.as_str(), 0), |s| {
                (s.file.as_str(), s.rows_read)
            });
            let detail = if rows_read == 0 {
                "the file has a header but no data rows".to_owned()
            } else {
                format!("all {rows_read} data rows were dropped while cleaning")
            };
            return vec![DataError::NoUsableRows {
                file: file.to_owned(),
                split: report.split.clone(),
                detail,
            }];
        }
        let mut problems = Vec::new();
        for stats in self.dataset.numeric_stats() {
            let Some(column) = report.column(&stats.column) else {
                continue;
            };
            let bad = column.unparseable + column.out_of_range;
            if stats.count > 0 || bad == 0 {
                continue;
            }
            let file = report
                .source(&column.source)
                .map_or(report.data_dir.as_str(), |s| s.file.as_str());
            let example = report
                .issues
                .iter()
                .filter(|i| {
                    matches!(
                        i.reason,
                        Reason::UnparseableNumber
                            | Reason::NumberTooLarge
                            | Reason::OutOfRangeRejected
                    )
                })
                .flat_map(|i| &i.examples)
                .filter(|e| e.column.as_deref() == Some(column.name.as_str()))
                .min_by_key(|e| e.line)
                .map(|e| format!(", e.g. line {}: {:?}", e.line, e.value))
                .unwrap_or_default();
            problems.push(DataError::NoUsableValues {
                file: file.to_owned(),
                column: column.name.clone(),
                split: report.split.clone(),
                detail: format!(
                    "none of its {bad} non-blank cells is a usable number (unparseable, too large or out of range){example}"
                ),
            });
        }
        problems
    }

    /// `Ok` when the split is usable for a run, else the first of [`LoadedSplit::problems`].
    pub fn check(&self) -> Result<(), DataError> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }
}

/// Loads one split (e.g. `train`) of a partner: every source path of the schema, with
/// `{split}` replaced, relative to `data_dir`.
///
/// Errors only when the split cannot be loaded at all (bad split name, missing file,
/// missing header column); bad rows and cells are counted in the report.
pub fn load_split(schema: &Schema, data_dir: &Path, split: &str) -> Result<LoadedSplit, DataError> {
    check_split(split)?;
    load_with(schema, split, &data_dir.display().to_string(), |source| {
        let path = data_dir.join(source_path(source, split));
        let file = File::open(&path).map_err(|e| DataError::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok((path.display().to_string(), Box::new(BufReader::new(file))))
    })
}

/// Loads a split from in-memory CSV texts, one `(source name, csv text)` per source
/// of the schema (handy for tests and tools). File names in the report are the source
/// paths with `{split}` replaced.
pub fn load_from_strs(
    schema: &Schema,
    split: &str,
    sources: &[(&str, &str)],
) -> Result<LoadedSplit, DataError> {
    check_split(split)?;
    load_with(schema, split, "<memory>", |source| {
        let text = sources
            .iter()
            .find(|(name, _)| *name == source.name)
            .map(|(_, text)| *text)
            .ok_or_else(|| DataError::Io {
                path: source_path(source, split).into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no text given for source '{}'", source.name),
                ),
            })?;
        Ok((source_path(source, split), Box::new(text.as_bytes())))
    })
}

fn source_path(source: &SourceDef, split: &str) -> String {
    source.path.replace(SPLIT_PLACEHOLDER, split)
}

fn check_split(split: &str) -> Result<(), DataError> {
    let reason = if split.is_empty() {
        Some("must not be empty")
    } else if split == "." || split == ".." {
        Some("must not be '.' or '..'")
    } else if !split
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("only ascii letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DataError::InvalidSplit {
            split: split.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

type Opened<'a> = (String, Box<dyn Read + 'a>);

fn load_with<'a>(
    schema: &Schema,
    split: &str,
    data_dir: &str,
    mut open: impl FnMut(&SourceDef) -> Result<Opened<'a>, DataError>,
) -> Result<LoadedSplit, DataError> {
    let mut collector = Collector::default();
    let mut cleaned = Vec::with_capacity(schema.sources().len());
    for source in schema.sources() {
        let (file, reader) = open(source)?;
        cleaned.push(ingest::read_source(
            source,
            schema.key(),
            reader,
            &file,
            &mut collector,
        )?);
    }
    let deduped: Vec<_> = schema
        .sources()
        .iter()
        .zip(cleaned.iter_mut())
        .map(|(source, clean)| fuse::dedup(source, clean, &mut collector))
        .collect();
    let dataset = fuse::join(schema, &mut cleaned, deduped, &mut collector);

    let users = dataset.len() as u64;
    let label = schema.label_name().and_then(|column| {
        let positives = dataset.positives()?;
        Some(LabelSummary::of(
            column,
            schema.label_positive()?,
            positives,
            users,
        ))
    });
    let target = schema
        .label_name()
        .zip(dataset.targets())
        .map(|(column, values)| TargetSummary::of(column, values));
    let classes = schema.label_name().and_then(|column| {
        Some(ClassSummary {
            column: column.to_owned(),
            classes: schema.label_classes()?.to_vec(),
            counts: dataset.class_counts()?,
        })
    });
    let mut sources = Vec::with_capacity(cleaned.len());
    let mut columns = Vec::new();
    for clean in cleaned {
        sources.push(clean.report);
        columns.extend(clean.columns);
    }
    let report = QualityReport {
        split: split.to_owned(),
        data_dir: data_dir.to_owned(),
        users,
        label,
        target,
        classes,
        sources,
        columns,
        issues: collector.into_issues(),
    };
    Ok(LoadedSplit { dataset, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::SchemaText;

    /// The primary source 'a' ({split}/a.csv, newest row by `when`) with columns id, when
    /// and n; each test adds its label and further sources.
    fn source_a() -> SchemaText {
        SchemaText::new()
            .source(
                "a",
                "{split}/a.csv",
                "primary = true\nkeep_newest_by = \"when\"",
            )
            .columns("id:id when:ignore n:numeric")
    }

    fn schema_text() -> String {
        source_a()
            .column("y", "label", "positive = \"yes\"\nnegative = \"no\"")
            .source("b", "{split}/b.csv", "drop_exact_duplicates = true")
            .columns("id:id")
            .column(
                "c",
                "categorical",
                "vocabulary = [\"dsl\", \"fiber optic\"]",
            )
            .build()
    }

    const A: &str = "id,when,n,y\nU1,2026-01-01,1,Yes\nU2,2026-01-01,x,No\nU1,2025-01-01,9,No\nU3,2026-01-01,3,\nU4,2026-01-01,4,No\n";
    const B: &str = "id,c\nU1,DSL\nU1,dsl\nU2,Cable\nU9,DSL\n";

    #[test]
    fn load_from_strs_end_to_end() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let loaded = load_from_strs(&schema, "train", &[("a", A), ("b", B)]).unwrap();
        let (d, r) = (&loaded.dataset, &loaded.report);
        assert_eq!(d.ids(), ["U1", "U2", "U4"]);
        assert_eq!(d.labels().unwrap().to_vec(), [1.0, 0.0, 0.0]);
        assert_eq!(r.users, 3);
        assert_eq!(r.count(Reason::MissingLabel), 1);
        assert_eq!(r.count(Reason::StaleDuplicateRow), 1);
        assert_eq!(r.count(Reason::ExactDuplicateRow), 1);
        assert_eq!(r.count(Reason::OrphanRow), 1);
        assert_eq!(r.count(Reason::MissingFromSource), 1);
        assert_eq!(r.count(Reason::UnparseableNumber), 1);
        assert_eq!(r.count(Reason::OutsideVocabulary), 1);
        assert_eq!(r.source("b").unwrap().users_missing, 1);
        assert_eq!(r.column("n").unwrap().imputed, 1);
        assert_eq!(r.column("c").unwrap().imputed, 1);
        let l = r.label.as_ref().unwrap();
        assert_eq!(l.positives, 1);
        assert!((l.positive_rate - 1.0 / 3.0).abs() < 1e-12);

        let spec = schema.feature_template();
        let x = d.encode(&spec).unwrap();
        assert_eq!(x.dim(), (3, 1 + 3));
        // U2: cable -> unseen; U4: missing from b -> unknown -> unseen
        assert_eq!(x.row(1).to_vec(), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(x.row(3 - 1).to_vec(), [4.0, 0.0, 0.0, 1.0]);
        assert_eq!(x.row(0).to_vec(), [1.0, 1.0, 0.0, 0.0]);

        let text = r.to_string();
        assert!(
            text.contains("users after cleaning and fusion: 3"),
            "{text}"
        );
        assert!(text.contains("train/a.csv:4"), "{text}");
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["users"], 3);
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = load_split(&schema, dir.path(), "train").unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("train/a.csv: cannot read"), "{e}");
    }

    #[test]
    fn load_split_reads_files() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("test")).unwrap();
        std::fs::write(dir.path().join("test/a.csv"), A).unwrap();
        std::fs::write(dir.path().join("test/b.csv"), "id\n").unwrap();
        let e = load_split(&schema, dir.path(), "test").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("test/b.csv: missing header column 'c'"),
            "{e}"
        );
        std::fs::write(dir.path().join("test/b.csv"), B).unwrap();
        let loaded = load_split(&schema, dir.path(), "test").unwrap();
        assert_eq!(loaded.dataset.len(), 3);
    }

    #[test]
    fn split_names_are_checked() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        for bad in ["", "..", "a/b", "../x"] {
            assert!(matches!(
                load_split(&schema, Path::new("."), bad),
                Err(DataError::InvalidSplit { .. })
            ));
        }
    }

    fn target_schema_text() -> String {
        source_a()
            .column(
                "churn",
                "boolean",
                "true_values = [\"yes\"]\nfalse_values = [\"no\"]\nvalue = false",
            )
            .columns("charges:target")
            .build()
    }

    /// The header and first two rows of the target tests' source a.
    const TARGET_CSV_HEAD: &str =
        "id,when,n,churn,charges\nU1,2026-01-01,1,Yes,20\nU2,2026-01-01,2,No,N/A\n";

    #[test]
    fn without_label_keeps_every_user_for_scoring() {
        let schema = Schema::from_toml_str(&target_schema_text(), "schema.toml").unwrap();
        let a = &format!("{TARGET_CSV_HEAD}U3,2026-01-01,3,no,\n");
        let scoring = schema.without_label();
        assert_eq!(scoring.label_kind(), None);
        assert_eq!(scoring.feature_template(), schema.feature_template());
        let loaded = load_from_strs(&scoring, "train", &[("a", a)]).unwrap();
        assert_eq!(loaded.dataset.ids(), ["U1", "U2", "U3"]);
        assert_eq!(loaded.report.count(Reason::MissingLabel), 0);
        assert_eq!(loaded.report.count(Reason::UnparseableLabel), 0);
        let trained = load_from_strs(&schema, "train", &[("a", a)]).unwrap();
        assert_eq!(trained.dataset.ids(), ["U1"]);
    }

    #[test]
    fn numeric_target_end_to_end() {
        let schema = Schema::from_toml_str(&target_schema_text(), "schema.toml").unwrap();
        let a = &format!(
            "{TARGET_CSV_HEAD}\
             U1,2025-01-01,9,No,99\n\
             U3,2026-01-01,3,no,\n\
             U4,2026-01-01,4,No,80.5\n\
             U5,2026-01-01,5,yes,30\n"
        );
        let loaded = load_from_strs(&schema, "train", &[("a", a)]).unwrap();
        let (d, r) = (&loaded.dataset, &loaded.report);
        assert_eq!(d.ids(), ["U1", "U4", "U5"]);
        assert_eq!(d.label_kind(), Some(LabelKind::Numeric));
        assert_eq!(d.labels().unwrap().to_vec(), [20.0, 80.5, 30.0]);
        assert_eq!(d.positives(), None);
        assert_eq!(d.feature_names(), ["n", "churn"]);
        assert_eq!(r.count(Reason::MissingLabel), 1);
        assert_eq!(r.count(Reason::UnparseableLabel), 1);
        assert_eq!(r.source("a").unwrap().rows_unparseable_label, 1);
        assert!(r.label.is_none());
        assert_eq!(r.positive_rate(), None);
        let t = r.target.as_ref().unwrap();
        assert_eq!(t.column, "charges");
        assert_eq!(t.count, 3);
        assert!((t.mean - 130.5 / 3.0).abs() < 1e-12);
        assert_eq!((t.min, t.max), (20.0, 80.5));

        let x = d.encode(&schema.feature_template()).unwrap();
        assert_eq!(x.dim(), (3, 2));
        assert_eq!(x.row(0).to_vec(), [1.0, 1.0]);

        let text = r.to_string();
        assert!(
            text.contains(
                "users after cleaning and fusion: 3 (charges: 3 values, mean 43.50, min 20.00, max 80.50)"
            ),
            "{text}"
        );
        assert!(
            text.contains("rows with an unparseable label or target, or an unknown class, dropped"),
            "{text}"
        );
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["target"]["count"], 3);
        assert_eq!(json["label"], serde_json::Value::Null);
    }

    #[test]
    fn binary_label_report_has_no_target() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let loaded = load_from_strs(&schema, "train", &[("a", A), ("b", B)]).unwrap();
        assert_eq!(loaded.dataset.label_kind(), Some(LabelKind::Binary));
        assert_eq!(schema.label_kind(), Some(LabelKind::Binary));
        assert!(loaded.report.target.is_none());
        assert!(loaded.report.classes.is_none());
        assert_eq!(loaded.dataset.class_counts(), None);
        let json = serde_json::to_value(&loaded.report).unwrap();
        assert!(json.get("target").is_none());
        assert!(json.get("classes").is_none());
    }

    fn class_schema_text() -> String {
        source_a()
            .column(
                "contract",
                "class",
                "classes = [\"month-to-month\", \"one year\", \"two year\"]",
            )
            .source("b", "{split}/b.csv", "")
            .columns("id:id")
            .column(
                "churn",
                "boolean",
                "true_values = [\"yes\"]\nfalse_values = [\"no\"]\nvalue = false",
            )
            .build()
    }

    #[test]
    fn class_label_end_to_end() {
        let schema = Schema::from_toml_str(&class_schema_text(), "schema.toml").unwrap();
        assert_eq!(schema.label_kind(), Some(LabelKind::Multiclass));
        let a = "id,when,n,contract\n\
                 U1,2026-01-01,1,Two year\n\
                 U2,2026-01-01,2,\n\
                 U1,2025-01-01,9,One year\n\
                 U3,2026-01-01,3,Month-to-month\n\
                 U4,2026-01-01,4,three year\n\
                 U5,2026-01-01,5, two year\n\
                 U6,2026-01-01,6,month-to-month\n";
        let b = "id,churn\nU1,Yes\nU2,No\nU3,No\nU4,Yes\nU6,No\n";
        let loaded = load_from_strs(&schema, "train", &[("a", a), ("b", b)]).unwrap();
        let (d, r) = (&loaded.dataset, &loaded.report);
        assert_eq!(d.ids(), ["U1", "U3", "U5", "U6"]);
        assert_eq!(d.label_kind(), Some(LabelKind::Multiclass));
        assert_eq!(d.labels().unwrap().to_vec(), [2.0, 0.0, 2.0, 0.0]);
        assert_eq!(d.class_counts(), Some(vec![2, 0, 2]));
        assert_eq!(d.positives(), None);
        assert_eq!(d.feature_names(), ["n", "churn"]);
        assert_eq!(r.count(Reason::MissingLabel), 1);
        assert_eq!(r.count(Reason::UnparseableLabel), 1);
        let src = r.source("a").unwrap();
        assert_eq!((src.rows_missing_label, src.rows_unparseable_label), (1, 1));
        assert_eq!(src.stale_duplicates_removed, 1);
        // U2 and U4 were dropped, so their services rows are orphans.
        assert_eq!(r.count(Reason::OrphanRow), 2);
        // " two year" and "month-to-month" lose their ties to the first-seen spellings
        // "Two year" and "Month-to-month": noise, like in a categorical column.
        assert_eq!(r.column("contract").unwrap().noise, 2);
        assert_eq!(r.column("contract").unwrap().kind, "class");
        assert!(r.label.is_none());
        assert!(r.target.is_none());
        assert_eq!(r.positive_rate(), None);
        let c = r.classes.as_ref().unwrap();
        assert_eq!(c.column, "contract");
        assert_eq!(c.classes, ["month-to-month", "one year", "two year"]);
        assert_eq!(c.counts, [2, 0, 2]);

        let x = d.encode(&schema.feature_template()).unwrap();
        assert_eq!(x.dim(), (4, 2));

        let text = r.to_string();
        assert!(
            text.contains(
                "users after cleaning and fusion: 4 (contract: month-to-month = 2 (50.00%), one year = 0 (0.00%), two year = 2 (50.00%))"
            ),
            "{text}"
        );
        assert!(text.contains("blank-label rows dropped"), "{text}");
        assert!(
            text.contains("rows with a blank label, target or class, dropped"),
            "{text}"
        );
        assert!(text.contains("bad-label rows dropped"), "{text}");
        assert!(
            text.contains("train/a.csv:6: column 'contract': \"three year\""),
            "{text}"
        );
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["classes"]["column"], "contract");
        assert_eq!(
            json["classes"]["classes"],
            serde_json::json!(["month-to-month", "one year", "two year"])
        );
        assert_eq!(json["classes"]["counts"], serde_json::json!([2, 0, 2]));
        assert!(json.get("target").is_none());
        assert_eq!(json["label"], serde_json::Value::Null);

        // A subset (e.g. one of several clients) keeps the class labels.
        let sub = d.subset(&[3, 1]);
        assert_eq!(sub.labels().unwrap().to_vec(), [0.0, 0.0]);
        assert_eq!(sub.class_counts(), Some(vec![2, 0, 0]));
    }

    #[test]
    fn a_header_only_split_is_a_problem_naming_the_file() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let loaded = load_from_strs(&schema, "train", &[("a", "id,when,n,y\n"), ("b", B)]).unwrap();
        let e = loaded.check().unwrap_err();
        assert!(matches!(e, DataError::NoUsableRows { .. }));
        assert_eq!(
            e.to_string(),
            "train/a.csv: split 'train' has no usable rows: the file has a header but no data rows"
        );
        let dropped = load_from_strs(
            &schema,
            "train",
            &[
                ("a", "id,when,n,y\nU1,2026-01-01,1,\n ,2026-01-01,1,no\n"),
                ("b", B),
            ],
        )
        .unwrap();
        assert_eq!(
            dropped.check().unwrap_err().to_string(),
            "train/a.csv: split 'train' has no usable rows: all 2 data rows were dropped while cleaning"
        );
    }

    #[test]
    fn a_numeric_column_without_one_usable_number_is_a_problem() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let a = "id,when,n,y\nU1,2026-01-01,N/A,yes\nU2,2026-01-01,,no\nU3,2026-01-01,1e300,no\n";
        let loaded = load_from_strs(&schema, "train", &[("a", a), ("b", B)]).unwrap();
        let problems = loaded.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            "train/a.csv: column 'n' has no usable value in split 'train': none of its 2 non-blank cells is a usable number (unparseable, too large or out of range), e.g. line 2: \"N/A\""
        );
        // Blank throughout is not a problem: it is imputed like any missing cell.
        let blank = "id,when,n,y\nU1,2026-01-01,,yes\nU2,2026-01-01,,no\n";
        let loaded = load_from_strs(&schema, "train", &[("a", blank), ("b", B)]).unwrap();
        assert!(loaded.problems().is_empty());
        // One usable cell is enough.
        let one = "id,when,n,y\nU1,2026-01-01,x,yes\nU2,2026-01-01,2,no\n";
        let loaded = load_from_strs(&schema, "train", &[("a", one), ("b", B)]).unwrap();
        assert!(loaded.check().is_ok());
    }

    #[test]
    fn bounds_reject_every_cell_is_a_problem_but_clip_is_not() {
        let bounded = |mode: &str| {
            Schema::from_toml_str(
                &schema_text().replace(
                    "name = \"n\"\ntype = \"numeric\"",
                    &format!(
                        "name = \"n\"\ntype = \"numeric\"\nmax = 10\nout_of_range = \"{mode}\""
                    ),
                ),
                "schema.toml",
            )
            .unwrap()
        };
        let a = "id,when,n,y\nU1,2026-01-01,11,yes\nU2,2026-01-01,50,no\n";
        let clipped = load_from_strs(&bounded("clip"), "train", &[("a", a), ("b", B)]).unwrap();
        assert!(clipped.check().is_ok());
        assert_eq!(clipped.report.count(Reason::OutOfRangeClipped), 2);
        assert_eq!(clipped.dataset.numeric_stats()[0].sum, 20.0);
        let rejected = load_from_strs(&bounded("reject"), "train", &[("a", a), ("b", B)]).unwrap();
        assert_eq!(rejected.report.count(Reason::OutOfRangeRejected), 2);
        let e = rejected.check().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("train/a.csv: column 'n' has no usable value in split 'train'")
                && e.to_string().ends_with("e.g. line 2: \"11\""),
            "{e}"
        );
        // The text report names the file and line of each out-of-range cell.
        let text = rejected.report.to_string();
        assert!(
            text.contains("numbers outside the declared min/max, imputed"),
            "{text}"
        );
        assert!(text.contains("train/a.csv:3: column 'n': \"50\""), "{text}");
    }

    #[test]
    fn an_absurd_cell_keeps_the_statistics_finite() {
        let schema = Schema::from_toml_str(&schema_text(), "schema.toml").unwrap();
        let a = "id,when,n,y\nU1,2026-01-01,1e300,yes\nU2,2026-01-01,2,no\nU3,2026-01-01,4,no\n";
        let loaded = load_from_strs(&schema, "train", &[("a", a), ("b", B)]).unwrap();
        let stats = &loaded.dataset.numeric_stats()[0];
        assert_eq!((stats.count, stats.sum, stats.sum_sq), (2, 6.0, 20.0));
        assert!(loaded.check().is_ok());
        let text = loaded.report.to_string();
        assert!(
            text.contains("numbers of magnitude above 1e15, imputed")
                && text.contains("train/a.csv:2: column 'n': \"1e300\""),
            "{text}"
        );
    }
}
