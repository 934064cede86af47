//! Conv2d: golden (PyTorch fixtures), an f64 reference on odd geometries, finite differences,
//! output sizes, thread-count determinism, workspace reuse and errors.

use crate::common;

use common::{assert_close, grad_check, random_tensor, weighted_sum, Fixture};
use handgrad::layers::{Conv2d, Layer, Mode, Padding};
use handgrad::ops::conv2d::{
    conv2d_backward, conv2d_forward, conv_out_len, Conv2dGeom, Conv2dWorkspace, TILE_FLOATS,
};
use handgrad::{Error, Tensor};
use ndarray::{Array1, Array4, Ix4, IxDyn};
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

/// A `[a, b]` hyper-parameter as a pair.
fn pair(h: &Value, key: &str) -> (usize, usize) {
    let v = h[key]
        .as_array()
        .unwrap_or_else(|| panic!("hyperparam {key}"));
    (
        v[0].as_u64().expect("int") as usize,
        v[1].as_u64().expect("int") as usize,
    )
}

const FIXTURES: [&str; 4] = [
    "conv2d_k3s1p0",
    "conv2d_k3s2p1",
    "conv2d_k1s1p0",
    "conv2d_k5s1p2",
];

/// The fixture's layer, built for its input, with stride / padding / dilation from its metadata.
fn fixture_layer(fx: &Fixture, name: &str) -> Conv2d {
    let h = hyperparams(name);
    let (sh, sw) = pair(&h, "stride");
    let (ph, pw) = pair(&h, "padding");
    let (dh, dw) = pair(&h, "dilation");
    assert_eq!(dh, dw, "{name}: the layer has one dilation for both axes");
    assert_eq!(h["groups"].as_u64(), Some(1));
    let mut conv = Conv2d::from_weights(fx.f32("weight"), Some(fx.f32("bias")))
        .unwrap()
        .stride_hw(sh, sw)
        .padding(Padding::Explicit(ph, pw))
        .dilation(dh);
    let x = fx.f32("x");
    let out_shape = conv
        .build(&x.shape()[1..], &mut handgrad::init::rng(0))
        .unwrap();
    let want = [
        h["out_channels"].as_u64().unwrap() as usize,
        h["out_H"].as_u64().unwrap() as usize,
        h["out_W"].as_u64().unwrap() as usize,
    ];
    assert_eq!(out_shape, want, "{name}: per-sample output shape");
    conv
}

#[test]
fn golden_forward_and_all_gradients_match_pytorch() {
    for name in FIXTURES {
        let fx = Fixture::load(name);
        let mut conv = fixture_layer(&fx, name);
        let out = conv.forward(&fx.f32("x"), Mode::Train).unwrap();
        fx.check("out", &out);
        let dx = conv.backward(&fx.f32("grad_out")).unwrap();
        fx.check("grad.x", &dx);
        let p = conv.params();
        assert_eq!(p[0].0, "weight");
        assert_eq!(p[1].0, "bias");
        fx.check("grad.weight", &p[0].1.grad);
        fx.check("grad.bias", &p[1].1.grad);
    }
}

#[test]
fn golden_eval_forward_and_params_only_backward_match_pytorch() {
    for name in FIXTURES {
        let fx = Fixture::load(name);
        let mut conv = fixture_layer(&fx, name);
        fx.check("out", &conv.forward(&fx.f32("x"), Mode::Eval).unwrap());
        conv.forward(&fx.f32("x"), Mode::Train).unwrap();
        conv.backward_params_only(&fx.f32("grad_out")).unwrap();
        fx.check("grad.weight", &conv.params()[0].1.grad);
        fx.check("grad.bias", &conv.params()[1].1.grad);
    }
}

// ---------------------------------------------------------------------------------------------
// f64 reference (direct loops) on geometries the fixtures do not cover
// ---------------------------------------------------------------------------------------------

/// Direct-loop convolution in f64: `(out, dx, dw, db)` for `L = Σ out ⊙ dout`.
#[allow(clippy::type_complexity)]
fn reference(
    x: &Array4<f32>,
    w: &Array4<f32>,
    b: &Array1<f32>,
    g: &Conv2dGeom,
    dout: &Array4<f32>,
) -> (Array4<f32>, Array4<f32>, Array4<f32>, Array1<f32>) {
    let n = x.dim().0;
    let (oh, ow) = g.out_hw();
    let mut out = Array4::<f64>::zeros((n, g.o, oh, ow));
    let mut dx = Array4::<f64>::zeros(x.dim());
    let mut dw = Array4::<f64>::zeros(w.dim());
    let mut db = Array1::<f64>::zeros(g.o);
    for img in 0..n {
        for o in 0..g.o {
            for i in 0..oh {
                for j in 0..ow {
                    let d = dout[[img, o, i, j]] as f64;
                    let mut acc = b[o] as f64;
                    db[o] += d;
                    for c in 0..g.c {
                        for u in 0..g.kh {
                            for v in 0..g.kw {
                                let r = (i * g.sh + u * g.dh) as isize - g.ph as isize;
                                let col = (j * g.sw + v * g.dw) as isize - g.pw as isize;
                                if r < 0 || col < 0 || r >= g.h as isize || col >= g.w as isize {
                                    continue;
                                }
                                let (r, col) = (r as usize, col as usize);
                                acc += w[[o, c, u, v]] as f64 * x[[img, c, r, col]] as f64;
                                dx[[img, c, r, col]] += w[[o, c, u, v]] as f64 * d;
                                dw[[o, c, u, v]] += x[[img, c, r, col]] as f64 * d;
                            }
                        }
                    }
                    out[[img, o, i, j]] = acc;
                }
            }
        }
    }
    let f = |a: Array4<f64>| a.mapv(|v| v as f32);
    (f(out), f(dx), f(dw), db.mapv(|v| v as f32))
}

fn t4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    random_tensor(&[shape.0, shape.1, shape.2, shape.3], seed)
        .into_dimensionality::<Ix4>()
        .unwrap()
}

#[test]
fn kernel_matches_f64_reference_on_odd_geometries() {
    let geoms = [
        // stride 2, padding 1
        Conv2dGeom::new(3, 9, 8, 4, 3, 3)
            .with_stride(2, 2)
            .with_padding(1, 1),
        // dilation 2, rectangular kernel, different strides per axis
        Conv2dGeom::new(2, 11, 10, 3, 3, 2)
            .with_stride(1, 3)
            .with_dilation(2, 1),
        // asymmetric padding ("same" with an even kernel), horizontal stride 3
        Conv2dGeom::new(2, 7, 9, 3, 4, 4)
            .with_padding_asym((1, 2), (1, 2))
            .with_stride(1, 3),
        // padding wider than the kernel reach: whole output rows/columns in the padding
        Conv2dGeom::new(1, 3, 4, 2, 2, 2).with_padding(3, 2),
        // stride 1 (wide unfolding) with asymmetric padding and dilation
        Conv2dGeom::new(3, 8, 9, 4, 3, 2)
            .with_padding_asym((0, 2), (2, 1))
            .with_dilation(2, 3),
        // stride 1 without padding, a tall kernel
        Conv2dGeom::new(2, 9, 6, 3, 5, 1),
        // vertical stride only (rows unfolding with contiguous columns)
        Conv2dGeom::new(3, 9, 7, 2, 3, 3)
            .with_stride(2, 1)
            .with_padding(1, 1),
        // 1x1 kernel with stride 2
        Conv2dGeom::new(4, 6, 7, 5, 1, 1).with_stride(2, 2),
        // large enough to be unfolded in several bands of output rows
        Conv2dGeom::new(16, 30, 202, 3, 3, 3).with_padding(1, 0),
    ];
    let mut ws = Conv2dWorkspace::new();
    for (gi, g) in geoms.iter().enumerate() {
        for n in [1, 3] {
            let x = t4((n, g.c, g.h, g.w), 10 + gi as u64);
            let w = t4((g.o, g.c, g.kh, g.kw), 20 + gi as u64);
            let b = Array1::from_shape_fn(g.o, |i| 0.1 * i as f32 - 0.2);
            let (oh, ow) = g.out_hw();
            let dout = t4((n, g.o, oh, ow), 30 + gi as u64);
            let (r_out, r_dx, r_dw, r_db) = reference(&x, &w, &b, g, &dout);
            let out = conv2d_forward(x.view(), w.view(), Some(b.view()), g, &mut ws);
            let mut dw = Array4::<f32>::zeros(w.dim());
            let mut db = Array1::<f32>::zeros(g.o);
            let dx = conv2d_backward(
                dout.view(),
                x.view(),
                w.view(),
                g,
                &mut ws,
                dw.view_mut(),
                Some(db.view_mut()),
                true,
            )
            .unwrap();
            let what = format!("geometry {gi} ({g:?}), N={n}");
            let d = |a: Array4<f32>| a.into_dyn();
            assert_close(&d(out), &d(r_out), 1e-5, 1e-4, &format!("{what}: out"));
            assert_close(&d(dx), &d(r_dx), 1e-5, 1e-4, &format!("{what}: dx"));
            assert_close(&d(dw), &d(r_dw), 1e-4, 1e-4, &format!("{what}: dw"));
            assert_close(
                &db.into_dyn(),
                &r_db.into_dyn(),
                1e-4,
                1e-4,
                &format!("{what}: db"),
            );
        }
    }
    // the last geometry really went through the banded path
    let g = geoms[geoms.len() - 1];
    assert!(g.k_len() * g.out_hw().1 * g.out_hw().0 > TILE_FLOATS);
}

#[test]
fn kernel_transposed_views_and_missing_bias_work() {
    let g = Conv2dGeom::new(3, 6, 5, 2, 3, 3).with_padding(1, 1);
    let x = t4((2, 3, 6, 5), 1);
    let w = t4((2, 3, 3, 3), 2);
    let b = Array1::<f32>::zeros(2);
    let dout = t4((2, 2, 6, 5), 3);
    let (r_out, ..) = reference(&x, &w, &b, &g, &dout);
    // the same data behind reversed strides
    let x_f = x.slice(ndarray::s![..;-1, .., .., ..]).to_owned();
    let x_rev = x_f.slice(ndarray::s![..;-1, .., .., ..]);
    let out = conv2d_forward(x_rev, w.view(), None, &g, &mut Conv2dWorkspace::new());
    assert_close(
        &out.into_dyn(),
        &r_out.into_dyn(),
        1e-5,
        1e-4,
        "reversed view",
    );
}

// ---------------------------------------------------------------------------------------------
// Finite differences through the layer
// ---------------------------------------------------------------------------------------------

/// Checks dx, dW and db of the layer made by `settings` against central differences of
/// `L = Σ out ⊙ r`.
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
    let loss = |w: &Tensor, b: Option<&Tensor>, xp: &Tensor| {
        let mut c = settings(Conv2d::from_weights(w.clone(), b.cloned()).unwrap());
        c.build(&xp.shape()[1..], &mut handgrad::init::rng(0))
            .unwrap();
        weighted_sum(&c.forward(xp, Mode::Eval).unwrap(), &r)
    };
    let b = params.get(1).map(|p| &p.0);
    // L is linear in each argument: central differences are exact up to f32 rounding.
    grad_check(
        &format!("{what}: dx"),
        x,
        &dx,
        |xp| loss(&params[0].0, b, xp),
        1e-2,
        1e-3,
    );
    grad_check(
        &format!("{what}: dW"),
        &params[0].0,
        &params[0].1,
        |wp| loss(wp, b, x),
        1e-2,
        1e-3,
    );
    if let Some((bv, bg)) = params.get(1) {
        grad_check(
            &format!("{what}: db"),
            bv,
            bg,
            |bp| loss(&params[0].0, Some(bp), x),
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn gradients_match_finite_differences_stride_2_pad_1() {
    let x = random_tensor(&[2, 3, 9, 8], 4);
    check_layer("stride 2 pad 1", 4, 3, &|c| c.stride(2).pad(1), &x);
}

#[test]
fn gradients_match_finite_differences_dilation_2() {
    let x = random_tensor(&[2, 3, 9, 8], 5);
    check_layer("dilation 2", 3, 3, &|c| c.dilation(2), &x);
}

#[test]
fn gradients_match_finite_differences_rectangular_same() {
    let x = random_tensor(&[2, 3, 7, 8], 6);
    let same = |c: Conv2d| c.kernel(3, 5).padding(Padding::Same);
    check_layer("3x5 same", 2, 3, &same, &x);
    // an even kernel pads one more at the bottom / right, like PyTorch and Keras
    let even = |c: Conv2d| c.kernel(2, 4).padding(Padding::Same);
    check_layer("2x4 same", 2, 3, &even, &x);
}

#[test]
fn gradients_match_finite_differences_without_bias() {
    let x = random_tensor(&[2, 3, 9, 8], 7);
    check_layer(
        "no bias, stride 2x1",
        2,
        2,
        &|c| c.stride_hw(2, 1).with_bias(false),
        &x,
    );
    check_layer(
        "one image (pool-parallel GEMM)",
        2,
        3,
        &|c| c.pad(1),
        &random_tensor(&[1, 2, 5, 5], 3),
    );
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// PyTorch's formula, written out independently of the crate.
fn torch_len(size: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    (size + 2 * p - d * (k - 1) - 1) / s + 1
}

#[test]
fn output_shapes_follow_pytorch() {
    // (H, W, k, s, p, d) → (OH, OW)
    type Case = ((usize, usize, usize, usize, usize, usize), (usize, usize));
    let table: [Case; 10] = [
        ((8, 8, 3, 1, 0, 1), (6, 6)),
        ((5, 7, 3, 2, 1, 1), (3, 4)),
        ((6, 6, 1, 1, 0, 1), (6, 6)),
        ((9, 9, 5, 1, 2, 1), (9, 9)),
        ((9, 8, 3, 1, 0, 2), (5, 4)),
        ((4, 4, 3, 3, 1, 1), (2, 2)),
        ((64, 64, 3, 1, 0, 1), (62, 62)),
        ((31, 31, 3, 1, 0, 1), (29, 29)),
        ((28, 28, 5, 2, 2, 1), (14, 14)),
        ((3, 3, 3, 1, 0, 1), (1, 1)),
    ];
    for ((h, w, k, s, p, d), (oh, ow)) in table {
        let what = format!("H {h} W {w} k {k} s {s} p {p} d {d}");
        assert_eq!(
            (torch_len(h, k, s, p, d), torch_len(w, k, s, p, d)),
            (oh, ow),
            "{what}"
        );
        assert_eq!(conv_out_len(h, k, s, p, d), Some(oh), "{what}");
        assert_eq!(conv_out_len(w, k, s, p, d), Some(ow), "{what}");
        let mut c = Conv2d::new(5, k).stride(s).pad(p).dilation(d);
        let got = c.build(&[2, h, w], &mut handgrad::init::rng(0)).unwrap();
        assert_eq!(got, vec![5, oh, ow], "{what}: layer");
    }
    assert_eq!(conv_out_len(2, 3, 1, 0, 1), None);
    assert_eq!(conv_out_len(5, 3, 1, 0, 3), None);
    // "same" keeps H and W at stride 1 for odd, even and dilated kernels
    for (kh, kw, d, h, w) in [
        (3, 3, 1, 11, 7),
        (5, 1, 1, 6, 9),
        (2, 4, 1, 7, 8),
        (3, 3, 2, 9, 10),
    ] {
        let mut c = Conv2d::new(4, 1)
            .kernel(kh, kw)
            .dilation(d)
            .padding(Padding::Same);
        let got = c.build(&[3, h, w], &mut handgrad::init::rng(0)).unwrap();
        assert_eq!(got, vec![4, h, w], "same {kh}x{kw} d {d} on {h}x{w}");
        let x = random_tensor(&[2, 3, h, w], 1);
        assert_eq!(c.forward(&x, Mode::Eval).unwrap().shape(), [2, 4, h, w]);
    }
}

#[test]
fn describe_names_channels_kernel_stride_and_padding() {
    let mut c = Conv2d::new(32, 3);
    assert_eq!(c.describe(), "Conv2d(?→32, 3x3, stride 1, pad 0)");
    c.build(&[3, 64, 64], &mut handgrad::init::rng(0)).unwrap();
    assert_eq!(c.describe(), "Conv2d(3→32, 3x3, stride 1, pad 0)");
    let c = Conv2d::new(8, 1)
        .kernel(3, 5)
        .stride_hw(2, 1)
        .pad(1)
        .dilation(2)
        .with_bias(false);
    assert_eq!(
        c.describe(),
        "Conv2d(?→8, 3x5, stride 2x1, pad 1, dilation 2, no bias)"
    );
    // PyTorch default init: U(-1/√fan_in, 1/√fan_in) with fan_in = C·kh·kw
    let mut c = Conv2d::new(16, 3);
    c.build(&[4, 8, 8], &mut handgrad::init::rng(3)).unwrap();
    let bound = 1.0 / (4.0f32 * 9.0).sqrt();
    for (name, p) in c.params() {
        assert!(
            p.value.iter().all(|v| v.abs() <= bound),
            "{name} outside ±{bound}"
        );
    }
    assert_eq!(c.params()[0].1.shape(), [16, 4, 3, 3]);
    assert_eq!(c.params()[1].1.shape(), [16]);
}

// ---------------------------------------------------------------------------------------------
// Determinism and buffer reuse
// ---------------------------------------------------------------------------------------------

fn run_on_threads(t: usize, n: usize, x: &Tensor, r: &Tensor) -> (Tensor, Tensor, Vec<Tensor>) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .unwrap()
        .install(|| {
            let mut c = Conv2d::new(6, 3).pad(1).stride_hw(1, 2);
            c.build(&x.shape()[1..], &mut handgrad::init::rng(2))
                .unwrap();
            let out = c.forward(x, Mode::Train).unwrap();
            assert_eq!(out.shape(), r.shape(), "N={n}");
            let dx = c.backward(r).unwrap();
            let grads = c.params().iter().map(|(_, p)| p.grad.clone()).collect();
            (out, dx, grads)
        })
}

#[test]
fn bit_identical_on_1_and_2_threads() {
    for n in [8, 1] {
        let x = random_tensor(&[n, 3, 20, 20], 5);
        let r = random_tensor(&[n, 6, 20, 10], 6);
        let one = run_on_threads(1, n, &x, &r);
        let two = run_on_threads(2, n, &x, &r);
        assert!(
            one.0 == two.0,
            "N={n}: outputs differ between 1 and 2 threads"
        );
        assert!(one.1 == two.1, "N={n}: dx differs between 1 and 2 threads");
        assert!(
            one.2 == two.2,
            "N={n}: dW/db differ between 1 and 2 threads"
        );
    }
}

#[test]
fn workspace_is_reused_across_calls() {
    let g = Conv2dGeom::new(4, 12, 12, 8, 3, 3);
    let x = t4((6, 4, 12, 12), 1);
    let w = t4((8, 4, 3, 3), 2);
    let dout = t4((6, 8, 10, 10), 3);
    let mut ws = Conv2dWorkspace::new();
    let mut dw = Array4::<f32>::zeros(w.dim());
    let step = |ws: &mut Conv2dWorkspace, dw: &mut Array4<f32>| {
        let out = conv2d_forward(x.view(), w.view(), None, &g, ws);
        conv2d_backward(
            dout.view(),
            x.view(),
            w.view(),
            &g,
            ws,
            dw.view_mut(),
            None,
            true,
        );
        out
    };
    let first = step(&mut ws, &mut dw);
    let held = ws.capacity_floats();
    assert!(held > 0, "the workspace keeps its buffers");
    let dw_once = dw.clone();
    for _ in 0..3 {
        assert!(step(&mut ws, &mut dw) == first, "same output on every call");
    }
    assert_eq!(
        ws.capacity_floats(),
        held,
        "no buffer grew after the first call"
    );
    assert_close(
        &dw.into_dyn(),
        &(dw_once * 4.0).into_dyn(),
        1e-5,
        1e-5,
        "dW accumulated over four calls",
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn built(out: usize, k: usize, chw: [usize; 3]) -> Conv2d {
    let mut c = Conv2d::new(out, k);
    c.build(&chw, &mut handgrad::init::rng(0)).unwrap();
    c
}

#[test]
fn nhwc_input_gets_a_layout_hint() {
    let mut c = built(8, 3, [3, 16, 16]);
    let err = c
        .forward(&Tensor::zeros(IxDyn(&[2, 16, 16, 3])), Mode::Train)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("NHWC")
            && msg.contains("NCHW")
            && msg.contains("(N, 3, 16, 16)")
            && msg.contains("[2, 16, 16, 3]"),
        "{msg}"
    );
    // a plain wrong size gets no NHWC hint
    let msg = c
        .forward(&Tensor::zeros(IxDyn(&[2, 3, 15, 16])), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(
        !msg.contains("NHWC") && msg.contains("(N, 3, 16, 16)") && msg.contains("[2, 3, 15, 16]"),
        "{msg}"
    );
}

#[test]
fn rank_3_input_is_rejected_with_the_expected_shape() {
    let mut c = built(8, 3, [3, 16, 16]);
    let err = c
        .forward(&Tensor::zeros(IxDyn(&[3, 16, 16])), Mode::Train)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("[3, 16, 16]") && msg.contains("(N, 3, 16, 16)") && msg.contains("batch"),
        "{msg}"
    );
    let msg = c
        .forward(&Tensor::zeros(IxDyn(&[16, 16])), Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[16, 16]") && msg.contains("NCHW"), "{msg}");
}

#[test]
fn build_rejects_bad_per_sample_shapes_and_settings() {
    let mut rng = handgrad::init::rng(0);
    let msg = Conv2d::new(8, 3)
        .build(&[8, 8], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(C, H, W)") && msg.contains("[8, 8]"), "{msg}");
    // kernel larger than the (padded) input
    let msg = Conv2d::new(8, 5)
        .build(&[3, 4, 4], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("5x5") && msg.contains("4x4") && msg.contains("[3, 4, 4]"),
        "{msg}"
    );
    let msg = Conv2d::new(8, 3)
        .dilation(3)
        .build(&[3, 6, 9], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("7x7") && msg.contains("[3, 6, 9]"), "{msg}");
    // zero sizes
    for (what, conv) in [
        ("stride", Conv2d::new(8, 3).stride(0)),
        ("out_channels", Conv2d::new(0, 3)),
        ("kernel", Conv2d::new(8, 0)),
        ("dilation", Conv2d::new(8, 3).dilation(0)),
    ] {
        let mut conv = conv;
        let err = conv.build(&[3, 8, 8], &mut rng).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{what}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(what) && msg.contains("= 0"), "{what}: {msg}");
    }
    // "same" needs stride 1, as in PyTorch
    let msg = Conv2d::new(8, 3)
        .stride(2)
        .padding(Padding::Same)
        .build(&[3, 8, 8], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("same") && msg.contains("stride"), "{msg}");
}

#[test]
fn from_weights_checks_shapes_and_channels() {
    let mut rng = handgrad::init::rng(0);
    let mut w = Conv2d::from_weights(Tensor::zeros(IxDyn(&[4, 2, 3, 3])), None).unwrap();
    let msg = w.build(&[3, 8, 8], &mut rng).unwrap_err().to_string();
    assert!(
        msg.contains("2 channels") && msg.contains("[3, 8, 8]"),
        "{msg}"
    );
    let msg = Conv2d::from_weights(Tensor::zeros(IxDyn(&[4, 2, 3])), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("[O, C, kh, kw]") && msg.contains("[4, 2, 3]"),
        "{msg}"
    );
    let msg = Conv2d::from_weights(
        Tensor::zeros(IxDyn(&[4, 2, 3, 3])),
        Some(Tensor::zeros(IxDyn(&[3]))),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("[4]") && msg.contains("[3]"), "{msg}");
    // a kernel changed after from_weights no longer matches the weight
    let msg = Conv2d::from_weights(Tensor::zeros(IxDyn(&[4, 2, 3, 3])), None)
        .unwrap()
        .kernel(5, 5)
        .build(&[2, 8, 8], &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("5x5") && msg.contains("[4, 2, 3, 3]"), "{msg}");
}

#[test]
fn backward_needs_a_training_forward_and_a_matching_gradient() {
    let mut c = Conv2d::new(4, 3);
    let x = random_tensor(&[2, 3, 8, 8], 1);
    let err = c.forward(&x, Mode::Train).unwrap_err();
    assert!(
        matches!(err, Error::State(_)) && err.to_string().contains("build"),
        "{err}"
    );
    c.build(&[3, 8, 8], &mut handgrad::init::rng(0)).unwrap();
    let d = random_tensor(&[2, 4, 6, 6], 2);
    let err = c.backward(&d).unwrap_err();
    assert!(
        matches!(err, Error::State(_)) && err.to_string().contains("Mode::Train"),
        "{err}"
    );
    c.forward(&x, Mode::Eval).unwrap();
    assert!(c.backward(&d).is_err(), "an Eval forward caches nothing");
    c.forward(&x, Mode::Train).unwrap();
    let err = c.backward(&random_tensor(&[2, 4, 6, 5], 2)).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("[2, 4, 6, 6]") && msg.contains("[2, 4, 6, 5]"),
        "{msg}"
    );
    assert!(c.backward(&d).is_ok());
}

#[test]
fn gradients_accumulate_over_two_backward_calls() {
    let mut c = built(8, 3, [3, 16, 16]);
    let x = random_tensor(&[2, 3, 16, 16], 1);
    let d = random_tensor(&[2, 8, 14, 14], 2);
    c.forward(&x, Mode::Train).unwrap();
    let dx1 = c.backward(&d).unwrap();
    let once: Vec<Tensor> = c.params().iter().map(|(_, p)| p.grad.clone()).collect();
    let dx2 = c.backward(&d).unwrap();
    assert!(dx1 == dx2, "dx is returned, not accumulated");
    for ((name, p), g1) in c.params().iter().zip(&once) {
        assert!(g1.iter().any(|&v| v != 0.0), "{name}: a non-zero gradient");
        assert_close(
            &p.grad,
            &(g1 * 2.0),
            1e-6,
            1e-6,
            &format!("accumulated {name}"),
        );
    }
    // zero_grad resets, then one more backward gives the single-call gradient again
    for (_, p) in c.params_mut() {
        p.zero_grad();
    }
    c.backward_params_only(&d).unwrap();
    for ((name, p), g1) in c.params().iter().zip(&once) {
        assert!(
            p.grad == *g1,
            "{name}: params-only backward = full backward's gradients"
        );
    }
}
