//! A small MLP on the embedded UCI digits (8×8 images of 0–9), trained Keras-style.
//!
//! `cargo run --release --example digits_mlp [-- --epochs N --seed S]`
//!
//! Splits the 1,797 images 80/20 (seeded), trains 64 → 128 (ReLU) → 10 with Adam and sparse
//! categorical cross-entropy, validating every epoch, and prints the final test accuracy.

use handgrad::data::digits;
use handgrad::prelude::*;
use std::time::Instant;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
        .unwrap_or(default)
}

fn main() -> handgrad::Result<()> {
    let epochs = arg("--epochs", 30) as usize;
    let seed = arg("--seed", 0);
    let (train, test) = digits()?.split(0.8, seed)?;
    println!(
        "UCI digits: {} training and {} test images of 8x8 pixels",
        train.len(),
        test.len()
    );

    let mut rng = handgrad::init::rng(seed);
    let mut model = Sequential::new(&[64])
        .add(Dense::new(128).relu())
        .add(Dense::new(10).softmax())
        .build(&mut rng)?;
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
            .batch_size(32)
            .validation_data(&test),
    )?;
    let logs = model.evaluate(&test)?;
    println!(
        "test accuracy {:.2}% (loss {:.4}) on {} held-out digits after {} epochs ({:.1} s)",
        100.0 * logs["accuracy"],
        logs["loss"],
        test.len(),
        history.epochs(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
