//! The Keras seed CNN on Fashion-MNIST (embedded test split by default), Keras-style.
//!
//! ```text
//! cargo run --release --example image_classifier [-- --epochs 5 --train 8000 --batch-size 64]
//! cargo run --release --example image_classifier -- --data DIR   # a full MNIST/Fashion-MNIST folder
//! ```
//!
//! Conv2D(32, 3×3, relu) → MaxPool(2) → Conv2D(64, 3×3, relu) → MaxPool(2) → Flatten →
//! Dense(64, relu) → Dense(10, softmax), Adam, sparse categorical cross-entropy. Prints the
//! summary, per-epoch progress, the test accuracy and a confusion matrix.

use handgrad::data::{fashion_mnist, load_mnist, Split, FASHION_MNIST_CLASSES};
use handgrad::model::confusion_matrix;
use handgrad::prelude::*;
use std::time::Instant;

struct Args {
    data: Option<String>,
    epochs: usize,
    train: usize,
    batch_size: usize,
    seed: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        data: None,
        epochs: 5,
        train: 8000,
        batch_size: 64,
        seed: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let num = |name: &str| {
            value
                .parse::<usize>()
                .map_err(|_| Error::config("image_classifier", name, &value, "a whole number"))
        };
        match argv[i].as_str() {
            "--data" => a.data = Some(value.clone()),
            "--epochs" => a.epochs = num("--epochs")?,
            "--train" => a.train = num("--train")?,
            "--batch-size" => a.batch_size = num("--batch-size")?,
            "--seed" => a.seed = num("--seed")? as u64,
            other => {
                return Err(Error::config(
                    "image_classifier",
                    "argument",
                    other,
                    "--data DIR, --epochs N, --train N, --batch-size N or --seed N",
                ))
            }
        }
        i += 2;
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (train, test) = match &args.data {
        Some(dir) => (
            load_mnist(dir, Split::Train)?,
            load_mnist(dir, Split::Test)?,
        ),
        None => {
            // The embedded 10,000 Fashion-MNIST test images, split into train and test parts.
            let all = fashion_mnist()?;
            let train_fraction = args.train.min(all.len() - 1) as f64 / all.len() as f64;
            let (train, test) = all.split(train_fraction, args.seed)?;
            println!(
                "embedded Fashion-MNIST (test split): {} train / {} test images",
                train.len(),
                test.len()
            );
            (train, test)
        }
    };
    let mut rng = handgrad::init::rng(args.seed);
    let mut model = handgrad::model::small_cnn(&[1, 28, 28], 10, &mut rng)?;
    println!("{}", model.summary());
    model.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )?;

    let start = Instant::now();
    model.fit(
        &train,
        FitOptions::new()
            .epochs(args.epochs)
            .batch_size(args.batch_size)
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
        (train.len() * args.epochs) as f64 / secs
    );

    let probs = model.predict_batched(test.inputs(), 256)?;
    let cm = confusion_matrix(&probs, test.labels(), 10)?;
    let names: Vec<&str> = if args.data.is_some() && !is_fashion(&args) {
        vec!["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    } else {
        FASHION_MNIST_CLASSES.to_vec()
    };
    println!("\nconfusion matrix (rows: true class, columns: predicted)");
    print!("{:>12}", "");
    for j in 0..10 {
        print!("{j:>6}");
    }
    println!();
    for (i, name) in names.iter().enumerate() {
        print!("{:>9} {i:>2}", truncate(name, 9));
        for j in 0..10 {
            print!("{:>6}", cm[[i, j]]);
        }
        println!();
    }
    Ok(())
}

fn is_fashion(args: &Args) -> bool {
    args.data
        .as_deref()
        .is_some_and(|d| d.to_lowercase().contains("fashion"))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
