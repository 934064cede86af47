//! Losses against dense targets and metrics: golden (one-hot categorical CE = PyTorch's sparse
//! CE fixture), finite differences, hand-computed values, errors.

use crate::common;

use common::{grad_check, random_tensor, Fixture};
use handgrad::model::{Loss, Metric, Targets};
use handgrad::Tensor;
use ndarray::IxDyn;

fn labels_of(fx: &Fixture) -> Vec<usize> {
    fx.i64("labels").into_iter().map(|l| l as usize).collect()
}

#[test]
fn categorical_ce_with_one_hot_targets_matches_the_pytorch_fixture() {
    let fx = Fixture::load("softmax_cross_entropy");
    let logits = fx.f32("logits");
    let labels = labels_of(&fx);
    let mut onehot = Tensor::zeros(logits.raw_dim());
    for (i, &l) in labels.iter().enumerate() {
        onehot[[i, l]] = 1.0;
    }
    for targets in [Targets::Dense(&onehot), Targets::Labels(&labels)] {
        let (loss, grad) = Loss::CategoricalCrossentropy
            .forward_backward(&logits, targets)
            .unwrap();
        fx.check("loss", &Tensor::from_elem(IxDyn(&[]), loss));
        fx.check("grad.logits", &grad);
    }
}

fn loss_of(loss: Loss, out: &Tensor, t: &Tensor) -> f64 {
    loss.forward_backward(out, Targets::Dense(t)).unwrap().0 as f64
}

#[test]
fn dense_losses_match_finite_differences() {
    let out = random_tensor(&[4, 5], 1) * 3.0;
    let probs = {
        // Soft targets whose rows sum to 1, and rows that do not (PyTorch allows both).
        let mut t = random_tensor(&[4, 5], 2).mapv(|v| v.abs() + 0.1);
        for mut row in t.rows_mut().into_iter().take(3) {
            let s = row.sum();
            row /= s;
        }
        t
    };
    let flags = random_tensor(&[4, 5], 3).mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
    let values = random_tensor(&[4, 5], 4);
    for (loss, t) in [
        (Loss::CategoricalCrossentropy, &probs),
        (Loss::BinaryCrossentropyWithLogits, &flags),
        (Loss::MeanSquaredError, &values),
    ] {
        let (_, grad) = loss.forward_backward(&out, Targets::Dense(t)).unwrap();
        // f32 losses accumulated in f64: eps 1e-2 with a 1e-3 tolerance (truncation O(eps²)).
        grad_check(
            loss.name(),
            &out,
            &grad,
            |o| loss_of(loss, o, t),
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn dense_losses_match_hand_computed_values() {
    let out = Tensor::from_shape_vec(IxDyn(&[2, 2]), vec![0.5, -1.0, 30.0, -30.0]).unwrap();
    let t = Tensor::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    let (mse, _) = Loss::MeanSquaredError
        .forward_backward(&out, Targets::Dense(&t))
        .unwrap();
    let want = (0.25 + 1.0 + 900.0 + 31.0 * 31.0) / 4.0;
    assert!((mse as f64 - want).abs() < 1e-3, "{mse} vs {want}");
    let (bce, grad) = Loss::BinaryCrossentropyWithLogits
        .forward_backward(&out, Targets::Dense(&t))
        .unwrap();
    let sp = |z: f64| (1.0 + z.exp()).ln(); // softplus
    let want = (sp(-0.5) + sp(-1.0) + 30.0 + sp(-30.0) + 30.0 + sp(-30.0)) / 4.0;
    assert!(
        (bce as f64 - want).abs() < 1e-5,
        "{bce} vs {want} (stable at |z| = 30)"
    );
    assert!(grad.iter().all(|g| g.is_finite()));
    // Labels for a single-column output are 0/1 values.
    let col = Tensor::from_shape_vec(IxDyn(&[2, 1]), vec![2.0, -2.0]).unwrap();
    let (l, _) = Loss::BinaryCrossentropyWithLogits
        .forward_backward(&col, Targets::Labels(&[1, 0]))
        .unwrap();
    assert!((l as f64 - sp(-2.0)).abs() < 1e-6);
}

#[test]
fn loss_errors_name_the_shapes_and_labels() {
    let out = random_tensor(&[3, 4], 0);
    let msg = Loss::MeanSquaredError
        .forward_backward(&out, Targets::Dense(&random_tensor(&[3, 5], 0)))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[3, 4]") && msg.contains("[3, 5]"), "{msg}");
    let msg = Loss::CategoricalCrossentropy
        .forward_backward(&out, Targets::Labels(&[0, 1]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2 labels") && msg.contains('3'), "{msg}");
    let msg = Loss::CategoricalCrossentropy
        .forward_backward(&out, Targets::Labels(&[0, 1, 4]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("label 4") && msg.contains("4 classes"),
        "{msg}"
    );
    let msg = Loss::SparseCategoricalCrossentropy
        .forward_backward(&out, Targets::Dense(&out))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("integer labels"), "{msg}");
    let msg = Loss::CategoricalCrossentropy
        .forward_backward(&random_tensor(&[2, 3, 4], 0), Targets::Labels(&[0, 1]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[2, 3, 4]"), "{msg}");
}

#[test]
fn accuracy_and_top_k() {
    let out = Tensor::from_shape_vec(
        IxDyn(&[3, 4]),
        vec![
            0.1, 0.5, 0.3, 0.1, 0.9, 0.05, 0.03, 0.02, 0.2, 0.2, 0.5, 0.1,
        ],
    )
    .unwrap();
    let labels = [1, 2, 1];
    assert_eq!(
        Metric::Accuracy
            .count_correct(&out, &labels, false)
            .unwrap(),
        1
    );
    assert_eq!(
        Metric::TopKAccuracy(2)
            .count_correct(&out, &labels, false)
            .unwrap(),
        2
    );
    assert_eq!(
        Metric::TopKAccuracy(3)
            .count_correct(&out, &labels, false)
            .unwrap(),
        3
    );
    assert_eq!(Metric::TopKAccuracy(2).name(), "top_2_accuracy");
    assert!(Metric::TopKAccuracy(0)
        .count_correct(&out, &labels, false)
        .is_err());
    let col = Tensor::from_shape_vec(IxDyn(&[3, 1]), vec![0.7, 0.2, -0.1]).unwrap();
    assert_eq!(
        Metric::Accuracy
            .count_correct(&col, &[1, 0, 0], false)
            .unwrap(),
        3
    );
    assert_eq!(
        Metric::Accuracy
            .count_correct(&col, &[1, 1, 0], true)
            .unwrap(),
        3
    );
    let msg = Metric::Accuracy
        .count_correct(&out, &[0], false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1 labels") && msg.contains('3'), "{msg}");
}
