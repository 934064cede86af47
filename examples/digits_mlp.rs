//! A small MLP on the embedded UCI digits (8×8 images of 0–9), trained with Adam.
//!
//! `cargo run --release --example digits_mlp [-- --epochs N --seed S]`
//!
//! Splits the 1,797 images 80/20 (seeded), trains 64 → 128 (ReLU) → 10 with softmax
//! cross-entropy, and prints the loss and accuracies per epoch and the final test accuracy.

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
    let (train, test) = digits()?.split(0.2, seed)?;
    println!(
        "UCI digits: {} training and {} test images of 8x8 pixels",
        train.len(),
        test.len()
    );

    let mut rng = handgrad::init::rng(seed);
    let mut model = Sequential::new(&[64])
        .add(Dense::new(128).relu())
        .add(Dense::new(10))
        .build(&mut rng)?;
    println!("{}", model.summary());
    let mut opt = Adam::new(1e-3);

    let start = Instant::now();
    for epoch in 1..=epochs {
        let mut total = 0.0;
        let mut batches = 0;
        for (x, y) in train.batches(32, Some(&mut rng))? {
            total += model.train_step(&x, &y, &mut opt)?;
            batches += 1;
        }
        let (_, train_acc) = model.evaluate(train.inputs(), train.labels())?;
        let (test_loss, test_acc) = model.evaluate(test.inputs(), test.labels())?;
        println!(
            "epoch {epoch:>3}/{epochs}  loss {:.4}  train acc {:.2}%  test loss {test_loss:.4}  test acc {:.2}%",
            total / batches as f32,
            100.0 * train_acc,
            100.0 * test_acc
        );
    }
    let (_, acc) = model.evaluate(test.inputs(), test.labels())?;
    println!(
        "test accuracy {:.2}% on {} held-out digits ({:.1} s)",
        100.0 * acc,
        test.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
