//! [`BpeTokenizer::from_dir`]: a tokenizer folder (`tokenizer.json`, or OpenAI's / Hugging
//! Face's vocab + merges files), with `tokenizer_config.json`'s special tokens and settings.

use super::bpe_tokenizer::BpeTokenizer;
use super::gpt2::{read, ENDOFTEXT};
use super::hf_json::parse_tokenizer_json;
use super::load::{parse_merges, parse_vocab};
use super::parts::Parts;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A special-token entry of `tokenizer_config.json`: a string or an `AddedToken` object.
fn token_name(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

impl BpeTokenizer {
    /// Loads the tokenizer files in `dir`: `tokenizer.json` if it is there (see
    /// [`BpeTokenizer::from_tokenizer_json`]), else `encoder.json` + `vocab.bpe` (OpenAI's names)
    /// if both are there, else `vocab.json` + `merges.txt` (Hugging Face's names). Then, if
    /// present, `tokenizer_config.json` (see [`BpeTokenizer::with_tokenizer_config`]).
    ///
    /// # Errors
    /// [`Error::Io`] naming `dir` if it is not a folder or holds none of these (the message lists
    /// the files looked for); otherwise as the loaders named above.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let looked_for = "tokenizer.json (Hugging Face), encoder.json + vocab.bpe (OpenAI) or \
                          vocab.json + merges.txt (Hugging Face)";
        let missing = |message: String| Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
        };
        if !dir.is_dir() {
            return Err(missing(format!(
                "not a folder; expected a folder holding {looked_for}"
            )));
        }
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some((read(&config_path)?, config_path.display().to_string()))
        } else {
            None
        };
        let json = dir.join("tokenizer.json");
        let (mut parts, kind) = if json.is_file() {
            let text = read(&json)?;
            (
                parse_tokenizer_json(&text, &json.display().to_string())?,
                "BpeTokenizer",
            )
        } else {
            let pairs = [("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")];
            let found = pairs.iter().find_map(|&(v, m)| {
                let (v, m): (PathBuf, PathBuf) = (dir.join(v), dir.join(m));
                (v.is_file() && m.is_file()).then_some((v, m))
            });
            let Some((v, m)) = found else {
                let present: Vec<&str> = pairs
                    .iter()
                    .flat_map(|&(v, m)| [v, m])
                    .filter(|name| dir.join(name).is_file())
                    .collect();
                return Err(missing(format!(
                    "no tokenizer files: looked for {looked_for}; found {}",
                    if present.is_empty() {
                        "none of them".to_string()
                    } else {
                        format!("only {}", present.join(", "))
                    }
                )));
            };
            if config.is_none() {
                return Self::from_files(v, m);
            }
            let (v_name, m_name) = (v.display().to_string(), m.display().to_string());
            let vocab = parse_vocab(&read(&v)?, &v_name)?;
            let merges = parse_merges(&read(&m)?, &m_name, &vocab)?;
            let mut parts = Parts::new(vocab.tokens, Default::default(), v_name)?;
            parts.merges = merges;
            if let Some(&id) = parts.ids.get(ENDOFTEXT) {
                parts.mark_added(id, true); // GPT-2's own, also without a config entry
            }
            (parts, "BpeTokenizer")
        };
        if let Some(&id) = parts.ids.get(ENDOFTEXT) {
            // GPT-2's defaults (`transformers`' GPT2Tokenizer), unless the config says otherwise.
            let o = &mut parts.options;
            for slot in [
                &mut o.bos_token_id,
                &mut o.eos_token_id,
                &mut o.unk_token_id,
            ] {
                slot.get_or_insert(id as usize);
            }
        }
        if let Some((text, name)) = config {
            apply_config(&mut parts, &text, &name)?;
        }
        parts.build(kind)
    }

    /// Applies a `tokenizer_config.json` (its text) to a copy of this tokenizer: `bos_token`,
    /// `eos_token`, `pad_token`, `unk_token` (strings or `{"content": ...}` objects) set the ids
    /// and become special; so do the tokens of `additional_special_tokens` /
    /// `extra_special_tokens` and the `added_tokens_decoder` entries (`special` as given);
    /// `add_bos_token` / `add_eos_token` set those flags. Other keys are ignored.
    ///
    /// # Errors
    /// [`Error::Format`] naming `tokenizer_config.json` for invalid JSON, a special token that
    /// is not in the vocab, or an `added_tokens_decoder` entry whose id holds another token.
    pub fn with_tokenizer_config(&self, config_json: &str) -> Result<Self> {
        let inner = &self.inner;
        let mut parts = Parts::new(
            inner.tokens.clone(),
            inner.options.clone(),
            "tokenizer_config.json".into(),
        )?;
        parts.merges = inner.merge_list.clone();
        for id in self.special_token_ids() {
            parts.mark_added(id as u32, true);
        }
        apply_config(&mut parts, config_json, "tokenizer_config.json")?;
        parts.build(inner.kind)
    }
}

/// Applies `tokenizer_config.json` to `parts` (see [`BpeTokenizer::with_tokenizer_config`]).
fn apply_config(parts: &mut Parts, text: &str, source: &str) -> Result<()> {
    let bad = |message: String| Error::format(source, message);
    let root: Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    if !root.is_object() {
        return Err(bad("expected a JSON object".into()));
    }
    let lookup = |parts: &Parts, key: &str, name: &str| -> Result<u32> {
        parts.ids.get(name).copied().ok_or_else(|| {
            bad(format!(
                "{key} is {name:?}, which is not a token of the vocab"
            ))
        })
    };
    if let Some(map) = root.get("added_tokens_decoder").and_then(Value::as_object) {
        for (key, entry) in map {
            let content = token_name(entry)
                .ok_or_else(|| bad(format!("added_tokens_decoder[{key:?}] has no \"content\"")))?;
            let id: u32 = key
                .parse()
                .map_err(|_| bad(format!("added_tokens_decoder key {key:?} is not an id")))?;
            match parts.tokens.get(id as usize) {
                Some(t) if t == content => {}
                other => {
                    return Err(bad(format!(
                        "added_tokens_decoder gives id {id} to {content:?}, but the vocab has {}",
                        other.map_or("no such id".to_string(), |t| format!("{t:?} there"))
                    )))
                }
            }
            parts.mark_added(
                id,
                entry
                    .get("special")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            );
        }
    }
    for key in ["additional_special_tokens", "extra_special_tokens"] {
        let names: Vec<&str> = match root.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(token_name).collect(),
            Some(Value::Object(m)) => m.values().filter_map(token_name).collect(),
            _ => Vec::new(),
        };
        for name in names {
            let id = lookup(parts, key, name)?;
            parts.mark_added(id, true);
        }
    }
    let slots: [(&str, fn(&mut super::BpeOptions) -> &mut Option<usize>); 4] = [
        ("bos_token", |o| &mut o.bos_token_id),
        ("eos_token", |o| &mut o.eos_token_id),
        ("pad_token", |o| &mut o.pad_token_id),
        ("unk_token", |o| &mut o.unk_token_id),
    ];
    for (key, slot) in slots {
        match root.get(key) {
            None => {}
            Some(Value::Null) => *slot(&mut parts.options) = None,
            Some(v) => {
                let name = token_name(v)
                    .ok_or_else(|| bad(format!("{key} is {v}, expected a token string")))?;
                let id = lookup(parts, key, name)?;
                *slot(&mut parts.options) = Some(id as usize);
                parts.mark_added(id, true);
            }
        }
    }
    if let Some(b) = root.get("add_bos_token").and_then(Value::as_bool) {
        parts.options.add_bos_token = b;
    }
    if let Some(b) = root.get("add_eos_token").and_then(Value::as_bool) {
        parts.options.add_eos_token = b;
    }
    Ok(())
}
