//! Reading and cleaning one CSV source.
//!
//! Row-level checks come first, in this order, and a failing row is dropped and counted
//! once: field count ([`Reason::MalformedRow`]), UTF-8 of the declared cells
//! ([`Reason::InvalidEncoding`]), blank key ([`Reason::MissingId`]), blank or unknown
//! label, blank or unparseable numeric target, or blank class or one that is not
//! declared ([`Reason::MissingLabel`], [`Reason::UnparseableLabel`]). The cells of every
//! remaining row are then cleaned: trimmed, case-folded (categorical, boolean, label,
//! class), parsed (numeric), and counted by reason. Cell counts therefore cover every
//! row that passed the row-level checks, including rows later dropped by de-duplication.
//!
//! Noise: a cell of a categorical, boolean, label or class column is noise when it matched
//! only after trimming or case-folding, i.e. it has surrounding white space, or its
//! trimmed spelling differs from the dominant spelling of the same value in this file
//! (`NO` and `no` are noise where most cells say `No`; ties go to the spelling seen
//! first). For the key, numeric and target columns only surrounding white space is noise.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use crate::error::DataError;
use crate::report::{Collector, ColumnReport, Example, MAX_EXAMPLES, Reason, SourceReport};
use crate::schema::{Bounds, ColumnKind, MAX_MAGNITUDE, OutOfRange, SourceDef};

/// A cleaned cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// Blank or unusable; imputed at encoding.
    Missing,
    /// A finite number.
    Number(f64),
    /// Index into the schema vocabulary, or into the classes of a class column.
    Category(u32),
    /// A (case-folded) value outside the vocabulary.
    Unseen(String),
    /// A boolean, or a label (true = positive).
    Bool(bool),
    /// Id or ignored column, trimmed.
    Text(String),
}

/// A `YYYY-MM-DD` date with an optional time part compared as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DateKey {
    ymd: (u32, u32, u32),
    time: String,
}

/// A row that passed the row-level checks.
#[derive(Debug, Clone)]
pub(crate) struct CleanRow {
    /// 1-based line in the file.
    pub line: u64,
    /// Trimmed key.
    pub id: String,
    /// The label (primary source with a label column only).
    pub label: Option<bool>,
    /// The numeric target (primary source with a target column only).
    pub target: Option<f64>,
    /// The class index, in declared order (primary source with a class column only).
    pub class: Option<u32>,
    /// The keep-newest date, if the source has one and it parsed.
    pub date: Option<DateKey>,
    /// One value per declared column of the source, in schema order.
    pub values: Vec<Value>,
}

/// A cleaned source, before de-duplication.
#[derive(Debug)]
pub(crate) struct CleanSource {
    pub rows: Vec<CleanRow>,
    pub report: SourceReport,
    /// One per declared column except the key, in schema order.
    pub columns: Vec<ColumnReport>,
}

enum Cleaner {
    Id,
    Numeric(Option<Bounds>),
    Categorical(HashMap<String, u32>),
    Boolean(HashMap<String, bool>),
    Label {
        positive: String,
        negative: Option<String>,
    },
    Target,
    /// Class name (trimmed, lowercase) to its index.
    Class(HashMap<String, u32>),
    Ignore {
        date: bool,
    },
}

impl Cleaner {
    fn has_spellings(&self) -> bool {
        matches!(
            self,
            Cleaner::Categorical(_)
                | Cleaner::Boolean(_)
                | Cleaner::Label { .. }
                | Cleaner::Class(_)
        )
    }
}

/// Counts of one trimmed spelling of one folded value.
struct Spelling {
    text: String,
    count: u64,
    padded: u64,
    examples: Vec<Example>,
    padded_examples: Vec<Example>,
}

/// Spellings seen for each folded value of one column, in first-seen order.
#[derive(Default)]
struct SpellingStats {
    values: HashMap<String, Vec<Spelling>>,
}

impl SpellingStats {
    fn add(&mut self, folded: &str, trimmed: &str, padded: bool, example: impl Fn() -> Example) {
        let list = match self.values.get_mut(folded) {
            Some(list) => list,
            None => self.values.entry(folded.to_owned()).or_default(),
        };
        let spelling = match list.iter().position(|s| s.text == trimmed) {
            Some(i) => &mut list[i],
            None => {
                list.push(Spelling {
                    text: trimmed.to_owned(),
                    count: 0,
                    padded: 0,
                    examples: Vec::new(),
                    padded_examples: Vec::new(),
                });
                let last = list.len() - 1;
                &mut list[last]
            }
        };
        spelling.count += 1;
        if spelling.examples.len() < MAX_EXAMPLES {
            spelling.examples.push(example());
        }
        if padded {
            spelling.padded += 1;
            if spelling.padded_examples.len() < MAX_EXAMPLES {
                spelling.padded_examples.push(example());
            }
        }
    }

    /// Noise cells and example candidates: every cell of a non-dominant spelling, and
    /// the padded cells of the dominant one.
    fn noise(self) -> (u64, Vec<Example>) {
        let mut count = 0;
        let mut examples = Vec::new();
        for (_, list) in self.values {
            let mut dominant = 0;
            for (i, s) in list.iter().enumerate() {
                if s.count > list[dominant].count {
                    dominant = i;
                }
            }
            for (i, s) in list.into_iter().enumerate() {
                if i == dominant {
                    count += s.padded;
                    examples.extend(s.padded_examples);
                } else {
                    count += s.count;
                    examples.extend(s.examples);
                }
            }
        }
        (count, examples)
    }
}

/// A trimmed numeric or target cell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parsed {
    /// A finite number of magnitude at most [`MAX_MAGNITUDE`].
    Number(f64),
    /// A finite number of larger magnitude (e.g. `1e300`): treated as unparseable.
    TooLarge,
    /// Not a finite number (`N/A`, text, `inf`, `NaN`).
    Unparseable,
}

/// Parses a trimmed numeric or target cell.
fn parse_number(trimmed: &str) -> Parsed {
    match trimmed.parse::<f64>() {
        Ok(x) if x.is_finite() && x.abs() <= MAX_MAGNITUDE => Parsed::Number(x),
        Ok(x) if x.is_finite() => Parsed::TooLarge,
        _ => Parsed::Unparseable,
    }
}

/// The CSV reader's input: CRLF line ends turned into LF, and the offset of every
/// line end kept until the records before it are read, to give each record its line.
///
/// The `csv` crate's own line numbers are one too low for every record of a CRLF file
/// (it ends a record at the `\r` and counts the `\n` only when the next record
/// starts) and for a record that follows blank lines (its position is taken before
/// they are skipped).
struct CrlfToLf<R> {
    inner: R,
    /// A `\r` ended the previous chunk: dropped if the next byte is `\n`.
    pending_cr: bool,
    /// Bytes handed out so far.
    delivered: u64,
    /// Offsets of the `\n` handed out and not yet passed by [`CrlfToLf::line_at`].
    newlines: std::collections::VecDeque<u64>,
    /// Line ends already passed.
    passed: u64,
}

impl<R: BufRead> CrlfToLf<R> {
    fn new(inner: R) -> Self {
        CrlfToLf {
            inner,
            pending_cr: false,
            delivered: 0,
            newlines: Default::default(),
            passed: 0,
        }
    }
}

impl<R> CrlfToLf<R> {
    /// The 1-based line of the record the CSV reader positioned at byte `pos` (of
    /// this reader's output): the blank lines it skipped after `pos` are counted.
    /// Positions must not decrease from call to call.
    fn line_at(&mut self, pos: u64) -> u64 {
        while self.newlines.front().is_some_and(|&n| n < pos) {
            self.newlines.pop_front();
            self.passed += 1;
        }
        let mut line = 1 + self.passed;
        for (k, &n) in self.newlines.iter().enumerate() {
            if n != pos + k as u64 {
                break;
            }
            line += 1;
        }
        line
    }
}

impl<R: BufRead> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut w = 0;
        while w < out.len() {
            let buf = self.inner.fill_buf()?;
            if self.pending_cr {
                self.pending_cr = false;
                if buf.first() != Some(&b'\n') {
                    out[w] = b'\r';
                    w += 1;
                    if w == out.len() {
                        break;
                    }
                }
            }
            if buf.is_empty() {
                break;
            }
            let mut i = 0;
            while i < buf.len() && w < out.len() {
                let b = buf[i];
                i += 1;
                if b == b'\r' {
                    match buf.get(i) {
                        // A CRLF: the `\n` that follows is copied alone.
                        Some(b'\n') => continue,
                        Some(_) => {}
                        // Decided with the next chunk.
                        None => {
                            self.pending_cr = true;
                            break;
                        }
                    }
                }
                out[w] = b;
                w += 1;
            }
            self.inner.consume(i);
            if w > 0 {
                break;
            }
        }
        for (k, &b) in out[..w].iter().enumerate() {
            if b == b'\n' {
                self.newlines.push_back(self.delivered + k as u64);
            }
        }
        self.delivered += w as u64;
        Ok(w)
    }
}

/// Parses `YYYY-MM-DD`, optionally followed by `T` or a space and a time
/// (`HH:MM[:SS[.fff]][Z]`), compared as text.
pub(crate) fn parse_date(text: &str) -> Option<DateKey> {
    let b = text.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let rest = &text[10..];
    let time = if rest.is_empty() {
        String::new()
    } else {
        let t = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
        let t = t.strip_suffix('Z').unwrap_or(t);
        let ok = t.len() >= 5
            && t.bytes().enumerate().all(|(i, c)| {
                if i == 2 || i == 5 {
                    c == b':'
                } else if i == 8 {
                    c == b'.'
                } else {
                    c.is_ascii_digit()
                }
            })
            && (t.len() == 5 || t.len() >= 8)
            && (t.len() <= 8 || t.len() >= 10);
        if !ok {
            return None;
        }
        t.to_owned()
    };
    Some(DateKey {
        ymd: (y, m, d),
        time,
    })
}

/// Reads and cleans one source. `file` names the file in errors and examples.
pub(crate) fn read_source(
    source: &SourceDef,
    key: &str,
    reader: impl Read,
    file: &str,
    collector: &mut Collector,
) -> Result<CleanSource, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(CrlfToLf::new(BufReader::new(reader)));
    let header = rdr
        .byte_headers()
        .map_err(|source| DataError::Csv {
            file: file.to_owned(),
            line: 1,
            source,
        })?
        .clone();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(DataError::EmptyFile {
            file: file.to_owned(),
        });
    }

    // header name -> field index
    let mut positions: HashMap<String, usize> = HashMap::with_capacity(header.len());
    let mut header_names = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let name = String::from_utf8_lossy(raw);
        let name = name.trim_start_matches('\u{feff}').trim().to_owned();
        if positions.insert(name.clone(), i).is_some() {
            return Err(DataError::DuplicateColumn {
                file: file.to_owned(),
                column: name,
            });
        }
        header_names.push(name);
    }
    let mut fields = Vec::with_capacity(source.columns.len());
    for c in &source.columns {
        match positions.get(&c.name) {
            Some(&i) => fields.push(i),
            None => {
                return Err(DataError::MissingColumn {
                    file: file.to_owned(),
                    column: c.name.clone(),
                    near: crate::error::near_match(
                        &c.name,
                        header_names.iter().map(String::as_str),
                    ),
                });
            }
        }
    }
    let undeclared_columns = header_names
        .iter()
        .filter(|h| !source.columns.iter().any(|c| &c.name == *h))
        .cloned()
        .collect();

    let cleaners: Vec<Cleaner> = source
        .columns
        .iter()
        .map(|c| match &c.kind {
            ColumnKind::Id => Cleaner::Id,
            ColumnKind::Numeric { bounds, .. } => Cleaner::Numeric(*bounds),
            ColumnKind::Categorical { vocabulary, .. } => Cleaner::Categorical(
                vocabulary
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), i as u32))
                    .collect(),
            ),
            ColumnKind::Boolean {
                true_values,
                false_values,
                ..
            } => Cleaner::Boolean(
                true_values
                    .iter()
                    .map(|v| (v.clone(), true))
                    .chain(false_values.iter().map(|v| (v.clone(), false)))
                    .collect(),
            ),
            ColumnKind::Label { positive, negative } => Cleaner::Label {
                positive: positive.clone(),
                negative: negative.clone(),
            },
            ColumnKind::Target => Cleaner::Target,
            ColumnKind::Class { classes } => Cleaner::Class(
                classes
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), i as u32))
                    .collect(),
            ),
            ColumnKind::Ignore => Cleaner::Ignore {
                date: source.keep_newest_by.as_deref() == Some(c.name.as_str()),
            },
        })
        .collect();
    let key_col = source.columns.iter().position(|c| c.name == key);
    let label_col = source.columns.iter().position(|c| c.kind.is_label());

    let mut columns: Vec<ColumnReport> = source
        .columns
        .iter()
        .map(|c| ColumnReport {
            name: c.name.clone(),
            source: source.name.clone(),
            kind: c.kind.type_name().to_owned(),
            ..ColumnReport::default()
        })
        .collect();
    let mut spellings: Vec<SpellingStats> =
        cleaners.iter().map(|_| SpellingStats::default()).collect();
    let mut report = SourceReport {
        name: source.name.clone(),
        file: file.to_owned(),
        primary: source.primary,
        undeclared_columns,
        ..SourceReport::default()
    };

    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let more = rdr
            .read_byte_record(&mut record)
            .map_err(|source| DataError::Csv {
                file: file.to_owned(),
                line: source.position().map_or(0, |p| p.line()),
                source,
            })?;
        if !more {
            break;
        }
        report.rows_read += 1;
        let line = record
            .position()
            .map_or(0, |p| rdr.get_mut().line_at(p.byte()));
        let row_example = |value: String| Example {
            file: file.to_owned(),
            line,
            column: None,
            value,
        };

        if record.len() != header.len() {
            report.malformed_rows += 1;
            let found = record.len();
            collector.record(Reason::MalformedRow, || {
                row_example(format!("expected {} fields, found {found}", header.len()))
            });
            continue;
        }
        let mut cells: Vec<&str> = Vec::with_capacity(fields.len());
        let mut bad_utf8 = None;
        for (ci, &fi) in fields.iter().enumerate() {
            match std::str::from_utf8(&record[fi]) {
                Ok(s) => cells.push(s),
                Err(_) => {
                    bad_utf8 = Some(ci);
                    break;
                }
            }
        }
        if let Some(ci) = bad_utf8 {
            report.invalid_encoding_rows += 1;
            collector.record(Reason::InvalidEncoding, || Example {
                column: Some(source.columns[ci].name.clone()),
                ..row_example(String::from_utf8_lossy(&record[fields[ci]]).into_owned())
            });
            continue;
        }

        // Row-level: key.
        let id = match key_col {
            Some(k) => cells[k].trim(),
            None => "",
        };
        if id.is_empty() {
            report.rows_missing_id += 1;
            collector.record(Reason::MissingId, || Example {
                column: Some(key.to_owned()),
                ..row_example(key_col.map_or_else(String::new, |k| cells[k].to_owned()))
            });
            continue;
        }

        // Row-level: label, target or class.
        let mut label = None;
        let mut target = None;
        let mut class = None;
        if let Some(l) = label_col {
            let raw = cells[l];
            let trimmed = raw.trim();
            let example = || Example {
                column: Some(source.columns[l].name.clone()),
                ..row_example(raw.to_owned())
            };
            if trimmed.is_empty() {
                report.rows_missing_label += 1;
                collector.record(Reason::MissingLabel, example);
                continue;
            }
            match &cleaners[l] {
                Cleaner::Label { positive, negative } => {
                    let folded = trimmed.to_lowercase();
                    if folded == *positive {
                        label = Some(true);
                    } else if negative.as_ref().is_none_or(|n| *n == folded) {
                        label = Some(false);
                    } else {
                        report.rows_unparseable_label += 1;
                        collector.record(Reason::UnparseableLabel, example);
                        continue;
                    }
                }
                Cleaner::Class(classes) => match classes.get(&trimmed.to_lowercase()) {
                    Some(&i) => class = Some(i),
                    None => {
                        report.rows_unparseable_label += 1;
                        collector.record(Reason::UnparseableLabel, example);
                        continue;
                    }
                },
                _ => match parse_number(trimmed) {
                    Parsed::Number(x) => target = Some(x),
                    Parsed::TooLarge | Parsed::Unparseable => {
                        report.rows_unparseable_label += 1;
                        collector.record(Reason::UnparseableLabel, example);
                        continue;
                    }
                },
            }
        }

        // Cell-level cleaning.
        let mut values = Vec::with_capacity(cells.len());
        let mut date = None;
        for (ci, cleaner) in cleaners.iter().enumerate() {
            let raw = cells[ci];
            let trimmed = raw.trim();
            let padded = trimmed.len() != raw.len();
            let col = &mut columns[ci];
            let example = || Example {
                file: file.to_owned(),
                line,
                column: Some(col.name.clone()),
                value: raw.to_owned(),
            };
            let value = match cleaner {
                Cleaner::Id => {
                    if padded {
                        col.noise += 1;
                        collector.record(Reason::CaseOrWhitespaceNoise, example);
                    }
                    Value::Text(trimmed.to_owned())
                }
                Cleaner::Ignore { date: is_date } => {
                    if *is_date {
                        date = parse_date(trimmed);
                        if date.is_none() {
                            if trimmed.is_empty() {
                                col.blank += 1;
                            } else {
                                col.unparseable += 1;
                            }
                            collector.record(Reason::UnparseableDate, example);
                        }
                    }
                    Value::Text(trimmed.to_owned())
                }
                _ if trimmed.is_empty() => {
                    col.blank += 1;
                    collector.record(Reason::BlankCell, example);
                    Value::Missing
                }
                Cleaner::Target => {
                    if padded {
                        col.noise += 1;
                        collector.record(Reason::CaseOrWhitespaceNoise, example);
                    }
                    target.map_or(Value::Missing, Value::Number)
                }
                Cleaner::Numeric(bounds) => {
                    if padded {
                        col.noise += 1;
                        collector.record(Reason::CaseOrWhitespaceNoise, example);
                    }
                    match parse_number(trimmed) {
                        Parsed::Number(x) => match bounds {
                            Some(b) if !b.contains(x) => {
                                col.out_of_range += 1;
                                match b.out_of_range {
                                    OutOfRange::Clip => {
                                        collector.record(Reason::OutOfRangeClipped, example);
                                        Value::Number(b.clip(x))
                                    }
                                    OutOfRange::Reject => {
                                        collector.record(Reason::OutOfRangeRejected, example);
                                        Value::Missing
                                    }
                                }
                            }
                            _ => Value::Number(x),
                        },
                        Parsed::TooLarge => {
                            col.unparseable += 1;
                            collector.record(Reason::NumberTooLarge, example);
                            Value::Missing
                        }
                        Parsed::Unparseable => {
                            col.unparseable += 1;
                            collector.record(Reason::UnparseableNumber, example);
                            Value::Missing
                        }
                    }
                }
                Cleaner::Categorical(vocab) => {
                    let folded = trimmed.to_lowercase();
                    match vocab.get(&folded) {
                        Some(&i) => {
                            spellings[ci].add(&folded, trimmed, padded, example);
                            Value::Category(i)
                        }
                        None => {
                            col.outside_vocabulary += 1;
                            collector.record(Reason::OutsideVocabulary, example);
                            Value::Unseen(folded)
                        }
                    }
                }
                Cleaner::Boolean(spelled) => {
                    let folded = trimmed.to_lowercase();
                    match spelled.get(&folded) {
                        Some(&b) => {
                            spellings[ci].add(&folded, trimmed, padded, example);
                            Value::Bool(b)
                        }
                        None => {
                            col.outside_vocabulary += 1;
                            collector.record(Reason::OutsideVocabulary, example);
                            Value::Missing
                        }
                    }
                }
                Cleaner::Label { .. } => {
                    let folded = trimmed.to_lowercase();
                    spellings[ci].add(&folded, trimmed, padded, example);
                    Value::Bool(label.unwrap_or(false))
                }
                Cleaner::Class(_) => {
                    let folded = trimmed.to_lowercase();
                    spellings[ci].add(&folded, trimmed, padded, example);
                    class.map_or(Value::Missing, Value::Category)
                }
            };
            values.push(value);
        }
        rows.push(CleanRow {
            line,
            id: id.to_owned(),
            label,
            target,
            class,
            date,
            values,
        });
    }

    for (ci, stats) in spellings.into_iter().enumerate() {
        if !cleaners[ci].has_spellings() {
            continue;
        }
        let (count, examples) = stats.noise();
        columns[ci].noise += count;
        collector.record_many(Reason::CaseOrWhitespaceNoise, count, examples);
    }
    if let Some(k) = key_col {
        columns.remove(k);
    }
    Ok(CleanSource {
        rows,
        report,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use crate::testkit::SchemaText;

    fn schema_text() -> String {
        SchemaText::new()
            .source("main", "main.csv", "keep_newest_by = \"when\"")
            .columns("id:id when:ignore n:numeric")
            .column(
                "c",
                "categorical",
                "vocabulary = [\"month-to-month\", \"one year\"]",
            )
            .column(
                "b",
                "boolean",
                "true_values = [\"yes\"]\nfalse_values = [\"no\"]\nvalue = false",
            )
            .column("y", "label", "positive = \"yes\"\nnegative = \"no\"")
            .build()
    }

    /// Reads `csv` as the primary source of `schema` (named "s", read from "main.csv").
    fn try_read_with(
        schema: &str,
        csv: &[u8],
    ) -> (Result<CleanSource, DataError>, Vec<crate::report::Issue>) {
        let schema = Schema::from_toml_str(schema, "s").unwrap();
        let mut collector = Collector::default();
        let r = read_source(
            schema.primary_source(),
            schema.key(),
            csv,
            "main.csv",
            &mut collector,
        );
        (r, collector.into_issues())
    }

    fn read(csv: &str) -> (Result<CleanSource, DataError>, Vec<crate::report::Issue>) {
        try_read_with(&schema_text(), csv.as_bytes())
    }

    /// Asserts the count of each listed reason (0 where the reason is absent).
    fn assert_counts(issues: &[crate::report::Issue], expected: &[(Reason, u64)]) {
        for &(reason, n) in expected {
            assert_eq!(count(issues, reason), n, "{reason:?}");
        }
    }

    /// Asserts the ids of the `kept` rows, the rows read, and the rows dropped for a missing
    /// and for an unparseable label, in the source's report and in the issues.
    fn assert_dropped(
        src: &CleanSource,
        issues: &[crate::report::Issue],
        kept: &[&str],
        read: u64,
        missing: u64,
        unparseable: u64,
    ) {
        let ids: Vec<&str> = src.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, kept);
        assert_eq!(src.report.rows_read, read);
        assert_eq!(src.report.rows_missing_label, missing);
        assert_eq!(src.report.rows_unparseable_label, unparseable);
        assert_counts(
            issues,
            &[
                (Reason::MissingLabel, missing),
                (Reason::UnparseableLabel, unparseable),
            ],
        );
    }

    /// The issue of `reason`, which must be present.
    fn issue_of(issues: &[crate::report::Issue], reason: Reason) -> &crate::report::Issue {
        issues.iter().find(|i| i.reason == reason).unwrap()
    }

    fn count(issues: &[crate::report::Issue], reason: Reason) -> u64 {
        issues
            .iter()
            .find(|i| i.reason == reason)
            .map_or(0, |i| i.count)
    }

    #[test]
    fn malformed_rows_are_counted_with_line() {
        let (r, issues) = read(
            "id,when,n,c,b,y\nA,2026-01-01,1,One year,Yes,No\nB,2026-01-01,2\nC,2026-01-01,3,one year,no,yes,extra\n",
        );
        let src = r.unwrap();
        assert_eq!(src.rows.len(), 1);
        assert_eq!(src.report.rows_read, 3);
        assert_eq!(src.report.malformed_rows, 2);
        let issue = issue_of(&issues, Reason::MalformedRow);
        assert_eq!(issue.examples[0].line, 3);
        assert_eq!(issue.examples[1].line, 4);
        assert_eq!(issue.examples[0].value, "expected 6 fields, found 3");
    }

    #[test]
    fn missing_header_column_is_an_error_naming_file_and_column() {
        let (r, _) = read("id,when,n,c,y\nA,2026-01-01,1,One year,No\n");
        let e = r.unwrap_err();
        assert_eq!(e.to_string(), "main.csv: missing header column 'b'");
        let (r, _) = read("");
        assert!(matches!(r.unwrap_err(), DataError::EmptyFile { .. }));
        let (r, _) = read("id,id,when,n,c,b,y\n");
        assert!(matches!(r.unwrap_err(), DataError::DuplicateColumn { .. }));
    }

    #[test]
    fn cells_are_cleaned_and_counted() {
        let (r, issues) = read(
            "id,when,n,c,b,y,extra\n\
             A,2026-01-01,1.5,One year,Yes,No,x\n\
             B,2026-01-01,N/A,One year,Yes,No,x\n\
             C,2026-01-01, ,two year,maybe,Yes,x\n\
             D ,2026-01-01, 4 ,ONE YEAR , no,No,x\n\
             E,2026-01-01,5,One year,Yes,No,x\n",
        );
        let src = r.unwrap();
        assert_eq!(src.rows.len(), 5);
        assert_eq!(src.report.undeclared_columns, ["extra"]);
        let v = |r: usize, c: usize| src.rows[r].values[c].clone();
        assert_eq!(v(0, 2), Value::Number(1.5));
        assert_eq!(v(1, 2), Value::Missing);
        assert_eq!(v(2, 2), Value::Missing);
        assert_eq!(v(2, 3), Value::Unseen("two year".into()));
        assert_eq!(v(2, 4), Value::Missing);
        assert_eq!(v(3, 2), Value::Number(4.0));
        assert_eq!(v(3, 3), Value::Category(1));
        assert_eq!(v(3, 4), Value::Bool(false));
        assert_eq!(src.rows[3].id, "D");
        assert_eq!(src.rows[2].label, Some(true));
        assert_eq!(count(&issues, Reason::UnparseableNumber), 1);
        assert_eq!(count(&issues, Reason::BlankCell), 1);
        assert_eq!(count(&issues, Reason::OutsideVocabulary), 2);
        // "D " (id), " 4 " (numeric), "ONE YEAR " (categorical), " no" (boolean; the
        // only "no" but padded). "One year" is dominant, so only "ONE YEAR " is noise.
        assert_eq!(count(&issues, Reason::CaseOrWhitespaceNoise), 4);
        let col = |n: &str| src.columns.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(col("n").unparseable, 1);
        assert_eq!(col("n").blank, 1);
        assert_eq!(col("c").noise, 1);
        assert_eq!(col("c").outside_vocabulary, 1);
        assert!(src.columns.iter().all(|c| c.name != "id"));
    }

    #[test]
    fn dominant_spelling_is_not_noise() {
        let (r, issues) = read(
            "id,when,n,c,b,y\nA,2026-01-01,1,one year,YES,No\nB,2026-01-01,1,one year,YES,No\nC,2026-01-01,1,One year,Yes,No\n",
        );
        r.unwrap();
        // "one year" and "YES" dominate; "One year" and "Yes" are the odd ones out.
        assert_eq!(count(&issues, Reason::CaseOrWhitespaceNoise), 2);
    }

    #[test]
    fn rows_without_id_or_label_are_dropped() {
        let (r, issues) = read(
            "id,when,n,c,b,y\n ,2026-01-01,1,one year,yes,no\nB,2026-01-01,1,one year,yes,\nC,2026-01-01,1,one year,yes,maybe\nD,2026-01-01,1,one year,yes,YES\n",
        );
        let src = r.unwrap();
        assert_eq!(src.rows.len(), 1);
        assert_eq!(src.report.rows_missing_id, 1);
        assert_eq!(src.report.rows_missing_label, 1);
        assert_eq!(src.report.rows_unparseable_label, 1);
        assert_counts(
            &issues,
            &[(Reason::MissingId, 1), (Reason::UnparseableLabel, 1)],
        );
        assert_eq!(src.rows[0].label, Some(true));
    }

    #[test]
    fn bad_dates_are_counted() {
        let (r, issues) = read(
            "id,when,n,c,b,y\nA,yesterday,1,one year,yes,no\nB,,1,one year,yes,no\nC,2026-01-01T10:00:00Z,1,one year,yes,no\n",
        );
        let src = r.unwrap();
        assert_eq!(count(&issues, Reason::UnparseableDate), 2);
        assert!(src.rows[0].date.is_none());
        assert!(src.rows[2].date.is_some());
    }

    #[test]
    fn invalid_utf8_row_is_dropped() {
        let schema = Schema::from_toml_str(&schema_text(), "s").unwrap();
        let mut collector = Collector::default();
        let mut bytes = b"id,when,n,c,b,y\nA,2026-01-01,1,one year,yes,n".to_vec();
        bytes.extend([0xff, b'\n']);
        bytes.extend(b"B,2026-01-01,1,one year,yes,no\n");
        let src = read_source(
            schema.primary_source(),
            schema.key(),
            bytes.as_slice(),
            "main.csv",
            &mut collector,
        )
        .unwrap();
        assert_eq!(src.rows.len(), 1);
        assert_eq!(src.report.invalid_encoding_rows, 1);
    }

    #[test]
    fn date_parsing() {
        assert!(parse_date("2026-07-01").is_some());
        assert!(parse_date("2026-07-01 12:30").is_some());
        assert!(parse_date("2026-07-01T12:30:15.5").is_some());
        assert!(parse_date("2026-7-1").is_none());
        assert!(parse_date("2026-13-01").is_none());
        assert!(parse_date("2026-07-01x").is_none());
        assert!(parse_date("N/A").is_none());
        assert!(parse_date("2026-07-01").unwrap() < parse_date("2026-10-01").unwrap());
        assert!(parse_date("2026-10-01").unwrap() < parse_date("2026-10-01T00:00").unwrap());
    }

    fn target_schema_text() -> String {
        SchemaText::new()
            .source("main", "main.csv", "drop_exact_duplicates = true")
            .columns("id:id n:numeric amount:target")
            .build()
    }

    fn read_target(csv: &str) -> (CleanSource, Vec<crate::report::Issue>) {
        read_with(&target_schema_text(), csv.as_bytes())
    }

    #[test]
    fn target_cells_are_parsed_like_numbers() {
        let (src, issues) = read_target("id,n,amount\nA,1,29.85\nB,2, 56.95 \nC,3,-1e2\nD,x,0\n");
        assert_eq!(src.rows.len(), 4);
        let targets: Vec<Option<f64>> = src.rows.iter().map(|r| r.target).collect();
        assert_eq!(targets, [Some(29.85), Some(56.95), Some(-100.0), Some(0.0)]);
        assert!(src.rows.iter().all(|r| r.label.is_none()));
        assert_eq!(src.rows[1].values[2], Value::Number(56.95));
        // " 56.95 " is white-space noise, like a numeric cell; "x" is a feature cell.
        assert_counts(
            &issues,
            &[
                (Reason::CaseOrWhitespaceNoise, 1),
                (Reason::UnparseableNumber, 1),
                (Reason::MissingLabel, 0),
            ],
        );
        let col = src.columns.iter().find(|c| c.name == "amount").unwrap();
        assert_eq!(col.kind, "target");
        assert_eq!(col.noise, 1);
    }

    #[test]
    fn rows_with_blank_or_unparseable_target_are_dropped() {
        let (src, issues) = read_target(
            "id,n,amount\nA,1,10\nB,2,\nC,3,  \nD,4,N/A\nE,5,inf\nF,6,NaN\nG,7,12.5\nH,8,ten\n",
        );
        assert_dropped(&src, &issues, &["A", "G"], 8, 2, 4);
        // Dropped rows are not cleaned: no cell-level counts for them.
        assert_counts(
            &issues,
            &[(Reason::BlankCell, 0), (Reason::UnparseableNumber, 0)],
        );
        let issue = issue_of(&issues, Reason::UnparseableLabel);
        assert_eq!(issue.examples[0].line, 5);
        assert_eq!(issue.examples[0].column.as_deref(), Some("amount"));
        assert_eq!(issue.examples[0].value, "N/A");
    }

    fn class_schema_text() -> String {
        SchemaText::new()
            .source("main", "main.csv", "")
            .columns("id:id n:numeric")
            .column(
                "contract",
                "class",
                "classes = [\"month-to-month\", \"one year\", \"two year\"]",
            )
            .build()
    }

    fn read_class(csv: &str) -> (CleanSource, Vec<crate::report::Issue>) {
        read_with(&class_schema_text(), csv.as_bytes())
    }

    #[test]
    fn class_cells_are_indexed_in_declared_order() {
        let (src, issues) = read_class(
            "id,n,contract\nA,1,Month-to-month\nB,2,Two year\nC,3,One year\nD,4,ONE YEAR\nE,5, Two year\nF,6,One year\n",
        );
        assert_eq!(src.rows.len(), 6);
        let classes: Vec<Option<u32>> = src.rows.iter().map(|r| r.class).collect();
        assert_eq!(
            classes,
            [Some(0), Some(2), Some(1), Some(1), Some(2), Some(1)]
        );
        assert!(
            src.rows
                .iter()
                .all(|r| r.label.is_none() && r.target.is_none())
        );
        assert_eq!(src.rows[3].values[2], Value::Category(1));
        // "ONE YEAR" (dominant spelling "One year") and " Two year" (padded) are noise,
        // like in a categorical column.
        assert_counts(
            &issues,
            &[
                (Reason::CaseOrWhitespaceNoise, 2),
                (Reason::MissingLabel, 0),
                (Reason::UnparseableLabel, 0),
            ],
        );
        let col = src.columns.iter().find(|c| c.name == "contract").unwrap();
        assert_eq!(col.kind, "class");
        assert_eq!(col.noise, 2);
        assert_eq!(col.outside_vocabulary, 0);
    }

    #[test]
    fn rows_with_blank_or_unknown_class_are_dropped() {
        let (src, issues) = read_class(
            "id,n,contract\nA,1,one year\nB,x,\nC,3,  \nD,4,three year\nE,5,month to month\nF,6,two year\nG,,N/A\n",
        );
        assert_dropped(&src, &issues, &["A", "F"], 7, 2, 3);
        // Dropped rows are not cleaned: "x" and the blank n of G are not counted.
        assert_counts(
            &issues,
            &[(Reason::UnparseableNumber, 0), (Reason::BlankCell, 0)],
        );
        let issue = issue_of(&issues, Reason::UnparseableLabel);
        assert_eq!(issue.examples[0].line, 5);
        assert_eq!(issue.examples[0].column.as_deref(), Some("contract"));
        assert_eq!(issue.examples[0].value, "three year");
        let issue = issue_of(&issues, Reason::MissingLabel);
        assert_eq!(issue.examples[1].line, 4);
        assert_eq!(issue.examples[1].value, "  ");
    }

    fn bounded_schema_text() -> String {
        SchemaText::new()
            .source("main", "main.csv", "")
            .columns("id:id")
            .column("tenure", "numeric", "min = 0\nmax = 72")
            .column("charges", "numeric", "max = 200\nout_of_range = \"reject\"")
            .columns("free:numeric")
            .build()
    }

    fn read_with(schema: &str, csv: &[u8]) -> (CleanSource, Vec<crate::report::Issue>) {
        let (src, issues) = try_read_with(schema, csv);
        (src.unwrap(), issues)
    }

    fn lines_of(issues: &[crate::report::Issue], reason: Reason) -> Vec<(u64, String)> {
        issues
            .iter()
            .filter(|i| i.reason == reason)
            .flat_map(|i| &i.examples)
            .map(|e| (e.line, e.column.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn cells_of_absurd_magnitude_are_unparseable_without_bounds() {
        let (src, issues) = read_with(
            &bounded_schema_text(),
            b"id,tenure,charges,free\nA,1,1,1e15\nB,2,2,1e300\nC,3,3,-2e15\nD,4,4,7\n",
        );
        let v: Vec<Value> = src.rows.iter().map(|r| r.values[3].clone()).collect();
        assert_eq!(
            v,
            [
                Value::Number(1e15),
                Value::Missing,
                Value::Missing,
                Value::Number(7.0)
            ]
        );
        assert_counts(
            &issues,
            &[(Reason::NumberTooLarge, 2), (Reason::UnparseableNumber, 0)],
        );
        assert_eq!(
            lines_of(&issues, Reason::NumberTooLarge),
            [(3, "free".to_owned()), (4, "free".to_owned())]
        );
        let free = src.columns.iter().find(|c| c.name == "free").unwrap();
        assert_eq!(free.unparseable, 2);
        assert_eq!(free.out_of_range, 0);
    }

    #[test]
    fn the_magnitude_ceiling_comes_before_the_bounds() {
        // Clipping 1e300 to 72 would hide a broken export behind a plausible value.
        let (src, issues) = read_with(
            &bounded_schema_text(),
            b"id,tenure,charges,free\nA,1e300,1,1\n",
        );
        assert_eq!(src.rows[0].values[1], Value::Missing);
        assert_counts(
            &issues,
            &[(Reason::NumberTooLarge, 1), (Reason::OutOfRangeClipped, 0)],
        );
    }

    #[test]
    fn out_of_range_cells_are_clipped_or_rejected() {
        let (src, issues) = read_with(
            &bounded_schema_text(),
            b"id,tenure,charges,free\nA,0,200,1\nB,80,250,2\nC,-1,19.5,3\nD,72,1e6,-1e9\n",
        );
        let col = |r: usize, c: usize| src.rows[r].values[c].clone();
        // tenure: [0, 72], clipped.
        assert_eq!(col(0, 1), Value::Number(0.0));
        assert_eq!(col(1, 1), Value::Number(72.0));
        assert_eq!(col(2, 1), Value::Number(0.0));
        assert_eq!(col(3, 1), Value::Number(72.0));
        // charges: <= 200, rejected (imputed).
        assert_eq!(col(0, 2), Value::Number(200.0));
        assert_eq!(col(1, 2), Value::Missing);
        assert_eq!(col(2, 2), Value::Number(19.5));
        assert_eq!(col(3, 2), Value::Missing);
        // free: no bounds.
        assert_eq!(col(3, 3), Value::Number(-1e9));
        assert_eq!(
            lines_of(&issues, Reason::OutOfRangeClipped),
            [(3, "tenure".to_owned()), (4, "tenure".to_owned())]
        );
        assert_eq!(
            lines_of(&issues, Reason::OutOfRangeRejected),
            [(3, "charges".to_owned()), (5, "charges".to_owned())]
        );
        let c = |n: &str| src.columns.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!((c("tenure").out_of_range, c("tenure").unparseable), (2, 0));
        assert_eq!(
            (c("charges").out_of_range, c("charges").unparseable),
            (2, 0)
        );
        assert_eq!(c("free").out_of_range, 0);
    }

    #[test]
    fn a_target_of_absurd_magnitude_drops_the_row() {
        let (src, issues) = read_target("id,n,amount\nA,1,10\nB,2,1e300\nC,3,-1e16\n");
        let ids: Vec<&str> = src.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["A"]);
        assert_eq!(src.report.rows_unparseable_label, 2);
        assert_eq!(count(&issues, Reason::UnparseableLabel), 2);
    }

    #[test]
    fn crlf_files_report_the_same_lines_as_lf_files() {
        let lf = "id,when,n,c,b,y\nA,2026-01-01,x,one year,yes,no\n\"B\",2026-01-01,1,one year,yes,\"no\"\nC,2026-01-01,2,two year,maybe,no\nD,2026-01-01,3,one year,yes,no\nE,2026-01-01,,one year,yes,no\n";
        let crlf = lf.replace('\n', "\r\n");
        let (lf_src, lf_issues) = read_with(&schema_text(), lf.as_bytes());
        let (crlf_src, crlf_issues) = read_with(&schema_text(), crlf.as_bytes());
        assert_eq!(lf_issues, crlf_issues);
        let lines: Vec<u64> = crlf_src.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert_eq!(
            lines_of(&crlf_issues, Reason::UnparseableNumber),
            [(2, "n".to_owned())]
        );
        assert_eq!(
            lines_of(&crlf_issues, Reason::OutsideVocabulary),
            [(4, "c".to_owned()), (4, "b".to_owned())]
        );
        assert_eq!(
            lines_of(&crlf_issues, Reason::BlankCell),
            [(6, "n".to_owned())]
        );
        // The `\r` is not white-space noise in the last column, and no label is lost.
        assert_eq!(count(&crlf_issues, Reason::CaseOrWhitespaceNoise), 0);
        assert_eq!(crlf_src.rows.len(), lf_src.rows.len());
        assert!(crlf_src.rows.iter().all(|r| r.label == Some(false)));
    }

    #[test]
    fn crlf_to_lf_handles_every_chunk_boundary() {
        let input = b"a,b\r\n1,\"x\ry\"\r\n\r\r\n2,3\r";
        let expected = b"a,b\n1,\"x\ry\"\n\r\n2,3\r";
        for capacity in [1, 2, 3, 5, 8192] {
            for out_len in [1, 2, 7, 4096] {
                let mut rdr = CrlfToLf::new(BufReader::with_capacity(capacity, &input[..]));
                let mut got = Vec::new();
                let mut chunk = vec![0u8; out_len];
                loop {
                    let n = rdr.read(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                assert_eq!(got, expected, "capacity {capacity}, out {out_len}");
            }
        }
    }

    #[test]
    fn a_record_after_blank_lines_or_a_multi_line_cell_has_its_own_line() {
        let lf = "id,when,n,c,b,y\nA,2026-01-01,1,one year,yes,no\n\n\nB,2026-01-01,x,one year,yes,no\n\"C\n\",2026-01-01,2,one year,yes,no\nD,2026-01-01,y,one year,yes,no";
        for text in [lf.to_owned(), lf.replace('\n', "\r\n")] {
            let (src, issues) = read_with(&schema_text(), text.as_bytes());
            let lines: Vec<u64> = src.rows.iter().map(|r| r.line).collect();
            assert_eq!(lines, [2, 5, 6, 8], "{text:?}");
            assert_eq!(
                lines_of(&issues, Reason::UnparseableNumber),
                [(5, "n".to_owned()), (8, "n".to_owned())]
            );
        }
    }
}
