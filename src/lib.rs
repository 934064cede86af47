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
//! - [`model`]: [`Sequential`] (Keras-style `compile` / `fit` / `evaluate` / `predict`),
//!   losses, metrics, callbacks, checkpoints; [`transformer`]: the GPT-2 blocks,
//!   [`transformer::Gpt`], its KV cache, [`transformer::LmTrainer`], Hugging Face import/export,
//! - [`generate`]: Hugging Face–style generation (greedy, sampling, beam search),
//! - [`optim`]: optimizers, clipping and schedules; [`data`]: embedded data sets and loaders;
//!   [`tokenizer`]: text ↔ token ids (character-level; byte-level BPE of GPT-2 and Llama-family
//!   models from GGUF or Hugging Face files; streaming decode; chat templates);
//!   [`io`]: safetensors and checkpoints; [`describe`]: any image classifier and any causal
//!   language model together (a photo recognised and described);
//!   [`viz`]: SVG pictures.
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
//!
//! A GPT, trained and sampled:
//!
//! ```
//! use handgrad::generate::GenerateConfig;
//! use handgrad::tokenizer::{CharTokenizer, Tokenizer};
//! use handgrad::transformer::{Gpt, GptConfig};
//! use ndarray::Array2;
//!
//! let tok = CharTokenizer::from_text("hello world");
//! let ids = tok.encode("hello world")?;                       // (T) = 11 token ids
//! let mut gpt = Gpt::new(GptConfig::new(tok.vocab_size(), 16, 1, 2, 16), &mut handgrad::init::rng(0))?;
//! let x = Array2::from_shape_vec((1, 10), ids[..10].to_vec()).unwrap();   // (B, T)
//! let y = Array2::from_shape_vec((1, 10), ids[1..].to_vec()).unwrap();    // next tokens
//! let mut opt = handgrad::optim::AdamW::new(1e-2);
//! for _ in 0..100 {
//!     gpt.zero_grad();
//!     gpt.forward_loss(x.view(), y.view())?;
//!     gpt.backward()?;
//!     handgrad::optim::Optimizer::step(&mut opt, &mut gpt.params_mut())?;
//! }
//! let out = gpt.generate(&tok.encode("hel")?, &GenerateConfig::new().max_length(11))?;
//! assert_eq!(tok.decode(&out[0])?, "hello world");
//! # Ok::<(), handgrad::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod buffers;
pub mod data;
pub mod describe;
pub mod distributed;
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
pub mod vision;
pub mod viz;

/// The `ndarray` version handgrad's tensors are built on, re-exported so that a dependent crate
/// can slice and build [`Tensor`]s (`handgrad::ndarray::s![..]`) without pinning a matching
/// `ndarray` dependency of its own.
pub use ndarray;

pub use error::{Error, Result};
pub use layers::{Layer, Mode};
pub use model::Sequential;
pub use param::Param;
pub use tensor::Tensor;

/// The README's code blocks, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
