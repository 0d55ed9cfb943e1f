//! The boosted model: its parameters, the agreed binning and the trees, the
//! last of which may still be growing.

use ndarray::{Array1, ArrayView1, ArrayView2};

use crate::error::LearningError;
use crate::model::{check_features, sigmoid};

use super::binning::Binning;
use super::stats::{Histograms, TreeStatistics};
use super::tree::{Node, NodeKind, Tree};
use super::{MAX_DEPTH, TreeLoss, TreeParams, tree_error};

/// Version of the flat layout written by [`TreeModel::to_flat`] for a model
/// grown from level histograms ([`TreeGrowth::Histograms`]).
pub const FLAT_LAYOUT_VERSION: u32 = 1;
/// Version of the flat layout of a model with [`TreeGrowth::Random`]: version
/// 1 with the growth code and the seed after the base score.
pub const FLAT_LAYOUT_VERSION_RANDOM: u32 = 2;

/// How the trees of a model are grown.
///
/// [`TreeGrowth::Histograms`] is gradient boosting as in XGBoost `hist`: one
/// exchange of level histograms per depth. [`TreeGrowth::Random`] is for
/// record-level DP, where the noise of level histograms (one `(g, h)` pair
/// per *feature* for each record, sensitivity `sqrt(dim (g² + h²))`) drowns
/// the split gains: each tree's structure is drawn at random, independently
/// of the data ([`TreeModel::next_structure`]), and only its leaves' gradient
/// and hessian sums are released ([`Request::Leaves`], one `(g, h)` pair per
/// record, sensitivity `sqrt(g² + h²)`), one release per tree (the
/// "totally random" trees of Maddock et al., *Federated Boosted Decision
/// Trees with Differential Privacy*, CCS 2022).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeGrowth {
    /// Best splits by gain from level histograms, a level per exchange.
    Histograms,
    /// Data-independent random structures, one leaf exchange per tree.
    Random {
        /// Seeds every structure (tree `t`'s from `seed` and `t`).
        seed: u32,
    },
}

/// What a client must compute for the model as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The fine [`super::Sketch`] of every feature (no binning yet).
    Sketch,
    /// [`Histograms`] for this many pending nodes of the growing tree, in node
    /// order (1 for the root of a new tree).
    Level {
        /// Number of pending nodes.
        nodes: usize,
    },
    /// [`Histograms`] with one bin per leaf of [`TreeModel::next_structure`]
    /// (leaves in node order): the gradient and hessian sums of the rows
    /// that reach each leaf ([`TreeGrowth::Random`] only).
    Leaves {
        /// Number of leaves.
        leaves: usize,
    },
}

/// A gradient-boosted tree model (see the module doc of [`super`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeModel {
    dim: usize,
    loss: TreeLoss,
    params: TreeParams,
    base_score: f64,
    binning: Option<Binning>,
    trees: Vec<Tree>,
    growth: TreeGrowth,
}

impl TreeModel {
    /// A model with no binning and no tree, base score 0.
    pub fn new(dim: usize, loss: TreeLoss, params: TreeParams) -> Result<TreeModel, LearningError> {
        TreeModel::from_parts(dim, loss, params, 0.0, None, Vec::new())
    }

    /// A model from its parts, checked: valid `params`, `dim >= 1`, a finite
    /// base score; the binning (if any) has `dim` features and at most
    /// `max_bins` bins each; no tree without a binning; every split's feature
    /// below `dim`, its bin an edge index of that feature and its threshold
    /// that edge; no node deeper than 12; pending nodes only in the last tree,
    /// above `max_depth`.
    pub fn from_parts(
        dim: usize,
        loss: TreeLoss,
        params: TreeParams,
        base_score: f64,
        binning: Option<Binning>,
        trees: Vec<Tree>,
    ) -> Result<TreeModel, LearningError> {
        params.validate()?;
        if dim == 0 {
            return Err(LearningError::InvalidParam {
                field: "dim",
                value: "0".to_string(),
                requirement: "at least 1 encoded feature",
            });
        }
        if !base_score.is_finite() {
            return Err(tree_error(format!(
                "tree model: base score is not finite: {base_score}"
            )));
        }
        match &binning {
            None if !trees.is_empty() => {
                return Err(tree_error(format!(
                    "tree model: {} trees but no binning",
                    trees.len()
                )));
            }
            None => {}
            Some(b) => {
                if b.features() != dim {
                    return Err(tree_error(format!(
                        "tree model: the binning has {} features but the model has {dim}",
                        b.features()
                    )));
                }
                if let Some(f) = (0..dim).find(|&f| b.bins(f) > params.max_bins as usize) {
                    return Err(tree_error(format!(
                        "tree model: feature {f} has {} bins but bins = {}",
                        b.bins(f),
                        params.max_bins
                    )));
                }
            }
        }
        for (t, tree) in trees.iter().enumerate() {
            check_tree(
                tree,
                t,
                t + 1 == trees.len(),
                dim,
                &params,
                binning.as_ref(),
            )?;
        }
        Ok(TreeModel {
            dim,
            loss,
            params,
            base_score,
            binning,
            trees,
            growth: TreeGrowth::Histograms,
        })
    }

    /// The same model with its trees grown by `growth` from now on.
    /// [`TreeGrowth::Random`] needs the binning (there is no sketch
    /// exchange) and no growing tree.
    pub fn with_growth(mut self, growth: TreeGrowth) -> Result<TreeModel, LearningError> {
        if let TreeGrowth::Random { .. } = growth {
            if self.binning.is_none() {
                return Err(tree_error(
                    "tree model: random tree growth needs the binning from the start".to_string(),
                ));
            }
            if self.growing().is_some() {
                return Err(tree_error(
                    "tree model: random tree growth cannot continue a growing tree".to_string(),
                ));
            }
        }
        self.growth = growth;
        Ok(self)
    }

    /// How the trees are grown.
    pub fn growth(&self) -> TreeGrowth {
        self.growth
    }

    /// Number of encoded features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The loss.
    pub fn loss(&self) -> TreeLoss {
        self.loss
    }

    /// The hyperparameters.
    pub fn params(&self) -> &TreeParams {
        &self.params
    }

    /// The margin before any tree (0 for models trained here).
    pub fn base_score(&self) -> f64 {
        self.base_score
    }

    /// The agreed binning, once the sketch is applied.
    pub fn binning(&self) -> Option<&Binning> {
        self.binning.as_ref()
    }

    /// All trees, the last possibly growing.
    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// The number of complete trees (those the margin sums).
    pub fn complete_trees(&self) -> usize {
        match self.trees.last() {
            Some(last) if !last.is_complete() => self.trees.len() - 1,
            _ => self.trees.len(),
        }
    }

    /// The growing tree, if the last tree has pending nodes.
    pub fn growing(&self) -> Option<&Tree> {
        self.trees.last().filter(|t| !t.is_complete())
    }

    /// What the clients must compute next: a sketch while there is no binning;
    /// otherwise the histograms of the growing tree's pending nodes, or of the
    /// root of a new tree; under [`TreeGrowth::Random`], the leaf sums of
    /// [`TreeModel::next_structure`].
    pub fn request(&self) -> Request {
        if self.binning.is_none() {
            return Request::Sketch;
        }
        if let Some(structure) = self.next_structure() {
            return Request::Leaves {
                leaves: structure.pending().len(),
            };
        }
        match self.growing() {
            Some(tree) => Request::Level {
                nodes: tree.pending().len(),
            },
            None => Request::Level { nodes: 1 },
        }
    }

    /// The structure of the next tree under [`TreeGrowth::Random`] (`None`
    /// otherwise): its leaves are pending nodes (value 0, cover 1), its
    /// splits drawn from a SplitMix64 stream seeded by the seed and the
    /// number of trees so far, breadth first: a node above `max_depth`
    /// splits on a feature drawn among those that still have an edge
    /// strictly inside the node's range of bins (none: it stays a leaf),
    /// with probabilities proportional to [`feature_weights`] of the
    /// complete trees (uniform for the first tree), at an edge drawn
    /// uniformly in that range. It depends on the seed and the model only:
    /// on the data only through the leaf sums already released (so
    /// coordinator and clients draw the same structure from the model they
    /// share, and drawing it is post-processing).
    pub fn next_structure(&self) -> Option<Tree> {
        let TreeGrowth::Random { seed } = self.growth else {
            return None;
        };
        let binning = self.binning.as_ref()?;
        let weights = feature_weights(&self.trees[..self.complete_trees()], self.dim);
        random_structure(
            binning,
            self.params.max_depth,
            seed,
            self.trees.len(),
            &weights,
        )
        .ok()
    }

    /// Whether a round (one tree) is over: the binning is agreed, there is at
    /// least one tree and the last one is complete.
    pub fn round_done(&self) -> bool {
        self.binning.is_some() && !self.trees.is_empty() && self.growing().is_none()
    }

    /// The margin of each row: base score plus the leaf values of the complete
    /// trees (a logit for logistic loss).
    pub fn margin(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, LearningError> {
        check_features(x, self.dim)?;
        let x = x.as_standard_layout();
        let mut margin = Array1::from_elem(x.nrows(), self.base_score);
        let Some(flat) = x.as_slice() else {
            return Err(tree_error(
                "tree model: the feature matrix could not be laid out by rows".to_string(),
            ));
        };
        let trees = &self.trees[..self.complete_trees()];
        for (m, row) in margin.iter_mut().zip(flat.chunks_exact(self.dim)) {
            for tree in trees {
                *m += tree.predict_row(row);
            }
        }
        Ok(margin)
    }

    /// The probability of label 1 (logistic loss) or the predicted value
    /// (squared error) of each row.
    pub fn predict(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, LearningError> {
        let margin = self.margin(x)?;
        Ok(match self.loss {
            TreeLoss::Logistic => margin.mapv(sigmoid),
            TreeLoss::Squared => margin,
        })
    }

    /// The margin of one row (complete trees).
    pub fn margin_row(&self, row: ArrayView1<f64>) -> Result<f64, LearningError> {
        Ok(self.margin(row.insert_axis(ndarray::Axis(0)))?[0])
    }

    /// Checks pooled or received statistics against [`TreeModel::request`]:
    /// the right kind, the right shape (features, nodes, bins), finite
    /// numbers, and, when no noise was added, counts and hessian sums
    /// non-negative.
    pub fn check_statistics(&self, s: &TreeStatistics) -> Result<(), LearningError> {
        match (self.request(), s) {
            (Request::Sketch, TreeStatistics::Sketch(sketch)) => {
                if sketch.dim() != self.dim {
                    return Err(tree_error(format!(
                        "tree statistics: the sketch has {} features but the model has {}",
                        sketch.dim(),
                        self.dim
                    )));
                }
                check_finite("sketch count", sketch.counts(), sketch.noise_std() == 0.0)
            }
            (Request::Level { nodes }, TreeStatistics::Level(h)) => {
                let total_bins = self.binning.as_ref().map_or(0, Binning::total_bins);
                check_histograms(
                    h,
                    nodes,
                    total_bins,
                    &format!("{nodes} nodes × {total_bins} bins"),
                )
            }
            (Request::Leaves { leaves }, TreeStatistics::Level(h)) => check_histograms(
                h,
                leaves,
                1,
                &format!("the sums of {leaves} leaves (one bin each)"),
            ),
            (Request::Leaves { leaves }, TreeStatistics::Sketch(_)) => Err(tree_error(format!(
                "tree statistics: the model asks for the sums of {leaves} leaves but got a feature sketch"
            ))),
            (Request::Sketch, TreeStatistics::Level(_)) => Err(tree_error(
                "tree statistics: the model asks for a feature sketch but got level histograms"
                    .to_string(),
            )),
            (Request::Level { nodes }, TreeStatistics::Sketch(_)) => Err(tree_error(format!(
                "tree statistics: the model asks for the histograms of {nodes} nodes but got a feature sketch"
            ))),
        }
    }

    /// This model's settings and growth with other `binning` and `trees`
    /// (checked as [`TreeModel::from_parts`] checks them).
    fn with_parts(
        &self,
        binning: Option<Binning>,
        trees: Vec<Tree>,
    ) -> Result<TreeModel, LearningError> {
        TreeModel::from_parts(
            self.dim,
            self.loss,
            self.params,
            self.base_score,
            binning,
            trees,
        )?
        .with_growth(self.growth)
    }

    /// The next model from the pooled statistics of [`TreeModel::request`].
    ///
    /// A sketch sets the binning ([`Binning::from_sketch`]). Histograms decide
    /// every pending node of the growing tree (a new root if none grows), in
    /// node order. For a node at depth `d < max_depth`, the best split over all
    /// features `f` and bins `b` (left: bins `<= b`) maximises
    /// `0.5 (GL²/(HL+λ) + GR²/(HR+λ) - G²/(H+λ)) - γ` among those with
    /// `HL, HR >= min_child_weight` and `HL, HR > 0`, `G, H` the feature's
    /// totals; ties go to the lowest feature, then the lowest bin. It splits
    /// if that gain is positive. Its children get value
    /// [`TreeParams::leaf_value`]`(GL, HL)` (resp. `GR, HR`) and cover `HL`
    /// (resp. `HR`); a child at `max_depth`, or with cover below
    /// `2 min_child_weight`, is a leaf at once, the others are pending. A node
    /// that does not split becomes a leaf with the value it has. The root's
    /// `G, H` are the means over features of the per-feature totals.
    ///
    /// Robust to noisy sums: a feature with `H + λ <= 0` is skipped, a
    /// non-finite gain never wins, a leaf value with `H + λ <= 0` is 0 (see
    /// [`TreeParams::leaf_value`]), a negative root cover is read as 0; every
    /// value stays finite.
    pub fn apply(&self, pooled: &TreeStatistics) -> Result<TreeModel, LearningError> {
        self.check_statistics(pooled)?;
        match pooled {
            TreeStatistics::Sketch(sketch) => {
                let binning = Binning::from_sketch(sketch, self.params.max_bins)?;
                self.with_parts(Some(binning), self.trees.clone())
            }
            TreeStatistics::Level(h) => match self.next_structure() {
                Some(structure) => self.apply_leaves(structure, h),
                None => self.apply_level(h),
            },
        }
    }

    /// Completes [`TreeModel::next_structure`] from its leaves' pooled sums:
    /// each leaf gets [`private_leaf_value`] and cover `max(H, 0)` (at least
    /// [`MIN_COVER`], so that TreeSHAP's weights stay defined); a split gets
    /// the sums of its children and the value and cover they give.
    fn apply_leaves(&self, structure: Tree, h: &Histograms) -> Result<TreeModel, LearningError> {
        let mut nodes = structure.into_nodes();
        let mut sums = vec![(0.0, 0.0); nodes.len()];
        let pending: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].is_pending())
            .collect();
        let p = &self.params;
        for (k, &id) in pending.iter().enumerate() {
            let (g, hs) = (h.grad()[k], h.hess()[k]);
            sums[id] = (g, hs);
            let value = private_leaf_value(p, g, hs, h.noise_std());
            nodes[id] = Node::leaf(value, hs.max(0.0).max(MIN_COVER));
        }
        // Children come after their parents: sum them up in reverse order.
        for id in (0..nodes.len()).rev() {
            if let Some((feature, bin, threshold, left, right)) = nodes[id].split_parts() {
                let g = sums[left].0 + sums[right].0;
                let hs = sums[left].1 + sums[right].1;
                sums[id] = (g, hs);
                let cover = nodes[left].cover() + nodes[right].cover();
                let value = private_leaf_value(p, g, hs, h.noise_std());
                nodes[id] = Node::split(feature, bin, threshold, left, right, value, cover);
            }
        }
        let mut trees = self.trees.clone();
        trees.push(Tree::new(nodes)?);
        self.with_parts(self.binning.clone(), trees)
    }

    fn apply_level(&self, h: &Histograms) -> Result<TreeModel, LearningError> {
        let Some(binning) = self.binning.as_ref() else {
            return Err(tree_error(
                "tree model: histograms applied before the binning".to_string(),
            ));
        };
        let mut trees = self.trees.clone();
        let (mut nodes, mut depths) = match trees.last() {
            Some(last) if !last.is_complete() => {
                let depths: Vec<u32> = (0..last.nodes().len()).map(|i| last.depth(i)).collect();
                let tree = trees.pop().unwrap_or_else(|| unreachable!());
                (tree.into_nodes(), depths)
            }
            _ => (vec![Node::pending(0.0, 0.0)], vec![0]),
        };
        let pending: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].is_pending())
            .collect();
        let p = &self.params;
        let bins_per_node = binning.total_bins();
        for (k, &id) in pending.iter().enumerate() {
            let grad = &h.grad()[k * bins_per_node..(k + 1) * bins_per_node];
            let hess = &h.hess()[k * bins_per_node..(k + 1) * bins_per_node];
            if id == 0 {
                let (g, hs) = mean_totals(grad, hess, self.dim);
                nodes[0] = Node::pending(p.leaf_value(g, hs), hs.max(0.0));
            }
            let node = nodes[id];
            let depth = depths[id];
            let best = if depth < p.max_depth {
                best_split(binning, grad, hess, p)
            } else {
                None
            };
            match best {
                Some(split) => {
                    let left = nodes.len();
                    let child_leaf =
                        |cover: f64| depth + 1 >= p.max_depth || cover < 2.0 * p.min_child_weight;
                    for (g, hs) in [(split.gl, split.hl), (split.gr, split.hr)] {
                        let value = p.leaf_value(g, hs);
                        nodes.push(if child_leaf(hs) {
                            Node::leaf(value, hs)
                        } else {
                            Node::pending(value, hs)
                        });
                        depths.push(depth + 1);
                    }
                    nodes[id] = Node::split(
                        split.feature,
                        split.bin,
                        binning.edges(split.feature)[split.bin],
                        left,
                        left + 1,
                        node.value(),
                        node.cover(),
                    );
                }
                None => nodes[id] = Node::leaf(node.value(), node.cover()),
            }
        }
        trees.push(Tree::new(nodes)?);
        self.with_parts(self.binning.clone(), trees)
    }

    /// The model as one flat vector (layout version [`FLAT_LAYOUT_VERSION`]):
    ///
    /// ```text
    /// [0] layout version (1)      [1] dim            [2] loss (0 logistic, 1 squared)
    /// [3] max_depth  [4] learning_rate  [5] lambda  [6] min_child_weight  [7] gamma  [8] max_bins
    /// [9] base_score
    /// [10] binning present (0 or 1); if 1, per feature f = 0..dim:
    ///      n_edges_f, then the n_edges_f edges ascending
    /// then n_trees; per tree: n_nodes, then per node 7 values:
    ///      feature (-1 leaf, -2 pending), bin (-1 unless a split),
    ///      threshold (0 unless a split), left (-1 unless a split),
    ///      right (-1 unless a split), value, cover
    /// ```
    ///
    /// Counts and indices are exact integers. A model with
    /// [`TreeGrowth::Random`] is written in layout version
    /// [`FLAT_LAYOUT_VERSION_RANDOM`] (2): the same, with `[10]` the growth
    /// code (1, random) and `[11]` the seed inserted before the binning flag.
    pub fn to_flat(&self) -> Array1<f64> {
        let p = &self.params;
        let version = match self.growth {
            TreeGrowth::Histograms => FLAT_LAYOUT_VERSION,
            TreeGrowth::Random { .. } => FLAT_LAYOUT_VERSION_RANDOM,
        };
        let mut out = vec![
            f64::from(version),
            self.dim as f64,
            f64::from(self.loss.code()),
            f64::from(p.max_depth),
            p.learning_rate,
            p.lambda,
            p.min_child_weight,
            p.gamma,
            f64::from(p.max_bins),
            self.base_score,
        ];
        if let TreeGrowth::Random { seed } = self.growth {
            out.extend_from_slice(&[1.0, f64::from(seed)]);
        }
        match &self.binning {
            None => out.push(0.0),
            Some(b) => {
                out.push(1.0);
                for edges in b.all_edges() {
                    out.push(edges.len() as f64);
                    out.extend_from_slice(edges);
                }
            }
        }
        out.push(self.trees.len() as f64);
        for tree in &self.trees {
            out.push(tree.nodes().len() as f64);
            for node in tree.nodes() {
                let (feature, bin, threshold, left, right) = match *node.kind() {
                    NodeKind::Split { .. } => {
                        let (f, b, t, l, r) = node.split_parts().unwrap_or_default();
                        (f as f64, b as f64, t, l as f64, r as f64)
                    }
                    NodeKind::Leaf => (-1.0, -1.0, 0.0, -1.0, -1.0),
                    NodeKind::Pending => (-2.0, -1.0, 0.0, -1.0, -1.0),
                };
                out.extend_from_slice(&[
                    feature,
                    bin,
                    threshold,
                    left,
                    right,
                    node.value(),
                    node.cover(),
                ]);
            }
        }
        Array1::from(out)
    }

    /// Reads [`TreeModel::to_flat`]'s layout; every count, index and value is
    /// checked (then the model as in [`TreeModel::from_parts`]), and the error
    /// names the position and the field that is wrong.
    pub fn from_flat(p: ArrayView1<f64>) -> Result<TreeModel, LearningError> {
        let values: Vec<f64> = p.iter().copied().collect();
        let mut r = FlatReader {
            values: &values,
            at: 0,
        };
        let version = r.int("the layout version", 0, u32::MAX as usize)?;
        if version != FLAT_LAYOUT_VERSION as usize && version != FLAT_LAYOUT_VERSION_RANDOM as usize
        {
            return Err(tree_error(format!(
                "flat tree model: layout version {version} is not supported (this build reads versions {FLAT_LAYOUT_VERSION} and {FLAT_LAYOUT_VERSION_RANDOM})"
            )));
        }
        let dim = r.int("dim", 1, usize::MAX >> 8)?;
        let loss_code = r.int("the loss", 0, 1)?;
        let loss = TreeLoss::from_code(loss_code as u32).unwrap_or(TreeLoss::Logistic);
        let params = TreeParams {
            max_depth: r.int("max_depth", 1, MAX_DEPTH as usize)? as u32,
            learning_rate: r.number("learning_rate")?,
            lambda: r.number("lambda")?,
            min_child_weight: r.number("min_child_weight")?,
            gamma: r.number("gamma")?,
            max_bins: r.int("max_bins", 2, super::MAX_BINS as usize)? as u32,
        };
        let base_score = r.number("base_score")?;
        let growth = if version == FLAT_LAYOUT_VERSION_RANDOM as usize {
            r.int("the growth code", 1, 1)?;
            TreeGrowth::Random {
                seed: r.int("the seed", 0, u32::MAX as usize)? as u32,
            }
        } else {
            TreeGrowth::Histograms
        };
        let binning = if r.int("the binning flag", 0, 1)? == 1 {
            let mut edges = Vec::with_capacity(dim.min(values.len()));
            for f in 0..dim {
                let n = r.int_of(
                    || format!("the edge count of feature {f}"),
                    0,
                    params.max_bins as usize - 1,
                )?;
                let mut e = Vec::with_capacity(n);
                for i in 0..n {
                    e.push(r.number_of(|| format!("edge {i} of feature {f}"))?);
                }
                edges.push(e);
            }
            Some(Binning::new(edges)?)
        } else {
            None
        };
        let n_trees = r.int("the tree count", 0, values.len())?;
        let mut trees = Vec::with_capacity(n_trees);
        for t in 0..n_trees {
            let n_nodes = r.int_of(|| format!("the node count of tree {t}"), 1, values.len())?;
            let mut nodes = Vec::with_capacity(n_nodes);
            for i in 0..n_nodes {
                let at = |field: &str| format!("{field} of node {i} of tree {t}");
                let feature = r.signed_of(|| at("the feature"), -2, dim as i64 - 1)?;
                let bin = r.signed_of(|| at("the bin"), -1, super::MAX_BINS as i64)?;
                let threshold = r.number_of(|| at("the threshold"))?;
                let left = r.signed_of(|| at("the left child"), -1, n_nodes as i64 - 1)?;
                let right = r.signed_of(|| at("the right child"), -1, n_nodes as i64 - 1)?;
                let value = r.number_of(|| at("the value"))?;
                let cover = r.number_of(|| at("the cover"))?;
                let node = if feature >= 0 {
                    if bin < 0 || left < 0 || right < 0 {
                        return Err(tree_error(format!(
                            "flat tree model: node {i} of tree {t} splits on feature {feature} but has bin {bin}, children {left} and {right}"
                        )));
                    }
                    Node::split(
                        feature as usize,
                        bin as usize,
                        threshold,
                        left as usize,
                        right as usize,
                        value,
                        cover,
                    )
                } else {
                    if bin != -1 || left != -1 || right != -1 || threshold != 0.0 {
                        return Err(tree_error(format!(
                            "flat tree model: node {i} of tree {t} is a {} but has bin {bin}, threshold {threshold}, children {left} and {right} (expected -1, 0, -1, -1)",
                            if feature == -1 {
                                "leaf"
                            } else {
                                "pending node"
                            }
                        )));
                    }
                    if feature == -1 {
                        Node::leaf(value, cover)
                    } else {
                        Node::pending(value, cover)
                    }
                };
                nodes.push(node);
            }
            let tree = Tree::new(nodes).map_err(|e| in_tree(t, e))?;
            trees.push(tree);
        }
        if r.at != values.len() {
            return Err(tree_error(format!(
                "flat tree model: {} values after the last tree (the layout ends at value {})",
                values.len() - r.at,
                r.at
            )));
        }
        TreeModel::from_parts(dim, loss, params, base_score, binning, trees)?.with_growth(growth)
    }
}

/// The smallest cover of a leaf of a random tree (a noisy hessian sum may be
/// 0 or negative; TreeSHAP weighs children by their covers).
pub const MIN_COVER: f64 = 1e-6;

/// Largest `|value|` of a leaf of a random tree, in units of the learning
/// rate (a margin step of at most `4 · learning_rate`).
pub const MAX_LEAF_STEP: f64 = 4.0;

/// How many noise stds [`private_leaf_value`] adds to a leaf's hessian sum.
pub const NOISE_SHRINKAGE: f64 = 1.5;

/// The leaf value of a random tree from noisy sums `g`, `h` whose noise has
/// std `noise_std` (public: it follows from σ, not from the data):
/// `-learning_rate · g / (max(h, 0) + λ + NOISE_SHRINKAGE · noise_std)`,
/// clamped to `±MAX_LEAF_STEP · learning_rate`. Shrinking by the noise std
/// keeps a leaf that few rows reach (its `h` mostly noise) near 0;
/// post-processing of the release, it costs no privacy.
pub fn private_leaf_value(params: &TreeParams, g: f64, h: f64, noise_std: f64) -> f64 {
    let denominator = h.max(0.0) + params.lambda + NOISE_SHRINKAGE * noise_std;
    if denominator.is_nan() || denominator <= 0.0 {
        return 0.0;
    }
    let step = MAX_LEAF_STEP * params.learning_rate;
    let value = (-params.learning_rate * g / denominator).clamp(-step, step);
    if value.is_finite() { value } else { 0.0 }
}

/// A SplitMix64 stream (Steele et al. 2014): the same numbers on every
/// platform and build, so that a client and the coordinator draw the same
/// structure.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, on a grid of `2^-53`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One of `items` (not empty), drawn with probability proportional to
    /// `weights[item]` (positive); uniformly (by [`SplitMix64::below`]) when
    /// all weights are equal, so that a model whose weights are uniform
    /// draws what it drew before the weights existed.
    fn weighted(&mut self, items: &[usize], weights: &[f64]) -> usize {
        let first = weights[items[0]];
        if items.iter().all(|&i| weights[i] == first) {
            return items[self.below(items.len())];
        }
        let total: f64 = items.iter().map(|&i| weights[i]).sum();
        let mut u = self.unit() * total;
        for &i in items {
            if u < weights[i] {
                return i;
            }
            u -= weights[i];
        }
        items[items.len() - 1]
    }

    /// Uniform in `0..n` (`n >= 1`), by rejection.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }
}

/// Share of the uniform draw in a random split's choice of feature
/// ([`feature_weights`]): every feature keeps at least `0.3 / dim` of it.
pub const FEATURE_EXPLORATION: f64 = 0.3;

/// Pseudo-count of the prior in a feature's mean split score: a feature
/// split fewer than this many times scores near the mean of all splits.
pub const PRIOR_SPLITS: f64 = 10.0;

/// The weight of each feature in the draw of a random split, from the
/// model's complete trees, that is from released (noised) leaf sums only:
/// each split on `f`, with children of values `vl`, `vr` and covers `cl`,
/// `cr`, scores `cl cr / (cl + cr) · (vl - vr)²`, the part of the margin's
/// variance it explains; a feature's score is the mean of its splits',
/// pulled towards the mean `m` of all splits by [`PRIOR_SPLITS`]
/// (`(Σ scores + PRIOR_SPLITS · m) / (splits + PRIOR_SPLITS)`), and its weight
/// mixes the uniform draw (share [`FEATURE_EXPLORATION`]) with the scores
/// normalised to 1. Uniform before the first tree, or if no score is
/// positive and finite.
fn feature_weights(trees: &[Tree], dim: usize) -> Vec<f64> {
    let uniform = vec![1.0 / dim as f64; dim];
    let mut score = vec![0.0; dim];
    let mut count = vec![0.0; dim];
    for tree in trees {
        let nodes = tree.nodes();
        for node in nodes {
            if let NodeKind::Split {
                feature,
                left,
                right,
                ..
            } = *node.kind()
            {
                let (l, r) = (&nodes[left], &nodes[right]);
                let (cl, cr) = (l.cover().max(MIN_COVER), r.cover().max(MIN_COVER));
                let d = l.value() - r.value();
                score[feature] += cl * cr / (cl + cr) * d * d;
                count[feature] += 1.0;
            }
        }
    }
    let splits: f64 = count.iter().sum();
    if splits == 0.0 {
        return uniform;
    }
    let mean = score.iter().sum::<f64>() / splits;
    let smoothed: Vec<f64> = score
        .iter()
        .zip(&count)
        .map(|(s, n)| (s + PRIOR_SPLITS * mean) / (n + PRIOR_SPLITS))
        .collect();
    let total: f64 = smoothed.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return uniform;
    }
    smoothed
        .iter()
        .zip(&uniform)
        .map(|(w, u)| FEATURE_EXPLORATION * u + (1.0 - FEATURE_EXPLORATION) * w / total)
        .collect()
}

/// See [`TreeModel::next_structure`].
fn random_structure(
    binning: &Binning,
    max_depth: u32,
    seed: u32,
    index: usize,
    weights: &[f64],
) -> Result<Tree, LearningError> {
    let mut rng = SplitMix64((u64::from(seed) << 32) ^ index as u64);
    let features = binning.features();
    // Per node, per feature: the node's range of bins, `lo..=hi`.
    let all: Vec<(usize, usize)> = (0..features).map(|f| (0, binning.bins(f) - 1)).collect();
    let mut nodes = vec![Node::pending(0.0, 1.0)];
    let mut ranges = vec![all];
    let mut depths = vec![0u32];
    let mut candidates = Vec::with_capacity(features);
    let mut i = 0;
    while i < nodes.len() {
        if depths[i] < max_depth {
            candidates.clear();
            candidates.extend((0..features).filter(|&f| ranges[i][f].1 > ranges[i][f].0));
            if !candidates.is_empty() {
                let f = rng.weighted(&candidates, weights);
                let (lo, hi) = ranges[i][f];
                let b = lo + rng.below(hi - lo);
                let left = nodes.len();
                let mut left_range = ranges[i].clone();
                left_range[f] = (lo, b);
                let mut right_range = ranges[i].clone();
                right_range[f] = (b + 1, hi);
                nodes[i] = Node::split(f, b, binning.edges(f)[b], left, left + 1, 0.0, 1.0);
                for range in [left_range, right_range] {
                    nodes.push(Node::pending(0.0, 1.0));
                    ranges.push(range);
                    depths.push(depths[i] + 1);
                }
            }
        }
        i += 1;
    }
    Tree::new(nodes)
}

fn in_tree(t: usize, e: LearningError) -> LearningError {
    match e {
        LearningError::InconsistentSummary { reason } => {
            tree_error(format!("tree model: tree {t}: {reason}"))
        }
        other => other,
    }
}

fn check_tree(
    tree: &Tree,
    t: usize,
    last: bool,
    dim: usize,
    params: &TreeParams,
    binning: Option<&Binning>,
) -> Result<(), LearningError> {
    for (i, node) in tree.nodes().iter().enumerate() {
        let depth = tree.depth(i);
        let fail = |what: String| {
            Err(tree_error(format!(
                "tree model: tree {t}, node {i}: {what}"
            )))
        };
        if depth > MAX_DEPTH {
            return fail(format!("depth {depth} is above {MAX_DEPTH}"));
        }
        match *node.kind() {
            NodeKind::Split {
                feature,
                bin,
                threshold,
                ..
            } => {
                if feature >= dim {
                    return fail(format!("feature {feature} is not below dim {dim}"));
                }
                let edges = binning.map_or(&[][..], |b| b.edges(feature));
                if bin >= edges.len() {
                    return fail(format!(
                        "bin {bin} is not an edge index of feature {feature}, which has {} edges",
                        edges.len()
                    ));
                }
                if threshold != edges[bin] {
                    return fail(format!(
                        "threshold {threshold} is not edge {bin} ({}) of feature {feature}",
                        edges[bin]
                    ));
                }
            }
            NodeKind::Pending => {
                if !last {
                    return fail("is pending but only the last tree may grow".to_string());
                }
                if depth >= params.max_depth {
                    return fail(format!(
                        "is pending at depth {depth}, not above max_depth {}",
                        params.max_depth
                    ));
                }
            }
            NodeKind::Leaf => {}
        }
    }
    Ok(())
}

/// Checks histograms of `nodes` nodes × `bins` bins (`asked`: that shape in
/// words) with finite sums, and non-negative hessian sums unless noised.
fn check_histograms(
    h: &Histograms,
    nodes: usize,
    bins: usize,
    asked: &str,
) -> Result<(), LearningError> {
    if h.nodes() != nodes || h.bins_per_node() != bins {
        return Err(tree_error(format!(
            "tree statistics: histograms of {} nodes × {} bins, but the model asks for {asked}",
            h.nodes(),
            h.bins_per_node()
        )));
    }
    check_finite("gradient sum", h.grad(), false)?;
    check_finite("hessian sum", h.hess(), h.noise_std() == 0.0)
}

fn check_finite(what: &str, values: &[f64], non_negative: bool) -> Result<(), LearningError> {
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || (non_negative && **v < 0.0))
    {
        return Err(tree_error(format!(
            "tree statistics: {what} {i} is {v} (expected a finite{} number)",
            if non_negative { ", non-negative" } else { "" }
        )));
    }
    Ok(())
}

/// Means over features of a node's per-feature totals.
fn mean_totals(grad: &[f64], hess: &[f64], dim: usize) -> (f64, f64) {
    let n = dim as f64;
    (grad.iter().sum::<f64>() / n, hess.iter().sum::<f64>() / n)
}

/// Relative difference below which two split gains count as equal.
const GAIN_TIE: f64 = 1e-9;

struct Split {
    feature: usize,
    bin: usize,
    gl: f64,
    hl: f64,
    gr: f64,
    hr: f64,
}

fn best_split(binning: &Binning, grad: &[f64], hess: &[f64], p: &TreeParams) -> Option<Split> {
    let lambda = p.lambda;
    let mut best: Option<Split> = None;
    let mut best_gain = 0.0;
    for f in 0..binning.features() {
        let bins = binning.bins(f);
        if bins < 2 {
            continue;
        }
        let off = binning.offset(f);
        let g = &grad[off..off + bins];
        let h = &hess[off..off + bins];
        let g_total: f64 = g.iter().sum();
        let h_total: f64 = h.iter().sum();
        if h_total + lambda <= 0.0 {
            continue;
        }
        let parent = g_total * g_total / (h_total + lambda);
        let (mut gl, mut hl) = (0.0, 0.0);
        for b in 0..bins - 1 {
            gl += g[b];
            hl += h[b];
            let gr = g_total - gl;
            let hr = h_total - hl;
            if hl < p.min_child_weight || hr < p.min_child_weight || hl <= 0.0 || hr <= 0.0 {
                continue;
            }
            let gain = 0.5 * (gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent) - p.gamma;
            // A later candidate wins only by more than rounding: equal gains
            // (complementary one-hot slots) go to the lowest feature and bin
            // whatever the order in which the partners' sums were added.
            if gain.is_finite() && gain > best_gain * (1.0 + GAIN_TIE) && gain > 0.0 {
                best_gain = gain;
                best = Some(Split {
                    feature: f,
                    bin: b,
                    gl,
                    hl,
                    gr,
                    hr,
                });
            }
        }
    }
    best
}

struct FlatReader<'a> {
    values: &'a [f64],
    at: usize,
}

impl FlatReader<'_> {
    fn next(&mut self, what: &dyn Fn() -> String) -> Result<f64, LearningError> {
        let Some(&v) = self.values.get(self.at) else {
            return Err(tree_error(format!(
                "flat tree model: the layout ends after {} values, before {}",
                self.values.len(),
                what()
            )));
        };
        self.at += 1;
        Ok(v)
    }

    fn number(&mut self, what: &str) -> Result<f64, LearningError> {
        self.number_of(|| what.to_string())
    }

    fn number_of(&mut self, what: impl Fn() -> String) -> Result<f64, LearningError> {
        let at = self.at;
        let v = self.next(&what)?;
        if !v.is_finite() {
            return Err(tree_error(format!(
                "flat tree model: {} (value {at}) is not finite: {v}",
                what()
            )));
        }
        Ok(v)
    }

    fn int(&mut self, what: &str, min: usize, max: usize) -> Result<usize, LearningError> {
        self.int_of(|| what.to_string(), min, max)
    }

    fn int_of(
        &mut self,
        what: impl Fn() -> String,
        min: usize,
        max: usize,
    ) -> Result<usize, LearningError> {
        let v = self.signed_of(&what, min as i64, max.min(i64::MAX as usize) as i64)?;
        Ok(v as usize)
    }

    fn signed_of(
        &mut self,
        what: impl Fn() -> String,
        min: i64,
        max: i64,
    ) -> Result<i64, LearningError> {
        let at = self.at;
        let v = self.next(&what)?;
        if v.fract() != 0.0 || !(v >= min as f64 && v <= max as f64) {
            return Err(tree_error(format!(
                "flat tree model: {} (value {at}) is {v} (expected an integer in {min}..={max})",
                what()
            )));
        }
        Ok(v as i64)
    }
}
