//! [`Conv2dWorkspace`]: the scratch buffers a convolution layer keeps across calls, leased
//! per rayon thread.

use super::*;

/// Scratch buffers reused across convolution calls; a layer keeps one.
///
/// Holds one scratch buffer per thread of the rayon pool (patches, wide products, padded images;
/// grown to the largest call seen and kept) and the per-image gradient partials of the backward
/// pass. Cloning gives an empty workspace.
#[derive(Debug, Default)]
pub struct Conv2dWorkspace {
    /// Per-thread scratch, indexed by the rayon thread index.
    pub(super) scratch: Vec<Mutex<Vec<f32>>>,
    /// Per-image `dWᵀ` partials `(N, C·kh·kw, O)`.
    pub(super) dw_parts: Vec<f32>,
    /// Per-image bias-gradient partials `(N, O)`.
    pub(super) db_parts: Vec<f32>,
    /// The sum of the `dWᵀ` partials `(C·kh·kw, O)`.
    pub(super) dw_sum: Vec<f32>,
}

impl Clone for Conv2dWorkspace {
    fn clone(&self) -> Self {
        Conv2dWorkspace::default()
    }
}

impl Conv2dWorkspace {
    /// An empty workspace (buffers are allocated on first use, then reused).
    pub fn new() -> Self {
        Self::default()
    }

    /// The floats currently held (for tests and memory accounting).
    pub fn capacity_floats(&self) -> usize {
        let scratch: usize = self
            .scratch
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).capacity())
            .sum();
        scratch + self.dw_parts.capacity() + self.db_parts.capacity() + self.dw_sum.capacity()
    }

    /// Makes one scratch buffer of at least `len` floats per thread of the current pool.
    pub(super) fn prepare(&mut self, len: usize) {
        let threads = rayon::current_num_threads().max(1);
        if self.scratch.len() < threads {
            self.scratch.resize_with(threads, Default::default);
        }
        for m in &mut self.scratch {
            let buf = m.get_mut().unwrap_or_else(|e| e.into_inner());
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
    }
}

/// Runs `f` on the calling thread's scratch buffer (`len` floats). Each task holds it for one
/// image, so it is never contended; should it be (a task nested in another on one thread), `f`
/// gets a temporary buffer instead.
pub(super) fn with_scratch<R>(
    scratch: &[Mutex<Vec<f32>>],
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let idx = rayon::current_thread_index().unwrap_or(0) % scratch.len().max(1);
    match scratch.get(idx).map(Mutex::try_lock) {
        Some(Ok(mut buf)) if buf.len() >= len => f(&mut buf[..len]),
        _ => f(&mut vec![0.0; len]),
    }
}

/// Splits `buf` into consecutive slices of the given lengths.
pub(super) fn carve<const K: usize>(mut buf: &mut [f32], lens: [usize; K]) -> [&mut [f32]; K] {
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(len);
        buf = tail;
        head
    })
}

/// The threading of the per-image GEMMs: one image uses the whole pool, a batch parallelises
/// over images with serial GEMMs.
pub(super) fn threads_for(n: usize) -> Threads {
    if n == 1 {
        Threads::Pool
    } else {
        Threads::Serial
    }
}
