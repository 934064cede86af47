//! The IDX (MNIST) reader: the embedded Fashion-MNIST, round trips through files, and errors.

use flate2::{write::GzEncoder, Compression};
use handgrad::data::{
    fashion_mnist, load_mnist, parse_idx_images, parse_idx_labels, read_idx_images,
    read_idx_labels, Split, FASHION_MNIST_CLASSES,
};
use handgrad::Error;
use std::io::Write;
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
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// 3 images of 4×5 with distinct pixels, and their labels.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..60).map(|i| (i * 4 + 3) as u8).collect();
    (pixels, vec![7, 0, 255])
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
fn embedded_fashion_mnist_loads() {
    let ds = fashion_mnist().unwrap();
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.inputs().shape(), &[10_000, 1, 28, 28]);
    let mut hist = [0usize; 10];
    for &l in ds.labels() {
        hist[l] += 1;
    }
    assert_eq!(hist, [1000; 10]);
    assert_eq!(&ds.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    let (min, max) = ds
        .inputs()
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((min, max), (0.0, 1.0));
    // Byte sums computed from the .gz with Python's gzip module.
    let first: f32 = ds.inputs().slice(ndarray::s![0, .., .., ..]).sum() * 255.0;
    assert!(
        (first - 33456.0).abs() < 0.5,
        "first image byte sum {first}"
    );
    let second: f32 = ds.inputs().slice(ndarray::s![1, .., .., ..]).sum() * 255.0;
    assert!(
        (second - 100994.0).abs() < 1.0,
        "second image byte sum {second}"
    );
    assert_eq!(ds.inputs()[[0, 0, 14, 14]], 110.0 / 255.0);
    assert_eq!(ds.inputs()[[0, 0, 20, 27]], 49.0 / 255.0);
    assert_eq!(FASHION_MNIST_CLASSES[0], "T-shirt/top");
    assert_eq!(FASHION_MNIST_CLASSES[9], "Ankle boot");
    assert_eq!(FASHION_MNIST_CLASSES.len(), 10);
}

#[test]
fn round_trip_raw_and_gzipped_through_load_mnist() {
    let (pixels, labels) = sample();
    let images = idx_images(3, 4, 5, &pixels);
    let label_file = idx_labels(&labels);
    // Raw train files, gzipped test files, and the dotted name form.
    let cases: [(&str, bool, Split, &str); 4] = [
        ("raw", false, Split::Train, "train-{}-{}-ubyte"),
        ("gz", true, Split::Train, "train-{}-{}-ubyte.gz"),
        ("gz-test", true, Split::Test, "t10k-{}-{}-ubyte.gz"),
        ("dotted", false, Split::Test, "t10k-{}.{}-ubyte"),
    ];
    for (tag, gz, split, pattern) in cases {
        let dir = TempDir::new(&format!("idx-{tag}"));
        let name = |kind: &str, idx: &str| pattern.replacen("{}", kind, 1).replacen("{}", idx, 1);
        let enc = |b: &[u8]| if gz { gzip(b) } else { b.to_vec() };
        dir.write(&name("images", "idx3"), &enc(&images));
        dir.write(&name("labels", "idx1"), &enc(&label_file));
        let ds = load_mnist(&dir.0, split).unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(ds.inputs().shape(), &[3, 1, 4, 5], "{tag}");
        assert_eq!(ds.labels(), &[7, 0, 255], "{tag}");
        for (k, (&v, &p)) in ds.inputs().iter().zip(&pixels).enumerate() {
            assert_eq!(v, p as f32 / 255.0, "{tag}: pixel {k}");
        }
        // The low-level readers agree.
        let path = dir.0.join(name("images", "idx3"));
        let img = read_idx_images(&path).unwrap();
        assert_eq!((img.n, img.rows, img.cols), (3, 4, 5));
        assert_eq!(img.pixels, pixels);
        let lab = read_idx_labels(dir.0.join(name("labels", "idx1"))).unwrap();
        assert_eq!(lab, labels);
    }
}

#[test]
fn gzip_is_detected_by_magic_not_extension() {
    let (pixels, labels) = sample();
    let dir = TempDir::new("idx-magic");
    // Gzipped content under the raw name, raw content under the .gz name.
    dir.write(
        "train-images-idx3-ubyte",
        &gzip(&idx_images(3, 4, 5, &pixels)),
    );
    dir.write("train-labels-idx1-ubyte.gz", &idx_labels(&labels));
    let ds = load_mnist(&dir.0, Split::Train).unwrap();
    assert_eq!(ds.inputs().shape(), &[3, 1, 4, 5]);
    assert_eq!(ds.labels(), &[7, 0, 255]);
}

#[test]
fn empty_file_is_an_error() {
    let (name, msg) = format_message(parse_idx_images(&[], "empty.idx3"));
    assert_eq!(name, "empty.idx3");
    assert!(msg.contains("empty") && msg.contains("0x00000803"), "{msg}");
    let (name, msg) = format_message(parse_idx_labels(&[], "empty.idx1"));
    assert_eq!(name, "empty.idx1");
    assert!(msg.contains("empty") && msg.contains("0x00000801"), "{msg}");
}

#[test]
fn bad_magic_is_an_error() {
    let (pixels, labels) = sample();
    // A labels file read as images, and vice versa.
    let (_, msg) = format_message(parse_idx_images(&idx_labels(&labels), "labels-as-images"));
    assert!(
        msg.contains("bad magic 0x00000801") && msg.contains("expected IDX3"),
        "{msg}"
    );
    let (_, msg) = format_message(parse_idx_labels(&idx_images(3, 4, 5, &pixels), "x"));
    assert!(
        msg.contains("bad magic 0x00000803") && msg.contains("0x00000801"),
        "{msg}"
    );
    let mut junk = idx_images(3, 4, 5, &pixels);
    junk[2] = 0x0d; // float32 IDX type
    let (_, msg) = format_message(parse_idx_images(&junk, "float.idx"));
    assert!(msg.contains("bad magic 0x00000d03"), "{msg}");
    // Zero-sized images are rejected too.
    let (_, msg) = format_message(parse_idx_images(&idx_images(0, 0, 5, &[]), "zero"));
    assert!(msg.contains("0×5"), "{msg}");
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let (pixels, labels) = sample();
    let images = idx_images(3, 4, 5, &pixels);
    for cut in 0..images.len() {
        let (name, msg) = format_message(parse_idx_images(&images[..cut], "cut.idx3"));
        assert_eq!(name, "cut.idx3");
        let expected = match cut {
            0 => "empty",
            1..=15 => "truncated",
            _ => "declares 3 images of 4×5 = 60 data bytes",
        };
        assert!(msg.contains(expected), "cut at {cut}: {msg}");
        if (4..16).contains(&cut) {
            assert!(msg.contains("16 bytes"), "cut at {cut}: {msg}");
        }
        if cut >= 16 {
            assert!(msg.contains(&format!("holds {}", cut - 16)), "{msg}");
        }
    }
    let label_file = idx_labels(&labels);
    for cut in 0..label_file.len() {
        let (_, msg) = format_message(parse_idx_labels(&label_file[..cut], "cut.idx1"));
        let expected = if cut == 0 { "empty" } else { "truncated" };
        assert!(msg.contains(expected), "cut at {cut}: {msg}");
    }
    // Truncated gzip streams (cut in the compressed bytes) fail too.
    let gz = gzip(&images);
    for cut in 2..gz.len() {
        let r = parse_idx_images(&gz[..cut], "cut.gz");
        assert!(r.is_err(), "gz cut at {cut} parsed");
    }
    // A complete gzip of a truncated file names the decompressed length.
    let (_, msg) = format_message(parse_idx_images(&gzip(&images[..50]), "short.gz"));
    assert!(
        msg.contains("truncated") && msg.contains("decompressed stream holds 34"),
        "{msg}"
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let (pixels, labels) = sample();
    let mut images = idx_images(3, 4, 5, &pixels);
    images.push(0);
    let (_, msg) = format_message(parse_idx_images(&images, "long.idx3"));
    assert!(
        msg.contains("trailing") && msg.contains("holds 61"),
        "{msg}"
    );
    let (_, msg) = format_message(parse_idx_images(&gzip(&images), "long.gz"));
    assert!(msg.contains("trailing"), "{msg}");
    let mut l = idx_labels(&labels);
    l.extend_from_slice(b"junk");
    let (_, msg) = format_message(parse_idx_labels(&l, "long.idx1"));
    assert!(
        msg.contains("trailing") && msg.contains("3 labels"),
        "{msg}"
    );
}

#[test]
fn huge_declared_count_fails_without_allocating() {
    // No wall-clock assertion: the reader must fail on the header check, before any allocation
    // of the declared size (which would abort the test process on this machine).
    let mut raw = idx_images(u32::MAX, 28, 28, &[0; 84]);
    raw.truncate(100);
    let (_, msg) = format_message(parse_idx_images(&raw, "huge.idx3"));
    assert!(
        msg.contains("4294967295 images of 28×28") && msg.contains("truncated"),
        "{msg}"
    );
    let (_, msg) = format_message(parse_idx_images(&gzip(&raw), "huge.gz"));
    assert!(msg.contains("truncated"), "{msg}");
    let labels = [0, 0, 8, 1, 0xff, 0xff, 0xff, 0xff, 1, 2];
    let (_, msg) = format_message(parse_idx_labels(&labels, "huge.idx1"));
    assert!(msg.contains("4294967295 labels"), "{msg}");
}

#[test]
fn count_mismatch_is_an_error_naming_both_counts() {
    let (pixels, _) = sample();
    let dir = TempDir::new("idx-mismatch");
    dir.write("train-images-idx3-ubyte", &idx_images(3, 4, 5, &pixels));
    dir.write("train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    let (name, msg) = format_message(load_mnist(&dir.0, Split::Train));
    assert!(name.ends_with("train-labels-idx1-ubyte"), "{name}");
    assert!(
        msg.contains("2 labels")
            && msg.contains("3 images")
            && msg.contains("train-images-idx3-ubyte"),
        "{msg}"
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = TempDir::new("idx-files");
    // Missing files: an Io error naming the expected file.
    match load_mnist(&dir.0, Split::Test) {
        Err(Error::Io { path, source }) => {
            assert!(path.ends_with("t10k-images-idx3-ubyte"), "{path:?}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(source.to_string().contains("t10k-images-idx3-ubyte.gz"));
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    match read_idx_images(dir.0.join("nope")) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("nope")),
        other => panic!("expected Error::Io, got {other:?}"),
    }
    // A malformed file on disk: the Format error names its path.
    let (pixels, labels) = sample();
    let images = idx_images(3, 4, 5, &pixels);
    dir.write("t10k-images-idx3-ubyte", &images[..30]);
    dir.write("t10k-labels-idx1-ubyte", &idx_labels(&labels));
    let err = load_mnist(&dir.0, Split::Test).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("t10k-images-idx3-ubyte") && text.contains("truncated"),
        "{text}"
    );
}
