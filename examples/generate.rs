//! Generates text with a GPT-2–architecture model: one trained by `train_gpt`, or a Hugging Face
//! folder (`config.json` + `model.safetensors`, e.g. `gpt2`, `distilgpt2`, `gpt2-medium`).
//!
//! ```text
//! cargo run --release --example generate -- --model DIR [--prompt TEXT | --prompt-ids 1,2,3]
//!     [--max-length N | --max-new-tokens N] [--num-return-sequences N] [--do-sample]
//!     [--temperature T] [--top-k K] [--top-p P] [--repetition-penalty R] [--num-beams N]
//!     [--seed S] [--print-ids] [--tokenizer gpt2] [--score-ids 1,2,3,…]
//! ```
//!
//! Without `--model` it uses `checkpoints/char-gpt` (what `train_gpt` saves). The tokenizer is
//! the folder's (`vocab.json` + `merges.txt`, `encoder.json` + `vocab.bpe`, or `char_vocab.txt`),
//! or the embedded GPT-2 one with `--tokenizer gpt2`. `--score-ids` prints `loss <value>`, the
//! mean next-token cross-entropy of that sequence. Lengths are checked against the model's
//! context (`block_size`) and ids against its vocabulary before anything is generated.

#[path = "common/args.rs"]
mod args;
#[path = "common/paths.rs"]
mod paths;

use args::{opt, switch, Args, CliError, CliResult, Command, Flag};
use handgrad::generate::GenerateConfig;
use handgrad::tokenizer::{CharTokenizer, Gpt2Tokenizer, Tokenizer};
use handgrad::transformer::{Gpt, IGNORE_INDEX};
use handgrad::{Error, Result};
use ndarray::Array2;
use std::path::{Path, PathBuf};

const DEFAULT_MODEL: &str = "checkpoints/char-gpt";

const FLAGS: &[Flag] = &[
    opt(
        "--model",
        "DIR",
        "a GPT-2 folder: config.json + model.safetensors (default checkpoints/char-gpt)",
    ),
    opt(
        "--prompt",
        "TEXT",
        "the text to continue (default \"Hello, how are you?\")",
    ),
    opt("--prompt-ids", "1,2,3", "the prompt as token ids"),
    opt(
        "--max-length",
        "N",
        "total length, prompt included, up to the model's context (default 50)",
    ),
    opt(
        "--max-new-tokens",
        "N",
        "new tokens (instead of --max-length); prompt + N up to the context",
    ),
    opt(
        "--num-return-sequences",
        "N",
        "sequences to return, 1 to 256 (default 1)",
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
        "keep the K most likely tokens when sampling, ≥ 1 (default 50)",
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
    opt(
        "--num-beams",
        "N",
        "beam search with N beams, 1 to 64 (default 1: none)",
    ),
    opt("--seed", "S", "sampling seed, ≥ 0 (default 0)"),
    switch("--print-ids", "print token ids instead of decoded text"),
    opt(
        "--tokenizer",
        "gpt2",
        "use the embedded GPT-2 tokenizer instead of the folder's",
    ),
    opt(
        "--score-ids",
        "1,2,3",
        "print the mean next-token loss of these ids instead of generating",
    ),
];
const CMD: Command = Command {
    program: "generate",
    about: "Generate text with a GPT-2-architecture model (train_gpt's, or a Hugging Face folder).",
    flags: FLAGS,
    positional: None,
};

fn main() {
    args::main(CMD.program, run)
}

/// The folder's tokenizer, or the embedded GPT-2 one when asked.
fn tokenizer(dir: &Path, which: Option<&str>) -> CliResult<Option<Box<dyn Tokenizer>>> {
    match which {
        Some("gpt2") => return Ok(Some(Box::new(Gpt2Tokenizer::embedded()?))),
        Some(other) => {
            return Err(CliError::usage(format!(
                "--tokenizer {other}: the only tokenizer to choose is gpt2 (the embedded GPT-2 \
                 one); without --tokenizer the model folder's is used"
            )))
        }
        None => {}
    }
    let has = |f: &str| dir.join(f).is_file();
    if (has("vocab.json") && has("merges.txt")) || (has("encoder.json") && has("vocab.bpe")) {
        return Ok(Some(Box::new(Gpt2Tokenizer::from_dir(dir)?)));
    }
    if has("char_vocab.txt") {
        let path = dir.join("char_vocab.txt");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
        return Ok(Some(Box::new(CharTokenizer::from_chars(
            text.chars().collect(),
        )?)));
    }
    Ok(None)
}

/// The generation settings of the command line (lengths are checked against the model later).
fn generate_config(a: &Args) -> CliResult<GenerateConfig> {
    let mut cfg = GenerateConfig::new().max_length(50);
    if let Some(n) = a.int("--max-length", 1, u32::MAX as u64)? {
        cfg.max_length = n as usize;
    }
    if let Some(n) = a.int("--max-new-tokens", 1, u32::MAX as u64)? {
        cfg.max_new_tokens = Some(n as usize);
    }
    cfg.num_return_sequences = a.usize_or("--num-return-sequences", 1, 1, 256)?;
    a.sampling(&mut cfg)?;
    cfg.num_beams = a.usize_or("--num-beams", 1, 1, 64)?;
    Ok(cfg)
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    a.at_most_one(&["--prompt", "--prompt-ids", "--score-ids"])?;
    a.at_most_one(&["--max-length", "--max-new-tokens"])?;
    let cfg = generate_config(&a)?;
    let print_ids = a.flag("--print-ids");
    let model = a.path("--model")?;
    let dir = model
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL));
    if model.is_none() && !dir.join("config.json").is_file() {
        return Err(CliError::usage(format!(
            "no model in {DEFAULT_MODEL}: train one first with\n  cargo run --release --example \
             train_gpt\nor pass --model DIR with a Hugging Face GPT-2 folder (config.json + \
             model.safetensors)"
        )));
    }
    paths::check_model(
        "--model",
        &dir,
        &[&paths::CONFIG, &paths::GPT_WEIGHTS],
        false,
    )?;
    let tok = tokenizer(&dir, a.string("--tokenizer"))?;
    let mut gpt = Gpt::from_pretrained(&dir)?;
    let (vocab, context) = (gpt.config().vocab_size, gpt.config().block_size);

    if let Some(seq) = a.ids("--score-ids", vocab)? {
        if !(2..=context).contains(&seq.len()) {
            return Err(CliError::usage(format!(
                "--score-ids: {} ids given; expected 2 to {context} (the model's context)",
                seq.len()
            )));
        }
        println!("loss {}", score(&mut gpt, &seq)?);
        return Ok(());
    }

    let prompt: Vec<usize> = match (a.ids("--prompt-ids", vocab)?, a.string("--prompt"), &tok) {
        (Some(ids), _, _) => ids,
        (None, Some(text), Some(tok)) => tok.encode(text)?,
        (None, None, Some(tok)) => tok.encode("Hello, how are you?")?,
        (None, _, None) => {
            return Err(CliError::usage(format!(
                "{} holds no tokenizer (vocab.json + merges.txt, encoder.json + vocab.bpe, or \
                 char_vocab.txt): pass --prompt-ids 1,2,3, or --tokenizer gpt2",
                dir.display()
            )))
        }
    };
    let total = match cfg.max_new_tokens {
        Some(n) => prompt.len().saturating_add(n),
        None => cfg.max_length,
    };
    if total > context {
        let given = match cfg.max_new_tokens {
            Some(n) => format!("--max-new-tokens {n} after a {}-token prompt", prompt.len()),
            None => format!("--max-length {total}"),
        };
        return Err(CliError::usage(format!(
            "{given} goes past the model's context of {context} tokens (block_size); ask for at \
             most {context} tokens in all"
        )));
    }
    if cfg.max_new_tokens.is_none() && cfg.max_length <= prompt.len() {
        return Err(CliError::usage(format!(
            "--max-length {} is not above the prompt's {} tokens (it counts the prompt; \
             --max-new-tokens counts new tokens only)",
            cfg.max_length,
            prompt.len()
        )));
    }
    let out = gpt.generate(&prompt, &cfg)?;
    for (i, seq) in out.iter().enumerate() {
        match (&tok, print_ids) {
            (Some(tok), false) => println!("{}: {:?}", i + 1, tok.decode(seq)?),
            _ => println!(
                "{}: {}",
                i + 1,
                seq.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
    Ok(())
}

/// The mean next-token cross-entropy of `seq` (`2 ≤ len ≤ block_size`).
fn score(gpt: &mut Gpt, seq: &[usize]) -> Result<f32> {
    let t = seq.len();
    let x = Array2::from_shape_vec((1, t), seq.to_vec()).expect("1×T");
    let mut y = Array2::from_elem((1, t), IGNORE_INDEX);
    for i in 0..t - 1 {
        y[[0, i]] = seq[i + 1];
    }
    gpt.loss(x.view(), y.view())
}
