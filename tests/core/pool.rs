//! MaxPool2d / AvgPool2d: golden comparison with PyTorch (outputs, input gradients, argmax
//! indices), a naive reference over a table of geometries, finite-difference gradient checks,
//! output-shape arithmetic, errors, and thread-count determinism.

use crate::common;

use common::{grad_check, random_tensor, weighted_sum, Fixture};
use handgrad::layers::{AvgPool2d, Layer, MaxPool2d, Mode};
use handgrad::ops::pool::{max_pool2d_forward, PoolGeometry};
use handgrad::{Error, Tensor};
use ndarray::{Array4, Ix4, IxDyn};

fn rng() -> handgrad::init::Rng {
    handgrad::init::rng(0)
}

fn built<L: Layer>(mut layer: L, x: &Tensor) -> L {
    layer.build(&x.shape()[1..], &mut rng()).unwrap();
    layer
}

/// A shuffled permutation of `0..n` scaled by `gap`: distinct values whose differences are all
/// ≥ `gap`, so no window has a near-tie and max pooling is smooth at the finite-difference step.
fn distinct_tensor(shape: &[usize], gap: f32, seed: u64) -> Tensor {
    let keys = random_tensor(shape, seed);
    let mut order: Vec<usize> = (0..keys.len()).collect();
    let k = keys.as_slice().unwrap();
    order.sort_by(|&a, &b| k[a].total_cmp(&k[b]).then(a.cmp(&b)));
    let mut data = vec![0.0f32; keys.len()];
    let half = keys.len() as f32 / 2.0;
    for (rank, &i) in order.iter().enumerate() {
        data[i] = (rank as f32 - half) * gap;
    }
    Tensor::from_shape_vec(IxDyn(shape), data).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Golden: PyTorch fixtures
// ---------------------------------------------------------------------------------------------

fn maxpool_golden(name: &str, k: usize, s: usize) {
    let fx = Fixture::load(name);
    let x = fx.f32("x");
    let mut pool = built(MaxPool2d::new(k).stride(s), &x);
    let out = pool.forward(&x, Mode::Train).unwrap();
    fx.check("out", &out);
    let want_idx = fx.i64("indices");
    let got_idx: Vec<i64> = pool.indices().unwrap().iter().map(|&i| i as i64).collect();
    assert_eq!(got_idx, want_idx, "{name}: argmax indices");
    let dx = pool.backward(&fx.f32("grad_out")).unwrap();
    fx.check("grad.x", &dx);

    // The kernel alone gives the same.
    let x4 = x.view().into_dimensionality::<Ix4>().unwrap();
    let (out_k, idx_k) = max_pool2d_forward(
        x4,
        &PoolGeometry {
            stride: (s, s),
            ..PoolGeometry::new(k, k)
        },
    );
    fx.check("out", &out_k.into_dyn());
    assert!(idx_k.iter().zip(&want_idx).all(|(&a, &b)| a as i64 == b));
}

#[test]
fn maxpool_k2s2_even_matches_pytorch() {
    maxpool_golden("maxpool2d_k2s2_even", 2, 2);
}

#[test]
fn maxpool_k2s2_odd_matches_pytorch() {
    maxpool_golden("maxpool2d_k2s2_odd", 2, 2);
}

#[test]
fn maxpool_k3s2_overlapping_windows_match_pytorch() {
    maxpool_golden("maxpool2d_k3s2_overlap", 3, 2);
}

// ---------------------------------------------------------------------------------------------
// A naive reference (PyTorch's definition, written out) over a table of geometries
// ---------------------------------------------------------------------------------------------

/// Square, non-square, overlapping, padded and ceil-mode geometries.
const GEOMETRIES: [PoolGeometry; 12] = [
    geometry((2, 2), (2, 2), (0, 0), false),
    geometry((2, 2), (2, 2), (0, 0), true),
    geometry((3, 3), (2, 2), (0, 0), false),
    geometry((3, 3), (2, 2), (1, 1), true),
    geometry((3, 3), (1, 1), (1, 1), false),
    geometry((2, 2), (2, 2), (1, 1), true),
    geometry((2, 3), (1, 2), (1, 1), false),
    geometry((3, 2), (3, 1), (0, 1), true),
    geometry((1, 1), (2, 2), (0, 0), true),
    geometry((3, 3), (3, 3), (0, 0), false),
    geometry((3, 3), (3, 3), (1, 1), true),
    geometry((4, 4), (4, 4), (2, 2), false),
];

const fn geometry(
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    ceil_mode: bool,
) -> PoolGeometry {
    PoolGeometry {
        kernel,
        stride,
        padding,
        ceil_mode,
    }
}

/// Window `o` of one axis: input range and padded length (clipped at `n + p`, PyTorch).
fn naive_window(o: usize, k: usize, s: usize, p: usize, n: usize) -> (Vec<usize>, usize) {
    let start = (o * s) as i64 - p as i64;
    let end = (start + k as i64).min((n + p) as i64);
    (
        (start.max(0)..end.min(n as i64))
            .map(|i| i as usize)
            .collect(),
        (end - start) as usize,
    )
}

fn naive_pools(
    x: &Array4<f32>,
    g: &PoolGeometry,
    oh: usize,
    ow: usize,
) -> (Array4<f32>, Array4<u32>, Array4<f32>) {
    let (n, c, h, w) = x.dim();
    let mut max = Array4::zeros((n, c, oh, ow));
    let mut arg = Array4::zeros((n, c, oh, ow));
    let mut avg = Array4::zeros((n, c, oh, ow));
    for (b, ch, i, j) in itertools(n, c, oh, ow) {
        let (rows, hp) = naive_window(i, g.kernel.0, g.stride.0, g.padding.0, h);
        let (cols, wp) = naive_window(j, g.kernel.1, g.stride.1, g.padding.1, w);
        let (mut best, mut at, mut sum) = (f32::NEG_INFINITY, usize::MAX, 0.0f64);
        for &r in &rows {
            for &q in &cols {
                let v = x[[b, ch, r, q]];
                sum += v as f64;
                if v > best {
                    (best, at) = (v, r * w + q);
                }
            }
        }
        max[[b, ch, i, j]] = best;
        arg[[b, ch, i, j]] = at as u32;
        avg[[b, ch, i, j]] = (sum / (hp * wp) as f64) as f32;
    }
    (max, arg, avg)
}

fn itertools(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).flat_map(move |a| {
        (0..c).flat_map(move |b| (0..h).flat_map(move |i| (0..w).map(move |j| (a, b, i, j))))
    })
}

#[test]
fn pools_match_a_naive_reference_over_a_table_of_geometries() {
    for (case, &g) in GEOMETRIES.iter().enumerate() {
        for (h, w) in [(7, 9), (8, 8), (5, 6)] {
            let x = distinct_tensor(&[2, 3, h, w], 0.01, case as u64 * 31 + h as u64);
            let (oh, ow) = g.output_size(h, w).unwrap();
            let x4 = x.clone().into_dimensionality::<Ix4>().unwrap();
            let (want_max, want_arg, want_avg) = naive_pools(&x4, &g, oh, ow);

            let mut mp = MaxPool2d::new(1)
                .kernel_2d(g.kernel.0, g.kernel.1)
                .stride_2d(g.stride.0, g.stride.1)
                .padding_2d(g.padding.0, g.padding.1)
                .ceil_mode(g.ceil_mode);
            assert_eq!(
                mp.build(&[3, h, w], &mut rng()).unwrap(),
                [3, oh, ow],
                "{g:?}"
            );
            let out = mp.forward(&x, Mode::Eval).unwrap();
            assert_eq!(out, want_max.into_dyn(), "max {g:?} on {h}x{w}");
            assert_eq!(mp.indices().unwrap(), want_arg, "argmax {g:?} on {h}x{w}");

            let mut ap = AvgPool2d::new(1)
                .kernel_2d(g.kernel.0, g.kernel.1)
                .stride_2d(g.stride.0, g.stride.1)
                .padding_2d(g.padding.0, g.padding.1)
                .ceil_mode(g.ceil_mode);
            ap.build(&[3, h, w], &mut rng()).unwrap();
            let out = ap.forward(&x, Mode::Eval).unwrap();
            common::assert_close(
                &out,
                &want_avg.into_dyn(),
                1e-6,
                1e-5,
                &format!("avg {g:?} {h}x{w}"),
            );
        }
    }
}

#[test]
fn avgpool_divisor_counts_padding_up_to_the_padded_edge() {
    // PyTorch: AvgPool2d(3, stride=2, padding=1, ceil_mode=True) on ones(1, 1, 4, 4). Row/column
    // windows: [-1, 2) → 2 inputs of 3; [1, 4) → 3 of 3; [3, 5) → 1 input, clipped at 4 + 1 → 2.
    let x = Tensor::ones(IxDyn(&[1, 1, 4, 4]));
    let mut pool = built(AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true), &x);
    let out = pool.forward(&x, Mode::Eval).unwrap();
    let want = [
        [4.0 / 9.0, 6.0 / 9.0, 2.0 / 6.0],
        [6.0 / 9.0, 1.0, 3.0 / 6.0],
        [2.0 / 6.0, 3.0 / 6.0, 1.0 / 4.0],
    ];
    let want = Tensor::from_shape_vec(
        IxDyn(&[1, 1, 3, 3]),
        want.concat().into_iter().map(|v: f64| v as f32).collect(),
    )
    .unwrap();
    common::assert_close(&out, &want, 1e-7, 1e-6, "count_include_pad");
    // count_include_pad=False: every window of ones averages to 1.
    let mut pool = built(
        AvgPool2d::new(3)
            .stride(2)
            .padding(1)
            .ceil_mode(true)
            .count_include_pad(false),
        &x,
    );
    let out = pool.forward(&x, Mode::Eval).unwrap();
    assert!(out.iter().all(|&v| v == 1.0), "{out:?}");
}

#[test]
fn maxpool_padding_is_minus_infinity_and_ties_take_the_first_maximum() {
    // All-negative input: zero padding would win; −∞ padding never does.
    let x = Tensor::from_elem(IxDyn(&[1, 1, 2, 2]), -5.0);
    let mut pool = built(MaxPool2d::new(2).stride(1).padding(1), &x);
    let out = pool.forward(&x, Mode::Train).unwrap();
    assert!(out.iter().all(|&v| v == -5.0), "{out:?}");
    // Ties: the first element in row-major scan order of each window wins (PyTorch CPU).
    let idx: Vec<u32> = pool.indices().unwrap().iter().copied().collect();
    assert_eq!(idx, [0, 0, 1, 0, 0, 1, 2, 2, 3]);
    // Backward sums over the windows that chose an element: [0] is picked 4 times.
    let dx = pool.backward(&Tensor::ones(IxDyn(&[1, 1, 3, 3]))).unwrap();
    assert_eq!(dx.iter().copied().collect::<Vec<_>>(), [4.0, 2.0, 2.0, 1.0]);
    // A tie between the end of the first row and the start of the second: row-major order wins.
    let x = Tensor::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1.0, 2.0, 2.0, 0.0]).unwrap();
    let mut pool = built(MaxPool2d::new(2), &x);
    pool.forward(&x, Mode::Eval).unwrap();
    assert_eq!(pool.indices().unwrap()[[0, 0, 0, 0]], 1);
    // All equal, in the fused 2×2 path and the row-by-row 3×3 tiled path: the top-left element.
    let x = Tensor::from_elem(IxDyn(&[1, 1, 6, 6]), 1.0);
    for (k, want) in [
        (2, vec![0u32, 2, 4, 12, 14, 16, 24, 26, 28]),
        (3, vec![0, 3, 18, 21]),
    ] {
        let mut pool = built(MaxPool2d::new(k), &x);
        pool.forward(&x, Mode::Eval).unwrap();
        let idx: Vec<u32> = pool.indices().unwrap().iter().copied().collect();
        assert_eq!(idx, want, "k={k}");
    }
}

#[test]
fn nan_counts_as_the_maximum_in_every_code_path() {
    // PyTorch's CPU rule `v > max || isnan(v)`: a NaN replaces the running maximum and later
    // numbers do not; of two NaNs the later one is reported.
    let mut data = vec![0.0f32; 36];
    for (i, v) in data.iter_mut().enumerate() {
        *v = i as f32;
    }
    data[7] = f32::NAN; // row 1, col 1
    data[8] = f32::NAN; // row 1, col 2
    let x = Tensor::from_shape_vec(IxDyn(&[1, 1, 6, 6]), data).unwrap();
    // Tiled 2x2 stride 2 (window (0,0) holds index 7; window (0,1) holds index 8).
    let mut pool = built(MaxPool2d::new(2), &x);
    let out = pool.forward(&x, Mode::Eval).unwrap();
    assert!(out[[0, 0, 0, 0]].is_nan() && out[[0, 0, 0, 1]].is_nan());
    assert_eq!(pool.indices().unwrap()[[0, 0, 0, 0]], 7);
    assert_eq!(pool.indices().unwrap()[[0, 0, 0, 1]], 8);
    assert_eq!(out[[0, 0, 1, 1]], 21.0);
    // Overlapping 3x3 stride 1: window (0,0) holds both NaNs, the later (8) is reported.
    let mut pool = built(MaxPool2d::new(3).stride(1), &x);
    let out = pool.forward(&x, Mode::Eval).unwrap();
    assert!(out[[0, 0, 0, 0]].is_nan());
    assert_eq!(pool.indices().unwrap()[[0, 0, 0, 0]], 8);
    assert_eq!(pool.indices().unwrap()[[0, 0, 0, 3]], 17);
}

// ---------------------------------------------------------------------------------------------
// Finite-difference gradient checks
// ---------------------------------------------------------------------------------------------

/// Checks `dL/dx` of `L = Σ out ⊙ r` through `layer` against central differences. The loss is
/// evaluated with fresh clones in `Mode::Eval` (pooling has no state; clones keep the cache of
/// the analytic pass intact).
fn check_layer_grad<L: Layer + Clone>(what: &str, layer: L, x: &Tensor, eps: f32) {
    let mut layer = built(layer, x);
    let out = layer.forward(x, Mode::Train).unwrap();
    let r = random_tensor(out.shape(), 77);
    let dx = layer.backward(&r).unwrap();
    assert_eq!(dx.shape(), x.shape());
    let loss = |xp: &Tensor| weighted_sum(&layer.clone().forward(xp, Mode::Eval).unwrap(), &r);
    grad_check(what, x, &dx, loss, eps, 1e-3);
}

#[test]
fn maxpool_gradients_match_finite_differences() {
    // Distinct values 0.05 apart, step 1e-3: no window's argmax changes under the perturbation.
    for (what, layer, shape) in [
        ("max k2 s2", MaxPool2d::new(2), [2, 2, 6, 6]),
        (
            "max k3 s2 overlapping",
            MaxPool2d::new(3).stride(2),
            [2, 2, 7, 7],
        ),
        (
            "max k3 s1 padding 1",
            MaxPool2d::new(3).stride(1).padding(1),
            [1, 2, 5, 6],
        ),
        (
            "max k2 s2 ceil odd",
            MaxPool2d::new(2).ceil_mode(true),
            [2, 1, 5, 7],
        ),
        (
            "max k3 s2 p1 ceil",
            MaxPool2d::new(3).stride(2).padding(1).ceil_mode(true),
            [1, 2, 6, 6],
        ),
    ] {
        let x = distinct_tensor(&shape, 0.05, 5);
        check_layer_grad(what, layer, &x, 1e-3);
    }
}

#[test]
fn avgpool_gradients_match_finite_differences() {
    for (what, layer, shape) in [
        ("avg k2 s2", AvgPool2d::new(2), [2, 2, 6, 6]),
        (
            "avg k3 s2 overlapping",
            AvgPool2d::new(3).stride(2),
            [2, 2, 7, 7],
        ),
        (
            "avg k3 s1 padding 1",
            AvgPool2d::new(3).stride(1).padding(1),
            [1, 2, 5, 6],
        ),
        (
            "avg k2 s2 ceil odd",
            AvgPool2d::new(2).ceil_mode(true),
            [2, 1, 5, 7],
        ),
        (
            "avg k3 s2 p1 ceil",
            AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true),
            [1, 2, 6, 6],
        ),
        (
            "avg k3 s2 p1 ceil, count_include_pad=false",
            AvgPool2d::new(3)
                .stride(2)
                .padding(1)
                .ceil_mode(true)
                .count_include_pad(false),
            [1, 2, 6, 6],
        ),
    ] {
        // Linear in x: eps 1e-2 keeps f32 rounding noise far below the tolerance.
        let x = random_tensor(&shape, 6);
        check_layer_grad(what, layer, &x, 1e-2);
    }
}

// ---------------------------------------------------------------------------------------------
// Output-shape arithmetic (PyTorch's formula)
// ---------------------------------------------------------------------------------------------

#[test]
fn output_shapes_follow_pytorch_formula() {
    // (H, W, kernel, stride, padding, ceil_mode) → (OH, OW); floor: ⌊(n + 2p − k)/s⌋ + 1; ceil:
    // ⌈(n + 2p − k)/s⌉ + 1, minus 1 when the last window would start at or past n + p.
    type Case = (usize, usize, usize, usize, usize, bool, (usize, usize));
    let cases: [Case; 14] = [
        (8, 8, 2, 2, 0, false, (4, 4)),
        (7, 9, 2, 2, 0, false, (3, 4)),
        (7, 9, 2, 2, 0, true, (4, 5)),
        (9, 9, 3, 2, 0, false, (4, 4)),
        (10, 10, 3, 2, 0, false, (4, 4)),
        (10, 10, 3, 2, 0, true, (5, 5)),
        (5, 5, 2, 2, 1, false, (3, 3)),
        (5, 5, 2, 2, 1, true, (3, 3)), // ⌈5/2⌉ + 1 = 4, but window 4 would start at 3·2 − 1 = 5 = n
        (4, 4, 3, 2, 1, false, (2, 2)),
        (4, 4, 3, 2, 1, true, (3, 3)),
        (5, 5, 3, 3, 0, false, (1, 1)),
        (5, 5, 3, 3, 0, true, (2, 2)),
        (62, 62, 2, 2, 0, false, (31, 31)),
        (1, 1, 1, 1, 0, false, (1, 1)),
    ];
    for (h, w, k, s, p, ceil, want) in cases {
        let shape = [3, h, w];
        let mut mp = MaxPool2d::new(k).stride(s).padding(p).ceil_mode(ceil);
        let mut ap = AvgPool2d::new(k).stride(s).padding(p).ceil_mode(ceil);
        let expect = vec![3, want.0, want.1];
        let case = format!("H={h} W={w} k={k} s={s} p={p} ceil={ceil}");
        assert_eq!(mp.build(&shape, &mut rng()).unwrap(), expect, "max {case}");
        assert_eq!(ap.build(&shape, &mut rng()).unwrap(), expect, "avg {case}");
        let x = random_tensor(&[2, 3, h, w], 1);
        assert_eq!(
            mp.forward(&x, Mode::Eval).unwrap().shape(),
            [2, 3, want.0, want.1],
            "{case}"
        );
        assert_eq!(
            ap.forward(&x, Mode::Eval).unwrap().shape(),
            [2, 3, want.0, want.1],
            "{case}"
        );
    }
    // Non-square kernel and stride.
    let mut mp = MaxPool2d::new(2).kernel_2d(2, 3).stride_2d(1, 2);
    assert_eq!(mp.build(&[1, 5, 7], &mut rng()).unwrap(), [1, 4, 3]);
    assert_eq!(mp.describe(), "MaxPool2d(2x3, stride 1x2)");
}

#[test]
fn describe_names_the_configuration() {
    assert_eq!(MaxPool2d::new(2).describe(), "MaxPool2d(2x2, stride 2)");
    assert_eq!(
        MaxPool2d::new(3)
            .stride(2)
            .padding(1)
            .ceil_mode(true)
            .describe(),
        "MaxPool2d(3x3, stride 2, padding 1, ceil_mode)"
    );
    assert_eq!(AvgPool2d::new(2).describe(), "AvgPool2d(2x2, stride 2)");
    assert_eq!(
        AvgPool2d::new(2).count_include_pad(false).describe(),
        "AvgPool2d(2x2, stride 2, count_include_pad=false)"
    );
    assert!(MaxPool2d::new(2).params().is_empty() && AvgPool2d::new(2).params().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn err_msg(r: handgrad::Result<impl std::fmt::Debug>) -> (Error, String) {
    let e = r.unwrap_err();
    let m = e.to_string();
    (e, m)
}

#[test]
fn nhwc_looking_input_is_rejected_naming_both_shapes() {
    let mut pool = MaxPool2d::new(2);
    pool.build(&[3, 8, 8], &mut rng()).unwrap();
    let (e, msg) = err_msg(pool.forward(&Tensor::zeros(IxDyn(&[4, 8, 8, 3])), Mode::Train));
    assert!(matches!(e, Error::Shape { .. }), "{e:?}");
    assert!(
        msg.contains("MaxPool2d(2x2, stride 2)")
            && msg.contains("NCHW")
            && msg.contains("(B, 3, 8, 8)")
            && msg.contains("[4, 8, 8, 3]"),
        "{msg}"
    );
    // Rank 3 (a batch axis forgotten) and rank 5.
    for shape in [&[3, 8, 8][..], &[1, 1, 3, 8, 8]] {
        let (_, msg) = err_msg(pool.forward(&Tensor::zeros(IxDyn(shape)), Mode::Eval));
        assert!(
            msg.contains("(B, 3, 8, 8)") && msg.contains(&format!("{shape:?}")),
            "{msg}"
        );
    }
    let mut avg = AvgPool2d::new(2);
    avg.build(&[3, 8, 8], &mut rng()).unwrap();
    let (_, msg) = err_msg(avg.forward(&Tensor::zeros(IxDyn(&[4, 8, 8, 3])), Mode::Train));
    assert!(
        msg.contains("AvgPool2d(2x2, stride 2)") && msg.contains("[4, 8, 8, 3]"),
        "{msg}"
    );
}

#[test]
fn kernel_larger_than_the_input_is_a_build_error() {
    let (e, msg) = err_msg(MaxPool2d::new(5).build(&[3, 4, 6], &mut rng()));
    assert!(matches!(e, Error::Shape { .. }), "{e:?}");
    assert!(
        msg.contains("5x5") && msg.contains("[3, 4, 6]") && msg.contains("at least 5x5"),
        "{msg}"
    );
    // With padding 1 the window of 3 fits a 1x1 input... and 4x4 padded by 1 needs 2x2.
    assert!(MaxPool2d::new(3)
        .padding(1)
        .build(&[1, 1, 1], &mut rng())
        .is_ok());
    let (_, msg) = err_msg(AvgPool2d::new(4).padding(1).build(&[1, 1, 5], &mut rng()));
    assert!(
        msg.contains("at least 2x2") && msg.contains("[1, 1, 5]"),
        "{msg}"
    );
    // An unbuilt layer checks in forward.
    let (_, msg) =
        err_msg(MaxPool2d::new(3).forward(&Tensor::zeros(IxDyn(&[1, 1, 2, 2])), Mode::Eval));
    assert!(msg.contains("3x3") && msg.contains("[1, 2, 2]"), "{msg}");
}

#[test]
fn padding_above_half_the_kernel_is_rejected() {
    let (e, msg) = err_msg(MaxPool2d::new(3).padding(2).build(&[1, 8, 8], &mut rng()));
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(
        msg.contains("padding = 2") && msg.contains("3x3") && msg.contains("<= 1"),
        "{msg}"
    );
    let (_, msg) = err_msg(AvgPool2d::new(2).padding(2).build(&[1, 8, 8], &mut rng()));
    assert!(msg.contains("padding = 2") && msg.contains("<= 1"), "{msg}");
    assert!(MaxPool2d::new(2)
        .padding(1)
        .build(&[1, 8, 8], &mut rng())
        .is_ok());
}

#[test]
fn zero_stride_and_zero_kernel_are_rejected() {
    let (e, msg) = err_msg(MaxPool2d::new(2).stride(0).build(&[1, 8, 8], &mut rng()));
    assert!(matches!(e, Error::Config { .. }), "{e:?}");
    assert!(
        msg.contains("stride = 0") && msg.contains("at least 1"),
        "{msg}"
    );
    let (_, msg) = err_msg(AvgPool2d::new(0).build(&[1, 8, 8], &mut rng()));
    assert!(msg.contains("kernel_size = 0"), "{msg}");
    let (_, msg) = err_msg(MaxPool2d::new(2).build(&[8, 8], &mut rng()));
    assert!(msg.contains("(C, H, W)") && msg.contains("[8, 8]"), "{msg}");
}

#[test]
fn backward_needs_a_training_forward_and_a_matching_gradient() {
    let x = random_tensor(&[2, 1, 4, 4], 3);
    let mut pool = built(MaxPool2d::new(2), &x);
    assert!(matches!(
        pool.backward(&Tensor::zeros(IxDyn(&[2, 1, 2, 2]))),
        Err(Error::State(_))
    ));
    pool.forward(&x, Mode::Eval).unwrap();
    assert!(matches!(
        pool.backward(&Tensor::zeros(IxDyn(&[2, 1, 2, 2]))),
        Err(Error::State(_))
    ));
    pool.forward(&x, Mode::Train).unwrap();
    let (_, msg) = err_msg(pool.backward(&Tensor::zeros(IxDyn(&[2, 1, 4, 4]))));
    assert!(
        msg.contains("backward") && msg.contains("[2, 1, 2, 2]") && msg.contains("[2, 1, 4, 4]"),
        "{msg}"
    );
    let mut avg = built(AvgPool2d::new(2), &x);
    assert!(matches!(
        avg.backward(&Tensor::zeros(IxDyn(&[2, 1, 2, 2]))),
        Err(Error::State(_))
    ));
    avg.forward(&x, Mode::Train).unwrap();
    let (_, msg) = err_msg(avg.backward(&Tensor::zeros(IxDyn(&[2, 1, 3, 2]))));
    assert!(
        msg.contains("[2, 1, 2, 2]") && msg.contains("[2, 1, 3, 2]"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

fn bits(t: &Tensor) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn results_are_bit_identical_for_one_and_two_threads() {
    // 8·16·32·32 = 131072 elements: above the parallel threshold.
    let x = random_tensor(&[8, 16, 32, 32], 11);
    let run = || {
        let mut mp = built(MaxPool2d::new(3).stride(2).padding(1), &x);
        let y = mp.forward(&x, Mode::Train).unwrap();
        let r = random_tensor(y.shape(), 12);
        let dx = mp.backward(&r).unwrap();
        let idx: Vec<u32> = mp.indices().unwrap().iter().copied().collect();
        let mut ap = built(AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true), &x);
        let ya = ap.forward(&x, Mode::Train).unwrap();
        let dxa = ap.backward(&random_tensor(ya.shape(), 13)).unwrap();
        (bits(&y), bits(&dx), idx, bits(&ya), bits(&dxa))
    };
    let one = in_pool(1, run);
    let two = in_pool(2, run);
    assert!(one == two, "pooling results differ between 1 and 2 threads");
}
