//! Conv2d → ReLU → MaxPool2d(2) fused in one pass: bit-identical to the three layers run one by
//! one (forward, every gradient, the input gradient; odd sizes, padding, dilation, no bias,
//! banded images), finite differences, 1 vs 2 threads, and errors.

use crate::common;

use common::{grad_check, random_tensor, weighted_sum};
use handgrad::layers::{Conv2d, Dense, Flatten, Fusable, Layer, MaxPool2d, Mode, Padding};
use handgrad::prelude::*;
use handgrad::{Error, Tensor};
use std::borrow::Cow;

const TAIL: [Fusable; 2] = [Fusable::Relu, Fusable::MaxPool2x2];

fn bits(t: &Tensor) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

/// conv(settings) → ReLU → pool → conv 3x3 → ReLU → pool → Flatten → Dense(3): two fused groups,
/// the first one the model's first layer (parameter-only backward in training).
fn model(chw: [usize; 3], settings: &dyn Fn(Conv2d) -> Conv2d) -> Sequential {
    Sequential::new(&chw)
        .add(settings(Conv2d::new(4, 3)).relu())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(5, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(3))
        .build(&mut handgrad::init::rng(3))
        .unwrap()
}

/// Forward and backward through the layers one at a time (borrowed calls: never fused).
fn layer_by_layer(m: &mut Sequential, x: &Tensor, dout: &Tensor) -> (Tensor, Tensor) {
    let mut h = x.clone();
    for layer in m.layers_mut().iter_mut() {
        h = layer.forward(&h, Mode::Train).unwrap();
    }
    let mut d = dout.clone();
    for layer in m.layers_mut().iter_mut().rev() {
        d = layer.backward(&d).unwrap();
    }
    (h, d)
}

fn check_against_unfused(what: &str, x: &Tensor, settings: &dyn Fn(Conv2d) -> Conv2d) {
    let chw = [x.shape()[1], x.shape()[2], x.shape()[3]];
    let (mut fused, mut plain) = (model(chw, settings), model(chw, settings));
    let out = fused.forward(x, Mode::Train).unwrap();
    // the fused ReLU never ran on its own: it has nothing to back-propagate through
    let relu_err = fused.layers_mut()[1].backward(&out).unwrap_err();
    assert!(matches!(relu_err, Error::State(_)), "{what}: {relu_err}");
    let dout = random_tensor(out.shape(), 11);
    let dx = fused.backward(&dout).unwrap();
    let (out_ref, dx_ref) = layer_by_layer(&mut plain, x, &dout);
    assert_eq!(bits(&out), bits(&out_ref), "{what}: training output");
    assert_eq!(bits(&dx), bits(&dx_ref), "{what}: input gradient");
    for ((name, p), (_, q)) in fused.params().iter().zip(plain.params().iter()) {
        assert_eq!(bits(&p.grad), bits(&q.grad), "{what}: gradient of {name}");
    }
    // the training step (the first layer's parameter-only backward) and inference
    fused.zero_grad();
    plain.zero_grad();
    let labels: Vec<usize> = (0..x.shape()[0]).map(|i| i % 3).collect();
    let loss = Loss::SparseCategoricalCrossentropy;
    let a = fused.loss_backward(x, &labels, loss).unwrap();
    let b = plain.loss_backward(x, &labels, loss).unwrap();
    assert_eq!(a.to_bits(), b.to_bits(), "{what}: loss");
    for ((name, p), (_, q)) in fused.params().iter().zip(plain.params().iter()) {
        assert_eq!(
            bits(&p.grad),
            bits(&q.grad),
            "{what}: training gradient of {name}"
        );
    }
    let eval = fused.predict(x).unwrap();
    let eval_ref = plain.forward_all(x).unwrap().pop().unwrap();
    assert_eq!(bits(&eval), bits(&eval_ref), "{what}: inference output");
}

#[test]
fn fused_groups_are_bit_identical_to_the_layers_one_by_one() {
    let id = |c: Conv2d| c;
    // odd conv outputs (the last row / column is dropped by the pool)
    check_against_unfused("odd sizes", &random_tensor(&[3, 2, 17, 16], 1), &id);
    check_against_unfused("same padding", &random_tensor(&[2, 3, 14, 15], 2), &|c| {
        c.padding(Padding::Same)
    });
    check_against_unfused(
        "dilation 2, no bias",
        &random_tensor(&[2, 2, 18, 17], 3),
        &|c| c.dilation(2).with_bias(false),
    );
    // images unfolded in bands of output rows (an odd band height, rounded to whole windows)
    check_against_unfused("banded", &random_tensor(&[1, 16, 66, 62], 4), &id);
    check_against_unfused("banded, 2 images", &random_tensor(&[2, 16, 66, 62], 5), &id);
}

#[test]
fn seed_cnn_training_step_is_bit_identical_to_the_unfused_layers() {
    let x = random_tensor(&[4, 1, 28, 28], 6);
    let build =
        || handgrad::model::small_cnn(&[1, 28, 28], 10, &mut handgrad::init::rng(0)).unwrap();
    let (mut fused, mut plain) = (build(), build());
    let out = fused.forward(&x, Mode::Train).unwrap();
    let dout = random_tensor(out.shape(), 7);
    let dx = fused.backward(&dout).unwrap();
    let (out_ref, dx_ref) = layer_by_layer(&mut plain, &x, &dout);
    assert_eq!(bits(&out), bits(&out_ref), "output");
    assert_eq!(bits(&dx), bits(&dx_ref), "input gradient");
    for ((name, p), (_, q)) in fused.params().iter().zip(plain.params().iter()) {
        assert_eq!(bits(&p.grad), bits(&q.grad), "gradient of {name}");
    }
}

#[test]
fn fused_gradients_match_finite_differences() {
    let x = random_tensor(&[2, 2, 7, 8], 8);
    let mut conv = Conv2d::new(3, 3).pad(1);
    conv.build(&[2, 7, 8], &mut handgrad::init::rng(4)).unwrap();
    assert_eq!(conv.fuses(&TAIL), 2);
    let out = conv
        .forward_fused(Cow::Borrowed(&x), Mode::Train, &TAIL)
        .unwrap();
    assert_eq!(out.shape(), [2, 3, 3, 4]);
    let r = random_tensor(out.shape(), 9);
    let dx = conv.backward(&r).unwrap();
    let (w, dw) = (
        conv.params()[0].1.value.clone(),
        conv.params()[0].1.grad.clone(),
    );
    let (b, db) = (
        conv.params()[1].1.value.clone(),
        conv.params()[1].1.grad.clone(),
    );
    let loss = |w: &Tensor, b: &Tensor, xp: &Tensor| {
        let mut c = Conv2d::from_weights(w.clone(), Some(b.clone()))
            .unwrap()
            .pad(1);
        c.build(&xp.shape()[1..], &mut handgrad::init::rng(0))
            .unwrap();
        let y = c
            .forward_fused(Cow::Borrowed(xp), Mode::Eval, &TAIL)
            .unwrap();
        weighted_sum(&y, &r)
    };
    // L is piecewise linear; this seed has no kink within the step of any entry, so central
    // differences are exact up to f32 rounding
    grad_check("fused dx", &x, &dx, |xp| loss(&w, &b, xp), 1e-3, 5e-3);
    grad_check("fused dW", &w, &dw, |wp| loss(wp, &b, &x), 1e-3, 5e-3);
    grad_check("fused db", &b, &db, |bp| loss(&w, bp, &x), 1e-3, 5e-3);
    assert!(dx.iter().any(|&v| v != 0.0), "some gradient passes");
}

#[test]
fn fused_training_is_bit_identical_on_1_and_2_threads() {
    let x = random_tensor(&[6, 3, 20, 21], 10);
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                let mut m = model([3, 20, 21], &|c| c);
                let out = m.forward(&x, Mode::Train).unwrap();
                let dx = m.backward(&random_tensor(out.shape(), 12)).unwrap();
                let grads: Vec<Vec<u32>> = m.params().iter().map(|(_, p)| bits(&p.grad)).collect();
                (bits(&out), bits(&dx), grads)
            })
    };
    assert!(
        run(1) == run(2),
        "fused training differs between 1 and 2 threads"
    );
}

#[test]
fn what_does_not_fuse_runs_unfused_and_errors_name_the_shapes() {
    let mut strided = Conv2d::new(2, 3).stride(2);
    strided
        .build(&[1, 9, 9], &mut handgrad::init::rng(0))
        .unwrap();
    assert_eq!(strided.fuses(&TAIL), 0);
    assert_eq!(strided.fuses(&[Fusable::Relu]), 0);
    let x = random_tensor(&[1, 1, 9, 9], 1);
    let err = strided
        .forward_fused(Cow::Borrowed(&x), Mode::Train, &TAIL)
        .unwrap_err();
    assert!(
        matches!(&err, Error::State(m) if m.contains("cannot fuse") && m.contains("MaxPool2x2")),
        "{err}"
    );
    assert_eq!(MaxPool2d::new(3).fusable(), None);
    assert_eq!(MaxPool2d::new(2).fusable(), Some(Fusable::MaxPool2x2));
    // after a fused forward the backward takes the pooled gradient
    let mut conv = Conv2d::new(2, 3);
    conv.build(&[1, 9, 9], &mut handgrad::init::rng(0)).unwrap();
    conv.forward_fused(Cow::Borrowed(&x), Mode::Train, &TAIL)
        .unwrap();
    let err = conv.backward(&random_tensor(&[1, 2, 7, 7], 2)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("fused") && msg.contains("[1, 2, 3, 3]") && msg.contains("[1, 2, 7, 7]"),
        "{msg}"
    );
}
