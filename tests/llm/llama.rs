//! The Llama model against transformers: the tiny GQA Llama from its Hugging Face folder and
//! from GGUF in every encoding (logits at the fixture tolerance), RoPE tables, greedy generation
//! with and without the KV cache, sharded loading, saving, and bad input.

use crate::common::{assert_close, Fixture};
use handgrad::generate::GenerateConfig;
use handgrad::transformer::{Llama, LlamaConfig};
use handgrad::{Error, Tensor};
use ndarray::{Array2, IxDyn};

pub const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/llama/llama_tiny"
);

pub fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/llama/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `(B, T)` token ids of a fixture tensor.
pub fn ids(f: &Fixture, key: &str) -> Array2<usize> {
    let v = f.i64(key);
    let t = f.shape(key);
    Array2::from_shape_vec((t[0], t[1]), v.iter().map(|&x| x as usize).collect()).unwrap()
}

fn logits_tensor(l: ndarray::Array3<f32>) -> Tensor {
    l.into_dyn()
}

#[test]
fn hf_folder_logits_match_transformers() {
    let f = Fixture::load("llama/llama_tiny_train");
    let model = Llama::from_pretrained(TINY).unwrap();
    assert_eq!(model.config().num_key_value_heads, 2);
    assert!(model.config().tie_word_embeddings);
    let logits = model.forward(ids(&f, "input_ids").view()).unwrap();
    f.check("logits", &logits_tensor(logits));
}

#[test]
fn rope_tables_match_the_reference() {
    let f = Fixture::load("llama/llama_tiny_train");
    let model = Llama::from_pretrained(TINY).unwrap();
    let cos_ref = f.f32("debug.rope_cos");
    let t = cos_ref.shape()[0];
    let mut cos = Tensor::zeros(IxDyn(&[t, 8]));
    let mut sin = Tensor::zeros(IxDyn(&[t, 8]));
    let tables = handgrad::ops::rope::RopeTables::new(
        8,
        model.config().rope_theta,
        64,
        handgrad::ops::rope::RopeLayout::HalfSplit,
    );
    for p in 0..t {
        let (c, s) = tables.row(p);
        for i in 0..4 {
            // HF layout: cat(freqs, freqs)
            for j in [i, i + 4] {
                cos[[p, j]] = c[i];
                sin[[p, j]] = s[i];
            }
        }
    }
    f.check("debug.rope_cos", &cos);
    f.check("debug.rope_sin", &sin);
}

#[test]
fn sharded_folder_loads_like_the_single_file() {
    let f = Fixture::load("llama/llama_tiny_train");
    let hf = Llama::from_pretrained(TINY).unwrap();
    let dir = std::env::temp_dir().join(format!("handgrad-llama-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(format!("{TINY}/config.json"), dir.join("config.json")).unwrap();
    let sd = hf.state_dict();
    let (mut a, mut b) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    let mut map = serde_json::Map::new();
    for (i, (k, t)) in sd.into_iter().enumerate() {
        let file = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), file.into());
        if i % 2 == 0 {
            a.insert(k, t);
        } else {
            b.insert(k, t);
        }
    }
    handgrad::io::write_safetensors(dir.join("model-00001-of-00002.safetensors"), &a, None)
        .unwrap();
    handgrad::io::write_safetensors(dir.join("model-00002-of-00002.safetensors"), &b, None)
        .unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let m = Llama::from_pretrained(&dir).unwrap();
    f.check(
        "logits",
        &logits_tensor(m.forward(ids(&f, "input_ids").view()).unwrap()),
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    let f = Fixture::load("llama/llama_tiny_generate");
    let prompt: Vec<usize> = f.i64("prompt").iter().map(|&x| x as usize).collect();
    let expected: Vec<usize> = f.i64("full_sequence").iter().map(|&x| x as usize).collect();
    let mut model = Llama::from_pretrained(TINY).unwrap();
    let cfg = GenerateConfig::new().max_new_tokens(20);
    let out = model.generate(&prompt, &cfg).unwrap();
    assert_eq!(out[0], expected);
    let no_cache =
        handgrad::generate::generate(&mut model.decoder_without_cache(), &prompt, &cfg).unwrap();
    assert_eq!(no_cache[0], expected);
    // the cached logits of every step at the fixture tolerance
    let step_ref = f.f32("step_logits");
    let (atol, rtol) = f.tol("step_logits");
    let mut cache = model.new_cache(1);
    let p = Array2::from_shape_vec((1, prompt.len()), prompt.clone()).unwrap();
    let mut logits = model.forward_cached(p.view(), &mut cache).unwrap();
    for step in 0..20 {
        let want = step_ref.index_axis(ndarray::Axis(0), step).to_owned();
        assert_close(
            &logits.row(0).to_owned().into_dyn(),
            &want,
            atol,
            rtol,
            &format!("step {step} logits"),
        );
        let next = expected[prompt.len() + step];
        let x = Array2::from_shape_vec((1, 1), vec![next]).unwrap();
        logits = model.forward_cached(x.view(), &mut cache).unwrap();
    }
}

#[test]
fn bad_input_gives_errors_that_say_what_was_expected() {
    let model = Llama::from_pretrained(TINY).unwrap();
    // token id out of range
    let x = Array2::from_shape_vec((1, 2), vec![1, 333]).unwrap();
    let e = model.forward(x.view()).unwrap_err().to_string();
    assert!(e.contains("333") && e.contains("vocab_size = 333"), "{e}");
    // a prompt longer than the context
    let long = vec![5usize; 65];
    let e = model
        .generate(&long, &GenerateConfig::new().max_new_tokens(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_position_embeddings = 64"), "{e}");
    // a cache of another model
    let mut cache = handgrad::transformer::KvCache::new(3, 2, 1);
    let x = Array2::from_shape_vec((1, 1), vec![5]).unwrap();
    let e = model
        .forward_cached(x.view(), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds 3 layers") && e.contains("the model has 2 layers"),
        "{e}"
    );
    // config dimensions that do not match the tensors
    let dir = std::env::temp_dir().join(format!("handgrad-llama-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = std::fs::read_to_string(format!("{TINY}/config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    std::fs::copy(
        format!("{TINY}/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    match Llama::from_pretrained(&dir).unwrap_err() {
        Error::Param { name, message } => {
            assert_eq!(name, "model.layers.0.mlp.gate_proj.weight");
            assert!(
                message.contains("[48, 32]") && message.contains("[64, 32]"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
    // an unsupported architecture
    std::fs::write(dir.join("config.json"), cfg.replace("\"silu\"", "\"gelu\"")).unwrap();
    let e = Llama::from_pretrained(&dir).unwrap_err().to_string();
    assert!(e.contains("hidden_act") && e.contains("silu"), "{e}");
    // GQA that does not divide
    let mut bad = LlamaConfig::tiny(10);
    bad.num_key_value_heads = 3;
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("num_key_value_heads") && e.contains("divisor"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_reads_both_rope_theta_spellings_and_round_trips() {
    let text = std::fs::read_to_string(format!("{TINY}/config.json")).unwrap();
    let a = LlamaConfig::from_hf_json(&text, "config.json").unwrap();
    assert_eq!(a.rope_theta, 10000.0);
    assert_eq!(a.rms_norm_eps, 1e-5);
    let old = text.replace(
        "\"rope_parameters\": {\n    \"rope_theta\": 10000.0,\n    \"rope_type\": \"default\"\n  },",
        "\"rope_theta\": 500.0,",
    );
    assert_ne!(old, text);
    assert_eq!(
        LlamaConfig::from_hf_json(&old, "c").unwrap().rope_theta,
        500.0
    );
    let back = LlamaConfig::from_hf_json(&a.to_hf_json(), "c").unwrap();
    assert_eq!(back, a);
    assert_eq!(LlamaConfig::smollm2_135m().num_params(), 134_515_008);
}

#[test]
fn blocked_prompt_attention_agrees_with_the_full_forward() {
    // 70 positions: more than one 64-query block in the prefill, then a second chunk of 9
    let model = Llama::from_pretrained(TINY).unwrap();
    let seq: Vec<usize> = (0..79).map(|i| 17 + (i * 37) % 300).collect();
    let full = model
        .forward(
            Array2::from_shape_vec((1, 64), seq[..64].to_vec())
                .unwrap()
                .view(),
        )
        .unwrap();
    let mut cache = model.new_cache(1);
    let a = Array2::from_shape_vec((1, 55), seq[..55].to_vec()).unwrap();
    let b = Array2::from_shape_vec((1, 9), seq[55..64].to_vec()).unwrap();
    let la = model.forward_cached(a.view(), &mut cache).unwrap();
    let lb = model.forward_cached(b.view(), &mut cache).unwrap();
    for (got, t) in [(la, 54), (lb, 63)] {
        let want = full.slice(ndarray::s![0, t, ..]).to_owned().into_dyn();
        assert_close(
            &got.row(0).to_owned().into_dyn(),
            &want,
            2e-5,
            1e-4,
            &format!("position {t}"),
        );
    }
    // the context is full: one more position is an error, not a panic
    let c = Array2::from_shape_vec((1, 1), vec![20]).unwrap();
    assert!(model.forward_cached(c.view(), &mut cache).is_err());
}

#[test]
fn a_parameter_replaced_with_another_shape_is_an_error_not_a_panic() {
    let mut model = Llama::from_pretrained(TINY).unwrap();
    for (name, p) in model.params_mut() {
        if name == "model.layers.1.self_attn.k_proj.weight" {
            p.value = Tensor::zeros(IxDyn(&[16]));
        }
    }
    let x = Array2::from_shape_vec((1, 2), vec![20, 30]).unwrap();
    for e in [
        model.forward(x.view()).unwrap_err(),
        model
            .forward_cached(x.view(), &mut model.new_cache(1))
            .unwrap_err(),
    ] {
        match e {
            Error::Param { name, message } => {
                assert_eq!(name, "model.layers.1.self_attn.k_proj.weight");
                assert!(
                    message.contains("[16, 32]") && message.contains("[16]"),
                    "{message}"
                );
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn one_model_generates_from_several_threads_through_shared_references() {
    let model = Llama::from_pretrained(TINY).unwrap();
    let cfg = handgrad::generate::GenerateConfig::new()
        .max_new_tokens(6)
        .do_sample(true)
        .seed(3);
    let alone = model.generate(&[1, 2, 3], &cfg).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| model.generate(&[1, 2, 3], &cfg).unwrap());
        let b = s.spawn(|| model.generate(&[1, 2, 3], &cfg).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, alone);
    assert_eq!(b, alone);
}
