//! Llama-family byte-level BPE tokenizers against the fixtures in tests/fixtures/llama (see
//! that set's README): the tiny tokenizer from `tokenizer.json`, from `vocab.json` +
//! `merges.txt` + `tokenizer_config.json` and from the GGUF; SmolLM2's real tokenizer from its
//! GGUF (when `HANDGRAD_MODELS` points at the downloaded model); streaming decode; errors.

use handgrad::tokenizer::{
    BpeOptions, BpeTokenizer, EncodeOptions, Pretokenizer, StreamDecoder, Tokenizer,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect(name);
    serde_json::from_str(&text).expect(name)
}

fn ids_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as usize)
        .collect()
}

fn err_text<T: std::fmt::Debug>(r: handgrad::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

/// A fresh folder under the temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handgrad-llm-tok-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every case of llama_tiny_tokenizer_cases.json: ids, token spellings, decoded text.
fn check_tiny_cases(tok: &BpeTokenizer, how: &str) {
    let cases = json("llama_tiny_tokenizer_cases.json");
    assert_eq!(tok.vocab_size(), cases["vocab_size"].as_u64().unwrap() as usize, "{how}");
    assert_eq!(tok.num_merges(), cases["n_merges"].as_u64().unwrap() as usize, "{how}");
    let list = cases["cases"].as_array().unwrap();
    assert!(list.len() >= 10);
    for case in list {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, ids_of(&case["ids"]), "{how}: ids of {text:?}");
        let tokens: Vec<&str> = ids.iter().map(|&id| tok.id_to_token(id).unwrap()).collect();
        let expected: Vec<&str> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens, expected, "{how}: tokens of {text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap(), "{how}");
    }
    // SmolLM2's special ids and the 17 control tokens.
    assert_eq!(tok.bos_token_id(), Some(1), "{how}");
    assert_eq!(tok.eos_token_id(), Some(2), "{how}");
    assert_eq!(tok.special_token_ids(), (0..17).collect::<Vec<_>>(), "{how}");
    assert!(tok.is_special(16) && !tok.is_special(17), "{how}");
    assert!(!tok.options().add_bos_token, "{how}");
}

#[test]
fn tiny_from_tokenizer_json() {
    let tok = BpeTokenizer::from_tokenizer_json(fixtures().join("llama_tiny/tokenizer.json")).unwrap();
    assert_eq!(tok.pretokenizer(), Pretokenizer::Gpt2);
    // tokenizer.json alone names no BOS / EOS: the folder's tokenizer_config.json does.
    assert_eq!(tok.eos_token_id(), None);
    let tok = tok
        .with_tokenizer_config(
            &std::fs::read_to_string(fixtures().join("llama_tiny/tokenizer_config.json")).unwrap(),
        )
        .unwrap();
    check_tiny_cases(&tok, "tokenizer.json + with_tokenizer_config");
    assert_eq!(tok.pad_token_id(), Some(2));
    assert_eq!(tok.unk_token_id(), Some(0));
}

#[test]
fn tiny_from_dir_prefers_tokenizer_json_and_reads_the_config() {
    let tok = BpeTokenizer::from_dir(fixtures().join("llama_tiny")).unwrap();
    check_tiny_cases(&tok, "from_dir(llama_tiny)");
    assert_eq!((tok.pad_token_id(), tok.unk_token_id()), (Some(2), Some(0)));
}

#[test]
fn tiny_from_vocab_merges_and_config() {
    let dir = temp_dir("vocab-merges");
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join("llama_tiny").join(name), dir.join(name)).unwrap();
    }
    let tok = BpeTokenizer::from_dir(&dir).unwrap();
    check_tiny_cases(&tok, "vocab.json + merges.txt + tokenizer_config.json");
    // Without the config only <|endoftext|> is special (GPT-2's rule), so <|im_start|> is text.
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let bare = BpeTokenizer::from_dir(&dir).unwrap();
    assert_eq!(bare.special_token_ids(), [0]);
    assert_eq!(bare.eos_token_id(), Some(0));
    assert!(bare.encode("<|im_start|>").unwrap().len() > 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn control_tokens_match_whole_and_can_be_text() {
    let tok = BpeTokenizer::from_dir(fixtures().join("llama_tiny")).unwrap();
    let text = "<|im_start|>user\nHi there<|im_end|>\n";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids[9], 2);
    assert_eq!(tok.decode_skip_special(&ids).unwrap(), "user\nHi there\n");
    // Longest first: <|im_start|> inside a longer spelling-like text still splits correctly.
    let ids = tok.encode("a<|im_end|><|im_end|><|im_start").unwrap();
    assert_eq!(&ids[1..3], &[2, 2]);
    assert!(ids[3..].iter().all(|&id| !tok.is_special(id)));
    // parse_special = false: the spelling is plain text (llama.cpp parse_special=false).
    let as_text = EncodeOptions {
        parse_special: false,
        ..Default::default()
    };
    let ids = tok.encode_with("<|im_end|>", as_text).unwrap();
    assert!(ids.len() > 1 && ids.iter().all(|&id| !tok.is_special(id)), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "<|im_end|>");
}

#[test]
fn add_bos_and_eos_follow_the_options() {
    let dir = temp_dir("add-bos");
    std::fs::copy(
        fixtures().join("llama_tiny/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let config = std::fs::read_to_string(fixtures().join("llama_tiny/tokenizer_config.json"))
        .unwrap()
        .replace("\"add_bos_token\": false", "\"add_bos_token\": true")
        .replace("\"add_eos_token\": false", "\"add_eos_token\": true");
    std::fs::write(dir.join("tokenizer_config.json"), config).unwrap();
    let tok = BpeTokenizer::from_dir(&dir).unwrap();
    let ids = tok.encode("Hi").unwrap();
    assert_eq!((ids[0], *ids.last().unwrap(), ids.len()), (1, 2, 4));
    let plain = EncodeOptions {
        add_special_tokens: false,
        ..Default::default()
    };
    assert_eq!(tok.encode_with("Hi", plain).unwrap(), &ids[1..3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stream_decoder_equals_decode_across_split_chars() {
    let tok = BpeTokenizer::from_dir(fixtures().join("llama_tiny")).unwrap();
    let texts = [
        "今天天气很好，我们去公园散步。",
        "Emoji 😀 and café",
        "👨‍👩‍👧‍👦 family ❤️ 日本語",
        "<|im_start|>assistant\n你好😀<|im_end|>",
    ];
    for text in texts {
        let ids = tok.encode(text).unwrap();
        for skip in [false, true] {
            let mut stream = StreamDecoder::new(&tok, skip);
            let mut pieces = Vec::new();
            let mut held_back = false;
            for &id in &ids {
                pieces.push(stream.push(id).unwrap());
                held_back |= stream.has_pending();
            }
            pieces.push(stream.finish());
            let expected = if skip {
                tok.decode_skip_special(&ids).unwrap()
            } else {
                tok.decode(&ids).unwrap()
            };
            assert_eq!(pieces.concat(), expected, "{text:?} skip={skip}");
            // Every piece is whole chars, and some char really did span tokens.
            assert!(held_back, "{text:?}: no char spanned two tokens");
        }
    }
    // Invalid bytes: a lone continuation byte is U+FFFD at once; an unfinished char at the end
    // is U+FFFD from finish().
    let byte = |b: u8| {
        (0..tok.vocab_size())
            .find(|&id| tok.decode_bytes(&[id]).unwrap() == [b])
            .unwrap()
    };
    let (cont, lead) = (byte(0x80), byte(0xE4)); // a continuation byte; a 3-byte char's lead
    let mut stream = StreamDecoder::new(&tok, false);
    let a = tok.encode("a").unwrap()[0];
    let got = [
        stream.push(a).unwrap(),
        stream.push(cont).unwrap(),
        stream.push(lead).unwrap(),
        stream.finish(),
    ];
    let all = tok.decode(&[a, cont, lead]).unwrap();
    assert_eq!(got.concat(), all);
    assert_eq!(all, "a\u{FFFD}\u{FFFD}");
    assert_eq!(got[2], "", "the lead byte waits");
    // An out-of-range id is an error and changes nothing.
    let e = err_text(stream.push(333));
    assert!(e.contains("ids[0] = 333") && e.contains("< 333"), "{e}");
}

#[test]
fn from_parts_builds_the_tiny_tokenizer() {
    let tok = BpeTokenizer::from_dir(fixtures().join("llama_tiny")).unwrap();
    let tokens: Vec<String> = (0..tok.vocab_size())
        .map(|id| tok.id_to_token(id).unwrap().to_string())
        .collect();
    let types: Vec<i32> = (0..tokens.len()).map(|id| if id < 17 { 3 } else { 1 }).collect();
    let merges: Vec<String> = tok.merges().map(|(a, b)| format!("{a} {b}")).collect();
    let merges: Vec<&str> = merges.iter().map(String::as_str).collect();
    let options = BpeOptions {
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: Some(2),
        unk_token_id: Some(0),
        ..Default::default()
    };
    let parts = BpeTokenizer::from_parts(tokens.clone(), types.clone(), &merges, options.clone())
        .unwrap();
    check_tiny_cases(&parts, "from_parts");

    // Errors name what is wrong.
    let e = err_text(BpeTokenizer::from_parts(tokens.clone(), vec![1; 5], &merges, options.clone()));
    assert!(e.contains("token_types has 5 entries for 333 tokens"), "{e}");
    let mut bad_types = types.clone();
    bad_types[40] = 9;
    let e = err_text(BpeTokenizer::from_parts(tokens.clone(), bad_types, &merges, options.clone()));
    assert!(e.contains("token_types[40] = 9") && e.contains("1..=6"), "{e}");
    let e = err_text(BpeTokenizer::from_parts(tokens.clone(), types.clone(), &["Ġt"], options.clone()));
    assert!(e.contains("merges[0]") && e.contains("\"left right\""), "{e}");
    let e = err_text(BpeTokenizer::from_parts(tokens.clone(), types.clone(), &["Ġ zz"], options.clone()));
    assert!(e.contains("\"zz\", which is not in the vocab"), "{e}");
    let far = BpeOptions {
        eos_token_id: Some(5000),
        ..options
    };
    let e = err_text(BpeTokenizer::from_parts(tokens, types, &merges, far));
    assert!(e.contains("eos_token_id = 5000 is not an id of the 333 tokens"), "{e}");
    let e = err_text(Pretokenizer::from_gguf_name("qwen2"));
    assert!(e.contains("\"qwen2\"") && e.contains("gpt2") && e.contains("smollm"), "{e}");
}

/// The tiny tokenizer.json with `f` applied to its JSON.
fn edited(f: impl FnOnce(&mut Value)) -> String {
    let mut v = json("llama_tiny/tokenizer.json");
    f(&mut v);
    v.to_string()
}

#[test]
fn tokenizer_json_variants_and_errors() {
    // Merges as "a b" strings instead of pairs.
    let strings = edited(|v| {
        let merges: Vec<Value> = v["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Value::from(format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap())))
            .collect();
        v["model"]["merges"] = Value::from(merges);
    });
    let a = BpeTokenizer::from_tokenizer_json_str(&strings).unwrap();
    let b = BpeTokenizer::from_tokenizer_json(fixtures().join("llama_tiny/tokenizer.json")).unwrap();
    let text = "The quick brown fox, 今天 <|im_start|> 42";
    assert_eq!(a.encode(text).unwrap(), b.encode(text).unwrap());

    // SmolLM2's original pre-tokenizer: digits alone, so "  42" keeps its two spaces together.
    let smol = edited(|v| {
        v["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
    });
    let smol = BpeTokenizer::from_tokenizer_json_str(&smol).unwrap();
    assert_eq!(smol.pretokenizer(), Pretokenizer::SmolLm);
    let sp = b.token_to_id("Ġ").unwrap();
    let (four, two) = (b.token_to_id("4").unwrap(), b.token_to_id("2").unwrap());
    assert_eq!(b.encode("  42").unwrap(), [sp, sp, four, two]); // GPT-2: " ", " 42" → Ġ Ġ 4 2
    assert_eq!(smol.encode("a  42").unwrap()[1..], [sp, sp, four, two]);
    let llama3 = edited(|v| {
        v["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
    });
    let llama3 = BpeTokenizer::from_tokenizer_json_str(&llama3).unwrap();
    assert_eq!(llama3.pretokenizer(), Pretokenizer::Llama3);
    assert_eq!(llama3.decode(&llama3.encode(text).unwrap()).unwrap(), text);

    // Errors name the part that is not supported.
    let cases: Vec<(Box<dyn FnOnce(&mut Value)>, &str)> = vec![
        (Box::new(|v| v["model"]["type"] = "WordPiece".into()), "model.type is \"WordPiece\""),
        (Box::new(|v| v["model"]["byte_fallback"] = true.into()), "byte_fallback"),
        (Box::new(|v| v["model"]["vocab"]["Ġt"] = 1_000_000_000_000u64.into()), "\"Ġt\" has the id 1000000000000"),
        (Box::new(|v| v["model"]["vocab"]["Ġt"] = 5.into()), "gives id 5 to both"),
        (Box::new(|v| { v["model"]["vocab"].as_object_mut().unwrap().remove("Ġt"); }), "no token has the id"),
        (Box::new(|v| v["model"]["merges"][3] = serde_json::json!(["Ġ", "zz"])), "model.merges[3]"),
        (Box::new(|v| v["model"]["merges"][0] = 7.into()), "expected \"a b\" or"),
        (Box::new(|v| v["added_tokens"][2]["lstrip"] = true.into()), "\"<|im_end|>\" has lstrip: true"),
        (Box::new(|v| v["added_tokens"][2]["content"] = "<x>".into()), "\"<x>\" has id 2, which model.vocab gives to \"<|im_end|>\""),
        (Box::new(|v| v["normalizer"] = serde_json::json!({"type": "NFC"})), "normalizer {\"type\":\"NFC\"}"),
        (Box::new(|v| v["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"})), "pre_tokenizer {\"type\":\"Whitespace\"} is not supported"),
        (Box::new(|v| v["pre_tokenizer"]["add_prefix_space"] = true.into()), "is not supported"),
        (Box::new(|v| v["decoder"] = serde_json::json!({"type": "WordPiece"})), "decoder {\"type\":\"WordPiece\"}"),
        (Box::new(|v| v["post_processor"] = serde_json::json!({"type": "BertProcessing"})), "post_processor \"BertProcessing\""),
    ];
    for (edit, needle) in cases {
        let e = err_text(BpeTokenizer::from_tokenizer_json_str(&edited(edit)));
        assert!(e.starts_with("tokenizer.json") && e.contains(needle), "{needle}: {e}");
    }
    let e = err_text(BpeTokenizer::from_tokenizer_json_str("{\"model\": "));
    assert!(e.contains("invalid JSON"), "{e}");
    let e = err_text(BpeTokenizer::from_tokenizer_json("/no/such/tokenizer.json"));
    assert!(e.contains("/no/such/tokenizer.json"), "{e}");
    // A post-processor that adds BOS (Llama 3 style).
    let bos = edited(|v| {
        v["post_processor"] = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {}});
    });
    let bos = BpeTokenizer::from_tokenizer_json_str(&bos).unwrap();
    assert_eq!(bos.encode("Hi").unwrap()[0], 1);
    assert_eq!(bos.bos_token_id(), Some(1));
}

#[test]
fn tokenizer_config_errors() {
    let tok = BpeTokenizer::from_tokenizer_json(fixtures().join("llama_tiny/tokenizer.json")).unwrap();
    let e = err_text(tok.with_tokenizer_config("{\"eos_token\": \"<nope>\"}"));
    assert!(e.contains("eos_token is \"<nope>\", which is not a token of the vocab"), "{e}");
    let e = err_text(tok.with_tokenizer_config(
        "{\"added_tokens_decoder\": {\"5\": {\"content\": \"<x>\", \"special\": true}}}",
    ));
    assert!(e.contains("gives id 5 to \"<x>\"") && e.contains("<file_sep>"), "{e}");
    let e = err_text(tok.with_tokenizer_config("[1]"));
    assert!(e.contains("expected a JSON object"), "{e}");
}
