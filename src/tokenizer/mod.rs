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
mod gguf;
mod gpt2;
mod hf_dir;
mod hf_json;
mod load;
mod options;
mod parts;
mod pretokenize;
mod pretokenize_llama3;
mod stream;
mod train;
mod unicode_classes;

pub use self::char::{CharTokenizer, CHAR_VOCAB_FILE};
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

/// A boxed tokenizer (e.g. from [`from_dir`]) is a tokenizer.
impl<T: Tokenizer + ?Sized> Tokenizer for Box<T> {
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn encode(&self, text: &str) -> crate::Result<Vec<usize>> {
        (**self).encode(text)
    }
    fn decode(&self, ids: &[usize]) -> crate::Result<String> {
        (**self).decode(ids)
    }
}

/// The tokenizer saved in a model folder, whichever kind it is: `tokenizer.json`,
/// `encoder.json` + `vocab.bpe` or `vocab.json` + `merges.txt` (byte-level BPE, see
/// [`BpeTokenizer::from_dir`]), else [`CHAR_VOCAB_FILE`] (a [`CharTokenizer`]).
///
/// ```no_run
/// use handgrad::tokenizer::Tokenizer;
/// let tok = handgrad::tokenizer::from_dir("checkpoints/char-gpt")?;
/// println!("{} tokens", tok.vocab_size());
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// [`crate::Error::Io`] naming the folder and listing the files looked for when it holds none
/// of them; otherwise the loader's errors.
pub fn from_dir(dir: impl AsRef<std::path::Path>) -> crate::Result<Box<dyn Tokenizer>> {
    let dir = dir.as_ref();
    let has = |f: &str| dir.join(f).is_file();
    let bpe = has("tokenizer.json")
        || (has("encoder.json") && has("vocab.bpe"))
        || (has("vocab.json") && has("merges.txt"));
    if bpe {
        return Ok(Box::new(BpeTokenizer::from_dir(dir)?));
    }
    if has(CHAR_VOCAB_FILE) {
        return Ok(Box::new(CharTokenizer::load(dir)?));
    }
    Err(crate::Error::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no tokenizer here; expected tokenizer.json, encoder.json + vocab.bpe, \
                 vocab.json + merges.txt or {CHAR_VOCAB_FILE}"
            ),
        ),
    ))
}
