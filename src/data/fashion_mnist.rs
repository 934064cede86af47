//! The Fashion-MNIST test split (10,000 grey 28×28 images of 10 clothing classes), embedded.
//!
//! Source: Zalando Research (<https://github.com/zalandoresearch/fashion-mnist>), MIT, as shipped
//! by the Debian package `dataset-fashion-mnist`; see NOTICE and `data/fashion-mnist/COPYRIGHT`.
//! The 60,000-image train split is not embedded; load it from disk with
//! [`load_mnist`](super::load_mnist).

use super::idx::{parse_idx_images, parse_idx_labels};
use super::Dataset;
use crate::error::{Error, Result};

const IMAGES_GZ: &[u8] = include_bytes!("../../data/fashion-mnist/t10k-images-idx3-ubyte.gz");
const LABELS_GZ: &[u8] = include_bytes!("../../data/fashion-mnist/t10k-labels-idx1-ubyte.gz");

/// The Fashion-MNIST class names, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The embedded Fashion-MNIST test split: 10,000 images, 1,000 per class.
///
/// # Shapes
/// → inputs `(10000, 1, 28, 28)` as `f32` in `[0, 1]` (pixel / 255), labels `[10000]` in `0..10`
/// (names in [`FASHION_MNIST_CLASSES`]).
///
/// # Errors
/// Only if the embedded files were corrupt ([`Error::Format`]).
pub fn fashion_mnist() -> Result<Dataset> {
    let images = parse_idx_images(IMAGES_GZ, "t10k-images-idx3-ubyte.gz")?;
    let labels = parse_idx_labels(LABELS_GZ, "t10k-labels-idx1-ubyte.gz")?;
    if images.n != labels.len() {
        return Err(Error::format(
            "t10k-labels-idx1-ubyte.gz",
            format!("{} labels for {} images", labels.len(), images.n),
        ));
    }
    if let Some(&l) = labels.iter().find(|&&l| l > 9) {
        return Err(Error::format(
            "t10k-labels-idx1-ubyte.gz",
            format!("label {l}; expected 0..=9"),
        ));
    }
    Dataset::new(
        images.to_tensor(),
        labels.into_iter().map(usize::from).collect(),
    )
}
