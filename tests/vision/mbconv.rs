//! The MBConv block: golden (forward, every gradient, BN buffers after the train-mode step, eval
//! forward), gradient checks, naming, summary and errors; the Residual wrapper.

use crate::common::{grad_check, random_tensor, weighted_sum, Fixture};
use handgrad::init::rng;
use handgrad::layers::{Activate, BatchNorm2d, Conv2d, Layer, MbConv, Mode, Padding, Residual};
use handgrad::{Sequential, Tensor};

/// Loads every parameter and buffer of `layer` from `f` under `prefix` (I64 counters as f32).
pub fn load_named(layer_params: Vec<(String, &mut handgrad::Param)>, f: &Fixture, prefix: &str) {
    for (name, p) in layer_params {
        p.value.assign(&f.f32(&format!("{prefix}{name}")));
    }
}

fn block_from_fixture(f: &Fixture) -> MbConv {
    let mut block = MbConv::new(6, 4, 3, 1);
    block.build(&[6, 7, 7], &mut rng(0)).unwrap();
    load_named(block.params_mut(), f, "");
    for (name, b) in block.buffers_mut() {
        if name.ends_with("num_batches_tracked") {
            b.fill(f.i64(&name)[0] as f32);
        } else {
            b.assign(&f.f32(&name));
        }
    }
    block
}

#[test]
fn golden_mbconv_block_train_and_eval() {
    let f = Fixture::load("vision/mbconv_block");
    let mut block = block_from_fixture(&f);
    assert!(block.has_residual());
    let names: Vec<String> = block.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "_expand_conv.weight",
            "_bn0.weight",
            "_bn0.bias",
            "_depthwise_conv.weight",
            "_bn1.weight",
            "_bn1.bias",
            "_project_conv.weight",
            "_bn2.weight",
            "_bn2.bias"
        ]
    );
    let x = f.f32("x");
    let out = block.forward(&x, Mode::Train).unwrap();
    f.check("out", &out);
    let dx = block.backward(&f.f32("grad_out")).unwrap();
    f.check("grad.x", &dx);
    for (name, p) in block.params() {
        f.check(&format!("grad.{name}"), &p.grad);
    }
    let mut buffers = 0;
    for (name, b) in block.buffers() {
        if name.ends_with("num_batches_tracked") {
            assert_eq!(
                b.iter().next().copied().unwrap() as i64,
                f.i64(&format!("after.{name}"))[0],
                "{name}"
            );
        } else {
            f.check(&format!("after.{name}"), b);
        }
        buffers += 1;
    }
    assert_eq!(buffers, 9);
    // eval mode with the running statistics as given (a fresh copy, before the update)
    let mut eval_block = block_from_fixture(&f);
    let out = eval_block.forward(&x, Mode::Eval).unwrap();
    f.check("eval.out", &out);
}

#[test]
fn mbconv_in_a_sequential_maps_to_state_dict_names() {
    let f = Fixture::load("vision/mbconv_block");
    let mut model = Sequential::new(&[6, 7, 7])
        .add(MbConv::new(6, 4, 3, 1))
        .add(MbConv::new(8, 1, 5, 2))
        .build(&mut rng(1))
        .unwrap();
    let state = model.state_dict();
    assert!(state.contains_key("0._expand_conv.weight"));
    assert!(state.contains_key("0._bn2.num_batches_tracked"));
    assert!(
        !state.keys().any(|k| k.starts_with("1._expand_conv")),
        "expand ratio 1 has no expand conv"
    );
    assert_eq!(state["1._depthwise_conv.weight"].shape(), &[6, 1, 5, 5]);
    // load the golden block by name through the Sequential state dict
    let mut loaded = state.clone();
    for (k, v) in loaded.iter_mut() {
        if let Some(local) = k.strip_prefix("0.") {
            *v = if local.ends_with("num_batches_tracked") {
                Tensor::from_elem(ndarray::IxDyn(&[]), f.i64(local)[0] as f32)
            } else {
                f.f32(local)
            };
        }
    }
    model.load_state_dict(&loaded).unwrap();
    let h = model.layers_mut()[0]
        .forward(&f.f32("x"), Mode::Eval)
        .unwrap();
    f.check("eval.out", &h);
    let summary = model.summary();
    assert!(
        summary.contains("MbConv(6→24→6, k3, s1, residual)"),
        "{summary}"
    );
    assert!(summary.contains("MbConv(6→6→8, k5, s2)"), "{summary}");
    assert!(summary.contains("(None, 8, 4, 4)"), "{summary}");
    let n0: usize = model.layers()[0]
        .params()
        .iter()
        .map(|(_, p)| p.numel())
        .sum();
    assert_eq!(n0, 24 * 6 + 48 + 24 * 9 + 48 + 6 * 24 + 12);
    assert!(summary.contains(&n0.to_string()), "{summary}");
}

/// Finite differences of the block input and of every parameter, in train mode (the gradients
/// flow through the batch statistics). Seeds are chosen so that no ReLU6 input crosses a kink
/// within the finite-difference step.
fn mbconv_grad_check(make: impl Fn() -> MbConv, input: &[usize], mode: Mode, seed: u64) {
    let x = random_tensor(input, seed).mapv(|v| 2.0 * v);
    let mut block = make();
    let out_shape = block.build(&input[1..], &mut rng(seed)).unwrap();
    let mut shape = vec![input[0]];
    shape.extend(out_shape);
    let r = random_tensor(&shape, seed + 1);
    block.forward(&x, mode).unwrap();
    let dx = block.backward(&r).unwrap();
    let desc = block.describe();
    let mut probe = make();
    probe.build(&input[1..], &mut rng(seed)).unwrap();
    grad_check(
        &format!("{desc} {mode:?} dx"),
        &x,
        &dx,
        |xp| weighted_sum(&probe.forward(xp, mode).unwrap(), &r),
        1e-3,
        5e-3,
    );
    let grads: Vec<(String, Tensor, Tensor)> = block
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.value.clone(), p.grad.clone()))
        .collect();
    for (k, (name, value, grad)) in grads.into_iter().enumerate() {
        let mut probe = make();
        probe.build(&input[1..], &mut rng(seed)).unwrap();
        grad_check(
            &format!("{desc} {mode:?} {name}"),
            &value,
            &grad,
            |vp| {
                probe.params_mut()[k].1.value.assign(vp);
                weighted_sum(&probe.forward(&x, mode).unwrap(), &r)
            },
            1e-3,
            5e-3,
        );
    }
}

#[test]
fn gradcheck_mbconv_blocks() {
    mbconv_grad_check(|| MbConv::new(3, 2, 3, 1), &[2, 3, 5, 5], Mode::Train, 41);
    mbconv_grad_check(|| MbConv::new(4, 1, 3, 2), &[2, 3, 6, 5], Mode::Train, 32);
    mbconv_grad_check(|| MbConv::new(3, 3, 5, 1), &[2, 3, 4, 4], Mode::Train, 34);
}

#[test]
fn residual_wrapper_adds_its_input_and_back_propagates_through_both_paths() {
    let make = || {
        Residual::new()
            .add(Conv2d::new(3, 3).padding(Padding::Same).relu6())
            .add_named("norm", BatchNorm2d::new())
    };
    let mut block = make();
    assert_eq!(block.build(&[3, 4, 4], &mut rng(2)).unwrap(), vec![3, 4, 4]);
    let names: Vec<String> = block.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "norm.weight", "norm.bias"]);
    assert_eq!(block.buffers()[0].0, "norm.running_mean");
    let x = random_tensor(&[2, 3, 4, 4], 3);
    let r = random_tensor(&[2, 3, 4, 4], 4);
    block.forward(&x, Mode::Train).unwrap();
    let dx = block.backward(&r).unwrap();
    let mut probe = make();
    probe.build(&[3, 4, 4], &mut rng(2)).unwrap();
    grad_check(
        "Residual dx",
        &x,
        &dx,
        |xp| weighted_sum(&probe.forward(xp, Mode::Train).unwrap(), &r),
        1e-3,
        5e-3,
    );
    // a sub-layer that changes the shape cannot be wrapped
    let e = Residual::new()
        .add(Conv2d::new(5, 1))
        .build(&[3, 4, 4], &mut rng(0))
        .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("Residual") && e.contains("[5, 4, 4]") && e.contains("[3, 4, 4]"),
        "{e}"
    );
    let e = Residual::new()
        .build(&[3, 4, 4], &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one sub-layer"), "{e}");
}

#[test]
fn mbconv_errors_name_the_problem() {
    let e = MbConv::new(8, 6, 3, 1)
        .build(&[16], &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MbConv") && e.contains("[16]"), "{e}");
    let e = MbConv::new(8, 0, 3, 1)
        .build(&[4, 8, 8], &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expand_ratio"), "{e}");
    let mut block = MbConv::new(8, 6, 3, 1);
    let e = block
        .forward(&Tensor::zeros(ndarray::IxDyn(&[1, 4, 8, 8])), Mode::Eval)
        .unwrap_err();
    assert!(e.to_string().contains("before build"), "{e}");
    block.build(&[4, 8, 8], &mut rng(0)).unwrap();
    let e = block
        .forward(&Tensor::zeros(ndarray::IxDyn(&[1, 5, 8, 8])), Mode::Eval)
        .unwrap_err();
    assert!(e.to_string().contains("[1, 5, 8, 8]"), "{e}");
}
