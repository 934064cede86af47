//! SGEMM timings: `cargo bench --bench matmul [-- --quick] [FILTER]`.
//!
//! For square sizes 128…2048 and the transformer shapes, in the three forms backprop uses
//! (`A·B`, `Aᵀ·B`, `A·Bᵀ`), at 1 and 2 threads: median and min time over ≥ 10 samples, GFLOP/s
//! (2·M·N·K per product) and the fraction of the machine's FMA peak measured at the start.

mod common;

use common::{fma_peak_gflops, pool, row, time_it};
use handgrad::ops::matmul::{matmul_into, matmul_nt_into, matmul_tn_into};
use ndarray::Array2;
use std::time::Duration;

fn filled(r: usize, c: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((r, c), |(i, j)| {
        ((i * 31 + j * 17 + seed) % 97) as f32 / 97.0 - 0.5
    })
}

fn main() {
    let quick = common::quick();
    let filter = common::filter();
    let samples = if quick { 5 } else { 11 };
    let min_sample = Duration::from_millis(if quick { 20 } else { 60 });
    let threads_list = [1usize, 2];

    let peaks: Vec<f64> = threads_list
        .iter()
        .map(|&t| fma_peak_gflops(t).unwrap_or(f64::NAN))
        .collect();
    println!("# handgrad SGEMM benchmark");
    for (t, p) in threads_list.iter().zip(&peaks) {
        println!("measured FMA peak, {t} thread(s): {p:.1} GFLOP/s");
    }
    println!();
    row(&[
        "M,K,N",
        "form",
        "threads",
        "median ms",
        "min ms",
        "GFLOP/s (median)",
        "GFLOP/s (best)",
        "% of peak (median)",
    ]
    .map(String::from));
    row(&["---"; 8].map(String::from));

    let mut shapes: Vec<(usize, usize, usize, &str)> = [128, 256, 512, 1024, 2048]
        .iter()
        .map(|&s| (s, s, s, "A·B"))
        .collect();
    for form in ["A·B", "Aᵀ·B", "A·Bᵀ"] {
        shapes.push((1024, 256, 768, form));
        shapes.push((1024, 1024, 256, form));
    }
    for &(m, k, n, form) in &shapes {
        let name = format!("{m},{k},{n}");
        if let Some(f) = &filter {
            if !name.contains(f.as_str()) && !form.contains(f.as_str()) {
                continue;
            }
        }
        if quick && m * k * n > 1 << 30 {
            continue;
        }
        let a = filled(m, k, 1);
        let at = a.t().to_owned();
        let b = filled(k, n, 2);
        let bt = b.t().to_owned();
        let mut out = Array2::<f32>::zeros((m, n));
        for (ti, &threads) in threads_list.iter().enumerate() {
            let (med, min) = pool(threads).install(|| {
                time_it(samples, min_sample, || match form {
                    "A·B" => matmul_into(a.view(), b.view(), out.view_mut(), false),
                    "Aᵀ·B" => matmul_tn_into(at.view(), b.view(), out.view_mut(), false),
                    _ => matmul_nt_into(a.view(), bt.view(), out.view_mut(), false),
                })
            });
            let flops = 2.0 * (m * n * k) as f64;
            let g_med = flops / med / 1e9;
            let g_best = flops / min / 1e9;
            row(&[
                name.clone(),
                form.to_string(),
                threads.to_string(),
                format!("{:.3}", med * 1e3),
                format!("{:.3}", min * 1e3),
                format!("{g_med:.1}"),
                format!("{g_best:.1}"),
                format!("{:.0} %", 100.0 * g_med / peaks[ti]),
            ]);
        }
        std::hint::black_box(&out);
    }
}
