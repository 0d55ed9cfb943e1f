//! Histogram-based gradient-boosted trees for horizontally partitioned data,
//! in the style of XGBoost `hist` / LightGBM, with no transport in it.
//!
//! # The protocol this module implements
//!
//! The coordinator holds a [`TreeModel`]; [`TreeModel::request`] says what each
//! client must compute for it, [`local_statistics`] computes that from a
//! client's rows, [`TreeStatistics::add`] pools the clients' answers (in client
//! order) and [`TreeModel::apply`] turns the pooled answer into the next model:
//!
//! 1. **Binning** ([`Request::Sketch`]): while the model has no [`Binning`],
//!    every client sends a [`Sketch`], a fine histogram of each encoded feature
//!    over a fixed grid ([`SKETCH_LO`]..[`SKETCH_HI`] z-units in steps of
//!    `1 / SKETCH_CELLS_PER_UNIT`, plus an under- and an overflow cell). The
//!    pooled sketch gives federated quantiles: at most `max_bins` bins per
//!    feature, edges on fine-grid boundaries (see [`Binning::from_sketch`]).
//!    A one-hot 0/1 column gets exactly one edge (at 0). A run that spends
//!    no privacy budget on the sketch can start from the data-free
//!    [`Binning::standard_normal`] instead (a model built by
//!    [`TreeModel::from_parts`] with that binning asks for levels at once).
//! 2. **Levels** ([`Request::Level`]): for the growing tree's pending nodes
//!    (or the root of a new tree), every client sends [`Histograms`]: per
//!    pending node, per feature, per bin, the sums of gradients and hessians
//!    of its rows that reach that node. [`TreeModel::apply`] decides every
//!    pending node at once (best split by regularised gain, or a leaf); the
//!    children at `max_depth`, or too light to split, become leaves at once,
//!    without another exchange. A tree is complete when it has no pending
//!    node; the next [`Request::Level`] starts a new tree.
//! 3. **Leaves** ([`Request::Leaves`], [`TreeGrowth::Random`] only, the growth
//!    of record-level DP runs): the structure of the next tree is drawn from
//!    the model's seed, without the data ([`TreeModel::next_structure`]);
//!    every client sends [`Histograms`] with one bin per leaf, the sums of
//!    gradients and hessians of its rows in that leaf, and
//!    [`TreeModel::apply`] completes the tree from them. One exchange per
//!    tree.
//!
//! Gradients are those of the margin of the *complete* trees: binary log loss
//! ([`TreeLoss::Logistic`], 0/1 labels: `g = p - y`, `h = p (1 - p)`) or
//! squared error ([`TreeLoss::Squared`]: `g = margin - y`, `h = 1`). The base
//! score is 0 (margin 0, probability 1/2): the first trees fit the offset.
//!
//! A client that answers every level keeps a [`LocalCache`] and calls
//! [`local_statistics_cached`]: each complete tree is then summed into its
//! rows' margin once, not at every level.
//!
//! Because every step is a sum over rows followed by a deterministic decision,
//! the federated model equals the model [`train_pooled`] trains in one process
//! on the pooled rows, up to the rounding of the sums (tested to 1e-9).
//!
//! # Differential privacy
//!
//! Under record-level DP one record changes a [`Sketch`] by one count per
//! feature, level [`Histograms`] by one `(g, h)` pair per feature (in one
//! node) and leaf sums by one `(g, h)` pair (in one leaf); [`sensitivity`]
//! gives the L2 bound of that change with [`GradBound`]'s clipping, and
//! [`TreeStatistics::add_gaussian_noise`] adds the noise. The decisions of
//! [`TreeModel::apply`] are post-processing and stay finite on noisy sums
//! (see there; the leaves of random trees by [`private_leaf_value`]). The
//! `rows` count carried by the statistics is metadata, never used by `apply`
//! and not part of the noised release.
//!
//! Level histograms are a poor release under DP: their sensitivity grows
//! with `sqrt(dim)`, and a split's sums are cumulative over bins, so their
//! noise drowns the gains and the leaf values (Telco, 45 inputs, ε = 1: AUC
//! ~0.70). A DP run therefore uses [`TreeGrowth::Random`]: data-free bins,
//! data-free structures, and the budget spent on the leaves only.
//!
//! # Explanations
//!
//! [`tree_shap`] gives exact path-dependent TreeSHAP values (Lundberg et al.
//! 2018, algorithm 2) per encoded feature, with the nodes' covers as weights.
//!
//! # Layout
//!
//! [`TreeModel::to_flat`] / [`TreeModel::from_flat`] give the model as one
//! flat `f64` vector (documented at [`TreeModel::to_flat`]), the form in
//! which it travels and is checkpointed.

mod binning;
mod model;
mod shap;
mod stats;
mod tree;

#[cfg(test)]
mod tests;

pub use binning::{
    Binning, SKETCH_CELLS, SKETCH_CELLS_PER_UNIT, SKETCH_HI, SKETCH_LO, Sketch, sketch_cell,
    sketch_cell_upper,
};
pub use model::{
    FEATURE_EXPLORATION, FLAT_LAYOUT_VERSION, FLAT_LAYOUT_VERSION_RANDOM, MAX_LEAF_STEP, MIN_COVER,
    NOISE_SHRINKAGE, PRIOR_SPLITS, Request, TreeGrowth, TreeModel, private_leaf_value,
};
pub use shap::tree_shap;
pub use stats::{
    Histograms, LocalCache, TreeStatistics, local_statistics, local_statistics_cached,
};
pub use tree::{Node, NodeKind, Tree};

use ndarray::{ArrayView1, ArrayView2};

use crate::error::LearningError;

/// Hyperparameters of gradient boosting (XGBoost names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    /// Maximum depth of a tree (the root is at depth 0), `1..=12`.
    pub max_depth: u32,
    /// Shrinkage of every leaf value, in `(0, 1]`.
    pub learning_rate: f64,
    /// L2 regularisation `λ` of the leaf values, `>= 0`.
    pub lambda: f64,
    /// Minimum hessian sum of each child of a split, `>= 0`.
    pub min_child_weight: f64,
    /// Minimum gain of a split (`γ`), `>= 0`.
    pub gamma: f64,
    /// Maximum number of bins per feature, `2..=256` (run-file key `bins`).
    pub max_bins: u32,
}

impl Default for TreeParams {
    /// Depth 6, learning rate 0.1, λ 1, `min_child_weight` 1, γ 0, 64 bins.
    fn default() -> Self {
        TreeParams {
            max_depth: 6,
            learning_rate: 0.1,
            lambda: 1.0,
            min_child_weight: 1.0,
            gamma: 0.0,
            max_bins: 64,
        }
    }
}

/// Largest admissible `max_depth`.
pub const MAX_DEPTH: u32 = 12;
/// Largest admissible `max_bins` (bin indices fit a `u8`).
pub const MAX_BINS: u32 = 256;

impl TreeParams {
    /// Checks every range; the error names the run-file key (`max_depth`,
    /// `learning_rate`, `lambda`, `min_child_weight`, `gamma`, `bins`).
    pub fn validate(&self) -> Result<(), LearningError> {
        let invalid = |field, value: String, requirement| {
            Err(LearningError::InvalidParam {
                field,
                value,
                requirement,
            })
        };
        if !(1..=MAX_DEPTH).contains(&self.max_depth) {
            return invalid(
                "max_depth",
                self.max_depth.to_string(),
                "an integer in 1..=12",
            );
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return invalid("learning_rate", self.learning_rate.to_string(), "in (0, 1]");
        }
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return invalid("lambda", self.lambda.to_string(), "non-negative and finite");
        }
        if !(self.min_child_weight >= 0.0 && self.min_child_weight.is_finite()) {
            return invalid(
                "min_child_weight",
                self.min_child_weight.to_string(),
                "non-negative and finite",
            );
        }
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return invalid("gamma", self.gamma.to_string(), "non-negative and finite");
        }
        if !(2..=MAX_BINS).contains(&self.max_bins) {
            return invalid("bins", self.max_bins.to_string(), "an integer in 2..=256");
        }
        Ok(())
    }

    /// The leaf value of a node with gradient sum `g` and hessian sum `h`:
    /// `-learning_rate * g / (h + λ)`, or 0 when `h + λ <= 0` (possible on
    /// noisy sums) or the quotient is not finite.
    pub fn leaf_value(&self, g: f64, h: f64) -> f64 {
        let denominator = h + self.lambda;
        if denominator <= 0.0 {
            return 0.0;
        }
        let value = -self.learning_rate * g / denominator;
        if value.is_finite() { value } else { 0.0 }
    }
}

/// The loss that the trees minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeLoss {
    /// Binary log loss on 0/1 labels; the margin is a logit.
    Logistic,
    /// Squared error on a numeric target; the margin is the prediction.
    Squared,
}

impl TreeLoss {
    /// Code in the flat layout: 0 logistic, 1 squared.
    pub fn code(self) -> u32 {
        match self {
            TreeLoss::Logistic => 0,
            TreeLoss::Squared => 1,
        }
    }

    /// The loss of a flat-layout code.
    pub fn from_code(code: u32) -> Option<TreeLoss> {
        match code {
            0 => Some(TreeLoss::Logistic),
            1 => Some(TreeLoss::Squared),
            _ => None,
        }
    }
}

/// Per-record bounds on `(gradient, hessian)` for record-level DP.
///
/// Logistic loss already has `g` in `[-1, 1]` and `h` in `[0, 1/4]`; squared
/// error has `h = 1` and an unbounded `g`, which is clipped to
/// `[-grad_clip, grad_clip]`. A `grad_clip` below 1 clips logistic gradients too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradBound {
    /// The bound on `|g|`; positive and finite.
    pub grad_clip: f64,
}

impl GradBound {
    /// Checks that `grad_clip` is positive and finite (error field `grad_clip`).
    pub fn validate(&self) -> Result<(), LearningError> {
        if self.grad_clip > 0.0 && self.grad_clip.is_finite() {
            Ok(())
        } else {
            Err(LearningError::InvalidParam {
                field: "grad_clip",
                value: self.grad_clip.to_string(),
                requirement: "positive and finite",
            })
        }
    }
}

/// The largest `|g|` and `h` of one record under `loss` and `bound`
/// (`|g|` is infinite for squared error without a bound).
pub fn gradient_bounds(loss: TreeLoss, bound: Option<GradBound>) -> (f64, f64) {
    let clip = bound.map_or(f64::INFINITY, |b| b.grad_clip);
    match loss {
        TreeLoss::Logistic => (clip.min(1.0), 0.25),
        TreeLoss::Squared => (clip, 1.0),
    }
}

/// L2 sensitivity of one record's contribution to the release that
/// `model.request()` asks for: `sqrt(dim)` for a [`Request::Sketch`] (one count
/// per feature), `sqrt(dim * (gmax^2 + hmax^2))` for a [`Request::Level`] (one
/// `(g, h)` pair per feature, in one node), `sqrt(gmax^2 + hmax^2)` for a
/// [`Request::Leaves`] (one `(g, h)` pair, in the one leaf the record reaches),
/// with the bounds of [`gradient_bounds`]. Infinite for squared error without
/// a [`GradBound`].
pub fn sensitivity(model: &TreeModel, bound: Option<GradBound>) -> f64 {
    let dim = model.dim() as f64;
    let (g, h) = gradient_bounds(model.loss(), bound);
    match model.request() {
        Request::Sketch => dim.sqrt(),
        Request::Level { .. } => (dim * (g * g + h * h)).sqrt(),
        Request::Leaves { .. } => (g * g + h * h).sqrt(),
    }
}

/// The in-process reference: trains `trees` trees on all of `x`, `y` with
/// exactly the functions of the federated protocol ([`local_statistics`] on
/// all rows, through a [`LocalCache`], then [`TreeModel::apply`]), without
/// noise or clipping.
pub fn train_pooled(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    loss: TreeLoss,
    params: TreeParams,
    trees: u32,
) -> Result<TreeModel, LearningError> {
    let mut model = TreeModel::new(x.ncols(), loss, params)?;
    let mut cache = LocalCache::new();
    // One exchange for the binning, then at most `max_depth` per tree.
    let max_steps = 1 + trees as usize * params.max_depth as usize;
    for _ in 0..max_steps {
        if model.binning().is_some() && model.complete_trees() >= trees as usize {
            break;
        }
        let stats = local_statistics_cached(&model, x, y, None, &mut cache)?;
        model = model.apply(&stats)?;
    }
    Ok(model)
}

/// The error of a malformed tree model, binning or statistics: one sentence
/// naming what is wrong. (It is `LearningError::InconsistentSummary` until the
/// error type gets a variant of its own.)
pub(crate) fn tree_error(reason: String) -> LearningError {
    LearningError::InconsistentSummary { reason }
}
