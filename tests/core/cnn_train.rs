//! Training smoke tests of the seed CNN on the embedded Fashion-MNIST.

use handgrad::data::fashion_mnist;
use handgrad::prelude::*;

fn seed_cnn(seed: u64) -> Sequential {
    handgrad::model::small_cnn(&[1, 28, 28], 10, &mut handgrad::init::rng(seed)).unwrap()
}

#[test]
fn seed_cnn_reaches_85_percent_on_fashion_mnist() {
    let (train, test) = fashion_mnist().unwrap().split(0.8, 0).unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    let mut model = seed_cnn(0);
    model
        .compile(
            Adam::new(1e-3),
            Loss::SparseCategoricalCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
    let history = model
        .fit(
            &train,
            FitOptions::new()
                .epochs(6)
                .batch_size(32)
                .verbose(Verbose::Silent),
        )
        .unwrap();
    let logs = model.evaluate(&test).unwrap();
    assert!(
        logs["accuracy"] >= 0.85,
        "test accuracy {} (train loss per epoch {:?})",
        logs["accuracy"],
        history.loss()
    );
}

#[test]
fn cnn_training_is_bit_identical_on_1_and_2_threads() {
    let data = fashion_mnist().unwrap();
    let idx: Vec<usize> = (0..256).collect();
    let (x, y) = data.select(&idx).unwrap();
    let small = Dataset::new(x, y).unwrap();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut model = seed_cnn(3);
                model
                    .compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
                    .unwrap();
                model
                    .fit(
                        &small,
                        FitOptions::new()
                            .epochs(1)
                            .batch_size(64)
                            .verbose(Verbose::Silent),
                    )
                    .unwrap();
                model.state_dict()
            })
    };
    let one = run(1);
    let two = run(2);
    for (name, t) in &one {
        assert!(*t == two[name], "{name} differs between 1 and 2 threads");
    }
}
