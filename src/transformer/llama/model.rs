//! [`Llama`]: the Llama-architecture causal language model (RMSNorm, RoPE, grouped-query
//! attention, SwiGLU MLP, bias-free projections, tied or untied head).

use super::{LlamaConfig, Weight};
use crate::error::{Error, Result};
use crate::ops::attention::attention_forward;
use crate::ops::rms_norm::rms_norm_forward;
use crate::ops::rope::{RopeLayout, RopeTables};
use crate::ops::swiglu::swiglu_forward;
use crate::param::Param;
use ndarray::{s, Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayViewMut2, Ix1};

/// One decoder layer's weights (Hugging Face names under `model.layers.<i>.`).
#[derive(Debug, Clone)]
pub struct LlamaLayer {
    /// `input_layernorm.weight`: `(C)`.
    pub input_layernorm: Param,
    /// `self_attn.q_proj.weight`: `[NH·HS, C]`.
    pub q_proj: Weight,
    /// `self_attn.k_proj.weight`: `[NKV·HS, C]`.
    pub k_proj: Weight,
    /// `self_attn.v_proj.weight`: `[NKV·HS, C]`.
    pub v_proj: Weight,
    /// `self_attn.o_proj.weight`: `[C, NH·HS]`.
    pub o_proj: Weight,
    /// `post_attention_layernorm.weight`: `(C)`.
    pub post_attention_layernorm: Param,
    /// `mlp.gate_proj.weight`: `[F, C]`.
    pub gate_proj: Weight,
    /// `mlp.up_proj.weight`: `[F, C]`.
    pub up_proj: Weight,
    /// `mlp.down_proj.weight`: `[C, F]`.
    pub down_proj: Weight,
}

/// A Llama-family causal language model (Hugging Face `LlamaForCausalLM`, llama.cpp `llama`):
///
/// ```text
/// x      = embed_tokens[ids]                                            (B, T, C)
/// per layer (pre-norm):
///   n    = RMSNorm(x)·w_in;  q, k, v = n·Wqᵀ, n·Wkᵀ, n·Wvᵀ             (NH, NKV, NKV heads)
///   q, k = RoPE(q, p), RoPE(k, p)                                       (p = position)
///   x   += softmax(q·kᵀ/√HS + causal)·v ·Woᵀ                            (GQA: head h uses kv h/(NH/NKV))
///   n    = RMSNorm(x)·w_post;  x += (silu(n·Wgᵀ) ⊙ n·Wuᵀ)·Wdᵀ
/// logits = RMSNorm(x)·w_norm · Wheadᵀ                                   (B, T, V), Whead = embed if tied
/// ```
///
/// Weights are [`Weight`]s: `f32` parameters (from safetensors, trainable) or the encoded
/// matrices of a GGUF file (memory-mapped, multiplied without a dequantised copy). The RoPE
/// layout follows the weights: [`RopeLayout::HalfSplit`] for Hugging Face files,
/// [`RopeLayout::Interleaved`] for GGUF's permuted `attn_q` / `attn_k` rows.
#[derive(Debug, Clone)]
pub struct Llama {
    pub(crate) config: LlamaConfig,
    /// `model.embed_tokens.weight`: `[V, C]`.
    pub(crate) embed: Weight,
    pub(crate) layers: Vec<LlamaLayer>,
    /// `model.norm.weight`: `(C)`.
    pub(crate) norm: Param,
    /// `lm_head.weight` `[V, C]`, or `None` when tied to `embed`.
    pub(crate) lm_head: Option<Weight>,
    pub(crate) rope: RopeTables,
    /// What the last training forward keeps for the backward (see `train.rs`).
    pub(crate) train: super::train::TrainCache,
}

/// The `(C)` view of a norm weight.
pub(crate) fn vec1(p: &Param) -> ArrayView1<'_, f32> {
    p.value
        .view()
        .into_dimensionality::<Ix1>()
        .expect("checked (C)")
}

/// The projections `q | k | v` of normalised rows into a caller buffer, RoPE applied to `q`
/// and `k` (shared by the inference and training forwards).
///
/// # Shapes
/// `n: (N, C)`, `positions: (N)`, `qkv: (N, (NH + 2·NKV)·HS)`.
pub(crate) fn project_qkv(
    cfg: &LlamaConfig,
    rope: &RopeTables,
    layer: &LlamaLayer,
    n: ArrayView2<f32>,
    positions: &[usize],
    mut qkv: ArrayViewMut2<f32>,
) {
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    // one product for the three (decoding: n quantised once, one parallel call)
    Weight::matmul_t_concat(
        &[&layer.q_proj, &layer.k_proj, &layer.v_proj],
        n,
        qkv.view_mut(),
    );
    rope.apply(
        qkv.slice_mut(s![.., ..q]),
        cfg.num_attention_heads,
        positions,
        false,
    );
    rope.apply(
        qkv.slice_mut(s![.., q..q + kv]),
        cfg.num_key_value_heads,
        positions,
        false,
    );
}

impl Llama {
    /// Assembles a model from checked parts (the loaders call this).
    ///
    /// # Errors
    /// [`Error::Config`] from [`LlamaConfig::validate`]; [`Error::Param`] naming a weight whose
    /// shape does not match the config, or a layer count that differs.
    pub fn from_parts(
        config: LlamaConfig,
        embed: Weight,
        layers: Vec<LlamaLayer>,
        norm: Param,
        lm_head: Option<Weight>,
        layout: RopeLayout,
    ) -> Result<Self> {
        config.validate()?;
        match (&lm_head, config.tie_word_embeddings) {
            (Some(_), false) | (None, true) => {}
            (Some(_), true) => {
                return Err(Error::Param {
                    name: "lm_head.weight".into(),
                    message: "given, but the config ties the head to the embedding".into(),
                })
            }
            (None, false) => {
                return Err(Error::Param {
                    name: "lm_head.weight".into(),
                    message: "missing, and the config does not tie the head (tie_word_embeddings \
                              = false)"
                        .into(),
                })
            }
        }
        let rope = RopeTables::new(
            config.head_dim,
            config.rope_theta,
            config.max_position_embeddings,
            layout,
        );
        let model = Llama {
            config,
            embed,
            layers,
            norm,
            lm_head,
            rope,
            train: Default::default(),
        };
        model.check_shapes()?;
        Ok(model)
    }

    /// Checks every weight's shape against the config (the loaders' check, and the forwards'
    /// guard against parameters replaced through `params_mut()` with another shape).
    ///
    /// # Errors
    /// [`Error::Param`] naming the first weight whose shape differs, with both shapes.
    pub fn check_shapes(&self) -> Result<()> {
        let config = &self.config;
        let (v, c, f) = (
            config.vocab_size,
            config.hidden_size,
            config.intermediate_size,
        );
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let check = |name: String, w: &Weight, rows: usize, cols: usize| -> Result<()> {
            if w.shape() != [rows, cols] {
                return Err(Error::Param {
                    name,
                    message: format!(
                        "expected shape [{rows}, {cols}] from the config, got {:?}",
                        w.shape()
                    ),
                });
            }
            Ok(())
        };
        let check_norm = |name: String, p: &Param| -> Result<()> {
            if p.shape() != [c] {
                return Err(Error::Param {
                    name,
                    message: format!("expected shape [{c}] from the config, got {:?}", p.shape()),
                });
            }
            Ok(())
        };
        check("model.embed_tokens.weight".into(), &self.embed, v, c)?;
        if self.layers.len() != config.num_hidden_layers {
            return Err(Error::Param {
                name: "model.layers".into(),
                message: format!(
                    "expected {} layers from the config, got {}",
                    config.num_hidden_layers,
                    self.layers.len()
                ),
            });
        }
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("model.layers.{i}.{s}.weight");
            check_norm(n("input_layernorm"), &l.input_layernorm)?;
            check_norm(n("post_attention_layernorm"), &l.post_attention_layernorm)?;
            check(n("self_attn.q_proj"), &l.q_proj, q, c)?;
            check(n("self_attn.k_proj"), &l.k_proj, kv, c)?;
            check(n("self_attn.v_proj"), &l.v_proj, kv, c)?;
            check(n("self_attn.o_proj"), &l.o_proj, c, q)?;
            check(n("mlp.gate_proj"), &l.gate_proj, f, c)?;
            check(n("mlp.up_proj"), &l.up_proj, f, c)?;
            check(n("mlp.down_proj"), &l.down_proj, c, f)?;
        }
        check_norm("model.norm.weight".into(), &self.norm)?;
        if let Some(h) = &self.lm_head {
            check("lm_head.weight".into(), h, v, c)?;
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The RoPE pairing these weights use.
    pub fn rope_layout(&self) -> RopeLayout {
        self.rope.layout()
    }

    /// The decoder layers.
    pub fn layers(&self) -> &[LlamaLayer] {
        &self.layers
    }

    /// The bytes all weights occupy (memory-mapped ones included).
    pub fn weight_bytes(&self) -> usize {
        let norms = (2 * self.layers.len() + 1) * self.config.hidden_size * 4;
        let mats: usize = self
            .layers
            .iter()
            .flat_map(|l| {
                [
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.o_proj,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                ]
            })
            .map(Weight::nbytes)
            .sum();
        norms + mats + self.embed.nbytes() + self.lm_head.as_ref().map_or(0, Weight::nbytes)
    }

    /// The LM head matrix (the embedding when tied).
    pub(crate) fn head(&self) -> &Weight {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Checks token ids against the vocabulary.
    pub(crate) fn check_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a usize>,
        op: &str,
    ) -> Result<()> {
        let v = self.config.vocab_size;
        if let Some((i, &id)) = ids.into_iter().enumerate().find(|&(_, &id)| id >= v) {
            return Err(Error::label(
                format!("Llama::{op}"),
                format!("token id {id} at position {i} is out of range for vocab_size = {v}"),
            ));
        }
        Ok(())
    }

    /// Embedding rows of `ids`.
    ///
    /// # Shapes
    /// `ids: (N)` → `(N, C)`.
    pub(crate) fn embed_rows(&self, ids: &[usize]) -> Array2<f32> {
        let mut x = Array2::<f32>::zeros((ids.len(), self.config.hidden_size));
        for (mut row, &id) in x.outer_iter_mut().zip(ids) {
            self.embed
                .row_into(id, row.as_slice_mut().expect("standard layout"));
        }
        x
    }

    /// `RMSNorm(x)·w` into a new buffer.
    ///
    /// # Shapes
    /// `x: (N, C)` → `(N, C)`.
    pub(crate) fn rms(&self, x: ArrayView2<f32>, w: &Param) -> Array2<f32> {
        let mut y = Array2::<f32>::zeros(x.raw_dim());
        rms_norm_forward(
            x,
            vec1(w),
            self.config.rms_norm_eps as f32,
            y.view_mut(),
            None,
        );
        y
    }

    /// The projections `q | k | v` of normalised rows into one packed buffer, RoPE applied.
    ///
    /// # Shapes
    /// `n: (N, C)`, `positions: (N)` → `(N, (NH + 2·NKV)·HS)`.
    pub(crate) fn qkv(
        &self,
        layer: &LlamaLayer,
        n: ArrayView2<f32>,
        positions: &[usize],
    ) -> Array2<f32> {
        let cfg = &self.config;
        let width = cfg.heads().qkv_width(cfg.head_dim);
        let mut qkv = Array2::<f32>::zeros((n.nrows(), width));
        project_qkv(cfg, &self.rope, layer, n, positions, qkv.view_mut());
        qkv
    }

    /// `x += down(silu(gate(n)) ⊙ up(n))` with `n = RMSNorm(x)·w_post`.
    ///
    /// # Shapes
    /// `x: (N, C)`.
    pub(crate) fn mlp_residual(&self, layer: &LlamaLayer, mut x: ArrayViewMut2<f32>) {
        let n = self.rms(x.view(), &layer.post_attention_layernorm);
        let f = self.config.intermediate_size;
        // gate | up side by side, as one product (decoding: one parallel call)
        let mut gu = Array2::<f32>::zeros((n.nrows(), 2 * f));
        Weight::matmul_t_concat(&[&layer.gate_proj, &layer.up_proj], n.view(), gu.view_mut());
        let mut a = Array2::<f32>::zeros((n.nrows(), f));
        swiglu_forward(gu.slice(s![.., ..f]), gu.slice(s![.., f..]), a.view_mut());
        let mut d = Array2::<f32>::zeros(x.raw_dim());
        layer.down_proj.matmul_t(a.view(), d.view_mut());
        x += &d;
    }

    /// Inference forward of whole sequences (no cache): the logits of every position.
    ///
    /// # Shapes
    /// `ids: (B, T)` → `(B, T, V)`.
    ///
    /// # Errors
    /// [`Error::Label`] for an id `≥ V`; [`Error::Shape`] when `T` exceeds
    /// `max_position_embeddings` or the batch is empty.
    pub fn forward(&self, ids: ArrayView2<usize>) -> Result<Array3<f32>> {
        let (b, t) = ids.dim();
        let cfg = &self.config;
        if b == 0 || t == 0 || t > cfg.max_position_embeddings {
            return Err(Error::shape(
                "Llama::forward",
                format!(
                    "(B, T) token ids with B ≥ 1 and 1 ≤ T ≤ max_position_embeddings = {}",
                    cfg.max_position_embeddings
                ),
                &[b, t],
            ));
        }
        self.check_ids(ids.iter(), "forward")?;
        self.check_shapes()?;
        let flat: Vec<usize> = ids.iter().copied().collect();
        let positions: Vec<usize> = (0..b * t).map(|i| i % t).collect();
        let mut x = self.embed_rows(&flat);
        let (nh, hs) = (cfg.num_attention_heads, cfg.head_dim);
        for layer in &self.layers {
            let n = self.rms(x.view(), &layer.input_layernorm);
            let qkv = self.qkv(layer, n.view(), &positions);
            let width = qkv.ncols();
            let qkv = qkv
                .into_shape_with_order((b, t, width))
                .expect("contiguous");
            let mut att = Array4::<f32>::zeros((b, nh, t, t));
            let mut y = Array3::<f32>::zeros((b, t, nh * hs));
            attention_forward(qkv.view(), cfg.heads(), att.view_mut(), y.view_mut(), None);
            let y = y
                .into_shape_with_order((b * t, nh * hs))
                .expect("contiguous");
            let mut o = Array2::<f32>::zeros(x.raw_dim());
            layer.o_proj.matmul_t(y.view(), o.view_mut());
            x += &o;
            self.mlp_residual(layer, x.view_mut());
        }
        let h = self.rms(x.view(), &self.norm);
        let mut logits = Array2::<f32>::zeros((b * t, cfg.vocab_size));
        self.head().matmul_t(h.view(), logits.view_mut());
        Ok(logits
            .into_shape_with_order((b, t, cfg.vocab_size))
            .expect("contiguous"))
    }

    /// The final-norm hidden states' logits for a few rows.
    ///
    /// # Shapes
    /// `x: (R, C)` → `(R, V)`.
    pub(crate) fn logits_of(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let h = self.rms(x, &self.norm);
        let mut logits = Array2::<f32>::zeros((x.nrows(), self.config.vocab_size));
        self.head().matmul_t(h.view(), logits.view_mut());
        logits
    }
}
