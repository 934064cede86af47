//! Generation: the logits processors against their definitions, greedy / sampling / beam search
//! on a mock model with a known table, seeds, stop tokens, lengths and every config error; and
//! the GPT: HF's greedy tokens through `Gpt::generate`, KV cache = no cache, cropping.

use crate::common;

use handgrad::generate::processors::{
    argmax, block_tokens, repetition_penalty, sample, softmax, temperature, top_k, top_p,
};
use handgrad::generate::{generate, Decoder, GenerateConfig};
use handgrad::transformer::{Gpt, GptConfig};
use handgrad::Result;
use ndarray::{Array2, ShapeBuilder};

/// A bigram model: the logits of the next token depend on the last token only, through a fixed
/// pseudo-random table. Counts its calls and checks row counts.
struct Bigram {
    table: Vec<Vec<f32>>,
    rows: Vec<Vec<usize>>,
    prefills: usize,
    steps: usize,
}

impl Bigram {
    fn new(v: usize, spread: f32) -> Self {
        let table = (0..v)
            .map(|a| {
                (0..v)
                    .map(|b| (((a * 31 + b * 17 + a * b * 7) % 23) as f32 / 23.0 - 0.5) * spread)
                    .collect()
            })
            .collect();
        Bigram {
            table,
            rows: vec![],
            prefills: 0,
            steps: 0,
        }
    }
    fn logits(&self) -> Array2<f32> {
        let v = self.table.len();
        // column-major on purpose: generation must accept any layout a Decoder returns
        Array2::from_shape_fn((self.rows.len(), v).f(), |(r, t)| {
            self.table[*self.rows[r].last().unwrap()][t]
        })
    }
    /// log p(seq[prompt..] | prompt) under the table.
    fn logprob(&self, seq: &[usize], plen: usize) -> f64 {
        (plen..seq.len())
            .map(|i| {
                let row = &self.table[seq[i - 1]];
                let lp = handgrad::generate::processors::log_softmax(row);
                lp[seq[i]] as f64
            })
            .sum()
    }
}

impl Decoder for Bigram {
    fn vocab_size(&self) -> usize {
        self.table.len()
    }
    fn prefill(&mut self, rows: &[Vec<usize>]) -> Result<Array2<f32>> {
        self.prefills += 1;
        self.rows = rows.to_vec();
        Ok(self.logits())
    }
    fn step(&mut self, tokens: &[usize]) -> Result<Array2<f32>> {
        assert_eq!(tokens.len(), self.rows.len(), "one token per row");
        self.steps += 1;
        for (r, &t) in self.rows.iter_mut().zip(tokens) {
            r.push(t);
        }
        Ok(self.logits())
    }
    fn reorder(&mut self, order: &[usize]) -> Result<()> {
        self.rows = order.iter().map(|&i| self.rows[i].clone()).collect();
        Ok(())
    }
}

// ------------------------------------------------------------------------- processors

#[test]
fn temperature_gives_softmax_of_scaled_logits() {
    let mut l = vec![1.0f32, 2.0, -0.5, 3.0];
    temperature(&mut l, 0.5);
    let want = softmax(&[2.0, 4.0, -1.0, 6.0]);
    assert_eq!(softmax(&l), want);
}

#[test]
fn top_k_keeps_exactly_k_and_ties_at_the_kth() {
    let mut l = vec![0.1f32, 0.9, 0.5, 0.7, 0.3];
    top_k(&mut l, 2);
    assert_eq!(l.iter().filter(|v| v.is_finite()).count(), 2);
    assert!(l[1].is_finite() && l[3].is_finite());
    let mut tie = vec![1.0f32, 2.0, 2.0, 0.0];
    top_k(&mut tie, 2);
    assert_eq!(tie, vec![f32::NEG_INFINITY, 2.0, 2.0, f32::NEG_INFINITY]);
    let mut tie3 = vec![1.0f32, 2.0, 2.0, 0.0];
    top_k(&mut tie3, 1);
    assert_eq!(
        tie3.iter().filter(|v| v.is_finite()).count(),
        2,
        "ties with the k-th are kept"
    );
    let mut all = vec![1.0f32, 2.0];
    top_k(&mut all, 10);
    assert_eq!(all, vec![1.0, 2.0]);
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // probabilities 0.5, 0.25, 0.125, 0.125
    let logits: Vec<f32> = [0.5f32, 0.25, 0.125, 0.125]
        .iter()
        .map(|p| p.ln())
        .collect();
    for (p, kept) in [
        (0.5, 1),
        (0.6, 2),
        (0.75, 2),
        (0.8, 3),
        (0.9, 4),
        (1e-6, 1),
        (1.0, 4),
    ] {
        let mut l = logits.clone();
        top_p(&mut l, p);
        assert_eq!(
            l.iter().filter(|v| v.is_finite()).count(),
            kept,
            "top_p = {p}"
        );
        assert!(l[0].is_finite(), "the most likely token is always kept");
        let mass: f32 = softmax(&logits)
            .iter()
            .zip(&l)
            .filter(|(_, v)| v.is_finite())
            .map(|(p, _)| p)
            .sum();
        assert!(mass >= p - 1e-6);
    }
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
    let mut l = vec![2.0f32, -2.0, 1.0, 4.0];
    repetition_penalty(&mut l, &[0, 1, 1, 0], 2.0);
    assert_eq!(l, vec![1.0, -4.0, 1.0, 4.0]);
    let mut b = vec![1.0f32, 2.0, 3.0];
    block_tokens(&mut b, &[2]);
    assert_eq!(b, vec![1.0, 2.0, f32::NEG_INFINITY]);
    assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1, "first maximum on ties");
}

#[test]
fn sampling_frequencies_match_the_probabilities() {
    let probs = softmax(&[0.0f32, 1.0, 2.0, -1.0]);
    let mut rng = handgrad::init::rng(3);
    let n = 20_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[sample(&probs, &mut rng)] += 1;
    }
    for (c, &p) in counts.iter().zip(&probs) {
        let f = *c as f32 / n as f32;
        // 4 standard deviations of a binomial proportion
        let sd = (p * (1.0 - p) / n as f32).sqrt();
        assert!((f - p).abs() < 4.0 * sd, "frequency {f} vs probability {p}");
    }
    assert_eq!(sample(&[0.0, 0.0, 1.0], &mut rng), 2);
}

// ------------------------------------------------------------------------- search

#[test]
fn greedy_follows_the_argmax_chain() {
    let mut m = Bigram::new(12, 4.0);
    let out = generate(&mut m, &[3], &GenerateConfig::new().max_new_tokens(6)).unwrap();
    let mut want = vec![3usize];
    for _ in 0..6 {
        want.push(argmax(&m.table[*want.last().unwrap()]));
    }
    assert_eq!(out, vec![want]);
    assert_eq!(
        (m.prefills, m.steps),
        (1, 5),
        "one prefill, then one step per new token but the last"
    );
}

#[test]
fn top_k_one_sampling_equals_greedy_for_any_seed() {
    let greedy = generate(
        &mut Bigram::new(12, 4.0),
        &[5],
        &GenerateConfig::new().max_length(9),
    )
    .unwrap();
    for seed in 0..5 {
        let cfg = GenerateConfig::new()
            .max_length(9)
            .do_sample(true)
            .top_k(1)
            .seed(seed);
        assert_eq!(
            generate(&mut Bigram::new(12, 4.0), &[5], &cfg).unwrap(),
            greedy
        );
    }
}

#[test]
fn seeds_reproduce_and_differ_and_rows_are_independent_samples() {
    let cfg = |seed| {
        GenerateConfig::new()
            .max_length(20)
            .num_return_sequences(5)
            .do_sample(true)
            .no_top_k()
            .seed(seed)
    };
    let a = generate(&mut Bigram::new(12, 1.0), &[1, 2], &cfg(7)).unwrap();
    let b = generate(&mut Bigram::new(12, 1.0), &[1, 2], &cfg(7)).unwrap();
    let c = generate(&mut Bigram::new(12, 1.0), &[1, 2], &cfg(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 5);
    assert!(a.iter().all(|s| s.len() == 20 && s[..2] == [1, 2]));
    assert!(
        a.iter().any(|s| s != &a[0]),
        "the 5 rows are different samples"
    );
}

#[test]
fn stop_tokens_end_a_row_which_keeps_its_stop_token() {
    let m = Bigram::new(12, 4.0);
    // pick the greedy successor of 3 as the stop token: greedy stops after one token
    let eos = argmax(&m.table[3]);
    let mut m = m;
    let out = generate(
        &mut m,
        &[3],
        &GenerateConfig::new().max_new_tokens(8).eos_token_id(eos),
    )
    .unwrap();
    assert_eq!(out, vec![vec![3, eos]]);
    // min_new_tokens blocks it at first
    let out = generate(
        &mut Bigram::new(12, 4.0),
        &[3],
        &GenerateConfig::new()
            .max_new_tokens(8)
            .eos_token_id(eos)
            .min_new_tokens(3),
    )
    .unwrap();
    assert!(out[0].len() >= 4 && !out[0][1..4].contains(&eos), "{out:?}");
    // sampled rows stop independently
    let cfg = GenerateConfig::new()
        .max_new_tokens(30)
        .num_return_sequences(6)
        .do_sample(true)
        .no_top_k()
        .eos_token_id(0)
        .seed(2);
    let out = generate(&mut Bigram::new(12, 1.0), &[3], &cfg).unwrap();
    for s in &out {
        let first_eos = s[1..].iter().position(|&t| t == 0).map(|p| p + 1);
        match first_eos {
            Some(p) => assert_eq!(p, s.len() - 1, "nothing after the stop token: {s:?}"),
            None => assert_eq!(s.len(), 31),
        }
    }
}

/// Every sequence of `n` new tokens over a vocabulary of `v`, for the exhaustive check.
fn all_continuations(v: usize, n: usize) -> Vec<Vec<usize>> {
    (0..v.pow(n as u32))
        .map(|mut i| {
            (0..n)
                .map(|_| {
                    let t = i % v;
                    i /= v;
                    t
                })
                .collect()
        })
        .collect()
}

#[test]
fn beam_search_with_enough_beams_finds_the_most_likely_sequence() {
    let (v, n) = (5, 3);
    let m = Bigram::new(v, 2.0);
    let best = all_continuations(v, n)
        .into_iter()
        .map(|c| {
            let s: Vec<usize> = std::iter::once(2).chain(c).collect();
            (m.logprob(&s, 1), s)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    let mut m = m;
    let cfg = GenerateConfig::new()
        .max_new_tokens(n)
        .num_beams(v.pow(n as u32))
        .num_return_sequences(3);
    let out = generate(&mut m, &[2], &cfg).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], best.1, "the best beam is the exhaustive optimum");
    // best first
    let lps: Vec<f64> = out
        .iter()
        .map(|s| Bigram::new(v, 2.0).logprob(s, 1))
        .collect();
    assert!(lps.windows(2).all(|w| w[0] >= w[1]), "{lps:?}");
    // greedy is never better than the beam optimum
    let g = generate(
        &mut Bigram::new(v, 2.0),
        &[2],
        &GenerateConfig::new().max_new_tokens(n),
    )
    .unwrap();
    assert!(Bigram::new(v, 2.0).logprob(&g[0], 1) <= best.0 + 1e-9);
}

#[test]
fn beam_search_with_a_stop_token_returns_finished_hypotheses() {
    let cfg = GenerateConfig::new()
        .max_new_tokens(10)
        .num_beams(4)
        .num_return_sequences(4)
        .eos_token_id(1);
    let out = generate(&mut Bigram::new(12, 3.0), &[3], &cfg).unwrap();
    assert_eq!(out.len(), 4);
    for s in &out {
        assert_eq!(s[0], 3);
        if let Some(p) = s[1..].iter().position(|&t| t == 1) {
            assert_eq!(
                p + 2,
                s.len(),
                "a finished hypothesis ends at its stop token"
            );
        }
    }
}

#[test]
fn config_errors_name_the_value_and_say_what_is_expected() {
    let mut m = Bigram::new(12, 1.0);
    let cases: Vec<(GenerateConfig, Vec<usize>, &str)> = vec![
        (
            GenerateConfig::new().num_return_sequences(5),
            vec![1],
            "do_sample",
        ),
        (
            GenerateConfig::new().top_p(0.0).do_sample(true),
            vec![1],
            "top_p",
        ),
        (GenerateConfig::new().top_p(1.5), vec![1], "top_p"),
        (
            GenerateConfig::new().do_sample(true).temperature(0.0),
            vec![1],
            "temperature",
        ),
        (
            GenerateConfig::new().do_sample(true).top_k(0),
            vec![1],
            "top_k",
        ),
        (
            GenerateConfig::new().repetition_penalty(0.0),
            vec![1],
            "repetition_penalty",
        ),
        (
            GenerateConfig::new().max_length(3),
            vec![1, 2, 3],
            "max_new_tokens",
        ),
        (
            GenerateConfig::new().num_beams(2).num_return_sequences(3),
            vec![1],
            "num_beams = 2",
        ),
        (
            GenerateConfig::new().num_beams(2).do_sample(true),
            vec![1],
            "beam sampling",
        ),
        (
            GenerateConfig::new().eos_token_id(12),
            vec![1],
            "eos_token_id",
        ),
        (GenerateConfig::new(), vec![], "prompt"),
        (GenerateConfig::new(), vec![1, 12], "token id 12"),
        (GenerateConfig::new().num_beams(0), vec![1], "num_beams"),
    ];
    for (cfg, prompt, needle) in cases {
        let e = generate(&mut m, &prompt, &cfg).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    }
}

// ------------------------------------------------------------------------- the GPT

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2_tiny");

#[test]
fn gpt_generate_reproduces_hf_greedy_tokens() {
    let fx = common::Fixture::load("gpt2_tiny_generate");
    let prompt: Vec<usize> = fx.i64("prompt").into_iter().map(|v| v as usize).collect();
    let full: Vec<usize> = fx
        .i64("full_sequence")
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let gpt = Gpt::from_pretrained(TINY).unwrap();
    let out = gpt
        .generate(&prompt, &GenerateConfig::new().max_new_tokens(20))
        .unwrap();
    assert_eq!(out, vec![full]);
}

#[test]
fn kv_cache_and_no_cache_agree_also_past_block_size() {
    let mut gpt = Gpt::new(
        GptConfig::new(17, 16, 2, 2, 16),
        &mut handgrad::init::rng(2),
    )
    .unwrap();
    for cfg in [
        GenerateConfig::new().max_new_tokens(30), // 5 + 30 > block_size 16: cropping
        GenerateConfig::new()
            .max_new_tokens(30)
            .num_return_sequences(4)
            .do_sample(true)
            .seed(5),
        GenerateConfig::new()
            .max_new_tokens(12)
            .num_beams(3)
            .num_return_sequences(2),
        GenerateConfig::new()
            .max_new_tokens(20)
            .repetition_penalty(1.3)
            .do_sample(true)
            .top_p(0.9)
            .temperature(0.7),
    ] {
        let prompt = [1, 4, 9, 16, 8];
        let a = generate(&mut gpt.decoder(), &prompt, &cfg).unwrap();
        let b = generate(&mut gpt.decoder_without_cache(), &prompt, &cfg).unwrap();
        assert_eq!(a, b, "{cfg:?}");
        assert!(a
            .iter()
            .all(|s| s.len() <= prompt.len() + cfg.max_new_tokens.unwrap()));
    }
}
