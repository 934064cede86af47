//! Dense (nn.Linear): golden comparison with PyTorch, finite-difference gradient checks, errors.

use crate::common;

use common::{grad_check, random_tensor, weighted_sum, Fixture};
use handgrad::layers::{Dense, Layer, Mode};
use handgrad::ops::linear::{linear_backward, linear_forward_into};
use handgrad::Tensor;
use ndarray::{Array2, Ix1, Ix2};

fn ix2(t: &Tensor) -> ndarray::ArrayView2<'_, f32> {
    t.view().into_dimensionality::<Ix2>().unwrap()
}

#[test]
fn linear_golden_through_the_kernel() {
    let fx = Fixture::load("linear");
    let (x, w, b, gout) = (
        fx.f32("x"),
        fx.f32("weight"),
        fx.f32("bias"),
        fx.f32("grad_out"),
    );
    let mut out = Array2::zeros((4, 5));
    linear_forward_into(
        ix2(&x),
        ix2(&w),
        Some(b.view().into_dimensionality::<Ix1>().unwrap()),
        out.view_mut(),
    );
    fx.check("out", &out.into_dyn());

    let mut dx = Array2::zeros((4, 7));
    let mut dw = Array2::zeros((5, 7));
    let mut db = ndarray::Array1::zeros(5);
    linear_backward(
        ix2(&gout),
        ix2(&x),
        ix2(&w),
        Some(dx.view_mut()),
        dw.view_mut(),
        Some(db.view_mut()),
    );
    fx.check("grad.x", &dx.into_dyn());
    fx.check("grad.weight", &dw.into_dyn());
    fx.check("grad.bias", &db.into_dyn());
}

#[test]
fn linear_golden_through_the_layer_and_gradients_accumulate() {
    let fx = Fixture::load("linear");
    let mut layer = Dense::from_weights(fx.f32("weight"), Some(fx.f32("bias"))).unwrap();
    let out = layer.forward(&fx.f32("x"), Mode::Train).unwrap();
    fx.check("out", &out);
    let dx = layer.backward(&fx.f32("grad_out")).unwrap();
    fx.check("grad.x", &dx);
    let grads: Vec<Tensor> = layer.params().iter().map(|(_, p)| p.grad.clone()).collect();
    fx.check("grad.weight", &grads[0]);
    fx.check("grad.bias", &grads[1]);
    // A second backward adds the same gradient again (gradients accumulate until zero_grad).
    layer.backward(&fx.f32("grad_out")).unwrap();
    let twice = layer.params()[0].1.grad.clone();
    fx.check("grad.weight", &(twice / 2.0));
}

#[test]
fn dense_gradients_match_finite_differences() {
    let mut rng = handgrad::init::rng(3);
    let mut layer = Dense::new(4);
    layer.build(&[6], &mut rng).unwrap();
    // (B, T, C) input: Dense applies to the last axis.
    let x = random_tensor(&[2, 3, 6], 1);
    let r = random_tensor(&[2, 3, 4], 2);
    let out = layer.forward(&x, Mode::Train).unwrap();
    assert_eq!(out.shape(), &[2, 3, 4]);
    let dx = layer.backward(&r).unwrap();
    let (w, b) = {
        let p = layer.params();
        (p[0].1.clone(), p[1].1.clone())
    };
    // f32 forward with f64-accumulated loss: eps 1e-2 keeps rounding noise (~1e-7/1e-2) well
    // below the 1e-3 tolerance; the layer is linear so truncation error is zero.
    let loss_x = |xp: &Tensor| {
        let mut l = Dense::from_weights(w.value.clone(), Some(b.value.clone())).unwrap();
        weighted_sum(&l.forward(xp, Mode::Eval).unwrap(), &r)
    };
    grad_check("Dense dx", &x, &dx, loss_x, 1e-2, 1e-3);
    let loss_w = |wp: &Tensor| {
        let mut l = Dense::from_weights(wp.clone(), Some(b.value.clone())).unwrap();
        weighted_sum(&l.forward(&x, Mode::Eval).unwrap(), &r)
    };
    grad_check("Dense dW", &w.value, &w.grad, loss_w, 1e-2, 1e-3);
    let loss_b = |bp: &Tensor| {
        let mut l = Dense::from_weights(w.value.clone(), Some(bp.clone())).unwrap();
        weighted_sum(&l.forward(&x, Mode::Eval).unwrap(), &r)
    };
    grad_check("Dense db", &b.value, &b.grad, loss_b, 1e-2, 1e-3);
}

#[test]
fn dense_without_bias_has_only_a_weight() {
    let mut rng = handgrad::init::rng(0);
    let mut layer = Dense::new(3).with_bias(false);
    layer.build(&[5], &mut rng).unwrap();
    let names: Vec<String> = layer.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight"]);
    let x = random_tensor(&[2, 5], 9);
    let out = layer.forward(&x, Mode::Eval).unwrap();
    let w = layer.params()[0].1.value.clone();
    let want = x
        .view()
        .into_dimensionality::<Ix2>()
        .unwrap()
        .dot(&ix2(&w).t());
    for (a, e) in out.iter().zip(want.iter()) {
        assert!((a - e).abs() < 1e-5);
    }
}

#[test]
fn pytorch_default_init_bounds() {
    let mut rng = handgrad::init::rng(0);
    let mut layer = Dense::new(50);
    layer.build(&[100], &mut rng).unwrap();
    let bound = 1.0 / 100f32.sqrt();
    for (name, p) in layer.params() {
        let max = p.value.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= bound, "{name}: {max} > {bound}");
        assert!(max > 0.8 * bound, "{name}: values do not span U(-b, b)");
    }
}

#[test]
fn wrong_width_is_an_error_naming_the_shapes() {
    let mut rng = handgrad::init::rng(0);
    let mut layer = Dense::new(5);
    layer.build(&[7], &mut rng).unwrap();
    let err = layer
        .forward(&Tensor::zeros(ndarray::IxDyn(&[4, 6])), Mode::Train)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Dense(in=7, out=5)") && msg.contains("(B, 7)") && msg.contains("[4, 6]"),
        "{msg}"
    );
}

#[test]
fn wrong_rank_is_an_error_naming_the_shapes() {
    let mut rng = handgrad::init::rng(0);
    let mut layer = Dense::new(5);
    layer.build(&[7], &mut rng).unwrap();
    let err = layer
        .forward(&Tensor::zeros(ndarray::IxDyn(&[7])), Mode::Train)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("(B, 7)") && msg.contains("[7]"), "{msg}");
    assert!(matches!(err, handgrad::Error::Shape { .. }));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut layer = Dense::new(5);
    let msg = layer
        .forward(&Tensor::zeros(ndarray::IxDyn(&[2, 3])), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("before build"), "{msg}");
    let mut rng = handgrad::init::rng(0);
    layer.build(&[3], &mut rng).unwrap();
    let msg = layer
        .backward(&Tensor::zeros(ndarray::IxDyn(&[2, 5])))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("without a preceding forward"), "{msg}");
    layer
        .forward(&Tensor::zeros(ndarray::IxDyn(&[2, 3])), Mode::Train)
        .unwrap();
    let msg = layer
        .backward(&Tensor::zeros(ndarray::IxDyn(&[2, 4])))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[2, 4]"), "{msg}");
    let msg = Dense::new(0).build(&[3], &mut rng).unwrap_err().to_string();
    assert!(msg.contains("units") && msg.contains('0'), "{msg}");
    let msg = Dense::from_weights(
        Tensor::zeros(ndarray::IxDyn(&[5, 3])),
        Some(Tensor::zeros(ndarray::IxDyn(&[4]))),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("[5]") && msg.contains("[4]"), "{msg}");
}

/// A long reduction into a small output (split into fixed chunks of inputs): against an f64
/// reference, and bit-identical on 1 and 2 threads.
#[test]
fn long_reduction_matches_an_f64_reference_on_any_thread_count() {
    let (b, i, o) = (5, 9000, 7);
    let x = random_tensor(&[b, i], 21);
    let w = random_tensor(&[o, i], 22);
    let bias = random_tensor(&[o], 23);
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                let mut out = Array2::zeros((b, o));
                linear_forward_into(
                    ix2(&x),
                    ix2(&w),
                    Some(bias.view().into_dimensionality::<Ix1>().unwrap()),
                    out.view_mut(),
                );
                out
            })
    };
    let (one, two) = (run(1), run(2));
    let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&one), bits(&two), "1 vs 2 threads");
    for ((r, c), &got) in one.indexed_iter() {
        let want: f64 = bias[[c]] as f64
            + (0..i)
                .map(|k| x[[r, k]] as f64 * w[[c, k]] as f64)
                .sum::<f64>();
        assert!(
            (got as f64 - want).abs() <= 1e-3 * want.abs().max(1.0),
            "out[{r}, {c}] = {got}, f64 reference {want}"
        );
    }
}
