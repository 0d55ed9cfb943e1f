use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};
use rand::Rng;

use super::*;
use crate::dp::seeded_test_rng;
use crate::error::LearningError;
use crate::metrics::roc_auc;
use crate::model::sigmoid;

fn normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `y = (x0 > 0) xor (x1 > 0)` with 5% of the labels flipped; columns 2..4
/// are noise, column 5 a one-hot 0/1 column of noise.
fn xor_data(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let mut rng = seeded_test_rng(seed);
    let mut x = Array2::zeros((n, 6));
    let mut y = Array1::zeros(n);
    for i in 0..n {
        for j in 0..5 {
            x[[i, j]] = normal(&mut rng);
        }
        x[[i, 5]] = f64::from(rng.random::<f64>() < 0.3);
        let label = (x[[i, 0]] > 0.0) != (x[[i, 1]] > 0.0);
        let flip = rng.random::<f64>() < 0.05;
        y[i] = f64::from(label != flip);
    }
    (x, y)
}

/// A nonlinear regression target on 5 features.
fn regression_data(n: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let mut rng = seeded_test_rng(seed);
    let mut x = Array2::zeros((n, 5));
    let mut y = Array1::zeros(n);
    for i in 0..n {
        for j in 0..4 {
            x[[i, j]] = normal(&mut rng);
        }
        x[[i, 4]] = f64::from(rng.random::<f64>() < 0.5);
        y[i] = 2.0 * x[[i, 0]].sin() + x[[i, 1]] * x[[i, 1]] + 1.5 * x[[i, 4]] - 0.5 * x[[i, 2]]
            + 0.1 * normal(&mut rng);
    }
    (x, y)
}

/// The federated protocol over `clients` (row ranges), statistics added in
/// client order.
fn train_federated(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    clients: &[std::ops::Range<usize>],
    loss: TreeLoss,
    params: TreeParams,
    trees: usize,
) -> TreeModel {
    let mut model = TreeModel::new(x.ncols(), loss, params).unwrap();
    for _ in 0..1 + trees * params.max_depth as usize {
        if model.binning().is_some() && model.complete_trees() >= trees {
            break;
        }
        let mut pooled: Option<TreeStatistics> = None;
        for c in clients {
            let rows = Slice::from(c.clone());
            let stats = local_statistics(
                &model,
                x.slice_axis(Axis(0), rows),
                y.slice_axis(Axis(0), rows),
                None,
            )
            .unwrap();
            model.check_statistics(&stats).unwrap();
            match pooled.as_mut() {
                None => pooled = Some(stats),
                Some(p) => p.add(&stats).unwrap(),
            }
        }
        model = model.apply(&pooled.unwrap()).unwrap();
    }
    assert_eq!(model.complete_trees(), trees);
    model
}

fn assert_same_model(a: &TreeModel, b: &TreeModel) {
    assert_eq!(a.binning(), b.binning(), "binnings differ");
    assert_eq!(a.trees().len(), b.trees().len());
    for (t, (ta, tb)) in a.trees().iter().zip(b.trees()).enumerate() {
        assert_eq!(ta.nodes().len(), tb.nodes().len(), "tree {t} sizes differ");
        for (i, (na, nb)) in ta.nodes().iter().zip(tb.nodes()).enumerate() {
            match (na.kind(), nb.kind()) {
                (NodeKind::Split { .. }, NodeKind::Split { .. }) => {
                    assert_eq!(na.feature(), nb.feature(), "tree {t} node {i}");
                    assert_eq!(na.bin(), nb.bin(), "tree {t} node {i}");
                    assert_eq!(na.threshold(), nb.threshold(), "tree {t} node {i}");
                    assert_eq!(na.children(), nb.children(), "tree {t} node {i}");
                }
                (ka, kb) => assert_eq!(ka, kb, "tree {t} node {i}"),
            }
            assert!(
                (na.value() - nb.value()).abs() <= 1e-9,
                "tree {t} node {i}: {} vs {}",
                na.value(),
                nb.value()
            );
            assert!((na.cover() - nb.cover()).abs() <= 1e-9 * (1.0 + na.cover().abs()));
        }
    }
}

fn splits(model: &TreeModel) -> usize {
    model
        .trees()
        .iter()
        .flat_map(|t| t.nodes())
        .filter(|n| n.feature().is_some())
        .count()
}

/// AUC of a logistic regression fitted by full-batch gradient descent.
fn linear_auc(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    test_x: ArrayView2<f64>,
    test_y: ArrayView1<f64>,
) -> f64 {
    let mut w = Array1::<f64>::zeros(x.ncols());
    let mut b = 0.0;
    for _ in 0..300 {
        let p = (x.dot(&w) + b).mapv(sigmoid);
        let r = &p - &y;
        w = &w - &(x.t().dot(&r) * (0.5 / x.nrows() as f64));
        b -= 0.5 * r.sum() / x.nrows() as f64;
    }
    roc_auc((test_x.dot(&w) + b).view(), test_y).unwrap()
}

fn depth4() -> TreeParams {
    TreeParams {
        max_depth: 4,
        ..TreeParams::default()
    }
}

/// `trees` trees at learning rate 0.3 and depth 4, pooled and federated over
/// `clients`; the two models are the same.
fn pooled_and_federated(
    x: &Array2<f64>,
    y: &Array1<f64>,
    clients: &[std::ops::Range<usize>],
    loss: TreeLoss,
    trees: u32,
) -> (TreeModel, TreeModel) {
    let params = TreeParams {
        learning_rate: 0.3,
        ..depth4()
    };
    let pooled = train_pooled(x.view(), y.view(), loss, params, trees).unwrap();
    let federated = train_federated(x.view(), y.view(), clients, loss, params, trees as usize);
    assert_same_model(&pooled, &federated);
    (pooled, federated)
}

const CLIENTS_600: [std::ops::Range<usize>; 3] = [0..150, 150..420, 420..600];

#[test]
fn federated_equals_pooled_on_xor_where_logistic_regression_is_at_chance() {
    let (x, y) = xor_data(1500, 1);
    let (tx, ty) = xor_data(2000, 2);
    let (pooled, federated) = pooled_and_federated(
        &x,
        &y,
        &[0..400, 400..1100, 1100..1500],
        TreeLoss::Logistic,
        12,
    );
    assert_eq!(pooled.complete_trees(), 12);
    assert!(splits(&pooled) >= 12 * 3, "{} splits", splits(&pooled));
    let linear = linear_auc(x.view(), y.view(), tx.view(), ty.view());
    assert!((linear - 0.5).abs() < 0.06, "linear AUC {linear}");
    let auc = roc_auc(pooled.predict(tx.view()).unwrap().view(), ty.view()).unwrap();
    assert!(auc > 0.9, "tree AUC {auc}");
    let federated_scores = federated.predict(tx.view()).unwrap();
    let pooled_scores = pooled.predict(tx.view()).unwrap();
    for (a, b) in federated_scores.iter().zip(&pooled_scores) {
        assert!((a - b).abs() < 1e-9);
    }
}

#[test]
fn federated_equals_pooled_on_a_regression_target() {
    let (x, y) = regression_data(600, 3);
    let (tx, ty) = regression_data(1000, 4);
    let (pooled, _) = pooled_and_federated(&x, &y, &CLIENTS_600, TreeLoss::Squared, 15);
    let prediction = pooled.predict(tx.view()).unwrap();
    let mse = (&prediction - &ty).mapv(|e| e * e).mean().unwrap();
    let mean = ty.mean().unwrap();
    let variance = ty.mapv(|v| (v - mean) * (v - mean)).mean().unwrap();
    assert!(mse < 0.3 * variance, "mse {mse}, variance {variance}");
}

#[test]
fn request_and_round_done_follow_the_protocol() {
    let (x, y) = xor_data(300, 5);
    let mut model = TreeModel::new(6, TreeLoss::Logistic, depth4()).unwrap();
    assert_eq!(model.request(), Request::Sketch);
    assert!(!model.round_done());
    model = model
        .apply(&local_statistics(&model, x.view(), y.view(), None).unwrap())
        .unwrap();
    assert_eq!(model.request(), Request::Level { nodes: 1 });
    assert!(!model.round_done());
    let mut levels = 0;
    while !model.round_done() {
        let before = model.clone();
        model = model
            .apply(&local_statistics(&model, x.view(), y.view(), None).unwrap())
            .unwrap();
        levels += 1;
        assert!(levels <= 4);
        // The margin ignores the growing tree.
        if !model.round_done() {
            assert_eq!(model.complete_trees(), 0);
            assert_eq!(
                model.margin(x.view()).unwrap(),
                before.margin(x.view()).unwrap()
            );
            let pending = model.trees()[0].pending().len();
            assert_eq!(model.request(), Request::Level { nodes: pending });
        }
    }
    assert_eq!(model.complete_trees(), 1);
    assert_eq!(model.request(), Request::Level { nodes: 1 });
    let margin = model.margin(x.view()).unwrap();
    assert!(margin.iter().any(|m| *m != 0.0));
}

fn growing_model() -> TreeModel {
    let (x, y) = xor_data(400, 6);
    let mut model = train_pooled(x.view(), y.view(), TreeLoss::Logistic, depth4(), 3).unwrap();
    while model.growing().is_none() {
        model = model
            .apply(&local_statistics(&model, x.view(), y.view(), None).unwrap())
            .unwrap();
    }
    model
}

#[test]
fn flat_layout_round_trips_complete_and_growing_models() {
    let (x, y) = regression_data(300, 7);
    let complete = train_pooled(x.view(), y.view(), TreeLoss::Squared, depth4(), 4).unwrap();
    let growing = growing_model();
    assert!(growing.growing().is_some());
    let fresh = TreeModel::new(3, TreeLoss::Logistic, TreeParams::default()).unwrap();
    for model in [complete, growing, fresh] {
        let flat = model.to_flat();
        assert_eq!(flat[0], 1.0);
        let back = TreeModel::from_flat(flat.view()).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.to_flat(), flat);
        // Through the public parts too, as a model file does.
        let edges = model.binning().map(|b| b.all_edges().to_vec());
        let trees: Vec<Tree> = model
            .trees()
            .iter()
            .map(|t| {
                let nodes = t
                    .nodes()
                    .iter()
                    .map(
                        |n| match (n.feature(), n.bin(), n.threshold(), n.children()) {
                            (Some(f), Some(b), Some(t), Some((l, r))) => {
                                Node::split(f, b, t, l, r, n.value(), n.cover())
                            }
                            _ if n.is_leaf() => Node::leaf(n.value(), n.cover()),
                            _ => Node::pending(n.value(), n.cover()),
                        },
                    )
                    .collect();
                Tree::new(nodes).unwrap()
            })
            .collect();
        let rebuilt = TreeModel::from_parts(
            model.dim(),
            model.loss(),
            *model.params(),
            model.base_score(),
            edges.map(|e| Binning::new(e).unwrap()),
            trees,
        )
        .unwrap();
        assert_eq!(rebuilt, model);
    }
}

/// Where the first node of the first tree starts in the flat layout.
fn first_node_at(model: &TreeModel) -> usize {
    let binning: usize = model
        .binning()
        .unwrap()
        .all_edges()
        .iter()
        .map(|e| 1 + e.len())
        .sum();
    11 + binning + 2
}

fn flat_error(flat: &Array1<f64>) -> String {
    TreeModel::from_flat(flat.view())
        .expect_err("a corrupted layout must be rejected")
        .to_string()
}

#[test]
fn from_flat_rejects_corrupted_layouts_naming_the_problem() {
    let (x, y) = xor_data(300, 8);
    let model = train_pooled(x.view(), y.view(), TreeLoss::Logistic, depth4(), 3).unwrap();
    let flat = model.to_flat();
    let node = first_node_at(&model);
    assert!(model.trees()[0].nodes()[0].feature().is_some());
    let corrupt = |at: usize, v: f64| {
        let mut f = flat.clone();
        f[at] = v;
        flat_error(&f)
    };
    let e = corrupt(0, 3.0);
    assert!(e.contains("layout version 3 is not supported"), "{e}");
    let e = corrupt(1, 2.5);
    assert!(e.contains("dim (value 1) is 2.5"), "{e}");
    let e = corrupt(2, 7.0);
    assert!(e.contains("the loss"), "{e}");
    let e = corrupt(4, 0.0);
    assert!(e.contains("learning_rate"), "{e}");
    let e = corrupt(9, f64::NAN);
    assert!(e.contains("base_score (value 9) is not finite"), "{e}");
    let e = corrupt(node, 6.0);
    assert!(e.contains("the feature of node 0 of tree 0"), "{e}");
    let e = corrupt(node + 2, 123.0);
    assert!(e.contains("is not edge"), "{e}");
    let e = corrupt(node + 3, 0.0);
    assert!(e.contains("child 0 is not a later node"), "{e}");
    let e = corrupt(node + 3, 1000.0);
    assert!(e.contains("the left child of node 0 of tree 0"), "{e}");
    let e = corrupt(node + 5, f64::INFINITY);
    assert!(e.contains("the value of node 0 of tree 0"), "{e}");
    // the root of tree 0 marked pending while more trees follow
    let mut f = flat.clone();
    f.slice_axis_mut(Axis(0), Slice::from(node..node + 5))
        .assign(&ndarray::arr1(&[-2.0, -1.0, 0.0, -1.0, -1.0]));
    let e = flat_error(&f);
    assert!(e.contains("is not the child of an earlier node"), "{e}");
    let e = flat_error(
        &flat
            .slice_axis(Axis(0), Slice::from(..flat.len() - 3))
            .to_owned(),
    );
    assert!(e.contains("the layout ends after"), "{e}");
    let mut longer = flat.to_vec();
    longer.push(0.0);
    let e = flat_error(&Array1::from(longer));
    assert!(e.contains("1 values after the last tree"), "{e}");
    // Non-ascending edges of feature 0.
    let mut f = flat.clone();
    if flat[11] >= 2.0 {
        f[13] = f[12];
        let e = flat_error(&f);
        assert!(e.contains("not strictly ascending"), "{e}");
    }
}

#[test]
fn a_pending_node_is_only_allowed_in_the_last_tree() {
    let binning = Binning::new(vec![vec![0.0]]).unwrap();
    let stump = || {
        Tree::new(vec![
            Node::split(0, 0, 0.0, 1, 2, 0.0, 2.0),
            Node::leaf(-0.1, 1.0),
            Node::pending(0.1, 1.0),
        ])
        .unwrap()
    };
    let params = TreeParams::default();
    let ok = TreeModel::from_parts(
        1,
        TreeLoss::Logistic,
        params,
        0.0,
        Some(binning.clone()),
        vec![stump()],
    );
    assert_eq!(ok.unwrap().request(), Request::Level { nodes: 1 });
    let e = TreeModel::from_parts(
        1,
        TreeLoss::Logistic,
        params,
        0.0,
        Some(binning.clone()),
        vec![stump(), stump()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tree 0, node 2: is pending but only the last tree may grow"),
        "{e}"
    );
    let e = TreeModel::from_parts(1, TreeLoss::Logistic, params, 0.0, None, vec![stump()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 trees but no binning"), "{e}");
    let e = Tree::new(vec![
        Node::split(0, 0, 0.0, 1, 1, 0.0, 2.0),
        Node::leaf(-0.1, 1.0),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("child 1 already has a parent"), "{e}");
}

/// `v(S)` of the path-dependent expectation, by direct recursion.
fn coalition_value(tree: &Tree, node: usize, row: &[f64], set: u32) -> f64 {
    let n = &tree.nodes()[node];
    match *n.kind() {
        NodeKind::Split {
            feature,
            threshold,
            left,
            right,
            ..
        } => {
            if set & (1 << feature) != 0 {
                let next = if row[feature] <= threshold {
                    left
                } else {
                    right
                };
                coalition_value(tree, next, row, set)
            } else {
                let (cl, cr) = (tree.nodes()[left].cover(), tree.nodes()[right].cover());
                (cl * coalition_value(tree, left, row, set)
                    + cr * coalition_value(tree, right, row, set))
                    / (cl + cr)
            }
        }
        _ => n.value(),
    }
}

fn brute_force_shapley(model: &TreeModel, row: &[f64]) -> Vec<f64> {
    let m = model.dim();
    let v = |set: u32| -> f64 {
        model.base_score()
            + model
                .trees()
                .iter()
                .map(|t| coalition_value(t, 0, row, set))
                .sum::<f64>()
    };
    let factorial = |k: usize| (1..=k).map(|i| i as f64).product::<f64>();
    (0..m)
        .map(|i| {
            (0u32..1 << m)
                .filter(|set| set & (1 << i) == 0)
                .map(|set| {
                    let size = set.count_ones() as usize;
                    let weight = factorial(size) * factorial(m - size - 1) / factorial(m);
                    weight * (v(set | (1 << i)) - v(set))
                })
                .sum()
        })
        .collect()
}

#[test]
fn tree_shap_sums_to_the_margin_minus_the_expected_margin() {
    let (x, y) = xor_data(600, 9);
    let model = train_pooled(x.view(), y.view(), TreeLoss::Logistic, depth4(), 10).unwrap();
    let (tx, _) = xor_data(300, 10);
    let margins = model.margin(tx.view()).unwrap();
    let mut largest = 0.0f64;
    for (row, margin) in tx.rows().into_iter().zip(&margins) {
        let (expected, phi) = tree_shap(&model, row).unwrap();
        let gap = (phi.sum() - (margin - expected)).abs();
        largest = largest.max(gap);
    }
    assert!(largest < 1e-9, "largest gap {largest}");
    // The informative features carry the explanation.
    let mut importance = [0.0; 6];
    for row in tx.rows() {
        let (_, phi) = tree_shap(&model, row).unwrap();
        for (m, p) in importance.iter_mut().zip(&phi) {
            *m += p.abs();
        }
    }
    assert!(importance[0].min(importance[1]) > importance[2..].iter().copied().fold(0.0, f64::max));
}

#[test]
fn tree_shap_matches_brute_force_shapley_values_on_small_trees() {
    // dim 3 with depth 4 repeats features on a path; dim 5 with depth 3 does not have to.
    for (dim, depth, seed) in [(3usize, 4u32, 11u64), (5, 3, 12)] {
        let (x, y) = regression_data(400, seed);
        let x = x.slice_axis(Axis(1), Slice::from(..dim)).to_owned();
        let params = TreeParams {
            max_depth: depth,
            learning_rate: 0.5,
            ..TreeParams::default()
        };
        let model = train_pooled(x.view(), y.view(), TreeLoss::Squared, params, 3).unwrap();
        let repeats = model.trees().iter().any(|t| {
            // a split at depth `depth - 1` ends a path of `depth` splits
            (1..t.nodes().len())
                .any(|i| t.depth(i) == depth - 1 && t.nodes()[i].feature().is_some())
        });
        assert!(repeats, "the trees are too shallow to test");
        let expected_empty = model.base_score()
            + model
                .trees()
                .iter()
                .map(|t| coalition_value(t, 0, &[0.0; 5][..dim], 0))
                .sum::<f64>();
        for row in x.rows().into_iter().take(40) {
            let (expected, phi) = tree_shap(&model, row).unwrap();
            assert!((expected - expected_empty).abs() < 1e-9);
            let brute = brute_force_shapley(&model, row.as_slice().unwrap());
            for (a, b) in phi.iter().zip(&brute) {
                assert!(
                    (a - b).abs() < 1e-9,
                    "dim {dim}: TreeSHAP {a} vs brute force {b}"
                );
            }
        }
    }
}

#[test]
fn sketch_cells_have_exact_boundaries_and_absorb_values_beyond_the_grid() {
    assert_eq!(sketch_cell_upper(sketch_cell(0.0)), Some(0.0));
    assert_eq!(sketch_cell_upper(sketch_cell(1.0)), Some(1.0));
    assert_ne!(sketch_cell(0.0), sketch_cell(1.0));
    assert_eq!(sketch_cell(1e-300), sketch_cell(0.01));
    for k in -800i64..=800 {
        let v = k as f64 / 100.0;
        let cell = sketch_cell(v);
        assert_eq!(sketch_cell_upper(cell), Some(v), "value {v}");
        let above = sketch_cell(v + 1e-9);
        if k < 800 {
            assert_eq!(above, cell + 1, "just above {v}");
        }
    }
    assert_eq!(sketch_cell(-8.0), 0);
    assert_eq!(sketch_cell(-1e300), 0);
    assert_eq!(sketch_cell(f64::MIN), 0);
    assert_eq!(sketch_cell(8.000001), SKETCH_CELLS - 1);
    assert_eq!(sketch_cell(f64::MAX), SKETCH_CELLS - 1);
    assert_eq!(sketch_cell_upper(SKETCH_CELLS - 1), None);
    // Extreme values in a client's rows land in the outer cells; no edge beyond the grid.
    let mut x = Array2::zeros((6, 1));
    for (i, v) in [-1e300, -9.0, 0.5, 1.5, 9.0, 1e300].iter().enumerate() {
        x[[i, 0]] = *v;
    }
    let y = Array1::zeros(6);
    let model = TreeModel::new(1, TreeLoss::Squared, TreeParams::default()).unwrap();
    let TreeStatistics::Sketch(sketch) =
        local_statistics(&model, x.view(), y.view(), None).unwrap()
    else {
        panic!("a sketch is asked first")
    };
    assert_eq!(sketch.feature_counts(0)[0], 2.0);
    assert_eq!(sketch.feature_counts(0)[SKETCH_CELLS - 1], 2.0);
    assert_eq!(sketch.counts().iter().sum::<f64>(), 6.0);
    let model = model.apply(&TreeStatistics::Sketch(sketch)).unwrap();
    assert_eq!(model.binning().unwrap().edges(0), &[-8.0, 0.5, 1.5]);
    x[[0, 0]] = f64::NAN;
    assert!(matches!(
        local_statistics(&model, x.view(), y.view(), None),
        Err(LearningError::NonFiniteFeature {
            row: 0,
            column: 0,
            ..
        })
    ));
}

#[test]
fn binning_has_quantile_edges_and_one_edge_for_binary_features() {
    let n = 5000;
    let mut rng = seeded_test_rng(13);
    let mut x = Array2::zeros((n, 5));
    for i in 0..n {
        x[[i, 0]] = normal(&mut rng);
        x[[i, 1]] = f64::from(rng.random::<f64>() < 0.02);
        x[[i, 2]] = f64::from(rng.random::<f64>() < 0.98);
        x[[i, 3]] = 0.7;
        x[[i, 4]] = (rng.random::<f64>() * 10.0).floor() / 4.0; // 10 distinct values
    }
    let y = Array1::zeros(n);
    let params = TreeParams {
        max_bins: 32,
        ..TreeParams::default()
    };
    let model = TreeModel::new(5, TreeLoss::Squared, params).unwrap();
    let stats = local_statistics(&model, x.view(), y.view(), None).unwrap();
    let binning = model.apply(&stats).unwrap().binning().unwrap().clone();
    assert_eq!(binning.edges(1), &[0.0]);
    assert_eq!(binning.edges(2), &[0.0]);
    assert!(binning.edges(3).is_empty());
    assert_eq!(binning.edges(4).len(), 9);
    let numeric = binning.edges(0);
    assert!(
        numeric.len() <= 31 && numeric.len() >= 25,
        "{} edges",
        numeric.len()
    );
    let mut per_bin = vec![0usize; numeric.len() + 1];
    for v in x.column(0) {
        per_bin[binning.bin(0, *v)] += 1;
    }
    let largest = *per_bin.iter().max().unwrap();
    assert!(largest <= 2 * n / 32, "a bin holds {largest} of {n} rows");
    // bin(x) <= b exactly when x <= edges[b].
    for v in x.column(0).iter().take(500) {
        for (b, e) in numeric.iter().enumerate() {
            assert_eq!(binning.bin(0, *v) <= b, *v <= *e);
        }
    }
    for f in 0..5 {
        assert!(binning.bins(f) <= 32);
    }
    assert_eq!(binning.edge_index(0, numeric[3]), Some(3));
    assert_eq!(binning.edge_index(0, numeric[3] + 1e-9), None);
    assert_eq!(binning.edge_index(9, 0.0), None);
}

#[test]
fn noise_in_the_sketch_is_floored_before_the_quantiles() {
    let (x, y) = xor_data(2000, 14);
    let model = TreeModel::new(6, TreeLoss::Logistic, TreeParams::default()).unwrap();
    let mut stats = local_statistics(&model, x.view(), y.view(), None).unwrap();
    let mut rng = seeded_test_rng(15);
    stats.add_gaussian_noise(0.5, &mut rng).unwrap();
    assert_eq!(stats.noise_std(), 0.5);
    assert_eq!(stats.len(), 6 * SKETCH_CELLS);
    let binning = model.apply(&stats).unwrap().binning().unwrap().clone();
    // The binary column keeps its edge despite noise in the 1600 empty cells.
    assert_eq!(binning.edges(5)[0], 0.0);
    assert!(binning.edges(5).len() <= 2);
    for f in 0..5 {
        let edges = binning.edges(f);
        assert!(edges.len() >= 20, "feature {f}: {} edges", edges.len());
        assert!(edges[0] > -4.0 && *edges.last().unwrap() < 4.0);
    }
}

fn hand_model(edges: Vec<Vec<f64>>, params: TreeParams) -> TreeModel {
    let dim = edges.len();
    TreeModel::from_parts(
        dim,
        TreeLoss::Squared,
        params,
        0.0,
        Some(Binning::new(edges).unwrap()),
        Vec::new(),
    )
    .unwrap()
}

#[test]
fn apply_picks_the_best_gain_with_ties_to_the_lowest_feature_and_bin() {
    let params = TreeParams {
        max_depth: 1,
        learning_rate: 0.5,
        lambda: 1.0,
        min_child_weight: 0.0,
        gamma: 0.0,
        max_bins: 4,
    };
    // Two identical features of 3 bins, and a third with a weaker split.
    let model = hand_model(vec![vec![0.0, 1.0], vec![0.0, 1.0], vec![0.0, 1.0]], params);
    let g = vec![-4.0, 0.0, 4.0, -4.0, 0.0, 4.0, -2.0, 0.0, 2.0];
    let h = vec![2.0, 0.0, 2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0];
    let stats = TreeStatistics::Level(Histograms::from_parts(1, g, h, 8, 0.0).unwrap());
    let next = model.apply(&stats).unwrap();
    let tree = &next.trees()[0];
    let root = tree.nodes()[0];
    // Bins 0 and 1 give the same partition (bin 1 is empty): the lowest bin wins.
    assert_eq!(
        (root.feature(), root.bin(), root.threshold()),
        (Some(0), Some(0), Some(0.0))
    );
    assert!(next.round_done());
    let (l, r) = root.children().unwrap();
    assert!(tree.nodes()[l].is_leaf() && tree.nodes()[r].is_leaf());
    assert!((tree.nodes()[l].value() - (-0.5 * -4.0 / 3.0)).abs() < 1e-15);
    assert!((tree.nodes()[r].value() - (-0.5 * 4.0 / 3.0)).abs() < 1e-15);
    assert_eq!(tree.nodes()[l].cover(), 2.0);
    assert_eq!(root.value(), 0.0);
    assert_eq!(root.cover(), 4.0);
    // gain = 0.5 (16/3 + 16/3 - 0) = 16/3: a gamma of 6 forbids the split.
    let strict = hand_model(
        vec![vec![0.0, 1.0]; 3],
        TreeParams {
            gamma: 6.0,
            ..params
        },
    );
    let next = strict.apply(&stats).unwrap();
    assert_eq!(next.trees()[0].nodes().len(), 1);
    assert!(next.trees()[0].nodes()[0].is_leaf());
    // min_child_weight 2.5: no side reaches it.
    let heavy = hand_model(
        vec![vec![0.0, 1.0]; 3],
        TreeParams {
            min_child_weight: 2.5,
            ..params
        },
    );
    assert_eq!(heavy.apply(&stats).unwrap().trees()[0].nodes().len(), 1);
}

#[test]
fn training_respects_max_depth_min_child_weight_and_gamma() {
    let (x, y) = regression_data(600, 16);
    for depth in [1u32, 2, 5] {
        let params = TreeParams {
            max_depth: depth,
            ..TreeParams::default()
        };
        let model = train_pooled(x.view(), y.view(), TreeLoss::Squared, params, 4).unwrap();
        assert!(model.trees().iter().all(|t| t.max_depth() <= depth));
        assert!(model.trees().iter().any(|t| t.max_depth() == depth));
    }
    // Squared loss: h = 1, so a cover is a row count.
    let params = TreeParams {
        min_child_weight: 80.0,
        ..TreeParams::default()
    };
    let model = train_pooled(x.view(), y.view(), TreeLoss::Squared, params, 4).unwrap();
    for t in model.trees() {
        assert!(t.nodes().len() > 1);
        for n in t.nodes() {
            assert!(n.cover() >= 80.0, "cover {}", n.cover());
        }
    }
    let params = TreeParams {
        gamma: 1e9,
        ..TreeParams::default()
    };
    let model = train_pooled(x.view(), y.view(), TreeLoss::Squared, params, 3).unwrap();
    assert!(model.trees().iter().all(|t| t.nodes().len() == 1));
    // The single leaves still fit the offset: -lr * sum(g) / (n + λ).
    let mean = y.mean().unwrap();
    let first = model.trees()[0].nodes()[0].value();
    assert!((first - 0.1 * mean * 600.0 / 601.0).abs() < 1e-9);
}

#[test]
fn noisy_statistics_never_produce_non_finite_leaves() {
    let (x, y) = xor_data(500, 17);
    for (sigma, lambda, mcw) in [(5.0, 1.0, 1.0), (200.0, 0.0, 0.0), (1e6, 0.0, 0.0)] {
        let params = TreeParams {
            lambda,
            min_child_weight: mcw,
            ..depth4()
        };
        let mut model = TreeModel::new(6, TreeLoss::Logistic, params).unwrap();
        let mut rng = seeded_test_rng(18);
        for _ in 0..1 + 5 * 4 {
            if model.binning().is_some() && model.complete_trees() >= 5 {
                break;
            }
            let mut stats = local_statistics(&model, x.view(), y.view(), None).unwrap();
            stats.add_gaussian_noise(sigma, &mut rng).unwrap();
            model.check_statistics(&stats).unwrap();
            model = model.apply(&stats).unwrap();
        }
        assert_eq!(model.complete_trees(), 5);
        for t in model.trees() {
            for n in t.nodes() {
                assert!(n.value().is_finite() && n.cover().is_finite());
            }
        }
        assert!(
            model
                .predict(x.view())
                .unwrap()
                .iter()
                .all(|p| p.is_finite())
        );
        assert_eq!(TreeModel::from_flat(model.to_flat().view()).unwrap(), model);
        let (expected, phi) = tree_shap(&model, x.row(0)).unwrap();
        assert!(expected.is_finite() && phi.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn check_statistics_and_add_reject_the_wrong_kind_or_shape() {
    let (x, y) = xor_data(200, 19);
    let model = TreeModel::new(6, TreeLoss::Logistic, depth4()).unwrap();
    let sketch = local_statistics(&model, x.view(), y.view(), None).unwrap();
    let binned = model.apply(&sketch).unwrap();
    let level = local_statistics(&binned, x.view(), y.view(), None).unwrap();
    let e = model.check_statistics(&level).unwrap_err().to_string();
    assert!(e.contains("asks for a feature sketch"), "{e}");
    let e = binned.check_statistics(&sketch).unwrap_err().to_string();
    assert!(e.contains("histograms of 1 nodes"), "{e}");
    let mut s = sketch.clone();
    assert!(s.add(&level).is_err());
    let small = TreeModel::new(5, TreeLoss::Logistic, depth4()).unwrap();
    let other = local_statistics(
        &small,
        x.slice_axis(Axis(1), Slice::from(..5)),
        y.view(),
        None,
    )
    .unwrap();
    let e = s.add(&other).unwrap_err().to_string();
    assert!(e.contains("5 features to one of 6"), "{e}");
    let e = model.check_statistics(&other).unwrap_err().to_string();
    assert!(e.contains("has 5 features but the model has 6"), "{e}");
    // A negative hessian sum is refused unless the statistics were noised.
    let TreeStatistics::Level(h) = &level else {
        panic!("level")
    };
    let mut hess = h.hess().to_vec();
    hess[0] = -1.0;
    let bad = Histograms::from_parts(1, h.grad().to_vec(), hess.clone(), 1, 0.0).unwrap();
    let e = binned
        .check_statistics(&TreeStatistics::Level(bad))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hessian sum 0 is -1"), "{e}");
    let noised = Histograms::from_parts(1, h.grad().to_vec(), hess, 1, 0.5).unwrap();
    binned
        .check_statistics(&TreeStatistics::Level(noised))
        .unwrap();
    let wrong = Histograms::from_parts(2, vec![0.0; 4], vec![0.0; 4], 0, 0.0).unwrap();
    assert!(
        binned
            .check_statistics(&TreeStatistics::Level(wrong))
            .is_err()
    );
    assert!(Histograms::from_parts(1, vec![f64::NAN], vec![0.0], 0, 0.0).is_err());
    assert!(Sketch::from_parts(1, vec![0.0; 3], 0, 0.0).is_err());
    let mut rng = seeded_test_rng(20);
    let mut s = sketch.clone();
    assert!(s.add_gaussian_noise(-1.0, &mut rng).is_err());
    assert!(s.add_gaussian_noise(f64::NAN, &mut rng).is_err());
    assert_eq!(s, sketch);
}

#[test]
fn sensitivity_and_clipping_bound_one_records_contribution() {
    let (x, y) = regression_data(300, 21);
    let model = TreeModel::new(5, TreeLoss::Squared, depth4()).unwrap();
    assert_eq!(sensitivity(&model, None), 5f64.sqrt());
    let binned = model
        .apply(&local_statistics(&model, x.view(), y.view(), None).unwrap())
        .unwrap();
    assert_eq!(sensitivity(&binned, None), f64::INFINITY);
    let bound = Some(GradBound { grad_clip: 0.5 });
    assert!((sensitivity(&binned, bound) - (5.0f64 * 1.25).sqrt()).abs() < 1e-15);
    let logistic = TreeModel::from_parts(
        5,
        TreeLoss::Logistic,
        depth4(),
        0.0,
        binned.binning().cloned(),
        Vec::new(),
    )
    .unwrap();
    assert!((sensitivity(&logistic, None) - (5.0f64 * (1.0 + 1.0 / 16.0)).sqrt()).abs() < 1e-15);
    // Removing the record with the largest target changes the clipped
    // histograms by exactly the sensitivity (its g = -y is clipped).
    let far = (0..y.len())
        .max_by(|&a, &b| y[a].abs().total_cmp(&y[b].abs()))
        .unwrap();
    assert!(y[far].abs() > 0.5);
    let others: Vec<usize> = (0..y.len()).filter(|&i| i != far).collect();
    let all = local_statistics(&binned, x.view(), y.view(), bound).unwrap();
    let without = local_statistics(
        &binned,
        x.select(Axis(0), &others).view(),
        y.select(Axis(0), &others).view(),
        bound,
    )
    .unwrap();
    let (TreeStatistics::Level(a), TreeStatistics::Level(b)) = (&all, &without) else {
        panic!("levels")
    };
    let change: f64 = a
        .grad()
        .iter()
        .zip(b.grad())
        .chain(a.hess().iter().zip(b.hess()))
        .map(|(u, v)| (u - v) * (u - v))
        .sum::<f64>()
        .sqrt();
    assert!(
        (change - sensitivity(&binned, bound)).abs() < 1e-9,
        "change {change}"
    );
    // Every bin's gradient sum is within clip × rows.
    assert!(a.grad().iter().all(|g| g.abs() <= 0.5 * 300.0 + 1e-9));
    let e = local_statistics(
        &binned,
        x.view(),
        y.view(),
        Some(GradBound { grad_clip: 0.0 }),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("grad_clip"), "{e}");
}

#[test]
fn params_validation_names_the_field() {
    assert!(TreeParams::default().validate().is_ok());
    let d = TreeParams::default();
    let cases = [
        (TreeParams { max_depth: 0, ..d }, "max_depth"),
        (TreeParams { max_depth: 13, ..d }, "max_depth"),
        (
            TreeParams {
                learning_rate: 0.0,
                ..d
            },
            "learning_rate",
        ),
        (
            TreeParams {
                learning_rate: 1.5,
                ..d
            },
            "learning_rate",
        ),
        (TreeParams { lambda: -1.0, ..d }, "lambda"),
        (
            TreeParams {
                min_child_weight: f64::NAN,
                ..d
            },
            "min_child_weight",
        ),
        (TreeParams { gamma: -0.1, ..d }, "gamma"),
        (TreeParams { max_bins: 1, ..d }, "bins"),
        (TreeParams { max_bins: 257, ..d }, "bins"),
    ];
    for (params, field) in cases {
        match params.validate() {
            Err(LearningError::InvalidParam { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let d = TreeParams::default();
    assert_eq!(
        (
            d.max_depth,
            d.learning_rate,
            d.lambda,
            d.min_child_weight,
            d.gamma,
            d.max_bins
        ),
        (6, 0.1, 1.0, 1.0, 0.0, 64)
    );
}

#[test]
fn the_local_cache_gives_the_same_statistics_and_notices_other_rows() {
    let (x, y) = xor_data(400, 22);
    let (other_x, other_y) = xor_data(400, 23);
    let mut model = TreeModel::new(6, TreeLoss::Logistic, depth4()).unwrap();
    let mut cache = LocalCache::new();
    for step in 0..16 {
        let plain = local_statistics(&model, x.view(), y.view(), None).unwrap();
        let cached = local_statistics_cached(&model, x.view(), y.view(), None, &mut cache).unwrap();
        assert_eq!(plain, cached, "step {step}");
        // Other rows through the same cache: recomputed, not reused.
        if step % 5 == 4 {
            let plain = local_statistics(&model, other_x.view(), other_y.view(), None).unwrap();
            let cached =
                local_statistics_cached(&model, other_x.view(), other_y.view(), None, &mut cache)
                    .unwrap();
            assert_eq!(plain, cached, "step {step}, other rows");
        }
        model = model.apply(&plain).unwrap();
    }
    assert!(model.complete_trees() >= 3);
    // A different model with the same binning (fewer trees) is not mistaken for a prefix.
    let short = train_pooled(x.view(), y.view(), TreeLoss::Logistic, depth4(), 1).unwrap();
    let plain = local_statistics(&short, x.view(), y.view(), None).unwrap();
    let cached = local_statistics_cached(&short, x.view(), y.view(), None, &mut cache).unwrap();
    assert_eq!(plain, cached);
}

#[test]
fn the_data_free_binning_uses_normal_quantiles_and_one_edge_for_binary_columns() {
    let binning = Binning::standard_normal(&[false, true, false], 40).unwrap();
    assert_eq!(binning.edges(1), &[0.0]);
    let edges = binning.edges(0);
    assert_eq!(edges, binning.edges(2));
    assert_eq!(edges.len(), 39);
    assert_eq!(edges[19], 0.0); // the median
    assert_eq!(edges[38], 1.96); // the 97.5% quantile
    assert_eq!(edges[0], -1.96);
    for (a, b) in edges.iter().zip(edges.iter().rev()) {
        assert!((a + b).abs() < 1e-12, "{a} and {b} are not symmetric");
    }
    assert_eq!(edges[30], 0.76); // Φ⁻¹(31/40) = 0.7554
}

#[test]
fn bins_by_cell_lookup_equal_bins_by_search() {
    let mut rng = seeded_test_rng(24);
    let on_grid = Binning::new(vec![vec![-8.0, -1.5, 0.0, 0.01, 2.37, 8.0]]).unwrap();
    let off_grid = Binning::new(vec![vec![-1.234_567, 0.0, 0.5]]).unwrap();
    let mut values: Vec<f64> = (0..20_000).map(|_| 4.0 * normal(&mut rng)).collect();
    values.extend([
        -8.0, -1.5, 0.0, 0.01, 2.37, 8.0, 8.0001, -1e300, 1e300, 1.234_567,
    ]);
    values.extend((-900..=900).map(|k| k as f64 / 100.0));
    for b in [&on_grid, &off_grid] {
        for &v in &values {
            let search = b.edges(0).partition_point(|&e| e < v);
            assert_eq!(b.bin(0, v), search, "value {v}");
        }
    }
}

/// A model that grows random trees over the data-free bins of `dim` numeric
/// features.
fn random_model(dim: usize, max_depth: u32, seed: u32) -> TreeModel {
    let params = TreeParams {
        max_depth,
        learning_rate: 0.3,
        ..TreeParams::default()
    };
    let binning = Binning::standard_normal(&vec![false; dim], 16).unwrap();
    TreeModel::from_parts(
        dim,
        TreeLoss::Logistic,
        params,
        0.0,
        Some(binning),
        Vec::new(),
    )
    .unwrap()
    .with_growth(TreeGrowth::Random { seed })
    .unwrap()
}

/// The splits of a tree: (feature, bin) in node order.
fn structure(tree: &Tree) -> Vec<Option<(usize, usize)>> {
    tree.nodes()
        .iter()
        .map(|n| n.feature().zip(n.bin()))
        .collect()
}

/// One step of a random model on `x`, `y`: its leaf sums, then the next model.
fn random_step(model: &TreeModel, x: ArrayView2<f64>, y: ArrayView1<f64>) -> TreeModel {
    let stats = local_statistics(model, x, y, None).unwrap();
    model.apply(&stats).unwrap()
}

#[test]
fn random_growth_releases_only_leaf_sums_over_a_data_free_structure() {
    let (x, y) = xor_data(400, 31);
    let (other_x, other_y) = xor_data(50, 32);
    let model = random_model(x.ncols(), 3, 7);
    let structure_0 = model.next_structure().expect("a random structure");
    let leaves = structure_0.pending().len();
    assert_eq!(model.request(), Request::Leaves { leaves });
    assert!((2..=8).contains(&leaves), "{leaves} leaves");
    // One (g, h) pair per record: sensitivity sqrt(1 + 1/16), not sqrt(dim · …).
    let expected = (1.0f64 + 0.0625).sqrt();
    assert!((sensitivity(&model, None) - expected).abs() < 1e-12);

    // The leaf sums add up to the totals: every row reaches exactly one leaf.
    let stats = local_statistics(&model, x.view(), y.view(), None).unwrap();
    let TreeStatistics::Level(h) = &stats else {
        panic!("leaf sums are histograms");
    };
    assert_eq!((h.nodes(), h.bins_per_node()), (leaves, 1));
    let g_total: f64 = y.iter().map(|&y| 0.5 - y).sum();
    assert!((h.grad().iter().sum::<f64>() - g_total).abs() < 1e-9);
    assert!((h.hess().iter().sum::<f64>() - 0.25 * 400.0).abs() < 1e-9);
    assert_eq!(stats.rows(), 400);

    // The structure does not depend on the data: other rows grow the same
    // splits, with other leaf values; the next tree's structure differs.
    let a = random_step(&model, x.view(), y.view());
    let b = random_step(&model, other_x.view(), other_y.view());
    assert_eq!(structure(&a.trees()[0]), structure(&structure_0));
    assert_eq!(structure(&a.trees()[0]), structure(&b.trees()[0]));
    assert_ne!(a.trees()[0], b.trees()[0]);
    assert!(a.round_done() && a.trees()[0].is_complete());
    // The next structure is a function of the model (its released leaf
    // sums), not of anyone's rows: the same model drawn anew, or read back
    // from its flat layout, draws the same.
    let next = a.next_structure().unwrap();
    let again = TreeModel::from_flat(a.to_flat().view()).unwrap();
    assert_eq!(again.next_structure(), Some(next.clone()));
    assert_ne!(structure(&next), structure(&structure_0));
    // Another seed draws other structures.
    let other_seed = random_model(x.ncols(), 3, 8).next_structure().unwrap();
    assert_ne!(structure(&other_seed), structure(&structure_0));

    // Leaf values: -lr G / (H + λ) without noise, and the margin learns.
    let leaf = &a.trees()[0].nodes()[a.trees()[0].nodes().len() - 1];
    assert!(leaf.is_leaf() && leaf.cover() > 0.0);
    let mut m = model;
    for _ in 0..30 {
        m = random_step(&m, x.view(), y.view());
    }
    assert_eq!(m.complete_trees(), 30);
    let auc = roc_auc(m.predict(x.view()).unwrap().view(), y.view()).unwrap();
    assert!(auc > 0.75, "random trees on XOR: AUC {auc}");
}

#[test]
fn random_growth_survives_the_flat_layout_and_refuses_a_missing_binning() {
    let (x, y) = xor_data(200, 33);
    let mut model = random_model(x.ncols(), 2, 9);
    for _ in 0..3 {
        model = random_step(&model, x.view(), y.view());
    }
    let flat = model.to_flat();
    assert_eq!(flat[0], f64::from(FLAT_LAYOUT_VERSION_RANDOM));
    assert_eq!((flat[10], flat[11]), (1.0, 9.0));
    let back = TreeModel::from_flat(flat.view()).unwrap();
    assert_eq!(back, model);
    assert_eq!(back.growth(), TreeGrowth::Random { seed: 9 });
    assert_eq!(back.request(), model.request());
    // A histogram-grown model keeps layout version 1.
    let plain = train_pooled(x.view(), y.view(), TreeLoss::Logistic, depth4(), 1).unwrap();
    assert_eq!(plain.growth(), TreeGrowth::Histograms);
    assert_eq!(plain.to_flat()[0], f64::from(FLAT_LAYOUT_VERSION));

    let mut bad = flat.clone();
    bad[10] = 0.0;
    assert!(
        flat_error(&bad).contains("the growth code"),
        "{}",
        flat_error(&bad)
    );
    let no_binning = TreeModel::new(2, TreeLoss::Logistic, TreeParams::default())
        .unwrap()
        .with_growth(TreeGrowth::Random { seed: 0 });
    let e = no_binning.unwrap_err().to_string();
    assert!(e.contains("needs the binning"), "{e}");
}

#[test]
fn noisy_leaf_sums_give_bounded_leaf_values() {
    let (x, y) = xor_data(200, 34);
    let mut model = random_model(x.ncols(), 3, 10);
    let mut rng = seeded_test_rng(35);
    let step = 4.0 * model.params().learning_rate;
    for _ in 0..20 {
        let mut stats = local_statistics(&model, x.view(), y.view(), None).unwrap();
        stats.add_gaussian_noise(500.0, &mut rng).unwrap();
        model = model.apply(&stats).unwrap();
        for node in model.trees().last().unwrap().nodes() {
            assert!(node.value().is_finite() && node.value().abs() <= step + 1e-12);
            assert!(node.cover() >= MIN_COVER);
        }
    }
    // Shrinking by the noise std: large noise keeps the values small.
    let p = model.params();
    assert_eq!(private_leaf_value(p, -10.0, 40.0, 0.0), 0.3 * 10.0 / 41.0);
    // 1.5 noise stds: 1 + 1.5 · 6 = 10.
    assert_eq!(private_leaf_value(p, -10.0, -5.0, 6.0), 0.3 * 10.0 / 10.0);
    assert_eq!(private_leaf_value(p, -1e9, 0.0, 1.0), step);
    let shap = tree_shap(&model, x.row(0)).unwrap();
    let margin = model.margin_row(x.row(0)).unwrap();
    assert!((shap.0 + shap.1.sum() - margin).abs() < 1e-9);
}

#[test]
fn a_record_dp_run_grows_random_trees_and_plans_one_release_per_tree() {
    let family = crate::ModelFamily::GradientBoostedTrees;
    let mut settings = crate::ModelSettings {
        numeric_label: false,
        trees: TreeParams::default(),
        data_free: Some(vec![false, true]),
    };
    let dp = family.initial_for(2, 1, 5, &settings).unwrap();
    let model = TreeModel::from_flat(dp.params().view()).unwrap();
    assert_eq!(model.growth(), TreeGrowth::Random { seed: 5 });
    assert_eq!(model.binning().unwrap().edges(1), &[0.0]);
    assert_eq!(dp.ops().planned_releases(&dp, 40), 40);
    let mechanism = dp.ops().statistics_mechanism(&dp, 10.0, 1.0).unwrap();
    let direct = fedprofile_privacy::GaussianMechanism::new(10.0, (1.0f64 + 0.0625).sqrt());
    assert_eq!(Some(mechanism), direct.ok());
    // Without DP: the sketch, then one release per level.
    settings.data_free = None;
    let plain = family.initial_for(2, 1, 5, &settings).unwrap();
    assert_eq!(plain.ops().planned_releases(&plain, 40), 1 + 40 * 6);
}

/// The gradient-boosted-trees example of `docs/model-format-v2.md`.
fn documented_tree_file() -> crate::model_file_trees::GradientBoostedTreesFile {
    let doc = include_str!("../../../../docs/model-format-v2.md");
    let json = doc
        .split("```json\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("\"gradient_boosted_trees\""))
        .expect("the documented tree example");
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_model_file_records_the_growth_and_older_files_load_as_histograms() {
    use crate::model_file_trees::{GradientBoostedTreesFile, GrowthEntry};
    let file = documented_tree_file();
    assert_eq!(file.settings.growth, Some(GrowthEntry::Histograms));
    assert_eq!(file.to_model().unwrap().growth(), TreeGrowth::Histograms);
    // A file written before the growth was recorded.
    let mut older = file.clone();
    older.settings.growth = None;
    let json = serde_json::to_string(&older).unwrap();
    assert!(!json.contains("growth"), "{json}");
    let back: GradientBoostedTreesFile = serde_json::from_str(&json).unwrap();
    assert_eq!(back.to_model().unwrap().growth(), TreeGrowth::Histograms);

    // A random model keeps its growth and seed through the file.
    let (x, y) = xor_data(100, 37);
    let x = x.slice_axis(Axis(1), Slice::from(0..4)).to_owned();
    let mut model = file
        .to_model()
        .unwrap()
        .with_growth(TreeGrowth::Random { seed: 12 })
        .unwrap();
    model = random_step(&model, x.view(), y.view());
    let written = GradientBoostedTreesFile::new(
        file.target.clone(),
        file.positive_value.clone(),
        file.features.clone(),
        &model,
        file.provenance.clone(),
    )
    .unwrap();
    let json = serde_json::to_string(&written).unwrap();
    assert!(
        json.contains(r#""growth":{"kind":"random","seed":12}"#),
        "{json}"
    );
    let back: GradientBoostedTreesFile = serde_json::from_str(&json).unwrap();
    let loaded = back.to_model().unwrap();
    assert_eq!(loaded.growth(), TreeGrowth::Random { seed: 12 });
    assert_eq!(loaded.next_structure(), model.next_structure());
    // An unknown growth is refused.
    let bad = json.replace(r#""kind":"random""#, r#""kind":"greedy""#);
    let e = serde_json::from_str::<GradientBoostedTreesFile>(&bad).unwrap_err();
    assert!(e.to_string().contains("greedy"), "{e}");
}

#[test]
fn a_warm_start_grows_the_trees_the_runs_privacy_mode_asks_for() {
    let family = crate::ModelFamily::GradientBoostedTrees.ops();
    let earlier = documented_tree_file().to_model().unwrap();
    let random = earlier
        .clone()
        .with_growth(TreeGrowth::Random { seed: 4 })
        .unwrap();
    let mut settings = crate::ModelSettings {
        numeric_label: false,
        trees: TreeParams::default(),
        data_free: Some(vec![false, true, true, true]),
    };
    let growth = |m: &TreeModel, settings: &crate::ModelSettings| {
        let flat = family.warm_started(m.to_flat(), 9, settings).unwrap();
        let next = TreeModel::from_flat(flat.view()).unwrap();
        assert_eq!(next.trees(), m.trees(), "the earlier trees are kept");
        next.growth()
    };
    // Record-level DP: random trees, an earlier random model with its own
    // seed, an earlier histogram model with the run's.
    assert_eq!(growth(&random, &settings), TreeGrowth::Random { seed: 4 });
    assert_eq!(growth(&earlier, &settings), TreeGrowth::Random { seed: 9 });
    let dp = crate::AnyModel::from_parts(
        crate::ModelFamily::GradientBoostedTrees,
        family
            .warm_started(earlier.to_flat(), 9, &settings)
            .unwrap(),
        1,
    )
    .unwrap();
    assert_eq!(family.planned_releases(&dp, 30), 30);
    // Without DP: level histograms.
    settings.data_free = None;
    assert_eq!(growth(&random, &settings), TreeGrowth::Histograms);
    assert_eq!(growth(&earlier, &settings), TreeGrowth::Histograms);
}

#[test]
fn random_splits_favour_the_features_that_earlier_leaf_sums_found_useful() {
    // Only feature 0 carries the label; stumps, so each tree is one split.
    let (x, _) = xor_data(600, 38);
    let mut rng = seeded_test_rng(39);
    let y = x
        .column(0)
        .mapv(|v| f64::from(rng.random::<f64>() < sigmoid(3.0 * v)));
    let mut model = random_model(x.ncols(), 1, 13);
    for _ in 0..200 {
        model = random_step(&model, x.view(), y.view());
    }
    let on_0 = |trees: &[Tree]| {
        trees
            .iter()
            .filter(|t| t.nodes()[0].feature() == Some(0))
            .count()
    };
    // The first tree is drawn uniformly (no leaf sums yet); once the leaf
    // sums have shown feature 0 to explain the margin, it is drawn far more
    // often than the uniform 1 in 6 (25 of 150 trees; 53 with this seed,
    // 21 with uniform draws).
    let later = on_0(&model.trees()[50..]);
    assert!(
        later >= 40,
        "feature 0 split {later} times in trees 50..200"
    );
    // Every feature keeps its exploration share.
    for f in 1..x.ncols() {
        let n = model.trees()[50..]
            .iter()
            .filter(|t| t.nodes()[0].feature() == Some(f))
            .count();
        assert!(n >= 1, "feature {f} was never drawn");
    }
    let auc = roc_auc(model.predict(x.view()).unwrap().view(), y.view()).unwrap();
    assert!(auc > 0.8, "AUC {auc}");
}
