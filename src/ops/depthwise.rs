//! Depthwise 2-D convolution (`groups = C = O`, weight `[C, 1, kh, kw]`), forward and backward,
//! on direct loops over each output plane.
//!
//! ```text
//! out[n,c,i,j] = bias[c] + Σ_{u,v} w[c,0,u,v] · xpad[n, c, i·sh + u·dh, j·sw + v·dw]
//! ```
//!
//! im2col would unfold `kh·kw` copies of every plane to feed a product with a single row, so
//! the depthwise case runs here instead: per output row `i` and kernel tap `(u, v)` the valid
//! output columns `[j0, j1)` are computed once per call ([`Conv2dGeom`]'s padding arithmetic),
//! and the inner loop is a contiguous `out_row[j0..j1] += w·x_row[first..]` (stride 1, which
//! vectorises) or its strided form. Padding is never materialised.
//!
//! The plane loops are compiled for AVX-512, AVX2+FMA and portable Rust and chosen at run time
//! ([`KernelPath`], [`depthwise_path`]); strided convolutions first split each input row into
//! its column phases so that every tap is a contiguous run.
//!
//! **Parallelism and determinism.** One rayon task per `(image, channel)` plane, each writing
//! only its own output (or input-gradient) plane. The weight and bias gradients are computed
//! per plane and then summed over the images in image order, so results are bit-identical for
//! any thread count.

use super::conv2d::{Conv2dGeom, Epilogue};
use ndarray::{Array4, ArrayView1, ArrayView4, ArrayViewMut1, ArrayViewMut4};
use rayon::prelude::*;

mod planes;
pub use planes::KernelPath;
use planes::{plane_backward, plane_forward, Bwd, Fwd, Phases};

/// Per kernel column `v`: the output columns `[j0, j1)` whose input column lies inside the
/// image, and the input column of `j0`.
fn col_ranges(g: &Conv2dGeom, ow: usize) -> Vec<(usize, usize, usize)> {
    (0..g.kw).map(|v| g.valid_cols(v, ow)).collect()
}

fn check(x: &ArrayView4<f32>, w: &ArrayView4<f32>, g: &Conv2dGeom) {
    assert!(
        g.is_depthwise(),
        "depthwise conv: not a depthwise geometry {g:?}"
    );
    assert_eq!(
        (x.dim().1, x.dim().2, x.dim().3),
        (g.c, g.h, g.w),
        "depthwise conv: input does not match the geometry {g:?}"
    );
    assert_eq!(
        w.dim(),
        (g.c, 1, g.kh, g.kw),
        "depthwise conv: weight does not match the geometry {g:?}"
    );
}

/// Planes per rayon task for planes of `macs` multiply-adds: small planes (7×7, 14×14) are
/// grouped so that a task is worth its scheduling (no result depends on the grouping).
fn planes_per_task(macs: usize) -> usize {
    (16 * 1024 / macs.max(1)).max(1)
}

/// Which build of the depthwise loops runs on this machine: `"avx512"`, `"avx2+fma"` or
/// `"scalar"` (detected once at run time).
pub fn depthwise_path() -> &'static str {
    KernelPath::detected().name()
}

/// Depthwise convolution forward (`groups = C = O`).
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (C, 1, kh, kw)`, `bias: (C)` → `(N, C, OH, OW)`.
///
/// # Panics
/// When the shapes do not match `g` or `g` is not depthwise.
pub fn depthwise_forward(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
) -> Array4<f32> {
    depthwise_forward_with(x, w, bias, g, Epilogue::default(), KernelPath::detected())
}

/// [`depthwise_forward`] with an [`Epilogue`] (`clamp(scale[c]·conv + bias[c])`, applied to each
/// output row while it is in cache) on a chosen build of the loops (tests compare the SIMD builds
/// with [`KernelPath::Scalar`]).
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (C, 1, kh, kw)`, `bias: (C)` → `(N, C, OH, OW)`.
///
/// # Panics
/// When the shapes do not match `g`, `g` is not depthwise, or `path` is not available on this
/// CPU.
pub fn depthwise_forward_with(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
    epilogue: Epilogue<'_>,
    path: KernelPath,
) -> Array4<f32> {
    check(&x, &w, g);
    let n = x.dim().0;
    let (oh, ow) = g.out_hw();
    let mut out = Array4::<f32>::zeros((n, g.c, oh, ow));
    if out.is_empty() {
        return out;
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let wts = w.as_slice().expect("standard");
    let bias: Option<Vec<f32>> = bias.map(|b| b.to_vec());
    let cols = col_ranges(g, ow);
    let phases = Phases::new(g);
    let kk = g.kh * g.kw;
    let tmp_len = if g.sw == 1 { 0 } else { g.h * g.w };
    out.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(oh * ow)
        .zip(x.as_slice().expect("standard").par_chunks(g.h * g.w))
        .enumerate()
        .with_min_len(planes_per_task(oh * ow * kk))
        .for_each_init(
            || vec![0.0f32; tmp_len],
            |tmp, (idx, (o, xp))| {
                let c = idx % g.c;
                let args = Fwd {
                    x: xp,
                    wk: &wts[c * kk..][..kk],
                    bias: bias.as_ref().map_or(0.0, |b| b[c]),
                    scale: epilogue.scale.map(|s| s[c]),
                    clamp: epilogue.clamp,
                    tmp,
                    out: o,
                };
                plane_forward(path, g, &cols, &phases, args);
            },
        );
    out
}

/// Depthwise convolution backward: accumulates (`+=`) into `dw` and `dbias`, and returns `dx`
/// when `want_dx`.
///
/// ```text
/// forward: out[i,j] += w[u,v] · xpad[i·sh + u·dh, j·sw + v·dw]      (per plane n, c)
///   ⇒ dxpad[i·sh + u·dh, j·sw + v·dw] += w[u,v] · dout[i,j]          (padding dropped)
///   ⇒ dw[c,u,v] += Σ_n Σ_{i,j} dout[n,c,i,j] · xpad[n,c, i·sh + u·dh, j·sw + v·dw]
///   ⇒ dbias[c]  += Σ_n Σ_{i,j} dout[n,c,i,j]
/// ```
///
/// # Shapes
/// `dout: (N, C, OH, OW)`, `x: (N, C, H, W)`, `w, dw: (C, 1, kh, kw)`, `dbias: (C)` →
/// `dx: (N, C, H, W)` or `None`.
///
/// # Panics
/// When the shapes do not match `g` or `g` is not depthwise.
pub fn depthwise_backward(
    dout: ArrayView4<f32>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    depthwise_backward_with(dout, x, w, g, dw, dbias, want_dx, KernelPath::detected())
}

/// [`depthwise_backward`] on a chosen build of the loops.
///
/// # Shapes
/// As [`depthwise_backward`].
///
/// # Panics
/// As [`depthwise_backward`], or when `path` is not available on this CPU.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_backward_with(
    dout: ArrayView4<f32>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    mut dw: ArrayViewMut4<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
    path: KernelPath,
) -> Option<Array4<f32>> {
    check(&x, &w, g);
    let n = x.dim().0;
    let (oh, ow) = g.out_hw();
    assert_eq!(
        dout.dim(),
        (n, g.c, oh, ow),
        "depthwise conv backward: dout shape"
    );
    let kk = g.kh * g.kw;
    let planes = n * g.c;
    let mut dx = Array4::<f32>::zeros((if want_dx { n } else { 0 }, g.c, g.h, g.w));
    if planes == 0 || oh * ow == 0 {
        return want_dx.then_some(dx);
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let dout = dout.as_standard_layout();
    let wts = w.as_slice().expect("standard");
    let cols = col_ranges(g, ow);
    // per plane: kh·kw weight-gradient partials, then the bias partial
    let mut parts = vec![0.0f32; planes * (kk + 1)];
    let mut dx_slots: Vec<&mut [f32]> = if want_dx {
        dx.as_slice_mut()
            .expect("fresh")
            .chunks_mut(g.h * g.w)
            .collect()
    } else {
        (0..planes).map(|_| &mut [][..]).collect()
    };
    let phases = Phases::new(g);
    let tmp_len = if g.sw == 1 { 0 } else { 2 * g.h * g.w };
    dx_slots
        .par_iter_mut()
        .zip(parts.par_chunks_mut(kk + 1))
        .zip(x.as_slice().expect("standard").par_chunks(g.h * g.w))
        .zip(dout.as_slice().expect("standard").par_chunks(oh * ow))
        .enumerate()
        .with_min_len(planes_per_task(oh * ow * kk))
        .for_each_init(
            || vec![0.0f32; tmp_len],
            |tmp, (idx, (((dxp, part), xp), dp))| {
                let c = idx % g.c;
                let (dwp, dbp) = part.split_at_mut(kk);
                dbp[0] = dp.iter().sum();
                let args = Bwd {
                    x: xp,
                    wk: &wts[c * kk..][..kk],
                    dout: dp,
                    dw: dwp,
                    dx: dxp,
                    tmp,
                };
                plane_backward(path, g, &cols, &phases, args);
            },
        );
    // Σ over the images in image order
    let dws = dw.as_slice_mut();
    let mut acc = vec![0.0f32; g.c * (kk + 1)];
    for img in parts.chunks_exact(g.c * (kk + 1)) {
        acc.iter_mut().zip(img).for_each(|(a, &p)| *a += p);
    }
    match dws {
        Some(dws) => {
            for (c, chunk) in acc.chunks_exact(kk + 1).enumerate() {
                dws[c * kk..][..kk]
                    .iter_mut()
                    .zip(&chunk[..kk])
                    .for_each(|(d, &p)| *d += p);
            }
        }
        None => {
            for (c, chunk) in acc.chunks_exact(kk + 1).enumerate() {
                for (t, &p) in chunk[..kk].iter().enumerate() {
                    dw[[c, 0, t / g.kw, t % g.kw]] += p;
                }
            }
        }
    }
    if let Some(mut db) = dbias {
        for (c, chunk) in acc.chunks_exact(kk + 1).enumerate() {
            db[c] += chunk[kk];
        }
    }
    want_dx.then_some(dx)
}
