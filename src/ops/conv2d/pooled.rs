//! Convolution, ReLU and a 2×2 max pool in one pass (`Conv2d → ReLU → MaxPool2d(2)`, the seed
//! CNN's blocks), forward and backward.
//!
//! ```text
//! y[n,o,i,j]   = relu(bias[o] + Σ_{c,u,v} w[o,c,u,v] · xpad[n, c, i + u·dh, j + v·dw])
//! out[n,o,p,q] = max_{a,b ∈ {0,1}} y[n, o, 2p + a, 2q + b]          (floor mode: an odd last row
//!                                                                   or column is dropped)
//! ```
//!
//! The forward runs the wide im2col product of [`conv2d_forward`] band by band and pools each
//! band while it is in cache, so the full-size activation `y` is never written: only the pooled
//! output and, for training, one byte per pooled value (`code`: the window position `2a + b` of
//! the maximum, plus [`PASS`] when the ReLU input there was `> 0`). The maxima are found exactly
//! as `MaxPool2d` finds them (row-major scan, first maximum wins, NaN wins) on exactly the values
//! the unfused `Conv2d` and `ReLU` compute, so the result is bit-identical to the three layers
//! (the inference forward of larger 3×3 convolutions instead runs by Winograd, `winograd.rs`).
//!
//! The backward with at least 16 input channels runs by the pooled gradient's nonzeros
//! (`pooled_sparse.rs`: 3/4 or more of the dense products' terms are zeros); otherwise it
//! expands `dout` into the convolution's output gradient and runs the products of
//! [`conv2d_backward`]:
//!
//! ```text
//! forward: out = max of the window of relu(z)  ⇒  dz[2p+a, 2q+b] = dout[p, q] · [2a+b = argmax] · [z > 0]
//! ```

use super::*;
use crate::ops::activation::relu;
use crate::ops::pool::fold_max;

/// Bit of a code: the gradient passes (the ReLU input at the window's maximum was `> 0`).
pub(super) const PASS: u8 = 4;

/// The position `(a, b)` in its 2×2 window of the maximum a code names (row `a`, column `b`).
#[inline(always)]
pub(super) fn window_offset(code: u8) -> (usize, usize) {
    (usize::from(code >> 1 & 1), usize::from(code & 1))
}

/// Whether [`conv2d_relu_pool_forward`] takes geometry `g`: a dense (`groups = 1`) stride-1
/// convolution that is not 1×1-unpadded, with an output of at least 2×2.
pub fn supports_relu_pool(g: &Conv2dGeom) -> bool {
    g.groups == 1
        && (g.sh, g.sw) == (1, 1)
        && !g.is_pointwise()
        && g.try_out_hw().is_some_and(|(oh, ow)| oh >= 2 && ow >= 2)
}

/// Convolution + ReLU + 2×2 stride-2 max pool (floor mode) in one pass (module docs). With
/// `codes`, it is resized to the output's length and receives each pooled value's argmax code for
/// [`conv2d_relu_pool_backward`] (training); without, nothing else is kept (inference), and a
/// 3×3 convolution with at least 16 input channels and 16 windows per image runs by Winograd
/// F(2×2, 3×3) (2.25× fewer multiplications; a few ulps from im2col, so not bit-identical to
/// the training forward).
///
/// Images run in parallel (serial GEMM each; one image uses the pool-parallel GEMM), with the
/// scratch of `ws`; every value is computed by one task in a fixed order, so the result does not
/// depend on the thread count.
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (O, C, kh, kw)`, `bias: (O)` → `(N, O, ⌊OH/2⌋, ⌊OW/2⌋)`, `codes: (N, O,
/// ⌊OH/2⌋, ⌊OW/2⌋)` flattened.
///
/// # Panics
/// When the shapes do not match `g` or [`supports_relu_pool`] is false.
pub fn conv2d_relu_pool_forward(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    codes: Option<&mut Vec<u8>>,
) -> Array4<f32> {
    let n = check_shapes(&x, &w, g);
    assert!(
        supports_relu_pool(g),
        "conv2d + relu + pool: unsupported geometry {g:?}"
    );
    if let Some(b) = &bias {
        assert_eq!(b.len(), g.o, "conv2d: bias does not match the geometry");
    }
    let mut plan = Plan::new(g);
    if plan.rows < plan.oh {
        // bands of whole window rows
        plan.rows = (plan.rows & !1).max(2);
        plan.cols_max = plan.band_cols(0, plan.rows);
    }
    let (k, wp) = (plan.k, plan.wp);
    let (ph, pw) = (plan.oh / 2, plan.ow / 2);
    let plane = g.o * ph * pw;
    let mut out = Array4::<f32>::zeros((n, g.o, ph, pw));
    let inference = codes.is_none();
    let mut codes_slots: Vec<&mut [u8]> = match codes {
        Some(c) => {
            c.resize(n * plane, 0);
            c.chunks_mut(plane).collect()
        }
        None => (0..n).map(|_| &mut [][..]).collect(),
    };
    if n == 0 {
        return out;
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let wmat = ArrayView2::from_shape((g.o, k), w.as_slice().expect("standard")).expect("(O, K)");
    let bias = bias.map(|b| b.to_vec());
    let bias = bias.as_deref();
    let threads = threads_for(n);
    if inference && super::winograd::applies(g) {
        let (x, w) = (
            x.as_slice().expect("standard"),
            w.as_slice().expect("standard"),
        );
        let out_s = out.as_slice_mut().expect("fresh");
        super::winograd::relu_pool_forward(x, w, bias, g, &plan, ws, out_s, threads);
        return out;
    }
    // scratch: patches (K, L), wide product (O, L), padded image
    let lens = [k * plan.cols_max, g.o * plan.cols_max, plan.padded_len(g)];
    let scratch_len = lens.iter().sum();
    ws.prepare(scratch_len);
    let scratch = &ws.scratch[..];
    out.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(plane)
        .zip(codes_slots.par_iter_mut())
        .zip(x.as_slice().expect("standard").par_chunks(g.c * g.h * g.w))
        .for_each(|((out_n, codes_n), x_n)| {
            with_scratch(scratch, scratch_len, |buf| {
                let [cols, wide_out, xp] = carve(buf, lens);
                let src = padded_source(x_n, g, &plan, xp);
                for (i0, i1) in plan.bands() {
                    let len = plan.band_cols(i0, i1);
                    let wo = wide_product(src, g, &plan, (i0, i1), cols, wide_out, wmat, threads);
                    for (o, wrow) in wo.chunks_exact(len).enumerate() {
                        let b = bias.map_or(0.0, |b| b[o]);
                        // bands start on even rows: window row p covers band rows 2p − i0, +1
                        for p in i0 / 2..i1 / 2 {
                            let r = 2 * p - i0;
                            let r0 = &wrow[r * wp..][..2 * pw];
                            let r1 = &wrow[(r + 1) * wp..][..2 * pw];
                            let at = (o * ph + p) * pw;
                            let orow = &mut out_n[at..at + pw];
                            let crow = codes_n.get_mut(at..at + pw);
                            pool_row(r0, r1, b, orow, crow);
                        }
                    }
                }
            })
        });
    out
}

/// One row of windows: `out[q] = max(relu(z))` over the window `z = (r0[2q], r0[2q+1], r1[2q],
/// r1[2q+1]) + b` (this scan order), and its code when `codes` is given.
#[inline(always)]
fn pool_row(r0: &[f32], r1: &[f32], b: f32, out: &mut [f32], codes: Option<&mut [u8]>) {
    let window = |q: usize| {
        let z = [
            r0[2 * q] + b,
            r0[2 * q + 1] + b,
            r1[2 * q] + b,
            r1[2 * q + 1] + b,
        ];
        let (mut best, mut at) = (f32::NEG_INFINITY, 0u32);
        for (i, &v) in (0u32..).zip(&z) {
            fold_max(relu(v), i, &mut best, &mut at);
        }
        // relu(z[at]) = best, so the ReLU passed there exactly when best > 0 (NaN: neither)
        (best, at as u8, best > 0.0)
    };
    match codes {
        Some(codes) => {
            for (q, (o, c)) in out.iter_mut().zip(codes).enumerate() {
                let (best, at, pass) = window(q);
                *o = best;
                *c = at | if pass { PASS } else { 0 };
            }
        }
        None => {
            for (q, o) in out.iter_mut().enumerate() {
                *o = window(q).0;
            }
        }
    }
}

/// Backward of [`conv2d_relu_pool_forward`]: accumulates (`+=`) into `dw` and `dbias`, and
/// returns `dx` when `want_dx`. `codes` are the forward's; `x` is its input. Below 16 input
/// channels (or with dilation) bit-identical to the backward of `MaxPool2d`, `ReLU` and
/// [`conv2d_backward`] in turn; from 16 on it adds only the nonzero terms, in another order, so
/// it equals them within float rounding (deterministic, and the same on any thread count).
///
/// # Shapes
/// `dout: (N, O, ⌊OH/2⌋, ⌊OW/2⌋)`, `codes`: as many, `x: (N, C, H, W)`, `w, dw: (O, C, kh, kw)`,
/// `dbias: (O)` → `dx: (N, C, H, W)`, or `None` without `want_dx`.
///
/// # Panics
/// When the shapes do not match `g` or [`supports_relu_pool`] is false.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_pool_backward(
    dout: ArrayView4<f32>,
    codes: &[u8],
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    assert!(
        supports_relu_pool(g),
        "conv2d + relu + pool: unsupported geometry {g:?}"
    );
    let n = x.dim().0;
    let (oh, ow) = g.out_hw();
    let (ph, pw) = (oh / 2, ow / 2);
    assert_eq!(
        dout.dim(),
        (n, g.o, ph, pw),
        "conv2d + relu + pool backward: dout does not match the geometry {g:?}"
    );
    let len = g.o * ph * pw;
    assert_eq!(codes.len(), n * len, "conv2d + relu + pool backward: codes");
    let dout = dout.as_standard_layout();
    let d = dout.as_slice().expect("standard");
    let per_image = (0..n)
        .map(|i| (&d[i * len..][..len], &codes[i * len..][..len]))
        .collect();
    if super::pooled_sparse::applies(g) {
        return super::pooled_sparse::backward(
            per_image,
            (ph, pw),
            x,
            w,
            g,
            ws,
            dw,
            dbias,
            want_dx,
        );
    }
    backward_dense(per_image, Some((ph, pw)), x, w, g, ws, dw, dbias, want_dx)
}

/// `dense: (O, OH, OW)` = the convolution's output gradient for the pooled gradient `d` and the
/// `codes` of one image (both `(O, PH, PW)`): `d` at each window's maximum where the ReLU passed,
/// zeros elsewhere (added to zeros, exactly as the unfused pool backward scatters).
pub(super) fn expand_pooled(
    d: &[f32],
    codes: &[u8],
    o: usize,
    (oh, ow): (usize, usize),
    (ph, pw): (usize, usize),
    dense: &mut [f32],
) {
    dense.fill(0.0);
    let planes = d
        .chunks_exact(ph * pw)
        .zip(codes.chunks_exact(ph * pw))
        .zip(dense.chunks_exact_mut(oh * ow))
        .take(o);
    for ((dplane, cplane), out) in planes {
        let rows = dplane.chunks_exact(pw).zip(cplane.chunks_exact(pw));
        for (p, (drow, crow)) in rows.enumerate() {
            for (q, (&dv, &c)) in drow.iter().zip(crow).enumerate() {
                if c & PASS != 0 {
                    let (a, b) = window_offset(c);
                    out[(2 * p + a) * ow + 2 * q + b] += dv;
                }
            }
        }
    }
}
