//! Sequential checkpoints: N epochs, save, load into a fresh model and optimizer, `fit` with
//! `initial_epoch(N)` → bit-identical to N + M epochs straight (a CNN with dropout and Adam,
//! with augmentation), on 1 and 2 threads; ModelCheckpoint; architecture and optimizer checks;
//! non-finite gradients stop training naming the parameter.

use handgrad::data::{digits, Augment, Dataset};
use handgrad::layers::{Conv2d, Flatten, MaxPool2d};
use handgrad::model::ModelCheckpoint;
use handgrad::prelude::*;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("handgrad-seqck-{}-{name}", std::process::id()))
}

/// 300 digits as 1×8×8 images.
fn data() -> Dataset {
    let d = digits().unwrap();
    let idx: Vec<usize> = (0..300).collect();
    let (x, y) = d.select(&idx).unwrap();
    let x = x
        .into_shape_with_order(ndarray::IxDyn(&[300, 1, 8, 8]))
        .unwrap()
        / 16.0;
    Dataset::new(x, y).unwrap()
}

fn model() -> Sequential {
    let mut m = Sequential::new(&[1, 8, 8])
        .add(Conv2d::new(4, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(10).softmax())
        .build(&mut rng(4))
        .unwrap();
    m.compile(
        Adam::new(3e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn opts(epochs: usize) -> FitOptions<'static> {
    FitOptions::new()
        .epochs(epochs)
        .batch_size(32)
        .verbose(Verbose::Silent)
        .augment(Augment::new().random_crop(1))
}

#[test]
fn resume_after_a_checkpoint_is_bit_identical_on_1_and_2_threads() {
    let train = data();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut straight = model();
            straight.fit(&train, opts(4)).unwrap();

            let path = tmp(&format!("resume-{threads}"));
            let mut first = model();
            first.fit(&train, opts(4).epochs(2)).unwrap();
            first.save_checkpoint(&path, 2).unwrap();
            drop(first);
            let mut second = model(); // fresh weights and a fresh optimizer
            let done = second.load_checkpoint(&path).unwrap();
            assert_eq!(done, 2);
            second.fit(&train, opts(4).initial_epoch(done)).unwrap();
            assert_eq!(
                straight.state_dict(),
                second.state_dict(),
                "{threads} thread(s)"
            );
            std::fs::remove_file(&path).unwrap();
        });
    }
}

#[test]
fn model_checkpoint_saves_every_epoch_or_the_best_only() {
    let train = data();
    let (path_all, path_best) = (tmp("every"), tmp("best"));
    let mut m = model();
    m.fit(
        &train,
        opts(3)
            .validation_split(0.2)
            .callback(ModelCheckpoint::new(&path_all))
            .callback(
                ModelCheckpoint::new(&path_best)
                    .monitor("val_loss")
                    .save_best_only(true),
            ),
    )
    .unwrap();
    let mut back = model();
    assert_eq!(back.load_checkpoint(&path_all).unwrap(), 3);
    assert_eq!(back.state_dict(), m.state_dict());
    let mut best = model();
    let epoch = best.load_checkpoint(&path_best).unwrap();
    assert!((1..=3).contains(&epoch));
    // an unknown monitor is an error naming the logged values
    let e = model()
        .fit(
            &train,
            opts(1).callback(
                ModelCheckpoint::new(tmp("x"))
                    .monitor("val_acc")
                    .save_best_only(true),
            ),
        )
        .unwrap_err();
    assert!(e.to_string().contains("val_acc"), "{e}");
    std::fs::remove_file(&path_all).unwrap();
    std::fs::remove_file(&path_best).unwrap();
}

#[test]
fn another_architecture_optimizer_or_kind_is_refused() {
    let path = tmp("arch");
    let m = model();
    m.save_checkpoint(&path, 0).unwrap();
    let mut other = Sequential::new(&[1, 8, 8])
        .add(Flatten::new())
        .add(Dense::new(10).softmax())
        .build(&mut rng(0))
        .unwrap();
    other
        .compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let e = other.load_checkpoint(&path).unwrap_err().to_string();
    assert!(e.contains("another architecture"), "{e}");
    let mut sgd = model();
    sgd.compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let e = sgd.load_checkpoint(&path).unwrap_err().to_string();
    assert!(e.contains("Adam") && e.contains("SGD"), "{e}");
    std::fs::remove_file(&path).unwrap();
    assert!(model().fit(&data(), opts(2).initial_epoch(2)).is_err());
}

#[test]
fn non_finite_losses_and_gradients_stop_training_with_the_step_and_parameter() {
    // a NaN input pixel: the loss of the first batch is NaN → fit stops before any update
    let mut m = model();
    let before = m.state_dict();
    let (mut x, y) = data().into_parts();
    x[[0, 0, 3, 3]] = f32::NAN;
    let train = Dataset::new(x, y).unwrap();
    let e = m
        .fit(&train, opts(1).augment(Augment::new()).batch_size(300))
        .unwrap_err()
        .to_string();
    assert!(
        e.to_lowercase().contains("nan") && e.contains("epoch 1 batch 1"),
        "{e}"
    );
    assert_eq!(m.state_dict(), before, "no update after a non-finite loss");
    // a finite loss with a non-finite gradient: the guard names the parameter and the step
    let mut m = model();
    m.zero_grad();
    let mut params = m.params_mut();
    params[1].1.grad[[3]] = f32::INFINITY;
    let e = handgrad::optim::check_grads_finite(&params, "at epoch 2 batch 7").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&params[1].0) && msg.contains("at epoch 2 batch 7"),
        "{msg}"
    );
}

#[test]
fn gpt_training_stops_on_a_non_finite_loss_naming_the_step() {
    use handgrad::data::LmDataset;
    use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
    let mut gpt = Gpt::new(GptConfig::new(5, 8, 1, 2, 8), &mut rng(0)).unwrap();
    for (name, p) in gpt.params_mut() {
        if name == "h.0.mlp.c_fc.weight" {
            p.value[[0, 0]] = f32::NAN;
        }
    }
    let data = LmDataset::new((0..100).map(|i| i % 5).collect(), 8).unwrap();
    let opts = LmTrainOptions {
        steps: 3,
        warmup_steps: Some(1),
        verbose: false,
        ..Default::default()
    };
    let e = LmTrainer::new(opts)
        .unwrap()
        .train(&mut gpt, &data, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("step 1"), "{e}");
}
