//! [`StreamDecoder`]: generated ids → text as it becomes complete UTF-8.

use super::bpe_tokenizer::BpeTokenizer;
use crate::error::Result;

/// Decodes ids one at a time (as a model generates them) into text, returning only what has
/// become complete UTF-8: a byte-level token can end in the middle of a multi-byte char (an
/// emoji often spans two or three tokens), so those bytes are held back until the char is
/// complete. Invalid byte sequences become U+FFFD as soon as they are certain, and
/// [`StreamDecoder::finish`] turns an incomplete tail into U+FFFD. The pieces concatenate to
/// exactly what [`BpeTokenizer::decode`] (or [`BpeTokenizer::decode_skip_special`] with
/// `skip_special`) gives for all the ids at once.
///
/// # Example
///
/// ```
/// use handgrad::prelude::*;
/// use handgrad::tokenizer::StreamDecoder;
///
/// let tok = Gpt2Tokenizer::embedded()?;
/// let ids = tok.encode("hi 😀!")?;
/// let mut stream = StreamDecoder::new(&tok, false);
/// let mut text = String::new();
/// for &id in &ids {
///     text += &stream.push(id)?; // "hi", " ", "", "😀", "!": the emoji waits for its last byte
/// }
/// text += &stream.finish();
/// assert_eq!(text, tok.decode(&ids)?);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    tok: BpeTokenizer,
    skip_special: bool,
    /// Bytes of an incomplete char at the end (at most 3).
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder for `tok`; `skip_special` leaves special tokens out (HF
    /// `skip_special_tokens=True`).
    pub fn new(tok: &BpeTokenizer, skip_special: bool) -> Self {
        Self {
            tok: tok.clone(),
            skip_special,
            pending: Vec::with_capacity(8),
        }
    }

    /// Adds one id and returns the text that became complete (often empty or one token's text).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming an id `>= vocab_size()`; the decoder is then unchanged.
    pub fn push(&mut self, id: usize) -> Result<String> {
        self.tok
            .decode_into(&[id], self.skip_special, &mut self.pending)?;
        let mut out = String::new();
        let mut at = 0;
        loop {
            match std::str::from_utf8(&self.pending[at..]) {
                Ok(s) => {
                    out.push_str(s);
                    at = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    let ok = &self.pending[at..at + valid];
                    // from_utf8 just checked these bytes.
                    out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            at += valid + bad;
                        }
                        None => {
                            at += valid; // an incomplete char at the end: wait for more
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..at);
        Ok(out)
    }

    /// Ends the stream: returns the held-back bytes of an incomplete char as U+FFFD (empty if
    /// none) and resets the decoder for a new stream.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes of an incomplete char are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
