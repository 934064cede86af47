//! The legacy format of `torch.save` (torch < 1.6, `_use_new_zipfile_serialization=False`):
//! pickle(magic) · pickle(protocol 1001) · pickle(sys_info) · pickle(object) · pickle(storage
//! keys) · then per key in that order a `u64` LE element count and the raw little-endian bytes.

use super::pickle::{self, Obj, Pickle, V};
use std::collections::HashMap;

type R<T> = std::result::Result<T, String>;

/// The magic number of the first pickle.
const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The protocol version of the second pickle.
const PROTOCOL: i128 = 1001;

/// The main pickle and, per storage index, its bytes (length checked).
pub(super) fn read(b: &[u8]) -> R<(Pickle, Vec<&[u8]>)> {
    let mut pos = 0;
    let mut next = |what: &str| -> R<Pickle> {
        let p = pickle::run(&b[pos..])
            .map_err(|e| format!("legacy format, {what} pickle at byte {pos}: {e}"))?;
        pos += p.end;
        Ok(p)
    };
    let magic = next("magic-number")?;
    if !matches!(magic.root, V::Int(MAGIC)) {
        return Err(format!(
            "invalid magic number {} (expected 0x1950a86a20f9469cfc6c): not a torch.save file, or corrupt",
            match magic.root { V::Int(i) => format!("0x{i:x}"), ref v => pickle::vkind(v) }
        ));
    }
    let proto = next("protocol-version")?;
    if !matches!(proto.root, V::Int(PROTOCOL)) {
        return Err(format!("legacy protocol version is not {PROTOCOL}"));
    }
    let sys = next("sys_info")?;
    if let V::Obj(i) = sys.root
        && let Obj::Dict(d) = &sys.arena[i]
    {
        let le = d
            .iter()
            .find(|(k, _)| matches!(k, V::Str(s) if &**s == "little_endian"));
        if let Some((_, V::Bool(false))) = le {
            return Err("the file was written on a big-endian machine (not supported)".into());
        }
    }
    let main = next("object")?;
    let keys = next("storage-key list")?;
    let key_list: Vec<String> = match keys.root {
        V::Obj(i) => match &keys.arena[i] {
            Obj::List(items) => items
                .iter()
                .map(|k| match k {
                    V::Str(s) => Ok(s.to_string()),
                    v => Err(format!(
                        "a storage key is {}, not a string",
                        pickle::vkind(v)
                    )),
                })
                .collect::<R<_>>()?,
            _ => return Err("the storage-key pickle is not a list".into()),
        },
        _ => return Err("the storage-key pickle is not a list".into()),
    };
    let index: HashMap<&str, usize> = main
        .storages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let mut data: Vec<Option<&[u8]>> = vec![None; main.storages.len()];
    for key in &key_list {
        let &i = index
            .get(key.as_str())
            .ok_or_else(|| format!("storage {key:?} is listed but no tensor uses it"))?;
        let st = &main.storages[i];
        if data[i].is_some() {
            return Err(format!("storage {key:?} is listed twice"));
        }
        let rest = b.len() - pos;
        if rest < 8 {
            return Err(format!(
                "storage {key:?}: the file ends before its element count (byte {pos})"
            ));
        }
        let count = u64::from_le_bytes(b[pos..pos + 8].try_into().unwrap());
        pos += 8;
        if count != st.numel as u64 {
            return Err(format!(
                "storage {key:?} holds {count} elements, its tensors declare {}",
                st.numel
            ));
        }
        let n = st
            .numel
            .checked_mul(st.dtype.size())
            .filter(|&n| n <= rest - 8)
            .ok_or_else(|| {
                format!(
                    "storage {key:?} declares {} {} elements, but only {} bytes remain in the file",
                    st.numel,
                    st.dtype.name(),
                    rest - 8
                )
            })?;
        data[i] = Some(&b[pos..pos + n]);
        pos += n;
    }
    let data = data
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            d.ok_or_else(|| {
                format!(
                    "storage {:?} is used but not in the storage-key list",
                    main.storages[i].key
                )
            })
        })
        .collect::<R<Vec<_>>>()?;
    Ok((main, data))
}
