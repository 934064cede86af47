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

// ---------------------------------------------------------------------------------------------
// Max pooling
// ---------------------------------------------------------------------------------------------

/// Folds `v` at flat index `i` into the running maximum `(best, at)`: a strictly greater value
/// replaces it (so the first maximum wins) and NaN always does (PyTorch). Branch-free.
#[inline(always)]
fn fold_max(v: f32, i: u32, best: &mut f32, at: &mut u32) {
    let take = v > *best || v.is_nan();
    *best = if take { v } else { *best };
    *at = if take { i } else { *at };
}

/// Folds one input row into the running maxima of consecutive non-overlapping `k`-wide windows
/// (`xs` = their columns, starting at flat index `first`): one pass per row, vectorised when
/// inlined with a constant `k`.
#[inline(always)]
fn fold_tiled(xs: &[f32], k: usize, first: u32, best: &mut [f32], at: &mut [u32]) {
    for (j, ((seg, b), a)) in xs
        .chunks_exact(k)
        .zip(best.iter_mut())
        .zip(at.iter_mut())
        .enumerate()
    {
        let i0 = first + (j * k) as u32;
        for (k, &v) in seg.iter().enumerate() {
            fold_max(v, i0 + k as u32, b, a);
        }
    }
}

/// The common 2×2 window: folds two input rows (`r0`, `r1`, starting at flat indices `i0`,
/// `i1`) into consecutive non-overlapping windows in one vectorisable pass, in the scan order
/// `r0[2j], r0[2j+1], r1[2j], r1[2j+1]`.
#[inline(always)]
fn max_2x2(r0: &[f32], r1: &[f32], i0: u32, i1: u32, out: &mut [f32], idx: &mut [u32]) {
    for (j, (((a, b), o), ix)) in r0
        .chunks_exact(2)
        .zip(r1.chunks_exact(2))
        .zip(out)
        .zip(idx)
        .enumerate()
    {
        let j2 = 2 * j as u32;
        let (mut best, mut at) = (f32::NEG_INFINITY, i0 + j2);
        fold_max(a[0], i0 + j2, &mut best, &mut at);
        fold_max(a[1], i0 + j2 + 1, &mut best, &mut at);
        fold_max(b[0], i1 + j2, &mut best, &mut at);
        fold_max(b[1], i1 + j2 + 1, &mut best, &mut at);
        (*o, *ix) = (best, at);
    }
}

/// Max pooling of one plane of width `w` into the window maxima and their flat argmax
/// `h·W + w`. Every window visits its elements in row-major order (PyTorch's scan order),
/// whichever of the three paths handles it (2×2 fused rows, row-by-row tiled, generic), so the
/// result does not depend on the path.
fn max_plane(x: &[f32], w: usize, win: &Windows, out: &mut [f32], idx: &mut [u32]) {
    let (ow, (j0, j1)) = (win.cols.len(), win.tiled);
    for ((orow, irow), rw) in out
        .chunks_exact_mut(ow)
        .zip(idx.chunks_exact_mut(ow))
        .zip(&win.rows)
    {
        for ((o, ix), cw) in orow.iter_mut().zip(irow.iter_mut()).zip(&win.cols) {
            *o = f32::NEG_INFINITY;
            *ix = (rw.lo * w + cw.lo) as u32;
        }
        // forward: out[i,j] = max over the window (padding = −∞); first max wins, NaN wins.
        let fused = j1 > j0 && win.kw == 2 && rw.hi - rw.lo == 2;
        if fused {
            let (c0, c1) = (win.cols[j0].lo, win.cols[j0].lo + 2 * (j1 - j0));
            let (r0, r1) = (rw.lo * w, (rw.lo + 1) * w);
            max_2x2(
                &x[r0 + c0..r0 + c1],
                &x[r1 + c0..r1 + c1],
                (r0 + c0) as u32,
                (r1 + c0) as u32,
                &mut orow[j0..j1],
                &mut irow[j0..j1],
            );
        }
        for r in rw.lo..rw.hi {
            let (xrow, base) = (&x[r * w..(r + 1) * w], r * w);
            if j1 > j0 && !fused {
                let c0 = win.cols[j0].lo;
                let xs = &xrow[c0..c0 + (j1 - j0) * win.kw];
                let (b, a) = (&mut orow[j0..j1], &mut irow[j0..j1]);
                let first = (base + c0) as u32;
                match win.kw {
                    2 => fold_tiled(xs, 2, first, b, a),
                    3 => fold_tiled(xs, 3, first, b, a),
                    k => fold_tiled(xs, k, first, b, a),
                }
            }
            for j in (0..j0).chain(j1..ow) {
                let cw = &win.cols[j];
                for (c, &v) in (cw.lo..).zip(&xrow[cw.lo..cw.hi]) {
                    fold_max(v, (base + c) as u32, &mut orow[j], &mut irow[j]);
                }
            }
        }
    }
}

/// Max pooling into caller buffers: writes the window maxima to `out` and their flat in-plane
/// argmax (`h·W + w`, PyTorch `return_indices`) to `argmax`. `out` and `argmax` must be in
/// standard (row-major) layout; `x` may have any layout.
///
/// # Shapes
/// `x: (N, C, H, W)` → `out: (N, C, OH, OW)`, `argmax: (N, C, OH, OW)` with `(OH, OW)` =
/// [`PoolGeometry::output_size`].
pub fn max_pool2d_forward_into(
    x: ArrayView4<f32>,
    g: &PoolGeometry,
    mut out: ArrayViewMut4<f32>,
    mut argmax: ArrayViewMut4<u32>,
) {
    let (h, w, oh, ow) = dims("max_pool2d", g, x.dim().into(), out.dim().into());
    assert_eq!(out.dim(), argmax.dim(), "max_pool2d: out and argmax shapes");
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let out = out.as_slice_mut().expect("out in standard layout");
    let idx = argmax.as_slice_mut().expect("argmax in standard layout");
    let (hw, win) = (h * w, Windows::new(g, h, w, oh, ow));
    planes_mut2(out, idx, oh * ow, hw, |p, o, i| {
        max_plane(&xs[p * hw..(p + 1) * hw], w, &win, o, i)
    });
}

/// Max pooling (allocating form of [`max_pool2d_forward_into`]): returns the maxima and the
/// argmax `h·W + w` within each `(n, c)` plane.
///
/// # Shapes
/// `x: (N, C, H, W)` → `(out: (N, C, OH, OW), argmax: (N, C, OH, OW))`.
pub fn max_pool2d_forward(x: ArrayView4<f32>, g: &PoolGeometry) -> (Array4<f32>, Array4<u32>) {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = g
        .output_size(h, w)
        .unwrap_or_else(|| panic!("max_pool2d: geometry {g:?} does not fit a {h}x{w} input"));
    let mut out = Array4::zeros((n, c, oh, ow));
    let mut idx = Array4::zeros((n, c, oh, ow));
    max_pool2d_forward_into(x, g, out.view_mut(), idx.view_mut());
    (out, idx)
}

/// Max-pooling backward, **accumulating** into `dx` (standard layout; pass zeros for a plain
/// gradient): each `dout` entry is added to the input position its window's argmax names, so
/// positions that are the maximum of several overlapping windows receive the sum.
///
/// # Shapes
/// `dout: (N, C, OH, OW)`, `argmax: (N, C, OH, OW)` → `dx: (N, C, H, W)`.
pub fn max_pool2d_backward_into(
    dout: ArrayView4<f32>,
    argmax: ArrayView4<u32>,
    mut dx: ArrayViewMut4<f32>,
) {
    assert_eq!(
        dout.dim(),
        argmax.dim(),
        "max_pool2d backward: dout and argmax shapes"
    );
    let (n, c, h, w) = dx.dim();
    let (dn, dc, oh, ow) = dout.dim();
    assert!(
        (dn, dc) == (n, c),
        "max_pool2d backward: dout {:?} vs dx {:?}",
        dout.shape(),
        dx.shape()
    );
    let dout = dout.as_standard_layout();
    let argmax = argmax.as_standard_layout();
    let (ds, is) = (
        dout.as_slice().expect("standard layout"),
        argmax.as_slice().expect("standard layout"),
    );
    let dxs = dx.as_slice_mut().expect("dx in standard layout");
    let plane = oh * ow;
    planes_mut(dxs, h * w, h * w + plane, |p, dx| {
        let range = p * plane..(p + 1) * plane;
        for (&d, &i) in ds[range.clone()].iter().zip(&is[range]) {
            // forward: out[i,j] = x[argmax[i,j]]  ⇒  dx[argmax[i,j]] += dout[i,j]
            dx[i as usize] += d;
        }
    });
}

/// Max-pooling backward (allocating form of [`max_pool2d_backward_into`]).
///
/// # Shapes
/// `dout: (N, C, OH, OW)`, `argmax: (N, C, OH, OW)`, `input_hw = (H, W)` → `dx: (N, C, H, W)`.
pub fn max_pool2d_backward(
    dout: ArrayView4<f32>,
    argmax: ArrayView4<u32>,
    input_hw: (usize, usize),
) -> Array4<f32> {
    let (n, c, _, _) = dout.dim();
    let mut dx = Array4::zeros((n, c, input_hw.0, input_hw.1));
    max_pool2d_backward_into(dout, argmax, dx.view_mut());
    dx
}

// ---------------------------------------------------------------------------------------------
// Average pooling
// ---------------------------------------------------------------------------------------------

/// The divisor of the average-pooling window `rw × cw`.
#[inline]
fn divisor(count_include_pad: bool, rw: &Win, cw: &Win) -> f32 {
    if count_include_pad {
        (rw.padded * cw.padded) as f32
    } else {
        ((rw.hi - rw.lo) * (cw.hi - cw.lo)) as f32
    }
}

/// Average pooling of one plane of width `w` into the window means; windows advance row by
/// row through the input, each summing its elements in row-major order.
fn avg_plane(x: &[f32], w: usize, win: &Windows, cip: bool, out: &mut [f32]) {
    let ow = win.cols.len();
    for (orow, rw) in out.chunks_exact_mut(ow).zip(&win.rows) {
        orow.fill(0.0);
        for r in rw.lo..rw.hi {
            let xrow = &x[r * w..(r + 1) * w];
            for (o, cw) in orow.iter_mut().zip(&win.cols) {
                let mut sum = *o;
                for &v in &xrow[cw.lo..cw.hi] {
                    sum += v;
                }
                *o = sum;
            }
        }
        for (o, cw) in orow.iter_mut().zip(&win.cols) {
            // forward: out[i,j] = (Σ_window x) / divisor   (padding contributes zeros)
            *o /= divisor(cip, rw, cw);
        }
    }
}

/// Average pooling into a caller buffer `out` (standard layout). With `count_include_pad`
/// (PyTorch's default) the padding counts as zeros in the divisor; otherwise only input
/// elements are counted. `x` may have any layout.
///
/// # Shapes
/// `x: (N, C, H, W)` → `out: (N, C, OH, OW)`.
pub fn avg_pool2d_forward_into(
    x: ArrayView4<f32>,
    g: &PoolGeometry,
    count_include_pad: bool,
    mut out: ArrayViewMut4<f32>,
) {
    let (h, w, oh, ow) = dims("avg_pool2d", g, x.dim().into(), out.dim().into());
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let out = out.as_slice_mut().expect("out in standard layout");
    let (hw, win) = (h * w, Windows::new(g, h, w, oh, ow));
    planes_mut(out, oh * ow, hw, |p, o| {
        avg_plane(&xs[p * hw..(p + 1) * hw], w, &win, count_include_pad, o)
    });
}

/// Average pooling (allocating form of [`avg_pool2d_forward_into`]).
///
/// # Shapes
/// `x: (N, C, H, W)` → `out: (N, C, OH, OW)`.
pub fn avg_pool2d_forward(
    x: ArrayView4<f32>,
    g: &PoolGeometry,
    count_include_pad: bool,
) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = g
        .output_size(h, w)
        .unwrap_or_else(|| panic!("avg_pool2d: geometry {g:?} does not fit a {h}x{w} input"));
    let mut out = Array4::zeros((n, c, oh, ow));
    avg_pool2d_forward_into(x, g, count_include_pad, out.view_mut());
    out
}

/// Average-pooling backward, **accumulating** into `dx` (standard layout; pass zeros for a
/// plain gradient): every input element of a window receives `dout / divisor`, summed over the
/// windows that contain it.
///
/// # Shapes
/// `dout: (N, C, OH, OW)` → `dx: (N, C, H, W)`.
pub fn avg_pool2d_backward_into(
    dout: ArrayView4<f32>,
    g: &PoolGeometry,
    count_include_pad: bool,
    mut dx: ArrayViewMut4<f32>,
) {
    let (h, w, oh, ow) = dims("avg_pool2d backward", g, dx.dim().into(), dout.dim().into());
    let win = Windows::new(g, h, w, oh, ow);
    let dout = dout.as_standard_layout();
    let ds = dout.as_slice().expect("standard layout");
    let dxs = dx.as_slice_mut().expect("dx in standard layout");
    let plane = oh * ow;
    planes_mut(dxs, h * w, h * w + plane, |p, dx| {
        let d = &ds[p * plane..(p + 1) * plane];
        for (drow, rw) in d.chunks_exact(ow).zip(&win.rows) {
            for r in rw.lo..rw.hi {
                let dxrow = &mut dx[r * w..(r + 1) * w];
                for (&dv, cw) in drow.iter().zip(&win.cols) {
                    // forward: out[i,j] = (Σ_window x)/divisor  ⇒  dx[window] += dout[i,j]/divisor
                    let gv = dv / divisor(count_include_pad, rw, cw);
                    for v in &mut dxrow[cw.lo..cw.hi] {
                        *v += gv;
                    }
                }
            }
        }
    });
}

/// Average-pooling backward (allocating form of [`avg_pool2d_backward_into`]).
///
/// # Shapes
/// `dout: (N, C, OH, OW)`, `input_hw = (H, W)` → `dx: (N, C, H, W)`.
pub fn avg_pool2d_backward(
    dout: ArrayView4<f32>,
    g: &PoolGeometry,
    count_include_pad: bool,
    input_hw: (usize, usize),
) -> Array4<f32> {
    let (n, c, _, _) = dout.dim();
    let mut dx = Array4::zeros((n, c, input_hw.0, input_hw.1));
    avg_pool2d_backward_into(dout, g, count_include_pad, dx.view_mut());
    dx
}
