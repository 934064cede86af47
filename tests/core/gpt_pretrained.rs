//! `Gpt::from_pretrained` on every key style Hugging Face writes, and on broken folders: each
//! broken checkpoint is an `Err` naming the file and the tensor, never a panic.

use handgrad::io::{read_safetensors, write_safetensors};
use handgrad::transformer::Gpt;
use handgrad::{Error, Tensor};
use ndarray::{arr2, IxDyn};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2_tiny");

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("handgrad-pre-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_tensors() -> BTreeMap<String, Tensor> {
    read_safetensors(Path::new(TINY).join("model.safetensors"))
        .unwrap()
        .tensors
}

/// A folder with the tiny config and the given tensors.
fn folder(name: &str, tensors: &BTreeMap<String, Tensor>) -> PathBuf {
    let d = tmp(name);
    std::fs::copy(Path::new(TINY).join("config.json"), d.join("config.json")).unwrap();
    write_safetensors(d.join("model.safetensors"), tensors, None).unwrap();
    d
}

fn logits(gpt: &mut Gpt) -> Tensor {
    gpt.forward(arr2(&[[1usize, 5, 9, 2, 77]]).view(), handgrad::Mode::Eval)
        .unwrap()
}

#[test]
fn every_key_style_loads_to_the_same_model() {
    let reference = logits(&mut Gpt::from_pretrained(TINY).unwrap());
    let with_prefix = tiny_tensors();
    let bare: BTreeMap<String, Tensor> = with_prefix
        .iter()
        .map(|(k, v)| (k.trim_start_matches("transformer.").to_string(), v.clone()))
        .collect();
    let mut with_head = with_prefix.clone();
    with_head.insert(
        "lm_head.weight".into(),
        with_prefix["transformer.wte.weight"].clone(),
    );
    // the published `gpt2` files: no prefix, mask buffers in every layer
    let mut with_buffers = bare.clone();
    for i in 0..2 {
        with_buffers.insert(
            format!("h.{i}.attn.bias"),
            Tensor::ones(IxDyn(&[1, 1, 32, 32])),
        );
        with_buffers.insert(
            format!("h.{i}.attn.masked_bias"),
            Tensor::from_elem(IxDyn(&[]), -1e4),
        );
    }
    for (name, tensors) in [
        ("prefix", &with_prefix),
        ("bare", &bare),
        ("head", &with_head),
        ("buffers", &with_buffers),
    ] {
        let d = folder(name, tensors);
        let mut gpt = Gpt::from_pretrained(&d).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(logits(&mut gpt), reference, "{name}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn f16_and_bf16_checkpoints_load_within_their_precision() {
    let reference = logits(&mut Gpt::from_pretrained(TINY).unwrap());
    for dtype in [safetensors::Dtype::F16, safetensors::Dtype::BF16] {
        let tensors = tiny_tensors();
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(k, t)| {
                let bytes: Vec<u8> = t
                    .iter()
                    .flat_map(|&v| match dtype {
                        safetensors::Dtype::F16 => half_f16(v).to_le_bytes(),
                        _ => ((v.to_bits() + 0x8000) >> 16).to_le_bytes()[..2]
                            .try_into()
                            .unwrap(),
                    })
                    .collect();
                (k.clone(), bytes, t.shape().to_vec())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(k, b, s)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let d = tmp(&format!("{dtype:?}"));
        std::fs::copy(Path::new(TINY).join("config.json"), d.join("config.json")).unwrap();
        safetensors::tensor::serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
        let got = logits(&mut Gpt::from_pretrained(&d).unwrap());
        let err = (&got - &reference)
            .iter()
            .fold(0f32, |m, &e| m.max(e.abs()));
        assert!(err < 0.05, "{dtype:?}: max logit error {err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// f32 → IEEE half (round to nearest even), for the test's F16 file.
fn half_f16(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let man = b & 0x7f_ffff;
    if exp <= 0 {
        return sign; // tiny values flush to zero (none in these weights matter)
    }
    let mut h = ((exp as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

fn expect_param_err(d: &Path, tensor: &str) {
    let e = Gpt::from_pretrained(d).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Param { .. }), "{msg}");
    assert!(
        msg.contains(tensor) && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_named() {
    let mut t = tiny_tensors();
    t.remove("transformer.h.1.mlp.c_fc.bias");
    let d = folder("missing", &t);
    expect_param_err(&d, "h.1.mlp.c_fc.bias");

    let mut t = tiny_tensors();
    t.insert(
        "transformer.h.1.mlp.c_fc.bias".into(),
        Tensor::zeros(IxDyn(&[127])),
    );
    let d2 = folder("shape", &t);
    expect_param_err(&d2, "h.1.mlp.c_fc.bias");

    let mut t = tiny_tensors();
    t.insert(
        "transformer.h.7.ln_1.weight".into(),
        Tensor::zeros(IxDyn(&[32])),
    );
    let d3 = folder("extra", &t);
    expect_param_err(&d3, "h.7.ln_1.weight");

    let mut t = tiny_tensors();
    let mut head = t["transformer.wte.weight"].clone();
    head[[0, 0]] += 1.0;
    t.insert("lm_head.weight".into(), head);
    let d4 = folder("untied", &t);
    expect_param_err(&d4, "lm_head.weight");
    for d in [d, d2, d3, d4] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn broken_files_and_configs_are_errors_naming_the_file() {
    let good = std::fs::read(Path::new(TINY).join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated-in-length", good[..4].to_vec()),
        ("truncated-in-header", good[..8 + header_len / 2].to_vec()),
        ("truncated-in-data", good[..good.len() - 100].to_vec()),
        ("huge-header-length", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            b
        }),
        ("lying-offsets", {
            // point the first tensor's data past the end of the file
            let mut b = good.clone();
            let header = String::from_utf8(b[8..8 + header_len].to_vec()).unwrap();
            let pos = header.find("\"data_offsets\":[").unwrap() + "\"data_offsets\":[".len();
            let end = header[pos..].find(']').unwrap() + pos;
            let fake = format!("{},{}", 0, 999_999_999u64);
            let mut new_header = format!("{}{}{}", &header[..pos], fake, &header[end..]);
            while new_header.len() < header_len {
                new_header.push(' ');
            }
            if new_header.len() == header_len {
                b[8..8 + header_len].copy_from_slice(new_header.as_bytes());
            } else {
                b[..8].copy_from_slice(&(new_header.len() as u64).to_le_bytes());
                b.splice(8..8 + header_len, new_header.into_bytes());
            }
            b
        }),
        (
            "random-bytes",
            (0..5000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let d = tmp(name);
        std::fs::copy(Path::new(TINY).join("config.json"), d.join("config.json")).unwrap();
        std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
        let e = Gpt::from_pretrained(&d).unwrap_err();
        assert!(e.to_string().contains("model.safetensors"), "{name}: {e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
    // configs
    let config = std::fs::read_to_string(Path::new(TINY).join("config.json")).unwrap();
    for (name, text, needle) in [
        (
            "n_head",
            config.replace("\"n_head\": 4", "\"n_head\": 5"),
            "n_head",
        ),
        (
            "json",
            config[..config.len() / 2].to_string(),
            "config.json",
        ),
        ("missing", config.replace("\"n_layer\": 2,", ""), "n_layer"),
        (
            "activation",
            config.replace("gelu_new", "relu"),
            "activation_function",
        ),
    ] {
        let d = tmp(&format!("cfg-{name}"));
        std::fs::write(d.join("config.json"), text).unwrap();
        std::fs::copy(
            Path::new(TINY).join("model.safetensors"),
            d.join("model.safetensors"),
        )
        .unwrap();
        let e = Gpt::from_pretrained(&d).unwrap_err();
        assert!(e.to_string().contains(needle), "{name}: {e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
    // a missing folder names the path
    let e = Gpt::from_pretrained("/nonexistent/handgrad-model").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/handgrad-model"), "{e}");
}
