//! The GPT-2 tokenizer: loading arbitrary vocab/merges text (the input split at its first NUL
//! byte) must give Ok or Err, never a panic; and the embedded tokenizer must round-trip any
//! valid UTF-8 text exactly.
#![no_main]
use handgrad::tokenizer::{Gpt2Tokenizer, Tokenizer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TOK: OnceLock<Gpt2Tokenizer> = OnceLock::new();
    let tok = TOK.get_or_init(|| Gpt2Tokenizer::embedded().expect("embedded tokenizer"));
    if let Ok(text) = std::str::from_utf8(data) {
        let ids = tok.encode(text).expect("any text encodes");
        assert_eq!(tok.decode(&ids).expect("own ids decode"), text, "round trip");
        if let Some((vocab, merges)) = text.split_once('\0') {
            if let Ok(t) = Gpt2Tokenizer::from_strs(vocab, merges) {
                if let Ok(ids) = t.encode(merges) {
                    let _ = t.decode(&ids);
                }
            }
        }
    }
});
