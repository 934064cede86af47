//! The pre-tokenizers against the Python `regex` module on random strings of tricky chars
//! (tests/fixtures/pretokenize/pretokenize_random.json, from gen_pretokenize_random.py there).

use handgrad::tokenizer::Pretokenizer;
use serde_json::Value;

#[test]
fn pretokenizers_match_the_regex_module() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pretokenize/pretokenize_random.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 400);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        for (key, pre) in [
            ("gpt2", Pretokenizer::Gpt2),
            ("smollm", Pretokenizer::SmolLm),
            ("llama3", Pretokenizer::Llama3),
        ] {
            let expected: Vec<&str> = case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(pre.split(text), expected, "{key}: {text:?}");
        }
    }
}
