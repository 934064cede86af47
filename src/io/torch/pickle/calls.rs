//! The calls a state dict makes: the allow-list of globals, REDUCE of an allowed callable
//! (`OrderedDict()`, `_rebuild_tensor_v2`, `_rebuild_parameter`) and the persistent ids that
//! name storages. Everything else is refused without being resolved.

use super::{kind, vkind, Machine, Obj, StorageRef, R, V};
use crate::io::torch::tensor::View;
use crate::io::torch::TorchDType;

/// At most this many tensor dimensions (PyTorch's own limit).
const MAX_RANK: usize = 64;

/// A callable or class that a state dict may name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::io::torch) enum Global {
    /// `collections.OrderedDict`: REDUCE with `()` gives an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`: the tensor itself.
    RebuildParameter,
    /// `torch.<X>Storage`: only valid inside a persistent id.
    Storage(TorchDType),
}

/// The allow-list. `None` for everything else.
pub(super) fn allowed(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", s) => TorchDType::from_storage_name(s).map(Global::Storage),
        _ => None,
    }
}

pub(super) fn forbidden(module: &str, name: &str) -> String {
    format!(
        "forbidden global {module}.{name}: only collections.OrderedDict, \
         torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the torch \
         storage classes are allowed (nothing was imported or called)"
    )
}

impl Machine<'_> {
    /// REDUCE: calls an allowed global with a tuple of arguments.
    pub(super) fn reduce(&mut self) -> R<()> {
        let args = self.pop()?;
        let f = self.pop()?;
        let args: Vec<V> = match &args {
            V::Obj(i) => match &self.arena[*i] {
                // every allowed callable takes at most 7 arguments: never clone a long tuple
                Obj::Tuple(t) if t.len() <= 7 => t.clone(),
                Obj::Tuple(t) => {
                    return Err(format!("REDUCE with {} arguments (at most 7)", t.len()))
                }
                o => {
                    return Err(format!(
                        "REDUCE with a {} as arguments, not a tuple",
                        kind(o)
                    ))
                }
            },
            v => {
                return Err(format!(
                    "REDUCE with {} as arguments, not a tuple",
                    vkind(v)
                ))
            }
        };
        let out = match f {
            V::Global(Global::OrderedDict) if args.is_empty() => {
                self.new_obj(Obj::Dict(Vec::new()))
            }
            V::Global(Global::OrderedDict) => {
                return Err("collections.OrderedDict called with arguments (expected ())".into())
            }
            V::Global(Global::RebuildTensor) => self.rebuild_tensor(&args)?,
            V::Global(Global::RebuildParameter) => {
                match args.first() {
                    Some(V::Obj(i))
                        if (2..=3).contains(&args.len())
                            && matches!(self.arena[*i], Obj::Tensor(..)) =>
                    {
                        V::Obj(*i)
                    }
                    _ => return Err(
                        "torch._utils._rebuild_parameter expects (tensor, requires_grad, hooks)"
                            .into(),
                    ),
                }
            }
            V::Global(Global::Storage(d)) => {
                return Err(format!("calling torch.{} is not allowed", d.storage_name()))
            }
            v => return Err(format!("REDUCE calls {}, not an allowed global", vkind(&v))),
        };
        self.stack.push(out);
        Ok(())
    }

    fn rebuild_tensor(&mut self, a: &[V]) -> R<V> {
        const SIG: &str = "torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, \
                           requires_grad, backward_hooks[, metadata])";
        if !(6..=7).contains(&a.len()) {
            return Err(format!("{SIG} called with {} arguments", a.len()));
        }
        let V::Storage(s) = a[0] else {
            return Err(format!(
                "{SIG}: the first argument is {}, not a storage",
                vkind(&a[0])
            ));
        };
        let offset = non_negative(&a[1], "storage_offset")?;
        let shape = self.usize_tuple(&a[2], "size")?;
        let stride = self.usize_tuple(&a[3], "stride")?;
        if shape.len() != stride.len() {
            return Err(format!(
                "size {shape:?} and stride {stride:?} have different lengths"
            ));
        }
        if !matches!(a[4], V::Bool(_)) {
            return Err(format!(
                "{SIG}: requires_grad is {}, not a bool",
                vkind(&a[4])
            ));
        }
        let view = View {
            offset,
            shape,
            stride,
        };
        view.check(self.storages[s].numel)
            .map_err(|e| format!("tensor on storage {:?}: {e}", self.storages[s].key))?;
        Ok(self.new_obj(Obj::Tensor(s, view)))
    }

    fn usize_tuple(&self, v: &V, what: &str) -> R<Vec<usize>> {
        match v {
            V::Obj(i) => match &self.arena[*i] {
                Obj::Tuple(t) if t.len() <= MAX_RANK => {
                    t.iter().map(|x| non_negative(x, what)).collect()
                }
                Obj::Tuple(t) => Err(format!(
                    "tensor {what} has {} dimensions (at most {MAX_RANK})",
                    t.len()
                )),
                o => Err(format!("tensor {what} is a {}, not a tuple", kind(o))),
            },
            v => Err(format!("tensor {what} is {}, not a tuple", vkind(v))),
        }
    }

    /// BINPERSID: `('storage', torch.XStorage, key, location, numel[, None])`.
    pub(super) fn persistent(&mut self, pid: &V) -> R<usize> {
        const FORM: &str =
            "a persistent id must be ('storage', torch.<X>Storage, key, location, numel)";
        let V::Obj(i) = pid else {
            return Err(format!("{FORM}, got {}", vkind(pid)));
        };
        let Obj::Tuple(t) = &self.arena[*i] else {
            return Err(format!("{FORM}, got a {}", kind(&self.arena[*i])));
        };
        if t.len() != 5 && t.len() != 6 {
            return Err(format!("{FORM}, got a tuple of {}", t.len()));
        }
        let ok_len = t.len() == 5 || matches!(t[5], V::None);
        let (V::Str(tag), V::Global(Global::Storage(dtype)), V::Str(key), V::Str(_)) =
            (&t[0], &t[1], &t[2], &t[3])
        else {
            return Err(FORM.into());
        };
        if !ok_len || &**tag != "storage" {
            return Err(format!("{FORM} (legacy storage views are not supported)"));
        }
        let numel = non_negative(&t[4], "storage numel")?;
        let (dtype, key) = (*dtype, key.to_string());
        if let Some(&s) = self.keys.get(&key) {
            let old = &self.storages[s];
            if old.dtype != dtype || old.numel != numel {
                return Err(format!(
                    "storage {key:?} is declared as {} x {} and as {numel} x {}",
                    old.numel,
                    old.dtype.name(),
                    dtype.name()
                ));
            }
            return Ok(s);
        }
        self.storages.push(StorageRef {
            key: key.clone(),
            dtype,
            numel,
        });
        self.keys.insert(key, self.storages.len() - 1);
        Ok(self.storages.len() - 1)
    }
}

fn non_negative(v: &V, what: &str) -> R<usize> {
    match v {
        V::Int(i) => {
            usize::try_from(*i).map_err(|_| format!("tensor {what} {i} is negative or too large"))
        }
        v => Err(format!("tensor {what} is {}, not an int", vkind(v))),
    }
}
