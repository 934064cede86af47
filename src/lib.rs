//! # handgrad
//!
//! A pure-Rust deep-learning crate on [`ndarray`] + [`rayon`], `f32` on the CPU, in which every
//! operation has a hand-written forward **and** backward pass (no autograd tape), verified against
//! PyTorch by golden tests and finite differences.
//!
//! ## Shape letters
//!
//! Used in every `# Shapes` section:
//!
//! | letter | meaning |
//! |---|---|
//! | `B` | batch |
//! | `T` | time (sequence position) |
//! | `C` | channels / embedding width / features |
//! | `NH`, `HS` | attention heads, head size |
//! | `V` | vocabulary size |
//! | `N, C, H, W` | images: batch, channels, height, width (NCHW, PyTorch layout) |
//! | `M, K, N` | matrix products: `(M, K)·(K, N) → (M, N)` |
//!
//! ## Tiers
//!
//! - [`ops`]: pure kernels (`xxx_forward` / `xxx_backward`),
//! - [`layers`]: stateful building blocks with the [`Layer`] trait,
//! - [`model`]: [`Sequential`] and losses,
//! - [`optim`]: optimizers, clipping and schedules; [`data`]: embedded data sets;
//!   [`tokenizer`]: text ↔ token ids (GPT-2's byte-level BPE).
//!
//! ## Quickstart
//!
//! ```
//! use handgrad::prelude::*;
//!
//! let mut rng = handgrad::init::rng(0);
//! let mut model = Sequential::new(&[4])
//!     .add(Dense::new(8).relu())
//!     .add(Dense::new(3))
//!     .build(&mut rng)?;
//! let mut opt = Adam::new(1e-2);
//! let x = Tensor::from_shape_vec(vec![2, 4], vec![0.1, 0.2, 0.3, 0.4, -0.1, -0.2, -0.3, -0.4])
//!     .unwrap();
//! let first = model.train_step(&x, &[0, 2], &mut opt)?;
//! for _ in 0..50 {
//!     model.train_step(&x, &[0, 2], &mut opt)?;
//! }
//! let last = model.train_step(&x, &[0, 2], &mut opt)?;
//! assert!(last < first);
//! # Ok::<(), handgrad::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod data;
pub mod describe;
pub mod error;
pub mod generate;
pub mod init;
pub mod io;
pub mod layers;
pub mod model;
pub mod ops;
pub mod optim;
pub mod param;
pub mod prelude;
pub mod tensor;
pub mod tokenizer;
pub mod transformer;
pub mod viz;

pub use error::{Error, Result};
pub use layers::{Layer, Mode};
pub use model::Sequential;
pub use param::Param;
pub use tensor::Tensor;

/// The README's code blocks, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
