//! Reading and writing files: safetensors tensors (weights, fixtures), GGUF models (quantised
//! weights, memory-mapped) and training checkpoints.

mod bytes;
mod checkpoint;
mod gguf;
mod json;
mod safetensors;
pub mod torch;

pub use bytes::SharedBytes;
pub use checkpoint::{Checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION};
pub use gguf::{gguf_bytes, write_gguf, GgufFile, GgufTensorInfo, GgufTensorRef, GgufValue};
pub use json::parse_json_strict;

pub use self::safetensors::{
    parse_safetensors, read_safetensors, to_safetensors_bytes, write_atomic, write_safetensors,
    TensorFile, MMAP_MIN_BYTES,
};
