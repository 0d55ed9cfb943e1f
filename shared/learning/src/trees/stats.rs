//! What a client computes for the model: the fine sketch or a level's
//! gradient/hessian histograms, and how those pool and get noised.

use fedprofile_privacy::GaussianMechanism;
use ndarray::{ArrayView1, ArrayView2};
use rand::RngCore;

use crate::error::LearningError;
use crate::linear::check_finite_labels;
use crate::model::{check_features, check_labels, sigmoid};

use super::binning::{Binning, SKETCH_CELLS, Sketch, check_noise_std, sketch_cell};
use super::model::{Request, TreeModel};
use super::tree::Tree;
use super::{GradBound, TreeLoss, tree_error};

/// Per pending node (in node order), per feature, per bin: the sums of the
/// gradients and of the hessians of the rows that reach the node.
///
/// `grad` and `hess` are flat, `nodes × bins_per_node` long: node `k`'s block
/// starts at `k * bins_per_node`, feature `f`'s bins at
/// [`super::Binning::offset`]`(f)` within it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histograms {
    nodes: usize,
    bins_per_node: usize,
    grad: Vec<f64>,
    hess: Vec<f64>,
    rows: u64,
    noise_std: f64,
}

impl Histograms {
    /// All-zero histograms.
    pub fn zeros(nodes: usize, bins_per_node: usize) -> Histograms {
        Histograms {
            nodes,
            bins_per_node,
            grad: vec![0.0; nodes * bins_per_node],
            hess: vec![0.0; nodes * bins_per_node],
            rows: 0,
            noise_std: 0.0,
        }
    }

    /// Histograms from their parts (as received): `nodes >= 1`, `grad` and
    /// `hess` of equal length, a multiple of `nodes`, finite; `rows` the rows
    /// that reached a pending node (metadata); `noise_std` the std of the noise
    /// in each sum (0 if none), finite and `>= 0`.
    pub fn from_parts(
        nodes: usize,
        grad: Vec<f64>,
        hess: Vec<f64>,
        rows: u64,
        noise_std: f64,
    ) -> Result<Histograms, LearningError> {
        if nodes == 0 || grad.len() != hess.len() || !grad.len().is_multiple_of(nodes) {
            return Err(tree_error(format!(
                "tree statistics: {} gradient and {} hessian sums do not form histograms of {nodes} nodes",
                grad.len(),
                hess.len()
            )));
        }
        check_noise_std(noise_std)?;
        for (what, values) in [("gradient", &grad), ("hessian", &hess)] {
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(tree_error(format!(
                    "tree statistics: {what} sum {i} is not finite: {v}"
                )));
            }
        }
        Ok(Histograms {
            nodes,
            bins_per_node: grad.len() / nodes,
            grad,
            hess,
            rows,
            noise_std,
        })
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Length of one node's block (the binning's total bins).
    pub fn bins_per_node(&self) -> usize {
        self.bins_per_node
    }

    /// Gradient sums, flat.
    pub fn grad(&self) -> &[f64] {
        &self.grad
    }

    /// Hessian sums, flat.
    pub fn hess(&self) -> &[f64] {
        &self.hess
    }

    /// Rows that reached a pending node (metadata, not noised).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Std of the noise in each sum (0 if none).
    pub fn noise_std(&self) -> f64 {
        self.noise_std
    }
}

/// A client's (or the pool's) answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum TreeStatistics {
    /// For [`Request::Sketch`].
    Sketch(Sketch),
    /// For [`Request::Level`].
    Level(Histograms),
}

impl TreeStatistics {
    /// Adds `other` into `self` (same kind and shape); the noise stds combine
    /// as `sqrt(a² + b²)`.
    pub fn add(&mut self, other: &TreeStatistics) -> Result<(), LearningError> {
        match (self, other) {
            (TreeStatistics::Sketch(a), TreeStatistics::Sketch(b)) => {
                if a.dim() != b.dim() {
                    return Err(tree_error(format!(
                        "tree statistics: cannot add a sketch of {} features to one of {}",
                        b.dim(),
                        a.dim()
                    )));
                }
                for (x, y) in a.counts_mut().iter_mut().zip(b.counts()) {
                    *x += y;
                }
                a.set_rows(a.rows().saturating_add(b.rows()));
                a.add_noise_std(b.noise_std());
                Ok(())
            }
            (TreeStatistics::Level(a), TreeStatistics::Level(b)) => {
                if a.nodes != b.nodes || a.bins_per_node != b.bins_per_node {
                    return Err(tree_error(format!(
                        "tree statistics: cannot add histograms of {} nodes × {} bins to ones of {} nodes × {} bins",
                        b.nodes, b.bins_per_node, a.nodes, a.bins_per_node
                    )));
                }
                for (x, y) in a.grad.iter_mut().zip(&b.grad) {
                    *x += y;
                }
                for (x, y) in a.hess.iter_mut().zip(&b.hess) {
                    *x += y;
                }
                a.rows = a.rows.saturating_add(b.rows);
                a.noise_std = a.noise_std.hypot(b.noise_std);
                Ok(())
            }
            _ => Err(tree_error(
                "tree statistics: cannot add a sketch and level histograms".to_string(),
            )),
        }
    }

    /// Adds independent `N(0, sigma²)` noise to every released number (the
    /// counts of a sketch; the gradient and hessian sums of histograms, not
    /// `rows`) and records it in the noise std. `sigma = 0` adds nothing; a
    /// negative or non-finite `sigma`, or a failed draw, is an error (on error
    /// the statistics must not be released).
    pub fn add_gaussian_noise(
        &mut self,
        sigma: f64,
        rng: &mut dyn RngCore,
    ) -> Result<(), LearningError> {
        if sigma == 0.0 {
            return Ok(());
        }
        // The privacy error adds nothing that the field and requirement do not say.
        let noise_error = |_: fedprofile_privacy::PrivacyError| LearningError::InvalidParam {
            field: "sigma",
            value: sigma.to_string(),
            requirement: if sigma > 0.0 && sigma.is_finite() {
                "a noise std the Gaussian mechanism can draw from"
            } else {
                "non-negative and finite"
            },
        };
        let mechanism = GaussianMechanism::new(sigma, 1.0).map_err(noise_error)?;
        match self {
            TreeStatistics::Sketch(s) => {
                mechanism
                    .add_noise_checked(s.counts_mut(), rng)
                    .map_err(noise_error)?;
                s.add_noise_std(sigma);
            }
            TreeStatistics::Level(h) => {
                mechanism
                    .add_noise_checked(&mut h.grad, rng)
                    .map_err(noise_error)?;
                mechanism
                    .add_noise_checked(&mut h.hess, rng)
                    .map_err(noise_error)?;
                h.noise_std = h.noise_std.hypot(sigma);
            }
        }
        Ok(())
    }

    /// How many numbers are released (and noised): `dim × SKETCH_CELLS` for a
    /// sketch, `2 × nodes × bins_per_node` for histograms.
    pub fn len(&self) -> usize {
        match self {
            TreeStatistics::Sketch(s) => s.counts().len(),
            TreeStatistics::Level(h) => h.grad.len() + h.hess.len(),
        }
    }

    /// Whether nothing is released.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The std of the noise in each released number (0 if none).
    pub fn noise_std(&self) -> f64 {
        match self {
            TreeStatistics::Sketch(s) => s.noise_std(),
            TreeStatistics::Level(h) => h.noise_std,
        }
    }

    /// The rows that contributed (metadata, not noised).
    pub fn rows(&self) -> u64 {
        match self {
            TreeStatistics::Sketch(s) => s.rows(),
            TreeStatistics::Level(h) => h.rows,
        }
    }
}

/// What a client may keep between [`local_statistics_cached`] calls on the
/// same rows, so that each level does not recompute the margin from the
/// first tree: the rows' bin indices and the margin of the complete trees
/// seen so far.
///
/// Every call checks it (a fingerprint of the rows' bits, the binning, the
/// base score and the trees already summed must be unchanged, otherwise it
/// starts afresh), so a stale cache costs time, never correctness. The
/// statistics are bit for bit those of [`local_statistics`].
#[derive(Debug, Clone, Default)]
pub struct LocalCache {
    fingerprint: u64,
    rows: usize,
    dim: usize,
    base_score: f64,
    binning: Option<Binning>,
    bins: Vec<u8>,
    trees: Vec<Tree>,
    margin: Vec<f64>,
}

impl LocalCache {
    /// An empty cache.
    pub fn new() -> LocalCache {
        LocalCache::default()
    }

    /// Brings bins and margin up to date with `model`'s complete trees.
    fn prepare(&mut self, model: &TreeModel, binning: &Binning, flat: &[f64], rows: usize) {
        let dim = model.dim();
        let fingerprint = fingerprint(flat);
        let same_rows = self.fingerprint == fingerprint
            && self.rows == rows
            && self.dim == dim
            && self.bins.len() == rows * dim
            && self.binning.as_ref() == Some(binning);
        if !same_rows {
            self.bins.clear();
            self.bins.resize(rows * dim, 0);
            for (row, out) in flat.chunks_exact(dim).zip(self.bins.chunks_exact_mut(dim)) {
                for (f, (&v, b)) in row.iter().zip(out.iter_mut()).enumerate() {
                    // A feature has at most 256 bins (Binning::new).
                    *b = binning.bin(f, v) as u8;
                }
            }
            self.fingerprint = fingerprint;
            self.rows = rows;
            self.dim = dim;
            self.binning = Some(binning.clone());
        }
        let complete = &model.trees()[..model.complete_trees()];
        let prefix = same_rows
            && self.base_score.to_bits() == model.base_score().to_bits()
            && self.margin.len() == rows
            && self.trees.len() <= complete.len()
            && complete[..self.trees.len()] == self.trees[..];
        if !prefix {
            self.trees.clear();
            self.margin.clear();
            self.margin.resize(rows, model.base_score());
            self.base_score = model.base_score();
        }
        let new = &complete[self.trees.len()..];
        if !new.is_empty() {
            for (m, bins) in self.margin.iter_mut().zip(self.bins.chunks_exact(dim)) {
                for tree in new {
                    *m += tree.predict_bins(bins);
                }
            }
            self.trees.extend_from_slice(new);
        }
    }
}

/// FNV-1a over the bits of the values, in four interleaved lanes.
fn fingerprint(values: &[f64]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut lanes: [u64; 4] = [0xcbf2_9ce4_8422_2325, 1, 2, 3];
    let chunks = values.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (h, v) in lanes.iter_mut().zip(chunk) {
            *h = (*h ^ v.to_bits()).wrapping_mul(PRIME);
        }
    }
    for (h, v) in lanes.iter_mut().zip(rest) {
        *h = (*h ^ v.to_bits()).wrapping_mul(PRIME);
    }
    lanes
        .iter()
        .fold(values.len() as u64, |acc, h| (acc ^ h).wrapping_mul(PRIME))
}

/// What `model.request()` asks for, from one client's rows: `x` the encoded
/// features (`model.dim()` finite columns), `y` 0/1 labels (logistic) or
/// finite targets (squared). Gradients come from the margin of the complete
/// trees; with `bound`, `g` is clipped to `[-grad_clip, grad_clip]`.
///
/// Cost: the bin indices (`u8`, rows × features), the margin (rows × complete
/// trees × depth, by bins) and one pass that adds every row into its node's
/// block (rows × features); nothing is allocated per row. A client that
/// answers every level of a run should keep a [`LocalCache`] and call
/// [`local_statistics_cached`], which sums each tree into the margin once.
pub fn local_statistics(
    model: &TreeModel,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    bound: Option<GradBound>,
) -> Result<TreeStatistics, LearningError> {
    local_statistics_cached(model, x, y, bound, &mut LocalCache::new())
}

/// [`local_statistics`] with a [`LocalCache`] kept between calls on the
/// same rows; the result is the same, bit for bit.
pub fn local_statistics_cached(
    model: &TreeModel,
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    bound: Option<GradBound>,
    cache: &mut LocalCache,
) -> Result<TreeStatistics, LearningError> {
    if let Some(b) = bound {
        b.validate()?;
    }
    let dim = model.dim();
    check_features(x, dim)?;
    if x.nrows() != y.len() {
        return Err(LearningError::RowMismatch {
            rows: x.nrows(),
            labels: y.len(),
        });
    }
    match model.loss() {
        TreeLoss::Logistic => check_labels(y)?,
        TreeLoss::Squared => check_finite_labels(y)?,
    }
    let x = x.as_standard_layout();
    let Some(flat) = x.as_slice() else {
        return Err(tree_error(
            "tree statistics: the feature matrix could not be laid out by rows".to_string(),
        ));
    };
    let rows = x.nrows();
    match model.request() {
        Request::Sketch => {
            let mut sketch = Sketch::zeros(dim);
            let counts = sketch.counts_mut();
            for row in flat.chunks_exact(dim) {
                for (f, &v) in row.iter().enumerate() {
                    counts[f * SKETCH_CELLS + sketch_cell(v)] += 1.0;
                }
            }
            sketch.set_rows(rows as u64);
            Ok(TreeStatistics::Sketch(sketch))
        }
        Request::Level { nodes } => {
            let Some(binning) = model.binning() else {
                return Err(tree_error(
                    "tree model: histograms requested before the binning".to_string(),
                ));
            };
            cache.prepare(model, binning, flat, rows);
            let clip = bound.map_or(f64::INFINITY, |b| b.grad_clip);
            // The pending index of each node of the growing tree.
            let growing = model.growing();
            let slot: Vec<Option<usize>> = match growing {
                Some(tree) => {
                    let mut slot = vec![None; tree.nodes().len()];
                    for (k, id) in tree.pending().into_iter().enumerate() {
                        slot[id] = Some(k);
                    }
                    slot
                }
                None => vec![Some(0)],
            };
            let bins_per_node = binning.total_bins();
            let offsets: Vec<usize> = (0..dim).map(|f| binning.offset(f)).collect();
            // Rows grouped by pending node (a counting sort), so that each
            // node's block stays in cache while its rows are added.
            let mut node_of_row = vec![u32::MAX; rows];
            let mut per_node = vec![0usize; nodes + 1];
            for (slot_of, row_bins) in node_of_row.iter_mut().zip(cache.bins.chunks_exact(dim)) {
                let node = growing.map_or(0, |t| t.node_of_bins(row_bins));
                if let Some(k) = slot[node] {
                    *slot_of = k as u32;
                    per_node[k + 1] += 1;
                }
            }
            for k in 0..nodes {
                per_node[k + 1] += per_node[k];
            }
            let reached = per_node[nodes];
            let mut order = vec![0u32; reached];
            let mut next = per_node.clone();
            for (i, &k) in node_of_row.iter().enumerate() {
                if k != u32::MAX {
                    order[next[k as usize]] = i as u32;
                    next[k as usize] += 1;
                }
            }
            let mut hist = Histograms::zeros(nodes, bins_per_node);
            for k in 0..nodes {
                let base = k * bins_per_node;
                let grad = &mut hist.grad[base..base + bins_per_node];
                let hess = &mut hist.hess[base..base + bins_per_node];
                for &i in &order[per_node[k]..per_node[k + 1]] {
                    let i = i as usize;
                    let margin = cache.margin[i];
                    let (g, h) = match model.loss() {
                        TreeLoss::Logistic => {
                            let p = sigmoid(margin);
                            (p - y[i], p * (1.0 - p))
                        }
                        TreeLoss::Squared => (margin - y[i], 1.0),
                    };
                    let g = g.clamp(-clip, clip);
                    let row_bins = &cache.bins[i * dim..(i + 1) * dim];
                    for (&off, &b) in offsets.iter().zip(row_bins) {
                        let j = off + b as usize;
                        grad[j] += g;
                        hess[j] += h;
                    }
                }
            }
            let reached = reached as u64;
            hist.rows = reached;
            Ok(TreeStatistics::Level(hist))
        }
        Request::Leaves { leaves } => {
            let (Some(binning), Some(structure)) = (model.binning(), model.next_structure()) else {
                return Err(tree_error(
                    "tree model: leaf sums requested without a random tree structure".to_string(),
                ));
            };
            cache.prepare(model, binning, flat, rows);
            let clip = bound.map_or(f64::INFINITY, |b| b.grad_clip);
            let mut slot = vec![usize::MAX; structure.nodes().len()];
            for (k, id) in structure.pending().into_iter().enumerate() {
                slot[id] = k;
            }
            let mut hist = Histograms::zeros(leaves, 1);
            for (i, row_bins) in cache.bins.chunks_exact(dim).enumerate() {
                let k = slot[structure.node_of_bins(row_bins)];
                let (g, h) = gradient(model.loss(), cache.margin[i], y[i]);
                hist.grad[k] += g.clamp(-clip, clip);
                hist.hess[k] += h;
            }
            hist.rows = rows as u64;
            Ok(TreeStatistics::Level(hist))
        }
    }
}

/// One row's `(g, h)` at `margin` with label or target `y`.
fn gradient(loss: TreeLoss, margin: f64, y: f64) -> (f64, f64) {
    match loss {
        TreeLoss::Logistic => {
            let p = sigmoid(margin);
            (p - y, p * (1.0 - p))
        }
        TreeLoss::Squared => (margin - y, 1.0),
    }
}
