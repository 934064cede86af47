//! 2-D max and average pooling over NCHW images, forward and backward (PyTorch semantics).
//!
//! Geometry ([`PoolGeometry`]): a `(kh, kw)` window moved with stride `(sh, sw)` over the input
//! padded by `(ph, pw)` on each side; output size per axis (PyTorch `pooling_output_shape`,
//! dilation 1):
//!
//! - floor mode: `out = ⌊(in + 2p − k) / s⌋ + 1`;
//! - ceil mode:  `out = ⌈(in + 2p − k) / s⌉ + 1`, minus one when the last window would start at or
//!   beyond `in + p` (it must start inside the input or the left padding).
//!
//! Windows are clipped to the input: max pooling treats the padding as `−∞` (it never wins), and
//! average pooling counts it as zeros in the divisor when `count_include_pad` (PyTorch's default;
//! the divisor is the window area clipped to the padded input `in + p`, as in PyTorch's ceil
//! mode), otherwise the divisor is the number of input elements in the window.
//!
//! Max pooling always records the argmax, flattened as `h·W + w` within its `(n, c)` plane (like
//! PyTorch's `return_indices=True`), stored as `u32`. Ties and NaN follow PyTorch's CPU kernel:
//! the scan runs row by row, left to right, and replaces the running maximum when
//! `v > max || v.is_nan()`, so the **first** of equal maxima wins and a NaN wins over numbers (the
//! **last** NaN of a window, since every NaN replaces). A window of `−∞` only reports its first
//! element. The backward routes `dout` of each window to its argmax, **summing** where
//! overlapping windows (stride < kernel) share an argmax. Both backward kernels **accumulate**
//! into `dx` (pass zeros for a plain gradient).
//!
//! Speed: the max-pool forward is one kernel with three loop shapes chosen per output row — 2×2
//! windows fused over two input rows, other stride = kernel windows folded row by row over
//! consecutive chunks, and a generic loop for clipped or overlapping windows — all visiting each
//! window in the same scan order, so they agree bit for bit (tests compare them with a naive
//! reference). The first two vectorise.
//!
//! Parallelism: the `N·C` planes are independent; large inputs run them in parallel with rayon,
//! each plane computed by one task in a fixed order, so results are bit-identical for any thread
//! count. The `_into` forms write into caller buffers; the only allocations are two small window
//! tables (`OH + OW` entries) per call, outside the loops.

use crate::ops::activation::PARALLEL_MIN_LEN;
use ndarray::{Array4, ArrayView4, ArrayViewMut4};
use rayon::prelude::*;

mod avg;
mod max;

pub use avg::*;
pub use max::*;

/// Roughly how many input elements one parallel task handles (planes are never split).
const TASK_LEN: usize = 1 << 13;

/// The geometry of a 2-D pooling window (PyTorch `nn.MaxPool2d` / `nn.AvgPool2d`, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Window height and width `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Vertical and horizontal step `(sh, sw)`.
    pub stride: (usize, usize),
    /// Implicit padding on each side `(ph, pw)`; valid up to half the kernel (`p ≤ k/2`).
    pub padding: (usize, usize),
    /// Round the output size up (PyTorch `ceil_mode=True`) instead of down.
    pub ceil_mode: bool,
}

impl PoolGeometry {
    /// A `kh×kw` window with stride = kernel, no padding, floor mode (PyTorch defaults).
    pub fn new(kh: usize, kw: usize) -> Self {
        PoolGeometry {
            kernel: (kh, kw),
            stride: (kh, kw),
            padding: (0, 0),
            ceil_mode: false,
        }
    }

    /// The output size `(OH, OW)` for an `H×W` input, or `None` when the geometry does not fit
    /// (zero kernel or stride, padding above half the kernel, window larger than the padded
    /// input, or an empty input).
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (kh, kw) = self.kernel;
        let (ph, pw) = self.padding;
        if ph > kh / 2 || pw > kw / 2 || h == 0 || w == 0 {
            return None;
        }
        Some((
            pool_output_len(h, kh, self.stride.0, ph, self.ceil_mode)?,
            pool_output_len(w, kw, self.stride.1, pw, self.ceil_mode)?,
        ))
    }
}

/// The number of windows along one axis (PyTorch `pooling_output_shape`, dilation 1), or `None`
/// for a zero kernel or stride or a window larger than the padded input `input + 2·padding`.
pub fn pool_output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || input + 2 * padding < kernel {
        return None;
    }
    let span = input + 2 * padding - kernel;
    let mut out = if ceil_mode {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    // PyTorch: the last window must start inside the input or the left padding.
    if ceil_mode && (out - 1) * stride >= input + padding {
        out -= 1;
    }
    Some(out)
}

/// One window along one axis: the input range `lo..hi` it covers (clipped to the input), and
/// its length clipped to the padded input `[−p, n + p)` (the `count_include_pad` divisor).
#[derive(Debug, Clone, Copy)]
struct Win {
    lo: usize,
    hi: usize,
    padded: usize,
}

/// The `out` windows of size `k`, stride `s`, padding `p` along an axis of length `n`.
fn windows(out: usize, k: usize, s: usize, p: usize, n: usize) -> Vec<Win> {
    (0..out)
        .map(|o| {
            let start = (o * s) as isize - p as isize;
            let end_padded = (start + k as isize).min((n + p) as isize);
            let lo = start.max(0) as usize;
            Win {
                lo,
                hi: (end_padded.min(n as isize)).max(lo as isize) as usize,
                padded: (end_padded - start) as usize,
            }
        })
        .collect()
}

/// The row and column windows of a plane (computed once per kernel call).
struct Windows {
    rows: Vec<Win>,
    cols: Vec<Win>,
    /// The column windows `j0..j1` that are consecutive non-overlapping `kw`-chunks of a row
    /// (stride = kernel width, fully inside the input); empty otherwise.
    tiled: (usize, usize),
    kw: usize,
}

impl Windows {
    fn new(g: &PoolGeometry, h: usize, w: usize, oh: usize, ow: usize) -> Self {
        let cols = windows(ow, g.kernel.1, g.stride.1, g.padding.1, w);
        let kw = g.kernel.1;
        let full = |c: &Win| c.hi - c.lo == kw;
        let tiled = if g.stride.1 == kw {
            let j0 = cols.iter().position(full).unwrap_or(ow);
            (j0, j0 + cols[j0..].iter().take_while(|c| full(c)).count())
        } else {
            (0, 0)
        };
        Windows {
            rows: windows(oh, g.kernel.0, g.stride.0, g.padding.0, h),
            cols,
            tiled,
            kw,
        }
    }
}

/// Checks the kernel invariants and returns `(H, W, OH, OW)`.
fn dims(
    op: &str,
    g: &PoolGeometry,
    x: [usize; 4],
    out: [usize; 4],
) -> (usize, usize, usize, usize) {
    let (h, w) = (x[2], x[3]);
    let (oh, ow) = g
        .output_size(h, w)
        .unwrap_or_else(|| panic!("{op}: geometry {g:?} does not fit a {h}x{w} input"));
    assert_eq!(
        out,
        [x[0], x[1], oh, ow],
        "{op}: input {x:?} with {g:?} gives output [N, C, {oh}, {ow}]"
    );
    assert!(
        h * w <= u32::MAX as usize,
        "{op}: a {h}x{w} plane does not fit u32 argmax indices"
    );
    (h, w, oh, ow)
}

/// Whether `work` elements are worth splitting into parallel tasks, and the planes per task.
fn split(planes: usize, per_plane: usize) -> Option<usize> {
    (planes * per_plane > PARALLEL_MIN_LEN && rayon::current_num_threads() > 1)
        .then(|| (TASK_LEN / per_plane.max(1)).max(1))
}

/// Runs `f(p, out_plane)` for every plane `p` of `out` (planes of `plane` elements), in parallel
/// for large inputs (`work_per_plane` = elements touched per plane); one plane, one task.
fn planes_mut<T: Send>(
    out: &mut [T],
    plane: usize,
    work_per_plane: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if plane == 0 {
        return;
    }
    match split(out.len() / plane, work_per_plane) {
        Some(min_len) => out
            .par_chunks_mut(plane)
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(p, o)| f(p, o)),
        None => out.chunks_mut(plane).enumerate().for_each(|(p, o)| f(p, o)),
    }
}

/// [`planes_mut`] over two outputs with the same number of planes.
fn planes_mut2<T: Send, U: Send>(
    a: &mut [T],
    b: &mut [U],
    plane: usize,
    work_per_plane: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) + Sync,
) {
    if plane == 0 {
        return;
    }
    match split(a.len() / plane, work_per_plane) {
        Some(min_len) => a
            .par_chunks_mut(plane)
            .zip(b.par_chunks_mut(plane))
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(p, (a, b))| f(p, a, b)),
        None => a
            .chunks_mut(plane)
            .zip(b.chunks_mut(plane))
            .enumerate()
            .for_each(|(p, (a, b))| f(p, a, b)),
    }
}
