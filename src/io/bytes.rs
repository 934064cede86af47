//! [`SharedBytes`]: cheap-to-clone, read-only bytes backed by memory or by a memory-mapped file.
//!
//! Weight files are large (hundreds of MB); loaders keep one copy of the file — a `Vec` or a
//! read-only memory map — and hand out checked sub-ranges of it, so a quantised matrix can stay
//! in its stored encoding without a second copy. This file also holds the crate's one memory
//! map (the only `unsafe` of the I/O tier).

use crate::error::{Error, Result};
use std::fmt;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

/// What owns the bytes.
#[derive(Clone)]
enum Backing {
    /// Bytes held in memory.
    Vec(Arc<Vec<u8>>),
    /// A read-only memory map of a file.
    Map(Arc<memmap2::Mmap>),
}

/// Read-only bytes that clone in O(1): an `Arc` of a `Vec<u8>` or of a memory map, plus a
/// sub-range of it. Dereferences to `[u8]`.
#[derive(Clone)]
pub struct SharedBytes {
    backing: Backing,
    start: usize,
    end: usize,
}

impl SharedBytes {
    /// Wraps bytes held in memory.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        SharedBytes {
            backing: Backing::Vec(Arc::new(bytes)),
            start: 0,
            end,
        }
    }

    /// Memory-maps the file at `path` read-only (an empty file gives empty bytes).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path when the file cannot be opened or mapped.
    pub fn map_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Ok(Self::from_vec(Vec::new()));
        }
        let map = mmap::map_read_only(&file).map_err(io)?;
        let end = map.len();
        Ok(SharedBytes {
            backing: Backing::Map(Arc::new(map)),
            start: 0,
            end,
        })
    }

    /// The sub-range `range` of these bytes (relative to their start), sharing the same backing.
    ///
    /// # Errors
    /// [`Error::Config`] when the range is reversed or ends past [`len`](Self::len).
    pub fn slice(&self, range: Range<usize>) -> Result<SharedBytes> {
        if range.start > range.end || range.end > self.len() {
            return Err(Error::config(
                "SharedBytes::slice",
                "range",
                format!("{}..{}", range.start, range.end),
                format!("a range inside 0..{}", self.len()),
            ));
        }
        Ok(SharedBytes {
            backing: self.backing.clone(),
            start: self.start + range.start,
            end: self.start + range.end,
        })
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes come from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Map(_))
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.backing {
            Backing::Vec(v) => v,
            Backing::Map(m) => m,
        };
        &all[self.start..self.end]
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// The one memory map of the crate.
#[allow(unsafe_code)]
pub(crate) mod mmap {
    /// Maps `file` read-only.
    pub(crate) fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
        // SAFETY: the map is only ever read. A file truncated or rewritten by another process
        // while it is mapped is the one hazard memory maps always carry (the same trade-off as
        // candle, llama.cpp and the safetensors crate's own loaders); every offset read from it
        // is validated against its length by the parsers first.
        unsafe { memmap2::Mmap::map(file) }
    }
}
