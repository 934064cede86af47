//! Shared timing helpers for the `harness = false` benchmarks: the machine's FMA peak, repeated
//! timing with median and min, and table printing.
#![allow(dead_code)]

use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Median and minimum seconds per call over `samples` samples after `warmup` calls. Each sample
/// repeats `f` until it lasts at least `min_sample` so that short calls are timed reliably.
pub fn time_it(samples: usize, min_sample: Duration, mut f: impl FnMut()) -> (f64, f64) {
    // Warm up and find how many calls make one sample.
    let t0 = Instant::now();
    f();
    let one = t0.elapsed().as_secs_f64().max(1e-9);
    let reps = ((min_sample.as_secs_f64() / one).ceil() as usize).max(1);
    for _ in 0..reps.min(3) {
        f();
    }
    let mut times: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[times.len() / 2], times[0])
}

/// A rayon pool of `n` threads.
pub fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("rayon pool")
}

/// Peak f32 FMA rate of `threads` threads in GFLOP/s (best of a few runs), or `None` when the CPU
/// has no AVX2+FMA. Each thread runs 12 independent 8-wide FMA chains (enough to cover the
/// latency × throughput of current x86 cores); with AVX-512 it uses 16-wide vectors.
pub fn fma_peak_gflops(threads: usize) -> Option<f64> {
    let p = pool(threads);
    (0..3)
        .map(|_| fma_rate(&p, threads, 20_000_000))
        .reduce(|a, b| Some(a?.max(b?)))
        .flatten()
}

/// One run of the FMA chains of [`fma_peak_gflops`] on `threads` tasks of pool `p`, `iters`
/// iterations each, in GFLOP/s: what the machine delivers right now (a short run beside a timed
/// sample sees the same share of the cores as the sample). `None` without AVX2+FMA.
pub fn fma_rate(p: &rayon::ThreadPool, threads: usize, iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        let avx512 = is_x86_feature_detected!("avx512f");
        let t = Instant::now();
        let sink: f32 = p.install(|| {
            (0..threads)
                .into_par_iter()
                .map(|i| fma::run(iters, 1.0 + i as f32 * 1e-7, avx512))
                .sum()
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        let lanes = if avx512 { 16.0 } else { 8.0 };
        let flops = threads as f64 * iters as f64 * 12.0 * lanes * 2.0;
        Some(flops / secs / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, threads, iters);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    pub fn run(iters: u64, seed: f32, avx512: bool) -> f32 {
        // SAFETY: the caller checked avx2+fma (and avx512f when `avx512`) at run time.
        unsafe {
            if avx512 {
                run512(iters, seed)
            } else {
                run256(iters, seed)
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run256(iters: u64, seed: f32) -> f32 {
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(seed); 12];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm256_fmadd_ps(*r, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for r in acc {
            s = _mm256_add_ps(s, r);
        }
        let mut out = [0f32; 8];
        // SAFETY: `out` holds 8 floats, one 256-bit unaligned store.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run512(iters: u64, seed: f32) -> f32 {
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(seed); 12];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(*r, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for r in acc {
            s = _mm512_add_ps(s, r);
        }
        _mm512_reduce_add_ps(s)
    }
}

/// The SIMD builds chosen at run time on this CPU, as the benches print them: the SGEMM
/// micro-kernels (`avx512`, `avx2+fma` or `portable`), the element-wise loops (`avx512`, `avx2`
/// or `baseline`) and the depthwise convolution loops (`avx512`, `avx2+fma` or `scalar`).
pub fn kernel_paths() -> String {
    format!(
        "SIMD paths: SGEMM {}, element-wise {}, depthwise {}",
        handgrad::ops::matmul::sgemm_path(),
        handgrad::ops::wide::path(),
        handgrad::ops::depthwise::depthwise_path()
    )
}

/// Prints one row of a Markdown table.
pub fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

/// Whether the bench was asked for a quick run (`cargo bench --bench X -- --quick`).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The first free (non-flag) argument, used as a case-name filter.
pub fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with("--"))
}

/// The machine's read bandwidth in GB/s with `threads` threads: best of 5 sums of a 512 MB
/// buffer, in fixed 1 MB chunks, 16 independent accumulators per chunk.
pub fn read_bandwidth(buf: &[f32], threads: usize) -> f64 {
    pool(threads).install(|| {
        let mut best = 0.0f64;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let s: f32 = buf
                .par_chunks(1 << 18)
                .map(|c| {
                    let mut acc = [0.0f32; 16];
                    for v in c.chunks_exact(16) {
                        for k in 0..16 {
                            acc[k] += v[k];
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum();
            std::hint::black_box(s);
            best = best.max(std::mem::size_of_val(buf) as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    })
}
