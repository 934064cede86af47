//! The whole seed CNN against PyTorch: logits, loss, every parameter gradient, and the
//! parameters after one Adam step (`cnn_train` fixture).

use crate::common;

use common::Fixture;
use handgrad::layers::{Conv2d, Flatten, MaxPool2d};
use handgrad::model::Targets;
use handgrad::prelude::*;
use ndarray::IxDyn;
use std::collections::BTreeMap;

/// The seed CNN with PyTorch's `nn.Sequential` indices (0 conv, 3 conv, 7 fc1, 9 fc2).
fn seed_cnn(input: &[usize]) -> Sequential {
    let mut rng = handgrad::init::rng(0);
    Sequential::new(input)
        .add(Conv2d::new(32, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(64, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(64).relu())
        .add(Dense::new(10))
        .build(&mut rng)
        .unwrap()
}

#[test]
fn seed_cnn_matches_pytorch_forward_gradients_and_adam_step() {
    let fx = Fixture::load("cnn_train");
    let mut model = seed_cnn(&[3, 16, 16]);
    let names = [
        "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
    ];
    let state: BTreeMap<String, Tensor> =
        names.iter().map(|n| (n.to_string(), fx.f32(n))).collect();
    model.load_state_dict(&state).unwrap();
    let x = fx.f32("x");
    let labels: Vec<usize> = fx.i64("labels").into_iter().map(|l| l as usize).collect();

    let logits = model.predict(&x).unwrap();
    fx.check("logits", &logits);

    model.zero_grad();
    let (loss, seen) = model
        .loss_backward_targets(
            &x,
            Targets::Labels(&labels),
            Loss::SparseCategoricalCrossentropy,
        )
        .unwrap();
    fx.check("logits", &seen);
    fx.check("loss", &Tensor::from_elem(IxDyn(&[]), loss));
    for (name, p) in model.params() {
        fx.check(&format!("grad.{name}"), &p.grad);
    }
    let mut adam = Adam::new(1e-3);
    adam.step(&mut model.params_mut()).unwrap();
    for (name, p) in model.params() {
        fx.check(&format!("adam.{name}"), &p.value);
    }
}

#[test]
fn seed_cnn_intermediate_activations_match() {
    let fx = Fixture::load("cnn_train");
    let mut model = seed_cnn(&[3, 16, 16]);
    let names = [
        "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias",
    ];
    let state: BTreeMap<String, Tensor> =
        names.iter().map(|n| (n.to_string(), fx.f32(n))).collect();
    model.load_state_dict(&state).unwrap();
    let outs = model.forward_all(&fx.f32("x")).unwrap();
    fx.check("debug.conv1", &outs[0]);
    fx.check("debug.pool1", &outs[2]);
    fx.check("debug.conv2", &outs[3]);
    fx.check("debug.pool2", &outs[5]);
    fx.check("debug.fc1", &outs[7]);
}

#[test]
fn seed_model_parameter_counts_match_keras() {
    let model = seed_cnn(&[3, 32, 32]);
    assert_eq!(model.param_count(), 167_562);
    assert!(
        model.summary().contains("Total params: 167,562"),
        "{}",
        model.summary()
    );
    let model = seed_cnn(&[1, 28, 28]);
    assert_eq!(model.param_count(), 121_930);
    let model = seed_cnn(&[3, 64, 64]);
    assert_eq!(model.output_shape(), &[10]);
}
