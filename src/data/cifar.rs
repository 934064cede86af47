//! The CIFAR-10 binary format (`cifar-10-binary.tar.gz` → `cifar-10-batches-bin/`).
//!
//! Each batch file (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`) holds records of
//! 3,073 bytes: one label byte `0..=9`, then 3,072 pixel bytes — the 1,024 red values, then the
//! 1,024 green, then the 1,024 blue, each plane a row-major 32×32 image. CIFAR-10 is not in any
//! package registry, so nothing is embedded: users download it on their own machines.

use super::idx::{read_file, Split};
use super::Dataset;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Bytes per CIFAR-10 record: 1 label + 3·32·32 pixels.
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR10_PIXELS;
const CIFAR10_PIXELS: usize = 3 * 32 * 32;

/// The CIFAR-10 class names, indexed by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one CIFAR-10 binary batch from its bytes; `source_name` names it in errors.
///
/// # Shapes
/// → inputs `(N, 3, 32, 32)` as `f32` in `[0, 1]` (pixel / 255), labels `[N]` in `0..10`, with
/// `N = bytes.len() / 3073`.
///
/// # Errors
/// [`Error::Format`] naming `source_name` for an empty input, a length that is not a multiple
/// of 3,073 bytes, or a label above 9 (naming the record).
pub fn parse_cifar10_batch(bytes: &[u8], source_name: &str) -> Result<Dataset> {
    let mut values = Vec::new();
    let mut labels = Vec::new();
    append_batch(bytes, source_name, &mut values, &mut labels)?;
    Dataset::from_flat(values, &[3, 32, 32], labels)
}

/// Reads one CIFAR-10 binary batch file (e.g. `test_batch.bin`).
///
/// # Shapes
/// → inputs `(N, 3, 32, 32)` in `[0, 1]`, labels `[N]` in `0..10`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; otherwise as [`parse_cifar10_batch`].
pub fn read_cifar10_batch(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    parse_cifar10_batch(&read_file(path)?, &path.display().to_string())
}

/// Loads a CIFAR-10 split from `dir`: `data_batch_1.bin` … `data_batch_5.bin` (in that order)
/// for [`Split::Train`], `test_batch.bin` for [`Split::Test`]. When `dir` lacks them but holds
/// the extracted archive's `cifar-10-batches-bin/` folder, that folder is used.
///
/// The train split takes 50,000 × 3,072 × 4 bytes ≈ 614 MB as `f32`.
///
/// # Shapes
/// → inputs `(N, 3, 32, 32)` in `[0, 1]` (`N` = 50,000 / 10,000 for the real data), labels `[N]`.
///
/// # Errors
/// [`Error::Io`] naming the file when one is missing or unreadable; [`Error::Format`] as in
/// [`parse_cifar10_batch`].
pub fn load_cifar10(dir: impl AsRef<Path>, split: Split) -> Result<Dataset> {
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let mut dir: PathBuf = dir.as_ref().to_path_buf();
    let nested = dir.join("cifar-10-batches-bin");
    if !dir.join(&names[0]).is_file() && nested.join(&names[0]).is_file() {
        dir = nested;
    }
    // Reserve the final size up front (from the file sizes) so that growing never doubles it.
    let mut total = 0usize;
    for name in &names {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io { path, source })?;
        total = total.saturating_add(meta.len() as usize);
    }
    let records = total / CIFAR10_RECORD_BYTES;
    let mut values = Vec::with_capacity(records * CIFAR10_PIXELS);
    let mut labels = Vec::with_capacity(records);
    for name in &names {
        let path = dir.join(name);
        let bytes = read_file(&path)?;
        append_batch(
            &bytes,
            &path.display().to_string(),
            &mut values,
            &mut labels,
        )?;
    }
    Dataset::from_flat(values, &[3, 32, 32], labels)
}

/// Validates one batch and appends its pixels (already planar, so a straight copy) and labels.
fn append_batch(
    bytes: &[u8],
    name: &str,
    values: &mut Vec<f32>,
    labels: &mut Vec<usize>,
) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR10_RECORD_BYTES) {
        return Err(Error::format(
            name,
            format!(
                "{} bytes is not a positive multiple of the {CIFAR10_RECORD_BYTES}-byte CIFAR-10 \
                 record (1 label byte + 3072 pixel bytes); {} whole records and {} bytes left over",
                bytes.len(),
                bytes.len() / CIFAR10_RECORD_BYTES,
                bytes.len() % CIFAR10_RECORD_BYTES
            ),
        ));
    }
    let records = bytes.len() / CIFAR10_RECORD_BYTES;
    for (i, rec) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
        if rec[0] > 9 {
            return Err(Error::format(
                name,
                format!(
                    "record {i} (byte offset {}) has label {}; expected 0..=9",
                    i * CIFAR10_RECORD_BYTES,
                    rec[0]
                ),
            ));
        }
    }
    labels.extend(
        bytes
            .iter()
            .step_by(CIFAR10_RECORD_BYTES)
            .map(|&l| l as usize),
    );
    let start = values.len();
    values.resize(start + records * CIFAR10_PIXELS, 0.0);
    values[start..]
        .par_chunks_mut(CIFAR10_PIXELS)
        .zip(bytes.par_chunks(CIFAR10_RECORD_BYTES))
        .for_each(|(dst, rec)| {
            for (d, &s) in dst.iter_mut().zip(&rec[1..]) {
                *d = s as f32 / 255.0;
            }
        });
    Ok(())
}
