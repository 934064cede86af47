//! The UCI optical-recognition digits (1,797 grey 8×8 images of 0–9), embedded.
//!
//! Source: the copy shipped with scikit-learn (`sklearn/datasets/data/digits.csv.gz`), CC BY 4.0;
//! see NOTICE. Each CSV row holds 64 pixel values in `0..=16` then the label.

use super::Dataset;
use crate::error::{Error, Result};
use std::io::Read;

const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The embedded UCI digits: inputs `(1797, 64)` scaled to `[0, 1]` (pixel / 16), labels `0..10`.
///
/// # Errors
/// Only if the embedded file were corrupt ([`Error::Format`]).
pub fn digits() -> Result<Dataset> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::format("digits.csv.gz", format!("gzip: {e}")))?;
    parse_digits_csv(&text, "digits.csv.gz")
}

/// Parses digits CSV text (64 pixel values in `0..=16`, then the label `0..=9`, per line).
///
/// # Errors
/// [`Error::Format`] naming `source_name` and the line for a malformed row.
pub fn parse_digits_csv(text: &str, source_name: &str) -> Result<Dataset> {
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(Error::format(
                source_name,
                format!(
                    "line {}: {} fields, expected 65 (64 pixels and a label)",
                    i + 1,
                    fields.len()
                ),
            ));
        }
        for f in &fields[..64] {
            let v: f32 = f
                .trim()
                .parse()
                .ok()
                .filter(|v: &f32| (0.0..=16.0).contains(v))
                .ok_or_else(|| {
                    Error::format(
                        source_name,
                        format!("line {}: pixel {f:?} not in 0..=16", i + 1),
                    )
                })?;
            values.push(v / 16.0);
        }
        let label: usize = fields[64]
            .trim()
            .parse()
            .ok()
            .filter(|&l| l < 10)
            .ok_or_else(|| {
                Error::format(
                    source_name,
                    format!("line {}: label {:?} not in 0..=9", i + 1, fields[64]),
                )
            })?;
        labels.push(label);
    }
    Dataset::from_flat(values, &[64], labels)
}
