//! SiLU and the SwiGLU gate of Llama's MLP, forward and backward.
//!
//! ```text
//! silu(g) = g·σ(g),  σ(g) = 1/(1 + e^(−g))
//! a       = silu(g) ⊙ u            (LlamaMLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)))
//! ```
//!
//! Elementwise, so the result does not depend on the thread count. `e^x` is the exact `f32`
//! library function (this op is a small part of the MLP's cost next to its three products).

use ndarray::{ArrayView2, ArrayViewMut2, Zip};

/// `σ(g)`, the logistic function.
#[inline]
fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + (-g).exp())
}

/// `silu(g) = g·σ(g)`.
#[inline]
pub fn silu(g: f32) -> f32 {
    g * sigmoid(g)
}

/// SwiGLU forward: `a = silu(g) ⊙ u`.
///
/// # Shapes
/// `g, u, a: (N, F)`.
///
/// # Panics
/// When the shapes disagree (checked one tier up).
pub fn swiglu_forward(g: ArrayView2<f32>, u: ArrayView2<f32>, a: ArrayViewMut2<f32>) {
    assert_eq!(g.dim(), u.dim(), "swiglu_forward: gate and up shapes");
    let zip = Zip::from(a).and(&g).and(&u);
    // a decoding step's few rows cost less than waking another thread (elementwise: the same
    // values either way)
    if g.len() < PAR_MIN_LEN {
        zip.for_each(|a, &g, &u| *a = silu(g) * u);
    } else {
        zip.par_for_each(|a, &g, &u| *a = silu(g) * u);
    }
}

/// From this many elements on, [`swiglu_forward`] runs in parallel.
const PAR_MIN_LEN: usize = 1 << 15;

/// SwiGLU backward: overwrites `dg` and `du` from `da`.
///
/// ```text
/// forward: a = silu(g)·u   ⇒ du = da·silu(g)
///                          ⇒ dg = da·u·silu'(g),  silu'(g) = σ(g)·(1 + g·(1 − σ(g)))
/// ```
///
/// # Shapes
/// `da, g, u, dg, du: (N, F)`.
pub fn swiglu_backward(
    da: ArrayView2<f32>,
    g: ArrayView2<f32>,
    u: ArrayView2<f32>,
    dg: ArrayViewMut2<f32>,
    du: ArrayViewMut2<f32>,
) {
    assert_eq!(g.dim(), u.dim(), "swiglu_backward: gate and up shapes");
    assert_eq!(da.dim(), g.dim(), "swiglu_backward: da shape");
    Zip::from(dg)
        .and(du)
        .and(&da)
        .and(&g)
        .and(&u)
        .par_for_each(|dg, du, &da, &g, &u| {
            let s = sigmoid(g);
            *du = da * (g * s);
            *dg = da * u * (s * (1.0 + g * (1.0 - s)));
        });
}
