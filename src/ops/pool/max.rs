//! Max pooling, forward (values and argmax indices) and backward (scatter to the argmax).

use super::*;

/// Folds `v` at flat index `i` into the running maximum `(best, at)`: a strictly greater value
/// replaces it (so the first maximum wins) and NaN always does (PyTorch). Branch-free.
#[inline(always)]
pub(crate) fn fold_max(v: f32, i: u32, best: &mut f32, at: &mut u32) {
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
