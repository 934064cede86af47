//! [`CharTokenizer`]: one token per distinct character of a text.

use super::Tokenizer;
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::path::Path;

/// A character-level tokenizer: the vocabulary is the sorted set of distinct characters of the
/// text it was built from (as nanoGPT's `shakespeare_char`), id = rank in that order.
///
/// ```
/// use handgrad::tokenizer::{CharTokenizer, Tokenizer};
/// let tok = CharTokenizer::from_text("hello world");
/// assert_eq!(tok.vocab_size(), 8); // ' ', d, e, h, l, o, r, w
/// let ids = tok.encode("hello")?;
/// assert_eq!(tok.decode(&ids)?, "hello");
/// assert!(tok.encode("hello!").is_err()); // '!' is not in the vocabulary
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, usize>,
}

impl CharTokenizer {
    /// The tokenizer of every distinct character in `text`.
    pub fn from_text(text: &str) -> Self {
        let set: BTreeSet<char> = text.chars().collect();
        Self::from_chars(set.into_iter().collect()).expect("distinct characters")
    }

    /// A tokenizer with exactly these characters, id = index (e.g. restored from a checkpoint).
    ///
    /// # Errors
    /// [`Error::Config`] when a character repeats.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        let mut ids = HashMap::with_capacity(chars.len());
        for (i, &ch) in chars.iter().enumerate() {
            if ids.insert(ch, i).is_some() {
                return Err(Error::config(
                    "CharTokenizer",
                    "chars",
                    format!("{ch:?} twice"),
                    "distinct characters",
                ));
            }
        }
        Ok(CharTokenizer { chars, ids })
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The vocabulary as one string, in id order (to save beside a checkpoint).
    pub fn to_vocab_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// Writes the vocabulary to `dir/`[`CHAR_VOCAB_FILE`] (UTF-8, the characters in id order),
    /// creating `dir`; [`CharTokenizer::load`] and [`super::from_dir`] read it back.
    ///
    /// # Errors
    /// [`Error::Io`] naming the folder or file.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(CHAR_VOCAB_FILE);
        std::fs::write(&path, self.to_vocab_string()).map_err(|e| Error::io(path, e))
    }

    /// Reads a vocabulary written by [`CharTokenizer::save`]: `path` is the file or the folder
    /// holding [`CHAR_VOCAB_FILE`].
    ///
    /// # Errors
    /// [`Error::Io`] naming the file; [`Error::Format`] when it is empty or a character repeats.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join(CHAR_VOCAB_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        if text.is_empty() {
            return Err(Error::format(
                file.display().to_string(),
                "an empty character vocabulary",
            ));
        }
        Self::from_chars(text.chars().collect()).map_err(|e| {
            Error::format(
                file.display().to_string(),
                format!("not a character vocabulary: {e}"),
            )
        })
    }
}

/// The file name [`CharTokenizer::save`] writes: `char_vocab.txt`.
pub const CHAR_VOCAB_FILE: &str = "char_vocab.txt";

impl Tokenizer for CharTokenizer {
    fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// # Errors
    /// [`Error::Label`] naming the first character that is not in the vocabulary and its
    /// character position.
    fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .enumerate()
            .map(|(i, ch)| {
                self.ids.get(&ch).copied().ok_or_else(|| {
                    Error::label(
                        "CharTokenizer::encode",
                        format!(
                            "character {ch:?} at position {i} is not in the vocabulary of {} \
                             characters",
                            self.chars.len()
                        ),
                    )
                })
            })
            .collect()
    }

    /// # Errors
    /// [`Error::Label`] naming the first id `≥ vocab_size`.
    fn decode(&self, ids: &[usize]) -> Result<String> {
        ids.iter()
            .map(|&id| {
                self.chars.get(id).copied().ok_or_else(|| {
                    Error::label(
                        "CharTokenizer::decode",
                        format!(
                            "token id {id} is out of range for a vocabulary of {} (ids must be < {})",
                            self.chars.len(),
                            self.chars.len()
                        ),
                    )
                })
            })
            .collect()
    }
}
