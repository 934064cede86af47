//! Every file reader against hostile input: empty files, truncation at every byte, random bytes,
//! huge declared sizes, wrong dtypes and duplicate keys. Each must be an `Err` (never a panic,
//! a hang, or an allocation beyond the file's size).

use handgrad::data::parse_cifar10_batch;
use handgrad::io::{parse_safetensors, to_safetensors_bytes, Checkpoint};
use handgrad::transformer::GptConfig;
use handgrad::Tensor;
use ndarray::IxDyn;
use rand::{Rng as _, SeedableRng};
use std::collections::{BTreeMap, HashMap};

fn small_safetensors() -> Vec<u8> {
    let mut t = BTreeMap::new();
    t.insert("a".to_string(), Tensor::from_elem(IxDyn(&[2, 3]), 1.5));
    t.insert("b".to_string(), Tensor::from_elem(IxDyn(&[4]), -2.0));
    let mut meta = HashMap::new();
    meta.insert("k".to_string(), "v".to_string());
    to_safetensors_bytes(&t, Some(meta)).unwrap()
}

/// A safetensors file with a hand-written header (for lies the writer would never produce).
fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn safetensors_every_truncation_is_an_error() {
    let good = small_safetensors();
    assert!(parse_safetensors(&good, "t").is_ok());
    for n in 0..good.len() {
        assert!(
            parse_safetensors(&good[..n], "t").is_err(),
            "prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn safetensors_random_bytes_and_mutations_never_panic() {
    let good = small_safetensors();
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for _ in 0..3000 {
        let len = r.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| r.random()).collect();
        let _ = parse_safetensors(&bytes, "random");
        // single-byte mutations of a valid file: Ok or Err, never a panic
        let mut m = good.clone();
        let i = r.random_range(0..m.len());
        m[i] = r.random();
        let _ = parse_safetensors(&m, "mutated");
    }
}

#[test]
fn safetensors_lies_wrong_dtypes_and_duplicates_are_errors() {
    let data = [0u8; 24];
    for (what, header) in [
        (
            "huge shape",
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,24]}}"#,
        ),
        (
            "offsets past the end",
            r#"{"a":{"dtype":"F32","shape":[6],"data_offsets":[0,9999999]}}"#,
        ),
        (
            "size mismatch",
            r#"{"a":{"dtype":"F32","shape":[5],"data_offsets":[0,24]}}"#,
        ),
        (
            "reversed offsets",
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[24,0]}}"#,
        ),
        (
            "integer dtype",
            r#"{"a":{"dtype":"I64","shape":[3],"data_offsets":[0,24]}}"#,
        ),
        (
            "unknown dtype",
            r#"{"a":{"dtype":"Q4","shape":[6],"data_offsets":[0,24]}}"#,
        ),
        (
            "duplicate key",
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"a":{"dtype":"F32","shape":[3],"data_offsets":[12,24]}}"#,
        ),
        ("not an object", r#"[1,2,3]"#),
    ] {
        let r = parse_safetensors(&with_header(header, &data), "lies.safetensors");
        let e = r.err().unwrap_or_else(|| panic!("{what}: parsed"));
        assert!(e.to_string().contains("lies.safetensors"), "{what}: {e}");
    }
    // a header length larger than the file: no allocation of that size, an error
    let mut b = small_safetensors();
    b[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(parse_safetensors(&b, "t").is_err());
}

#[test]
fn checkpoint_reader_rejects_every_truncation_and_random_bytes() {
    let mut ck = Checkpoint::new("gpt");
    ck.weights
        .insert("w".into(), Tensor::from_elem(IxDyn(&[3]), 1.0));
    ck.meta.insert("step".into(), "4".into());
    let good = ck.to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&good, "gpt", "c").unwrap(), ck);
    for n in 0..good.len() {
        assert!(
            Checkpoint::from_bytes(&good[..n], "gpt", "c").is_err(),
            "prefix {n}"
        );
    }
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    for _ in 0..2000 {
        let mut m = good.clone();
        let i = r.random_range(0..m.len());
        m[i] = r.random();
        let _ = Checkpoint::from_bytes(&m, "gpt", "c");
    }
    // a checkpoint whose tensors are outside the model/ and optimizer/ namespaces
    let mut t = BTreeMap::new();
    t.insert("stray".to_string(), Tensor::zeros(IxDyn(&[1])));
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "handgrad-checkpoint".to_string());
    meta.insert("format_version".to_string(), "1".to_string());
    meta.insert("kind".to_string(), "gpt".to_string());
    let b = to_safetensors_bytes(&t, Some(meta)).unwrap();
    assert!(Checkpoint::from_bytes(&b, "gpt", "c")
        .unwrap_err()
        .to_string()
        .contains("stray"));
}

const CONFIG: &str = r#"{"n_embd": 32, "n_head": 4, "n_layer": 2, "n_positions": 32, "vocab_size": 101,
  "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new", "resid_pdrop": 0.0}"#;

#[test]
fn config_json_truncations_random_bytes_duplicates_and_huge_values_are_errors() {
    assert!(GptConfig::from_hf_json(CONFIG, "config.json").is_ok());
    for n in 0..CONFIG.len() {
        if !CONFIG.is_char_boundary(n) {
            continue;
        }
        assert!(
            GptConfig::from_hf_json(&CONFIG[..n], "config.json").is_err(),
            "prefix {n}"
        );
    }
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..2000 {
        let len = r.random_range(0..80);
        let bytes: Vec<u8> = (0..len).map(|_| r.random_range(32..127)).collect();
        let _ = GptConfig::from_hf_json(&String::from_utf8(bytes).unwrap(), "config.json");
    }
    for (what, text) in [
        (
            "duplicate key",
            CONFIG.replace("\"n_layer\": 2,", "\"n_layer\": 2, \"n_layer\": 3,"),
        ),
        (
            "huge n_embd",
            CONFIG.replace("\"n_embd\": 32", "\"n_embd\": 1e30"),
        ),
        (
            "negative",
            CONFIG.replace("\"n_layer\": 2", "\"n_layer\": -2"),
        ),
        (
            "string",
            CONFIG.replace("\"n_head\": 4", "\"n_head\": \"4\""),
        ),
        (
            "zero",
            CONFIG.replace("\"vocab_size\": 101", "\"vocab_size\": 0"),
        ),
        (
            "2^40 positions",
            CONFIG.replace("\"n_positions\": 32", "\"n_positions\": 1099511627776"),
        ),
    ] {
        let e = GptConfig::from_hf_json(&text, "config.json").unwrap_err();
        assert!(
            e.to_string().contains("config.json") || e.to_string().contains("GptConfig"),
            "{what}: {e}"
        );
    }
}

#[test]
fn cifar_reader_rejects_truncations_random_bytes_and_bad_labels() {
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let good: Vec<u8> = [record(3), record(9)].concat();
    assert_eq!(parse_cifar10_batch(&good, "b").unwrap().len(), 2);
    for n in [0, 1, 100, 3072, 3074, 3073 + 1, 6145] {
        assert!(parse_cifar10_batch(&good[..n], "b").is_err(), "prefix {n}");
    }
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for _ in 0..200 {
        let len = r.random_range(0..8000);
        let bytes: Vec<u8> = (0..len).map(|_| r.random()).collect();
        let _ = parse_cifar10_batch(&bytes, "random");
    }
    assert!(parse_cifar10_batch(&[record(3), record(10)].concat(), "b").is_err());
}
