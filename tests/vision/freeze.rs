//! Frozen parameters: untouched by fit with Adam / AdamW / SGD-momentum (and weight decay)
//! while the rest trains; counts in summary; name-prefix and layer-range selection; errors;
//! checkpoints keep the flags; BatchNorm of a frozen layer follows PyTorch (mode decides).

use crate::common::random_tensor;
use handgrad::data::{digits, Dataset};
use handgrad::layers::{BatchNorm2d, Conv2d, Flatten};
use handgrad::optim::clip_grad_norm;
use handgrad::prelude::*;

fn model(seed: u64) -> Sequential {
    Sequential::new(&[64])
        .add(Dense::new(16).relu())
        .add(Dense::new(16).relu())
        .add(Dense::new(10).softmax())
        .build(&mut handgrad::init::rng(seed))
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

fn snapshot(m: &Sequential) -> Vec<(String, Vec<u32>)> {
    m.params()
        .into_iter()
        .map(|(n, p)| (n, bits(&p.value)))
        .collect()
}

fn train_data() -> Dataset {
    digits().unwrap().split(0.1, 3).unwrap().0
}

#[test]
fn frozen_parameters_stay_bit_identical_under_every_optimizer() {
    let data = train_data();
    type Compile = Box<dyn Fn(&mut Sequential)>;
    let opts: Vec<(&str, Compile)> = vec![
        (
            "Adam+L2",
            Box::new(|m| {
                m.compile(
                    Adam::new(1e-2).weight_decay(1e-2),
                    Loss::SparseCategoricalCrossentropy,
                    &[],
                )
                .unwrap();
            }),
        ),
        (
            "AdamW",
            Box::new(|m| {
                m.compile(AdamW::new(1e-2), Loss::SparseCategoricalCrossentropy, &[])
                    .unwrap();
            }),
        ),
        (
            "SGD momentum",
            Box::new(|m| {
                m.compile(
                    Sgd::new(0.05).momentum(0.9).weight_decay(1e-3),
                    Loss::SparseCategoricalCrossentropy,
                    &[],
                )
                .unwrap();
            }),
        ),
    ];
    for (name, compile) in opts {
        let mut m = model(1);
        compile(&mut m);
        assert_eq!(m.freeze("0").unwrap(), 2, "{name}");
        assert_eq!(m.freeze("2.bias").unwrap(), 1, "{name}");
        let before = snapshot(&m);
        let h = m
            .fit(
                &data,
                FitOptions::new()
                    .epochs(2)
                    .batch_size(32)
                    .verbose(Verbose::Silent),
            )
            .unwrap();
        assert!(h.loss()[1] < h.loss()[0], "{name}: {:?}", h.loss());
        for ((n, b), (_, a)) in before.iter().zip(snapshot(&m)) {
            let frozen = n.starts_with("0.") || n == "2.bias";
            assert_eq!(
                b == &a,
                frozen,
                "{name}: {n} frozen = {frozen} but changed = {}",
                b != &a
            );
        }
        // no optimizer state was created for a frozen parameter
        let state = m.optimizer_mut().unwrap().state();
        assert!(
            state
                .keys()
                .all(|k| !k.starts_with("0.") && !k.starts_with("2.bias.")),
            "{name}: {:?}",
            state.keys()
        );
        assert!(state.keys().any(|k| k.starts_with("2.weight.")), "{name}");
    }
}

#[test]
fn unfreezing_resumes_training() {
    let data = train_data();
    let mut m = model(2);
    m.compile(Adam::new(1e-2), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    m.freeze("").unwrap();
    let before = snapshot(&m);
    m.fit(&data, FitOptions::new().verbose(Verbose::Silent))
        .unwrap();
    assert_eq!(before, snapshot(&m), "everything frozen: nothing moves");
    assert_eq!(m.unfreeze("4").unwrap(), 2);
    m.fit(&data, FitOptions::new().verbose(Verbose::Silent))
        .unwrap();
    let after = snapshot(&m);
    for ((n, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b == a, !n.starts_with("4."), "{n}");
    }
}

#[test]
fn summary_and_counts_report_trainable_and_frozen() {
    let mut m = model(0);
    let total = 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10;
    assert_eq!(m.param_count(), total);
    assert_eq!(m.trainable_param_count(), total);
    assert!(
        m.summary().contains("Non-trainable params: 0\n"),
        "{}",
        m.summary()
    );
    assert_eq!(m.freeze_layers(..2).unwrap(), 2); // layer 0 (Dense) and 1 (ReLU)
    assert_eq!(m.non_trainable_param_count(), 64 * 16 + 16);
    assert_eq!(m.trainable_param_count(), total - 1040);
    let s = m.summary();
    assert!(s.contains("Total params: 1,482\n"), "{s}");
    assert!(s.contains("Trainable params: 442\n"), "{s}");
    assert!(s.contains("Non-trainable params: 1,040\n"), "{s}");
    assert_eq!(m.frozen_params(), vec!["0.weight", "0.bias"]);
    assert!(!m.layers()[0].is_trainable() && m.layers()[2].is_trainable());
    assert_eq!(m.unfreeze_layers(0..=0).unwrap(), 2);
    assert!(m.frozen_params().is_empty());
    // Layer-level, as Keras `layer.trainable = False`
    m.layers_mut()[4].set_trainable(false);
    assert_eq!(m.frozen_params(), vec!["4.weight", "4.bias"]);
}

#[test]
fn selection_errors_name_what_was_asked() {
    let mut deep = Sequential::new(&[4]);
    for _ in 0..6 {
        deep = deep.add(Dense::new(4).relu());
    }
    let mut deep = deep.build(&mut handgrad::init::rng(0)).unwrap();
    // "1" is the ReLU at index 1: it must not match "10.weight"
    let err = deep.freeze("1").unwrap_err().to_string();
    assert!(err.contains("\"1\"") && err.contains("10.weight"), "{err}");
    assert_eq!(deep.freeze("10").unwrap(), 2);
    assert_eq!(deep.frozen_params(), vec!["10.weight", "10.bias"]);
    let err = deep.freeze_layers(3..20).unwrap_err().to_string();
    assert!(err.contains("3..20") && err.contains("0..12"), "{err}");
    let unbuilt = Sequential::new(&[4]).add(Dense::new(2));
    let mut unbuilt = unbuilt;
    let err = unbuilt.freeze("0").unwrap_err().to_string();
    assert!(err.contains("build"), "{err}");
}

#[test]
fn checkpoints_keep_the_frozen_flags() {
    let mut m = model(4);
    m.compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    m.freeze("2").unwrap();
    let path = std::env::temp_dir().join(format!("handgrad-freeze-{}.ckpt", std::process::id()));
    m.save_checkpoint(&path, 1).unwrap();
    let mut n = model(5);
    n.compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    n.freeze("0").unwrap();
    assert_eq!(n.load_checkpoint(&path).unwrap(), 1);
    assert_eq!(n.frozen_params(), vec!["2.weight", "2.bias"]);
    assert_eq!(snapshot(&m), snapshot(&n));
}

#[test]
fn clipping_and_direct_optimizer_steps_skip_frozen_parameters() {
    let mut a = Param::new(random_tensor(&[3], 1));
    let mut b = Param::new(random_tensor(&[4], 2));
    a.grad = Tensor::from_elem(ndarray::IxDyn(&[3]), 100.0);
    b.grad = Tensor::from_shape_vec(vec![4], vec![3.0, 4.0, 0.0, 0.0]).unwrap();
    a.set_requires_grad(false);
    let norm = clip_grad_norm(&mut [("a".into(), &mut a), ("b".into(), &mut b)], 10.0).unwrap();
    assert_eq!(norm, 5.0, "the frozen gradient is not part of the norm");
    let value = a.value.clone();
    let mut opt = AdamW::new(0.1);
    opt.step(&mut [("a".into(), &mut a), ("b".into(), &mut b)])
        .unwrap();
    assert_eq!(bits(&a.value), bits(&value));
    assert!(opt.state().keys().all(|k| k.starts_with("b.")));
}

#[test]
fn batch_norm_of_a_frozen_layer_still_follows_the_mode() {
    // PyTorch semantics: requires_grad=False stops weight/bias updates; train mode still
    // normalises with batch statistics and updates the running statistics.
    let mut m = Sequential::new(&[1, 6, 6])
        // no conv bias: a bias before BatchNorm gets an exactly zero gradient in train mode
        .add(Conv2d::new(2, 3).with_bias(false))
        .add(BatchNorm2d::new())
        .add(Flatten::new())
        .add(Dense::new(2).softmax())
        .build(&mut handgrad::init::rng(0))
        .unwrap();
    m.compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    assert_eq!(m.freeze("1").unwrap(), 2);
    let x = random_tensor(&[8, 1, 6, 6], 3);
    let data = Dataset::new(x, vec![0, 1, 0, 1, 1, 0, 0, 1]).unwrap();
    let before = snapshot(&m);
    let mean_before = m.state_dict()["1.running_mean"].clone();
    m.fit(
        &data,
        FitOptions::new()
            .epochs(2)
            .batch_size(4)
            .verbose(Verbose::Silent),
    )
    .unwrap();
    let after = snapshot(&m);
    for ((n, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b == a, n.starts_with("1."), "{n}");
    }
    assert_ne!(bits(&m.state_dict()["1.running_mean"]), bits(&mean_before));
}
