//! Sequential of dense layers: names, summary, shape errors, fused softmax + CE, and training on
//! the embedded UCI digits to > 95 % test accuracy.

use crate::common;

use common::{grad_check, random_tensor};
use handgrad::data::digits;
use handgrad::prelude::*;

fn mlp(seed: u64, softmax: bool) -> Sequential {
    let mut rng = handgrad::init::rng(seed);
    let mut m = Sequential::new(&[6])
        .add(Dense::new(8).relu())
        .add(Dense::new(8).tanh());
    m = if softmax {
        m.add(Dense::new(4).softmax())
    } else {
        m.add(Dense::new(4))
    };
    m.build(&mut rng).unwrap()
}

#[test]
fn parameter_names_follow_nn_sequential_indices() {
    let m = mlp(0, true);
    let names: Vec<String> = m.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    );
    assert_eq!(m.param_count(), 6 * 8 + 8 + 8 * 8 + 8 + 8 * 4 + 4);
    assert_eq!(m.output_shape(), &[4]);
}

#[test]
fn summary_lists_layers_shapes_and_totals() {
    let m = mlp(0, true);
    let s = m.summary();
    assert!(s.contains("0 Dense(in=6, out=8)"), "{s}");
    assert!(s.contains("(None, 8)") && s.contains("(None, 4)"), "{s}");
    assert!(s.contains("5 Softmax"), "{s}");
    assert!(s.contains("Total params: 164"), "{s}");
}

#[test]
fn trailing_softmax_is_fused_with_the_cross_entropy() {
    // Same seed → same weights; with a trailing Softmax the loss must equal the logits model's.
    let x = random_tensor(&[5, 6], 4) * 40.0; // large inputs → large logits
    let labels = [0, 1, 2, 3, 1];
    let mut a = mlp(11, true);
    let mut b = mlp(11, false);
    let la = a
        .loss_backward(&x, &labels, Loss::SparseCategoricalCrossentropy)
        .unwrap();
    let lb = b
        .loss_backward(&x, &labels, Loss::SparseCategoricalCrossentropy)
        .unwrap();
    assert!(la.is_finite());
    assert_eq!(la, lb);
    for ((_, pa), (_, pb)) in a.params().iter().zip(b.params().iter()) {
        assert_eq!(pa.grad, pb.grad);
    }
    // predict gives probabilities.
    let p = a.predict(&x).unwrap();
    for row in p.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    let x = random_tensor(&[3, 6], 5);
    let labels = [2, 0, 3];
    let mut m = mlp(2, true);
    m.zero_grad();
    m.loss_backward(&x, &labels, Loss::SparseCategoricalCrossentropy)
        .unwrap();
    let snapshot: Vec<(String, Param)> = m
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.clone()))
        .collect();
    for (i, (name, p)) in snapshot.iter().enumerate() {
        let loss = |v: &Tensor| {
            let mut probe = mlp(2, true);
            *probe.params_mut()[i].1 = Param::new(v.clone());
            let (l, _) = probe.evaluate_batch(&x, &labels).unwrap();
            l as f64
        };
        // f32 losses: eps 1e-2 and a 2e-2 relative tolerance (ReLU kinks are far from these
        // random inputs at this scale; tanh curvature gives O(eps²) truncation).
        grad_check(name, &p.value, &p.grad, loss, 1e-2, 2e-2);
    }
}

#[test]
fn shape_and_label_errors_are_reported() {
    let mut m = mlp(0, false);
    let msg = m
        .predict(&random_tensor(&[2, 5], 0))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(B, 6)") && msg.contains("[2, 5]"), "{msg}");
    let msg = m
        .loss_backward(
            &random_tensor(&[3, 6], 0),
            &[0, 1],
            Loss::SparseCategoricalCrossentropy,
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains('2') && msg.contains('3'), "{msg}");
    let msg = m
        .loss_backward(
            &random_tensor(&[2, 6], 0),
            &[0, 4],
            Loss::SparseCategoricalCrossentropy,
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains('4'), "{msg}");
    let mut rng = handgrad::init::rng(0);
    let msg = Sequential::new(&[6])
        .build(&mut rng)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("no layers"), "{msg}");
}

#[test]
fn mlp_learns_uci_digits_above_95_percent() {
    let (train, test) = digits().unwrap().split(0.8, 0).unwrap();
    assert_eq!((train.len(), test.len()), (1438, 359));
    let mut rng = handgrad::init::rng(0);
    let mut model = Sequential::new(&[64])
        .add(Dense::new(128).relu())
        .add(Dense::new(10))
        .build(&mut rng)
        .unwrap();
    let mut opt = Adam::new(1e-3);
    for _ in 0..30 {
        for (x, y) in train.batches(32, Some(&mut rng)).unwrap() {
            model.train_step(&x, &y, &mut opt).unwrap();
        }
    }
    let (loss, acc) = model.evaluate_batch(test.inputs(), test.labels()).unwrap();
    assert!(acc > 0.95, "test accuracy {acc} (loss {loss})");
}
