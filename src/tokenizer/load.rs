//! Parsing `encoder.json` / `vocab.json` (token → id) and `vocab.bpe` / `merges.txt` (one merge
//! per line), with errors naming the file and the line.

use crate::error::{Error, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A parsed vocabulary: `tokens[id]` is the token of `id`.
pub(crate) struct Vocab {
    pub(crate) tokens: Vec<String>,
    pub(crate) ids: HashMap<String, u32>,
}

/// One merge `left right → merged`, as ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Merge {
    pub(crate) left: u32,
    pub(crate) right: u32,
    pub(crate) merged: u32,
}

/// The 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The JSON spellings of a string: as serde_json writes it (UTF-8) and as Python's `json.dumps`
/// does by default (non-ASCII as `\uXXXX`, the spelling of OpenAI's `encoder.json`).
fn json_spellings(s: &str) -> [String; 2] {
    let utf8 = serde_json::Value::from(s).to_string();
    let mut ascii = String::with_capacity(utf8.len());
    for c in utf8.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    [utf8, ascii]
}

/// The line of the `nth` (1-based) occurrence of `key` as an object key (`"key":`) in `json`.
fn key_line(json: &str, key: &str, nth: usize) -> Option<usize> {
    json_spellings(key).iter().find_map(|quoted| {
        let mut seen = 0;
        let mut from = 0;
        while let Some(found) = json[from..].find(quoted.as_str()) {
            let at = from + found;
            from = at + quoted.len();
            if json[from..].trim_start().starts_with(':') {
                seen += 1;
                if seen == nth {
                    return Some(line_at(json, at));
                }
            }
        }
        None
    })
}

/// Collects a JSON object's entries, rejecting non-integer ids, duplicate tokens and duplicate
/// ids as soon as they are read. On such an error `culprit` names the key and which occurrence of
/// it (serde_json's position is then just past the value, so the key's own line is looked up).
struct EntriesVisitor<'a> {
    culprit: &'a mut Option<(String, usize)>,
}

impl<'de> Visitor<'de> for EntriesVisitor<'_> {
    type Value = Vec<(String, u64)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object mapping each token to an integer id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, u64)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        let mut by_id: HashMap<u64, usize> = HashMap::with_capacity(entries.capacity());
        let mut seen: HashSet<String> = HashSet::with_capacity(entries.capacity());
        while let Some(token) = map.next_key::<String>()? {
            let value: serde_json::Value = map.next_value()?;
            let occurrence = 1 + usize::from(seen.contains(&token));
            let problem = match (value.as_u64(), occurrence) {
                (None, _) => {
                    format!("token {token:?} has the id {value}, expected an integer >= 0")
                }
                (Some(_), 2) => format!("token {token:?} appears twice"),
                (Some(id), _) => match by_id.get(&id) {
                    Some(&other) => {
                        let other = &entries[other].0;
                        format!("id {id} is given to both {other:?} and {token:?}")
                    }
                    None => {
                        seen.insert(token.clone());
                        by_id.insert(id, entries.len());
                        entries.push((token, id));
                        continue;
                    }
                },
            };
            *self.culprit = Some((token, occurrence));
            return Err(de::Error::custom(problem));
        }
        Ok(entries)
    }
}

/// Parses a token → id JSON object whose ids are exactly `0..n`.
pub(crate) fn parse_vocab(json: &str, source: &str) -> Result<Vocab> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut culprit = None;
    let visitor = EntriesVisitor {
        culprit: &mut culprit,
    };
    let entries = (&mut de)
        .deserialize_map(visitor)
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| {
            // serde_json ends its messages with " at line L column C": put the position first.
            let message = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            let at = match culprit.and_then(|(key, nth)| key_line(json, &key, nth)) {
                Some(line) => format!("line {line}"),
                None => format!("line {}, column {}", e.line(), e.column()),
            };
            Error::format(source, format!("{at}: {message}"))
        })?;
    let n = entries.len();
    if n > u32::MAX as usize {
        return Err(Error::format(
            source,
            format!("{n} tokens; at most 2^32 - 1"),
        ));
    }
    let mut tokens = vec![String::new(); n];
    let mut ids = HashMap::with_capacity(n);
    for (token, id) in entries {
        if id >= n as u64 {
            let at = key_line(json, &token, 1).map_or(String::new(), |l| format!("line {l}: "));
            return Err(Error::format(
                source,
                format!(
                    "{at}token {token:?} has id {id}, but the {n} tokens must use the ids \
                     0..{n} without gaps"
                ),
            ));
        }
        // The ids are distinct and < n, so they are exactly 0..n.
        tokens[id as usize] = token.clone();
        ids.insert(token, id as u32);
    }
    Ok(Vocab { tokens, ids })
}

/// Parses merges text (an optional `#version` first line, then `left right` per line) against
/// `vocab`: both tokens and their concatenation must be in it. Blank lines are skipped.
pub(crate) fn parse_merges(text: &str, source: &str, vocab: &Vocab) -> Result<Vec<Merge>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::format(source, format!("line {}: {message}", i + 1));
        let mut parts = line.split_whitespace();
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!(
                "expected two tokens separated by a space, got {line:?}"
            )));
        };
        let id = |token: &str| {
            vocab.ids.get(token).copied().ok_or_else(|| {
                bad(format!(
                    "the merge {left:?} + {right:?} needs the token {token:?}, which is not in \
                     the vocab"
                ))
            })
        };
        merges.push(Merge {
            left: id(left)?,
            right: id(right)?,
            merged: id(&format!("{left}{right}"))?,
        });
    }
    Ok(merges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_errors_name_the_line() {
        let err = |json: &str| parse_vocab(json, "v.json").err().unwrap().to_string();
        assert!(
            err("{\"a\": 0,\n\"b\": 1.5}").contains("line 2"),
            "{}",
            err("{\"a\": 0,\n\"b\": 1.5}")
        );
        assert!(err("{\"a\": 0,\n\"b\": 0}").contains("id 0 is given to both \"a\" and \"b\""));
        assert!(err("{\"a\": 0,\n\"a\": 1}").contains("appears twice"));
        assert!(err("{\"a\": 0,\n\"b\": 5}").contains("line 2: token \"b\" has id 5"));
        assert!(err("[1, 2]").contains("JSON object"));
        assert!(err("{\"a\": 0} x").contains("v.json: line 1, column 10"));
        // OpenAI's spelling of non-ASCII keys.
        assert!(err("{\"\\u0120\": 0,\n\"\\u0120\": 1}")
            .starts_with("v.json: line 2: token \"Ġ\" appears twice"));
        assert_eq!(key_line("{\"a\": \"a\", \"a\":1}", "a", 2), Some(1));
        assert!(err("{\"a\": -1}").contains("has the id -1, expected an integer >= 0"));
        let ok = parse_vocab("{\"b\": 1, \"a\": 0}", "v.json").unwrap();
        assert_eq!(ok.tokens, ["a", "b"]);
    }
}
