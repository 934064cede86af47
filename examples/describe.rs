//! See and describe with real pretrained models, offline: EfficientNet-Lite0 recognises what is
//! in each photo, SmolLM2-135M-Instruct writes one or two sentences about it from a prompt
//! built from the top classes and their probabilities.
//!
//! ```text
//! scripts/fetch-models.sh          # once: SmolLM2 (98 MB) and EfficientNet-Lite0 (18 MB)
//! cargo run --release --example describe                          # the two embedded photos
//! cargo run --release --example describe -- PHOTO.jpg PHOTO.png   # your own JPEG / PNG files
//! cargo run --release --example describe -- --do-sample --seed 3 --top-k-classes 5
//! ```
//!
//! Prints each photo's top-5 classes and the text as it is generated, with timings, and writes
//! a self-contained HTML page (`describe-output/describe.html` by default: the photos embedded,
//! their top-5 bars, the texts). `--model` takes another Llama-family GGUF file or Hugging Face
//! folder (its chat template is used when it has one), `--weights` another EfficientNet-Lite0
//! state dict (as in the `classify` example).

#[path = "common/args.rs"]
mod args;
#[path = "common/models.rs"]
mod models;

use args::{opt, switch, Args, CliResult, Command, Flag};
use handgrad::describe::{
    html_page, percent, top_classes, CausalLm, Describer, Description, ImageClassifier, PageEntry,
};
use handgrad::generate::GenerateConfig;
use handgrad::tokenizer::Tokenizer;
use handgrad::vision;
use handgrad::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

const ABOUT: &str = "Recognise photos with EfficientNet-Lite0 and describe them with SmolLM2.\n\
                     Arguments: JPEG or PNG files (default: two embedded photos).";
const FLAGS: &[Flag] = &[
    opt(
        "--model",
        "FILE.gguf|DIR",
        "the language model (default: SmolLM2-135M-Instruct from $HANDGRAD_MODELS)",
    ),
    opt(
        "--weights",
        "FILE",
        "EfficientNet-Lite0 state dict (default: the fetched one)",
    ),
    opt(
        "--top-k-classes",
        "N",
        "how many top classes fill the prompt (default 3)",
    ),
    opt(
        "--template",
        "TEXT",
        "the prompt: {class}, {probability}, {classes}, {names} (default: the built-in one)",
    ),
    opt(
        "--max-new-tokens",
        "N",
        "at most N new tokens per text (default 60)",
    ),
    switch("--do-sample", "sample instead of greedy decoding"),
    opt("--temperature", "T", "sampling temperature (default 1.0)"),
    opt(
        "--top-k",
        "K",
        "keep the K most likely tokens (default 50 when sampling)",
    ),
    opt("--top-p", "P", "nucleus sampling mass (default 1.0)"),
    opt("--seed", "S", "sampling seed (default 0)"),
    opt(
        "--out",
        "FILE.html",
        "the page to write (default describe-output/describe.html)",
    ),
    opt("--threads", "N", "worker threads (default: one per core)"),
];
const CMD: Command = Command {
    program: "describe",
    about: ABOUT,
    flags: FLAGS,
    positional: Some("[PHOTO.jpg|PHOTO.png ...]"),
};

fn generate_config(a: &Args) -> CliResult<GenerateConfig> {
    let mut cfg = GenerateConfig::new()
        .max_new_tokens(a.int("--max-new-tokens", 1, 1 << 16)?.unwrap_or(60) as usize);
    a.sampling(&mut cfg)?;
    Ok(cfg)
}

/// The photos to describe: `(name, encoded bytes)`.
fn photos(paths: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    if paths.is_empty() {
        return Ok(vision::sample_photos()
            .iter()
            .map(|&(name, bytes)| (name.to_string(), bytes.to_vec()))
            .collect());
    }
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|source| Error::Io {
                path: p.into(),
                source,
            })?;
            Ok((p.clone(), bytes))
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    if let Some(n) = a.int("--threads", 1, 1024)? {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
            .map_err(|e| Error::State(format!("cannot start {n} threads: {e}")))?;
    }
    let k = a.int("--top-k-classes", 1, 1000)?.unwrap_or(3) as usize;
    let cfg = generate_config(&a)?;
    let out = PathBuf::from(a.string("--out").unwrap_or("describe-output/describe.html"));
    let weights = match a.string("--weights") {
        Some(w) => PathBuf::from(w),
        None => models::fetched(models::EFFICIENTNET_LITE0, "--weights FILE")?,
    };
    let model = match a.string("--model") {
        Some(m) => PathBuf::from(m),
        None => models::fetched(models::SMOLLM2, "--model FILE.gguf|DIR")?,
    };
    let photos = photos(&a.positional)?;

    let t0 = Instant::now();
    let net = models::load_efficientnet(&weights)?;
    let t1 = Instant::now();
    let lm = if model.is_dir() {
        CausalLm::from_pretrained(&model)?
    } else {
        CausalLm::from_gguf(&model)?
    };
    eprintln!(
        "loaded {} in {:.2} s and {} in {:.2} s ({})",
        weights.display(),
        (t1 - t0).as_secs_f64(),
        model.display(),
        t1.elapsed().as_secs_f64(),
        if lm.is_chat() {
            "chat template"
        } else {
            "no chat template: completion"
        }
    );
    let mut describer = Describer::new(net, lm)?.top_k_classes(k)?;
    if let Some(t) = a.string("--template") {
        describer = describer.template(t)?;
    }
    let names = describer.classifier().class_names();

    let mut done: Vec<(String, Vec<u8>, Vec<_>, Description)> = Vec::new();
    for (name, bytes) in photos {
        let img = vision::decode_rgb(&bytes, &name)?;
        let t = Instant::now();
        let probs = describer.classify(&img)?;
        let classify_ms = t.elapsed().as_secs_f64() * 1e3;
        let top5 = top_classes(&probs, &names, 5)?;
        println!(
            "{name} ({}×{}, recognised in {classify_ms:.0} ms):",
            img.w(),
            img.h()
        );
        for c in &top5 {
            println!("  {:>7}  {} ({})", percent(c.probability), c.name, c.class);
        }
        print!("  ");
        let t = Instant::now();
        let mut first: Option<Instant> = None;
        let mut stdout = std::io::stdout();
        let d = describer.describe_probabilities(
            probs,
            &cfg,
            Some(&mut |piece: &str| {
                first.get_or_insert_with(Instant::now);
                print!("{}", piece.replace('\n', "\n  "));
                stdout.flush().ok();
                Ok(())
            }),
        )?;
        let end = Instant::now();
        let first = first.unwrap_or(end);
        let lm = describer.language_model();
        let reply = if lm.is_chat() {
            d.text.as_str()
        } else {
            &d.text[d.prompt.len()..]
        };
        let tokens = lm.tokenizer().encode(reply)?.len();
        println!();
        eprintln!(
            "  [{} prompt tokens: first text after {:.2} s; {tokens} new tokens, {:.1} tok/s after the first]",
            lm.tokenizer().encode(&d.prompt)?.len(),
            (first - t).as_secs_f64(),
            tokens.saturating_sub(1) as f64 / (end - first).as_secs_f64().max(1e-9)
        );
        done.push((name, bytes, top5, d));
    }

    let entries: Vec<PageEntry> = done
        .iter()
        .map(|(name, bytes, top5, d)| PageEntry {
            name,
            image: bytes,
            bars: top5,
            description: d,
        })
        .collect();
    let intro = format!(
        "{} recognises; {} writes from the prompt “{}” ({}, at most {} new tokens). \
         Everything ran offline on the CPU with handgrad.",
        weights.file_name().unwrap_or_default().to_string_lossy(),
        model.file_name().unwrap_or_default().to_string_lossy(),
        describer.prompt_template().source(),
        if cfg.do_sample {
            format!("sampled, seed {}", cfg.seed)
        } else {
            "greedy".to_string()
        },
        cfg.max_new_tokens.unwrap_or(0),
    );
    write_file(&out, &html_page("See and describe", &intro, &entries)?)?;
    println!(
        "\nwrote {} (the photos, their top-5 classes and the texts); total {:.1} s",
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    args::main(CMD.program, run)
}
