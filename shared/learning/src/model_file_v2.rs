//! Version 2 of the global model file: linear regression, softmax regression and
//! k-means, next to version 1 (binary logistic regression, [`ModelFile`]).
//!
//! The layouts are documented with examples in `docs/model-format-v2.md`.
//!
//! - [`ModelFileV2`] reads and writes version 2 files only; its variant follows
//!   `model_type` (`linear_regression`, `softmax_regression`, `kmeans`).
//! - [`VersionedModelFile`] reads either version (dispatching on `version`), for a
//!   reader that scores whatever the coordinator produced.
//! - Logistic regression is still written as version 1 by [`ModelFile`], so that
//!   readers built before version 2 keep loading churn and propensity models; a
//!   version 2 file with `model_type` `logistic_regression` is rejected.
//!
//! Loading checks `format`, `version` and `model_type` before parsing the rest, so
//! a file of another kind, version or type is reported as such; then the whole
//! file is parsed (unknown fields are rejected) and validated.

use std::path::Path;

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::error::{ModelFileError, ModelFileProblem};
use crate::features::FeatureSpec;
use crate::kmeans::KMeans;
use crate::linear::LinearRegression;
use crate::model_file::{
    MODEL_FILE_VERSION, MODEL_FORMAT, ModelFile, NamedWeight, check_feature_stats, check_metrics,
    check_model_dim, check_weights, file_errors, finite, intercept_and_weights, json_string,
    named_weights, pretty_json, read_text, save_checked,
};
use crate::model_file_trees::{GRADIENT_BOOSTED_TREES, GradientBoostedTreesFile};
use crate::multiclass_metrics::MulticlassMetrics;
use crate::regression_metrics::RegressionMetrics;
use crate::softmax::SoftmaxRegression;

/// The format version of the model types of this module.
pub const MODEL_FILE_VERSION_2: u32 = 2;
/// Value of `model_type` for [`LinearRegression`].
pub const LINEAR_REGRESSION: &str = "linear_regression";
/// Value of `model_type` for [`SoftmaxRegression`].
pub const SOFTMAX_REGRESSION: &str = "softmax_regression";
/// Value of `model_type` for [`KMeans`].
pub const KMEANS: &str = "kmeans";

const V2_MODEL_TYPES: &str =
    "'linear_regression', 'softmax_regression', 'kmeans', 'gradient_boosted_trees'";

/// The schema column a regression or multi-class model predicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetColumn {
    /// Schema column of the label, e.g. `monthly_spend` or `plan`.
    pub column: String,
}

/// The differential privacy a model was trained under, in its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyProvenance {
    /// `none`, `record` (record-level DP, DP-SGD on every partner) or `client`
    /// (client-level DP, DP-FedAvg at the coordinator).
    pub mode: String,
    /// ε spent by the run (the largest any partner reported under record-level
    /// DP, the coordinator's under client-level DP); `None` without DP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// The δ the ε is reported at; `None` without DP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

/// Where a version 2 model came from, with the evaluation metrics `M` of its
/// model type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunProvenance<M> {
    /// Identifier of the federated training run.
    pub run_id: String,
    /// Completed training rounds.
    pub rounds: u32,
    /// Identifiers of the clients that contributed.
    pub clients: Vec<String>,
    /// Creation time, RFC 3339, supplied by the caller.
    pub created_at: String,
    /// Federated evaluation of the final model, if one was run.
    pub metrics: Option<M>,
    /// The privacy mode and the ε (δ) spent; absent in files written before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyProvenance>,
}

/// Pooled statistics of a k-means model on the clients' data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KMeansMetrics {
    /// Rows assigned.
    pub examples: u64,
    /// Sum of squared distances of the rows to their centroid.
    pub inertia: f64,
    /// Rows per cluster (segment sizes), one per centroid.
    pub counts: Vec<u64>,
}

/// A linear regression model file (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearRegressionFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_FILE_VERSION_2`].
    pub version: u32,
    /// Always [`LINEAR_REGRESSION`].
    pub model_type: String,
    /// The predicted numeric column.
    pub target: TargetColumn,
    /// The input encoding the weights expect.
    pub features: FeatureSpec,
    /// The intercept.
    pub intercept: f64,
    /// One weight per encoded entry, in encoding order.
    pub weights: Vec<NamedWeight>,
    /// Where the model came from.
    pub provenance: RunProvenance<RegressionMetrics>,
}

/// The intercept and weights of one class of a softmax model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCoefficients {
    /// The class (value of the target column).
    pub class: String,
    /// The class's intercept.
    pub intercept: f64,
    /// One weight per encoded entry, in encoding order.
    pub weights: Vec<NamedWeight>,
}

/// A softmax (multi-class) regression model file (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxRegressionFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_FILE_VERSION_2`].
    pub version: u32,
    /// Always [`SOFTMAX_REGRESSION`].
    pub model_type: String,
    /// The predicted categorical column.
    pub target: TargetColumn,
    /// The classes in model order: class index `c` is `classes[c]`; at least 2,
    /// distinct.
    pub classes: Vec<String>,
    /// The input encoding the weights expect.
    pub features: FeatureSpec,
    /// One entry per class, in the order of `classes`.
    pub coefficients: Vec<ClassCoefficients>,
    /// Where the model came from.
    pub provenance: RunProvenance<MulticlassMetrics>,
}

/// One coordinate of a centroid with the name of its encoded feature entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    /// Entry name from [`FeatureSpec::entry_names`].
    pub feature: String,
    /// The coordinate, in encoded (standardised) units.
    pub value: f64,
}

/// One centroid of a k-means model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Centroid {
    /// The cluster index, equal to the centroid's position.
    pub cluster: usize,
    /// One coordinate per encoded entry, in encoding order.
    pub values: Vec<NamedValue>,
}

/// A k-means (segmentation) model file (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KMeansFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_FILE_VERSION_2`].
    pub version: u32,
    /// Always [`KMEANS`].
    pub model_type: String,
    /// Number of clusters `k`, at least 1.
    pub clusters: usize,
    /// The input encoding the centroids live in.
    pub features: FeatureSpec,
    /// `clusters` centroids, in cluster order.
    pub centroids: Vec<Centroid>,
    /// Where the model came from.
    pub provenance: RunProvenance<KMeansMetrics>,
}

/// A version 2 model file of any of its model types.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelFileV2 {
    /// `model_type` `linear_regression`.
    LinearRegression(LinearRegressionFile),
    /// `model_type` `softmax_regression`.
    SoftmaxRegression(SoftmaxRegressionFile),
    /// `model_type` `kmeans`.
    KMeans(KMeansFile),
    /// `model_type` `gradient_boosted_trees`.
    GradientBoostedTrees(GradientBoostedTreesFile),
}

/// A model file of either version, as [`VersionedModelFile::load`] found it.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionedModelFile {
    /// Version 1: binary logistic regression.
    V1(ModelFile),
    /// Version 2: linear regression, softmax regression or k-means.
    V2(ModelFileV2),
}

#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
    model_type: Option<serde_json::Value>,
}

fn missing_or(value: Option<&serde_json::Value>) -> String {
    value.map_or_else(|| "<missing>".to_string(), ToString::to_string)
}

fn check_format(format: Option<&serde_json::Value>) -> Result<(), ModelFileProblem> {
    if format.and_then(serde_json::Value::as_str) != Some(MODEL_FORMAT) {
        return Err(ModelFileProblem::Format {
            found: missing_or(format),
        });
    }
    Ok(())
}

fn check_common(
    format: &str,
    version: u32,
    model_type: &str,
    expected_type: &str,
) -> Result<(), ModelFileProblem> {
    if format != MODEL_FORMAT {
        return Err(ModelFileProblem::Format {
            found: json_string(format),
        });
    }
    if version != MODEL_FILE_VERSION_2 {
        return Err(ModelFileProblem::UnsupportedVersion {
            found: version.to_string(),
            supported: MODEL_FILE_VERSION_2,
        });
    }
    if model_type != expected_type {
        return Err(ModelFileProblem::UnknownModelType {
            found: model_type.to_string(),
            version: MODEL_FILE_VERSION_2,
            expected: format!("'{expected_type}'"),
        });
    }
    Ok(())
}

fn layout(message: String) -> ModelFileProblem {
    ModelFileProblem::Layout(message)
}

/// `names` must equal `expected` entry by entry; `what` prefixes the message.
fn check_names<'a>(
    what: &str,
    names: impl ExactSizeIterator<Item = &'a str>,
    expected: &[String],
) -> Result<(), ModelFileProblem> {
    if names.len() != expected.len() {
        return Err(layout(format!(
            "{what} has {} entries for {} encoded features",
            names.len(),
            expected.len()
        )));
    }
    for (index, (found, expected)) in names.zip(expected).enumerate() {
        if found != expected {
            return Err(layout(format!(
                "{what} entry {index} is named '{found}' but the feature spec calls it \
                 '{expected}'"
            )));
        }
    }
    Ok(())
}

impl LinearRegressionFile {
    /// Describes `model` under the given target, encoding and provenance; weights
    /// are named after `features.entry_names()`. Fails if the dimensions differ or
    /// anything is invalid.
    pub fn new(
        target: TargetColumn,
        features: FeatureSpec,
        model: &LinearRegression,
        provenance: RunProvenance<RegressionMetrics>,
    ) -> Result<Self, ModelFileError> {
        check_model_dim(model.dim(), &features)?;
        let file = LinearRegressionFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_FILE_VERSION_2,
            model_type: LINEAR_REGRESSION.to_string(),
            target,
            weights: named_weights(&features, model.weights().iter().copied()),
            features,
            intercept: model.intercept(),
            provenance,
        };
        file.validate()?;
        Ok(file)
    }

    /// Checks header fields, the encoding, one weight per entry with the entry's
    /// name, and finite numbers.
    pub fn validate(&self) -> Result<(), ModelFileProblem> {
        check_common(
            &self.format,
            self.version,
            &self.model_type,
            LINEAR_REGRESSION,
        )?;
        check_weights(&self.features, self.intercept, &self.weights)?;
        if let Some(m) = &self.provenance.metrics {
            check_metrics([
                ("mse", m.mse),
                ("rmse", m.rmse),
                ("mae", m.mae),
                ("r2", m.r2.unwrap_or(0.0)),
            ])?;
        }
        Ok(())
    }

    /// The model the file describes (validates first).
    pub fn to_model(&self) -> Result<LinearRegression, ModelFileError> {
        self.validate()?;
        let params = intercept_and_weights(self.intercept, &self.weights);
        Ok(LinearRegression::from_params(params).map_err(|e| layout(e.to_string()))?)
    }
}

impl SoftmaxRegressionFile {
    /// Describes `model` with `classes[c]` the name of class index `c`; weights are
    /// named after `features.entry_names()`. Fails if the class count or the
    /// dimension differs from the model's, or anything is invalid.
    pub fn new(
        target: TargetColumn,
        classes: Vec<String>,
        features: FeatureSpec,
        model: &SoftmaxRegression,
        provenance: RunProvenance<MulticlassMetrics>,
    ) -> Result<Self, ModelFileError> {
        if classes.len() != model.classes() {
            return Err(layout(format!(
                "{} class names for a model of {} classes",
                classes.len(),
                model.classes()
            ))
            .into());
        }
        check_model_dim(model.dim(), &features)?;
        let coefficients = classes
            .iter()
            .zip(model.coefficients().rows())
            .map(|(class, row)| ClassCoefficients {
                class: class.clone(),
                intercept: row[0],
                weights: named_weights(&features, row.iter().skip(1).copied()),
            })
            .collect();
        let file = SoftmaxRegressionFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_FILE_VERSION_2,
            model_type: SOFTMAX_REGRESSION.to_string(),
            target,
            classes,
            features,
            coefficients,
            provenance,
        };
        file.validate()?;
        Ok(file)
    }

    /// Checks header fields, at least 2 distinct classes, one coefficient block per
    /// class in class order, weights named after the encoding, finite numbers.
    pub fn validate(&self) -> Result<(), ModelFileProblem> {
        check_common(
            &self.format,
            self.version,
            &self.model_type,
            SOFTMAX_REGRESSION,
        )?;
        check_feature_stats(&self.features)?;
        if self.classes.len() < 2 {
            return Err(layout(format!(
                "softmax_regression needs at least 2 classes, got {}",
                self.classes.len()
            )));
        }
        for (i, class) in self.classes.iter().enumerate() {
            if self.classes[..i].contains(class) {
                return Err(layout(format!("class '{class}' is listed twice")));
            }
        }
        if self.coefficients.len() != self.classes.len() {
            return Err(layout(format!(
                "{} coefficient blocks for {} classes",
                self.coefficients.len(),
                self.classes.len()
            )));
        }
        let names = self.features.entry_names();
        for (index, (block, class)) in self.coefficients.iter().zip(&self.classes).enumerate() {
            if &block.class != class {
                return Err(layout(format!(
                    "coefficient block {index} is for class '{}' but classes[{index}] is \
                     '{class}'",
                    block.class
                )));
            }
            let what = format!("weights of class '{class}'");
            check_names(
                &what,
                block.weights.iter().map(|w| w.feature.as_str()),
                &names,
            )?;
            finite(&format!("intercept of class '{class}'"), block.intercept)?;
            for w in &block.weights {
                finite(
                    &format!("weight '{}' of class '{class}'", w.feature),
                    w.weight,
                )?;
            }
        }
        if let Some(m) = &self.provenance.metrics {
            check_metrics([
                ("accuracy", m.accuracy),
                ("log_loss", m.log_loss),
                ("macro_precision", m.macro_precision),
                ("macro_recall", m.macro_recall),
                ("macro_f1", m.macro_f1),
            ])?;
        }
        Ok(())
    }

    /// The model the file describes (validates first).
    pub fn to_model(&self) -> Result<SoftmaxRegression, ModelFileError> {
        self.validate()?;
        let params: Array1<f64> = self
            .coefficients
            .iter()
            .flat_map(|b| std::iter::once(b.intercept).chain(b.weights.iter().map(|w| w.weight)))
            .collect();
        Ok(SoftmaxRegression::from_params(params, self.classes.len())
            .map_err(|e| layout(e.to_string()))?)
    }
}

impl KMeansFile {
    /// Describes `model` in the encoding `features`; coordinates are named after
    /// `features.entry_names()`. Fails if the dimension differs or anything is
    /// invalid.
    pub fn new(
        features: FeatureSpec,
        model: &KMeans,
        provenance: RunProvenance<KMeansMetrics>,
    ) -> Result<Self, ModelFileError> {
        if model.dim() != features.dim() {
            return Err(layout(format!(
                "centroids of {} values for {} encoded features",
                model.dim(),
                features.dim()
            ))
            .into());
        }
        let names = features.entry_names();
        let centroids = model
            .centroids()
            .rows()
            .into_iter()
            .enumerate()
            .map(|(cluster, row)| Centroid {
                cluster,
                values: names
                    .iter()
                    .zip(row)
                    .map(|(feature, &value)| NamedValue {
                        feature: feature.clone(),
                        value,
                    })
                    .collect(),
            })
            .collect();
        let file = KMeansFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_FILE_VERSION_2,
            model_type: KMEANS.to_string(),
            clusters: model.clusters(),
            features,
            centroids,
            provenance,
        };
        file.validate()?;
        Ok(file)
    }

    /// Checks header fields, `clusters >= 1` centroids in cluster order, values
    /// named after a non-empty encoding, finite numbers, and metrics whose counts
    /// match the clusters and add up to `examples`.
    pub fn validate(&self) -> Result<(), ModelFileProblem> {
        check_common(&self.format, self.version, &self.model_type, KMEANS)?;
        check_feature_stats(&self.features)?;
        if self.clusters == 0 {
            return Err(layout("kmeans needs at least 1 cluster, got 0".to_string()));
        }
        if self.centroids.len() != self.clusters {
            return Err(layout(format!(
                "clusters is {} but {} centroids are given",
                self.clusters,
                self.centroids.len()
            )));
        }
        let names = self.features.entry_names();
        if names.is_empty() {
            return Err(layout(
                "kmeans needs at least 1 encoded feature".to_string(),
            ));
        }
        for (index, c) in self.centroids.iter().enumerate() {
            if c.cluster != index {
                return Err(layout(format!(
                    "centroid {index} is labelled cluster {}",
                    c.cluster
                )));
            }
            let what = format!("centroid {index}");
            check_names(&what, c.values.iter().map(|v| v.feature.as_str()), &names)?;
            for v in &c.values {
                finite(
                    &format!("value '{}' of centroid {index}", v.feature),
                    v.value,
                )?;
            }
        }
        if let Some(m) = &self.provenance.metrics {
            finite("metric 'inertia'", m.inertia)?;
            if m.inertia < 0.0 {
                return Err(ModelFileProblem::InvalidNumber {
                    field: "metric 'inertia' (negative)".to_string(),
                    value: m.inertia,
                });
            }
            if m.counts.len() != self.clusters {
                return Err(layout(format!(
                    "metrics give {} cluster counts for {} clusters",
                    m.counts.len(),
                    self.clusters
                )));
            }
            let total: u128 = m.counts.iter().map(|&c| u128::from(c)).sum();
            if total != u128::from(m.examples) {
                return Err(layout(format!(
                    "metric cluster counts add up to {total} but examples is {}",
                    m.examples
                )));
            }
        }
        Ok(())
    }

    /// The model the file describes (validates first).
    pub fn to_model(&self) -> Result<KMeans, ModelFileError> {
        self.validate()?;
        let params: Array1<f64> = self
            .centroids
            .iter()
            .flat_map(|c| c.values.iter().map(|v| v.value))
            .collect();
        Ok(KMeans::from_params(params, self.clusters).map_err(|e| layout(e.to_string()))?)
    }
}

impl From<LinearRegressionFile> for ModelFileV2 {
    fn from(file: LinearRegressionFile) -> Self {
        ModelFileV2::LinearRegression(file)
    }
}

impl From<SoftmaxRegressionFile> for ModelFileV2 {
    fn from(file: SoftmaxRegressionFile) -> Self {
        ModelFileV2::SoftmaxRegression(file)
    }
}

impl From<KMeansFile> for ModelFileV2 {
    fn from(file: KMeansFile) -> Self {
        ModelFileV2::KMeans(file)
    }
}

impl ModelFileV2 {
    /// The `model_type` of the file.
    pub fn model_type(&self) -> &str {
        match self {
            ModelFileV2::LinearRegression(f) => &f.model_type,
            ModelFileV2::SoftmaxRegression(f) => &f.model_type,
            ModelFileV2::KMeans(f) => &f.model_type,
            ModelFileV2::GradientBoostedTrees(f) => &f.model_type,
        }
    }

    /// The feature encoding the model expects.
    pub fn features(&self) -> &FeatureSpec {
        match self {
            ModelFileV2::LinearRegression(f) => &f.features,
            ModelFileV2::SoftmaxRegression(f) => &f.features,
            ModelFileV2::KMeans(f) => &f.features,
            ModelFileV2::GradientBoostedTrees(f) => &f.features,
        }
    }

    /// Validates the file of whichever model type it is.
    pub fn validate(&self) -> Result<(), ModelFileProblem> {
        match self {
            ModelFileV2::LinearRegression(f) => f.validate(),
            ModelFileV2::SoftmaxRegression(f) => f.validate(),
            ModelFileV2::KMeans(f) => f.validate(),
            ModelFileV2::GradientBoostedTrees(f) => f.validate(),
        }
    }

    /// Reads, parses and validates a version 2 model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        Self::from_json(&read_text(path)?, path)
    }

    /// Parses and validates the JSON text of a version 2 model file; `path` is only
    /// used in error messages.
    pub fn from_json(text: &str, path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let (parse, invalid) = file_errors(path.as_ref());
        let header: Header = serde_json::from_str(text).map_err(parse)?;
        check_format(header.format.as_ref()).map_err(invalid)?;
        if header.version.as_ref().and_then(serde_json::Value::as_u64)
            != Some(u64::from(MODEL_FILE_VERSION_2))
        {
            return Err(invalid(ModelFileProblem::UnsupportedVersion {
                found: missing_or(header.version.as_ref()),
                supported: MODEL_FILE_VERSION_2,
            }));
        }
        let model_type = header
            .model_type
            .as_ref()
            .and_then(serde_json::Value::as_str);
        let file = match model_type {
            Some(LINEAR_REGRESSION) => {
                ModelFileV2::LinearRegression(serde_json::from_str(text).map_err(parse)?)
            }
            Some(SOFTMAX_REGRESSION) => {
                ModelFileV2::SoftmaxRegression(serde_json::from_str(text).map_err(parse)?)
            }
            Some(KMEANS) => ModelFileV2::KMeans(serde_json::from_str(text).map_err(parse)?),
            Some(GRADIENT_BOOSTED_TREES) => {
                ModelFileV2::GradientBoostedTrees(serde_json::from_str(text).map_err(parse)?)
            }
            _ => {
                return Err(invalid(ModelFileProblem::UnknownModelType {
                    found: model_type
                        .map_or_else(|| missing_or(header.model_type.as_ref()), str::to_string),
                    version: MODEL_FILE_VERSION_2,
                    expected: V2_MODEL_TYPES.to_string(),
                }));
            }
        };
        file.validate().map_err(invalid)?;
        Ok(file)
    }

    /// The file as pretty-printed JSON with a trailing newline (not validated).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        pretty_json(self)
    }

    /// Validates and writes the file as pretty-printed JSON, through a sibling
    /// `<name>.tmp` renamed over `path` (readers never see a half-written model).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        save_checked(path.as_ref(), self.validate(), || self.to_json())
    }
}

impl VersionedModelFile {
    /// Reads, parses and validates a model file of version 1 or 2.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        Self::from_json(&read_text(path)?, path)
    }

    /// Parses and validates model file text of version 1 or 2, dispatching on
    /// `version`; any other version is
    /// [`ModelFileProblem::UnsupportedVersions`].
    pub fn from_json(text: &str, path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        let (parse, invalid) = file_errors(path);
        let header: Header = serde_json::from_str(text).map_err(parse)?;
        check_format(header.format.as_ref()).map_err(invalid)?;
        match header.version.as_ref().and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(MODEL_FILE_VERSION) => {
                Ok(VersionedModelFile::V1(ModelFile::from_json(text, path)?))
            }
            Some(v) if v == u64::from(MODEL_FILE_VERSION_2) => {
                Ok(VersionedModelFile::V2(ModelFileV2::from_json(text, path)?))
            }
            _ => Err(invalid(ModelFileProblem::UnsupportedVersions {
                found: missing_or(header.version.as_ref()),
                supported: format!("{MODEL_FILE_VERSION} and {MODEL_FILE_VERSION_2}"),
            })),
        }
    }

    /// The file's format version.
    pub fn version(&self) -> u32 {
        match self {
            VersionedModelFile::V1(f) => f.version,
            VersionedModelFile::V2(_) => MODEL_FILE_VERSION_2,
        }
    }

    /// The file's `model_type`.
    pub fn model_type(&self) -> &str {
        match self {
            VersionedModelFile::V1(f) => &f.model_type,
            VersionedModelFile::V2(f) => f.model_type(),
        }
    }

    /// The feature encoding the model expects.
    pub fn features(&self) -> &FeatureSpec {
        match self {
            VersionedModelFile::V1(f) => &f.features,
            VersionedModelFile::V2(f) => f.features(),
        }
    }

    /// Validates and writes the file in its own version.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        match self {
            VersionedModelFile::V1(f) => f.save(path),
            VersionedModelFile::V2(f) => f.save(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureColumn;
    use crate::model::LogisticRegression;
    use crate::model_file::{Provenance, Target, tmp_path};
    use ndarray::array;
    use std::fs;
    use std::path::PathBuf;

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
            ],
        }
    }

    #[test]
    fn provenance_records_the_privacy_mode_and_old_files_without_it_load() {
        let p: RunProvenance<KMeansMetrics> = provenance(None);
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains(r#""privacy":{"mode":"record","epsilon":1.0,"delta":0.00001}"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<RunProvenance<KMeansMetrics>>(&json).unwrap(),
            p
        );
        let old = r#"{"run_id":"r","rounds":1,"clients":[],"created_at":"t","metrics":null}"#;
        let old: RunProvenance<KMeansMetrics> = serde_json::from_str(old).unwrap();
        assert_eq!(old.privacy, None);
    }

    fn provenance<M>(metrics: Option<M>) -> RunProvenance<M> {
        RunProvenance {
            run_id: "run-2".into(),
            rounds: 10,
            clients: vec!["bank".into(), "telco".into()],
            created_at: "2025-02-01T08:00:00Z".into(),
            metrics,
            privacy: Some(PrivacyProvenance {
                mode: "record".into(),
                epsilon: Some(1.0),
                delta: Some(1e-5),
            }),
        }
    }

    fn linear() -> LinearRegressionFile {
        LinearRegressionFile::new(
            TargetColumn {
                column: "monthly_spend".into(),
            },
            spec(),
            &LinearRegression::from_params(array![50.0, 12.5, -3.0]).unwrap(),
            provenance(Some(RegressionMetrics {
                examples: 10,
                mse: 4.0,
                rmse: 2.0,
                mae: 1.5,
                r2: Some(0.9),
            })),
        )
        .unwrap()
    }

    fn softmax() -> SoftmaxRegressionFile {
        SoftmaxRegressionFile::new(
            TargetColumn {
                column: "plan".into(),
            },
            vec!["basic".into(), "plus".into(), "premium".into()],
            spec(),
            &SoftmaxRegression::from_params(
                array![0.5, -1.0, 0.2, 0.0, 0.1, 0.3, -0.5, 0.9, -0.5],
                3,
            )
            .unwrap(),
            provenance(None),
        )
        .unwrap()
    }

    fn kmeans() -> KMeansFile {
        KMeansFile::new(
            spec(),
            &KMeans::from_params(array![-1.0, 0.0, 1.0, 1.0], 2).unwrap(),
            provenance(Some(KMeansMetrics {
                examples: 30,
                inertia: 12.5,
                counts: vec![10, 20],
            })),
        )
        .unwrap()
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "fedprofile-learning-v2-{name}-{}",
                std::process::id()
            ));
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

    fn load_err(text: &str) -> String {
        ModelFileV2::from_json(text, "/m/v2.json")
            .unwrap_err()
            .to_string()
    }

    fn edit(file: impl Into<ModelFileV2>, f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(file.into()).unwrap();
        f(&mut v);
        v.to_string()
    }

    #[test]
    fn every_type_round_trips_through_a_file() {
        let dir = TempDir::new("roundtrip");
        for (name, file) in [
            ("linear", ModelFileV2::from(linear())),
            ("softmax", softmax().into()),
            ("kmeans", kmeans().into()),
        ] {
            let path = dir.0.join(format!("{name}.json"));
            file.save(&path).unwrap();
            assert!(!tmp_path(&path).exists());
            let back = ModelFileV2::load(&path).unwrap();
            assert_eq!(back, file);
            let any = VersionedModelFile::load(&path).unwrap();
            assert_eq!(any.version(), 2);
            assert_eq!(any.model_type(), file.model_type());
            assert_eq!(any, VersionedModelFile::V2(file));
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("{\n  \"format\": \"fedprofile-model\",\n  \"version\": 2,"));
        }
    }

    #[test]
    fn files_give_back_the_models() {
        let m = linear().to_model().unwrap();
        assert_eq!(m.params(), &array![50.0, 12.5, -3.0]);
        let s = softmax();
        assert_eq!(s.coefficients[1].class, "plus");
        assert_eq!(s.coefficients[1].intercept, 0.0);
        assert_eq!(s.coefficients[2].weights[0].weight, 0.9);
        assert_eq!(
            s.to_model().unwrap().params(),
            &array![0.5, -1.0, 0.2, 0.0, 0.1, 0.3, -0.5, 0.9, -0.5]
        );
        let k = kmeans();
        assert_eq!(k.centroids[1].values[0].feature, "tenure");
        assert_eq!(k.to_model().unwrap().params(), &array![-1.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn v1_files_still_load_through_the_versioned_reader() {
        let v1 = ModelFile::new(
            Target {
                column: "churn".into(),
                positive_value: "yes".into(),
            },
            spec(),
            &LogisticRegression::from_params(array![-1.0, 0.5, 0.25]).unwrap(),
            Provenance {
                run_id: "r".into(),
                rounds: 1,
                clients: vec![],
                created_at: "2025-01-31T12:00:00Z".into(),
                metrics: None,
                privacy: None,
            },
        )
        .unwrap();
        let text = v1.to_json().unwrap();
        let any = VersionedModelFile::from_json(&text, "v1.json").unwrap();
        assert_eq!(
            (any.version(), any.model_type()),
            (1, "logistic_regression")
        );
        assert_eq!(any, VersionedModelFile::V1(v1));
        // and the documented v1 example
        let doc = include_str!("../../../docs/model-format.md");
        let json = doc
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        assert!(matches!(
            VersionedModelFile::from_json(json, "doc").unwrap(),
            VersionedModelFile::V1(_)
        ));
        // the v2 reader alone refuses v1, the v1 reader refuses v2
        assert_eq!(
            load_err(&text),
            "invalid model file '/m/v2.json': format version 1 is not supported (this build \
             reads version 2)"
        );
        let v2 = ModelFileV2::from(linear()).to_json().unwrap();
        assert!(
            ModelFile::from_json(&v2, "x")
                .unwrap_err()
                .to_string()
                .ends_with("format version 2 is not supported (this build reads version 1)")
        );
    }

    #[test]
    fn documented_examples_load() {
        let doc = include_str!("../../../docs/model-format-v2.md");
        let blocks: Vec<&str> = doc
            .split("```json\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect();
        assert_eq!(blocks.len(), 4);
        let types: Vec<String> = blocks
            .iter()
            .map(|json| {
                let f = ModelFileV2::from_json(json, "docs/model-format-v2.md").unwrap();
                match &f {
                    ModelFileV2::LinearRegression(l) => {
                        l.to_model().unwrap();
                    }
                    ModelFileV2::SoftmaxRegression(s) => {
                        s.to_model().unwrap();
                    }
                    ModelFileV2::KMeans(k) => {
                        k.to_model().unwrap();
                    }
                    ModelFileV2::GradientBoostedTrees(t) => {
                        let model = t.to_model().unwrap();
                        assert_eq!((model.complete_trees(), model.dim()), (1, 4));
                    }
                }
                f.model_type().to_string()
            })
            .collect();
        assert_eq!(
            types,
            [
                "linear_regression",
                "softmax_regression",
                "kmeans",
                "gradient_boosted_trees"
            ]
        );
    }

    #[test]
    fn header_errors_are_clear() {
        let text = edit(linear(), |v| v["version"] = 3.into());
        assert_eq!(
            VersionedModelFile::from_json(&text, "/m/any.json")
                .unwrap_err()
                .to_string(),
            "invalid model file '/m/any.json': format version 3 is not supported (this build \
             reads versions 1 and 2)"
        );
        let text = edit(linear(), |v| v["format"] = "onnx".into());
        assert!(
            VersionedModelFile::from_json(&text, "x")
                .unwrap_err()
                .to_string()
                .ends_with("format is \"onnx\" (expected \"fedprofile-model\")")
        );
        let text = edit(linear(), |v| v["model_type"] = "logistic_regression".into());
        assert_eq!(
            load_err(&text),
            "invalid model file '/m/v2.json': model type 'logistic_regression' is not \
             supported in version 2 (expected one of 'linear_regression', \
             'softmax_regression', 'kmeans', 'gradient_boosted_trees')"
        );
        let text = edit(linear(), |v| {
            v.as_object_mut().unwrap().remove("model_type");
        });
        assert!(load_err(&text).contains("model type '<missing>'"));
        let text = edit(linear(), |v| v["extra"] = 1.into());
        assert!(load_err(&text).contains("unknown field `extra`"));
        // a body of another type fails to parse
        let text = edit(kmeans(), |v| v["model_type"] = "linear_regression".into());
        assert!(load_err(&text).starts_with("cannot parse model file '/m/v2.json'"));
    }

    #[test]
    fn validation_failures_name_the_problem() {
        let text = edit(linear(), |v| {
            v["weights"][1]["feature"] = "partner_flag".into()
        });
        assert!(
            load_err(&text).ends_with(
                "weight 1 is named 'partner_flag' but the feature spec calls it 'partner'"
            )
        );
        let text = edit(softmax(), |v| v["classes"][2] = "basic".into());
        assert!(load_err(&text).ends_with("class 'basic' is listed twice"));
        let text = edit(softmax(), |v| v["coefficients"][1]["class"] = "gold".into());
        assert!(
            load_err(&text)
                .ends_with("coefficient block 1 is for class 'gold' but classes[1] is 'plus'")
        );
        let text = edit(softmax(), |v| {
            v["classes"].as_array_mut().unwrap().truncate(1);
            v["coefficients"].as_array_mut().unwrap().truncate(1);
        });
        assert!(load_err(&text).ends_with("softmax_regression needs at least 2 classes, got 1"));
        let text = edit(softmax(), |v| {
            v["coefficients"][0]["weights"]
                .as_array_mut()
                .unwrap()
                .pop();
        });
        assert!(
            load_err(&text)
                .ends_with("weights of class 'basic' has 1 entries for 2 encoded features")
        );
        let text = edit(kmeans(), |v| v["clusters"] = 3.into());
        assert!(load_err(&text).ends_with("clusters is 3 but 2 centroids are given"));
        let text = edit(kmeans(), |v| v["centroids"][1]["cluster"] = 0.into());
        assert!(load_err(&text).ends_with("centroid 1 is labelled cluster 0"));
        let text = edit(kmeans(), |v| {
            v["centroids"][0]["values"][1]["feature"] = "x".into()
        });
        assert!(
            load_err(&text).ends_with(
                "centroid 0 entry 1 is named 'x' but the feature spec calls it 'partner'"
            )
        );
        let text = edit(kmeans(), |v| {
            v["provenance"]["metrics"]["counts"] = vec![10, 21].into()
        });
        assert!(load_err(&text).ends_with("metric cluster counts add up to 31 but examples is 30"));
    }

    #[test]
    fn builders_check_shapes_and_nothing_invalid_is_written() {
        let err = SoftmaxRegressionFile::new(
            TargetColumn {
                column: "plan".into(),
            },
            vec!["a".into(), "b".into()],
            spec(),
            &SoftmaxRegression::zeros(2, 3).unwrap(),
            provenance(None),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid model: 2 class names for a model of 3 classes"
        );
        let err = KMeansFile::new(
            spec(),
            &KMeans::from_params(array![1.0, 2.0, 3.0], 1).unwrap(),
            provenance(None),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid model: centroids of 3 values for 2 encoded features"
        );
        assert!(
            LinearRegressionFile::new(
                TargetColumn { column: "y".into() },
                spec(),
                &LinearRegression::zeros(1),
                provenance(None),
            )
            .is_err()
        );
        let dir = TempDir::new("invalid");
        let path = dir.0.join("model.json");
        let mut k = kmeans();
        k.centroids[0].values[0].value = f64::NAN;
        let err = ModelFileV2::from(k).save(&path).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("value 'tenure' of centroid 0 is invalid: NaN"),
            "{err}"
        );
        assert!(!path.exists());
    }
}
