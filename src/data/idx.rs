//! The IDX format of MNIST and Fashion-MNIST: images (`idx3`) and labels (`idx1`), raw or gzipped.
//!
//! An IDX file is a big-endian header — the magic `0x00000803` (unsigned bytes, 3 dimensions) or
//! `0x00000801` (unsigned bytes, 1 dimension), then one `u32` per dimension — followed by exactly
//! `Π dims` bytes. Gzip is detected by its magic bytes `1f 8b`, not by the file name.
//!
//! Every reader checks the magic, the dimensions and that the data is exactly as long as
//! declared (truncated files and trailing bytes are both errors), and never allocates more than
//! its input can hold: a header declaring 2³² images in a 100-byte file is an error before any
//! allocation, and gzip streams are decompressed with a cap of the declared size + 1.

use super::image::from_nhwc_u8;
use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Which part of a data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (`train-*` for MNIST, `data_batch_1..5` for CIFAR-10).
    Train,
    /// The test split (`t10k-*` for MNIST, `test_batch` for CIFAR-10).
    Test,
}

/// Decoded IDX images: `n` grey images of `rows × cols` unsigned bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// The pixels, `n · rows · cols` bytes in `(n, rows, cols)` order.
    pub pixels: Vec<u8>,
    /// The number of images.
    pub n: usize,
    /// The image height.
    pub rows: usize,
    /// The image width.
    pub cols: usize,
}

impl IdxImages {
    /// The images as `f32` in `[0, 1]` (pixel / 255).
    ///
    /// # Shapes
    /// → `(n, 1, rows, cols)` (NCHW with `C = 1`).
    pub fn to_tensor(&self) -> Tensor {
        from_nhwc_u8(&self.pixels, self.n, self.rows, self.cols, 1)
            .expect("IdxImages holds n·rows·cols pixels")
    }
}

/// What a reader expects of an IDX file.
struct Spec {
    magic: u32,
    ndims: usize,
    what: &'static str,
}

const IMAGES: Spec = Spec {
    magic: 0x0000_0803,
    ndims: 3,
    what: "IDX3 unsigned-byte images",
};
const LABELS: Spec = Spec {
    magic: 0x0000_0801,
    ndims: 1,
    what: "IDX1 unsigned-byte labels",
};

impl Spec {
    fn header_len(&self) -> usize {
        4 + 4 * self.ndims
    }
    fn expected(&self) -> String {
        format!("{} (magic 0x{:08x})", self.what, self.magic)
    }
}

/// Reads the IDX images file at `path` (raw or gzipped).
///
/// # Shapes
/// → [`IdxImages`] with `n · rows · cols` pixels.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file for a bad
/// magic, zero rows or columns, a truncated file, trailing bytes, or a corrupt gzip stream.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let (dims, pixels) = parse_owned(bytes, &path.display().to_string(), &IMAGES)?;
    images_from(dims, pixels)
}

/// Reads the IDX labels file at `path` (raw or gzipped): one byte per sample.
///
/// # Errors
/// As [`read_idx_images`].
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    Ok(parse_owned(bytes, &path.display().to_string(), &LABELS)?.1)
}

/// Parses IDX images from the bytes of a file (raw or gzipped); `source_name` names it in errors.
///
/// # Errors
/// As [`read_idx_images`], with [`Error::Format`] naming `source_name`.
pub fn parse_idx_images(bytes: &[u8], source_name: &str) -> Result<IdxImages> {
    let (dims, pixels) = parse(bytes, source_name, &IMAGES)?;
    images_from(dims, pixels)
}

/// Parses IDX labels from the bytes of a file (raw or gzipped); `source_name` names it in errors.
///
/// # Errors
/// As [`read_idx_images`], with [`Error::Format`] naming `source_name`.
pub fn parse_idx_labels(bytes: &[u8], source_name: &str) -> Result<Vec<u8>> {
    Ok(parse(bytes, source_name, &LABELS)?.1)
}

/// Loads an MNIST-format split (MNIST, Fashion-MNIST, KMNIST, …) from the folder `dir`.
///
/// Reads `{train,t10k}-images-idx3-ubyte` and `{train,t10k}-labels-idx1-ubyte`, each either raw or
/// with a `.gz` suffix (the dotted names `train-images.idx3-ubyte` are accepted too).
///
/// # Shapes
/// → inputs `(N, 1, rows, cols)` (`(N, 1, 28, 28)` for MNIST) as `f32` in `[0, 1]`, labels `[N]`.
///
/// # Errors
/// [`Error::Io`] naming the file when one is missing or unreadable, [`Error::Format`] for a
/// malformed file (see [`read_idx_images`]) or when the image and label counts differ.
pub fn load_mnist(dir: impl AsRef<Path>, split: Split) -> Result<Dataset> {
    let dir = dir.as_ref();
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = find_file(dir, prefix, "images", "idx3")?;
    let labels_path = find_file(dir, prefix, "labels", "idx1")?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.n != labels.len() {
        return Err(Error::format(
            labels_path.display().to_string(),
            format!(
                "holds {} labels but {} holds {} images; expected one label per image",
                labels.len(),
                images_path.display(),
                images.n
            ),
        ));
    }
    Dataset::new(
        images.to_tensor(),
        labels.into_iter().map(usize::from).collect(),
    )
}

/// The first existing file among the accepted names, else an `Io` NotFound error.
fn find_file(dir: &Path, prefix: &str, kind: &str, idx: &str) -> Result<PathBuf> {
    let names = [
        format!("{prefix}-{kind}-{idx}-ubyte"),
        format!("{prefix}-{kind}-{idx}-ubyte.gz"),
        format!("{prefix}-{kind}.{idx}-ubyte"),
        format!("{prefix}-{kind}.{idx}-ubyte.gz"),
    ];
    for name in &names {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Io {
        path: dir.join(&names[0]),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no MNIST {kind} file in {}; tried {}",
                dir.display(),
                names.join(", ")
            ),
        ),
    })
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn images_from(dims: Vec<usize>, pixels: Vec<u8>) -> Result<IdxImages> {
    Ok(IdxImages {
        pixels,
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
    })
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Like [`parse`], but reuses the buffer of a raw file instead of copying its data.
fn parse_owned(mut bytes: Vec<u8>, name: &str, spec: &Spec) -> Result<(Vec<usize>, Vec<u8>)> {
    if is_gzip(&bytes) {
        return parse(&bytes, name, spec);
    }
    let (dims, _) = check_raw(&bytes, name, spec)?;
    bytes.drain(..spec.header_len());
    Ok((dims, bytes))
}

/// Parses a raw or gzipped IDX file into its dimensions and data bytes.
fn parse(bytes: &[u8], name: &str, spec: &Spec) -> Result<(Vec<usize>, Vec<u8>)> {
    if is_gzip(bytes) {
        return parse_gz(bytes, name, spec);
    }
    let (dims, data) = check_raw(bytes, name, spec)?;
    Ok((dims, data.to_vec()))
}

/// Validates a raw IDX file; returns the dimensions and the data slice.
fn check_raw<'a>(bytes: &'a [u8], name: &str, spec: &Spec) -> Result<(Vec<usize>, &'a [u8])> {
    let (dims, len) = check_header(bytes, name, spec, "file")?;
    let data = &bytes[spec.header_len()..];
    check_data_len(data.len(), len, &dims, name, spec, "file")?;
    Ok((dims, data))
}

/// Decompresses a gzipped IDX file, reading at most the declared size + 1 bytes of data.
fn parse_gz(bytes: &[u8], name: &str, spec: &Spec) -> Result<(Vec<usize>, Vec<u8>)> {
    let gz_err = |e: std::io::Error| {
        Error::format(
            name,
            format!(
                "gzip stream is corrupt or truncated ({e}); expected a gzipped {}",
                spec.what
            ),
        )
    };
    let mut dec = flate2::read::MultiGzDecoder::new(bytes);
    let mut head = vec![0u8; spec.header_len()];
    let mut got = 0;
    while got < head.len() {
        match dec.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gz_err(e)),
        }
    }
    let what = "decompressed stream";
    let (dims, len) = check_header(&head[..got], name, spec, what)?;
    // Deflate expands by at most 1032:1, so this capacity bounds a lying header.
    let mut data = Vec::with_capacity(len.min(bytes.len().saturating_mul(1032)));
    dec.take(len as u64 + 1)
        .read_to_end(&mut data)
        .map_err(gz_err)?;
    check_data_len(data.len(), len, &dims, name, spec, what)?;
    Ok((dims, data))
}

/// Checks the magic and dimensions; returns them and the declared data length.
fn check_header(head: &[u8], name: &str, spec: &Spec, what: &str) -> Result<(Vec<usize>, usize)> {
    if head.is_empty() {
        return Err(Error::format(
            name,
            format!("empty {what}; expected {}", spec.expected()),
        ));
    }
    if head.len() < 4 {
        return Err(Error::format(
            name,
            format!(
                "truncated: {what} is {} bytes, shorter than the 4-byte magic of {}",
                head.len(),
                spec.expected()
            ),
        ));
    }
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != spec.magic {
        let hint = if magic == IMAGES.magic {
            " (this is an IDX3 images file)"
        } else if magic == LABELS.magic {
            " (this is an IDX1 labels file)"
        } else {
            ""
        };
        return Err(Error::format(
            name,
            format!(
                "bad magic 0x{magic:08x}{hint}; expected {}",
                spec.expected()
            ),
        ));
    }
    if head.len() < spec.header_len() {
        return Err(Error::format(
            name,
            format!(
                "truncated header: {what} is {} bytes, but the header of {} is {} bytes \
                 (magic and {} big-endian u32 dimensions)",
                head.len(),
                spec.what,
                spec.header_len(),
                spec.ndims
            ),
        ));
    }
    let dims: Vec<usize> = (0..spec.ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]) as usize
        })
        .collect();
    if spec.ndims == 3 && (dims[1] == 0 || dims[2] == 0) {
        return Err(Error::format(
            name,
            format!(
                "header declares images of {}×{}; expected at least 1×1",
                dims[1], dims[2]
            ),
        ));
    }
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            Error::format(
                name,
                format!("header dimensions {dims:?} overflow the address space"),
            )
        })?;
    Ok((dims, len))
}

fn check_data_len(
    got: usize,
    declared: usize,
    dims: &[usize],
    name: &str,
    spec: &Spec,
    what: &str,
) -> Result<()> {
    let decl = if spec.ndims == 3 {
        format!("{} images of {}×{}", dims[0], dims[1], dims[2])
    } else {
        format!("{} labels", dims[0])
    };
    if got < declared {
        return Err(Error::format(
            name,
            format!(
                "truncated: header declares {decl} = {declared} data bytes, but the {what} \
                 holds {got} after the {}-byte header",
                spec.header_len()
            ),
        ));
    }
    if got > declared {
        // A raw file's length is known; a gzip stream is read only one byte past the declared.
        let amount = if what == "file" {
            got.to_string()
        } else {
            format!("at least {got}")
        };
        return Err(Error::format(
            name,
            format!(
                "trailing bytes: header declares {decl} = {declared} data bytes, but the \
                 {what} holds {amount} after the {}-byte header",
                spec.header_len()
            ),
        ));
    }
    Ok(())
}
