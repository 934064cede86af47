//! Every bad optimizer setting, parameter, clip value and state entry returns an `Err` whose
//! message names the optimizer, the setting and the value; nothing is changed by a failed call.

use handgrad::optim::{clip_grad_norm, clip_grad_value, Adam, AdamW, Optimizer, RmsProp, Sgd};
use handgrad::{Error, Param, Tensor};
use ndarray::IxDyn;
use std::collections::BTreeMap;

fn param(shape: &[usize]) -> Param {
    let n: usize = shape.iter().product();
    let values = (0..n).map(|k| k as f32 * 0.1).collect();
    let mut p = Param::new(Tensor::from_shape_vec(IxDyn(shape), values).unwrap());
    p.grad = Tensor::from_elem(IxDyn(shape), 0.5);
    assert_eq!(p.numel(), n);
    p
}

/// Asserts that `opt` fails both `validate()` and `step()` with a `Config` error whose message
/// contains every string in `needles`, and that the failed step changed nothing.
fn assert_config_err(mut opt: Box<dyn Optimizer>, needles: &[&str]) {
    let err = opt.validate().expect_err("validate should fail");
    assert!(
        matches!(err, Error::Config { .. }),
        "not a Config error: {err:?}"
    );
    let msg = err.to_string();
    for needle in needles.iter().chain(&[opt.name()]) {
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
    let mut p = param(&[2, 3]);
    let before = p.clone();
    let err = opt
        .step(&mut [("w".to_string(), &mut p)])
        .expect_err("step should fail");
    assert_eq!(err.to_string(), msg, "step reports the validate error");
    assert_eq!(p, before, "a failed step must not change the parameter");
    assert!(
        opt.state().is_empty(),
        "a failed step must not create state"
    );
}

#[test]
fn negative_lr() {
    assert_config_err(Box::new(Adam::new(-0.1)), &["lr", "-0.1"]);
    assert_config_err(Box::new(Sgd::new(-1.0)), &["lr", "-1"]);
    assert_config_err(Box::new(RmsProp::new(-0.01)), &["lr", "-0.01"]);
    assert_config_err(Box::new(AdamW::new(-0.5)), &["lr", "-0.5"]);
}

#[test]
fn nan_and_infinite_lr() {
    assert_config_err(Box::new(Adam::new(f32::NAN)), &["lr", "NaN"]);
    assert_config_err(Box::new(Sgd::new(f32::NAN)), &["lr", "NaN"]);
    assert_config_err(Box::new(RmsProp::new(f32::INFINITY)), &["lr", "inf"]);
}

#[test]
fn lr_set_later_is_checked_at_step() {
    let mut opt = Adam::new(1e-3);
    opt.set_learning_rate(-2.0);
    assert_eq!(opt.learning_rate(), -2.0);
    assert_config_err(Box::new(opt), &["lr", "-2"]);
}

#[test]
fn beta1_equal_to_one() {
    assert_config_err(
        Box::new(Adam::new(1e-3).betas(1.0, 0.999)),
        &["beta1", "= 1;", "[0, 1)"],
    );
    assert_config_err(
        Box::new(AdamW::new(1e-3).betas(1.0, 0.999)),
        &["beta1", "= 1;"],
    );
}

#[test]
fn beta2_negative() {
    assert_config_err(
        Box::new(Adam::new(1e-3).betas(0.9, -0.1)),
        &["beta2", "-0.1", "[0, 1)"],
    );
    assert_config_err(
        Box::new(AdamW::new(1e-3).betas(0.9, f32::NAN)),
        &["beta2", "NaN"],
    );
}

#[test]
fn alpha_equal_to_one() {
    assert_config_err(
        Box::new(RmsProp::new(0.01).alpha(1.0)),
        &["alpha", "= 1;", "[0, 1)"],
    );
    assert_config_err(Box::new(RmsProp::new(0.01).alpha(-0.5)), &["alpha", "-0.5"]);
}

#[test]
fn negative_eps_and_momentum() {
    assert_config_err(
        Box::new(Adam::new(1e-3).eps(-1e-8)),
        &["eps", "-0.00000001"],
    );
    assert_config_err(Box::new(RmsProp::new(0.01).eps(-1.0)), &["eps", "-1"]);
    assert_config_err(
        Box::new(Sgd::new(0.1).momentum(-0.9)),
        &["momentum", "-0.9"],
    );
    assert_config_err(
        Box::new(RmsProp::new(0.01).momentum(-0.5)),
        &["momentum", "-0.5"],
    );
    assert_config_err(
        Box::new(Sgd::new(0.1).momentum(0.9).dampening(-0.1)),
        &["dampening", "-0.1"],
    );
}

#[test]
fn nesterov_without_momentum() {
    assert_config_err(
        Box::new(Sgd::new(0.1).nesterov(true)),
        &["nesterov", "true", "momentum = 0"],
    );
}

#[test]
fn nesterov_with_dampening() {
    assert_config_err(
        Box::new(Sgd::new(0.1).momentum(0.9).dampening(0.5).nesterov(true)),
        &["nesterov", "true", "dampening = 0.5"],
    );
}

#[test]
fn negative_weight_decay() {
    assert_config_err(
        Box::new(Sgd::new(0.1).weight_decay(-0.01)),
        &["weight_decay", "-0.01"],
    );
    assert_config_err(
        Box::new(Adam::new(0.1).weight_decay(-0.01)),
        &["weight_decay", "-0.01"],
    );
    assert_config_err(
        Box::new(AdamW::new(0.1).weight_decay(-0.01)),
        &["weight_decay", "-0.01"],
    );
    assert_config_err(
        Box::new(RmsProp::new(0.1).weight_decay(f32::NEG_INFINITY)),
        &["weight_decay", "-inf"],
    );
}

/// A parameter whose shape changed under the same name is an `Error::Param` naming it and both
/// shapes; neither parameter nor state changes.
#[test]
fn param_shape_changed_under_the_same_name() {
    let opts: Vec<Box<dyn Optimizer>> = vec![
        Box::new(Adam::new(1e-3)),
        Box::new(AdamW::new(1e-3)),
        Box::new(Sgd::new(0.1).momentum(0.9)),
        Box::new(RmsProp::new(0.01)),
    ];
    for mut opt in opts {
        let mut ok = param(&[2]);
        let mut p = param(&[3, 4]);
        opt.step(&mut [("b".into(), &mut ok), ("0.weight".into(), &mut p)])
            .unwrap();
        let state = opt.state();
        let mut ok_again = ok.clone();
        let mut q = param(&[4, 3]);
        let (ok_before, q_before) = (ok_again.clone(), q.clone());
        let err = opt
            .step(&mut [("b".into(), &mut ok_again), ("0.weight".into(), &mut q)])
            .expect_err("shape change should fail");
        match &err {
            Error::Param { name, .. } => assert_eq!(name, "0.weight"),
            other => panic!("{}: expected Error::Param, got {other:?}", opt.name()),
        }
        let msg = err.to_string();
        for needle in ["0.weight", "[4, 3]", "[3, 4]", opt.name()] {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        }
        assert_eq!(
            ok_again,
            ok_before,
            "{}: earlier params must not move",
            opt.name()
        );
        assert_eq!(q, q_before);
        assert_eq!(opt.state(), state, "{}: state must not change", opt.name());
    }
}

#[test]
fn grad_shape_differs_from_value_shape() {
    let mut opt = Adam::new(1e-3);
    let mut p = param(&[2, 3]);
    p.grad = Tensor::zeros(IxDyn(&[3, 2]));
    let err = opt.step(&mut [("fc.weight".into(), &mut p)]).unwrap_err();
    let msg = err.to_string();
    for needle in ["fc.weight", "gradient shape [3, 2]", "[2, 3]", "Adam"] {
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
}

#[test]
fn duplicate_parameter_names() {
    let mut opt = Sgd::new(0.1).momentum(0.9);
    let (mut a, mut b) = (param(&[2]), param(&[2]));
    let err = opt
        .step(&mut [("w".into(), &mut a), ("w".into(), &mut b)])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"w\"") && msg.contains("more than once"),
        "{msg}"
    );
    assert!(opt.state().is_empty());
}

#[test]
fn bad_clip_grad_norm_values() {
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let mut p = param(&[3]);
        let before = p.clone();
        let err = clip_grad_norm(&mut [("w".into(), &mut p)], bad).unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        let msg = err.to_string();
        for needle in ["clip_grad_norm", "max_norm", &bad.to_string()] {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        }
        assert_eq!(p, before);
    }
}

#[test]
fn bad_clip_grad_value_values() {
    for bad in [-0.5, f32::NAN, f32::NEG_INFINITY, f32::INFINITY] {
        let mut p = param(&[3]);
        let before = p.clone();
        let err = clip_grad_value(&mut [("w".into(), &mut p)], bad).unwrap_err();
        let msg = err.to_string();
        for needle in ["clip_grad_value", "clip_value", &bad.to_string()] {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        }
        assert_eq!(p, before);
    }
}

#[test]
fn non_finite_gradient_norm() {
    let mut a = param(&[3]);
    let mut b = param(&[2]);
    b.grad[[1]] = f32::NAN;
    let (a0, b0) = (a.clone(), b.clone());
    let err = clip_grad_norm(
        &mut [("a".into(), &mut a), ("h.1.bias".into(), &mut b)],
        1.0,
    )
    .unwrap_err();
    let msg = err.to_string();
    for needle in ["h.1.bias", "total gradient norm", "NaN"] {
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
    // Compare bits: NaN != NaN.
    let bits = |p: &Param| p.grad.iter().map(|g| g.to_bits()).collect::<Vec<_>>();
    assert_eq!(a, a0, "nothing is clipped on error");
    assert_eq!(bits(&b), bits(&b0), "nothing is clipped on error");

    let mut c = param(&[2]);
    c.grad[[0]] = f32::INFINITY;
    let msg = clip_grad_norm(&mut [("c".into(), &mut c)], 1.0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("\"c\"") && msg.contains("inf"), "{msg}");
}

/// A state saved from a 2-step Adam run on `"0.weight"`.
fn adam_state() -> BTreeMap<String, Tensor> {
    let mut opt = Adam::new(1e-3);
    let mut p = param(&[2, 2]);
    for _ in 0..2 {
        opt.step(&mut [("0.weight".into(), &mut p)]).unwrap();
    }
    opt.state()
}

/// `load_state` fails with an `Error::Param` whose message contains `needles`, and leaves the
/// optimizer's previous state in place.
fn assert_load_err(opt: &mut dyn Optimizer, state: &BTreeMap<String, Tensor>, needles: &[&str]) {
    let before = opt.state();
    let err = opt.load_state(state).expect_err("load_state should fail");
    assert!(
        matches!(err, Error::Param { .. }),
        "not a Param error: {err:?}"
    );
    let msg = err.to_string();
    for needle in needles.iter().chain(&[opt.name()]) {
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
    assert_eq!(
        opt.state(),
        before,
        "a failed load_state must not change the state"
    );
}

#[test]
fn unknown_state_key_in_load_state() {
    let mut opt = Adam::new(1e-3);
    let mut p = param(&[1]);
    opt.step(&mut [("x".into(), &mut p)]).unwrap();

    let mut state = adam_state();
    state.insert("0.weight.foo".into(), Tensor::zeros(IxDyn(&[2, 2])));
    assert_load_err(&mut opt, &state, &["0.weight.foo", "exp_avg"]);

    let mut state = adam_state();
    state.insert("step".into(), Tensor::zeros(IxDyn(&[1])));
    assert_load_err(&mut opt, &state, &["\"step\"", "unknown"]);

    // An RMSprop-only entry is unknown to Adam, an Adam entry unknown to SGD.
    let mut state = adam_state();
    state.insert("0.weight.square_avg".into(), Tensor::zeros(IxDyn(&[2, 2])));
    assert_load_err(&mut opt, &state, &["0.weight.square_avg"]);
    assert_load_err(
        &mut Sgd::new(0.1).momentum(0.9),
        &adam_state(),
        &["0.weight.exp_avg"],
    );
    assert_load_err(&mut RmsProp::new(0.1), &adam_state(), &["0.weight.exp_avg"]);
}

#[test]
fn inconsistent_or_incomplete_state_in_load_state() {
    let mut opt = AdamW::new(1e-3);
    let mut state = adam_state();
    state.insert("0.weight.exp_avg_sq".into(), Tensor::zeros(IxDyn(&[4])));
    assert_load_err(&mut opt, &state, &["0.weight.exp_avg_sq", "[4]", "[2, 2]"]);

    let mut state = adam_state();
    state.remove("0.weight.step");
    assert_load_err(&mut opt, &state, &["0.weight.step", "required"]);

    let mut state = adam_state();
    state.insert("0.weight.step".into(), Tensor::from_elem(IxDyn(&[1]), 1.5));
    assert_load_err(&mut opt, &state, &["0.weight.step", "1.5"]);
    state.insert("0.weight.step".into(), Tensor::zeros(IxDyn(&[2])));
    assert_load_err(&mut opt, &state, &["0.weight.step", "[2]"]);

    let mut rms = RmsProp::new(0.01).centered(true);
    let mut plain = RmsProp::new(0.01);
    let mut p = param(&[3]);
    plain.step(&mut [("w".into(), &mut p)]).unwrap();
    assert_load_err(&mut rms, &plain.state(), &["w.grad_avg", "required"]);
}

#[test]
fn valid_state_is_loaded_and_then_shape_checked() {
    let mut opt = Adam::new(1e-3);
    opt.load_state(&adam_state()).unwrap();
    assert_eq!(opt.state(), adam_state());
    let mut wrong = param(&[4]);
    let err = opt
        .step(&mut [("0.weight".into(), &mut wrong)])
        .unwrap_err();
    assert!(err.to_string().contains("[2, 2]"), "{err}");
}
