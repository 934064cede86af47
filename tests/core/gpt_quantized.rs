//! `Gpt::quantize` / `QuantGpt`: the tiny Hugging Face GPT-2 with its matrices in F32, F16,
//! BF16 and Q8_0 against the `f32` model (logits within stated tolerances, greedy tokens),
//! bit-identical on 1 and 2 threads, and the errors (training, widths that do not fit a block).

use handgrad::data::LmDataset;
use handgrad::generate::GenerateConfig;
use handgrad::ops::quant::QType;
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer, QuantGpt};
use ndarray::Array2;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2_tiny");

/// The largest allowed `max |logit − logit_f32|` per encoding, as a fraction of `max |logit_f32|`
/// over the run (F32: only the summation order differs; F16 keeps 11 significant bits, BF16 8,
/// Q8_0 an 8-bit value per 32 with an F16 scale; measured on this model: 1.7e-7, 2.4e-4, 2.4e-3,
/// 6.5e-3).
const TOLERANCE: [(QType, f32); 4] = [
    (QType::F32, 1e-6),
    (QType::F16, 5e-4),
    (QType::BF16, 5e-3),
    (QType::Q8_0, 1e-2),
];

/// The logits of every position of `ids` (two rows), run as a prefill of 9 positions (the tiled
/// SGEMM path) and then one position at a time (the matrix-vector path).
fn run(
    forward: &mut dyn FnMut(Array2<usize>, bool) -> Array2<f32>,
    ids: &Array2<usize>,
) -> Vec<Array2<f32>> {
    let mut out = vec![forward(ids.slice(ndarray::s![.., ..9]).to_owned(), true)];
    for t in 9..ids.ncols() {
        out.push(forward(
            ids.slice(ndarray::s![.., t..t + 1]).to_owned(),
            false,
        ));
    }
    out
}

fn ids() -> Array2<usize> {
    Array2::from_shape_fn((2, 20), |(r, t)| (r * 37 + t * 11 + 3) % 101)
}

fn f32_logits(gpt: &Gpt) -> Vec<Array2<f32>> {
    let mut cache = gpt.new_cache(2);
    run(
        &mut |x, fresh| {
            if fresh {
                cache = gpt.new_cache(2);
            }
            gpt.forward_cached(x.view(), &mut cache).unwrap()
        },
        &ids(),
    )
}

fn quant_logits(q: &QuantGpt) -> Vec<Array2<f32>> {
    let mut cache = q.new_cache(2);
    run(
        &mut |x, fresh| {
            if fresh {
                cache = q.new_cache(2);
            }
            q.forward_cached(x.view(), &mut cache).unwrap()
        },
        &ids(),
    )
}

#[test]
fn quantized_logits_stay_within_the_stated_tolerance_of_f32_and_greedy_tokens_agree() {
    let gpt = Gpt::from_pretrained(TINY).unwrap();
    let want = f32_logits(&gpt);
    let scale = want
        .iter()
        .flat_map(|a| a.iter())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let greedy = GenerateConfig::new().max_new_tokens(12);
    let prompt = [5usize, 17, 42, 8];
    let want_tokens = gpt.generate(&prompt, &greedy).unwrap();
    for (qtype, tol) in TOLERANCE {
        let q = gpt.quantize(qtype).unwrap();
        assert_eq!(q.qtype(), qtype);
        let got = quant_logits(&q);
        let dev = want
            .iter()
            .zip(&got)
            .flat_map(|(a, b)| a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        eprintln!(
            "{}: max |Δlogit| {dev:.2e}, max |logit| {scale:.3}",
            qtype.name()
        );
        assert!(
            dev <= tol * scale,
            "{}: max |Δlogit| {dev} > {tol} · {scale}",
            qtype.name()
        );
        assert_eq!(
            q.generate(&prompt, &greedy).unwrap(),
            want_tokens,
            "{}: greedy tokens",
            qtype.name()
        );
    }
}

#[test]
fn quantized_decoding_is_bit_identical_on_one_and_two_threads() {
    let gpt = Gpt::from_pretrained(TINY).unwrap();
    for qtype in [QType::F16, QType::Q8_0] {
        let q = gpt.quantize(qtype).unwrap();
        let on = |n: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(|| quant_logits(&q))
        };
        assert_eq!(on(1), on(2), "{}", qtype.name());
    }
}

#[test]
fn quantized_sizes_and_sampling_through_generate() {
    let gpt = Gpt::from_pretrained(TINY).unwrap();
    let f16 = gpt.quantize(QType::F16).unwrap();
    let q8 = gpt.quantize(QType::Q8_0).unwrap();
    // matrices: wte 101×32, per block 32×96 + 32×32 + 32×128 + 128×32
    let m = 101 * 32 + 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32);
    let small = 4 * (2 * (96 + 32 + 128 + 32 + 4 * 32) + 2 * 32);
    assert_eq!(f16.weight_bytes(), 2 * m + small);
    assert_eq!(q8.weight_bytes(), m / 32 * 34 + small);
    let cfg = GenerateConfig::new()
        .max_new_tokens(6)
        .num_return_sequences(3)
        .do_sample(true)
        .top_k(20)
        .seed(4);
    let out = q8.generate(&[1, 2, 3], &cfg).unwrap();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|s| s.len() == 9 && s[..3] == [1, 2, 3]));
}

#[test]
fn training_a_quantized_model_is_an_error() {
    let gpt = Gpt::from_pretrained(TINY).unwrap();
    let mut q = gpt.quantize(QType::Q8_0).unwrap();
    let data = LmDataset::new((0..200).map(|i| i % 101).collect(), 16).unwrap();
    let e = LmTrainer::new(LmTrainOptions::new().steps(2))
        .unwrap()
        .train(&mut q, &data, None)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("inference-only") && msg.contains("Q8_0"),
        "{msg}"
    );
}

#[test]
fn widths_that_are_not_whole_blocks_and_bad_inputs_are_errors() {
    // C = 48 is not a multiple of Q8_0's 32-value block (F16 has blocks of one)
    let gpt = Gpt::new(
        GptConfig::new(50, 16, 1, 2, 48),
        &mut handgrad::init::rng(0),
    )
    .unwrap();
    let e = gpt.quantize(QType::Q8_0).unwrap_err().to_string();
    assert!(
        e.contains("h.0.attn.c_attn.weight") && e.contains("Q8_0") && e.contains("multiple of 32"),
        "{e}"
    );
    let q = gpt.quantize(QType::F16).unwrap();
    let mut cache = q.new_cache(1);
    let e = q
        .forward_cached(ndarray::array![[3usize, 50]].view(), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token id 50") && e.contains("vocabulary of 50"),
        "{e}"
    );
    let mut other = Gpt::new(
        GptConfig::new(50, 16, 2, 2, 32),
        &mut handgrad::init::rng(0),
    )
    .unwrap()
    .new_cache(1);
    let e = q
        .forward_cached(ndarray::array![[3usize]].view(), &mut other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("belongs to another model"), "{e}");
    let e = q
        .forward_cached(ndarray::Array2::from_elem((1, 17), 1).view(), &mut cache)
        .unwrap_err()
        .to_string();
    assert!(e.contains("block_size = 16"), "{e}");
}
