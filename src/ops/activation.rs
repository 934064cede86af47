//! Elementwise activations: ReLU, ReLU6, GELU (tanh approximation, GPT-2 `gelu_new`), sigmoid, tanh.
//!
//! Each activation has a forward and a backward pass, side by side:
//!
//! - `xxx_forward(x)` / `xxx_backward(cache, dy)` take [`ndarray`] views of any shape and layout
//!   and return a new array of the same shape;
//! - `xxx_forward_into(x, y)` / `xxx_backward_into(cache, dy, dx)` take flat row-major slices
//!   and write into a caller buffer (no allocation), for hot loops.
//!
//! What backward needs: ReLU and GELU take the forward **input** `x`; sigmoid and tanh take the
//! forward **output** `y` (their derivatives are functions of `y`). ReLU's backward may equally
//! be given `y = relu(x)`, since `x > 0 ⇔ y > 0`.
//!
//! Inputs with more than [`PARALLEL_MIN_LEN`] elements are split into fixed-size chunks that run
//! in parallel with rayon. Every element is computed by the same scalar function whatever the
//! chunking, so results are bit-identical for 1 or N threads.

use ndarray::{Array, ArrayView, Dimension};
use rayon::prelude::*;

/// Inputs with more elements than this run in parallel (smaller ones stay on the calling thread,
/// where the rayon overhead would dominate).
pub const PARALLEL_MIN_LEN: usize = 1 << 15;

/// The number of elements per parallel task.
const CHUNK: usize = 1 << 13;

/// √(2/π), the GELU tanh-approximation scale.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the GELU tanh approximation.
const GELU_COEFF: f32 = 0.044_715;

// ---------------------------------------------------------------------------------------------
// Scalar definitions (the single source of truth for every form below).
// ---------------------------------------------------------------------------------------------

/// The scalar ReLU every form uses (also the fused convolution epilogue's).
#[inline]
pub(crate) fn relu(x: f32) -> f32 {
    // `x > 0` rather than `x.max(0)`: NaN propagates as in torch.relu.
    if x > 0.0 || x.is_nan() {
        x
    } else {
        0.0
    }
}

#[inline]
fn relu_grad(x: f32, dy: f32) -> f32 {
    // forward: y = max(x, 0)  ⇒  dx = dy·[x > 0]   (torch's choice: derivative 0 at x = 0)
    if x > 0.0 {
        dy
    } else {
        0.0
    }
}

#[inline]
fn relu6(x: f32) -> f32 {
    // min(max(x, 0), 6); NaN propagates (f32::clamp keeps NaN), as in torch.nn.functional.relu6
    x.clamp(0.0, 6.0)
}

#[inline]
fn relu6_passes(x: f32) -> bool {
    // torch (hardtanh backward): the gradient passes strictly inside (0, 6)
    x > 0.0 && x < 6.0
}

#[inline]
fn relu6_grad(x: f32, dy: f32) -> f32 {
    // forward: y = min(max(x, 0), 6)  ⇒  dx = dy·[0 < x < 6]
    if relu6_passes(x) {
        dy
    } else {
        0.0
    }
}

/// `s = 0.5·(1 + tanh(u)) = 1/(1 + e^(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`: one `exp`
/// instead of a `tanh` (about 3× cheaper). `e^(−2u)` overflowing to `+∞` gives `s = 0`, the
/// correct limit.
#[inline]
fn gelu_gate(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_COEFF * x * x * x);
    1.0 / (1.0 + super::fast_exp::exp(-2.0 * u))
}

#[inline]
fn gelu(x: f32) -> f32 {
    // y = 0.5·x·(1 + tanh(u)) = x·s
    x * gelu_gate(x)
}

#[inline]
fn gelu_grad(x: f32, dy: f32) -> f32 {
    // forward: y = 0.5·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³)
    //   ⇒  dx = dy·[0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)],  t = tanh(u)
    // with s = 0.5·(1 + t):  0.5·(1 + t) = s,  0.5·(1 − t²) = 2·s·(1 − s)
    let s = gelu_gate(x);
    let du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_COEFF * x * x);
    dy * (s + 2.0 * x * s * (1.0 - s) * du_dx)
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    // Stable for large |x|: exp is only ever taken of a non-positive number, so it cannot
    // overflow, and 1 + e never loses the small tail (σ(−100) ≈ 3.7e−44, not 0/∞).
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[inline]
fn sigmoid_grad(y: f32, dy: f32) -> f32 {
    // forward: y = 1 / (1 + e^(−x))  ⇒  dx = dy·y·(1 − y)
    dy * y * (1.0 - y)
}

#[inline]
fn tanh_grad(y: f32, dy: f32) -> f32 {
    // forward: y = tanh(x)  ⇒  dx = dy·(1 − y²)
    dy * (1.0 - y * y)
}

// ---------------------------------------------------------------------------------------------
// Elementwise drivers: serial below PARALLEL_MIN_LEN, fixed-size parallel chunks above.
// ---------------------------------------------------------------------------------------------

/// `y[i] = f(x[i])`.
fn map_into(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    assert_eq!(
        x.len(),
        y.len(),
        "activation: x has {} elements, y has {}",
        x.len(),
        y.len()
    );
    super::par::zip_chunks(y, x, |y, x| {
        super::wide::wide_loop!({
            for (y, &x) in y.iter_mut().zip(x) {
                *y = f(x);
            }
        })
    });
}

/// `dx[i] = g(cache[i], dy[i])`.
fn zip_map_into(cache: &[f32], dy: &[f32], dx: &mut [f32], g: impl Fn(f32, f32) -> f32 + Sync) {
    assert!(
        cache.len() == dy.len() && dy.len() == dx.len(),
        "activation backward: cache has {} elements, dy {}, dx {}",
        cache.len(),
        dy.len(),
        dx.len()
    );
    let run = |c: &[f32], dy: &[f32], dx: &mut [f32]| {
        super::wide::wide_loop!({
            for ((dx, &c), &dy) in dx.iter_mut().zip(c).zip(dy) {
                *dx = g(c, dy);
            }
        })
    };
    if dx.len() > PARALLEL_MIN_LEN {
        dx.par_chunks_mut(CHUNK)
            .zip(cache.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dx, (c, dy))| run(c, dy, dx));
    } else {
        run(cache, dy, dx);
    }
}

/// Allocating form of [`map_into`] for a view of any shape and layout.
fn map<D: Dimension>(x: ArrayView<f32, D>, f: impl Fn(f32) -> f32 + Sync) -> Array<f32, D> {
    let x = x.as_standard_layout();
    let mut y = Array::zeros(x.raw_dim());
    map_into(
        x.as_slice().expect("standard layout"),
        y.as_slice_mut().expect("standard layout"),
        f,
    );
    y
}

/// Allocating form of [`zip_map_into`]; `cache` and `dy` must have the same shape.
fn zip_map<D: Dimension>(
    op: &str,
    cache: ArrayView<f32, D>,
    dy: ArrayView<f32, D>,
    g: impl Fn(f32, f32) -> f32 + Sync,
) -> Array<f32, D> {
    assert_eq!(
        cache.shape(),
        dy.shape(),
        "{op} backward: cache shape {:?} differs from dy shape {:?}",
        cache.shape(),
        dy.shape()
    );
    let cache = cache.as_standard_layout();
    let dy = dy.as_standard_layout();
    let mut dx = Array::zeros(cache.raw_dim());
    zip_map_into(
        cache.as_slice().expect("standard layout"),
        dy.as_slice().expect("standard layout"),
        dx.as_slice_mut().expect("standard layout"),
        g,
    );
    dx
}

// ---------------------------------------------------------------------------------------------
// ReLU
// ---------------------------------------------------------------------------------------------

/// ReLU: `y = max(x, 0)` (NaN propagates, as in `torch.relu`).
///
/// # Shapes
/// `x`: any → `y`: same shape.
pub fn relu_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    map(x, relu)
}

/// ReLU forward into a caller buffer.
///
/// # Shapes
/// `x: (n)`, `y: (n)` (flat, any logical shape).
pub fn relu_forward_into(x: &[f32], y: &mut [f32]) {
    map_into(x, y, relu);
}

/// ReLU backward: `dx = dy` where `x > 0`, else 0 (derivative 0 at `x = 0`, as torch).
///
/// `x` is the forward input; the forward output `y` gives the same result.
///
/// # Shapes
/// `x`, `dy`: same shape → `dx`: same shape.
pub fn relu_backward<D: Dimension>(x: ArrayView<f32, D>, dy: ArrayView<f32, D>) -> Array<f32, D> {
    zip_map("relu", x, dy, relu_grad)
}

/// ReLU backward into a caller buffer (see [`relu_backward`]).
///
/// # Shapes
/// `x: (n)`, `dy: (n)`, `dx: (n)`.
pub fn relu_backward_into(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    zip_map_into(x, dy, dx, relu_grad);
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh approximation (GPT-2 `gelu_new`, torch `gelu(approximate="tanh")`)
// ---------------------------------------------------------------------------------------------

/// GELU, tanh approximation: `y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// # Shapes
/// `x`: any → `y`: same shape.
pub fn gelu_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    map(x, gelu)
}

/// GELU forward into a caller buffer.
///
/// # Shapes
/// `x: (n)`, `y: (n)`.
pub fn gelu_forward_into(x: &[f32], y: &mut [f32]) {
    map_into(x, y, gelu);
}

/// The bias add of a product and the GELU after it, in one pass over rows of width
/// `bias.len()`: `act[r, j] = gelu(fc[r, j] + bias[j])` (the MLP's `gelu(x·W_fc + b_fc)`).
/// `fc` is left as it is: the backward ([`bias_gelu_backward_in_place`]) adds the bias again
/// rather than this pass writing the biased product back (one pass over memory fewer). The same
/// bits as adding the bias first and running [`gelu_forward_into`].
///
/// # Shapes
/// `fc: (rows·H)`, `bias: (H)`, `act: (rows·H)`.
///
/// # Panics
/// When the lengths disagree (callers check shapes first).
pub fn bias_gelu_forward_into(fc: &[f32], bias: &[f32], act: &mut [f32]) {
    let h = bias.len();
    assert!(
        h > 0 && fc.len() == act.len() && fc.len().is_multiple_of(h),
        "bias_gelu: fc has {} elements, act {}, bias {h}",
        fc.len(),
        act.len()
    );
    let run = |fc: &[f32], act: &mut [f32]| {
        super::wide::wide_loop!({
            for (fc, act) in fc.chunks_exact(h).zip(act.chunks_exact_mut(h)) {
                for ((&f, a), &b) in fc.iter().zip(act.iter_mut()).zip(bias) {
                    *a = gelu(f + b);
                }
            }
        })
    };
    if fc.len() > PARALLEL_MIN_LEN && rayon::current_num_threads() > 1 {
        let chunk = (CHUNK / h).max(1) * h;
        fc.par_chunks(chunk)
            .zip(act.par_chunks_mut(chunk))
            .for_each(|(f, a)| run(f, a));
    } else {
        run(fc, act);
    }
}

/// GELU backward from the forward **input** `x`:
/// `dx = dy·[0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)]`, `t = tanh(u)`.
///
/// # Shapes
/// `x`, `dy`: same shape → `dx`: same shape.
pub fn gelu_backward<D: Dimension>(x: ArrayView<f32, D>, dy: ArrayView<f32, D>) -> Array<f32, D> {
    zip_map("gelu", x, dy, gelu_grad)
}

/// GELU backward into a caller buffer (see [`gelu_backward`]).
///
/// # Shapes
/// `x: (n)`, `dy: (n)`, `dx: (n)`.
pub fn gelu_backward_into(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    zip_map_into(x, dy, dx, gelu_grad);
}

/// One chunk of [`bias_gelu_backward_in_place`]: `((d, fc), partial column sums)`.
type BiasChunk<'a> = ((&'a mut [f32], &'a [f32]), &'a mut [f32]);

/// The backward of [`bias_gelu_forward_into`], in place: `d[r, j] = gelu'(x)·d[r, j]` with
/// `x = fc[r, j] + bias[j]` (formed as the forward formed it: the same bits), and the column
/// sums of the new `d` added to `db` in the same pass (the bias gradient:
/// `db[j] += Σ_r d[r, j]`). Overwriting `dL/dact` with `dL/dfc` saves a buffer and a pass over
/// memory. Rows go in fixed chunks of the same size whatever the thread count; each chunk sums
/// its rows in order and the chunk sums are added in chunk order, so `db` is bit-identical on 1
/// or N threads.
///
/// # Shapes
/// `fc: (rows·H)`, `bias: (H)`, `d: (rows·H)`, `db: (H)`.
///
/// # Panics
/// When the lengths disagree (callers check shapes first).
pub fn bias_gelu_backward_in_place(fc: &[f32], bias: &[f32], d: &mut [f32], db: &mut [f32]) {
    let h = db.len();
    assert!(
        h > 0 && bias.len() == h && fc.len() == d.len() && d.len().is_multiple_of(h),
        "bias_gelu_backward: fc has {} elements, d {}, bias {}, db {h}",
        fc.len(),
        d.len(),
        bias.len()
    );
    let chunk = (CHUNK / h).max(1) * h;
    let n_chunks = d.len().div_ceil(chunk);
    let mut partials = vec![0.0f32; n_chunks * h];
    let run = |((d, fc), part): BiasChunk| {
        super::wide::wide_loop!({
            for (d, fc) in d.chunks_exact_mut(h).zip(fc.chunks_exact(h)) {
                for (((d, &f), &b), p) in d.iter_mut().zip(fc).zip(bias).zip(part.iter_mut()) {
                    let g = gelu_grad(f + b, *d);
                    *d = g;
                    *p += g;
                }
            }
        })
    };
    if d.len() > PARALLEL_MIN_LEN && rayon::current_num_threads() > 1 {
        d.par_chunks_mut(chunk)
            .zip(fc.par_chunks(chunk))
            .zip(partials.par_chunks_mut(h))
            .for_each(run);
    } else {
        d.chunks_mut(chunk)
            .zip(fc.chunks(chunk))
            .zip(partials.chunks_mut(h))
            .for_each(run);
    }
    for part in partials.chunks_exact(h) {
        for (d, &p) in db.iter_mut().zip(part) {
            *d += p;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sigmoid
// ---------------------------------------------------------------------------------------------

/// Logistic sigmoid `y = 1 / (1 + e^(−x))`, stable for large `|x|` (no overflow, no NaN).
///
/// # Shapes
/// `x`: any → `y`: same shape.
pub fn sigmoid_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    map(x, sigmoid)
}

/// Sigmoid forward into a caller buffer.
///
/// # Shapes
/// `x: (n)`, `y: (n)`.
pub fn sigmoid_forward_into(x: &[f32], y: &mut [f32]) {
    map_into(x, y, sigmoid);
}

/// Sigmoid backward from the forward **output** `y`: `dx = dy·y·(1 − y)`.
///
/// # Shapes
/// `y`, `dy`: same shape → `dx`: same shape.
pub fn sigmoid_backward<D: Dimension>(
    y: ArrayView<f32, D>,
    dy: ArrayView<f32, D>,
) -> Array<f32, D> {
    zip_map("sigmoid", y, dy, sigmoid_grad)
}

/// Sigmoid backward into a caller buffer (see [`sigmoid_backward`]).
///
/// # Shapes
/// `y: (n)`, `dy: (n)`, `dx: (n)`.
pub fn sigmoid_backward_into(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    zip_map_into(y, dy, dx, sigmoid_grad);
}

// ---------------------------------------------------------------------------------------------
// Tanh
// ---------------------------------------------------------------------------------------------

/// Hyperbolic tangent `y = tanh(x)`.
///
/// # Shapes
/// `x`: any → `y`: same shape.
pub fn tanh_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    map(x, f32::tanh)
}

/// Tanh forward into a caller buffer.
///
/// # Shapes
/// `x: (n)`, `y: (n)`.
pub fn tanh_forward_into(x: &[f32], y: &mut [f32]) {
    map_into(x, y, f32::tanh);
}

/// Tanh backward from the forward **output** `y`: `dx = dy·(1 − y²)`.
///
/// # Shapes
/// `y`, `dy`: same shape → `dx`: same shape.
pub fn tanh_backward<D: Dimension>(y: ArrayView<f32, D>, dy: ArrayView<f32, D>) -> Array<f32, D> {
    zip_map("tanh", y, dy, tanh_grad)
}

/// Tanh backward into a caller buffer (see [`tanh_backward`]).
///
/// # Shapes
/// `y: (n)`, `dy: (n)`, `dx: (n)`.
pub fn tanh_backward_into(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    zip_map_into(y, dy, dx, tanh_grad);
}

// ---------------------------------------------------------------------------------------------
// ReLU6 (MobileNet / EfficientNet-Lite), y = min(max(x, 0), 6)
// ---------------------------------------------------------------------------------------------

/// ReLU6: `y = min(max(x, 0), 6)` (NaN propagates, as in `torch.nn.functional.relu6`).
///
/// # Shapes
/// `x`: any → `y`: same shape.
pub fn relu6_forward<D: Dimension>(x: ArrayView<f32, D>) -> Array<f32, D> {
    map(x, relu6)
}

/// ReLU6 backward: `dx = dy` where `0 < x < 6`, else 0 (strict, as torch's hardtanh backward).
/// `x` is the forward input.
///
/// # Shapes
/// `x`, `dy`: same shape → `dx`: same shape.
pub fn relu6_backward<D: Dimension>(x: ArrayView<f32, D>, dy: ArrayView<f32, D>) -> Array<f32, D> {
    zip_map("relu6", x, dy, relu6_grad)
}

/// In-place ReLU6 (inference).
///
/// # Shapes
/// `x: (n)`.
pub fn relu6_in_place(x: &mut [f32]) {
    map_in_place(x, relu6);
}

/// In-place ReLU6 that records the mask `0 < x < 6` (one bit per element, the layout of
/// [`relu_in_place_with_mask`]); the backward is [`relu_backward_in_place_with_mask`].
///
/// # Shapes
/// `x: (n)` → `bits: (⌈n/64⌉)`.
pub fn relu6_in_place_with_mask(x: &mut [f32], bits: &mut Vec<u64>) {
    map_in_place_with_mask(x, bits, relu6_passes, relu6);
}

/// In-place ReLU, `x ← max(x, 0)` (NaN stays NaN, as in [`relu_forward`]).
///
/// # Shapes
/// `x: (n)`.
pub fn relu_in_place(x: &mut [f32]) {
    map_in_place(x, relu);
}

/// In-place ReLU that also records the mask `x > 0`, one bit per element (`bits[i / 64]`, bit
/// `i % 64`); `bits` is resized to `⌈n/64⌉` words. Backward:
/// [`relu_backward_in_place_with_mask`].
///
/// # Shapes
/// `x: (n)` → `bits: (⌈n/64⌉)`.
pub fn relu_in_place_with_mask(x: &mut [f32], bits: &mut Vec<u64>) {
    map_in_place_with_mask(x, bits, |v| v > 0.0, relu);
}

/// `x ← f(x)` elementwise, in parallel chunks for long inputs (the body of the in-place
/// activations).
#[inline(always)]
fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    let run = |x: &mut [f32]| x.iter_mut().for_each(|v| *v = f(*v));
    if x.len() > PARALLEL_MIN_LEN {
        x.par_chunks_mut(CHUNK).for_each(run);
    } else {
        run(x);
    }
}

/// `x ← f(x)` elementwise while recording `passes(x)` (where the derivative is 1) one bit per
/// element: `bits[i / 64]`, bit `i % 64`, resized to `⌈n/64⌉` words. The chunks are multiples of
/// 64 elements, so every word is written by one task.
#[inline(always)]
fn map_in_place_with_mask(
    x: &mut [f32],
    bits: &mut Vec<u64>,
    passes: impl Fn(f32) -> bool + Sync,
    f: impl Fn(f32) -> f32 + Sync,
) {
    bits.clear();
    bits.resize(x.len().div_ceil(64), 0);
    let run = |(x, b): (&mut [f32], &mut [u64])| {
        for (x, w) in x.chunks_mut(64).zip(b.iter_mut()) {
            let mut word = 0u64;
            for (j, v) in x.iter_mut().enumerate() {
                word |= (passes(*v) as u64) << j;
                *v = f(*v);
            }
            *w = word;
        }
    };
    if x.len() > PARALLEL_MIN_LEN {
        x.par_chunks_mut(CHUNK)
            .zip(bits.par_chunks_mut(CHUNK / 64))
            .for_each(run);
    } else {
        run((x, bits));
    }
}

/// `dout[i] = 0` where the forward input was `≤ 0` (bit clear), in place.
///
/// # Shapes
/// `dout: (n)`, `bits: (⌈n/64⌉)`.
///
/// # Panics
/// When `bits` is shorter than `⌈n/64⌉`.
pub fn relu_backward_in_place_with_mask(dout: &mut [f32], bits: &[u64]) {
    assert!(
        bits.len() * 64 >= dout.len(),
        "relu backward: mask too short"
    );
    let run = |(d, b): (&mut [f32], &[u64])| {
        for (d, &w) in d.chunks_mut(64).zip(b) {
            for (j, d) in d.iter_mut().enumerate() {
                // forward: y = max(x, 0)  ⇒  dx = dy·[x > 0]
                if (w >> j) & 1 == 0 {
                    *d = 0.0;
                }
            }
        }
    };
    if dout.len() > PARALLEL_MIN_LEN {
        dout.par_chunks_mut(CHUNK)
            .zip(bits.par_chunks(CHUNK / 64))
            .for_each(run);
    } else {
        run((dout, bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_finite_and_saturates_at_the_extremes() {
        for &(x, want) in &[(-1000.0f32, 0.0f32), (1000.0, 1.0), (0.0, 0.5)] {
            let y = sigmoid(x);
            assert!(
                y.is_finite() && (y - want).abs() < 1e-7,
                "sigmoid({x}) = {y}"
            );
        }
        // The negative tail keeps its value instead of collapsing through 1 − (1 − tiny).
        assert!(sigmoid(-80.0) > 0.0);
    }

    #[test]
    fn parallel_and_serial_paths_are_bit_identical() {
        let n = PARALLEL_MIN_LEN * 3 + 17;
        let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 6.0).collect();
        let mut par = vec![0.0; n];
        gelu_forward_into(&x, &mut par);
        for (i, (&p, &x)) in par.iter().zip(&x).enumerate() {
            assert_eq!(p.to_bits(), gelu(x).to_bits(), "element {i}");
        }
    }

    /// `scale·sin(step·i)` for `i` in `0..n`: smooth test inputs of both signs.
    fn wave(n: usize, step: f32, scale: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * step).sin() * scale).collect()
    }

    #[test]
    fn bias_gelu_is_the_bias_add_then_gelu_bit_for_bit() {
        // a parallel size (rows of 96 over several chunks) and a serial one
        for rows in [700usize, 5] {
            let h = 96;
            let n = rows * h;
            let (p, b) = (wave(n, 0.37, 4.0), wave(h, 0.11, 1.0));
            let mut act = vec![f32::NAN; n];
            bias_gelu_forward_into(&p, &b, &mut act);
            for i in 0..n {
                let want = p[i] + b[i % h];
                assert_eq!(act[i].to_bits(), gelu(want).to_bits(), "act element {i}");
            }
        }
    }

    #[test]
    fn bias_gelu_backward_is_gelu_backward_of_the_biased_input_plus_chunked_column_sums() {
        for rows in [700usize, 5] {
            let h = 96;
            let n = rows * h;
            let (fc, dy, b) = (wave(n, 0.37, 4.0), wave(n, 0.13, 1.0), wave(h, 0.11, 1.0));
            let x: Vec<f32> = (0..n).map(|i| fc[i] + b[i % h]).collect();
            let mut d = dy.clone();
            let mut db: Vec<f32> = (0..h).map(|j| j as f32).collect();
            bias_gelu_backward_in_place(&fc, &b, &mut d, &mut db);
            let mut want = vec![0.0; n];
            gelu_backward_into(&x, &dy, &mut want);
            assert_eq!(
                d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            // the column sums in f64 (the f32 ones differ in the last bits only)
            for j in 0..h {
                let s: f64 = (0..rows).map(|r| want[r * h + j] as f64).sum::<f64>() + j as f64;
                assert!(
                    (db[j] as f64 - s).abs() < 1e-4 * (1.0 + s.abs()),
                    "db[{j}] {} vs {s}",
                    db[j]
                );
            }
            // the same bits on one thread as on the pool
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let mut db1: Vec<f32> = (0..h).map(|j| j as f32).collect();
            let mut d1 = dy.clone();
            one.install(|| bias_gelu_backward_in_place(&fc, &b, &mut d1, &mut db1));
            assert_eq!(d1, d);
            assert_eq!(
                db1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                db.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
