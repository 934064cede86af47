//! [`Dropout`]: inverted dropout with its own seeded random stream (PyTorch `nn.Dropout`).

use super::{no_cache, not_built, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::activation::PARALLEL_MIN_LEN;
use crate::tensor::Tensor;
use ndarray::Zip;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

/// Mask entries drawn per parallel task; each task seeks the stream to its first word.
const MASK_CHUNK: usize = 1 << 13;

/// Inverted dropout (PyTorch `nn.Dropout(p)`): in [`Mode::Train`] each element is zeroed with
/// probability `p` and the kept ones are scaled by `1/(1 − p)`, so the expected output equals
/// the input; in [`Mode::Eval`] it is the identity.
///
/// Randomness: the layer owns a [`Rng`] (ChaCha8), seeded in [`Layer::build`] from one `u64`
/// drawn from the model's rng (or fixed by [`Dropout::with_seed`]). A forward over `n` elements
/// uses the next `n` 32-bit words of that stream, one per element in row-major order: element `i`
/// is kept when `word_i < (1 − p)·2³²`. Large tensors are drawn in parallel by seeking the stream
/// to each chunk's first word, which yields exactly the sequential draw, so masks are identical
/// whatever the rayon thread count. Each forward continues the stream (a new mask every step).
///
/// After [`Layer::seek_examples`]`(step, first_row)` the next training forward draws instead from
/// stream `1 + step` (stream 0 is the plain sequence) at word `first_row · (elements per row)`:
/// row `i` of a global batch gets the same mask whichever micro-batch or rank computes it.
///
/// `p = 0` is the identity and draws nothing; `p = 1` zeroes everything (no division by zero).
///
/// # Shapes
/// `x: (B, …)` → `y: (B, …)`.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    /// A seed fixed by [`Dropout::with_seed`]; `build` then keeps it.
    seed: Option<u64>,
    rng: Option<Rng>,
    /// `(step, first_row)` given by [`Layer::seek_examples`] for the next training forward.
    seek: Option<(u64, usize)>,
    /// `mask·scale` of the last training forward (`None`: identity, `p = 0`), and its shape.
    cache: Option<(Vec<usize>, Option<Tensor>)>,
}

impl Default for Dropout {
    /// `p = 0.5`, PyTorch's default.
    fn default() -> Self {
        Dropout::new(0.5)
    }
}

impl Dropout {
    /// Dropout with drop probability `p` (checked in [`Layer::build`]: `p` must be in `[0, 1]`).
    pub fn new(p: f32) -> Self {
        Dropout {
            p,
            seed: None,
            rng: None,
            seek: None,
            cache: None,
        }
    }

    /// Dropout with its own fixed `seed`, usable without [`Layer::build`]. `build` keeps this
    /// seed (it still draws one `u64` from the model rng, so other layers see the same stream).
    pub fn with_seed(p: f32, seed: u64) -> Self {
        Dropout {
            p,
            seed: Some(seed),
            rng: Some(Rng::seed_from_u64(seed)),
            seek: None,
            cache: None,
        }
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Checks that `p` is a probability in `[0, 1]`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the value otherwise (including NaN).
    pub fn validate(&self) -> Result<()> {
        if (0.0..=1.0).contains(&self.p) {
            Ok(())
        } else {
            Err(Error::config(
                "Dropout",
                "p",
                self.p,
                "a drop probability in [0, 1]",
            ))
        }
    }

    /// Draws `mask·scale` for `n` elements from the layer's stream (see the type docs).
    fn draw_mask(&mut self, shape: &[usize]) -> Result<Tensor> {
        let describe = self.describe();
        let rng = self.rng.as_mut().ok_or_else(|| not_built(&describe))?;
        let p = self.p as f64;
        // Keep when word < (1 − p)·2³²; p = 1 gives threshold 0 (keep nothing).
        let threshold = ((1.0 - p) * 4_294_967_296.0) as u64;
        let scale = if self.p < 1.0 {
            1.0 / (1.0 - self.p)
        } else {
            0.0
        };
        let mut mask = Tensor::zeros(shape);
        let m = mask.as_slice_mut().expect("fresh tensor is contiguous");
        let n = m.len();
        if let Some((step, first_row)) = self.seek.take() {
            let per_row = shape.iter().skip(1).product::<usize>();
            rng.set_stream(step.wrapping_add(1));
            rng.set_word_pos((first_row as u128) * per_row as u128);
        }
        let start = rng.get_word_pos();
        let fill = |(c, chunk): (usize, &mut [f32])| {
            let mut r = rng.clone();
            r.set_word_pos(start + (c * MASK_CHUNK) as u128);
            for v in chunk {
                *v = if (r.next_u32() as u64) < threshold {
                    scale
                } else {
                    0.0
                };
            }
        };
        if n > PARALLEL_MIN_LEN {
            m.par_chunks_mut(MASK_CHUNK).enumerate().for_each(fill);
        } else {
            m.chunks_mut(MASK_CHUNK).enumerate().for_each(fill);
        }
        rng.set_word_pos(start + n as u128);
        Ok(mask)
    }
}

impl Layer for Dropout {
    fn describe(&self) -> String {
        format!("Dropout(p={})", self.p)
    }

    fn rng_state(&self) -> Option<String> {
        self.rng.as_ref().map(crate::init::rng_state)
    }

    fn seek_examples(&mut self, step: u64, first_row: usize) {
        self.seek = Some((step, first_row));
    }

    fn set_rng_state(&mut self, state: &str) -> Result<()> {
        if self.rng.is_none() {
            return Err(not_built(&self.describe()));
        }
        self.rng = Some(crate::init::rng_from_state(state)?);
        Ok(())
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        self.validate()?;
        let drawn = rng.next_u64();
        self.rng = Some(Rng::seed_from_u64(self.seed.unwrap_or(drawn)));
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.validate()?;
        if mode == Mode::Eval || self.p == 0.0 {
            if mode == Mode::Train {
                self.seek = None;
            }
            self.cache = match mode {
                Mode::Train => Some((x.shape().to_vec(), None)),
                Mode::Eval => None,
            };
            return Ok(x.clone());
        }
        let mask = self.draw_mask(x.shape())?;
        let mut y = x.as_standard_layout().into_owned();
        multiply(&mut y, &mask);
        self.cache = Some((x.shape().to_vec(), Some(mask)));
        Ok(y)
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let describe = self.describe();
        let (shape, mask) = self.cache.as_ref().ok_or_else(|| no_cache(&describe))?;
        if dout.shape() != shape.as_slice() {
            return Err(Error::shape(
                format!("{describe} backward"),
                format!("dout shaped like the last output {shape:?}"),
                dout.shape(),
            ));
        }
        // forward: y = x ⊙ mask·scale  ⇒  dx = dout ⊙ mask·scale
        let mut dx = dout.as_standard_layout().into_owned();
        if let Some(mask) = mask {
            multiply(&mut dx, mask);
        }
        Ok(dx)
    }
}

/// `y ⊙= mask`, in parallel for large tensors (elementwise: identical for any thread count).
fn multiply(y: &mut Tensor, mask: &Tensor) {
    let zip = Zip::from(y).and(mask);
    if mask.len() > PARALLEL_MIN_LEN {
        zip.par_for_each(|y, &m| *y *= m);
    } else {
        zip.for_each(|y, &m| *y *= m);
    }
}
