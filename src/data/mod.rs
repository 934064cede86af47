//! Data sets: an in-memory [`Dataset`], seeded shuffling batches, and the embedded data.

mod augment;
mod chat;
mod cifar;
mod dataset;
mod digits;
mod fashion_mnist;
mod idx;
mod image;
mod image_folder;
mod lm;
pub(crate) mod source;
mod text;

pub use augment::{Augment, DEFAULT_FLIP_PROB};
pub use chat::ChatDataset;
pub use cifar::{
    load_cifar10, parse_cifar10_batch, read_cifar10_batch, CIFAR10_CLASSES, CIFAR10_RECORD_BYTES,
};
pub use dataset::{Batches, Dataset};
pub use digits::{digits, parse_digits_csv};
pub use fashion_mnist::{fashion_mnist, FASHION_MNIST_CLASSES};
pub use idx::{
    load_mnist, parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels, IdxImages,
    Split,
};
pub use image::{channel_stats, denormalize, from_nhwc_u8, normalize, to_nhwc_u8};
pub use image_folder::ImageFolder;
pub use lm::LmDataset;
pub use source::BatchSource;
pub use text::moby_dick;
