//! The federation-wide data schema (a TOML file shared by every partner).
//!
//! The file is parsed into raw `#[serde(deny_unknown_fields)]` structs and then
//! validated into a [`Schema`]; every validation error names the source, column and
//! key at fault. The format is documented in `docs/schema.md`.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path};

use fedprofile_learning::{FeatureColumn, FeatureSpec};
use serde::Deserialize;

use crate::error::DataError;

/// The placeholder in a source path that is replaced by the split name.
pub const SPLIT_PLACEHOLDER: &str = "{split}";

/// A validated schema: the sources of a split, how they are de-duplicated and fused,
/// and the type and imputation of every column.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    origin: String,
    description: Option<String>,
    key: String,
    sources: Vec<SourceDef>,
    primary: usize,
}

/// One CSV source of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDef {
    /// Unique source name, e.g. `accounts`.
    pub name: String,
    /// Path relative to a partner's data directory, possibly with `{split}`.
    pub path: String,
    /// Whether this source defines the population (exactly one source does).
    pub primary: bool,
    /// Drop rows identical (after cleaning) to an earlier row of the same file.
    pub drop_exact_duplicates: bool,
    /// Keep only the newest row per user, by this date column.
    pub keep_newest_by: Option<String>,
    /// Declared columns, in schema order.
    pub columns: Vec<ColumnDef>,
}

/// One declared column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    /// Header name in the CSV file.
    pub name: String,
    /// Type, vocabulary and imputation.
    pub kind: ColumnKind,
}

/// The type of a column, with its type-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// The join key (only the schema's `key` column has this type).
    Id,
    /// A number; missing and unparseable cells are imputed.
    Numeric {
        /// Imputation of missing cells.
        impute: NumericImpute,
        /// Declared bounds (`min`, `max`), if any, and what to do with a cell outside.
        bounds: Option<Bounds>,
    },
    /// One of a fixed, lowercase vocabulary; other values go to the unseen slot.
    Categorical {
        /// Known values, trimmed and lowercase, in encoding order.
        vocabulary: Vec<String>,
        /// Imputation of missing cells.
        impute: CategoricalImpute,
    },
    /// A flag with its (lowercase) spellings.
    Boolean {
        /// Spellings of true.
        true_values: Vec<String>,
        /// Spellings of false.
        false_values: Vec<String>,
        /// Value used for missing cells.
        impute: bool,
    },
    /// The training target; rows without a usable label are dropped.
    Label {
        /// The (lowercase) positive value.
        positive: String,
        /// The (lowercase) negative value; if absent, every other non-blank value is negative.
        negative: Option<String>,
    },
    /// A numeric regression target; rows without a parseable number are dropped.
    Target,
    /// A multi-class training target (e.g. for softmax regression); rows whose value is
    /// blank or not one of the classes are dropped.
    Class {
        /// The class names, trimmed and lowercase, in declared order: a row's class index
        /// is its position here.
        classes: Vec<String>,
    },
    /// Read but not used as a feature (e.g. a dedup date).
    Ignore,
}

/// What the schema's training target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelKind {
    /// A `type = "label"` column: 1.0 for the positive value, 0.0 otherwise.
    Binary,
    /// A `type = "target"` column: the parsed number.
    Numeric,
    /// A `type = "class"` column: the 0-based index of the class in declared order.
    Multiclass,
}

/// Imputation of a numeric column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumericImpute {
    /// The global (federated) mean, i.e. 0 after standardization.
    Mean,
    /// A fixed value, standardized like an observed one.
    Constant(f64),
}

/// The declared range of a numeric column (`min`, `max`, at least one of them) and
/// what happens to a cell outside it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Smallest allowed value, if declared.
    pub min: Option<f64>,
    /// Largest allowed value, if declared.
    pub max: Option<f64>,
    /// What to do with a cell outside `[min, max]`.
    pub out_of_range: OutOfRange,
}

impl Bounds {
    /// Whether `x` lies within the bounds (inclusive).
    pub fn contains(&self, x: f64) -> bool {
        self.min.is_none_or(|m| x >= m) && self.max.is_none_or(|m| x <= m)
    }

    /// `x` moved to the nearest bound if it lies outside.
    pub fn clip(&self, x: f64) -> f64 {
        let x = self.min.map_or(x, |m| x.max(m));
        self.max.map_or(x, |m| x.min(m))
    }
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => write!(f, "[{lo}, {hi}]"),
            (Some(lo), None) => write!(f, ">= {lo}"),
            (None, Some(hi)) => write!(f, "<= {hi}"),
            (None, None) => write!(f, "any finite number"),
        }
    }
}

/// What happens to a numeric cell outside its column's declared bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    /// Replace it by the nearest bound (counted as `out_of_range_clipped`); the default.
    Clip,
    /// Treat it like an unparseable cell: imputed (counted as `out_of_range_rejected`).
    Reject,
}

/// The largest magnitude a numeric cell may have, whether or not its column declares
/// bounds: a cell beyond it (e.g. `1e300`) is not a measurement but a broken export,
/// and is treated as unparseable (counted as `number_too_large`, imputed). `1e15` is
/// below 2^53, where `f64` stops holding every integer, and keeps the sum of squares
/// of any realistic number of cells finite (`1e30` per cell).
pub const MAX_MAGNITUDE: f64 = 1e15;

/// Imputation of a categorical column.
#[derive(Debug, Clone, PartialEq)]
pub enum CategoricalImpute {
    /// The unseen slot.
    Unknown,
    /// A fixed vocabulary value.
    Constant(String),
}

impl ColumnKind {
    /// The type name as written in the schema file.
    pub fn type_name(&self) -> &'static str {
        match self {
            ColumnKind::Id => "id",
            ColumnKind::Numeric { .. } => "numeric",
            ColumnKind::Categorical { .. } => "categorical",
            ColumnKind::Boolean { .. } => "boolean",
            ColumnKind::Label { .. } => "label",
            ColumnKind::Target => "target",
            ColumnKind::Class { .. } => "class",
            ColumnKind::Ignore => "ignore",
        }
    }

    /// Whether the column is the training target (type label, target or class).
    pub fn is_label(&self) -> bool {
        matches!(
            self,
            ColumnKind::Label { .. } | ColumnKind::Target | ColumnKind::Class { .. }
        )
    }

    /// Whether the column becomes a model input.
    pub fn is_feature(&self) -> bool {
        matches!(
            self,
            ColumnKind::Numeric { .. }
                | ColumnKind::Categorical { .. }
                | ColumnKind::Boolean { .. }
        )
    }
}

impl Schema {
    /// Reads and validates a schema file; errors name the file.
    pub fn from_path(path: &Path) -> Result<Schema, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::SchemaIo {
            path: path.to_path_buf(),
            source,
        })?;
        Schema::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates a schema; `origin` (e.g. the file name) starts every error.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Schema, DataError> {
        let raw: RawSchema = toml::from_str(text).map_err(|e| {
            DataError::schema(
                origin,
                format!("invalid schema: {}", e.to_string().trim_end()),
            )
        })?;
        raw.validate(origin)
    }

    /// Where the schema came from (file name or the origin given to `from_toml_str`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The optional free-text description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The join key column, present in every source.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// All sources, primary included, in schema order.
    pub fn sources(&self) -> &[SourceDef] {
        &self.sources
    }

    /// The source whose users define the population.
    pub fn primary_source(&self) -> &SourceDef {
        &self.sources[self.primary]
    }

    pub(crate) fn primary_index(&self) -> usize {
        self.primary
    }

    /// Every declared column with its source, in schema order (the key once per source).
    pub fn columns(&self) -> impl Iterator<Item = (&SourceDef, &ColumnDef)> {
        self.sources
            .iter()
            .flat_map(|s| s.columns.iter().map(move |c| (s, c)))
    }

    /// The declared column with this name (the key column of the primary source for the key).
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns().map(|(_, c)| c).find(|c| c.name == name)
    }

    /// The model input columns, in schema order: numeric columns with placeholder
    /// statistics (mean 0, std 1), categorical columns with the schema vocabulary, and
    /// boolean columns. Id, label, target, class and ignored columns are excluded.
    pub fn feature_template(&self) -> FeatureSpec {
        let columns = self
            .columns()
            .filter_map(|(_, c)| match &c.kind {
                ColumnKind::Numeric { .. } => Some(FeatureColumn::Numeric {
                    name: c.name.clone(),
                    mean: 0.0,
                    std: 1.0,
                }),
                ColumnKind::Categorical { vocabulary, .. } => Some(FeatureColumn::Categorical {
                    name: c.name.clone(),
                    vocabulary: vocabulary.clone(),
                }),
                ColumnKind::Boolean { .. } => Some(FeatureColumn::Boolean {
                    name: c.name.clone(),
                }),
                ColumnKind::Id
                | ColumnKind::Label { .. }
                | ColumnKind::Target
                | ColumnKind::Class { .. }
                | ColumnKind::Ignore => None,
            })
            .collect();
        FeatureSpec::new(columns)
    }

    /// The same schema with its label, target or class column read as `ignore`:
    /// for scoring, where every user counts, including those whose label is
    /// blank or not yet known (a row is then never dropped for its label).
    pub fn without_label(&self) -> Schema {
        let mut schema = self.clone();
        for source in &mut schema.sources {
            for column in &mut source.columns {
                if column.kind.is_label() {
                    column.kind = ColumnKind::Ignore;
                }
            }
        }
        schema
    }

    /// The label (`type = "label"`), target (`type = "target"`) or class
    /// (`type = "class"`) column, if the schema declares one.
    pub fn label_name(&self) -> Option<&str> {
        self.label_column().map(|c| c.name.as_str())
    }

    /// Whether the schema's training target is a binary label, a numeric target or a
    /// multi-class label (`None` if it declares none of them).
    pub fn label_kind(&self) -> Option<LabelKind> {
        self.label_column().and_then(|c| match c.kind {
            ColumnKind::Label { .. } => Some(LabelKind::Binary),
            ColumnKind::Target => Some(LabelKind::Numeric),
            ColumnKind::Class { .. } => Some(LabelKind::Multiclass),
            _ => None,
        })
    }

    /// The (lowercase) positive label value, if the schema declares a binary label
    /// (`None` for a numeric target or a multi-class label).
    pub fn label_positive(&self) -> Option<&str> {
        self.label_column().and_then(|c| match &c.kind {
            ColumnKind::Label { positive, .. } => Some(positive.as_str()),
            _ => None,
        })
    }

    /// The class names (trimmed, lowercase) in declared order, if the schema declares a
    /// multi-class label (`type = "class"`); a row's label is its class's index here.
    /// `None` for a binary label or a numeric target.
    pub fn label_classes(&self) -> Option<&[String]> {
        self.label_column().and_then(|c| match &c.kind {
            ColumnKind::Class { classes } => Some(classes.as_slice()),
            _ => None,
        })
    }

    fn label_column(&self) -> Option<&ColumnDef> {
        self.columns().map(|(_, c)| c).find(|c| c.kind.is_label())
    }
}

// ----- raw (as written) -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    description: Option<String>,
    key: String,
    #[serde(rename = "source", default)]
    sources: Vec<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    path: String,
    #[serde(default)]
    primary: Option<bool>,
    #[serde(default)]
    drop_exact_duplicates: bool,
    keep_newest_by: Option<String>,
    #[serde(rename = "column", default)]
    columns: Vec<RawColumn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    vocabulary: Option<Vec<String>>,
    true_values: Option<Vec<String>>,
    false_values: Option<Vec<String>>,
    positive: Option<String>,
    negative: Option<String>,
    classes: Option<Vec<String>>,
    impute: Option<String>,
    value: Option<toml::Value>,
    min: Option<toml::Value>,
    max: Option<toml::Value>,
    out_of_range: Option<String>,
}

enum Ty {
    Id,
    Ignore,
    Numeric,
    Categorical,
    Boolean,
    Label,
    Target,
    Class,
}

const TYPES: &str = "id, numeric, categorical, boolean, label, target, class, ignore";

impl RawSchema {
    fn validate(self, origin: &str) -> Result<Schema, DataError> {
        let err = |m: String| DataError::schema(origin, m);
        let key = self.key.trim().to_owned();
        if key.is_empty() || key != self.key {
            return Err(err(format!(
                "key: '{}' must be a non-empty column name without surrounding spaces",
                self.key
            )));
        }
        if self.sources.is_empty() {
            return Err(err("no [[source]] declared".into()));
        }

        let single = self.sources.len() == 1;
        let mut names = HashSet::new();
        let mut column_owner: HashMap<String, String> = HashMap::new();
        let mut sources = Vec::with_capacity(self.sources.len());
        // (column, source, type name) of the label, target or class column.
        let mut label_seen: Option<(String, String, &'static str)> = None;
        for raw in self.sources {
            let source = raw.validate(origin, &key, single)?;
            if !names.insert(source.name.clone()) {
                return Err(err(format!(
                    "source '{}': name used by more than one source",
                    source.name
                )));
            }
            for c in &source.columns {
                if c.name == key {
                    continue;
                }
                if let Some(other) = column_owner.insert(c.name.clone(), source.name.clone()) {
                    return Err(err(format!(
                        "column '{}': declared in both source '{other}' and source '{}'",
                        c.name, source.name
                    )));
                }
                if c.kind.is_label() {
                    if let Some((first, _, first_ty)) = &label_seen {
                        return Err(err(format!(
                            "column '{}': only one label column (type label, target or class) is allowed, '{first}' is already one (type {first_ty})",
                            c.name
                        )));
                    }
                    label_seen = Some((c.name.clone(), source.name.clone(), c.kind.type_name()));
                }
            }
            sources.push(source);
        }

        let primaries: Vec<usize> = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.primary)
            .map(|(i, _)| i)
            .collect();
        let primary = match primaries.as_slice() {
            [one] => *one,
            [] => {
                return Err(err(
                    "no source has primary = true (exactly one source must be primary)".into(),
                ));
            }
            [a, b, ..] => {
                return Err(err(format!(
                    "sources '{}' and '{}' both have primary = true (exactly one source must be primary)",
                    sources[*a].name, sources[*b].name
                )));
            }
        };
        if let Some((label, source, ty)) = &label_seen
            && *source != sources[primary].name
        {
            return Err(err(format!(
                "column '{label}': the {ty} column must be in the primary source '{}', not in '{source}'",
                sources[primary].name
            )));
        }

        Ok(Schema {
            origin: origin.to_owned(),
            description: self.description,
            key,
            sources,
            primary,
        })
    }
}

impl RawSource {
    fn validate(self, origin: &str, key: &str, single: bool) -> Result<SourceDef, DataError> {
        let name = self.name;
        let err = |m: String| DataError::schema(origin, format!("source '{name}': {m}"));
        if name.trim().is_empty() {
            return Err(DataError::schema(origin, "source: name must not be empty"));
        }
        validate_path(&self.path).map_err(|m| err(format!("path '{}': {m}", self.path)))?;
        if self.columns.is_empty() {
            return Err(err("no [[source.column]] declared".into()));
        }
        let mut columns = Vec::with_capacity(self.columns.len());
        let mut seen = HashSet::new();
        for raw in self.columns {
            let column = raw.validate(origin, key)?;
            if !seen.insert(column.name.clone()) {
                return Err(err(format!("column '{}': declared twice", column.name)));
            }
            columns.push(column);
        }
        if !columns.iter().any(|c| c.name == key) {
            return Err(err(format!(
                "the key column '{key}' must be declared (with type = \"id\")"
            )));
        }
        if let Some(date) = &self.keep_newest_by {
            match columns.iter().find(|c| &c.name == date) {
                None => {
                    return Err(err(format!(
                        "keep_newest_by: column '{date}' is not declared in this source"
                    )));
                }
                Some(c) if c.kind != ColumnKind::Ignore => {
                    return Err(err(format!(
                        "keep_newest_by: column '{date}' must have type \"ignore\", not \"{}\"",
                        c.kind.type_name()
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(SourceDef {
            primary: self.primary.unwrap_or(single),
            name,
            path: self.path,
            drop_exact_duplicates: self.drop_exact_duplicates,
            keep_newest_by: self.keep_newest_by,
            columns,
        })
    }
}

fn validate_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let rest = path.replace(SPLIT_PLACEHOLDER, "");
    if rest.contains('{') || rest.contains('}') {
        return Err(format!(
            "the only placeholder allowed is {SPLIT_PLACEHOLDER}"
        ));
    }
    let p = Path::new(path);
    if p.is_absolute() || path.starts_with('/') || path.starts_with('\\') {
        return Err("must be relative to the partner's data directory".into());
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err("must stay inside the partner's data directory (no '..')".into());
    }
    Ok(())
}

impl RawColumn {
    fn validate(self, origin: &str, key: &str) -> Result<ColumnDef, DataError> {
        let name = self.name.clone();
        let err = |m: String| DataError::schema(origin, format!("column '{name}': {m}"));
        if name.trim().is_empty() || name.trim() != name {
            return Err(DataError::schema(
                origin,
                format!("column '{name}': name must be non-empty, without surrounding spaces"),
            ));
        }
        let ty = self.kind.as_str();
        let (parsed, allowed): (Ty, &[&str]) = match ty {
            "id" => (Ty::Id, &[]),
            "ignore" => (Ty::Ignore, &[]),
            "numeric" => (
                Ty::Numeric,
                &["impute", "value", "min", "max", "out_of_range"],
            ),
            "categorical" => (Ty::Categorical, &["vocabulary", "impute", "value"]),
            "boolean" => (
                Ty::Boolean,
                &["true_values", "false_values", "impute", "value"],
            ),
            "label" => (Ty::Label, &["positive", "negative"]),
            "target" => (Ty::Target, &[]),
            "class" => (Ty::Class, &["classes"]),
            other => {
                return Err(err(format!(
                    "unknown type '{other}' (expected one of {TYPES})"
                )));
            }
        };
        for (k, present) in [
            ("vocabulary", self.vocabulary.is_some()),
            ("true_values", self.true_values.is_some()),
            ("false_values", self.false_values.is_some()),
            ("positive", self.positive.is_some()),
            ("negative", self.negative.is_some()),
            ("classes", self.classes.is_some()),
            ("impute", self.impute.is_some()),
            ("value", self.value.is_some()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
            ("out_of_range", self.out_of_range.is_some()),
        ] {
            if present && !allowed.contains(&k) {
                return Err(err(format!("key '{k}' is not allowed for type '{ty}'")));
            }
        }
        if ty == "id" && name != key {
            return Err(err(format!("type 'id' is only for the key column '{key}'")));
        }
        if name == key && ty != "id" {
            return Err(err(format!(
                "the key column must have type 'id', not '{ty}'"
            )));
        }

        let impute = self.impute.as_deref();
        let kind = match parsed {
            Ty::Id => ColumnKind::Id,
            Ty::Ignore => ColumnKind::Ignore,
            Ty::Target => ColumnKind::Target,
            Ty::Class => {
                let classes = match self.classes {
                    Some(classes) if classes.len() >= 2 => classes,
                    _ => {
                        return Err(err(
                            "type 'class' needs a 'classes' list of at least 2 values".into(),
                        ));
                    }
                };
                // Same rules as a categorical vocabulary: cells are trimmed and
                // case-folded before matching.
                check_values("classes", &classes).map_err(&err)?;
                ColumnKind::Class { classes }
            }
            Ty::Numeric => {
                let constant = constant_imputation(impute, self.value.as_ref(), "numeric", "mean");
                let impute = match constant.map_err(&err)? {
                    None => NumericImpute::Mean,
                    Some(v) => {
                        let x = match v {
                            toml::Value::Float(f) => *f,
                            toml::Value::Integer(i) => *i as f64,
                            other => {
                                return Err(err(format!(
                                    "value: expected a number for impute = \"constant\", found {}",
                                    other.type_str()
                                )));
                            }
                        };
                        if !x.is_finite() {
                            return Err(err("value: must be a finite number".into()));
                        }
                        if x.abs() > MAX_MAGNITUDE {
                            return Err(err(format!(
                                "value: {x:e} is above the largest magnitude a cell may have ({MAX_MAGNITUDE:e})"
                            )));
                        }
                        NumericImpute::Constant(x)
                    }
                };
                let bounds = numeric_bounds(
                    self.min.as_ref(),
                    self.max.as_ref(),
                    self.out_of_range.as_deref(),
                )
                .map_err(&err)?;
                if let (Some(b), NumericImpute::Constant(v)) = (&bounds, impute)
                    && !b.contains(v)
                {
                    return Err(err(format!(
                        "value: {v} is outside the declared bounds {b}"
                    )));
                }
                ColumnKind::Numeric { impute, bounds }
            }
            Ty::Categorical => {
                let vocabulary = self
                    .vocabulary
                    .ok_or_else(|| err("type 'categorical' requires a 'vocabulary'".into()))?;
                check_values("vocabulary", &vocabulary).map_err(&err)?;
                let constant =
                    constant_imputation(impute, self.value.as_ref(), "categorical", "unknown");
                let impute = match constant.map_err(&err)? {
                    None => CategoricalImpute::Unknown,
                    Some(toml::Value::String(s)) => {
                        if !vocabulary.contains(s) {
                            return Err(err(format!("value: '{s}' is not in the vocabulary")));
                        }
                        CategoricalImpute::Constant(s.clone())
                    }
                    Some(other) => {
                        return Err(err(format!(
                            "value: expected a string for impute = \"constant\", found {}",
                            other.type_str()
                        )));
                    }
                };
                ColumnKind::Categorical { vocabulary, impute }
            }
            Ty::Boolean => {
                let true_values = self
                    .true_values
                    .ok_or_else(|| err("type 'boolean' requires 'true_values'".into()))?;
                let false_values = self
                    .false_values
                    .ok_or_else(|| err("type 'boolean' requires 'false_values'".into()))?;
                check_values("true_values", &true_values).map_err(&err)?;
                check_values("false_values", &false_values).map_err(&err)?;
                if let Some(both) = true_values.iter().find(|v| false_values.contains(v)) {
                    return Err(err(format!(
                        "'{both}' is in both true_values and false_values"
                    )));
                }
                let impute = match (impute, &self.value) {
                    (None | Some("constant"), Some(toml::Value::Boolean(b))) => *b,
                    (None | Some("constant"), Some(other)) => {
                        return Err(err(format!(
                            "value: expected true or false, found {}",
                            other.type_str()
                        )));
                    }
                    (None | Some("constant"), None) => {
                        return Err(err(
                            "type 'boolean' requires a 'value' (true or false) to impute missing cells"
                                .into(),
                        ));
                    }
                    (Some(other), _) => {
                        return Err(err(format!(
                            "impute: unknown imputation '{other}' for type 'boolean' (expected constant)"
                        )));
                    }
                };
                ColumnKind::Boolean {
                    true_values,
                    false_values,
                    impute,
                }
            }
            Ty::Label => {
                let positive = self
                    .positive
                    .ok_or_else(|| err("type 'label' requires a 'positive' value".into()))?;
                check_values("positive", std::slice::from_ref(&positive)).map_err(&err)?;
                if let Some(negative) = &self.negative {
                    check_values("negative", std::slice::from_ref(negative)).map_err(&err)?;
                    if *negative == positive {
                        return Err(err("negative: must differ from positive".into()));
                    }
                }
                ColumnKind::Label {
                    positive,
                    negative: self.negative,
                }
            }
        };
        Ok(ColumnDef {
            name: self.name,
            kind,
        })
    }
}

/// The constant an `impute` key asks for with its `value`, or `None` for the type's
/// `default` imputation; the errors (relative to the column) are those every type with a
/// default and a constant imputation shares.
fn constant_imputation<'a>(
    impute: Option<&str>,
    value: Option<&'a toml::Value>,
    ty: &str,
    default: &str,
) -> Result<Option<&'a toml::Value>, String> {
    match (impute, value) {
        (Some("constant"), Some(v)) => Ok(Some(v)),
        (Some("constant"), None) => Err("impute = \"constant\" requires a 'value'".into()),
        (Some(other), _) if other != default => Err(format!(
            "impute: unknown imputation '{other}' for type '{ty}' (expected {default} or constant)"
        )),
        (_, None) => Ok(None),
        (_, Some(_)) => Err("key 'value' requires impute = \"constant\"".into()),
    }
}

/// The `min`, `max` and `out_of_range` keys of a numeric column.
fn numeric_bounds(
    min: Option<&toml::Value>,
    max: Option<&toml::Value>,
    out_of_range: Option<&str>,
) -> Result<Option<Bounds>, String> {
    let bound = |key: &str, v: Option<&toml::Value>| -> Result<Option<f64>, String> {
        let x = match v {
            None => return Ok(None),
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(other) => {
                return Err(format!(
                    "{key}: expected a number, found {}",
                    other.type_str()
                ));
            }
        };
        if !x.is_finite() || x.abs() > MAX_MAGNITUDE {
            return Err(format!(
                "{key}: must be a finite number of magnitude at most {MAX_MAGNITUDE:e}"
            ));
        }
        Ok(Some(x))
    };
    let (min, max) = (bound("min", min)?, bound("max", max)?);
    if min.is_none() && max.is_none() {
        return match out_of_range {
            Some(_) => Err("key 'out_of_range' requires 'min' or 'max'".into()),
            None => Ok(None),
        };
    }
    let out_of_range = match out_of_range {
        None | Some("clip") => OutOfRange::Clip,
        Some("reject") => OutOfRange::Reject,
        Some(other) => {
            return Err(format!(
                "out_of_range: unknown value '{other}' (expected clip or reject)"
            ));
        }
    };
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Err(format!("min ({lo}) must not be above max ({hi})"));
    }
    Ok(Some(Bounds {
        min,
        max,
        out_of_range,
    }))
}

/// Values compared against cleaned cells must be non-empty, trimmed, lowercase and unique.
fn check_values(key: &str, values: &[String]) -> Result<(), String> {
    if values.is_empty() {
        return Err(format!("{key}: must not be empty"));
    }
    let mut seen = HashSet::new();
    for v in values {
        if v.trim().is_empty() {
            return Err(format!("{key}: values must not be blank"));
        }
        if v.trim() != v || v.to_lowercase() != *v {
            return Err(format!(
                "{key}: '{v}' must be lowercase without surrounding spaces (cells are trimmed and case-folded before matching)"
            ));
        }
        if !seen.insert(v) {
            return Err(format!("{key}: '{v}' is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::SchemaText;

    /// The minimal schema plus two columns.
    fn with_columns(first: &str, second: &str) -> String {
        format!("{}\n[[source.column]]\n{second}\n", with_column(first))
    }

    fn err_of(text: &str) -> String {
        Schema::from_toml_str(text, "schema.toml")
            .expect_err("schema should be rejected")
            .to_string()
    }

    fn with_column(extra: &str) -> String {
        format!("{}\n[[source.column]]\n{extra}\n", minimal())
    }

    fn minimal() -> String {
        SchemaText::new()
            .source("main", "{split}/main.csv", "")
            .columns("id:id x:numeric")
            .build()
    }

    fn parse(text: &str) -> Schema {
        Schema::from_toml_str(text, "s").unwrap()
    }

    fn feature_names(schema: &Schema) -> Vec<String> {
        let spec = schema.feature_template();
        spec.columns.iter().map(|c| c.name().to_owned()).collect()
    }

    /// Sources 'a' (a.csv, with `a_options`) and 'b' (b.csv), each with the given
    /// `name:type` columns.
    fn two_sources(a_options: &str, a_columns: &str, b_columns: &str) -> String {
        SchemaText::new()
            .source("a", "a.csv", a_options)
            .columns(a_columns)
            .source("b", "b.csv", "")
            .columns(b_columns)
            .build()
    }

    /// Asserts that the minimal schema plus `column` is rejected with an error containing
    /// `message`.
    fn assert_column_rejected(column: &str, message: &str) {
        assert_rejected(&with_column(column), message);
    }

    /// Asserts that `text` is rejected with an error containing `message`.
    fn assert_rejected(text: &str, message: &str) {
        let e = err_of(text);
        assert!(e.contains(message), "{e}");
    }

    #[test]
    fn minimal_schema_is_valid_and_single_source_is_primary() {
        let s = Schema::from_toml_str(&minimal(), "schema.toml").unwrap();
        assert_eq!(s.key(), "id");
        assert!(s.primary_source().primary);
        assert_eq!(s.label_name(), None);
        assert_eq!(s.feature_template().dim(), 1);
    }

    #[test]
    fn unknown_type_names_column() {
        let e = err_of(&with_column("name = \"tenure\"\ntype = \"numbr\""));
        assert!(
            e.starts_with("schema.toml: column 'tenure': unknown type 'numbr'"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_rejected() {
        let e = err_of(&with_column(
            "name = \"tenure\"\ntype = \"numeric\"\nmean = 3",
        ));
        assert!(e.starts_with("schema.toml: invalid schema:"), "{e}");
        assert!(e.contains("mean"), "{e}");
    }

    #[test]
    fn key_not_allowed_for_type() {
        assert_eq!(
            err_of(&with_column(
                "name = \"t\"\ntype = \"numeric\"\nvocabulary = [\"a\"]"
            )),
            "schema.toml: column 't': key 'vocabulary' is not allowed for type 'numeric'"
        );
    }

    #[test]
    fn vocabulary_must_be_lowercase_and_unique() {
        assert_column_rejected(
            "name = \"c\"\ntype = \"categorical\"\nvocabulary = [\"Yes\"]",
            "column 'c': vocabulary: 'Yes' must be lowercase",
        );
        assert_column_rejected(
            "name = \"c\"\ntype = \"categorical\"\nvocabulary = [\"a\", \"a\"]",
            "'a' is listed twice",
        );
        assert_column_rejected(
            "name = \"c\"\ntype = \"categorical\"",
            "requires a 'vocabulary'",
        );
    }

    #[test]
    fn imputation_rules() {
        let s = parse(&with_column(
            "name = \"t\"\ntype = \"numeric\"\nimpute = \"constant\"\nvalue = 0",
        ));
        assert_eq!(
            s.column("t").unwrap().kind,
            ColumnKind::Numeric {
                impute: NumericImpute::Constant(0.0),
                bounds: None,
            }
        );
        assert_column_rejected(
            "name = \"t\"\ntype = \"numeric\"\nimpute = \"median\"",
            "column 't': impute: unknown imputation 'median'",
        );
        assert_column_rejected(
            "name = \"t\"\ntype = \"numeric\"\nimpute = \"constant\"",
            "requires a 'value'",
        );
        assert_column_rejected(
            "name = \"c\"\ntype = \"categorical\"\nvocabulary = [\"a\"]\nimpute = \"constant\"\nvalue = \"b\"",
            "column 'c': value: 'b' is not in the vocabulary",
        );
        assert_column_rejected(
            "name = \"b\"\ntype = \"boolean\"\ntrue_values = [\"yes\"]\nfalse_values = [\"no\"]",
            "column 'b': type 'boolean' requires a 'value'",
        );
        assert_column_rejected(
            "name = \"b\"\ntype = \"boolean\"\ntrue_values = [\"yes\"]\nfalse_values = [\"yes\"]\nvalue = false",
            "in both true_values and false_values",
        );
    }

    #[test]
    fn exactly_one_primary() {
        let two = two_sources("", "id:id", "id:id");
        assert_rejected(&two, "no source has primary = true");
        let both = two
            .replace("path = \"a.csv\"", "path = \"a.csv\"\nprimary = true")
            .replace("path = \"b.csv\"", "path = \"b.csv\"\nprimary = true");
        assert_rejected(&both, "sources 'a' and 'b' both have primary = true");
    }

    #[test]
    fn key_column_must_be_declared_in_every_source() {
        let text = minimal().replace(
            "name = \"id\"\ntype = \"id\"",
            "name = \"other\"\ntype = \"ignore\"",
        );
        let e = err_of(&text);
        assert!(
            e.contains("source 'main': the key column 'id' must be declared"),
            "{e}"
        );
    }

    #[test]
    fn keep_newest_by_must_be_an_ignored_column() {
        let text = minimal().replace(
            "path = \"{split}/main.csv\"",
            "path = \"{split}/main.csv\"\nkeep_newest_by = \"x\"",
        );
        assert_rejected(
            &text,
            "keep_newest_by: column 'x' must have type \"ignore\"",
        );
        let text = minimal().replace(
            "path = \"{split}/main.csv\"",
            "path = \"{split}/main.csv\"\nkeep_newest_by = \"when\"",
        );
        assert_rejected(&text, "keep_newest_by: column 'when' is not declared");
    }

    #[test]
    fn paths_stay_inside_data_dir() {
        for bad in [
            "/etc/passwd",
            "../x.csv",
            "{split}/../../x.csv",
            "{part}/x.csv",
            "",
        ] {
            let text = minimal().replace("{split}/main.csv", bad);
            let e = err_of(&text);
            assert!(e.contains("source 'main': path"), "{bad}: {e}");
        }
    }

    #[test]
    fn label_must_be_unique_and_in_primary() {
        let e = err_of(&with_columns(
            "name = \"l\"\ntype = \"label\"\npositive = \"yes\"",
            "name = \"l2\"\ntype = \"label\"\npositive = \"yes\"",
        ));
        assert!(e.contains("only one label column"), "{e}");
        assert_column_rejected(
            "name = \"l\"\ntype = \"label\"\npositive = \"yes\"\nnegative = \"yes\"",
            "negative: must differ from positive",
        );
    }

    #[test]
    fn duplicate_column_across_sources() {
        let text = two_sources("primary = true", "id:id x:numeric", "id:id x:numeric");
        assert_rejected(
            &text,
            "column 'x': declared in both source 'a' and source 'b'",
        );
    }

    #[test]
    fn invalid_toml_is_a_schema_error() {
        let e = err_of("key = ");
        assert!(e.starts_with("schema.toml: invalid schema:"), "{e}");
    }

    #[test]
    fn from_path_names_missing_file() {
        let e = Schema::from_path(Path::new("/nonexistent/schema.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/schema.toml: cannot read schema")
        );
    }

    #[test]
    fn feature_template_is_in_schema_order_and_skips_non_features() {
        let text = with_column(
            "name = \"c\"\ntype = \"categorical\"\nvocabulary = [\"a\", \"b\"]\n[[source.column]]\nname = \"l\"\ntype = \"label\"\npositive = \"yes\"\n[[source.column]]\nname = \"f\"\ntype = \"boolean\"\ntrue_values = [\"1\"]\nfalse_values = [\"0\"]\nvalue = false\n[[source.column]]\nname = \"skip\"\ntype = \"ignore\"",
        );
        let s = parse(&text);
        let spec = s.feature_template();
        let names: Vec<&str> = spec.columns.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["x", "c", "f"]);
        assert_eq!(spec.dim(), 1 + 3 + 1);
        assert_eq!(s.label_name(), Some("l"));
        assert_eq!(s.label_positive(), Some("yes"));
    }

    #[test]
    fn target_column_is_the_label_but_not_a_feature() {
        let s = parse(&with_column("name = \"amount\"\ntype = \"target\""));
        assert_eq!(s.column("amount").unwrap().kind, ColumnKind::Target);
        assert_eq!(s.column("amount").unwrap().kind.type_name(), "target");
        assert!(!ColumnKind::Target.is_feature());
        assert_eq!(s.label_name(), Some("amount"));
        assert_eq!(s.label_kind(), Some(LabelKind::Numeric));
        assert_eq!(s.label_positive(), None);
        assert_eq!(feature_names(&s), ["x"]);

        let binary = parse(&with_column(
            "name = \"l\"\ntype = \"label\"\npositive = \"yes\"",
        ));
        assert_eq!(binary.label_kind(), Some(LabelKind::Binary));
        let none = parse(&minimal());
        assert_eq!(none.label_kind(), None);
    }

    #[test]
    fn at_most_one_label_or_target() {
        let e = err_of(&with_columns(
            "name = \"t\"\ntype = \"target\"",
            "name = \"t2\"\ntype = \"target\"",
        ));
        assert_eq!(
            e,
            "schema.toml: column 't2': only one label column (type label, target or class) is allowed, 't' is already one (type target)"
        );
        let e = err_of(&with_columns(
            "name = \"l\"\ntype = \"label\"\npositive = \"yes\"",
            "name = \"t\"\ntype = \"target\"",
        ));
        assert!(
            e.contains("column 't': only one label column (type label, target or class) is allowed, 'l' is already one (type label)"),
            "{e}"
        );
        let e = err_of(&with_columns(
            "name = \"t\"\ntype = \"target\"",
            "name = \"l\"\ntype = \"label\"\npositive = \"yes\"",
        ));
        assert!(e.contains("column 'l': only one label column"), "{e}");
    }

    #[test]
    fn target_takes_no_label_or_imputation_keys() {
        assert_eq!(
            err_of(&with_column(
                "name = \"t\"\ntype = \"target\"\npositive = \"yes\""
            )),
            "schema.toml: column 't': key 'positive' is not allowed for type 'target'"
        );
        for extra in ["negative = \"no\"", "impute = \"mean\"", "value = 0.0"] {
            let e = err_of(&with_column(&format!(
                "name = \"t\"\ntype = \"target\"\n{extra}"
            )));
            assert!(
                e.contains("is not allowed for type 'target'"),
                "{extra}: {e}"
            );
        }
        let e = err_of(&with_column("name = \"t\"\ntype = \"targt\""));
        assert!(
            e.contains(
                "(expected one of id, numeric, categorical, boolean, label, target, class, ignore)"
            ),
            "{e}"
        );
    }

    #[test]
    fn target_must_be_in_primary() {
        let text = two_sources("primary = true", "id:id", "id:id t:target");
        assert_eq!(
            err_of(&text),
            "schema.toml: column 't': the target column must be in the primary source 'a', not in 'b'"
        );
    }

    const CONTRACT: &str = "name = \"contract\"\ntype = \"class\"\nclasses = [\"month-to-month\", \"one year\", \"two year\"]";

    #[test]
    fn class_column_is_the_label_but_not_a_feature() {
        let s = parse(&with_column(CONTRACT));
        let classes = ["month-to-month", "one year", "two year"].map(String::from);
        assert_eq!(
            s.column("contract").unwrap().kind,
            ColumnKind::Class {
                classes: classes.to_vec()
            }
        );
        assert_eq!(s.column("contract").unwrap().kind.type_name(), "class");
        assert!(!s.column("contract").unwrap().kind.is_feature());
        assert!(s.column("contract").unwrap().kind.is_label());
        assert_eq!(s.label_name(), Some("contract"));
        assert_eq!(s.label_kind(), Some(LabelKind::Multiclass));
        assert_eq!(s.label_positive(), None);
        assert_eq!(s.label_classes(), Some(&classes[..]));
        assert_eq!(feature_names(&s), ["x"]);

        // Two classes are enough; declared order is kept (it is the index order).
        let two = parse(&with_column(
            "name = \"k\"\ntype = \"class\"\nclasses = [\"b\", \"a\"]",
        ));
        assert_eq!(
            two.label_classes(),
            Some(&["b".to_owned(), "a".to_owned()][..])
        );

        // The other kinds have no classes.
        let target = parse(&with_column("name = \"t\"\ntype = \"target\""));
        assert_eq!(target.label_classes(), None);
        let binary = parse(&with_column(
            "name = \"l\"\ntype = \"label\"\npositive = \"yes\"",
        ));
        assert_eq!(binary.label_classes(), None);
        assert_eq!(parse(&minimal()).label_classes(), None);
    }

    #[test]
    fn class_needs_at_least_two_classes() {
        let needs = "schema.toml: column 'contract': type 'class' needs a 'classes' list of at least 2 values";
        for classes in ["", "\nclasses = []", "\nclasses = [\"one year\"]"] {
            let e = err_of(&with_column(&format!(
                "name = \"contract\"\ntype = \"class\"{classes}"
            )));
            assert_eq!(e, needs, "{classes:?}");
        }
    }

    #[test]
    fn class_values_are_normalized_like_a_vocabulary() {
        assert_eq!(
            err_of(&with_column(
                "name = \"contract\"\ntype = \"class\"\nclasses = [\"Month-to-month\", \"one year\"]"
            )),
            "schema.toml: column 'contract': classes: 'Month-to-month' must be lowercase without surrounding spaces (cells are trimmed and case-folded before matching)"
        );
        assert_column_rejected(
            "name = \"contract\"\ntype = \"class\"\nclasses = [\"one year\", \"two year \"]",
            "column 'contract': classes: 'two year ' must be lowercase without surrounding spaces",
        );
        assert_eq!(
            err_of(&with_column(
                "name = \"contract\"\ntype = \"class\"\nclasses = [\"one year\", \"two year\", \"one year\"]"
            )),
            "schema.toml: column 'contract': classes: 'one year' is listed twice"
        );
        assert_eq!(
            err_of(&with_column(
                "name = \"contract\"\ntype = \"class\"\nclasses = [\"one year\", \" \"]"
            )),
            "schema.toml: column 'contract': classes: values must not be blank"
        );
        let e = err_of(&with_column(
            "name = \"contract\"\ntype = \"class\"\nclasses = [\"one year\", 2]",
        ));
        assert!(e.starts_with("schema.toml: invalid schema:"), "{e}");
    }

    #[test]
    fn class_takes_no_other_keys() {
        for (extra, key) in [
            ("positive = \"yes\"", "positive"),
            ("negative = \"no\"", "negative"),
            ("vocabulary = [\"a\", \"b\"]", "vocabulary"),
            ("true_values = [\"yes\"]", "true_values"),
            ("impute = \"constant\"", "impute"),
            ("value = \"one year\"", "value"),
        ] {
            let e = err_of(&with_column(&format!("{CONTRACT}\n{extra}")));
            assert_eq!(
                e,
                format!(
                    "schema.toml: column 'contract': key '{key}' is not allowed for type 'class'"
                ),
                "{extra}"
            );
        }
        // ... and `classes` belongs to type class only.
        assert_eq!(
            err_of(&with_column(
                "name = \"c\"\ntype = \"categorical\"\nvocabulary = [\"a\"]\nclasses = [\"a\", \"b\"]"
            )),
            "schema.toml: column 'c': key 'classes' is not allowed for type 'categorical'"
        );
        assert_column_rejected(
            "name = \"c\"\ntype = \"classes\"",
            "unknown type 'classes' (expected one of id, numeric, categorical, boolean, label, target, class, ignore)",
        );
    }

    #[test]
    fn at_most_one_label_target_or_class() {
        let e = err_of(&with_columns(
            "name = \"churn\"\ntype = \"label\"\npositive = \"yes\"",
            CONTRACT,
        ));
        assert_eq!(
            e,
            "schema.toml: column 'contract': only one label column (type label, target or class) is allowed, 'churn' is already one (type label)"
        );
        let e = err_of(&with_columns(CONTRACT, "name = \"t\"\ntype = \"target\""));
        assert_eq!(
            e,
            "schema.toml: column 't': only one label column (type label, target or class) is allowed, 'contract' is already one (type class)"
        );
        let e = err_of(&with_columns(
            CONTRACT,
            "name = \"k\"\ntype = \"class\"\nclasses = [\"a\", \"b\"]",
        ));
        assert!(
            e.contains("column 'k': only one label column (type label, target or class) is allowed, 'contract' is already one (type class)"),
            "{e}"
        );
    }

    #[test]
    fn class_must_be_in_primary_and_not_the_key() {
        let text = two_sources("primary = true", "id:id", "id:id")
            + &format!("[[source.column]]\n{CONTRACT}\n");
        assert_eq!(
            err_of(&text),
            "schema.toml: column 'contract': the class column must be in the primary source 'a', not in 'b'"
        );
        let e = err_of(&minimal().replace(
            "name = \"id\"\ntype = \"id\"",
            "name = \"id\"\ntype = \"class\"\nclasses = [\"a\", \"b\"]",
        ));
        assert_eq!(
            e,
            "schema.toml: column 'id': the key column must have type 'id', not 'class'"
        );
    }

    fn numeric_kind(extra: &str) -> ColumnKind {
        let text = with_column(&format!("name = \"t\"\ntype = \"numeric\"\n{extra}"));
        parse(&text).column("t").unwrap().kind.clone()
    }

    #[test]
    fn numeric_bounds_default_to_clip() {
        assert_eq!(
            numeric_kind("min = 0\nmax = 72"),
            ColumnKind::Numeric {
                impute: NumericImpute::Mean,
                bounds: Some(Bounds {
                    min: Some(0.0),
                    max: Some(72.0),
                    out_of_range: OutOfRange::Clip,
                }),
            }
        );
        assert_eq!(
            numeric_kind("max = 1.5e3\nout_of_range = \"reject\""),
            ColumnKind::Numeric {
                impute: NumericImpute::Mean,
                bounds: Some(Bounds {
                    min: None,
                    max: Some(1500.0),
                    out_of_range: OutOfRange::Reject,
                }),
            }
        );
        assert_eq!(
            numeric_kind(""),
            ColumnKind::Numeric {
                impute: NumericImpute::Mean,
                bounds: None,
            }
        );
        let b = Bounds {
            min: Some(0.0),
            max: Some(72.0),
            out_of_range: OutOfRange::Clip,
        };
        assert!(b.contains(0.0) && b.contains(72.0) && !b.contains(72.5) && !b.contains(-1.0));
        assert_eq!(b.clip(1e9), 72.0);
        assert_eq!(b.clip(-3.0), 0.0);
        assert_eq!(b.clip(5.0), 5.0);
        assert_eq!(b.to_string(), "[0, 72]");
    }

    #[test]
    fn numeric_bounds_are_checked() {
        let col = |extra: &str| {
            err_of(&with_column(&format!(
                "name = \"t\"\ntype = \"numeric\"\n{extra}"
            )))
        };
        assert_eq!(
            col("min = 10\nmax = 1"),
            "schema.toml: column 't': min (10) must not be above max (1)"
        );
        assert_eq!(
            col("out_of_range = \"clip\""),
            "schema.toml: column 't': key 'out_of_range' requires 'min' or 'max'"
        );
        assert_eq!(
            col("max = 1\nout_of_range = \"drop\""),
            "schema.toml: column 't': out_of_range: unknown value 'drop' (expected clip or reject)"
        );
        assert_eq!(
            col("min = \"zero\""),
            "schema.toml: column 't': min: expected a number, found string"
        );
        assert_eq!(
            col("max = 1e300"),
            "schema.toml: column 't': max: must be a finite number of magnitude at most 1e15"
        );
        assert_eq!(
            col("min = 0\nmax = 72\nimpute = \"constant\"\nvalue = 100"),
            "schema.toml: column 't': value: 100 is outside the declared bounds [0, 72]"
        );
        assert_eq!(
            col("impute = \"constant\"\nvalue = 1e300"),
            "schema.toml: column 't': value: 1e300 is above the largest magnitude a cell may have (1e15)"
        );
        // Bounds belong to numeric columns only.
        assert_eq!(
            err_of(&with_column(
                "name = \"c\"\ntype = \"categorical\"\nvocabulary = [\"a\"]\nmax = 3"
            )),
            "schema.toml: column 'c': key 'max' is not allowed for type 'categorical'"
        );
        assert_eq!(
            err_of(&with_column(
                "name = \"amount\"\ntype = \"target\"\nmin = 0"
            )),
            "schema.toml: column 'amount': key 'min' is not allowed for type 'target'"
        );
    }
}
