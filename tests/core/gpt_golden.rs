//! The whole tiny GPT-2 against Hugging Face `GPT2LMHeadModel` (float64 references): the model is
//! loaded through the public `Gpt::from_pretrained` from the folder exactly as `save_pretrained`
//! wrote it; logits, the next-token loss and every parameter's gradient must match within the
//! fixture tolerances, and greedy generation must give HF's tokens.

use crate::common;

use common::Fixture;
use handgrad::transformer::{Gpt, IGNORE_INDEX};
use ndarray::Array2;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2_tiny");

fn ids2(fx: &Fixture, key: &str, shape: (usize, usize)) -> Array2<usize> {
    let v: Vec<usize> = fx.i64(key).into_iter().map(|v| v as usize).collect();
    Array2::from_shape_vec(shape, v).unwrap()
}

#[test]
fn tiny_gpt2_logits_loss_and_every_gradient_match_hf() {
    let fx = Fixture::load("gpt2_tiny_train");
    let mut gpt = Gpt::from_pretrained(TINY).unwrap();
    let cfg = gpt.config().clone();
    assert_eq!(
        (
            cfg.n_layer,
            cfg.n_head,
            cfg.n_embd,
            cfg.block_size,
            cfg.vocab_size
        ),
        (2, 4, 32, 32, 101)
    );
    let ids = ids2(&fx, "input_ids", (2, 16));
    let logits = gpt.forward(ids.view(), handgrad::Mode::Eval).unwrap();
    fx.check("logits", &logits);

    // HF shifts inside the loss: position t predicts ids[t + 1]; the last position is ignored.
    let mut targets = Array2::from_elem((2, 16), IGNORE_INDEX);
    let explicit = ids2(&fx, "targets", (2, 15));
    targets.slice_mut(ndarray::s![.., ..15]).assign(&explicit);
    let loss = gpt.forward_loss(ids.view(), targets.view()).unwrap();
    fx.check("loss", &ndarray::arr0(loss).into_dyn());
    gpt.backward().unwrap();
    let params = gpt.params();
    assert_eq!(params.len(), 28, "as many parameters as HF's state dict");
    for (name, p) in params {
        fx.check(&format!("grad.transformer.{name}"), &p.grad);
    }
}

#[test]
fn eval_loss_equals_training_loss_and_backward_needs_a_training_forward() {
    let fx = Fixture::load("gpt2_tiny_train");
    let mut gpt = Gpt::from_pretrained(TINY).unwrap();
    let ids = ids2(&fx, "input_ids", (2, 16));
    let mut targets = Array2::from_elem((2, 16), IGNORE_INDEX);
    targets
        .slice_mut(ndarray::s![.., ..15])
        .assign(&ids2(&fx, "targets", (2, 15)));
    let eval = gpt.loss(ids.view(), targets.view()).unwrap();
    assert!(
        gpt.backward().is_err(),
        "an eval loss keeps nothing for a backward"
    );
    let train = gpt.forward_loss(ids.view(), targets.view()).unwrap();
    assert_eq!(
        eval, train,
        "no dropout in this config: both paths are the same arithmetic"
    );
}

#[test]
fn saved_model_reloads_with_identical_logits() {
    let fx = Fixture::load("gpt2_tiny_train");
    let mut gpt = Gpt::from_pretrained(TINY).unwrap();
    let dir = std::env::temp_dir().join(format!("handgrad-gpt-save-{}", std::process::id()));
    gpt.save_pretrained(&dir).unwrap();
    let mut back = Gpt::from_pretrained(&dir).unwrap();
    let ids = ids2(&fx, "input_ids", (2, 16));
    assert_eq!(
        gpt.forward(ids.view(), handgrad::Mode::Eval).unwrap(),
        back.forward(ids.view(), handgrad::Mode::Eval).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Greedy decoding by hand through the KV cache: HF's tokens exactly and every step's logits
/// within tolerance; the no-cache logits (full re-run each step) agree with the cached ones.
#[test]
fn tiny_gpt2_greedy_with_kv_cache_matches_hf_generate() {
    let fx = Fixture::load("gpt2_tiny_generate");
    let mut gpt = Gpt::from_pretrained(TINY).unwrap();
    let prompt: Vec<usize> = fx.i64("prompt").into_iter().map(|v| v as usize).collect();
    let expected: Vec<usize> = fx
        .i64("generated")
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let mut cache = gpt.new_cache(1);
    let mut seq = prompt.clone();
    let mut logits = gpt
        .forward_cached(
            Array2::from_shape_vec((1, 4), prompt.clone())
                .unwrap()
                .view(),
            &mut cache,
        )
        .unwrap();
    let mut steps = Vec::new();
    for _ in 0..expected.len() {
        let row = logits.row(0).to_owned();
        // the same logits without a cache: a full forward over the sequence so far
        let full = gpt
            .forward(
                Array2::from_shape_vec((1, seq.len()), seq.clone())
                    .unwrap()
                    .view(),
                handgrad::Mode::Eval,
            )
            .unwrap();
        let last = full.index_axis(ndarray::Axis(1), seq.len() - 1).to_owned();
        common::assert_close(
            &row.clone().into_dyn(),
            &last.index_axis(ndarray::Axis(0), 0).to_owned().into_dyn(),
            1e-5,
            1e-5,
            "cache vs no cache",
        );
        let next = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            })
            .0;
        steps.push(row);
        seq.push(next);
        logits = gpt
            .forward_cached(ndarray::arr2(&[[next]]).view(), &mut cache)
            .unwrap();
    }
    assert_eq!(&seq[4..], &expected[..], "greedy tokens equal HF's");
    let views: Vec<_> = steps.iter().map(|r| r.view()).collect();
    let stacked = ndarray::stack(ndarray::Axis(0), &views).unwrap();
    fx.check("step_logits", &stacked.into_dyn());
}
