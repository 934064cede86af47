//! Tokenizers: text ↔ token ids.

mod char;

pub use self::char::CharTokenizer;

/// Text ↔ token ids.
pub trait Tokenizer {
    /// Number of ids (valid ids are `0..vocab_size()`).
    fn vocab_size(&self) -> usize;
    /// Encodes text. Errors: a tokenizer that cannot represent the text (e.g. unknown char).
    fn encode(&self, text: &str) -> crate::Result<Vec<usize>>;
    /// Decodes ids. Errors: an id >= vocab_size (message names the id and the vocab size).
    fn decode(&self, ids: &[usize]) -> crate::Result<String>;
}
