//! [`Gpt2Tokenizer`]: GPT-2's byte-level BPE (OpenAI's `encoder.py`, `transformers`'
//! `GPT2Tokenizer`), loading the OpenAI or Hugging Face files or the embedded GPT-2 ones.

use super::bpe::{bpe, FastBuild, MergeMap};
use super::bytes::{token_to_bytes, BYTE_TO_CHAR};
use super::load::{parse_merges, parse_vocab, Merge};
use super::pretokenize::pretokenize;
use super::Tokenizer;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The end-of-text token: GPT-2's only special token (id 50256).
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// At most this many distinct pre-tokens are kept in the merge cache (then it stops growing).
const CACHE_CAPACITY: usize = 1 << 17;

const ENCODER_JSON_GZ: &[u8] = include_bytes!("../../data/gpt2/encoder.json.gz");
const VOCAB_BPE_GZ: &[u8] = include_bytes!("../../data/gpt2/vocab.bpe.gz");

/// GPT-2's byte-level BPE tokenizer.
///
/// Text is split by GPT-2's pre-tokenisation pattern
/// (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`), each piece's
/// UTF-8 bytes are written as chars through GPT-2's `bytes_to_unicode` table and merged by BPE in
/// the order of the merges file; `<|endoftext|>` in the text is the special token 50256, as in
/// `transformers`' `GPT2Tokenizer`. Any text round-trips exactly: `decode(encode(s)) == s`.
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
/// assert_eq!(tok.vocab_size(), 50257);
/// assert_eq!(tok.eos_token_id(), Some(50256));
/// assert_eq!(tok.id_to_token(995), Some("Ġworld")); // Ġ is the space byte
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Clone)]
pub struct Gpt2Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    /// `tokens[id]`: the token as written in the vocab file.
    tokens: Vec<String>,
    /// The inverse of `tokens`.
    ids: HashMap<String, u32>,
    /// `token_bytes[id]`: the bytes that id stands for.
    token_bytes: Vec<Box<[u8]>>,
    /// `byte_ids[b]`: the id of the single-byte token of byte `b`.
    byte_ids: [u32; 256],
    /// The merges in file order (for [`Gpt2Tokenizer::save_dir`]).
    merge_list: Vec<Merge>,
    /// `(left, right) → (rank, merged)`.
    merges: MergeMap,
    /// The id of `<|endoftext|>`, if the vocab has it.
    eos: Option<u32>,
    /// Pre-token text → its ids.
    cache: Mutex<HashMap<String, Box<[u32]>, FastBuild>>,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2Tokenizer")
            .field("vocab_size", &self.inner.tokens.len())
            .field("merges", &self.inner.merge_list.len())
            .field("eos_token_id", &self.inner.eos)
            .finish()
    }
}

/// Reads a file to a string, as an [`Error::Io`] naming it on failure.
fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Decompresses an embedded gzip file.
fn gunzip(bytes: &[u8], name: &str) -> Result<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| Error::format(name, format!("gzip: {e}")))?;
    Ok(text)
}

impl Gpt2Tokenizer {
    /// GPT-2's tokenizer from the files compiled into the crate (OpenAI's `encoder.json` and
    /// `vocab.bpe`, MIT, see NOTICE; 50,257 tokens and 50,000 merges).
    ///
    /// The first call decompresses and parses them (0.1–0.2 s in a release build); later calls
    /// return a clone of that tokenizer, sharing its tables and merge cache.
    ///
    /// # Errors
    /// Only if the embedded files were corrupt ([`Error::Format`]).
    pub fn embedded() -> Result<Self> {
        static EMBEDDED: OnceLock<Gpt2Tokenizer> = OnceLock::new();
        if let Some(tok) = EMBEDDED.get() {
            return Ok(tok.clone());
        }
        let vocab = gunzip(ENCODER_JSON_GZ, "data/gpt2/encoder.json.gz")?;
        let merges = gunzip(VOCAB_BPE_GZ, "data/gpt2/vocab.bpe.gz")?;
        let tok = Self::parse(&vocab, "encoder.json", &merges, "vocab.bpe")?;
        Ok(EMBEDDED.get_or_init(|| tok).clone())
    }

    /// The embedded files, decompressed: `(encoder.json, vocab.bpe)` as shipped by OpenAI.
    ///
    /// # Errors
    /// Only if the embedded files were corrupt ([`Error::Format`]).
    pub fn embedded_files() -> Result<(String, String)> {
        Ok((
            gunzip(ENCODER_JSON_GZ, "data/gpt2/encoder.json.gz")?,
            gunzip(VOCAB_BPE_GZ, "data/gpt2/vocab.bpe.gz")?,
        ))
    }

    /// Loads a vocab (`encoder.json` / `vocab.json`: a JSON object token → id, ids `0..n`) and a
    /// merges file (`vocab.bpe` / `merges.txt`: an optional `#version` line, then one
    /// `left right` merge per line, highest priority first).
    ///
    /// # Errors
    /// [`Error::Io`] naming a file that cannot be read; [`Error::Format`] naming the file and
    /// line of malformed content (see [`Gpt2Tokenizer::from_strs`]).
    pub fn from_files(vocab_path: impl AsRef<Path>, merges_path: impl AsRef<Path>) -> Result<Self> {
        let (vocab_path, merges_path) = (vocab_path.as_ref(), merges_path.as_ref());
        let vocab = read(vocab_path)?;
        let merges = read(merges_path)?;
        Self::parse(
            &vocab,
            &vocab_path.display().to_string(),
            &merges,
            &merges_path.display().to_string(),
        )
    }

    /// Loads the tokenizer files in `dir`: `encoder.json` + `vocab.bpe` (OpenAI's names) if both
    /// are there, else `vocab.json` + `merges.txt` (Hugging Face's names).
    ///
    /// # Errors
    /// [`Error::Io`] naming `dir` if it is not a folder or holds neither pair (the message lists
    /// the files looked for); otherwise as [`Gpt2Tokenizer::from_files`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let looked_for = "encoder.json + vocab.bpe (OpenAI) or vocab.json + merges.txt \
                          (Hugging Face)";
        let missing = |message: String| Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
        };
        if !dir.is_dir() {
            return Err(missing(format!(
                "not a folder; expected a folder holding {looked_for}"
            )));
        }
        let pairs = [("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")];
        for (vocab, merges) in pairs {
            let (v, m): (PathBuf, PathBuf) = (dir.join(vocab), dir.join(merges));
            if v.is_file() && m.is_file() {
                return Self::from_files(v, m);
            }
        }
        let present: Vec<&str> = pairs
            .iter()
            .flat_map(|&(v, m)| [v, m])
            .filter(|name| dir.join(name).is_file())
            .collect();
        Err(missing(format!(
            "no tokenizer files: looked for {looked_for}; found {}",
            if present.is_empty() {
                "none of them".to_string()
            } else {
                format!("only {}", present.join(", "))
            }
        )))
    }

    /// Parses in-memory files: `vocab_json` as `encoder.json` / `vocab.json`, `merges_txt` as
    /// `vocab.bpe` / `merges.txt` (errors name them `vocab.json` and `merges.txt`).
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and line for: invalid JSON or not an object; an id that
    /// is not an integer `>= 0`; a token or an id given twice; ids that are not exactly `0..n`; a
    /// vocab without the 256 single-byte tokens; a merge line that is not two tokens; a merge
    /// whose tokens or result are not in the vocab.
    pub fn from_strs(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        Self::parse(vocab_json, "vocab.json", merges_txt, "merges.txt")
    }

    fn parse(
        vocab_json: &str,
        vocab_name: &str,
        merges_txt: &str,
        merges_name: &str,
    ) -> Result<Self> {
        let vocab = parse_vocab(vocab_json, vocab_name)?;
        let merges = parse_merges(merges_txt, merges_name, &vocab)?;
        Self::from_parts(vocab.tokens, vocab.ids, merges, vocab_name)
    }

    /// Builds the tokenizer from checked parts (`ids` is the inverse of `tokens`, merges refer to
    /// ids in range).
    pub(crate) fn from_parts(
        tokens: Vec<String>,
        ids: HashMap<String, u32>,
        merge_list: Vec<Merge>,
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
        // Later duplicates override earlier ones, like Python's `dict(zip(merges, range(n)))`.
        let merges: MergeMap = merge_list
            .iter()
            .enumerate()
            .map(|(rank, m)| ((m.left, m.right), (rank as u32, m.merged)))
            .collect();
        let token_bytes = tokens.iter().map(|t| token_to_bytes(t).into()).collect();
        let eos = ids.get(ENDOFTEXT).copied();
        Ok(Self {
            inner: Arc::new(Inner {
                tokens,
                ids,
                token_bytes,
                byte_ids,
                merge_list,
                merges,
                eos,
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

    /// The id of `<|endoftext|>` (50256 for GPT-2), or `None` if the vocab lacks it.
    pub fn eos_token_id(&self) -> Option<usize> {
        self.inner.eos.map(|id| id as usize)
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
    /// conversion), e.g. to stream generated text without splitting a multi-byte char.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first id `>= vocab_size()` and the vocab size.
    pub fn decode_bytes(&self, ids: &[usize]) -> Result<Vec<u8>> {
        let table = &self.inner.token_bytes;
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let bytes = table.get(id).ok_or_else(|| {
                Error::config(
                    "Gpt2Tokenizer::decode",
                    format!("ids[{i}]"),
                    id,
                    format!("an id < {} (the vocab size)", table.len()),
                )
            })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Appends the ids of `text` (no special tokens in it) to `out`.
    fn encode_ordinary(&self, text: &str, out: &mut Vec<usize>) {
        let inner = &*self.inner;
        let mut scratch = Vec::new();
        for piece in pretokenize(text) {
            if let [b] = piece.as_bytes() {
                out.push(inner.byte_ids[*b as usize] as usize);
                continue;
            }
            // A poisoned lock only means another thread panicked mid-insert: the map is intact.
            let mut cache = inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ids) = cache.get(piece) {
                out.extend(ids.iter().map(|&id| id as usize));
                continue;
            }
            bpe(
                piece.as_bytes(),
                &inner.byte_ids,
                &inner.merges,
                &mut scratch,
            );
            out.extend(scratch.iter().map(|&id| id as usize));
            if cache.len() < CACHE_CAPACITY {
                cache.insert(piece.to_owned(), scratch.as_slice().into());
            }
        }
    }

    /// Writes the vocab and merges as `vocab.json` and `merges.txt` (Hugging Face's names, with a
    /// `#version: 0.2` first line) into `dir`, which must exist; [`Gpt2Tokenizer::from_dir`]
    /// reads them back.
    ///
    /// # Errors
    /// [`Error::Io`] naming a file that cannot be written.
    pub fn save_dir(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let mut vocab = String::from("{");
        for (id, token) in self.inner.tokens.iter().enumerate() {
            if id > 0 {
                vocab.push_str(", ");
            }
            vocab.push_str(&serde_json::Value::from(token.as_str()).to_string());
            vocab.push_str(&format!(": {id}"));
        }
        vocab.push('}');
        let mut merges = String::from("#version: 0.2\n");
        for (left, right) in self.merges() {
            merges.push_str(&format!("{left} {right}\n"));
        }
        for (name, text) in [("vocab.json", vocab), ("merges.txt", merges)] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
        }
        Ok(())
    }
}

impl Tokenizer for Gpt2Tokenizer {
    /// The number of ids (50,257 for GPT-2).
    fn vocab_size(&self) -> usize {
        self.inner.tokens.len()
    }

    /// Encodes `text`; each `<|endoftext|>` in it becomes the special token (50256 for GPT-2)
    /// when the vocab has it. Never fails: every byte has a token.
    fn encode(&self, text: &str) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(text.len() / 3);
        let mut rest = text;
        if let Some(eos) = self.inner.eos {
            while let Some(at) = rest.find(ENDOFTEXT) {
                self.encode_ordinary(&rest[..at], &mut out);
                out.push(eos as usize);
                rest = &rest[at + ENDOFTEXT.len()..];
            }
        }
        self.encode_ordinary(rest, &mut out);
        Ok(out)
    }

    /// Decodes `ids` to text; byte sequences that are not valid UTF-8 (possible for arbitrary ids)
    /// become U+FFFD, as with `errors="replace"` in `transformers`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first id `>= vocab_size()` and the vocab size.
    fn decode(&self, ids: &[usize]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}
