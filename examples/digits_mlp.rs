//! A small MLP on the embedded UCI digits (8×8 images of 0–9), trained Keras-style.
//!
//! `cargo run --release --example digits_mlp [-- --epochs N --batch-size B --seed S]`
//!
//! Splits the 1,797 images 80/20 (seeded), trains 64 → 128 (ReLU) → 10 with Adam and sparse
//! categorical cross-entropy, validating every epoch, and prints the final test accuracy.

#[path = "common/args.rs"]
mod args;

use args::{opt, CliResult, Command, Flag};
use handgrad::data::digits;
use handgrad::prelude::*;
use std::time::Instant;

const FLAGS: &[Flag] = &[
    opt("--epochs", "N", "training epochs, 1 to 10000 (default 30)"),
    opt(
        "--batch-size",
        "B",
        "images per step, 1 to 1437 (default 32)",
    ),
    opt(
        "--seed",
        "S",
        "seed of the split and the initialisation, ≥ 0 (default 0)",
    ),
];
const CMD: Command = Command {
    program: "digits_mlp",
    about: "A 64 → 128 → 10 MLP on the embedded UCI digits (8×8 images), trained with Adam.",
    flags: FLAGS,
    positional: None,
};

fn main() {
    args::main(CMD.program, run)
}

fn run() -> CliResult {
    let a = CMD.parse()?;
    let epochs = a.usize_or("--epochs", 30, 1, 10_000)?;
    let batch_size = a.usize_or("--batch-size", 32, 1, 1437)?;
    let seed = a.u64_or("--seed", 0)?;
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
            .batch_size(batch_size)
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
