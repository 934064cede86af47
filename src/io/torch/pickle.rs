//! The restricted pickle machine: the opcodes of protocols 2–5 that `torch.save` writes, a memo,
//! marks and a stack, and an allow-list of globals (PyTorch's `weights_only=True` semantics).
//!
//! Nothing a file names is ever imported, resolved or called: a GLOBAL is looked up in a fixed
//! table of four kinds of callables ([`Global`]), and every other name is an error. Containers
//! live in an arena and are referred to by index, so memo sharing costs nothing, a container
//! that contains itself is not a leak, and no recursion happens while the file is read.

use super::tensor::View;
use super::TorchDType;
use std::collections::HashMap;
use std::rc::Rc;

/// At most this many items on the stack (including those above marks).
const MAX_STACK: usize = 1 << 20;
/// At most this many open marks.
const MAX_MARKS: usize = 1 << 16;
/// At most this many tensor dimensions (PyTorch's own limit).
const MAX_RANK: usize = 64;
/// At most this many memo entries.
const MAX_MEMO: usize = 1 << 22;

/// A callable or class that a state dict may name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
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
fn allowed(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", s) => TorchDType::from_storage_name(s).map(Global::Storage),
        _ => None,
    }
}

/// A value on the stack or in a container.
#[derive(Debug, Clone)]
pub(super) enum V {
    None,
    Bool(bool),
    /// Ints up to 128 bits (the legacy magic number needs 80).
    Int(i128),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// A container or tensor in the arena.
    Obj(usize),
    Global(Global),
    /// A storage (index into [`Pickle::storages`]), the result of a persistent id.
    Storage(usize),
}

/// A container or tensor.
#[derive(Debug)]
pub(super) enum Obj {
    List(Vec<V>),
    Tuple(Vec<V>),
    /// A plain dict or an OrderedDict (insertion order kept).
    Dict(Vec<(V, V)>),
    /// A tensor on storage `.0`, read through the view `.1`.
    Tensor(usize, View),
}

/// A storage named by a persistent id.
#[derive(Debug, Clone)]
pub(super) struct StorageRef {
    /// The record key (`data/<key>` in zip files, the storage-key list entry in legacy files).
    pub key: String,
    pub dtype: TorchDType,
    /// Elements, as the persistent id declares them.
    pub numel: usize,
}

/// The result of running one pickle.
#[derive(Debug)]
pub(super) struct Pickle {
    pub arena: Vec<Obj>,
    pub root: V,
    pub storages: Vec<StorageRef>,
    /// Bytes consumed, STOP included.
    pub end: usize,
}

struct Machine<'a> {
    b: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
    arena: Vec<Obj>,
    storages: Vec<StorageRef>,
    keys: HashMap<String, usize>,
}

type R<T> = std::result::Result<T, String>;

/// Runs the pickle at the start of `b`. Errors are messages (the caller adds the file name).
pub(super) fn run(b: &[u8]) -> R<Pickle> {
    let mut m = Machine {
        b,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena: Vec::new(),
        storages: Vec::new(),
        keys: HashMap::new(),
    };
    loop {
        let at = m.pos;
        let op = m
            .take(1)
            .map_err(|_| "the pickle ends without a STOP opcode".to_string())?[0];
        match m.step(op) {
            Ok(true) => {
                let root = m.pop()?;
                return Ok(Pickle {
                    arena: m.arena,
                    root,
                    storages: m.storages,
                    end: m.pos,
                });
            }
            Ok(false) => {}
            Err(e) => return Err(format!("pickle byte {at} (opcode 0x{op:02x}): {e}")),
        }
        if m.stack.len() > MAX_STACK || m.marks.len() > MAX_MARKS || m.memo.len() > MAX_MEMO {
            return Err(format!(
                "pickle byte {at}: more than {MAX_STACK} stack items, {MAX_MARKS} marks or \
                 {MAX_MEMO} memo entries"
            ));
        }
    }
}

fn forbidden(module: &str, name: &str) -> String {
    format!(
        "forbidden global {module}.{name}: only collections.OrderedDict, \
         torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the torch \
         storage classes are allowed (nothing was imported or called)"
    )
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let rest = self.b.len() - self.pos;
        if n > rest {
            return Err(format!("needs {n} more bytes, the input has {rest}"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> R<usize> {
        Ok(self.take(1)?[0] as usize)
    }
    fn u16(&mut self) -> R<usize> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]) as usize)
    }
    fn u32(&mut self) -> R<usize> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes(s.try_into().unwrap()) as usize)
    }
    fn u64(&mut self) -> R<usize> {
        let s = self.take(8)?;
        usize::try_from(u64::from_le_bytes(s.try_into().unwrap())).map_err(|e| e.to_string())
    }
    fn line(&mut self) -> R<&'a str> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("a text line without its newline")?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| "a text line that is not UTF-8".to_string())
    }
    fn text(&mut self, n: usize) -> R<V> {
        let s = self.take(n)?;
        let s = std::str::from_utf8(s).map_err(|_| "a string that is not valid UTF-8")?;
        Ok(V::Str(s.into()))
    }
    fn pop(&mut self) -> R<V> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("pops an empty stack (or past a mark)".into());
        }
        Ok(self.stack.pop().unwrap())
    }
    fn pop_mark(&mut self) -> R<Vec<V>> {
        let m = self.marks.pop().ok_or("needs a MARK, none is open")?;
        Ok(self.stack.split_off(m))
    }
    fn top(&self) -> R<&V> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("needs a value on the stack, the stack is empty".into());
        }
        Ok(self.stack.last().unwrap())
    }
    fn new_obj(&mut self, o: Obj) -> V {
        self.arena.push(o);
        V::Obj(self.arena.len() - 1)
    }
    fn memo_put(&mut self, i: u32) -> R<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }
    fn memo_get(&mut self, i: u32) -> R<()> {
        let v = self
            .memo
            .get(&i)
            .ok_or_else(|| format!("memo entry {i} was never stored"))?;
        self.stack.push(v.clone());
        Ok(())
    }
    fn tuple(&mut self, items: Vec<V>) {
        let v = self.new_obj(Obj::Tuple(items));
        self.stack.push(v);
    }
    /// Appends `items` to the list on top of the stack.
    fn extend_list(&mut self, items: Vec<V>) -> R<()> {
        match self.top()?.clone() {
            V::Obj(i) => match &mut self.arena[i] {
                Obj::List(l) => {
                    l.extend(items);
                    Ok(())
                }
                other => Err(format!("APPEND(S) on a {}, not a list", kind(other))),
            },
            v => Err(format!("APPEND(S) on {}, not a list", vkind(&v))),
        }
    }
    /// Sets `items` (key, value, key, value, …) in the dict on top of the stack.
    fn set_items(&mut self, items: Vec<V>) -> R<()> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of items".into());
        }
        let id = match self.top()? {
            V::Obj(i) if matches!(self.arena[*i], Obj::Dict(_)) => *i,
            v => return Err(format!("SETITEM(S) on {}, not a dict", vkind(v))),
        };
        // Repeated keys are kept (never written by Python's pickler); the flattened names of
        // `load_tensors` reject them. Looking them up here would cost O(n²) on hostile input.
        let Obj::Dict(d) = &mut self.arena[id] else {
            unreachable!()
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    /// Executes one opcode; `Ok(true)` at STOP.
    fn step(&mut self, op: u8) -> R<bool> {
        match op {
            0x80 => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(format!("pickle protocol {p} (supported: 0 to 5)"));
                }
            }
            0x95 => {
                // FRAME: a length hint; the bytes follow inline
                let n = self.u64()?;
                if n > self.b.len() - self.pos {
                    return Err(format!(
                        "FRAME of {n} bytes, {} remain",
                        self.b.len() - self.pos
                    ));
                }
            }
            b'.' => return Ok(true),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.stack.push(v);
            }
            b'N' => self.stack.push(V::None),
            0x88 => self.stack.push(V::Bool(true)),
            0x89 => self.stack.push(V::Bool(false)),
            b'J' => {
                let s = self.take(4)?;
                self.stack
                    .push(V::Int(i32::from_le_bytes(s.try_into().unwrap()) as i128));
            }
            b'K' => {
                let v = self.u8()?;
                self.stack.push(V::Int(v as i128));
            }
            b'M' => {
                let v = self.u16()?;
                self.stack.push(V::Int(v as i128));
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { self.u8()? } else { self.u32()? };
                if n > 16 {
                    return Err(format!(
                        "an integer of {n} bytes (at most 16 are supported)"
                    ));
                }
                let s = self.take(n)?;
                let mut buf = [if s.last().is_some_and(|&b| b & 0x80 != 0) {
                    0xff
                } else {
                    0
                }; 16];
                buf[..n].copy_from_slice(s);
                self.stack.push(V::Int(i128::from_le_bytes(buf)));
            }
            b'G' => {
                let s = self.take(8)?;
                self.stack
                    .push(V::Float(f64::from_be_bytes(s.try_into().unwrap())));
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let n = match op {
                    b'X' | b'T' => self.u32()?,
                    0x8d => self.u64()?,
                    _ => self.u8()?,
                };
                let v = self.text(n)?;
                self.stack.push(v);
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => self.u32()?,
                    b'C' => self.u8()?,
                    _ => self.u64()?,
                };
                let s = self.take(n)?;
                self.stack.push(V::Bytes(s.into()));
            }
            b']' => {
                let v = self.new_obj(Obj::List(Vec::new()));
                self.stack.push(v);
            }
            b'}' => {
                let v = self.new_obj(Obj::Dict(Vec::new()));
                self.stack.push(v);
            }
            b')' => self.tuple(Vec::new()),
            b'l' => {
                let items = self.pop_mark()?;
                let v = self.new_obj(Obj::List(items));
                self.stack.push(v);
            }
            b't' => {
                let items = self.pop_mark()?;
                self.tuple(items);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() < floor + n {
                    return Err(format!("TUPLE{n} needs {n} values on the stack"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.tuple(items);
            }
            b'd' => {
                let items = self.pop_mark()?;
                let v = self.new_obj(Obj::Dict(Vec::new()));
                self.stack.push(v);
                self.set_items(items)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'q' => {
                let i = self.u8()? as u32;
                self.memo_put(i)?;
            }
            b'r' => {
                let i = self.u32()? as u32;
                self.memo_put(i)?;
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|e| e.to_string())?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = self.u8()? as u32;
                self.memo_get(i)?;
            }
            b'j' => {
                let i = self.u32()? as u32;
                self.memo_get(i)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = allowed(module, name).ok_or_else(|| forbidden(module, name))?;
                self.stack.push(V::Global(g));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (V::Str(module), V::Str(name)) = (&module, &name) else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                let g = allowed(module, name).ok_or_else(|| forbidden(module, name))?;
                self.stack.push(V::Global(g));
            }
            b'R' => self.reduce()?,
            b'b' => {
                let _state = self.pop()?;
                match self.top()? {
                    // an OrderedDict's `_metadata` attribute (module versions): ignored
                    V::Obj(i) if matches!(self.arena[*i], Obj::Dict(_)) => {}
                    v => {
                        return Err(format!(
                            "BUILD (setting state) on {}; only dicts accept it",
                            vkind(v)
                        ))
                    }
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let s = self.persistent(&pid)?;
                self.stack.push(V::Storage(s));
            }
            b'i' => {
                let module = self.line()?;
                let name = self.line()?;
                return Err(format!(
                    "INST opcode (creates {module}.{name}): {}",
                    forbidden(module, name)
                ));
            }
            b'o' | 0x81 | 0x92 => {
                let name = match op {
                    b'o' => "OBJ",
                    0x81 => "NEWOBJ",
                    _ => "NEWOBJ_EX",
                };
                return Err(format!(
                    "{name} opcode (builds an arbitrary object): not allowed"
                ));
            }
            0x82..=0x84 => return Err("EXT opcode (extension registry global): not allowed".into()),
            b'P' => return Err("PERSID opcode (text persistent id): not allowed".into()),
            0x8f..=0x91 => return Err("sets are not supported in state dicts".into()),
            _ => return Err(format!("unsupported pickle opcode 0x{op:02x}")),
        }
        Ok(false)
    }

    /// REDUCE: calls an allowed global with a tuple of arguments.
    fn reduce(&mut self) -> R<()> {
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
    fn persistent(&mut self, pid: &V) -> R<usize> {
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

pub(super) fn kind(o: &Obj) -> &'static str {
    match o {
        Obj::List(_) => "list",
        Obj::Tuple(_) => "tuple",
        Obj::Dict(_) => "dict",
        Obj::Tensor(..) => "tensor",
    }
}

pub(super) fn vkind(v: &V) -> String {
    match v {
        V::None => "None".into(),
        V::Bool(_) => "a bool".into(),
        V::Int(_) => "an int".into(),
        V::Float(_) => "a float".into(),
        V::Str(_) => "a string".into(),
        V::Bytes(_) => "bytes".into(),
        V::Obj(_) => "a container".into(),
        V::Global(g) => format!("the global {g:?}"),
        V::Storage(_) => "a storage".into(),
    }
}
