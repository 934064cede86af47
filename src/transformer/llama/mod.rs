//! Llama-family causal language models (SmolLM2, Llama 2/3, TinyLlama, …): [`LlamaConfig`],
//! the [`Llama`] model with its [`Weight`]s (f32 or encoded), loading from Hugging Face folders
//! and GGUF files, and generation through the shared KV cache.
//!
//! The model composes the crate's kernels: RMSNorm ([`crate::ops::rms_norm`]), RoPE in both
//! layouts ([`crate::ops::rope`]), grouped-query attention ([`crate::ops::attention`] and
//! [`crate::ops::kv_attention`]), SwiGLU ([`crate::ops::swiglu`]) and the quantized products
//! ([`crate::ops::quant`]).
//!
//! # Training memory
//!
//! [`Llama::forward_loss`] keeps, per decoder layer, with `N = B·T` rows, `W = (NH + 2·NKV)·HS`
//! (packed `q | k | v`), `Q = NH·HS`, `C` = `hidden_size`, `F` = `intermediate_size`, in `f32`:
//!
//! ```text
//! x_in, n1, x_mid, n2   4·N·C      layer input, the two norm outputs, residual after attention
//! rstd1, rstd2          2·N        1/rms of the two norm inputs
//! qkv                   N·W        q | k | v after RoPE
//! att                   B·NH·T²    attention probabilities
//! y                     N·Q        merged heads, input of o_proj
//! g, u, a               3·N·F      gate, up, silu(g)·u
//! -------------------------------------------------------------
//! per layer             4·(N·(4C + W + Q + 3F + 2) + B·NH·T²) bytes
//! ```
//!
//! SmolLM2-135M (C 576, F 1536, NH 9, NKV 3, HS 64: W 960, Q 576) keeps
//! `4·(8450·N + 9·B·T²)` bytes per layer: 11.0 MB at B = 1, T = 256 and 44.0 MB at B = 4,
//! T = 256, times 30 layers (330 MB / 1.32 GB). With recomputation
//! ([`Llama::set_gradient_checkpointing`]) a layer keeps only `x_in` (`4·N·C` bytes: 0.59 / 2.36
//! MB) and the backward re-runs one layer at a time into a single set of the buffers above (plus
//! one `(N, C)` residual stream). Outside the layers the training state holds the token ids and
//! positions (`2·N` `usize`s), the final norm's input, output and `1/rms` (`4·(2·N·C + N)`
//! bytes), the logits / `dlogits` (`4·N·V`: 201 MB for SmolLM2 at B = 4, T = 256) and the
//! backward's scratch gradients (`4·(3·N·C + 3·N·F + N·Q + N·W + C)` bytes). The parameters
//! add 16 bytes each when trained with AdamW (value, gradient and two moments): 2.15 GB for
//! SmolLM2's 134.5 M. [`LlamaConfig::train_memory`] computes these parts and
//! [`Llama::train_memory_in_use`] sums the arrays actually held, so the two can be compared
//! (`tests/llm` does, on the tiny model and on SmolLM2): by this accounting SmolLM2-135M
//! fine-tunes with AdamW at T = 256 in 2.24 GB (B = 1) / 2.51 GB (B = 4) with recomputation and
//! 2.54 / 3.71 GB without; the measured peak RSS (`cargo bench --bench llm -- train`) is 50–55
//! MiB more.
//!
//! Batches are rectangular `(B, T)`: [`crate::data::ChatDataset`] pads each conversation to `T`
//! with [`IGNORE_INDEX`](crate::transformer::IGNORE_INDEX) targets instead of packing several
//! into one row, so no attention mask is needed (causal attention never lets a real token see
//! the padding after it).

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
