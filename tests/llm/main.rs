//! Llama-family integration tests in one binary (one link): tokenizers and chat templates, one
//! module per file.

mod chat;
mod pretokenize;
mod tokenizer_llama;
#[allow(dead_code)] // used by the GGUF test once the GGUF reader is merged
mod smollm2_checks;
