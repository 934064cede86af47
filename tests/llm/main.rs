//! Llama-family integration tests in one binary (one link): tokenizers and chat templates, one
//! module per file.

mod chat;
mod tokenizer_llama;
