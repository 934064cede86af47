//! The Keras seed CNN on Fashion-MNIST (embedded test split by default), Keras-style.
//!
//! ```text
//! cargo run --release --example image_classifier [-- --epochs 5 --train 8000 --batch-size 64]
//! cargo run --release --example image_classifier -- --data DIR   # a full MNIST/Fashion-MNIST folder
//! cargo run --release --example image_classifier -- --out DIR    # also write the pictures
//! ```
//!
//! Conv2D(32, 3×3, relu) → MaxPool(2) → Conv2D(64, 3×3, relu) → MaxPool(2) → Flatten →
//! Dense(64, relu) → Dense(10, softmax), Adam, sparse categorical cross-entropy. Prints the
//! summary, per-epoch progress, the test accuracy and a confusion matrix. With `--out DIR` it
//! also writes `DIR/training.svg` (loss and accuracy per epoch) and `DIR/test_images.svg` (the
//! first 24 test images with the predicted and the true class, mistakes in red).

#[path = "common/args.rs"]
mod args;
#[path = "common/paths.rs"]
mod paths;

use args::{opt, CliError, CliResult, Command, Flag};
use handgrad::data::{fashion_mnist, load_mnist, Split, FASHION_MNIST_CLASSES};
use handgrad::model::confusion_matrix;
use handgrad::prelude::*;
use handgrad::viz::{image_grid_svg, training_curves_svg, Caption};
use std::path::Path;
use std::time::Instant;

/// Images of the embedded set (the Fashion-MNIST test split).
const EMBEDDED: usize = 10_000;

const FLAGS: &[Flag] = &[
    opt(
        "--data",
        "DIR",
        "an MNIST or Fashion-MNIST folder (IDX files; default: the embedded 10,000 images)",
    ),
    opt("--epochs", "N", "training epochs, 1 to 1000 (default 5)"),
    opt(
        "--train",
        "N",
        "training images: of the embedded 10,000, 10 to 9000, the rest test (default 8000); \
         with --data, the first N of its training split (default all)",
    ),
    opt(
        "--batch-size",
        "B",
        "images per step, 1 to 4096 (default 64)",
    ),
    opt(
        "--seed",
        "S",
        "seed of the split and the initialisation, ≥ 0 (default 0)",
    ),
    opt(
        "--out",
        "DIR",
        "write training.svg and test_images.svg into DIR (default: no pictures)",
    ),
];
const CMD: Command = Command {
    program: "image_classifier",
    about: "The Keras seed CNN on Fashion-MNIST: summary, training, test accuracy, confusion \
            matrix.",
    flags: FLAGS,
    positional: None,
};

fn main() {
    args::main(CMD.program, run)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    let data = a.path("--data")?;
    let epochs = a.usize_or("--epochs", 5, 1, 1000)?;
    let batch_size = a.usize_or("--batch-size", 64, 1, 4096)?;
    let seed = a.u64_or("--seed", 0)?;
    let n_train = match &data {
        None => Some(a.usize_or("--train", 8000, 10, EMBEDDED - 1000)?),
        Some(_) => a.int("--train", 1, u64::MAX)?.map(|n| n as usize),
    };
    let out = a.path("--out")?;
    if let Some(dir) = &out {
        paths::prepare_out_dir("--out", dir)?;
    }

    let (train, test) = match &data {
        Some(dir) => {
            let train = load_mnist(dir, Split::Train)?;
            let test = load_mnist(dir, Split::Test)?;
            let train = match n_train {
                Some(n) if n > train.len() => {
                    return Err(CliError::usage(format!(
                        "--train {n}: {} holds {} training images",
                        dir.display(),
                        train.len()
                    )))
                }
                Some(n) => {
                    let (x, y) = train.select(&(0..n).collect::<Vec<_>>())?;
                    Dataset::new(x, y)?
                }
                None => train,
            };
            (train, test)
        }
        None => {
            // The embedded 10,000 Fashion-MNIST test images, split into train and test parts.
            let all = fashion_mnist()?;
            let n = n_train.expect("set for the embedded data");
            let (train, test) = all.split(n as f64 / all.len() as f64, seed)?;
            println!(
                "embedded Fashion-MNIST (test split): {} train / {} test images",
                train.len(),
                test.len()
            );
            (train, test)
        }
    };
    let mut rng = handgrad::init::rng(seed);
    let mut model = handgrad::model::small_cnn(&[1, 28, 28], 10, &mut rng)?;
    println!("{}", model.summary());
    model.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )?;

    let start = Instant::now();
    let history = model.fit(
        &train,
        FitOptions::new()
            .epochs(epochs)
            .batch_size(batch_size)
            .validation_data(&test),
    )?;
    let secs = start.elapsed().as_secs_f64();
    let logs = model.evaluate(&test)?;
    println!(
        "test accuracy {:.2}% (loss {:.4}) on {} images; training {:.1} s ({:.0} images/s)",
        100.0 * logs["accuracy"],
        logs["loss"],
        test.len(),
        secs,
        (train.len() * epochs) as f64 / secs
    );

    let probs = model.predict_batched(test.inputs(), 256)?;
    let cm = confusion_matrix(&probs, test.labels(), 10)?;
    let fashion = data
        .as_deref()
        .is_none_or(|d| d.to_string_lossy().to_lowercase().contains("fashion"));
    let names: Vec<String> = if fashion {
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        (0..10).map(|d| d.to_string()).collect()
    };
    println!("\nconfusion matrix (rows: true class, columns: predicted)");
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    print!("{:>w$}", "", w = width + 3);
    for j in 0..10 {
        print!("{j:>6}");
    }
    println!();
    for (i, name) in names.iter().enumerate() {
        print!("{name:>width$} {i:>2}");
        for j in 0..10 {
            print!("{:>6}", cm[[i, j]]);
        }
        println!();
    }

    if let Some(dir) = &out {
        write(
            &dir.join("training.svg"),
            &training_curves_svg("CNN on Fashion-MNIST", &history),
        )?;
        let shown: Vec<usize> = (0..test.len().min(24)).collect();
        let (images, labels) = test.select(&shown)?;
        let captions: Vec<Caption> = shown
            .iter()
            .zip(&labels)
            .map(|(&i, &truth)| {
                let row = probs.index_axis(ndarray::Axis(0), i);
                let (best, p) =
                    row.iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |m, (k, &v)| {
                                if v > m.1 {
                                    (k, v)
                                } else {
                                    m
                                }
                            },
                        );
                Caption::new(names[best].clone())
                    .probability(p)
                    .truth(names[truth].clone())
            })
            .collect();
        write(
            &dir.join("test_images.svg"),
            &image_grid_svg(&images, &captions, 3, 8)?,
        )?;
        println!(
            "\nwrote {0}/training.svg and {0}/test_images.svg",
            dir.display()
        );
    }
    Ok(())
}
