//! GPT-2's pre-tokenisation pattern, by hand:
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! At each position the regex tries the alternatives in order and the first that matches wins
//! (no later re-splitting), so [`PreTokens`] does the same with one branch per alternative:
//!
//! 1. a contraction: `'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d` (lower case, whatever follows);
//! 2. an optional U+0020 space then a maximal run of letters, of numbers, or of "other" chars
//!    (neither whitespace, letter nor number); the space is taken only if such a run follows;
//! 3. a whitespace run: whole if it ends the text; otherwise `\s+(?!\S)` backtracks one char so
//!    the last whitespace char starts the next piece (`"a   b"` → `a`, `"  "`, `" b"`), and a
//!    single whitespace char before a non-space is matched alone by the final `\s+`.
//!
//! `\s` is Unicode `White_Space`, which is what both `char::is_whitespace` and the Python `regex`
//! module's `\s` match (checked over all code points); `\p{L}`/`\p{N}` come from a table
//! generated with the `regex` module (see `unicode_classes.rs`).

use super::unicode_classes::LETTER_NUMBER_RANGES;

/// The class of a char in the pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `\p{L}`.
    Letter,
    /// `\p{N}`.
    Number,
    /// `\s`.
    Space,
    /// Everything else: `[^\s\p{L}\p{N}]`.
    Other,
}

/// The class of each ASCII char.
const ASCII_CLASS: [Class; 128] = {
    let mut t = [Class::Other; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Number
        } else if matches!(c, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') {
            Class::Space
        } else {
            Class::Other
        };
        b += 1;
    }
    t
};

/// The pattern class of `c`.
#[inline]
pub(crate) fn class(c: char) -> Class {
    let cp = c as u32;
    if cp < 128 {
        return ASCII_CLASS[cp as usize];
    }
    if c.is_whitespace() {
        return Class::Space;
    }
    let i = LETTER_NUMBER_RANGES.partition_point(|&(_, last, _)| last < cp);
    match LETTER_NUMBER_RANGES.get(i) {
        Some(&(first, _, is_letter)) if first <= cp => {
            if is_letter {
                Class::Letter
            } else {
                Class::Number
            }
        }
        _ => Class::Other,
    }
}

/// How text is split into pieces before BPE (each piece is merged on its own).
///
/// The names are those of llama.cpp's `tokenizer.ggml.pre` ([`Pretokenizer::from_gguf_name`]);
/// a Hugging Face `tokenizer.json` maps to them through its `pre_tokenizer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Pretokenizer {
    /// GPT-2's pattern
    /// (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`):
    /// HF `ByteLevel(add_prefix_space=false, use_regex=true)`, llama.cpp `gpt2`. The default.
    #[default]
    Gpt2,
    /// llama.cpp's `smollm` (SmolLM2's original `tokenizer.json`: `Digits(individual_digits=true)`
    /// then `ByteLevel`): every `\p{N}` char is split off on its own first, then GPT-2's pattern
    /// runs on each stretch between them. So a space never joins a digit: `"  42"` →
    /// `"  "`, `"4"`, `"2"` (GPT-2's pattern gives `" "`, `" 42"`).
    SmolLm,
    /// Llama 3's pattern (llama.cpp `llama-bpe`, HF `Split` with this regex then
    /// `ByteLevel(use_regex=false)`):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
}

/// The `tokenizer.ggml.pre` names [`Pretokenizer::from_gguf_name`] knows.
pub const SUPPORTED_GGUF_PRE: &[&str] = &[
    "gpt2",
    "gpt-2",
    "phi-2",
    "smollm",
    "llama-bpe",
    "llama3",
    "llama-v3",
];

impl Pretokenizer {
    /// The variant of a GGUF `tokenizer.ggml.pre` name: `gpt2` / `gpt-2` / `phi-2` (GPT-2's
    /// pattern), `smollm`, `llama-bpe` / `llama3` / `llama-v3` (Llama 3's), as llama.cpp maps them.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the unknown name and listing the supported ones.
    pub fn from_gguf_name(name: &str) -> crate::Result<Self> {
        match name {
            "gpt2" | "gpt-2" | "phi-2" => Ok(Self::Gpt2),
            "smollm" => Ok(Self::SmolLm),
            "llama-bpe" | "llama3" | "llama-v3" => Ok(Self::Llama3),
            _ => Err(crate::Error::config(
                "Pretokenizer",
                "tokenizer.ggml.pre",
                format!("{name:?}"),
                format!("one of {SUPPORTED_GGUF_PRE:?}"),
            )),
        }
    }

    /// The pieces of `text`, in order (they concatenate to `text`); BPE merges within each.
    ///
    /// ```
    /// use handgrad::tokenizer::Pretokenizer;
    ///
    /// assert_eq!(Pretokenizer::Gpt2.split("a  42"), ["a", " ", " 42"]);
    /// assert_eq!(Pretokenizer::SmolLm.split("a  42"), ["a", "  ", "4", "2"]);
    /// assert_eq!(Pretokenizer::Llama3.split("a  12345"), ["a", " ", " ", "123", "45"]);
    /// ```
    pub fn split(self, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p));
        out
    }

    /// Calls `f` with each piece of `text` in order; the pieces concatenate to `text`.
    pub(crate) fn for_each_piece<'a>(self, text: &'a str, mut f: impl FnMut(&'a str)) {
        match self {
            Self::Gpt2 => pretokenize(text).for_each(f),
            Self::Llama3 => pieces(text, super::pretokenize_llama3::piece_len).for_each(f),
            Self::SmolLm => {
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if class(c) == Class::Number {
                        pretokenize(&text[start..i]).for_each(&mut f);
                        f(&text[i..i + c.len_utf8()]);
                        start = i + c.len_utf8();
                    }
                }
                pretokenize(&text[start..]).for_each(f);
            }
        }
    }
}

/// The pieces of `text` that a pattern matches, in order; they concatenate to `text`.
pub(crate) struct PreTokens<'a> {
    rest: &'a str,
    piece_len: fn(&str) -> usize,
}

/// Splits `text` with a pattern given as "byte length of the piece at the start of `s`".
fn pieces(text: &str, piece_len: fn(&str) -> usize) -> PreTokens<'_> {
    PreTokens {
        rest: text,
        piece_len,
    }
}

/// Splits `text` with GPT-2's pre-tokenisation pattern.
pub(crate) fn pretokenize(text: &str) -> PreTokens<'_> {
    pieces(text, piece_len)
}

/// Byte length of the longest prefix of `s` whose chars are all of class `k`.
#[inline]
pub(crate) fn run_len(s: &str, k: Class) -> usize {
    s.char_indices()
        .find(|&(_, c)| class(c) != k)
        .map_or(s.len(), |(i, _)| i)
}

pub(crate) const CONTRACTIONS: [&str; 7] = ["s", "t", "re", "ve", "m", "ll", "d"];

/// Byte length of the piece that the pattern matches at the start of non-empty `s`.
fn piece_len(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c0) = chars.next() else { return 0 };
    if c0 == '\''
        && let Some(suffix) = CONTRACTIONS.iter().find(|x| s[1..].starts_with(**x))
    {
        return 1 + suffix.len();
    }
    let k0 = class(c0);
    if c0 == ' ' {
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the space joins a following non-space run.
        if let Some(k1) = chars.next().map(class)
            && k1 != Class::Space
        {
            return 1 + run_len(&s[1..], k1);
        }
    }
    if k0 != Class::Space {
        return run_len(s, k0);
    }
    whitespace_len(s)
}

/// `\s+(?!\S)|\s+` at the start of `s`, which starts with whitespace.
pub(crate) fn whitespace_len(s: &str) -> usize {
    let n = run_len(s, Class::Space);
    if n == s.len() {
        return n; // the run ends the text: (?!\S) holds at the end
    }
    // Followed by a non-space: give back the last whitespace char if the run has two or more.
    let last = s[..n].chars().next_back().map_or(0, char::len_utf8);
    if n > last {
        n - last
    } else {
        n
    }
}

impl<'a> Iterator for PreTokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (piece, rest) = self.rest.split_at((self.piece_len)(self.rest));
        self.rest = rest;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pretokenize(s).collect()
    }

    #[test]
    fn pattern_cases() {
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split("Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(split("a  b   c"), ["a", " ", " b", "  ", " c"]);
        assert_eq!(split("trailing   "), ["trailing", "   "]);
        assert_eq!(split("x\n\n\ny"), ["x", "\n\n", "\n", "y"]);
        assert_eq!(split("x \n y"), ["x", " \n", " y"]);
        assert_eq!(
            split("it's we'll 'S ''s"),
            ["it", "'s", " we", "'ll", " '", "S", " ''", "s"]
        );
        assert_eq!(split("'sfoo"), ["'s", "foo"]);
        assert_eq!(split("abc123 45!?"), ["abc", "123", " 45", "!?"]);
        assert_eq!(
            split(" \u{3000}日本\u{a0}語"),
            [" ", "\u{3000}", "日本", "\u{a0}", "語"]
        );
        // U+0301 COMBINING ACUTE (Mn) is "other", U+0903 (Mc, Other_Alphabetic) too.
        assert_eq!(split("e\u{301}x"), ["e", "\u{301}", "x"]);
        assert_eq!(split("क\u{903}"), ["क", "\u{903}"]);
        // U+2163 ROMAN NUMERAL FOUR is Nl: a number, although `is_alphabetic` says letter.
        assert_eq!(split("a\u{2163}"), ["a", "\u{2163}"]);
    }

    #[test]
    fn classes() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('7'), Class::Number);
        assert_eq!(class('\u{b2}'), Class::Number); // superscript two, No
        assert_eq!(class('ß'), Class::Letter);
        assert_eq!(class('\u{85}'), Class::Space);
        assert_eq!(class('\u{1c}'), Class::Other); // not White_Space (Python's isspace says yes)
        assert_eq!(class('😀'), Class::Other);
        assert_eq!(class('\u{10FFFF}'), Class::Other);
        assert_eq!(class('\u{2F800}'), Class::Letter); // CJK compatibility ideograph
    }
}
