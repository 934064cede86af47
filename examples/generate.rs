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
//! mean next-token cross-entropy of that sequence.

use handgrad::generate::GenerateConfig;
use handgrad::tokenizer::{CharTokenizer, Gpt2Tokenizer, Tokenizer};
use handgrad::transformer::{Gpt, IGNORE_INDEX};
use handgrad::{Error, Result};
use ndarray::Array2;
use std::path::{Path, PathBuf};

const DEFAULT_MODEL: &str = "checkpoints/char-gpt";

struct Args {
    model: PathBuf,
    prompt: Option<String>,
    prompt_ids: Option<Vec<usize>>,
    score_ids: Option<Vec<usize>>,
    tokenizer: Option<String>,
    print_ids: bool,
    cfg: GenerateConfig,
}

fn ids(flag: &str, s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse()
                .map_err(|_| Error::config("generate", flag, s, "comma-separated token ids"))
        })
        .collect()
}

fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        model: PathBuf::from(DEFAULT_MODEL),
        prompt: None,
        prompt_ids: None,
        score_ids: None,
        tokenizer: None,
        print_ids: false,
        cfg: GenerateConfig::new().max_length(50),
    };
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        let val = || {
            argv.get(i + 1)
                .cloned()
                .ok_or_else(|| Error::config("generate", flag, "nothing", "a value after it"))
        };
        let num = |v: String| -> Result<f64> {
            v.parse()
                .map_err(|_| Error::config("generate", flag, &v, "a number"))
        };
        let mut takes_value = true;
        match flag {
            "--model" => a.model = PathBuf::from(val()?),
            "--prompt" => a.prompt = Some(val()?),
            "--prompt-ids" => a.prompt_ids = Some(ids(flag, &val()?)?),
            "--score-ids" => a.score_ids = Some(ids(flag, &val()?)?),
            "--tokenizer" => a.tokenizer = Some(val()?),
            "--max-length" => a.cfg.max_length = num(val()?)? as usize,
            "--max-new-tokens" => a.cfg.max_new_tokens = Some(num(val()?)? as usize),
            "--num-return-sequences" => a.cfg.num_return_sequences = num(val()?)? as usize,
            "--temperature" => a.cfg.temperature = num(val()?)? as f32,
            "--top-k" => a.cfg.top_k = Some(num(val()?)? as usize),
            "--top-p" => a.cfg.top_p = num(val()?)? as f32,
            "--repetition-penalty" => a.cfg.repetition_penalty = num(val()?)? as f32,
            "--num-beams" => a.cfg.num_beams = num(val()?)? as usize,
            "--seed" => a.cfg.seed = num(val()?)? as u64,
            "--do-sample" => {
                a.cfg.do_sample = true;
                takes_value = false;
            }
            "--print-ids" => {
                a.print_ids = true;
                takes_value = false;
            }
            other => {
                return Err(Error::config(
                    "generate",
                    "argument",
                    other,
                    "one of the flags listed in `examples/generate.rs`",
                ))
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
    Ok(a)
}

/// The folder's tokenizer, or the embedded GPT-2 one when asked.
fn tokenizer(dir: &Path, which: Option<&str>) -> Result<Option<Box<dyn Tokenizer>>> {
    match which {
        Some("gpt2") => return Ok(Some(Box::new(Gpt2Tokenizer::embedded()?))),
        Some(other) => return Err(Error::config("generate", "--tokenizer", other, "\"gpt2\"")),
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

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if !args.model.join("config.json").is_file() && args.model == Path::new(DEFAULT_MODEL) {
        eprintln!(
            "no model in {DEFAULT_MODEL}: train one first with\n  cargo run --release --example \
             train_gpt\nor pass --model DIR with a Hugging Face GPT-2 folder (config.json + \
             model.safetensors)"
        );
        std::process::exit(2);
    }
    let mut gpt = Gpt::from_pretrained(&args.model)?;
    let tok = tokenizer(&args.model, args.tokenizer.as_deref())?;

    if let Some(seq) = &args.score_ids {
        if seq.len() < 2 {
            return Err(Error::config(
                "generate",
                "--score-ids",
                seq.len(),
                "at least 2 ids",
            ));
        }
        let t = seq.len();
        let x = Array2::from_shape_vec((1, t), seq.clone()).expect("1×T");
        let mut y = Array2::from_elem((1, t), IGNORE_INDEX);
        for i in 0..t - 1 {
            y[[0, i]] = seq[i + 1];
        }
        println!("loss {}", gpt.loss(x.view(), y.view())?);
        return Ok(());
    }

    let prompt: Vec<usize> = match (&args.prompt_ids, &args.prompt, &tok) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(text), Some(tok)) => tok.encode(text)?,
        (None, None, Some(tok)) => tok.encode("Hello, how are you?")?,
        (None, _, None) => {
            return Err(Error::config(
                "generate",
                "--prompt",
                "text without a tokenizer",
                "--prompt-ids, or a folder with a tokenizer, or --tokenizer gpt2",
            ))
        }
    };
    let out = gpt.generate(&prompt, &args.cfg)?;
    for (i, seq) in out.iter().enumerate() {
        match (&tok, args.print_ids) {
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
