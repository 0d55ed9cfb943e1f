//! Exact path-dependent TreeSHAP (Lundberg, Erion, Lee 2018, "Consistent
//! individualized feature attribution for tree ensembles", algorithm 2).
//!
//! The value of a coalition `S` of features for one tree is the
//! path-dependent conditional expectation `v(S)`: at a split on a feature in
//! `S` follow the row's branch; at any other split, average both children
//! weighted by their covers, `cover(child) / (cover(left) + cover(right))`.
//! The Shapley values of `v`, summed over the complete trees, are the
//! contributions; `v(∅)` summed (plus the base score) is the expected margin,
//! so the contributions add up to `margin(row) - expected margin`.

use ndarray::{Array1, ArrayView1};

use crate::error::LearningError;
use crate::model::check_row;

use super::model::TreeModel;
use super::tree::{NodeKind, Tree};

/// The expected margin and each encoded feature's contribution for one row,
/// by exact TreeSHAP over the complete trees (see the module doc); the
/// contributions sum to `margin(row) - expected` up to rounding.
pub fn tree_shap(
    model: &TreeModel,
    row: ArrayView1<f64>,
) -> Result<(f64, Array1<f64>), LearningError> {
    check_row(row, model.dim())?;
    let row: Vec<f64> = row.iter().copied().collect();
    let mut phi = vec![0.0; model.dim()];
    let mut expected = model.base_score();
    let mut buf = Vec::new();
    for tree in &model.trees()[..model.complete_trees()] {
        expected += expected_value(tree, 0);
        recurse(tree, 0, &row, &mut phi, &mut buf, 0, 0, 1.0, 1.0, None);
    }
    Ok((expected, Array1::from(phi)))
}

/// The cover weights of a split's children (they sum to 1).
pub(super) fn child_weights(tree: &Tree, left: usize, right: usize) -> (f64, f64) {
    let cl = tree.nodes()[left].cover();
    let cr = tree.nodes()[right].cover();
    // Tree::new makes both covers positive.
    (cl / (cl + cr), cr / (cl + cr))
}

/// `v(∅)` of the subtree at `node`.
fn expected_value(tree: &Tree, node: usize) -> f64 {
    match *tree.nodes()[node].kind() {
        NodeKind::Split { left, right, .. } => {
            let (wl, wr) = child_weights(tree, left, right);
            wl * expected_value(tree, left) + wr * expected_value(tree, right)
        }
        _ => tree.nodes()[node].value(),
    }
}

/// `RECIP[k] = 1 / k`: a path holds at most `MAX_DEPTH + 2` elements.
const RECIP: [f64; 16] = {
    let mut r = [0.0; 16];
    let mut k = 1;
    while k < 16 {
        r[k] = 1.0 / k as f64;
        k += 1;
    }
    r
};

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: Option<usize>,
    zero: f64,
    one: f64,
    weight: f64,
}

/// Appends an element to the path `p[..d]` (so `p` has at least `d + 1` slots).
fn extend(p: &mut [PathElement], d: usize, zero: f64, one: f64, feature: Option<usize>) {
    p[d] = PathElement {
        feature,
        zero,
        one,
        weight: if d == 0 { 1.0 } else { 0.0 },
    };
    let inv_n = RECIP[d + 1];
    for i in (0..d).rev() {
        p[i + 1].weight += one * p[i].weight * (i + 1) as f64 * inv_n;
        p[i].weight = zero * p[i].weight * (d - i) as f64 * inv_n;
    }
}

/// Removes element `index` from the path `p` (all of it is the path).
fn unwind(p: &mut [PathElement], index: usize) {
    let d = p.len() - 1;
    let n = (d + 1) as f64;
    let inv_n = RECIP[d + 1];
    let PathElement { zero, one, .. } = p[index];
    let mut next_one = p[d].weight;
    if one != 0.0 {
        let inv_one = 1.0 / one;
        for i in (0..d).rev() {
            let tmp = p[i].weight;
            p[i].weight = next_one * n * RECIP[i + 1] * inv_one;
            next_one = tmp - p[i].weight * zero * (d - i) as f64 * inv_n;
        }
    } else {
        let inv_zero = 1.0 / zero;
        for i in (0..d).rev() {
            p[i].weight = p[i].weight * n * inv_zero * RECIP[d - i];
        }
    }
    for i in index..d {
        p[i].feature = p[i + 1].feature;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

/// The total weight of the path `p` with element `index` unwound.
fn unwound_sum(p: &[PathElement], index: usize) -> f64 {
    let d = p.len() - 1;
    let n = (d + 1) as f64;
    let inv_n = RECIP[d + 1];
    let PathElement { zero, one, .. } = p[index];
    let mut total = 0.0;
    if one != 0.0 {
        let inv_one = 1.0 / one;
        let mut next_one = p[d].weight;
        for i in (0..d).rev() {
            let tmp = next_one * n * RECIP[i + 1] * inv_one;
            total += tmp;
            next_one = p[i].weight - tmp * zero * (d - i) as f64 * inv_n;
        }
    } else {
        let scale = n / zero;
        for i in (0..d).rev() {
            total += p[i].weight * scale * RECIP[d - i];
        }
    }
    total
}

/// One step of algorithm 2. The paths live in one scratch buffer: the
/// parent's is `buf[parent..parent + parent_len]`, this node's is copied
/// right after it.
#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &Tree,
    node: usize,
    row: &[f64],
    phi: &mut [f64],
    buf: &mut Vec<PathElement>,
    parent: usize,
    parent_len: usize,
    zero: f64,
    one: f64,
    feature: Option<usize>,
) {
    let start = parent + parent_len;
    if buf.len() < start + parent_len + 1 {
        buf.resize(start + parent_len + 1, PathElement::default());
    }
    buf.copy_within(parent..parent + parent_len, start);
    extend(&mut buf[start..], parent_len, zero, one, feature);
    let mut len = parent_len + 1;
    match *tree.nodes()[node].kind() {
        NodeKind::Split {
            feature: split,
            threshold,
            left,
            right,
            ..
        } => {
            let (wl, wr) = child_weights(tree, left, right);
            let (hot, cold, hot_w, cold_w) = if row[split] <= threshold {
                (left, right, wl, wr)
            } else {
                (right, left, wr, wl)
            };
            let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
            let path = &mut buf[start..start + len];
            if let Some(k) = path.iter().position(|e| e.feature == Some(split)) {
                incoming_zero = path[k].zero;
                incoming_one = path[k].one;
                unwind(path, k);
                len -= 1;
            }
            recurse(
                tree,
                hot,
                row,
                phi,
                buf,
                start,
                len,
                hot_w * incoming_zero,
                incoming_one,
                Some(split),
            );
            recurse(
                tree,
                cold,
                row,
                phi,
                buf,
                start,
                len,
                cold_w * incoming_zero,
                0.0,
                Some(split),
            );
        }
        _ => {
            let value = tree.nodes()[node].value();
            let path = &buf[start..start + len];
            for i in 1..len {
                let w = unwound_sum(path, i);
                if let Some(f) = path[i].feature {
                    phi[f] += w * (path[i].one - path[i].zero) * value;
                }
            }
        }
    }
}
