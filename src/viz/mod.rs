//! Pictures without a plotting dependency, as SVG text: training curves
//! ([`training_curves_svg`], [`line_chart_svg`]) with ticks, grid lines and axis labels, and
//! image grids ([`image_grid_svg`]) with each prediction beside the true label and the mistakes
//! marked.

mod axis;
mod chart;
mod grid;

pub use chart::{line_chart_svg, training_curves_svg, Series};
pub use grid::{image_grid_svg, Caption};

/// Escapes text for SVG text content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
