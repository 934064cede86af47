//! Trains a character-level GPT on the embedded *Moby-Dick*, saves it, and generates.
//!
//! ```text
//! cargo run --release --example train_gpt                 # ≈ 2 minutes on 2 cores
//! cargo run --release --example train_gpt -- --steps 3000 --out checkpoints/char-gpt
//! cargo run --release --example train_gpt -- --resume --steps 1500   # extend a saved run
//! cargo run --release --example train_gpt -- --fast       # a few steps (CI; also HANDGRAD_FAST=1)
//! ```
//!
//! Model: 4 layers, 4 heads, 128 wide, 128 characters of context (≈0.8M parameters). AdamW
//! (weight decay on matrices only), warmup + cosine learning rate, gradient clipping, validation
//! loss on the last 10 % of the book. Saves a Hugging Face–style folder (`config.json`,
//! `model.safetensors`) plus `char_vocab.txt` (the tokenizer) and `trainer.ckpt` (the exact
//! training state) into `--out` (checked writable before training starts), then prints
//! `num_return_sequences = 5` samples of `max_length = 50` characters continuing "Hello, how
//! are you?".
//!
//! `--resume` continues the run saved in `--out` exactly. A run that already did the steps
//! asked for (`--steps`, by default the run's own) is finished: the example says so and stops.
//! `--steps N` above the saved run's steps extends it to N steps in all, keeping its
//! learning-rate schedule: the warmup + cosine still ends at the run's original length, and the
//! extra steps run at the final learning rate (`min_lr`).

#[path = "common/args.rs"]
mod args;
#[path = "common/paths.rs"]
mod paths;

use args::{opt, switch, CliError, CliResult, Command, Flag};
use handgrad::data::{moby_dick, LmDataset};
use handgrad::generate::GenerateConfig;
use handgrad::optim::LrSchedule;
use handgrad::tokenizer::{CharTokenizer, Tokenizer};
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use std::path::PathBuf;
use std::time::Instant;

const FLAGS: &[Flag] = &[
    opt(
        "--steps",
        "N",
        "optimizer steps in all, 1 to 10000000 (default 1000; 20 with --fast)",
    ),
    opt(
        "--out",
        "DIR",
        "where the model and the training state go (default checkpoints/char-gpt)",
    ),
    switch(
        "--resume",
        "continue the run saved in --out (extend it with --steps N)",
    ),
    switch("--fast", "a short run for CI (also HANDGRAD_FAST=1)"),
];
const CMD: Command = Command {
    program: "train_gpt",
    about: "Train a character-level GPT on the embedded Moby-Dick, save it, and generate.",
    flags: FLAGS,
    positional: None,
};

fn main() {
    args::main(CMD.program, run)
}

/// The saved run in `ckpt`, made ready to train up to `steps` (the run's own steps when
/// `None`), or `None` when it already did them.
fn resume(ckpt: &std::path::Path, steps: Option<usize>) -> CliResult<Option<(Gpt, LmTrainer)>> {
    if !ckpt.is_file() {
        return Err(CliError::failed(format!(
            "--resume: there is no saved run in {} (no trainer.ckpt); train first without \
             --resume, or pass the --out of an earlier run",
            ckpt.parent()
                .map_or("?".into(), |p| p.display().to_string())
        )));
    }
    println!("resuming from {}", ckpt.display());
    let (gpt, mut trainer) = LmTrainer::resume(ckpt)?;
    let done = trainer.step_count();
    let planned = trainer.options().steps;
    let target = steps.unwrap_or(planned);
    if done >= target {
        let asked = if target == planned {
            String::new()
        } else {
            format!(", and --steps {target} asks for no more")
        };
        println!(
            "the saved run is finished: it did {done} steps{asked}; pass --steps N with N > \
             {done} to extend it"
        );
        return Ok(None);
    }
    if target > planned {
        trainer.extend_to(target)?;
        if let LrSchedule::WarmupCosine {
            total_steps,
            min_lr,
            ..
        } = *trainer.schedule()
        {
            println!(
                "extending the run from {done} to {target} steps; its learning-rate schedule \
                 keeps its length: the cosine ends at step {total_steps}, steps after it run at \
                 min_lr = {min_lr:e}"
            );
        }
    }
    Ok(Some((gpt, trainer)))
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    let fast = a.flag("--fast") || std::env::var_os("HANDGRAD_FAST").is_some();
    let resume_run = a.flag("--resume");
    let steps = a.int("--steps", 1, 10_000_000)?.map(|n| n as usize);
    let out = a
        .path("--out")?
        .unwrap_or_else(|| PathBuf::from("checkpoints/char-gpt"));
    let ckpt = out.join("trainer.ckpt");
    paths::prepare_out_dir("--out", &out)?;

    let text = moby_dick();
    let tok = CharTokenizer::from_text(text);
    let data = LmDataset::new(tok.encode(text)?, 128)?;
    let (train, val) = data.split(0.9)?;
    println!(
        "Moby-Dick: {} characters, {} distinct; {} for training, {} for validation",
        text.chars().count(),
        tok.vocab_size(),
        train.len(),
        val.len()
    );

    let (mut gpt, mut trainer) = if resume_run {
        match resume(&ckpt, steps)? {
            Some(run) => run,
            None => return Ok(()),
        }
    } else {
        let steps = steps.unwrap_or(if fast { 20 } else { 1000 });
        let cfg = GptConfig::char_small(tok.vocab_size()).dropout(0.0);
        let gpt = Gpt::new(cfg, &mut handgrad::init::rng(1337))?;
        let opts = LmTrainOptions {
            steps,
            batch_size: 16,
            lr: 1e-3,
            min_lr: Some(1e-4),
            warmup_steps: Some((steps / 10).min(100)),
            eval_interval: if fast { 10 } else { 100 },
            eval_windows: if fast { 8 } else { 64 },
            ..Default::default()
        };
        (gpt, LmTrainer::new(opts)?)
    };
    let todo = match steps {
        Some(n) if resume_run => n - trainer.step_count(),
        _ => trainer.options().steps - trainer.step_count(),
    };
    println!(
        "GPT: {} layers, {} heads, {} wide, context {}: {} parameters; {todo} steps of {}×{} \
         tokens",
        gpt.config().n_layer,
        gpt.config().n_head,
        gpt.config().n_embd,
        gpt.config().block_size,
        gpt.num_params(),
        trainer.options().batch_size,
        train.block_size()
    );
    let start = Instant::now();
    let history = trainer.train_for(&mut gpt, &train, Some(&val), todo)?;
    if let (Some(first), Some(last)) = (history.loss.first(), history.val_loss.last()) {
        println!(
            "trained in {:.0} s ({:.0} tokens/s): loss {first:.3} at the first step, validation \
             loss {:.3} at step {}",
            start.elapsed().as_secs_f64(),
            history.tokens_per_sec,
            last.1,
            last.0
        );
    }

    gpt.save_pretrained(&out)?;
    std::fs::write(out.join("char_vocab.txt"), tok.to_vocab_string()).map_err(|source| {
        handgrad::Error::Io {
            path: out.join("char_vocab.txt"),
            source,
        }
    })?;
    trainer.save_checkpoint(&gpt, &ckpt)?;
    println!(
        "saved the model, its tokenizer and the training state ({} steps) in {}",
        trainer.step_count(),
        out.display()
    );

    let prompt = "Hello, how are you?";
    let cfg = GenerateConfig::new()
        .max_length(50)
        .num_return_sequences(5)
        .do_sample(true)
        .top_k(50)
        .seed(7);
    println!("\n5 samples of max_length 50 from {prompt:?}:");
    for (i, ids) in gpt.generate(&tok.encode(prompt)?, &cfg)?.iter().enumerate() {
        println!("{}: {:?}", i + 1, tok.decode(ids)?);
    }
    Ok(())
}
