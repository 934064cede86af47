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

mod calls;
mod literals;
pub(super) use calls::Global;
use calls::{allowed, forbidden};

/// At most this many items on the stack (including those above marks).
const MAX_STACK: usize = 1 << 20;
/// At most this many open marks.
const MAX_MARKS: usize = 1 << 16;
/// At most this many memo entries.
const MAX_MEMO: usize = 1 << 22;

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

impl<'a> Machine<'a> {
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
        if !items.len().is_multiple_of(2) {
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
            _ => match self.literal(op)? {
                Some(v) => self.stack.push(v),
                None => return Err(format!("unsupported pickle opcode 0x{op:02x}")),
            },
        }
        Ok(false)
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
