//! LoRA fine-tuning of the tiny Llama: fresh adapters leave the model unchanged, adapter
//! gradients against finite differences of the whole model, merging, training with the base
//! frozen, and configuration errors.

use crate::common::grad_check;
use crate::common::Fixture;
use crate::llama::{ids, TINY};
use handgrad::transformer::llama::{shift_labels, LoraConfig, LoraLlama};
use handgrad::transformer::{Llama, LmTrainOptions, LmTrainer, TrainableLm};
use handgrad::Tensor;
use ndarray::Array2;

fn batch() -> (Array2<usize>, Array2<usize>) {
    let f = Fixture::load("llama/llama_tiny_train");
    let x = ids(&f, "input_ids");
    let y = shift_labels(x.view());
    (x, y)
}

fn all_modules(r: usize) -> LoraConfig {
    LoraConfig {
        r,
        alpha: 4.0,
        target_modules: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        .map(String::from)
        .to_vec(),
        seed: 3,
    }
}

#[test]
fn fresh_adapters_leave_the_loss_unchanged() {
    let (x, y) = batch();
    let mut base = Llama::from_pretrained(TINY).unwrap();
    let want = base.loss(x.view(), y.view()).unwrap();
    let mut lora = LoraLlama::new(base, LoraConfig::default()).unwrap();
    // PEFT defaults: q_proj and v_proj, r = 8, B = 0
    let names: Vec<String> = lora.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2 * 2 * 2);
    assert_eq!(
        names[0],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    assert_eq!(
        names[3],
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    );
    let got = lora.forward_loss(x.view(), y.view()).unwrap();
    assert_eq!(got.to_bits(), want.to_bits());
    lora.backward().unwrap();
    // with B = 0 only B gets a gradient
    for (n, p) in lora.params() {
        let nonzero = p.grad.iter().any(|&g| g != 0.0);
        assert_eq!(nonzero, n.ends_with("lora_B.weight"), "{n}");
    }
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let (x, y) = batch();
    let mut lora = LoraLlama::new(Llama::from_pretrained(TINY).unwrap(), all_modules(2)).unwrap();
    // non-zero B everywhere so that every adapter's A has a gradient too
    for (i, (_, p)) in lora.params_mut().into_iter().enumerate() {
        p.value = crate::common::random_tensor(p.shape(), 100 + i as u64).mapv(|v| 0.05 * v);
    }
    lora.forward_loss(x.view(), y.view()).unwrap();
    lora.backward().unwrap();
    let checked = [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight",
        "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight",
        "base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight",
    ];
    for name in checked {
        let idx = lora.params().iter().position(|(n, _)| n == name).unwrap();
        let (value, grad) = {
            let p = lora.params()[idx].1;
            (p.value.clone(), p.grad.clone())
        };
        // L scaled by 100 so that the tolerance is relative for gradients of O(0.01)
        let analytic: Tensor = grad.mapv(|g| 100.0 * g);
        let mut probe = lora.clone();
        grad_check(
            name,
            &value,
            &analytic,
            |v| {
                probe.params_mut()[idx].1.value.assign(v);
                100.0 * probe.eval_loss(x.view(), y.view()).unwrap() as f64
            },
            1e-2,
            1e-2,
        );
    }
}

#[test]
fn adapter_gradients_are_the_merged_weight_gradient_projected() {
    // W_eff = W + s·B·A  ⇒  dL/dB = s·dW_eff·Aᵀ,  dL/dA = s·Bᵀ·dW_eff (dW_eff from the merged
    // model's own backward)
    let (x, y) = batch();
    let cfg = all_modules(3);
    let s = cfg.alpha / cfg.r as f32;
    let mut lora = LoraLlama::new(Llama::from_pretrained(TINY).unwrap(), cfg).unwrap();
    for (i, (_, p)) in lora.params_mut().into_iter().enumerate() {
        p.value = crate::common::random_tensor(p.shape(), 40 + i as u64).mapv(|v| 0.3 * v);
    }
    lora.forward_loss(x.view(), y.view()).unwrap();
    lora.backward().unwrap();
    let mut merged = lora.merge().unwrap();
    merged.forward_loss(x.view(), y.view()).unwrap();
    merged.backward().unwrap();
    let dw: std::collections::BTreeMap<String, Tensor> = merged
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.grad.clone()))
        .collect();
    let ps = lora.params();
    assert_eq!(ps.len(), 2 * 7 * 2);
    for pair in ps.chunks(2) {
        let (na, a) = (&pair[0].0, pair[0].1);
        let b = pair[1].1;
        let module = na
            .trim_start_matches("base_model.model.")
            .trim_end_matches(".lora_A.weight");
        let g = dw[&format!("{module}.weight")]
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let a2 = a
            .value
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let b2 = b
            .value
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let want_b = (g.dot(&a2.t()) * s).into_dyn();
        let want_a = (b2.t().dot(&g) * s).into_dyn();
        crate::common::assert_close(&b.grad, &want_b, 2e-6, 2e-3, &format!("{module} dB"));
        crate::common::assert_close(&a.grad, &want_a, 2e-6, 2e-3, &format!("{module} dA"));
    }
}

#[test]
fn merging_folds_the_adapters_into_the_weights() {
    let (x, y) = batch();
    let mut lora = LoraLlama::new(Llama::from_pretrained(TINY).unwrap(), all_modules(4)).unwrap();
    for (i, (_, p)) in lora.params_mut().into_iter().enumerate() {
        p.value = crate::common::random_tensor(p.shape(), 7 + i as u64).mapv(|v| 0.2 * v);
    }
    let adapted = lora.eval_loss(x.view(), y.view()).unwrap();
    let mut merged = lora.merge().unwrap();
    let plain = merged.loss(x.view(), y.view()).unwrap();
    assert!(
        (adapted - plain).abs() < 1e-5 * adapted.abs(),
        "{adapted} vs {plain}"
    );
    let base = Llama::from_pretrained(TINY)
        .unwrap()
        .loss(x.view(), y.view())
        .unwrap();
    assert!(
        (adapted - base).abs() > 1e-3,
        "the adapters change the model"
    );
}

#[test]
fn lm_trainer_trains_adapters_with_the_base_frozen() {
    let text = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps again!";
    let tok = handgrad::tokenizer::Gpt2Tokenizer::from_dir(TINY).unwrap();
    let tokens = handgrad::tokenizer::Tokenizer::encode(&tok, text).unwrap();
    let data = handgrad::data::LmDataset::new(tokens, 32).unwrap();
    let base = Llama::from_pretrained(TINY).unwrap();
    let before = base.state_dict();
    let cfg = LoraConfig {
        r: 8,
        alpha: 16.0,
        ..all_modules(8)
    };
    let mut lora = LoraLlama::new(base, cfg).unwrap();
    lora.set_gradient_checkpointing(true);
    let opts = LmTrainOptions {
        steps: 40,
        batch_size: 4,
        lr: 1e-2,
        min_lr: Some(1e-3),
        warmup_steps: Some(2),
        eval_interval: 40,
        eval_windows: 4,
        weight_decay: 0.0,
        verbose: false,
        ..Default::default()
    };
    let h = LmTrainer::new(opts)
        .unwrap()
        .train(&mut lora, &data, Some(&data))
        .unwrap();
    let (first, last) = (h.loss[0], h.val_loss.last().unwrap().1);
    assert!(
        first > 5.0 && last < 2.0,
        "loss {first} → validation {last}"
    );
    // the base weights did not move
    assert_eq!(lora.base().state_dict(), before);
}

#[test]
fn lora_config_errors_name_the_field() {
    let base = || Llama::from_pretrained(TINY).unwrap();
    let e = LoraLlama::new(
        base(),
        LoraConfig {
            r: 0,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid r = 0"), "{e}");
    let e = LoraLlama::new(
        base(),
        LoraConfig {
            target_modules: vec!["qkv".into()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("target_modules = qkv") && e.to_string().contains("q_proj"),
        "{e}"
    );
    let e = LoraLlama::new(
        base(),
        LoraConfig {
            alpha: f32::NAN,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("alpha"), "{e}");
    let e = LoraLlama::new(
        base(),
        LoraConfig {
            target_modules: vec![],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least one module"), "{e}");
}
