//! Pictures without a plotting dependency: SVG image grids and line charts.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::fmt::Write;

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG grid of grey or RGB images with a caption under each, `scale` screen pixels per image
/// pixel, `cols` images per row. Values are mapped linearly from the batch's min..max to 0..255.
///
/// # Shapes
/// `images: (N, 1, H, W)` or `(N, 3, H, W)`; `captions`: `N` strings (missing ones are blank).
///
/// # Errors
/// [`Error::Shape`] for another layout.
pub fn image_grid_svg(
    images: &Tensor,
    captions: &[String],
    scale: usize,
    cols: usize,
) -> Result<String> {
    if images.ndim() != 4 || !(images.shape()[1] == 1 || images.shape()[1] == 3) {
        return Err(Error::shape(
            "image_grid_svg",
            "images (N, 1 or 3, H, W)",
            images.shape(),
        ));
    }
    let (n, c, h, w) = (
        images.shape()[0],
        images.shape()[1],
        images.shape()[2],
        images.shape()[3],
    );
    let (lo, hi) = images
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = if hi > lo { hi - lo } else { 1.0 };
    let to8 = |v: f32| (((v - lo) / range) * 255.0).round().clamp(0.0, 255.0) as u8;
    let (s, cols) = (scale.max(1), cols.max(1));
    let (cell_w, cell_h) = (w * s + 16, h * s + 40);
    let rows = n.div_ceil(cols);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" shape-rendering="crispEdges" font-family="sans-serif" font-size="13">"#,
        cols * cell_w,
        rows * cell_h
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for i in 0..n {
        let (x0, y0) = ((i % cols) * cell_w + 8, (i / cols) * cell_h + 8);
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| to8(images[[i, ch, y, x]]);
                let (r, g, b) = if c == 3 {
                    (px(0), px(1), px(2))
                } else {
                    (px(0), px(0), px(0))
                };
                let _ = writeln!(
                    svg,
                    r##"<rect x="{}" y="{}" width="{s}" height="{s}" fill="#{r:02x}{g:02x}{b:02x}"/>"##,
                    x0 + x * s,
                    y0 + y * s
                );
            }
        }
        let caption = captions.get(i).map(String::as_str).unwrap_or("");
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + w * s / 2,
            y0 + h * s + 20,
            esc(caption)
        );
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// An SVG line chart: one polyline per `(name, points)` series, with axes, min/max tick labels
/// and a legend.
pub fn line_chart_svg(title: &str, x_label: &str, series: &[(&str, Vec<(f32, f32)>)]) -> String {
    let (wd, ht, left, top, right, bottom) = (640.0f32, 360.0f32, 60.0, 40.0, 160.0, 40.0);
    let pts = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NEG_INFINITY,
    );
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1.partial_cmp(&x0) != Some(std::cmp::Ordering::Greater) {
        x1 = x0 + 1.0;
    }
    if y1.partial_cmp(&y0) != Some(std::cmp::Ordering::Greater) {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = (wd - left - right, ht - top - bottom);
    let sx = |x: f32| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f32| top + ph - (y - y0) / (y1 - y0) * ph;
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{wd}" height="{ht}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        left + pw / 2.0,
        esc(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        ht - 8.0,
        esc(x_label)
    );
    for (v, y) in [(y0, top + ph), (y1, top + 4.0)] {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{y}" text-anchor="end">{v:.3}</text>"#,
            left - 6.0
        );
    }
    for (v, x) in [(x0, left), (x1, left + pw)] {
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" text-anchor="middle">{v}</text>"#,
            top + ph + 16.0
        );
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let color = colors[k % colors.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        // markers when there are few points (a one-epoch run is a single point)
        if path.len() <= 50 {
            for p in &path {
                let (x, y) = p.split_once(',').expect("formatted as x,y above");
                let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
        }
        let ly = top + 16.0 + 18.0 * k as f32;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="3"/>"#,
            wd - right + 12.0,
            ly - 4.0,
            wd - right + 32.0,
            ly - 4.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            wd - right + 38.0,
            esc(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn grid_has_one_rect_per_pixel_and_escaped_captions() {
        let img = Tensor::from_shape_fn(IxDyn(&[2, 1, 3, 4]), |d| d[3] as f32);
        let svg = image_grid_svg(&img, &["a<b".into(), "c".into()], 2, 2).unwrap();
        assert_eq!(svg.matches("<rect x=").count(), 2 * 3 * 4);
        assert!(svg.contains("a&lt;b") && svg.starts_with("<svg"));
        assert!(image_grid_svg(&Tensor::zeros(IxDyn(&[2, 3])), &[], 1, 1).is_err());
    }

    #[test]
    fn chart_has_a_polyline_per_series() {
        let svg = line_chart_svg(
            "t",
            "epoch",
            &[
                ("loss", vec![(1.0, 2.0), (2.0, 1.0)]),
                ("acc", vec![(1.0, 0.5)]),
            ],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">loss<") && svg.contains(">acc<"));
    }
}
