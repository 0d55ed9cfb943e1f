//! PNG plots for fedprofile's reports, drawn with `plotters` and a bundled font
//! (no system font or library needed): the privacy team's cumulative-ε plot and
//! the operator's per-round metric plots.

mod epsilon;
mod series;

pub use epsilon::{EpsilonPoint, PLOT_HEIGHT, PLOT_WIDTH, PlotError, plot_cumulative_epsilon};
pub use series::{Series, plot_series};
