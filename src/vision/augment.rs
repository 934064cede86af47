//! Training augmentation for photos: torchvision's `RandomResizedCrop` and
//! `RandomHorizontalFlip`, then normalisation ([`TrainTransform`]).
//!
//! Random numbers come from the caller's [`Rng`]; [`crate::data::ImageFolder`] gives every
//! (epoch, sample) pair its own stream, so a batch does not depend on the thread count.

use super::image_io::RgbImage;
use super::resize::{resize, Filter};
use super::transforms::{crop, flip_horizontal, write_normalized, IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{Error, Result};
use crate::init::Rng;
use rand::Rng as _;

/// torchvision's `RandomResizedCrop(size, scale, ratio, interpolation)`: a random window of a
/// random area fraction and aspect ratio, resized to `size × size`.
///
/// Defaults (torchvision's): `scale = (0.08, 1.0)`, `ratio = (3/4, 4/3)`, [`Filter::Bilinear`]
/// (antialiased, Pillow's resampler).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    /// Output side.
    pub size: usize,
    /// Range of the window's area as a fraction of the image's area.
    pub scale: (f64, f64),
    /// Range of the window's aspect ratio `w / h` (sampled log-uniformly).
    pub ratio: (f64, f64),
    /// Resize filter.
    pub filter: Filter,
}

impl RandomResizedCrop {
    /// Crops resized to `size × size` with torchvision's defaults (see [`RandomResizedCrop`]).
    pub fn new(size: usize) -> Self {
        RandomResizedCrop {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            filter: Filter::Bilinear,
        }
    }

    /// Sets the area range (default `(0.08, 1.0)`).
    pub fn with_scale(mut self, lo: f64, hi: f64) -> Self {
        self.scale = (lo, hi);
        self
    }

    /// Sets the aspect-ratio range (default `(3/4, 4/3)`).
    pub fn with_ratio(mut self, lo: f64, hi: f64) -> Self {
        self.ratio = (lo, hi);
        self
    }

    /// Sets the resize filter (default [`Filter::Bilinear`]).
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for `size == 0`, a scale range outside `(0, ∞)` or reversed, or a
    /// ratio range outside `(0, ∞)` or reversed.
    pub fn validate(&self) -> Result<()> {
        let op = "RandomResizedCrop";
        if self.size == 0 {
            return Err(Error::config(op, "size", 0, "at least 1"));
        }
        let ok = |(lo, hi): (f64, f64)| lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi;
        if !ok(self.scale) {
            return Err(Error::config(
                op,
                "scale",
                format!("{:?}", self.scale),
                "0 < lo <= hi, finite",
            ));
        }
        if !ok(self.ratio) {
            return Err(Error::config(
                op,
                "ratio",
                format!("{:?}", self.ratio),
                "0 < lo <= hi, finite",
            ));
        }
        Ok(())
    }

    /// The window `(top, left, height, width)` for a `w × h` image, drawn with torchvision's
    /// `RandomResizedCrop.get_params`: up to 10 tries of an area `U(scale)·w·h` and a ratio
    /// `exp(U(ln ratio))`, side lengths rounded half to even, accepted when the window fits, at
    /// a uniform position; otherwise the centred window of the whole image clamped to the ratio
    /// range.
    pub fn sample(&self, w: usize, h: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
        let uniform = |rng: &mut Rng, (lo, hi): (f64, f64)| lo + (hi - lo) * rng.random::<f64>();
        let area = (w * h) as f64;
        let log_ratio = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale);
            let aspect = uniform(rng, log_ratio).exp();
            let cw = (target_area * aspect).sqrt().round_ties_even() as usize;
            let ch = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < cw && cw <= w && 0 < ch && ch <= h {
                let top = rng.random_range(0..=h - ch);
                let left = rng.random_range(0..=w - cw);
                return (top, left, ch, cw);
            }
        }
        let in_ratio = w as f64 / h as f64;
        let (cw, ch) = if in_ratio < self.ratio.0 {
            (
                w,
                ((w as f64 / self.ratio.0).round_ties_even() as usize).clamp(1, h),
            )
        } else if in_ratio > self.ratio.1 {
            (
                ((h as f64 * self.ratio.1).round_ties_even() as usize).clamp(1, w),
                h,
            )
        } else {
            (w, h)
        };
        ((h - ch) / 2, (w - cw) / 2, ch, cw)
    }

    /// A random window of `img`, resized to `size × size`.
    ///
    /// # Errors
    /// As [`RandomResizedCrop::validate`].
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng) -> Result<RgbImage> {
        self.validate()?;
        let (top, left, ch, cw) = self.sample(img.w, img.h, rng);
        let window = crop(img, left as i64, top as i64, cw, ch)?;
        resize(&window, self.size, self.size, self.filter)
    }
}

/// A training pipeline: [`RandomResizedCrop`] → horizontal flip with probability `flip_prob`
/// → `(u8 / 255 − mean) / std` (timm's / torchvision's ImageNet training transform without
/// colour jitter).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTransform {
    /// The random crop.
    pub crop: RandomResizedCrop,
    /// Probability of mirroring left–right (torchvision's default 0.5).
    pub flip_prob: f32,
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl TrainTransform {
    /// `RandomResizedCrop(size)`, flip 0.5, and the given normalisation.
    pub fn new(size: usize, mean: [f32; 3], std: [f32; 3]) -> Self {
        TrainTransform {
            crop: RandomResizedCrop::new(size),
            flip_prob: 0.5,
            mean,
            std,
        }
    }

    /// For EfficientNet-Lite (as [`super::Preprocess::imagenet_eval`]): `mean = std = 0.5`.
    pub fn efficientnet_lite(size: usize) -> Self {
        TrainTransform::new(size, [0.5; 3], [0.5; 3])
    }

    /// torchvision's classic ImageNet normalisation ([`IMAGENET_MEAN`], [`IMAGENET_STD`]).
    pub fn torchvision_imagenet(size: usize) -> Self {
        TrainTransform::new(size, IMAGENET_MEAN, IMAGENET_STD)
    }

    /// Sets the flip probability (default 0.5; 0 disables the flip).
    pub fn with_flip_prob(mut self, p: f32) -> Self {
        self.flip_prob = p;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// As [`RandomResizedCrop::validate`]; [`Error::Config`] for a flip probability outside
    /// `[0, 1]` or a non-positive `std`.
    pub fn validate(&self) -> Result<()> {
        self.crop.validate()?;
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return Err(Error::config(
                "TrainTransform",
                "flip_prob",
                self.flip_prob,
                "a value in [0, 1]",
            ));
        }
        if self.std.iter().chain(&self.mean).any(|v| !v.is_finite())
            || self.std.iter().any(|&s| s <= 0.0)
        {
            return Err(Error::config(
                "TrainTransform",
                "mean/std",
                format!("{:?}/{:?}", self.mean, self.std),
                "finite means and standard deviations > 0",
            ));
        }
        Ok(())
    }

    /// Writes one augmented `(3, size, size)` input into `out`, drawing from `rng` (crop first,
    /// then the flip).
    pub(crate) fn apply_into(&self, img: &RgbImage, rng: &mut Rng, out: &mut [f32]) -> Result<()> {
        let mut c = self.crop.apply(img, rng)?;
        if self.flip_prob > 0.0 && rng.random::<f32>() < self.flip_prob {
            c = flip_horizontal(&c);
        }
        write_normalized(&c, self.mean, self.std, out);
        Ok(())
    }
}
