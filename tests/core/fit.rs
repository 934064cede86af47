//! Keras-style training API: compile / fit / evaluate / predict, History, callbacks, weights I/O.

use crate::common;

use handgrad::data::digits;
use handgrad::prelude::*;
use std::cell::Cell;

fn model(seed: u64) -> Sequential {
    let mut rng = handgrad::init::rng(seed);
    Sequential::new(&[64])
        .add(Dense::new(32).relu())
        .add(Dense::new(10).softmax())
        .build(&mut rng)
        .unwrap()
}

fn data() -> (Dataset, Dataset) {
    digits().unwrap().split(0.8, 1).unwrap()
}

fn quiet() -> FitOptions<'static> {
    FitOptions::new().verbose(Verbose::Silent)
}

#[test]
fn fit_requires_compile_and_valid_options() {
    let (train, _) = data();
    let mut m = model(0);
    let msg = m.fit(&train, quiet()).unwrap_err().to_string();
    assert!(msg.contains("compile"), "{msg}");
    m.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    let msg = m.fit(&train, quiet().epochs(0)).unwrap_err().to_string();
    assert!(msg.contains("epochs") && msg.contains('0'), "{msg}");
    let msg = m
        .fit(&train, quiet().batch_size(0))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("batch_size"), "{msg}");
    let msg = m
        .fit(&train, quiet().validation_split(1.5))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("validation_split") && msg.contains("1.5"),
        "{msg}"
    );
    let msg = m
        .compile(Adam::new(-1.0), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lr") && msg.contains("-1"), "{msg}");
}

#[test]
fn fit_records_history_and_learns() {
    let (train, test) = data();
    let mut m = model(0);
    m.compile(
        Adam::new(2e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy, Metric::TopKAccuracy(3)],
    )
    .unwrap();
    let h = m
        .fit(
            &train,
            quiet().epochs(5).batch_size(32).validation_data(&test),
        )
        .unwrap();
    assert_eq!(h.epochs(), 5);
    for key in [
        "loss",
        "accuracy",
        "top_3_accuracy",
        "val_loss",
        "val_accuracy",
        "val_top_3_accuracy",
        "lr",
    ] {
        assert_eq!(h.get(key).map(|v| v.len()), Some(5), "{key}");
    }
    assert!(
        h.loss()[4] < h.loss()[0],
        "loss should fall: {:?}",
        h.loss()
    );
    assert!(h.val_accuracy()[4] > 0.85, "{:?}", h.val_accuracy());
    let top3 = h.get("val_top_3_accuracy").unwrap();
    assert!(top3[4] >= h.val_accuracy()[4]);
    let logs = m.evaluate(&test).unwrap();
    assert!((logs["accuracy"] - h.val_accuracy()[4]).abs() < 1e-6);
    assert!((logs["loss"] - h.val_loss()[4]).abs() < 1e-5);
}

#[test]
fn fit_is_reproducible_and_seeded() {
    let (train, _) = data();
    let run = |seed: u64| {
        let mut m = model(3);
        m.compile(
            Sgd::new(0.05).momentum(0.9),
            Loss::SparseCategoricalCrossentropy,
            &[],
        )
        .unwrap();
        m.fit(&train, quiet().epochs(2).seed(seed)).unwrap();
        m.state_dict()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn validation_split_holds_out_the_last_samples() {
    let (train, _) = data();
    let mut m = model(0);
    m.compile(
        Adam::new(1e-3),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    let h = m
        .fit(&train, quiet().epochs(1).validation_split(0.25))
        .unwrap();
    // The held-out part is the last quarter, evaluated as val_*.
    let n = train.len();
    let idx: Vec<usize> = (n - (n as f32 * 0.25).round() as usize..n).collect();
    let (x, y) = train.select(&idx).unwrap();
    let (loss, acc) = m.evaluate_batch(&x, &y).unwrap();
    assert!((h.val_loss()[0] - loss).abs() < 1e-5);
    assert!((h.val_accuracy()[0] - acc).abs() < 1e-6);
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let (train, test) = data();
    let mut m = model(0);
    // A learning rate far too large makes the validation loss worse after the first epochs.
    m.compile(
        Sgd::new(3.0),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    let best: Cell<Option<(f32, usize)>> = Cell::new(None);
    let snapshot = std::cell::RefCell::new(Vec::new());
    let h = m
        .fit(
            &train,
            quiet()
                .epochs(30)
                .validation_data(&test)
                .callback(LambdaCallback(
                    |epoch: usize, logs: &handgrad::model::Logs, model: &mut Sequential| {
                        let v = logs["val_loss"];
                        if best.get().is_none_or(|(b, _)| v < b) {
                            best.set(Some((v, epoch)));
                            *snapshot.borrow_mut() = vec![model.state_dict()];
                        }
                        Ok(Control::Continue)
                    },
                ))
                .callback(EarlyStopping::new().patience(2).restore_best_weights(true)),
        )
        .unwrap();
    let (best_loss, best_epoch) = best.get().unwrap();
    assert!(
        h.epochs() < 30,
        "early stopping never triggered: {:?}",
        h.val_loss()
    );
    assert_eq!(
        h.epochs(),
        best_epoch + 3,
        "stops patience+1 epochs after the best"
    );
    assert_eq!(
        m.state_dict(),
        snapshot.borrow()[0],
        "best weights restored"
    );
    let logs = m.evaluate(&test).unwrap();
    assert!((logs["loss"] - best_loss).abs() < 1e-5);
}

#[test]
fn reduce_lr_on_plateau_lowers_the_learning_rate() {
    let (train, _) = data();
    let mut m = model(0);
    m.compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    // Monitoring "lr" (which never improves while constant) forces a reduction every 2 epochs.
    let h = m
        .fit(
            &train,
            quiet().epochs(5).callback(
                ReduceLROnPlateau::new()
                    .monitor("lr")
                    .patience(2)
                    .factor(0.5)
                    .min_delta(0.0),
            ),
        )
        .unwrap();
    let lr = h.get("lr").unwrap();
    assert_eq!(lr.len(), 5);
    // "lr" is maximised (auto mode): epoch 0 sets the best, epochs 1 and 2 do not improve, so
    // the rate is halved after epoch 2 and again after epoch 4.
    assert_eq!(lr, [0.1, 0.1, 0.1, 0.05, 0.05], "{lr:?}");
    assert!((m.optimizer_mut().unwrap().learning_rate() - 0.025).abs() < 1e-9);
    let msg = m
        .fit(
            &train,
            quiet().callback(ReduceLROnPlateau::new().monitor("val_nothing")),
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("val_nothing") && msg.contains("loss"), "{msg}");
}

#[test]
fn lambda_callback_can_stop_training() {
    let (train, _) = data();
    let mut m = model(0);
    m.compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let h = m
        .fit(
            &train,
            quiet().epochs(10).callback(LambdaCallback(
                |epoch: usize, _: &handgrad::model::Logs, _: &mut Sequential| {
                    Ok(if epoch == 2 {
                        Control::Stop
                    } else {
                        Control::Continue
                    })
                },
            )),
        )
        .unwrap();
    assert_eq!(h.epochs(), 3);
}

#[test]
fn a_non_finite_loss_stops_fit_with_an_error() {
    let (train, _) = data();
    let mut x = train.inputs().clone();
    x[[5, 3]] = f32::NAN;
    let bad = Dataset::new(x, train.labels().to_vec()).unwrap();
    let mut m = model(0);
    m.compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let before = m.state_dict();
    let msg = m
        .fit(&bad, quiet().shuffle(false).batch_size(16))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("NaN") && msg.contains("epoch 1 batch 1"),
        "{msg}"
    );
    assert_eq!(
        m.state_dict(),
        before,
        "the failing step must not update the weights"
    );
}

#[test]
fn predict_batched_matches_predict_and_gives_probabilities() {
    let (_, test) = data();
    let mut m = model(5);
    let all = m.predict(test.inputs()).unwrap();
    let batched = m.predict_batched(test.inputs(), 17).unwrap();
    assert_eq!(all.shape(), &[test.len(), 10]);
    common::assert_close(&batched, &all, 1e-6, 1e-5, "predict_batched");
    for row in all.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
    assert!(m.predict_batched(test.inputs(), 0).is_err());
}

#[test]
fn evaluate_rejects_empty_and_mismatched_data() {
    let mut m = model(0);
    let empty = Dataset::new(Tensor::zeros(ndarray::IxDyn(&[0, 64])), vec![]).unwrap();
    let msg = m.evaluate(&empty).unwrap_err().to_string();
    assert!(
        msg.contains("non-empty") && msg.contains("[0, 64]"),
        "{msg}"
    );
    let wrong = Dataset::new(Tensor::zeros(ndarray::IxDyn(&[3, 63])), vec![0, 1, 2]).unwrap();
    let msg = m.evaluate(&wrong).unwrap_err().to_string();
    assert!(msg.contains("(N, 64)") && msg.contains("[3, 63]"), "{msg}");
    let msg = Dataset::new(Tensor::zeros(ndarray::IxDyn(&[3, 64])), vec![0, 1])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2 labels for 3 samples"), "{msg}");
    let bad_label = Dataset::new(Tensor::zeros(ndarray::IxDyn(&[2, 64])), vec![0, 10]).unwrap();
    let msg = m.evaluate(&bad_label).unwrap_err().to_string();
    assert!(msg.contains("10"), "{msg}");
}

#[test]
fn weights_round_trip_through_safetensors_and_load_is_strict() {
    let dir = std::env::temp_dir().join(format!("handgrad-fit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weights.safetensors");
    let a = model(1);
    a.save_weights(&path).unwrap();
    let mut b = model(2);
    assert_ne!(a.state_dict(), b.state_dict());
    b.load_weights(&path).unwrap();
    assert_eq!(a.state_dict(), b.state_dict());
    let names: Vec<String> = a.state_dict().keys().cloned().collect();
    assert_eq!(names, ["0.bias", "0.weight", "2.bias", "2.weight"]);

    // A model of another shape: the error names the tensor and both shapes.
    let mut rng = handgrad::init::rng(0);
    let mut c = Sequential::new(&[64])
        .add(Dense::new(16).relu())
        .add(Dense::new(10))
        .build(&mut rng)
        .unwrap();
    let msg = c.load_weights(&path).unwrap_err().to_string();
    assert!(
        msg.contains("0.bias") && msg.contains("[32]") && msg.contains("[16]"),
        "{msg}"
    );
    // Missing file and corrupt file.
    let msg = c
        .load_weights(dir.join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.safetensors"), "{msg}");
    std::fs::write(
        dir.join("bad.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    let msg = c
        .load_weights(dir.join("bad.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad.safetensors"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}
