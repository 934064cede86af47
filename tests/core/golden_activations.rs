//! Golden tests of the activations, softmax, log-softmax and the fused softmax cross-entropy
//! against PyTorch float64 references (`tests/fixtures`), through the `ops` kernels and through
//! the layers (a `Mode::Train` forward, then backward with the fixture's `grad_out`), plus the
//! error and state contracts of the layers and of `sparse_categorical_crossentropy`.

use crate::common;

use common::Fixture;
use handgrad::layers::{Gelu, Relu, Softmax};
use handgrad::ops::{activation as act, cross_entropy as ce, softmax as sm};
use handgrad::{Error, Layer, Mode, Tensor};
use ndarray::{Ix2, IxDyn};

/// Forward `Train` then backward with the fixture's `grad_out`; checks `out` and `grad.x`.
fn check_layer(fx: &Fixture, layer: &mut dyn Layer) {
    let x = fx.f32("x");
    let mut rng = handgrad::init::rng(0);
    let built = layer.build(&x.shape()[1..], &mut rng).expect("build");
    assert_eq!(
        built,
        x.shape()[1..].to_vec(),
        "{}: output shape",
        layer.describe()
    );
    let out = layer.forward(&x, Mode::Train).expect("forward");
    fx.check("out", &out);
    let dx = layer.backward(&fx.f32("grad_out")).expect("backward");
    fx.check("grad.x", &dx);
}

// ------------------------------------------------------------------------------- ops kernels

#[test]
fn relu_ops_match_torch_exactly() {
    let fx = Fixture::load("relu");
    assert_eq!(fx.tol("out"), (0.0, 0.0), "relu must be exact");
    let x = fx.f32("x");
    let out = act::relu_forward(x.view());
    fx.check("out", &out);
    fx.check(
        "grad.x",
        &act::relu_backward(x.view(), fx.f32("grad_out").view()),
    );
    // The backward may be given the output instead of the input.
    fx.check(
        "grad.x",
        &act::relu_backward(out.view(), fx.f32("grad_out").view()),
    );
}

#[test]
fn relu_into_forms_match_torch_exactly() {
    let fx = Fixture::load("relu");
    let x = fx.f32("x");
    let mut out = Tensor::zeros(x.raw_dim());
    act::relu_forward_into(x.as_slice().unwrap(), out.as_slice_mut().unwrap());
    fx.check("out", &out);
    let mut dx = Tensor::zeros(x.raw_dim());
    act::relu_backward_into(
        x.as_slice().unwrap(),
        fx.f32("grad_out").as_slice().unwrap(),
        dx.as_slice_mut().unwrap(),
    );
    fx.check("grad.x", &dx);
}

#[test]
fn gelu_new_ops_match_torch() {
    let fx = Fixture::load("gelu_new");
    let x = fx.f32("x");
    fx.check("out", &act::gelu_forward(x.view()));
    fx.check(
        "grad.x",
        &act::gelu_backward(x.view(), fx.f32("grad_out").view()),
    );

    let mut out = Tensor::zeros(x.raw_dim());
    act::gelu_forward_into(x.as_slice().unwrap(), out.as_slice_mut().unwrap());
    fx.check("out", &out);
    let mut dx = Tensor::zeros(x.raw_dim());
    act::gelu_backward_into(
        x.as_slice().unwrap(),
        fx.f32("grad_out").as_slice().unwrap(),
        dx.as_slice_mut().unwrap(),
    );
    fx.check("grad.x", &dx);
}

#[test]
fn gelu_new_ops_match_torch_on_a_transposed_view() {
    // Non-contiguous input: the result must not depend on the memory layout.
    let fx = Fixture::load("gelu_new");
    let xt = fx.f32("x").reversed_axes();
    let out = act::gelu_forward(xt.view()).reversed_axes();
    fx.check("out", &out.as_standard_layout().into_owned());
}

#[test]
fn softmax_ops_match_torch() {
    let fx = Fixture::load("softmax");
    let x = fx.f32("x");
    let y = sm::softmax_forward(x.view());
    fx.check("out", &y);
    fx.check(
        "grad.x",
        &sm::softmax_backward(y.view(), fx.f32("grad_out").view()),
    );

    let c = x.shape()[1];
    let mut y2 = Tensor::zeros(x.raw_dim());
    sm::softmax_forward_into(x.as_slice().unwrap(), y2.as_slice_mut().unwrap(), c);
    assert_eq!(y2, y, "softmax_forward_into must equal softmax_forward");
    let mut dx = Tensor::zeros(x.raw_dim());
    sm::softmax_backward_into(
        y.as_slice().unwrap(),
        fx.f32("grad_out").as_slice().unwrap(),
        dx.as_slice_mut().unwrap(),
        c,
    );
    fx.check("grad.x", &dx);
}

#[test]
fn softmax_ops_match_torch_as_rank_3() {
    // (4, 10) seen as (2, 2, 10): rows are over the last axis whatever the rank.
    let fx = Fixture::load("softmax");
    let x3 = fx
        .f32("x")
        .into_shape_with_order(IxDyn(&[2, 2, 10]))
        .unwrap();
    let g3 = fx
        .f32("grad_out")
        .into_shape_with_order(IxDyn(&[2, 2, 10]))
        .unwrap();
    let y3 = sm::softmax_forward(x3.view());
    let dx3 = sm::softmax_backward(y3.view(), g3.view());
    fx.check("out", &y3.into_shape_with_order(IxDyn(&[4, 10])).unwrap());
    fx.check(
        "grad.x",
        &dx3.into_shape_with_order(IxDyn(&[4, 10])).unwrap(),
    );
}

#[test]
fn log_softmax_ops_match_torch() {
    let fx = Fixture::load("log_softmax");
    let x = fx.f32("x");
    let y = sm::log_softmax_forward(x.view());
    fx.check("out", &y);
    fx.check(
        "grad.x",
        &sm::log_softmax_backward(y.view(), fx.f32("grad_out").view()),
    );

    let c = x.shape()[1];
    let mut y2 = Tensor::zeros(x.raw_dim());
    sm::log_softmax_forward_into(x.as_slice().unwrap(), y2.as_slice_mut().unwrap(), c);
    fx.check("out", &y2);
    let mut dx = Tensor::zeros(x.raw_dim());
    sm::log_softmax_backward_into(
        y.as_slice().unwrap(),
        fx.f32("grad_out").as_slice().unwrap(),
        dx.as_slice_mut().unwrap(),
        c,
    );
    fx.check("grad.x", &dx);
}

fn ce_inputs(fx: &Fixture) -> (Tensor, Vec<usize>) {
    let labels = fx.i64("labels").into_iter().map(|l| l as usize).collect();
    (fx.f32("logits"), labels)
}

#[test]
fn softmax_cross_entropy_ops_match_torch() {
    let fx = Fixture::load("softmax_cross_entropy");
    let (logits, labels) = ce_inputs(&fx);
    let logits2 = logits.view().into_dimensionality::<Ix2>().unwrap();

    let (loss, probs) = ce::softmax_cross_entropy_forward(logits2, &labels);
    fx.check("loss", &Tensor::from_elem(IxDyn(&[]), loss));
    let dlogits = ce::softmax_cross_entropy_backward(probs.view(), &labels);
    fx.check("grad.logits", &dlogits.into_dyn());

    let (per_sample, probs2) = ce::softmax_cross_entropy_per_sample(logits2, &labels);
    fx.check("debug.per_sample_loss", &per_sample.into_dyn());
    assert_eq!(probs2, probs);

    // The buffer forms, with an upstream dloss = 2 (gradient doubles) and in place.
    let mut dl = ndarray::Array2::zeros(probs.raw_dim());
    ce::softmax_cross_entropy_backward_into(probs.view(), &labels, 2.0, dl.view_mut());
    fx.check("grad.logits", &(dl.into_dyn() * 0.5));
    let mut p = probs.clone();
    ce::softmax_cross_entropy_backward_in_place(p.view_mut(), &labels, 1.0);
    fx.check("grad.logits", &p.into_dyn());
}

#[test]
fn sparse_categorical_crossentropy_matches_torch() {
    let fx = Fixture::load("softmax_cross_entropy");
    let (logits, labels) = ce_inputs(&fx);
    let (loss, dlogits) = ce::sparse_categorical_crossentropy(&logits, &labels).unwrap();
    fx.check("loss", &Tensor::from_elem(IxDyn(&[]), loss));
    fx.check("grad.logits", &dlogits);
}

// ------------------------------------------------------------------------------------ layers

#[test]
fn relu_layer_matches_torch_exactly() {
    let fx = Fixture::load("relu");
    let mut layer = Relu::new();
    assert_eq!(layer.describe(), "ReLU");
    check_layer(&fx, &mut layer);
}

#[test]
fn gelu_layer_matches_torch() {
    let fx = Fixture::load("gelu_new");
    let mut layer = Gelu::new();
    assert_eq!(layer.describe(), "GELU(tanh)");
    check_layer(&fx, &mut layer);
}

#[test]
fn softmax_layer_matches_torch() {
    let fx = Fixture::load("softmax");
    let mut layer = Softmax::new();
    assert_eq!(layer.describe(), "Softmax");
    check_layer(&fx, &mut layer);
}

#[test]
fn activation_layers_describe_themselves_and_have_no_params() {
    use handgrad::layers::{Sigmoid, Tanh};
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Relu::new()),
        Box::new(Gelu::default()),
        Box::new(Sigmoid::new()),
        Box::new(Tanh::new()),
        Box::new(Softmax::new()),
    ];
    let names: Vec<String> = layers.iter().map(|l| l.describe()).collect();
    assert_eq!(names, ["ReLU", "GELU(tanh)", "Sigmoid", "Tanh", "Softmax"]);
    assert!(layers.iter().all(|l| l.params().is_empty()));
}

#[test]
fn activation_layer_backward_without_train_forward_is_a_state_error() {
    let mut layer = Gelu::new();
    let x = Tensor::ones(IxDyn(&[2, 3]));
    let err = layer.backward(&x).unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");
    assert!(err.to_string().contains("GELU(tanh)"), "{err}");

    // An Eval forward caches nothing and forgets an earlier Train cache.
    layer.forward(&x, Mode::Train).unwrap();
    layer.forward(&x, Mode::Eval).unwrap();
    let err = layer.backward(&x).unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");
}

#[test]
fn activation_layer_backward_with_wrong_dout_shape_is_a_shape_error() {
    let mut layer = Softmax::new();
    layer
        .forward(&Tensor::ones(IxDyn(&[2, 3])), Mode::Train)
        .unwrap();
    let err = layer.backward(&Tensor::ones(IxDyn(&[3, 2]))).unwrap_err();
    match &err {
        Error::Shape { got, .. } => assert_eq!(got, &vec![3, 2]),
        other => panic!("expected Error::Shape, got {other}"),
    }
    assert!(
        err.to_string().contains("[2, 3]"),
        "message names the expected shape: {err}"
    );
}

// ---------------------------------------------------------------- sparse_categorical_crossentropy

#[test]
fn crossentropy_label_count_mismatch_names_both_counts() {
    let logits = Tensor::zeros(IxDyn(&[4, 3]));
    let err = ce::sparse_categorical_crossentropy(&logits, &[0, 1, 2]).unwrap_err();
    assert!(matches!(err, Error::Label { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("3 labels") && msg.contains("4 rows"), "{msg}");
    assert!(
        msg.contains("[4, 3]"),
        "message names the logits shape: {msg}"
    );
}

#[test]
fn crossentropy_label_out_of_range_names_label_index_and_classes() {
    let logits = Tensor::zeros(IxDyn(&[3, 5]));
    let err = ce::sparse_categorical_crossentropy(&logits, &[0, 4, 5]).unwrap_err();
    assert!(matches!(err, Error::Label { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("label 5") && msg.contains("index 2") && msg.contains("V = 5"),
        "{msg}"
    );
}

#[test]
fn crossentropy_rejects_rank_3_logits() {
    let logits = Tensor::zeros(IxDyn(&[2, 3, 4]));
    let err = ce::sparse_categorical_crossentropy(&logits, &[0, 1]).unwrap_err();
    match &err {
        Error::Shape { got, expected, .. } => {
            assert_eq!(got, &vec![2, 3, 4]);
            assert!(expected.contains("(B, V)"), "{expected}");
        }
        other => panic!("expected Error::Shape, got {other}"),
    }
}

#[test]
fn crossentropy_rejects_an_empty_batch() {
    let err = ce::sparse_categorical_crossentropy(&Tensor::zeros(IxDyn(&[0, 3])), &[]).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}
