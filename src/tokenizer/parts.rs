//! [`BpeTokenizer::from_parts`]: a tokenizer from plain lists (what a GGUF file or any other
//! container holds), and the checked intermediate form every loader builds before the tables.

use super::bpe_tokenizer::{BpeOptions, BpeTokenizer};
use super::load::Merge;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};

/// GGUF / llama.cpp token types (`tokenizer.ggml.token_type`).
pub(crate) mod token_type {
    /// An ordinary vocab token.
    pub const NORMAL: i64 = 1;
    /// The unknown token: special.
    pub const UNKNOWN: i64 = 2;
    /// A control token (`<|im_start|>`): special.
    pub const CONTROL: i64 = 3;
    /// A user-defined added token: matched whole, decoded as text.
    pub const USER_DEFINED: i64 = 4;
    /// An unused slot.
    pub const UNUSED: i64 = 5;
    /// A byte token (SentencePiece `<0x41>`).
    pub const BYTE: i64 = 6;
}

/// The tokens, merges and settings of a tokenizer before the tables are built.
pub(crate) struct Parts {
    /// `tokens[id]`.
    pub(crate) tokens: Vec<String>,
    /// Spelling → id (for a spelling given twice, the last id, as llama.cpp and `transformers`).
    pub(crate) ids: HashMap<String, u32>,
    /// The merges in priority order.
    pub(crate) merges: Vec<Merge>,
    /// `(id, special)` of the tokens matched whole in the text.
    pub(crate) added: BTreeMap<u32, bool>,
    /// Special ids and settings.
    pub(crate) options: BpeOptions,
    /// The source named in errors.
    pub(crate) source: String,
}

/// The inverse of `tokens`; the caller has checked `tokens.len() < 2^32`.
pub(crate) fn ids_of(tokens: &[String]) -> HashMap<String, u32> {
    (0u32..).zip(tokens).map(|(i, t)| (t.clone(), i)).collect()
}

/// The merge `left + right`, whose parts and result must be tokens of `ids`.
pub(crate) fn resolve_merge(
    left: &str,
    right: &str,
    ids: &HashMap<String, u32>,
    at: impl Fn() -> String,
) -> Result<Merge> {
    let id = |token: &str| {
        ids.get(token).copied().ok_or_else(|| {
            Error::format(
                at(),
                format!(
                    "the merge {left:?} + {right:?} needs the token {token:?}, which is not in \
                     the vocab"
                ),
            )
        })
    };
    Ok(Merge {
        left: id(left)?,
        right: id(right)?,
        merged: id(&format!("{left}{right}"))?,
    })
}

/// Splits a merge written as one string, `"left right"`, at its first space after the first
/// char (as llama.cpp reads `tokenizer.ggml.merges`).
pub(crate) fn split_merge(merge: &str) -> Option<(&str, &str)> {
    let first = merge.chars().next()?.len_utf8();
    let at = first + merge[first..].find(' ')?;
    Some((&merge[..at], &merge[at + 1..]))
}

impl Parts {
    /// Checks the vocab size and indexes the tokens.
    pub(crate) fn new(tokens: Vec<String>, options: BpeOptions, source: String) -> Result<Self> {
        if tokens.len() >= u32::MAX as usize {
            return Err(Error::format(
                source,
                format!("{} tokens; at most 2^32 - 2", tokens.len()),
            ));
        }
        Ok(Self {
            ids: ids_of(&tokens),
            tokens,
            merges: Vec::new(),
            added: BTreeMap::new(),
            options,
            source,
        })
    }

    /// Adds merges written as `"left right"` strings.
    pub(crate) fn add_merge_strings<S: AsRef<str>>(
        &mut self,
        merges: &[S],
        key: &str,
    ) -> Result<()> {
        self.merges.reserve(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let m = m.as_ref();
            let at = || format!("{}: {key}[{i}]", self.source);
            let (left, right) = split_merge(m).ok_or_else(|| {
                Error::format(at(), format!("expected \"left right\", got {m:?}"))
            })?;
            self.merges.push(resolve_merge(left, right, &self.ids, at)?);
        }
        Ok(())
    }

    /// Marks `id` as matched whole (special or not); a later call for the same id wins.
    pub(crate) fn mark_added(&mut self, id: u32, special: bool) {
        self.added.insert(id, special);
    }

    /// Builds the tokenizer.
    pub(crate) fn build(self, kind: &'static str) -> Result<BpeTokenizer> {
        BpeTokenizer::build(
            kind,
            self.tokens,
            self.ids,
            self.merges,
            &self.added.into_iter().collect::<Vec<_>>(),
            self.options,
            &self.source,
        )
    }
}

impl BpeTokenizer {
    /// A byte-level BPE from plain lists, as a GGUF file stores them: `tokens[id]` in the
    /// byte-level spelling (`"Ġworld"`), `token_types[id]` as llama.cpp's types (1 normal,
    /// 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; empty = all normal), `merges` as
    /// `"left right"` strings in priority order, and the special ids and settings.
    ///
    /// Control (3) and unknown (2) tokens are special: matched whole in the text when special
    /// tokens are parsed, left out by [`BpeTokenizer::decode_skip_special`]. User-defined (4)
    /// tokens are always matched whole and always decoded.
    ///
    /// ```
    /// use handgrad::prelude::*;
    /// use handgrad::tokenizer::{BpeOptions, BpeTokenizer};
    ///
    /// let (encoder, _) = Gpt2Tokenizer::embedded_files()?;
    /// let gpt2 = Gpt2Tokenizer::from_strs(&encoder, "")?; // only the byte tokens are used
    /// let mut tokens: Vec<String> = (0..256).map(|id| gpt2.id_to_token(id).unwrap().into()).collect();
    /// tokens.extend(["Ġw".into(), "<|im_end|>".into()]);
    /// let mut types = vec![1; 257];
    /// types.push(3);
    /// let eos = BpeOptions { eos_token_id: Some(257), ..Default::default() };
    /// let tok = BpeTokenizer::from_parts(tokens, types, &["Ġ w"], eos)?;
    /// assert_eq!(tok.encode(" w<|im_end|>")?, [256, 257]);
    /// assert_eq!(tok.decode_skip_special(&[256, 257])?, " w");
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Format`] for: `token_types` of another length than `tokens` or a type outside
    /// 1..=6; a merge that is not two tokens or whose tokens or result are not in the vocab; a
    /// vocab without the 256 single-byte tokens; an id in `options` `>= tokens.len()`.
    pub fn from_parts(
        tokens: Vec<String>,
        token_types: Vec<i32>,
        merges: &[&str],
        options: BpeOptions,
    ) -> Result<Self> {
        let types: Vec<i64> = token_types.into_iter().map(i64::from).collect();
        let mut parts = Parts::new(tokens, options, "BpeTokenizer::from_parts".into())?;
        parts.set_token_types(&types, "token_types")?;
        parts.add_merge_strings(merges, "merges")?;
        parts.build("BpeTokenizer")
    }
}

impl Parts {
    /// Marks the added tokens by llama.cpp token type (see [`BpeTokenizer::from_parts`]).
    pub(crate) fn set_token_types(&mut self, types: &[i64], key: &str) -> Result<()> {
        if types.is_empty() {
            return Ok(());
        }
        if types.len() != self.tokens.len() {
            return Err(Error::format(
                &self.source,
                format!(
                    "{key} has {} entries for {} tokens",
                    types.len(),
                    self.tokens.len()
                ),
            ));
        }
        for (id, &t) in (0u32..).zip(types) {
            match t {
                token_type::UNKNOWN | token_type::CONTROL => self.mark_added(id, true),
                token_type::USER_DEFINED => self.mark_added(id, false),
                token_type::NORMAL | token_type::UNUSED | token_type::BYTE => {}
                _ => {
                    return Err(Error::format(
                        &self.source,
                        format!(
                            "{key}[{id}] = {t} (token {:?}); expected a llama.cpp token type \
                             1..=6",
                            self.tokens[id as usize]
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}
