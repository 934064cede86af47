//! Seeded initialisers with PyTorch's defaults.
//!
//! All randomness in handgrad flows from one [`Rng`] (ChaCha8, a named algorithm whose stream does
//! not change between `rand` versions), so the same seed gives the same weights everywhere.

use crate::tensor::Tensor;
use ndarray::IxDyn;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use rand_distr::{Normal, Uniform};

/// The crate's seeded random number generator.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A new [`Rng`] from a `u64` seed.
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Samples `U(-bound, bound)` of the given shape.
///
/// # Errors
/// [`crate::Error::Config`] when `bound` is not finite and > 0.
pub fn uniform(shape: &[usize], bound: f32, rng: &mut Rng) -> crate::Result<Tensor> {
    if !(bound.is_finite() && bound > 0.0) {
        return Err(crate::Error::config(
            "init::uniform",
            "bound",
            bound,
            "a finite number > 0",
        ));
    }
    Ok(uniform_unchecked(shape, bound, rng))
}

/// [`uniform`] for a bound known to be finite and > 0.
fn uniform_unchecked(shape: &[usize], bound: f32, rng: &mut Rng) -> Tensor {
    let dist = Uniform::new(-bound, bound).expect("bound checked finite and > 0");
    Tensor::random_using(IxDyn(shape), dist, rng)
}

/// Samples `N(0, std²)` of the given shape (`std = 0` gives zeros).
///
/// # Errors
/// [`crate::Error::Config`] when `std` is not finite and ≥ 0.
pub fn normal(shape: &[usize], std: f32, rng: &mut Rng) -> crate::Result<Tensor> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(crate::Error::config(
            "init::normal",
            "std",
            std,
            "a finite number >= 0",
        ));
    }
    let dist = Normal::new(0.0, std).expect("std checked finite and >= 0");
    Ok(Tensor::random_using(IxDyn(shape), dist, rng))
}

/// PyTorch's default for `nn.Linear` and `nn.Conv2d` weights and biases.
///
/// `kaiming_uniform_(a=√5)` on the weight gives `U(-1/√fan_in, 1/√fan_in)`, and the bias uses the
/// same bound. `fan_in` is `in_features` (Linear) or `in_channels·kh·kw` (Conv2d).
pub fn pytorch_default(shape: &[usize], fan_in: usize, rng: &mut Rng) -> Tensor {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    uniform_unchecked(shape, bound, rng)
}

/// Glorot / Xavier uniform (Keras's default for Dense and Conv2D kernels):
/// `U(-a, a)` with `a = √(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut Rng) -> Tensor {
    let bound = (6.0 / ((fan_in + fan_out).max(1) as f32)).sqrt();
    uniform_unchecked(shape, bound, rng)
}

/// The exact position of an [`Rng`] as text, `"<seed hex>:<stream>:<word position>"`, for
/// checkpoints: [`rng_from_state`] restores a generator that continues the same stream.
pub fn rng_state(r: &Rng) -> String {
    let seed: String = r.get_seed().iter().map(|b| format!("{b:02x}")).collect();
    format!("{seed}:{}:{}", r.get_stream(), r.get_word_pos())
}

/// Restores an [`Rng`] from [`rng_state`]'s text.
///
/// # Errors
/// [`crate::Error::Format`] when the text is not `<64 hex digits>:<u64>:<u128>`.
pub fn rng_from_state(state: &str) -> crate::Result<Rng> {
    let bad = || {
        crate::Error::format(
            "RNG state",
            format!("expected <64 hex>:<stream>:<word pos>, got {state:?}"),
        )
    };
    let mut parts = state.split(':');
    let (Some(seed), Some(stream), Some(pos), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if seed.len() != 64 || !seed.is_ascii() {
        return Err(bad());
    }
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&seed[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    let mut r = Rng::from_seed(bytes);
    r.set_stream(stream.parse().map_err(|_| bad())?);
    r.set_word_pos(pos.parse().map_err(|_| bad())?);
    Ok(r)
}
