//! Decoding JPEG and PNG files into 8-bit RGB pixels ([`RgbImage`]), with allocation limits.
//!
//! Decoding uses the pure-Rust `image` crate (zune-jpeg for JPEG, png for PNG). Every image is
//! converted to 8-bit RGB as Pillow's `Image.open(f).convert('RGB')` does: grey levels are
//! replicated into R = G = B, alpha is dropped (not blended), palettes are expanded, 16-bit
//! colour samples keep their high byte (Pillow reads 16-bit RGB(A) PNGs that way). ICC profiles
//! and EXIF orientation are not applied (neither does Pillow's `open`).
//!
//! One deliberate difference: Pillow opens a 16-bit GREY PNG as mode `I;16` and
//! `convert('RGB')` then clips every value above 255 to 255 (most such images turn white);
//! here 16-bit grey keeps its high byte like 16-bit colour does, so the picture survives.

use crate::error::{Error, Result};
use std::io::Cursor;
use std::path::Path;

/// The largest width or height accepted by the decoders (a hostile header declaring more is an
/// error before any pixel buffer is allocated).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The most bytes a decoder may allocate for one image (512 MiB).
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// An 8-bit RGB image, rows top to bottom, pixels left to right, `R, G, B` per pixel.
///
/// # Shapes
/// `data: (h, w, 3)` flattened (HWC, row-major): pixel `(y, x)` channel `c` is
/// `data[(y * w + x) * 3 + c]`.
///
/// The fields are private so that every image is consistent (`data.len() == w · h · 3`,
/// `w, h ≥ 1`): build one with [`RgbImage::new`], read it with the accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub(crate) w: usize,
    /// Height in pixels.
    pub(crate) h: usize,
    /// `h · w · 3` bytes, HWC.
    pub(crate) data: Vec<u8>,
}

impl RgbImage {
    /// Wraps `data` (HWC, `h · w · 3` bytes).
    ///
    /// # Errors
    /// [`Error::Shape`] when `data.len() != h · w · 3` or a side is 0.
    pub fn new(w: usize, h: usize, data: Vec<u8>) -> Result<Self> {
        if w == 0 || h == 0 || w.checked_mul(h).and_then(|n| n.checked_mul(3)) != Some(data.len()) {
            return Err(Error::shape(
                "RgbImage::new",
                format!("{h}·{w}·3 bytes (HWC) for a non-empty {w}×{h} image"),
                &[data.len()],
            ));
        }
        Ok(RgbImage { w, h, data })
    }

    /// Width in pixels.
    pub fn w(&self) -> usize {
        self.w
    }

    /// Height in pixels.
    pub fn h(&self) -> usize {
        self.h
    }

    /// The `h · w · 3` bytes, HWC.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The bytes, HWC, by value.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The pixel at row `y`, column `x`.
    ///
    /// # Panics
    /// When `(x, y)` is outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Decodes the JPEG or PNG file at `path` (format from the content, not the extension) into
/// 8-bit RGB.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read; [`Error::Format`] naming the file when
/// it is not a decodable JPEG/PNG, is truncated, or declares more than [`MAX_IMAGE_SIDE`] pixels
/// per side or more than [`MAX_DECODE_BYTES`] of pixel data.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb(&bytes, &path.display().to_string())
}

/// Decodes JPEG or PNG bytes into 8-bit RGB; `name` names the source in errors (e.g. the file).
///
/// # Errors
/// [`Error::Format`] naming `name` as [`load_rgb`] describes.
pub fn decode_rgb(bytes: &[u8], name: &str) -> Result<RgbImage> {
    use image::{DynamicImage as D, ImageFormat};
    let bad = |m: String| Error::format(name, m);
    let format = image::guess_format(bytes)
        .map_err(|_| bad("not a JPEG or PNG image (unrecognised file signature)".into()))?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(bad(format!(
            "a {format:?} image; only JPEG and PNG are supported"
        )));
    }
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes).map_err(bad)?;
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode the {format:?} image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(bad(format!("the image is empty ({w}×{h})")));
    }
    // the 16-bit high byte, as Pillow reads 16-bit PNGs
    let hi = |v: u16| (v >> 8) as u8;
    let data: Vec<u8> = match img {
        D::ImageRgb8(b) => b.into_raw(),
        D::ImageLuma8(b) => b.into_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        D::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0]; 3])
            .collect(),
        D::ImageRgba8(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        D::ImageLuma16(b) => b.into_raw().iter().flat_map(|&l| [hi(l); 3]).collect(),
        D::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [hi(p[0]); 3])
            .collect(),
        D::ImageRgb16(b) => b.into_raw().iter().map(|&v| hi(v)).collect(),
        D::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2])])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage::new(w, h, data).map_err(|e| bad(e.to_string()))
}

/// The JPEG decoder fills a truncated scan with grey instead of failing: walk the segments
/// before the first scan and require an end-of-image marker after it. (Inside entropy-coded
/// data every `0xFF` byte is followed by `0x00` or a restart marker, so `FF D9` is the marker.)
fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    let truncated = |at: usize| {
        format!(
            "truncated JPEG: the file ends inside its headers (at byte {at} of {})",
            bytes.len()
        )
    };
    let mut pos = 2; // after SOI (FF D8), which guess_format checked
    loop {
        if pos + 4 > bytes.len() {
            return Err(truncated(pos));
        }
        if bytes[pos] != 0xFF {
            return Err(format!(
                "corrupt JPEG: expected a marker at byte {pos}, found 0x{:02X}",
                bytes[pos]
            ));
        }
        let marker = bytes[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        let len = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
        if marker == 0xDA {
            break;
        }
        if len < 2 || pos + 2 + len > bytes.len() {
            return Err(truncated(pos));
        }
        pos += 2 + len;
    }
    if bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        Err(format!(
            "truncated JPEG: no end-of-image marker after the image data ({} bytes)",
            bytes.len()
        ))
    }
}
