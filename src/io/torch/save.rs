//! Writing the zip format that `torch.load` reads: a protocol-2 pickle of an `OrderedDict` of
//! `_rebuild_tensor_v2` tensors on persistent-id storages, STORED records aligned to 64 bytes,
//! `byteorder` = `little`, `version` = 3.

use super::{zip, TorchDType, TorchTensor};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor that [`save_tensors`] can write: a [`TorchTensor`] (any dtype) or an `f32`
/// [`Tensor`] (written as F32).
pub trait SaveAsTorch {
    /// The dtype, the shape and the contiguous little-endian bytes.
    fn torch_parts(&self) -> (TorchDType, Vec<usize>, Cow<'_, [u8]>);
}

impl SaveAsTorch for TorchTensor {
    fn torch_parts(&self) -> (TorchDType, Vec<usize>, Cow<'_, [u8]>) {
        (self.dtype, self.shape.clone(), Cow::Borrowed(&self.data))
    }
}

impl SaveAsTorch for Tensor {
    fn torch_parts(&self) -> (TorchDType, Vec<usize>, Cow<'_, [u8]>) {
        let bytes = self.iter().flat_map(|v| v.to_le_bytes()).collect();
        (TorchDType::F32, self.shape().to_vec(), Cow::Owned(bytes))
    }
}

/// Writes `tensors` as a state dict that `torch.load(path, weights_only=True)` reads back as
/// an `OrderedDict` of tensors (and [`super::load_tensors`] too). The file is written atomically.
///
/// ```
/// use std::collections::BTreeMap;
/// let mut sd = BTreeMap::new();
/// sd.insert("fc.weight".to_string(), handgrad::Tensor::ones(ndarray::IxDyn(&[2, 3])));
/// let path = std::env::temp_dir().join(format!("handgrad-doc-{}.pt", std::process::id()));
/// handgrad::io::torch::save_tensors(&path, &sd)?;
/// assert_eq!(handgrad::io::torch::load_state_dict(&path)?, sd);
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::Format`] when a tensor's bytes do not match its shape and dtype or the archive would
/// exceed 4 GiB; [`Error::Io`] naming the path when it cannot be written.
pub fn save_tensors<T: SaveAsTorch>(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, T>,
) -> Result<()> {
    let bytes = to_torch_bytes(tensors)?;
    crate::io::write_atomic(path, &bytes)
}

/// The bytes [`save_tensors`] writes (archive prefix `archive/`, as `torch.save` uses for file
/// objects).
///
/// # Errors
/// As [`save_tensors`], without the I/O.
pub fn to_torch_bytes<T: SaveAsTorch>(tensors: &BTreeMap<String, T>) -> Result<Vec<u8>> {
    let parts: Vec<_> = tensors.iter().map(|(k, t)| (k, t.torch_parts())).collect();
    let mut p = vec![0x80, 2];
    global(&mut p, "collections", "OrderedDict");
    p.extend_from_slice(b")R");
    for (chunk_i, chunk) in parts.chunks(1000).enumerate() {
        p.push(b'(');
        for (j, (name, (dtype, shape, data))) in chunk.iter().enumerate() {
            let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if numel.and_then(|n| n.checked_mul(dtype.size())) != Some(data.len()) {
                return Err(Error::format(
                    "torch writer",
                    format!(
                        "tensor {name:?}: {} bytes for a {} tensor of shape {shape:?}",
                        data.len(),
                        dtype.name()
                    ),
                ));
            }
            let key = (chunk_i * 1000 + j).to_string();
            string(&mut p, name);
            global(&mut p, "torch._utils", "_rebuild_tensor_v2");
            p.push(b'(');
            p.push(b'(');
            string(&mut p, "storage");
            global(&mut p, "torch", dtype.storage_name());
            string(&mut p, &key);
            string(&mut p, "cpu");
            int(&mut p, numel.unwrap_or(0));
            p.extend_from_slice(b"tQ");
            int(&mut p, 0);
            let mut stride = vec![1usize; shape.len()];
            for d in (0..shape.len().saturating_sub(1)).rev() {
                stride[d] = stride[d + 1] * shape[d + 1];
            }
            for dims in [shape, &stride] {
                p.push(b'(');
                for &d in dims.iter() {
                    int(&mut p, d);
                }
                p.push(b't');
            }
            p.push(0x89); // requires_grad = False
            global(&mut p, "collections", "OrderedDict");
            p.extend_from_slice(b")Rt"); // backward_hooks = OrderedDict(); close the args
            p.push(b'R');
        }
        p.push(b'u');
    }
    p.push(b'.');
    let mut records: Vec<(String, &[u8])> = vec![
        ("archive/data.pkl".into(), &p),
        ("archive/.format_version".into(), b"1"),
        ("archive/.storage_alignment".into(), b"64"),
        ("archive/byteorder".into(), b"little"),
    ];
    for (i, (_, (_, _, data))) in parts.iter().enumerate() {
        records.push((format!("archive/data/{i}"), data));
    }
    records.push(("archive/version".into(), b"3\n"));
    zip::write(&records).map_err(|e| Error::format("torch writer", e))
}

fn global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(b'c');
    p.extend_from_slice(module.as_bytes());
    p.push(b'\n');
    p.extend_from_slice(name.as_bytes());
    p.push(b'\n');
}

fn string(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn int(p: &mut Vec<u8>, v: usize) {
    if v < 256 {
        p.extend_from_slice(&[b'K', v as u8]);
    } else if v < 65536 {
        p.push(b'M');
        p.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < (1 << 31) {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    } else {
        // LONG1: little-endian two's complement, with a 0 byte when the top bit is set
        let mut bytes = (v as u64).to_le_bytes().to_vec();
        while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 && bytes[bytes.len() - 2] & 0x80 == 0 {
            bytes.pop();
        }
        p.extend_from_slice(&[0x8a, bytes.len() as u8]);
        p.extend_from_slice(&bytes);
    }
}
