//! The gradient-boosted-trees section of the model file (version 2,
//! `model_type = "gradient_boosted_trees"`): the target, the feature encoding,
//! the loss and tree settings (with how the trees were grown), the
//! federation's binning (bin edges per encoded feature) and every tree as a
//! list of nodes, each split naming its feature.
//! Layout and an example: `docs/model-format-v2.md`.
//!
//! Loading validates everything [`TreeModel::from_parts`] checks (a tree is a
//! tree, indices in range, finite values) and that every name matches the
//! encoding; a file only ever holds complete trees.

use serde::{Deserialize, Serialize};

use crate::error::{ModelFileError, ModelFileProblem};
use crate::features::FeatureSpec;
use crate::metrics::Metrics;
use crate::model_file::MODEL_FORMAT;
use crate::model_file_v2::{MODEL_FILE_VERSION_2, RunProvenance, TargetColumn};
use crate::regression_metrics::RegressionMetrics;
use crate::trees::{Binning, Node, Tree, TreeGrowth, TreeLoss, TreeModel, TreeParams};

/// Value of `model_type` for gradient-boosted trees.
pub const GRADIENT_BOOSTED_TREES: &str = "gradient_boosted_trees";

/// The pooled evaluation of a tree model: binary metrics (log loss) or
/// regression metrics (squared error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TreeMetrics {
    /// Log loss on a binary label.
    Binary(Metrics),
    /// Squared error on a numeric target.
    Regression(RegressionMetrics),
}

/// The settings the trees were grown with (`[trees]` of the run file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSettings {
    /// `log_loss` (binary label) or `squared_error` (numeric target).
    pub objective: String,
    /// Deepest level of a tree (the root is level 0).
    pub max_depth: u32,
    /// Shrinkage of every leaf value.
    pub learning_rate: f64,
    /// L2 regularisation λ of the leaf values.
    pub lambda: f64,
    /// Smallest hessian sum of a child.
    pub min_child_weight: f64,
    /// Smallest gain of a split.
    pub gamma: f64,
    /// Most bins per feature.
    pub bins: u32,
    /// The margin before the first tree.
    pub base_score: f64,
    /// How the trees were grown; absent in files written before it was
    /// recorded, which were all grown from histograms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth: Option<GrowthEntry>,
}

/// How the trees were grown ([`TreeGrowth`]): `{ "kind": "histograms" }` or
/// `{ "kind": "random", "seed": 7 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GrowthEntry {
    /// Best splits from level histograms.
    Histograms,
    /// Data-free random structures drawn from `seed` (record-level DP).
    Random {
        /// The seed of the structures (tree `t`'s from it and `t`).
        seed: u32,
    },
}

impl From<TreeGrowth> for GrowthEntry {
    fn from(growth: TreeGrowth) -> Self {
        match growth {
            TreeGrowth::Histograms => GrowthEntry::Histograms,
            TreeGrowth::Random { seed } => GrowthEntry::Random { seed },
        }
    }
}

impl From<GrowthEntry> for TreeGrowth {
    fn from(entry: GrowthEntry) -> Self {
        match entry {
            GrowthEntry::Histograms => TreeGrowth::Histograms,
            GrowthEntry::Random { seed } => TreeGrowth::Random { seed },
        }
    }
}

/// The bin edges of one encoded feature: bin `b` holds the values in
/// `(edges[b-1], edges[b]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBins {
    /// Entry name from [`FeatureSpec::entry_names`].
    pub feature: String,
    /// Ascending edges.
    pub edges: Vec<f64>,
}

/// One node of a tree: a split (`feature`, `threshold`, `left`, `right`) or a
/// leaf (`leaf`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeNode {
    /// Position in the tree's node list (the root is 0).
    pub id: usize,
    /// A split's encoded feature (entry name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// A split's feature index in the encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_index: Option<usize>,
    /// A split's bin (edge index of the feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<usize>,
    /// Rows with `x[feature] <= threshold` go left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// A split's left child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<usize>,
    /// A split's right child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<usize>,
    /// A leaf's value (added to the margin; already scaled by the learning
    /// rate); for a split, the value it would have as a leaf.
    pub value: f64,
    /// The hessian sum of the node's training rows.
    pub cover: f64,
    /// Whether the node is a leaf.
    pub leaf: bool,
}

/// One tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeNodes {
    /// The nodes, root first.
    pub nodes: Vec<TreeNode>,
}

/// A gradient-boosted-trees model file (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientBoostedTreesFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_FILE_VERSION_2`].
    pub version: u32,
    /// Always [`GRADIENT_BOOSTED_TREES`].
    pub model_type: String,
    /// The predicted column.
    pub target: TargetColumn,
    /// The label value counted as positive (log loss only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_value: Option<String>,
    /// The input encoding the trees split on.
    pub features: FeatureSpec,
    /// How the trees were grown.
    pub settings: TreeSettings,
    /// The federation's bins, one entry per encoded feature.
    pub binning: Vec<FeatureBins>,
    /// The trees, in the order they were grown.
    pub trees: Vec<TreeNodes>,
    /// Where the model came from.
    pub provenance: RunProvenance<TreeMetrics>,
}

fn layout(message: String) -> ModelFileError {
    ModelFileProblem::Layout(message).into()
}

fn objective(loss: TreeLoss) -> &'static str {
    match loss {
        TreeLoss::Logistic => "log_loss",
        TreeLoss::Squared => "squared_error",
    }
}

impl GradientBoostedTreesFile {
    /// Describes `model` (its complete trees) under the given target and
    /// encoding; fails if the model has no binning, its dimension differs
    /// from the encoding's, or anything is invalid.
    pub fn new(
        target: TargetColumn,
        positive_value: Option<String>,
        features: FeatureSpec,
        model: &TreeModel,
        provenance: RunProvenance<TreeMetrics>,
    ) -> Result<Self, ModelFileError> {
        let names = features.entry_names();
        if model.dim() != names.len() {
            return Err(ModelFileProblem::WeightCount {
                weights: model.dim(),
                dim: names.len(),
            }
            .into());
        }
        let Some(binning) = model.binning() else {
            return Err(layout(
                "the tree model has no binning yet (no tree was grown)".into(),
            ));
        };
        let p = model.params();
        let trees = model.trees()[..model.complete_trees()]
            .iter()
            .map(|tree| TreeNodes {
                nodes: tree
                    .nodes()
                    .iter()
                    .enumerate()
                    .map(|(id, node)| node_entry(id, node, &names))
                    .collect(),
            })
            .collect();
        let file = GradientBoostedTreesFile {
            format: MODEL_FORMAT.to_string(),
            version: MODEL_FILE_VERSION_2,
            model_type: GRADIENT_BOOSTED_TREES.to_string(),
            target,
            positive_value,
            settings: TreeSettings {
                objective: objective(model.loss()).to_string(),
                max_depth: p.max_depth,
                learning_rate: p.learning_rate,
                lambda: p.lambda,
                min_child_weight: p.min_child_weight,
                gamma: p.gamma,
                bins: p.max_bins,
                base_score: model.base_score(),
                growth: Some(model.growth().into()),
            },
            binning: names
                .iter()
                .zip(binning.all_edges())
                .map(|(feature, edges)| FeatureBins {
                    feature: feature.clone(),
                    edges: edges.clone(),
                })
                .collect(),
            trees,
            features,
            provenance,
        };
        file.to_model()?;
        Ok(file)
    }

    /// Checks header fields and the trees (by building the model).
    pub fn validate(&self) -> Result<(), ModelFileProblem> {
        self.to_model().map(drop).map_err(|e| match e {
            ModelFileError::Invalid { problem, .. } => problem,
            other => ModelFileProblem::Layout(other.to_string()),
        })
    }

    /// The model the file describes (validated).
    pub fn to_model(&self) -> Result<TreeModel, ModelFileError> {
        if self.format != MODEL_FORMAT {
            return Err(ModelFileProblem::Format {
                found: format!("\"{}\"", self.format),
            }
            .into());
        }
        if self.model_type != GRADIENT_BOOSTED_TREES {
            return Err(layout(format!(
                "model_type is '{}', expected '{GRADIENT_BOOSTED_TREES}'",
                self.model_type
            )));
        }
        let names = self.features.entry_names();
        let loss = match self.settings.objective.as_str() {
            "log_loss" => TreeLoss::Logistic,
            "squared_error" => TreeLoss::Squared,
            other => {
                return Err(layout(format!(
                    "settings.objective is '{other}', expected 'log_loss' or 'squared_error'"
                )));
            }
        };
        if self.binning.len() != names.len() {
            return Err(layout(format!(
                "binning has {} features, the encoding {}",
                self.binning.len(),
                names.len()
            )));
        }
        for (i, (b, name)) in self.binning.iter().zip(&names).enumerate() {
            if &b.feature != name {
                return Err(layout(format!(
                    "binning entry {i} is for '{}', expected '{name}'",
                    b.feature
                )));
            }
        }
        let invalid = |what: String| move |e: crate::LearningError| layout(format!("{what}: {e}"));
        let binning = Binning::new(self.binning.iter().map(|b| b.edges.clone()).collect())
            .map_err(invalid("binning".into()))?;
        let mut trees = Vec::with_capacity(self.trees.len());
        for (t, tree) in self.trees.iter().enumerate() {
            let mut nodes = Vec::with_capacity(tree.nodes.len());
            for (id, n) in tree.nodes.iter().enumerate() {
                nodes.push(node_of(t, id, n, &names)?);
            }
            trees.push(Tree::new(nodes).map_err(invalid(format!("tree {t}")))?);
        }
        let s = &self.settings;
        let params = TreeParams {
            max_depth: s.max_depth,
            learning_rate: s.learning_rate,
            lambda: s.lambda,
            min_child_weight: s.min_child_weight,
            gamma: s.gamma,
            max_bins: s.bins,
        };
        TreeModel::from_parts(
            names.len(),
            loss,
            params,
            s.base_score,
            Some(binning),
            trees,
        )
        .and_then(|m| m.with_growth(s.growth.map_or(TreeGrowth::Histograms, Into::into)))
        .map_err(invalid("trees".into()))
    }
}

fn node_entry(id: usize, node: &Node, names: &[String]) -> TreeNode {
    let mut entry = TreeNode {
        id,
        feature: None,
        feature_index: None,
        bin: None,
        threshold: None,
        left: None,
        right: None,
        value: node.value(),
        cover: node.cover(),
        leaf: true,
    };
    if let Some((feature, bin, threshold, left, right)) = node.split_parts() {
        entry.feature = names.get(feature).cloned();
        entry.feature_index = Some(feature);
        entry.bin = Some(bin);
        entry.threshold = Some(threshold);
        entry.left = Some(left);
        entry.right = Some(right);
        entry.leaf = false;
    }
    entry
}

fn node_of(tree: usize, id: usize, n: &TreeNode, names: &[String]) -> Result<Node, ModelFileError> {
    let at = || format!("tree {tree} node {id}");
    if n.id != id {
        return Err(layout(format!("{}: has id {}", at(), n.id)));
    }
    if n.leaf {
        return Ok(Node::leaf(n.value, n.cover));
    }
    let (Some(feature), Some(bin), Some(threshold), Some(left), Some(right)) =
        (n.feature_index, n.bin, n.threshold, n.left, n.right)
    else {
        return Err(layout(format!(
            "{}: a split needs feature_index, bin, threshold, left and right",
            at()
        )));
    };
    let expected = names.get(feature).ok_or_else(|| {
        layout(format!(
            "{}: feature_index {feature} is outside the encoding's {} entries",
            at(),
            names.len()
        ))
    })?;
    if n.feature.as_deref() != Some(expected.as_str()) {
        return Err(layout(format!(
            "{}: feature is {:?}, expected '{expected}' (entry {feature})",
            at(),
            n.feature
        )));
    }
    Ok(Node::split(
        feature, bin, threshold, left, right, n.value, n.cover,
    ))
}
