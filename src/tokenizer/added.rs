//! Added tokens (HF `added_tokens`, GGUF CONTROL / USER_DEFINED tokens): spellings matched whole
//! in the text before pre-tokenisation, leftmost first and, at one position, longest first (as
//! the Hugging Face `tokenizers` added-vocabulary matcher does).

use std::collections::HashSet;

/// The added tokens of a vocabulary and which of them are special.
#[derive(Default)]
pub(crate) struct AddedTokens {
    /// `(spelling, id, special)`, longest spelling first.
    entries: Vec<(Box<str>, u32, bool)>,
    /// `by_first[b]`: indices into `entries` whose spelling starts with byte `b`, longest first.
    by_first: Vec<Vec<usize>>,
    /// The ids of the special ones (skipped by `decode_skip_special`, matched only when
    /// special tokens are parsed).
    special: HashSet<u32>,
}

impl AddedTokens {
    /// The matcher for `tokens` (`(spelling, id, special)`); empty spellings are never matched.
    pub(crate) fn new(mut tokens: Vec<(String, u32, bool)>) -> Self {
        tokens.retain(|(s, _, _)| !s.is_empty());
        // Longest first; ties by id so that nothing depends on the input order.
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        tokens.dedup_by(|a, b| a.0 == b.0);
        let mut by_first = vec![Vec::new(); 256];
        for (i, (s, _, _)) in tokens.iter().enumerate() {
            by_first[s.as_bytes()[0] as usize].push(i);
        }
        let special = tokens.iter().filter(|t| t.2).map(|t| t.1).collect();
        let entries = tokens
            .into_iter()
            .map(|(s, id, sp)| (s.into_boxed_str(), id, sp))
            .collect();
        Self {
            entries,
            by_first,
            special,
        }
    }

    /// Whether `id` is a special added token.
    pub(crate) fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// The ids of the special added tokens, ascending.
    pub(crate) fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.special.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The number of added tokens.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Splits `text` at the added tokens: calls `plain` with each stretch of ordinary text
    /// (possibly empty) and `token` with each matched id, in order. Special tokens are matched
    /// only if `parse_special`; the others always.
    pub(crate) fn split(
        &self,
        text: &str,
        parse_special: bool,
        mut plain: impl FnMut(&str),
        mut token: impl FnMut(u32),
    ) {
        if self.entries.is_empty() {
            plain(text);
            return;
        }
        let bytes = text.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let hit = self.by_first[bytes[i] as usize].iter().find_map(|&e| {
                let (s, id, special) = &self.entries[e];
                (bytes[i..].starts_with(s.as_bytes()) && (parse_special || !special))
                    .then_some((s.len(), *id))
            });
            match hit {
                // A spelling starts with a char's first byte, so `i` is a char boundary.
                Some((len, id)) => {
                    plain(&text[start..i]);
                    token(id);
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        plain(&text[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_and_special_switch() {
        let added = AddedTokens::new(vec![
            ("<a>".into(), 0, true),
            ("<a><b>".into(), 1, true),
            ("<u>".into(), 2, false),
        ]);
        let run = |text: &str, parse_special: bool| {
            let out = std::cell::RefCell::new(Vec::new());
            added.split(
                text,
                parse_special,
                |s| out.borrow_mut().push(format!("{s:?}")),
                |id| out.borrow_mut().push(id.to_string()),
            );
            out.into_inner().join(" ")
        };
        assert_eq!(run("x<a><b>y<a>é<u>", true), "\"x\" 1 \"y\" 0 \"é\" 2 \"\"");
        assert_eq!(run("x<a><b>y<u>", false), "\"x<a><b>y\" 2 \"\"");
        assert_eq!(run("", true), "\"\"");
        assert!(added.is_special(1) && !added.is_special(2));
        assert_eq!(added.special_ids(), [0, 1]);
    }
}
