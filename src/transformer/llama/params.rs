//! The trainable parameters of a [`Llama`] by their Hugging Face names, [`TrainableLm`] for
//! [`LmTrainer`](crate::transformer::LmTrainer), and [`shift_labels`].

use super::{Llama, LlamaLayer, Weight};
use crate::error::Result;
use crate::ops::cross_entropy::IGNORE_INDEX;
use crate::param::Param;
use crate::transformer::TrainableLm;
use ndarray::{Array2, ArrayView2};

impl Llama {
    /// The trainable parameters with their Hugging Face names, in the order `model.embed_tokens
    /// .weight`, per layer `input_layernorm`, `self_attn.{q,k,v,o}_proj`,
    /// `post_attention_layernorm`, `mlp.{gate,up,down}_proj`, then `model.norm.weight` and
    /// `lm_head.weight` (untied models only). Encoded (GGUF) matrices are not parameters and are
    /// left out. For a model loaded from GGUF in `f32`, `q_proj` / `k_proj` rows are in
    /// llama.cpp's permuted order ([`Llama::state_dict`] un-permutes them).
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = Vec::new();
        if let Some(p) = self.embed.param() {
            v.push(("model.embed_tokens.weight".to_string(), p));
        }
        for (i, l) in self.layers.iter().enumerate() {
            v.extend(
                l.params()
                    .into_iter()
                    .map(|(k, p)| (format!("model.layers.{i}.{k}"), p)),
            );
        }
        v.push(("model.norm.weight".to_string(), &self.norm));
        if let Some(p) = self.lm_head.as_ref().and_then(Weight::param) {
            v.push(("lm_head.weight".to_string(), p));
        }
        v
    }

    /// The parameters, mutably, in the order of [`Llama::params`] (what an optimizer steps).
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = Vec::new();
        if let Some(p) = self.embed.param_mut() {
            v.push(("model.embed_tokens.weight".to_string(), p));
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            v.extend(
                l.params_mut()
                    .into_iter()
                    .map(|(k, p)| (format!("model.layers.{i}.{k}"), p)),
            );
        }
        v.push(("model.norm.weight".to_string(), &mut self.norm));
        if let Some(p) = self.lm_head.as_mut().and_then(Weight::param_mut) {
            v.push(("lm_head.weight".to_string(), p));
        }
        v
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params_mut() {
            p.zero_grad();
        }
    }

    /// The number of trainable parameters (the tied head counted once).
    pub fn num_trainable_params(&self) -> usize {
        self.params().iter().map(|(_, p)| p.numel()).sum()
    }
}

impl TrainableLm for Llama {
    fn forward_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        Llama::forward_loss(self, ids, targets)
    }
    fn backward(&mut self) -> Result<()> {
        Llama::backward(self)
    }
    fn eval_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        Llama::loss(self, ids, targets)
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Llama::params_mut(self)
    }
    fn zero_grad(&mut self) {
        Llama::zero_grad(self)
    }
    fn max_len(&self) -> (&'static str, usize) {
        (
            "max_position_embeddings",
            self.config.max_position_embeddings,
        )
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}

impl LlamaLayer {
    /// The layer's parameters named relative to `model.layers.<i>.` (dense weights only).
    pub fn params(&self) -> Vec<(&'static str, &Param)> {
        let mut v = vec![("input_layernorm.weight", &self.input_layernorm)];
        for (k, w) in [
            ("self_attn.q_proj.weight", &self.q_proj),
            ("self_attn.k_proj.weight", &self.k_proj),
            ("self_attn.v_proj.weight", &self.v_proj),
            ("self_attn.o_proj.weight", &self.o_proj),
        ] {
            v.extend(w.param().map(|p| (k, p)));
        }
        v.push((
            "post_attention_layernorm.weight",
            &self.post_attention_layernorm,
        ));
        for (k, w) in [
            ("mlp.gate_proj.weight", &self.gate_proj),
            ("mlp.up_proj.weight", &self.up_proj),
            ("mlp.down_proj.weight", &self.down_proj),
        ] {
            v.extend(w.param().map(|p| (k, p)));
        }
        v
    }

    /// [`LlamaLayer::params`], mutably.
    pub fn params_mut(&mut self) -> Vec<(&'static str, &mut Param)> {
        let LlamaLayer {
            input_layernorm,
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            post_attention_layernorm,
            gate_proj,
            up_proj,
            down_proj,
        } = self;
        let mut v = vec![("input_layernorm.weight", input_layernorm)];
        for (k, w) in [
            ("self_attn.q_proj.weight", q_proj),
            ("self_attn.k_proj.weight", k_proj),
            ("self_attn.v_proj.weight", v_proj),
            ("self_attn.o_proj.weight", o_proj),
        ] {
            v.extend(w.param_mut().map(|p| (k, p)));
        }
        v.push(("post_attention_layernorm.weight", post_attention_layernorm));
        for (k, w) in [
            ("mlp.gate_proj.weight", gate_proj),
            ("mlp.up_proj.weight", up_proj),
            ("mlp.down_proj.weight", down_proj),
        ] {
            v.extend(w.param_mut().map(|p| (k, p)));
        }
        v
    }
}

/// Hugging Face `labels` → next-token `targets`: `targets[b, t] = labels[b, t + 1]` and the last
/// column [`IGNORE_INDEX`] (what `LlamaForCausalLM(ids, labels=labels)` computes internally).
///
/// # Shapes
/// `labels: (B, T)` → `(B, T)`.
pub fn shift_labels(labels: ArrayView2<usize>) -> Array2<usize> {
    let (b, t) = labels.dim();
    Array2::from_shape_fn((b, t), |(i, j)| {
        if j + 1 < t {
            labels[[i, j + 1]]
        } else {
            IGNORE_INDEX
        }
    })
}
