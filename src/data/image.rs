//! Image tensors: conversion between interleaved `u8` pixels (NHWC, as stored by image files) and
//! NCHW `f32` tensors in `[0, 1]`, and per-channel normalisation (torchvision's `Normalize`).

use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use ndarray::{Axis, IxDyn};
use rayon::prelude::*;

/// `LUT[v] = v / 255` exactly as `f32` division would give it.
fn lut() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    for (v, x) in t.iter_mut().enumerate() {
        *x = v as f32 / 255.0;
    }
    t
}

/// Converts interleaved `u8` pixels to an NCHW tensor in `[0, 1]` (pixel / 255, like
/// torchvision's `ToTensor`).
///
/// Pixel `(n, h, w, c)` at `data[((n·H + h)·W + w)·C + c]` becomes element `(n, c, h, w)`.
///
/// # Shapes
/// `data: [N·H·W·C]` → `(N, C, H, W)`.
///
/// # Errors
/// [`Error::Shape`] when `data.len() != N·H·W·C`.
pub fn from_nhwc_u8(data: &[u8], n: usize, h: usize, w: usize, c: usize) -> Result<Tensor> {
    let expected = [n, h, w, c]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(Error::shape(
            "from_nhwc_u8",
            format!("N·H·W·C bytes for (N, H, W, C) = ({n}, {h}, {w}, {c})"),
            &[data.len()],
        ));
    }
    let lut = lut();
    let mut out = vec![0.0f32; data.len()];
    let per_image = h * w * c;
    if per_image > 0 {
        out.par_chunks_mut(per_image)
            .zip(data.par_chunks(per_image))
            .for_each(|(dst, src)| {
                if c == 1 {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = lut[s as usize];
                    }
                } else {
                    let plane = h * w;
                    for (p, px) in src.chunks_exact(c).enumerate() {
                        for (ch, &s) in px.iter().enumerate() {
                            dst[ch * plane + p] = lut[s as usize];
                        }
                    }
                }
            });
    }
    Ok(Tensor::from_shape_vec(IxDyn(&[n, c, h, w]), out).expect("checked length"))
}

/// Converts an NCHW tensor back to interleaved `u8` pixels: `round(clamp(x, 0, 1) · 255)`
/// (NaN becomes 0). Inverts [`from_nhwc_u8`] exactly.
///
/// # Shapes
/// `x: (N, C, H, W)` → `[N·H·W·C]` in `(n, h, w, c)` order.
///
/// # Errors
/// [`Error::Shape`] when `x` is not rank 4.
pub fn to_nhwc_u8(x: &Tensor) -> Result<Vec<u8>> {
    if x.ndim() != 4 {
        return Err(Error::shape(
            "to_nhwc_u8",
            "a rank-4 (N, C, H, W) input",
            x.shape(),
        ));
    }
    // (N, C, H, W) → (N, H, W, C), then iterate in logical order.
    let v = x.view().permuted_axes(IxDyn(&[0, 2, 3, 1]));
    Ok(v.iter()
        .map(|&p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect())
}

/// Normalises each channel in place: `x[:, c] = (x[:, c] − mean[c]) / std[c]` (torchvision's
/// `Normalize`; the channel axis is axis 1).
///
/// # Shapes
/// `x: (N, C, …)` (e.g. `(N, C, H, W)`), `mean: [C]`, `std: [C]`.
///
/// # Errors
/// [`Error::Shape`] when `x` has rank < 2; [`Error::Config`] when `mean` or `std` does not hold
/// `C` values, a mean is not finite, or a std is not finite and > 0.
pub fn normalize(x: &mut Tensor, mean: &[f32], std: &[f32]) -> Result<()> {
    check_stats("normalize", x, mean, std)?;
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut img| {
            for (mut plane, (&m, &s)) in img.axis_iter_mut(Axis(0)).zip(mean.iter().zip(std)) {
                plane.mapv_inplace(|v| (v - m) / s);
            }
        });
    Ok(())
}

/// Undoes [`normalize`] in place: `x[:, c] = x[:, c] · std[c] + mean[c]`.
///
/// # Shapes
/// `x: (N, C, …)`, `mean: [C]`, `std: [C]`.
///
/// # Errors
/// As [`normalize`].
pub fn denormalize(x: &mut Tensor, mean: &[f32], std: &[f32]) -> Result<()> {
    check_stats("denormalize", x, mean, std)?;
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut img| {
            for (mut plane, (&m, &s)) in img.axis_iter_mut(Axis(0)).zip(mean.iter().zip(std)) {
                plane.mapv_inplace(|v| v * s + m);
            }
        });
    Ok(())
}

/// The per-channel mean and (population) standard deviation over all samples and positions,
/// accumulated in `f64` in a fixed order, for use with [`normalize`].
///
/// # Shapes
/// `x: (N, C, …)` → `(mean: [C], std: [C])`.
///
/// # Errors
/// [`Error::Shape`] when `x` has rank < 2 or holds no samples.
pub fn channel_stats(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    if x.ndim() < 2 || x.is_empty() {
        return Err(Error::shape(
            "channel_stats",
            "a non-empty (N, C, …) input",
            x.shape(),
        ));
    }
    let (mut means, mut stds) = (Vec::new(), Vec::new());
    for plane in x.axis_iter(Axis(1)) {
        let count = plane.len() as f64;
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / count;
        let var = plane
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / count;
        means.push(mean as f32);
        stds.push(var.sqrt() as f32);
    }
    Ok((means, stds))
}

fn check_stats(op: &str, x: &Tensor, mean: &[f32], std: &[f32]) -> Result<()> {
    if x.ndim() < 2 {
        return Err(Error::shape(op, "a (N, C, …) input of rank ≥ 2", x.shape()));
    }
    let c = x.shape()[1];
    for (name, v) in [("mean", mean), ("std", std)] {
        if v.len() != c {
            return Err(Error::config(
                op,
                name,
                format!("{v:?} ({} values)", v.len()),
                format!(
                    "{c} values, one per channel (axis 1 of input shape {:?})",
                    x.shape()
                ),
            ));
        }
    }
    if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
        return Err(Error::config(op, "mean", m, "finite values"));
    }
    if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::config(op, "std", s, "finite values > 0"));
    }
    Ok(())
}

impl Dataset {
    /// This data set with its inputs normalised per channel by [`normalize`].
    ///
    /// # Shapes
    /// inputs `(N, C, …)`, `mean: [C]`, `std: [C]`.
    ///
    /// # Errors
    /// As [`normalize`].
    pub fn normalized(self, mean: &[f32], std: &[f32]) -> Result<Dataset> {
        let (mut x, y) = self.into_parts();
        normalize(&mut x, mean, std)?;
        Dataset::new(x, y)
    }
}
