//! Data sets: an in-memory [`Dataset`], seeded shuffling batches, and the embedded data.

mod dataset;
mod digits;

pub use dataset::{Batches, Dataset};
pub use digits::{digits, parse_digits_csv};
