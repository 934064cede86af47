//! The whole `Gpt`: finite-difference gradient check of the LM loss w.r.t. every parameter,
//! error messages for what a user can get wrong, over-fitting a short string then generating it
//! back, and determinism of training.

use crate::common;

use handgrad::data::LmDataset;
use handgrad::init::rng;
use handgrad::tokenizer::{CharTokenizer, Tokenizer};
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer, IGNORE_INDEX};
use handgrad::Error;
use ndarray::{arr2, Array2};

fn perturbed_tiny() -> Gpt {
    let cfg = GptConfig::new(7, 6, 2, 2, 8);
    let mut gpt = Gpt::new(cfg, &mut rng(3)).unwrap();
    // larger weights than the 0.02 init, so every gradient is well above finite-difference noise
    for (i, (_, p)) in gpt.params_mut().into_iter().enumerate() {
        let r = common::random_tensor(p.shape(), 100 + i as u64);
        p.value = &p.value + &(r * 0.3);
    }
    gpt
}

#[test]
fn full_gpt_loss_gradient_matches_finite_differences_for_every_parameter() {
    let mut gpt = perturbed_tiny();
    let ids = arr2(&[[1usize, 4, 2, 6, 0, 3], [5, 5, 1, 2, 3, 4]]);
    let mut targets = arr2(&[[4usize, 2, 6, 0, 3, 1], [5, 1, 2, 3, 4, 0]]);
    targets[[1, 5]] = IGNORE_INDEX; // the ignored position must contribute nothing
    gpt.zero_grad();
    gpt.forward_loss(ids.view(), targets.view()).unwrap();
    gpt.backward().unwrap();
    let analytic: Vec<(String, handgrad::Tensor)> = gpt
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.grad.clone()))
        .collect();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, ana) in &analytic {
        let max = ana.iter().fold(0f32, |m, &g| m.max(g.abs())) as f64;
        assert!(
            max > 1e-3,
            "{name}: gradient is (nearly) zero: max |g| = {max}"
        );
        for i in 0..ana.len() {
            let mut at = |delta: f32| {
                let mut params = gpt.params_mut();
                let p = &mut params.iter_mut().find(|(n, _)| n == name).unwrap().1;
                p.value.as_slice_mut().unwrap()[i] += delta;
                drop(params);
                gpt.loss(ids.view(), targets.view()).unwrap() as f64
            };
            let lp = at(eps);
            let lm = at(-2.0 * eps);
            at(eps);
            let num = (lp - lm) / (2.0 * eps as f64);
            let a = ana.as_slice().unwrap()[i] as f64;
            assert!(
                (num - a).abs() <= 2e-2 * max + 2e-4,
                "{name}[{i}]: finite difference {num}, analytic {a} (max |g| {max})"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, gpt.num_params());
}

#[test]
fn user_errors_are_err_with_clear_messages() {
    let mut gpt = Gpt::new(GptConfig::new(7, 6, 1, 2, 8), &mut rng(0)).unwrap();
    // a token id out of the vocabulary
    let e = gpt
        .forward(arr2(&[[1usize, 7]]).view(), handgrad::Mode::Eval)
        .unwrap_err();
    assert!(matches!(e, Error::Label { .. }));
    assert!(
        e.to_string().contains("token id 7") && e.to_string().contains("vocabulary of 7"),
        "{e}"
    );
    // a sequence longer than block_size in training
    let long = Array2::<usize>::zeros((1, 7));
    let e = gpt.forward_loss(long.view(), long.view()).unwrap_err();
    assert!(e.to_string().contains("block_size = 6"), "{e}");
    // targets shaped differently from the ids
    let e = gpt
        .forward_loss(arr2(&[[1usize, 2]]).view(), arr2(&[[1usize]]).view())
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // a target out of range
    let e = gpt
        .forward_loss(arr2(&[[1usize, 2]]).view(), arr2(&[[1usize, 9]]).view())
        .unwrap_err();
    assert!(e.to_string().contains("target 9"), "{e}");
    // backward without a training forward
    assert!(matches!(gpt.backward().unwrap_err(), Error::State(_)));
    // invalid configs
    let e = GptConfig::new(7, 6, 1, 3, 8).validate().unwrap_err();
    assert!(e.to_string().contains("n_head = 3"), "{e}");
    assert!(Gpt::new(GptConfig::new(0, 6, 1, 2, 8), &mut rng(0)).is_err());
    assert!(GptConfig::new(7, 6, 1, 2, 8)
        .dropout(1.0)
        .validate()
        .is_err());
    // a window longer than the model's context in the trainer
    let data = LmDataset::new((0..50).map(|i| i % 7).collect(), 8).unwrap();
    let opts = LmTrainOptions {
        steps: 1,
        warmup_steps: Some(0),
        verbose: false,
        ..Default::default()
    };
    let e = LmTrainer::new(opts)
        .unwrap()
        .train(&mut gpt, &data, None)
        .unwrap_err();
    assert!(e.to_string().contains("block_size = 6"), "{e}");
}

#[test]
fn presets_have_the_published_sizes() {
    assert_eq!(GptConfig::gpt2().num_params(), 124_439_808);
    assert_eq!(GptConfig::gpt2_medium().num_params(), 354_823_168);
    assert_eq!(GptConfig::gpt2_large().num_params(), 774_030_080);
    assert_eq!(GptConfig::gpt2_xl().num_params(), 1_557_611_200);
    let gpt = Gpt::new(GptConfig::char_small(65), &mut rng(0)).unwrap();
    assert_eq!(gpt.num_params(), GptConfig::char_small(65).num_params());
    // nanoGPT init: residual projections have std 0.02/sqrt(2·n_layer)
    let p = gpt.params();
    let std = |name: &str| {
        let t = &p.iter().find(|(n, _)| n == name).unwrap().1.value;
        let n = t.len() as f64;
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / n;
        (t.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    assert!((std("h.0.attn.c_attn.weight") - 0.02).abs() < 0.001);
    assert!((std("h.3.mlp.c_proj.weight") - 0.02 / 8f64.sqrt()).abs() < 0.0005);
}

/// Greedy decoding through the KV cache, by hand.
fn greedy(gpt: &mut Gpt, prompt: &[usize], n: usize) -> Vec<usize> {
    let mut cache = gpt.new_cache(1);
    let mut seq = prompt.to_vec();
    let mut logits = gpt
        .forward_cached(
            Array2::from_shape_vec((1, prompt.len()), prompt.to_vec())
                .unwrap()
                .view(),
            &mut cache,
        )
        .unwrap();
    for _ in 0..n {
        let row = logits.row(0);
        let next = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        seq.push(next);
        logits = gpt
            .forward_cached(arr2(&[[next]]).view(), &mut cache)
            .unwrap();
    }
    seq
}

#[test]
fn tiny_gpt_overfits_a_string_and_generates_it_back() {
    let text = "the quick brown fox jumps over the lazy dog; ";
    let tok = CharTokenizer::from_text(text);
    let ids = tok.encode(&text.repeat(4)).unwrap();
    let data = LmDataset::new(ids.clone(), 32).unwrap(); // train every position generated below
    let cfg = GptConfig::new(tok.vocab_size(), 32, 2, 2, 32);
    let mut gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
    let opts = LmTrainOptions {
        steps: 300,
        batch_size: 8,
        lr: 1e-2,
        min_lr: Some(1e-3),
        warmup_steps: Some(20),
        weight_decay: 0.0,
        verbose: false,
        ..Default::default()
    };
    let history = LmTrainer::new(opts)
        .unwrap()
        .train(&mut gpt, &data, None)
        .unwrap();
    let last = *history.loss.last().unwrap();
    assert!(
        last < 0.05,
        "loss after 300 steps: {last} (first {})",
        history.loss[0]
    );
    let prompt = tok.encode("the quick").unwrap();
    let out = greedy(&mut gpt, &prompt, 20);
    assert_eq!(tok.decode(&out).unwrap(), "the quick brown fox jumps ove");
}

#[test]
fn training_is_bit_identical_for_the_same_seed_on_one_or_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let data =
                LmDataset::new((0..400).map(|i| (i * 7 + i / 13) % 11).collect(), 16).unwrap();
            let cfg = GptConfig::new(11, 16, 2, 2, 32).dropout(0.1);
            let mut gpt = Gpt::new(cfg, &mut rng(5)).unwrap();
            let opts = LmTrainOptions {
                steps: 5,
                batch_size: 4,
                warmup_steps: Some(2),
                verbose: false,
                ..Default::default()
            };
            LmTrainer::new(opts)
                .unwrap()
                .train(&mut gpt, &data, None)
                .unwrap();
            gpt.state_dict()
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn weights_replaced_in_another_memory_layout_still_work() {
    let mut gpt = Gpt::new(GptConfig::new(7, 6, 1, 2, 8), &mut rng(0)).unwrap();
    let ids = arr2(&[[1usize, 2, 3]]);
    let before = gpt.forward(ids.view(), handgrad::Mode::Eval).unwrap();
    for (name, p) in gpt.params_mut() {
        if name == "wte.weight" || name == "wpe.weight" {
            // the same values, stored column-major
            p.value = p
                .value
                .t()
                .as_standard_layout()
                .into_owned()
                .reversed_axes();
            p.grad = p.grad.t().as_standard_layout().into_owned().reversed_axes();
            assert!(!p.value.is_standard_layout() && !p.grad.is_standard_layout());
        }
    }
    // the same logits up to the summation order of the strided matrix product
    let after = gpt.forward(ids.view(), handgrad::Mode::Eval).unwrap();
    let diff = (&after - &before).iter().fold(0f32, |m, &d| m.max(d.abs()));
    assert!(diff < 1e-6, "max difference {diff}");
    gpt.forward_loss(ids.view(), ids.view()).unwrap();
    gpt.backward().unwrap();
}
