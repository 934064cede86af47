//! Pillow's 8-bit resampler, reproduced exactly (`Image.resize` with `BILINEAR` or `BICUBIC`).
//!
//! Pillow (`Resample.c`) resizes one axis at a time, the HORIZONTAL pass first into an 8-bit
//! image, then the VERTICAL pass. For an axis `in_size → out_size` with
//! `scale = in_size / out_size` and `filterscale = max(scale, 1)` (antialiasing: the kernel is
//! stretched when shrinking), output index `i` has the centre `(i + 0.5)·scale`, the support
//! `[xmin, xmax)` with `xmin = max(int(centre − support + 0.5), 0)` and
//! `xmax = min(int(centre + support + 0.5), in_size)`, and the weights
//! `K((j − centre + 0.5) / filterscale)` normalised to sum 1, all in `f64`. The weights are then
//! turned into fixed point with 22 fractional bits (rounded half away from zero) and every
//! output value is `clip_u8((2^21 + Σ k_j·in_j) >> 22)` in 32-bit integers. The same arithmetic
//! here gives the same bytes as Pillow.

use super::image_io::RgbImage;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Fractional bits of Pillow's fixed-point weights.
const PRECISION_BITS: u32 = 22;

/// An interpolation filter of [`resize`] (Pillow's `Image.Resampling`), antialiased when
/// shrinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Triangle filter, support 1 (Pillow `BILINEAR`; torchvision's default interpolation).
    Bilinear,
    /// Keys cubic with `a = −0.5`, support 2 (Pillow `BICUBIC`; timm's EfficientNet eval).
    #[default]
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The kernel, written in Pillow's operation order (the `f64` rounding must match).
    fn kernel(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point weights of one axis: output `i` reads `count[i]` inputs from `start[i]` with
/// weights `k[i * ksize ..][..count[i]]`.
struct Coeffs {
    start: Vec<usize>,
    count: Vec<usize>,
    ksize: usize,
    k: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size → out_size`.
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut count = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        // C's (int) truncates toward zero; then clamp to [0, in_size]
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut sum = 0.0f64;
        for (x, wx) in w[..n].iter_mut().enumerate() {
            // filter((x + xmin - center + 0.5) * ss), evaluated left to right as in C
            *wx = filter.kernel(((x + xmin) as f64 - center + 0.5) * ss);
            sum += *wx;
        }
        for (x, &wx) in w[..n].iter().enumerate() {
            let wx = if sum != 0.0 { wx / sum } else { wx };
            let f = wx * (1u32 << PRECISION_BITS) as f64;
            k[i * ksize + x] = if wx < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        start.push(xmin);
        count.push(n);
    }
    Coeffs {
        start,
        count,
        ksize,
        k,
    }
}

/// `clip_u8((2^21 + acc) >> 22)` with `acc` already holding the `2^21` rounding term.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `img` to `new_w × new_h` exactly as Pillow's `img.resize((new_w, new_h), filter)`
/// does for an RGB image (8-bit fixed point, horizontal pass first; an axis whose size does not
/// change is not filtered). Rows are computed in parallel; the result does not depend on the
/// thread count.
///
/// # Errors
/// [`Error::Config`] when `new_w` or `new_h` is 0.
pub fn resize(img: &RgbImage, new_w: usize, new_h: usize, filter: Filter) -> Result<RgbImage> {
    if new_w == 0 || new_h == 0 {
        return Err(Error::config(
            "resize",
            "size",
            format!("{new_w}×{new_h}"),
            "a width and height of at least 1",
        ));
    }
    let (w, h) = (img.w, img.h);
    let half = 1i32 << (PRECISION_BITS - 1);
    let vert = (new_h != h).then(|| coeffs(h, new_h, filter));
    // rows the vertical pass reads (Pillow skips the others: same result)
    let (y0, y1) = match &vert {
        Some(c) => (c.start[0], c.start[new_h - 1] + c.count[new_h - 1]),
        None => (0, h),
    };
    let horiz: Vec<u8> = if new_w != w {
        let c = coeffs(w, new_w, filter);
        let mut out = vec![0u8; (y1 - y0) * new_w * 3];
        out.par_chunks_mut(new_w * 3)
            .enumerate()
            .for_each(|(r, row_out)| {
                let row = &img.data[(y0 + r) * w * 3..(y0 + r + 1) * w * 3];
                for (i, px) in row_out.chunks_exact_mut(3).enumerate() {
                    let k = &c.k[i * c.ksize..i * c.ksize + c.count[i]];
                    let src = &row[c.start[i] * 3..];
                    let mut acc = [half; 3];
                    for (j, &kj) in k.iter().enumerate() {
                        acc[0] += src[j * 3] as i32 * kj;
                        acc[1] += src[j * 3 + 1] as i32 * kj;
                        acc[2] += src[j * 3 + 2] as i32 * kj;
                    }
                    px[0] = clip8(acc[0]);
                    px[1] = clip8(acc[1]);
                    px[2] = clip8(acc[2]);
                }
            });
        out
    } else {
        img.data[y0 * w * 3..y1 * w * 3].to_vec()
    };
    let Some(c) = vert else {
        return RgbImage::new(new_w, new_h, horiz);
    };
    let stride = new_w * 3;
    let mut out = vec![0u8; new_h * stride];
    out.par_chunks_mut(stride)
        .enumerate()
        .for_each(|(i, row_out)| {
            let k = &c.k[i * c.ksize..i * c.ksize + c.count[i]];
            let first = c.start[i] - y0;
            for (x, v) in row_out.iter_mut().enumerate() {
                let mut acc = half;
                for (j, &kj) in k.iter().enumerate() {
                    acc += horiz[(first + j) * stride + x] as i32 * kj;
                }
                *v = clip8(acc);
            }
        });
    RgbImage::new(new_w, new_h, out)
}

/// The size torchvision's `Resize(short)` gives a `w × h` image: the short side becomes
/// `short`, the long side `floor(short · long / short_side)` (integer floor division).
pub fn short_side_size(w: usize, h: usize, short: usize) -> (usize, usize) {
    if w <= h {
        (short, short * h / w.max(1))
    } else {
        (short * w / h.max(1), short)
    }
}

/// Resizes so that the short side is `short`, keeping the aspect ratio as torchvision's
/// `Resize(short)` does (see [`short_side_size`]), with Pillow's resampler.
///
/// # Errors
/// [`Error::Config`] for `short == 0`.
pub fn resize_short_side(img: &RgbImage, short: usize, filter: Filter) -> Result<RgbImage> {
    if short == 0 {
        return Err(Error::config("resize_short_side", "short", 0, "at least 1"));
    }
    let (nw, nh) = short_side_size(img.w, img.h, short);
    resize(img, nw.max(1), nh.max(1), filter)
}
