//! The global model file: versioned JSON holding everything needed to score a user
//! (target, feature encoding, parameters) and where the model came from.
//!
//! The layout is documented with an example in `docs/model-format.md`. Loading
//! reads `format` and `version` first, so that a file of another kind or of a newer
//! version is reported as such rather than as a missing field; then it parses the
//! whole file (unknown fields are rejected) and validates it.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::error::{LearningError, ModelFileError, ModelFileProblem};
use crate::family::{AnyModel, ModelFamily, Quality, ScoreTable};
use crate::features::{FeatureColumn, FeatureSpec};
use crate::kmeans::KMeans;
use crate::linear::LinearRegression;
use crate::metrics::Metrics;
use crate::model::LogisticRegression;
use crate::model_file_trees::{GradientBoostedTreesFile, TreeMetrics};
use crate::model_file_v2::{
    KMeansFile, KMeansMetrics, LinearRegressionFile, ModelFileV2, RunProvenance,
    SoftmaxRegressionFile, TargetColumn, VersionedModelFile,
};
use crate::multiclass_metrics::MulticlassMetrics;
use crate::regression_metrics::RegressionMetrics;
use crate::softmax::SoftmaxRegression;
use crate::trees::TreeModel;

/// Value of the `format` field.
pub const MODEL_FORMAT: &str = "fedprofile-model";
/// The format version this build reads and writes.
pub const MODEL_FILE_VERSION: u32 = 1;
/// Value of `model_type` for [`LogisticRegression`].
pub const LOGISTIC_REGRESSION: &str = "logistic_regression";

/// What the model predicts: `P(column == positive_value)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Schema column of the label, e.g. `churn`.
    pub column: String,
    /// The value counted as the positive class, e.g. `yes`.
    pub positive_value: String,
}

/// One weight with the name of its encoded feature entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedWeight {
    /// Entry name from [`FeatureSpec::entry_names`], e.g. `contract=one year`.
    pub feature: String,
    /// The coefficient.
    pub weight: f64,
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Identifier of the federated training run.
    pub run_id: String,
    /// Completed training rounds.
    pub rounds: u32,
    /// Identifiers of the clients that contributed.
    pub clients: Vec<String>,
    /// Creation time, RFC 3339 (e.g. `2025-01-31T12:00:00Z`), supplied by the caller.
    pub created_at: String,
    /// Federated evaluation of the final model, if one was run.
    pub metrics: Option<Metrics>,
    /// The privacy mode and the ε (δ) spent; absent in files written before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::model_file_v2::PrivacyProvenance>,
}

/// The global model file, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_FILE_VERSION`] for files this build writes.
    pub version: u32,
    /// Always [`LOGISTIC_REGRESSION`] in version 1.
    pub model_type: String,
    /// The predicted label.
    pub target: Target,
    /// The input encoding the weights expect.
    pub features: FeatureSpec,
    /// The intercept (bias).
    pub intercept: f64,
    /// One weight per encoded entry, in encoding order.
    pub weights: Vec<NamedWeight>,
    /// Where the model came from.
    pub provenance: Provenance,
}

/// The two fields read before the rest of the file.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

impl ModelFile {
    /// Describes `model` under the given target, encoding and provenance; weights are
    /// named after `features.entry_names()`.
    ///
    /// Fails if the model's dimension differs from `features.dim()` or anything in
    /// the result is invalid ([`ModelFile::validate`]).
    pub fn new(
        target: Target,
        features: FeatureSpec,
        model: &LogisticRegression,
        provenance: Provenance,
    ) -> Result<Self, ModelFileError> {
        check_model_dim(model.dim(), &features)?;
        let weights = named_weights(&features, model.weights().iter().copied());
        let file = ModelFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_FILE_VERSION,
            model_type: LOGISTIC_REGRESSION.to_string(),
            target,
            features,
            intercept: model.intercept(),
            weights,
            provenance,
        };
        file.validate()?;
        Ok(file)
    }

    /// Reads, parses and validates a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        Self::from_json(&read_text(path)?, path)
    }

    /// Parses and validates the JSON text of a model file; `path` is only used in
    /// error messages.
    pub fn from_json(text: &str, path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let (parse, invalid) = file_errors(path.as_ref());
        let header: Header = serde_json::from_str(text).map_err(parse)?;
        check_header(header.format.as_ref(), header.version.as_ref()).map_err(invalid)?;
        let file: ModelFile = serde_json::from_str(text).map_err(parse)?;
        file.validate().map_err(invalid)?;
        Ok(file)
    }

    /// Validates and writes the file as pretty-printed JSON.
    ///
    /// The text goes to a sibling `<name>.tmp` first and is then renamed over
    /// `path`, so readers never see a half-written model.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        save_checked(path.as_ref(), self.validate(), || self.to_json())
    }

    /// The file as pretty-printed JSON with a trailing newline (not validated).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        pretty_json(self)
    }

    /// Checks everything a reader relies on: format and version, model type, one
    /// weight per encoded entry with the entry's name, finite numbers (intercept,
    /// weights, feature means and standard deviations, metrics) and non-negative
    /// standard deviations.
    pub fn validate(&self) -> Result<(), ModelFileProblem> {
        if self.format != MODEL_FORMAT {
            return Err(ModelFileProblem::Format {
                found: json_string(&self.format),
            });
        }
        if self.version != MODEL_FILE_VERSION {
            return Err(ModelFileProblem::UnsupportedVersion {
                found: self.version.to_string(),
                supported: MODEL_FILE_VERSION,
            });
        }
        if self.model_type != LOGISTIC_REGRESSION {
            return Err(ModelFileProblem::ModelType {
                found: self.model_type.clone(),
            });
        }
        check_weights(&self.features, self.intercept, &self.weights)?;
        if let Some(m) = &self.provenance.metrics {
            check_metrics([
                ("accuracy", m.accuracy),
                ("precision", m.precision),
                ("recall", m.recall),
                ("f1", m.f1),
                ("log_loss", m.log_loss),
                ("auc", m.auc.unwrap_or(0.0)),
            ])?;
        }
        Ok(())
    }

    /// The model the file describes (validates first).
    pub fn to_model(&self) -> Result<LogisticRegression, ModelFileError> {
        self.validate()?;
        let params = intercept_and_weights(self.intercept, &self.weights);
        // validated above: the intercept is present and every number is finite
        Ok(LogisticRegression::from_validated_params(params))
    }
}

fn check_header(
    format: Option<&serde_json::Value>,
    version: Option<&serde_json::Value>,
) -> Result<(), ModelFileProblem> {
    if format.and_then(serde_json::Value::as_str) != Some(MODEL_FORMAT) {
        return Err(ModelFileProblem::Format {
            found: format.map_or_else(|| "<missing>".to_string(), ToString::to_string),
        });
    }
    if version.and_then(serde_json::Value::as_u64) != Some(u64::from(MODEL_FILE_VERSION)) {
        return Err(ModelFileProblem::UnsupportedVersion {
            found: version.map_or_else(|| "<missing>".to_string(), ToString::to_string),
            supported: MODEL_FILE_VERSION,
        });
    }
    Ok(())
}

/// Finite means and finite, non-negative standard deviations of the numeric
/// features.
pub(crate) fn check_feature_stats(features: &FeatureSpec) -> Result<(), ModelFileProblem> {
    for column in &features.columns {
        if let FeatureColumn::Numeric { name, mean, std } = column {
            finite(&format!("mean of feature '{name}'"), *mean)?;
            finite(&format!("std of feature '{name}'"), *std)?;
            if *std < 0.0 {
                return Err(ModelFileProblem::InvalidNumber {
                    field: format!("std of feature '{name}' (negative)"),
                    value: *std,
                });
            }
        }
    }
    if let Some(reference) = &features.reference {
        if reference.len() != features.dim() {
            return Err(ModelFileProblem::Layout(format!(
                "the feature reference row has {} entries for {} encoded features",
                reference.len(),
                features.dim()
            )));
        }
        for (name, value) in features.entry_names().iter().zip(reference) {
            finite(&format!("reference of feature '{name}'"), *value)?;
        }
    }
    Ok(())
}

/// A model's dimension against the encoding it is described in
/// ([`ModelFileProblem::WeightCount`] when they differ).
pub(crate) fn check_model_dim(dim: usize, features: &FeatureSpec) -> Result<(), ModelFileError> {
    if dim != features.dim() {
        return Err(ModelFileProblem::WeightCount {
            weights: dim,
            dim: features.dim(),
        }
        .into());
    }
    Ok(())
}

/// `weights` named after `features.entry_names()`, in order.
pub(crate) fn named_weights(
    features: &FeatureSpec,
    weights: impl IntoIterator<Item = f64>,
) -> Vec<NamedWeight> {
    features
        .entry_names()
        .into_iter()
        .zip(weights)
        .map(|(feature, weight)| NamedWeight { feature, weight })
        .collect()
}

/// A single-output model's numbers: the encoding's statistics, one weight per
/// encoded entry with the entry's name, a finite intercept and weights.
pub(crate) fn check_weights(
    features: &FeatureSpec,
    intercept: f64,
    weights: &[NamedWeight],
) -> Result<(), ModelFileProblem> {
    check_feature_stats(features)?;
    let names = features.entry_names();
    if weights.len() != names.len() {
        return Err(ModelFileProblem::WeightCount {
            weights: weights.len(),
            dim: names.len(),
        });
    }
    finite("intercept", intercept)?;
    for (index, (w, expected)) in weights.iter().zip(names).enumerate() {
        if w.feature != expected {
            return Err(ModelFileProblem::WeightName {
                index,
                found: w.feature.clone(),
                expected,
            });
        }
        finite(&format!("weight '{}'", w.feature), w.weight)?;
    }
    Ok(())
}

/// Every recorded metric is finite.
pub(crate) fn check_metrics<const N: usize>(
    metrics: [(&str, f64); N],
) -> Result<(), ModelFileProblem> {
    for (name, value) in metrics {
        finite(&format!("metric '{name}'"), value)?;
    }
    Ok(())
}

/// The flat parameters `[intercept, w..]` of a single-output model.
pub(crate) fn intercept_and_weights(intercept: f64, weights: &[NamedWeight]) -> Array1<f64> {
    std::iter::once(intercept)
        .chain(weights.iter().map(|w| w.weight))
        .collect()
}

/// The text of the model file `path`.
pub(crate) fn read_text(path: &Path) -> Result<String, ModelFileError> {
    fs::read_to_string(path).map_err(|source| ModelFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The errors of parsing the model file `path`: unparsable JSON, and a parsed
/// file that is invalid.
pub(crate) fn file_errors(
    path: &Path,
) -> (
    impl Fn(serde_json::Error) -> ModelFileError + Copy + '_,
    impl Fn(ModelFileProblem) -> ModelFileError + Copy + '_,
) {
    let parse = move |source| ModelFileError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let invalid = move |problem| ModelFileError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    (parse, invalid)
}

/// `value` as pretty-printed JSON with a trailing newline.
pub(crate) fn pretty_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// Writes a model file once its validation (`checked`) passed: the text of
/// `json` goes through a sibling `<name>.tmp` renamed over `path` (readers
/// never see a half-written model).
pub(crate) fn save_checked(
    path: &Path,
    checked: Result<(), ModelFileProblem>,
    json: impl FnOnce() -> Result<String, serde_json::Error>,
) -> Result<(), ModelFileError> {
    checked.map_err(|problem| ModelFileError::Invalid {
        path: path.to_path_buf(),
        problem,
    })?;
    let text = json().map_err(|e| ModelFileError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &text)
}

/// Writes `text` to `<path>.tmp` and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), ModelFileError> {
    let write = |source| ModelFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = tmp_path(path);
    fs::write(&tmp, text).map_err(write)?;
    fs::rename(&tmp, path).map_err(|source| {
        // best effort: do not leave the temporary file behind
        let _ = fs::remove_file(&tmp);
        write(source)
    })
}

pub(crate) fn finite(field: &str, value: f64) -> Result<(), ModelFileProblem> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ModelFileProblem::InvalidNumber {
            field: field.to_string(),
            value,
        })
    }
}

pub(crate) fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

impl VersionedModelFile {
    /// Upgrades a file of any version to the in-memory [`ModelDocument`].
    pub fn upgrade(self) -> Result<ModelDocument, ModelFileError> {
        let layout =
            |e: LearningError| ModelFileError::from(ModelFileProblem::Layout(e.to_string()));
        let column = |c: TargetColumn| ModelTarget {
            column: c.column,
            positive_value: None,
        };
        let (model, features, target, classes, provenance) = match self {
            VersionedModelFile::V1(f) => {
                let model = f.to_model()?;
                let p = &f.provenance;
                let provenance = RunProvenance {
                    run_id: p.run_id.clone(),
                    rounds: p.rounds,
                    clients: p.clients.clone(),
                    created_at: p.created_at.clone(),
                    metrics: p.metrics.map(ModelMetrics::Binary),
                    privacy: p.privacy.clone(),
                };
                (
                    AnyModel::from_parts(
                        ModelFamily::LogisticRegression,
                        model.params().clone(),
                        1,
                    ),
                    f.features,
                    ModelTarget {
                        column: f.target.column,
                        positive_value: Some(f.target.positive_value),
                    },
                    Vec::new(),
                    provenance,
                )
            }
            VersionedModelFile::V2(ModelFileV2::LinearRegression(f)) => (
                AnyModel::from_parts(
                    ModelFamily::LinearRegression,
                    f.to_model()?.params().clone(),
                    1,
                ),
                f.features,
                column(f.target),
                Vec::new(),
                reshape(f.provenance, ModelMetrics::Regression),
            ),
            VersionedModelFile::V2(ModelFileV2::SoftmaxRegression(f)) => {
                let outputs = f.classes.len();
                (
                    AnyModel::from_parts(
                        ModelFamily::SoftmaxRegression,
                        f.to_model()?.params().clone(),
                        outputs,
                    ),
                    f.features,
                    column(f.target),
                    f.classes,
                    reshape(f.provenance, ModelMetrics::Multiclass),
                )
            }
            VersionedModelFile::V2(ModelFileV2::GradientBoostedTrees(f)) => (
                AnyModel::from_parts(
                    ModelFamily::GradientBoostedTrees,
                    f.to_model()?.to_flat(),
                    1,
                ),
                f.features,
                ModelTarget {
                    column: f.target.column,
                    positive_value: f.positive_value,
                },
                Vec::new(),
                reshape(f.provenance, |m| match m {
                    TreeMetrics::Binary(m) => ModelMetrics::Binary(m),
                    TreeMetrics::Regression(m) => ModelMetrics::Regression(m),
                }),
            ),
            VersionedModelFile::V2(ModelFileV2::KMeans(f)) => (
                AnyModel::from_parts(
                    ModelFamily::KMeans,
                    f.to_model()?.params().clone(),
                    f.clusters,
                ),
                f.features,
                ModelTarget::default(),
                Vec::new(),
                reshape(f.provenance, ModelMetrics::Clustering),
            ),
        };
        Ok(ModelDocument {
            model: model.map_err(layout)?,
            features,
            target,
            classes,
            provenance,
        })
    }

    /// The file as pretty-printed JSON with a trailing newline.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            VersionedModelFile::V1(f) => f.to_json(),
            VersionedModelFile::V2(f) => f.to_json(),
        }
    }
}

/// The metrics a model file records, of its family's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelMetrics {
    /// Logistic regression.
    Binary(Metrics),
    /// Linear regression.
    Regression(RegressionMetrics),
    /// Softmax regression.
    Multiclass(MulticlassMetrics),
    /// k-means.
    Clustering(KMeansMetrics),
}

impl ModelMetrics {
    /// The metrics a model file records from a run's last evaluated round:
    /// the binary metrics of a logistic-regression round, else its quality.
    pub fn of_round(metrics: Option<Metrics>, quality: Option<&Quality>) -> Option<ModelMetrics> {
        if let Some(m) = metrics {
            return Some(ModelMetrics::Binary(m));
        }
        Some(match quality? {
            Quality::Regression(m) => ModelMetrics::Regression(*m),
            Quality::Multiclass(m) => ModelMetrics::Multiclass(*m),
            Quality::Clustering {
                examples,
                inertia,
                counts,
                ..
            } => ModelMetrics::Clustering(KMeansMetrics {
                examples: *examples,
                inertia: *inertia,
                counts: counts.clone(),
            }),
        })
    }
}

/// What a model predicts: a schema column (empty for k-means) and, for
/// logistic regression, the value counted as the positive class.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelTarget {
    /// The schema column.
    pub column: String,
    /// The positive value (logistic regression only).
    pub positive_value: Option<String>,
}

/// A global model of any family as every reader and writer uses it: the
/// model, its encoding, its target, its class names (softmax) and its
/// provenance. [`ModelDocument::load`] reads every file version (through
/// [`VersionedModelFile`]) and upgrades it to this type; [`ModelDocument::save`]
/// writes the version its family is written in (1 for logistic regression, so
/// that scorers built before version 2 keep reading churn models; 2 for the
/// others), byte for byte as the writers of that version always did.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDocument {
    model: AnyModel,
    features: FeatureSpec,
    target: ModelTarget,
    classes: Vec<String>,
    provenance: RunProvenance<ModelMetrics>,
}

impl<M> RunProvenance<M> {
    /// The same provenance with other metrics.
    pub fn with_metrics<N>(self, metrics: Option<N>) -> RunProvenance<N> {
        RunProvenance {
            run_id: self.run_id,
            rounds: self.rounds,
            clients: self.clients,
            created_at: self.created_at,
            metrics,
            privacy: self.privacy,
        }
    }
}

fn reshape<M, N>(p: RunProvenance<M>, f: impl FnOnce(M) -> N) -> RunProvenance<N> {
    RunProvenance {
        run_id: p.run_id,
        rounds: p.rounds,
        clients: p.clients,
        created_at: p.created_at,
        metrics: p.metrics.map(f),
        privacy: p.privacy,
    }
}

impl ModelDocument {
    /// A document for `model`; checked by writing it into its file version
    /// (the dimension must equal `features.dim()`, softmax models need one
    /// class name per class, the metrics must be of the family's kind).
    pub fn new(
        model: AnyModel,
        features: FeatureSpec,
        target: ModelTarget,
        classes: Vec<String>,
        provenance: RunProvenance<ModelMetrics>,
    ) -> Result<ModelDocument, ModelFileError> {
        let doc = ModelDocument {
            model,
            features,
            target,
            classes,
            provenance,
        };
        doc.to_file()?;
        Ok(doc)
    }

    /// A document without a model file (the test-only toy family has none).
    #[cfg(test)]
    pub(crate) fn new_unchecked(model: AnyModel, features: FeatureSpec) -> ModelDocument {
        ModelDocument {
            model,
            features,
            target: ModelTarget::default(),
            classes: Vec::new(),
            provenance: RunProvenance {
                run_id: String::new(),
                rounds: 0,
                clients: Vec::new(),
                created_at: String::new(),
                metrics: None,
                privacy: None,
            },
        }
    }

    /// Reads, parses, validates and upgrades a model file of any version.
    pub fn load(path: impl AsRef<Path>) -> Result<ModelDocument, ModelFileError> {
        VersionedModelFile::load(path)?.upgrade()
    }

    /// Parses, validates and upgrades model file text of any version; `path`
    /// is only used in error messages.
    pub fn from_json(text: &str, path: impl AsRef<Path>) -> Result<ModelDocument, ModelFileError> {
        VersionedModelFile::from_json(text, path)?.upgrade()
    }

    /// The file as its family's version writes it (pretty JSON, trailing
    /// newline).
    pub fn to_json(&self) -> Result<String, ModelFileError> {
        let file = self.to_file()?;
        file.to_json().map_err(|e| ModelFileError::Write {
            path: PathBuf::from("<model>"),
            source: std::io::Error::other(e),
        })
    }

    /// Validates and writes the file atomically (temp file + rename) in its
    /// family's version.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        self.to_file()?.save(path)
    }

    /// The model.
    pub fn model(&self) -> &AnyModel {
        &self.model
    }

    /// The model's family.
    pub fn family(&self) -> ModelFamily {
        self.model.family()
    }

    /// The family's `model_type` name.
    pub fn model_type(&self) -> &'static str {
        self.family().name()
    }

    /// The input encoding the model expects.
    pub fn features(&self) -> &FeatureSpec {
        &self.features
    }

    /// What the model predicts.
    pub fn target(&self) -> &ModelTarget {
        &self.target
    }

    /// The predicted schema column (empty for k-means).
    pub fn target_column(&self) -> &str {
        &self.target.column
    }

    /// The class names of a softmax model, in model order (empty otherwise).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Where the model came from.
    pub fn provenance(&self) -> &RunProvenance<ModelMetrics> {
        &self.provenance
    }

    /// The `score` columns on the encoded rows `x`.
    pub fn score(&self, x: ndarray::ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        self.model.ops().score(self, x)
    }

    /// The model-file section of each family: the file version a family is
    /// written in and how its fields map onto [`ModelDocument`].
    fn to_file(&self) -> Result<VersionedModelFile, ModelFileError> {
        let mismatch = || {
            ModelFileError::from(ModelFileProblem::Layout(format!(
                "the metrics are not those of a {} model",
                self.model_type()
            )))
        };
        let metrics = self.provenance.metrics.clone();
        // The recorded metrics, which must be of the family's kind (`$kind`).
        macro_rules! metrics_of {
            ($kind:ident) => {
                match metrics {
                    None => None,
                    Some(ModelMetrics::$kind(m)) => Some(m),
                    Some(_) => return Err(mismatch()),
                }
            };
        }
        let layout =
            |e: LearningError| ModelFileError::from(ModelFileProblem::Layout(e.to_string()));
        let column = TargetColumn {
            column: self.target.column.clone(),
        };
        let params = self.model.params().clone();
        let outputs = self.model.outputs();
        Ok(match self.family() {
            ModelFamily::LogisticRegression => {
                let metrics = metrics_of!(Binary);
                VersionedModelFile::V1(ModelFile::new(
                    Target {
                        column: self.target.column.clone(),
                        positive_value: self.target.positive_value.clone().unwrap_or_default(),
                    },
                    self.features.clone(),
                    &LogisticRegression::from_params(params).map_err(layout)?,
                    {
                        let p = &self.provenance;
                        Provenance {
                            run_id: p.run_id.clone(),
                            rounds: p.rounds,
                            clients: p.clients.clone(),
                            created_at: p.created_at.clone(),
                            metrics,
                            privacy: p.privacy.clone(),
                        }
                    },
                )?)
            }
            ModelFamily::LinearRegression => {
                let metrics = metrics_of!(Regression);
                VersionedModelFile::V2(ModelFileV2::LinearRegression(LinearRegressionFile::new(
                    column,
                    self.features.clone(),
                    &LinearRegression::from_params(params).map_err(layout)?,
                    self.provenance.clone().with_metrics(metrics),
                )?))
            }
            ModelFamily::SoftmaxRegression => {
                let metrics = metrics_of!(Multiclass);
                VersionedModelFile::V2(ModelFileV2::SoftmaxRegression(SoftmaxRegressionFile::new(
                    column,
                    self.classes.clone(),
                    self.features.clone(),
                    &SoftmaxRegression::from_params(params, outputs).map_err(layout)?,
                    self.provenance.clone().with_metrics(metrics),
                )?))
            }
            ModelFamily::KMeans => {
                let metrics = metrics_of!(Clustering);
                VersionedModelFile::V2(ModelFileV2::KMeans(KMeansFile::new(
                    self.features.clone(),
                    &KMeans::from_params(params, outputs).map_err(layout)?,
                    self.provenance.clone().with_metrics(metrics),
                )?))
            }
            ModelFamily::GradientBoostedTrees => {
                let metrics = match metrics {
                    None => None,
                    Some(ModelMetrics::Binary(m)) => Some(TreeMetrics::Binary(m)),
                    Some(ModelMetrics::Regression(m)) => Some(TreeMetrics::Regression(m)),
                    Some(_) => return Err(mismatch()),
                };
                let model = TreeModel::from_flat(params.view()).map_err(layout)?;
                VersionedModelFile::V2(ModelFileV2::GradientBoostedTrees(
                    GradientBoostedTreesFile::new(
                        column,
                        self.target.positive_value.clone(),
                        self.features.clone(),
                        &model,
                        self.provenance.clone().with_metrics(metrics),
                    )?,
                ))
            }
            #[cfg(any(test, feature = "testutils"))]
            ModelFamily::Toy => {
                return Err(
                    ModelFileProblem::Layout("the toy family has no model file".into()).into(),
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn spec() -> FeatureSpec {
        FeatureSpec {
            reference: None,
            columns: vec![
                FeatureColumn::Numeric {
                    name: "tenure".into(),
                    mean: 32.4,
                    std: 24.6,
                },
                FeatureColumn::Boolean {
                    name: "partner".into(),
                },
                FeatureColumn::Categorical {
                    name: "contract".into(),
                    vocabulary: vec!["month-to-month".into(), "one year".into()],
                },
            ],
        }
    }

    fn target() -> Target {
        Target {
            column: "churn".into(),
            positive_value: "yes".into(),
        }
    }

    fn provenance() -> Provenance {
        Provenance {
            run_id: "run-1".into(),
            rounds: 5,
            clients: vec!["bank".into(), "telco".into()],
            created_at: "2025-01-31T12:00:00Z".into(),
            privacy: None,
            metrics: Some(Metrics {
                examples: 100,
                accuracy: 0.8,
                precision: 0.7,
                recall: 0.6,
                f1: 0.646,
                log_loss: 0.42,
                auc: Some(0.85),
            }),
        }
    }

    fn model() -> LogisticRegression {
        LogisticRegression::from_params(array![-1.0, 0.5, 0.25, 1.5, -0.75, 0.0]).unwrap()
    }

    fn file() -> ModelFile {
        ModelFile::new(target(), spec(), &model(), provenance()).unwrap()
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("fedprofile-learning-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn new_names_weights_after_the_spec() {
        let f = file();
        let names: Vec<&str> = f.weights.iter().map(|w| w.feature.as_str()).collect();
        assert_eq!(
            names,
            [
                "tenure",
                "partner",
                "contract=month-to-month",
                "contract=one year",
                "contract=<unseen>"
            ]
        );
        assert_eq!(f.intercept, -1.0);
        assert_eq!(f.weights[3].weight, -0.75);
        assert_eq!(f.to_model().unwrap(), model());
    }

    #[test]
    fn new_rejects_dimension_mismatch() {
        let err = ModelFile::new(
            target(),
            spec(),
            &LogisticRegression::zeros(3),
            provenance(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid model: 3 weights for 5 encoded features"
        );
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("model.json");
        let f = file();
        f.save(&path).unwrap();
        assert!(!tmp_path(&path).exists());
        let back = ModelFile::load(&path).unwrap();
        assert_eq!(back, f);
        let m = back.to_model().unwrap();
        let x = array![[0.3, 1.0, 0.0, 1.0, 0.0]];
        assert_eq!(
            m.predict_proba(x.view()).unwrap(),
            model().predict_proba(x.view()).unwrap()
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"format\": \"fedprofile-model\",\n  \"version\": 1,"));
    }

    #[test]
    fn documented_example_loads() {
        let text = include_str!("../../../docs/model-format.md");
        let json = text
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let f = ModelFile::from_json(json, "docs/model-format.md").unwrap();
        assert_eq!(f.features.dim(), 5);
        assert_eq!(f.to_model().unwrap().dim(), 5);
    }

    fn edit(f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(file()).unwrap();
        f(&mut v);
        v.to_string()
    }

    fn load_err(text: &str) -> String {
        ModelFile::from_json(text, "/models/global.json")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_version_is_a_clear_error() {
        let text = edit(|v| {
            v["version"] = 2.into();
            v["new_field_of_v2"] = true.into();
        });
        assert_eq!(
            load_err(&text),
            "invalid model file '/models/global.json': format version 2 is not supported \
             (this build reads version 1)"
        );
        let text = edit(|v| {
            v.as_object_mut().unwrap().remove("version");
        });
        assert_eq!(
            load_err(&text),
            "invalid model file '/models/global.json': format version <missing> is not \
             supported (this build reads version 1)"
        );
    }

    #[test]
    fn wrong_format_is_rejected() {
        let text = edit(|v| v["format"] = "onnx".into());
        assert_eq!(
            load_err(&text),
            "invalid model file '/models/global.json': format is \"onnx\" (expected \
             \"fedprofile-model\")"
        );
        assert!(load_err("42").starts_with("cannot parse model file '/models/global.json'"));
        assert!(load_err("{").starts_with("cannot parse model file '/models/global.json'"));
    }

    #[test]
    fn validation_failures_name_the_file_and_value() {
        let text = edit(|v| v["weights"][1]["feature"] = "partner_flag".into());
        assert_eq!(
            load_err(&text),
            "invalid model file '/models/global.json': weight 1 is named 'partner_flag' but \
             the feature spec calls it 'partner'"
        );
        let text = edit(|v| {
            v["weights"].as_array_mut().unwrap().pop();
        });
        assert_eq!(
            load_err(&text),
            "invalid model file '/models/global.json': 4 weights for 5 encoded features"
        );
        let text = edit(|v| v["model_type"] = "mlp".into());
        assert!(
            load_err(&text)
                .ends_with("model type 'mlp' is not supported (expected 'logistic_regression')")
        );
        let text = edit(|v| v["weights"][0]["weight"] = f64::INFINITY.into());
        // JSON has no infinity; serde_json turns a non-finite f64 into null
        assert!(load_err(&text).starts_with("cannot parse model file"));
        let text = edit(|v| v["features"]["columns"][0]["std"] = (-1.0).into());
        assert!(load_err(&text).ends_with("std of feature 'tenure' (negative) is invalid: -1"));
        let text = edit(|v| v["extra"] = 1.into());
        assert!(load_err(&text).contains("unknown field `extra`"));
    }

    #[test]
    fn non_finite_models_are_not_written() {
        let dir = TempDir::new("nonfinite");
        let path = dir.0.join("model.json");
        let mut f = file();
        f.weights[2].weight = f64::NAN;
        let err = f.save(&path).unwrap_err();
        assert!(matches!(err, ModelFileError::Invalid { .. }));
        assert!(
            err.to_string()
                .ends_with("weight 'contract=month-to-month' is invalid: NaN"),
            "{err}"
        );
        assert!(!path.exists());
        assert!(f.to_model().is_err());
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = TempDir::new("io");
        let missing = dir.0.join("missing.json");
        let err = ModelFile::load(&missing).unwrap_err();
        assert!(matches!(err, ModelFileError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read model file '{}': ", missing.display()))
        );
        let err = file()
            .save(dir.0.join("no/such/dir/model.json"))
            .unwrap_err();
        assert!(err.to_string().starts_with("cannot write model file '"));
    }
}
