//! The CIFAR-10 binary reader on batch files written in the true format.

use handgrad::data::{
    load_cifar10, parse_cifar10_batch, read_cifar10_batch, Split, CIFAR10_CLASSES,
    CIFAR10_RECORD_BYTES,
};
use handgrad::Error;
use std::path::PathBuf;

/// A fresh, empty directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "handgrad-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pixel byte of record `r`, channel `c` (0 = R), row `y`, column `x`.
fn pixel(r: usize, c: usize, y: usize, x: usize) -> u8 {
    ((r * 71 + c * 97 + y * 13 + x * 7) % 256) as u8
}

/// One CIFAR-10 record: the label, then the R, G and B planes, each row-major 32×32.
fn record(r: usize, label: u8) -> Vec<u8> {
    let mut v = vec![label];
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                v.push(pixel(r, c, y, x));
            }
        }
    }
    v
}

fn batch(labels: &[u8], first_record: usize) -> Vec<u8> {
    labels
        .iter()
        .enumerate()
        .flat_map(|(i, &l)| record(first_record + i, l))
        .collect()
}

fn format_message(r: Result<impl std::fmt::Debug, Error>) -> (String, String) {
    match r {
        Err(Error::Format {
            source_name,
            message,
        }) => (source_name, message),
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

#[test]
fn three_records_load_with_planar_rgb() {
    let dir = TempDir::new("cifar-test");
    let bytes = batch(&[3, 9, 0], 0);
    assert_eq!(bytes.len(), 3 * 3073);
    assert_eq!(CIFAR10_RECORD_BYTES, 3073);
    std::fs::write(dir.0.join("test_batch.bin"), &bytes).unwrap();
    let ds = load_cifar10(&dir.0, Split::Test).unwrap();
    assert_eq!(ds.inputs().shape(), &[3, 3, 32, 32]);
    assert_eq!(ds.labels(), &[3, 9, 0]);
    for r in 0..3 {
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    assert_eq!(
                        ds.inputs()[[r, c, y, x]],
                        pixel(r, c, y, x) as f32 / 255.0,
                        "record {r} channel {c} ({y}, {x})"
                    );
                }
            }
        }
    }
    // R plane first: byte 1 of a record is red (0, 0), byte 1025 is green (0, 0).
    assert_eq!(ds.inputs()[[1, 0, 0, 0]], bytes[3073 + 1] as f32 / 255.0);
    assert_eq!(ds.inputs()[[1, 1, 0, 0]], bytes[3073 + 1025] as f32 / 255.0);
    assert_eq!(
        ds.inputs()[[1, 2, 31, 31]],
        bytes[2 * 3073 - 1] as f32 / 255.0
    );
    // The single-file reader and the bytes parser agree.
    assert_eq!(
        read_cifar10_batch(dir.0.join("test_batch.bin")).unwrap(),
        ds
    );
    assert_eq!(parse_cifar10_batch(&bytes, "mem").unwrap(), ds);
    assert_eq!(CIFAR10_CLASSES[3], "cat");
}

#[test]
fn train_split_concatenates_five_batches_in_order() {
    let dir = TempDir::new("cifar-train");
    // Inside the archive's folder, to check that it is found.
    let inner = dir.0.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&inner).unwrap();
    for i in 1..=5usize {
        let labels = [i as u8, (i + 4) as u8];
        std::fs::write(
            inner.join(format!("data_batch_{i}.bin")),
            batch(&labels, 2 * (i - 1)),
        )
        .unwrap();
    }
    let ds = load_cifar10(&dir.0, Split::Train).unwrap();
    assert_eq!(ds.inputs().shape(), &[10, 3, 32, 32]);
    assert_eq!(ds.labels(), &[1, 5, 2, 6, 3, 7, 4, 8, 5, 9]);
    for r in 0..10 {
        assert_eq!(ds.inputs()[[r, 2, 5, 6]], pixel(r, 2, 5, 6) as f32 / 255.0);
    }
    // A missing batch is an Io error naming it.
    std::fs::remove_file(inner.join("data_batch_4.bin")).unwrap();
    match load_cifar10(&dir.0, Split::Train) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("data_batch_4.bin"), "{path:?}"),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn truncated_record_is_an_error() {
    let dir = TempDir::new("cifar-trunc");
    let bytes = batch(&[1, 2, 3], 0);
    let path = dir.0.join("test_batch.bin");
    std::fs::write(&path, &bytes[..3 * 3073 - 1]).unwrap();
    let (name, msg) = format_message(load_cifar10(&dir.0, Split::Test));
    assert!(name.ends_with("test_batch.bin"), "{name}");
    assert!(
        msg.contains("9218 bytes") && msg.contains("3073-byte") && msg.contains("2 whole records"),
        "{msg}"
    );
    for len in [0, 1, 3072, 3074] {
        let extra: Vec<u8> = bytes.iter().copied().cycle().take(len).collect();
        assert!(parse_cifar10_batch(&extra, "x").is_err(), "length {len}");
    }
}

#[test]
fn label_above_nine_is_an_error_naming_the_record() {
    let bytes = batch(&[0, 9, 10], 0);
    let (name, msg) = format_message(parse_cifar10_batch(&bytes, "bad_batch.bin"));
    assert_eq!(name, "bad_batch.bin");
    assert!(
        msg.contains("record 2") && msg.contains("label 10") && msg.contains("0..=9"),
        "{msg}"
    );
}
