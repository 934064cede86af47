//! Conv2d timings: `cargo bench --bench conv [-- --quick] [FILTER]`.
//!
//! The two convolutions of the seed CNN at 3×64×64 (batch 32) and at 1×28×28 (batch 64), through
//! the `Conv2d` layer (so the workspace reuse is included), at 1 and 2 threads:
//!
//! - `fwd`: an inference forward (`Mode::Eval`),
//! - `bwd`: a backward pass after one training forward (dx, dW, dbias),
//! - `bwd no dx`: the same without the input gradient (`backward_params_only`, what the first
//!   layer of a model runs: layers (a) and (c) in the seed CNN),
//! - `fwd+bwd`: a training forward then a backward with dx.
//!
//! Median and min time over ≥ 10 samples, GFLOP/s (a forward is `2·N·O·OH·OW·C·kh·kw`, a backward
//! twice that, a backward without dx once) and the fraction of the machine's FMA peak measured at
//! the start. The shared 2-core
//! machine is noisy: every case is measured in several passes and the pass with the best median is
//! reported, with every pass median alongside.

mod common;

use common::{fma_peak_gflops, pool, row, time_it};
use handgrad::layers::{Conv2d, Layer, Mode};
use handgrad::Tensor;
use ndarray::IxDyn;
use std::time::Duration;

struct Case {
    label: &'static str,
    n: usize,
    chw: [usize; 3],
    out: usize,
    k: usize,
    mode: &'static str,
    threads: usize,
    /// Median and min seconds of the pass with the best median, and every pass's median.
    best: Option<(f64, f64)>,
    pass_medians: Vec<f64>,
}

impl Case {
    /// Forward FLOPs (2 per multiply-add).
    fn fwd_flops(&self) -> f64 {
        let [c, h, w] = self.chw;
        let (oh, ow) = (h - self.k + 1, w - self.k + 1);
        2.0 * (self.n * self.out * oh * ow * c * self.k * self.k) as f64
    }

    fn flops(&self) -> f64 {
        self.fwd_flops()
            * match self.mode {
                "fwd" | "bwd no dx" => 1.0,
                "bwd" => 2.0,
                _ => 3.0,
            }
    }

    fn name(&self) -> String {
        let [c, h, w] = self.chw;
        format!(
            "({}) N={} {c}x{h}x{w} → {} k{}",
            self.label, self.n, self.out, self.k
        )
    }
}

fn main() {
    let quick = common::quick();
    let filter = common::filter();
    let samples = if quick { 5 } else { 11 };
    let passes = if quick { 1 } else { 3 };
    let min_sample = Duration::from_millis(if quick { 30 } else { 100 });
    let threads_list = [1usize, 2];
    let layers: [(&str, usize, [usize; 3], usize, usize); 4] = [
        ("a", 32, [3, 64, 64], 32, 3),
        ("b", 32, [32, 31, 31], 64, 3),
        ("c", 64, [1, 28, 28], 32, 3),
        ("d", 64, [32, 13, 13], 64, 3),
    ];
    let mut cases = Vec::new();
    for &(label, n, chw, out, k) in &layers {
        for mode in ["fwd", "bwd", "bwd no dx", "fwd+bwd"] {
            for &threads in &threads_list {
                let case = Case {
                    label,
                    n,
                    chw,
                    out,
                    k,
                    mode,
                    threads,
                    best: None,
                    pass_medians: Vec::new(),
                };
                let key = format!("{} {mode}", case.name());
                if filter.as_ref().is_some_and(|f| !key.contains(f.as_str())) {
                    continue;
                }
                cases.push(case);
            }
        }
    }

    let mut peaks = vec![0.0f64; threads_list.len()];
    for pass in 0..passes {
        for (i, &t) in threads_list.iter().enumerate() {
            peaks[i] = peaks[i].max(fma_peak_gflops(t).unwrap_or(f64::NAN));
        }
        eprintln!("pass {}/{passes}", pass + 1);
        for case in cases.iter_mut() {
            let [c, h, w] = case.chw;
            let x = Tensor::from_shape_fn(IxDyn(&[case.n, c, h, w]), |d| {
                ((d[0] * 7 + d[1] * 5 + d[2] * 3 + d[3]) % 23) as f32 / 23.0 - 0.5
            });
            let mode = case.mode;
            let (med, min) = pool(case.threads).install(|| {
                let mut conv = Conv2d::new(case.out, case.k);
                conv.build(&case.chw, &mut handgrad::init::rng(0))
                    .expect("conv builds");
                let out = conv.forward(&x, Mode::Train).expect("forward");
                let dout = out.mapv(|v| v * 1e-3);
                time_it(samples, min_sample, || match mode {
                    "fwd" => {
                        std::hint::black_box(conv.forward(&x, Mode::Eval).expect("forward"));
                    }
                    "bwd" => {
                        std::hint::black_box(conv.backward(&dout).expect("backward"));
                    }
                    "bwd no dx" => conv.backward_params_only(&dout).expect("backward"),
                    _ => {
                        std::hint::black_box(conv.forward(&x, Mode::Train).expect("forward"));
                        std::hint::black_box(conv.backward(&dout).expect("backward"));
                    }
                })
            });
            case.pass_medians.push(med);
            if case.best.is_none_or(|(bm, _)| med < bm) {
                case.best = Some((med, min));
            }
        }
    }

    println!("# handgrad Conv2d benchmark ({passes} pass(es), {samples} samples each)");
    for (t, p) in threads_list.iter().zip(&peaks) {
        println!("measured FMA peak, {t} thread(s): {p:.1} GFLOP/s");
    }
    println!("{}", common::kernel_paths());
    println!();
    row(&[
        "layer",
        "pass",
        "threads",
        "median ms",
        "min ms",
        "GFLOP/s (median)",
        "GFLOP/s (best)",
        "% of peak (median)",
        "pass medians GFLOP/s",
    ]
    .map(String::from));
    row(&["---"; 9].map(String::from));
    for case in &cases {
        let (med, min) = case.best.expect("measured");
        let flops = case.flops();
        let peak = peaks[threads_list
            .iter()
            .position(|&t| t == case.threads)
            .expect("listed")];
        let passes: Vec<String> = case
            .pass_medians
            .iter()
            .map(|s| format!("{:.0}", flops / s / 1e9))
            .collect();
        row(&[
            case.name(),
            case.mode.to_string(),
            case.threads.to_string(),
            format!("{:.3}", med * 1e3),
            format!("{:.3}", min * 1e3),
            format!("{:.1}", flops / med / 1e9),
            format!("{:.1}", flops / min / 1e9),
            format!("{:.0} %", 100.0 * flops / med / 1e9 / peak),
            passes.join("/"),
        ]);
    }
}
