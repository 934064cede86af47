//! 2-D convolution (cross-correlation, NCHW) via im2col + SGEMM, forward and backward.
//!
//! Per image, the input patches are unfolded into `cols: (C·kh·kw, OH·OW)` and the convolution is
//! one product `out_n = W·cols + bias` with `W: (O, C·kh·kw)`. Images run in parallel with rayon,
//! each task using a serial GEMM and its own scratch buffer. The weight and bias gradients are
//! computed per image and summed in image order, so every result is bit-identical whatever the
//! thread count.

use super::matmul::{gemm_into, Threads};
use ndarray::{
    Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4,
};
use rayon::prelude::*;

/// The shapes and hyper-parameters of one convolution.
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
    /// Kernel height and width.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Strides (vertical, horizontal).
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero padding (top/bottom, left/right).
    pub ph: usize,
    /// Left/right padding.
    pub pw: usize,
    /// Dilation (vertical, horizontal).
    pub dh: usize,
    /// Horizontal dilation.
    pub dw: usize,
}

/// PyTorch's convolution output length `⌊(size + 2p − d(k−1) − 1)/s⌋ + 1`, or `None` when the
/// dilated kernel does not fit in the padded input (or `k`, `s` or `d` is 0).
pub fn conv_out_len(size: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let span = d * (k - 1) + 1;
    let padded = size + 2 * p;
    (padded >= span).then(|| (padded - span) / s + 1)
}

impl Conv2dGeom {
    /// Output height and width.
    ///
    /// # Panics
    /// When the kernel does not fit (layers check this at build time).
    pub fn out_hw(&self) -> (usize, usize) {
        (
            conv_out_len(self.h, self.kh, self.sh, self.ph, self.dh).expect("kernel fits"),
            conv_out_len(self.w, self.kw, self.sw, self.pw, self.dw).expect("kernel fits"),
        )
    }

    /// Rows of the unfolded patch matrix: `C·kh·kw`.
    pub fn k_len(&self) -> usize {
        self.c * self.kh * self.kw
    }
}

/// Unfolds one image `(C, H, W)` into `cols: (C·kh·kw, OH·OW)` (zeros where the window is in the
/// padding).
fn im2col(x: &[f32], g: &Conv2dGeom, cols: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let p = oh * ow;
    for c in 0..g.c {
        for u in 0..g.kh {
            for v in 0..g.kw {
                let row = &mut cols[((c * g.kh + u) * g.kw + v) * p..][..p];
                for i in 0..oh {
                    let r = (i * g.sh + u * g.dh) as isize - g.ph as isize;
                    let dst = &mut row[i * ow..(i + 1) * ow];
                    if r < 0 || r >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &x[(c * g.h + r as usize) * g.w..][..g.w];
                    for (j, d) in dst.iter_mut().enumerate() {
                        let col = (j * g.sw + v * g.dw) as isize - g.pw as isize;
                        *d = if col >= 0 && (col as usize) < g.w {
                            src[col as usize]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Folds patch gradients back: `dx[c, r, col] += dcols[(c,u,v), (i,j)]` (the adjoint of
/// [`im2col`]).
fn col2im(dcols: &[f32], g: &Conv2dGeom, dx: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    let p = oh * ow;
    for c in 0..g.c {
        for u in 0..g.kh {
            for v in 0..g.kw {
                let row = &dcols[((c * g.kh + u) * g.kw + v) * p..][..p];
                for i in 0..oh {
                    let r = (i * g.sh + u * g.dh) as isize - g.ph as isize;
                    if r < 0 || r >= g.h as isize {
                        continue;
                    }
                    let dst = &mut dx[(c * g.h + r as usize) * g.w..][..g.w];
                    for (j, &d) in row[i * ow..(i + 1) * ow].iter().enumerate() {
                        let col = (j * g.sw + v * g.dw) as isize - g.pw as isize;
                        if col >= 0 && (col as usize) < g.w {
                            dst[col as usize] += d;
                        }
                    }
                }
            }
        }
    }
}

/// The threading of the per-image GEMMs: one image uses the whole pool, a batch parallelises
/// over images.
fn threads_for(n: usize) -> Threads {
    if n == 1 {
        Threads::Pool
    } else {
        Threads::Serial
    }
}

/// Convolution forward.
///
/// ```text
/// out[n,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v] · xpad[n, c, i·sh + u·dh, j·sw + v·dw]
///             = (W · im2col(x_n))[o, i·OW + j] + bias[o]
/// ```
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (O, C, kh, kw)`, `bias: (O)` → `(N, O, OH, OW)`.
pub fn conv2d_forward(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
) -> Array4<f32> {
    let n = x.dim().0;
    assert_eq!(
        x.dim(),
        (n, g.c, g.h, g.w),
        "conv2d: input does not match the geometry"
    );
    assert_eq!(
        w.dim(),
        (g.o, g.c, g.kh, g.kw),
        "conv2d: weight does not match the geometry"
    );
    let (oh, ow) = g.out_hw();
    let p = oh * ow;
    let k = g.k_len();
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let wmat = ArrayView2::from_shape((g.o, k), w.as_slice().expect("standard")).expect("(O, K)");
    let mut out = Array4::<f32>::zeros((n, g.o, oh, ow));
    let threads = threads_for(n);
    out.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut((g.o * p).max(1))
        .zip(
            x.as_slice()
                .expect("standard")
                .par_chunks((g.c * g.h * g.w).max(1)),
        )
        .for_each_init(
            || vec![0.0f32; k * p],
            |cols, (out_n, x_n)| {
                im2col(x_n, g, cols);
                let mut o = ArrayViewMut2::from_shape((g.o, p), out_n).expect("(O, P)");
                if let Some(b) = &bias {
                    for (mut row, &bv) in o.rows_mut().into_iter().zip(b.iter()) {
                        row.fill(bv);
                    }
                }
                let c = ArrayView2::from_shape((k, p), &cols[..]).expect("(K, P)");
                gemm_into(wmat, c, o, bias.is_some(), threads);
            },
        );
    out
}

/// Convolution backward: returns `dx` and accumulates (`+=`) into `dw` and `dbias`.
///
/// ```text
/// forward: out_n = W·cols_n + bias   (cols_n = im2col(x_n))
///   ⇒ dW    += Σ_n dout_n · cols_nᵀ          (per image, then summed in image order)
///   ⇒ dbias += Σ_n Σ_{i,j} dout_n[:, i, j]
///   ⇒ dx_n   = col2im(Wᵀ · dout_n)
/// ```
///
/// # Shapes
/// `dout: (N, O, OH, OW)`, `x: (N, C, H, W)`, `w: (O, C, kh, kw)`, `dw: (O, C, kh, kw)`,
/// `dbias: (O)` → `dx: (N, C, H, W)`, or `None` when `want_dx` is false (the first layer of a
/// model needs no input gradient, which saves the `Wᵀ·dout` product and the fold).
pub fn conv2d_backward(
    dout: ArrayView4<f32>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    mut dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    let n = x.dim().0;
    let (oh, ow) = g.out_hw();
    let p = oh * ow;
    let k = g.k_len();
    assert_eq!(
        dout.dim(),
        (n, g.o, oh, ow),
        "conv2d backward: dout does not match"
    );
    assert_eq!(
        dw.dim(),
        (g.o, g.c, g.kh, g.kw),
        "conv2d backward: dw does not match"
    );
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let dout = dout.as_standard_layout();
    let wmat = ArrayView2::from_shape((g.o, k), w.as_slice().expect("standard")).expect("(O, K)");
    let mut dx = Array4::<f32>::zeros(if want_dx {
        (n, g.c, g.h, g.w)
    } else {
        (n, 0, 0, 0)
    });
    let dx_chunk = if want_dx { (g.c * g.h * g.w).max(1) } else { 1 };
    // Per-image weight-gradient partials (O·K each) and bias partials (O each).
    let mut dw_parts = vec![0.0f32; n * g.o * k];
    let mut db_parts = vec![0.0f32; n * g.o];
    let threads = threads_for(n);
    // Without dx, every image task gets a dummy one-element slot instead of its dx chunk.
    let mut no_dx = vec![0.0f32; if want_dx { 0 } else { n }];
    let dx_slots: Vec<&mut [f32]> = if want_dx {
        dx.as_slice_mut().expect("fresh").chunks_mut(dx_chunk).collect()
    } else {
        no_dx.chunks_mut(1).collect()
    };
    dx_slots
        .into_par_iter()
        .zip(
            x.as_slice()
                .expect("standard")
                .par_chunks((g.c * g.h * g.w).max(1)),
        )
        .zip(
            dout.as_slice()
                .expect("standard")
                .par_chunks((g.o * p).max(1)),
        )
        .zip(dw_parts.par_chunks_mut((g.o * k).max(1)))
        .zip(db_parts.par_chunks_mut(g.o.max(1)))
        .for_each_init(
            || (vec![0.0f32; k * p], vec![0.0f32; k * p]),
            |(cols, dcols), ((((dx_n, x_n), d_n), dw_n), db_n)| {
                im2col(x_n, g, cols);
                let d = ArrayView2::from_shape((g.o, p), d_n).expect("(O, P)");
                let c = ArrayView2::from_shape((k, p), &cols[..]).expect("(K, P)");
                // dW_n = dout_n · cols_nᵀ
                let dwn = ArrayViewMut2::from_shape((g.o, k), dw_n).expect("(O, K)");
                gemm_into(d, c.t(), dwn, false, threads);
                // dbias_n[o] = Σ_p dout_n[o, p]
                for (b, row) in db_n.iter_mut().zip(d.rows()) {
                    *b = row.iter().sum();
                }
                if !want_dx {
                    return;
                }
                // dcols = Wᵀ · dout_n, then fold back into dx_n
                let dc = ArrayViewMut2::from_shape((k, p), &mut dcols[..]).expect("(K, P)");
                gemm_into(wmat.t(), d, dc, false, threads);
                col2im(dcols, g, dx_n);
            },
        );
    let dw_flat = dw.as_slice_mut().expect("dw is contiguous");
    for part in dw_parts.chunks((g.o * k).max(1)) {
        dw_flat.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
    }
    if let Some(mut db) = dbias {
        for part in db_parts.chunks(g.o.max(1)) {
            db.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
        }
    }
    want_dx.then_some(dx)
}
