//! Training memory of the Llama model without a clock: the activation-memory formula
//! (`LlamaConfig::train_memory`) equals the bytes the training buffers actually hold after a
//! step (`Llama::train_memory_in_use`), with and without recomputation, on the tiny model and
//! on the real SmolLM2-135M; and by that accounting SmolLM2-135M fine-tunes at T = 256 within
//! 4 GB with recomputation.
//!
//! The real-model test reads the GGUF from `$HANDGRAD_MODELS`: without it, it prints how to
//! fetch the model (`export HANDGRAD_MODELS="$(scripts/fetch-models.sh | tail -1)"`) and passes.

use crate::llama::TINY;
use crate::smollm2::smollm2_path;
use handgrad::transformer::llama::TrainMemory;
use handgrad::transformer::{Llama, LlamaConfig};
use ndarray::Array2;

/// A deterministic `(B, T)` batch of ids below `v`.
fn batch(b: usize, t: usize, v: usize, seed: usize) -> Array2<usize> {
    Array2::from_shape_fn((b, t), |(i, j)| (i * 31 + j * 17 + seed) % v)
}

/// One training forward and backward at `(b, t)`; returns the buffers in use afterwards.
fn step(model: &mut Llama, b: usize, t: usize) -> TrainMemory {
    let v = model.config().vocab_size;
    model.zero_grad();
    let loss = model
        .forward_loss(batch(b, t, v, 1).view(), batch(b, t, v, 2).view())
        .unwrap();
    assert!(loss.is_finite());
    model.backward().unwrap();
    model.train_memory_in_use()
}

#[test]
fn activation_memory_formula_matches_the_buffers_allocated() {
    let mut model = Llama::from_pretrained(TINY).unwrap();
    let cfg = model.config().clone();
    assert_eq!(
        model.train_memory_in_use().total(),
        0,
        "nothing before a step"
    );
    for recompute in [false, true, false] {
        model.set_gradient_checkpointing(recompute);
        for (b, t) in [(1, 5), (2, 7), (3, 16), (2, 7)] {
            let got = step(&mut model, b, t);
            let want = cfg.train_memory(b, t, recompute);
            assert_eq!(got, want, "B={b} T={t} recompute={recompute}");
        }
    }
    // the per-layer formula by hand for the tiny config (C 32, F 64, NH 4, NKV 2, HS 8:
    // W = 64, Q = 32): 4·(N·(4·32 + 64 + 32 + 3·64 + 2) + B·4·T²)
    let (b, t) = (2, 7);
    assert_eq!(
        cfg.layer_activation_bytes(b, t),
        4 * (b * t * (128 + 64 + 32 + 192 + 2) + b * 4 * t * t)
    );
}

#[test]
fn smollm2_fine_tuning_at_t256_fits_in_4_gb_with_recomputation() {
    let cfg = LlamaConfig::smollm2_135m();
    // per layer 4·(8450·N + 9·B·T²) bytes: 11.0 MB at B = 1 and 44.0 MB at B = 4 (T = 256)
    assert_eq!(cfg.layer_activation_bytes(1, 256), 11_012_096);
    assert_eq!(cfg.layer_activation_bytes(4, 256), 44_048_384);
    // parameters trained with AdamW: value, gradient and two moments, 16 bytes each
    let params = 16 * cfg.num_params();
    assert_eq!(cfg.num_params(), 134_515_008);
    for b in [1, 4] {
        let with = cfg.train_memory(b, 256, true).total();
        let without = cfg.train_memory(b, 256, false).total();
        assert!(
            params + with < 4_000_000_000,
            "B={b}: {params} + {with} bytes"
        );
        assert!(with < without, "B={b}: recomputation saves memory");
    }
    // without recomputation, B = 4 keeps 30 × 44 MB of activations: 1.32 GB
    assert_eq!(cfg.train_memory(4, 256, false).layers, 1_321_451_520);
}

#[test]
fn smollm2_training_buffers_match_the_formula() {
    let Some(path) = smollm2_path() else { return };
    let mut model = Llama::from_gguf(&path).unwrap().to_f32().unwrap();
    model.set_gradient_checkpointing(true);
    let got = step(&mut model, 1, 256);
    let want = model.config().train_memory(1, 256, true);
    assert_eq!(got, want);
    assert!(16 * model.num_trainable_params() + got.total() < 4_000_000_000);
}
