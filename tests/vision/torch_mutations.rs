//! Hostile bytes for the PyTorch checkpoint reader: seeded mutations of real files (with the
//! zip CRCs recomputed so that they reach the pickle machine), lying counts, compressed records,
//! a foreign byte order, hand-written pickles of forbidden opcodes and a 4 TiB stride-0 view.

use super::torch_pickle::path;
use handgrad::io::torch::{load, load_bytes, TorchValue};
use handgrad::{Error, Tensor};
use rand::{Rng, SeedableRng};
/// The records of a zip from its central directory: (name, central entry offset, local header
/// offset, data start, size).
fn records(z: &[u8]) -> Vec<(String, usize, usize, usize, usize)> {
    let rd16 = |i: usize| u16::from_le_bytes([z[i], z[i + 1]]) as usize;
    let rd32 = |i: usize| u32::from_le_bytes(z[i..i + 4].try_into().unwrap()) as usize;
    let eocd = (0..z.len() - 21)
        .rev()
        .find(|&i| rd32(i) == 0x0605_4b50)
        .unwrap();
    let (count, mut at) = (rd16(eocd + 10), rd32(eocd + 16));
    let mut out = Vec::new();
    for _ in 0..count {
        let (size, n, m, k, local) = (
            rd32(at + 24),
            rd16(at + 28),
            rd16(at + 30),
            rd16(at + 32),
            rd32(at + 42),
        );
        let name = String::from_utf8(z[at + 46..at + 46 + n].to_vec()).unwrap();
        out.push((
            name,
            at,
            local,
            local + 30 + rd16(local + 26) + rd16(local + 28),
            size,
        ));
        at += 46 + n + m + k;
    }
    out
}

/// Recomputes the CRC-32 of every record (central directory and local headers), so that
/// mutations reach the pickle machine instead of stopping at the checksum.
fn fix_crcs(z: &mut [u8]) {
    for (_, central, local, start, size) in records(z) {
        let crc = crc32fast::hash(&z[start..start + size]).to_le_bytes();
        z[central + 16..central + 20].copy_from_slice(&crc);
        z[local + 14..local + 18].copy_from_slice(&crc);
    }
}

#[test]
fn seeded_mutations_give_ok_or_err_never_a_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut ok, mut err) = (0, 0);
    for file in [
        "checkpoint_meta_legacy.pth",
        "views_legacy.pth",
        "checkpoint_meta.pt",
        "sequential.pt",
    ] {
        let orig = std::fs::read(path(file)).unwrap();
        let zip = orig.starts_with(b"PK");
        // zip files: mutate the pickle (record 0) and fix the CRCs; legacy: anywhere
        let (pkl_start, pkl_len) = if zip {
            let r = records(&orig);
            let pkl = r.iter().find(|r| r.0.ends_with("/data.pkl")).unwrap();
            (pkl.3, pkl.4)
        } else {
            (0, orig.len())
        };
        for _ in 0..1500 {
            let mut b = orig.clone();
            for _ in 0..rng.random_range(1..=4) {
                let i = pkl_start + rng.random_range(0..pkl_len);
                b[i] = match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => b[i] ^ (1 << rng.random_range(0..8)),
                    _ => [0u8, 0xff, 0x7f, 0x80, b'(', b'h', b'R', b'.'][rng.random_range(0..8)],
                };
            }
            if zip {
                fix_crcs(&mut b);
            }
            match load_bytes(&b, file) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
    }
    assert!(err > 1000 && ok + err == 6000, "ok {ok}, err {err}");
}

#[test]
fn mutated_zip_data_fails_its_crc() {
    let mut b = std::fs::read(path("dtypes.pt")).unwrap();
    let start = records(&b)
        .into_iter()
        .find(|r| r.0 == "dtypes/data/0")
        .unwrap()
        .3;
    b[start + 3] ^= 1;
    let msg = load_bytes(&b, "flipped").unwrap_err().to_string();
    assert!(
        msg.contains("record \"dtypes/data/0\" is corrupt (CRC-32"),
        "{msg}"
    );
}

#[test]
fn other_inputs_give_clear_errors() {
    let msg = load_bytes(b"hello", "x.bin").unwrap_err().to_string();
    assert!(msg.contains("x.bin: not a torch.save file"), "{msg}");
    assert!(matches!(
        load(path("no_such_file.pt")),
        Err(Error::Io { .. })
    ));
    // a pickle with an allowed-looking but unknown torch global
    let p = b"\x80\x02ctorch\n_load_from_bytes\nq\x00.";
    let mut legacy =
        b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}.".to_vec();
    legacy.extend_from_slice(p);
    let msg = load_bytes(&legacy, "l.pth").unwrap_err().to_string();
    assert!(
        msg.contains("forbidden global torch._load_from_bytes"),
        "{msg}"
    );
    // REDUCE of a storage class, NEWOBJ, BUILD on a list
    for (body, want) in [
        (
            &b"ctorch\nFloatStorage\n)R."[..],
            "calling torch.FloatStorage is not allowed",
        ),
        (b"ccollections\nOrderedDict\n)\x81.", "NEWOBJ opcode"),
        (b"]}b.", "BUILD (setting state) on a container"),
        (b"]q\x00h\x00a.", "containers nest deeper"),
        (b"K\x01K\x02\x87.", "TUPLE3 needs 3 values"),
    ] {
        let mut f = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}.\x80\x02"
            .to_vec();
        f.extend_from_slice(body);
        f.extend_from_slice(b"\x80\x02]."); // the storage-key list
        let msg = load_bytes(&f, "t.pth").unwrap_err().to_string();
        assert!(msg.contains(want), "{msg} (wanted {want:?})");
    }
}

#[test]
fn lying_counts_compression_and_byte_order_are_errors() {
    // legacy: the first storage's element count says 13, its tensor's persistent id says 12
    let mut b = std::fs::read(path("checkpoint_legacy.pth")).unwrap();
    let at = b
        .windows(10)
        .position(|w| w == b"e.\x0c\x00\x00\x00\x00\x00\x00\x00")
        .unwrap()
        + 2;
    b[at] = 13;
    let msg = load_bytes(&b, "c.pth").unwrap_err().to_string();
    assert!(
        msg.contains("holds 13 elements, its tensors declare 12"),
        "{msg}"
    );
    // zip: a record marked as deflated
    let mut z = std::fs::read(path("dtypes.pt")).unwrap();
    let central = records(&z)
        .into_iter()
        .find(|r| r.0 == "dtypes/data/0")
        .unwrap()
        .1;
    z[central + 10] = 8;
    let msg = load_bytes(&z, "d.pt").unwrap_err().to_string();
    assert!(
        msg.contains("record \"dtypes/data/0\" is compressed (method 8)"),
        "{msg}"
    );
    // zip: a big-endian byteorder record
    let mut z = std::fs::read(path("dtypes.pt")).unwrap();
    let start = records(&z)
        .into_iter()
        .find(|r| r.0 == "dtypes/byteorder")
        .unwrap()
        .3;
    z[start..start + 6].copy_from_slice(b"big\0\0\0");
    fix_crcs(&mut z);
    let msg = load_bytes(&z, "d.pt").unwrap_err().to_string();
    assert!(
        msg.contains("only little-endian files are supported"),
        "{msg}"
    );
}

/// A legacy file around `main` (a protocol-2 pickle) with one F32 storage "0" of `values`.
fn legacy_file(main: &[u8], values: &[f32]) -> Vec<u8> {
    let mut f = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}.".to_vec();
    f.extend_from_slice(main);
    f.extend_from_slice(b"\x80\x02](X\x01\x00\x00\x000e.");
    f.extend_from_slice(&(values.len() as u64).to_le_bytes());
    f.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    f
}

#[test]
fn a_stride_zero_view_cannot_expand_into_a_huge_allocation() {
    // size (2^20, 2^20), stride (0, 0) over one element: a valid view of 4 TiB
    let tensor = |size: &[u8]| {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00".to_vec();
        p.extend_from_slice(size);
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR.");
        p
    };
    let huge = tensor(b"(J\x00\x00\x10\x00J\x00\x00\x10\x00t(K\x00K\x00t");
    let msg = load_bytes(&legacy_file(&huge, &[2.5]), "x.pth")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("the tensors would take more than"), "{msg}");
    // the same expand at (3, 4) is fine
    let small = tensor(b"(K\x03K\x04t(K\x00K\x00t");
    let TorchValue::Tensor(t) = load_bytes(&legacy_file(&small, &[2.5]), "x.pth").unwrap() else {
        panic!()
    };
    assert_eq!(
        t.to_f32().unwrap(),
        Tensor::from_elem(ndarray::IxDyn(&[3, 4]), 2.5)
    );
}
