//! The fully connected (`nn.Linear`) kernel: `out = x·Wᵀ + b`, forward and backward.

use super::matmul::{matmul_into, matmul_nt_into, matmul_tn_into};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// `out[b, o] = Σ_i x[b, i]·w[o, i] + bias[o]`, written into `out`.
///
/// # Shapes
/// `x: (B, I)`, `w: (O, I)` (PyTorch `[out, in]` layout), `bias: (O)`, `out: (B, O)`.
pub fn linear_forward_into(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
    mut out: ArrayViewMut2<f32>,
) {
    match bias {
        Some(b) => {
            // out starts as the bias broadcast over rows, then accumulates x·Wᵀ.
            for mut row in out.rows_mut() {
                row.assign(&b);
            }
            matmul_nt_into(x, w, out, true);
        }
        None => matmul_nt_into(x, w, out, false),
    }
}

/// Backward of [`linear_forward_into`].
///
/// ```text
/// forward: out[b,o] = Σ_i x[b,i]·w[o,i] + bias[o]
///   ⇒ dx[b,i]   = Σ_o dout[b,o]·w[o,i]      (dx = dout·W, overwritten)
///   ⇒ dw[o,i]  += Σ_b dout[b,o]·x[b,i]      (dW += doutᵀ·x)
///   ⇒ dbias[o] += Σ_b dout[b,o]
/// ```
/// `dx` is skipped when `None` (the first layer needs no input gradient). The bias sum runs over
/// rows in order, so it is identical whatever the thread count.
///
/// # Shapes
/// `dout: (B, O)`, `x: (B, I)`, `w: (O, I)`, `dx: (B, I)`, `dw: (O, I)`, `dbias: (O)`.
pub fn linear_backward(
    dout: ArrayView2<f32>,
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    dx: Option<ArrayViewMut2<f32>>,
    dw: ArrayViewMut2<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
) {
    if let Some(dx) = dx {
        matmul_into(dout, w, dx, false);
    }
    matmul_tn_into(dout, x, dw, true);
    if let Some(mut db) = dbias {
        for row in dout.rows() {
            db += &row;
        }
    }
}
