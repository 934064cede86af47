//! A self-contained HTML page of descriptions: each photo embedded as a base64 data URI, its
//! top classes as bars in inline SVG, and the text written about it.

use super::{ClassScore, Description};
use crate::error::{Error, Result};
use std::fmt::Write;

/// One photo of a [`html_page`].
#[derive(Debug, Clone, Copy)]
pub struct PageEntry<'a> {
    /// The photo's name (e.g. its file name), shown as its title.
    pub name: &'a str,
    /// The encoded photo (JPEG or PNG bytes), embedded as it is.
    pub image: &'a [u8],
    /// The classes drawn as bars, most probable first (e.g. the top 5).
    pub bars: &'a [ClassScore],
    /// What was written about it.
    pub description: &'a Description,
}

/// Standard base64 (RFC 4648, with `=` padding) of `bytes`.
///
/// ```
/// assert_eq!(handgrad::describe::base64(b"foobar"), "Zm9vYmFy");
/// assert_eq!(handgrad::describe::base64(b"fo"), "Zm8=");
/// ```
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The MIME type of encoded image bytes, from their signature.
///
/// # Errors
/// [`Error::Format`] for bytes that are neither JPEG nor PNG.
fn mime_type(name: &str, bytes: &[u8]) -> Result<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok("image/png")
    } else {
        Err(Error::format(
            name,
            "is neither a JPEG nor a PNG file (the page embeds the photo as it is)",
        ))
    }
}

/// Escapes text for HTML and SVG (content and attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Horizontal bars, one per class: its name, a bar as long as its probability, the percentage.
fn bars_svg(bars: &[ClassScore]) -> String {
    let (row, label_w, bar_w) = (24usize, 190usize, 220usize);
    let width = label_w + bar_w + 70;
    let height = row * bars.len().max(1);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"top classes\">\n"
    );
    for (i, c) in bars.iter().enumerate() {
        let y = i * row;
        let p = if c.probability.is_finite() {
            c.probability.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let len = (p * bar_w as f32).round().max(1.0);
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"13\">{name}</text>\
             <rect x=\"{bx}\" y=\"{ry}\" width=\"{len}\" height=\"{h}\" fill=\"{fill}\"/>\
             <text x=\"{px}\" y=\"{ty}\" font-size=\"13\">{pct}</text>",
            x = label_w - 8,
            ty = y + 16,
            name = esc(&c.name),
            bx = label_w,
            ry = y + 4,
            h = row - 8,
            fill = if i == 0 { "#2b6cb0" } else { "#90b4dc" },
            px = label_w as f32 + len + 6.0,
            pct = esc(&super::template::percent(c.probability)),
        );
    }
    s.push_str("</svg>");
    s
}

/// A self-contained HTML page (no external files): a title, an introduction line, then for
/// each entry the photo (a base64 data URI), its bars (inline SVG), the prompt and the text.
///
/// # Errors
/// [`Error::Format`] for an image that is neither JPEG nor PNG.
pub fn html_page(title: &str, intro: &str, entries: &[PageEntry<'_>]) -> Result<String> {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>{t}</title>\n<style>\n\
         body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}\n\
         section {{ display: flex; gap: 1.5em; align-items: flex-start; margin: 2em 0; }}\n\
         img {{ max-width: 320px; height: auto; border-radius: 4px; }}\n\
         .text {{ font-size: 1.1em; line-height: 1.4; }}\n\
         .prompt {{ color: #666; font-size: 0.85em; white-space: pre-wrap; }}\n\
         </style>\n</head>\n<body>\n<h1>{t}</h1>\n<p>{i}</p>\n",
        t = esc(title),
        i = esc(intro),
    );
    for e in entries {
        let mime = mime_type(e.name, e.image)?;
        let _ = write!(
            s,
            "<section>\n<img src=\"data:{mime};base64,{data}\" alt=\"{name}\"/>\n<div>\n\
             <h2>{name}</h2>\n{bars}\n<p class=\"text\">{text}</p>\n\
             <details><summary>prompt</summary><p class=\"prompt\">{prompt}</p></details>\n\
             </div>\n</section>\n",
            data = base64(e.image),
            name = esc(e.name),
            bars = bars_svg(e.bars),
            text = esc(&e.description.text),
            prompt = esc(&e.description.prompt),
        );
    }
    s.push_str("</body>\n</html>\n");
    Ok(s)
}
