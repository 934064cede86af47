//! The backward of the fused `Conv2d → ReLU → MaxPool2d(2)` by the pooled gradient's nonzeros.
//!
//! After a 2×2 max pool, at most one of every four convolution outputs gets a gradient (the
//! window's maximum, and only where the ReLU passed), so the dense products of
//! [`super::conv2d_backward`] spend three quarters or more of their multiplications on zeros.
//! Here every passing window `(o, p, q)` with gradient `g` and maximum at `(i, j)` adds its
//! share directly, with the image and the weights laid out channels-last so that each kernel
//! row is one contiguous run of `kw·C` values:
//!
//! ```text
//! dW[o, u, v, c] += g · x[c, i + u, j + v]          (x padded as in the forward)
//! dx[c, i + u, j + v] += g · W[o, c, u, v]          (then cropped to the unpadded input)
//! db[o] += g
//! ```
//!
//! The terms are the dense products' nonzero terms, summed in another order (output channel,
//! then window row-major, then kernel row), so the gradients equal the dense backward's within
//! float rounding rather than bit for bit. Each image runs as one task in that fixed order and
//! the images' weight gradients are summed in image order, so the result does not depend on the
//! thread count; the multiply and the add are separate operations, so the AVX-512, AVX2 and
//! baseline copies give the same bits.

use super::pooled::{window_offset, PASS};
use super::*;
use crate::ops::gemv::axpy_body as axpy;
use crate::ops::wide::wide_loop;

/// Whether [`backward`] takes geometry `g` (already one [`super::supports_relu_pool`] takes):
/// no dilation and at least 16 input channels, so that a kernel row's run (`kw·C` values) is
/// long enough for whole vectors. Narrower inputs (an RGB first layer) keep the dense products.
pub(super) fn applies(g: &Conv2dGeom) -> bool {
    (g.dh, g.dw) == (1, 1) && g.c >= 16
}

/// Image `x_n: (C, H, W)` laid out channels-last with the padding: `(Hp, Wp, C)`.
fn channels_last_padded(x_n: &[f32], g: &Conv2dGeom, out: &mut [f32]) {
    let (hp, wp) = (g.h + g.ph + g.ph_end, g.w + g.pw + g.pw_end);
    debug_assert_eq!(out.len(), hp * wp * g.c);
    out.fill(0.0);
    for (c, plane) in x_n.chunks_exact(g.h * g.w).enumerate() {
        for (h, row) in plane.chunks_exact(g.w).enumerate() {
            let base = ((h + g.ph) * wp + g.pw) * g.c + c;
            for (w, &v) in row.iter().enumerate() {
                out[base + w * g.c] = v;
            }
        }
    }
}

/// The backward of `conv2d_relu_pool_forward` by the nonzeros (module docs): accumulates
/// (`+=`) into `dw` and `dbias`, and returns `dx` when `want_dx`. `per_image[n]` is image `n`'s
/// pooled gradient and codes, both `(O, PH, PW)`.
///
/// # Panics
/// When the shapes do not match `g` or [`applies`] is false.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    per_image: Vec<(&[f32], &[u8])>,
    (ph, pw): (usize, usize),
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    mut dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    assert!(applies(g), "conv2d + relu + pool sparse backward: {g:?}");
    let n = check_shapes(&x, &w, g);
    let dbias = check_grads(g, &dw, dbias);
    // the caller builds one entry per image of x
    debug_assert_eq!(per_image.len(), n);
    let (hp, wp) = (g.h + g.ph + g.ph_end, g.w + g.pw + g.pw_end);
    let (c, kh, kw) = (g.c, g.kh, g.kw);
    let run = kw * c;
    let k = kh * run;
    let mut dx = Array4::<f32>::zeros((if want_dx { n } else { 0 }, c, g.h, g.w));
    if n == 0 || g.o == 0 || k == 0 {
        return want_dx.then_some(dx);
    }
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard");
    // the weights channels-last: wt[o][(u·kw + v)·C + c] = w[o, c, u, v]
    let w = w.as_standard_layout();
    let w = w.as_slice().expect("standard");
    let mut wt = vec![0.0f32; g.o * k];
    for (dst, src) in wt.chunks_exact_mut(k).zip(w.chunks_exact(k)) {
        for (ci, plane) in src.chunks_exact(kh * kw).enumerate() {
            for (uv, &v) in plane.iter().enumerate() {
                dst[uv * c + ci] = v;
            }
        }
    }
    let xlen = c * g.h * g.w;
    let mut dx_slots: Vec<&mut [f32]> = if want_dx {
        dx.as_slice_mut().expect("fresh").chunks_mut(xlen).collect()
    } else {
        (0..n).map(|_| &mut [][..]).collect()
    };
    let plane = ph * pw;
    // scratch per image: the padded image channels-last, and its gradient
    let padded = hp * wp * c;
    let lens = [padded, if want_dx { padded } else { 0 }];
    let scratch_len = lens.iter().sum();
    ws.prepare(scratch_len);
    let Conv2dWorkspace {
        scratch,
        dw_parts,
        db_parts,
        dw_sum,
    } = ws;
    let scratch = &scratch[..];
    // per image: dW in (O, kh, kw, C) and db in (O) (every value is overwritten)
    dw_parts.resize(n * g.o * k, 0.0);
    db_parts.resize(n * g.o, 0.0);
    let (dw_parts, db_parts) = (&mut dw_parts[..n * g.o * k], &mut db_parts[..n * g.o]);
    dx_slots
        .par_iter_mut()
        .zip(x.par_chunks(xlen))
        .zip(per_image.par_iter())
        .zip(dw_parts.par_chunks_mut(g.o * k))
        .zip(db_parts.par_chunks_mut(g.o))
        .for_each(|((((dx_n, x_n), &(d_n, codes_n)), dw_n), db_n)| {
            with_scratch(scratch, scratch_len, |buf| {
                let [xt, dxt] = carve(buf, lens);
                channels_last_padded(x_n, g, xt);
                dxt.fill(0.0);
                wide_loop!({
                    for o in 0..g.o {
                        let d_o = &d_n[o * plane..][..plane];
                        let c_o = &codes_n[o * plane..][..plane];
                        let dw_o = &mut dw_n[o * k..][..k];
                        dw_o.fill(0.0);
                        let wt_o = &wt[o * k..][..k];
                        let mut db = 0.0f32;
                        for (at, (&gv, &code)) in d_o.iter().zip(c_o).enumerate() {
                            if code & PASS == 0 {
                                continue;
                            }
                            let (p, q) = (at / pw, at % pw);
                            let (a, b) = window_offset(code);
                            let (i, j) = (2 * p + a, 2 * q + b);
                            db += gv;
                            for u in 0..kh {
                                let start = ((i + u) * wp + j) * c;
                                axpy(gv, &xt[start..][..run], &mut dw_o[u * run..][..run]);
                                if want_dx {
                                    axpy(gv, &wt_o[u * run..][..run], &mut dxt[start..][..run]);
                                }
                            }
                        }
                        db_n[o] = db;
                    }
                });
                if want_dx {
                    // crop and back to channels-first
                    for (ci, plane) in dx_n.chunks_exact_mut(g.h * g.w).enumerate() {
                        for (h, row) in plane.chunks_exact_mut(g.w).enumerate() {
                            let base = ((h + g.ph) * wp + g.pw) * c + ci;
                            for (wi, v) in row.iter_mut().enumerate() {
                                *v = dxt[base + wi * c];
                            }
                        }
                    }
                }
            })
        });
    // dW[o, c, u, v] += Σ_n dW_n[o, u, v, c], summed in image order
    sum_image_parts(dw_parts, g.o * k, dw_sum);
    let sum = ArrayView4::from_shape((g.o, kh, kw, c), &dw_sum[..])
        .expect("(O, kh, kw, C)")
        .permuted_axes([0, 3, 1, 2]);
    dw += &sum;
    if let Some(mut db) = dbias {
        add_image_parts(db_parts, &mut db);
    }
    want_dx.then_some(dx)
}
