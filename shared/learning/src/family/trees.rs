//! Gradient-boosted trees as a [`Family`] (see [`crate::trees`] for the
//! algorithm): a binary `label` (log loss) or a numeric `target` (squared
//! error); the model is a [`TreeModel`] travelling as flat parameters.
//!
//! A tree family is a *statistics* family with several exchanges per round:
//! a round is one tree, and each exchange asks the clients for what the model
//! as it stands needs ([`TreeModel::request`]): the binning sketch (once,
//! before the first tree), then one level's gradient and hessian histograms
//! per exchange. The coordinator adds the clients' statistics and
//! [`TreeModel::apply`]s them; the round is done when the tree has no pending
//! node. Under record-level DP the model starts with data-free bins and
//! grows random structures ([`TreeGrowth::Random`]): a round is one exchange,
//! the release of the sums of the tree's leaves. Each release gets Gaussian
//! noise of `σ = z · Δ` with `Δ` the L2 sensitivity of one record's
//! contribution ([`sensitivity`]); leaf values computed from noised sums are
//! post-processing.
//!
//! `score` writes the probability (log loss) or the prediction; `profile`
//! explains the margin by exact TreeSHAP contributions, which add up to the
//! margin minus the expected margin.

use ndarray::{Array1, ArrayView1, ArrayView2};

use super::{
    AnyModel, Evaluation, Family, LabelNeed, ModelFamily, ModelSettings, ProfileRow, ScoreTable,
    Statistics, StatisticsDp, StatisticsRules, StatisticsUpdate, Training, labels,
};
use crate::error::LearningError;
use crate::metrics::EvalSummary;
use crate::model_file::ModelDocument;
use crate::regression_metrics::RegressionSummary;
use crate::trees::{
    Binning, GradBound, LocalCache, TreeGrowth, TreeLoss, TreeModel, TreeStatistics,
    local_statistics_cached, sensitivity, tree_shap,
};

/// The bins and margins of the rows this process last computed statistics on.
static CACHE: std::sync::LazyLock<std::sync::Mutex<LocalCache>> =
    std::sync::LazyLock::new(Default::default);

/// Gradient-boosted trees.
#[derive(Debug, Clone, Copy)]
pub struct Trees;

fn model(m: &AnyModel) -> Result<TreeModel, LearningError> {
    TreeModel::from_flat(m.params().view())
}

fn trees(s: &Statistics) -> Result<&TreeStatistics, LearningError> {
    match s {
        Statistics::Trees(t) => Ok(t),
        other => Err(LearningError::InconsistentSummary {
            reason: format!(
                "a gradient_boosted_trees round needs tree statistics, got {}",
                other.kind()
            ),
        }),
    }
}

/// The seed of the random structures of a run with seed `seed` (folded into
/// 32 bits).
fn structure_seed(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// The per-record bound of a DP release: the clip norm `C` bounds the
/// squared-error gradient (`|g| ≤ C`); log-loss gradients are bounded anyway.
fn bound(clip_norm: f64) -> GradBound {
    GradBound {
        grad_clip: clip_norm,
    }
}

impl Family for Trees {
    fn family(&self) -> ModelFamily {
        ModelFamily::GradientBoostedTrees
    }

    fn label_need(&self) -> LabelNeed {
        LabelNeed::Supervised
    }

    fn per_output(&self, _dim: usize) -> usize {
        0
    }

    fn update_name(&self) -> &'static str {
        "tree statistics"
    }

    fn check(&self, params: &Array1<f64>, _outputs: usize) -> Result<(), LearningError> {
        TreeModel::from_flat(params.view()).map(drop)
    }

    fn dim(&self, _params: usize, _outputs: usize) -> usize {
        0
    }

    fn dim_of(&self, params: &Array1<f64>, _outputs: usize) -> usize {
        TreeModel::from_flat(params.view()).map_or(0, |m| m.dim())
    }

    fn initial(&self, dim: usize, _: usize, _: u64) -> Result<Array1<f64>, LearningError> {
        Ok(TreeModel::new(dim, TreeLoss::Logistic, Default::default())?.to_flat())
    }

    fn initial_for(
        &self,
        dim: usize,
        _: usize,
        seed: u64,
        settings: &ModelSettings,
    ) -> Result<Array1<f64>, LearningError> {
        let loss = if settings.numeric_label {
            TreeLoss::Squared
        } else {
            TreeLoss::Logistic
        };
        let model = TreeModel::new(dim, loss, settings.trees)?;
        Ok(match &settings.data_free {
            // Record-level DP: bins from the standard normal quantiles of the
            // standardised columns (one edge for 0/1 columns), no sketch;
            // random structures, one release of leaf sums per tree.
            Some(binary) => {
                let binning = Binning::standard_normal(binary, settings.trees.max_bins)?;
                TreeModel::from_parts(
                    dim,
                    loss,
                    settings.trees,
                    model.base_score(),
                    Some(binning),
                    Vec::new(),
                )?
                .with_growth(TreeGrowth::Random {
                    seed: structure_seed(seed),
                })?
            }
            None => model,
        }
        .to_flat())
    }

    fn warm_started(
        &self,
        params: Array1<f64>,
        seed: u64,
        settings: &ModelSettings,
    ) -> Result<Array1<f64>, LearningError> {
        // The run's privacy mode decides how the new trees grow. Under
        // record-level DP they are random structures, one release each, as
        // `privacy cost --run` plans: an earlier random model goes on with
        // its own seed (tree `t` from the seed and `t`, as one longer run
        // would have grown it), an earlier histogram model with the run's
        // seed. Without DP they grow from level histograms.
        let m = TreeModel::from_flat(params.view())?;
        let growth = match (&settings.data_free, m.growth()) {
            (Some(_), TreeGrowth::Random { seed }) => TreeGrowth::Random { seed },
            (Some(_), TreeGrowth::Histograms) => TreeGrowth::Random {
                seed: structure_seed(seed),
            },
            (None, _) => TreeGrowth::Histograms,
        };
        Ok(m.with_growth(growth)?.to_flat())
    }

    fn statistics_rules(&self) -> Option<StatisticsRules> {
        Some(StatisticsRules {
            name: "gradient-boosted trees",
            round: "a tree is grown from the clients' pooled gradient and hessian histograms",
            record_dp: "each partner noises its histograms and charges its own ledger",
            averaging: "the trees of different rounds add up; they are not averaged",
        })
    }

    fn settings_table(&self) -> Option<&'static str> {
        Some("trees")
    }

    fn is_gradient_trained(&self) -> bool {
        false
    }

    fn training(&self, _: &AnyModel) -> Training {
        Training::Statistics
    }

    fn local_statistics(
        &self,
        m: &AnyModel,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
        dp: Option<StatisticsDp>,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Statistics, LearningError> {
        let m = model(m)?;
        let y = labels(y)?;
        // A client answers every level of a run on the same rows: the cache
        // keeps their bins and the margin of the trees already summed (it
        // checks itself, so a stale one costs time, never correctness).
        let mut stats = {
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            local_statistics_cached(&m, x, y, dp.map(|d| bound(d.clip_norm)), &mut cache)?
        };
        if let Some(dp) = dp {
            let sigma = dp.noise_multiplier * sensitivity(&m, Some(bound(dp.clip_norm)));
            stats.add_gaussian_noise(sigma, rng)?;
        }
        Ok(Statistics::Trees(stats))
    }

    fn check_statistics(&self, m: &AnyModel, stats: &Statistics) -> Result<(), LearningError> {
        model(m)?.check_statistics(trees(stats)?)
    }

    fn statistics_mechanism(
        &self,
        m: &AnyModel,
        noise_multiplier: f64,
        clip_norm: f64,
    ) -> Result<fedprofile_privacy::GaussianMechanism, LearningError> {
        let sensitivity = sensitivity(&model(m)?, Some(bound(clip_norm)));
        fedprofile_privacy::GaussianMechanism::new(noise_multiplier, sensitivity).map_err(|_| {
            LearningError::InvalidParam {
                field: "noise_multiplier",
                value: noise_multiplier.to_string(),
                requirement: "a positive noise multiplier and clip norm",
            }
        })
    }

    fn planned_releases(&self, initial: &AnyModel, rounds: u32) -> u64 {
        // Random growth: one release (the leaf sums) per tree. Otherwise at
        // most one release per level of every tree, and one for the binning
        // unless the model starts with its bins.
        match model(initial) {
            Ok(m) if matches!(m.growth(), TreeGrowth::Random { .. }) => u64::from(rounds),
            Ok(m) => {
                u64::from(m.binning().is_none())
                    + u64::from(rounds) * u64::from(m.params().max_depth)
            }
            Err(_) => u64::from(rounds),
        }
    }

    fn aggregate_statistics(
        &self,
        global: &AnyModel,
        stats: &[Statistics],
    ) -> Result<(AnyModel, StatisticsUpdate), LearningError> {
        let m = model(global)?;
        let mut parts = stats.iter();
        let Some(first) = parts.next() else {
            return Err(LearningError::EmptyInput);
        };
        let mut pooled = trees(first)?.clone();
        for s in parts {
            pooled.add(trees(s)?)?;
        }
        let examples = stats.iter().map(Statistics::examples).sum();
        let next = m.apply(&pooled)?;
        let round_done = next.round_done();
        let next = AnyModel::from_parts(ModelFamily::GradientBoostedTrees, next.to_flat(), 1)?;
        Ok((
            next,
            StatisticsUpdate {
                counts: Vec::new(),
                examples,
                loss: 0.0,
                round_done,
            },
        ))
    }

    fn evaluate(
        &self,
        m: &AnyModel,
        x: ArrayView2<f64>,
        y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError> {
        let m = model(m)?;
        let p = m.predict(x)?;
        let y = labels(y)?;
        Ok(match m.loss() {
            TreeLoss::Logistic => Evaluation::Binary(EvalSummary::from_predictions(p.view(), y)?),
            TreeLoss::Squared => {
                Evaluation::Regression(RegressionSummary::from_predictions(p.view(), y)?)
            }
        })
    }

    fn empty_evaluation(&self, _: usize) -> Result<Evaluation, LearningError> {
        Ok(Evaluation::Binary(EvalSummary::empty()))
    }

    fn empty_evaluation_for(&self, m: &AnyModel) -> Result<Evaluation, LearningError> {
        Ok(match model(m)?.loss() {
            TreeLoss::Logistic => Evaluation::Binary(EvalSummary::empty()),
            TreeLoss::Squared => Evaluation::Regression(RegressionSummary::empty()),
        })
    }

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        let m = model(doc.model())?;
        let p = m.predict(x)?;
        let header = match m.loss() {
            TreeLoss::Logistic => "score",
            TreeLoss::Squared => "prediction",
        };
        Ok(ScoreTable {
            header: vec![header.into()],
            rows: p.iter().map(|v| vec![format!("{v:.6}")]).collect(),
        })
    }

    fn profile_header(&self, doc: &ModelDocument) -> Option<Vec<String>> {
        let target = doc.target_column();
        let loss = model(doc.model()).map_or(TreeLoss::Logistic, |m| m.loss());
        Some(match loss {
            TreeLoss::Logistic if target.is_empty() => vec!["score".into(), "logit".into()],
            TreeLoss::Logistic => vec![format!("{target}_probability"), format!("{target}_logit")],
            TreeLoss::Squared => vec![format!("{target}_predicted"), format!("{target}_score")],
        })
    }

    fn profile_uses_reference(&self) -> bool {
        false
    }

    fn profile_rows(
        &self,
        doc: &ModelDocument,
        x: ArrayView2<f64>,
        _reference: ArrayView1<f64>,
    ) -> Result<Vec<ProfileRow>, LearningError> {
        let m = model(doc.model())?;
        let predictions = m.predict(x)?;
        let margins = m.margin(x)?;
        (0..x.nrows())
            .map(|row| {
                let (expected, contributions) = tree_shap(&m, x.row(row))?;
                Ok(ProfileRow {
                    columns: vec![
                        format!("{:.6}", predictions[row]),
                        format!("{:.6}", margins[row]),
                    ],
                    score: margins[row],
                    reference: expected,
                    contributions,
                })
            })
            .collect()
    }
}
