//! handgrad in two minutes: see and describe.
//!
//! ```text
//! cargo run --release --example quickstart             # ≈ 2 minutes on 2 cores, offline
//! cargo run --release --example quickstart -- --fast   # a few seconds (CI; also HANDGRAD_FAST=1)
//! cargo run --release --example quickstart -- --out DIR  # the pictures go to DIR
//! ```
//!
//! 1. Trains the Keras seed CNN on the embedded Fashion-MNIST images and prints its test
//!    accuracy.
//! 2. Trains a small character-level GPT on the embedded *Moby-Dick* and prints 5 continuations
//!    of "Hello, how are you?".
//! 3. For a few test images, prints what the CNN sees (class and probability) and a sentence the
//!    GPT writes from a prompt built from that class (`handgrad::describe::Describer`).
//! 4. Writes into `--out` (default `quickstart-output/`): `test_images.svg` (those images with
//!    the predicted and the true label, mistakes in red), `cnn_training.svg` (loss and accuracy
//!    per epoch, two panels) and `gpt_training.svg` (the GPT's loss per step).

#[path = "common/args.rs"]
mod args;
#[path = "common/paths.rs"]
mod paths;

use args::{opt, switch, CliResult, Command, Flag};
use handgrad::data::{fashion_mnist, moby_dick, LmDataset};
use handgrad::describe::{CausalLm, Describer, SequentialClassifier};
use handgrad::generate::GenerateConfig;
use handgrad::model::small_cnn;
use handgrad::prelude::*;
use handgrad::tokenizer::{CharTokenizer, Tokenizer};
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use handgrad::viz::{image_grid_svg, line_chart_svg, training_curves_svg, Caption};
use ndarray::Axis;
use std::path::{Path, PathBuf};
use std::time::Instant;

const FLAGS: &[Flag] = &[
    switch(
        "--fast",
        "a few seconds instead of two minutes (also HANDGRAD_FAST=1)",
    ),
    opt(
        "--out",
        "DIR",
        "where the pictures go (default quickstart-output)",
    ),
];
const CMD: Command = Command {
    program: "quickstart",
    about: "See and describe: a CNN recognises Fashion-MNIST images, a character GPT trained on \
            Moby-Dick writes about them; writes the pictures of both trainings.",
    flags: FLAGS,
    positional: None,
};

/// Fashion-MNIST's classes, as words the Moby-Dick vocabulary can spell.
const NAMES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

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
    let fast = a.flag("--fast") || std::env::var_os("HANDGRAD_FAST").is_some();
    let out = a
        .path("--out")?
        .unwrap_or_else(|| PathBuf::from("quickstart-output"));
    paths::prepare_out_dir("--out", &out)?;
    let total = Instant::now();

    // 1. See: the seed CNN on Fashion-MNIST ---------------------------------------------
    println!("== 1. An image classifier (Keras-style CNN) on Fashion-MNIST");
    let all = fashion_mnist()?;
    let (train, test) = all.split(0.8, 0)?;
    let (train, epochs) = if fast {
        let idx: Vec<usize> = (0..1000).collect();
        let (x, y) = train.select(&idx)?;
        (Dataset::new(x, y)?, 1)
    } else {
        (train, 4)
    };
    let mut cnn = small_cnn(&[1, 28, 28], 10, &mut rng(0))?;
    println!("{}", cnn.summary());
    cnn.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )?;
    let start = Instant::now();
    let history = cnn.fit(
        &train,
        FitOptions::new()
            .epochs(epochs)
            .batch_size(64)
            .validation_data(&test),
    )?;
    let logs = cnn.evaluate(&test)?;
    println!(
        "test accuracy {:.1} % on {} images ({} training images, {epochs} epochs, {:.0} s)\n",
        100.0 * logs["accuracy"],
        test.len(),
        train.len(),
        start.elapsed().as_secs_f64()
    );

    // 2. Write: a character-level GPT on Moby-Dick ------------------------------------------
    println!("== 2. A character-level GPT on Moby-Dick");
    let text = moby_dick();
    let tok = CharTokenizer::from_text(text);
    let data = LmDataset::new(tok.encode(text)?, 128)?;
    let (lm_train, lm_val) = data.split(0.9)?;
    let mut gpt = Gpt::new(GptConfig::char_small(tok.vocab_size()), &mut rng(1337))?;
    let steps = if fast { 10 } else { 700 };
    let opts = LmTrainOptions {
        steps,
        batch_size: 16,
        lr: 2e-3,
        min_lr: Some(2e-4),
        warmup_steps: Some((steps / 10).min(50)),
        eval_interval: if fast { 5 } else { 100 },
        eval_windows: if fast { 4 } else { 32 },
        ..Default::default()
    };
    println!(
        "{} parameters, {steps} steps of 16×128 characters",
        gpt.num_params()
    );
    let lm = LmTrainer::new(opts)?.train(&mut gpt, &lm_train, Some(&lm_val))?;
    let prompt = "Hello, how are you?";
    let cfg = GenerateConfig::new()
        .max_length(50)
        .num_return_sequences(5)
        .do_sample(true)
        .top_k(20)
        .temperature(0.8)
        .seed(7);
    println!("\n5 continuations of {prompt:?}:");
    for (i, ids) in gpt.generate(&tok.encode(prompt)?, &cfg)?.iter().enumerate() {
        println!("  {}. {:?}", i + 1, tok.decode(ids)?);
    }

    // 3. See and describe ------------------------------------------------------------------
    println!("\n== 3. See and describe: the CNN recognises, the GPT writes");
    let mut describer = Describer::new(
        SequentialClassifier::new(cnn, &NAMES)?,
        CausalLm::new(gpt, tok)?,
    )?
    .template("Ishmael looked at the {class} and ")?;
    let picks: Vec<usize> = (0..8).map(|i| i * 97 % test.len()).collect();
    let mut captions = Vec::new();
    for &i in &picks {
        let image = test.inputs().index_axis(Axis(0), i).to_owned();
        let cfg = GenerateConfig::new()
            .max_new_tokens(60)
            .do_sample(true)
            .top_k(20)
            .temperature(0.8)
            .seed(i as u64);
        let d = describer.describe(&image, &cfg)?;
        let truth = NAMES[test.labels()[i]];
        println!(
            "image {i:>4}: the CNN sees: {} ({:.0} %; the label says: {truth})\n            the GPT writes: {:?}",
            d.best().name,
            100.0 * d.best().probability,
            d.text
        );
        captions.push(
            Caption::new(d.best().name.clone())
                .probability(d.best().probability)
                .truth(truth),
        );
    }

    // 4. Pictures --------------------------------------------------------------------------
    let (images, _) = test.select(&picks)?;
    write(
        &out.join("test_images.svg"),
        &image_grid_svg(&images, &captions, 4, 4)?,
    )?;
    let cnn_chart = training_curves_svg("CNN on Fashion-MNIST", &history);
    write(&out.join("cnn_training.svg"), &cnn_chart)?;
    let gpt_loss: Vec<(f32, f32)> = lm
        .loss
        .iter()
        .enumerate()
        .map(|(i, &l)| ((i + 1) as f32, l))
        .collect();
    let gpt_val: Vec<(f32, f32)> = lm.val_loss.iter().map(|&(s, l)| (s as f32, l)).collect();
    let gpt_chart = line_chart_svg(
        "char GPT on Moby-Dick",
        "step",
        "cross-entropy (nats per character)",
        &[("loss", gpt_loss), ("val_loss", gpt_val)],
    );
    write(&out.join("gpt_training.svg"), &gpt_chart)?;
    println!(
        "\nwrote {0}/test_images.svg (the images above, the CNN's label and the true one, \
         mistakes in red), \
         {0}/cnn_training.svg and {0}/gpt_training.svg (the training curves); open them in a \
         browser.\ntotal time {1:.0} s\n\nnext, the same on real pretrained models (a photo recognised by \
         EfficientNet-Lite0 and described by SmolLM2):\n  \
         export HANDGRAD_MODELS=\"$(scripts/fetch-models.sh | tail -1)\"\n  \
         cargo run --release --example describe",
        out.display(),
        total.elapsed().as_secs_f64()
    );
    Ok(())
}
