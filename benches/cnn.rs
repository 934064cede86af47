//! Seed-CNN timings: `cargo bench --bench cnn [-- --quick] [FILTER]`.
//!
//! One training step (forward, backward, Adam) of the Keras seed CNN at batch 32 on 3×64×64 and
//! at batch 64 on 1×28×28, plus inference, at 1 and 2 threads: median/min ms per step,
//! images/s, GFLOP/s (forward conv + dense FLOPs × 3 for a training step) and % of the FMA peak.
//! The same workloads in PyTorch and Keras: `../shared/peers/py/bench_cnn_{torch,keras}.py`.

mod common;

use common::{fma_peak_gflops, pool, row, time_it};
use handgrad::model::Targets;
use handgrad::prelude::*;
use ndarray::IxDyn;
use std::time::Duration;

fn seed_cnn(input: &[usize]) -> Sequential {
    handgrad::model::small_cnn(input, 10, &mut handgrad::init::rng(0)).expect("seed CNN builds")
}

/// Forward FLOPs per image of the seed CNN (2 per multiply-add, convolutions and dense layers).
fn forward_flops(c: usize, h: usize, w: usize) -> f64 {
    let (h1, w1) = (h - 2, w - 2);
    let conv1 = 2.0 * (32 * c * 9 * h1 * w1) as f64;
    let (h2, w2) = (h1 / 2 - 2, w1 / 2 - 2);
    let conv2 = 2.0 * (64 * 32 * 9 * h2 * w2) as f64;
    let flat = 64 * (h2 / 2) * (w2 / 2);
    conv1 + conv2 + 2.0 * (flat * 64 + 64 * 10) as f64
}

/// `--profile`: time every layer's forward and backward of one training step (where the time goes).
fn profile(shape: [usize; 3], batch: usize, threads: usize) {
    let x = Tensor::from_shape_fn(IxDyn(&[batch, shape[0], shape[1], shape[2]]), |d| {
        ((d[1] + d[2] * 3 + d[3]) % 11) as f32 / 11.0
    });
    pool(threads).install(|| {
        let mut model = seed_cnn(&shape);
        let layers = model.layers_mut();
        let mut inputs = vec![x.clone()];
        println!("\nper-layer times, {shape:?} batch {batch}, {threads} thread(s): forward / backward ms");
        for layer in layers.iter_mut() {
            let input = inputs.last().expect("input").clone();
            let (fwd, _) = time_it(7, Duration::from_millis(50), || {
                std::hint::black_box(layer.forward(&input, Mode::Train).expect("forward"));
            });
            let out = layer.forward(&input, Mode::Train).expect("forward");
            let dout = out.mapv(|v| v * 1e-3);
            let (bwd, _) = time_it(7, Duration::from_millis(50), || {
                std::hint::black_box(layer.backward(&dout).expect("backward"));
            });
            println!("  {:<40} {:>8.2} / {:>8.2}", layer.describe(), fwd * 1e3, bwd * 1e3);
            inputs.push(out);
        }
    });
}

fn main() {
    if std::env::args().any(|a| a == "--profile") {
        for threads in [1, 2] {
            profile([3, 64, 64], 32, threads);
            profile([1, 28, 28], 64, threads);
        }
        return;
    }
    let quick = common::quick();
    let filter = common::filter();
    let samples = if quick { 5 } else { 11 };
    let passes = if quick { 1 } else { 3 };
    let min_sample = Duration::from_millis(if quick { 50 } else { 200 });
    let threads_list = [1usize, 2];
    let peaks: Vec<f64> = threads_list
        .iter()
        .map(|&t| fma_peak_gflops(t).unwrap_or(f64::NAN))
        .collect();
    println!("# handgrad seed-CNN benchmark ({passes} pass(es), {samples} samples each)");
    for (t, p) in threads_list.iter().zip(&peaks) {
        println!("measured FMA peak, {t} thread(s): {p:.1} GFLOP/s");
    }
    println!();
    row(&[
        "case",
        "threads",
        "median ms",
        "min ms",
        "images/s (median)",
        "GFLOP/s",
        "% of peak",
        "pass medians img/s",
    ]
    .map(String::from));
    row(&["---"; 8].map(String::from));
    for (name, shape, batch) in [
        ("cifar64 3x64x64", [3, 64, 64], 32),
        ("mnist 1x28x28", [1, 28, 28], 64),
    ] {
        for mode in ["train", "infer"] {
            let case = format!("{name} {mode} batch={batch}");
            if filter.as_ref().is_some_and(|f| !case.contains(f.as_str())) {
                continue;
            }
            let x = Tensor::from_shape_fn(IxDyn(&[batch, shape[0], shape[1], shape[2]]), |d| {
                ((d[1] * 7 + d[2] * 3 + d[3] * 5 + d[0]) % 17) as f32 / 17.0
            });
            let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
            let flops = forward_flops(shape[0], shape[1], shape[2])
                * batch as f64
                * if mode == "train" { 3.0 } else { 1.0 };
            for (ti, &threads) in threads_list.iter().enumerate() {
                let mut best: Option<(f64, f64)> = None;
                let mut medians = Vec::new();
                for _ in 0..passes {
                    let (med, min) = pool(threads).install(|| {
                        let mut model = seed_cnn(&shape);
                        model
                            .compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
                            .expect("compile");
                        time_it(samples, min_sample, || {
                            if mode == "train" {
                                model.zero_grad();
                                model
                                    .loss_backward_targets(
                                        &x,
                                        Targets::Labels(&labels),
                                        Loss::SparseCategoricalCrossentropy,
                                    )
                                    .expect("step");
                                model.optimizer_step().expect("adam");
                            } else {
                                std::hint::black_box(model.predict(&x).expect("predict"));
                            }
                        })
                    });
                    medians.push(batch as f64 / med);
                    if best.is_none_or(|(b, _)| med < b) {
                        best = Some((med, min));
                    }
                }
                let (med, min) = best.expect("measured");
                row(&[
                    case.clone(),
                    threads.to_string(),
                    format!("{:.2}", med * 1e3),
                    format!("{:.2}", min * 1e3),
                    format!("{:.0}", batch as f64 / med),
                    format!("{:.1}", flops / med / 1e9),
                    format!("{:.0} %", 100.0 * flops / med / 1e9 / peaks[ti]),
                    medians
                        .iter()
                        .map(|m| format!("{m:.0}"))
                        .collect::<Vec<_>>()
                        .join("/"),
                ]);
            }
        }
    }
}
