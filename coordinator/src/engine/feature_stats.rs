//! The federation's feature statistics: the global feature spec from the
//! partners' counts and sums, and the partners whose statistics are absurd next
//! to the others'.

use std::collections::HashMap;

use fedprofile_learning::{FeatureColumn, FeatureSpec};
use fedprofile_protocol::messages::StatsReport;

/// The global feature spec: the template with federated means and standard deviations.
pub(super) fn global_feature_spec(template: &FeatureSpec, reports: &[StatsReport]) -> FeatureSpec {
    let mut sums: HashMap<&str, (u64, f64, f64)> = HashMap::new();
    for report in reports {
        for c in &report.numeric {
            let e = sums.entry(c.column.as_str()).or_default();
            e.0 += c.count;
            e.1 += c.sum;
            e.2 += c.sum_sq;
        }
    }
    let columns = template
        .columns
        .iter()
        .map(|column| match column {
            FeatureColumn::Numeric { name, .. } => {
                let (mean, std) = match sums.get(name.as_str()) {
                    Some(&(n, s, ss)) if n > 0 => {
                        let mean = s / n as f64;
                        let var = (ss / n as f64 - mean * mean).max(0.0);
                        let std = var.sqrt();
                        (mean, if std > 1e-12 { std } else { 1.0 })
                    }
                    _ => (0.0, 1.0),
                };
                FeatureColumn::Numeric {
                    name: name.clone(),
                    mean,
                    std,
                }
            }
            other => other.clone(),
        })
        .collect();
    FeatureSpec { columns }
}

/// Partners whose statistics are absurd next to everyone else's (index into
/// `reports`, reason naming the column): a column whose mean or root mean
/// square is more than a million times the largest root mean square of the
/// other partners' (plus 1, so columns near zero everywhere are not flagged).
/// Real partners differ by far less; one broken cell (1e300, a unit error of
/// 1e9) does not. Needs three partners or more.
pub(super) fn stats_outliers(names: &[String], reports: &[StatsReport]) -> Vec<(usize, String)> {
    const FAR: f64 = 1e6;
    if reports.len() < 3 {
        return Vec::new();
    }
    let mut out: Vec<(usize, String)> = Vec::new();
    let columns: Vec<&str> = reports[0]
        .numeric
        .iter()
        .map(|c| c.column.as_str())
        .collect();
    for column in columns {
        // (mean, root mean square) of each partner that has values.
        let moments: Vec<Option<(f64, f64)>> = reports
            .iter()
            .map(|r| {
                r.numeric
                    .iter()
                    .find(|c| c.column == column && c.count > 0)
                    .map(|c| {
                        let n = c.count as f64;
                        (c.sum / n, (c.sum_sq / n).max(0.0).sqrt())
                    })
            })
            .collect();
        for (i, m) in moments.iter().enumerate() {
            let Some((mean, rms)) = m else { continue };
            let others = moments
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .filter_map(|(_, o)| o.map(|o| o.1))
                .fold(None, |acc: Option<f64>, r| {
                    Some(acc.map_or(r, |a| a.max(r)))
                });
            let Some(others) = others else { continue };
            let limit = FAR * (others + 1.0);
            if (mean.abs() > limit || *rms > limit) && !out.iter().any(|(j, _)| *j == i) {
                out.push((
                    i,
                    format!(
                        "statistics of column '{column}' (mean {mean:.6e}, root mean square {rms:.6e}) are absurd next to the other partners' (largest root mean square {others:.6e}): a cell of that column at {} is probably broken",
                        names[i]
                    ),
                ));
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}
