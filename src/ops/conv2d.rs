//! 2-D convolution (cross-correlation, NCHW) via im2col + SGEMM, forward and backward.
//!
//! Per image `n`, the input patches are unfolded into `cols_n: (C·kh·kw, OH·OW)` and the
//! convolution is one product `out_n = W·cols_n + bias` with `W: (O, C·kh·kw)`:
//!
//! ```text
//! out[n,o,i,j]           = bias[o] + Σ_{c,u,v} w[o,c,u,v] · xpad[n, c, i·sh + u·dh, j·sw + v·dw]
//! cols_n[(c,u,v), (i,j)] = xpad[n, c, i·sh + u·dh, j·sw + v·dw]
//! ```
//!
//! **Two unfoldings.**
//! - *Wide* (stride 1, the common case): with `xpad` of width `Wp`, patch row `(c,u,v)` read at
//!   the "wide" column `t = i·Wp + j` is `xpad[c][(u·dh)·Wp + v·dw + t]`, a single contiguous run.
//!   So each patch row is one copy of `L = (OH−1)·Wp + OW` floats, the product runs over those
//!   `L ≥ OH·OW` columns (the `Wp − OW` columns between output rows are junk), and the output rows
//!   are then gathered out of the wide result, adding the bias on the way (one write of the output,
//!   no read-modify-write). Backward scatters `dout` into the wide layout with zeros in the junk
//!   columns, so they contribute nothing, and folds `dcols` back with one contiguous add per
//!   patch row. Padded inputs are first copied into a zero-bordered scratch image.
//! - *Rows* (any stride): one copy (or strided gather) per patch row and output row, the valid
//!   column range computed once per kernel column and the padding written as zeros around it.
//!
//! Images whose patch matrix would exceed [`TILE_FLOATS`] are unfolded a band of output rows at a
//! time, so scratch memory stays bounded.
//!
//! **Parallelism and determinism.** Images run in parallel with rayon, each task using a serial
//! GEMM and a scratch buffer leased from a [`Conv2dWorkspace`] that the caller keeps across calls
//! (no allocation in steady state apart from the returned arrays). A single image uses the
//! pool-parallel GEMM instead. The weight and bias gradients are computed per image (each image's
//! bands accumulated in a fixed order) and then summed over the images in image order, so every
//! result is bit-identical whatever the thread count (the SGEMM itself reduces in the same order
//! for 1 or N threads).

use super::matmul::{gemm_into, Threads};
use ndarray::{
    s, Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4,
};
use rayon::prelude::*;
use std::sync::Mutex;

/// The shapes and hyper-parameters of one convolution: PyTorch `nn.Conv2d` semantics with zero
/// padding and `groups` (default 1). Padding may differ before and after an axis (PyTorch / Keras
/// `"same"` with an even kernel, and TensorFlow `"SAME"` with a stride, pad one more row/column
/// at the bottom/right).
///
/// With `groups = G`, input channels `[g·C/G, (g+1)·C/G)` feed only output channels
/// `[g·O/G, (g+1)·O/G)` and the weight is `[O, C/G, kh, kw]`; `G = C = O` is a depthwise
/// convolution, which runs on a direct kernel ([`crate::ops::depthwise`]) instead of im2col.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// Input channels `C`.
    pub c: usize,
    /// Input height `H`.
    pub h: usize,
    /// Input width `W`.
    pub w: usize,
    /// Output channels `O`.
    pub o: usize,
    /// Kernel height `kh`.
    pub kh: usize,
    /// Kernel width `kw`.
    pub kw: usize,
    /// Vertical stride `sh`.
    pub sh: usize,
    /// Horizontal stride `sw`.
    pub sw: usize,
    /// Zero rows added at the top, `ph`.
    pub ph: usize,
    /// Zero rows added at the bottom (equal to `ph` except for `"same"` with an even kernel).
    pub ph_end: usize,
    /// Zero columns added on the left, `pw`.
    pub pw: usize,
    /// Zero columns added on the right (equal to `pw` except for `"same"` with an even kernel).
    pub pw_end: usize,
    /// Vertical dilation `dh`.
    pub dh: usize,
    /// Horizontal dilation `dw`.
    pub dw: usize,
    /// Channel groups `G` (1: a dense convolution); `G` divides `C` and `O`.
    pub groups: usize,
}

/// PyTorch's convolution output length `⌊(size + 2p − d(k−1) − 1)/s⌋ + 1`, or `None` when the
/// dilated kernel does not fit in the padded input (or `k`, `s` or `d` is 0).
pub fn conv_out_len(size: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    conv_out_len_padded(size + 2 * p, k, s, d)
}

/// TensorFlow `"SAME"` padding `(before, after)` of an axis of `n` elements for a kernel `k`,
/// stride `s` and dilation `d`: `out = ⌈n/s⌉`, `total = max((out − 1)·s + d·(k − 1) + 1 − n, 0)`,
/// `before = ⌊total/2⌋`, `after = total − before` (timm's `get_same_padding`).
pub fn tf_same_pads(n: usize, k: usize, s: usize, d: usize) -> (usize, usize) {
    let s = s.max(1);
    let out = n.div_ceil(s);
    let span = d * k.saturating_sub(1) + 1;
    let total = ((out.saturating_sub(1)) * s + span).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// The output length for an axis of `padded = size + pad_before + pad_after` elements.
fn conv_out_len_padded(padded: usize, k: usize, s: usize, d: usize) -> Option<usize> {
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let span = d * (k - 1) + 1;
    (padded >= span).then(|| (padded - span) / s + 1)
}

/// Largest patch matrix unfolded at once, in floats (1 MiB). Larger images are unfolded in bands
/// of output rows. The seed CNN's layers fit whole: measured, whole-image products beat bands of
/// ~128 KiB by 10–20 % on them.
pub const TILE_FLOATS: usize = 256 * 1024;

impl Conv2dGeom {
    /// A `kh × kw` convolution of `(C, H, W)` inputs into `O` channels, stride 1, no padding,
    /// dilation 1 (change them with the `with_*` methods).
    pub fn new(c: usize, h: usize, w: usize, o: usize, kh: usize, kw: usize) -> Self {
        Conv2dGeom {
            c,
            h,
            w,
            o,
            kh,
            kw,
            sh: 1,
            sw: 1,
            ph: 0,
            ph_end: 0,
            pw: 0,
            pw_end: 0,
            dh: 1,
            dw: 1,
            groups: 1,
        }
    }

    /// With `groups` channel groups (`groups` must divide `C` and `O`).
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// TensorFlow `"SAME"` padding for the current input size, stride and dilation: per axis
    /// `out = ⌈n/s⌉`, `total = max((out − 1)·s + d·(k − 1) + 1 − n, 0)`, `before = ⌊total/2⌋`,
    /// the rest after (the odd extra row/column goes to the bottom/right).
    pub fn with_tf_same_padding(self) -> Self {
        let (rows, cols) = (
            tf_same_pads(self.h, self.kh, self.sh, self.dh),
            tf_same_pads(self.w, self.kw, self.sw, self.dw),
        );
        self.with_padding_asym(rows, cols)
    }

    /// Whether this is a depthwise convolution (`G = C = O`), run by the direct kernel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.groups == self.o
    }

    /// Whether this is a 1×1, stride-1, unpadded dense convolution: a plain GEMM per image on
    /// the input as it is (no unfolding).
    pub fn is_pointwise(&self) -> bool {
        self.groups == 1
            && (self.kh, self.kw, self.sh, self.sw) == (1, 1, 1, 1)
            && (self.ph, self.ph_end, self.pw, self.pw_end) == (0, 0, 0, 0)
    }

    /// Channels per group `(C/G, O/G)`.
    pub fn group_channels(&self) -> (usize, usize) {
        let g = self.groups.max(1);
        (self.c / g, self.o / g)
    }

    /// With strides `(sh, sw)`.
    pub fn with_stride(mut self, sh: usize, sw: usize) -> Self {
        (self.sh, self.sw) = (sh, sw);
        self
    }

    /// With symmetric zero padding: `ph` rows at the top and bottom, `pw` columns left and right.
    pub fn with_padding(self, ph: usize, pw: usize) -> Self {
        self.with_padding_asym((ph, ph), (pw, pw))
    }

    /// With `(top, bottom)` rows and `(left, right)` columns of zero padding.
    pub fn with_padding_asym(mut self, rows: (usize, usize), cols: (usize, usize)) -> Self {
        (self.ph, self.ph_end) = rows;
        (self.pw, self.pw_end) = cols;
        self
    }

    /// With dilations `(dh, dw)`.
    pub fn with_dilation(mut self, dh: usize, dw: usize) -> Self {
        (self.dh, self.dw) = (dh, dw);
        self
    }

    /// Output height and width `(OH, OW)`, or `None` when the dilated kernel does not fit in the
    /// padded input or a kernel size, stride or dilation is 0.
    pub fn try_out_hw(&self) -> Option<(usize, usize)> {
        Some((
            conv_out_len_padded(self.h + self.ph + self.ph_end, self.kh, self.sh, self.dh)?,
            conv_out_len_padded(self.w + self.pw + self.pw_end, self.kw, self.sw, self.dw)?,
        ))
    }

    /// Output height and width `(OH, OW)`.
    ///
    /// # Panics
    /// When the kernel does not fit ([`Conv2dGeom::try_out_hw`] is `None`; layers check this at
    /// build time).
    pub fn out_hw(&self) -> (usize, usize) {
        self.try_out_hw()
            .unwrap_or_else(|| panic!("conv2d: the kernel does not fit the input: {self:?}"))
    }

    /// Rows of the unfolded patch matrix of one group: `(C/G)·kh·kw` (the reduction length of the
    /// forward GEMM, and PyTorch's fan-in).
    pub fn k_len(&self) -> usize {
        self.group_channels().0 * self.kh * self.kw
    }

    /// Forward FLOPs for `n` images, 2 per multiply-add: `2·N·O·OH·OW·C·kh·kw`. A backward with
    /// the input gradient costs twice that, without it (first layer) once.
    pub fn forward_flops(&self, n: usize) -> f64 {
        let (oh, ow) = self.out_hw();
        2.0 * (n * self.o * oh * ow) as f64 * self.k_len() as f64
    }

    /// For kernel column `v` (rows unfolding): the output columns `[j0, j1)` whose input column
    /// `j·sw + v·dw − pw` lies inside `[0, W)`, and the input column of `j0`.
    pub(super) fn valid_cols(&self, v: usize, ow: usize) -> (usize, usize, usize) {
        let off = (v * self.dw) as isize - self.pw as isize;
        let s = self.sw as isize;
        // smallest j with j·s + off ≥ 0, and smallest j with j·s + off ≥ W
        let j0 = if off >= 0 {
            0
        } else {
            ((-off + s - 1) / s) as usize
        };
        let lim = self.w as isize - off;
        let j1 = if lim <= 0 {
            0
        } else {
            ((lim + s - 1) / s) as usize
        };
        let j0 = j0.min(ow);
        let j1 = j1.clamp(j0, ow);
        (j0, j1, (j0 as isize * s + off).max(0) as usize)
    }
}

/// How one call unfolds its images: band sizes and the scratch layout, shared by all images.
#[derive(Debug, Clone, Copy)]
struct Plan {
    oh: usize,
    ow: usize,
    /// `C·kh·kw`.
    k: usize,
    /// Stride 1: the wide unfolding; otherwise rows.
    wide: bool,
    /// Height and width of the padded image.
    hp: usize,
    wp: usize,
    /// Whether the wide unfolding needs a zero-bordered copy of the image.
    padded: bool,
    /// Output rows per band.
    rows: usize,
    /// Columns of the largest band's patch matrix.
    cols_max: usize,
}

impl Plan {
    fn new(g: &Conv2dGeom) -> Plan {
        let (oh, ow) = g.out_hw();
        let k = g.k_len();
        let wide = g.sh == 1 && g.sw == 1;
        let (hp, wp) = (g.h + g.ph + g.ph_end, g.w + g.pw + g.pw_end);
        let pitch = if wide { wp } else { ow };
        let rows = (TILE_FLOATS / (k * pitch).max(1)).clamp(1, oh.max(1));
        let mut plan = Plan {
            oh,
            ow,
            k,
            wide,
            hp,
            wp,
            padded: wide && (hp, wp) != (g.h, g.w),
            rows,
            cols_max: 0,
        };
        plan.cols_max = plan.band_cols(0, rows);
        plan
    }

    /// Columns of the patch matrix of output rows `[i0, i1)`.
    fn band_cols(&self, i0: usize, i1: usize) -> usize {
        if self.wide {
            (i1 - i0 - 1) * self.wp + self.ow
        } else {
            (i1 - i0) * self.ow
        }
    }

    /// The bands of output rows, in order.
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.oh)
            .step_by(self.rows)
            .map(|i0| (i0, (i0 + self.rows).min(self.oh)))
    }

    /// Floats of one padded image.
    fn padded_len(&self, g: &Conv2dGeom) -> usize {
        if self.padded {
            g.c * self.hp * self.wp
        } else {
            0
        }
    }
}

/// Copies `x: (C, H, W)` into the interior of the zero-bordered `xp: (C, Hp, Wp)`.
fn pad_into(x: &[f32], g: &Conv2dGeom, plan: &Plan, xp: &mut [f32]) {
    xp.fill(0.0);
    for (src, dst) in x
        .chunks_exact(g.h * g.w)
        .zip(xp.chunks_exact_mut(plan.hp * plan.wp))
    {
        for (r, src_row) in src.chunks_exact(g.w).enumerate() {
            dst[(r + g.ph) * plan.wp + g.pw..][..g.w].copy_from_slice(src_row);
        }
    }
}

/// Adds the interior of `dxp: (C, Hp, Wp)` to `dx: (C, H, W)` (the adjoint of [`pad_into`]).
fn crop_add(dxp: &[f32], g: &Conv2dGeom, plan: &Plan, dx: &mut [f32]) {
    for (src, dst) in dxp
        .chunks_exact(plan.hp * plan.wp)
        .zip(dx.chunks_exact_mut(g.h * g.w))
    {
        for (r, dst_row) in dst.chunks_exact_mut(g.w).enumerate() {
            let src_row = &src[(r + g.ph) * plan.wp + g.pw..][..g.w];
            dst_row.iter_mut().zip(src_row).for_each(|(d, s)| *d += *s);
        }
    }
}

/// Offset in the padded image of patch row `(c, u, v)` at the first wide column of band `i0`.
fn wide_offset(r: usize, i0: usize, g: &Conv2dGeom, plan: &Plan) -> usize {
    let (c, u, v) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
    (c * plan.hp + i0 + u * g.dh) * plan.wp + v * g.dw
}

/// Wide unfolding of band `[i0, i1)` of the padded image `xp`: `cols: (C·kh·kw, L)`.
fn unfold_wide(xp: &[f32], g: &Conv2dGeom, plan: &Plan, i0: usize, i1: usize, cols: &mut [f32]) {
    let len = plan.band_cols(i0, i1);
    for (r, row) in cols[..plan.k * len].chunks_exact_mut(len).enumerate() {
        let off = wide_offset(r, i0, g, plan);
        row.copy_from_slice(&xp[off..off + len]);
    }
}

/// The adjoint of [`unfold_wide`]: `dxp[...] += dcols[(c,u,v), :]`, one run per patch row.
fn fold_wide(dcols: &[f32], g: &Conv2dGeom, plan: &Plan, i0: usize, i1: usize, dxp: &mut [f32]) {
    let len = plan.band_cols(i0, i1);
    for (r, row) in dcols[..plan.k * len].chunks_exact(len).enumerate() {
        let off = wide_offset(r, i0, g, plan);
        let dst = &mut dxp[off..off + len];
        dst.iter_mut().zip(row).for_each(|(d, s)| *d += *s);
    }
}

/// Rows unfolding of output rows `[i0, i1)` of `x: (C, H, W)`: `cols: (C·kh·kw, (i1 − i0)·OW)`,
/// zeros where the window lies in the padding.
fn unfold_rows(x: &[f32], g: &Conv2dGeom, plan: &Plan, i0: usize, i1: usize, cols: &mut [f32]) {
    let (ow, len) = (plan.ow, plan.band_cols(i0, i1));
    for (r, row) in cols[..plan.k * len].chunks_exact_mut(len).enumerate() {
        let (c, u, v) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        let (j0, j1, first) = g.valid_cols(v, ow);
        for (dst, i) in row.chunks_exact_mut(ow).zip(i0..i1) {
            let y = (i * g.sh + u * g.dh) as isize - g.ph as isize;
            if y < 0 || y >= g.h as isize || j0 == j1 {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[y as usize * g.w..][..g.w];
            dst[..j0].fill(0.0);
            dst[j1..].fill(0.0);
            let src = src[first..].iter().step_by(g.sw);
            dst[j0..j1].iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        }
    }
}

/// The adjoint of [`unfold_rows`]: `dx[c, y, x] += dcols[(c,u,v), (i,j)]` (padding dropped).
fn fold_rows(dcols: &[f32], g: &Conv2dGeom, plan: &Plan, i0: usize, i1: usize, dx: &mut [f32]) {
    let (ow, len) = (plan.ow, plan.band_cols(i0, i1));
    for (r, row) in dcols[..plan.k * len].chunks_exact(len).enumerate() {
        let (c, u, v) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let plane = &mut dx[c * g.h * g.w..][..g.h * g.w];
        let (j0, j1, first) = g.valid_cols(v, ow);
        for (src, i) in row.chunks_exact(ow).zip(i0..i1) {
            let y = (i * g.sh + u * g.dh) as isize - g.ph as isize;
            if y < 0 || y >= g.h as isize || j0 == j1 {
                continue;
            }
            let dst = plane[y as usize * g.w + first..].iter_mut().step_by(g.sw);
            dst.zip(&src[j0..j1]).for_each(|(d, s)| *d += *s);
        }
    }
}

/// `Σ xs` in a fixed order with 16 independent partial sums (vectorisable, unlike a plain
/// sequential sum in which every addition waits for the previous one).
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// Scratch buffers reused across convolution calls; a layer keeps one.
///
/// Holds one scratch buffer per thread of the rayon pool (patches, wide products, padded images;
/// grown to the largest call seen and kept) and the per-image gradient partials of the backward
/// pass. Cloning gives an empty workspace.
#[derive(Debug, Default)]
pub struct Conv2dWorkspace {
    /// Per-thread scratch, indexed by the rayon thread index.
    scratch: Vec<Mutex<Vec<f32>>>,
    /// Per-image `dWᵀ` partials `(N, C·kh·kw, O)`.
    dw_parts: Vec<f32>,
    /// Per-image bias-gradient partials `(N, O)`.
    db_parts: Vec<f32>,
    /// The sum of the `dWᵀ` partials `(C·kh·kw, O)`.
    dw_sum: Vec<f32>,
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
    fn prepare(&mut self, len: usize) {
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
fn with_scratch<R>(scratch: &[Mutex<Vec<f32>>], len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let idx = rayon::current_thread_index().unwrap_or(0) % scratch.len().max(1);
    match scratch.get(idx).map(Mutex::try_lock) {
        Some(Ok(mut buf)) if buf.len() >= len => f(&mut buf[..len]),
        _ => f(&mut vec![0.0; len]),
    }
}

/// Splits `buf` into consecutive slices of the given lengths.
fn carve<const K: usize>(mut buf: &mut [f32], lens: [usize; K]) -> [&mut [f32]; K] {
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(len);
        buf = tail;
        head
    })
}

/// The threading of the per-image GEMMs: one image uses the whole pool, a batch parallelises
/// over images with serial GEMMs.
fn threads_for(n: usize) -> Threads {
    if n == 1 {
        Threads::Pool
    } else {
        Threads::Serial
    }
}

fn check_shapes(x: &ArrayView4<f32>, w: &ArrayView4<f32>, g: &Conv2dGeom) -> usize {
    let n = x.dim().0;
    assert_eq!(
        x.dim(),
        (n, g.c, g.h, g.w),
        "conv2d: input does not match the geometry {g:?}"
    );
    assert!(
        g.groups >= 1 && g.c.is_multiple_of(g.groups) && g.o.is_multiple_of(g.groups),
        "conv2d: groups must divide the channels: {g:?}"
    );
    assert_eq!(
        w.dim(),
        (g.o, g.c / g.groups, g.kh, g.kw),
        "conv2d: weight does not match the geometry {g:?}"
    );
    n
}

/// The dense (`groups = 1`) geometry of one group of `g`.
fn group_geom(g: &Conv2dGeom) -> Conv2dGeom {
    let (cg, og) = g.group_channels();
    Conv2dGeom {
        c: cg,
        o: og,
        groups: 1,
        ..*g
    }
}

/// Convolution forward.
///
/// ```text
/// out[n,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v] · xpad[n, c, i·sh + u·dh, j·sw + v·dw]
/// ⇔ out_n      = W · cols_n + bias        (W: (O, C·kh·kw), cols_n = im2col(x_n))
/// ```
///
/// Images run in parallel (serial GEMM each; one image uses the pool-parallel GEMM); `ws` lends
/// the scratch buffers and is reused across calls. Any strides are accepted (non-standard inputs
/// are copied first).
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (O, C, kh, kw)`, `bias: (O)` → `(N, O, OH, OW)`.
///
/// # Panics
/// When the shapes do not match `g` or the kernel does not fit.
pub fn conv2d_forward(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
) -> Array4<f32> {
    let n = check_shapes(&x, &w, g);
    if let Some(b) = &bias {
        assert_eq!(b.len(), g.o, "conv2d: bias does not match the geometry");
    }
    if g.is_depthwise() {
        return super::depthwise::depthwise_forward(x, w, bias, g);
    }
    if g.groups > 1 {
        return grouped_forward(x, w, bias, g, ws);
    }
    let plan = Plan::new(g);
    let (oh, ow, k) = (plan.oh, plan.ow, plan.k);
    let p = oh * ow;
    let mut out = Array4::<f32>::zeros((n, g.o, oh, ow));
    if out.is_empty() {
        return out;
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let wmat = ArrayView2::from_shape((g.o, k), w.as_slice().expect("standard")).expect("(O, K)");
    let bias = bias.map(|b| b.to_vec());
    let bias = bias.as_deref();
    let threads = threads_for(n);
    let pointwise = g.is_pointwise();
    // scratch: patches (K, L), wide product (O, L), padded image (none for a 1×1 conv)
    let lens = if pointwise {
        [0; 3]
    } else {
        [
            k * plan.cols_max,
            if plan.wide { g.o * plan.cols_max } else { 0 },
            plan.padded_len(g),
        ]
    };
    let scratch_len = lens.iter().sum();
    ws.prepare(scratch_len);
    let scratch = &ws.scratch[..];
    out.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(g.o * p)
        .zip(
            x.as_slice()
                .expect("standard")
                .par_chunks((g.c * g.h * g.w).max(1)),
        )
        .for_each(|(out_n, x_n)| {
            if pointwise {
                // 1×1: out_n = W · x_n + bias, the image itself is the patch matrix (C, H·W)
                if let Some(b) = bias {
                    for (row, &bv) in out_n.chunks_exact_mut(p).zip(b) {
                        row.fill(bv);
                    }
                }
                let xm = ArrayView2::from_shape((k, p), x_n).expect("(C, P)");
                let om = ArrayViewMut2::from_shape((g.o, p), out_n).expect("(O, P)");
                gemm_into(wmat, xm, om, bias.is_some(), threads);
                return;
            }
            with_scratch(scratch, scratch_len, |buf| {
                let [cols, wide_out, xp] = carve(buf, lens);
                let src: &[f32] = if plan.padded {
                    pad_into(x_n, g, &plan, xp);
                    xp
                } else {
                    x_n
                };
                for (i0, i1) in plan.bands() {
                    let len = plan.band_cols(i0, i1);
                    let cols = &mut cols[..k * len];

                    if plan.wide {
                        unfold_wide(src, g, &plan, i0, i1, cols);
                        // wide_out = W · cols, then out_n[o, i, :] = wide_out[o, i·Wp ..] + bias[o]
                        let wo = &mut wide_out[..g.o * len];
                        let wm =
                            ArrayViewMut2::from_shape((g.o, len), &mut wo[..]).expect("(O, L)");
                        let cm = ArrayView2::from_shape((k, len), &cols[..]).expect("(K, L)");
                        gemm_into(wmat, cm, wm, false, threads);
                        for (o, wrow) in wo.chunks_exact(len).enumerate() {
                            let b = bias.map_or(0.0, |b| b[o]);
                            let orows =
                                out_n[o * p + i0 * ow..][..(i1 - i0) * ow].chunks_exact_mut(ow);
                            for (orow, src) in orows.zip(wrow.chunks(plan.wp)) {
                                orow.iter_mut().zip(src).for_each(|(d, s)| *d = s + b);
                            }
                        }
                    } else {
                        unfold_rows(x_n, g, &plan, i0, i1, cols);
                        // out_n[:, band] = bias, then += W · cols
                        let mut om =
                            ArrayViewMut2::from_shape((g.o, p), &mut out_n[..]).expect("(O, P)");
                        let mut ob = om.slice_mut(ndarray::s![.., i0 * ow..i1 * ow]);
                        if let Some(b) = bias {
                            for (mut row, &bv) in ob.rows_mut().into_iter().zip(b) {
                                row.fill(bv);
                            }
                        }
                        let cm = ArrayView2::from_shape((k, len), &cols[..]).expect("(K, L)");
                        gemm_into(wmat, cm, ob, bias.is_some(), threads);
                    }
                }
            })
        });
    out
}

/// Convolution backward: accumulates (`+=`) into `dw` and `dbias`, and returns `dx` when
/// `want_dx` (the first layer of a model needs no input gradient, which saves the `Wᵀ·dout`
/// product and the fold).
///
/// ```text
/// forward: out_n = W·cols_n + bias                  (cols_n = im2col(x_n))
///   ⇒ dWᵀ_n   = cols_n · dout_nᵀ                     (per image, band by band in order)
///   ⇒ dW     += Σ_n (dWᵀ_n)ᵀ                          (summed over images in image order)
///   ⇒ dbias  += Σ_n Σ_{i,j} dout_n[:, i, j]           (per image, then in image order)
///   ⇒ dcols_n = Wᵀ · dout_n,  dx_n = col2im(dcols_n)  (col2im is the adjoint of im2col)
/// ```
///
/// With the wide unfolding, `dout_n` is first scattered into the wide layout with zeros in the
/// junk columns, so the products above run on it unchanged. `x` is the forward input: the patches
/// are unfolded again rather than stored. `ws` lends the scratch buffers and holds the per-image
/// partials; it is reused across calls.
///
/// # Shapes
/// `dout: (N, O, OH, OW)`, `x: (N, C, H, W)`, `w: (O, C, kh, kw)`, `dw: (O, C, kh, kw)`,
/// `dbias: (O)` → `dx: (N, C, H, W)`, or `None` without `want_dx`.
///
/// # Panics
/// When the shapes do not match `g` or the kernel does not fit.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    dout: ArrayView4<f32>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    mut dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    let n = check_shapes(&x, &w, g);
    let (oh, ow) = g.out_hw();
    assert_eq!(
        dout.dim(),
        (n, g.o, oh, ow),
        "conv2d backward: dout does not match the geometry {g:?}"
    );
    assert_eq!(
        dw.dim(),
        (g.o, g.c / g.groups, g.kh, g.kw),
        "conv2d backward: dw does not match the geometry {g:?}"
    );
    if let Some(db) = &dbias {
        assert_eq!(db.len(), g.o, "conv2d backward: dbias does not match");
    }
    if g.is_depthwise() {
        return super::depthwise::depthwise_backward(dout, x, w, g, dw, dbias, want_dx);
    }
    if g.groups > 1 {
        return grouped_backward(dout, x, w, g, ws, dw, dbias, want_dx);
    }
    let plan = Plan::new(g);
    let k = plan.k;
    let p = oh * ow;
    let mut dx = Array4::<f32>::zeros((if want_dx { n } else { 0 }, g.c, g.h, g.w));
    if n == 0 || p == 0 || g.o == 0 || k == 0 {
        return want_dx.then_some(dx);
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let dout = dout.as_standard_layout();
    let wmat = ArrayView2::from_shape((g.o, k), w.as_slice().expect("standard")).expect("(O, K)");
    let threads = threads_for(n);
    let xlen = g.c * g.h * g.w;
    // Each image's dx chunk, or an empty slot when dx is not wanted.
    let mut dx_slots: Vec<&mut [f32]> = if want_dx {
        dx.as_slice_mut().expect("fresh").chunks_mut(xlen).collect()
    } else {
        (0..n).map(|_| &mut [][..]).collect()
    };
    let pointwise = g.is_pointwise();
    // scratch: patches (K, L), wide dout (O, L), dcols (K, L), padded image, padded dx
    let lens = if pointwise {
        [0; 5]
    } else {
        [
            k * plan.cols_max,
            if plan.wide { g.o * plan.cols_max } else { 0 },
            if want_dx { k * plan.cols_max } else { 0 },
            plan.padded_len(g),
            if want_dx { plan.padded_len(g) } else { 0 },
        ]
    };
    let scratch_len = lens.iter().sum();
    ws.prepare(scratch_len);
    let Conv2dWorkspace {
        scratch,
        dw_parts,
        db_parts,
        dw_sum,
    } = ws;
    dw_parts.resize(n * k * g.o, 0.0);
    db_parts.resize(n * g.o, 0.0);
    let scratch = &scratch[..];
    dx_slots
        .par_iter_mut()
        .zip(x.as_slice().expect("standard").par_chunks(xlen))
        .zip(dout.as_slice().expect("standard").par_chunks(g.o * p))
        .zip(dw_parts[..n * k * g.o].par_chunks_mut(k * g.o))
        .zip(db_parts[..n * g.o].par_chunks_mut(g.o))
        .for_each(|((((dx_n, x_n), d_n), dwt_n), db_n)| {
            // dbias_n[o] = Σ_{i,j} dout_n[o, i, j]
            for (b, row) in db_n.iter_mut().zip(d_n.chunks_exact(p)) {
                *b = lane_sum(row);
            }
            if pointwise {
                // forward: out_n = W · x_n  ⇒  dWᵀ_n = x_n · dout_nᵀ,  dx_n = Wᵀ · dout_n
                let xm = ArrayView2::from_shape((k, p), x_n).expect("(C, P)");
                let dm = ArrayView2::from_shape((g.o, p), d_n).expect("(O, P)");
                let dwt = ArrayViewMut2::from_shape((k, g.o), dwt_n).expect("(C, O)");
                gemm_into(xm, dm.t(), dwt, false, threads);
                if want_dx {
                    let dxm = ArrayViewMut2::from_shape((k, p), &mut dx_n[..]).expect("(C, P)");
                    gemm_into(wmat.t(), dm, dxm, false, threads);
                }
                return;
            }
            with_scratch(scratch, scratch_len, |buf| {
                let [cols, wide_d, dcols, xp, dxp] = carve(buf, lens);
                let src: &[f32] = if plan.padded {
                    pad_into(x_n, g, &plan, xp);
                    xp
                } else {
                    x_n
                };
                if plan.padded && want_dx {
                    dxp.fill(0.0);
                }
                let dmat = ArrayView2::from_shape((g.o, p), d_n).expect("(O, P)");
                let mut dwt = ArrayViewMut2::from_shape((k, g.o), dwt_n).expect("(K, O)");
                for (b, (i0, i1)) in plan.bands().enumerate() {
                    let len = plan.band_cols(i0, i1);
                    let cols = &mut cols[..k * len];
                    let d_b = if plan.wide {
                        unfold_wide(src, g, &plan, i0, i1, cols);
                        // wide_d[o, (i − i0)·Wp + j] = dout_n[o, i, j], zeros in the junk columns
                        let wd = &mut wide_d[..g.o * len];
                        for (o, wrow) in wd.chunks_exact_mut(len).enumerate() {
                            let drows = d_n[o * p + i0 * ow..][..(i1 - i0) * ow].chunks_exact(ow);
                            for (dst, drow) in wrow.chunks_mut(plan.wp).zip(drows) {
                                dst[..ow].copy_from_slice(drow);
                                dst[ow..].fill(0.0);
                            }
                        }
                        ArrayView2::from_shape((g.o, len), &wd[..]).expect("(O, L)")
                    } else {
                        unfold_rows(x_n, g, &plan, i0, i1, cols);
                        dmat.slice_move(ndarray::s![.., i0 * ow..i1 * ow])
                    };
                    let cmat = ArrayView2::from_shape((k, len), &cols[..]).expect("(K, L)");
                    // dWᵀ_n (+)= cols_band · dout_bandᵀ   (the first band overwrites)
                    gemm_into(cmat, d_b.t(), dwt.view_mut(), b > 0, threads);
                    if want_dx {
                        // dcols_band = Wᵀ · dout_band, folded back into dx_n
                        let dc = &mut dcols[..k * len];
                        let dcm = ArrayViewMut2::from_shape((k, len), &mut dc[..]).expect("(K, L)");
                        gemm_into(wmat.t(), d_b, dcm, false, threads);
                        match (plan.wide, plan.padded) {
                            (true, true) => fold_wide(dc, g, &plan, i0, i1, dxp),
                            (true, false) => fold_wide(dc, g, &plan, i0, i1, dx_n),
                            (false, _) => fold_rows(dc, g, &plan, i0, i1, dx_n),
                        }
                    }
                }
                if plan.padded && want_dx {
                    crop_add(dxp, g, &plan, dx_n);
                }
            })
        });

    // dWᵀ[kk, o] = Σ_n dWᵀ_n[kk, o]: every element is summed over the images in image order
    // (the elements are split over threads, which changes no element's order).
    let parts = &dw_parts[..n * k * g.o];
    let chunk = 4096;
    dw_sum.clear();
    dw_sum.resize(k * g.o, 0.0);
    dw_sum
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(ci, acc)| {
            for part in parts.chunks_exact(k * g.o) {
                let part = &part[ci * chunk..][..acc.len()];
                acc.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
            }
        });
    let sum = ArrayView4::from_shape((g.c, g.kh, g.kw, g.o), &dw_sum[..])
        .expect("(C, kh, kw, O)")
        .permuted_axes([3, 0, 1, 2]);
    dw += &sum;
    if let Some(mut db) = dbias {
        for part in db_parts[..n * g.o].chunks_exact(g.o) {
            db.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
        }
    }
    want_dx.then_some(dx)
}

/// A grouped convolution (`1 < G`, not depthwise): each group is a dense convolution of its own
/// input channels into its own output channels, run one after the other on the shared kernel.
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (O, C/G, kh, kw)`, `bias: (O)` → `(N, O, OH, OW)`.
fn grouped_forward(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
) -> Array4<f32> {
    let (oh, ow) = g.out_hw();
    let (cg, og) = g.group_channels();
    let sub = group_geom(g);
    let mut out = Array4::<f32>::zeros((x.dim().0, g.o, oh, ow));
    for gi in 0..g.groups {
        // out[:, group gi] = conv(x[:, group gi], w[group gi]) + bias[group gi]
        let (ci, oi) = (gi * cg..(gi + 1) * cg, gi * og..(gi + 1) * og);
        let xg = x.slice(s![.., ci, .., ..]);
        let wg = w.slice(s![oi.clone(), .., .., ..]);
        let bg = bias.as_ref().map(|b| b.slice(s![oi.clone()]));
        let yg = conv2d_forward(xg, wg, bg, &sub, ws);
        out.slice_mut(s![.., oi, .., ..]).assign(&yg);
    }
    out
}

/// The backward of [`grouped_forward`]: each group's gradients from its own slices (the input
/// gradient of a group lands in its own input channels only).
#[allow(clippy::too_many_arguments)]
fn grouped_backward(
    dout: ArrayView4<f32>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    mut dw: ArrayViewMut4<f32>,
    mut dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    let (cg, og) = g.group_channels();
    let sub = group_geom(g);
    let mut dx = want_dx.then(|| Array4::<f32>::zeros(x.raw_dim()));
    for gi in 0..g.groups {
        let (ci, oi) = (gi * cg..(gi + 1) * cg, gi * og..(gi + 1) * og);
        let dxg = conv2d_backward(
            dout.slice(s![.., oi.clone(), .., ..]),
            x.slice(s![.., ci.clone(), .., ..]),
            w.slice(s![oi.clone(), .., .., ..]),
            &sub,
            ws,
            dw.slice_mut(s![oi.clone(), .., .., ..]),
            dbias.as_mut().map(|b| b.slice_mut(s![oi])),
            want_dx,
        );
        if let (Some(dx), Some(dxg)) = (dx.as_mut(), dxg) {
            dx.slice_mut(s![.., ci, .., ..]).assign(&dxg);
        }
    }
    dx
}
