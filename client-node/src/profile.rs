//! Per-user profiles: for every user of a split, the model's prediction and the
//! few features that pushed the user's score most (for a linear model, the
//! per-feature contributions w_i·x_i, which add up to the logit minus the
//! intercept). Written locally; nothing leaves the partner.

use std::path::Path;

use fedprofile_data::Schema;
use fedprofile_learning::ModelFile;

use crate::score::ScoreError;

/// Writes `out` with one row per user of `split`; returns the row count.
///
/// Columns: `user_id`, `<target>_probability`, `logit`, `intercept`, then for
/// the `top` largest |contributions| `feature_i`, `contribution_i`, and
/// `other_contribution` (the sum of all the others), so that
/// `Σ contribution_i + other_contribution = logit − intercept`.
pub fn profile(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    model_path: &Path,
    top: usize,
    out: &Path,
) -> Result<usize, ScoreError> {
    let schema = Schema::from_path(schema_path)?;
    let file = ModelFile::load(model_path)?;
    let model = file.to_model()?;
    let loaded = fedprofile_data::load_split(&schema, data_dir, split)?;
    let mismatch = |reason: String| ScoreError::Mismatch {
        path: model_path.to_path_buf(),
        reason,
    };
    let x = loaded
        .dataset
        .encode(&file.features)
        .map_err(|e| mismatch(e.to_string()))?;
    let probs = model
        .predict_proba(x.view())
        .map_err(|e| mismatch(e.to_string()))?;
    let logits = model
        .logits(x.view())
        .map_err(|e| mismatch(e.to_string()))?;
    let names = file.features.entry_names();
    let target = if file.target.column.is_empty() {
        "score".to_string()
    } else {
        format!("{}_probability", file.target.column)
    };
    let write_err = |reason: String| ScoreError::Write {
        path: out.to_path_buf(),
        reason,
    };
    let mut writer = csv::Writer::from_path(out).map_err(|e| write_err(e.to_string()))?;
    let mut header = vec![
        "user_id".to_string(),
        target,
        "logit".into(),
        "intercept".into(),
    ];
    for i in 1..=top {
        header.push(format!("feature_{i}"));
        header.push(format!("contribution_{i}"));
    }
    header.push("other_contribution".into());
    writer
        .write_record(&header)
        .map_err(|e| write_err(e.to_string()))?;
    for (row, id) in loaded.dataset.ids().iter().enumerate() {
        let contributions = model
            .contributions(x.row(row))
            .map_err(|e| mismatch(e.to_string()))?;
        let mut order: Vec<usize> = (0..contributions.len()).collect();
        order.sort_by(|&a, &b| contributions[b].abs().total_cmp(&contributions[a].abs()));
        let mut record = vec![
            id.clone(),
            format!("{:.6}", probs[row]),
            format!("{:.6}", logits[row]),
            format!("{:.6}", model.intercept()),
        ];
        let shown = top.min(order.len());
        for &j in &order[..shown] {
            record.push(names.get(j).cloned().unwrap_or_default());
            record.push(format!("{:.6}", contributions[j]));
        }
        for _ in shown..top {
            record.push(String::new());
            record.push(String::new());
        }
        let other: f64 = order[shown..].iter().map(|&j| contributions[j]).sum();
        record.push(format!("{other:.6}"));
        writer
            .write_record(&record)
            .map_err(|e| write_err(e.to_string()))?;
    }
    writer.flush().map_err(|e| write_err(e.to_string()))?;
    Ok(loaded.dataset.len())
}
