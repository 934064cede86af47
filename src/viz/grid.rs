//! Image grids: each image with what a model predicted and the true label, mistakes marked.

use super::esc;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::fmt::Write;

/// The colour of mistakes (frame and text).
const RED: &str = "#d62728";
/// Approximate width of a caption character at the grid's font size, screen pixels.
const CHAR_W: usize = 8;

/// What [`image_grid_svg`] writes under one image: the predicted label (with its probability,
/// if given) and, if known, the true label. A caption whose truth differs from its prediction
/// is a mistake: red frame, red text.
///
/// ```
/// use handgrad::viz::Caption;
/// let c = Caption::new("sneaker").probability(0.97).truth("sandal");
/// assert!(c.is_mistake());
/// assert!(!Caption::new("bag").truth("bag").is_mistake());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    /// The predicted label.
    pub predicted: String,
    /// The predicted label's probability in `[0, 1]`, printed as a percentage (default none).
    pub probability: Option<f32>,
    /// The true label (default none: nothing to compare with, never a mistake).
    pub truth: Option<String>,
}

impl Caption {
    /// A caption showing `predicted` only.
    pub fn new(predicted: impl Into<String>) -> Caption {
        Caption {
            predicted: predicted.into(),
            probability: None,
            truth: None,
        }
    }

    /// Adds the prediction's probability.
    pub fn probability(mut self, p: f32) -> Caption {
        self.probability = Some(p);
        self
    }

    /// Adds the true label.
    pub fn truth(mut self, label: impl Into<String>) -> Caption {
        self.truth = Some(label.into());
        self
    }

    /// Whether the true label is known and differs from the prediction.
    pub fn is_mistake(&self) -> bool {
        self.truth.as_ref().is_some_and(|t| *t != self.predicted)
    }

    /// The first line: the prediction and its probability.
    fn first_line(&self) -> String {
        match self.probability {
            Some(p) => format!("{} {:.0}%", self.predicted, 100.0 * p),
            None => self.predicted.clone(),
        }
    }

    /// The second line: the true label, if known.
    fn second_line(&self) -> Option<String> {
        self.truth.as_ref().map(|t| format!("true: {t}"))
    }
}

/// An SVG grid of grey or RGB images, `scale` screen pixels per image pixel, `cols` images per
/// row, each with its [`Caption`] underneath: the predicted label and, when known, the true one
/// (`true: …`). Mistakes get a red frame around the image and red captions, and a line above the
/// grid counts them. Cells are as wide as their longest caption, so no label is cut. Pixel
/// values are mapped linearly from the batch's min..max to 0..255.
///
/// # Shapes
/// `images: (N, 1, H, W)` or `(N, 3, H, W)`; `captions`: `N` captions, or none at all.
///
/// # Errors
/// [`Error::Shape`] for another layout; [`Error::Config`] for a number of captions other than
/// 0 or `N`, or a `scale` or `cols` of 0.
pub fn image_grid_svg(
    images: &Tensor,
    captions: &[Caption],
    scale: usize,
    cols: usize,
) -> Result<String> {
    let op = "image_grid_svg";
    if images.ndim() != 4 || !(images.shape()[1] == 1 || images.shape()[1] == 3) {
        return Err(Error::shape(op, "images (N, 1 or 3, H, W)", images.shape()));
    }
    let (n, c, h, w) = (
        images.shape()[0],
        images.shape()[1],
        images.shape()[2],
        images.shape()[3],
    );
    if !(captions.is_empty() || captions.len() == n) {
        return Err(Error::config(
            op,
            "captions",
            captions.len(),
            format!("one per image ({n}) or none"),
        ));
    }
    for (name, v) in [("scale", scale), ("cols", cols)] {
        if v == 0 {
            return Err(Error::config(op, name, v, "at least 1"));
        }
    }
    let (lo, hi) = images
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = if hi > lo { hi - lo } else { 1.0 };
    let to8 = |v: f32| (((v - lo) / range) * 255.0).round().clamp(0.0, 255.0) as u8;

    let s = scale;
    let longest = captions
        .iter()
        .flat_map(|c| [c.first_line(), c.second_line().unwrap_or_default()])
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let lines = if captions.iter().any(|c| c.truth.is_some()) {
        2
    } else {
        1
    };
    let cell_w = (w * s).max(longest * CHAR_W) + 16;
    let cell_h = h * s + 16 + 18 * lines + 8;
    let mistakes = captions.iter().filter(|c| c.is_mistake()).count();
    let judged = captions.iter().filter(|c| c.truth.is_some()).count();
    let head = if judged > 0 { 26 } else { 0 };
    let cols = cols.min(n.max(1));
    let rows = n.div_ceil(cols);
    let (width, height) = (cols * cell_w, rows * cell_h + head);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    if judged > 0 {
        let _ = writeln!(
            svg,
            r#"<text class="summary" x="8" y="18">{mistakes} of {judged} wrong (red frame: prediction ≠ true label)</text>"#
        );
    }
    for i in 0..n {
        let x0 = (i % cols) * cell_w + 8 + (cell_w - 16 - w * s) / 2;
        let y0 = (i / cols) * cell_h + 8 + head;
        let mut px = String::new();
        for y in 0..h {
            for x in 0..w {
                let v = |ch: usize| to8(images[[i, ch, y, x]]);
                let (r, g, b) = if c == 3 {
                    (v(0), v(1), v(2))
                } else {
                    (v(0), v(0), v(0))
                };
                let _ = writeln!(
                    px,
                    r##"<rect x="{}" y="{}" width="{s}" height="{s}" fill="#{r:02x}{g:02x}{b:02x}"/>"##,
                    x0 + x * s,
                    y0 + y * s
                );
            }
        }
        svg.push_str(&px);
        let Some(cap) = captions.get(i) else {
            continue;
        };
        let wrong = cap.is_mistake();
        if wrong {
            let _ = writeln!(
                svg,
                r#"<rect class="mistake" x="{}" y="{}" width="{}" height="{}" fill="none" stroke="{RED}" stroke-width="3"/>"#,
                x0 - 2,
                y0 - 2,
                w * s + 4,
                h * s + 4
            );
        }
        let cx = (i % cols) * cell_w + cell_w / 2;
        let color = if wrong { RED } else { "#222" };
        let _ = writeln!(
            svg,
            r#"<text class="predicted" x="{cx}" y="{}" text-anchor="middle" fill="{color}">{}</text>"#,
            y0 + h * s + 20,
            esc(&cap.first_line())
        );
        if let Some(line) = cap.second_line() {
            let color = if wrong { RED } else { "#666" };
            let _ = writeln!(
                svg,
                r#"<text class="truth" x="{cx}" y="{}" text-anchor="middle" fill="{color}">{}</text>"#,
                y0 + h * s + 38,
                esc(&line)
            );
        }
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}
