//! Vision timings: `cargo bench --bench vision [-- --quick] [FILTER]`.
//!
//! - `dw`: the depthwise convolution kernel (forward, and backward with dx) at EfficientNet-Lite0
//!   shapes, batch 8: GFLOP/s (`2·N·C·OH·OW·k²` per forward) and GB/s (input + output + weight
//!   bytes per forward);
//! - `lite0 infer`: EfficientNet-Lite0 at 224×224 in `Mode::Eval`, batch 1 and 32, images/s;
//! - `lite0 train`: one training step (forward in `Mode::Train`, cross-entropy, backward, Adam),
//!   batch 16, images/s;
//! - `profile`: the time of every layer of one batch-1 inference, to see where time goes.
//!
//! Random weights (timing only). Median and min over ≥ 10 samples after warm-up, all threads of
//! the machine. The SIMD level of the machine is printed first: the GEMMs (1×1 convolutions, the
//! classifier, the im2col stem) dispatch on it at run time, and so do the depthwise loops (the
//! build that ran is printed: `avx512`, `avx2+fma` or `scalar`).

mod common;

use common::{fma_peak_gflops, row, time_it};
use handgrad::layers::{Conv2d, Layer, Mode, Padding};
use handgrad::optim::{Adam, Optimizer};
use handgrad::vision::{EfficientNetConfig, EfficientNetLite};
use handgrad::Tensor;
use ndarray::IxDyn;
use std::time::{Duration, Instant};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    })
}

fn main() {
    let quick = common::quick();
    let filter = common::filter();
    let wanted = |key: &str| filter.as_ref().is_none_or(|f| key.contains(f.as_str()));
    let samples = if quick { 10 } else { 15 };
    let min_sample = Duration::from_millis(if quick { 20 } else { 100 });
    let threads = rayon::current_num_threads();
    println!(
        "{}; threads: {threads}; FMA peak: {:.1} GFLOP/s",
        common::kernel_paths(),
        fma_peak_gflops(threads).unwrap_or(f64::NAN)
    );
    let header = |cols: &[&str]| row(&cols.iter().map(|s| s.to_string()).collect::<Vec<_>>());

    // --- depthwise kernel -------------------------------------------------------------------
    header(&["case", "median ms", "min ms", "GFLOP/s", "GB/s"]);
    let n = 8;
    for &(c, hw, k, s) in &[
        (32usize, 112usize, 3usize, 1usize),
        (96, 112, 3, 2),
        (144, 56, 3, 1),
        (144, 56, 5, 2),
        (240, 28, 5, 1),
        (480, 14, 3, 1),
        (672, 14, 5, 1),
        (1152, 7, 5, 1),
    ] {
        for mode in ["fwd", "fwd+bwd"] {
            let key = format!("dw N={n} C={c} {hw}x{hw} k{k} s{s} {mode}");
            if !wanted(&key) {
                continue;
            }
            let mut conv = Conv2d::new(c, k)
                .stride(s)
                .groups(c)
                .padding(Padding::TfSame)
                .with_bias(false);
            let out = conv
                .build(&[c, hw, hw], &mut handgrad::init::rng(0))
                .unwrap();
            let x = random(&[n, c, hw, hw], 1);
            let dout = random(&[n, out[0], out[1], out[2]], 2);
            let (med, min) = time_it(samples, min_sample, || {
                if mode == "fwd" {
                    std::hint::black_box(conv.forward(&x, Mode::Eval).unwrap());
                } else {
                    conv.forward(&x, Mode::Train).unwrap();
                    std::hint::black_box(conv.backward(&dout).unwrap());
                }
            });
            let flops = 2.0 * (n * c * out[1] * out[2] * k * k) as f64;
            let bytes = 4.0 * (x.len() + dout.len() + c * k * k) as f64;
            let mult = if mode == "fwd" { 1.0 } else { 3.0 };
            row(&[
                key,
                format!("{:.3}", med * 1e3),
                format!("{:.3}", min * 1e3),
                format!("{:.2}", mult * flops / med / 1e9),
                format!("{:.2}", mult * bytes / med / 1e9),
            ]);
        }
    }

    // --- the network ------------------------------------------------------------------------
    let mut net = EfficientNetLite::new(EfficientNetConfig::lite0(), &mut handgrad::init::rng(0))
        .expect("Lite0 builds");
    header(&["case", "median ms", "min ms", "images/s"]);
    for batch in [1usize, 32] {
        let key = format!("lite0 infer 224 batch {batch}");
        if !wanted(&key) {
            continue;
        }
        let x = random(&[batch, 3, 224, 224], 3);
        let (med, min) = time_it(samples, min_sample, || {
            std::hint::black_box(net.forward(&x, Mode::Eval).unwrap());
        });
        row(&[
            key,
            format!("{:.1}", med * 1e3),
            format!("{:.1}", min * 1e3),
            format!("{:.1}", batch as f64 / med),
        ]);
    }
    let batch = 16;
    let key = format!("lite0 train step 224 batch {batch} (Adam)");
    if wanted(&key) {
        let x = random(&[batch, 3, 224, 224], 4);
        let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
        let mut opt = Adam::new(1e-4);
        let (med, min) = time_it(samples, min_sample, || {
            std::hint::black_box(
                net.sequential_mut()
                    .train_step(&x, &labels, &mut opt)
                    .unwrap(),
            );
        });
        let _ = opt.learning_rate();
        row(&[
            key,
            format!("{:.1}", med * 1e3),
            format!("{:.1}", min * 1e3),
            format!("{:.1}", batch as f64 / med),
        ]);
    }

    // --- per-layer profile of one batch-1 inference (median of 10) -------------------------
    if wanted("profile") {
        header(&["profile (batch 1, eval)", "median ms"]);
        let x = random(&[1, 3, 224, 224], 5);
        let layers = net.sequential_mut().layers_mut();
        let mut inputs = vec![x];
        for l in layers.iter_mut() {
            let h = l.forward(inputs.last().unwrap(), Mode::Eval).unwrap();
            inputs.push(h);
        }
        let mut total = 0.0;
        for (i, l) in layers.iter_mut().enumerate() {
            let mut t: Vec<f64> = (0..10)
                .map(|_| {
                    let t0 = Instant::now();
                    std::hint::black_box(l.forward(&inputs[i], Mode::Eval).unwrap());
                    t0.elapsed().as_secs_f64()
                })
                .collect();
            t.sort_by(f64::total_cmp);
            total += t[5];
            row(&[
                format!("{i} {}", l.describe()),
                format!("{:.3}", t[5] * 1e3),
            ]);
        }
        row(&["total".into(), format!("{:.3}", total * 1e3)]);
    }
}
