//! The federation's binning: the fine [`Sketch`] each client sends before the
//! first tree, and the [`Binning`] (split thresholds per encoded feature) that
//! the pooled sketch gives.
//!
//! The fine grid is fixed, so sketches of different clients add cell by cell:
//! per feature, cell 0 holds `x <= SKETCH_LO`, cell `i` in `1..=1600` holds
//! `((i - 801) / 100, (i - 800) / 100]` and cell 1601 holds `x > SKETCH_HI`.
//! Cell boundaries are exact multiples of 0.01 (computed as `k / 100`), so the
//! one-hot values 0 and 1 fall in cells of their own, whose upper boundaries
//! are exactly 0 and 1.

use crate::error::LearningError;

use super::tree_error;

/// Lower end of the fine grid, in z-units.
pub const SKETCH_LO: f64 = -8.0;
/// Upper end of the fine grid, in z-units.
pub const SKETCH_HI: f64 = 8.0;
/// Fine cells per z-unit (cell width 0.01).
pub const SKETCH_CELLS_PER_UNIT: u32 = 100;
/// Cells per feature: 1600 inside the grid plus under- and overflow.
pub const SKETCH_CELLS: usize = 1602;

const HALF: i64 = 800; // interior cells on each side of 0
const OVERFLOW: usize = SKETCH_CELLS - 1;

fn boundary(k: i64) -> f64 {
    k as f64 / f64::from(SKETCH_CELLS_PER_UNIT)
}

/// `BOUNDARIES[k + 800] = k / 100` for `k` in `-800..=800`, exactly as
/// [`boundary`] computes it (IEEE division is the same at compile time).
static BOUNDARIES: [f64; 2 * HALF as usize + 1] = {
    let mut b = [0.0; 2 * HALF as usize + 1];
    let mut i = 0;
    while i < b.len() {
        b[i] = (i as i64 - HALF) as f64 / SKETCH_CELLS_PER_UNIT as f64;
        i += 1;
    }
    b
};

fn boundary_of(k: i64) -> f64 {
    BOUNDARIES[(k + HALF) as usize]
}

/// The fine cell of a value (see the module doc); NaN lands in cell 0.
pub fn sketch_cell(x: f64) -> usize {
    if x.is_nan() || x <= SKETCH_LO {
        return 0;
    }
    if x > SKETCH_HI {
        return OVERFLOW;
    }
    // k such that (k - 1) / 100 < x <= k / 100: a first guess from
    // `x * 100` (truncated), corrected against the exact boundaries (at most
    // a step or two).
    let mut k = ((x * f64::from(SKETCH_CELLS_PER_UNIT)) as i64).clamp(-HALF, HALF);
    while k < HALF && boundary_of(k) < x {
        k += 1;
    }
    while k > -HALF + 1 && boundary_of(k - 1) >= x {
        k -= 1;
    }
    (k + HALF).clamp(1, 2 * HALF) as usize
}

/// The upper boundary of a fine cell (`None` for the overflow cell).
pub fn sketch_cell_upper(cell: usize) -> Option<f64> {
    if cell >= OVERFLOW {
        None
    } else {
        Some(boundary(cell as i64 - HALF))
    }
}

/// Fine histograms of the encoded features over the fixed grid: what a client
/// sends for [`super::Request::Sketch`]. Counts are `f64` so that DP noise can
/// be added.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    dim: usize,
    counts: Vec<f64>,
    rows: u64,
    noise_std: f64,
}

impl Sketch {
    /// An all-zero sketch of `dim` features.
    pub fn zeros(dim: usize) -> Sketch {
        Sketch {
            dim,
            counts: vec![0.0; dim * SKETCH_CELLS],
            rows: 0,
            noise_std: 0.0,
        }
    }

    /// A sketch from its parts (as received): `counts` feature-major,
    /// `dim * SKETCH_CELLS` long, finite; `noise_std` the standard deviation of
    /// the Gaussian noise in each count (0 if none), finite and `>= 0`.
    pub fn from_parts(
        dim: usize,
        counts: Vec<f64>,
        rows: u64,
        noise_std: f64,
    ) -> Result<Sketch, LearningError> {
        if counts.len() != dim * SKETCH_CELLS {
            return Err(tree_error(format!(
                "a sketch of {dim} features needs {} counts, got {}",
                dim * SKETCH_CELLS,
                counts.len()
            )));
        }
        check_noise_std(noise_std)?;
        if let Some((i, c)) = counts.iter().enumerate().find(|(_, c)| !c.is_finite()) {
            return Err(tree_error(format!(
                "sketch count {i} (feature {}, cell {}) is not finite: {c}",
                i / SKETCH_CELLS,
                i % SKETCH_CELLS
            )));
        }
        Ok(Sketch {
            dim,
            counts,
            rows,
            noise_std,
        })
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The counts, feature-major (`feature * SKETCH_CELLS + cell`).
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// The counts of one feature (`SKETCH_CELLS` long); `feature < dim()`.
    pub fn feature_counts(&self, feature: usize) -> &[f64] {
        &self.counts[feature * SKETCH_CELLS..(feature + 1) * SKETCH_CELLS]
    }

    /// Rows that contributed (metadata, not noised).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Standard deviation of the noise in each count (0 if none).
    pub fn noise_std(&self) -> f64 {
        self.noise_std
    }

    pub(super) fn counts_mut(&mut self) -> &mut [f64] {
        &mut self.counts
    }

    pub(super) fn set_rows(&mut self, rows: u64) {
        self.rows = rows;
    }

    pub(super) fn add_noise_std(&mut self, other: f64) {
        self.noise_std = self.noise_std.hypot(other);
    }
}

pub(super) fn check_noise_std(noise_std: f64) -> Result<(), LearningError> {
    if noise_std >= 0.0 && noise_std.is_finite() {
        Ok(())
    } else {
        Err(tree_error(format!(
            "the noise standard deviation of tree statistics must be non-negative and finite, got {noise_std}"
        )))
    }
}

/// Counts below this many noise standard deviations are read as empty cells
/// when the binning is derived from a noised sketch: of a feature's 1602
/// cells, an empty one exceeds it with probability about 3.4e-6, so a feature
/// gets a spurious cell with probability about 0.5%.
pub const NOISE_FLOOR_STDS: f64 = 4.5;

/// Split thresholds per encoded feature: `edges(f)` sorted strictly
/// ascending; `bin(f, x)` is the number of edges `< x`, so bin `b` covers
/// `(edges[b-1], edges[b]]` and the left side of a split at bin `b` is
/// `x <= edges[b]`. A feature has `edges(f).len() + 1` bins (at most 256).
#[derive(Debug, Clone, PartialEq)]
pub struct Binning {
    edges: Vec<Vec<f64>>,
    offsets: Vec<usize>,
    total_bins: usize,
    /// Per feature whose edges all lie on the fine grid, the bin of each
    /// fine cell (a lookup instead of a binary search).
    cell_bins: Vec<Option<Vec<u8>>>,
}

impl Binning {
    /// A binning from its edges; every feature's edges finite, strictly
    /// ascending and at most 255.
    pub fn new(edges: Vec<Vec<f64>>) -> Result<Binning, LearningError> {
        for (f, e) in edges.iter().enumerate() {
            if e.len() > super::MAX_BINS as usize - 1 {
                return Err(tree_error(format!(
                    "binning: feature {f} has {} edges (at most {})",
                    e.len(),
                    super::MAX_BINS - 1
                )));
            }
            if let Some((i, v)) = e.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(tree_error(format!(
                    "binning: edge {i} of feature {f} is not finite: {v}"
                )));
            }
            if let Some(i) = (1..e.len()).find(|&i| e[i] <= e[i - 1]) {
                return Err(tree_error(format!(
                    "binning: the edges of feature {f} are not strictly ascending (edge {i} = {} after {})",
                    e[i],
                    e[i - 1]
                )));
            }
        }
        let mut offsets = Vec::with_capacity(edges.len());
        let mut total_bins = 0;
        for e in &edges {
            offsets.push(total_bins);
            total_bins += e.len() + 1;
        }
        let cell_bins = edges.iter().map(|e| cell_bins(e)).collect();
        Ok(Binning {
            edges,
            offsets,
            total_bins,
            cell_bins,
        })
    }

    /// The federated quantile binning of a pooled sketch, at most `max_bins`
    /// bins per feature.
    ///
    /// Per feature, cells whose count is below `NOISE_FLOOR_STDS` times the
    /// sketch's noise std (or negative) are read as empty. If at most
    /// `max_bins` cells are non-empty, every boundary between two non-empty
    /// cells is an edge (the upper boundary of each non-empty cell but the
    /// last): a 0/1 feature gets the one edge 0. Otherwise, with `N` the
    /// feature's total, the edge for `k = 1..max_bins` is the upper boundary of
    /// the first cell where the cumulative count reaches `k N / max_bins`;
    /// duplicates, and edges with nothing above them, are dropped.
    pub fn from_sketch(sketch: &Sketch, max_bins: u32) -> Result<Binning, LearningError> {
        let max_bins = max_bins.clamp(2, super::MAX_BINS) as usize;
        let floor = NOISE_FLOOR_STDS * sketch.noise_std();
        let edges = (0..sketch.dim())
            .map(|f| {
                let counts: Vec<f64> = sketch
                    .feature_counts(f)
                    .iter()
                    .map(|&c| if c > 0.0 && c >= floor { c } else { 0.0 })
                    .collect();
                feature_edges(&counts, max_bins)
            })
            .collect();
        Binning::new(edges)
    }

    /// A data-free binning, for runs that spend no privacy budget on a
    /// sketch: a feature marked `binary` (a one-hot or boolean 0/1 column)
    /// gets the one edge 0; any other feature, read as standardised, gets the
    /// standard normal quantiles `k / max_bins` (`k = 1..max_bins`) rounded to
    /// the fine grid's 0.01 steps (duplicates dropped).
    pub fn standard_normal(binary: &[bool], max_bins: u32) -> Result<Binning, LearningError> {
        let max_bins = max_bins.clamp(2, super::MAX_BINS);
        let mut numeric: Vec<f64> = Vec::new();
        for k in 1..max_bins {
            let z = normal_quantile(f64::from(k) / f64::from(max_bins));
            let edge = boundary((z * f64::from(SKETCH_CELLS_PER_UNIT)).round() as i64);
            if numeric.last().is_none_or(|&last| edge > last) {
                numeric.push(edge);
            }
        }
        let edges = binary
            .iter()
            .map(|&b| if b { vec![0.0] } else { numeric.clone() })
            .collect();
        Binning::new(edges)
    }

    /// Number of features.
    pub fn features(&self) -> usize {
        self.edges.len()
    }

    /// The edges of a feature.
    pub fn edges(&self, feature: usize) -> &[f64] {
        &self.edges[feature]
    }

    /// All edges, per feature.
    pub fn all_edges(&self) -> &[Vec<f64>] {
        &self.edges
    }

    /// Bins of a feature (`edges + 1`).
    pub fn bins(&self, feature: usize) -> usize {
        self.edges[feature].len() + 1
    }

    /// Where a feature's bins start in a node's block of a histogram.
    pub fn offset(&self, feature: usize) -> usize {
        self.offsets[feature]
    }

    /// Bins of all features together: the length of one node's block.
    pub fn total_bins(&self) -> usize {
        self.total_bins
    }

    /// The index of `threshold` among a feature's edges (a split's bin, when
    /// a model file gives the threshold only).
    pub fn edge_index(&self, feature: usize, threshold: f64) -> Option<usize> {
        let edges = self.edges.get(feature)?;
        let i = edges.partition_point(|&e| e < threshold);
        (edges.get(i) == Some(&threshold)).then_some(i)
    }

    /// The bin of `x` for a feature: the number of edges `< x`.
    pub fn bin(&self, feature: usize, x: f64) -> usize {
        match &self.cell_bins[feature] {
            Some(table) if !x.is_nan() => usize::from(table[sketch_cell(x)]),
            _ => self.edges[feature].partition_point(|&e| e < x),
        }
    }
}

/// The bin of every fine cell, if all `edges` are fine-grid boundaries: for
/// `x` in cell `c`, the edges `< x` are those `< upper(c)` (no boundary lies
/// strictly inside a cell); `x` in the overflow cell is above every edge.
fn cell_bins(edges: &[f64]) -> Option<Vec<u8>> {
    let on_grid = edges
        .iter()
        .all(|&e| sketch_cell_upper(sketch_cell(e)) == Some(e));
    if !on_grid || edges.len() > u8::MAX as usize {
        return None;
    }
    Some(
        (0..SKETCH_CELLS)
            .map(|c| match sketch_cell_upper(c) {
                Some(upper) => edges.partition_point(|&e| e < upper) as u8,
                None => edges.len() as u8,
            })
            .collect(),
    )
}

fn feature_edges(counts: &[f64], max_bins: usize) -> Vec<f64> {
    let nonempty: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 0.0).collect();
    let Some(&last) = nonempty.last() else {
        return Vec::new();
    };
    let mut edges = Vec::new();
    if nonempty.len() <= max_bins {
        edges.extend(
            nonempty[..nonempty.len() - 1]
                .iter()
                .filter_map(|&i| sketch_cell_upper(i)),
        );
        return edges;
    }
    let total: f64 = counts.iter().sum();
    let mut cumulative = 0.0;
    let mut k = 1;
    for (i, &c) in counts.iter().enumerate() {
        if i >= last || k >= max_bins {
            break;
        }
        cumulative += c;
        let mut crossed = false;
        while k < max_bins && cumulative >= k as f64 * total / max_bins as f64 {
            crossed = true;
            k += 1;
        }
        if crossed {
            edges.extend(sketch_cell_upper(i));
        }
    }
    edges
}

/// The standard normal quantile of `p` in `(0, 1)` (Acklam's rational
/// approximation, relative error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}
