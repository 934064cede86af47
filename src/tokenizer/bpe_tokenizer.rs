//! [`BpeTokenizer`]: byte-level BPE (GPT-2, SmolLM2, Llama 3 and other Llama-family models):
//! the tables, encoding and decoding. The loaders are in `gpt2.rs` (OpenAI / HF vocab + merges
//! files), `hf.rs` (`tokenizer.json`, folders), `parts.rs` and `gguf.rs`.

use super::added::AddedTokens;
use super::bpe::{bpe, FastBuild, MergeMap};
use super::bytes::{bytes_to_token, token_to_bytes, BYTE_TO_CHAR};
use super::load::Merge;
use super::pretokenize::Pretokenizer;
use super::Tokenizer;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// At most this many distinct pre-tokens are kept in the merge cache (then it stops growing).
const CACHE_CAPACITY: usize = 1 << 17;

/// A byte-level BPE tokenizer: GPT-2's (`transformers`' `GPT2Tokenizer`, OpenAI's `encoder.py`)
/// and the Llama-family ones built on it (SmolLM2, Llama 3, ...; llama.cpp's `gpt2` vocab type).
///
/// Encoding: the added tokens (HF `added_tokens`, GGUF CONTROL / USER_DEFINED tokens; for GPT-2
/// files `<|endoftext|>`) are matched whole in the text, leftmost and longest first; the text
/// between them is split by the [`Pretokenizer`], each piece's UTF-8 bytes are written as chars
/// through GPT-2's `bytes_to_unicode` table and merged by BPE in the order of the merges.
/// Decoding maps every id back to its bytes, so any text round-trips exactly:
/// `decode(encode(s)) == s`.
///
/// Cloning is cheap (the tables and the merge cache are shared), and the tokenizer is `Send +
/// Sync`.
///
/// # Example
///
/// ```
/// use handgrad::prelude::*;
///
/// let tok = Gpt2Tokenizer::embedded()?; // GPT-2's own files, compiled into the crate
/// let ids = tok.encode("Hello, how are you?<|endoftext|>")?;
/// assert_eq!(ids, [15496, 11, 703, 389, 345, 30, 50256]);
/// assert_eq!(tok.decode(&ids)?, "Hello, how are you?<|endoftext|>");
/// assert_eq!(tok.decode_skip_special(&ids)?, "Hello, how are you?");
/// assert_eq!(tok.vocab_size(), 50257);
/// assert_eq!(tok.eos_token_id(), Some(50256));
/// assert_eq!(tok.id_to_token(995), Some("Ġworld")); // Ġ is the space byte
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Clone)]
pub struct BpeTokenizer {
    pub(crate) inner: Arc<Inner>,
}

/// The special-token ids and encoding settings of a [`BpeTokenizer`].
///
/// Defaults: GPT-2's pattern, no special ids, nothing added, merges always applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpeOptions {
    /// How text is split before BPE (default [`Pretokenizer::Gpt2`]).
    pub pretokenizer: Pretokenizer,
    /// Beginning-of-sequence id (HF `bos_token`, GGUF `tokenizer.ggml.bos_token_id`).
    pub bos_token_id: Option<usize>,
    /// End-of-sequence id (HF `eos_token`, GGUF `tokenizer.ggml.eos_token_id`).
    pub eos_token_id: Option<usize>,
    /// Padding id (HF `pad_token`, GGUF `tokenizer.ggml.padding_token_id`).
    pub pad_token_id: Option<usize>,
    /// Unknown-token id (HF `unk_token`, GGUF `tokenizer.ggml.unknown_token_id`); byte-level BPE
    /// never produces it.
    pub unk_token_id: Option<usize>,
    /// Prepend BOS when special tokens are added (HF `add_bos_token`, GGUF
    /// `tokenizer.ggml.add_bos_token`; default false).
    pub add_bos_token: bool,
    /// Append EOS when special tokens are added (HF `add_eos_token`; default false).
    pub add_eos_token: bool,
    /// A piece that is itself a vocab token is taken whole, without merging (HF BPE
    /// `ignore_merges`, set by Llama 3; default false).
    pub ignore_merges: bool,
}

/// How [`BpeTokenizer::encode_with`] treats special tokens.
///
/// Default: both true, as HF `tokenizer.encode(text)` (and [`Tokenizer::encode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Match special-token spellings (`<|im_start|>`) in the text as their ids (llama.cpp
    /// `parse_special`; HF `split_special_tokens=False`). If false they are encoded as plain
    /// text; non-special added tokens are matched either way. Default true.
    pub parse_special: bool,
    /// Add BOS / EOS as the tokenizer's `add_bos_token` / `add_eos_token` say (HF
    /// `add_special_tokens`, llama.cpp `add_special`). Default true.
    pub add_special_tokens: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            parse_special: true,
            add_special_tokens: true,
        }
    }
}

pub(crate) struct Inner {
    /// The type name in error messages (`Gpt2Tokenizer` for the GPT-2 loaders).
    pub(crate) kind: &'static str,
    /// `tokens[id]`: the token as written in the vocab file.
    pub(crate) tokens: Vec<String>,
    /// The inverse of `tokens` (for a spelling given twice, the last id).
    pub(crate) ids: HashMap<String, u32>,
    /// `token_bytes[id]`: the bytes that id stands for.
    token_bytes: Vec<Box<[u8]>>,
    /// `byte_ids[b]`: the id of the single-byte token of byte `b`.
    byte_ids: [u32; 256],
    /// The merges in priority order.
    pub(crate) merge_list: Vec<Merge>,
    /// `(left, right) → (rank, merged)`.
    merges: MergeMap,
    /// The tokens matched whole in the text.
    added: AddedTokens,
    /// Special ids and settings, checked against the vocab size.
    pub(crate) options: BpeOptions,
    /// Pre-token text → its ids.
    cache: Mutex<HashMap<String, Box<[u32]>, FastBuild>>,
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.inner.kind)
            .field("vocab_size", &self.inner.tokens.len())
            .field("merges", &self.inner.merge_list.len())
            .field("added_tokens", &self.inner.added.len())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl BpeTokenizer {
    /// Builds the tokenizer from checked parts (`ids` is the inverse of `tokens`, merges refer to
    /// ids in range); `added` are `(id, special)` of the tokens matched whole. Checks the 256
    /// byte tokens and that every id in `options` is below the vocab size.
    pub(crate) fn build(
        kind: &'static str,
        tokens: Vec<String>,
        ids: HashMap<String, u32>,
        merge_list: Vec<Merge>,
        added: &[(u32, bool)],
        options: BpeOptions,
        vocab_name: &str,
    ) -> Result<Self> {
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            let c = BYTE_TO_CHAR[b];
            *id = *ids.get(c.encode_utf8(&mut [0; 4]) as &str).ok_or_else(|| {
                Error::format(
                    vocab_name,
                    format!(
                        "no token {c:?} for the byte 0x{b:02X}; a byte-level BPE vocab has all \
                         256 single-byte tokens"
                    ),
                )
            })?;
        }
        let n = tokens.len();
        let named = [
            ("bos_token_id", options.bos_token_id),
            ("eos_token_id", options.eos_token_id),
            ("pad_token_id", options.pad_token_id),
            ("unk_token_id", options.unk_token_id),
        ];
        for (name, id) in named {
            if let Some(id) = id.filter(|&id| id >= n) {
                return Err(Error::format(
                    vocab_name,
                    format!("{name} = {id} is not an id of the {n} tokens"),
                ));
            }
        }
        let mut matched = Vec::with_capacity(added.len());
        for &(id, special) in added {
            let token = tokens.get(id as usize).ok_or_else(|| {
                Error::format(
                    vocab_name,
                    format!("added token id {id} is not an id of the {n} tokens"),
                )
            })?;
            matched.push((token.clone(), id, special));
        }
        // Later duplicates override earlier ones, like Python's `dict(zip(merges, range(n)))`.
        let merges: MergeMap = merge_list
            .iter()
            .enumerate()
            .map(|(rank, m)| ((m.left, m.right), (rank as u32, m.merged)))
            .collect();
        let token_bytes = tokens.iter().map(|t| token_to_bytes(t).into()).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                kind,
                tokens,
                ids,
                token_bytes,
                byte_ids,
                merge_list,
                merges,
                added: AddedTokens::new(matched),
                options,
                cache: Mutex::new(HashMap::default()),
            }),
        })
    }

    /// The id of `token` as written in the vocab file (`"Ġworld"` for `" world"`), if any.
    pub fn token_to_id(&self, token: &str) -> Option<usize> {
        self.inner.ids.get(token).map(|&id| id as usize)
    }

    /// The token of `id` as written in the vocab file, or `None` if `id >= vocab_size()`.
    pub fn id_to_token(&self, id: usize) -> Option<&str> {
        self.inner.tokens.get(id).map(String::as_str)
    }

    /// The beginning-of-sequence id (`<|endoftext|>` for GPT-2, `<|im_start|>` for SmolLM2).
    pub fn bos_token_id(&self) -> Option<usize> {
        self.inner.options.bos_token_id
    }

    /// The end-of-sequence id (50256 `<|endoftext|>` for GPT-2, 2 `<|im_end|>` for SmolLM2), or
    /// `None` if the tokenizer has none.
    pub fn eos_token_id(&self) -> Option<usize> {
        self.inner.options.eos_token_id
    }

    /// The padding id, if any (GPT-2 has none; SmolLM2's is its EOS, 2).
    pub fn pad_token_id(&self) -> Option<usize> {
        self.inner.options.pad_token_id
    }

    /// The unknown-token id, if any (byte-level BPE never produces it).
    pub fn unk_token_id(&self) -> Option<usize> {
        self.inner.options.unk_token_id
    }

    /// The special-token ids and settings.
    pub fn options(&self) -> &BpeOptions {
        &self.inner.options
    }

    /// The pre-tokenizer.
    pub fn pretokenizer(&self) -> Pretokenizer {
        self.inner.options.pretokenizer
    }

    /// Whether `id` is a special token (HF `special: true`, GGUF CONTROL type), which
    /// [`BpeTokenizer::decode_skip_special`] leaves out.
    pub fn is_special(&self, id: usize) -> bool {
        u32::try_from(id).is_ok_and(|id| self.inner.added.is_special(id))
    }

    /// The ids of all special tokens, ascending.
    pub fn special_token_ids(&self) -> Vec<usize> {
        let ids = self.inner.added.special_ids();
        ids.into_iter().map(|id| id as usize).collect()
    }

    /// The number of merges (50,000 for GPT-2).
    pub fn num_merges(&self) -> usize {
        self.inner.merge_list.len()
    }

    /// The merges in priority order, as vocab-file tokens (`("Ġ", "t")` first for GPT-2).
    pub fn merges(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let tokens = &self.inner.tokens;
        self.inner.merge_list.iter().map(|m| {
            (
                tokens[m.left as usize].as_str(),
                tokens[m.right as usize].as_str(),
            )
        })
    }

    /// Decodes ids to raw bytes (what [`Tokenizer::decode`] does before the lossy UTF-8
    /// conversion); see [`super::StreamDecoder`] to stream generated text.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first id `>= vocab_size()` and the vocab size.
    pub fn decode_bytes(&self, ids: &[usize]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_into(ids, false, &mut out)?;
        Ok(out)
    }

    /// Appends the bytes of `ids` to `out`, leaving out special tokens if `skip_special`.
    pub(crate) fn decode_into(
        &self,
        ids: &[usize],
        skip_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let table = &self.inner.token_bytes;
        for (i, &id) in ids.iter().enumerate() {
            let bytes = table.get(id).ok_or_else(|| {
                Error::config(
                    format!("{}::decode", self.inner.kind),
                    format!("ids[{i}]"),
                    id,
                    format!("an id < {} (the vocab size)", table.len()),
                )
            })?;
            if !(skip_special && self.is_special(id)) {
                out.extend_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// Decodes `ids` leaving out the special tokens (HF `decode(ids, skip_special_tokens=True)`,
    /// llama.cpp without `special`): `<|im_start|>assistant\nHi<|im_end|>` → `"assistant\nHi"`.
    ///
    /// # Errors
    /// As [`Tokenizer::decode`].
    pub fn decode_skip_special(&self, ids: &[usize]) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        self.decode_into(ids, true, &mut bytes)?;
        Ok(lossy(bytes))
    }

    /// Encodes `text` with the given treatment of special tokens (see [`EncodeOptions`]);
    /// [`Tokenizer::encode`] is `encode_with(text, EncodeOptions::default())`.
    ///
    /// ```
    /// use handgrad::prelude::*;
    /// use handgrad::tokenizer::EncodeOptions;
    ///
    /// let tok = Gpt2Tokenizer::embedded()?;
    /// let as_text = EncodeOptions { parse_special: false, ..Default::default() };
    /// assert_eq!(tok.encode_with("<|endoftext|>", as_text)?.len(), 6);
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// None today (every byte has a token); the `Result` leaves room for vocabularies that
    /// cannot represent some text.
    pub fn encode_with(&self, text: &str, options: EncodeOptions) -> Result<Vec<usize>> {
        let o = &self.inner.options;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if options.add_special_tokens && o.add_bos_token {
            out.extend(o.bos_token_id);
        }
        let out_cell = std::cell::RefCell::new(out);
        self.inner.added.split(
            text,
            options.parse_special,
            |plain| self.encode_ordinary(plain, &mut out_cell.borrow_mut()),
            |id| out_cell.borrow_mut().push(id as usize),
        );
        let mut out = out_cell.into_inner();
        if options.add_special_tokens && o.add_eos_token {
            out.extend(o.eos_token_id);
        }
        Ok(out)
    }

    /// Appends the ids of `text` (no added tokens in it) to `out`.
    fn encode_ordinary(&self, text: &str, out: &mut Vec<usize>) {
        let inner = &*self.inner;
        let mut scratch = Vec::new();
        inner.options.pretokenizer.for_each_piece(text, |piece| {
            if let [b] = piece.as_bytes() {
                out.push(inner.byte_ids[*b as usize] as usize);
                return;
            }
            // A poisoned lock only means another thread panicked mid-insert: the map is intact.
            let mut cache = inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ids) = cache.get(piece) {
                out.extend(ids.iter().map(|&id| id as usize));
                return;
            }
            let whole = inner
                .options
                .ignore_merges
                .then(|| inner.ids.get(&bytes_to_token(piece.as_bytes())))
                .flatten();
            match whole {
                Some(&id) => {
                    scratch.clear();
                    scratch.push(id);
                }
                None => bpe(
                    piece.as_bytes(),
                    &inner.byte_ids,
                    &inner.merges,
                    &mut scratch,
                ),
            }
            out.extend(scratch.iter().map(|&id| id as usize));
            if cache.len() < CACHE_CAPACITY {
                cache.insert(piece.to_owned(), scratch.as_slice().into());
            }
        });
    }
}

/// Bytes to text, invalid UTF-8 as U+FFFD (`errors="replace"`).
pub(crate) fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

impl Tokenizer for BpeTokenizer {
    /// The number of ids (50,257 for GPT-2).
    fn vocab_size(&self) -> usize {
        self.inner.tokens.len()
    }

    /// Encodes `text`: special-token spellings in it (`<|endoftext|>` for GPT-2) become their
    /// ids, and BOS / EOS are added if the tokenizer's `add_bos_token` / `add_eos_token` say so
    /// (HF `tokenizer.encode(text)`). Never fails: every byte has a token.
    fn encode(&self, text: &str) -> Result<Vec<usize>> {
        self.encode_with(text, EncodeOptions::default())
    }

    /// Decodes `ids` to text, special tokens included; byte sequences that are not valid UTF-8
    /// (possible for arbitrary ids) become U+FFFD, as with `errors="replace"` in `transformers`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first id `>= vocab_size()` and the vocab size.
    fn decode(&self, ids: &[usize]) -> Result<String> {
        Ok(lossy(self.decode_bytes(ids)?))
    }
}
