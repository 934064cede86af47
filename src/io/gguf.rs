//! GGUF files (llama.cpp / ggml's model format, versions 2 and 3): a hostile-input-safe reader
//! that keeps the file memory-mapped and hands out zero-copy [`QMatrix`] views, and a writer.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64;
//! metadata as (string key, u32 value type, value); tensor infos as (string name, u32 n_dims,
//! u64 ne[n_dims] fastest-varying first, u32 ggml type, u64 offset); padding to
//! `general.alignment` (default 32); the data section, each tensor at its (aligned) offset.
//!
//! Every count, string length, array length, dims product, offset and size is checked against
//! the bytes actually present before anything is allocated, array nesting is bounded, and the
//! total number of metadata values is limited, so a corrupt or hostile file gives an
//! [`Error::Format`] naming the file and the field, never a panic or a huge allocation.
//! Tensors of ggml types other than the six [`QType`]s keep the file readable (metadata, infos);
//! only [`GgufFile::matrix`] / [`GgufFile::tensor_f32`] of such a tensor is an error.

mod parse;
mod value;
mod write;

pub use value::GgufValue;
pub use write::{gguf_bytes, write_gguf, GgufTensorRef};

use crate::error::{Error, Result};
use crate::io::SharedBytes;
use crate::ops::quant::{unsupported_message, QMatrix, QType};
use crate::tensor::Tensor;
use ndarray::IxDyn;
use std::collections::HashMap;
use std::path::Path;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor's name, e.g. `"blk.0.attn_q.weight"`.
    pub name: String,
    /// ggml's `ne`: sizes fastest-varying first (an `nn.Linear` `[out, in]` has `[in, out]`).
    pub dims: Vec<u64>,
    /// ggml type id (see [`QType::from_ggml`]).
    pub ggml_type: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

/// A parsed GGUF file: metadata, tensor infos, and the (usually memory-mapped) bytes.
#[derive(Clone, Debug)]
pub struct GgufFile {
    bytes: SharedBytes,
    source: String,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    keys: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    names: HashMap<String, usize>,
    data_start: usize,
}

impl GgufFile {
    /// Memory-maps and parses the GGUF file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path when it cannot be read; [`Error::Format`] naming the file
    /// and the field for anything malformed (see the module docs).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = SharedBytes::map_file(path)?;
        Self::parse(bytes, &path.display().to_string())
    }

    /// Parses GGUF bytes; `source_name` names them in errors.
    ///
    /// # Errors
    /// [`Error::Format`] for anything malformed (see the module docs).
    pub fn parse(bytes: SharedBytes, source_name: &str) -> Result<Self> {
        let h = parse::parse_header(&bytes, source_name)?;
        Ok(GgufFile {
            bytes,
            source: source_name.to_string(),
            version: h.version,
            alignment: h.alignment,
            metadata: h.metadata,
            keys: h.keys,
            tensors: h.tensors,
            names: h.names,
            data_start: h.data_start,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata key-value pairs, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::format(&self.source, message)
    }

    /// The value of `key` converted by `f`, or an error naming the key, the type found and the
    /// type expected.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a GgufValue) -> Option<T>,
    ) -> Result<T> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("metadata key {key:?} is missing")))?;
        f(v).ok_or_else(|| {
            self.err(format!(
                "metadata key {key:?} is {} {}, expected {expected}",
                v.describe(),
                short(v)
            ))
        })
    }

    /// Metadata `key` as an unsigned integer (any integer type, not negative).
    ///
    /// # Errors
    /// [`Error::Format`] naming the key when it is missing or of another type.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "a non-negative integer", GgufValue::as_u64)
    }

    /// Metadata `key` as `f32` (a `float32`, or a `float64` rounded to `f32`).
    ///
    /// # Errors
    /// [`Error::Format`] naming the key when it is missing or not a float.
    pub fn f32(&self, key: &str) -> Result<f32> {
        self.typed(key, "a float32", |v| match *v {
            GgufValue::F32(x) => Some(x),
            GgufValue::F64(x) => Some(x as f32),
            _ => None,
        })
    }

    /// Metadata `key` as a string.
    ///
    /// # Errors
    /// [`Error::Format`] naming the key when it is missing or not a string.
    pub fn string(&self, key: &str) -> Result<&str> {
        self.typed(key, "a string", GgufValue::as_str)
    }

    /// Metadata `key` as an array of strings.
    ///
    /// # Errors
    /// [`Error::Format`] naming the key when it is missing or not an array of strings.
    pub fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(GgufValue::as_str).collect()
        })
    }

    /// Metadata `key` as an array of integers (any integer element type that fits `i64`).
    ///
    /// # Errors
    /// [`Error::Format`] naming the key when it is missing or not an array of integers.
    pub fn i64_array(&self, key: &str) -> Result<Vec<i64>> {
        self.typed(key, "an array of integers", |v| {
            v.as_array()?
                .iter()
                .map(|e| match e {
                    GgufValue::F32(_) | GgufValue::F64(_) | GgufValue::Bool(_) => None,
                    e => e.as_i64(),
                })
                .collect()
        })
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    /// Tensor `name` as (info, its type, rows, cols, its bytes): `cols = ne0`, `rows` the
    /// product of the other dims.
    fn raw(&self, name: &str) -> Result<(&GgufTensorInfo, QType, usize, usize, SharedBytes)> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.err(format!("no tensor {name:?} in the file")))?;
        let qtype = QType::from_ggml(info.ggml_type).map_err(|_| {
            self.err(format!(
                "tensor {name:?}: {}",
                unsupported_message(info.ggml_type)
            ))
        })?;
        let too_big = || {
            self.err(format!(
                "tensor {name:?}: dims {:?} exceed this machine's address space",
                info.dims
            ))
        };
        let cols = usize::try_from(info.dims[0]).map_err(|_| too_big())?;
        let rows =
            usize::try_from(info.dims[1..].iter().product::<u64>()).map_err(|_| too_big())?;
        // Sizes and offsets were checked against the file when it was parsed.
        let len = qtype
            .row_bytes(cols)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(too_big)?;
        let start = self.data_start + info.offset as usize;
        let bytes = self.bytes.slice(start..start + len)?;
        Ok((info, qtype, rows, cols, bytes))
    }

    /// The 2-D tensor `name` as a zero-copy [`QMatrix`] into the file's bytes: `cols = ne0`
    /// (the row length, `in` features), `rows = ne1`.
    ///
    /// # Shapes
    /// GGUF dims `[ne0, ne1]` → `(rows = ne1, cols = ne0)`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and tensor when it is missing, not 2-D, or of a type
    /// other than the six supported ones.
    pub fn matrix(&self, name: &str) -> Result<QMatrix> {
        let (info, qtype, rows, cols, bytes) = self.raw(name)?;
        if info.dims.len() != 2 {
            return Err(self.err(format!(
                "tensor {name:?} has dims {:?}; a matrix needs 2 ([in, out])",
                info.dims
            )));
        }
        QMatrix::new(rows, cols, qtype, bytes)
    }

    /// Tensor `name` (any rank) dequantised to `f32`, in PyTorch's shape (`ne` reversed).
    ///
    /// # Shapes
    /// GGUF dims `[ne0, ne1, …]` → `(…, ne1, ne0)`.
    ///
    /// # Errors
    /// As [`matrix`](Self::matrix), except that any rank is accepted.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        let (info, qtype, rows, cols, bytes) = self.raw(name)?;
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let values = if rows == 0 || cols == 0 {
            Vec::new()
        } else {
            QMatrix::new(rows, cols, qtype, bytes)?
                .dequantize()
                .into_raw_vec_and_offset()
                .0
        };
        Tensor::from_shape_vec(IxDyn(&shape), values)
            .map_err(|e| self.err(format!("tensor {name:?}: shape {shape:?}: {e}")))
    }
}

/// A short rendering of a value for error messages (scalars and strings in full, up to 40
/// characters; arrays by length).
fn short(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(a) => format!("of length {}", a.len()),
        GgufValue::String(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        v => format!("{v:?}"),
    }
}
