//! The Llama model from GGUF files: every encoding against transformers, saving a GGUF model as a
//! Hugging Face folder, thread-count independence.

use super::llama::{fixture_path, ids, TINY};
use crate::common::{assert_close, Fixture};
use handgrad::generate::GenerateConfig;
use handgrad::transformer::Llama;

#[test]
fn every_gguf_encoding_matches_transformers() {
    for ty in ["f32", "f16", "q8_0", "q4_0", "q4_1"] {
        let f = Fixture::load(&format!("llama/llama_tiny_gguf_{ty}"));
        let model = Llama::from_gguf(fixture_path(&format!("llama_tiny.{ty}.gguf"))).unwrap();
        let logits = model.forward(ids(&f, "input_ids").view()).unwrap();
        let (atol, rtol) = f.tol("logits");
        assert_close(
            &into_dyn_t(logits),
            &f.f32("logits"),
            atol,
            rtol,
            &format!("logits of llama_tiny.{ty}.gguf"),
        );
    }
}

#[test]
fn gguf_model_saved_as_hf_folder_is_the_hf_model() {
    let f = Fixture::load("llama/llama_tiny_train");
    let x = ids(&f, "input_ids");
    let gguf = Llama::from_gguf(fixture_path("llama_tiny.f32.gguf")).unwrap();
    let dir = std::env::temp_dir().join(format!("handgrad-llama-save-{}", std::process::id()));
    gguf.save_pretrained(&dir).unwrap();
    let back = Llama::from_pretrained(&dir).unwrap();
    let hf = Llama::from_pretrained(TINY).unwrap();
    // the un-permuted weights are the HF weights bit for bit
    let (a, b) = (back.state_dict(), hf.state_dict());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in &a {
        assert_eq!(t, &b[k], "{k}");
    }
    let l1 = back.forward(x.view()).unwrap();
    f.check("logits", &into_dyn_t(l1));
    // and the f32 copy of a quantized model runs in the HF layout with the same logits
    let q = Llama::from_gguf(fixture_path("llama_tiny.q8_0.gguf")).unwrap();
    let qf = q.to_f32().unwrap();
    let fq = Fixture::load("llama/llama_tiny_gguf_q8_0");
    let (atol, rtol) = fq.tol("logits");
    assert_close(
        &into_dyn_t(qf.forward(x.view()).unwrap()),
        &fq.f32("logits"),
        atol,
        rtol,
        "logits of the dequantised Q8_0 model",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batched_sampling_is_the_same_on_one_and_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let m = Llama::from_gguf(fixture_path("llama_tiny.q4_1.gguf")).unwrap();
            let cfg = GenerateConfig::new()
                .max_new_tokens(12)
                .do_sample(true)
                .top_k(20)
                .num_return_sequences(3)
                .seed(5);
            let out = m.generate(&[20, 30, 40], &cfg).unwrap();
            let f = Fixture::load("llama/llama_tiny_train");
            let logits = m.forward(ids(&f, "input_ids").view()).unwrap();
            (out, logits)
        })
    };
    let (a, la) = run(1);
    let (b, lb) = run(2);
    assert_eq!(a, b);
    assert!(la
        .iter()
        .zip(lb.iter())
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

fn into_dyn_t(l: ndarray::Array3<f32>) -> handgrad::Tensor {
    l.into_dyn()
}
