//! Losses against dense targets, forward and backward in one pass: categorical cross-entropy
//! with probability targets, mean squared error, and binary cross-entropy with logits.
//!
//! Each returns the mean loss and its gradient with respect to the prediction. Sums run in `f64`
//! in element order, so results do not depend on the thread count. (Sparse categorical
//! cross-entropy against integer labels is in [`super::cross_entropy`].)

use super::softmax::softmax_row;
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD};

/// Softmax + cross-entropy against probability targets (PyTorch `F.cross_entropy` with class
/// probabilities; Keras `categorical_crossentropy` from logits), mean over the batch.
///
/// ```text
/// loss  = (1/N)·Σ_n Σ_v −t[n,v]·log softmax(z[n])_v
/// dz[n] = (p[n]·Σ_v t[n,v] − t[n]) / N            (= (p − t)/N for rows of t summing to 1)
/// ```
///
/// # Shapes
/// `logits: (N, V)`, `targets: (N, V)` → `(loss, dlogits: (N, V))`.
pub fn categorical_crossentropy(
    logits: ArrayView2<f32>,
    targets: ArrayView2<f32>,
) -> (f32, Array2<f32>) {
    assert_eq!(
        logits.dim(),
        targets.dim(),
        "categorical_crossentropy: shapes differ"
    );
    let (n, v) = logits.dim();
    let mut grad = Array2::<f32>::zeros((n, v));
    let mut total = 0.0f64;
    let mut x = vec![0.0f32; v];
    for ((z, t), mut g) in logits
        .rows()
        .into_iter()
        .zip(targets.rows())
        .zip(grad.rows_mut())
    {
        x.iter_mut().zip(z.iter()).for_each(|(a, &b)| *a = b);
        let p = g.as_slice_mut().expect("fresh row is contiguous");
        // p = softmax(z); lse = log Σ e^z
        let lse = softmax_row(&x, p);
        let mut t_sum = 0.0f64;
        for (&zi, &ti) in x.iter().zip(t.iter()) {
            // forward: −t·log p = t·(lse − z)
            total += ti as f64 * (lse - zi as f64);
            t_sum += ti as f64;
        }
        for (pi, &ti) in p.iter_mut().zip(t.iter()) {
            *pi = ((*pi as f64 * t_sum - ti as f64) / n as f64) as f32;
        }
    }
    ((total / n.max(1) as f64) as f32, grad)
}

/// Mean squared error over every element (PyTorch `F.mse_loss`, Keras `mean_squared_error`).
///
/// ```text
/// loss = (1/M)·Σ (y − t)²        (M = number of elements)
/// dy   = 2·(y − t) / M
/// ```
///
/// # Shapes
/// `pred`, `targets`: the same shape → `(loss, dpred)`.
pub fn mse(pred: ArrayViewD<f32>, targets: ArrayViewD<f32>) -> (f32, ArrayD<f32>) {
    assert_eq!(pred.shape(), targets.shape(), "mse: shapes differ");
    let m = pred.len().max(1) as f64;
    let mut total = 0.0f64;
    let mut grad = ArrayD::<f32>::zeros(pred.raw_dim());
    for ((g, &y), &t) in grad.iter_mut().zip(pred.iter()).zip(targets.iter()) {
        let d = y as f64 - t as f64;
        total += d * d;
        *g = (2.0 * d / m) as f32;
    }
    ((total / m) as f32, grad)
}

/// Binary cross-entropy with logits over every element (PyTorch
/// `F.binary_cross_entropy_with_logits`, Keras `binary_crossentropy(from_logits=True)`).
///
/// ```text
/// loss = (1/M)·Σ max(z, 0) − z·t + log(1 + e^(−|z|))     (stable for any z)
/// dz   = (σ(z) − t) / M
/// ```
///
/// # Shapes
/// `logits`, `targets`: the same shape → `(loss, dlogits)`.
pub fn bce_with_logits(logits: ArrayViewD<f32>, targets: ArrayViewD<f32>) -> (f32, ArrayD<f32>) {
    assert_eq!(
        logits.shape(),
        targets.shape(),
        "bce_with_logits: shapes differ"
    );
    let m = logits.len().max(1) as f64;
    let mut total = 0.0f64;
    let mut grad = ArrayD::<f32>::zeros(logits.raw_dim());
    for ((g, &z), &t) in grad.iter_mut().zip(logits.iter()).zip(targets.iter()) {
        let (z, t) = (z as f64, t as f64);
        total += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
        let sig = if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            z.exp() / (1.0 + z.exp())
        };
        *g = ((sig - t) / m) as f32;
    }
    ((total / m) as f32, grad)
}
