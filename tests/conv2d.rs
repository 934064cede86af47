//! Conv2d: golden (PyTorch), finite differences, output sizes, determinism, errors.

mod common;

use common::{grad_check, random_tensor, weighted_sum, Fixture};
use handgrad::layers::{Conv2d, Layer, Mode, Padding};
use handgrad::ops::conv2d::conv_out_len;
use handgrad::Tensor;
use ndarray::IxDyn;

#[test]
fn conv2d_golden_all_fixtures() {
    for (name, stride, pad) in [
        ("conv2d_k3s1p0", 1, 0),
        ("conv2d_k3s2p1", 2, 1),
        ("conv2d_k1s1p0", 1, 0),
        ("conv2d_k5s1p2", 1, 2),
    ] {
        let fx = Fixture::load(name);
        let x = fx.f32("x");
        let mut conv = Conv2d::from_weights(fx.f32("weight"), Some(fx.f32("bias")))
            .unwrap()
            .stride(stride)
            .pad(pad);
        conv.build(&x.shape()[1..], &mut handgrad::init::rng(0))
            .unwrap();
        let out = conv.forward(&x, Mode::Train).unwrap();
        fx.check("out", &out);
        let dx = conv.backward(&fx.f32("grad_out")).unwrap();
        fx.check("grad.x", &dx);
        let p = conv.params();
        fx.check("grad.weight", &p[0].1.grad);
        fx.check("grad.bias", &p[1].1.grad);
    }
}

/// `settings` applies stride/padding/dilation/kernel to a new layer or to one made from weights.
fn check_layer(what: &str, out: usize, k: usize, settings: &dyn Fn(Conv2d) -> Conv2d, x: &Tensor) {
    let mut rng = handgrad::init::rng(1);
    let mut conv = settings(Conv2d::new(out, k));
    conv.build(&x.shape()[1..], &mut rng).unwrap();
    let out = conv.forward(x, Mode::Train).unwrap();
    let r = random_tensor(out.shape(), 9);
    let dx = conv.backward(&r).unwrap();
    let params: Vec<(Tensor, Tensor)> = conv
        .params()
        .iter()
        .map(|(_, p)| (p.value.clone(), p.grad.clone()))
        .collect();
    let with = |w: &Tensor, b: Option<&Tensor>, xp: &Tensor| {
        let mut c = settings(Conv2d::from_weights(w.clone(), b.cloned()).unwrap());
        c.build(&xp.shape()[1..], &mut handgrad::init::rng(0))
            .unwrap();
        weighted_sum(&c.forward(xp, Mode::Eval).unwrap(), &r)
    };
    let b = params.get(1).map(|p| &p.0);
    // Linear in each argument: central differences are exact up to f32 rounding (eps 1e-2).
    grad_check(
        &format!("{what} dx"),
        x,
        &dx,
        |xp| with(&params[0].0, b, xp),
        1e-2,
        1e-3,
    );
    grad_check(
        &format!("{what} dW"),
        &params[0].0,
        &params[0].1,
        |wp| with(wp, b, x),
        1e-2,
        1e-3,
    );
    if let Some((bv, bg)) = params.get(1) {
        grad_check(
            &format!("{what} db"),
            bv,
            bg,
            |bp| with(&params[0].0, Some(bp), x),
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let x = random_tensor(&[2, 3, 9, 8], 4);
    check_layer("stride 2 pad 1", 4, 3, &|c| c.stride(2).pad(1), &x);
    check_layer("dilation 2", 3, 3, &|c| c.dilation(2), &x);
    check_layer(
        "rect same",
        2,
        3,
        &|c| c.kernel(3, 5).padding(Padding::Same),
        &x,
    );
    check_layer(
        "no bias, stride 2x1",
        2,
        2,
        &|c| c.stride_hw(2, 1).with_bias(false),
        &x,
    );
    check_layer(
        "one image",
        2,
        3,
        &|c| c.pad(1),
        &random_tensor(&[1, 2, 5, 5], 3),
    );
}

#[test]
fn output_sizes_follow_pytorch() {
    for &(size, k, s, p, d, want) in &[
        (8, 3, 1, 0, 1, 6),
        (5, 3, 2, 1, 1, 3),
        (7, 3, 2, 1, 1, 4),
        (9, 5, 1, 2, 1, 9),
        (9, 3, 1, 0, 2, 5),
        (6, 1, 1, 0, 1, 6),
        (4, 3, 3, 1, 1, 2),
    ] {
        assert_eq!(
            conv_out_len(size, k, s, p, d),
            Some(want),
            "size {size} k {k} s {s} p {p} d {d}"
        );
    }
    assert_eq!(conv_out_len(2, 3, 1, 0, 1), None);
    let mut c = Conv2d::new(4, 5).padding(Padding::Same);
    assert_eq!(
        c.build(&[3, 11, 7], &mut handgrad::init::rng(0)).unwrap(),
        vec![4, 11, 7]
    );
}

#[test]
fn conv2d_is_bit_identical_on_1_and_2_threads() {
    let x = random_tensor(&[8, 3, 12, 12], 5);
    let r = random_tensor(&[8, 6, 10, 10], 6);
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                let mut c = Conv2d::new(6, 3);
                c.build(&[3, 12, 12], &mut handgrad::init::rng(2)).unwrap();
                let out = c.forward(&x, Mode::Train).unwrap();
                let dx = c.backward(&r).unwrap();
                let grads: Vec<Tensor> = c.params().iter().map(|(_, p)| p.grad.clone()).collect();
                (out, dx, grads)
            })
    };
    assert!(run(1) == run(2));
}

#[test]
fn conv2d_errors_name_the_shapes() {
    let mut rng = handgrad::init::rng(0);
    let mut c = Conv2d::new(8, 3);
    c.build(&[3, 16, 16], &mut rng).unwrap();
    let msg = c
        .forward(&Tensor::zeros(IxDyn(&[2, 16, 16, 3])), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("NHWC") && msg.contains("(N, 3, 16, 16)") && msg.contains("[2, 16, 16, 3]"),
        "{msg}"
    );
    let msg = c
        .forward(&Tensor::zeros(IxDyn(&[3, 16, 16])), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[3, 16, 16]"), "{msg}");
    let msg = Conv2d::new(8, 5)
        .build(&[3, 4, 4], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("5x5") && msg.contains("[3, 4, 4]"), "{msg}");
    let msg = Conv2d::new(8, 3)
        .stride(0)
        .build(&[3, 8, 8], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("stride") && msg.contains('0'), "{msg}");
    let msg = Conv2d::new(8, 3)
        .stride(2)
        .padding(Padding::Same)
        .build(&[3, 8, 8], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("same") && msg.contains("stride"), "{msg}");
    let msg = Conv2d::new(8, 3)
        .build(&[8, 8], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(C, H, W)"), "{msg}");
    let mut w = Conv2d::from_weights(Tensor::zeros(IxDyn(&[4, 2, 3, 3])), None).unwrap();
    let msg = w.build(&[3, 8, 8], &mut rng).unwrap_err().to_string();
    assert!(
        msg.contains("2 channels") && msg.contains("[3, 8, 8]"),
        "{msg}"
    );
    // Gradients accumulate over two backward calls.
    let x = random_tensor(&[2, 3, 16, 16], 1);
    c.forward(&x, Mode::Train).unwrap();
    let d = random_tensor(&[2, 8, 14, 14], 2);
    c.backward(&d).unwrap();
    let once = c.params()[0].1.grad.clone();
    c.backward(&d).unwrap();
    common::assert_close(
        &c.params()[0].1.grad,
        &(once * 2.0),
        1e-6,
        1e-6,
        "accumulated dW",
    );
}
