//! Central finite-difference gradient checks of the activation, softmax and cross-entropy
//! kernels and of the activation and dropout layers, on `L = Σ out ⊙ r` with a fixed random `r`.
//!
//! Step and tolerance: the functions are evaluated in f32 and `L` is accumulated in f64
//! (`common::weighted_sum`). With `eps = 1e-2` the truncation error of the central difference is
//! `eps²·|f'''|/6 ≈ 2e-5·|f'''|` and the f32 rounding of the outputs contributes about
//! `2⁻²⁴·Σ|out·r| / (2·eps)`, a few 1e-5 here; the largest error observed over all the checks
//! below is under 1e-4 (relative to `max(1, |num|, |ana|)`). The tolerance 1e-3 keeps a 10x
//! margin over that, while a wrong factor, sign or missing term in a backward formula gives an
//! error of the order of the gradient itself (a 5 % error in one term already fails). A smaller
//! `eps` would let f32 rounding dominate, a larger one curvature. Inputs are kept away from
//! ReLU's kink at 0, where a finite difference is meaningless. Where gradients are small (softmax
//! rows, the mean cross-entropy), `r` or the loss is scaled up so they are O(1) and the
//! tolerance bites.

use crate::common;

use common::{grad_check, random_tensor, weighted_sum};
use handgrad::layers::{Dropout, Gelu, Relu, Sigmoid, Softmax, Tanh};
use handgrad::ops::{activation as act, cross_entropy as ce, softmax as sm};
use handgrad::{Layer, Mode, Tensor};
use ndarray::{ArrayViewD, Ix2};

const EPS: f32 = 1e-2;
const TOL: f64 = 1e-3;

/// `x` in [-3, 3) with every entry at least 0.1 away from 0 (ReLU's kink).
fn input(shape: &[usize], seed: u64) -> Tensor {
    random_tensor(shape, seed).mapv(|v| {
        let v = 3.0 * v;
        if v.abs() < 0.1 {
            v.signum() * 0.1 + v
        } else {
            v
        }
    })
}

/// Checks an op `f(x)` whose vector-Jacobian product with `r` is `vjp(x, r)`.
fn check_op(
    what: &str,
    shape: &[usize],
    r_scale: f32,
    f: impl Fn(ArrayViewD<f32>) -> Tensor,
    vjp: impl Fn(&Tensor, &Tensor) -> Tensor,
) {
    let x = input(shape, 11);
    let r = random_tensor(shape, 12) * r_scale;
    let analytic = vjp(&x, &r);
    grad_check(
        what,
        &x,
        &analytic,
        |x| weighted_sum(&f(x.view()), &r),
        EPS,
        TOL,
    );
}

#[test]
fn relu_gradient() {
    check_op("relu", &[3, 4, 5], 1.0, act::relu_forward, |x, r| {
        act::relu_backward(x.view(), r.view())
    });
}

#[test]
fn gelu_gradient() {
    check_op("gelu", &[4, 17], 1.0, act::gelu_forward, |x, r| {
        act::gelu_backward(x.view(), r.view())
    });
}

#[test]
fn sigmoid_gradient() {
    check_op("sigmoid", &[4, 17], 1.0, act::sigmoid_forward, |x, r| {
        act::sigmoid_backward(act::sigmoid_forward(x.view()).view(), r.view())
    });
}

#[test]
fn tanh_gradient() {
    check_op("tanh", &[4, 17], 1.0, act::tanh_forward, |x, r| {
        act::tanh_backward(act::tanh_forward(x.view()).view(), r.view())
    });
}

#[test]
fn softmax_gradient() {
    // Rows of 6 over a rank-3 input; r scaled by 10 so dx = y ⊙ (r − Σ r⊙y) is O(1).
    check_op("softmax", &[2, 3, 6], 10.0, sm::softmax_forward, |x, r| {
        sm::softmax_backward(sm::softmax_forward(x.view()).view(), r.view())
    });
}

#[test]
fn log_softmax_gradient() {
    check_op(
        "log_softmax",
        &[2, 3, 6],
        1.0,
        sm::log_softmax_forward,
        |x, r| sm::log_softmax_backward(sm::log_softmax_forward(x.view()).view(), r.view()),
    );
}

#[test]
fn softmax_cross_entropy_gradient() {
    // Loss scaled by N through the upstream dloss (a sum over the batch), so the gradient
    // entries p − onehot are O(1) and the backward's dloss scaling is checked too.
    let (n, v) = (5, 7);
    let labels = [3usize, 0, 6, 2, 3];
    let x = input(&[n, v], 21);
    let dloss = n as f32;
    let (_, probs) =
        ce::softmax_cross_entropy_forward(x.view().into_dimensionality::<Ix2>().unwrap(), &labels);
    let mut analytic = ndarray::Array2::zeros((n, v));
    ce::softmax_cross_entropy_backward_into(probs.view(), &labels, dloss, analytic.view_mut());
    grad_check(
        "softmax_cross_entropy",
        &x,
        &analytic.into_dyn(),
        |x| {
            let x2 = x.view().into_dimensionality::<Ix2>().unwrap();
            // Per-sample losses summed in f64: the loss itself is f64-accurate.
            let (losses, _) = ce::softmax_cross_entropy_per_sample(x2, &labels);
            losses.iter().map(|&l| l as f64).sum::<f64>() * (dloss as f64 / n as f64)
        },
        EPS,
        TOL,
    );
}

#[test]
fn sparse_categorical_crossentropy_gradient() {
    let labels = [1usize, 4, 0];
    let x = input(&[3, 5], 31);
    let (_, grad) = ce::sparse_categorical_crossentropy(&x, &labels).unwrap();
    // Compare N·grad with the difference quotient of N·loss, so entries are O(1).
    let n = labels.len() as f64;
    grad_check(
        "sparse_categorical_crossentropy",
        &x,
        &(grad * n as f32),
        |x| ce::sparse_categorical_crossentropy(x, &labels).unwrap().0 as f64 * n,
        EPS,
        TOL,
    );
}

/// Gradient check of a layer: analytic from Train forward + backward(r); numeric from `make()`
/// fresh layers run in `Mode::Train` (fresh, so a seeded layer draws the same mask each time).
fn check_layer(what: &str, shape: &[usize], r_scale: f32, make: impl Fn() -> Box<dyn Layer>) {
    let x = input(shape, 41);
    let r = random_tensor(shape, 42) * r_scale;
    let mut layer = make();
    let y = layer.forward(&x, Mode::Train).unwrap();
    assert_eq!(y.shape(), x.shape(), "{what}: output shape");
    let analytic = layer.backward(&r).unwrap();
    grad_check(
        what,
        &x,
        &analytic,
        |x| weighted_sum(&make().forward(x, Mode::Train).unwrap(), &r),
        EPS,
        TOL,
    );
}

#[test]
fn activation_layer_gradients() {
    check_layer("Relu layer", &[3, 11], 1.0, || Box::new(Relu::new()));
    check_layer("Gelu layer", &[3, 11], 1.0, || Box::new(Gelu::new()));
    check_layer("Sigmoid layer", &[3, 11], 1.0, || Box::new(Sigmoid::new()));
    check_layer("Tanh layer", &[3, 11], 1.0, || Box::new(Tanh::new()));
    check_layer("Softmax layer", &[2, 3, 5], 10.0, || {
        Box::new(Softmax::new())
    });
}

#[test]
fn dropout_layer_gradient_with_a_fixed_mask() {
    // Each evaluation builds a fresh Dropout with the same seed: the same mask every time.
    check_layer("Dropout layer", &[4, 25], 1.0, || {
        Box::new(Dropout::with_seed(0.4, 9))
    });
}

#[test]
fn dropout_backward_is_the_forward_mask() {
    // Dropout is linear in x: dx = dout ⊙ (y / x) exactly, for the mask of the last forward.
    let x = input(&[8, 64], 51);
    let dout = random_tensor(&[8, 64], 52);
    let mut layer = Dropout::with_seed(0.25, 3);
    let y = layer.forward(&x, Mode::Train).unwrap();
    let dx = layer.backward(&dout).unwrap();
    let scale = 1.0f32 / (1.0 - 0.25);
    for ((&y, &x), (&dx, &g)) in y.iter().zip(&x).zip(dx.iter().zip(&dout)) {
        if y == 0.0 {
            assert_eq!(dx, 0.0);
        } else {
            assert_eq!(y, x * scale);
            assert_eq!(dx, g * scale);
        }
    }
}
