//! Federated k-means segmentation as a [`Family`]: no label, `k × dim`
//! centroid coordinates, data-free random initial centroids; clients send
//! per-cluster sums and counts ([`kmeans_local_stats`], or
//! [`kmeans_local_stats_dp`] under record-level DP) and a round is the exact
//! Lloyd step on the pooled statistics ([`kmeans_update`]); evaluated by its
//! pooled inertia; `score` and `profile --segments` write the segment and the
//! squared distance to its centroid.

use ndarray::{Array1, ArrayView1, ArrayView2};

use super::{
    AnyModel, ClusteringSummary, Evaluation, Family, LabelNeed, ModelFamily, ScoreTable,
    Statistics, StatisticsDp, StatisticsRules, StatisticsUpdate, Training,
};
use crate::error::LearningError;
use crate::kmeans::{
    ClusterStats, KMeans, KMeansUpdate, kmeans_init, kmeans_local_stats, kmeans_local_stats_dp,
    kmeans_reseed_empty, kmeans_update,
};
use crate::model_file::ModelDocument;

/// Federated k-means.
#[derive(Debug, Clone, Copy)]
pub struct Segments;

fn model(m: &AnyModel) -> Result<KMeans, LearningError> {
    KMeans::from_params(m.params().clone(), m.outputs())
}

fn clusters(s: &Statistics) -> Result<&ClusterStats, LearningError> {
    match s {
        Statistics::Clusters(c) => Ok(c),
        other => Err(LearningError::InconsistentSummary {
            reason: format!(
                "a k-means round needs cluster statistics, got {}",
                other.kind()
            ),
        }),
    }
}

impl Family for Segments {
    fn family(&self) -> ModelFamily {
        ModelFamily::KMeans
    }

    fn label_need(&self) -> LabelNeed {
        LabelNeed::None
    }

    fn per_output(&self, dim: usize) -> usize {
        dim
    }

    fn outputs(&self, requested: usize) -> usize {
        requested
    }

    fn run_outputs(&self, _classes: usize, clusters: usize) -> usize {
        clusters
    }

    fn update_name(&self) -> &'static str {
        "cluster statistics"
    }

    fn check(&self, params: &Array1<f64>, outputs: usize) -> Result<(), LearningError> {
        KMeans::from_params(params.clone(), outputs).map(drop)
    }

    fn dim(&self, params: usize, outputs: usize) -> usize {
        params / outputs.max(1)
    }

    fn initial(&self, dim: usize, outputs: usize, seed: u64) -> Result<Array1<f64>, LearningError> {
        Ok(kmeans_init(outputs, dim, seed)?.into_params())
    }

    fn is_gradient_trained(&self) -> bool {
        false
    }

    fn statistics_rules(&self) -> Option<StatisticsRules> {
        Some(StatisticsRules {
            name: "k-means",
            round: "a k-means round pools the clients' per-cluster sums and counts (the exact Lloyd step)",
            record_dp: "each partner noises its cluster sums and counts and charges its own ledger",
            averaging: "averaging centroids of different rounds is not a Lloyd step",
        })
    }

    fn training(&self, _: &AnyModel) -> Training {
        Training::Statistics
    }

    fn local_statistics(
        &self,
        m: &AnyModel,
        x: ArrayView2<f64>,
        _y: Option<ArrayView1<f64>>,
        dp: Option<StatisticsDp>,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Statistics, LearningError> {
        let m = model(m)?;
        let stats = match dp {
            None => kmeans_local_stats(&m, x),
            Some(dp) => kmeans_local_stats_dp(&m, x, dp.clip_norm, dp.noise_multiplier, rng),
        }?;
        Ok(Statistics::Clusters(stats))
    }

    fn check_statistics(&self, m: &AnyModel, stats: &Statistics) -> Result<(), LearningError> {
        let c = clusters(stats)?;
        let (k, d) = (m.outputs(), m.dim());
        if c.sums.len() != k * d {
            return Err(LearningError::ParamCount {
                expected: k * d,
                got: c.sums.len(),
            });
        }
        if let Some(index) = c.sums.iter().position(|v| !v.is_finite()) {
            return Err(LearningError::NonFiniteParam {
                index,
                value: c.sums[index],
            });
        }
        c.check(k, d)
    }

    fn statistics_mechanism(
        &self,
        _: &AnyModel,
        noise_multiplier: f64,
        clip_norm: f64,
    ) -> Result<fedprofile_privacy::GaussianMechanism, LearningError> {
        crate::kmeans::kmeans_mechanism(noise_multiplier, clip_norm)
    }

    fn aggregate_statistics(
        &self,
        global: &AnyModel,
        stats: &[Statistics],
    ) -> Result<(AnyModel, StatisticsUpdate), LearningError> {
        let clusters: Vec<ClusterStats> = stats
            .iter()
            .map(|s| clusters(s).cloned())
            .collect::<Result<_, _>>()?;
        let update: KMeansUpdate = kmeans_update(&model(global)?, &clusters)?;
        let next = AnyModel::from_parts(
            ModelFamily::KMeans,
            update.model.params().clone(),
            global.outputs(),
        )?;
        Ok((
            next,
            StatisticsUpdate {
                // Mean training inertia of the centroids the clients were sent
                // (0 under record-level DP, where the inertia is not released).
                loss: update.inertia / update.examples.max(1) as f64,
                counts: update.counts,
                examples: update.examples,
                round_done: true,
            },
        ))
    }

    fn reseed_starved(
        &self,
        next: &AnyModel,
        counts: &[u64],
        min_rows: u64,
        seed: u64,
    ) -> Result<Option<(AnyModel, Vec<usize>)>, LearningError> {
        let starved: Vec<usize> = (0..counts.len())
            .filter(|&c| counts[c] < min_rows)
            .collect();
        if starved.is_empty() {
            return Ok(None);
        }
        let reseeded = kmeans_reseed_empty(&model(next)?, counts, &starved, seed)?;
        let next =
            AnyModel::from_parts(ModelFamily::KMeans, reseeded.into_params(), next.outputs())?;
        Ok(Some((next, starved)))
    }

    fn evaluate(
        &self,
        m: &AnyModel,
        x: ArrayView2<f64>,
        _y: Option<ArrayView1<f64>>,
    ) -> Result<Evaluation, LearningError> {
        let m = model(m)?;
        let assigned = m.assign(x)?;
        let mut counts = vec![0u64; m.clusters()];
        for (cluster, _) in &assigned {
            counts[*cluster] += 1;
        }
        Ok(Evaluation::Clustering(ClusteringSummary {
            examples: assigned.len() as u64,
            inertia: assigned.iter().map(|(_, d)| d).sum(),
            counts,
        }))
    }

    fn empty_evaluation(&self, outputs: usize) -> Result<Evaluation, LearningError> {
        Ok(Evaluation::Clustering(ClusteringSummary {
            examples: 0,
            inertia: 0.0,
            counts: vec![0; outputs],
        }))
    }

    fn score(&self, doc: &ModelDocument, x: ArrayView2<f64>) -> Result<ScoreTable, LearningError> {
        let assigned = model(doc.model())?.assign(x)?;
        Ok(ScoreTable {
            header: vec!["segment".into(), "distance".into()],
            rows: assigned
                .iter()
                .map(|(c, d)| vec![c.to_string(), format!("{d:.6}")])
                .collect(),
        })
    }

    fn profile_header(&self, _: &ModelDocument) -> Option<Vec<String>> {
        None
    }

    fn segments(
        &self,
        doc: &ModelDocument,
        x: ArrayView2<f64>,
    ) -> Option<Result<Vec<(usize, f64)>, LearningError>> {
        Some(model(doc.model()).and_then(|m| m.assign(x)))
    }
}
