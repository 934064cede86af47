//! PyTorch checkpoints: [`load`] reads what `torch.save` wrote (a state dict, a checkpoint
//! dict, nested containers of tensors and plain values) in both formats, the zip format of
//! torch ≥ 1.6 and the legacy format before it, detected from the first bytes; [`save_tensors`]
//! writes a state dict in the zip format.
//!
//! Loading is safe in the sense of PyTorch's `torch.load(weights_only=True)`: the pickle is run
//! by a restricted machine that knows only the opcodes state dicts use and the globals
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter` and the `torch.<X>Storage` classes. Any other global
//! (`os.system`, `builtins.eval`, …), INST / OBJ / NEWOBJ / EXT opcodes, and calls of anything
//! not allowed are errors naming what was refused; nothing is ever imported, resolved or
//! executed. Sizes, counts, offsets and tensor views are checked against the bytes of the file
//! before anything is allocated, containers nest at most 256 deep, and memo sharing cannot
//! blow a small file up into a huge tree (a budget of values and of tensor bytes, 4 × the file
//! size + 16 MiB, applies).
//!
//! Not supported (each an error that says so): compressed zip records, big-endian files,
//! legacy storage views (pre-0.4 files), sets, sparse or quantized tensors, TorchScript
//! archives, and writing archives over 4 GiB (zip64 is read, not written).
//!
//! ```no_run
//! let weights = handgrad::io::torch::load_state_dict("efficientnet-lite0.pth")?;
//! println!("{} tensors; stem {:?}", weights.len(), weights["_conv_stem.weight"].shape());
//! # Ok::<(), handgrad::Error>(())
//! ```

mod legacy;
mod pickle;
mod save;
mod tensor;
mod value;
mod zip;

pub use save::{save_tensors, to_torch_bytes, SaveAsTorch};
pub use tensor::{TorchDType, TorchTensor};
pub use value::TorchValue;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads a `torch.save`d object (zip or legacy format) from a file. Large files (64 MiB and
/// more) are memory-mapped while they are read.
///
/// ```no_run
/// use handgrad::io::torch::{load, TorchValue};
/// let ckpt = load("checkpoint.pt")?;
/// if let Some(TorchValue::Int(epoch)) = ckpt.get("epoch") {
///     println!("saved after epoch {epoch}");
/// }
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file and the reason
/// for anything else (a forbidden global or opcode, a truncated or corrupt file, a storage that
/// does not fit its record, a view outside its storage, …).
pub fn load(path: impl AsRef<Path>) -> Result<TorchValue> {
    crate::io::safetensors::with_file_bytes(path.as_ref(), load_bytes)
}

/// Reads a `torch.save`d object from bytes; `source_name` names them in errors.
///
/// ```
/// use std::collections::BTreeMap;
/// use handgrad::io::torch::{load_bytes, to_torch_bytes, TorchDType, TorchTensor, TorchValue};
/// let t = TorchTensor { dtype: TorchDType::U8, shape: vec![3], data: vec![1, 2, 3] };
/// let bytes = to_torch_bytes(&BTreeMap::from([("x".to_string(), t.clone())]))?;
/// let v = load_bytes(&bytes, "in memory")?;
/// assert_eq!(v.get("x"), Some(&TorchValue::Tensor(t)));
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// As [`load`], without the I/O.
pub fn load_bytes(bytes: &[u8], source_name: &str) -> Result<TorchValue> {
    let err = |m: String| Error::format(source_name, m);
    let (pickle, data) = if bytes.starts_with(b"PK") {
        zip_parts(bytes).map_err(err)?
    } else if bytes.first() == Some(&0x80) {
        legacy::read(bytes).map_err(err)?
    } else {
        return Err(err(format!(
            "not a torch.save file: starts with {:02x?}, expected a zip (PK) or a legacy pickle (80 02)",
            &bytes[..bytes.len().min(4)]
        )));
    };
    let budget_bytes = bytes.len().saturating_mul(4).saturating_add(16 << 20);
    // values are bounded by the pickle's own size (a memo bomb in a large file stays small)
    let budget_nodes = pickle.end.saturating_mul(8).saturating_add(1 << 16);
    value::build(&pickle, &|i| data[i], budget_bytes, budget_nodes).map_err(err)
}

/// The pickle of a zip-format file and its storages' bytes (sizes and CRCs checked).
fn zip_parts(bytes: &[u8]) -> std::result::Result<(pickle::Pickle, Vec<&[u8]>), String> {
    let archive = zip::Archive::parse(bytes)?;
    let mut pkls: Vec<&str> = archive
        .entries
        .keys()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(|n| n.as_str())
        .collect();
    pkls.sort_unstable();
    let pkl = match pkls.as_slice() {
        [one] => *one,
        [] => {
            return Err(
                "the zip archive has no <prefix>/data.pkl record: not a torch.save file".into(),
            )
        }
        many => {
            return Err(format!(
                "the zip archive has several data.pkl records: {many:?}"
            ))
        }
    };
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    if archive.entries.contains_key(&format!("{prefix}byteorder")) {
        let order = archive.read(&format!("{prefix}byteorder"))?;
        if order != b"little" {
            return Err(format!(
                "byteorder record is {:?}; only little-endian files are supported",
                String::from_utf8_lossy(order)
            ));
        }
    }
    let pickle = pickle::run(archive.read(pkl)?).map_err(|e| format!("{pkl}: {e}"))?;
    for st in &pickle.storages {
        let name = format!("{prefix}data/{}", st.key);
        let e = archive
            .entries
            .get(&name)
            .ok_or_else(|| format!("storage {:?} has no record {name:?} in the archive", st.key))?;
        if st.numel.checked_mul(st.dtype.size()) != Some(e.len) {
            return Err(format!(
                "storage {:?} declares {} {} elements ({} bytes), its record {name:?} holds {} bytes",
                st.key,
                st.numel,
                st.dtype.name(),
                st.numel.checked_mul(st.dtype.size()).map_or("overflowing".to_string(), |n| n.to_string()),
                e.len
            ));
        }
    }
    let data = pickle
        .storages
        .iter()
        .map(|st| archive.read(&format!("{prefix}data/{}", st.key)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((pickle, data))
}

/// Every tensor of the object in the file, named by joining the container keys and list
/// indices with `.` (`state_dict.fc.weight`, `optimizer.state.0.momentum_buffer`), in the
/// stored dtype. Non-tensor values are skipped.
///
/// ```no_run
/// let tensors = handgrad::io::torch::load_tensors("pytorch_model.bin")?;
/// for (name, t) in &tensors {
///     println!("{name}: {:?} {:?}", t.dtype, t.shape);
/// }
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// As [`load`]; also [`Error::Format`] when two tensors get the same name.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, TorchTensor>> {
    let path = path.as_ref();
    load(path)?
        .flatten()
        .map_err(|m| Error::format(path.display().to_string(), m))
}

/// A state dict as `f32` tensors (what model loaders call): [`load_tensors`] with every tensor
/// converted by [`TorchTensor::to_f32`].
///
/// ```no_run
/// let sd = handgrad::io::torch::load_state_dict("resnet.pth")?;
/// let w = &sd["conv1.weight"]; // (O, I, kh, kw) f32
/// # let _ = w;
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// As [`load_tensors`].
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    let path = path.as_ref();
    load_tensors(path)?
        .into_iter()
        .map(|(k, t)| {
            let v = t.to_f32().map_err(|e| {
                Error::format(path.display().to_string(), format!("tensor {k:?}: {e}"))
            })?;
            Ok((k, v))
        })
        .collect()
}
