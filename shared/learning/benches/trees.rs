//! Prints the cost of federated gradient-boosted trees (no assertions):
//!
//! * one level of 80 features × 64 bins × 32 pending nodes: a partner's
//!   `local_statistics` on 5,000 rows (with no and with 99 complete trees
//!   before it), the coordinator's work (adding 4 partners' histograms,
//!   checking and applying them), and the size of one partner's release as
//!   `f64`;
//! * a whole 100-tree, depth-6 `train_pooled` on 7,000 rows × 45 features
//!   (30 numeric, 15 one-hot).
//!
//! `cargo bench -p fedprofile-learning --bench trees`; `BENCH_REPEAT` (default
//! 20) sets how many times each level figure is measured (the mean is shown).
//! Times are the thread's CPU time where Linux provides it, so that a loaded
//! machine does not inflate them.

use std::time::{Duration, Instant};

use fedprofile_learning::trees::{
    Binning, LocalCache, Node, Tree, TreeLoss, TreeModel, TreeParams, TreeStatistics,
    local_statistics, local_statistics_cached, train_pooled,
};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// This thread's CPU time (Linux `schedstat`), so that the figures do not
/// depend on the machine's load; the wall clock where it is unavailable.
#[derive(Clone, Copy)]
struct Clock {
    wall: Instant,
    cpu_ns: Option<u64>,
}

fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu_ns: cpu_ns(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu_ns, cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => self.wall.elapsed(),
        }
    }
}

fn normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The mean (CPU time is counted in scheduler ticks, so single runs are coarse).
fn mean(times: Vec<Duration>) -> Duration {
    times.iter().sum::<Duration>() / times.len().max(1) as u32
}

/// `rows` × `numeric + binary` encoded features and a nonlinear 0/1 label.
fn data(rows: usize, numeric: usize, binary: usize, seed: u64) -> (Array2<f64>, Array1<f64>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let dim = numeric + binary;
    let mut x = Array2::zeros((rows, dim));
    let mut y = Array1::zeros(rows);
    for i in 0..rows {
        for j in 0..numeric {
            x[[i, j]] = normal(&mut rng);
        }
        for j in numeric..dim {
            x[[i, j]] = f64::from(rng.random::<f64>() < 0.3);
        }
        let z = x[[i, 0]] * x[[i, 1]] + (x[[i, 2]] > 0.5) as u8 as f64 - 0.7 * x[[i, dim - 1]]
            + 0.5 * x[[i, 3]].abs()
            - 0.5;
        y[i] = f64::from(rng.random::<f64>() < 1.0 / (1.0 + (-2.0 * z).exp()));
    }
    (x, y)
}

/// A full binary tree of depth 5 (31 splits, the median edge of features
/// `0, 1, ...`) whose 32 bottom nodes are pending, or leaves.
fn depth5_tree(binning: &Binning, pending: bool) -> Tree {
    let mut nodes = Vec::new();
    for i in 0..63usize {
        let depth = (i + 1).ilog2();
        if depth < 5 {
            let f = i % binning.features();
            let bin = binning.edges(f).len() / 2;
            let t = binning.edges(f)[bin];
            nodes.push(Node::split(f, bin, t, 2 * i + 1, 2 * i + 2, 0.0, 1.0));
        } else if pending {
            nodes.push(Node::pending(0.01, 1.0));
        } else {
            nodes.push(Node::leaf(0.01 * (i as f64 - 47.0), 1.0));
        }
    }
    Tree::new(nodes).unwrap_or_else(|e| panic!("bench tree: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    println!(
        "times are {} (load average {})",
        if cpu_ns().is_some() {
            "this thread's CPU time"
        } else {
            "wall-clock"
        },
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );

    // --- one level: 80 features × 64 bins × 32 nodes, 5,000 rows per partner
    let params = TreeParams::default();
    let partners: Vec<(Array2<f64>, Array1<f64>)> =
        (0..4).map(|p| data(5000, 80, 0, 10 + p)).collect();
    let fresh = TreeModel::new(80, TreeLoss::Logistic, params)?;
    let sketch = local_statistics(&fresh, partners[0].0.view(), partners[0].1.view(), None)?;
    let binning = fresh
        .apply(&sketch)?
        .binning()
        .cloned()
        .ok_or("no binning")?;
    let bins: Vec<usize> = (0..80).map(|f| binning.bins(f)).collect();
    println!(
        "binning from one partner's sketch: {} to {} bins per feature, {} bins per node",
        bins.iter().min().unwrap_or(&0),
        bins.iter().max().unwrap_or(&0),
        binning.total_bins()
    );
    for prior in [0usize, 99] {
        let mut trees: Vec<Tree> = (0..prior).map(|_| depth5_tree(&binning, false)).collect();
        trees.push(depth5_tree(&binning, true));
        let model = TreeModel::from_parts(
            80,
            TreeLoss::Logistic,
            params,
            0.0,
            Some(binning.clone()),
            trees,
        )?;
        let mut local = Vec::new();
        let mut releases = Vec::new();
        for (p, (x, y)) in partners.iter().enumerate() {
            let start = Clock::start();
            let stats = local_statistics(&model, x.view(), y.view(), None)?;
            if p == 0 {
                local.push(start.elapsed());
                for _ in 1..repeat {
                    let start = Clock::start();
                    let again = local_statistics(&model, x.view(), y.view(), None)?;
                    local.push(start.elapsed());
                    std::hint::black_box(again);
                }
            }
            releases.push(stats);
        }
        // A partner that keeps a LocalCache has summed the earlier trees already.
        let mut cache = LocalCache::new();
        let (x, y) = (partners[0].0.view(), partners[0].1.view());
        let mut summed = || local_statistics_cached(&model, x, y, None, &mut cache);
        summed()?;
        let mut cached = Vec::new();
        for _ in 0..repeat {
            let start = Clock::start();
            let again = summed()?;
            cached.push(start.elapsed());
            std::hint::black_box(again);
        }
        let mut coordinator = Vec::new();
        for _ in 0..repeat {
            let start = Clock::start();
            let mut pooled = releases[0].clone();
            for r in &releases[1..] {
                model.check_statistics(r)?;
                pooled.add(r)?;
            }
            let next = model.apply(&pooled)?;
            coordinator.push(start.elapsed());
            std::hint::black_box(next);
        }
        println!(
            "level of 32 nodes × 80 features × {} bins, {prior} complete trees before it:",
            binning.total_bins() / 80
        );
        println!(
            "  partner local_statistics, 5,000 rows: {:.2} ms (mean of {repeat})",
            ms(mean(local))
        );
        println!(
            "  the same with a warm LocalCache: {:.2} ms (mean of {repeat})",
            ms(mean(cached))
        );
        println!(
            "  coordinator: check + add 4 partners' histograms + apply: {:.2} ms (mean of {repeat})",
            ms(mean(coordinator))
        );
        let TreeStatistics::Level(h) = &releases[0] else {
            return Err("expected level histograms".into());
        };
        println!(
            "  one partner's release: {} numbers = {} bytes as f64 ({} nodes, {} rows)",
            releases[0].len(),
            releases[0].len() * 8,
            h.nodes(),
            h.rows()
        );
    }

    // --- a whole pooled training: 100 trees, depth 6, 7,000 × 45
    let (x, y) = data(7000, 30, 15, 99);
    let start = Clock::start();
    let model = train_pooled(x.view(), y.view(), TreeLoss::Logistic, params, 100)?;
    let elapsed = start.elapsed();
    let nodes: usize = model.trees().iter().map(|t| t.nodes().len()).sum();
    println!(
        "train_pooled: 100 trees, depth 6, 7,000 rows × 45 features: {:.0} ms ({:.1} ms per tree, {nodes} nodes)",
        ms(elapsed),
        ms(elapsed) / 100.0
    );
    let start = Clock::start();
    let margin = model.margin(x.view())?;
    println!(
        "margin of 7,000 rows through 100 trees: {:.2} ms (mean {:.3})",
        ms(start.elapsed()),
        margin.mean().unwrap_or(0.0)
    );
    let start = Clock::start();
    let mut total = 0.0;
    for row in x.rows().into_iter().take(1000) {
        let (expected, phi) = fedprofile_learning::trees::tree_shap(&model, row)?;
        total += expected + phi.sum();
    }
    println!(
        "tree_shap of 1,000 rows over 100 trees: {:.0} ms ({total:.1})",
        ms(start.elapsed())
    );
    Ok(())
}
