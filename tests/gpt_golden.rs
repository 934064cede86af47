//! The whole tiny GPT-2 against Hugging Face `GPT2LMHeadModel` (float64 references): the model is
//! loaded through the public `Gpt::from_pretrained` from the folder exactly as `save_pretrained`
//! wrote it; logits, the next-token loss and every parameter's gradient must match within the
//! fixture tolerances, and greedy generation must give HF's tokens.

mod common;

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
    let logits = gpt.forward(ids.view(), false).unwrap();
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
        gpt.forward(ids.view(), false).unwrap(),
        back.forward(ids.view(), false).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
