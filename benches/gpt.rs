//! GPT timings: `cargo bench --bench gpt [-- --quick] [--train] [--threads=N] [FILTER]`.
//!
//! The workloads of `../shared/peers/py/bench_gpt_torch.py` (PyTorch / HF transformers, dropout
//! 0, random init):
//! - `char`: n_layer 4, n_head 4, n_embd 128, block 128, vocab 65; training at B 16, T 128;
//! - `gpt2`: GPT-2 small (124M); training at B 4, T 64.
//!
//! Training: one AdamW step (forward, loss, backward, clipping to norm 1 inside the update
//! (`AdamW::max_grad_norm`), update) → tokens/s, GFLOP/s with
//! nanoGPT's estimate (6N + 12·L·C·T FLOPs per token, N = parameters without wpe) and the
//! fraction of the machine's FMA peak. Generation: a prompt of 8 tokens + 50 new tokens, greedy,
//! batch 1, with and without the KV cache, and `num_return_sequences = 5` sampling (top-k 50)
//! through `Gpt::generate` → new tokens/s. The same greedy decode with the matrices in F16, BF16
//! and Q8_0 (`Gpt::quantize`): tokens/s, the weights' read rate, and the logits' deviation from
//! `f32` along the `f32` greedy sequence (max abs, and whether the greedy tokens agree). Prompt
//! processing: one 256-token prompt (at most `block_size`) through the KV cache, `f32` and the
//! quantized dtypes → prompt tokens/s. Median and min over repeated runs.
//!
//! Each training row runs in a child process (this binary re-run with `--train-case=…`), so that
//! the peak RSS it prints (`VmHWM`: model, gradients, AdamW moments, activations) is the
//! training's own. `--train` runs only the training rows, `--no-train` skips them,
//! `--threads=N` runs only that thread count, `--phases` prints each training row's time per part
//! of the step (forward, backward, AdamW…).

mod common;

use common::{fma_peak_gflops, pool, quick, read_bandwidth, row, time_it};
use handgrad::generate::GenerateConfig;
use handgrad::ops::quant::QType;
use handgrad::optim::{AdamW, Optimizer};
use handgrad::transformer::{Gpt, GptConfig, KvCache, QuantGpt};
use ndarray::Array2;
use std::time::{Duration, Instant};

struct Case {
    name: &'static str,
    cfg: GptConfig,
    b: usize,
    t: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "char",
            cfg: GptConfig::new(65, 128, 4, 4, 128),
            b: 16,
            t: 128,
        },
        Case {
            name: "gpt2",
            cfg: GptConfig::gpt2(),
            b: 4,
            t: 64,
        },
    ]
}

fn ids(b: usize, t: usize, v: usize, seed: usize) -> Array2<usize> {
    Array2::from_shape_fn((b, t), |(i, j)| (i * 7919 + j * 104_729 + seed * 31) % v)
}

/// Training FLOPs per token (nanoGPT's `estimate_mfu`).
fn train_flops_per_token(c: &GptConfig, t: usize) -> f64 {
    let n = (c.num_params() - c.block_size * c.n_embd) as f64;
    6.0 * n + 12.0 * (c.n_layer * c.n_embd * t) as f64
}

/// The process's peak resident set (`VmHWM` of `/proc/self/status`) in MiB, where available.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The value of a `--key=value` argument.
fn arg_value(key: &str) -> Option<String> {
    let prefix = format!("--{key}=");
    std::env::args().find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

/// Runs training row `case` at `threads` in a child process (see the module docs).
fn train_in_child(case: usize, threads: usize, peak: Option<f64>) {
    let exe = std::env::current_exe().expect("this bench's path");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(format!("--train-case={case}"))
        .arg(format!("--threads={threads}"));
    if let Some(p) = peak {
        cmd.arg(format!("--peak={p}"));
    }
    for flag in ["--quick", "--phases"] {
        if std::env::args().any(|a| a == flag) {
            cmd.arg(flag);
        }
    }
    let status = cmd.status().expect("run the training row");
    assert!(status.success(), "training row {case} failed");
}

fn train(case: &Case, threads: usize, peak: Option<f64>) {
    let samples = if quick() { 3 } else { 7 };
    let p = pool(threads);
    p.install(|| {
        let mut gpt = Gpt::new(case.cfg.clone(), &mut handgrad::init::rng(0)).expect("model");
        let mut opt = AdamW::new(3e-4)
            .betas(0.9, 0.95)
            .weight_decay(0.1)
            .decay_min_rank(2)
            // clip_grad_norm(params, 1.0) folded into the step (the same bits, one pass fewer)
            .max_grad_norm(1.0);
        let x = ids(case.b, case.t, case.cfg.vocab_size, 1);
        let y = ids(case.b, case.t, case.cfg.vocab_size, 2);
        let mut step = || {
            gpt.zero_grad();
            gpt.forward_loss(x.view(), y.view()).expect("loss");
            gpt.backward().expect("backward");
            opt.step(&mut gpt.params_mut()).expect("step");
        };
        let (med, min, beside) = time_beside_peak(&p, threads, samples, &mut step);
        if std::env::args().any(|a| a == "--phases") {
            phases(&mut gpt, &mut opt, &x, &y);
        }
        let tokens = (case.b * case.t) as f64;
        let step_flops = train_flops_per_token(&case.cfg, case.t) * tokens;
        let gflops = step_flops / med / 1e9;
        // each sample's GFLOP/s over the FMA rate read just before it, median over samples
        let mut shares: Vec<f64> = beside
            .iter()
            .filter_map(|&(secs, rate)| Some(step_flops / secs / 1e9 / rate?))
            .collect();
        shares.sort_by(f64::total_cmp);
        row(&[
            format!("{} train B{} T{}", case.name, case.b, case.t),
            threads.to_string(),
            format!("{:.1} / {:.1}", med * 1e3, min * 1e3),
            format!("{:.0}", tokens / med),
            format!("{gflops:.1}"),
            peak.map_or("-".into(), |p| {
                format!("{:.0} % (of {p:.0})", 100.0 * gflops / p)
            }),
            shares
                .get(shares.len() / 2)
                .map_or("-".into(), |m| format!("{:.0} %", 100.0 * m)),
            peak_rss_mib().map_or("-".into(), |m| format!("{m:.0}")),
        ]);
    });
}

/// Times `step` like [`time_it`] (`samples` samples of at least 200 ms after a warm-up), and
/// reads the FMA rate of `threads` threads (a ~10 ms run of [`common::fma_rate`]) just before
/// each sample: `(median s, min s, [(sample s, FMA GFLOP/s beside it)])`. On a shared machine a
/// neighbour can take a core for a while; the rate read beside a sample says what the machine
/// delivered while that sample ran.
fn time_beside_peak(
    p: &rayon::ThreadPool,
    threads: usize,
    samples: usize,
    mut step: impl FnMut(),
) -> (f64, f64, Vec<(f64, Option<f64>)>) {
    let t0 = Instant::now();
    step();
    let one = t0.elapsed().as_secs_f64().max(1e-9);
    let reps = ((0.2 / one).ceil() as usize).max(1);
    for _ in 0..reps.min(3) {
        step();
    }
    let beside: Vec<(f64, Option<f64>)> = (0..samples)
        .map(|_| {
            let rate = common::fma_rate(p, threads, 3_000_000);
            let t = Instant::now();
            for _ in 0..reps {
                step();
            }
            (t.elapsed().as_secs_f64() / reps as f64, rate)
        })
        .collect();
    let mut times: Vec<f64> = beside.iter().map(|b| b.0).collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], beside)
}

/// `--phases`: the median milliseconds of each part of a training step over 5 steps.
fn phases(gpt: &mut Gpt, opt: &mut AdamW, x: &Array2<usize>, y: &Array2<usize>) {
    let mut ms = vec![Vec::new(); 4];
    for _ in 0..5 {
        let mut lap = std::time::Instant::now();
        let mut mark = |i: usize, ms: &mut Vec<Vec<f64>>| {
            ms[i].push(lap.elapsed().as_secs_f64() * 1e3);
            lap = std::time::Instant::now();
        };
        gpt.zero_grad();
        mark(0, &mut ms);
        gpt.forward_loss(x.view(), y.view()).expect("loss");
        mark(1, &mut ms);
        gpt.backward().expect("backward");
        mark(2, &mut ms);
        opt.step(&mut gpt.params_mut()).expect("step");
        mark(3, &mut ms);
    }
    let names = ["zero_grad", "forward_loss", "backward", "clip + AdamW"];
    let parts: Vec<String> = names
        .iter()
        .zip(ms.iter_mut())
        .map(|(n, v)| {
            v.sort_by(f64::total_cmp);
            format!("{n} {:.1}", v[v.len() / 2])
        })
        .collect();
    println!("  phases, ms (median of 5): {}", parts.join(", "));
}

/// Greedy decoding of `new` tokens after `prompt`, batch 1: with the cache each step runs one
/// position; without, each step re-runs the whole sequence.
fn greedy(gpt: &mut Gpt, prompt: &[usize], new: usize, cached: bool) -> Vec<usize> {
    let argmax = |row: ndarray::ArrayView1<f32>| {
        (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
    };
    let mut seq = prompt.to_vec();
    if cached {
        let mut cache = gpt.new_cache(1);
        let p = Array2::from_shape_vec((1, seq.len()), seq.clone()).expect("prompt");
        let mut logits = gpt.forward_cached(p.view(), &mut cache).expect("prefill");
        for _ in 0..new {
            let next = argmax(logits.row(0));
            seq.push(next);
            logits = gpt
                .forward_cached(ndarray::arr2(&[[next]]).view(), &mut cache)
                .expect("step");
        }
    } else {
        for _ in 0..new {
            let x = Array2::from_shape_vec((1, seq.len()), seq.clone()).expect("seq");
            let logits = gpt
                .forward(x.view(), handgrad::Mode::Eval)
                .expect("forward");
            let last = logits
                .index_axis(ndarray::Axis(1), seq.len() - 1)
                .to_owned();
            let last = last.into_dimensionality::<ndarray::Ix2>().expect("(1, V)");
            seq.push(argmax(last.row(0)));
        }
    }
    seq
}

/// The encodings of the quantized decode rows.
const QTYPES: [QType; 3] = [QType::F16, QType::BF16, QType::Q8_0];

fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

/// Cached greedy decoding through any model's `forward_cached`; returns the sequence and the
/// logits of every step.
fn greedy_with(
    forward: &dyn Fn(ndarray::ArrayView2<usize>, &mut KvCache) -> Array2<f32>,
    mut cache: KvCache,
    prompt: &[usize],
    new: usize,
    teacher: Option<&[usize]>,
) -> (Vec<usize>, Vec<Array2<f32>>) {
    let mut seq = prompt.to_vec();
    let p = Array2::from_shape_vec((1, seq.len()), seq.clone()).expect("prompt");
    let mut logits = forward(p.view(), &mut cache);
    let mut all = Vec::new();
    for i in 0..new {
        let next = teacher.map_or_else(|| argmax(logits.row(0)), |t| t[prompt.len() + i]);
        seq.push(next);
        let l = forward(ndarray::arr2(&[[next]]).view(), &mut cache);
        all.push(std::mem::replace(&mut logits, l));
    }
    all.push(logits);
    (seq, all)
}

/// Generation rows; returns the cached greedy decode's weight GB/s (bytes read per token: every
/// parameter but the position table).
fn generation(case: &Case, threads: usize) -> Vec<(String, f64)> {
    let samples = if quick() { 3 } else { 5 };
    let (plen, new) = (8, 50);
    pool(threads).install(|| {
        let mut gpt = Gpt::new(case.cfg.clone(), &mut handgrad::init::rng(0)).expect("model");
        let weight_bytes: usize = gpt
            .params()
            .iter()
            .filter(|(name, _)| name != "wpe.weight")
            .map(|(_, p)| 4 * p.value.len())
            .sum();
        let mut gbps = Vec::new();
        let prompt: Vec<usize> = (0..plen)
            .map(|i| (i * 13 + 5) % case.cfg.vocab_size)
            .collect();
        for cached in [true, false] {
            let (med, min) = time_it(samples, Duration::from_millis(100), || {
                std::hint::black_box(greedy(&mut gpt, &prompt, new, cached));
            });
            if cached {
                gbps.push((
                    "F32".to_string(),
                    weight_bytes as f64 * new as f64 / med / 1e9,
                ));
            }
            row(&[
                format!(
                    "{} greedy 8+50, batch 1, {}",
                    case.name,
                    if cached { "KV cache" } else { "no cache" }
                ),
                threads.to_string(),
                format!("{:.1} / {:.1}", med * 1e3, min * 1e3),
                format!("{:.0}", new as f64 / med),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        // Gpt::generate: 5 sampled sequences decoded as one batch (top-k 50), KV cache
        let cfg = GenerateConfig::new()
            .max_new_tokens(new)
            .num_return_sequences(5)
            .do_sample(true)
            .top_k(50)
            .seed(1);
        let (med, min) = time_it(samples, Duration::from_millis(100), || {
            std::hint::black_box(gpt.generate(&prompt, &cfg).expect("generate"));
        });
        row(&[
            format!(
                "{} generate 8+50, 5 sampled sequences (top-k 50)",
                case.name
            ),
            threads.to_string(),
            format!("{:.1} / {:.1}", med * 1e3, min * 1e3),
            format!("{:.0}", (5 * new) as f64 / med),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        // the same greedy decode with quantized matrices, against the f32 logits
        let f32_fwd = |x: ndarray::ArrayView2<usize>, c: &mut KvCache| {
            gpt.forward_cached(x, c).expect("f32 step")
        };
        let (want_seq, want) = greedy_with(&f32_fwd, gpt.new_cache(1), &prompt, new, None);
        let plen_pp = 256.min(case.cfg.block_size);
        let long: Vec<usize> = (0..plen_pp)
            .map(|i| (i * 7919 + 11) % case.cfg.vocab_size)
            .collect();
        let long = Array2::from_shape_vec((1, plen_pp), long).expect("prompt");
        let prompt_row = |name: &str, med: f64, min: f64| {
            row(&[
                format!("{} prompt {plen_pp} tokens, KV cache, {name}", case.name),
                threads.to_string(),
                format!("{:.1} / {:.1}", med * 1e3, min * 1e3),
                format!("{:.0}", plen_pp as f64 / med),
                "-".into(),
                "-".into(),
            ]);
        };
        let (med, min) = time_it(samples, Duration::from_millis(100), || {
            let mut c = gpt.new_cache(1);
            std::hint::black_box(gpt.forward_cached(long.view(), &mut c).expect("prompt"));
        });
        prompt_row("F32", med, min);
        for qtype in QTYPES {
            let q: QuantGpt = gpt.quantize(qtype).expect("quantize");
            let q_fwd = |x: ndarray::ArrayView2<usize>, c: &mut KvCache| {
                q.forward_cached(x, c).expect("quantized step")
            };
            let (seq, _) = greedy_with(&q_fwd, q.new_cache(1), &prompt, new, None);
            let (_, got) = greedy_with(&q_fwd, q.new_cache(1), &prompt, new, Some(&want_seq));
            let dev = want
                .iter()
                .zip(&got)
                .flat_map(|(a, b)| a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()))
                .fold(0.0f32, f32::max);
            let scale = want
                .iter()
                .flat_map(|a| a.iter())
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let agree = seq
                .iter()
                .zip(&want_seq)
                .skip(plen)
                .take_while(|(a, b)| a == b)
                .count();
            let (med, min) = time_it(samples, Duration::from_millis(100), || {
                std::hint::black_box(greedy_with(&q_fwd, q.new_cache(1), &prompt, new, None));
            });
            gbps.push((
                qtype.name().to_string(),
                q.weight_bytes() as f64 * new as f64 / med / 1e9,
            ));
            row(&[
                format!(
                    "{} greedy 8+50, batch 1, KV cache, {} (max |Δlogit| vs f32 {dev:.1e} of \
                     {scale:.2}; greedy tokens agree: {agree}/{new})",
                    case.name,
                    qtype.name()
                ),
                threads.to_string(),
                format!("{:.1} / {:.1}", med * 1e3, min * 1e3),
                format!("{:.0}", new as f64 / med),
                "-".into(),
                "-".into(),
            ]);
            let (med, min) = time_it(samples, Duration::from_millis(100), || {
                let mut c = q.new_cache(1);
                std::hint::black_box(q.forward_cached(long.view(), &mut c).expect("prompt"));
            });
            prompt_row(qtype.name(), med, min);
        }
        gbps
    })
}

fn main() {
    let threads_arg = arg_value("threads").map(|t| t.parse::<usize>().expect("--threads=N"));
    if let Some(i) = arg_value("train-case") {
        let case = &cases()[i.parse::<usize>().expect("--train-case=<index>")];
        let th = threads_arg.expect("--threads with --train-case");
        // the peak measured by the parent and once more here, the best kept: a shared machine
        // only ever makes a measured peak lower than the real one
        let peak = [
            arg_value("peak").and_then(|p| p.parse().ok()),
            fma_peak_gflops(th),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max);
        train(case, th, peak);
        return;
    }
    let filter = common::filter();
    let train_only = std::env::args().any(|a| a == "--train");
    let threads: Vec<usize> = match threads_arg {
        Some(t) => vec![t],
        None if quick() => vec![2],
        None => vec![1, 2],
    };
    println!(
        "few-rows products (decoding): {}; SGEMM: {}; attention tiles: {} ({} rows)",
        handgrad::ops::gemv::KernelPath::detected().name(),
        handgrad::ops::matmul::sgemm_path(),
        handgrad::ops::gemv::KernelPath::detected().name(),
        handgrad::ops::tile_gemm::tile_rows()
    );
    for &th in &threads {
        println!(
            "FMA peak, {th} thread(s): {}",
            fma_peak_gflops(th).map_or("-".into(), |p| format!("{p:.0} GFLOP/s"))
        );
    }
    println!(
        "| case | threads | ms median / min | tokens/s | GFLOP/s | of FMA peak | of the FMA rate beside each sample | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut decode = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        for &th in &threads {
            if !std::env::args().any(|a| a == "--no-train") {
                train_in_child(i, th, fma_peak_gflops(th));
            }
            if !train_only {
                decode.push((case.name, th, generation(case, th)));
            }
        }
    }
    if train_only {
        return;
    }
    // the decode rows against the read bandwidth (the prompt's prefill is counted as decoding)
    let buf = vec![1.0f32; 128 << 20]; // 512 MB
    println!();
    for (name, th, rates) in decode {
        let bw = read_bandwidth(&buf, th);
        for (dtype, gbps) in rates {
            println!(
                "{name} greedy decode, KV cache, {dtype}, {th} thread(s): weights read at \
                 {gbps:.1} GB/s, {:.0} % of the read bandwidth ({bw:.1} GB/s, sum of 512 MB)",
                100.0 * gbps / bw
            );
        }
    }
}
