//! The privacy report plot: cumulative ε spent against federated rounds.
//!
//! [`plot_cumulative_epsilon`] draws a PNG with
//! - the cumulative ε as a line with markers (left axis, "cumulative ε"),
//! - the ε spent in each round as bars (right axis, "ε spent per round"),
//! - the budget ε, when given, as a horizontal dashed line labelled "budget ε = X".
//!
//! Text is drawn with a bundled font (`assets/DejaVuSans.ttf`, license in
//! `assets/DejaVuSans-LICENSE.txt`) through plotters' `ab_glyph` backend, so the
//! plot renders on a machine without any system font or fontconfig.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Width of the PNG written by [`plot_cumulative_epsilon`], in pixels.
pub const PLOT_WIDTH: u32 = 1024;
/// Height of the PNG written by [`plot_cumulative_epsilon`], in pixels.
pub const PLOT_HEIGHT: u32 = 640;

/// DejaVu Sans (Bitstream Vera license), embedded so no system font is needed.
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The font family plotters uses for every text element by default.
const FONT_FAMILY: &str = "sans-serif";

const CUMULATIVE_COLOR: RGBColor = RGBColor(31, 119, 180);
const SPENT_COLOR: RGBColor = RGBColor(158, 202, 225);
const BUDGET_COLOR: RGBColor = RGBColor(214, 39, 40);

/// The privacy accounting of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpsilonPoint {
    /// The round number (x axis).
    pub round: u64,
    /// ε spent in this round alone.
    pub epsilon_spent: f64,
    /// ε spent up to and including this round.
    pub cumulative: f64,
}

/// Why the plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no epsilon points to plot in {}", path.display())]
    NoPoints { path: PathBuf },
    #[error(
        "invalid epsilon at round {round} for {}: spent {spent}, cumulative {cumulative} (must be finite and non-negative)",
        path.display()
    )]
    InvalidPoint {
        path: PathBuf,
        round: u64,
        spent: f64,
        cumulative: f64,
    },
    #[error("invalid budget epsilon {budget} for {} (must be finite and positive)", path.display())]
    InvalidBudget { path: PathBuf, budget: f64 },
    #[error("the bundled font could not be loaded to draw {}", path.display())]
    Font { path: PathBuf },
    #[error("failed to draw plot {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
}

/// Registers the bundled font once per process; `false` if it could not be parsed.
pub(crate) fn ensure_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok())
}

/// Formats ε for the legend: up to four decimals without trailing zeros, or
/// scientific notation for very small values.
fn format_epsilon(value: f64) -> String {
    if value != 0.0 && value.abs() < 0.01 {
        return format!("{value:.3e}");
    }
    let fixed = format!("{value:.4}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_string()
}

/// Draws cumulative ε against rounds (line and markers), the per-round spend as
/// bars on a secondary axis, and `budget` as a dashed horizontal line, into a
/// [`PLOT_WIDTH`] × [`PLOT_HEIGHT`] PNG at `path` (overwritten if present; its
/// directory must exist).
///
/// Points may come in any order; they are drawn sorted by round. Every ε must be
/// finite and non-negative, and the budget finite and positive.
pub fn plot_cumulative_epsilon(
    points: &[EpsilonPoint],
    budget: Option<f64>,
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::NoPoints {
            path: path.to_path_buf(),
        });
    }
    for p in points {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(p.epsilon_spent) || !ok(p.cumulative) {
            return Err(PlotError::InvalidPoint {
                path: path.to_path_buf(),
                round: p.round,
                spent: p.epsilon_spent,
                cumulative: p.cumulative,
            });
        }
    }
    if let Some(b) = budget.filter(|b| !(b.is_finite() && *b > 0.0)) {
        return Err(PlotError::InvalidBudget {
            path: path.to_path_buf(),
            budget: b,
        });
    }
    if !ensure_font() {
        return Err(PlotError::Font {
            path: path.to_path_buf(),
        });
    }

    let mut sorted = points.to_vec();
    sorted.sort_by_key(|p| p.round);

    let root = BitMapBackend::new(path, (PLOT_WIDTH, PLOT_HEIGHT)).into_drawing_area();
    draw(&root, &sorted, budget, title).map_err(|message| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    })?;
    // `present` writes the file: without it an I/O error would be lost in `drop`.
    root.present().map_err(|e| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Draws the chart onto `root`; `sorted` is non-empty, sorted by round and validated.
fn draw(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    sorted: &[EpsilonPoint],
    budget: Option<f64>,
    title: &str,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();

    let first_round = sorted.first().map_or(0, |p| p.round) as f64;
    let last_round = sorted.last().map_or(0, |p| p.round) as f64;
    // Bars are 70% of the smallest gap between distinct rounds (1 for consecutive rounds).
    let min_gap = sorted
        .windows(2)
        .map(|w| w[1].round.saturating_sub(w[0].round))
        .filter(|&g| g > 0)
        .min()
        .unwrap_or(1) as f64;
    let half_bar = 0.35 * min_gap;
    let x_range = (first_round - 0.5 * min_gap)..(last_round + 0.5 * min_gap);

    // Headroom above the data keeps the legend (top left) clear of the lines.
    let max_cumulative = sorted.iter().map(|p| p.cumulative).fold(0.0, f64::max);
    let y_top = max_cumulative.max(budget.unwrap_or(0.0));
    let y_top = if y_top > 0.0 { y_top * 1.3 } else { 1.0 };
    let max_spent = sorted.iter().map(|p| p.epsilon_spent).fold(0.0, f64::max);
    // Bars share the left scale when they would be legible on it (few rounds);
    // otherwise they get their own right-hand scale and use ~60% of the height.
    let spent_top = if max_spent >= 0.25 * y_top {
        y_top
    } else if max_spent > 0.0 {
        max_spent * 1.6
    } else {
        y_top
    };

    root.fill(&WHITE).map_err(|e| err(&e))?;

    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT_FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .right_y_label_area_size(72)
        .build_cartesian_2d(x_range.clone(), 0.0..y_top)
        .map_err(|e| err(&e))?
        .set_secondary_coord(x_range, 0.0..spent_top);

    // Rounds are integers: label only the integral ticks plotters picks.
    let round_label = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 && *v >= 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    let x_labels = sorted.len().clamp(2, 12);
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("cumulative ε")
        .x_labels(x_labels)
        .x_label_formatter(&round_label)
        .light_line_style(RGBColor(235, 235, 235))
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 18))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("ε spent per round")
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 18))
        .draw()
        .map_err(|e| err(&e))?;

    // Bars first, so the cumulative line is drawn over them.
    chart
        .draw_secondary_series(sorted.iter().map(|p| {
            let x = p.round as f64;
            Rectangle::new(
                [(x - half_bar, 0.0), (x + half_bar, p.epsilon_spent)],
                SPENT_COLOR.filled(),
            )
        }))
        .map_err(|e| err(&e))?
        .label("ε spent per round")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], SPENT_COLOR.filled()));

    let line_style = CUMULATIVE_COLOR.stroke_width(2);
    chart
        .draw_series(LineSeries::new(
            sorted.iter().map(|p| (p.round as f64, p.cumulative)),
            line_style,
        ))
        .map_err(|e| err(&e))?
        .label("cumulative ε")
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (20, 0)], line_style)
                + Circle::new((10, 0), 3, CUMULATIVE_COLOR.filled())
        });
    let marker_size = match sorted.len() {
        0..=50 => 4,
        51..=200 => 2,
        _ => 1,
    };
    chart
        .draw_series(sorted.iter().map(|p| {
            Circle::new(
                (p.round as f64, p.cumulative),
                marker_size,
                CUMULATIVE_COLOR.filled(),
            )
        }))
        .map_err(|e| err(&e))?;

    if let Some(b) = budget {
        let (x0, x1) = {
            let r = chart.x_range();
            (r.start, r.end)
        };
        let budget_style = BUDGET_COLOR.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, b), (x1, b)],
                10,
                6,
                budget_style,
            ))
            .map_err(|e| err(&e))?
            .label(format!("budget ε = {}", format_epsilon(b)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], budget_style));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT_FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u64, per_round: f64) -> Vec<EpsilonPoint> {
        (1..=n)
            .map(|r| EpsilonPoint {
                round: r,
                epsilon_spent: per_round,
                cumulative: per_round * r as f64,
            })
            .collect()
    }

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(
            bytes.len() > 33,
            "file too short for a png: {} bytes",
            bytes.len()
        );
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "png signature");
        assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
        let width = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let height = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
        (width, height)
    }

    #[test]
    fn writes_a_png_of_the_expected_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("epsilon.png");
        plot_cumulative_epsilon(&sample(20, 0.15), Some(4.0), "privacy budget", &path)
            .expect("plot");
        let bytes = std::fs::read(&path).expect("read png");
        assert_eq!(png_size(&bytes), (PLOT_WIDTH, PLOT_HEIGHT));
    }

    #[test]
    fn draws_without_budget_and_with_unsorted_or_single_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut points = sample(5, 0.5);
        points.reverse();
        let path = dir.path().join("unsorted.png");
        plot_cumulative_epsilon(&points, None, "no budget", &path).expect("plot");
        assert_eq!(
            png_size(&std::fs::read(&path).expect("read")),
            (PLOT_WIDTH, PLOT_HEIGHT)
        );

        let single = [EpsilonPoint {
            round: 7,
            epsilon_spent: 0.0,
            cumulative: 0.0,
        }];
        let path = dir.path().join("single.png");
        plot_cumulative_epsilon(&single, Some(1.0), "one round", &path).expect("plot");
        assert_eq!(
            png_size(&std::fs::read(&path).expect("read")),
            (PLOT_WIDTH, PLOT_HEIGHT)
        );
    }

    #[test]
    fn empty_points_are_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.png");
        let err = plot_cumulative_epsilon(&[], Some(1.0), "empty", &path).expect_err("empty");
        assert!(matches!(err, PlotError::NoPoints { .. }));
        let message = err.to_string();
        assert!(message.contains("no epsilon points"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!path.exists());
    }

    #[test]
    fn invalid_values_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.png");
        let mut points = sample(3, 0.1);
        points[1].cumulative = f64::NAN;
        let err = plot_cumulative_epsilon(&points, None, "bad", &path).expect_err("nan");
        assert!(
            matches!(err, PlotError::InvalidPoint { round: 2, .. }),
            "{err}"
        );

        let err = plot_cumulative_epsilon(&sample(3, 0.1), Some(-1.0), "bad", &path)
            .expect_err("negative budget");
        assert!(matches!(err, PlotError::InvalidBudget { .. }), "{err}");
        assert!(err.to_string().contains("bad.png"), "{err}");
    }

    #[test]
    fn unwritable_path_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing-dir").join("epsilon.png");
        let err = plot_cumulative_epsilon(&sample(3, 0.1), Some(1.0), "t", &path)
            .expect_err("missing directory");
        assert!(matches!(err, PlotError::Draw { .. }), "{err}");
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[test]
    fn legend_numbers_are_short() {
        assert_eq!(format_epsilon(8.0), "8");
        assert_eq!(format_epsilon(1.5), "1.5");
        assert_eq!(format_epsilon(0.1 + 0.2), "0.3");
        assert_eq!(format_epsilon(0.001), "1.000e-3");
    }
}
