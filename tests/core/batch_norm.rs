//! BatchNorm2d against a hand-written f64 reference of PyTorch's semantics (training and
//! evaluation forward, running statistics with the unbiased variance, num_batches_tracked),
//! finite-difference gradient checks in both modes, thread-count determinism, and errors.

use crate::common;

use common::{assert_close, grad_check, random_tensor, weighted_sum};
use handgrad::layers::{BatchNorm2d, Dense, Flatten, Layer, Mode};
use handgrad::optim::Sgd;
use handgrad::{Error, Sequential, Tensor};
use ndarray::{Array1, ArrayD, Ix4, IxDyn};

const EPS: f64 = 1e-5;

fn rng() -> handgrad::init::Rng {
    handgrad::init::rng(0)
}

/// Per-channel `(mean, biased var, unbiased var)` in f64.
fn stats(x: &Tensor) -> Vec<(f64, f64, f64)> {
    let x = x.view().into_dimensionality::<Ix4>().unwrap();
    let (n, c, h, w) = x.dim();
    let m = (n * h * w) as f64;
    (0..c)
        .map(|ch| {
            let v = x.index_axis(ndarray::Axis(1), ch);
            let mean = v.iter().map(|&a| a as f64).sum::<f64>() / m;
            let ss = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>();
            (mean, ss / m, ss / (m - 1.0))
        })
        .collect()
}

/// `y = γ·(x − μ_c)/√(σ²_c + eps) + β` in f64 with the given per-channel `(μ, σ²)`.
fn normalize_ref(x: &Tensor, mv: &[(f64, f64)], gamma: &[f32], beta: &[f32]) -> Tensor {
    let mut y = x.clone();
    for ((_, c, _, _), v) in y
        .view_mut()
        .into_dimensionality::<Ix4>()
        .unwrap()
        .indexed_iter_mut()
    {
        let (mu, var) = mv[c];
        *v = (gamma[c] as f64 * (*v as f64 - mu) / (var + EPS).sqrt() + beta[c] as f64) as f32;
    }
    y
}

/// Training-mode `dL/dx` in f64 for `L = Σ y ⊙ r` by the closed form.
fn dx_ref(x: &Tensor, r: &Tensor, gamma: &[f32]) -> Tensor {
    let st = stats(x);
    let x4 = x.view().into_dimensionality::<Ix4>().unwrap();
    let r4 = r.view().into_dimensionality::<Ix4>().unwrap();
    let (n, _, h, w) = x4.dim();
    let m = (n * h * w) as f64;
    let mut dx = x.clone();
    for ((b, c, i, j), v) in dx
        .view_mut()
        .into_dimensionality::<Ix4>()
        .unwrap()
        .indexed_iter_mut()
    {
        let (mu, var, _) = st[c];
        let rstd = 1.0 / (var + EPS).sqrt();
        let xh = |b, i, j| (x4[[b, c, i, j]] as f64 - mu) * rstd;
        let (mut sdy, mut sdyx) = (0.0, 0.0);
        for ((bb, cc, ii, jj), &d) in r4.indexed_iter() {
            if cc == c {
                sdy += d as f64;
                sdyx += d as f64 * xh(bb, ii, jj);
            }
        }
        let dy = r4[[b, c, i, j]] as f64;
        *v = (gamma[c] as f64 * rstd * (dy - sdy / m - xh(b, i, j) * sdyx / m)) as f32;
    }
    dx
}

fn t1(v: &[f32]) -> Tensor {
    Array1::from(v.to_vec()).into_dyn()
}

/// A built layer on `(3, H, W)` with non-trivial γ and β.
fn layer_with_affine(chw: &[usize]) -> (BatchNorm2d, Vec<f32>, Vec<f32>) {
    let mut bn = BatchNorm2d::new();
    bn.build(chw, &mut rng()).unwrap();
    let gamma = vec![1.5, -0.7, 0.3];
    let beta = vec![0.2, -0.1, 0.6];
    for (name, p) in bn.params_mut() {
        p.value = t1(if name == "weight" { &gamma } else { &beta });
    }
    (bn, gamma, beta)
}

/// A batch with per-channel offsets and scales, so the statistics are far from (0, 1).
fn batch(shape: &[usize], seed: u64) -> Tensor {
    let mut x = random_tensor(shape, seed);
    for ((_, c, _, _), v) in x
        .view_mut()
        .into_dimensionality::<Ix4>()
        .unwrap()
        .indexed_iter_mut()
    {
        *v = *v * (1.0 + c as f32) + 2.0 * c as f32 - 1.0;
    }
    x
}

#[test]
fn train_forward_running_stats_and_eval_forward_match_pytorch_semantics() {
    let (mut bn, gamma, beta) = layer_with_affine(&[3, 4, 5]);
    let names: Vec<String> = bn.buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["running_mean", "running_var", "num_batches_tracked"]
    );
    assert_eq!(bn.running_mean(), &t1(&[0.0; 3]));
    assert_eq!(bn.running_var(), &t1(&[1.0; 3]));

    let (x1, x2) = (batch(&[4, 3, 4, 5], 1), batch(&[2, 3, 4, 5], 2));
    let (s1, s2) = (stats(&x1), stats(&x2));
    for (x, s) in [(&x1, &s1), (&x2, &s2)] {
        let y = bn.forward(x, Mode::Train).unwrap();
        let mv: Vec<(f64, f64)> = s.iter().map(|&(m, vb, _)| (m, vb)).collect();
        assert_close(
            &y,
            &normalize_ref(x, &mv, &gamma, &beta),
            2e-5,
            1e-5,
            "train forward",
        );
    }
    // running = 0.9·running + 0.1·batch, with the UNBIASED batch variance.
    let (mut rm, mut rv) = (vec![0.0f64; 3], vec![1.0f64; 3]);
    for s in [&s1, &s2] {
        for c in 0..3 {
            rm[c] = 0.9 * rm[c] + 0.1 * s[c].0;
            rv[c] = 0.9 * rv[c] + 0.1 * s[c].2;
        }
    }
    let f = |v: &[f64]| t1(&v.iter().map(|&a| a as f32).collect::<Vec<_>>());
    assert_close(bn.running_mean(), &f(&rm), 1e-6, 1e-6, "running_mean");
    assert_close(bn.running_var(), &f(&rv), 1e-6, 1e-6, "running_var");
    assert_eq!(bn.num_batches_tracked(), 2);
    let nbt = &bn.buffers()[2].1.clone();
    assert_eq!(nbt.shape(), &[] as &[usize]);
    assert_eq!(nbt.iter().copied().collect::<Vec<_>>(), [2.0]);

    // Evaluation uses the running statistics and does not touch them.
    let x3 = batch(&[3, 3, 4, 5], 3);
    let y = bn.forward(&x3, Mode::Eval).unwrap();
    let mv: Vec<(f64, f64)> = rm.iter().zip(&rv).map(|(&m, &v)| (m, v)).collect();
    assert_close(
        &y,
        &normalize_ref(&x3, &mv, &gamma, &beta),
        2e-5,
        1e-5,
        "eval forward",
    );
    assert_eq!(bn.num_batches_tracked(), 2);
    assert_close(
        bn.running_mean(),
        &f(&rm),
        1e-6,
        1e-6,
        "running_mean after eval",
    );
}

#[test]
fn train_backward_matches_the_closed_form_and_gradients_accumulate() {
    let (mut bn, gamma, _) = layer_with_affine(&[3, 3, 4]);
    let x = batch(&[5, 3, 3, 4], 4);
    let r = random_tensor(&[5, 3, 3, 4], 5);
    bn.forward(&x, Mode::Train).unwrap();
    let dx = bn.backward(&r).unwrap();
    assert_close(&dx, &dx_ref(&x, &r, &gamma), 1e-5, 1e-4, "dx");
    // dγ = Σ dy·x̂, dβ = Σ dy per channel.
    let st = stats(&x);
    let (mut dg, mut db) = (vec![0.0f64; 3], vec![0.0f64; 3]);
    let x4 = x.view().into_dimensionality::<Ix4>().unwrap();
    for ((b, c, i, j), &d) in r
        .view()
        .into_dimensionality::<Ix4>()
        .unwrap()
        .indexed_iter()
    {
        let xh = (x4[[b, c, i, j]] as f64 - st[c].0) / (st[c].1 + EPS).sqrt();
        dg[c] += d as f64 * xh;
        db[c] += d as f64;
    }
    let f = |v: &[f64]| t1(&v.iter().map(|&a| a as f32).collect::<Vec<_>>());
    let grads: Vec<Tensor> = bn.params().iter().map(|(_, p)| p.grad.clone()).collect();
    assert_close(&grads[0], &f(&dg), 1e-5, 1e-5, "dweight");
    assert_close(&grads[1], &f(&db), 1e-5, 1e-5, "dbias");
    bn.backward(&r).unwrap();
    let twice: Vec<Tensor> = bn.params().iter().map(|(_, p)| p.grad.clone()).collect();
    assert_close(
        &(&twice[0] / 2.0),
        &f(&dg),
        1e-5,
        1e-5,
        "dweight accumulates",
    );
    assert_close(&(&twice[1] / 2.0), &f(&db), 1e-5, 1e-5, "dbias accumulates");
}

/// Gradient checks in training mode. Each loss evaluation runs a Mode::Train forward of a clone
/// of the layer, so the batch statistics are recomputed from the perturbed input (as autograd
/// differentiates them); the clone's running-statistics update does not affect its output.
#[test]
fn train_mode_gradients_match_finite_differences() {
    let (mut bn, _, _) = layer_with_affine(&[3, 2, 3]);
    let x = batch(&[3, 3, 2, 3], 6);
    let r = random_tensor(&[3, 3, 2, 3], 7);
    let fresh = bn.clone();
    bn.forward(&x, Mode::Train).unwrap();
    let dx = bn.backward(&r).unwrap();
    let (w, b) = {
        let p = bn.params();
        (p[0].1.clone(), p[1].1.clone())
    };
    let with = |wv: &Tensor, bv: &Tensor| {
        let mut l = fresh.clone();
        for (name, p) in l.params_mut() {
            p.value = if name == "weight" {
                wv.clone()
            } else {
                bv.clone()
            };
        }
        l
    };
    let loss_x = |xp: &Tensor| weighted_sum(&fresh.clone().forward(xp, Mode::Train).unwrap(), &r);
    grad_check("BatchNorm2d train dx", &x, &dx, loss_x, 1e-2, 2e-3);
    let loss_w =
        |wp: &Tensor| weighted_sum(&with(wp, &b.value).forward(&x, Mode::Train).unwrap(), &r);
    grad_check(
        "BatchNorm2d train dweight",
        &w.value,
        &w.grad,
        loss_w,
        1e-2,
        1e-3,
    );
    let loss_b =
        |bp: &Tensor| weighted_sum(&with(&w.value, bp).forward(&x, Mode::Train).unwrap(), &r);
    grad_check(
        "BatchNorm2d train dbias",
        &b.value,
        &b.grad,
        loss_b,
        1e-2,
        1e-3,
    );
}

#[test]
fn eval_mode_gradients_match_finite_differences() {
    let (mut bn, _, _) = layer_with_affine(&[3, 2, 3]);
    for (name, t) in bn.buffers_mut() {
        match name.as_str() {
            "running_mean" => *t = t1(&[0.5, -1.0, 2.0]),
            "running_var" => *t = t1(&[0.25, 2.0, 4.0]),
            _ => {}
        }
    }
    let x = batch(&[2, 3, 2, 3], 8);
    let r = random_tensor(&[2, 3, 2, 3], 9);
    let fresh = bn.clone();
    bn.forward(&x, Mode::Eval).unwrap();
    let dx = bn.backward(&r).unwrap();
    let (w, b) = {
        let p = bn.params();
        (p[0].1.clone(), p[1].1.clone())
    };
    let with = |wv: &Tensor, bv: &Tensor| {
        let mut l = fresh.clone();
        for (name, p) in l.params_mut() {
            p.value = if name == "weight" {
                wv.clone()
            } else {
                bv.clone()
            };
        }
        l
    };
    let loss_x = |xp: &Tensor| weighted_sum(&fresh.clone().forward(xp, Mode::Eval).unwrap(), &r);
    grad_check("BatchNorm2d eval dx", &x, &dx, loss_x, 1e-2, 1e-3);
    let loss_w =
        |wp: &Tensor| weighted_sum(&with(wp, &b.value).forward(&x, Mode::Eval).unwrap(), &r);
    grad_check(
        "BatchNorm2d eval dweight",
        &w.value,
        &w.grad,
        loss_w,
        1e-2,
        1e-3,
    );
    let loss_b =
        |bp: &Tensor| weighted_sum(&with(&w.value, bp).forward(&x, Mode::Eval).unwrap(), &r);
    grad_check(
        "BatchNorm2d eval dbias",
        &b.value,
        &b.grad,
        loss_b,
        1e-2,
        1e-3,
    );
    // Evaluation backward is the affine map dx = γ·rstd·dy.
    let gamma = [1.5f64, -0.7, 0.3];
    let var = [0.25f64, 2.0, 4.0];
    let r4 = r.view().into_dimensionality::<Ix4>().unwrap();
    for ((b, c, i, j), &d) in dx
        .view()
        .into_dimensionality::<Ix4>()
        .unwrap()
        .indexed_iter()
    {
        let want = r4[[b, c, i, j]] as f64 * gamma[c] / (var[c] + EPS).sqrt();
        assert!(
            (d as f64 - want).abs() < 1e-5,
            "dx[{b},{c},{i},{j}] = {d}, want {want}"
        );
    }
}

#[test]
fn without_affine_there_are_no_parameters_and_the_output_is_standardised() {
    let mut bn = BatchNorm2d::new().affine(false);
    bn.build(&[2, 3, 3], &mut rng()).unwrap();
    assert!(bn.params().is_empty());
    assert!(bn.describe().contains("affine=false"), "{}", bn.describe());
    let x = batch(&[4, 2, 3, 3], 10);
    let y = bn.forward(&x, Mode::Train).unwrap();
    for (mean, var, _) in stats(&y) {
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
            "mean {mean}, var {var}"
        );
    }
    let r = random_tensor(&[4, 2, 3, 3], 11);
    let dx = bn.backward(&r).unwrap();
    assert_close(
        &dx,
        &dx_ref(&x, &r, &[1.0, 1.0]),
        1e-5,
        1e-4,
        "dx without affine",
    );
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn results_are_bit_identical_for_one_and_two_threads() {
    // 16·3·32·32 = 49152 elements (above the parallel threshold), 16384 per channel: one channel
    // per parallel task.
    let x = batch(&[16, 3, 32, 32], 12);
    let r = random_tensor(&[16, 3, 32, 32], 13);
    let run = || {
        let (mut bn, _, _) = layer_with_affine(&[3, 32, 32]);
        let y = bn.forward(&x, Mode::Train).unwrap();
        let dx = bn.backward(&r).unwrap();
        let ye = bn.forward(&x, Mode::Eval).unwrap();
        let dxe = bn.backward(&r).unwrap();
        let mut all = vec![bits(&y), bits(&dx), bits(&ye), bits(&dxe)];
        all.extend(bn.params().iter().map(|(_, p)| bits(&p.grad)));
        all.extend(bn.buffers().iter().map(|(_, t)| bits(t)));
        all
    };
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run);
    let two = pool(2).install(run);
    assert!(
        one == two,
        "BatchNorm2d results differ between 1 and 2 threads"
    );
}

#[test]
fn works_inside_a_sequential() {
    let mut model = Sequential::new(&[3, 4, 4])
        .add(BatchNorm2d::new())
        .add(Flatten::new())
        .add(Dense::new(3))
        .build(&mut rng())
        .unwrap();
    let names: Vec<String> = model.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    let x = batch(&[6, 3, 4, 4], 14);
    let labels = [0, 1, 2, 0, 1, 2];
    let mut opt = Sgd::new(0.1);
    let first = model.train_step(&x, &labels, &mut opt).unwrap();
    for _ in 0..30 {
        model.train_step(&x, &labels, &mut opt).unwrap();
    }
    let last = model.train_step(&x, &labels, &mut opt).unwrap();
    assert!(last < first, "{last} >= {first}");
}

#[test]
fn shape_and_configuration_errors_name_the_values() {
    let mut bn = BatchNorm2d::new();
    let x = Tensor::zeros(IxDyn(&[2, 3, 4, 4]));
    assert!(matches!(bn.forward(&x, Mode::Train), Err(Error::State(_))));
    let msg = bn.build(&[3, 16], &mut rng()).unwrap_err().to_string();
    assert!(
        msg.contains("(C, H, W)") && msg.contains("[3, 16]"),
        "{msg}"
    );
    bn.build(&[3, 4, 4], &mut rng()).unwrap();
    assert_eq!(bn.num_features(), Some(3));
    // NHWC-looking input: C mismatch.
    let err = bn
        .forward(&Tensor::zeros(IxDyn(&[2, 4, 4, 3])), Mode::Train)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert!(
        msg.contains("BatchNorm2d(3")
            && msg.contains("(B, 3, H, W)")
            && msg.contains("[2, 4, 4, 3]"),
        "{msg}"
    );
    let msg = bn
        .forward(&Tensor::zeros(IxDyn(&[3, 4, 4])), Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[3, 4, 4]"), "{msg}");
    // One value per channel cannot be normalised with batch statistics (PyTorch errors too).
    let msg = bn
        .forward(&Tensor::zeros(IxDyn(&[1, 3, 1, 1])), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("more than one value per channel") && msg.contains("[1, 3, 1, 1]"),
        "{msg}"
    );
    assert!(bn
        .forward(&Tensor::zeros(IxDyn(&[1, 3, 1, 1])), Mode::Eval)
        .is_ok());
    // Rebuilding for another channel count.
    let msg = bn.build(&[4, 4, 4], &mut rng()).unwrap_err().to_string();
    assert!(
        msg.contains("(3, H, W)") && msg.contains("[4, 4, 4]"),
        "{msg}"
    );
    // Backward: gradient of the wrong shape, and none without a forward.
    bn.forward(&x, Mode::Train).unwrap();
    let msg = bn
        .backward(&Tensor::zeros(IxDyn(&[2, 3, 4, 5])))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("backward") && msg.contains("[2, 3, 4, 4]") && msg.contains("[2, 3, 4, 5]"),
        "{msg}"
    );
    assert!(matches!(
        BatchNorm2d::new().backward(&x),
        Err(Error::State(_))
    ));
    // Hyper-parameters.
    let msg = BatchNorm2d::new()
        .momentum(1.5)
        .build(&[3, 4, 4], &mut rng())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("momentum = 1.5"), "{msg}");
    let msg = BatchNorm2d::new()
        .eps(0.0)
        .build(&[3, 4, 4], &mut rng())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("eps = 0"), "{msg}");
    // A running buffer replaced with the wrong size.
    for (name, t) in bn.buffers_mut() {
        if name == "running_var" {
            *t = ArrayD::zeros(IxDyn(&[5]));
        }
    }
    let msg = bn.forward(&x, Mode::Eval).unwrap_err().to_string();
    assert!(
        msg.contains("running_var") && msg.contains("[3]") && msg.contains("[5]"),
        "{msg}"
    );
}
