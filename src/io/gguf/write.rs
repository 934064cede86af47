//! The GGUF v3 writer: header, metadata, tensor infos, aligned data; written atomically.

use super::parse::{DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS};
use super::value::{tid, GgufValue};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::ops::quant::{QMatrix, QType};
use std::collections::HashSet;
use std::path::Path;

/// A tensor to write: its name, GGUF dims (`ne`, fastest-varying first), type and stored bytes.
#[derive(Clone, Debug)]
pub struct GgufTensorRef<'a> {
    /// The tensor's name, e.g. `"blk.0.attn_q.weight"`.
    pub name: &'a str,
    /// ggml's `ne`, fastest-varying first (`[cols, rows]` for a matrix).
    pub dims: Vec<u64>,
    /// The storage encoding of `data`.
    pub qtype: QType,
    /// The encoded values, `row_bytes(dims[0]) · Π dims[1..]` bytes.
    pub data: &'a [u8],
}

impl<'a> GgufTensorRef<'a> {
    /// A matrix in its stored encoding, with dims `[cols, rows]`.
    pub fn matrix(name: &'a str, m: &'a QMatrix) -> Self {
        GgufTensorRef {
            name,
            dims: vec![m.cols() as u64, m.rows() as u64],
            qtype: m.qtype(),
            data: m.data(),
        }
    }
}

/// Writes a GGUF v3 file atomically (temporary file + rename, as [`write_atomic`]), with the
/// alignment of `general.alignment` when the metadata holds it, else 32.
///
/// # Errors
/// As [`gguf_bytes`]; [`Error::Io`] naming the path when it cannot be written.
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorRef<'_>],
) -> Result<()> {
    let bytes = gguf_bytes(metadata, tensors)?;
    write_atomic(path, &bytes)
}

/// The bytes of a GGUF v3 file (see [`write_gguf`]).
///
/// # Errors
/// [`Error::Config`] for duplicate keys or tensor names, mixed-type or too deeply nested arrays,
/// a `general.alignment` that is not a power of two, dims that are not 1..=4 long, or data whose
/// length does not match its dims and type.
pub fn gguf_bytes(
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorRef<'_>],
) -> Result<Vec<u8>> {
    let bad = |name: &str, value: String, expected: &str| {
        Error::config("write_gguf", name, value, expected)
    };
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for (k, v) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(bad("metadata key", format!("{k:?}"), "each key once"));
        }
        check_value(k, v, 0)?;
        if k == "general.alignment" {
            alignment = match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
                _ => return Err(bad("general.alignment", format!("{v:?}"), "a power of two")),
            };
        }
    }
    let mut names = HashSet::new();
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !names.insert(t.name) {
            return Err(bad(
                "tensor name",
                format!("{:?}", t.name),
                "each name once",
            ));
        }
        if t.dims.is_empty() || t.dims.len() > MAX_DIMS as usize {
            return Err(bad(
                &format!("dims of {:?}", t.name),
                format!("{:?}", t.dims),
                "1 to 4 sizes",
            ));
        }
        let n_rows = t.dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let want = usize::try_from(t.dims[0])
            .ok()
            .and_then(|c| t.qtype.row_bytes(c))
            .zip(n_rows.and_then(|r| usize::try_from(r).ok()))
            .and_then(|(rb, r)| rb.checked_mul(r));
        if want != Some(t.data.len()) {
            return Err(bad(
                &format!("data of {:?}", t.name),
                format!("{} bytes", t.data.len()),
                &format!("the size of {} dims {:?}", t.qtype.name(), t.dims),
            ));
        }
        sizes.push(t.data.len());
    }
    let align = alignment as usize;
    let pad = |n: usize| n.div_ceil(align) * align;
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    for (t, &size) in tensors.iter().zip(&sizes) {
        put_str(&mut out, t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.qtype.ggml_id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset = pad(offset + size);
    }
    out.resize(pad(out.len()), 0);
    for t in tensors {
        out.extend_from_slice(t.data);
        out.resize(pad(out.len()), 0);
    }
    Ok(out)
}

/// Checks that arrays are homogeneous and nest at most [`MAX_ARRAY_DEPTH`] deep.
fn check_value(key: &str, v: &GgufValue, depth: usize) -> Result<()> {
    if let GgufValue::Array(items) = v {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::config(
                "write_gguf",
                key,
                "an array",
                format!("arrays nested at most {MAX_ARRAY_DEPTH} deep"),
            ));
        }
        if let Some(first) = items.first() {
            let t = first.type_id();
            if let Some(e) = items.iter().find(|e| e.type_id() != t) {
                return Err(Error::config(
                    "write_gguf",
                    key,
                    format!(
                        "an array mixing {} and {}",
                        first.type_name(),
                        e.type_name()
                    ),
                    "elements of one type",
                ));
            }
        }
        for e in items {
            check_value(key, e, depth + 1)?;
        }
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(items) => {
            // An empty array is written with element type uint8.
            let et = items.first().map_or(tid::U8, GgufValue::type_id);
            out.extend_from_slice(&et.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for e in items {
                put_value(out, e);
            }
        }
    }
}
