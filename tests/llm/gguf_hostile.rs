//! Corrupt and hostile GGUF files: always an `Err` with a message, never a panic, a hang or a
//! huge allocation.

use super::gguf::{fixture_path, small_file};
use handgrad::io::{GgufFile, SharedBytes};

fn parse(bytes: &[u8]) -> handgrad::Result<GgufFile> {
    GgufFile::parse(SharedBytes::from_vec(bytes.to_vec()), "hostile.gguf")
}

fn err(bytes: &[u8]) -> String {
    match parse(bytes) {
        Ok(_) => panic!("hostile input parsed"),
        Err(e) => e.to_string(),
    }
}

/// Uses every accessor of a parsed file (they must not panic either).
fn exercise(f: &GgufFile) {
    for (k, _) in f.metadata() {
        let _ = (
            f.u64(k),
            f.f32(k),
            f.string(k),
            f.string_array(k),
            f.i64_array(k),
        );
    }
    for t in f.tensors() {
        let _ = f.matrix(&t.name).map(|m| m.dequantize());
        let _ = f.tensor_f32(&t.name);
    }
}

/// A header: magic, version, tensor count, metadata count.
fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn push_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A file with no metadata and one tensor info (name "t", the given dims, type, offset),
/// padded to 32, plus `data` bytes.
fn one_tensor(dims: &[u64], ggml_type: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut b = header(3, 1, 0);
    push_str(&mut b, "t");
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ggml_type.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + data, 0);
    b
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_file();
    assert!(parse(&bytes).is_ok());
    for n in 0..bytes.len() {
        let e = err(&bytes[..n]);
        assert!(e.starts_with("hostile.gguf: "), "{e}");
    }
    let e = err(&bytes[..10]);
    assert!(
        e.contains("truncated: tensor count at byte 8 needs 8 bytes, 2 left"),
        "{e}"
    );
    // Every fixture, cut inside its data section.
    let f = std::fs::read(fixture_path("llama_tiny.q4_1.gguf")).unwrap();
    let e = err(&f[..f.len() - 1]);
    assert!(e.contains("of the data section, which has"), "{e}");
}

#[test]
fn random_mutations_never_panic() {
    let bytes = small_file();
    let fixture = std::fs::read(fixture_path("llama_tiny.q8_0.gguf")).unwrap();
    let mut s = 0x5eed_u64;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut parsed = 0;
    for round in 0..3000 {
        let base = if round % 3 == 0 { &fixture } else { &bytes };
        // Mutations concentrate on the header, where the counts and lengths live.
        let span = if round % 3 == 0 {
            4096.min(base.len())
        } else {
            base.len()
        };
        let mut b = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % span;
            b[i] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => b[i] ^ (1 << (next() % 8)),
            };
        }
        if let Ok(f) = parse(&b) {
            exercise(&f);
            parsed += 1;
        }
    }
    assert!(
        parsed > 0 && parsed < 3000,
        "mutations parsed {parsed} times"
    );
}

#[test]
fn bad_magic_and_versions() {
    let mut b = small_file();
    b[0] = b'X';
    assert!(err(&b).contains("not a GGUF file: magic"), "{}", err(&b));
    for v in [0u32, 1, 4, 0x0300_0000] {
        let e = err(&header(v, 0, 0));
        assert!(
            e.contains(&format!(
                "GGUF version {v} is not supported (expected 2 or 3)"
            )),
            "{e}"
        );
    }
    assert!(err(&header(0x0300_0000, 0, 0)).contains("big-endian"));
    // Version 2 files parse like version 3.
    let f = parse(&header(2, 0, 0)).unwrap();
    assert_eq!(
        (f.version(), f.tensors().len(), f.metadata().len()),
        (2, 0, 0)
    );
}

#[test]
fn lying_counts_are_errors_before_allocation() {
    let e = err(&header(3, u64::MAX, 0));
    assert!(
        e.contains(
            "tensor count at byte 8 is 18446744073709551615, but the 8 bytes left hold at most 0"
        ),
        "{e}"
    );
    let e = err(&header(3, 0, 1 << 40));
    assert!(e.contains("metadata count"), "{e}");
    // A key of length 2^62.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let e = err(&b);
    assert!(
        e.contains("length of metadata key 0") && e.contains("16 bytes left"),
        "{e}"
    );
    // A string value of huge length.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "k");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(&b).contains("length of value of \"k\""));
    // An array of 2^61 uint32.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "arr");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 61).to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    let e = err(&b);
    assert!(
        e.contains("array length of \"arr\"") && e.contains("hold at most 16"),
        "{e}"
    );
    // Unknown value type, unknown array element type, bad bool, deep nesting.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "k");
    b.extend_from_slice(&13u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    assert!(err(&b).contains("unknown value type 13"), "{}", err(&b));
    let mut b = header(3, 0, 1);
    push_str(&mut b, "k");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&77u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    assert!(err(&b).contains("unknown array element type 77"));
    let mut b = header(3, 0, 1);
    push_str(&mut b, "k");
    b.extend_from_slice(&7u32.to_le_bytes());
    b.push(2);
    assert!(err(&b).contains("bool byte is 2"));
    let mut b = header(3, 0, 1);
    push_str(&mut b, "deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..20 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0; 64]);
    assert!(err(&b).contains("nested deeper than 8"), "{}", err(&b));
    // Invalid UTF-8 and a duplicate key.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[0xff, 0xfe]);
    b.extend_from_slice(&[0; 16]);
    assert!(err(&b).contains("not valid UTF-8"), "{}", err(&b));
    let mut b = header(3, 0, 2);
    for _ in 0..2 {
        push_str(&mut b, "k");
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(1);
    }
    assert!(err(&b).contains("metadata key \"k\" appears twice"));
}

#[test]
fn tensor_infos_are_checked() {
    // A valid F32 tensor of 8 values, then the same with lies.
    let ok = one_tensor(&[8], 0, 0, 32);
    let f = parse(&ok).unwrap();
    assert_eq!(f.tensor_f32("t").unwrap().shape(), &[8]);
    let e = err(&one_tensor(&[8], 0, 32, 32));
    assert!(
        e.contains("tensor \"t\": bytes 32..64 (+32) of the data section, which has 32 bytes"),
        "{e}"
    );
    let e = err(&one_tensor(&[8], 0, 16, 64));
    assert!(
        e.contains("offset 16 is not a multiple of the alignment 32"),
        "{e}"
    );
    let e = err(&one_tensor(&[8], 0, u64::MAX - 31, 32));
    assert!(e.contains("of the data section"), "{e}");
    let e = err(&one_tensor(&[1 << 32, 1 << 32, 1 << 32], 0, 0, 32));
    assert!(e.contains("have a product that overflows"), "{e}");
    let e = err(&one_tensor(&[1 << 40, 1 << 20], 0, 0, 32));
    assert!(
        e.contains("byte size overflows") || e.contains("of the data section"),
        "{e}"
    );
    let e = err(&one_tensor(&[1, 1, 1, 1, 1], 0, 0, 32));
    assert!(e.contains("has 5 dimensions, expected 1..=4"), "{e}");
    let e = err(&one_tensor(&[], 0, 0, 32));
    assert!(e.contains("has 0 dimensions"), "{e}");
    let e = err(&one_tensor(&[33, 2], 8, 0, 1000));
    assert!(
        e.contains("row length 33 is not a multiple of the Q8_0 block length 32"),
        "{e}"
    );
    // An unsupported type: the file parses, the tensor is an Err naming the type.
    let q6k = parse(&one_tensor(&[256, 2], 14, 0, 420)).unwrap();
    let e = q6k.matrix("t").unwrap_err().to_string();
    assert!(e.contains("tensor \"t\": ggml type 14 (Q6_K) is not supported; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"), "{e}");
    assert!(q6k.tensor_f32("t").is_err());
    let e = err(&one_tensor(&[256, 2], 14, 0, 419));
    assert!(e.contains("(+420)"), "{e}");
    // An unknown type id parses too (its size cannot be checked), but cannot be read.
    let odd = parse(&one_tensor(&[4], 200, 0, 0)).unwrap();
    assert!(odd
        .tensor_f32("t")
        .unwrap_err()
        .to_string()
        .contains("ggml type 200 (unknown)"));
    // A bad general.alignment.
    let mut b = header(3, 0, 1);
    push_str(&mut b, "general.alignment");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&12u32.to_le_bytes());
    assert!(err(&b).contains("general.alignment is U32(12), expected a power of two"));
    // A duplicate tensor name.
    let mut b = header(3, 2, 0);
    for _ in 0..2 {
        push_str(&mut b, "t");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&8u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32 + 32, 0);
    assert!(err(&b).contains("tensor \"t\" appears twice"));
}

#[test]
fn open_names_the_missing_file() {
    let e = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(e, handgrad::Error::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}
