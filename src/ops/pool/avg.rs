//! Average pooling, forward and backward, with or without the padding in the divisor.

use super::*;

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
