//! [`TorchValue`]: the object a file holds, built from the pickle machine's arena without
//! recursion, with bounded depth, bounded expansion of shared (memoised) containers and a
//! bounded total of tensor bytes.

use super::pickle::{kind, Obj, Pickle, V};
use super::tensor::TorchTensor;
use std::collections::BTreeMap;

/// Containers nest at most this deep (a state dict needs 3 or 4 levels).
pub(super) const MAX_DEPTH: usize = 256;

/// A value of a `torch.save`d object: what a state dict or checkpoint is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum TorchValue {
    /// Python `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (within `i64`).
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<TorchValue>),
    /// A tuple.
    Tuple(Vec<TorchValue>),
    /// A dict or `OrderedDict`, in insertion order.
    Dict(Vec<(TorchValue, TorchValue)>),
    /// A tensor or `nn.Parameter`, materialised contiguously.
    Tensor(TorchTensor),
}

impl TorchValue {
    /// The value under the string key `key` of a dict (`None` for other values or keys).
    ///
    /// ```
    /// use handgrad::io::torch::TorchValue;
    /// let d = TorchValue::Dict(vec![(TorchValue::Str("epoch".into()), TorchValue::Int(3))]);
    /// assert_eq!(d.get("epoch"), Some(&TorchValue::Int(3)));
    /// ```
    pub fn get(&self, key: &str) -> Option<&TorchValue> {
        match self {
            TorchValue::Dict(items) => items.iter().find_map(|(k, v)| match k {
                TorchValue::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Every tensor, named by joining the dict keys (str as is, int/bool/None/float written as
    /// Python prints them) and list/tuple indices with `.`; a bare tensor is named `""`.
    ///
    /// # Errors
    /// [`crate::Error::Format`] when a dict key above a tensor is itself a container, bytes or
    /// a tensor, or when two tensors get the same name.
    pub fn flatten_tensors(self) -> crate::Result<BTreeMap<String, TorchTensor>> {
        self.flatten()
            .map_err(|m| crate::Error::format("TorchValue", m))
    }

    /// [`TorchValue::flatten_tensors`] with the error as a message.
    pub(super) fn flatten(self) -> std::result::Result<BTreeMap<String, TorchTensor>, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![(String::new(), self)];
        while let Some((name, v)) = todo.pop() {
            let join = |k: &str| {
                if name.is_empty() {
                    k.to_string()
                } else {
                    format!("{name}.{k}")
                }
            };
            match v {
                TorchValue::Tensor(_) if out.contains_key(&name) => {
                    return Err(format!("two tensors are named {name:?}"));
                }
                TorchValue::Tensor(t) => {
                    out.insert(name, t);
                }
                TorchValue::List(items) | TorchValue::Tuple(items) => {
                    todo.extend(
                        items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (join(&i.to_string()), v)),
                    );
                }
                TorchValue::Dict(items) => {
                    for (k, v) in items {
                        let k = match k {
                            TorchValue::Str(s) => s,
                            TorchValue::Int(i) => i.to_string(),
                            TorchValue::Bool(b) => if b { "True" } else { "False" }.to_string(),
                            TorchValue::None => "None".to_string(),
                            TorchValue::Float(f) => f.to_string(),
                            other => {
                                if contains_tensor(&v) {
                                    return Err(format!(
                                        "a dict under {name:?} has a key that is {other:?}"
                                    ));
                                }
                                continue;
                            }
                        };
                        todo.push((join(&k), v));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn contains_tensor(v: &TorchValue) -> bool {
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        match v {
            TorchValue::Tensor(_) => return true,
            TorchValue::List(x) | TorchValue::Tuple(x) => todo.extend(x),
            TorchValue::Dict(x) => todo.extend(x.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    false
}

/// An open container while the tree is built.
struct Frame<'p> {
    kind: &'p Obj,
    /// Children visited so far (dicts: 2 per item).
    next: usize,
    done: Vec<TorchValue>,
}

/// Builds the value of `p.root`. `storage(i)` gives the bytes of storage `i` (already checked to
/// hold `numel · dtype.size()` bytes). `budget_bytes` bounds the bytes of all tensors together
/// and `budget_nodes` the values visited (memo sharing can make a small file describe a huge
/// tree).
pub(super) fn build<'s>(
    p: &Pickle,
    storage: &dyn Fn(usize) -> &'s [u8],
    budget_bytes: usize,
    budget_nodes: usize,
) -> std::result::Result<TorchValue, String> {
    let mut bytes_left = budget_bytes;
    let mut nodes_left = budget_nodes;
    let leaf = |v: &V, bytes_left: &mut usize| -> std::result::Result<Option<TorchValue>, String> {
        Ok(Some(match v {
            V::None => TorchValue::None,
            V::Bool(b) => TorchValue::Bool(*b),
            V::Int(i) => TorchValue::Int(
                i64::try_from(*i)
                    .map_err(|_| format!("the integer {i} does not fit in 64 bits"))?,
            ),
            V::Float(f) => TorchValue::Float(*f),
            V::Str(s) => TorchValue::Str(s.to_string()),
            V::Bytes(b) => TorchValue::Bytes(b.to_vec()),
            V::Obj(i) => match &p.arena[*i] {
                Obj::Tensor(s, view) => {
                    let st = &p.storages[*s];
                    let numel = view.check(st.numel)?;
                    let n = numel * st.dtype.size();
                    if n > *bytes_left {
                        return Err(format!(
                            "the tensors would take more than {budget_bytes} bytes (shared or \
                             expanded views of a much smaller file)"
                        ));
                    }
                    *bytes_left -= n;
                    TorchValue::Tensor(TorchTensor {
                        dtype: st.dtype,
                        shape: view.shape.clone(),
                        data: view.gather(storage(*s), st.dtype.size(), numel),
                    })
                }
                _ => return Ok(None),
            },
            V::Global(g) => return Err(format!("the global {g:?} is used as a value")),
            V::Storage(_) => {
                return Err("a storage is used as a value (not inside a tensor)".into())
            }
        }))
    };
    let open = |v: &V| -> Frame<'_> {
        let V::Obj(i) = v else { unreachable!() };
        Frame {
            kind: &p.arena[*i],
            next: 0,
            done: Vec::new(),
        }
    };
    if let Some(v) = leaf(&p.root, &mut bytes_left)? {
        return Ok(v);
    }
    let mut stack = vec![open(&p.root)];
    loop {
        let top = stack.last_mut().unwrap();
        let child = match top.kind {
            Obj::List(x) | Obj::Tuple(x) => x.get(top.next),
            Obj::Dict(x) => x
                .get(top.next / 2)
                .map(|(k, v)| if top.next % 2 == 0 { k } else { v }),
            Obj::Tensor(..) => unreachable!(),
        };
        if let Some(c) = child {
            top.next += 1;
            nodes_left = nodes_left.checked_sub(1).ok_or_else(|| {
                format!("the object has more than {budget_nodes} values (a memo bomb?)")
            })?;
            match leaf(c, &mut bytes_left)? {
                Some(v) => top.done.push(v),
                None => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(format!(
                            "containers nest deeper than {MAX_DEPTH} levels (or a container \
                             contains itself)"
                        ));
                    }
                    stack.push(open(c));
                }
            }
            continue;
        }
        let f = stack.pop().unwrap();
        let v = match f.kind {
            Obj::List(_) => TorchValue::List(f.done),
            Obj::Tuple(_) => TorchValue::Tuple(f.done),
            Obj::Dict(_) => {
                let mut it = f.done.into_iter();
                let mut items = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    items.push((k, v));
                }
                TorchValue::Dict(items)
            }
            o => return Err(format!("unexpected {}", kind(o))),
        };
        match stack.last_mut() {
            Some(parent) => parent.done.push(v),
            None => return Ok(v),
        }
    }
}
