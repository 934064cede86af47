//! Golden tests of the Transformer pieces against PyTorch / Hugging Face float64 references
//! (`tests/fixtures`): LayerNorm, the GPT-2 token + position embedding, causal self-attention and
//! the whole pre-LN GPT-2 block, forward AND every gradient, each within the fixture's tolerance.

use crate::common;

use common::Fixture;
use handgrad::init::rng;
use handgrad::layers::{Embedding, LayerNorm};
use handgrad::ops::{embedding as emb, layer_norm as ln};
use handgrad::transformer::{Block, CausalSelfAttention};
use handgrad::{Layer, Mode, Tensor};
use ndarray::IxDyn;

/// The fixture's I64 token ids as `usize`.
fn ids(fx: &Fixture, key: &str) -> Vec<usize> {
    fx.i64(key)
        .into_iter()
        .map(|v| usize::try_from(v).expect("non-negative id"))
        .collect()
}

// ----------------------------------------------------------------------------------- LayerNorm

#[test]
fn layernorm_layer_matches_torch() {
    let fx = Fixture::load("layernorm");
    let x = fx.f32("x");
    let mut layer = LayerNorm::from_weights(fx.f32("weight"), fx.f32("bias")).unwrap();
    assert_eq!(layer.get_eps(), 1e-5, "PyTorch's default eps");
    let out = layer.forward(&x, Mode::Train).unwrap();
    fx.check("out", &out);
    let (mean, rstd) = layer.stats().expect("training forward keeps stats");
    fx.check("debug.mean", mean);
    fx.check("debug.rstd", rstd);
    let dx = layer.backward(&fx.f32("grad_out")).unwrap();
    fx.check("grad.x", &dx);
    let grads: Vec<(String, Tensor)> = layer
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.grad.clone()))
        .collect();
    assert_eq!(grads.len(), 2);
    for (name, g) in &grads {
        fx.check(&format!("grad.{name}"), g);
    }
}

#[test]
fn layernorm_built_by_shape_infers_size_and_inits_to_identity_affine() {
    let fx = Fixture::load("layernorm");
    let x = fx.f32("x");
    let mut layer = LayerNorm::new();
    let shape = layer.build(&x.shape()[1..], &mut rng(0)).unwrap();
    assert_eq!(shape, x.shape()[1..].to_vec());
    assert_eq!(layer.size(), Some(8));
    for (name, p) in layer.params_mut() {
        let init = if name == "weight" { 1.0 } else { 0.0 };
        assert!(p.value.iter().all(|&v| v == init), "{name} init");
        p.value = fx.f32(&name);
    }
    let out = layer.forward(&x, Mode::Train).unwrap();
    fx.check("out", &out);
    fx.check("grad.x", &layer.backward(&fx.f32("grad_out")).unwrap());
}

#[test]
fn layernorm_kernel_matches_torch_and_accumulates_param_grads() {
    let fx = Fixture::load("layernorm");
    let x = fx.f32("x");
    let (w, b, dout) = (fx.f32("weight"), fx.f32("bias"), fx.f32("grad_out"));
    let c = w.len();
    let rows = x.len() / c;
    let mut out = Tensor::zeros(x.raw_dim());
    let mut mean = Tensor::zeros(IxDyn(&x.shape()[..2]));
    let mut rstd = mean.clone();
    ln::layer_norm_forward(
        x.as_slice().unwrap(),
        w.as_slice().unwrap(),
        b.as_slice().unwrap(),
        1e-5,
        out.as_slice_mut().unwrap(),
        mean.as_slice_mut().unwrap(),
        rstd.as_slice_mut().unwrap(),
    );
    assert_eq!(mean.len(), rows);
    fx.check("out", &out);
    fx.check("debug.mean", &mean);
    fx.check("debug.rstd", &rstd);
    let mut dx = Tensor::zeros(x.raw_dim());
    let mut dw = Tensor::zeros(w.raw_dim());
    let mut db = Tensor::zeros(w.raw_dim());
    for _ in 0..2 {
        ln::layer_norm_backward(
            dout.as_slice().unwrap(),
            x.as_slice().unwrap(),
            w.as_slice().unwrap(),
            mean.as_slice().unwrap(),
            rstd.as_slice().unwrap(),
            dx.as_slice_mut().unwrap(),
            dw.as_slice_mut().unwrap(),
            db.as_slice_mut().unwrap(),
        );
    }
    // dx is overwritten; the parameter gradients accumulated twice.
    fx.check("grad.x", &dx);
    fx.check("grad.weight", &(dw / 2.0));
    fx.check("grad.bias", &(db / 2.0));
}

// ----------------------------------------------------------------------------------- Embedding

#[test]
fn token_position_embedding_kernel_matches_torch() {
    let fx = Fixture::load("embedding_wte_wpe");
    let idx = ids(&fx, "idx");
    let (wte, wpe, dout) = (fx.f32("wte"), fx.f32("wpe"), fx.f32("grad_out"));
    let (b, t, c) = (2, 5, 8);
    assert_eq!(fx.f32("out").shape(), [b, t, c]);
    let mut out = Tensor::zeros(IxDyn(&[b, t, c]));
    emb::token_position_forward(
        &idx,
        t,
        wte.as_slice().unwrap(),
        wpe.as_slice().unwrap(),
        c,
        out.as_slice_mut().unwrap(),
    );
    fx.check("out", &out);
    let mut dwte = Tensor::zeros(wte.raw_dim());
    let mut dwpe = Tensor::zeros(wpe.raw_dim());
    emb::token_position_backward(
        &idx,
        t,
        dout.as_slice().unwrap(),
        c,
        dwte.as_slice_mut().unwrap(),
        dwpe.as_slice_mut().unwrap(),
    );
    fx.check("grad.wte", &dwte);
    fx.check("grad.wpe", &dwpe);
}

#[test]
fn embedding_layers_for_wte_and_wpe_match_torch() {
    let fx = Fixture::load("embedding_wte_wpe");
    let idx = ids(&fx, "idx");
    let (b, t) = (2, 5);
    let mut wte = Embedding::from_weights(fx.f32("wte")).unwrap();
    let mut wpe = Embedding::from_weights(fx.f32("wpe")).unwrap();
    assert_eq!((wte.num_embeddings(), wte.dim()), (13, 8));
    let pos: Vec<usize> = (0..b * t).map(|i| i % t).collect();
    let out = wte.forward_ids(&idx, (b, t)).unwrap() + wpe.forward_ids(&pos, (b, t)).unwrap();
    fx.check("out", &out);
    let dout = fx.f32("grad_out");
    wte.backward(&dout).unwrap();
    wpe.backward(&dout).unwrap();
    fx.check("grad.wte", &wte.weight().grad);
    fx.check("grad.wpe", &wpe.weight().grad);
    // unused token rows and positions >= T get exactly zero gradient
    for v in 0..13 {
        if !idx.contains(&v) {
            assert!(wte
                .weight()
                .grad
                .index_axis(ndarray::Axis(0), v)
                .iter()
                .all(|&g| g == 0.0));
        }
    }
    assert!(wpe
        .weight()
        .grad
        .slice(ndarray::s![t.., ..])
        .iter()
        .all(|&g| g == 0.0));
}

// ------------------------------------------------------------------------------------ Attention

#[test]
fn causal_self_attention_matches_hf_gpt2_attention() {
    let fx = Fixture::load("causal_self_attention");
    let mut attn = CausalSelfAttention::from_weights(
        4,
        fx.f32("c_attn.weight"),
        fx.f32("c_attn.bias"),
        fx.f32("c_proj.weight"),
        fx.f32("c_proj.bias"),
    )
    .unwrap();
    assert_eq!((attn.n_embd(), attn.n_head()), (16, 4));
    let out = attn.forward(&fx.f32("x"), handgrad::Mode::Train).unwrap();
    fx.check("out", &out);
    fx.check("debug.att", &attn.att().unwrap().to_owned().into_dyn());
    fx.check("debug.qkv", &attn.qkv().unwrap().to_owned().into_dyn());
    fx.check(
        "debug.y_heads",
        &attn.y_heads().unwrap().to_owned().into_dyn(),
    );
    // masked probabilities are exactly zero
    let att = attn.att().unwrap();
    for ((_, _, i, j), &p) in att.indexed_iter() {
        if j > i {
            assert_eq!(p, 0.0, "att[.., {i}, {j}]");
        }
    }
    let dx = attn.backward(&fx.f32("grad_out")).unwrap();
    fx.check("grad.x", &dx);
    let names: Vec<String> = attn.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "c_attn.weight",
            "c_attn.bias",
            "c_proj.weight",
            "c_proj.bias"
        ]
    );
    for (name, p) in attn.params() {
        fx.check(&format!("grad.{name}"), &p.grad);
    }
}

// ---------------------------------------------------------------------------------------- Block

/// Every parameter of the GPT-2 block fixture, in Hugging Face state-dict order.
const BLOCK_PARAMS: [&str; 12] = [
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
];

fn check_block(fx: &Fixture, block: &mut Block) {
    let out = block.forward(&fx.f32("x"), handgrad::Mode::Train).unwrap();
    fx.check("out", &out);
    let dx = block.backward(&fx.f32("grad_out")).unwrap();
    fx.check("grad.x", &dx);
    let params = block.params();
    assert_eq!(
        params.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        BLOCK_PARAMS
    );
    for (name, p) in params {
        fx.check(&format!("grad.{name}"), &p.grad);
    }
}

#[test]
fn gpt2_block_from_hf_weights_matches_hf_gpt2_block() {
    let fx = Fixture::load("gpt2_block");
    let mut block = Block::from_weights(4, 1e-5, |name| Some(fx.f32(name))).unwrap();
    assert_eq!(block.n_embd(), 16);
    assert_eq!(block.mlp().n_inner(), 64);
    check_block(&fx, &mut block);
}

#[test]
fn gpt2_block_loaded_through_params_mut_matches_hf_gpt2_block() {
    let fx = Fixture::load("gpt2_block");
    let mut block = Block::new(16, 4, 2, &mut rng(1)).unwrap();
    for (name, p) in block.params_mut() {
        let v = fx.f32(&name);
        assert_eq!(p.shape(), v.shape(), "{name}: init shape = HF shape");
        p.value = v;
    }
    check_block(&fx, &mut block);
    // A second forward/backward on the same shapes reuses the buffers and doubles the grads.
    let out = block.forward(&fx.f32("x"), handgrad::Mode::Train).unwrap();
    fx.check("out", &out);
    block.backward(&fx.f32("grad_out")).unwrap();
    for (name, p) in block.params() {
        fx.check(&format!("grad.{name}"), &(&p.grad / 2.0));
    }
}
