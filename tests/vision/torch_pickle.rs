//! The PyTorch checkpoint reader (`handgrad::io::torch`) against the `torch_pickle` fixtures:
//! every valid case in both formats byte-exact (dtype, shape, bytes, non-tensor leaves), every
//! hostile case rejected with its reason, protocol-4 pickles, every truncation an error.
//! Mutations are in `torch_mutations.rs`, the writer and real models in `torch_save.rs`.

use handgrad::io::torch::{
    load, load_bytes, load_state_dict, load_tensors, TorchDType, TorchTensor, TorchValue,
};
use handgrad::Error;
use safetensors::SafeTensors;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_pickle");

pub(crate) fn path(file: &str) -> PathBuf {
    Path::new(DIR).join(file)
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(path("cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

pub(crate) fn tmp(name: &str) -> PathBuf {
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
fn protocol_4_pickles_load() {
    // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, SHORT_BINBYTES, LONG1; two views of one
    // storage (a matrix and its transpose), a 0-d int64
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_extra/protocol4_legacy.pth"
    );
    let v = load(file).unwrap();
    assert_eq!(
        v.get("blob"),
        Some(&TorchValue::Bytes(b"\x00\x01raw".to_vec()))
    );
    assert_eq!(v.get("big"), Some(&TorchValue::Int((1 << 40) + 3)));
    assert_eq!(v.get("name"), Some(&TorchValue::Str("p4".into())));
    let t = load_state_dict(file).unwrap();
    assert_eq!(
        t["model.w"].as_slice().unwrap(),
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(t["model.wT"], t["model.w"].t().to_owned());
    assert_eq!(t["model.step"].shape(), &[] as &[usize]);
    assert_eq!(t["model.step"].first(), Some(&-5.0));
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
