//! Fine-tunes a Llama-architecture chat model on conversations (JSON lines), saves it as a
//! Hugging Face folder, and answers a question with the result.
//!
//! ```text
//! cargo run --release --example finetune_chat                  # the tiny test Llama, built-in chats
//! cargo run --release --example finetune_chat -- --model path/to/hf-llama --data chats.jsonl \
//!     --steps 200 --seq-len 256 --out checkpoints/chat-llama
//! cargo run --release --example finetune_chat -- --resume       # continue the saved run exactly
//! cargo run --release --example finetune_chat -- --fast         # a few steps
//! ```
//!
//! `--data` is one conversation per line, `{"messages":[{"role":"user","content":"…"},
//! {"role":"assistant","content":"…"}]}`, rendered with the model folder's chat template
//! (`chat_template.jinja` or `tokenizer_config.json`; plain ChatML with `--chatml`). The loss is
//! on the assistant tokens only; shorter conversations are padded with ignored targets. The model
//! folder needs `config.json`, `model.safetensors` and the tokenizer files. A GGUF model is
//! trained by dequantising it first (`Llama::to_f32`). AdamW with decay on matrices only, warmup +
//! cosine learning rate, gradient clipping, `--checkpointing` for activation recomputation.

use handgrad::data::ChatDataset;
use handgrad::generate::GenerateConfig;
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate, Message, Tokenizer};
use handgrad::transformer::{Llama, LmTrainOptions, LmTrainer};
use std::path::PathBuf;

/// The built-in conversations (used without `--data`).
const CHATS: &str = r#"{"messages":[{"role":"user","content":"Capital of France?"},{"role":"assistant","content":"Paris."}]}
{"messages":[{"role":"user","content":"Capital of Italy?"},{"role":"assistant","content":"Rome."}]}
{"messages":[{"role":"user","content":"Capital of Spain?"},{"role":"assistant","content":"Madrid."}]}
{"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"4."}]}
"#;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> handgrad::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| argv.iter().any(|a| a == f);
    let value = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .and_then(|i| argv.get(i + 1).cloned())
    };
    let number = |f: &str, default: usize| -> handgrad::Result<usize> {
        match value(f) {
            Some(s) => s
                .parse()
                .map_err(|_| handgrad::Error::config("finetune_chat", f, &s, "a whole number")),
            None => Ok(default),
        }
    };
    let fast = flag("--fast");
    let tiny = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/llama/llama_tiny"
    );
    let model_dir = PathBuf::from(value("--model").unwrap_or_else(|| tiny.into()));
    let builtin = value("--model").is_none();
    let steps = number("--steps", if fast { 10 } else { 60 })?;
    let seq_len = number("--seq-len", 48)?;
    let out = PathBuf::from(value("--out").unwrap_or_else(|| "checkpoints/chat-llama".into()));
    let ckpt = out.join("trainer.ckpt");

    let tok = BpeTokenizer::from_dir(&model_dir)?;
    // the tiny model's SmolLM2 template adds a long system prompt: plain ChatML fits its context
    let template = if flag("--chatml") || builtin {
        ChatTemplate::chatml()
    } else {
        ChatTemplate::from_dir(&model_dir)?
    };
    let data = match value("--data") {
        Some(p) => ChatDataset::from_jsonl_file(p, &template, &tok, seq_len)?,
        None => ChatDataset::from_jsonl(CHATS, &template, &tok, seq_len, "built-in chats")?,
    };
    println!(
        "{} conversations, {seq_len} tokens each (padded)",
        data.len()
    );

    let (mut model, mut trainer) = if flag("--resume") {
        println!("resuming {}", ckpt.display());
        LmTrainer::resume_llama(&ckpt)?
    } else {
        let model = Llama::from_pretrained(&model_dir)?;
        let opts = LmTrainOptions {
            steps,
            batch_size: number("--batch-size", 4)?,
            lr: 3e-3,
            min_lr: Some(3e-4),
            warmup_steps: Some((steps / 10).max(1)),
            eval_interval: (steps / 5).max(1),
            eval_windows: 16,
            ..Default::default()
        };
        (model, LmTrainer::new(opts)?)
    };
    model.set_gradient_checkpointing(flag("--checkpointing"));
    println!("{} trainable parameters", model.num_trainable_params());
    let history = trainer.train(&mut model, &data, Some(&data))?;
    if let (Some(first), Some(last)) = (history.loss.first(), history.loss.last()) {
        println!(
            "training loss {first:.3} → {last:.3}, {:.0} tokens/s",
            history.tokens_per_sec
        );
    }
    model.save_pretrained(&out)?;
    // the tokenizer and template travel with the weights
    for f in [
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        let src = model_dir.join(f);
        if src.is_file() && src != out.join(f) {
            std::fs::copy(&src, out.join(f)).map_err(|e| handgrad::Error::Io {
                path: src.clone(),
                source: e,
            })?;
        }
    }
    trainer.save_llama_checkpoint(&model, &ckpt)?;
    println!(
        "saved {} (and the exact training state in {})",
        out.display(),
        ckpt.display()
    );

    // answer with the fine-tuned model
    let question = value("--ask").unwrap_or_else(|| "Capital of France?".into());
    let prompt = template.render(&[Message::user(question.clone())], true)?;
    let ids = tok.encode(&prompt)?;
    let mut cfg = GenerateConfig::new().max_new_tokens(16);
    if let Some(eos) = tok.token_to_id("<|im_end|>").or(tok.eos_token_id()) {
        cfg = cfg.eos_token_id(eos);
    }
    let reply = model.generate(&ids, &cfg)?;
    let new = &reply[0][ids.len().min(reply[0].len())..];
    println!(
        "user: {question}\nassistant: {}",
        tok.decode(new)?.trim_end_matches("<|im_end|>")
    );
    Ok(())
}
