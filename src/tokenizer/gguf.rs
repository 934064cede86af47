//! [`BpeTokenizer::from_gguf`] and [`ChatTemplate::from_gguf`]: the tokenizer and chat template
//! stored in a GGUF file's `tokenizer.*` metadata (llama.cpp's `gpt2` vocab type).

use super::bpe_tokenizer::{BpeOptions, BpeTokenizer};
use super::chat::ChatTemplate;
use super::parts::Parts;
use super::pretokenize::Pretokenizer;
use crate::error::{Error, Result};
use crate::io::{GgufFile, GgufValue};

/// An optional id key: absent is `None`, present must be a non-negative integer.
fn optional_id(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    if file.get(key).is_none() {
        return Ok(None);
    }
    let id = file.u64(key)?;
    usize::try_from(id)
        .map(Some)
        .map_err(|_| Error::config("BpeTokenizer::from_gguf", key, id, "an id that fits usize"))
}

/// An optional bool key (absent: `default`).
fn optional_bool(file: &GgufFile, key: &str, default: bool) -> Result<bool> {
    match file.get(key) {
        None => Ok(default),
        Some(GgufValue::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::config(
            "BpeTokenizer::from_gguf",
            key,
            format!("{other:?}"),
            "a bool",
        )),
    }
}

impl BpeTokenizer {
    /// The tokenizer of a GGUF file: `tokenizer.ggml.model` must be `gpt2` (byte-level BPE);
    /// read are `tokens`, `token_type` (CONTROL and UNKNOWN tokens are special, USER_DEFINED
    /// ones matched whole; see [`BpeTokenizer::from_parts`]), `merges` (`"a b"` strings), `pre`
    /// ([`Pretokenizer::from_gguf_name`]), `bos_token_id`, `eos_token_id`, `padding_token_id`,
    /// `unknown_token_id`, `add_bos_token`, `add_eos_token` (all under `tokenizer.ggml.`;
    /// absent ids are `None`, absent flags false, except that a Llama 3 vocab adds BOS and skips
    /// merges for pieces that are whole tokens, as in llama.cpp).
    ///
    /// `transformers` ignores `pre` and always uses GPT-2's pattern: for its ids, follow with
    /// `.with_pretokenizer(Pretokenizer::Gpt2)`.
    ///
    /// # Errors
    /// [`Error::Format`] / [`Error::Config`] naming the key for: another tokenizer model (e.g.
    /// `llama`, SentencePiece), an unknown `pre` (the message lists the supported ones), a
    /// missing or mistyped key, token types of another length than the tokens, a merge whose
    /// tokens are not in the vocab, an id out of range.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::config(
                "BpeTokenizer::from_gguf",
                "tokenizer.ggml.model",
                format!("{model:?}"),
                "\"gpt2\" (byte-level BPE); SentencePiece and other vocab types are not supported",
            ));
        }
        let pre = match file.get("tokenizer.ggml.pre") {
            None => {
                return Err(Error::config(
                    "BpeTokenizer::from_gguf",
                    "tokenizer.ggml.pre",
                    "missing",
                    format!("one of {:?}", super::SUPPORTED_GGUF_PRE),
                ))
            }
            Some(_) => Pretokenizer::from_gguf_name(file.string("tokenizer.ggml.pre")?)?,
        };
        let options = BpeOptions {
            pretokenizer: pre,
            bos_token_id: optional_id(file, "tokenizer.ggml.bos_token_id")?,
            eos_token_id: optional_id(file, "tokenizer.ggml.eos_token_id")?,
            pad_token_id: optional_id(file, "tokenizer.ggml.padding_token_id")?,
            unk_token_id: optional_id(file, "tokenizer.ggml.unknown_token_id")?,
            // llama.cpp's default for Llama 3's vocab is to add BOS; the key overrides it.
            add_bos_token: optional_bool(
                file,
                "tokenizer.ggml.add_bos_token",
                pre == Pretokenizer::Llama3,
            )?,
            add_eos_token: optional_bool(file, "tokenizer.ggml.add_eos_token", false)?,
            ignore_merges: pre == Pretokenizer::Llama3,
        };
        let tokens: Vec<String> = file
            .string_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let types = match file.get("tokenizer.ggml.token_type") {
            None => Vec::new(),
            Some(_) => file.i64_array("tokenizer.ggml.token_type")?,
        };
        let merges = file.string_array("tokenizer.ggml.merges")?;
        let mut parts = Parts::new(tokens, options, "GGUF tokenizer".into())?;
        parts.set_token_types(&types, "tokenizer.ggml.token_type")?;
        parts.add_merge_strings(&merges, "tokenizer.ggml.merges")?;
        parts.build("BpeTokenizer")
    }
}

impl ChatTemplate {
    /// The chat template of a GGUF file (`tokenizer.chat_template`), with BOS / EOS set to the
    /// spellings of `tokenizer.ggml.bos_token_id` / `eos_token_id`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the key if it is missing or not a string; as
    /// [`ChatTemplate::new`] if it does not parse.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let source = file.string("tokenizer.chat_template")?;
        let tokens = file
            .string_array("tokenizer.ggml.tokens")
            .unwrap_or_default();
        let name = |key: &str| -> &str {
            optional_id(file, key)
                .ok()
                .flatten()
                .and_then(|id| tokens.get(id).copied())
                .unwrap_or("")
        };
        let (bos, eos) = (
            name("tokenizer.ggml.bos_token_id"),
            name("tokenizer.ggml.eos_token_id"),
        );
        Ok(Self::new(source)?.with_special_tokens(bos, eos))
    }
}
