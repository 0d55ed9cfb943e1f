//! The global model file: versioned JSON holding everything needed to score a user
//! (target, feature encoding, parameters) and where the model came from.
//!
//! The layout is documented with an example in `docs/model-format.md`. Loading
//! reads `format` and `version` first, so that a file of another kind or of a newer
//! version is reported as such rather than as a missing field; then it parses the
//! whole file (unknown fields are rejected) and validates it.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelFileError, ModelFileProblem};
use crate::features::{FeatureColumn, FeatureSpec};
use crate::metrics::Metrics;
use crate::model::LogisticRegression;

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
        if model.dim() != features.dim() {
            return Err(ModelFileProblem::WeightCount {
                weights: model.dim(),
                dim: features.dim(),
            }
            .into());
        }
        let weights = features
            .entry_names()
            .into_iter()
            .zip(model.weights())
            .map(|(feature, &weight)| NamedWeight { feature, weight })
            .collect();
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
        let text = fs::read_to_string(path).map_err(|source| ModelFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the JSON text of a model file; `path` is only used in
    /// error messages.
    pub fn from_json(text: &str, path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        let parse = |source| ModelFileError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |problem| ModelFileError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
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
        let path = path.as_ref();
        self.validate().map_err(|problem| ModelFileError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
        let write = |source| ModelFileError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = self
            .to_json()
            .map_err(|e| write(std::io::Error::other(e)))?;
        write_atomic(path, &text)
    }

    /// The file as pretty-printed JSON with a trailing newline (not validated).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        Ok(text)
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
        check_feature_stats(&self.features)?;
        let names = self.features.entry_names();
        if self.weights.len() != names.len() {
            return Err(ModelFileProblem::WeightCount {
                weights: self.weights.len(),
                dim: names.len(),
            });
        }
        finite("intercept", self.intercept)?;
        for (index, (w, expected)) in self.weights.iter().zip(names).enumerate() {
            if w.feature != expected {
                return Err(ModelFileProblem::WeightName {
                    index,
                    found: w.feature.clone(),
                    expected,
                });
            }
            finite(&format!("weight '{}'", w.feature), w.weight)?;
        }
        if let Some(m) = &self.provenance.metrics {
            for (name, value) in [
                ("accuracy", m.accuracy),
                ("precision", m.precision),
                ("recall", m.recall),
                ("f1", m.f1),
                ("log_loss", m.log_loss),
                ("auc", m.auc.unwrap_or(0.0)),
            ] {
                finite(&format!("metric '{name}'"), value)?;
            }
        }
        Ok(())
    }

    /// The model the file describes (validates first).
    pub fn to_model(&self) -> Result<LogisticRegression, ModelFileError> {
        self.validate()?;
        let params = std::iter::once(self.intercept)
            .chain(self.weights.iter().map(|w| w.weight))
            .collect();
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn spec() -> FeatureSpec {
        FeatureSpec {
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
