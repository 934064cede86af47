//! Gpt2Tokenizer: golden ids from the reference, round trips, the embedded files, errors,
//! Hugging Face file names, training.

use handgrad::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Instant;

/// sha256 of `/work/shared/data/gpt2-tokenizer/{encoder.json, vocab.bpe}` (`sha256sum`).
const ENCODER_JSON_SHA256: &str =
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783";
const VOCAB_BPE_SHA256: &str = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5";

fn tok() -> Gpt2Tokenizer {
    Gpt2Tokenizer::embedded().expect("embedded tokenizer")
}

/// `(text, ids)` cases of a fixture `{"cases": [{"text", "ids"}]}`.
fn cases(name: &str) -> Vec<(String, Vec<usize>)> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path);
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let text = c["text"].as_str().expect("text").to_string();
            let ids = c["ids"].as_array().expect("ids");
            let ids = ids
                .iter()
                .map(|i| i.as_u64().expect("id") as usize)
                .collect();
            (text, ids)
        })
        .collect()
}

fn check_cases(tok: &Gpt2Tokenizer, cases: &[(String, Vec<usize>)]) {
    for (text, ids) in cases {
        assert_eq!(&tok.encode(text).unwrap(), ids, "encode({text:?})");
        assert_eq!(
            &tok.decode(ids).unwrap(),
            text,
            "decode of the ids of {text:?}"
        );
    }
}

/// A fresh empty folder under the system temp folder.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handgrad-tok-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn err_text<T: std::fmt::Debug>(r: handgrad::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn golden_dev_cases() {
    let cases = cases("gpt2_tokenizer_golden.json");
    assert_eq!(cases.len(), 15);
    check_cases(&tok(), &cases);
}

/// 516 random strings (many scripts, whitespace kinds, contractions, `<|endoftext|>`, long
/// pieces) whose ids `transformers` and OpenAI's algorithm agree on.
#[test]
fn random_reference_cases() {
    let cases = cases("gpt2_tokenizer_random.json");
    assert!(cases.len() >= 500);
    assert!(cases.iter().any(|(t, _)| t.len() > 256));
    check_cases(&tok(), &cases);
}

#[test]
fn accessors() {
    let tok = tok();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.num_merges(), 50000);
    assert_eq!(tok.eos_token_id(), Some(50256));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(50256));
    assert_eq!(tok.token_to_id("Ġworld"), Some(995));
    assert_eq!(tok.token_to_id("!"), Some(0));
    assert_eq!(tok.token_to_id("not a token"), None);
    assert_eq!(tok.id_to_token(15496), Some("Hello"));
    assert_eq!(tok.id_to_token(50257), None);
    assert_eq!(tok.merges().next(), Some(("Ġ", "t")));
    assert_eq!(tok.decode_bytes(&[220, 198]).unwrap(), b" \n");
    // Ids that split a char decode to U+FFFD (errors="replace"), their bytes stay exact.
    assert_eq!(tok.decode(&[164]).unwrap(), "\u{FFFD}");
    assert_eq!(tok.decode_bytes(&[164]).unwrap(), [0xE8]);
    assert!(format!("{tok:?}").contains("vocab_size: 50257"));
}

#[test]
fn embedded_files_are_the_originals() {
    let (encoder, vocab) = Gpt2Tokenizer::embedded_files().unwrap();
    let hex = |s: &str| format!("{:x}", Sha256::digest(s.as_bytes()));
    assert_eq!(hex(&encoder), ENCODER_JSON_SHA256, "encoder.json");
    assert_eq!(hex(&vocab), VOCAB_BPE_SHA256, "vocab.bpe");
}

/// One random string from a seeded RNG mixing the parts that stress the pattern and the bytes.
fn random_text(rng: &mut ChaCha8Rng) -> String {
    const PARTS: &[&str] = &[
        "the",
        " cat",
        "It",
        "'s",
        "'t",
        "'re",
        "'ve",
        "'m",
        "'ll",
        "'d",
        "'S",
        "''",
        "don't",
        "café",
        "naïve",
        "Zoë",
        "ß",
        "ǅ",
        "日本語",
        "自然语言处理",
        "한국어",
        "Ελληνικά",
        "русский",
        "العربية",
        "हिन्दी",
        "क\u{903}",
        "e\u{301}",
        "a\u{308}\u{323}",
        "🙂",
        "🚀",
        "👍🏽",
        "👨\u{200d}👩\u{200d}👧",
        "\u{2163}",
        "²",
        "½",
        "٣",
        "3.14",
        "1,000,000",
        "!!",
        "?",
        "...",
        "-",
        "_",
        "@#$%",
        "()",
        "<|endoftext|>",
        "<|endoftext",
        "|>",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "\u{85}",
        "\u{1c}",
        "\u{200b}",
        "\u{feff}",
        "\u{ad}",
        "\0",
        "\u{7f}",
        "\u{10ffff}",
        "\u{e000}",
        "𝔘𝔫𝔦",
    ];
    const SPACES: &[&str] = &[
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t ",
    ];
    let mut s = String::new();
    for _ in 0..rng.random_range(0..16) {
        match rng.random_range(0..10) {
            0..=3 => s.push_str(PARTS[rng.random_range(0..PARTS.len())]),
            4..=5 => s.push_str(SPACES[rng.random_range(0..SPACES.len())]),
            6 => s.push(rng.random_range(' '..='~')),
            7 => s.push(rng.random_range('0'..='9')),
            8 => s.push(rng.random_range('\u{80}'..='\u{2fff}')),
            _ => s.push(rng.random_range('\u{3000}'..='\u{10ffff}')), // skips surrogates
        }
    }
    if rng.random_range(0..50) == 0 {
        // A long piece, for the O(n log n) BPE path.
        s.extend((0..rng.random_range(97..600)).map(|_| rng.random_range('a'..='z')));
    }
    s
}

#[test]
fn decode_encode_round_trips() {
    let tok = tok();
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    for _ in 0..4000 {
        let s = random_text(&mut rng);
        let ids = tok.encode(&s).unwrap();
        assert!(ids.iter().all(|&id| id < tok.vocab_size()));
        assert_eq!(tok.decode(&ids).unwrap(), s, "ids {ids:?}");
    }
}

#[test]
fn encoding_is_the_same_from_many_threads() {
    let (encoder, vocab) = Gpt2Tokenizer::embedded_files().unwrap();
    let fresh = Gpt2Tokenizer::from_strs(&encoder, &vocab).unwrap(); // an empty merge cache
    let texts: Vec<String> = {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        (0..400).map(|_| random_text(&mut rng)).collect()
    };
    let expected: Vec<Vec<usize>> = texts.iter().map(|t| tok().encode(t).unwrap()).collect();
    std::thread::scope(|s| {
        for k in 0..4 {
            let (tok, texts, expected) = (fresh.clone(), &texts, &expected);
            s.spawn(move || {
                for i in (0..texts.len()).map(|i| (i * 7 + k * 13) % texts.len()) {
                    assert_eq!(tok.encode(&texts[i]).unwrap(), expected[i]);
                }
            });
        }
    });
}

#[test]
fn from_dir_reads_hugging_face_and_openai_names() {
    let (encoder, vocab) = Gpt2Tokenizer::embedded_files().unwrap();
    let golden = cases("gpt2_tokenizer_golden.json");
    for (v, m) in [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")] {
        let dir = temp_dir(v);
        std::fs::write(dir.join(v), &encoder).unwrap();
        std::fs::write(dir.join(m), &vocab).unwrap();
        let tok = Gpt2Tokenizer::from_dir(&dir).unwrap();
        assert_eq!(tok.vocab_size(), 50257);
        check_cases(&tok, &golden);
        let tok = Gpt2Tokenizer::from_files(dir.join(v), dir.join(m)).unwrap();
        check_cases(&tok, &golden);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A small valid vocab: the 256 byte tokens (GPT-2's first 256 entries) plus `extra`.
fn small_vocab(extra: &[&str]) -> String {
    let (encoder, _) = Gpt2Tokenizer::embedded_files().unwrap();
    let full: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&encoder).unwrap();
    let mut tokens: Vec<(String, u64)> = full
        .into_iter()
        .map(|(t, id)| (t, id.as_u64().unwrap()))
        .filter(|&(_, id)| id < 256)
        .collect();
    tokens.sort_by_key(|&(_, id)| id);
    let mut lines: Vec<String> = tokens
        .iter()
        .map(|(t, id)| format!("{}: {id}", serde_json::Value::from(t.as_str())))
        .collect();
    for (i, t) in extra.iter().enumerate() {
        lines.push(format!("{}: {}", serde_json::Value::from(*t), 256 + i));
    }
    format!("{{\n{}\n}}", lines.join(",\n"))
}

#[test]
fn small_files_load_and_merge() {
    let tok = Gpt2Tokenizer::from_strs(
        &small_vocab(&["ab", "Ġab", "<|endoftext|>"]),
        "#version: 0.2\na b\nĠ ab\n",
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 259);
    assert_eq!(
        tok.encode("ab ab abc<|endoftext|>").unwrap(),
        [256, 257, 257, 66, 258]
    );
    assert_eq!(tok.eos_token_id(), Some(258));
    // Without <|endoftext|> in the vocab it is plain text.
    let tok = Gpt2Tokenizer::from_strs(&small_vocab(&[]), "").unwrap();
    assert_eq!(tok.eos_token_id(), None);
    let ids = tok.encode("<|endoftext|>").unwrap();
    assert_eq!(ids.len(), 13);
    assert_eq!(tok.decode(&ids).unwrap(), "<|endoftext|>");
}

#[test]
fn errors_are_clear() {
    // A missing folder.
    let missing = std::env::temp_dir().join("handgrad-no-such-folder-xyz");
    let e = err_text(Gpt2Tokenizer::from_dir(&missing));
    assert!(e.contains("handgrad-no-such-folder-xyz"), "{e}");
    assert!(
        e.contains("encoder.json + vocab.bpe") && e.contains("vocab.json + merges.txt"),
        "{e}"
    );
    // A folder with only half a pair.
    let dir = temp_dir("half");
    std::fs::write(dir.join("vocab.json"), "{}").unwrap();
    let e = err_text(Gpt2Tokenizer::from_dir(&dir));
    assert!(e.contains("found only vocab.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    // A missing file.
    let e = err_text(Gpt2Tokenizer::from_files(
        missing.join("v.json"),
        missing.join("m.txt"),
    ));
    assert!(e.contains("v.json"), "{e}");

    // Malformed vocab JSON: the file and the line are named.
    let e = err_text(Gpt2Tokenizer::from_strs("{\n\"a\": 0,\n\"b\" 1\n}", ""));
    assert!(e.starts_with("vocab.json: line 3"), "{e}");
    let e = err_text(Gpt2Tokenizer::from_strs(
        "{\n\"a\": 0,\n\"b\": \"one\"\n}",
        "",
    ));
    assert!(
        e.starts_with("vocab.json: line 3") && e.contains("\"b\" has the id \"one\""),
        "{e}"
    );
    let e = err_text(Gpt2Tokenizer::from_strs("{\n\"a\": 0,\n\"b\": 0\n}", ""));
    assert!(
        e.contains("line 3") && e.contains("id 0 is given to both \"a\" and \"b\""),
        "{e}"
    );
    let e = err_text(Gpt2Tokenizer::from_strs("{\"a\": 0}", ""));
    assert!(e.contains("no token 'Ā' for the byte 0x00"), "{e}");

    // Bad merges lines.
    let vocab = small_vocab(&["ab"]);
    let e = err_text(Gpt2Tokenizer::from_strs(
        &vocab,
        "#version: 0.2\na b\na b c\n",
    ));
    assert!(
        e.starts_with("merges.txt: line 3: expected two tokens"),
        "{e}"
    );
    let e = err_text(Gpt2Tokenizer::from_strs(&vocab, "a b\nab\n"));
    assert!(e.starts_with("merges.txt: line 2"), "{e}");
    let e = err_text(Gpt2Tokenizer::from_strs(&vocab, "a b\nab c\n"));
    assert!(
        e.contains("line 2") && e.contains("\"abc\", which is not in the vocab"),
        "{e}"
    );
    let e = err_text(Gpt2Tokenizer::from_strs(&vocab, "a zz\n"));
    assert!(e.contains("line 1") && e.contains("\"zz\""), "{e}");
    // from_files names the path.
    let dir = temp_dir("bad");
    std::fs::write(dir.join("encoder.json"), &vocab).unwrap();
    std::fs::write(dir.join("vocab.bpe"), "#version: 0.2\nab\n").unwrap();
    let e = err_text(Gpt2Tokenizer::from_dir(&dir));
    assert!(e.contains("vocab.bpe: line 2"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    // Decoding an out-of-range id.
    let e = err_text(tok().decode(&[15496, 50257]));
    assert_eq!(
        e,
        "Gpt2Tokenizer::decode: invalid ids[1] = 50257; expected an id < 50257 (the vocab size)"
    );
}

#[test]
fn training_is_deterministic_and_round_trips() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut text = String::new();
    for _ in 0..300 {
        text.push_str(&random_text(&mut rng));
        text.push_str(" the cat sat on the mat. ");
    }
    let a = Gpt2Tokenizer::train(&text, 600).unwrap();
    let b = Gpt2Tokenizer::train(&text, 600).unwrap();
    assert_eq!(a.vocab_size(), 600);
    assert_eq!(a.eos_token_id(), Some(599));
    assert!(a.merges().eq(b.merges()));
    assert_eq!(a.id_to_token(0), Some("!"));
    let ids = a.encode(&text).unwrap();
    assert!(
        ids.len() * 2 < text.len(),
        "{} ids for {} bytes",
        ids.len(),
        text.len()
    );
    assert_eq!(a.decode(&ids).unwrap(), text);
    assert!(a.encode(" the cat").unwrap().len() <= 2);
    // Saved with Hugging Face names and read back: the same tokenizer.
    let dir = temp_dir("train");
    a.save_dir(&dir).unwrap();
    let c = Gpt2Tokenizer::from_dir(&dir).unwrap();
    assert!(a.merges().eq(c.merges()));
    assert_eq!(c.encode(&text).unwrap(), ids);
    std::fs::remove_dir_all(&dir).unwrap();
    // The embedded GPT-2 saved and reloaded is GPT-2.
    let dir = temp_dir("save-gpt2");
    tok().save_dir(&dir).unwrap();
    check_cases(
        &Gpt2Tokenizer::from_dir(&dir).unwrap(),
        &cases("gpt2_tokenizer_golden.json"),
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let e = err_text(Gpt2Tokenizer::train("abc", 256));
    assert!(
        e.contains("vocab_size = 256") && e.contains("at least 257"),
        "{e}"
    );
    // A tiny corpus stops when no pair is left.
    assert_eq!(Gpt2Tokenizer::train("ab", 1000).unwrap().vocab_size(), 258);
}

/// Encoding throughput on a real text (Moby Dick from the shared data folder, else a generated
/// text), cold (empty merge cache) and warm. Prints MB/s; asserts only the round trip.
#[test]
fn encode_throughput() {
    let path = std::env::var("HANDGRAD_TOKENIZER_TEXT")
        .unwrap_or_else(|_| "../shared/data/text/moby-dick.txt".to_string());
    let (name, text) =
        match std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .or_else(|_| std::fs::read_to_string(&path))
        {
            Ok(t) => (path, t),
            Err(_) => {
                let mut rng = ChaCha8Rng::seed_from_u64(1);
                (
                    "generated text".into(),
                    (0..20_000).map(|_| random_text(&mut rng)).collect(),
                )
            }
        };
    let (encoder, vocab) = Gpt2Tokenizer::embedded_files().unwrap();
    let t0 = Instant::now();
    let tok = Gpt2Tokenizer::from_strs(&encoder, &vocab).unwrap();
    let load = t0.elapsed().as_secs_f64();
    let mb = text.len() as f64 / 1e6;
    let t0 = Instant::now();
    let ids = tok.encode(&text).unwrap();
    let cold = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let again = tok.encode(&text).unwrap();
    let warm = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let back = tok.decode(&ids).unwrap();
    let dec = t0.elapsed().as_secs_f64();
    println!(
        "{name}: {mb:.2} MB, {} tokens; parse files {:.0} ms; encode cold {:.1} MB/s, warm {:.1} MB/s; decode {:.0} MB/s",
        ids.len(),
        load * 1e3,
        mb / cold,
        mb / warm,
        mb / dec
    );
    assert_eq!(ids, again);
    assert!(back == text);
}
