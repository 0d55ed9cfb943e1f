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
use crate::linear::check_row;

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
    for tree in &model.trees()[..model.complete_trees()] {
        expected += expected_value(tree, 0);
        recurse(tree, 0, &row, &mut phi, &[], 1.0, 1.0, None);
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

#[derive(Debug, Clone, Copy)]
struct PathElement {
    feature: Option<usize>,
    zero: f64,
    one: f64,
    weight: f64,
}

fn extend(path: &mut Vec<PathElement>, zero: f64, one: f64, feature: Option<usize>) {
    let d = path.len();
    path.push(PathElement {
        feature,
        zero,
        one,
        weight: if d == 0 { 1.0 } else { 0.0 },
    });
    let n = (d + 1) as f64;
    for i in (0..d).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / n;
        path[i].weight = zero * path[i].weight * (d - i) as f64 / n;
    }
}

fn unwind(path: &mut Vec<PathElement>, index: usize) {
    let d = path.len() - 1;
    let n = (d + 1) as f64;
    let PathElement { zero, one, .. } = path[index];
    let mut next_one = path[d].weight;
    for i in (0..d).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next_one * n / ((i + 1) as f64 * one);
            next_one = tmp - path[i].weight * zero * (d - i) as f64 / n;
        } else {
            path[i].weight = path[i].weight * n / (zero * (d - i) as f64);
        }
    }
    for i in index..d {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
    path.pop();
}

fn unwound_sum(path: &[PathElement], index: usize) -> f64 {
    let d = path.len() - 1;
    let n = (d + 1) as f64;
    let PathElement { zero, one, .. } = path[index];
    let mut next_one = path[d].weight;
    let mut total = 0.0;
    for i in (0..d).rev() {
        if one != 0.0 {
            let tmp = next_one * n / ((i + 1) as f64 * one);
            total += tmp;
            next_one = path[i].weight - tmp * zero * (d - i) as f64 / n;
        } else {
            total += path[i].weight / zero * n / (d - i) as f64;
        }
    }
    total
}

#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &Tree,
    node: usize,
    row: &[f64],
    phi: &mut [f64],
    parent_path: &[PathElement],
    zero: f64,
    one: f64,
    feature: Option<usize>,
) {
    let mut path = parent_path.to_vec();
    extend(&mut path, zero, one, feature);
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
            if let Some(k) = path.iter().position(|e| e.feature == Some(split)) {
                incoming_zero = path[k].zero;
                incoming_one = path[k].one;
                unwind(&mut path, k);
            }
            recurse(
                tree,
                hot,
                row,
                phi,
                &path,
                hot_w * incoming_zero,
                incoming_one,
                Some(split),
            );
            recurse(
                tree,
                cold,
                row,
                phi,
                &path,
                cold_w * incoming_zero,
                0.0,
                Some(split),
            );
        }
        _ => {
            let value = tree.nodes()[node].value();
            for i in 1..path.len() {
                let w = unwound_sum(&path, i);
                if let Some(f) = path[i].feature {
                    phi[f] += w * (path[i].one - path[i].zero) * value;
                }
            }
        }
    }
}
