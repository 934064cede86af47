//! GPT-2's files: [`Gpt2Tokenizer`] (= [`BpeTokenizer`]) from OpenAI's `encoder.json` +
//! `vocab.bpe` or Hugging Face's `vocab.json` + `merges.txt`, or the embedded GPT-2 ones.

use super::bpe_tokenizer::{BpeOptions, BpeTokenizer};
use super::load::{parse_merges, parse_vocab, Merge};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

/// GPT-2's byte-level BPE tokenizer: the name GPT-2 code uses for [`BpeTokenizer`].
pub type Gpt2Tokenizer = BpeTokenizer;

/// The end-of-text token: GPT-2's only special token (id 50256).
pub const ENDOFTEXT: &str = "<|endoftext|>";

const ENCODER_JSON_GZ: &[u8] = include_bytes!("../../data/gpt2/encoder.json.gz");
const VOCAB_BPE_GZ: &[u8] = include_bytes!("../../data/gpt2/vocab.bpe.gz");

/// Reads a file to a string, as an [`Error::Io`] naming it on failure.
pub(crate) fn read(path: &Path) -> Result<String> {
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

impl BpeTokenizer {
    /// GPT-2's tokenizer from the files compiled into the crate (OpenAI's `encoder.json` and
    /// `vocab.bpe`, MIT, see NOTICE; 50,257 tokens and 50,000 merges).
    ///
    /// The first call decompresses and parses them (0.1–0.2 s in a release build); later calls
    /// return a clone of that tokenizer, sharing its tables and merge cache.
    ///
    /// # Errors
    /// Only if the embedded files were corrupt ([`Error::Format`]).
    pub fn embedded() -> Result<Self> {
        static EMBEDDED: OnceLock<BpeTokenizer> = OnceLock::new();
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
    /// `left right` merge per line, highest priority first), with GPT-2's settings:
    /// `<|endoftext|>`, if in the vocab, is the one special token and BOS = EOS = UNK (as in
    /// `transformers`' `GPT2Tokenizer`). [`BpeTokenizer::from_dir`] also reads
    /// `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] naming a file that cannot be read; [`Error::Format`] naming the file and
    /// line of malformed content (see [`BpeTokenizer::from_strs`]).
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
        Self::from_gpt2_parts(vocab.tokens, vocab.ids, merges, vocab_name)
    }

    /// GPT-2's settings on checked parts: `<|endoftext|>` (if present) special, BOS = EOS = UNK.
    pub(crate) fn from_gpt2_parts(
        tokens: Vec<String>,
        ids: HashMap<String, u32>,
        merges: Vec<Merge>,
        vocab_name: &str,
    ) -> Result<Self> {
        let eos = ids.get(ENDOFTEXT).copied();
        let options = BpeOptions {
            bos_token_id: eos.map(|id| id as usize),
            eos_token_id: eos.map(|id| id as usize),
            unk_token_id: eos.map(|id| id as usize),
            ..BpeOptions::default()
        };
        let added: Vec<(u32, bool)> = eos.map(|id| (id, true)).into_iter().collect();
        Self::build(
            "Gpt2Tokenizer",
            tokens,
            ids,
            merges,
            &added,
            options,
            vocab_name,
        )
    }

    /// Writes the vocab and merges as `vocab.json` and `merges.txt` (Hugging Face's names, with a
    /// `#version: 0.2` first line) into `dir`, which must exist; [`BpeTokenizer::from_dir`]
    /// reads them back. Only the vocab and merges are written: a tokenizer with other special
    /// tokens or another pre-tokenizer than GPT-2's needs its `tokenizer.json` besides.
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
