//! Llama 3's pre-tokenisation pattern (llama.cpp `llama-bpe`), by hand like GPT-2's in
//! `pretokenize.rs`:
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//! \s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! The alternatives in order, the first that matches wins:
//!
//! 1. a contraction, ASCII case-insensitive (`'S`, `'Ll`);
//! 2. one char that is neither `\r`, `\n`, a letter nor a number, then a letter run (`" the"`,
//!    `"(the"`, `"\tthe"`), or just a letter run;
//! 3. one to three numbers (`"12345"` → `"123"`, `"45"`);
//! 4. an optional space, a run of "other" chars, then any `\r`/`\n` run (`" {\n"`);
//! 5. `\s*[\r\n]+`: a whitespace run up to and including its last `\r` or `\n`;
//! 6. GPT-2's `\s+(?!\S)|\s+`.
//!
//! Contractions fold ASCII case only; the regex engines also fold `ſ` (U+017F) to `s`.

use super::pretokenize::{class, run_len, whitespace_len, Class, CONTRACTIONS};

/// Byte length of the piece that the pattern matches at the start of non-empty `s`.
pub(crate) fn piece_len(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c0) = chars.next() else { return 0 };
    let c1 = chars.next();
    let (k0, n0) = (class(c0), c0.len_utf8());
    if c0 == '\'' {
        let rest = s[1..].as_bytes();
        let hit = CONTRACTIONS
            .iter()
            .find(|x| rest.len() >= x.len() && rest[..x.len()].eq_ignore_ascii_case(x.as_bytes()));
        if let Some(x) = hit {
            return 1 + x.len();
        }
    }
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if k0 == Class::Letter {
        return run_len(s, Class::Letter);
    }
    let crlf = |c: char| c == '\r' || c == '\n';
    if !crlf(c0) && k0 != Class::Number && c1.map(class) == Some(Class::Letter) {
        return n0 + run_len(&s[n0..], Class::Letter);
    }
    // `\p{N}{1,3}`
    if k0 == Class::Number {
        return s
            .char_indices()
            .take_while(|&(_, c)| class(c) == Class::Number)
            .take(3)
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other_start = if k0 == Class::Other {
        Some(0)
    } else if c0 == ' ' && c1.map(class) == Some(Class::Other) {
        Some(1)
    } else {
        None
    };
    if let Some(start) = other_start {
        let end = start + run_len(&s[start..], Class::Other);
        let tail = s[end..].bytes().take_while(|&b| b == b'\r' || b == b'\n');
        return end + tail.count();
    }
    // `\s*[\r\n]+`: c0 is whitespace here.
    let n = run_len(s, Class::Space);
    if let Some(last) = s[..n].rfind(['\r', '\n']) {
        return last + 1;
    }
    whitespace_len(s)
}

#[cfg(test)]
mod tests {
    use super::super::pretokenize::Pretokenizer;

    fn split(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        Pretokenizer::Llama3.for_each_piece(s, |p| out.push(p));
        out
    }

    #[test]
    fn pattern_cases() {
        // Expected pieces from the Python `regex` module running the pattern above.
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split("Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(split("12345 67"), ["123", "45", " ", "67"]);
        assert_eq!(split("(the\tcat"), ["(the", "\tcat"]);
        assert_eq!(split("x  \n\n  y"), ["x", "  \n\n", " ", " y"]);
        assert_eq!(
            split("if {\n  a;\n}\n"),
            ["if", " {\n", " ", " a", ";\n", "}\n"]
        );
        assert_eq!(
            split("I'M YOU'RE it's"),
            ["I", "'M", " YOU", "'RE", " it", "'s"]
        );
        assert_eq!(split("a   b  "), ["a", "  ", " b", "  "]);
        assert_eq!(split("日本語 text\r\n"), ["日本語", " text", "\r\n"]);
    }
}
