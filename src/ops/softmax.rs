//! Softmax and log-softmax over the **last** axis, forward and backward.
//!
//! An input of shape `(d0, …, dk, C)` is `rows = d0·…·dk` independent rows of `C` entries. Each
//! row subtracts its maximum before `exp`, so rows shifted by ±100 neither overflow nor
//! underflow to `0/0`. Row sums are accumulated in `f64`, sequentially within a row.
//!
//! Rows run in parallel with rayon when the input has more than [`PARALLEL_MIN_LEN`] elements; a
//! row is always reduced by one thread in index order, so results are bit-identical for 1 or N
//! threads.
//!
//! As in PyTorch, a row whose entries are all `−∞` (or that holds `+∞` or NaN) gives NaN.
//!
//! Derivations (`y = softmax(x)`, `ℓ = log_softmax(x) = x − logsumexp(x)`):
//! - `∂y_i/∂x_j = y_i·(δ_ij − y_j)`  ⇒  `dx_j = Σ_i dy_i·y_i·(δ_ij − y_j) = y_j·(dy_j − Σ_i dy_i·y_i)`;
//! - `∂ℓ_i/∂x_j = δ_ij − y_j`  ⇒  `dx_j = dy_j − y_j·Σ_i dy_i`, with `y_j = exp(ℓ_j)`.

use crate::ops::activation::PARALLEL_MIN_LEN;
use ndarray::{Array, ArrayView, Dimension};
use rayon::prelude::*;

/// Roughly how many elements one parallel task handles (whole rows are never split).
const TASK_LEN: usize = 1 << 13;

/// The row length of a last-axis operation on `shape` (a 0-d input is one row of one entry).
fn row_len(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

/// Writes `y = softmax(x)` for one row and returns `logsumexp(x) = max + ln Σ e^(x − max)`.
///
/// Shared with the fused softmax + cross-entropy kernel.
///
/// # Shapes
/// `x: (C)`, `y: (C)`.
pub(crate) fn softmax_row(x: &[f32], y: &mut [f32]) -> f64 {
    debug_assert_eq!(x.len(), y.len());
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f64;
    for (y, &x) in y.iter_mut().zip(x) {
        let e = super::fast_exp::exp(x - max);
        *y = e;
        sum += e as f64;
    }
    let inv = 1.0 / sum;
    for y in y.iter_mut() {
        *y = (*y as f64 * inv) as f32;
    }
    max as f64 + sum.ln()
}

/// Writes `y = log_softmax(x) = x − logsumexp(x)` for one row.
fn log_softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = x.iter().map(|&x| (x - max).exp() as f64).sum();
    let lse = max as f64 + sum.ln();
    for (y, &x) in y.iter_mut().zip(x) {
        *y = (x as f64 - lse) as f32;
    }
}

/// `dx` for one softmax row, from the output `y`.
fn softmax_backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    // forward: y_i = e^(x_i − m) / Σ_j e^(x_j − m)  ⇒  dx_i = y_i·(dy_i − Σ_j dy_j·y_j)
    let dot: f64 = y.iter().zip(dy).map(|(&y, &dy)| y as f64 * dy as f64).sum();
    let dot = dot as f32;
    for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
        *dx = y * (dy - dot);
    }
}

/// `dx` for one log-softmax row, from the output `ℓ` (log-probabilities).
fn log_softmax_backward_row(logp: &[f32], dy: &[f32], dx: &mut [f32]) {
    // forward: ℓ_i = x_i − logsumexp(x)  ⇒  dx_i = dy_i − softmax(x)_i·Σ_j dy_j,  softmax = e^ℓ
    let sum: f64 = dy.iter().map(|&d| d as f64).sum();
    let sum = sum as f32;
    for ((dx, &l), &dy) in dx.iter_mut().zip(logp).zip(dy) {
        *dx = dy - l.exp() * sum;
    }
}

/// Applies `f(row_in, row_out)` to every row of length `c`, in parallel for large inputs.
fn for_each_row(x: &[f32], y: &mut [f32], c: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    assert_eq!(
        x.len(),
        y.len(),
        "softmax: input has {} elements, output {}",
        x.len(),
        y.len()
    );
    if x.is_empty() {
        return;
    }
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "softmax: {} elements are not whole rows of {c}",
        x.len()
    );
    if x.len() > PARALLEL_MIN_LEN {
        y.par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .with_min_len((TASK_LEN / c).max(1))
            .for_each(|(y, x)| f(x, y));
    } else {
        for (y, x) in y.chunks_mut(c).zip(x.chunks(c)) {
            f(x, y);
        }
    }
}

/// Backward driver: `g(cache_row, dy_row, dx_row)` for every row of length `c`.
fn for_each_row_backward(
    cache: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    c: usize,
    g: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) {
    assert!(
        cache.len() == dy.len() && dy.len() == dx.len(),
        "softmax backward: cache has {} elements, dy {}, dx {}",
        cache.len(),
        dy.len(),
        dx.len()
    );
    if dx.is_empty() {
        return;
    }
    assert!(
        c > 0 && dx.len().is_multiple_of(c),
        "softmax backward: {} elements are not whole rows of {c}",
        dx.len()
    );
    if dx.len() > PARALLEL_MIN_LEN {
        dx.par_chunks_mut(c)
            .zip(cache.par_chunks(c).zip(dy.par_chunks(c)))
            .with_min_len((TASK_LEN / c).max(1))
            .for_each(|(dx, (y, dy))| g(y, dy, dx));
    } else {
        for ((dx, y), dy) in dx.chunks_mut(c).zip(cache.chunks(c)).zip(dy.chunks(c)) {
            g(y, dy, dx);
        }
    }
}

/// Allocating forward for any shape and layout.
fn rows_map<D: Dimension>(
    x: ArrayView<f32, D>,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Array<f32, D> {
    let c = row_len(x.shape());
    let x = x.as_standard_layout();
    let mut y = Array::zeros(x.raw_dim());
    for_each_row(
        x.as_slice().expect("standard layout"),
        y.as_slice_mut().expect("standard layout"),
        c,
        f,
    );
    y
}

/// Allocating backward for any shape and layout; `cache` and `dy` must have the same shape.
fn rows_map_backward<D: Dimension>(
    op: &str,
    cache: ArrayView<f32, D>,
    dy: ArrayView<f32, D>,
    g: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Array<f32, D> {
    assert_eq!(
        cache.shape(),
        dy.shape(),
        "{op} backward: output shape {:?} differs from dy shape {:?}",
        cache.shape(),
        dy.shape()
    );
    let c = row_len(cache.shape());
    let cache = cache.as_standard_layout();
    let dy = dy.as_standard_layout();
    let mut dx = Array::zeros(cache.raw_dim());
    for_each_row_backward(
        cache.as_slice().expect("standard layout"),
        dy.as_slice().expect("standard layout"),
        dx.as_slice_mut().expect("standard layout"),
        c,
        g,
    );
    dx
}

/// Softmax over the last axis: `y[.., i] = e^(x[.., i] − m) / Σ_j e^(x[.., j] − m)`,
/// `m` = the row maximum.
///
/// # Shapes
/// `x: (…, C)` → `y: (…, C)` (any rank; a 0-d input is one row).
pub fn softmax_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    rows_map(x, |x, y| {
        softmax_row(x, y);
    })
}

/// Softmax over rows of length `c` of a flat row-major buffer, into a caller buffer.
///
/// # Shapes
/// `x: (rows·C)`, `y: (rows·C)`, `c = C`.
pub fn softmax_forward_into(x: &[f32], y: &mut [f32], c: usize) {
    for_each_row(x, y, c, |x, y| {
        softmax_row(x, y);
    });
}

/// Softmax backward from the forward **output** `y`: `dx = y ⊙ (dy − Σ_last(dy ⊙ y))`.
///
/// # Shapes
/// `y: (…, C)`, `dy: (…, C)` → `dx: (…, C)`.
pub fn softmax_backward<D: Dimension>(
    y: ArrayView<f32, D>,
    dy: ArrayView<f32, D>,
) -> Array<f32, D> {
    rows_map_backward("softmax", y, dy, softmax_backward_row)
}

/// Softmax backward into a caller buffer (see [`softmax_backward`]).
///
/// # Shapes
/// `y: (rows·C)`, `dy: (rows·C)`, `dx: (rows·C)`, `c = C`.
pub fn softmax_backward_into(y: &[f32], dy: &[f32], dx: &mut [f32], c: usize) {
    for_each_row_backward(y, dy, dx, c, softmax_backward_row);
}

/// Log-softmax over the last axis: `ℓ = x − logsumexp(x)` (stable; `logsumexp` in `f64`).
///
/// # Shapes
/// `x: (…, C)` → `ℓ: (…, C)`.
pub fn log_softmax_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    rows_map(x, log_softmax_row)
}

/// Log-softmax over rows of length `c` into a caller buffer.
///
/// # Shapes
/// `x: (rows·C)`, `y: (rows·C)`, `c = C`.
pub fn log_softmax_forward_into(x: &[f32], y: &mut [f32], c: usize) {
    for_each_row(x, y, c, log_softmax_row);
}

/// Log-softmax backward from the forward **output** `ℓ`: `dx = dy − e^ℓ·Σ_last dy`.
///
/// # Shapes
/// `logp: (…, C)`, `dy: (…, C)` → `dx: (…, C)`.
pub fn log_softmax_backward<D: Dimension>(
    logp: ArrayView<f32, D>,
    dy: ArrayView<f32, D>,
) -> Array<f32, D> {
    rows_map_backward("log_softmax", logp, dy, log_softmax_backward_row)
}

/// Log-softmax backward into a caller buffer (see [`log_softmax_backward`]).
///
/// # Shapes
/// `logp: (rows·C)`, `dy: (rows·C)`, `dx: (rows·C)`, `c = C`.
pub fn log_softmax_backward_into(logp: &[f32], dy: &[f32], dx: &mut [f32], c: usize) {
    for_each_row_backward(logp, dy, dx, c, log_softmax_backward_row);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    #[test]
    fn shifted_rows_do_not_overflow() {
        let x = arr2(&[[1000.0f32, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]]);
        let y = softmax_forward(x.view());
        assert!(y.iter().all(|v| v.is_finite()));
        assert!((y[[0, 2]] - y[[1, 0]]).abs() < 1e-6);
        let l = log_softmax_forward(x.view());
        assert!((l[[0, 2]] - l[[1, 0]]).abs() < 1e-6 && l[[0, 2]] < 0.0);
    }

    #[test]
    fn masked_entries_get_zero_probability() {
        let y = softmax_forward(arr1(&[0.0f32, f32::NEG_INFINITY, 0.0]).view());
        assert_eq!(y.to_vec(), vec![0.5, 0.0, 0.5]);
    }
}
