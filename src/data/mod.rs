//! Data sets: an in-memory [`Dataset`], seeded shuffling batches, and the embedded data.

mod augment;
mod cifar;
mod dataset;
mod digits;
mod fashion_mnist;
mod idx;
mod image;

pub use dataset::{Batches, Dataset};
pub use digits::{digits, parse_digits_csv};
