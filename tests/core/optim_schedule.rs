//! Learning-rate schedules (exact values at chosen steps, validation) and gradient clipping
//! against hand computations.

use handgrad::optim::{clip_grad_norm, clip_grad_value, Adam, LrSchedule, Optimizer, Sgd};
use handgrad::{Error, Param, Tensor};
use ndarray::IxDyn;

fn close(a: f32, b: f64, what: &str) {
    assert!(
        (a as f64 - b).abs() <= 1e-7 * b.abs().max(1e-30) + 1e-12,
        "{what}: got {a}, expected {b}"
    );
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

#[test]
fn constant_schedule() {
    let s = LrSchedule::Constant;
    s.validate().unwrap();
    assert_eq!(LrSchedule::default(), s);
    for t in [0, 1, 17, 1_000_000] {
        assert_eq!(s.lr_at(0.1, t), 0.1);
        assert_eq!(s.lr_at(3e-4, t), 3e-4);
    }
}

#[test]
fn step_schedule_is_torch_step_lr() {
    let s = LrSchedule::Step {
        step_size: 30,
        gamma: 0.1,
    };
    s.validate().unwrap();
    assert_eq!(s.lr_at(0.1, 0), 0.1);
    assert_eq!(s.lr_at(0.1, 29), 0.1); // step_size − 1: not yet decayed
    assert_eq!(s.lr_at(0.1, 30), 0.01); // step_size: first decay
    assert_eq!(s.lr_at(0.1, 59), 0.01);
    assert_eq!(s.lr_at(0.1, 60), 0.001);
    assert_eq!(s.lr_at(0.1, 95), 1e-4);

    let halves = LrSchedule::Step {
        step_size: 1,
        gamma: 0.5,
    };
    for t in 0..20 {
        assert_eq!(halves.lr_at(1.0, t), 0.5f32.powi(t as i32), "t = {t}");
    }
}

#[test]
fn exponential_schedule() {
    let s = LrSchedule::Exponential { gamma: 0.9 };
    s.validate().unwrap();
    assert_eq!(s.lr_at(0.5, 0), 0.5);
    assert_eq!(s.lr_at(1.0, 1), 0.9);
    assert_eq!(s.lr_at(1.0, 2), 0.81);
    close(s.lr_at(0.01, 10), 0.01 * 0.9f64.powi(10), "t = 10");
    close(s.lr_at(0.01, 100), 0.01 * 0.9f64.powi(100), "t = 100");
}

#[test]
fn warmup_cosine_boundaries() {
    let s = LrSchedule::WarmupCosine {
        warmup_steps: 10,
        total_steps: 110,
        min_lr: 0.1,
    };
    s.validate().unwrap();
    // Linear warmup: base·(t + 1)/W.
    assert_eq!(s.lr_at(1.0, 0), 0.1);
    assert_eq!(s.lr_at(1.0, 4), 0.5);
    assert_eq!(s.lr_at(1.0, 8), 0.9);
    // The last warmup step reaches base.
    assert_eq!(s.lr_at(1.0, 9), 1.0);
    // Cosine phase: starts at base, midpoint (base + min)/2, ends at min.
    assert_eq!(s.lr_at(1.0, 10), 1.0);
    assert_eq!(s.lr_at(1.0, 60), 0.55);
    let quarter = 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos());
    close(s.lr_at(1.0, 35), quarter, "quarter");
    let last = 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 0.99).cos());
    close(s.lr_at(1.0, 109), last, "t = T − 1");
    assert_eq!(s.lr_at(1.0, 110), 0.1); // t = T: min_lr
    assert_eq!(s.lr_at(1.0, 10_000), 0.1); // and after

    // Monotone: up during warmup, down during the decay.
    let lrs: Vec<f32> = (0..=120).map(|t| s.lr_at(1.0, t)).collect();
    assert!(lrs[..10].windows(2).all(|w| w[0] < w[1]));
    assert!(lrs[10..].windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn warmup_cosine_edge_cases() {
    // No warmup: the decay starts at base at t = 0.
    let s = LrSchedule::WarmupCosine {
        warmup_steps: 0,
        total_steps: 4,
        min_lr: 0.0,
    };
    s.validate().unwrap();
    assert_eq!(s.lr_at(2.0, 0), 2.0);
    assert_eq!(s.lr_at(2.0, 2), 1.0);
    assert_eq!(s.lr_at(2.0, 4), 0.0);
    // Warmup over the whole run: no cosine phase.
    let s = LrSchedule::WarmupCosine {
        warmup_steps: 4,
        total_steps: 4,
        min_lr: 0.01,
    };
    s.validate().unwrap();
    assert_eq!(s.lr_at(1.0, 0), 0.25);
    assert_eq!(s.lr_at(1.0, 3), 1.0);
    assert_eq!(s.lr_at(1.0, 4), 0.01);
}

fn assert_schedule_err(s: LrSchedule, needles: &[&str]) {
    let err = s.validate().expect_err("validate should fail");
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in needles.iter().chain(&["LrSchedule"]) {
        assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    }
}

#[test]
fn schedule_validate_errors() {
    assert_schedule_err(
        LrSchedule::Step {
            step_size: 0,
            gamma: 0.5,
        },
        &["step_size", "= 0"],
    );
    assert_schedule_err(
        LrSchedule::Step {
            step_size: 5,
            gamma: 0.0,
        },
        &["gamma", "= 0"],
    );
    assert_schedule_err(
        LrSchedule::Step {
            step_size: 5,
            gamma: -0.5,
        },
        &["gamma", "-0.5"],
    );
    assert_schedule_err(LrSchedule::Exponential { gamma: 0.0 }, &["gamma", "= 0"]);
    assert_schedule_err(
        LrSchedule::Exponential { gamma: f32::NAN },
        &["gamma", "NaN"],
    );
    assert_schedule_err(
        LrSchedule::WarmupCosine {
            warmup_steps: 20,
            total_steps: 10,
            min_lr: 0.0,
        },
        &["warmup_steps", "20", "total_steps = 10"],
    );
    assert_schedule_err(
        LrSchedule::WarmupCosine {
            warmup_steps: 0,
            total_steps: 0,
            min_lr: 0.0,
        },
        &["total_steps", "= 0"],
    );
    assert_schedule_err(
        LrSchedule::WarmupCosine {
            warmup_steps: 1,
            total_steps: 10,
            min_lr: -1e-5,
        },
        &["min_lr", "-0.00001"],
    );
}

#[test]
fn apply_sets_the_learning_rate() {
    let s = LrSchedule::WarmupCosine {
        warmup_steps: 2,
        total_steps: 10,
        min_lr: 0.0,
    };
    let mut opt = Adam::new(1e-3);
    assert_eq!(s.apply(&mut opt, 1e-3, 0).unwrap(), 5e-4);
    assert_eq!(opt.learning_rate(), 5e-4);
    let mut boxed: Box<dyn Optimizer> = Box::new(Sgd::new(0.1));
    assert_eq!(s.apply(boxed.as_mut(), 0.1, 10).unwrap(), 0.0);
    assert_eq!(boxed.learning_rate(), 0.0);

    let bad = LrSchedule::Step {
        step_size: 0,
        gamma: 0.5,
    };
    assert!(bad.apply(&mut opt, 1e-3, 3).is_err());
    assert_eq!(
        opt.learning_rate(),
        5e-4,
        "a failed apply leaves the optimizer alone"
    );
}

#[test]
fn schedule_serde_round_trip() {
    for s in [
        LrSchedule::Constant,
        LrSchedule::Step {
            step_size: 3,
            gamma: 0.5,
        },
        LrSchedule::Exponential { gamma: 0.99 },
        LrSchedule::WarmupCosine {
            warmup_steps: 100,
            total_steps: 5000,
            min_lr: 6e-5,
        },
    ] {
        let json = serde_json::to_string(&s).unwrap();
        let back: LrSchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s, "{json}");
    }
}

// ---------------------------------------------------------------------------------------------
// Clipping
// ---------------------------------------------------------------------------------------------

fn with_grad(grad: &[f32], shape: &[usize]) -> Param {
    let mut p = Param::new(Tensor::zeros(IxDyn(shape)));
    p.grad = Tensor::from_shape_vec(IxDyn(shape), grad.to_vec()).unwrap();
    p
}

#[test]
fn clip_grad_norm_scales_by_the_total_norm() {
    // Total norm √(3² + 4² + 12²) = 13 across two parameters.
    let mut a = with_grad(&[3.0, 4.0], &[2]);
    let mut b = with_grad(&[12.0], &[1, 1]);
    let total = clip_grad_norm(&mut [("a".into(), &mut a), ("b".into(), &mut b)], 6.5).unwrap();
    assert_eq!(total, 13.0, "the returned norm is the norm before clipping");
    let coef = 6.5f64 / (13.0 + 1e-6);
    let coef32 = coef as f32;
    assert_eq!(a.grad.as_slice().unwrap(), &[3.0 * coef32, 4.0 * coef32]);
    assert_eq!(b.grad.as_slice().unwrap(), &[12.0 * coef32]);
    let after = (a.grad.iter().chain(b.grad.iter()))
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt();
    assert!((after - 6.5).abs() < 1e-5, "norm after clipping {after}");
}

#[test]
fn clip_grad_norm_leaves_small_gradients_alone() {
    let mut a = with_grad(&[3.0, 4.0], &[2]);
    let mut b = with_grad(&[12.0], &[1, 1]);
    let (a0, b0) = (a.clone(), b.clone());
    let total = clip_grad_norm(&mut [("a".into(), &mut a), ("b".into(), &mut b)], 20.0).unwrap();
    assert_eq!(total, 13.0);
    assert_eq!((a, b), (a0, b0), "coef ≥ 1: no change");

    // max_norm = total: coef = 13/(13 + 1e-6) < 1, so torch scales (very slightly).
    let mut c = with_grad(&[5.0, 12.0], &[2]);
    assert_eq!(
        clip_grad_norm(&mut [("c".into(), &mut c)], 13.0).unwrap(),
        13.0
    );
    assert!(c.grad[[1]] < 12.0);

    // No parameters: norm 0.
    assert_eq!(clip_grad_norm(&mut [], 1.0).unwrap(), 0.0);
}

#[test]
fn clip_grad_norm_accumulates_in_f64() {
    // 2^20 entries of 1e-3 (+ one 1.0): an f32 running sum of squares would drift.
    let n = 1 << 20;
    let mut g = vec![1e-3f32; n];
    g[0] = 1.0;
    let mut p = with_grad(&g, &[n]);
    let expected = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let total = clip_grad_norm(&mut [("w".into(), &mut p)], 1e9).unwrap();
    assert_eq!(total, expected as f32);
}

#[test]
fn clip_grad_value_clamps() {
    let mut a = with_grad(&[-2.0, 0.5, 3.0, -0.1], &[2, 2]);
    let mut b = with_grad(&[f32::NAN, -1.0, 1.5], &[3]);
    clip_grad_value(&mut [("a".into(), &mut a), ("b".into(), &mut b)], 1.0).unwrap();
    assert_eq!(a.grad.as_slice().unwrap(), &[-1.0, 0.5, 1.0, -0.1]);
    assert!(b.grad[[0]].is_nan(), "NaN stays NaN, as torch.clamp");
    assert_eq!(&b.grad.as_slice().unwrap()[1..], &[-1.0, 1.0]);

    let mut c = with_grad(&[-2.0, 3.0], &[2]);
    clip_grad_value(&mut [("c".into(), &mut c)], 0.0).unwrap();
    assert_eq!(c.grad.as_slice().unwrap(), &[0.0, 0.0]);
}

/// Two parameters with a gradient pattern of `n` entries each, and values to update.
fn clip_case(n: usize, scale: f32) -> (Param, Param) {
    let mk = |seed: usize| {
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7 + seed) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| (((i * 5 + seed) % 11) as f32 - 5.0) * scale)
            .collect();
        let mut p = Param::new(Tensor::from_shape_vec(IxDyn(&[n / 4, 4]), v).unwrap());
        p.grad = Tensor::from_shape_vec(IxDyn(&[n / 4, 4]), g).unwrap();
        p
    };
    (mk(1), mk(2))
}

#[test]
fn adamw_max_grad_norm_is_clip_grad_norm_then_step_bit_for_bit() {
    use handgrad::optim::AdamW;
    // 70,000 entries each: the parallel, chunked paths; a large and a small gradient scale
    // (clipped / not clipped at max_norm 1)
    for scale in [0.5f32, 1e-5] {
        let (mut a1, mut b1) = clip_case(70_000, scale);
        let (mut a2, mut b2) = (a1.clone(), b1.clone());
        let mut separate = AdamW::new(1e-2).weight_decay(0.1);
        let mut fused = AdamW::new(1e-2).weight_decay(0.1).max_grad_norm(1.0);
        for _ in 0..3 {
            let total =
                clip_grad_norm(&mut [("a".into(), &mut a1), ("b".into(), &mut b1)], 1.0).unwrap();
            separate
                .step(&mut [("a".into(), &mut a1), ("b".into(), &mut b1)])
                .unwrap();
            let g_before = a2.grad.clone();
            fused
                .step(&mut [("a".into(), &mut a2), ("b".into(), &mut b2)])
                .unwrap();
            assert_eq!(fused.last_grad_norm(), Some(total));
            assert_eq!(a2.grad, g_before, "the gradients are left as they were");
            assert_eq!(a1.value, a2.value, "scale {scale}");
            assert_eq!(b1.value, b2.value, "scale {scale}");
            // the next step's gradients: the unclipped ones again on both sides
            a1.grad.assign(&a2.grad);
            b1.grad.assign(&b2.grad);
        }
        assert_eq!(separate.state(), fused.state());
    }
}

#[test]
fn adamw_max_grad_norm_rejects_bad_norms_and_non_finite_gradients_before_any_change() {
    use handgrad::optim::AdamW;
    let (mut a, mut b) = clip_case(64, 0.5);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = AdamW::new(1e-2)
            .max_grad_norm(bad)
            .step(&mut [("a".into(), &mut a)])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { .. }) && err.to_string().contains("max_grad_norm"),
            "{err}"
        );
    }
    b.grad[[3, 1]] = f32::NAN;
    let (a0, b0) = (a.clone(), b.clone());
    let mut opt = AdamW::new(1e-2).max_grad_norm(1.0);
    let err = opt
        .step(&mut [("a".into(), &mut a), ("b".into(), &mut b)])
        .unwrap_err();
    match &err {
        Error::Param { name, message } => {
            assert_eq!(name, "b");
            assert!(message.contains("non-finite"), "{message}");
        }
        e => panic!("expected a Param error, got {e}"),
    }
    assert_eq!(a.value, a0.value);
    assert_eq!(b.value, b0.value);
    assert!(opt.state().is_empty(), "no state was created");
    assert_eq!(opt.last_grad_norm(), None);
}
