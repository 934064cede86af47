//! The GGUF header parser: every count, length and offset is checked against the bytes that
//! are left before anything is allocated.

use super::value::{tid, type_id_name, GgufValue};
use super::GgufTensorInfo;
use crate::error::{Error, Result};
use crate::ops::quant::ggml_type_info;
use std::collections::HashMap;

/// The file's magic bytes.
pub(crate) const MAGIC: &[u8; 4] = b"GGUF";
/// Arrays nest at most this deep (an array of arrays is depth 2).
pub(crate) const MAX_ARRAY_DEPTH: usize = 8;
/// At most this many metadata values in total (array elements included), bounding the memory of
/// a hostile file whose values are one byte each.
pub(crate) const MAX_VALUES: usize = 1 << 23;
/// At most this many dimensions per tensor (ggml's `GGML_MAX_DIMS`).
pub(crate) const MAX_DIMS: u32 = 4;
/// The alignment when `general.alignment` is absent.
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;

/// A bounds-checked little-endian reader.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    source: &'a str,
    values: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], source: &'a str) -> Self {
        Cursor {
            bytes,
            pos: 0,
            source,
            values: 0,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// An [`Error::Format`] naming the source.
    pub(crate) fn err(&self, message: impl Into<String>) -> Error {
        Error::format(self.source, message)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {what} at byte {} needs {n} bytes, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_bytes` long, checked against the bytes left.
    pub(crate) fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = (self.remaining() / min_bytes.max(1)) as u64;
        if n > fits {
            return Err(self.err(format!(
                "{what} at byte {at} is {n}, but the {} bytes left hold at most {fits}",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    /// A GGUF string: u64 length + UTF-8 bytes.
    pub(crate) fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.count(&format!("length of {what}"), 1)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| self.err(format!("{what} at byte {at} is not valid UTF-8: {e}")))
    }

    /// Counts `n` more metadata values against [`MAX_VALUES`].
    fn budget(&mut self, n: usize) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(self.err(format!(
                "metadata holds more than {MAX_VALUES} values (the reader's limit)"
            )));
        }
        Ok(())
    }

    /// One value of type `t`; `key` names it in errors; `depth` is the array nesting so far.
    pub(crate) fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<GgufValue> {
        self.budget(1)?;
        let what = format!("value of {key:?}");
        Ok(match t {
            tid::U8 => GgufValue::U8(self.array::<1>(&what)?[0]),
            tid::I8 => GgufValue::I8(self.array::<1>(&what)?[0] as i8),
            tid::U16 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            tid::I16 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            tid::U32 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            tid::I32 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            tid::F32 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            tid::U64 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            tid::I64 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            tid::F64 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            tid::BOOL => {
                let at = self.pos;
                match self.array::<1>(&what)?[0] {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => {
                        return Err(self.err(format!(
                            "{what} at byte {at}: bool byte is {b}, expected 0 or 1"
                        )))
                    }
                }
            }
            tid::STRING => GgufValue::String(self.string(&what)?),
            tid::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!(
                        "{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let at = self.pos;
                let et = self.u32(&format!("element type of {key:?}"))?;
                let min = min_value_bytes(et).ok_or_else(|| {
                    self.err(format!(
                        "{what} at byte {at}: unknown array element type {et} (expected 0..=12)"
                    ))
                })?;
                let n = self.count(&format!("array length of {key:?}"), min)?;
                self.budget(n)?;
                self.values -= n; // each element counts itself in `value`
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(et, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            other => {
                return Err(self.err(format!(
                    "{what}: unknown value type {other} (expected 0..=12)"
                )))
            }
        })
    }

    /// One tensor-info record (name, dims, type, offset), checked in itself.
    pub(crate) fn tensor_info(&mut self, i: usize) -> Result<GgufTensorInfo> {
        let name = self.string(&format!("name of tensor {i}"))?;
        let at = self.pos;
        let n_dims = self.u32(&format!("n_dims of tensor {name:?}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.err(format!(
                "tensor {name:?} at byte {at} has {n_dims} dimensions, expected 1..={MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&format!("dims of tensor {name:?}"))?);
        }
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > i64::MAX as u64) {
            return Err(self.err(format!(
                "tensor {name:?}: dims {dims:?} have a product that overflows"
            )));
        }
        let ggml_type = self.u32(&format!("type of tensor {name:?}"))?;
        let offset = self.u64(&format!("offset of tensor {name:?}"))?;
        Ok(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        })
    }
}

/// The least bytes a value of type `t` occupies, or `None` for an unknown type.
fn min_value_bytes(t: u32) -> Option<usize> {
    type_id_name(t)?;
    Some(match t {
        tid::U8 | tid::I8 | tid::BOOL => 1,
        tid::U16 | tid::I16 => 2,
        tid::U32 | tid::I32 | tid::F32 => 4,
        tid::U64 | tid::I64 | tid::F64 | tid::STRING => 8,
        _ => 12, // array: element type + count
    })
}

/// Bytes of a tensor of ggml type `ggml_type` and dims `dims` (ne, fastest first), when the
/// type is known; `Err` when the row length is not a multiple of its block or the size
/// overflows.
pub(crate) fn tensor_bytes(info: &GgufTensorInfo) -> std::result::Result<Option<u64>, String> {
    let Some((tname, bl, bb)) = ggml_type_info(info.ggml_type) else {
        return Ok(None);
    };
    let ne0 = info.dims[0];
    if !ne0.is_multiple_of(bl as u64) {
        return Err(format!(
            "tensor {:?}: row length {ne0} is not a multiple of the {tname} block length {bl}",
            info.name
        ));
    }
    let rows = info.dims[1..].iter().product::<u64>(); // no overflow: the product was checked
    (ne0 / bl as u64)
        .checked_mul(bb as u64)
        .and_then(|r| r.checked_mul(rows))
        .map(Some)
        .ok_or_else(|| format!("tensor {:?}: byte size overflows", info.name))
}

/// The parsed header: version, metadata, tensor infos, alignment and data-section start.
pub(crate) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub keys: HashMap<String, usize>,
    pub tensors: Vec<GgufTensorInfo>,
    pub names: HashMap<String, usize>,
    pub alignment: u64,
    pub data_start: usize,
}

/// Parses and checks the whole header of `bytes`.
pub(crate) fn parse_header(bytes: &[u8], source: &str) -> Result<Header> {
    let mut c = Cursor::new(bytes, source);
    let magic = c.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(c.err(format!(
            "not a GGUF file: magic is {magic:02x?}, expected \"GGUF\" (47 47 55 46)"
        )));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (a big-endian file; only little-endian files are supported)"
        } else {
            ""
        };
        return Err(c.err(format!(
            "GGUF version {version} is not supported (expected 2 or 3){hint}"
        )));
    }
    let n_tensors = c.count("tensor count", 24)?;
    let n_kv = c.count("metadata count", 13)?;
    let mut metadata = Vec::with_capacity(n_kv);
    let mut keys = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key {i}"))?;
        let t = c.u32(&format!("value type of {key:?}"))?;
        let v = c.value(t, &key, 0)?;
        if keys.insert(key.clone(), metadata.len()).is_some() {
            return Err(c.err(format!("metadata key {key:?} appears twice")));
        }
        metadata.push((key, v));
    }
    let alignment = match keys.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(&i) => {
            let v = &metadata[i].1;
            match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
                _ => {
                    return Err(c.err(format!(
                        "general.alignment is {v:?}, expected a power of two (default 32)"
                    )))
                }
            }
        }
    };
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let t = c.tensor_info(i)?;
        if names.insert(t.name.clone(), i).is_some() {
            return Err(c.err(format!("tensor {:?} appears twice", t.name)));
        }
        tensors.push(t);
    }
    let end = c.pos() as u64;
    let data_start = end.div_ceil(alignment) * alignment; // alignment ≤ 2^30: no overflow
    if n_tensors > 0 && data_start > bytes.len() as u64 {
        return Err(c.err(format!(
            "truncated: the data section starts at byte {data_start} but the file has {} bytes",
            bytes.len()
        )));
    }
    let data_len = (bytes.len() as u64).saturating_sub(data_start);
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(c.err(format!(
                "tensor {:?}: offset {} is not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        let size = tensor_bytes(t).map_err(|m| c.err(m))?.unwrap_or(0);
        if t.offset.checked_add(size).is_none_or(|e| e > data_len) {
            return Err(c.err(format!(
                "tensor {:?}: bytes {}..{} (+{size}) of the data section, which has {data_len} bytes",
                t.name,
                t.offset,
                t.offset.saturating_add(size)
            )));
        }
    }
    Ok(Header {
        version,
        metadata,
        keys,
        tensors,
        names,
        alignment,
        data_start: data_start as usize,
    })
}
