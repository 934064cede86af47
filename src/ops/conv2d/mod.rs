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
    Axis,
};
use rayon::prelude::*;
use std::sync::Mutex;

mod geom;
mod grouped;
mod pooled;
mod pooled_sparse;
mod unfold;
mod winograd;
mod workspace;

pub use geom::{conv_out_len, tf_same_pads, Conv2dGeom, TILE_FLOATS};
use grouped::*;
use pooled::expand_pooled;
pub use pooled::{conv2d_relu_pool_backward, conv2d_relu_pool_forward, supports_relu_pool};
use unfold::*;
pub use workspace::Conv2dWorkspace;
use workspace::*;

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
    conv2d_forward_fused(x, w, bias, g, ws, Epilogue::default())
}

/// Output columns per task of a 1×1 convolution: each band's product and epilogue run while
/// the band is in cache, and one image splits into several tasks.
const POINTWISE_BAND: usize = 1024;

/// What a fused forward applies to every output after the product, while it is in cache:
/// `out[n, o, …] = clamp(scale[o]·(W ⋆ x)[n, o, …] + bias[o], lo, hi)`.
///
/// With a BatchNorm's `scale = γ/√(σ² + eps)` and `bias = β − μ·scale` (running statistics),
/// `conv → BN → ReLU6` of an evaluation forward is one call with `clamp = Some((0.0, 6.0))`.
/// The default is the identity (no scale, no clamp).
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Per output channel factor `(O)`, or `None` for 1.
    pub scale: Option<&'a [f32]>,
    /// Bounds `(lo, hi)` every output is clamped to (`lo ≤ hi`), or `None`.
    pub clamp: Option<(f32, f32)>,
}

impl Epilogue<'_> {
    /// Applies the epilogue to the rows of one image's output `(O, P)` whose product has no
    /// bias in it yet.
    fn apply(&self, mut out: ArrayViewMut2<f32>, bias: Option<&[f32]>) {
        for (o, mut row) in out.rows_mut().into_iter().enumerate() {
            let s = self.scale.map_or(1.0, |s| s[o]);
            let b = bias.map_or(0.0, |b| b[o]);
            match self.clamp {
                Some((lo, hi)) => row.mapv_inplace(|v| (v * s + b).clamp(lo, hi)),
                None => row.mapv_inplace(|v| v * s + b),
            }
        }
    }
}

/// [`conv2d_forward`] with an [`Epilogue`] (a per-channel scale before the bias, a clamp after
/// it) applied to each part of the output while it is in cache.
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (O, C, kh, kw)`, `bias: (O)`, `epilogue.scale: (O)` →
/// `(N, O, OH, OW)`.
///
/// # Panics
/// When the shapes do not match `g` or the kernel does not fit.
pub fn conv2d_forward_fused(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    epilogue: Epilogue<'_>,
) -> Array4<f32> {
    let n = check_shapes(&x, &w, g);
    if let Some(b) = &bias {
        assert_eq!(b.len(), g.o, "conv2d: bias does not match the geometry");
    }
    if g.is_depthwise() {
        let path = super::depthwise::KernelPath::detected();
        return super::depthwise::depthwise_forward_with(x, w, bias, g, epilogue, path);
    }
    if let Some(s) = epilogue.scale {
        assert_eq!(
            s.len(),
            g.o,
            "conv2d: epilogue scale does not match the geometry"
        );
    }
    let fused = epilogue.scale.is_some() || epilogue.clamp.is_some();
    if g.groups > 1 {
        let kernel_bias = if fused { None } else { bias };
        let mut out = grouped_forward(x, w, kernel_bias, g, ws);
        if fused {
            let bias = bias.map(|b| b.to_vec());
            let (o, p) = (g.o, out.dim().2 * out.dim().3);
            out.as_slice_mut()
                .expect("fresh")
                .par_chunks_mut((o * p).max(1))
                .for_each(|img| {
                    let m = ArrayViewMut2::from_shape((o, p), img).expect("(O, P)");
                    epilogue.apply(m, bias.as_deref());
                });
        }
        return out;
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
    // with an epilogue, the bias is added after the scale, not by the product
    let kbias = if fused { None } else { bias };
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
                // 1×1: out_n = W · x_n + bias, the image itself is the patch matrix (C, H·W);
                // large images split into bands of columns (a fixed split, whatever the threads)
                let xm = ArrayView2::from_shape((k, p), x_n).expect("(C, P)");
                let mut om = ArrayViewMut2::from_shape((g.o, p), out_n).expect("(O, P)");
                let band = |mut ob: ArrayViewMut2<f32>, xb: ArrayView2<f32>, threads| {
                    if fused {
                        gemm_into(wmat, xb, ob.view_mut(), false, threads);
                        epilogue.apply(ob, bias);
                        return;
                    }
                    if let Some(b) = bias {
                        for (mut row, &bv) in ob.rows_mut().into_iter().zip(b) {
                            row.fill(bv);
                        }
                    }
                    gemm_into(wmat, xb, ob.view_mut(), bias.is_some(), threads);
                };
                if p >= 2 * POINTWISE_BAND {
                    om.axis_chunks_iter_mut(Axis(1), POINTWISE_BAND)
                        .into_par_iter()
                        .zip(xm.axis_chunks_iter(Axis(1), POINTWISE_BAND).into_par_iter())
                        .for_each(|(ob, xb)| band(ob, xb, Threads::Serial));
                } else {
                    band(om, xm, threads);
                }
                return;
            }
            with_scratch(scratch, scratch_len, |buf| {
                let [cols, wide_out, xp] = carve(buf, lens);
                let src = padded_source(x_n, g, &plan, xp);
                for (i0, i1) in plan.bands() {
                    let len = plan.band_cols(i0, i1);
                    let cols = &mut cols[..k * len];

                    if plan.wide {
                        // wide_out = W · cols, then out_n[o, i, :] = wide_out[o, i·Wp ..] + bias[o]
                        let wo =
                            wide_product(src, g, &plan, (i0, i1), cols, wide_out, wmat, threads);
                        for (o, wrow) in wo.chunks_exact(len).enumerate() {
                            let b = kbias.map_or(0.0, |b| b[o]);
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
                        if let Some(b) = kbias {
                            for (mut row, &bv) in ob.rows_mut().into_iter().zip(b) {
                                row.fill(bv);
                            }
                        }
                        let cm = ArrayView2::from_shape((k, len), &cols[..]).expect("(K, L)");
                        gemm_into(wmat, cm, ob, kbias.is_some(), threads);
                    }
                }
                if fused {
                    let m = ArrayViewMut2::from_shape((g.o, p), &mut out_n[..]).expect("(O, P)");
                    epilogue.apply(m, bias);
                }
            })
        });
    out
}

/// The wide product of band `[i0, i1)`: unfolds the (padded) image `src` into `cols` and
/// returns `wide_out[..O·L] = W · cols`, `(O, L)` with `L = plan.band_cols(i0, i1)`.
#[allow(clippy::too_many_arguments)]
fn wide_product<'a>(
    src: &[f32],
    g: &Conv2dGeom,
    plan: &Plan,
    (i0, i1): (usize, usize),
    cols: &mut [f32],
    wide_out: &'a mut [f32],
    wmat: ArrayView2<f32>,
    threads: Threads,
) -> &'a [f32] {
    let (k, len) = (plan.k, plan.band_cols(i0, i1));
    let cols = &mut cols[..k * len];
    unfold_wide(src, g, plan, i0, i1, cols);
    let wo = &mut wide_out[..g.o * len];
    let wm = ArrayViewMut2::from_shape((g.o, len), &mut wo[..]).expect("(O, L)");
    let cm = ArrayView2::from_shape((k, len), &cols[..]).expect("(K, L)");
    gemm_into(wmat, cm, wm, false, threads);
    wo
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
    dw: ArrayViewMut4<f32>,
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
    if g.is_depthwise() {
        let dbias = check_grads(g, &dw, dbias);
        return super::depthwise::depthwise_backward(dout, x, w, g, dw, dbias, want_dx);
    }
    if g.groups > 1 {
        let dbias = check_grads(g, &dw, dbias);
        return grouped_backward(dout, x, w, g, ws, dw, dbias, want_dx);
    }
    let dout = dout.as_standard_layout();
    let d = dout.as_slice().expect("standard");
    let len = g.o * oh * ow;
    let per_image = (0..n).map(|i| (&d[i * len..][..len], &[][..])).collect();
    backward_dense(per_image, None, x, w, g, ws, dw, dbias, want_dx)
}

/// Checks the gradient buffers against the geometry.
fn check_grads<'a>(
    g: &Conv2dGeom,
    dw: &ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<'a, f32>>,
) -> Option<ArrayViewMut1<'a, f32>> {
    assert_eq!(
        dw.dim(),
        (g.o, g.c / g.groups, g.kh, g.kw),
        "conv2d backward: dw does not match the geometry {g:?}"
    );
    if let Some(db) = &dbias {
        assert_eq!(db.len(), g.o, "conv2d backward: dbias does not match");
    }
    dbias
}

/// `sum[t] = Σ_n parts[n·L + t]`, `sum` (resized to `len` = L) from `parts` = the images'
/// `len`-long partials one after the other: every element is summed over the images in image
/// order (the elements are split over threads, which changes no element's order).
pub(super) fn sum_image_parts(parts: &[f32], len: usize, sum: &mut Vec<f32>) {
    let chunk = 4096;
    sum.clear();
    sum.resize(len, 0.0);
    sum.par_chunks_mut(chunk).enumerate().for_each(|(ci, acc)| {
        for part in parts.chunks_exact(len) {
            let part = &part[ci * chunk..][..acc.len()];
            acc.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
        }
    });
}

/// `acc[t] += parts[n·L + t]` for each image `n` in turn (`L = acc.len()`): the per-image bias
/// gradients added in image order.
pub(super) fn add_image_parts(parts: &[f32], acc: &mut ArrayViewMut1<f32>) {
    for part in parts.chunks_exact(acc.len()) {
        acc.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
    }
}

/// The backward of a dense (`groups = 1`) convolution. `per_image[n]` is image `n`'s output
/// gradient: `(dout_n, [])` with `dout_n: (O, OH, OW)`, or, after a fused ReLU + 2×2 max pool
/// (`pooled = Some((PH, PW))`), `(dpool_n, codes_n)` with both `(O, PH, PW)`, expanded into the
/// convolution's output gradient in a scratch buffer before the same products.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_dense(
    per_image: Vec<(&[f32], &[u8])>,
    pooled: Option<(usize, usize)>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    mut dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    let n = check_shapes(&x, &w, g);
    let dbias = check_grads(g, &dw, dbias);
    assert_eq!(
        per_image.len(),
        n,
        "conv2d backward: one gradient per image"
    );
    let (oh, ow) = g.out_hw();
    let plan = Plan::new(g);
    let k = plan.k;
    let p = oh * ow;
    let mut dx = Array4::<f32>::zeros((if want_dx { n } else { 0 }, g.c, g.h, g.w));
    if n == 0 || p == 0 || g.o == 0 || k == 0 {
        return want_dx.then_some(dx);
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
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
    // scratch: patches (K, L), wide dout (O, L), dcols (K, L), padded image, padded dx, and
    // the expanded output gradient (O, OH·OW) after a fused pool
    let expanded = if pooled.is_some() { g.o * p } else { 0 };
    let lens = if pointwise {
        [0, 0, 0, 0, 0, expanded]
    } else {
        [
            k * plan.cols_max,
            if plan.wide { g.o * plan.cols_max } else { 0 },
            if want_dx { k * plan.cols_max } else { 0 },
            plan.padded_len(g),
            if want_dx { plan.padded_len(g) } else { 0 },
            expanded,
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
        .zip(per_image.par_iter())
        .zip(dw_parts[..n * k * g.o].par_chunks_mut(k * g.o))
        .zip(db_parts[..n * g.o].par_chunks_mut(g.o))
        .for_each(|((((dx_n, x_n), &(d_n, codes_n)), dwt_n), db_n)| {
            with_scratch(scratch, scratch_len, |buf| {
                let [cols, wide_d, dcols, xp, dxp, dense] = carve(buf, lens);
                let d_n: &[f32] = match pooled {
                    Some((ph, pw)) => {
                        expand_pooled(d_n, codes_n, g.o, (oh, ow), (ph, pw), dense);
                        dense
                    }
                    None => d_n,
                };
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
                let src = padded_source(x_n, g, &plan, xp);
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

    // dWᵀ[kk, o] = Σ_n dWᵀ_n[kk, o], in image order
    sum_image_parts(&dw_parts[..n * k * g.o], k * g.o, dw_sum);
    let sum = ArrayView4::from_shape((g.c, g.kh, g.kw, g.o), &dw_sum[..])
        .expect("(C, kh, kw, O)")
        .permuted_axes([3, 0, 1, 2]);
    dw += &sum;
    if let Some(mut db) = dbias {
        add_image_parts(&db_parts[..n * g.o], &mut db);
    }
    want_dx.then_some(dx)
}
