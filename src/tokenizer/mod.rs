//! Tokenizers: text ↔ token ids.
//!
//! - [`CharTokenizer`]: one token per distinct character of a text (char-level models).
//! - [`BpeTokenizer`] (alias [`Gpt2Tokenizer`]): byte-level BPE, GPT-2's and the Llama-family
//!   ones (SmolLM2, Llama 3): from OpenAI's or Hugging Face's files ([`BpeTokenizer::from_dir`],
//!   [`BpeTokenizer::from_tokenizer_json`]), from plain lists ([`BpeTokenizer::from_parts`]),
//!   embedded in the crate ([`BpeTokenizer::embedded`]), or trained on a corpus
//!   ([`BpeTokenizer::train`]).
//! - [`StreamDecoder`]: decodes generated ids one at a time into complete UTF-8 text.
//! - [`ChatTemplate`], [`Message`]: chat prompts rendered by the model's Jinja template.

mod added;
mod bpe;
mod bpe_tokenizer;
mod bytes;
mod char;
mod chat;
mod gpt2;
mod hf_dir;
mod hf_json;
mod load;
mod parts;
mod pretokenize;
mod pretokenize_llama3;
mod stream;
mod train;
mod unicode_classes;

pub use self::char::CharTokenizer;
pub use bpe_tokenizer::{BpeOptions, BpeTokenizer, EncodeOptions};
pub use chat::{ChatTemplate, Message};
pub use gpt2::{Gpt2Tokenizer, ENDOFTEXT};
pub use pretokenize::{Pretokenizer, SUPPORTED_GGUF_PRE};
pub use stream::StreamDecoder;

/// Text ↔ token ids.
pub trait Tokenizer {
    /// Number of ids (valid ids are `0..vocab_size()`).
    fn vocab_size(&self) -> usize;
    /// Encodes text. Errors: a tokenizer that cannot represent the text (e.g. unknown char).
    fn encode(&self, text: &str) -> crate::Result<Vec<usize>>;
    /// Decodes ids. Errors: an id >= vocab_size (message names the id and the vocab size).
    fn decode(&self, ids: &[usize]) -> crate::Result<String>;
}
