//! Integration tests of the Llama-family stack in one binary: the GGUF reader and writer, and
//! the quantised kernels.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;
mod gguf;
mod gguf_hostile;
mod quant;
