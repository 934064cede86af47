//! Global average pooling over the spatial axes of NCHW images (PyTorch
//! `adaptive_avg_pool2d(x, 1)` flattened, Keras `GlobalAveragePooling2D`), forward and backward.
//!
//! ```text
//! out[n,c] = (1/(H·W)) · Σ_{h,w} x[n,c,h,w]
//! ```
//!
//! Each `(n, c)` plane is summed by one task, in index order, in `f64`: bit-identical for any
//! thread count.

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use rayon::prelude::*;

/// Planes per parallel task.
const PLANES_PER_TASK: usize = 64;

/// Global average pool forward.
///
/// # Shapes
/// `x: (N, C, H, W)` → `(N, C)`.
pub fn global_avg_pool_forward(x: ArrayView4<f32>) -> Array2<f32> {
    let (n, c, h, w) = x.dim();
    let mut out = Array2::<f32>::zeros((n, c));
    let plane = h * w;
    if out.is_empty() || plane == 0 {
        return out;
    }
    let x = x.as_standard_layout();
    let inv = 1.0 / plane as f64;
    out.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(PLANES_PER_TASK)
        .zip(
            x.as_slice()
                .expect("standard")
                .par_chunks(plane * PLANES_PER_TASK),
        )
        .for_each(|(o, xs)| {
            for (o, p) in o.iter_mut().zip(xs.chunks_exact(plane)) {
                *o = (p.iter().map(|&v| v as f64).sum::<f64>() * inv) as f32;
            }
        });
    out
}

/// Global average pool backward.
///
/// ```text
/// forward: out[n,c] = (1/(H·W))·Σ_{h,w} x[n,c,h,w]  ⇒  dx[n,c,h,w] = dout[n,c]/(H·W)
/// ```
///
/// # Shapes
/// `dout: (N, C)`, the forward input's `(H, W)` → `dx: (N, C, H, W)`.
pub fn global_avg_pool_backward(dout: ArrayView2<f32>, hw: (usize, usize)) -> Array4<f32> {
    let (n, c) = dout.dim();
    let (h, w) = hw;
    let plane = h * w;
    let mut dx = Array4::<f32>::zeros((n, c, h, w));
    if dx.is_empty() {
        return dx;
    }
    let dout = dout.as_standard_layout();
    let inv = 1.0 / plane as f32;
    dx.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(plane * PLANES_PER_TASK)
        .zip(
            dout.as_slice()
                .expect("standard")
                .par_chunks(PLANES_PER_TASK),
        )
        .for_each(|(dxs, ds)| {
            for (p, &d) in dxs.chunks_exact_mut(plane).zip(ds) {
                p.fill(d * inv);
            }
        });
    dx
}
