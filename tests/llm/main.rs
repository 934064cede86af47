//! Language-model tests in one binary: the Llama model (Hugging Face and GGUF weights), GGUF
//! reading and quantized kernels, Llama tokenizers and chat templates, training, and the real
//! SmolLM2 model when it has been fetched.

mod chat;
#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;
mod gguf;
mod gguf_hostile;
mod llama;
mod llama_finetune;
mod llama_gguf;
mod llama_lora;
mod llama_memory;
mod llama_train;
mod pretokenize;
mod quant;
mod smollm2;
mod smollm2_checks;
mod tokenizer_gguf;
mod tokenizer_llama;
