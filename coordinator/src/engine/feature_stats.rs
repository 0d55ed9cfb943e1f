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
    let mut spec = FeatureSpec::new(columns);
    spec.reference = reference_row(&spec, reports);
    spec
}

/// The federation's mean encoded row: 0 for a numeric entry (its federated
/// mean, standardised), the pooled share of training rows for each 0/1 entry;
/// `None` unless every partner sent the counts of every 0/1 column (runs
/// under DP do not ask for them) with the column's width.
fn reference_row(spec: &FeatureSpec, reports: &[StatsReport]) -> Option<Vec<f64>> {
    let rows: u64 = reports.iter().map(|r| r.train_examples).sum();
    if reports.is_empty() || rows == 0 {
        return None;
    }
    let mut reference = Vec::with_capacity(spec.dim());
    for column in &spec.columns {
        if let FeatureColumn::Numeric { .. } = column {
            reference.push(0.0);
            continue;
        }
        let mut pooled = vec![0u64; column.width()];
        for report in reports {
            let counts = &report
                .binary
                .iter()
                .find(|b| b.column == column.name())?
                .counts;
            if counts.len() != pooled.len() {
                return None;
            }
            for (p, c) in pooled.iter_mut().zip(counts) {
                *p = p.saturating_add(*c);
            }
        }
        reference.extend(pooled.iter().map(|c| *c as f64 / rows as f64));
    }
    Some(reference)
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

#[cfg(test)]
mod tests {
    use super::*;
    use fedprofile_protocol::messages::{BinaryStats, ColumnStats, LabelKindMsg};

    fn template() -> FeatureSpec {
        FeatureSpec::new(vec![
            FeatureColumn::Numeric {
                name: "age".into(),
                mean: 0.0,
                std: 1.0,
            },
            FeatureColumn::Categorical {
                name: "plan".into(),
                vocabulary: vec!["basic".into(), "gold".into()],
            },
        ])
    }

    fn report(rows: u64, plan: Option<Vec<u64>>) -> StatsReport {
        StatsReport {
            template: template(),
            numeric: vec![ColumnStats {
                column: "age".into(),
                count: rows,
                sum: 40.0 * rows as f64,
                sum_sq: 1700.0 * rows as f64,
            }],
            train_examples: rows,
            label_column: String::new(),
            label_positive: String::new(),
            label_kind: LabelKindMsg::None,
            label_classes: Vec::new(),
            binary: plan
                .map(|counts| {
                    vec![BinaryStats {
                        column: "plan".into(),
                        counts,
                    }]
                })
                .unwrap_or_default(),
        }
    }

    #[test]
    fn the_reference_row_pools_the_partners_shares() {
        let reports = [
            report(30, Some(vec![27, 3, 0])),
            report(10, Some(vec![5, 4, 1])),
        ];
        let spec = global_feature_spec(&template(), &reports);
        assert_eq!(spec.reference, Some(vec![0.0, 0.8, 0.175, 0.025]));
        // A partner without counts (a run under DP asks for none): no row.
        let reports = [report(30, Some(vec![27, 3, 0])), report(10, None)];
        assert_eq!(global_feature_spec(&template(), &reports).reference, None);
        // Counts of the wrong width are not pooled either.
        let reports = [report(30, Some(vec![27, 3]))];
        assert_eq!(global_feature_spec(&template(), &reports).reference, None);
    }
}
