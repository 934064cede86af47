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
use std::borrow::Cow;
use std::time::{Duration, Instant};

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

/// `--profile`: where the time of a training step goes. Runs real steps (the owned forward and
/// backward `Sequential` uses, the first layer's parameter-only backward, the fused loss and the
/// Adam step) with a clock around every layer, and prints the median of each part over the steps,
/// then the same for an inference forward.
fn profile(shape: [usize; 3], batch: usize, threads: usize) {
    let x = Tensor::from_shape_fn(IxDyn(&[batch, shape[0], shape[1], shape[2]]), |d| {
        ((d[1] + d[2] * 3 + d[3]) % 11) as f32 / 11.0
    });
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let loss = Loss::SparseCategoricalCrossentropy;
    let steps = 25;
    pool(threads).install(|| {
        let mut model = seed_cnn(&shape);
        model.compile(Adam::new(1e-3), loss, &[]).expect("compile");
        // the groups `Sequential` runs: a layer with the fusable layers after it that it absorbs
        let end = model.layers().len()
            - usize::from(model.layers().last().is_some_and(|l| l.is_softmax()));
        let mut groups = Vec::new();
        let mut i = 0;
        while i < end {
            let layers = &model.layers()[..end];
            let tail: Vec<_> = layers[i + 1..].iter().map_while(|l| l.fusable()).collect();
            let k = layers[i].fuses(&tail).min(tail.len());
            let name = layers[i..=i + k]
                .iter()
                .map(|l| l.describe())
                .collect::<Vec<_>>()
                .join(" + ");
            groups.push((i, tail[..k].to_vec(), name));
            i += 1 + k;
        }
        let n = groups.len();
        let (mut fwd, mut bwd, mut eval) = (
            vec![Vec::new(); n],
            vec![Vec::new(); n],
            vec![Vec::new(); n],
        );
        let (mut loss_t, mut opt_t) = (Vec::new(), Vec::new());
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        for _ in 0..steps {
            model.zero_grad();
            for (mode, times) in [(Mode::Train, &mut fwd), (Mode::Eval, &mut eval)] {
                let mut h = x.clone();
                for (gi, (i, tail, _)) in groups.iter().enumerate() {
                    let layer = &mut model.layers_mut()[*i];
                    let t = Instant::now();
                    h = if tail.is_empty() {
                        layer.forward_owned(h, mode)
                    } else {
                        layer.forward_fused(Cow::Owned(h), mode, tail)
                    }
                    .expect("forward");
                    times[gi].push(ms(t));
                }
                if mode == Mode::Eval {
                    break;
                }
                let t = Instant::now();
                let (_, mut d) = loss
                    .forward_backward(&h, Targets::Labels(&labels))
                    .expect("loss");
                loss_t.push(ms(t));
                for (gi, (i, _, _)) in groups.iter().enumerate().rev() {
                    let layer = &mut model.layers_mut()[*i];
                    let t = Instant::now();
                    if *i == 0 {
                        layer.backward_params_only(&d).expect("backward");
                    } else {
                        d = layer.backward_owned(d).expect("backward");
                    }
                    bwd[gi].push(ms(t));
                }
                let t = Instant::now();
                model.optimizer_step().expect("adam");
                opt_t.push(ms(t));
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!(
            "\nper-layer medians over {steps} steps, {shape:?} batch {batch}, {threads} thread(s): \
             train forward / backward, eval forward, ms"
        );
        let (mut tf, mut tb, mut te) = (0.0, 0.0, 0.0);
        for (gi, (_, _, name)) in groups.iter().enumerate() {
            let (f, b, e) = (med(&mut fwd[gi]), med(&mut bwd[gi]), med(&mut eval[gi]));
            (tf, tb, te) = (tf + f, tb + b, te + e);
            println!("  {name:<40} {f:>8.2} / {b:>8.2}   {e:>8.2}");
        }
        let (l, o) = (med(&mut loss_t), med(&mut opt_t));
        println!("  {:<40} {l:>8.2}", "loss (softmax + cross-entropy)");
        println!("  {:<40} {o:>8.2}", "Adam step");
        println!(
            "  {:<40} {tf:>8.2} / {tb:>8.2}   {te:>8.2}   (train step {:.2})",
            "sum",
            tf + tb + l + o
        );
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
    println!("{}", common::kernel_paths());
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
