//! De-duplication per source and the left join on the key.
//!
//! Per source, in this order:
//! 1. `drop_exact_duplicates`: a row whose cleaned values (all declared columns, after
//!    trimming, case-folding and number parsing) equal an earlier row's is dropped;
//!    so `No` and `no ` are the same cell here.
//! 2. `keep_newest_by`: among the rows of one id, the row with the newest date is
//!    kept; an unparseable date is older than any date; on equal dates the later line
//!    wins (exports are appended), and the loser is counted as a tie.
//! 3. Any id still repeated (no keep-newest rule) keeps its first row.
//!
//! The primary source's ids, in order of first appearance in its file, are the users.
//! Secondary sources are left-joined: a user without a row there gets missing cells
//! (imputed at encoding), and a secondary row whose id is not a user is not joined.

use std::collections::HashMap;

use crate::dataset::{Cat, ColumnData, Dataset, FeatureColumnData};
use crate::ingest::{CleanRow, CleanSource, Value};
use crate::report::{Collector, Example, Reason};
use crate::schema::{ColumnKind, LabelKind, Schema, SourceDef};

/// Rows of one source after de-duplication, one per id, in order of the id's first
/// appearance in the file.
pub(crate) fn dedup(
    source: &SourceDef,
    clean: &mut CleanSource,
    collector: &mut Collector,
) -> Vec<CleanRow> {
    let file = clean.report.file.clone();
    let rows = std::mem::take(&mut clean.rows);
    let row_example = |line: u64, value: String| Example {
        file: file.clone(),
        line,
        column: None,
        value,
    };

    // 1. exact duplicates
    let rows: Vec<CleanRow> = if source.drop_exact_duplicates {
        let mut seen: HashMap<String, u64> = HashMap::with_capacity(rows.len());
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let key = exact_key(&row.values);
            match seen.get(&key) {
                Some(&first) => {
                    clean.report.exact_duplicates_removed += 1;
                    collector.record(Reason::ExactDuplicateRow, || {
                        row_example(row.line, format!("id '{}', same as line {first}", row.id))
                    });
                }
                None => {
                    seen.insert(key, row.line);
                    kept.push(row);
                }
            }
        }
        kept
    } else {
        rows
    };

    // 2./3. one row per id
    let mut order: Vec<String> = Vec::new();
    let mut best: HashMap<String, CleanRow> = HashMap::with_capacity(rows.len());
    let mut losers: Vec<CleanRow> = Vec::new();
    for row in rows {
        match best.get_mut(&row.id) {
            None => {
                order.push(row.id.clone());
                best.insert(row.id.clone(), row);
            }
            Some(current) => {
                if source.keep_newest_by.is_some() && row.date >= current.date {
                    losers.push(std::mem::replace(current, row));
                } else {
                    losers.push(row);
                }
            }
        }
    }
    losers.sort_by_key(|r| r.line);
    for loser in losers {
        let Some(winner) = best.get(&loser.id) else {
            continue;
        };
        if source.keep_newest_by.is_some() {
            clean.report.stale_duplicates_removed += 1;
            let reason = if loser.date == winner.date {
                clean.report.keep_newest_ties += 1;
                Reason::KeepNewestTie
            } else {
                Reason::StaleDuplicateRow
            };
            collector.record(reason, || {
                row_example(
                    loser.line,
                    format!("id '{}', superseded by line {}", loser.id, winner.line),
                )
            });
        } else {
            clean.report.duplicate_ids_removed += 1;
            collector.record(Reason::DuplicateId, || {
                row_example(
                    loser.line,
                    format!("id '{}', first seen at line {}", loser.id, winner.line),
                )
            });
        }
    }
    let kept: Vec<CleanRow> = order.iter().filter_map(|id| best.remove(id)).collect();
    clean.report.rows_kept = kept.len() as u64;
    kept
}

/// A string that is equal for two rows exactly when their cleaned values are.
fn exact_key(values: &[Value]) -> String {
    use std::fmt::Write;
    let mut key = String::new();
    for v in values {
        // Writing to a String cannot fail.
        let _ = match v {
            Value::Missing => write!(key, "m\u{1f}"),
            Value::Number(x) => write!(key, "n{:x}\u{1f}", x.to_bits()),
            Value::Category(i) => write!(key, "c{i}\u{1f}"),
            Value::Unseen(s) => write!(key, "u{s}\u{1f}"),
            Value::Bool(b) => write!(key, "b{}\u{1f}", u8::from(*b)),
            Value::Text(s) => write!(key, "t{s}\u{1f}"),
        };
    }
    key
}

/// Joins the de-duplicated sources (in schema order) into the dataset.
pub(crate) fn join(
    schema: &Schema,
    sources: &mut [CleanSource],
    deduped: Vec<Vec<CleanRow>>,
    collector: &mut Collector,
) -> Dataset {
    let primary = schema.primary_index();
    let users: Vec<&CleanRow> = deduped[primary].iter().collect();
    let index: HashMap<&str, usize> = users
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let n = users.len();

    let mut columns: Vec<FeatureColumnData> = Vec::new();
    for (si, source_def) in schema.sources().iter().enumerate() {
        // For each user, the row of this source (if any).
        let rows: Vec<Option<&CleanRow>> = if si == primary {
            users.iter().map(|r| Some(*r)).collect()
        } else {
            let mut per_user: Vec<Option<&CleanRow>> = vec![None; n];
            let file = sources[si].report.file.clone();
            for row in &deduped[si] {
                match index.get(row.id.as_str()) {
                    Some(&u) => per_user[u] = Some(row),
                    None => {
                        sources[si].report.orphan_rows += 1;
                        collector.record(Reason::OrphanRow, || Example {
                            file: file.clone(),
                            line: row.line,
                            column: None,
                            value: format!("id '{}'", row.id),
                        });
                    }
                }
            }
            let primary_file = sources[primary].report.file.clone();
            for (u, r) in per_user.iter().enumerate() {
                if r.is_none() {
                    sources[si].report.users_missing += 1;
                    collector.record(Reason::MissingFromSource, || Example {
                        file: primary_file.clone(),
                        line: users[u].line,
                        column: None,
                        value: format!("id '{}' not in source '{}'", users[u].id, source_def.name),
                    });
                }
            }
            per_user
        };

        for (ci, col) in source_def.columns.iter().enumerate() {
            let value = |u: usize| rows[u].map_or(&Value::Missing, |r| &r.values[ci]);
            let data = match &col.kind {
                ColumnKind::Numeric { impute, .. } => ColumnData::Numeric {
                    impute: *impute,
                    values: per_user(n, value, |v| match v {
                        Value::Number(x) => Some(*x),
                        _ => None,
                    }),
                },
                ColumnKind::Categorical { vocabulary, impute } => ColumnData::Categorical {
                    vocabulary: vocabulary.clone(),
                    impute: impute.clone(),
                    values: per_user(n, value, |v| match v {
                        Value::Category(i) => Cat::Known(*i),
                        Value::Unseen(_) => Cat::Unseen,
                        _ => Cat::Missing,
                    }),
                },
                ColumnKind::Boolean { impute, .. } => ColumnData::Boolean {
                    impute: *impute,
                    values: per_user(n, value, |v| match v {
                        Value::Bool(b) => Some(*b),
                        _ => None,
                    }),
                },
                ColumnKind::Id
                | ColumnKind::Label { .. }
                | ColumnKind::Target
                | ColumnKind::Class { .. }
                | ColumnKind::Ignore => continue,
            };
            let column = FeatureColumnData {
                name: col.name.clone(),
                data,
            };
            if let Some(report) = sources[si].columns.iter_mut().find(|c| c.name == col.name) {
                report.imputed = column.missing_count() as u64;
            }
            columns.push(column);
        }
    }

    let ids = users.iter().map(|r| r.id.clone()).collect();
    if schema.label_kind() == Some(LabelKind::Numeric) {
        // Rows without a parseable target were dropped at cleaning.
        let targets = users.iter().map(|r| r.target.unwrap_or(0.0)).collect();
        return Dataset::with_targets(ids, targets, columns);
    }
    if let Some(classes) = schema.label_classes() {
        // Rows without a declared class were dropped at cleaning.
        let index = users.iter().map(|r| r.class.unwrap_or(0)).collect();
        return Dataset::with_classes(ids, classes.len(), index, columns);
    }
    let labels = schema
        .label_name()
        .map(|_| users.iter().map(|r| r.label.unwrap_or(false)).collect());
    Dataset::new(ids, labels, columns)
}

/// One entry per user `0..n`: `pick` of the user's cell `value(u)`.
fn per_user<'a, T>(
    n: usize,
    value: impl Fn(usize) -> &'a Value,
    pick: impl Fn(&Value) -> T,
) -> Vec<T> {
    (0..n).map(|u| pick(value(u))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::read_source;
    use crate::testkit::SchemaText;

    fn schema(rules: &str) -> Schema {
        let text = SchemaText::new()
            .source("main", "main.csv", &format!("primary = true\n{rules}"))
            .columns("id:id when:ignore n:numeric")
            .source("extra", "extra.csv", "drop_exact_duplicates = true")
            .columns("id:id")
            .column("c", "categorical", "vocabulary = [\"no\", \"yes\"]")
            .build();
        Schema::from_toml_str(&text, "s").unwrap()
    }

    /// `csv` read as `source` of `schema` (file `name`), which must succeed.
    fn read(
        schema: &Schema,
        source: &SourceDef,
        csv: &str,
        name: &str,
        collector: &mut Collector,
    ) -> CleanSource {
        read_source(source, schema.key(), csv.as_bytes(), name, collector).unwrap()
    }

    fn dedup_main(schema: &Schema, csv: &str) -> (Vec<CleanRow>, CleanSource, Collector) {
        let mut collector = Collector::default();
        let main = schema.primary_source();
        let mut clean = read(schema, main, csv, "main.csv", &mut collector);
        let rows = dedup(main, &mut clean, &mut collector);
        (rows, clean, collector)
    }

    /// [`dedup_main`] of rows that all share one id: the `n` of the row kept
    /// (the only one), the cleaned source and the issues.
    fn kept_n(rules: &str, csv: &str) -> (Value, CleanSource, Collector) {
        let (rows, clean, c) = dedup_main(&schema(rules), csv);
        assert_eq!(rows.len(), 1, "one id, one row kept");
        (rows[0].values[2].clone(), clean, c)
    }

    #[test]
    fn keep_newest_keeps_newest_in_first_appearance_order() {
        let s = schema("keep_newest_by = \"when\"");
        let (rows, clean, c) = dedup_main(
            &s,
            "id,when,n\nA,2026-07-01,1\nB,2026-10-01,2\nA,2026-10-01,3\nC,bad,4\nC,2026-01-01,5\nB,2026-01-01,6\n",
        );
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "C"]);
        let n: Vec<&Value> = rows.iter().map(|r| &r.values[2]).collect();
        assert_eq!(
            n,
            [
                &Value::Number(3.0),
                &Value::Number(2.0),
                &Value::Number(5.0)
            ]
        );
        assert_eq!(clean.report.stale_duplicates_removed, 3);
        assert_eq!(clean.report.keep_newest_ties, 0);
        assert_eq!(clean.report.rows_kept, 3);
        let issues = c.into_issues();
        assert!(
            issues
                .iter()
                .any(|i| i.reason == Reason::StaleDuplicateRow && i.count == 3)
        );
    }

    #[test]
    fn keep_newest_tie_goes_to_later_line() {
        let rules = "keep_newest_by = \"when\"";
        let (n, clean, c) = kept_n(rules, "id,when,n\nA,2026-07-01,1\nA,2026-07-01,2\n");
        assert_eq!(n, Value::Number(2.0));
        assert_eq!(clean.report.stale_duplicates_removed, 1);
        assert_eq!(clean.report.keep_newest_ties, 1);
        assert!(
            c.into_issues()
                .iter()
                .any(|i| i.reason == Reason::KeepNewestTie)
        );
    }

    #[test]
    fn without_rule_first_row_wins() {
        let (n, clean, _) = kept_n("", "id,when,n\nA,2026-07-01,1\nA,2026-10-01,2\n");
        assert_eq!(n, Value::Number(1.0));
        assert_eq!(clean.report.duplicate_ids_removed, 1);
    }

    #[test]
    fn exact_duplicates_compare_cleaned_values_and_join_counts() {
        let s = schema("");
        let mut collector = Collector::default();
        let main_csv = "id,when,n\nA,x,1\nB,x,2\nC,x,3\n";
        let main = read(&s, &s.sources()[0], main_csv, "main.csv", &mut collector);
        let extra_csv = "id,c\nA,Yes\nA,yes \nB,No\nZ,no\n";
        let extra = read(&s, &s.sources()[1], extra_csv, "extra.csv", &mut collector);
        let mut sources = vec![main, extra];
        let d0 = dedup(&s.sources()[0], &mut sources[0], &mut collector);
        let d1 = dedup(&s.sources()[1], &mut sources[1], &mut collector);
        assert_eq!(sources[1].report.exact_duplicates_removed, 1);
        let ds = join(&s, &mut sources, vec![d0, d1], &mut collector);
        assert_eq!(ds.ids(), ["A", "B", "C"]);
        assert_eq!(sources[1].report.users_missing, 1);
        assert_eq!(sources[1].report.orphan_rows, 1);
        assert_eq!(sources[1].columns[0].imputed, 1);
        assert_eq!(
            sources[0]
                .columns
                .iter()
                .find(|c| c.name == "n")
                .unwrap()
                .imputed,
            0
        );
    }
}
