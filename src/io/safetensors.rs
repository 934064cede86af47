//! Named `f32` tensors in the safetensors format (Hugging Face), read and written safely.
//!
//! Reading checks the header through the `safetensors` crate (offsets, sizes and dtypes are
//! validated against the buffer, so a hostile file gives an `Err`, never an allocation larger
//! than the file) and converts `F32`, `F16` and `BF16` tensors to `f32`. Writing is atomic:
//! a temporary file in the same folder is written, flushed to disk, then renamed over the target.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use ndarray::IxDyn;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The contents of a safetensors file: tensors by name and the optional string metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorFile {
    /// Tensors by name, converted to `f32`.
    pub tensors: BTreeMap<String, Tensor>,
    /// The header's `__metadata__` entries.
    pub metadata: HashMap<String, String>,
}

/// Files at least this large are memory-mapped instead of read into memory (64 MiB).
pub const MMAP_MIN_BYTES: u64 = 64 << 20;

/// Reads a safetensors file. Files of [`MMAP_MIN_BYTES`] or more are memory-mapped, so loading
/// GPT-2 (500 MB) holds the converted `f32` tensors but never a second in-memory copy of the file.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] (naming the file and, where it
/// applies, the tensor) for a malformed header, out-of-range offsets, or an unsupported dtype.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    with_file_bytes(path.as_ref(), parse_safetensors)
}

/// Runs `parse` on the bytes of the file at `path` (memory-mapped from [`MMAP_MIN_BYTES`] on)
/// and its display name.
///
/// # Errors
/// [`Error::Io`] naming the path when it cannot be opened or read; `parse`'s errors.
pub(crate) fn with_file_bytes<T>(
    path: &Path,
    parse: impl FnOnce(&[u8], &str) -> Result<T>,
) -> Result<T> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let name = path.display().to_string();
    if len >= MMAP_MIN_BYTES {
        let map = mmap::map_read_only(&file).map_err(io)?;
        parse(&map, &name)
    } else {
        let mut bytes = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io)?;
        parse(&bytes, &name)
    }
}

/// The one memory map of the crate.
#[allow(unsafe_code)]
mod mmap {
    /// Maps `file` read-only.
    pub(super) fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
        // SAFETY: the map is only read, and only while parsing; a file truncated or rewritten by
        // another process during those milliseconds is the one hazard memory maps always carry
        // (the same trade-off as candle and the safetensors crate's own loaders). Every offset
        // read from it is validated against its length by the safetensors parser first.
        unsafe { memmap2::Mmap::map(file) }
    }
}

/// Parses safetensors bytes; `source_name` names the buffer in errors.
///
/// # Errors
/// As [`read_safetensors`].
pub fn parse_safetensors(bytes: &[u8], source_name: &str) -> Result<TensorFile> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(source_name, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(source_name, format!("not a valid safetensors header: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = to_f32(&view)
            .map_err(|msg| Error::format(source_name, format!("tensor {name:?}: {msg}")))?;
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

fn to_f32(view: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported (expected F32, F16 or BF16)"
            ))
        }
    };
    Tensor::from_shape_vec(IxDyn(view.shape()), values)
        .map_err(|e| format!("shape {:?}: {e}", view.shape()))
}

/// IEEE half precision → `f32` (exact; handles subnormals, infinities and NaN).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m · 2^-24.
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Serialises named tensors (as `F32`) with optional metadata to safetensors bytes.
///
/// # Errors
/// [`Error::Format`] if the safetensors writer rejects the data (e.g. a header too large).
pub fn to_safetensors_bytes(
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::format("safetensors writer", format!("tensor {name:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    ::safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::format("safetensors writer", e.to_string()))
}

/// Writes named tensors (as `F32`) atomically to `path`: a temporary file beside it is written
/// and synced, then renamed over `path`, so a crash leaves either the old or the new file.
///
/// # Errors
/// [`Error::Io`] naming the path on any file-system failure.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes = to_safetensors_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` atomically to `path`: a temporary file beside it is written and synced, then
/// renamed over `path`, so a crash leaves either the old or the new file, never a torn one.
///
/// # Errors
/// [`Error::Io`] naming the path on any file-system failure.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no file name",
        ))
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
