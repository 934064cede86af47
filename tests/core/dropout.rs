//! `Dropout`: eval identity, drop rate, inverted scaling, p = 0 / p = 1, seeding, determinism
//! across rayon thread counts, and validation of `p`.

use crate::common;

use common::random_tensor;
use handgrad::layers::Dropout;
use handgrad::{Error, Layer, Mode, Tensor};
use ndarray::IxDyn;

/// A large input with no zero entries (values in [1, 3)), so a zero output means "dropped".
/// 200 000 elements: above the parallel threshold, so the chunked draw is exercised.
fn big_input() -> Tensor {
    random_tensor(&[40, 5000], 1) + 2.0
}

/// The drop mask of one Train forward (true = dropped).
fn mask_of(layer: &mut Dropout, x: &Tensor) -> Vec<bool> {
    layer
        .forward(x, Mode::Train)
        .unwrap()
        .iter()
        .map(|&v| v == 0.0)
        .collect()
}

#[test]
fn eval_mode_is_the_identity() {
    let x = big_input();
    let mut layer = Dropout::with_seed(0.5, 1);
    let y = layer.forward(&x, Mode::Eval).unwrap();
    assert_eq!(y, x);
}

#[test]
fn train_mode_drops_about_p_and_scales_the_rest_exactly() {
    let x = big_input();
    for &p in &[0.1f32, 0.5, 0.8] {
        let mut layer = Dropout::with_seed(p, 2);
        let y = layer.forward(&x, Mode::Train).unwrap();
        let scale = 1.0f32 / (1.0 - p);
        let mut dropped = 0usize;
        for (&y, &x) in y.iter().zip(&x) {
            if y == 0.0 {
                dropped += 1;
            } else {
                assert_eq!(
                    y,
                    x * scale,
                    "kept entries are scaled by exactly 1/(1-p), p = {p}"
                );
            }
        }
        // Dropped count ~ Binomial(n, p): mean n·p, sd √(n·p·(1−p)) ≤ 224 for n = 200 000.
        // A 6-sd bound fails by chance with probability < 2e-9.
        let n = x.len() as f64;
        let sd = (n * p as f64 * (1.0 - p as f64)).sqrt();
        let diff = (dropped as f64 - n * p as f64).abs();
        assert!(
            diff <= 6.0 * sd,
            "p = {p}: dropped {dropped} of {n}, expected {} ± {}",
            n * p as f64,
            6.0 * sd
        );
    }
}

#[test]
fn p_zero_is_the_identity_in_train_mode_and_backward_passes_through() {
    let x = big_input();
    let mut layer = Dropout::with_seed(0.0, 3);
    assert_eq!(layer.forward(&x, Mode::Train).unwrap(), x);
    let g = random_tensor(x.shape(), 4);
    assert_eq!(layer.backward(&g).unwrap(), g);
}

#[test]
fn p_one_zeroes_everything_without_nan() {
    let x = big_input();
    let mut layer = Dropout::with_seed(1.0, 3);
    let y = layer.forward(&x, Mode::Train).unwrap();
    assert!(y.iter().all(|&v| v == 0.0));
    let dx = layer.backward(&x).unwrap();
    assert!(dx.iter().all(|&v| v == 0.0));
}

#[test]
fn same_seed_gives_identical_masks_and_the_stream_advances() {
    let x = big_input();
    let (mut a, mut b) = (Dropout::with_seed(0.3, 77), Dropout::with_seed(0.3, 77));
    let first = mask_of(&mut a, &x);
    assert_eq!(first, mask_of(&mut b, &x));
    // The next forward continues the stream: a new mask, again the same for both layers.
    let second = mask_of(&mut a, &x);
    assert_ne!(first, second);
    assert_eq!(second, mask_of(&mut b, &x));
}

#[test]
fn different_seeds_give_different_masks() {
    let x = big_input();
    let m1 = mask_of(&mut Dropout::with_seed(0.3, 1), &x);
    let m2 = mask_of(&mut Dropout::with_seed(0.3, 2), &x);
    assert_ne!(m1, m2);
}

#[test]
fn build_seeds_from_the_model_rng() {
    let x = big_input();
    let built = |seed: u64| {
        let mut layer = Dropout::new(0.5);
        let mut rng = handgrad::init::rng(seed);
        assert_eq!(layer.build(&[5000], &mut rng).unwrap(), vec![5000]);
        mask_of(&mut layer, &x)
    };
    assert_eq!(built(7), built(7), "same model seed, same mask");
    assert_ne!(built(7), built(8), "different model seed, different mask");
}

#[test]
fn masks_are_identical_for_one_and_two_threads() {
    let x = big_input();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut layer = Dropout::with_seed(0.35, 1234);
            let y1 = layer.forward(&x, Mode::Train).unwrap();
            let y2 = layer.forward(&x, Mode::Train).unwrap();
            let dx = layer.backward(&x).unwrap();
            (y1, y2, dx)
        })
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(one, two);
    // A small input (serial path) draws the same stream as the first words of a large one.
    let small = x.slice(ndarray::s![0..1, 0..1000]).to_owned().into_dyn();
    let y_small = Dropout::with_seed(0.35, 1234)
        .forward(&small, Mode::Train)
        .unwrap();
    let head: Vec<f32> = one.0.iter().take(1000).copied().collect();
    let small_zeros: Vec<bool> = y_small.iter().map(|&v| v == 0.0).collect();
    let head_zeros: Vec<bool> = head.iter().map(|&v| v == 0.0).collect();
    assert_eq!(small_zeros, head_zeros);
}

#[test]
fn invalid_p_is_a_config_error_naming_the_value() {
    for (p, shown) in [(-0.1f32, "-0.1"), (1.5, "1.5"), (f32::NAN, "NaN")] {
        let mut layer = Dropout::new(p);
        let mut rng = handgrad::init::rng(0);
        let err = layer.build(&[4], &mut rng).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "p = {p}: {err}");
        assert!(err.to_string().contains(shown), "p = {p}: {err}");
        // Standalone use without build is checked too.
        let err = Dropout::with_seed(p, 0)
            .forward(&Tensor::ones(IxDyn(&[2, 4])), Mode::Train)
            .unwrap_err();
        assert!(err.to_string().contains(shown), "p = {p}: {err}");
    }
}

#[test]
fn accessors_state_and_shape_errors() {
    let mut layer = Dropout::new(0.2);
    assert_eq!(layer.p(), 0.2);
    assert_eq!(layer.describe(), "Dropout(p=0.2)");
    assert_eq!(Dropout::default().p(), 0.5);
    let x = Tensor::ones(IxDyn(&[2, 3]));
    // Train forward before build (no rng) is a State error naming the layer.
    let err = layer.forward(&x, Mode::Train).unwrap_err();
    assert!(
        matches!(err, Error::State(_)) && err.to_string().contains("Dropout"),
        "{err}"
    );
    // Backward without a Train forward is a State error.
    let err = layer.backward(&x).unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");
    // Backward with the wrong shape is a Shape error.
    let mut layer = Dropout::with_seed(0.2, 0);
    layer.forward(&x, Mode::Train).unwrap();
    let err = layer.backward(&Tensor::ones(IxDyn(&[3, 2]))).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}
