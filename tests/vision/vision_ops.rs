//! Goldens, gradient checks and errors for the vision ops: grouped and depthwise conv2d with
//! TF-SAME padding, ReLU6, global average pooling, BatchNorm2d with eps 1e-3 / momentum 0.01.

use crate::common::{assert_close, grad_check, random_tensor, weighted_sum, Fixture};
use handgrad::init::rng;
use handgrad::layers::{BatchNorm2d, Conv2d, GlobalAvgPool2d, Layer, Mode, Padding, Relu6};
use handgrad::ops::conv2d::{
    conv2d_backward, conv2d_forward, tf_same_pads, Conv2dGeom, Conv2dWorkspace,
};
use handgrad::{Error, Tensor};
use ndarray::{s, Array4, Ix4, IxDyn};

/// A conv fixture through the `Conv2d` layer: `out`, `grad.x`, `grad.weight` (and bias).
fn conv_case(name: &str, stride: usize, groups: usize, padding: Padding, bias: bool) {
    let f = Fixture::load(&format!("vision/{name}"));
    let x = f.f32("x");
    let w = f.f32("weight");
    let b = bias.then(|| f.f32("bias"));
    let k = w.shape()[2];
    let mut conv = Conv2d::from_weights(w.clone(), b)
        .unwrap()
        .stride(stride)
        .groups(groups)
        .padding(padding);
    conv.build(&x.shape()[1..], &mut rng(0)).unwrap();
    assert_eq!(conv.weight().unwrap().shape()[2], k);
    let out = conv.forward(&x, Mode::Train).unwrap();
    f.check("out", &out);
    let dx = conv.backward(&f.f32("grad_out")).unwrap();
    f.check("grad.x", &dx);
    f.check("grad.weight", &conv.weight().unwrap().grad);
    if bias {
        f.check("grad.bias", &conv.bias().unwrap().grad);
    }
}

#[test]
fn golden_dwconv2d_k3s1_same() {
    conv_case("dwconv2d_k3s1_same", 1, 4, Padding::TfSame, false);
}

#[test]
fn golden_dwconv2d_k3s2_tfsame() {
    conv_case("dwconv2d_k3s2_tfsame", 2, 4, Padding::TfSame, false);
}

#[test]
fn golden_dwconv2d_k5s1_same() {
    conv_case("dwconv2d_k5s1_same", 1, 3, Padding::TfSame, false);
}

#[test]
fn golden_dwconv2d_k5s2_tfsame() {
    conv_case("dwconv2d_k5s2_tfsame", 2, 3, Padding::TfSame, false);
}

#[test]
fn golden_conv2d_k3s2_tfsame() {
    conv_case("conv2d_k3s2_tfsame", 2, 1, Padding::TfSame, false);
}

#[test]
fn golden_groupconv2d_g2_m2() {
    conv_case("groupconv2d_g2_m2", 1, 2, Padding::Explicit(1, 1), true);
}

#[test]
fn golden_dwconv2d_with_explicit_asymmetric_padding() {
    // the same case, its pads given explicitly (t0 b1 l1 r1)
    let pad = Padding::Asymmetric {
        top: 0,
        bottom: 1,
        left: 1,
        right: 1,
    };
    conv_case("dwconv2d_k3s2_tfsame", 2, 4, pad, false);
}

#[test]
fn tf_same_pads_table() {
    // (n, k, s) → (before, after), from the fixtures' README and timm's get_same_padding
    for &((n, k, s), want) in &[
        ((224, 3, 2), (0, 1)),
        ((224, 5, 2), (1, 2)),
        ((225, 3, 2), (1, 1)),
        ((225, 5, 2), (2, 2)),
        ((112, 3, 1), (1, 1)),
        ((14, 5, 1), (2, 2)),
        ((8, 3, 2), (0, 1)),
        ((9, 3, 2), (1, 1)),
        ((8, 5, 2), (1, 2)),
        ((11, 5, 2), (2, 2)),
        ((7, 1, 1), (0, 0)),
        ((1, 3, 2), (1, 1)),
    ] {
        assert_eq!(tf_same_pads(n, k, s, 1), want, "n={n} k={k} s={s}");
    }
    // the layer's output size is ⌈n/s⌉
    for (h, w) in [(224, 224), (225, 223), (7, 8)] {
        let mut conv = Conv2d::new(4, 3).stride(2).padding(Padding::TfSame);
        let out = conv.build(&[3, h, w], &mut rng(0)).unwrap();
        assert_eq!(out, vec![4, h.div_ceil(2), w.div_ceil(2)]);
    }
}

/// A block-diagonal dense weight `[O, C, kh, kw]` equivalent to a grouped weight.
fn block_diagonal(w: &Array4<f32>, c: usize, groups: usize) -> Array4<f32> {
    let (o, cg, kh, kw) = w.dim();
    let og = o / groups;
    let mut dense = Array4::<f32>::zeros((o, c, kh, kw));
    for g in 0..groups {
        dense
            .slice_mut(s![g * og..(g + 1) * og, g * cg..(g + 1) * cg, .., ..])
            .assign(&w.slice(s![g * og..(g + 1) * og, .., .., ..]));
    }
    dense
}

/// The grouped/depthwise kernels against the dense im2col path on a block-diagonal weight.
fn compare_with_dense(g: Conv2dGeom, n: usize, seed: u64) {
    let (cg, _) = g.group_channels();
    let x = random_tensor(&[n, g.c, g.h, g.w], seed)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let w = random_tensor(&[g.o, cg, g.kh, g.kw], seed + 1)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let b = random_tensor(&[g.o], seed + 2)
        .into_dimensionality()
        .unwrap();
    let dense_w = block_diagonal(&w, g.c, g.groups);
    let dense_g = Conv2dGeom { groups: 1, ..g };
    let mut ws = Conv2dWorkspace::new();
    let out = conv2d_forward(x.view(), w.view(), Some(b.view()), &g, &mut ws);
    let want = conv2d_forward(x.view(), dense_w.view(), Some(b.view()), &dense_g, &mut ws);
    let what = format!("{g:?}");
    assert_close(&out.clone().into_dyn(), &want.into_dyn(), 1e-5, 1e-5, &what);
    let dout = random_tensor(out.shape(), seed + 3)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let mut dw = Array4::<f32>::zeros(w.dim());
    let mut db = ndarray::Array1::<f32>::zeros(g.o);
    let dx = conv2d_backward(
        dout.view(),
        x.view(),
        w.view(),
        &g,
        &mut ws,
        dw.view_mut(),
        Some(db.view_mut()),
        true,
    )
    .unwrap();
    let mut ddw = Array4::<f32>::zeros(dense_w.dim());
    let mut ddb = ndarray::Array1::<f32>::zeros(g.o);
    let ddx = conv2d_backward(
        dout.view(),
        x.view(),
        dense_w.view(),
        &dense_g,
        &mut ws,
        ddw.view_mut(),
        Some(ddb.view_mut()),
        true,
    )
    .unwrap();
    assert_close(
        &dx.into_dyn(),
        &ddx.into_dyn(),
        1e-5,
        1e-5,
        &format!("{what} dx"),
    );
    // the dense weight gradient restricted to the diagonal blocks is the grouped one
    let og = g.o / g.groups;
    let mut ddw_blocks = Array4::<f32>::zeros(w.dim());
    for gi in 0..g.groups {
        ddw_blocks
            .slice_mut(s![gi * og..(gi + 1) * og, .., .., ..])
            .assign(&ddw.slice(s![gi * og..(gi + 1) * og, gi * cg..(gi + 1) * cg, .., ..]));
    }
    assert_close(
        &dw.into_dyn(),
        &ddw_blocks.into_dyn(),
        1e-4,
        1e-5,
        &format!("{what} dw"),
    );
    assert_close(
        &db.into_dyn(),
        &ddb.into_dyn(),
        1e-4,
        1e-5,
        &format!("{what} db"),
    );
}

#[test]
fn depthwise_and_grouped_paths_match_the_dense_path() {
    let cases = [
        // depthwise (direct kernel): k3 s1, k3 s2 TF-SAME, k5 s2 on an odd size, dilation 2
        Conv2dGeom::new(5, 9, 8, 5, 3, 3)
            .with_groups(5)
            .with_tf_same_padding(),
        Conv2dGeom::new(4, 10, 11, 4, 3, 3)
            .with_stride(2, 2)
            .with_groups(4)
            .with_tf_same_padding(),
        Conv2dGeom::new(3, 9, 7, 3, 5, 5)
            .with_stride(2, 2)
            .with_groups(3)
            .with_tf_same_padding(),
        Conv2dGeom::new(2, 9, 9, 2, 3, 3)
            .with_dilation(2, 2)
            .with_padding(2, 2)
            .with_groups(2),
        Conv2dGeom::new(3, 6, 6, 3, 3, 2)
            .with_stride(1, 2)
            .with_groups(3),
        // grouped (im2col per group): multiplier 2, and C/G = 2 → O/G = 3
        Conv2dGeom::new(4, 6, 7, 8, 3, 3)
            .with_groups(4)
            .with_padding(1, 1),
        Conv2dGeom::new(4, 7, 6, 6, 3, 3)
            .with_groups(2)
            .with_stride(2, 2)
            .with_tf_same_padding(),
    ];
    for (i, g) in cases.into_iter().enumerate() {
        compare_with_dense(g, 3, 100 + 10 * i as u64);
    }
}

#[test]
fn pointwise_conv_matches_a_padded_im2col_reference() {
    // 1×1 stride-1 convs skip im2col; compare with the same conv zero-padded by one and cropped
    let g = Conv2dGeom::new(6, 5, 7, 4, 1, 1);
    let x = random_tensor(&[2, 6, 5, 7], 5)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let w = random_tensor(&[4, 6, 1, 1], 6)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let mut ws = Conv2dWorkspace::new();
    let out = conv2d_forward(x.view(), w.view(), None, &g, &mut ws);
    let padded = g.with_padding(1, 1);
    let big = conv2d_forward(x.view(), w.view(), None, &padded, &mut ws);
    let crop = big.slice(s![.., .., 1..6, 1..8]).to_owned();
    assert_close(&out.into_dyn(), &crop.into_dyn(), 1e-6, 1e-6, "1x1 conv");
}

#[test]
fn depthwise_is_bit_identical_on_1_and_2_threads() {
    let g = Conv2dGeom::new(8, 17, 15, 8, 5, 5)
        .with_stride(2, 2)
        .with_groups(8)
        .with_tf_same_padding();
    let x = random_tensor(&[3, 8, 17, 15], 1)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let w = random_tensor(&[8, 1, 5, 5], 2)
        .into_dimensionality::<Ix4>()
        .unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut ws = Conv2dWorkspace::new();
            let out = conv2d_forward(x.view(), w.view(), None, &g, &mut ws);
            let mut dw = Array4::<f32>::zeros(w.dim());
            let dx = conv2d_backward(
                out.view(),
                x.view(),
                w.view(),
                &g,
                &mut ws,
                dw.view_mut(),
                None,
                true,
            )
            .unwrap();
            (out, dx, dw)
        })
    };
    let (a, b) = (run(1), run(2));
    let bits = |t: &Array4<f32>| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.0), bits(&b.0), "forward");
    assert_eq!(bits(&a.1), bits(&b.1), "dx");
    assert_eq!(bits(&a.2), bits(&b.2), "dw");
}

/// Finite-difference checks of a conv layer's dx, dweight and dbias.
fn conv_grad_check(make: impl Fn() -> Conv2d, input: &[usize], seed: u64) {
    let x = random_tensor(input, seed);
    let mut conv = make();
    let out_shape = conv.build(&input[1..], &mut rng(seed)).unwrap();
    let mut shape = vec![input[0]];
    shape.extend(out_shape);
    let r = random_tensor(&shape, seed + 1);
    let out = conv.forward(&x, Mode::Train).unwrap();
    let dx = conv.backward(&r).unwrap();
    let w0 = conv.weight().unwrap().value.clone();
    let dw = conv.weight().unwrap().grad.clone();
    let b0 = conv.bias().unwrap().value.clone();
    let dbias = conv.bias().unwrap().grad.clone();
    assert_eq!(out.shape(), r.shape());
    let desc = conv.describe();
    let eval =
        |conv: &mut Conv2d, x: &Tensor| weighted_sum(&conv.forward(x, Mode::Eval).unwrap(), &r);
    grad_check(
        &format!("{desc} dx"),
        &x,
        &dx,
        |xp| eval(&mut conv, xp),
        1e-2,
        2e-3,
    );
    let mut c2 = make();
    c2.build(&input[1..], &mut rng(seed)).unwrap();
    grad_check(
        &format!("{desc} dweight"),
        &w0,
        &dw,
        |wp| {
            c2.params_mut()[0].1.value.assign(wp);
            eval(&mut c2, &x)
        },
        1e-2,
        2e-3,
    );
    let mut c3 = make();
    c3.build(&input[1..], &mut rng(seed)).unwrap();
    grad_check(
        &format!("{desc} dbias"),
        &b0,
        &dbias,
        |bp| {
            c3.params_mut()[1].1.value.assign(bp);
            eval(&mut c3, &x)
        },
        1e-2,
        2e-3,
    );
}

#[test]
fn gradcheck_depthwise_tf_same_stride2() {
    conv_grad_check(
        || {
            Conv2d::new(3, 3)
                .stride(2)
                .groups(3)
                .padding(Padding::TfSame)
        },
        &[2, 3, 6, 7],
        11,
    );
    conv_grad_check(
        || Conv2d::new(2, 5).groups(2).padding(Padding::TfSame),
        &[2, 2, 5, 6],
        12,
    );
}

#[test]
fn gradcheck_grouped_conv() {
    conv_grad_check(
        || {
            Conv2d::new(6, 3)
                .stride(2)
                .groups(3)
                .padding(Padding::TfSame)
        },
        &[2, 3, 6, 5],
        21,
    );
    conv_grad_check(|| Conv2d::new(4, 3).groups(2).pad(1), &[2, 4, 5, 5], 22);
}

#[test]
fn golden_relu6_exact() {
    let f = Fixture::load("vision/relu6");
    let x = f.f32("x");
    let mut act = Relu6::new();
    let out = act.forward(&x, Mode::Train).unwrap();
    assert_eq!(out, f.f32("out"), "relu6 forward");
    let dx = act.backward(&f.f32("grad_out")).unwrap();
    assert_eq!(dx, f.f32("grad.x"), "relu6 backward");
    // the in-place owned path gives the same bits
    let mut act = Relu6::new();
    let out2 = act.forward_owned(x.clone(), Mode::Train).unwrap();
    assert_eq!(out2, out);
    let dx2 = act.backward_owned(f.f32("grad_out")).unwrap();
    assert_eq!(dx2, dx);
}

#[test]
fn relu6_gradient_is_zero_at_the_clamps() {
    let x =
        Tensor::from_shape_vec(IxDyn(&[1, 6]), vec![-1.0, 0.0, 3.0, 6.0, 7.0, f32::NAN]).unwrap();
    let mut act = Relu6::new();
    let y = act.forward(&x, Mode::Train).unwrap();
    assert_eq!(&y.as_slice().unwrap()[..5], &[0.0, 0.0, 3.0, 6.0, 6.0]);
    assert!(y[[0, 5]].is_nan(), "NaN propagates");
    let dx = act.backward(&Tensor::ones(IxDyn(&[1, 6]))).unwrap();
    assert_eq!(dx.as_slice().unwrap(), &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn gradcheck_relu6() {
    // values away from the kinks at 0 and 6
    let x =
        random_tensor(&[2, 3, 4], 3).mapv(|v| if v.abs() < 0.05 { v + 0.2 } else { v } * 5.0 + 2.0);
    let x = x.mapv(|v| if (v - 6.0).abs() < 0.1 { v + 0.3 } else { v });
    let r = random_tensor(&[2, 3, 4], 4);
    let mut act = Relu6::new();
    act.forward(&x, Mode::Train).unwrap();
    let dx = act.backward(&r).unwrap();
    grad_check(
        "relu6",
        &x,
        &dx,
        |xp| weighted_sum(&Relu6::new().forward(xp, Mode::Eval).unwrap(), &r),
        1e-3,
        1e-3,
    );
}

#[test]
fn golden_global_avg_pool() {
    let f = Fixture::load("vision/global_avg_pool");
    let x = f.f32("x");
    let mut pool = GlobalAvgPool2d::new();
    assert_eq!(pool.build(&x.shape()[1..], &mut rng(0)).unwrap(), vec![5]);
    let out = pool.forward(&x, Mode::Train).unwrap();
    f.check(
        "out",
        &out.clone()
            .into_shape_with_order(IxDyn(&[2, 5, 1, 1]))
            .unwrap(),
    );
    let d = f
        .f32("grad_out")
        .into_shape_with_order(IxDyn(&[2, 5]))
        .unwrap();
    let dx = pool.backward(&d).unwrap();
    f.check("grad.x", &dx);
    // gradient check
    let r = random_tensor(&[2, 5], 9);
    let dx = pool.backward(&r).unwrap();
    grad_check(
        "global_avg_pool",
        &x,
        &dx,
        |xp| weighted_sum(&pool.clone().forward(xp, Mode::Eval).unwrap(), &r),
        1e-2,
        1e-3,
    );
}

#[test]
fn global_avg_pool_errors_name_the_shape() {
    let mut pool = GlobalAvgPool2d::new();
    let e = pool.build(&[5], &mut rng(0)).unwrap_err().to_string();
    assert!(
        e.contains("GlobalAvgPool2d") && e.contains("(C, H, W)"),
        "{e}"
    );
    pool.build(&[5, 4, 4], &mut rng(0)).unwrap();
    let e = pool
        .forward(&Tensor::zeros(IxDyn(&[2, 4, 4, 4])), Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 4, 4, 4]"), "{e}");
    let e = pool
        .backward(&Tensor::zeros(IxDyn(&[2, 5])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Mode::Train"), "{e}");
}

/// A BatchNorm2d with the fixture's parameters and running statistics.
fn bn_from(f: &Fixture, momentum: f32, tracked: bool) -> BatchNorm2d {
    let x = f.f32("x");
    let mut bn = BatchNorm2d::new().eps(1e-3).momentum(momentum);
    bn.build(&x.shape()[1..], &mut rng(0)).unwrap();
    for (name, p) in bn.params_mut() {
        p.value.assign(&f.f32(&name));
    }
    for (name, b) in bn.buffers_mut() {
        if name == "num_batches_tracked" {
            if tracked {
                b.fill(f.i64("num_batches_tracked")[0] as f32);
            }
        } else {
            b.assign(&f.f32(&name));
        }
    }
    bn
}

#[test]
fn golden_batchnorm2d_eval_eps_1e3() {
    let f = Fixture::load("vision/batchnorm2d_eval");
    let mut bn = bn_from(&f, 0.01, false);
    let out = bn.forward(&f.f32("x"), Mode::Eval).unwrap();
    f.check("out", &out);
    let dx = bn.backward(&f.f32("grad_out")).unwrap();
    f.check("grad.x", &dx);
    f.check("grad.weight", &bn.weight().unwrap().grad);
    f.check("grad.bias", &bn.bias().unwrap().grad);
    assert_eq!(bn.num_batches_tracked(), 0, "eval forwards are not counted");
}

#[test]
fn golden_batchnorm2d_train_momentum_001() {
    let f = Fixture::load("vision/batchnorm2d_train");
    let mut bn = bn_from(&f, 0.01, true);
    assert_eq!(bn.num_batches_tracked(), 5);
    let out = bn.forward(&f.f32("x"), Mode::Train).unwrap();
    f.check("out", &out);
    let dx = bn.backward(&f.f32("grad_out")).unwrap();
    f.check("grad.x", &dx);
    f.check("grad.weight", &bn.weight().unwrap().grad);
    f.check("grad.bias", &bn.bias().unwrap().grad);
    f.check("after.running_mean", bn.running_mean());
    f.check("after.running_var", bn.running_var());
    assert_eq!(
        bn.num_batches_tracked() as i64,
        f.i64("after.num_batches_tracked")[0]
    );
}

#[test]
fn conv_config_errors_name_the_values() {
    let mut conv = Conv2d::new(6, 3).groups(4);
    let e = conv.build(&[8, 5, 5], &mut rng(0)).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("groups") && e.contains('4') && e.contains("8") && e.contains('6'),
        "{e}"
    );
    let e = Conv2d::new(6, 3)
        .groups(0)
        .build(&[6, 5, 5], &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("groups"), "{e}");
    let e = Conv2d::new(4, 3)
        .stride(2)
        .padding(Padding::Same)
        .build(&[3, 8, 8], &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("TfSame"), "{e}");
    // a grouped weight given for the wrong number of input channels
    let w = Tensor::zeros(IxDyn(&[4, 1, 3, 3]));
    let e = Conv2d::from_weights(w, None)
        .unwrap()
        .groups(4)
        .build(&[8, 5, 5], &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 channels") && e.contains("[8, 5, 5]"), "{e}");
}

#[test]
fn conv_describe_shows_groups_and_padding() {
    let mut conv = Conv2d::new(8, 3)
        .stride(2)
        .groups(8)
        .padding(Padding::TfSame)
        .with_bias(false);
    conv.build(&[8, 9, 9], &mut rng(0)).unwrap();
    assert_eq!(
        conv.describe(),
        "Conv2d(8→8, 3x3, stride 2, pad tf-same, groups 8, no bias)"
    );
    assert_eq!(conv.weight().unwrap().shape(), &[8, 1, 3, 3]);
    // PyTorch's fan-in for a grouped conv is (C/G)·kh·kw: bound 1/3 here
    let bound = conv
        .weight()
        .unwrap()
        .value
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(bound <= 1.0 / 3.0 && bound > 0.2, "{bound}");
}
