//! Integration tests of the Llama-family stack in one binary (one link): the GGUF reader and
//! writer, the quantised kernels, tokenizers and chat templates, one module per file.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;
mod chat;
mod gguf;
mod gguf_hostile;
mod pretokenize;
mod quant;
mod smollm2_checks;
mod tokenizer_gguf;
mod tokenizer_llama;
