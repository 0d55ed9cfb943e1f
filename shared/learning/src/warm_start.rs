//! Warm start: an earlier global model continues a run. The model file (any
//! version, through [`ModelDocument::load`]) must fit the federation's current
//! schema (same columns, kinds and vocabularies; the numeric means and
//! standard deviations may differ, the file's are kept) and the run (same
//! family, target, classes, number of outputs).

use std::path::Path;

use ndarray::Array1;

use crate::error::ModelFileError;
use crate::family::{LabelNeed, ModelFamily};
use crate::features::{FeatureColumn, FeatureSpec};
use crate::model_file::ModelDocument;

/// What a warm-start model must predict to continue a run.
#[derive(Debug, Clone, Copy)]
pub struct WarmStartTarget<'a> {
    /// The run's family.
    pub family: ModelFamily,
    /// The clients' label column (empty without a label).
    pub label: &'a str,
    /// The clients' positive value of a binary label.
    pub positive: &'a str,
    /// The clients' class names of a multi-class label.
    pub classes: &'a [String],
    /// The number of outputs the run asks for (clusters of a segmentation).
    pub outputs: usize,
}

/// A warm-start model that does not fit the run.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    /// The file cannot be read or is invalid.
    #[error(transparent)]
    File(#[from] ModelFileError),
    /// The file is valid but does not fit (one sentence naming the file).
    #[error("{0}")]
    Mismatch(String),
}

/// The feature encoding and parameters of the model file at `path`, checked
/// against the clients' `template` and the run's `expected` target.
pub fn warm_start(
    path: &Path,
    template: &FeatureSpec,
    expected: &WarmStartTarget<'_>,
) -> Result<(FeatureSpec, Array1<f64>), WarmStartError> {
    let doc = ModelDocument::load(path)?;
    let shown = path.display();
    let mismatch = |s: String| Err(WarmStartError::Mismatch(s));
    if doc.family() != expected.family {
        return mismatch(format!(
            "{shown} is a {} model, the run trains {}",
            doc.model_type(),
            expected.family
        ));
    }
    if shape(doc.features()) != shape(template) {
        return mismatch(format!(
            "{shown} was trained on other features than the clients' schema declares"
        ));
    }
    let (label, positive) = (expected.label, expected.positive);
    let target = doc.target();
    match (expected.family.label_need(), &target.positive_value) {
        (LabelNeed::None, _) => {
            if doc.model().outputs() != expected.outputs {
                return mismatch(format!(
                    "{shown} has {} clusters, the run file asks for {}",
                    doc.model().outputs(),
                    expected.outputs
                ));
            }
        }
        (_, Some(value)) => {
            if target.column != label || value != positive {
                return mismatch(format!(
                    "{shown} predicts '{}' = '{value}', the clients' schema labels '{label}' = '{positive}'",
                    target.column
                ));
            }
        }
        (need, None) => {
            if target.column != label {
                return mismatch(format!(
                    "{shown} predicts '{}', the clients' schema's label is '{label}'",
                    target.column
                ));
            }
            if need == LabelNeed::Classes && doc.classes() != expected.classes {
                return mismatch(format!(
                    "{shown} has the classes {:?}, the clients' schema declares {:?}",
                    doc.classes(),
                    expected.classes
                ));
            }
        }
    }
    Ok((doc.features().clone(), doc.model().params().clone()))
}

/// The columns of a spec without their numeric statistics.
fn shape(spec: &FeatureSpec) -> Vec<FeatureColumn> {
    spec.columns
        .iter()
        .map(|c| match c {
            FeatureColumn::Numeric { name, .. } => FeatureColumn::Numeric {
                name: name.clone(),
                mean: 0.0,
                std: 1.0,
            },
            other => other.clone(),
        })
        .collect()
}
