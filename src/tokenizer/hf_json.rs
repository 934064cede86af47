//! [`BpeTokenizer::from_tokenizer_json`]: Hugging Face `tokenizers`' `tokenizer.json` for
//! byte-level BPE models (GPT-2, SmolLM2, Llama 3, ...). Every part that this crate does not
//! implement (another model type, a normalizer, stripping added tokens, another pre-tokenizer or
//! decoder) is an error naming it, never a silent difference.

use super::bpe_tokenizer::{BpeOptions, BpeTokenizer};
use super::gpt2::read;
use super::parts::{resolve_merge, split_merge, Parts};
use super::pretokenize::Pretokenizer;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Llama 3's `Split` pattern as its `tokenizer.json` writes it.
pub(crate) const LLAMA3_PATTERN: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// A JSON value, shortened for an error message.
fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

/// The `type` of a component, or `""`.
fn kind(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

/// `v[key]` as a bool, `default` if absent or null.
fn flag(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

impl BpeTokenizer {
    /// Loads a Hugging Face `tokenizer.json` of a byte-level BPE (`model.type == "BPE"`).
    ///
    /// Read: `model.vocab`, `model.merges` (as `"a b"` strings or `["a", "b"]` pairs),
    /// `model.ignore_merges`, `added_tokens` (matched whole; those with `special: true` are
    /// special), the `pre_tokenizer` (`ByteLevel` → [`Pretokenizer::Gpt2`];
    /// `Sequence[Digits(individual_digits), ByteLevel]` → [`Pretokenizer::SmolLm`];
    /// `Sequence[Split(Llama 3 regex), ByteLevel(use_regex=false)]` → [`Pretokenizer::Llama3`]),
    /// the `decoder` (`ByteLevel`), and a `post_processor` `TemplateProcessing` of the form
    /// `[BOS] $A [EOS]` (sets BOS / EOS and `add_bos_token` / `add_eos_token`). The file has no
    /// EOS otherwise: [`BpeTokenizer::from_dir`] adds `tokenizer_config.json`'s.
    ///
    /// # Errors
    /// [`Error::Io`] naming an unreadable file; otherwise as
    /// [`BpeTokenizer::from_tokenizer_json_str`], naming the file.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read(path)?;
        parse_tokenizer_json(&text, &path.display().to_string())?.build("BpeTokenizer")
    }

    /// [`BpeTokenizer::from_tokenizer_json`] on the file's text (errors name it
    /// `tokenizer.json`).
    ///
    /// # Errors
    /// [`Error::Format`] for: invalid JSON; a model other than byte-level BPE (`type`,
    /// `byte_fallback`, `dropout`, `continuing_subword_prefix`, `end_of_word_suffix`); vocab ids
    /// that are not integers, repeat, or leave a gap that no added token fills; a merge whose
    /// tokens or result are not in the vocab; an added token with `lstrip`, `rstrip` or
    /// `single_word`; a normalizer; a pre-tokenizer, decoder or post-processor other than the
    /// ones listed above; a vocab without the 256 byte tokens.
    pub fn from_tokenizer_json_str(json: &str) -> Result<Self> {
        parse_tokenizer_json(json, "tokenizer.json")?.build("BpeTokenizer")
    }
}

/// Parses a `tokenizer.json` into checked parts.
pub(crate) fn parse_tokenizer_json(json: &str, source: &str) -> Result<Parts> {
    let bad = |message: String| Error::format(source, message);
    let root: Value = serde_json::from_str(json).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let model = root
        .get("model")
        .filter(|m| m.is_object())
        .ok_or_else(|| bad("no \"model\" object".into()))?;
    let model_type = kind(model);
    if !(model_type == "BPE" || model_type.is_empty() && model.get("merges").is_some()) {
        return Err(bad(format!(
            "model.type is {model_type:?}; only byte-level \"BPE\" is supported"
        )));
    }
    if flag(model, "byte_fallback", false) {
        return Err(bad(
            "model.byte_fallback is true (a SentencePiece-style BPE); only byte-level BPE is \
             supported"
                .into(),
        ));
    }
    if model
        .get("dropout")
        .and_then(Value::as_f64)
        .is_some_and(|p| p != 0.0)
    {
        return Err(bad(format!(
            "model.dropout = {}; BPE dropout is not supported",
            show(&model["dropout"])
        )));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(s) = model
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(bad(format!("model.{key} = {s:?} is not supported")));
        }
    }

    // Vocab and added tokens: ids must be exactly 0..n between them.
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab is not an object of token → id".into()))?;
    let added_json: &[Value] = match root.get("added_tokens") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(bad(format!(
                "added_tokens is {}, expected a list",
                show(other)
            )))
        }
    };
    let limit = vocab.len() + added_json.len(); // no valid id can reach this
    let mut slots: Vec<Option<String>> = vec![None; limit];
    let slot_id = |v: &Value, what: &str| -> Result<usize> {
        v.as_u64()
            .filter(|&id| id < limit as u64)
            .map(|id| id as usize)
            .ok_or_else(|| {
                bad(format!(
                    "{what} has the id {}; expected an integer in 0..{limit} (the vocab and \
                     added tokens together)",
                    show(v)
                ))
            })
    };
    for (token, id) in vocab {
        let id = slot_id(id, &format!("model.vocab token {token:?}"))?;
        if let Some(other) = &slots[id] {
            return Err(bad(format!(
                "model.vocab gives id {id} to both {other:?} and {token:?}"
            )));
        }
        slots[id] = Some(token.clone());
    }
    let mut added = Vec::with_capacity(added_json.len());
    for (i, t) in added_json.iter().enumerate() {
        let content = t.get("content").and_then(Value::as_str).ok_or_else(|| {
            bad(format!(
                "added_tokens[{i}] has no \"content\" string: {}",
                show(t)
            ))
        })?;
        let id = slot_id(
            t.get("id").unwrap_or(&Value::Null),
            &format!("added token {content:?}"),
        )?;
        for key in ["lstrip", "rstrip", "single_word"] {
            if flag(t, key, false) {
                return Err(bad(format!(
                    "added token {content:?} has {key}: true, which is not supported"
                )));
            }
        }
        match &slots[id] {
            Some(other) if other != content => {
                return Err(bad(format!(
                    "added token {content:?} has id {id}, which model.vocab gives to {other:?}"
                )))
            }
            _ => slots[id] = Some(content.to_string()),
        }
        added.push((id as u32, flag(t, "special", false)));
    }
    let n = slots
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |last| last + 1);
    let mut tokens = Vec::with_capacity(n);
    for (id, slot) in slots.into_iter().take(n).enumerate() {
        tokens.push(slot.ok_or_else(|| {
            bad(format!(
                "no token has the id {id}, but ids run up to {}",
                n - 1
            ))
        })?);
    }

    let mut options = BpeOptions {
        pretokenizer: pretokenizer(root.get("pre_tokenizer").unwrap_or(&Value::Null), &bad)?,
        ignore_merges: flag(model, "ignore_merges", false),
        ..BpeOptions::default()
    };
    check_normalizer(root.get("normalizer").unwrap_or(&Value::Null), &bad)?;
    let decoder = root.get("decoder").unwrap_or(&Value::Null);
    if kind(decoder) != "ByteLevel" {
        return Err(bad(format!(
            "decoder {}; only ByteLevel is supported",
            show(decoder)
        )));
    }
    let mut parts = Parts::new(tokens, BpeOptions::default(), source.to_string())?;
    post_processor(
        root.get("post_processor").unwrap_or(&Value::Null),
        &parts,
        &mut options,
        &bad,
    )?;
    parts.options = options;
    for (id, special) in added {
        parts.mark_added(id, special);
    }

    let merges: &[Value] = match model.get("merges") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(bad(format!(
                "model.merges is {}, expected a list",
                show(other)
            )))
        }
    };
    parts.merges.reserve(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let at = || format!("{source}: model.merges[{i}]");
        let pair = match m {
            Value::String(s) => split_merge(s),
            Value::Array(a) => match a.as_slice() {
                [Value::String(l), Value::String(r)] => Some((l.as_str(), r.as_str())),
                _ => None,
            },
            _ => None,
        };
        let (left, right) = pair.ok_or_else(|| {
            Error::format(
                at(),
                format!("expected \"a b\" or [\"a\", \"b\"], got {}", show(m)),
            )
        })?;
        let merge = resolve_merge(left, right, &parts.ids, at)?;
        parts.merges.push(merge);
    }
    Ok(parts)
}

/// The [`Pretokenizer`] a `pre_tokenizer` component stands for.
fn pretokenizer(p: &Value, bad: &dyn Fn(String) -> Error) -> Result<Pretokenizer> {
    let unsupported = || {
        bad(format!(
            "pre_tokenizer {} is not supported; supported: ByteLevel(add_prefix_space=false), \
             Sequence[Digits(individual_digits=true), ByteLevel], Sequence[Split(Llama 3 \
             pattern), ByteLevel(use_regex=false)]",
            show(p)
        ))
    };
    let byte_level = |b: &Value, use_regex: bool| {
        kind(b) == "ByteLevel"
            && !flag(b, "add_prefix_space", false)
            && flag(b, "use_regex", true) == use_regex
    };
    match kind(p) {
        "ByteLevel" if byte_level(p, true) => Ok(Pretokenizer::Gpt2),
        "Sequence" => {
            let list = p.get("pretokenizers").and_then(Value::as_array);
            match list.map(Vec::as_slice) {
                Some([d, b])
                    if kind(d) == "Digits"
                        && flag(d, "individual_digits", false)
                        && byte_level(b, true) =>
                {
                    Ok(Pretokenizer::SmolLm)
                }
                Some([s, b])
                    if kind(s) == "Split"
                        && s.pointer("/pattern/Regex").and_then(Value::as_str)
                            == Some(LLAMA3_PATTERN)
                        && s.get("behavior").and_then(Value::as_str) == Some("Isolated")
                        && !flag(s, "invert", false)
                        && byte_level(b, false) =>
                {
                    Ok(Pretokenizer::Llama3)
                }
                Some([only]) => pretokenizer(only, bad),
                _ => Err(unsupported()),
            }
        }
        _ => Err(unsupported()),
    }
}

/// Only "no normalizer" is supported (byte-level BPE models have none).
fn check_normalizer(n: &Value, bad: &dyn Fn(String) -> Error) -> Result<()> {
    let empty_sequence = kind(n) == "Sequence"
        && n.get("normalizers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
    if n.is_null() || empty_sequence {
        Ok(())
    } else {
        Err(bad(format!("normalizer {} is not supported", show(n))))
    }
}

/// Reads BOS / EOS additions from a `TemplateProcessing` `[BOS] $A [EOS]` (also inside a
/// `Sequence`, next to the id-neutral `ByteLevel`).
fn post_processor(
    p: &Value,
    parts: &Parts,
    options: &mut BpeOptions,
    bad: &dyn Fn(String) -> Error,
) -> Result<()> {
    match kind(p) {
        _ if p.is_null() => Ok(()),
        "ByteLevel" => Ok(()),
        "Sequence" => {
            let list = p.get("processors").and_then(Value::as_array);
            for q in list.map_or(&[][..], Vec::as_slice) {
                post_processor(q, parts, options, bad)?;
            }
            Ok(())
        }
        "TemplateProcessing" => {
            let single = p.get("single").and_then(Value::as_array);
            let items = single.map_or(&[][..], Vec::as_slice);
            let special = |v: &Value| -> Option<Result<usize>> {
                let name = v.pointer("/SpecialToken/id")?.as_str()?;
                Some(parts.ids.get(name).map(|&id| id as usize).ok_or_else(|| {
                    bad(format!(
                        "post_processor adds {name:?}, which is not in the vocab"
                    ))
                }))
            };
            let is_a = |v: &Value| v.pointer("/Sequence/id").and_then(Value::as_str) == Some("A");
            let a_at = items.iter().position(is_a);
            match (a_at, items.len()) {
                (Some(a), len) if a <= 1 && len - a <= 2 => {
                    if a == 1 {
                        options.bos_token_id = Some(special(&items[0]).ok_or_else(|| {
                            bad(format!(
                                "post_processor item {} is not a special token",
                                show(&items[0])
                            ))
                        })??);
                        options.add_bos_token = true;
                    }
                    if len - a == 2 {
                        options.eos_token_id =
                            Some(special(&items[a + 1]).ok_or_else(|| {
                                bad(format!(
                                    "post_processor item {} is not a special token",
                                    show(&items[a + 1])
                                ))
                            })??);
                        options.add_eos_token = true;
                    }
                    Ok(())
                }
                _ => Err(bad(format!(
                    "post_processor {}: only TemplateProcessing with single = [BOS] $A [EOS] is \
                     supported",
                    show(p)
                ))),
            }
        }
        other => Err(bad(format!(
            "post_processor {other:?} is not supported: {}",
            show(p)
        ))),
    }
}
