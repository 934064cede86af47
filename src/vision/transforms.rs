//! torchvision's eval transforms on [`RgbImage`]s: centre crop, to-tensor + normalise, and the
//! [`Preprocess`] presets (resize short side → centre crop → normalise).

use super::image_io::{load_rgb, RgbImage};
use super::resize::{resize_short_side, Filter};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use ndarray::IxDyn;
use rayon::prelude::*;
use std::path::Path;

/// ImageNet channel means of torchvision's classic recipe, `[0.485, 0.456, 0.406]`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations of torchvision's classic recipe, `[0.229, 0.224, 0.225]`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Python's `round(n / 2)` for an integer `n` (round half to even): `79.5 → 80`, `80.5 → 80`.
fn half_round_even(n: i64) -> i64 {
    let f = n.div_euclid(2);
    if n.rem_euclid(2) == 1 && f % 2 != 0 {
        f + 1
    } else {
        f
    }
}

/// The `crop_w × crop_h` window at `(left, top)` (may reach outside the image: those pixels
/// are 0, as torchvision's padding fills them).
pub fn crop(img: &RgbImage, left: i64, top: i64, crop_w: usize, crop_h: usize) -> Result<RgbImage> {
    if crop_w == 0 || crop_h == 0 {
        return Err(Error::config(
            "crop",
            "size",
            format!("{crop_w}×{crop_h}"),
            "a width and height of at least 1",
        ));
    }
    let mut out = vec![0u8; crop_w * crop_h * 3];
    for (y, row) in out.chunks_exact_mut(crop_w * 3).enumerate() {
        let sy = top + y as i64;
        if sy < 0 || sy >= img.h as i64 {
            continue;
        }
        // the columns of the window that lie inside the image
        let x0 = (-left).clamp(0, crop_w as i64) as usize;
        let x1 = (img.w as i64 - left).clamp(0, crop_w as i64) as usize;
        if x0 >= x1 {
            continue;
        }
        let src = (sy as usize * img.w + (left + x0 as i64) as usize) * 3;
        row[x0 * 3..x1 * 3].copy_from_slice(&img.data[src..src + (x1 - x0) * 3]);
    }
    RgbImage::new(crop_w, crop_h, out)
}

/// The centre `crop_w × crop_h` window, placed as torchvision's `CenterCrop` does:
/// `left = round((w − crop_w) / 2)`, `top = round((h − crop_h) / 2)` with Python's
/// round-half-to-even (`159 / 2 → 80`, `162 / 2 → 81`). A crop larger than the image is padded
/// with zeros (torchvision pads the same way).
///
/// # Errors
/// [`Error::Config`] when a crop side is 0.
pub fn center_crop(img: &RgbImage, crop_w: usize, crop_h: usize) -> Result<RgbImage> {
    let (left, top) = center_offsets(img.w, img.h, crop_w, crop_h);
    crop(img, left, top, crop_w, crop_h)
}

/// The `(left, top)` of [`center_crop`]'s window (negative when the crop is larger).
pub fn center_offsets(w: usize, h: usize, crop_w: usize, crop_h: usize) -> (i64, i64) {
    let off = |n: usize, c: usize| {
        if c > n {
            // torchvision pads (c − n) / 2 before (floor), then crops at 0
            -(((c - n) / 2) as i64)
        } else {
            half_round_even(n as i64 - c as i64)
        }
    };
    (off(w, crop_w), off(h, crop_h))
}

/// Mirrors the image left–right.
pub fn flip_horizontal(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for row in out.data.chunks_exact_mut(img.w * 3) {
        let n = row.len() / 3;
        for x in 0..n / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (n - 1 - x) * 3 + c);
            }
        }
    }
    out
}

/// Writes `img` as `(3, H, W)` floats `(u8 / 255 − mean) / std` into `out` (torchvision
/// `ToTensor` + `Normalize`, in `f32`, in that order).
pub(crate) fn write_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = img.w * img.h;
    debug_assert_eq!(out.len(), 3 * plane);
    for (c, dst) in out.chunks_exact_mut(plane).enumerate() {
        for (i, v) in dst.iter_mut().enumerate() {
            *v = (img.data[i * 3 + c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
}

/// The image as a normalised NCHW batch of one: `(u8 as f32 / 255.0 − mean[c]) / std[c]`,
/// computed in `f32` in exactly that order (bit-identical to torchvision's `ToTensor()` followed
/// by `Normalize(mean, std)`).
///
/// # Shapes
/// `img: (H, W, 3) u8 → (1, 3, H, W)`.
pub fn to_tensor_normalized(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    let mut data = vec![0f32; 3 * img.w * img.h];
    write_normalized(img, mean, std, &mut data);
    Tensor::from_shape_vec(IxDyn(&[1, 3, img.h, img.w]), data).expect("3·H·W values")
}

/// An evaluation pipeline: resize the short side (Pillow resampler) → centre crop → normalise.
///
/// Presets: [`Preprocess::imagenet_eval`] (timm's `tf_efficientnet_lite0` eval transform) and
/// [`Preprocess::torchvision_imagenet`] (the classic torchvision ImageNet eval transform).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Target short side of the resize.
    pub resize: usize,
    /// Side of the square centre crop.
    pub crop: usize,
    /// Resize filter.
    pub filter: Filter,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

/// timm's `scale_size = floor(img_size / crop_pct)` with `crop_pct = 0.875` (224 → 256).
fn resize_for_crop(crop: usize) -> usize {
    (crop as f64 / 0.875).floor() as usize
}

impl Preprocess {
    /// A pipeline with every setting given.
    pub fn new(resize: usize, crop: usize, filter: Filter, mean: [f32; 3], std: [f32; 3]) -> Self {
        Preprocess {
            resize,
            crop,
            filter,
            mean,
            std,
        }
    }

    /// timm's eval transform for `tf_efficientnet_lite0` at `crop` pixels: resize the short side
    /// to `floor(crop / 0.875)` (256 for 224) with [`Filter::Bicubic`], centre crop `crop`, then
    /// `mean = std = 0.5` (values in `[−1, 1]`).
    pub fn imagenet_eval(crop: usize) -> Self {
        Preprocess::new(
            resize_for_crop(crop),
            crop,
            Filter::Bicubic,
            [0.5; 3],
            [0.5; 3],
        )
    }

    /// torchvision's classic ImageNet eval transform at `crop` pixels: `Resize(floor(crop /
    /// 0.875))` with [`Filter::Bilinear`] (torchvision's default), `CenterCrop(crop)`,
    /// `Normalize(`[`IMAGENET_MEAN`]`, `[`IMAGENET_STD`]`)`.
    pub fn torchvision_imagenet(crop: usize) -> Self {
        Preprocess::new(
            resize_for_crop(crop),
            crop,
            Filter::Bilinear,
            IMAGENET_MEAN,
            IMAGENET_STD,
        )
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero size or a non-finite or non-positive `std`.
    pub fn validate(&self) -> Result<()> {
        if self.resize == 0 || self.crop == 0 {
            return Err(Error::config(
                "Preprocess",
                "resize/crop",
                format!("{}/{}", self.resize, self.crop),
                "sizes of at least 1",
            ));
        }
        if self.std.iter().chain(&self.mean).any(|v| !v.is_finite())
            || self.std.iter().any(|&s| s <= 0.0)
        {
            return Err(Error::config(
                "Preprocess",
                "mean/std",
                format!("{:?}/{:?}", self.mean, self.std),
                "finite means and standard deviations > 0",
            ));
        }
        Ok(())
    }

    /// The per-sample output shape, `[3, crop, crop]`.
    pub fn output_shape(&self) -> [usize; 3] {
        [3, self.crop, self.crop]
    }

    /// The resized and cropped image, before normalisation.
    ///
    /// # Errors
    /// As [`Preprocess::validate`].
    pub fn apply_image(&self, img: &RgbImage) -> Result<RgbImage> {
        self.validate()?;
        let r = resize_short_side(img, self.resize, self.filter)?;
        center_crop(&r, self.crop, self.crop)
    }

    /// The model input for one image.
    ///
    /// # Shapes
    /// `img: (H, W, 3) u8 → (1, 3, crop, crop)`.
    ///
    /// # Errors
    /// As [`Preprocess::validate`].
    pub fn apply(&self, img: &RgbImage) -> Result<Tensor> {
        Ok(to_tensor_normalized(
            &self.apply_image(img)?,
            self.mean,
            self.std,
        ))
    }

    /// Writes one image's `(3, crop, crop)` input into `out`.
    pub(crate) fn apply_into(&self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        let c = self.apply_image(img)?;
        write_normalized(&c, self.mean, self.std, out);
        Ok(())
    }

    /// Decodes and preprocesses image files in parallel into one batch, in the order given.
    ///
    /// # Shapes
    /// `paths: [N] → (N, 3, crop, crop)`.
    ///
    /// # Errors
    /// The first failing file's error (in `paths` order), naming it; [`Error::Config`] for an
    /// empty list.
    pub fn load_batch<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Result<Tensor> {
        self.validate()?;
        if paths.is_empty() {
            return Err(Error::config(
                "Preprocess::load_batch",
                "paths",
                "[]",
                "at least one file",
            ));
        }
        let per = 3 * self.crop * self.crop;
        let mut data = vec![0f32; paths.len() * per];
        let results: Vec<Result<()>> = data
            .par_chunks_mut(per)
            .zip(paths.par_iter())
            .map(|(out, p)| self.apply_into(&load_rgb(p)?, out))
            .collect();
        // the first failure in `paths` order, whatever the thread count
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(
            Tensor::from_shape_vec(IxDyn(&[paths.len(), 3, self.crop, self.crop]), data)
                .expect("N·3·crop·crop values"),
        )
    }
}
