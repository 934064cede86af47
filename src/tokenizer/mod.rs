//! Tokenizers: text ↔ token ids.
//!
//! - [`CharTokenizer`]: one token per distinct character of a text (char-level models).
//! - [`Gpt2Tokenizer`]: GPT-2's byte-level BPE, from OpenAI's or Hugging Face's files or
//!   embedded in the crate ([`Gpt2Tokenizer::embedded`]), or trained on a corpus
//!   ([`Gpt2Tokenizer::train`]).

mod bpe;
mod bytes;
mod char;
mod gpt2;
mod load;
mod pretokenize;
mod train;
mod unicode_classes;

pub use self::char::CharTokenizer;
pub use gpt2::{Gpt2Tokenizer, ENDOFTEXT};

/// Text ↔ token ids.
pub trait Tokenizer {
    /// Number of ids (valid ids are `0..vocab_size()`).
    fn vocab_size(&self) -> usize;
    /// Encodes text. Errors: a tokenizer that cannot represent the text (e.g. unknown char).
    fn encode(&self, text: &str) -> crate::Result<Vec<usize>>;
    /// Decodes ids. Errors: an id >= vocab_size (message names the id and the vocab size).
    fn decode(&self, ids: &[usize]) -> crate::Result<String>;
}
