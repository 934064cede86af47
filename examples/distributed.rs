//! Data-parallel training: the seed CNN on Fashion-MNIST and the char GPT on *Moby-Dick*,
//! each rank computing a slice of every global batch, gradients summed over the ranks.
//!
//! ```text
//! # one process (no MPI needed; the same bits as any rank count in the deterministic mode)
//! cargo run --release --example distributed
//! # over MPI (Debian: apt-get install libopenmpi-dev openmpi-bin libclang1-14 libclang-common-14-dev)
//! cargo build --release --features mpi --example distributed
//! mpirun --allow-run-as-root -np 2 target/release/examples/distributed
//! mpirun --allow-run-as-root -np 4 --oversubscribe target/release/examples/distributed --fast
//! mpirun --allow-run-as-root -np 2 target/release/examples/distributed --reduction all-reduce
//! # steps/s and all-reduce GB/s
//! mpirun --allow-run-as-root -np 2 target/release/examples/distributed --bench
//! # what scripts/mpi-tests.sh runs: weights after N steps against one process
//! target/release/examples/distributed --selftest --single --reference /tmp/ref
//! mpirun --allow-run-as-root -np 2 target/release/examples/distributed --selftest --reference /tmp/ref
//! ```
//!
//! Every rank runs this same program on the same data; rank 0 prints. Each rank's rayon pool
//! gets the machine's cores divided by the ranks on this machine (unless `RAYON_NUM_THREADS`
//! is set). In the deterministic mode (the default) the weights are bit-identical whatever the
//! number of ranks; `--reduction all-reduce` uses `MPI_Allreduce` (fastest, equal within
//! rounding). Communication per step is `2(p − 1)/p × 4 × parameters` bytes per rank.

#[path = "common/args.rs"]
mod args;

use args::{opt, switch, Args, CliError, Command, Flag};
use handgrad::data::{fashion_mnist, moby_dick, Dataset, LmDataset};
use handgrad::distributed::{Distributed, Reduction};
use handgrad::prelude::*;
use handgrad::tokenizer::CharTokenizer;
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use std::path::PathBuf;
use std::time::Instant;

const ABOUT: &str = "Data-parallel training of the seed CNN and the char GPT (run it under mpirun \
                     when built with --features mpi).";
const FLAGS: &[Flag] = &[
    opt("--reduction", "MODE", "deterministic (default: bit-identical for any rank count) or all-reduce"),
    switch("--fast", "a few steps only (also HANDGRAD_FAST=1)"),
    switch("--single", "do not initialise MPI: train in this process alone"),
    switch("--bench", "measure steps/s of both models and the all-reduce GB/s"),
    switch("--selftest", "short runs in both modes; check the weights against --reference"),
    opt("--reference", "DIR", "--selftest: with --single write the reference weights there, else compare"),
    opt("--fail-rank", "RANK", "--selftest: this rank's copy of the labels is corrupt (every rank must stop with an error)"),
    opt("--crash-rank", "RANK", "--selftest: this rank exits abruptly mid-run (the launcher must end the job)"),
];
const CMD: Command = Command {
    program: "distributed",
    about: ABOUT,
    flags: FLAGS,
    positional: None,
};

/// A command-line error as the crate's error (this example's `run` reports both the same way).
fn usage(e: CliError) -> handgrad::Error {
    handgrad::Error::State(e.message)
}

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The world: MPI's under the `mpi` feature (unless `--single`), else this process.
fn world(single: bool) -> handgrad::Result<Distributed> {
    #[cfg(feature = "mpi")]
    if !single {
        return Distributed::init();
    }
    if !single {
        eprintln!("note: built without the mpi feature: training in one process");
    }
    Ok(Distributed::single())
}

/// Each rank's rayon threads: the cores shared by the ranks on this machine.
fn set_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let local: usize = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads((cores / local.max(1)).max(1))
        .build_global();
}

fn run() -> handgrad::Result<i32> {
    let a = CMD.parse().map_err(usage)?;
    set_threads();
    let reduction = match a.string("--reduction") {
        None | Some("deterministic") => Reduction::Deterministic,
        Some("all-reduce") => Reduction::AllReduce,
        Some(other) => {
            return Err(handgrad::Error::config(
                "distributed",
                "--reduction",
                other,
                "deterministic or all-reduce",
            ))
        }
    };
    let world = world(a.flag("--single"))?.with_reduction(reduction);
    if world.is_root() {
        println!(
            "{} rank(s), {} thread(s) each, reduction {:?}",
            world.size(),
            rayon::current_num_threads(),
            world.reduction()
        );
    }
    let fast = a.flag("--fast") || std::env::var_os("HANDGRAD_FAST").is_some();
    if a.flag("--selftest") {
        return selftest(&world, &a);
    }
    if a.flag("--bench") {
        bench(&world)?;
        return Ok(0);
    }
    train(&world, fast)?;
    Ok(0)
}

/// The Fashion-MNIST training images (the first `n` of a seeded 90 % split) and the rest.
fn fashion(n: usize) -> handgrad::Result<(Dataset, Dataset)> {
    let (train, test) = fashion_mnist()?.split(0.9, 0)?;
    let idx: Vec<usize> = (0..n.min(train.len())).collect();
    let (x, y) = train.select(&idx)?;
    Ok((Dataset::new(x, y)?, test))
}

/// The seed CNN, compiled (Adam 1e-3, sparse CE, accuracy), built from seed 42 on every rank.
fn seed_cnn() -> handgrad::Result<Sequential> {
    let mut m = handgrad::model::small_cnn(&[1, 28, 28], 10, &mut handgrad::init::rng(42))?;
    m.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )?;
    Ok(m)
}

/// The char GPT of `train_gpt` (or a smaller one), its data split, and its tokenizer size.
fn char_gpt(small: bool) -> handgrad::Result<(Gpt, LmDataset, LmDataset)> {
    let text = moby_dick();
    let tok = CharTokenizer::from_text(text);
    let (t, cfg) = if small {
        (64, GptConfig::new(tok.vocab_size(), 64, 2, 2, 64))
    } else {
        (128, GptConfig::new(tok.vocab_size(), 128, 4, 4, 128))
    };
    let data = LmDataset::new(tok.encode(text)?, t)?;
    let (train, val) = data.split(0.9)?;
    let gpt = Gpt::new(cfg.dropout(0.1), &mut handgrad::init::rng(0))?;
    Ok((gpt, train, val))
}

fn train(world: &Distributed, fast: bool) -> handgrad::Result<()> {
    let root = world.is_root();
    let (train, test) = fashion(if fast { 1024 } else { 9000 })?;
    let mut cnn = seed_cnn()?;
    let opts = FitOptions::new()
        .epochs(if fast { 1 } else { 2 })
        .batch_size(64)
        .micro_batch(16)
        .seed(1)
        .validation_data(&test)
        .distributed(world);
    let start = Instant::now();
    let h = cnn.fit(&train, opts)?;
    if root {
        println!(
            "seed CNN: {} images x {} epochs in {:.1} s, validation accuracy {:.1} %",
            train.len(),
            h.epochs(),
            start.elapsed().as_secs_f64(),
            100.0 * h.val_accuracy().last().copied().unwrap_or(0.0)
        );
    }
    let (mut gpt, train, val) = char_gpt(false)?;
    let opts = LmTrainOptions {
        steps: if fast { 20 } else { 300 },
        warmup_steps: Some(if fast { 2 } else { 30 }),
        eval_interval: if fast { 10 } else { 100 },
        micro_batch: Some(4),
        ..Default::default()
    };
    let h = LmTrainer::new(opts)?
        .distributed(world)
        .train(&mut gpt, &train, Some(&val))?;
    if root {
        println!(
            "char GPT: {} steps, {:.0} tokens/s over all ranks, validation loss {:.3}",
            h.loss.len(),
            h.tokens_per_sec,
            h.val_loss.last().map_or(f32::NAN, |v| v.1)
        );
    }
    Ok(())
}

/// FNV-1a over the weights' bits.
fn hash(w: &[f32]) -> u64 {
    w.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        v.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
    })
}

fn weights(params: Vec<(String, &Param)>) -> Vec<f32> {
    params
        .iter()
        .flat_map(|(_, p)| p.value.iter().copied())
        .collect()
}

/// Short CNN and GPT runs (an uneven last batch, dropout in the GPT); returns their weights.
fn selftest_runs(world: &Distributed, fail: bool, crash: bool) -> handgrad::Result<[Vec<f32>; 2]> {
    let (train, _) = fashion(360)?;
    let train = if fail {
        let (x, _) = train.into_parts();
        let n = x.shape()[0];
        Dataset::new(x, vec![99; n])?
    } else {
        train
    };
    let mut cnn = seed_cnn()?;
    let opts = FitOptions::new()
        .batch_size(64)
        .micro_batch(16)
        .seed(3)
        .verbose(Verbose::Silent)
        .distributed(world);
    cnn.fit(&train, opts)?;
    if crash {
        eprintln!("rank {} exits abruptly (--crash-rank)", world.rank());
        std::process::exit(7);
    }
    let (mut gpt, train, val) = char_gpt(true)?;
    let opts = LmTrainOptions {
        steps: 8,
        batch_size: 8,
        warmup_steps: Some(2),
        eval_interval: 4,
        eval_windows: 16,
        micro_batch: Some(2),
        verbose: false,
        ..Default::default()
    };
    LmTrainer::new(opts)?
        .distributed(world)
        .train(&mut gpt, &train, Some(&val))?;
    Ok([weights(cnn.params()), weights(gpt.params())])
}

fn selftest(world: &Distributed, a: &Args) -> handgrad::Result<i32> {
    let rank = world.rank();
    let fail = a.int("--fail-rank", 0, 1 << 20).map_err(usage)? == Some(rank as u64);
    let crash = a.int("--crash-rank", 0, 1 << 20).map_err(usage)? == Some(rank as u64);
    let reference = a.string("--reference").map(PathBuf::from);
    let mut ok = true;
    for reduction in [Reduction::Deterministic, Reduction::AllReduce] {
        let w = world.clone().with_reduction(reduction);
        let runs = selftest_runs(&w, fail, crash)?;
        for (name, weights) in ["cnn", "gpt"].iter().zip(&runs) {
            let h = hash(weights);
            // every rank must hold the same weights
            let all = world.communicator().all_gather_bytes(&h.to_le_bytes())?;
            let same = all.iter().all(|b| b[..] == h.to_le_bytes());
            if !world.is_root() {
                continue;
            }
            let mode = match reduction {
                Reduction::Deterministic => "deterministic",
                Reduction::AllReduce => "all-reduce",
            };
            println!(
                "selftest {name} {mode}: {} ranks, weights {h:016x}",
                world.size()
            );
            if !same {
                println!("FAIL {name} {mode}: the ranks hold different weights");
                ok = false;
            }
            let Some(dir) = &reference else { continue };
            let file = dir.join(format!("{name}.f32"));
            if world.size() == 1 && a.flag("--single") && reduction == Reduction::Deterministic {
                std::fs::create_dir_all(dir).map_err(|source| handgrad::Error::Io {
                    path: dir.clone(),
                    source,
                })?;
                let bytes: Vec<u8> = weights.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(&file, bytes).map_err(|source| handgrad::Error::Io {
                    path: file.clone(),
                    source,
                })?;
                println!(
                    "reference {name}: {} weights written to {}",
                    weights.len(),
                    file.display()
                );
                continue;
            }
            let bytes = std::fs::read(&file).map_err(|source| handgrad::Error::Io {
                path: file.clone(),
                source,
            })?;
            let want: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let diff = want
                .iter()
                .zip(weights)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            let identical = want.len() == weights.len() && hash(&want) == h;
            match reduction {
                Reduction::Deterministic if identical => {
                    println!("PASS {name} {mode}: bit-identical to one process")
                }
                Reduction::AllReduce if want.len() == weights.len() && diff < 1e-3 => {
                    println!(
                        "PASS {name} {mode}: within {diff:.2e} of one process (tolerance 1e-3)"
                    )
                }
                _ => {
                    println!("FAIL {name} {mode}: max |difference| {diff:e} from one process");
                    ok = false;
                }
            }
        }
    }
    Ok(if ok { 0 } else { 2 })
}

fn bench(world: &Distributed) -> handgrad::Result<()> {
    let root = world.is_root();
    let p = world.size();
    // the seed CNN: global batch 64 (micro-batches of 16), 30 steps after 2 warm-up steps
    for reduction in [Reduction::Deterministic, Reduction::AllReduce] {
        let w = world.clone().with_reduction(reduction);
        let (train, _) = fashion(64 * 32)?;
        let mut cnn = seed_cnn()?;
        let warm = Dataset::new(train.select(&(0..128).collect::<Vec<_>>())?.0, vec![0; 128])?;
        let quiet =
            |o: FitOptions<'static>| o.verbose(Verbose::Silent).batch_size(64).micro_batch(16);
        cnn.fit(&warm, quiet(FitOptions::new()).distributed(&w))?;
        let (x, y) = train.select(&(128..train.len()).collect::<Vec<_>>())?;
        let data = Dataset::new(x, y)?;
        w.barrier()?;
        let start = Instant::now();
        cnn.fit(&data, quiet(FitOptions::new()).distributed(&w))?;
        let secs = start.elapsed().as_secs_f64();
        let steps = data.len().div_ceil(64);
        if root {
            println!(
                "seed CNN (121,930 params), batch 64, {p} rank(s), {reduction:?}: {:.2} steps/s ({:.0} images/s)",
                steps as f64 / secs,
                (steps * 64) as f64 / secs
            );
        }
        let (mut gpt, train, _) = char_gpt(false)?;
        let opts = LmTrainOptions {
            steps: 22,
            warmup_steps: Some(2),
            eval_interval: 1000,
            micro_batch: Some(4),
            verbose: false,
            ..Default::default()
        };
        let mut t = LmTrainer::new(opts)?.distributed(&w);
        t.train_for(&mut gpt, &train, None, 2)?;
        w.barrier()?;
        let h = t.train(&mut gpt, &train, None)?;
        if root {
            println!(
                "char GPT ({} params), batch 16x128, {p} rank(s), {reduction:?}: {:.2} steps/s ({:.0} tokens/s)",
                gpt.num_params(),
                h.tokens_per_sec / (16.0 * 128.0),
                h.tokens_per_sec
            );
        }
    }
    // the collectives alone: MPI's all-reduce, and the deterministic mode's all-to-all of
    // chunks + all-gather (one aligned node per rank) on the same vector
    let comm = world.communicator();
    let r = world.rank();
    for n in [820_352usize, 1 << 22, 1 << 24] {
        let reps = if n >= 1 << 24 { 5 } else { 20 };
        let bytes = (4 * n) as f64;
        let bus = |secs: f64| bytes * 2.0 * (p as f64 - 1.0) / p as f64 / secs / 1e9;
        let mut buf = vec![1.0f32; n];
        comm.all_reduce_sum(&mut buf)?;
        world.barrier()?;
        let start = Instant::now();
        for _ in 0..reps {
            comm.all_reduce_sum(&mut buf)?;
        }
        world.barrier()?;
        let all_reduce = start.elapsed().as_secs_f64() / reps as f64;
        let chunk = |q: usize| q * n / p..(q + 1) * n / p;
        let counts: Vec<usize> = (0..p).map(|q| chunk(q).len()).collect();
        let mut recv = vec![0.0f32; p * counts[r]];
        let mut out = vec![0.0f32; n];
        world.barrier()?;
        let start = Instant::now();
        for _ in 0..reps {
            comm.all_to_all_v(&buf, &counts, &mut recv, &vec![counts[r]; p])?;
            let mine: Vec<f32> = (0..counts[r])
                .map(|i| (0..p).map(|s| recv[s * counts[r] + i]).sum())
                .collect();
            comm.all_gather_v(&mine, &mut out, &counts)?;
        }
        world.barrier()?;
        let tree = start.elapsed().as_secs_f64() / reps as f64;
        if root {
            println!(
                "{:>5.1} MB vector, {p} rank(s): all_reduce_sum {:.2} ms (bus {:.2} GB/s), all-to-all + all-gather {:.2} ms (bus {:.2} GB/s)",
                bytes / 1e6,
                all_reduce * 1e3,
                bus(all_reduce),
                tree * 1e3,
                bus(tree)
            );
        }
    }
    Ok(())
}
