//! Fine-tunes a Llama-architecture chat model on conversations (JSON lines), saves it as a
//! Hugging Face folder, and answers a question with the result.
//!
//! ```text
//! cargo run --release --example finetune_chat                  # the tiny test Llama, built-in chats
//! cargo run --release --example finetune_chat -- --model path/to/hf-llama --data chats.jsonl \
//!     --steps 200 --seq-len 256 --out checkpoints/chat-llama
//! cargo run --release --example finetune_chat -- --resume --steps 120   # extend the saved run
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
//!
//! `--out` is checked writable before training. `--resume` continues the run saved in `--out`
//! exactly (give it the same `--model`, whose tokenizer it uses, and `--data`): a run that
//! already did the steps asked for is finished, and `--steps N` above them extends it to N steps
//! in all, with the learning-rate schedule kept (the cosine ends at the original length, the
//! extra steps run at `min_lr`).

#[path = "common/args.rs"]
mod args;
#[path = "common/paths.rs"]
mod paths;

use args::{opt, switch, CliError, CliResult, Command, Flag};
use handgrad::data::ChatDataset;
use handgrad::generate::GenerateConfig;
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate, Message, Tokenizer};
use handgrad::transformer::{Llama, LmTrainOptions, LmTrainer};
use std::path::{Path, PathBuf};

/// The built-in conversations (used without `--data`).
const CHATS: &str = r#"{"messages":[{"role":"user","content":"Capital of France?"},{"role":"assistant","content":"Paris."}]}
{"messages":[{"role":"user","content":"Capital of Italy?"},{"role":"assistant","content":"Rome."}]}
{"messages":[{"role":"user","content":"Capital of Spain?"},{"role":"assistant","content":"Madrid."}]}
{"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"4."}]}
"#;

const FLAGS: &[Flag] = &[
    opt(
        "--model",
        "DIR",
        "a Hugging Face Llama folder (default: the tiny test Llama)",
    ),
    opt(
        "--data",
        "FILE",
        "conversations, one JSON object per line (default: 4 built-in chats)",
    ),
    opt(
        "--steps",
        "N",
        "optimizer steps in all, 1 to 10000000 (default 60; 10 with --fast)",
    ),
    opt(
        "--seq-len",
        "T",
        "tokens per conversation, 2 to the model's context (default 48)",
    ),
    opt(
        "--batch-size",
        "B",
        "conversations per step, 1 to 4096 (default 4)",
    ),
    opt(
        "--out",
        "DIR",
        "where the model and the training state go (default checkpoints/chat-llama)",
    ),
    switch(
        "--resume",
        "continue the run saved in --out (extend it with --steps N)",
    ),
    switch("--fast", "a few steps (CI)"),
    switch(
        "--chatml",
        "render with plain ChatML instead of the folder's template",
    ),
    switch(
        "--checkpointing",
        "recompute activations in the backward (less memory)",
    ),
    opt(
        "--ask",
        "TEXT",
        "the question to answer afterwards (default \"Capital of France?\")",
    ),
];
const CMD: Command = Command {
    program: "finetune_chat",
    about: "Fine-tune a Llama-architecture chat model on conversations, save it, and ask it.",
    flags: FLAGS,
    positional: None,
};

fn main() {
    args::main(CMD.program, run)
}

/// The saved run in `ckpt`, made ready to train up to `steps` (the run's own steps when
/// `None`), or `None` when it already did them.
fn resume(ckpt: &Path, steps: Option<usize>) -> CliResult<Option<(Llama, LmTrainer)>> {
    if !ckpt.is_file() {
        return Err(CliError::failed(format!(
            "--resume: there is no saved run in {} (no trainer.ckpt); train first without \
             --resume, or pass the --out of an earlier run",
            ckpt.parent()
                .map_or("?".into(), |p| p.display().to_string())
        )));
    }
    println!("resuming {}", ckpt.display());
    let (model, mut trainer) = LmTrainer::resume_llama(ckpt)?;
    let (done, planned) = (trainer.step_count(), trainer.options().steps);
    let target = steps.unwrap_or(planned);
    if done >= target {
        println!(
            "the saved run is finished: it did {done} steps; pass --steps N with N > {done} to \
             extend it"
        );
        return Ok(None);
    }
    if target > planned {
        trainer.extend_to(target)?;
        println!(
            "extending the run from {done} to {target} steps; the learning-rate schedule keeps \
             its {planned}-step length, the steps after it run at min_lr"
        );
    }
    Ok(Some((model, trainer)))
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    let fast = a.flag("--fast");
    let resuming = a.flag("--resume");
    if resuming && a.given("--batch-size") {
        return Err(CliError::usage(
            "--batch-size cannot change when resuming: the saved run keeps its own",
        ));
    }
    let tiny = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/llama/llama_tiny"
    );
    let model_arg = a.path("--model")?;
    let builtin = model_arg.is_none();
    let model_dir = model_arg.unwrap_or_else(|| PathBuf::from(tiny));
    let steps = a.int("--steps", 1, 10_000_000)?.map(|n| n as usize);
    let seq_len = a.usize_or("--seq-len", 48, 2, 1 << 20)?;
    let batch_size = a.usize_or("--batch-size", 4, 1, 4096)?;
    let data_path = a.path("--data")?;
    let out = a
        .path("--out")?
        .unwrap_or_else(|| PathBuf::from("checkpoints/chat-llama"));
    let ckpt = out.join("trainer.ckpt");
    let question = a
        .string("--ask")
        .unwrap_or("Capital of France?")
        .to_string();
    paths::prepare_out_dir("--out", &out)?;
    paths::check_model(
        "--model",
        &model_dir,
        &[&paths::CONFIG, &paths::WEIGHTS, &paths::BPE_TOKENIZER],
        false,
    )?;

    let tok = BpeTokenizer::from_dir(&model_dir)?;
    // the tiny model's SmolLM2 template adds a long system prompt: plain ChatML fits its context
    let template = if a.flag("--chatml") || builtin {
        ChatTemplate::chatml()
    } else {
        ChatTemplate::from_dir(&model_dir)?
    };
    let (mut model, mut trainer) = if resuming {
        match resume(&ckpt, steps)? {
            Some(run) => run,
            None => return Ok(()),
        }
    } else {
        let model = Llama::from_pretrained(&model_dir)?;
        let steps = steps.unwrap_or(if fast { 10 } else { 60 });
        let opts = LmTrainOptions {
            steps,
            batch_size,
            lr: 3e-3,
            min_lr: Some(3e-4),
            warmup_steps: Some((steps / 10).max(1)),
            eval_interval: (steps / 5).max(1),
            eval_windows: 16,
            ..Default::default()
        };
        (model, LmTrainer::new(opts)?)
    };
    let context = model.config().max_position_embeddings;
    if seq_len > context {
        return Err(CliError::usage(format!(
            "--seq-len {seq_len} is above the model's context of {context} tokens \
             (max_position_embeddings)"
        )));
    }
    let data = match &data_path {
        Some(p) => ChatDataset::from_jsonl_file(p, &template, &tok, seq_len)?,
        None => ChatDataset::from_jsonl(CHATS, &template, &tok, seq_len, "built-in chats")?,
    };
    println!(
        "{} conversations, {seq_len} tokens each (padded)",
        data.len()
    );

    model.set_gradient_checkpointing(a.flag("--checkpointing"));
    println!("{} trainable parameters", model.num_trainable_params());
    let todo = match steps {
        Some(n) if resuming => n - trainer.step_count(),
        _ => trainer.options().steps - trainer.step_count(),
    };
    let history = trainer.train_for(&mut model, &data, Some(&data), todo)?;
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
        "saved {} (and the exact training state, {} steps, in {})",
        out.display(),
        trainer.step_count(),
        ckpt.display()
    );

    // answer with the fine-tuned model
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
