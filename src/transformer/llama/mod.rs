//! Llama-family causal language models (SmolLM2, Llama 2/3, TinyLlama, …): [`LlamaConfig`],
//! the [`Llama`] model with its [`Weight`]s (f32 or encoded), loading from Hugging Face folders
//! and GGUF files, and generation through the shared KV cache.
//!
//! The model composes the crate's kernels: RMSNorm ([`crate::ops::rms_norm`]), RoPE in both
//! layouts ([`crate::ops::rope`]), grouped-query attention ([`crate::ops::attention`] and
//! [`crate::ops::kv_attention`]), SwiGLU ([`crate::ops::swiglu`]) and the quantized products
//! ([`crate::ops::quant`]).

mod backward;
mod cached;
mod checkpoint;
mod config;
mod gguf;
mod load;
mod lora;
mod memory;
mod model;
mod params;
mod train;
mod weight;

pub use config::LlamaConfig;
pub use gguf::config_from_gguf;
pub use load::unpermute_rows;
pub use lora::{LoraConfig, LoraLlama};
pub use memory::TrainMemory;
pub use model::{Llama, LlamaLayer};
pub use params::shift_labels;
pub use weight::Weight;
