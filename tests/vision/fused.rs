//! The fused inference paths: the depthwise loops' SIMD builds against the portable one, the
//! convolution epilogue, MBConv's folded BatchNorm against the unfolded chain, and
//! bit-identical results on 1 and 2 threads.

use crate::common::{assert_close, random_tensor};
use handgrad::init::rng;
use handgrad::layers::{Layer, MbConv, Mode};
use handgrad::ops::conv2d::{
    conv2d_forward, conv2d_forward_fused, Conv2dGeom, Conv2dWorkspace, Epilogue,
};
use handgrad::ops::depthwise::{depthwise_backward_with, depthwise_forward_with, KernelPath};
use handgrad::Tensor;
use ndarray::{Array1, Array4, Ix4};

fn t4(shape: [usize; 4], seed: u64) -> Array4<f32> {
    random_tensor(&shape, seed)
        .into_dimensionality::<Ix4>()
        .expect("rank 4")
}

fn geoms() -> Vec<Conv2dGeom> {
    vec![
        Conv2dGeom::new(5, 9, 11, 5, 3, 3)
            .with_groups(5)
            .with_tf_same_padding(),
        Conv2dGeom::new(4, 10, 10, 4, 5, 5)
            .with_stride(2, 2)
            .with_groups(4)
            .with_tf_same_padding(),
        Conv2dGeom::new(3, 9, 7, 3, 3, 3)
            .with_stride(2, 2)
            .with_groups(3)
            .with_tf_same_padding(),
        Conv2dGeom::new(3, 13, 40, 3, 3, 3)
            .with_stride(3, 3)
            .with_dilation(2, 2)
            .with_padding(1, 2)
            .with_groups(3),
        Conv2dGeom::new(6, 7, 7, 6, 5, 5)
            .with_groups(6)
            .with_tf_same_padding(),
    ]
}

#[test]
fn depthwise_simd_builds_match_the_portable_loops() {
    let paths = KernelPath::available();
    assert_eq!(paths.last(), Some(&KernelPath::Scalar));
    for (gi, g) in geoms().iter().enumerate() {
        let x = t4([2, g.c, g.h, g.w], 10 + gi as u64);
        let w = t4([g.c, 1, g.kh, g.kw], 20 + gi as u64);
        let b = Array1::from_iter((0..g.c).map(|c| 0.1 * c as f32 - 0.2));
        let scale: Vec<f32> = (0..g.c).map(|c| 0.5 + 0.25 * c as f32).collect();
        let (oh, ow) = g.out_hw();
        let dout = t4([2, g.c, oh, ow], 30 + gi as u64);
        let run = |path: KernelPath, epi: Epilogue| {
            let y = depthwise_forward_with(x.view(), w.view(), Some(b.view()), g, epi, path);
            let mut dw = Array4::<f32>::zeros(w.raw_dim());
            let mut db = Array1::<f32>::zeros(g.c);
            let dx = depthwise_backward_with(
                dout.view(),
                x.view(),
                w.view(),
                g,
                dw.view_mut(),
                Some(db.view_mut()),
                true,
                path,
            )
            .expect("dx");
            [y, dx, dw].map(|a| a.into_dyn())
        };
        let epi = Epilogue {
            scale: Some(&scale),
            clamp: Some((0.0, 0.3)),
        };
        for e in [Epilogue::default(), epi] {
            let want = run(KernelPath::Scalar, e);
            for &path in &paths {
                let got = run(path, e);
                for (k, name) in ["out", "dx", "dw"].iter().enumerate() {
                    let what = format!("{} geometry {gi} {name}", path.name());
                    assert_close(&got[k], &want[k], 1e-5, 1e-5, &what);
                }
            }
        }
        // the epilogue: clamp(scale·conv + bias)
        let plain = run(KernelPath::Scalar, Epilogue::default())[0].clone();
        let fused = run(KernelPath::Scalar, epi)[0].clone();
        let mut expect = plain.clone();
        for ((n, c, i, j), v) in expect
            .view_mut()
            .into_dimensionality::<Ix4>()
            .unwrap()
            .indexed_iter_mut()
        {
            let _ = (n, i, j);
            *v = (scale[c] * (*v - b[c]) + b[c]).clamp(0.0, 0.3);
        }
        assert_close(&fused, &expect, 1e-5, 1e-5, &format!("epilogue {gi}"));
    }
}

#[test]
fn fused_epilogue_of_dense_and_pointwise_convolutions() {
    for g in [
        Conv2dGeom::new(3, 50, 50, 4, 1, 1),
        Conv2dGeom::new(3, 8, 9, 4, 3, 3).with_tf_same_padding(),
        Conv2dGeom::new(3, 8, 9, 4, 3, 3)
            .with_stride(2, 2)
            .with_tf_same_padding(),
        Conv2dGeom::new(4, 6, 6, 6, 3, 3)
            .with_groups(2)
            .with_padding(1, 1),
    ] {
        let x = t4([2, g.c, g.h, g.w], 1);
        let w = t4([g.o, g.c / g.groups, g.kh, g.kw], 2);
        let b = Array1::from_iter((0..g.o).map(|o| 0.2 * o as f32 - 0.3));
        let scale: Vec<f32> = (0..g.o).map(|o| 1.5 - 0.3 * o as f32).collect();
        let mut ws = Conv2dWorkspace::new();
        let plain = conv2d_forward(x.view(), w.view(), None, &g, &mut ws);
        let epi = Epilogue {
            scale: Some(&scale),
            clamp: Some((-0.1, 0.4)),
        };
        let fused = conv2d_forward_fused(x.view(), w.view(), Some(b.view()), &g, &mut ws, epi);
        let mut expect = plain.clone();
        for ((_, o, _, _), v) in expect.indexed_iter_mut() {
            *v = (scale[o] * *v + b[o]).clamp(-0.1, 0.4);
        }
        assert_close(
            &fused.into_dyn(),
            &expect.into_dyn(),
            1e-5,
            1e-5,
            &format!("{g:?}"),
        );
    }
}

/// Two identical blocks with non-trivial BatchNorm statistics; `fold` chooses the evaluation path.
fn block_pair(make: impl Fn() -> MbConv, input: &[usize]) -> (MbConv, MbConv) {
    let mut a = make();
    let mut b = make().fold_batch_norm(false);
    a.build(input, &mut rng(5)).unwrap();
    b.build(input, &mut rng(5)).unwrap();
    for blk in [&mut a, &mut b] {
        for (i, (_, t)) in blk.buffers_mut().into_iter().enumerate() {
            if t.ndim() == 1 {
                let r = random_tensor(t.shape(), 100 + i as u64);
                *t = r.mapv(|v| 0.5 + v.abs());
            }
        }
        for (i, (_, p)) in blk.params_mut().into_iter().enumerate() {
            if p.value.ndim() == 1 {
                p.value = random_tensor(p.value.shape(), 200 + i as u64).mapv(|v| 1.0 + v);
            }
        }
    }
    (a, b)
}

/// A block constructor and the input shape it runs on.
type BlockCase = (fn() -> MbConv, [usize; 4]);

#[test]
fn mbconv_folded_evaluation_equals_the_unfolded_chain() {
    let cases: [BlockCase; 3] = [
        (|| MbConv::new(8, 6, 3, 1), [2, 8, 9, 9]),
        (|| MbConv::new(12, 4, 5, 2), [3, 6, 10, 11]),
        (|| MbConv::new(6, 1, 3, 2), [1, 5, 8, 8]),
    ];
    for (make, shape) in cases {
        let (mut folded, mut plain) = block_pair(make, &shape[1..]);
        let x = random_tensor(&shape, 7).mapv(|v| 3.0 * v);
        let a = folded.forward(&x, Mode::Eval).unwrap();
        let b = plain.forward(&x, Mode::Eval).unwrap();
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_close(&a, &b, 1e-5 * scale.max(1.0), 1e-5, &folded.describe());
        // training is unchanged by the folding
        let ta = folded.forward(&x, Mode::Train).unwrap();
        let tb = plain.forward(&x, Mode::Train).unwrap();
        assert_eq!(ta, tb, "{}: train forward", folded.describe());
        // a backward after a folded evaluation forward fails, as after any evaluation forward
        folded.forward(&x, Mode::Eval).unwrap();
        let e = folded.backward(&Tensor::zeros(a.raw_dim())).unwrap_err();
        assert!(e.to_string().contains("Mode::Train"), "{e}");
    }
}

#[test]
fn fused_paths_are_bit_identical_on_one_and_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut blk, _) = block_pair(|| MbConv::new(16, 6, 5, 2), &[16, 40, 40]);
            let x = random_tensor(&[2, 16, 40, 40], 3);
            let y = blk.forward(&x, Mode::Eval).unwrap();
            let y1 = blk
                .forward(
                    &x.slice(ndarray::s![0..1, .., .., ..]).to_owned().into_dyn(),
                    Mode::Eval,
                )
                .unwrap();
            (y, y1)
        })
    };
    assert_eq!(run(1), run(2));
}
