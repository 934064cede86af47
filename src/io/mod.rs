//! Reading and writing files: safetensors tensors (weights, fixtures, checkpoints).

mod safetensors;

pub use self::safetensors::{
    parse_safetensors, read_safetensors, to_safetensors_bytes, write_atomic, write_safetensors,
    TensorFile,
};
