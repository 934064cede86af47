//! Fused softmax + sparse categorical cross-entropy (mean over the batch), and its checked
//! public form [`sparse_categorical_crossentropy`].
//!
//! For logits `x` of shape `(N, V)` and integer labels `t`:
//!
//! ```text
//! loss_n = logsumexp(x[n]) − x[n, t_n]          (= −log softmax(x[n])[t_n], computed stably)
//! loss   = (1/N)·Σ_n loss_n
//! dx[n]  = dloss·(p[n] − onehot(t_n)) / N,      p[n] = softmax(x[n])
//! ```
//!
//! Derivation: `∂loss_n/∂x[n, j] = ∂logsumexp/∂x_j − δ_{j t_n} = p_j − δ_{j t_n}`; the mean adds
//! `1/N`. The fused backward never forms `∂p/∂x` (a `V×V` Jacobian per row) and stays exact where
//! `p` underflows, which is why a softmax output layer followed by this loss is computed here in
//! one step.
//!
//! Per-row losses are computed in `f64` (the row sum of `e^(x − max)` and the log), rows in
//! parallel for large inputs, and the mean is summed in row order: the result is bit-identical
//! for 1 or N threads.

use crate::error::{Error, Result};
use crate::ops::activation::PARALLEL_MIN_LEN;
use crate::ops::softmax::softmax_row;
use crate::tensor::Tensor;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Ix2};
use rayon::prelude::*;

/// The name used in error messages of the checked loss.
const OP: &str = "sparse_categorical_crossentropy";

/// Panics (kernel invariant) unless `labels` has one entry `< v` per row.
fn assert_labels(labels: &[usize], n: usize, v: usize) {
    assert_eq!(
        labels.len(),
        n,
        "softmax_cross_entropy: {} labels for {n} rows",
        labels.len()
    );
    for (i, &t) in labels.iter().enumerate() {
        assert!(
            t < v,
            "softmax_cross_entropy: label {t} at index {i} is not < V = {v}"
        );
    }
}

/// One row of the fused forward: writes `p = softmax(x)` and returns
/// `loss = logsumexp(x) − x[t]` (in `f64`; also stored, rounded, in `loss`).
///
/// # Shapes
/// `x: (V)`, `p: (V)`, `t < V`.
fn ce_row(x: &[f32], p: &mut [f32], t: usize, loss: &mut f32) -> f64 {
    // forward: loss_n = −log softmax(x)[t] = logsumexp(x) − x[t]   (shifted by the row max)
    let l = softmax_row(x, p) - x[t] as f64;
    *loss = l as f32;
    l
}

/// Fused softmax + cross-entropy forward: returns the mean loss and `probs = softmax(logits)`.
///
/// # Shapes
/// `logits: (N, V)`, `labels: (N)` with every label `< V` → `(loss: scalar, probs: (N, V))`.
///
/// # Panics
/// When `labels.len() != N` or a label is `≥ V` (the checked form is
/// [`sparse_categorical_crossentropy`]). An empty batch (`N = 0`) gives a NaN loss, as in torch.
pub fn softmax_cross_entropy_forward(
    logits: ArrayView2<f32>,
    labels: &[usize],
) -> (f32, Array2<f32>) {
    let mut probs = Array2::zeros(logits.raw_dim());
    let mut losses = vec![0.0; logits.nrows()];
    let loss = softmax_cross_entropy_forward_into(logits, labels, probs.view_mut(), &mut losses);
    (loss, probs)
}

/// Per-sample losses (`reduction = "none"`) and `probs = softmax(logits)`.
///
/// # Shapes
/// `logits: (N, V)`, `labels: (N)` → `(losses: (N), probs: (N, V))`.
///
/// # Panics
/// As [`softmax_cross_entropy_forward`].
pub fn softmax_cross_entropy_per_sample(
    logits: ArrayView2<f32>,
    labels: &[usize],
) -> (Array1<f32>, Array2<f32>) {
    let mut probs = Array2::zeros(logits.raw_dim());
    let mut losses = Array1::zeros(logits.nrows());
    softmax_cross_entropy_forward_into(
        logits,
        labels,
        probs.view_mut(),
        losses.as_slice_mut().expect("contiguous"),
    );
    (losses, probs)
}

/// Fused forward into caller buffers: writes `probs` and the per-sample `losses`, returns the
/// mean loss (accumulated in `f64`, in row order).
///
/// # Shapes
/// `logits: (N, V)` (any layout), `labels: (N)`, `probs: (N, V)` (standard layout),
/// `losses: (N)` → mean loss.
///
/// # Panics
/// As [`softmax_cross_entropy_forward`], and when `probs` / `losses` do not fit.
pub fn softmax_cross_entropy_forward_into(
    logits: ArrayView2<f32>,
    labels: &[usize],
    mut probs: ArrayViewMut2<f32>,
    losses: &mut [f32],
) -> f32 {
    let (n, v) = logits.dim();
    assert_labels(labels, n, v);
    assert_eq!(
        probs.dim(),
        (n, v),
        "softmax_cross_entropy: probs buffer shape"
    );
    assert_eq!(
        losses.len(),
        n,
        "softmax_cross_entropy: losses buffer length"
    );
    if n == 0 {
        return f32::NAN;
    }
    let logits = logits.as_standard_layout();
    let x = logits.as_slice().expect("standard layout");
    let p = probs
        .as_slice_mut()
        .expect("softmax_cross_entropy: probs must be in standard (row-major) layout");

    let per_row: Vec<f64> = if n * v > PARALLEL_MIN_LEN {
        x.par_chunks(v)
            .zip(p.par_chunks_mut(v))
            .zip(labels.par_iter().zip(losses.par_iter_mut()))
            .with_min_len((8192 / v).max(1))
            .map(|((x, p), (&t, loss))| ce_row(x, p, t, loss))
            .collect()
    } else {
        x.chunks(v)
            .zip(p.chunks_mut(v))
            .zip(labels.iter().zip(losses.iter_mut()))
            .map(|((x, p), (&t, loss))| ce_row(x, p, t, loss))
            .collect()
    };
    // Sequential sum in row order: deterministic whatever the thread count.
    (per_row.iter().sum::<f64>() / n as f64) as f32
}

/// Fused backward of the mean loss: `dlogits = (probs − onehot(labels)) / N`.
///
/// # Shapes
/// `probs: (N, V)`, `labels: (N)` → `dlogits: (N, V)`.
///
/// # Panics
/// When a label is out of range or the counts differ.
pub fn softmax_cross_entropy_backward(probs: ArrayView2<f32>, labels: &[usize]) -> Array2<f32> {
    let mut d = probs.as_standard_layout().into_owned();
    softmax_cross_entropy_backward_in_place(d.view_mut(), labels, 1.0);
    d
}

/// Fused backward into a caller buffer, scaled by the upstream `dloss = ∂L/∂loss`:
/// `dlogits = dloss·(probs − onehot(labels)) / N`.
///
/// # Shapes
/// `probs: (N, V)`, `labels: (N)`, `dloss`: scalar, `dlogits: (N, V)` (standard layout).
pub fn softmax_cross_entropy_backward_into(
    probs: ArrayView2<f32>,
    labels: &[usize],
    dloss: f32,
    mut dlogits: ArrayViewMut2<f32>,
) {
    dlogits.assign(&probs);
    softmax_cross_entropy_backward_in_place(dlogits, labels, dloss);
}

/// Fused backward that turns `probs` into `dlogits` in place (no second `(N, V)` buffer, which
/// matters for language-model vocabularies): `probs ← dloss·(probs − onehot(labels)) / N`.
///
/// # Shapes
/// `probs: (N, V)` (standard layout), `labels: (N)`, `dloss`: scalar.
pub fn softmax_cross_entropy_backward_in_place(
    mut probs: ArrayViewMut2<f32>,
    labels: &[usize],
    dloss: f32,
) {
    let (n, v) = probs.dim();
    assert_labels(labels, n, v);
    if n == 0 || v == 0 {
        return;
    }
    let scale = dloss / n as f32;
    let p = probs
        .as_slice_mut()
        .expect("softmax_cross_entropy: probs must be in standard (row-major) layout");
    // forward: loss = (1/N)·Σ_n (logsumexp(x[n]) − x[n, t_n])  ⇒  dx[n, j] = (p[n, j] − δ_{j t_n})/N
    let row = |(p, &t): (&mut [f32], &usize)| {
        for (j, p) in p.iter_mut().enumerate() {
            let onehot = if j == t { 1.0 } else { 0.0 };
            *p = (*p - onehot) * scale;
        }
    };
    if n * v > PARALLEL_MIN_LEN {
        p.par_chunks_mut(v)
            .zip(labels.par_iter())
            .with_min_len((8192 / v).max(1))
            .for_each(row);
    } else {
        p.chunks_mut(v).zip(labels.iter()).for_each(row);
    }
}

/// Sparse categorical cross-entropy of `logits` against integer `labels`, mean over the batch,
/// with its gradient: returns `(loss, dloss/dlogits)`.
///
/// Equivalent to `torch.nn.functional.cross_entropy(logits, labels)` (Keras:
/// `SparseCategoricalCrossentropy(from_logits=True)`): softmax and the loss are fused, so it is
/// stable for any logits.
///
/// # Shapes
/// `logits: (B, V)`, `labels: (B)` with values in `0..V` → `(loss: scalar, dlogits: (B, V))`.
///
/// # Errors
/// - [`Error::Shape`] when `logits` is not rank 2 or has `B = 0` or `V = 0`;
/// - [`Error::Label`] when `labels.len() != B` or a label is `≥ V`.
pub fn sparse_categorical_crossentropy(logits: &Tensor, labels: &[usize]) -> Result<(f32, Tensor)> {
    let shape = logits.shape();
    if shape.len() != 2 {
        return Err(Error::shape(OP, "rank-2 (B, V) logits", shape));
    }
    let (b, v) = (shape[0], shape[1]);
    if b == 0 || v == 0 {
        return Err(Error::shape(
            OP,
            "(B, V) logits with B >= 1 and V >= 1",
            shape,
        ));
    }
    if labels.len() != b {
        return Err(Error::label(
            OP,
            format!(
                "got {} labels for {b} rows of logits (logits shape {shape:?}); expected one label per row",
                labels.len()
            ),
        ));
    }
    if let Some((i, &t)) = labels.iter().enumerate().find(|&(_, &t)| t >= v) {
        return Err(Error::label(
            OP,
            format!("label {t} at index {i} is out of range for V = {v} classes (allowed 0..{v})"),
        ));
    }
    let x = logits
        .view()
        .into_dimensionality::<Ix2>()
        .expect("rank checked above");
    let mut probs = Array2::zeros((b, v));
    let mut losses = vec![0.0; b];
    let loss = softmax_cross_entropy_forward_into(x, labels, probs.view_mut(), &mut losses);
    softmax_cross_entropy_backward_in_place(probs.view_mut(), labels, 1.0);
    Ok((loss, probs.into_dyn()))
}

/// The target value that a language-model loss skips (PyTorch's `ignore_index = -100`).
pub const IGNORE_INDEX: usize = usize::MAX;

/// Next-token cross-entropy for a language model, turning `logits` into `dlogits` **in place**
/// (one `(N, V)` buffer, which matters for a 50257-token vocabulary).
///
/// Rows whose target is [`IGNORE_INDEX`] contribute neither loss nor gradient; the loss is the
/// mean over the `n` other rows (as `F.cross_entropy(..., ignore_index=-100)`):
///
/// ```text
/// loss       = (1/n)·Σ_{r valid} (logsumexp(x[r]) − x[r, t_r])
/// dlogits[r] = (softmax(x[r]) − onehot(t_r)) / n          (0 for ignored rows)
/// ```
///
/// Returns `(mean loss, n)`; the per-row losses are summed in `f64` in row order, so the
/// result does not depend on the thread count. With `n = 0` the loss is NaN (as torch).
///
/// # Shapes
/// `logits: (N, V)` (standard layout), `targets: (N)`.
///
/// # Panics
/// When `targets.len() != N` or a non-ignored target is `≥ V` (checked one tier up).
pub fn lm_cross_entropy_in_place(
    mut logits: ArrayViewMut2<f32>,
    targets: &[usize],
) -> (f32, usize) {
    let (n_rows, v) = logits.dim();
    assert_eq!(
        targets.len(),
        n_rows,
        "lm_cross_entropy: one target per row"
    );
    assert!(
        targets.iter().all(|&t| t == IGNORE_INDEX || t < v),
        "lm_cross_entropy: a target is ≥ V = {v}"
    );
    let n = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let x = logits
        .as_slice_mut()
        .expect("lm_cross_entropy: logits must be in standard layout");
    let inv_n = 1.0 / n.max(1) as f32;
    let row =
        |(x, &t): (&mut [f32], &usize)| -> f64 { super::wide::wide_loop!(lm_row(x, t, inv_n)) };
    // one row: dlogits in place, returns the row's loss (inside `wide`: the widest vectors)
    #[inline(always)]
    fn lm_row(x: &mut [f32], t: usize, inv_n: f32) -> f64 {
        if t == IGNORE_INDEX {
            x.fill(0.0);
            return 0.0;
        }
        let xt = x[t] as f64;
        let max = super::lanes::max_scaled(x, 1.0);
        // Σ e in eight interleaved f64 partial sums added in a fixed order (it vectorises; the
        // order depends on V only, not on the thread count)
        let sum = super::lanes::exp_in_place_sum_f64(x, max);
        // dlogits[j] = (p_j − δ_jt)/n with p_j = e_j / Σe
        let scale = (1.0 / sum) as f32 * inv_n;
        for x in x.iter_mut() {
            *x *= scale;
        }
        x[t] -= inv_n;
        max as f64 + sum.ln() - xt
    }
    let losses: Vec<f64> = if n_rows * v > PARALLEL_MIN_LEN {
        x.par_chunks_mut(v)
            .zip(targets.par_iter())
            .with_min_len((8192 / v).max(1))
            .map(row)
            .collect()
    } else {
        x.chunks_mut(v).zip(targets.iter()).map(row).collect()
    };
    let total: f64 = losses.iter().sum();
    if n == 0 {
        (f32::NAN, 0)
    } else {
        ((total / n as f64) as f32, n)
    }
}
