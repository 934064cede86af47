//! Line charts: one panel per quantity, with ticks, grid lines and axis labels on both axes.

use super::axis::Axis;
use super::esc;
use crate::model::History;
use std::fmt::Write;

/// Width and height of one panel, screen pixels.
const PANEL: (f32, f32) = (540.0, 340.0);
/// Margins of the plot area inside a panel: left (tick labels, y label), top (title), right
/// (legend), bottom (tick labels, x label).
const MARGIN: (f32, f32, f32, f32) = (74.0, 34.0, 130.0, 52.0);
/// Series colours, in order (matplotlib's first six).
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
/// Series with at most this many points also get a marker on every point.
const MARKERS_UP_TO: usize = 50;

/// A named curve: `(name, [(x, y), …])`.
pub type Series<'a> = (&'a str, Vec<(f32, f32)>);

/// The opening tag of a `w × h` picture.
fn svg_open(svg: &mut String, w: f32, h: f32) {
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
}

/// Draws one panel with its top-left corner at `(ox, oy)`.
fn panel(
    svg: &mut String,
    (ox, oy): (f32, f32),
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series<'_>],
) {
    let finite = |p: &&(f32, f32)| p.0.is_finite() && p.1.is_finite();
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, p)| p.iter().filter(finite))
        .map(|&(x, y)| (x as f64, y as f64))
        .collect();
    let bounds = |vals: &mut dyn Iterator<Item = f64>| {
        vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        })
    };
    let (x0, x1) = bounds(&mut points.iter().map(|p| p.0));
    let (y0, y1) = bounds(&mut points.iter().map(|p| p.1));
    let integers = points.iter().all(|p| p.0.fract() == 0.0);
    let xa = Axis::positions(x0, x1, integers);
    let ya = Axis::values(y0, y1);

    let (left, top, right, bottom) = MARGIN;
    let (px, py) = (ox + left, oy + top);
    let (pw, ph) = (PANEL.0 - left - right, PANEL.1 - top - bottom);
    let sx = |x: f64| px + xa.frac(x) as f32 * pw;
    let sy = |y: f64| py + ph - ya.frac(y) as f32 * ph;

    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{}</text>"#,
        px + pw / 2.0,
        oy + 22.0,
        esc(title)
    );
    // grid lines, tick marks and tick labels
    for (v, label) in ya.ticks() {
        let y = sy(v);
        let _ = writeln!(
            svg,
            r##"<line class="grid" x1="{px:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e6e6e6"/>"##,
            px + pw
        );
        let _ = writeln!(
            svg,
            r##"<line class="tick" x1="{:.1}" y1="{y:.1}" x2="{px:.1}" y2="{y:.1}" stroke="#444"/>"##,
            px - 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text class="y-tick" x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            px - 8.0,
            y + 4.0
        );
    }
    let base = py + ph;
    for (v, label) in xa.ticks() {
        let x = sx(v);
        let _ = writeln!(
            svg,
            r##"<line class="grid" x1="{x:.1}" y1="{py:.1}" x2="{x:.1}" y2="{base:.1}" stroke="#e6e6e6"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<line class="tick" x1="{x:.1}" y1="{base:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444"/>"##,
            base + 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text class="x-tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            base + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect class="frame" x="{px:.1}" y="{py:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#444"/>"##
    );
    // axis labels
    let _ = writeln!(
        svg,
        r#"<text class="x-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        px + pw / 2.0,
        base + 40.0,
        esc(x_label)
    );
    let (lx, ly) = (ox + 16.0, py + ph / 2.0);
    let _ = writeln!(
        svg,
        r#"<text class="y-label" x="{lx:.1}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
        esc(y_label)
    );
    if points.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
            px + pw / 2.0,
            py + ph / 2.0
        );
    }
    // the curves, their markers and the legend
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let xy: Vec<(f32, f32)> = pts
            .iter()
            .filter(finite)
            .map(|&(x, y)| (sx(x as f64), sy(y as f64)))
            .collect();
        if xy.len() > 1 {
            let path: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
        }
        if xy.len() <= MARKERS_UP_TO {
            for (x, y) in &xy {
                let _ = writeln!(
                    svg,
                    r#"<circle class="marker" cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#
                );
            }
        }
        let (gx, gy) = (px + pw + 14.0, py + 12.0 + 20.0 * k as f32);
        let _ = writeln!(
            svg,
            r#"<line x1="{gx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/>"#,
            gy - 4.0,
            gx + 20.0,
            gy - 4.0
        );
        let _ = writeln!(
            svg,
            r#"<text class="legend" x="{:.1}" y="{gy:.1}">{}</text>"#,
            gx + 26.0,
            esc(name)
        );
    }
}

/// An SVG line chart: one polyline per `(name, points)` series (with a marker on every point
/// when a series has at most 50, so a one-point curve shows as a dot), a legend, and on both
/// axes grid lines, tick marks and labels at "nice" values (1, 2 or 5 times a power of ten),
/// plus the axis labels `x_label` and `y_label`. Points with a non-finite coordinate are
/// skipped.
///
/// The y axis starts at 0 when every value is ≥ 0 and the smallest is at most half the largest
/// (a loss falling from 2.3 to 0.3, an accuracy rising from 0.1 to 0.9), or when all values are
/// equal; otherwise (values far from 0 for their spread, like a loss between 2.1 and 2.3) it
/// starts 5 % of the spread below the smallest value. Values ≤ 0 mirror this. The top gets 5 %
/// of headroom, and both ends are rounded out to ticks. The x axis spans the data with a 3 %
/// margin (a single point sits in the middle), with whole-number ticks when every x is whole.
pub fn line_chart_svg(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let mut svg = String::new();
    svg_open(&mut svg, PANEL.0, PANEL.1);
    panel(&mut svg, (0.0, 0.0), title, (x_label, y_label), series);
    svg.push_str("</svg>\n");
    svg
}

/// The training curves of a [`History`] in one SVG: a panel with the losses (`loss`,
/// `val_loss`) beside a panel with the accuracies (`accuracy`, `val_accuracy`), each drawn as
/// by [`line_chart_svg`], against the epoch (1, 2, … for the entries of the history). A panel
/// whose curves were not recorded is left out (no accuracy without `Metric::Accuracy`).
pub fn training_curves_svg(title: &str, history: &History) -> String {
    let curves = |names: &[&'static str]| -> Vec<Series<'static>> {
        names
            .iter()
            .filter_map(|&n| {
                let v = history.get(n)?;
                let pts = v
                    .iter()
                    .enumerate()
                    .map(|(i, &y)| ((i + 1) as f32, y))
                    .collect();
                Some((n, pts))
            })
            .collect()
    };
    let panels: Vec<(&str, Vec<Series<'static>>)> = [
        ("loss", curves(&["loss", "val_loss"])),
        ("accuracy", curves(&["accuracy", "val_accuracy"])),
    ]
    .into_iter()
    .filter(|(name, s)| *name == "loss" || !s.is_empty())
    .collect();
    let head = 30.0;
    let width = PANEL.0 * panels.len() as f32;
    let mut svg = String::new();
    svg_open(&mut svg, width, PANEL.1 + head);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="16">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    for (i, (name, series)) in panels.iter().enumerate() {
        panel(
            &mut svg,
            (PANEL.0 * i as f32, head),
            name,
            ("epoch", name),
            series,
        );
    }
    svg.push_str("</svg>\n");
    svg
}
