//! Optimizers against PyTorch: the five `optim_*` golden fixtures (parameter and every state
//! tensor after every step), resume = uninterrupted run, and f64 reference implementations of
//! torch's formulas for the settings the fixtures do not cover.

use crate::common;

use common::{assert_close, random_tensor, Fixture};
use handgrad::optim::{Adam, AdamW, Optimizer, RmsProp, Sgd};
use handgrad::{Param, Tensor};
use ndarray::Axis;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Golden fixtures
// ---------------------------------------------------------------------------------------------

/// The fixture's `hyperparams` metadata (JSON).
fn hyperparams(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("fixture header");
    let meta = meta.metadata().clone().expect("fixture metadata");
    serde_json::from_str(&meta["hyperparams"]).expect("hyperparams json")
}

fn num(h: &Value, key: &str) -> f32 {
    h[key]
        .as_f64()
        .unwrap_or_else(|| panic!("hyperparam {key}")) as f32
}

fn flag(h: &Value, key: &str) -> bool {
    h[key]
        .as_bool()
        .unwrap_or_else(|| panic!("hyperparam {key}"))
}

/// The optimizer that a fixture's `hyperparams` describe.
fn optimizer_for(h: &Value) -> Box<dyn Optimizer> {
    match h["optimizer"].as_str().expect("optimizer name") {
        "SGD" => Box::new(
            Sgd::new(num(h, "lr"))
                .momentum(num(h, "momentum"))
                .dampening(num(h, "dampening"))
                .nesterov(flag(h, "nesterov"))
                .weight_decay(num(h, "weight_decay")),
        ),
        name @ ("Adam" | "AdamW") => {
            assert!(!flag(h, "amsgrad"), "amsgrad is not implemented");
            let b = &h["betas"];
            let (b1, b2) = (b[0].as_f64().unwrap() as f32, b[1].as_f64().unwrap() as f32);
            let (lr, eps, wd) = (num(h, "lr"), num(h, "eps"), num(h, "weight_decay"));
            if name == "Adam" {
                Box::new(Adam::new(lr).betas(b1, b2).eps(eps).weight_decay(wd))
            } else {
                Box::new(AdamW::new(lr).betas(b1, b2).eps(eps).weight_decay(wd))
            }
        }
        "RMSprop" => Box::new(
            RmsProp::new(num(h, "lr"))
                .alpha(num(h, "alpha"))
                .eps(num(h, "eps"))
                .weight_decay(num(h, "weight_decay"))
                .momentum(num(h, "momentum"))
                .centered(flag(h, "centered")),
        ),
        other => panic!("unknown optimizer {other}"),
    }
}

/// Runs the fixture's steps from `param0` and checks the parameter and each `state.<entry>` in
/// `entries` (read through `Optimizer::state` by name) after every step.
fn run_fixture(fixture: &str, expected_name: &str, entries: &[&str]) {
    let fx = Fixture::load(fixture);
    let h = hyperparams(fixture);
    let mut opt = optimizer_for(&h);
    assert_eq!(opt.name(), expected_name);
    assert_eq!(opt.learning_rate(), num(&h, "lr"));
    let grads = fx.f32("grads");
    let params = fx.f32("params");
    let steps = grads.shape()[0];
    assert_eq!(steps as f64, h["steps"].as_f64().unwrap());
    let name = "0.weight";
    let mut p = Param::new(fx.f32("param0"));
    for i in 0..steps {
        // grads[i] is fed at step i + 1
        p.grad = grads.index_axis(Axis(0), i).to_owned();
        opt.step(&mut [(name.to_string(), &mut p)]).unwrap();
        let (atol, rtol) = fx.tol("params");
        let want = params.index_axis(Axis(0), i).to_owned();
        assert_close(
            &p.value,
            &want,
            atol,
            rtol,
            &format!("{fixture}: params[{i}]"),
        );
        let state = opt.state();
        for entry in entries {
            let key = format!("state.{entry}");
            let (atol, rtol) = fx.tol(&key);
            let want = fx.f32(&key).index_axis(Axis(0), i).to_owned();
            let got = state
                .get(&format!("{name}.{entry}"))
                .unwrap_or_else(|| panic!("{fixture}: state() has no {name}.{entry}"));
            assert_close(got, &want, atol, rtol, &format!("{fixture}: {key}[{i}]"));
        }
        if let Some(step) = state.get(&format!("{name}.step")) {
            assert_eq!(
                step.as_slice().unwrap(),
                &[(i + 1) as f32],
                "{fixture}: step"
            );
        }
    }
}

#[test]
fn golden_sgd_momentum() {
    run_fixture("optim_sgd_momentum", "SGD", &["momentum_buffer"]);
}

#[test]
fn golden_sgd_nesterov() {
    run_fixture("optim_sgd_nesterov", "SGD", &["momentum_buffer"]);
}

#[test]
fn golden_adam() {
    run_fixture("optim_adam", "Adam", &["exp_avg", "exp_avg_sq"]);
}

#[test]
fn golden_adamw() {
    assert_eq!(
        hyperparams("optim_adamw")["weight_decay"].as_f64(),
        Some(0.1)
    );
    run_fixture("optim_adamw", "AdamW", &["exp_avg", "exp_avg_sq"]);
}

#[test]
fn golden_rmsprop() {
    run_fixture("optim_rmsprop", "RMSprop", &["square_avg"]);
}

// ---------------------------------------------------------------------------------------------
// Resume: state() → load_state() into a fresh optimizer continues bit-identically
// ---------------------------------------------------------------------------------------------

/// Two named parameters of different shapes with deterministic values.
fn model(seed: u64) -> Vec<(String, Param)> {
    vec![
        ("0.weight".into(), Param::new(random_tensor(&[3, 5], seed))),
        ("0.bias".into(), Param::new(random_tensor(&[5], seed + 1))),
    ]
}

/// Sets the gradients for step `t` and takes one step.
fn step_at(opt: &mut dyn Optimizer, model: &mut [(String, Param)], t: u64) {
    for (k, (_, p)) in model.iter_mut().enumerate() {
        p.grad = random_tensor(p.shape(), 1000 + 10 * t + k as u64);
    }
    let mut named: Vec<(String, &mut Param)> =
        model.iter_mut().map(|(n, p)| (n.clone(), p)).collect();
    opt.step(&mut named).unwrap();
}

fn check_resume(make: impl Fn() -> Box<dyn Optimizer>) {
    let (steps, split) = (7, 3);
    let mut whole = model(5);
    let mut opt = make();
    for t in 0..steps {
        step_at(opt.as_mut(), &mut whole, t);
    }

    let mut resumed = model(5);
    let mut first = make();
    for t in 0..split {
        step_at(first.as_mut(), &mut resumed, t);
    }
    let saved = first.state();
    drop(first);
    let mut second = make();
    second.load_state(&saved).unwrap();
    assert_eq!(second.state(), saved, "{}: state round trip", second.name());
    for t in split..steps {
        step_at(second.as_mut(), &mut resumed, t);
    }

    for ((name, a), (_, b)) in whole.iter().zip(&resumed) {
        assert_eq!(
            a.value,
            b.value,
            "{}: {name} differs after resuming",
            opt.name()
        );
    }
    assert_eq!(
        opt.state(),
        second.state(),
        "{}: state after resuming",
        opt.name()
    );
}

#[test]
fn resume_adam_is_bit_identical() {
    check_resume(|| Box::new(Adam::new(0.01).weight_decay(0.01)));
}

#[test]
fn resume_adamw_is_bit_identical() {
    check_resume(|| Box::new(AdamW::new(0.01).betas(0.8, 0.99)));
}

#[test]
fn resume_sgd_momentum_is_bit_identical() {
    check_resume(|| Box::new(Sgd::new(0.1).momentum(0.9).dampening(0.1)));
    check_resume(|| Box::new(Sgd::new(0.1).momentum(0.9).nesterov(true)));
}

#[test]
fn resume_rmsprop_centered_momentum_is_bit_identical() {
    check_resume(|| {
        Box::new(
            RmsProp::new(0.01)
                .centered(true)
                .momentum(0.9)
                .weight_decay(0.01),
        )
    });
}

// ---------------------------------------------------------------------------------------------
// Independent f64 reference implementations (scalar loops) for settings the fixtures lack
// ---------------------------------------------------------------------------------------------

/// Hyper-parameters of the f64 references.
#[derive(Clone, Copy, Default)]
struct Hp {
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    alpha: f64,
    centered: bool,
    decoupled: bool,
}

/// The state of one f64 reference run, one `Vec` per state tensor.
struct Ref {
    p: Vec<f64>,
    buf: Option<Vec<f64>>,
    m: Vec<f64>,
    v: Vec<f64>,
    g_avg: Vec<f64>,
    t: i32,
}

// Plain index loops on purpose: the references read like the formulas.
#[allow(clippy::needless_range_loop)]
impl Ref {
    fn new(p0: &Tensor) -> Ref {
        let p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
        let n = p.len();
        Ref {
            p,
            buf: None,
            m: vec![0.0; n],
            v: vec![0.0; n],
            g_avg: vec![0.0; n],
            t: 0,
        }
    }

    /// torch.optim.SGD, one step.
    fn sgd(&mut self, grad: &Tensor, h: Hp) {
        let mut d: Vec<f64> = grad.iter().map(|&g| g as f64).collect();
        for i in 0..d.len() {
            d[i] += h.weight_decay * self.p[i];
        }
        if h.momentum != 0.0 {
            match &mut self.buf {
                None => self.buf = Some(d.clone()),
                Some(b) => {
                    for i in 0..d.len() {
                        b[i] = h.momentum * b[i] + (1.0 - h.dampening) * d[i];
                    }
                }
            }
            let b = self.buf.as_ref().unwrap();
            for i in 0..d.len() {
                d[i] = if h.nesterov {
                    d[i] + h.momentum * b[i]
                } else {
                    b[i]
                };
            }
        }
        for i in 0..d.len() {
            self.p[i] -= h.lr * d[i];
        }
    }

    /// torch.optim.Adam / AdamW (textbook form with bias-corrected m̂, v̂), one step.
    fn adam(&mut self, grad: &Tensor, h: Hp) {
        self.t += 1;
        for (i, &g) in grad.iter().enumerate() {
            let mut g = g as f64;
            if h.decoupled {
                self.p[i] *= 1.0 - h.lr * h.weight_decay;
            } else {
                g += h.weight_decay * self.p[i];
            }
            self.m[i] = h.beta1 * self.m[i] + (1.0 - h.beta1) * g;
            self.v[i] = h.beta2 * self.v[i] + (1.0 - h.beta2) * g * g;
            let m_hat = self.m[i] / (1.0 - h.beta1.powi(self.t));
            let v_hat = self.v[i] / (1.0 - h.beta2.powi(self.t));
            self.p[i] -= h.lr * m_hat / (v_hat.sqrt() + h.eps);
        }
    }

    /// torch.optim.RMSprop, one step.
    fn rmsprop(&mut self, grad: &Tensor, h: Hp) {
        let n = self.p.len();
        if h.momentum > 0.0 && self.buf.is_none() {
            self.buf = Some(vec![0.0; n]);
        }
        for (i, &g) in grad.iter().enumerate() {
            let g = g as f64 + h.weight_decay * self.p[i];
            self.v[i] = h.alpha * self.v[i] + (1.0 - h.alpha) * g * g;
            let avg = if h.centered {
                self.g_avg[i] = h.alpha * self.g_avg[i] + (1.0 - h.alpha) * g;
                (self.v[i] - self.g_avg[i] * self.g_avg[i]).sqrt() + h.eps
            } else {
                self.v[i].sqrt() + h.eps
            };
            match &mut self.buf {
                Some(b) => {
                    b[i] = h.momentum * b[i] + g / avg;
                    self.p[i] -= h.lr * b[i];
                }
                None => self.p[i] -= h.lr * g / avg,
            }
        }
    }
}

/// `actual` against an f64 reference: atol = 1e-6·max|expected|, rtol = 1e-5 (as the fixtures).
fn check_vs_ref(actual: &Tensor, expected: &[f64], what: &str) {
    let want = Tensor::from_shape_vec(
        actual.raw_dim(),
        expected.iter().map(|&x| x as f32).collect(),
    )
    .unwrap();
    let scale = expected.iter().fold(0.0f64, |a, &x| a.max(x.abs())) as f32;
    assert_close(actual, &want, 1e-6 * scale.max(1e-3), 1e-5, what);
}

/// Runs `opt` and the reference `reference` for 8 steps on a [4, 6] parameter, comparing the
/// parameter and the named state entries (`(state name, reference vector)`) after every step.
fn check_against_ref(
    what: &str,
    mut opt: Box<dyn Optimizer>,
    h: Hp,
    reference: fn(&mut Ref, &Tensor, Hp),
    entries: &[&str],
) {
    let p0 = random_tensor(&[4, 6], 77);
    let mut p = Param::new(p0.clone());
    let mut r = Ref::new(&p0);
    for t in 0..8 {
        p.grad = random_tensor(&[4, 6], 500 + t);
        reference(&mut r, &p.grad, h);
        opt.step(&mut [("w".to_string(), &mut p)]).unwrap();
        check_vs_ref(
            &p.value,
            &r.p,
            &format!("{what}: param after step {}", t + 1),
        );
        let state = opt.state();
        for &entry in entries {
            let want: &[f64] = match entry {
                "momentum_buffer" => r.buf.as_ref().expect("reference buffer"),
                "exp_avg" => &r.m,
                "exp_avg_sq" | "square_avg" => &r.v,
                "grad_avg" => &r.g_avg,
                _ => unreachable!(),
            };
            let got = state
                .get(&format!("w.{entry}"))
                .unwrap_or_else(|| panic!("{what}: no state w.{entry}"));
            check_vs_ref(got, want, &format!("{what}: {entry} after step {}", t + 1));
        }
    }
}

#[test]
fn sgd_weight_decay_and_dampening_match_reference() {
    let h = Hp {
        lr: 0.05,
        momentum: 0.8,
        dampening: 0.3,
        weight_decay: 0.1,
        ..Hp::default()
    };
    let opt = Sgd::new(0.05)
        .momentum(0.8)
        .dampening(0.3)
        .weight_decay(0.1);
    check_against_ref(
        "SGD wd+dampening",
        Box::new(opt),
        h,
        Ref::sgd,
        &["momentum_buffer"],
    );
}

#[test]
fn sgd_nesterov_weight_decay_matches_reference() {
    let h = Hp {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
        ..Hp::default()
    };
    let opt = Sgd::new(0.05)
        .momentum(0.9)
        .nesterov(true)
        .weight_decay(0.01);
    check_against_ref(
        "SGD nesterov+wd",
        Box::new(opt),
        h,
        Ref::sgd,
        &["momentum_buffer"],
    );
}

#[test]
fn sgd_plain_weight_decay_matches_reference_and_keeps_no_state() {
    let h = Hp {
        lr: 0.1,
        weight_decay: 0.2,
        ..Hp::default()
    };
    let opt = Sgd::new(0.1).weight_decay(0.2);
    check_against_ref("SGD plain", Box::new(opt), h, Ref::sgd, &[]);
    let mut opt = Sgd::new(0.1);
    let mut p = Param::new(random_tensor(&[3], 1));
    opt.step(&mut [("w".to_string(), &mut p)]).unwrap();
    assert!(
        opt.state().is_empty(),
        "SGD without momentum keeps no state"
    );
}

fn adam_hp(lr: f64, b1: f64, b2: f64, eps: f64, wd: f64, decoupled: bool) -> Hp {
    Hp {
        lr,
        beta1: b1,
        beta2: b2,
        eps,
        weight_decay: wd,
        decoupled,
        ..Hp::default()
    }
}

#[test]
fn adam_weight_decay_matches_reference() {
    let h = adam_hp(0.01, 0.9, 0.999, 1e-8, 0.1, false);
    let opt = Adam::new(0.01).weight_decay(0.1);
    check_against_ref(
        "Adam wd",
        Box::new(opt),
        h,
        Ref::adam,
        &["exp_avg", "exp_avg_sq"],
    );
}

#[test]
fn adam_custom_betas_eps_match_reference() {
    let h = adam_hp(3e-3, 0.8, 0.95, 1e-3, 0.0, false);
    let opt = Adam::new(3e-3).betas(0.8, 0.95).eps(1e-3);
    check_against_ref(
        "Adam betas",
        Box::new(opt),
        h,
        Ref::adam,
        &["exp_avg", "exp_avg_sq"],
    );
}

#[test]
fn adamw_custom_matches_reference() {
    let h = adam_hp(0.02, 0.9, 0.95, 1e-8, 0.3, true);
    let opt = AdamW::new(0.02).betas(0.9, 0.95).weight_decay(0.3);
    check_against_ref(
        "AdamW",
        Box::new(opt),
        h,
        Ref::adam,
        &["exp_avg", "exp_avg_sq"],
    );
}

#[test]
fn adamw_default_weight_decay_is_torch_default() {
    let h = adam_hp(0.01, 0.9, 0.999, 1e-8, 0.01, true);
    check_against_ref(
        "AdamW default",
        Box::new(AdamW::new(0.01)),
        h,
        Ref::adam,
        &[],
    );
}

fn rms_hp(alpha: f64, wd: f64, momentum: f64, centered: bool) -> Hp {
    Hp {
        lr: 0.01,
        eps: 1e-8,
        alpha,
        weight_decay: wd,
        momentum,
        centered,
        ..Hp::default()
    }
}

#[test]
fn rmsprop_centered_matches_reference() {
    let h = rms_hp(0.99, 0.0, 0.0, true);
    let opt = RmsProp::new(0.01).centered(true);
    let entries = ["square_avg", "grad_avg"];
    check_against_ref("RMSprop centered", Box::new(opt), h, Ref::rmsprop, &entries);
}

#[test]
fn rmsprop_momentum_matches_reference() {
    let h = rms_hp(0.9, 0.0, 0.7, false);
    let opt = RmsProp::new(0.01).alpha(0.9).momentum(0.7);
    let entries = ["square_avg", "momentum_buffer"];
    check_against_ref("RMSprop momentum", Box::new(opt), h, Ref::rmsprop, &entries);
}

#[test]
fn rmsprop_centered_momentum_weight_decay_matches_reference() {
    let h = rms_hp(0.9, 0.05, 0.5, true);
    let opt = RmsProp::new(0.01)
        .alpha(0.9)
        .momentum(0.5)
        .centered(true)
        .weight_decay(0.05);
    let entries = ["square_avg", "grad_avg", "momentum_buffer"];
    check_against_ref("RMSprop all", Box::new(opt), h, Ref::rmsprop, &entries);
}

// ---------------------------------------------------------------------------------------------
// Per-parameter step counts, state names, thread-count independence
// ---------------------------------------------------------------------------------------------

#[test]
fn adam_step_counts_are_per_parameter() {
    let h = adam_hp(0.01, 0.9, 0.999, 1e-8, 0.0, false);
    let mut opt = Adam::new(0.01);
    let mut a = Param::new(random_tensor(&[4], 1));
    let mut b = Param::new(random_tensor(&[2, 2], 2));
    let mut ra = Ref::new(&a.value);
    let mut rb = Ref::new(&b.value);
    for t in 0..5 {
        a.grad = random_tensor(&[4], 10 + t);
        b.grad = random_tensor(&[2, 2], 20 + t);
        ra.adam(&a.grad, h);
        if t < 2 {
            // `b` joins at the third step: its own count starts at 1 then.
            opt.step(&mut [("a".to_string(), &mut a)]).unwrap();
        } else {
            rb.adam(&b.grad, h);
            opt.step(&mut [("a".to_string(), &mut a), ("b".to_string(), &mut b)])
                .unwrap();
        }
        check_vs_ref(&a.value, &ra.p, &format!("a after step {}", t + 1));
        check_vs_ref(&b.value, &rb.p, &format!("b after step {}", t + 1));
    }
    let state = opt.state();
    assert_eq!(state["a.step"].as_slice().unwrap(), &[5.0]);
    assert_eq!(state["b.step"].as_slice().unwrap(), &[3.0]);
    let keys: Vec<&str> = state.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "a.exp_avg",
            "a.exp_avg_sq",
            "a.step",
            "b.exp_avg",
            "b.exp_avg_sq",
            "b.step"
        ]
    );
}

#[test]
fn rmsprop_state_names() {
    let mut opt = RmsProp::new(0.01).centered(true).momentum(0.9);
    let mut p = Param::new(random_tensor(&[2], 1));
    p.grad = random_tensor(&[2], 2);
    opt.step(&mut [("h.0.ln_1.bias".to_string(), &mut p)])
        .unwrap();
    let state = opt.state();
    let keys: Vec<&str> = state.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "h.0.ln_1.bias.grad_avg",
            "h.0.ln_1.bias.momentum_buffer",
            "h.0.ln_1.bias.square_avg",
            "h.0.ln_1.bias.step"
        ]
    );
    assert_eq!(state["h.0.ln_1.bias.step"].shape(), &[1]);
}

/// Large tensors are updated in parallel; the bits must not depend on the thread count.
#[test]
fn large_updates_do_not_depend_on_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut opts: Vec<Box<dyn Optimizer>> = vec![
                Box::new(Adam::new(1e-3).weight_decay(0.01)),
                Box::new(AdamW::new(1e-3)),
                Box::new(
                    Sgd::new(0.1)
                        .momentum(0.9)
                        .nesterov(true)
                        .weight_decay(1e-4),
                ),
                Box::new(RmsProp::new(0.01).centered(true).momentum(0.9)),
            ];
            let mut out = Vec::new();
            for opt in opts.iter_mut() {
                let mut p = Param::new(random_tensor(&[300, 301], 3));
                for t in 0..3 {
                    p.grad = random_tensor(&[300, 301], 40 + t);
                    opt.step(&mut [("w".to_string(), &mut p)]).unwrap();
                }
                out.push((p.value, opt.state()));
            }
            out
        })
    };
    let one = run(1);
    let two = run(2);
    let four = run(4);
    assert!(
        one == two && two == four,
        "results differ between 1, 2 and 4 threads"
    );
}
