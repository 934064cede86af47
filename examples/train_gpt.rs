//! Trains a character-level GPT on the embedded *Moby-Dick*, saves it, and generates.
//!
//! ```text
//! cargo run --release --example train_gpt                 # ≈ 2 minutes on 2 cores
//! cargo run --release --example train_gpt -- --steps 3000 --out checkpoints/char-gpt
//! cargo run --release --example train_gpt -- --resume     # continue the saved run exactly
//! cargo run --release --example train_gpt -- --fast       # a few steps (CI; also HANDGRAD_FAST=1)
//! ```
//!
//! Model: 4 layers, 4 heads, 128 wide, 128 characters of context (≈0.8M parameters). AdamW
//! (weight decay on matrices only), warmup + cosine learning rate, gradient clipping, validation
//! loss on the last 10 % of the book. Saves a Hugging Face–style folder (`config.json`,
//! `model.safetensors`) plus `char_vocab.txt` (the tokenizer) and `trainer.ckpt` (the exact
//! training state) into `--out`, then prints `num_return_sequences = 5` samples of
//! `max_length = 50` characters continuing "Hello, how are you?".

use handgrad::data::{moby_dick, LmDataset};
use handgrad::generate::GenerateConfig;
use handgrad::tokenizer::{CharTokenizer, Tokenizer};
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> handgrad::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let fast = argv.iter().any(|a| a == "--fast") || std::env::var_os("HANDGRAD_FAST").is_some();
    let resume = argv.iter().any(|a| a == "--resume");
    let value = |flag: &str| {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1).cloned())
    };
    let steps: usize = match value("--steps") {
        Some(s) => s
            .parse()
            .map_err(|_| handgrad::Error::config("train_gpt", "--steps", &s, "a whole number"))?,
        None if fast => 20,
        None => 1000,
    };
    let out = PathBuf::from(value("--out").unwrap_or_else(|| "checkpoints/char-gpt".into()));
    let ckpt = out.join("trainer.ckpt");

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

    let (mut gpt, mut trainer) = if resume {
        println!("resuming from {}", ckpt.display());
        LmTrainer::resume(&ckpt)?
    } else {
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
    println!(
        "GPT: {} layers, {} heads, {} wide, context {}: {} parameters; {} steps of {}×{} tokens",
        gpt.config().n_layer,
        gpt.config().n_head,
        gpt.config().n_embd,
        gpt.config().block_size,
        gpt.num_params(),
        trainer.options().steps,
        trainer.options().batch_size,
        train.block_size()
    );
    let start = Instant::now();
    let history = trainer.train(&mut gpt, &train, Some(&val))?;
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
        "saved the model, its tokenizer and the training state in {}",
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
