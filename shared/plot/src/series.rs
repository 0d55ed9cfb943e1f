//! Line plots of per-round figures (pooled AUC, log loss, ε …).

use std::path::Path;

use plotters::prelude::*;

use crate::epsilon::{PLOT_HEIGHT, PLOT_WIDTH, PlotError, ensure_font};

/// One named line: (round, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points in any order; non-finite values are skipped.
    pub points: Vec<(u64, f64)>,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Draws `series` against rounds into a PNG at `path`.
pub fn plot_series(
    series: &[Series],
    title: &str,
    y_label: &str,
    path: &Path,
) -> Result<(), PlotError> {
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let points: Vec<(u64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(_, v)| v.is_finite())
        .collect();
    if points.is_empty() {
        return Err(PlotError::NoPoints {
            path: path.to_path_buf(),
        });
    }
    if !ensure_font() {
        return Err(PlotError::Font {
            path: path.to_path_buf(),
        });
    }
    let (x_min, x_max) = points
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), (x, _)| (lo.min(*x), hi.max(*x)));
    let (y_min, y_max) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, y)| {
            (lo.min(*y), hi.max(*y))
        });
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let root = BitMapBackend::new(path, (PLOT_WIDTH, PLOT_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            x_min.saturating_sub(1) as f64..(x_max + 1) as f64,
            (y_min - pad)..(y_max + pad),
        )
        .map_err(|e| draw_err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc(y_label)
        .draw()
        .map_err(|e| draw_err(e.to_string()))?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(x, y)| (*x as f64, *y))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| draw_err(e.to_string()))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| draw_err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_err(e.to_string()))?;
    root.present().map_err(|e| draw_err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_empty_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auc.png");
        let s = Series {
            label: "pooled AUC".into(),
            points: (1..=20).map(|r| (r, 0.83 + r as f64 * 0.001)).collect(),
        };
        plot_series(&[s], "AUC", "AUC", &path).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        let err = plot_series(&[], "x", "y", &dir.path().join("e.png")).unwrap_err();
        assert!(matches!(err, PlotError::NoPoints { .. }));
    }
}
