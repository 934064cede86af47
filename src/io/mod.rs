//! Reading and writing files: safetensors tensors (weights, fixtures) and training checkpoints.

mod checkpoint;
mod json;
pub mod torch;
mod safetensors;

pub use checkpoint::{Checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION};
pub use json::parse_json_strict;

pub use self::safetensors::{
    parse_safetensors, read_safetensors, to_safetensors_bytes, write_atomic, write_safetensors,
    TensorFile, MMAP_MIN_BYTES,
};
