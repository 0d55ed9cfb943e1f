//! Starting a schema from a partner's exports: `fedprofile-client schema infer`,
//! `schema check` and `schema merge`.
//!
//! - [`profile_source`] reads one CSV export once, streaming (no row is kept; only
//!   per-column counters, at most [`MAX_TRACKED_VALUES`] distinct values per column with
//!   at most `min_count` user hashes each, and one hash per row for the key and for
//!   exact duplicates), into a [`SourceProfile`].
//! - [`infer_schema`] turns the profiles into a [`Draft`]: a schema with a comment on
//!   every decision, written by [`Draft::to_toml`] and loadable by
//!   [`Schema::from_toml_str`]. Output is deterministic: vocabularies are sorted,
//!   columns keep header order, sources keep the order given.
//! - [`merge_schemas`] combines partners' schemas (files only, never data) into one
//!   federation schema: union of vocabularies and spellings, widest bounds, the more
//!   general type where partners disagree.
//! - [`check_source`] compares a schema with a partner's profile: values outside a
//!   vocabulary, columns whose data looks like another type, extra header columns.
//!
//! Type decisions, per column (cells trimmed and case-folded as the cleaner does):
//! the key is `id`; a column blank throughout, holding one value, or with dates
//! (`YYYY-MM-DD…`) in at least [`TYPE_SHARE`] of its non-blank cells is `ignore` (a date
//! column is suggested as `keep_newest_by` where the key repeats in rows that are not
//! exact copies); a column whose non-blank cells are numbers in at least [`TYPE_SHARE`]
//! is `numeric` (bounds: the observed range rounded outward to two significant
//! digits), unless its numbers are exactly `0` and `1` (`boolean`) or distinct
//! integers in every sampled row (an id: `ignore`); other columns are `ignore` when
//! (almost) every row has its own value (id-like) or there are more than
//! `max_categories` common values (free text), `boolean` when the primary source has
//! exactly two common values spelled like a flag (`yes`/`no`, `true`/`false`,
//! `y`/`n`, `t`/`f`), and `categorical` otherwise. A secondary source's two-valued
//! column is categorical: a user missing from that source is then imputed as
//! unknown (the unseen slot), which a boolean cannot express.
//!
//! **Rare values**: a value held by fewer than `min_count` distinct users is never
//! written (not in a vocabulary, spellings, classes or comment): a shared schema must
//! not reveal them. Such cells go to the unseen slot (categorical) or are counted as
//! outside the vocabulary and imputed (boolean).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::DataError;
use crate::ingest::parse_date;
use crate::schema::{
    Bounds, CategoricalImpute, ColumnDef, ColumnKind, MAX_MAGNITUDE, NumericImpute, OutOfRange,
    SPLIT_PLACEHOLDER, Schema, SourceDef,
};

/// Share of a column's non-blank cells that must be numbers (or dates) for the column
/// to be numeric (or a date column).
pub const TYPE_SHARE: f64 = 0.95;

/// Distinct values tracked per column; a column with more is free text, an id or a
/// continuous number.
pub const MAX_TRACKED_VALUES: usize = 1000;

/// Non-blank cells per column whose distinct count decides "one value per row" (id-like).
const SAMPLE_CELLS: u64 = 10_000;

/// Share of distinct values among the sampled cells above which a column is id-like.
const ID_SHARE: f64 = 0.95;

/// Spellings of a flag, as (true, false) pairs.
const FLAG_PAIRS: [(&str, &str); 5] = [
    ("yes", "no"),
    ("true", "false"),
    ("y", "n"),
    ("t", "f"),
    ("1", "0"),
];

/// Why a schema could not be inferred or merged; every message is one sentence naming
/// the column, option or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// An option does not fit the exports (e.g. a `--positive` value no cell has, a
    /// label column in none of the sources).
    #[error("{0}")]
    Options(String),
    /// The partners' schemas cannot be combined (e.g. a column numeric in one file and
    /// categorical in another); the message names the column and the files.
    #[error("{0}")]
    Conflict(String),
}

/// What `schema infer` needs besides the exports.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// The join key column, in every source.
    pub key: String,
    /// The training target, if any.
    pub label: Option<LabelSpec>,
    /// A value held by fewer users is not written (default 10).
    pub min_count: u64,
    /// More common values than this make a text column free text (`ignore`).
    pub max_categories: usize,
    /// The split the exports belong to: a file in a folder of this name is written
    /// as `{split}/<file>`.
    pub split: String,
    /// Write `min`/`max` on numeric columns (the observed range rounded outward);
    /// default true.
    pub bounds: bool,
}

impl InferOptions {
    /// Defaults: `min_count` 10, `max_categories` 100, split `train`, bounds written.
    pub fn new(key: &str) -> InferOptions {
        InferOptions {
            key: key.to_owned(),
            label: None,
            min_count: 10,
            max_categories: 100,
            split: "train".to_owned(),
            bounds: true,
        }
    }
}

/// The training target `schema infer` is asked to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSpec {
    /// A binary label; `positive` is guessed from a flag spelling if not given.
    Label {
        /// The column.
        column: String,
        /// The positive value (case-folded before use).
        positive: Option<String>,
    },
    /// A numeric regression target.
    Target(String),
    /// A multi-class label.
    Class(String),
}

impl LabelSpec {
    fn column(&self) -> &str {
        match self {
            LabelSpec::Label { column, .. }
            | LabelSpec::Target(column)
            | LabelSpec::Class(column) => column,
        }
    }
}

/// Counts of one (trimmed, case-folded) value of a column.
#[derive(Debug, Clone, Default)]
struct ValueStats {
    cells: u64,
    /// Hashes of the users holding it, at most `min_count` of them.
    users: HashSet<u64>,
    /// Trimmed spellings seen (at most 2: enough to tell "several spellings").
    spellings: BTreeSet<String>,
}

/// What one pass over a column found.
#[derive(Debug, Clone, Default)]
pub struct ColumnProfile {
    /// Header name (trimmed).
    pub name: String,
    /// Cells blank after trimming.
    pub blank: u64,
    /// Non-blank cells.
    pub non_blank: u64,
    /// Non-blank cells that are finite numbers of magnitude at most 1e15.
    pub numbers: u64,
    /// Of those, whole numbers.
    pub integers: u64,
    /// Non-blank cells that are `YYYY-MM-DD…` dates.
    pub dates: u64,
    /// Smallest number seen.
    pub min: Option<f64>,
    /// Largest number seen.
    pub max: Option<f64>,
    /// Cells with surrounding white space.
    pub padded: u64,
    values: BTreeMap<String, ValueStats>,
    /// More than [`MAX_TRACKED_VALUES`] distinct values: `values` was dropped.
    overflow: bool,
    sample: HashSet<u64>,
    sampled: u64,
}

impl ColumnProfile {
    /// Distinct values seen, if at most [`MAX_TRACKED_VALUES`].
    pub fn distinct(&self) -> Option<usize> {
        (!self.overflow).then_some(self.values.len())
    }

    /// Cells holding this trimmed, case-folded value (0 if untracked).
    pub fn cells_of(&self, folded: &str) -> u64 {
        self.values.get(folded).map_or(0, |v| v.cells)
    }

    /// The tracked values with their cell counts, sorted (empty after an overflow).
    pub fn value_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.values.iter().map(|(v, s)| (v.as_str(), s.cells))
    }

    /// Values held by at least `min_count` users, sorted.
    fn common(&self, min_count: u64) -> Vec<String> {
        self.values
            .iter()
            .filter(|(_, s)| s.users.len() as u64 >= min_count)
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// Values held by fewer than `min_count` users.
    fn rare(&self, min_count: u64) -> usize {
        self.values
            .values()
            .filter(|s| (s.users.len() as u64) < min_count)
            .count()
    }

    fn id_like(&self) -> bool {
        self.sampled >= 20 && self.sample.len() as f64 >= ID_SHARE * self.sampled as f64
    }

    fn share(&self, n: u64) -> f64 {
        if self.non_blank == 0 {
            0.0
        } else {
            n as f64 / self.non_blank as f64
        }
    }
}

/// What one pass over a source file found.
#[derive(Debug, Clone)]
pub struct SourceProfile {
    /// Source name.
    pub name: String,
    /// The file read.
    pub file: String,
    /// Data rows read.
    pub rows: u64,
    /// Rows whose field count differs from the header (skipped).
    pub malformed_rows: u64,
    /// Rows with a blank key or a cell that is not UTF-8 (skipped).
    pub skipped_rows: u64,
    /// Distinct keys.
    pub users: u64,
    /// Rows identical (after trimming and case-folding) to an earlier row.
    pub exact_duplicates: u64,
    /// Rows whose key was seen before but that are not exact copies.
    pub repeated_keys: u64,
    /// Every header column except the key, in header order.
    pub columns: Vec<ColumnProfile>,
}

impl SourceProfile {
    /// The column with this header name.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn hash_of(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn parse_number(trimmed: &str) -> Option<f64> {
    trimmed
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && x.abs() <= MAX_MAGNITUDE)
}

/// Reads the CSV file at `path` once into a [`SourceProfile`] (see [`profile_source`]).
pub fn profile_file(
    name: &str,
    path: &Path,
    key: &str,
    min_count: u64,
) -> Result<SourceProfile, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    profile_source(
        name,
        &path.display().to_string(),
        BufReader::new(file),
        key,
        min_count,
    )
}

/// Reads one CSV export once, streaming, into per-column counters. `file` names it in
/// errors; the `key` column must be in its header. Users per value are counted up to
/// `min_count` (enough to tell a rare value from a common one).
pub fn profile_source(
    name: &str,
    file: &str,
    reader: impl Read,
    key: &str,
    min_count: u64,
) -> Result<SourceProfile, DataError> {
    let csv_err = |line: u64, source| DataError::Csv {
        file: file.to_owned(),
        line,
        source,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let header = rdr.byte_headers().map_err(|e| csv_err(1, e))?.clone();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(DataError::EmptyFile {
            file: file.to_owned(),
        });
    }
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for raw in header.iter() {
        let h = String::from_utf8_lossy(raw);
        let h = h.trim_start_matches('\u{feff}').trim().to_owned();
        if names.contains(&h) {
            return Err(DataError::DuplicateColumn {
                file: file.to_owned(),
                column: h,
            });
        }
        names.push(h);
    }
    let key_at = names
        .iter()
        .position(|n| n == key)
        .ok_or_else(|| DataError::MissingColumn {
            file: file.to_owned(),
            column: key.to_owned(),
            near: crate::error::near_match(key, names.iter().map(String::as_str)),
        })?;
    let mut columns: Vec<(usize, ColumnProfile)> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != key_at)
        .map(|(i, n)| {
            (
                i,
                ColumnProfile {
                    name: n.clone(),
                    ..ColumnProfile::default()
                },
            )
        })
        .collect();
    let mut profile = SourceProfile {
        name: name.to_owned(),
        file: file.to_owned(),
        rows: 0,
        malformed_rows: 0,
        skipped_rows: 0,
        users: 0,
        exact_duplicates: 0,
        repeated_keys: 0,
        columns: Vec::new(),
    };
    let mut ids: HashSet<u64> = HashSet::new();
    let mut rows_seen: HashSet<u64> = HashSet::new();
    let mut record = csv::ByteRecord::new();
    let mut folded_row: Vec<String> = Vec::with_capacity(names.len());
    loop {
        let more = rdr
            .read_byte_record(&mut record)
            .map_err(|e| csv_err(e.position().map_or(0, |p| p.line()), e))?;
        if !more {
            break;
        }
        profile.rows += 1;
        if record.len() != names.len() {
            profile.malformed_rows += 1;
            continue;
        }
        let Ok(cells) = record
            .iter()
            .map(std::str::from_utf8)
            .collect::<Result<Vec<&str>, _>>()
        else {
            profile.skipped_rows += 1;
            continue;
        };
        let id = cells[key_at].trim();
        if id.is_empty() {
            profile.skipped_rows += 1;
            continue;
        }
        let user = hash_of(&[id]);
        folded_row.clear();
        folded_row.extend(cells.iter().map(|c| c.trim().to_lowercase()));
        let row_hash = {
            let parts: Vec<&str> = folded_row.iter().map(String::as_str).collect();
            hash_of(&parts)
        };
        let new_user = ids.insert(user);
        if !rows_seen.insert(row_hash) {
            profile.exact_duplicates += 1;
        } else if !new_user {
            profile.repeated_keys += 1;
        }
        for (i, col) in &mut columns {
            let raw = cells[*i];
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                col.blank += 1;
                continue;
            }
            col.non_blank += 1;
            let folded = &folded_row[*i];
            if trimmed.len() != raw.len() {
                col.padded += 1;
            }
            if let Some(x) = parse_number(trimmed) {
                col.numbers += 1;
                if x.fract() == 0.0 {
                    col.integers += 1;
                }
                col.min = Some(col.min.map_or(x, |m| m.min(x)));
                col.max = Some(col.max.map_or(x, |m| m.max(x)));
            } else if parse_date(trimmed).is_some() {
                col.dates += 1;
            }
            if col.sampled < SAMPLE_CELLS {
                col.sampled += 1;
                col.sample.insert(hash_of(&[folded]));
            }
            if !col.overflow {
                if !col.values.contains_key(folded.as_str())
                    && col.values.len() >= MAX_TRACKED_VALUES
                {
                    col.overflow = true;
                    col.values.clear();
                    continue;
                }
                let stats = match col.values.get_mut(folded.as_str()) {
                    Some(s) => s,
                    None => col.values.entry(folded.clone()).or_default(),
                };
                stats.cells += 1;
                if stats.spellings.len() < 2 && !stats.spellings.contains(trimmed) {
                    stats.spellings.insert(trimmed.to_owned());
                }
                if (stats.users.len() as u64) < min_count {
                    stats.users.insert(user);
                }
            }
        }
    }
    profile.users = ids.len() as u64;
    profile.columns = columns.into_iter().map(|(_, c)| c).collect();
    Ok(profile)
}

/// A schema being written: validated parts plus the comments explaining them.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Comment lines at the top of the file.
    pub header: Vec<String>,
    /// The `description` key.
    pub description: String,
    /// The join key.
    pub key: String,
    /// The sources, in order.
    pub sources: Vec<DraftSource>,
}

/// One source of a [`Draft`].
#[derive(Debug, Clone)]
pub struct DraftSource {
    /// The source as it will be written.
    pub def: SourceDef,
    /// Comment lines above its `[[source]]`.
    pub comments: Vec<String>,
    /// Comment lines above each column, one list per column of `def`.
    pub column_comments: Vec<Vec<String>>,
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| quoted(v)).collect();
    format!("[{}]", items.join(", "))
}

fn number(x: f64) -> String {
    let s = format!("{x}");
    if s.contains(['.', 'e', 'E', 'i', 'N']) || s.len() < 16 {
        s
    } else {
        format!("{x:e}")
    }
}

fn comment_block(out: &mut String, lines: &[String]) {
    for line in lines {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}

impl Draft {
    /// The schema file text, with every comment.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        comment_block(&mut out, &self.header);
        let _ = writeln!(out, "\ndescription = {}", quoted(&self.description));
        let _ = writeln!(out, "key = {}", quoted(&self.key));
        for source in &self.sources {
            let s = &source.def;
            let _ = writeln!(out, "\n# {:-<72}", format!("- {} ", s.name));
            comment_block(&mut out, &source.comments);
            let _ = writeln!(out, "[[source]]");
            let _ = writeln!(out, "name = {}", quoted(&s.name));
            let _ = writeln!(out, "path = {}", quoted(&s.path));
            let _ = writeln!(out, "primary = {}", s.primary);
            let _ = writeln!(out, "drop_exact_duplicates = {}", s.drop_exact_duplicates);
            if let Some(date) = &s.keep_newest_by {
                let _ = writeln!(out, "keep_newest_by = {}", quoted(date));
            }
            for (i, c) in s.columns.iter().enumerate() {
                out.push('\n');
                comment_block(&mut out, source.column_comments.get(i).map_or(&[], |v| v));
                render_column(&mut out, c);
            }
        }
        out
    }

    /// The draft parsed back and validated as a [`Schema`] (`origin` starts errors).
    pub fn to_schema(&self, origin: &str) -> Result<Schema, DataError> {
        Schema::from_toml_str(&self.to_toml(), origin)
    }
}

fn render_column(out: &mut String, c: &ColumnDef) {
    let _ = writeln!(out, "[[source.column]]");
    let _ = writeln!(out, "name = {}", quoted(&c.name));
    let _ = writeln!(out, "type = \"{}\"", c.kind.type_name());
    match &c.kind {
        ColumnKind::Id | ColumnKind::Ignore | ColumnKind::Target => {}
        ColumnKind::Numeric { impute, bounds } => {
            match impute {
                NumericImpute::Mean => {
                    let _ = writeln!(out, "impute = \"mean\"");
                }
                NumericImpute::Constant(v) => {
                    let _ = writeln!(out, "impute = \"constant\"\nvalue = {}", number(*v));
                }
            }
            if let Some(b) = bounds {
                if let Some(lo) = b.min {
                    let _ = writeln!(out, "min = {}", number(lo));
                }
                if let Some(hi) = b.max {
                    let _ = writeln!(out, "max = {}", number(hi));
                }
                if b.out_of_range == OutOfRange::Reject {
                    let _ = writeln!(out, "out_of_range = \"reject\"");
                }
            }
        }
        ColumnKind::Categorical { vocabulary, impute } => {
            let _ = writeln!(out, "vocabulary = {}", list(vocabulary));
            if let CategoricalImpute::Constant(v) = impute {
                let _ = writeln!(out, "impute = \"constant\"\nvalue = {}", quoted(v));
            }
        }
        ColumnKind::Boolean {
            true_values,
            false_values,
            impute,
        } => {
            let _ = writeln!(out, "true_values = {}", list(true_values));
            let _ = writeln!(out, "false_values = {}", list(false_values));
            let _ = writeln!(out, "value = {impute}");
        }
        ColumnKind::Label { positive, negative } => {
            let _ = writeln!(out, "positive = {}", quoted(positive));
            if let Some(n) = negative {
                let _ = writeln!(out, "negative = {}", quoted(n));
            }
        }
        ColumnKind::Class { classes } => {
            let _ = writeln!(out, "classes = {}", list(classes));
        }
    }
}

/// Rounds `x` outward (down for a minimum, up for a maximum) to two significant digits.
pub fn round_outward(x: f64, up: bool) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let exp = x.abs().log10().floor() as i32 - 1;
    let scale = 10f64.powi(exp);
    let q = x / scale;
    // A tolerance so that 0.35 / 0.01 = 34.999… is 35, not 34 or 36.
    let k = if up {
        (q - 1e-9).ceil()
    } else {
        (q + 1e-9).floor()
    };
    let decimals = (-exp).max(0) as usize;
    format!("{:.*}", decimals, k * scale)
        .parse()
        .unwrap_or(k * scale)
}

/// What a column looks like, before its source and role are taken into account.
enum Guess {
    Ignore(String),
    Date,
    Numeric,
    Flag { truthy: String, falsy: String },
    Categorical(Vec<String>),
}

fn guess(c: &ColumnProfile, o: &InferOptions) -> Guess {
    if c.non_blank == 0 {
        return Guess::Ignore("blank in every row".into());
    }
    if c.share(c.dates) >= TYPE_SHARE {
        return Guess::Date;
    }
    if c.distinct() == Some(1) {
        return Guess::Ignore("one value in every non-blank row (constant)".into());
    }
    if c.share(c.numbers) >= TYPE_SHARE {
        let numeric: Vec<&str> = c
            .values
            .keys()
            .map(String::as_str)
            .filter(|v| parse_number(v).is_some())
            .collect();
        if !c.overflow && numeric.len() == 2 && numeric.iter().all(|v| *v == "0" || *v == "1") {
            return Guess::Flag {
                truthy: "1".into(),
                falsy: "0".into(),
            };
        }
        if !c.overflow && numeric.len() == 1 {
            return Guess::Ignore("one number in every row (constant)".into());
        }
        if c.integers == c.numbers && c.sampled >= 20 && c.sample.len() as u64 == c.sampled {
            return Guess::Ignore(
                "a different whole number in every row: looks like an id (make it numeric if it is a measurement)".into(),
            );
        }
        return Guess::Numeric;
    }
    if c.id_like() {
        return Guess::Ignore(
            "(almost) every row has its own value: looks like an id or free text".into(),
        );
    }
    if c.overflow {
        return Guess::Ignore(format!(
            "more than {MAX_TRACKED_VALUES} distinct values: free text"
        ));
    }
    let common = c.common(o.min_count);
    match common.len() {
        0 => Guess::Ignore(format!(
            "every value is held by fewer than {} users",
            o.min_count
        )),
        1 => Guess::Ignore(format!(
            "only one value is held by at least {} users (constant)",
            o.min_count
        )),
        n if n > o.max_categories => Guess::Ignore(format!(
            "{n} common values (more than --max-categories {}): free text",
            o.max_categories
        )),
        2 => {
            for (t, f) in FLAG_PAIRS {
                if common.iter().any(|v| v == t) && common.iter().any(|v| v == f) {
                    return Guess::Flag {
                        truthy: t.into(),
                        falsy: f.into(),
                    };
                }
            }
            Guess::Categorical(common)
        }
        _ => Guess::Categorical(common),
    }
}

fn percent(share: f64) -> String {
    format!("{:.1} %", 100.0 * share)
}

fn rare_note(c: &ColumnProfile, min_count: u64) -> Option<String> {
    let rare = c.rare(min_count);
    (rare > 0).then(|| {
        format!(
            "{rare} rare value(s) (fewer than {min_count} users each) left out on purpose: a shared schema must not reveal them; their cells are encoded as unknown"
        )
    })
}

/// A numeric column's kind and notes: mean imputation, bounds from the observed range.
fn numeric(c: &ColumnProfile, o: &InferOptions, notes: &mut Vec<String>) -> ColumnKind {
    let bad = c.non_blank - c.numbers;
    if bad > 0 {
        let examples: Vec<String> = c
            .common(o.min_count)
            .into_iter()
            .filter(|v| parse_number(v).is_none())
            .map(|v| quoted(&v))
            .collect();
        let examples = if examples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", examples.join(", "))
        };
        notes.push(format!(
            "{} of the non-blank cells are not numbers{examples}: counted as unparseable and imputed",
            percent(c.share(bad))
        ));
    }
    if c.blank > 0 {
        notes.push(format!(
            "{} blank cell(s) imputed with the federated mean; if blank means zero, write impute = \"constant\" and value = 0",
            c.blank
        ));
    }
    let whole = (!c.overflow && c.integers == c.numbers).then(|| {
        c.values
            .keys()
            .filter(|v| parse_number(v).is_some())
            .count()
    });
    if let Some(distinct) = whole.filter(|&d| d > 2) {
        notes.push(format!(
            "{distinct} distinct whole numbers: if they are codes rather than quantities, make it categorical"
        ));
    }
    if o.bounds {
        notes.push(
            "min/max: the observed range rounded outward to 2 significant digits; cells outside are clipped (a later export may hold larger values: widen them to the range the federation agrees on)".into(),
        );
    }
    let bounds = match (c.min, c.max) {
        (Some(lo), Some(hi)) if o.bounds => Some(Bounds {
            min: Some(round_outward(lo, false)),
            max: Some(round_outward(hi, true)),
            out_of_range: OutOfRange::Clip,
        }),
        _ => None,
    };
    ColumnKind::Numeric {
        impute: NumericImpute::Mean,
        bounds,
    }
}

/// Decides a column's kind and comments. `primary`: whether its source is the primary.
fn decide(
    c: &ColumnProfile,
    o: &InferOptions,
    primary: bool,
) -> Result<(ColumnKind, Vec<String>), String> {
    let mut notes = Vec::new();
    if let Some(label) = o.label.as_ref().filter(|l| l.column() == c.name) {
        let kind = decide_label(c, label, o)?;
        let notes = notes_label(c, &kind, o.min_count);
        return Ok((kind, notes));
    }
    let kind = match guess(c, o) {
        Guess::Ignore(why) => {
            notes.push(format!("ignored: {why}"));
            ColumnKind::Ignore
        }
        Guess::Date => {
            notes.push("ignored: a date column (dates are not features)".into());
            ColumnKind::Ignore
        }
        Guess::Numeric => numeric(c, o, &mut notes),
        // A 0/1 column of a secondary source stays a number: a user missing from that
        // source is then imputed with the mean like its other numeric columns, and it
        // merges with a partner where the same column holds other numbers.
        Guess::Flag { ref truthy, .. } if !primary && truthy == "1" => numeric(c, o, &mut notes),
        Guess::Flag { truthy, falsy } if primary => {
            notes.push(format!(
                "a flag: blank cells and other spellings are imputed as false{}",
                if c.blank > 0 {
                    format!(" ({} blank)", c.blank)
                } else {
                    String::new()
                }
            ));
            notes.extend(rare_note(c, o.min_count));
            ColumnKind::Boolean {
                true_values: vec![truthy],
                false_values: vec![falsy],
                impute: false,
            }
        }
        Guess::Flag { truthy, falsy } => {
            notes.push(
                "two values, but categorical rather than boolean: users missing from this (secondary) source are then imputed as unknown, not as false".into(),
            );
            notes.extend(rare_note(c, o.min_count));
            let mut vocabulary = vec![truthy, falsy];
            vocabulary.sort();
            ColumnKind::Categorical {
                vocabulary,
                impute: CategoricalImpute::Unknown,
            }
        }
        Guess::Categorical(vocabulary) => {
            notes.extend(rare_note(c, o.min_count));
            ColumnKind::Categorical {
                vocabulary,
                impute: CategoricalImpute::Unknown,
            }
        }
    };
    if matches!(
        kind,
        ColumnKind::Categorical { .. } | ColumnKind::Boolean { .. }
    ) {
        let cased = c.values.values().filter(|v| v.spellings.len() > 1).count();
        if c.padded > 0 || cased > 0 {
            notes.push(format!(
                "{} cell(s) with surrounding white space, {cased} value(s) spelled in more than one case: matched after trimming and case-folding",
                c.padded
            ));
        }
    }
    Ok((kind, notes))
}

/// The comments on the label, target or class column.
fn notes_label(c: &ColumnProfile, kind: &ColumnKind, min_count: u64) -> Vec<String> {
    let mut notes = vec!["the training target: rows where it is blank are dropped".to_owned()];
    match kind {
        ColumnKind::Class { .. } => {
            let rare = c.rare(min_count);
            if rare > 0 {
                notes.push(format!(
                    "{rare} rare class(es) (fewer than {min_count} users each) left out on purpose; their rows are dropped"
                ));
            }
        }
        ColumnKind::Label { negative: None, .. } => notes.push(
            "more than two values: every value other than the positive one is negative".into(),
        ),
        ColumnKind::Target => {
            let bad = c.non_blank - c.numbers;
            if bad > 0 {
                notes.push(format!(
                    "{bad} non-blank cell(s) are not numbers: their rows are dropped"
                ));
            }
        }
        _ => {}
    }
    notes
}

fn decide_label(
    c: &ColumnProfile,
    label: &LabelSpec,
    o: &InferOptions,
) -> Result<ColumnKind, String> {
    let name = &c.name;
    match label {
        LabelSpec::Target(_) => {
            if c.share(c.numbers) < TYPE_SHARE {
                return Err(format!(
                    "--target column '{name}': only {} of its non-blank cells are numbers",
                    percent(c.share(c.numbers))
                ));
            }
            Ok(ColumnKind::Target)
        }
        LabelSpec::Class(_) => {
            let classes = if c.overflow {
                Vec::new()
            } else {
                c.common(o.min_count)
            };
            if classes.len() < 2 {
                return Err(format!(
                    "--class column '{name}': fewer than 2 classes are held by at least {} users each",
                    o.min_count
                ));
            }
            Ok(ColumnKind::Class { classes })
        }
        LabelSpec::Label { positive, .. } => {
            if c.overflow {
                return Err(format!(
                    "--label column '{name}': more than {MAX_TRACKED_VALUES} distinct values, not a binary label"
                ));
            }
            let values: Vec<&str> = c.values.keys().map(String::as_str).collect();
            let positive = match positive {
                Some(p) => {
                    let p = p.trim().to_lowercase();
                    if !values.contains(&p.as_str()) {
                        return Err(format!(
                            "--positive '{p}' is not a value of column '{name}' (after trimming and case-folding)"
                        ));
                    }
                    p
                }
                None => FLAG_PAIRS
                    .iter()
                    .map(|(t, _)| *t)
                    .find(|t| values.contains(t))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        format!(
                            "--label column '{name}': give its positive value with --positive (no yes/true/1 among its values)"
                        )
                    })?,
            };
            let others: Vec<&str> = values.iter().copied().filter(|v| *v != positive).collect();
            let negative = match others.as_slice() {
                [one] => Some((*one).to_owned()),
                _ => None,
            };
            Ok(ColumnKind::Label { positive, negative })
        }
    }
}

/// The schema path of an export: `{split}/<file name>` when the file lies in a folder
/// named like the split, else the file name.
fn schema_path(file: &Path, split: &str) -> String {
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let in_split = file
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == split);
    if in_split {
        format!("{SPLIT_PLACEHOLDER}/{name}")
    } else {
        name
    }
}

/// Infers a schema from the profiles of one partner's exports (one per source, in
/// order; `paths[i]` is the file of `profiles[i]`). The primary source is the one with
/// the label column (else the first). A column in several sources is declared in the
/// first only. Errors are one sentence naming the column or option at fault.
pub fn infer_schema(
    profiles: &[SourceProfile],
    paths: &[&Path],
    o: &InferOptions,
) -> Result<Draft, InferError> {
    infer_draft(profiles, paths, o).map_err(InferError::Options)
}

fn infer_draft(
    profiles: &[SourceProfile],
    paths: &[&Path],
    o: &InferOptions,
) -> Result<Draft, String> {
    if profiles.is_empty() {
        return Err("no source given (use --source NAME=PATH)".into());
    }
    let primary = match &o.label {
        Some(label) => profiles
            .iter()
            .position(|p| p.column(label.column()).is_some())
            .ok_or_else(|| {
                format!(
                    "the label column '{}' is in none of the sources",
                    label.column()
                )
            })?,
        None => 0,
    };
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut sources = Vec::with_capacity(profiles.len());
    for (si, p) in profiles.iter().enumerate() {
        let is_primary = si == primary;
        let mut columns = vec![ColumnDef {
            name: o.key.clone(),
            kind: ColumnKind::Id,
        }];
        let mut column_comments = vec![vec![format!("the join key: {} distinct values", p.users)]];
        let mut comments = vec![format!(
            "{}: {} data rows, {} distinct {}",
            p.file, p.rows, p.users, o.key
        )];
        if p.malformed_rows + p.skipped_rows > 0 {
            comments.push(format!(
                "{} malformed row(s) and {} row(s) with a blank key or invalid UTF-8 were skipped by the inference (and will be dropped when loading)",
                p.malformed_rows, p.skipped_rows
            ));
        }
        let mut dates = Vec::new();
        for c in &p.columns {
            if let Some(owner) = declared.get(&c.name) {
                comments.push(format!(
                    "column '{}' is also in source '{owner}' and declared there only",
                    c.name
                ));
                continue;
            }
            let (kind, notes) =
                decide(c, o, is_primary).map_err(|e| format!("source '{}': {e}", p.name))?;
            if matches!(guess(c, o), Guess::Date)
                && o.label.as_ref().is_none_or(|l| l.column() != c.name)
            {
                dates.push(c.name.clone());
            }
            declared.insert(c.name.clone(), p.name.clone());
            columns.push(ColumnDef {
                name: c.name.clone(),
                kind,
            });
            column_comments.push(notes);
        }
        comments.push(format!(
            "drop_exact_duplicates: {} row(s) are exact copies of an earlier row (after trimming and case-folding)",
            p.exact_duplicates
        ));
        let keep_newest_by = if p.repeated_keys > 0 {
            match dates.first() {
                Some(date) => {
                    comments.push(format!(
                        "keep_newest_by: {} row(s) repeat a {} with other values; the newest by '{date}' is kept{}",
                        p.repeated_keys,
                        o.key,
                        if dates.len() > 1 {
                            format!(" (other date columns: {})", dates[1..].join(", "))
                        } else {
                            String::new()
                        }
                    ));
                    Some(date.clone())
                }
                None => {
                    comments.push(format!(
                        "{} row(s) repeat a {} with other values and there is no date column: the first row of each is kept (counted as duplicate_id)",
                        p.repeated_keys, o.key
                    ));
                    None
                }
            }
        } else {
            None
        };
        sources.push(DraftSource {
            def: SourceDef {
                name: p.name.clone(),
                path: schema_path(
                    paths.get(si).copied().unwrap_or(Path::new(&p.file)),
                    &o.split,
                ),
                primary: is_primary,
                drop_exact_duplicates: true,
                keep_newest_by,
                columns,
            },
            comments,
            column_comments,
        });
    }
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    Ok(Draft {
        header: vec![
            "fedprofile data schema, inferred by `fedprofile-client schema infer`.".into(),
            "Review every column before sharing it; the format is in docs/schema.md.".into(),
            String::new(),
            format!(
                "Values held by fewer than {} users are not written anywhere in this file (not in a",
                o.min_count
            ),
            "vocabulary, spelling list or comment): a shared schema must not reveal them. Their"
                .into(),
            "cells are encoded as unknown (the unseen slot) or imputed.".into(),
        ],
        description: format!("inferred from {}", names.join(", ")),
        key: o.key.clone(),
        sources,
    })
}

// ------------------------------------------------------------------ merge

/// The values of a boolean or categorical column, if all of them are numbers (e.g.
/// `0`/`1`).
fn numeric_values(kind: &ColumnKind) -> Option<Vec<f64>> {
    let values: Vec<&String> = match kind {
        ColumnKind::Categorical { vocabulary, .. } => vocabulary.iter().collect(),
        ColumnKind::Boolean {
            true_values,
            false_values,
            ..
        } => true_values.iter().chain(false_values).collect(),
        _ => return None,
    };
    values.into_iter().map(|v| parse_number(v)).collect()
}

/// A numeric column widened to hold `values` (the numbers another partner declared
/// as a vocabulary or spellings).
fn numeric_holding(kind: &ColumnKind, values: &[f64]) -> ColumnKind {
    match kind {
        ColumnKind::Numeric {
            impute,
            bounds: Some(b),
        } => {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            ColumnKind::Numeric {
                impute: *impute,
                bounds: Some(Bounds {
                    min: b.min.map(|m| m.min(lo)),
                    max: b.max.map(|m| m.max(hi)),
                    out_of_range: b.out_of_range,
                }),
            }
        }
        other => other.clone(),
    }
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .chain(b)
        .cloned()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// Merges two declarations of one column; `Err` names the conflict, `Ok(Some(note))`
/// explains a widening.
fn merge_kind(a: &ColumnKind, b: &ColumnKind) -> Result<(ColumnKind, Option<String>), String> {
    use ColumnKind as K;
    let widened = |k: K, why: &str| Ok((k, Some(why.to_owned())));
    match (a, b) {
        _ if a == b => Ok((a.clone(), None)),
        (K::Ignore, other) | (other, K::Ignore) if other.is_feature() => widened(
            other.clone(),
            "ignored at some partners (e.g. constant there), a feature at others: kept as a feature",
        ),
        (
            K::Numeric {
                impute: ia,
                bounds: ba,
            },
            K::Numeric {
                impute: ib,
                bounds: bb,
            },
        ) => {
            if ia != ib {
                return Err("the partners impute it differently".into());
            }
            let bounds = match (ba, bb) {
                (Some(x), Some(y)) => {
                    if x.out_of_range != y.out_of_range {
                        return Err("the partners disagree on out_of_range".into());
                    }
                    let wide = |p: Option<f64>, q: Option<f64>, f: fn(f64, f64) -> f64| {
                        p.zip(q).map(|(p, q)| f(p, q))
                    };
                    let min = wide(x.min, y.min, f64::min);
                    let max = wide(x.max, y.max, f64::max);
                    (min.is_some() || max.is_some()).then_some(Bounds {
                        min,
                        max,
                        out_of_range: x.out_of_range,
                    })
                }
                _ => None,
            };
            Ok((
                K::Numeric {
                    impute: *ia,
                    bounds,
                },
                None,
            ))
        }
        (K::Numeric { .. }, K::Boolean { .. } | K::Categorical { .. })
        | (K::Boolean { .. } | K::Categorical { .. }, K::Numeric { .. })
            if numeric_values(a).or_else(|| numeric_values(b)).is_some() =>
        {
            let (num, values) = match numeric_values(b) {
                Some(values) => (a, values),
                None => (b, numeric_values(a).unwrap_or_default()),
            };
            widened(
                numeric_holding(num, &values),
                "a few numbers (e.g. 0/1) at some partners, other numbers at others: numeric",
            )
        }
        (
            K::Categorical {
                vocabulary: va,
                impute: ia,
            },
            K::Categorical {
                vocabulary: vb,
                impute: ib,
            },
        ) => {
            if ia != ib {
                return Err("the partners impute it differently".into());
            }
            Ok((
                K::Categorical {
                    vocabulary: union(va, vb),
                    impute: ia.clone(),
                },
                None,
            ))
        }
        (
            K::Boolean {
                true_values: ta,
                false_values: fa,
                impute: ia,
            },
            K::Boolean {
                true_values: tb,
                false_values: fb,
                impute: ib,
            },
        ) => {
            if ia != ib {
                return Err("the partners impute it differently (value)".into());
            }
            let (t, f) = (union(ta, tb), union(fa, fb));
            if let Some(both) = t.iter().find(|v| f.contains(v)) {
                return Err(format!(
                    "'{both}' is true at some partners and false at others"
                ));
            }
            Ok((
                K::Boolean {
                    true_values: t,
                    false_values: f,
                    impute: *ia,
                },
                None,
            ))
        }
        (
            K::Categorical { vocabulary, impute },
            K::Boolean {
                true_values,
                false_values,
                ..
            },
        )
        | (
            K::Boolean {
                true_values,
                false_values,
                ..
            },
            K::Categorical { vocabulary, impute },
        ) => widened(
            K::Categorical {
                vocabulary: union(vocabulary, &union(true_values, false_values)),
                impute: impute.clone(),
            },
            "boolean at some partners, categorical at others: categorical (the union of the values)",
        ),
        (K::Class { classes: ca }, K::Class { classes: cb }) => Ok((
            K::Class {
                classes: union(ca, cb),
            },
            None,
        )),
        (
            K::Label {
                positive: pa,
                negative: na,
            },
            K::Label {
                positive: pb,
                negative: nb,
            },
        ) if pa == pb => {
            if na.is_some() && nb.is_some() {
                return Err("the partners' labels have different negative values".into());
            }
            widened(
                K::Label {
                    positive: pa.clone(),
                    negative: None,
                },
                "the label has more than two values at some partner: every value other than the positive one is negative",
            )
        }
        _ => Err(format!(
            "its types cannot be combined ({} and {})",
            describe(a),
            describe(b)
        )),
    }
}

fn describe(kind: &ColumnKind) -> String {
    match kind {
        ColumnKind::Label { positive, .. } => format!("label with positive '{positive}'"),
        other => other.type_name().to_owned(),
    }
}

/// Merges partners' schemas, given as `(file name, schema)`, into one federation
/// schema: the same key and sources (matched by name, in the first file's order),
/// columns in first-seen order, vocabularies, spellings and classes united, numeric
/// bounds widened (a file without bounds on a column removes them), boolean and
/// categorical united as categorical, `ignore` and a feature type as the feature.
/// Numeric against categorical (or text boolean) is an error naming the column and
/// files: one partner's column is text where another's holds numbers, which a person
/// must resolve. Only schema files are read.
pub fn merge_schemas(files: &[(String, Schema)]) -> Result<Draft, InferError> {
    merge_drafts(files).map_err(InferError::Conflict)
}

fn merge_drafts(files: &[(String, Schema)]) -> Result<Draft, String> {
    let Some((first_file, first)) = files.first() else {
        return Err("no schema given".into());
    };
    let mut merged: Vec<SourceDef> = first.sources().to_vec();
    // (source, column) -> (files declaring it, widening notes)
    let mut seen: BTreeMap<(String, String), (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
    for s in &merged {
        for c in &s.columns {
            seen.insert(
                (s.name.clone(), c.name.clone()),
                (vec![first_file.clone()], BTreeSet::new()),
            );
        }
    }
    for (file, schema) in &files[1..] {
        if schema.key() != first.key() {
            return Err(format!(
                "{file}: key '{}' differs from '{}' in {first_file}",
                schema.key(),
                first.key()
            ));
        }
        for s in schema.sources() {
            let Some(target) = merged.iter_mut().find(|m| m.name == s.name) else {
                return Err(format!(
                    "{file}: source '{}' is not in {first_file} (every partner must have the same sources)",
                    s.name
                ));
            };
            if target.path != s.path {
                return Err(format!(
                    "{file}: source '{}' has path '{}', {first_file} has '{}'",
                    s.name, s.path, target.path
                ));
            }
            if target.primary != s.primary {
                return Err(format!(
                    "{file}: source '{}' is {}primary, in {first_file} it is {}",
                    s.name,
                    if s.primary { "" } else { "not " },
                    if target.primary {
                        "primary"
                    } else {
                        "not primary"
                    }
                ));
            }
            target.drop_exact_duplicates |= s.drop_exact_duplicates;
            match (&target.keep_newest_by, &s.keep_newest_by) {
                (None, Some(d)) => target.keep_newest_by = Some(d.clone()),
                (Some(a), Some(b)) if a != b => {
                    return Err(format!(
                        "{file}: source '{}' keeps the newest row by '{b}', {first_file} by '{a}'",
                        s.name
                    ));
                }
                _ => {}
            }
            for c in &s.columns {
                let id = (s.name.clone(), c.name.clone());
                match target.columns.iter_mut().find(|t| t.name == c.name) {
                    None => {
                        target.columns.push(c.clone());
                        seen.insert(id, (vec![file.clone()], BTreeSet::new()));
                    }
                    Some(t) => {
                        let entry = seen.entry(id).or_default();
                        let (kind, note) = merge_kind(&t.kind, &c.kind).map_err(|e| {
                            format!(
                                "column '{}' of source '{}': {e} (in {} and {file})",
                                c.name,
                                s.name,
                                entry.0.join(", ")
                            )
                        })?;
                        t.kind = kind;
                        entry.0.push(file.clone());
                        entry.1.extend(note);
                    }
                }
            }
        }
        if let Some(missing) = merged
            .iter()
            .find(|m| !schema.sources().iter().any(|s| s.name == m.name))
        {
            return Err(format!(
                "{file}: source '{}' of {first_file} is missing (every partner must have the same sources)",
                missing.name
            ));
        }
    }
    let all: Vec<String> = files.iter().map(|(f, _)| f.clone()).collect();
    let mut sources = Vec::with_capacity(merged.len());
    for s in merged {
        // keep_newest_by needs an ignored date column: a partner may have left it out.
        if let Some(date) = &s.keep_newest_by
            && !s
                .columns
                .iter()
                .any(|c| &c.name == date && c.kind == ColumnKind::Ignore)
        {
            return Err(format!(
                "source '{}': keep_newest_by column '{date}' is not an ignored column in every file",
                s.name
            ));
        }
        let column_comments = s
            .columns
            .iter()
            .map(|c| {
                let (in_files, notes) = seen
                    .get(&(s.name.clone(), c.name.clone()))
                    .cloned()
                    .unwrap_or_default();
                let mut lines: Vec<String> = notes.into_iter().collect();
                if in_files.len() < all.len() && c.name != first.key() {
                    lines.push(format!(
                        "only in {}: a partner without it gets 'missing header column'",
                        in_files.join(", ")
                    ));
                }
                lines
            })
            .collect();
        sources.push(DraftSource {
            def: s,
            comments: Vec::new(),
            column_comments,
        });
    }
    Ok(Draft {
        header: vec![
            "fedprofile federation schema, merged by `fedprofile-client schema merge` from:".into(),
            format!("  {}", all.join(", ")),
            "Vocabularies, spellings and classes are the union of the partners' (each left out"
                .into(),
            "its rare values); numeric bounds are the widest; boolean and categorical became"
                .into(),
            "categorical. Format: docs/schema.md.".into(),
        ],
        description: format!("merged from {}", all.join(", ")),
        key: first.key().to_owned(),
        sources,
    })
}

// ------------------------------------------------------------------ check

/// One difference between a schema and a partner's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The source.
    pub source: String,
    /// What differs, one sentence naming the column.
    pub message: String,
}

/// Compares the declared columns of `source` with a profile of its file: values
/// outside a vocabulary, spellings or label values (with counts: this output stays
/// with the partner), columns whose data looks like another type, header columns
/// not declared. (Missing header columns are reported by loading the split.)
pub fn check_source(source: &SourceDef, profile: &SourceProfile, o: &InferOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |message: String| {
        findings.push(Finding {
            source: source.name.clone(),
            message,
        })
    };
    for c in &profile.columns {
        if !source.columns.iter().any(|d| d.name == c.name) {
            add(format!(
                "header column '{}' is not declared (not read)",
                c.name
            ));
        }
    }
    for d in &source.columns {
        let Some(c) = profile.column(&d.name) else {
            continue;
        };
        let outside = |known: &[&str]| -> Vec<String> {
            c.values
                .iter()
                .filter(|(v, _)| !known.contains(&v.as_str()))
                .map(|(v, s)| format!("{} ({} cells)", quoted(v), s.cells))
                .collect()
        };
        let values_note = |what: &str, known: &[&str]| -> Option<String> {
            let out = outside(known);
            (!out.is_empty()).then(|| {
                format!(
                    "column '{}': {} value(s) not in its {what}: {}",
                    d.name,
                    out.len(),
                    out.join(", ")
                )
            })
        };
        let note = match &d.kind {
            ColumnKind::Categorical { vocabulary, .. } => {
                let known: Vec<&str> = vocabulary.iter().map(String::as_str).collect();
                values_note("vocabulary (encoded as unknown)", &known)
            }
            ColumnKind::Boolean {
                true_values,
                false_values,
                ..
            } => {
                let known: Vec<&str> = true_values
                    .iter()
                    .chain(false_values)
                    .map(String::as_str)
                    .collect();
                values_note("spellings (imputed)", &known)
            }
            ColumnKind::Label { positive, negative } => {
                if c.cells_of(positive) == 0 {
                    add(format!(
                        "column '{}': no cell has the positive value '{positive}'",
                        d.name
                    ));
                }
                negative.as_ref().and_then(|n| {
                    values_note(
                        "label values (rows dropped)",
                        &[positive.as_str(), n.as_str()],
                    )
                })
            }
            ColumnKind::Class { classes } => {
                let known: Vec<&str> = classes.iter().map(String::as_str).collect();
                values_note("classes (rows dropped)", &known)
            }
            ColumnKind::Numeric { bounds, .. } => {
                let mut parts = Vec::new();
                let bad = c.non_blank - c.numbers;
                if bad > 0 {
                    parts.push(format!("{bad} non-blank cell(s) are not numbers"));
                }
                if let Some(b) = bounds
                    && c.min
                        .zip(c.max)
                        .is_some_and(|(lo, hi)| !b.contains(lo) || !b.contains(hi))
                {
                    parts.push(format!("some values lie outside the bounds {b}"));
                }
                (!parts.is_empty()).then(|| format!("column '{}': {}", d.name, parts.join("; ")))
            }
            ColumnKind::Id | ColumnKind::Target | ColumnKind::Ignore => None,
        };
        if let Some(n) = note {
            add(n);
        }
        if d.kind.is_label() || d.kind == ColumnKind::Id {
            continue;
        }
        if let Ok((inferred, _)) = decide(c, o, source.primary)
            && inferred.type_name() != d.kind.type_name()
            && !(inferred == ColumnKind::Ignore || d.kind == ColumnKind::Ignore)
        {
            add(format!(
                "column '{}': declared {}, but this partner's data looks {}",
                d.name,
                d.kind.type_name(),
                inferred.type_name()
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(csv: &str) -> SourceProfile {
        profile_source("s", "s.csv", csv.as_bytes(), "id", 3).unwrap()
    }

    fn options() -> InferOptions {
        InferOptions {
            min_count: 3,
            ..InferOptions::new("id")
        }
    }

    /// A CSV with an `id` column and one column `x` holding `cells`.
    fn one_column(cells: &[&str]) -> String {
        let mut csv = "id,x\n".to_owned();
        for (i, c) in cells.iter().enumerate() {
            let _ = writeln!(csv, "u{i},{c}");
        }
        csv
    }

    fn kind_of(cells: &[&str]) -> ColumnKind {
        let p = profile(&one_column(cells));
        decide(p.column("x").unwrap(), &options(), true).unwrap().0
    }

    fn repeat(pattern: &[&'static str], n: usize) -> Vec<&'static str> {
        pattern.iter().copied().cycle().take(n).collect()
    }

    #[test]
    fn numbers_with_a_few_na_are_numeric_with_rounded_bounds() {
        let mut cells = Vec::new();
        for i in 0..100 {
            cells.push(["18.25", "61.3", "118.75", "42"][i % 4]);
        }
        cells[7] = "N/A";
        cells[9] = " ";
        let p = profile(&one_column(&cells));
        let (kind, notes) = decide(p.column("x").unwrap(), &options(), true).unwrap();
        assert_eq!(
            kind,
            ColumnKind::Numeric {
                impute: NumericImpute::Mean,
                bounds: Some(Bounds {
                    min: Some(18.0),
                    max: Some(120.0),
                    out_of_range: OutOfRange::Clip
                }),
            }
        );
        let notes = notes.join("\n");
        assert!(
            notes.contains("1.0 % of the non-blank cells are not numbers"),
            "{notes}"
        );
        // "N/A" is held by one user only (< min_count 3): not named.
        assert!(!notes.contains("N/A") && !notes.contains("n/a"), "{notes}");
        // Too many N/A: not numeric.
        let mostly_text = repeat(&["1", "n/a", "2", "n/a"], 40);
        assert!(matches!(
            kind_of(&mostly_text),
            ColumnKind::Categorical { .. }
        ));
    }

    #[test]
    fn yes_no_spellings_are_one_boolean_and_secondary_sources_get_categorical() {
        let cells = repeat(&["Yes", " no", "YES", "No", "no "], 30);
        assert_eq!(
            kind_of(&cells),
            ColumnKind::Boolean {
                true_values: vec!["yes".into()],
                false_values: vec!["no".into()],
                impute: false,
            }
        );
        let p = profile(&one_column(&cells));
        let (kind, _) = decide(p.column("x").unwrap(), &options(), false).unwrap();
        assert_eq!(
            kind,
            ColumnKind::Categorical {
                vocabulary: vec!["no".into(), "yes".into()],
                impute: CategoricalImpute::Unknown,
            }
        );
        // 0/1 is a flag in the primary source, a number in a secondary one.
        let p = profile(&one_column(&repeat(&["0", "1", "0"], 30)));
        let (kind, _) = decide(p.column("x").unwrap(), &options(), false).unwrap();
        assert!(matches!(kind, ColumnKind::Numeric { .. }), "{kind:?}");
        // 0/1 is a flag too; two words that are not a flag are categorical.
        assert!(matches!(
            kind_of(&repeat(&["0", "1", "0"], 30)),
            ColumnKind::Boolean { ref true_values, .. } if true_values == &["1".to_owned()]
        ));
        assert_eq!(
            kind_of(&repeat(&["Male", "Female"], 30)),
            ColumnKind::Categorical {
                vocabulary: vec!["female".into(), "male".into()],
                impute: CategoricalImpute::Unknown,
            }
        );
    }

    #[test]
    fn ids_constants_dates_and_free_text_are_ignored() {
        let ids: Vec<String> = (0..50).map(|i| format!("C{i:05}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(kind_of(&ids), ColumnKind::Ignore);
        let codes: Vec<String> = (0..50).map(|i| (1000 + i * 7).to_string()).collect();
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        assert_eq!(kind_of(&codes), ColumnKind::Ignore);
        assert_eq!(
            kind_of(&repeat(&["Electronic check", " electronic check"], 40)),
            ColumnKind::Ignore
        );
        assert_eq!(kind_of(&repeat(&["5", "5 "], 40)), ColumnKind::Ignore);
        assert_eq!(kind_of(&repeat(&["", " "], 40)), ColumnKind::Ignore);
        assert_eq!(
            kind_of(&repeat(
                &["2026-07-01", "2026-10-01", "2026-10-01T10:00:00Z"],
                40
            )),
            ColumnKind::Ignore
        );
        // Many distinct decimals are a measurement, not an id.
        let amounts: Vec<String> = (0..50).map(|i| format!("{}.5", 10 + i)).collect();
        let amounts: Vec<&str> = amounts.iter().map(String::as_str).collect();
        assert!(matches!(kind_of(&amounts), ColumnKind::Numeric { .. }));
    }

    #[test]
    fn a_date_column_is_suggested_as_keep_newest_by_when_the_key_repeats() {
        let csv = "id,updated,plan\nu1,2026-07-01,a\nu1,2026-10-01,b\nu2,2026-10-01,a\nu2,2026-10-01,a\nu3,2026-10-01,b\nu4,2026-10-01,a\nu5,2026-10-01,b\n";
        let p = profile(csv);
        assert_eq!((p.users, p.exact_duplicates, p.repeated_keys), (5, 1, 1));
        let draft = infer_schema(&[p], &[Path::new("data/train/a.csv")], &options()).unwrap();
        let s = &draft.sources[0].def;
        assert_eq!(s.keep_newest_by.as_deref(), Some("updated"));
        assert_eq!(s.path, "{split}/a.csv");
        let schema = draft.to_schema("inferred.toml").unwrap();
        assert_eq!(schema.column("updated").unwrap().kind, ColumnKind::Ignore);
        // Only exact copies: no keep_newest_by.
        let p = profile("id,updated,plan\nu1,2026-07-01,a\nu1,2026-07-01,a\nu2,2026-07-01,b\n");
        let draft = infer_schema(&[p], &[Path::new("a.csv")], &options()).unwrap();
        assert_eq!(draft.sources[0].def.keep_newest_by, None);
        assert_eq!(draft.sources[0].def.path, "a.csv");
    }

    #[test]
    fn a_key_missing_from_the_header_hints_its_near_match() {
        let e = profile_source(
            "a",
            "a.csv",
            "CustomerID,plan\nu1,a\n".as_bytes(),
            "customer_id",
            3,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.csv: missing header column 'customer_id' (line 1); the header has 'CustomerID' — column names are matched exactly"
        );
    }

    #[test]
    fn rare_categories_are_not_written() {
        let mut cells = repeat(&["dsl", "fiber optic", "no"], 30);
        cells.extend(["satellite", "satellite"]); // 2 users < min_count 3
        let p = profile(&one_column(&cells));
        let draft = infer_schema(&[p], &[Path::new("s.csv")], &options()).unwrap();
        let text = draft.to_toml();
        assert!(
            text.contains("vocabulary = [\"dsl\", \"fiber optic\", \"no\"]"),
            "{text}"
        );
        assert!(!text.contains("satellite"), "{text}");
        assert!(
            text.contains("1 rare value(s) (fewer than 3 users each) left out"),
            "{text}"
        );
        // Users, not cells: one user with many rows of a value is still rare.
        let csv = "id,x\n".to_owned()
            + &"u1,satellite\n".repeat(5)
            + &(0..30)
                .map(|i| format!("v{i},{}\n", ["a", "b"][i % 2]))
                .collect::<String>();
        let p = profile(&csv);
        assert_eq!(p.column("x").unwrap().common(3), ["a", "b"]);
    }

    #[test]
    fn labels_get_their_values_and_inference_is_deterministic() {
        let csv = "id,x,churn\n".to_owned()
            + &(0..40)
                .map(|i| {
                    format!(
                        "u{i},{},{}\n",
                        ["a", "b", "c"][i % 3],
                        ["Yes", "no", "No"][i % 3]
                    )
                })
                .collect::<String>();
        let o = InferOptions {
            label: Some(LabelSpec::Label {
                column: "churn".into(),
                positive: None,
            }),
            ..options()
        };
        let run = || {
            let p = profile(&csv);
            infer_schema(&[p], &[Path::new("s.csv")], &o)
                .unwrap()
                .to_toml()
        };
        let text = run();
        assert_eq!(text, run());
        let schema = Schema::from_toml_str(&text, "t").unwrap();
        assert_eq!(
            schema.column("churn").unwrap().kind,
            ColumnKind::Label {
                positive: "yes".into(),
                negative: Some("no".into())
            }
        );
        let bad = InferOptions {
            label: Some(LabelSpec::Label {
                column: "churn".into(),
                positive: Some("maybe".into()),
            }),
            ..options()
        };
        let e = infer_schema(&[profile(&csv)], &[Path::new("s.csv")], &bad).unwrap_err();
        assert!(matches!(e, InferError::Options(_)));
        assert_eq!(
            e.to_string(),
            "source 's': --positive 'maybe' is not a value of column 'churn' (after trimming and case-folding)"
        );
    }

    #[test]
    fn class_and_target_columns_keep_only_common_classes_and_need_numbers() {
        let csv = "id,plan,amount\n".to_owned()
            + &(0..30)
                .map(|i| format!("u{i},{},{}.5\n", ["Basic", "gold"][i % 2], i))
                .collect::<String>()
            + "v1,platinum,3\n";
        let class = InferOptions {
            label: Some(LabelSpec::Class("plan".into())),
            ..options()
        };
        let text = infer_schema(&[profile(&csv)], &[Path::new("s.csv")], &class)
            .unwrap()
            .to_toml();
        assert!(text.contains("classes = [\"basic\", \"gold\"]"), "{text}");
        assert!(!text.contains("platinum"), "{text}");
        assert!(
            text.contains("1 rare class(es) (fewer than 3 users each) left out"),
            "{text}"
        );
        let target = InferOptions {
            label: Some(LabelSpec::Target("amount".into())),
            ..options()
        };
        let schema = infer_schema(&[profile(&csv)], &[Path::new("s.csv")], &target)
            .unwrap()
            .to_schema("t")
            .unwrap();
        assert_eq!(schema.column("amount").unwrap().kind, ColumnKind::Target);
        let text_target = InferOptions {
            label: Some(LabelSpec::Target("plan".into())),
            ..options()
        };
        let e = infer_schema(&[profile(&csv)], &[Path::new("s.csv")], &text_target).unwrap_err();
        assert_eq!(
            e.to_string(),
            "source 's': --target column 'plan': only 0.0 % of its non-blank cells are numbers"
        );
    }

    #[test]
    fn rounding_outward_keeps_two_significant_digits() {
        assert_eq!(round_outward(118.75, true), 120.0);
        assert_eq!(round_outward(18.25, false), 18.0);
        assert_eq!(round_outward(8684.8, true), 8700.0);
        assert_eq!(round_outward(72.0, true), 72.0);
        assert_eq!(round_outward(0.35, true), 0.35);
        assert_eq!(round_outward(-3.41, false), -3.5);
        assert_eq!(round_outward(0.0, false), 0.0);
    }

    fn schema(text: &str) -> Schema {
        Schema::from_toml_str(text, "t").unwrap()
    }

    const BASE: &str = "key = \"id\"\n[[source]]\nname = \"s\"\npath = \"s.csv\"\n[[source.column]]\nname = \"id\"\ntype = \"id\"\n[[source.column]]\nname = \"x\"\n";

    #[test]
    fn merge_unites_vocabularies_widens_bounds_and_generalizes_types() {
        let a = schema(&format!(
            "{BASE}type = \"boolean\"\ntrue_values = [\"yes\"]\nfalse_values = [\"no\"]\nvalue = false\n[[source.column]]\nname = \"n\"\ntype = \"numeric\"\nmin = 0\nmax = 70\n[[source.column]]\nname = \"c\"\ntype = \"ignore\""
        ));
        let b = schema(&format!(
            "{BASE}type = \"categorical\"\nvocabulary = [\"maybe\", \"no\"]\n[[source.column]]\nname = \"n\"\ntype = \"numeric\"\nmin = -1\nmax = 50\n[[source.column]]\nname = \"c\"\ntype = \"categorical\"\nvocabulary = [\"p\", \"q\"]"
        ));
        let draft = merge_schemas(&[("a.toml".into(), a), ("b.toml".into(), b)]).unwrap();
        let merged = draft.to_schema("federation.toml").unwrap();
        assert_eq!(
            merged.column("x").unwrap().kind,
            ColumnKind::Categorical {
                vocabulary: vec!["maybe".into(), "no".into(), "yes".into()],
                impute: CategoricalImpute::Unknown
            }
        );
        assert_eq!(
            merged.column("n").unwrap().kind,
            ColumnKind::Numeric {
                impute: NumericImpute::Mean,
                bounds: Some(Bounds {
                    min: Some(-1.0),
                    max: Some(70.0),
                    out_of_range: OutOfRange::Clip
                })
            }
        );
        assert!(matches!(
            merged.column("c").unwrap().kind,
            ColumnKind::Categorical { .. }
        ));
        assert!(
            draft
                .to_toml()
                .contains("categorical (the union of the values)")
        );
    }

    #[test]
    fn merge_takes_numbers_in_a_vocabulary_as_numeric() {
        let a = schema(&format!("{BASE}type = \"numeric\"\nmin = 0\nmax = 2"));
        let b = schema(&format!(
            "{BASE}type = \"categorical\"\nvocabulary = [\"0\", \"5\"]"
        ));
        let merged = merge_schemas(&[("a.toml".into(), a), ("b.toml".into(), b)])
            .unwrap()
            .to_schema("f.toml")
            .unwrap();
        assert!(matches!(
            merged.column("x").unwrap().kind,
            ColumnKind::Numeric { .. }
        ));
    }

    #[test]
    fn merge_refuses_numeric_against_categorical_naming_column_and_files() {
        let a = schema(&format!("{BASE}type = \"numeric\""));
        let b = schema(&format!(
            "{BASE}type = \"categorical\"\nvocabulary = [\"low\"]"
        ));
        let e = merge_schemas(&[("a.toml".into(), a), ("b.toml".into(), b)]).unwrap_err();
        assert!(matches!(e, InferError::Conflict(_)));
        assert_eq!(
            e.to_string(),
            "column 'x' of source 's': its types cannot be combined (numeric and categorical) (in a.toml and b.toml)"
        );
    }

    #[test]
    fn check_reports_values_outside_the_vocabulary_and_type_differences() {
        let s = schema(&format!(
            "{BASE}type = \"categorical\"\nvocabulary = [\"a\", \"b\"]\n[[source.column]]\nname = \"n\"\ntype = \"categorical\"\nvocabulary = [\"1\", \"2\"]"
        ));
        let csv = "id,x,n,extra\n".to_owned()
            + &(0..30)
                .map(|i| format!("u{i},{},{}.5,z\n", ["a", "b", "c"][i % 3], i))
                .collect::<String>();
        let p = profile(&csv);
        let findings: Vec<String> = check_source(&s.sources()[0], &p, &options())
            .into_iter()
            .map(|f| f.message)
            .collect();
        assert!(
            findings.contains(&"header column 'extra' is not declared (not read)".into()),
            "{findings:?}"
        );
        assert!(
            findings.contains(&"column 'x': 1 value(s) not in its vocabulary (encoded as unknown): \"c\" (10 cells)".into()),
            "{findings:?}"
        );
        assert!(
            findings.contains(
                &"column 'n': declared categorical, but this partner's data looks numeric".into()
            ),
            "{findings:?}"
        );
    }
}
