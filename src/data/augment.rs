//! Seeded data augmentation for image batches: random crop with zero padding and random
//! horizontal flip (torchvision's `RandomCrop(size, padding=p)` and `RandomHorizontalFlip(p)`).
//!
//! All random numbers are drawn from the caller's [`Rng`] one image after another, before any
//! pixel is copied, so the output depends only on the RNG state — never on the thread count.

use crate::error::{Error, Result};
use crate::init::Rng;
use crate::tensor::Tensor;
use ndarray::IxDyn;
use rand::Rng as _;
use rayon::prelude::*;

/// The flip probability of torchvision's `RandomHorizontalFlip()`.
pub const DEFAULT_FLIP_PROB: f32 = 0.5;

/// An augmentation pipeline applied per image: first the random crop, then the flip.
///
/// `Augment::new()` is the identity; enable steps with the builder methods:
///
/// ```
/// use handgrad::data::Augment;
/// let aug = Augment::new().random_crop(4).horizontal_flip(0.5); // the CIFAR-10 recipe
/// # let _ = aug;
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Augment {
    /// Zero padding on each side before cropping back to `H × W`; 0 disables the crop.
    padding: usize,
    /// Probability of mirroring an image left–right; 0 disables the flip.
    flip_prob: f32,
}

/// The random choices for one image.
#[derive(Debug, Clone, Copy)]
struct Draw {
    /// Crop offset into the padded image, in `0..=2p`.
    top: usize,
    left: usize,
    flip: bool,
}

impl Augment {
    /// The identity augmentation (no crop, no flip).
    pub fn new() -> Self {
        Self::default()
    }

    /// Zero-pads each image by `padding` pixels on all four sides, then crops an `H × W` window
    /// at a uniformly random offset `(top, left) ∈ [0, 2·padding]²` (torchvision
    /// `RandomCrop((H, W), padding=padding)`). `0` disables the crop.
    pub fn random_crop(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Mirrors each image left–right with probability `prob` (torchvision
    /// `RandomHorizontalFlip(p=prob)`; its default is [`DEFAULT_FLIP_PROB`] = 0.5). `0` disables it.
    pub fn horizontal_flip(mut self, prob: f32) -> Self {
        self.flip_prob = prob;
        self
    }

    /// The crop padding (0 when the crop is off).
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// The flip probability (0 when the flip is off).
    pub fn flip_prob(&self) -> f32 {
        self.flip_prob
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] when the flip probability is not in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return Err(Error::config(
                "Augment",
                "horizontal_flip prob",
                self.flip_prob,
                "a probability in [0, 1]",
            ));
        }
        Ok(())
    }

    /// Augments every image of `batch` independently.
    ///
    /// Per image, in batch order, it draws from `rng`: the crop offsets `top` then `left` (each
    /// uniform in `0..=2p`, only when the crop is on), then one uniform `f32` in `[0, 1)` that
    /// flips the image when below the probability (only when the flip is on). The same `rng`
    /// state therefore gives the same output, on any number of threads.
    ///
    /// # Shapes
    /// `batch: (N, C, H, W)` → `(N, C, H, W)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `batch` is not rank 4; [`Error::Config`] as in [`Augment::validate`].
    pub fn apply(&self, batch: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        self.validate()?;
        if batch.ndim() != 4 {
            return Err(Error::shape(
                "Augment::apply",
                "a rank-4 (N, C, H, W) batch",
                batch.shape(),
            ));
        }
        let (n, c, h, w) = (
            batch.shape()[0],
            batch.shape()[1],
            batch.shape()[2],
            batch.shape()[3],
        );
        let p = self.padding;
        let draws: Vec<Draw> = (0..n)
            .map(|_| {
                let (top, left) = if p > 0 {
                    let range = 0..=(2 * p) as u64;
                    let top = rng.random_range(range.clone()) as usize;
                    (top, rng.random_range(range) as usize)
                } else {
                    (0, 0)
                };
                let flip = self.flip_prob > 0.0 && rng.random::<f32>() < self.flip_prob;
                Draw { top, left, flip }
            })
            .collect();

        let src = batch.as_standard_layout();
        let src = src.as_slice().expect("standard layout");
        let per_image = c * h * w;
        let mut out = vec![0.0f32; batch.len()];
        if per_image > 0 {
            out.par_chunks_mut(per_image)
                .zip(src.par_chunks(per_image))
                .zip(draws.par_iter())
                .for_each(|((dst, img), d)| augment_one(dst, img, c, h, w, p, *d));
        }
        Ok(Tensor::from_shape_vec(IxDyn(batch.shape()), out).expect("same shape"))
    }
}

/// Writes one augmented image into the zeroed `dst`.
///
/// Output pixel `(y, x)` takes source pixel `(y + top − p, x' + left − p)` with `x' = W−1−x`
/// when flipped, else `x`; sources outside the image are the zero padding.
fn augment_one(dst: &mut [f32], img: &[f32], c: usize, h: usize, w: usize, p: usize, d: Draw) {
    // Rows: output y reads source row y + top − p; valid for y in [y0, y1).
    let y0 = p.saturating_sub(d.top);
    let y1 = (h + p).saturating_sub(d.top).min(h);
    // Columns of the cropped (unflipped) image: x reads source column x + left − p.
    let x0 = p.saturating_sub(d.left);
    let x1 = (w + p).saturating_sub(d.left).min(w);
    if y0 >= y1 || x0 >= x1 {
        return; // the window lies entirely in the padding
    }
    let sx0 = x0 + d.left - p;
    let len = x1 - x0;
    for ch in 0..c {
        let plane_src = &img[ch * h * w..(ch + 1) * h * w];
        let plane_dst = &mut dst[ch * h * w..(ch + 1) * h * w];
        for y in y0..y1 {
            let sy = y + d.top - p;
            let s = &plane_src[sy * w + sx0..sy * w + sx0 + len];
            let row = &mut plane_dst[y * w..(y + 1) * w];
            if d.flip {
                // Cropped column x lands at W−1−x: columns [x0, x1) → [W−x1, W−x0), reversed.
                for (o, &v) in row[w - x1..w - x0].iter_mut().rev().zip(s) {
                    *o = v;
                }
            } else {
                row[x0..x1].copy_from_slice(s);
            }
        }
    }
}
