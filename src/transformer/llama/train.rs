//! Training forward of [`Llama`]: the loss of a batch with everything the backward needs kept in
//! reused buffers, and the trainable parameters by their Hugging Face names.
//!
//! The backward pass itself is in `backward.rs`; the math of each step is derived in
//! `docs/derivations.md` (RMSNorm, RoPE, SwiGLU, grouped-query attention, the tied head).
//!
//! # Activation memory
//!
//! With `N = B·T`, `W = (NH + 2·NKV)·HS` and `Q = NH·HS`, each decoder layer's [`LayerCache`]
//! keeps `4·(N·(4C + W + Q + 3F + 2) + B·NH·T²)` bytes (`F` = `intermediate_size`): the layer
//! input, the two norm outputs and the residual after attention (`4·N·C`), two `1/rms` rows
//! (`2·N`), `q | k | v` (`N·W`), the attention probabilities (`B·NH·T²`), the merged heads
//! (`N·Q`) and the MLP's `g`, `u`, `silu(g)·u` (`3·N·F`). For SmolLM2-135M (C 576, F 1536,
//! NH 9, NKV 3, HS 64) that is `4·(8450·N + 9·B·T²)`: 11.0 MB per layer at B = 1, T = 256 and
//! 44.0 MB at B = 4 (1.32 GB for the 30 layers). With recomputation
//! ([`Llama::set_gradient_checkpointing`]) a layer keeps only its input (`4·N·C`: 2.36 MB at
//! B = 4) and one extra set of layer buffers is shared by the backward. The other training
//! buffers (logits `4·N·V`, the backward's scratch) and the whole sum are given by
//! [`LlamaConfig::train_memory`], which `tests/llm` checks against the arrays actually held
//! ([`Llama::train_memory_in_use`]).
//!
//! Batches are rectangular `(B, T)`: a chat data set pads each conversation to `T` with
//! [`IGNORE_INDEX`] targets (no packing, so no attention mask is needed: causal attention never
//! lets a real token see the padding after it).

use super::lora::{project, LayerLora};
use super::model::{project_qkv, vec1};
use super::{Llama, LlamaConfig, LlamaLayer, Weight};
use crate::error::{Error, Result};
use crate::ops::attention::attention_forward;
use crate::ops::cross_entropy::{lm_cross_entropy_in_place, IGNORE_INDEX};
use crate::ops::rms_norm::rms_norm_forward;
use crate::ops::rope::RopeTables;
use crate::ops::swiglu::swiglu_forward;
use ndarray::{s, Array1, Array2, Array3, Array4, ArrayView2};

/// What one decoder layer's training forward keeps (buffers reused while the shape stays).
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerCache {
    /// The layer input (residual stream). Shapes: `(N, C)`, `N = B·T`.
    pub x_in: Array2<f32>,
    /// `1/rms` of `x_in` rows. Shapes: `(N)`.
    pub rstd1: Array1<f32>,
    /// `input_layernorm` output, input of q/k/v. Shapes: `(N, C)`.
    pub n1: Array2<f32>,
    /// Packed `q | k | v` after RoPE. Shapes: `(B, T, (NH + 2·NKV)·HS)`.
    pub qkv: Array3<f32>,
    /// Attention probabilities. Shapes: `(B, NH, T, T)`.
    pub att: Array4<f32>,
    /// Merged head outputs, input of `o_proj`. Shapes: `(B, T, NH·HS)`.
    pub y: Array3<f32>,
    /// Residual stream after attention. Shapes: `(N, C)`.
    pub x_mid: Array2<f32>,
    /// `1/rms` of `x_mid` rows. Shapes: `(N)`.
    pub rstd2: Array1<f32>,
    /// `post_attention_layernorm` output, input of gate/up. Shapes: `(N, C)`.
    pub n2: Array2<f32>,
    /// `gate_proj` output. Shapes: `(N, F)`.
    pub g: Array2<f32>,
    /// `up_proj` output. Shapes: `(N, F)`.
    pub u: Array2<f32>,
    /// `silu(g) ⊙ u`, input of `down_proj`. Shapes: `(N, F)`.
    pub a: Array2<f32>,
}

/// The training state of a [`Llama`]: the per-layer caches, the final norm's input and output,
/// `dlogits`, and the backward's scratch buffers.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrainCache {
    /// Token ids, row-major. Shapes: `(B·T)`.
    pub ids: Vec<usize>,
    /// Position of each row (`n % T`). Shapes: `(B·T)`.
    pub positions: Vec<usize>,
    /// `(B, T)` of the last training forward.
    pub bt: (usize, usize),
    /// One cache per decoder layer.
    pub layers: Vec<LayerCache>,
    /// The residual stream after the last layer. Shapes: `(N, C)`.
    pub x_last: Array2<f32>,
    /// `1/rms` of `x_last`. Shapes: `(N)`.
    pub rstd_f: Array1<f32>,
    /// Final-norm output, input of the head. Shapes: `(N, C)`.
    pub h: Array2<f32>,
    /// Logits, then `dlogits` after the loss. Shapes: `(N, V)`.
    pub dlogits: Array2<f32>,
    /// Backward scratch: the residual gradient, a norm's input gradient and `dn`.
    /// Shapes: `(N, C)` each.
    pub dx: Array2<f32>,
    /// See `dx`.
    pub dxr: Array2<f32>,
    /// See `dx`.
    pub dn: Array2<f32>,
    /// Backward scratch: `da`, `dg`, `du`. Shapes: `(N, F)` each.
    pub da: Array2<f32>,
    /// See `da`.
    pub dg: Array2<f32>,
    /// See `da`.
    pub du: Array2<f32>,
    /// Backward scratch: `dy`. Shapes: `(B, T, NH·HS)`.
    pub dy: Array3<f32>,
    /// Backward scratch: `dqkv`. Shapes: `(B, T, (NH + 2·NKV)·HS)`.
    pub dqkv: Array3<f32>,
    /// Whether a training forward is waiting for its backward.
    pub ready: bool,
    /// Gradient checkpointing: `layers` keep only `x_in`; the backward recomputes each layer
    /// into `scratch` (its input copied into `xr`).
    pub checkpointing: bool,
    /// The recomputed layer's activations (checkpointing only).
    pub scratch: LayerCache,
    /// The recomputed layer's residual stream. Shapes: `(N, C)`.
    pub xr: Array2<f32>,
    /// Whether the last training forward ran through LoRA adapters (frozen base weights).
    pub lora: bool,
    /// Where frozen norm weights' gradients go (discarded). Shapes: `(C)`.
    pub dw_frozen: Array1<f32>,
}

/// Resizes `a` to `dim` (contents unspecified) unless it already has that shape.
pub(crate) fn fit2(a: &mut Array2<f32>, dim: (usize, usize)) {
    if a.dim() != dim {
        *a = Array2::zeros(dim);
    }
}

/// As [`fit2`] for rank 1.
pub(crate) fn fit1(a: &mut Array1<f32>, n: usize) {
    if a.len() != n {
        *a = Array1::zeros(n);
    }
}

/// As [`fit2`] for rank 3.
pub(crate) fn fit3(a: &mut Array3<f32>, dim: (usize, usize, usize)) {
    if a.dim() != dim {
        *a = Array3::zeros(dim);
    }
}

/// The weights of one layer with their names under `model.layers.<i>.`, in state-dict order.
fn layer_weights(l: &LlamaLayer) -> [(&'static str, &Weight); 7] {
    [
        ("self_attn.q_proj.weight", &l.q_proj),
        ("self_attn.k_proj.weight", &l.k_proj),
        ("self_attn.v_proj.weight", &l.v_proj),
        ("self_attn.o_proj.weight", &l.o_proj),
        ("mlp.gate_proj.weight", &l.gate_proj),
        ("mlp.up_proj.weight", &l.up_proj),
        ("mlp.down_proj.weight", &l.down_proj),
    ]
}

/// One decoder layer's training forward: `x ← layer(x)`, keeping its activations in `lc`
/// (`tmp` is an `(N, C)` scratch buffer). The same kernels in the same order as the inference
/// forward, so the logits are bit-identical to [`Llama::forward`]'s.
///
/// # Shapes
/// `x, tmp: (N, C)` with `N = B·T`, `positions: (N)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_forward(
    cfg: &LlamaConfig,
    rope: &RopeTables,
    layer: &LlamaLayer,
    lora: Option<&LayerLora>,
    lc: &mut LayerCache,
    x: &mut Array2<f32>,
    tmp: &mut Array2<f32>,
    positions: &[usize],
    (b, t): (usize, usize),
) {
    let n = b * t;
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let heads = cfg.heads();
    let (width, qw) = (
        heads.qkv_width(cfg.head_dim),
        cfg.num_attention_heads * cfg.head_dim,
    );
    let eps = cfg.rms_norm_eps as f32;
    let ad = |k: usize| lora.and_then(|l| l[k].as_ref());
    fit2(&mut lc.x_in, (n, c));
    lc.x_in.assign(x);
    // n1 = RMSNorm(x)·w_in
    fit2(&mut lc.n1, (n, c));
    fit1(&mut lc.rstd1, n);
    rms_norm_forward(
        x.view(),
        vec1(&layer.input_layernorm),
        eps,
        lc.n1.view_mut(),
        Some(lc.rstd1.view_mut()),
    );
    // q | k | v = n1·[Wq; Wk; Wv]ᵀ, RoPE on q and k                          (B, T, W)
    fit3(&mut lc.qkv, (b, t, width));
    match lora {
        None => {
            let qkv2 = lc
                .qkv
                .view_mut()
                .into_shape_with_order((n, width))
                .expect("contiguous");
            project_qkv(cfg, rope, layer, lc.n1.view(), positions, qkv2);
        }
        Some(ad) => {
            // the same products and rotations as project_qkv, each with its adapter added
            // before RoPE
            let mut qkv2 = lc
                .qkv
                .view_mut()
                .into_shape_with_order((n, width))
                .expect("contiguous");
            let kw = cfg.num_key_value_heads * cfg.head_dim;
            let n1 = lc.n1.view();
            project(
                &layer.q_proj,
                ad[0].as_ref(),
                n1,
                qkv2.slice_mut(s![.., ..qw]),
            );
            project(
                &layer.k_proj,
                ad[1].as_ref(),
                n1,
                qkv2.slice_mut(s![.., qw..qw + kw]),
            );
            project(
                &layer.v_proj,
                ad[2].as_ref(),
                n1,
                qkv2.slice_mut(s![.., qw + kw..]),
            );
            rope.apply(
                qkv2.slice_mut(s![.., ..qw]),
                cfg.num_attention_heads,
                positions,
                false,
            );
            rope.apply(
                qkv2.slice_mut(s![.., qw..qw + kw]),
                cfg.num_key_value_heads,
                positions,
                false,
            );
        }
    }
    // y = softmax(q·kᵀ/√HS + causal)·v, heads merged (GQA)                    (B, T, NH·HS)
    if lc.att.dim() != (b, heads.n_head, t, t) {
        lc.att = Array4::zeros((b, heads.n_head, t, t));
    }
    fit3(&mut lc.y, (b, t, qw));
    attention_forward(
        lc.qkv.view(),
        heads,
        lc.att.view_mut(),
        lc.y.view_mut(),
        None,
    );
    // x += y·Woᵀ
    let y2 =
        lc.y.view()
            .into_shape_with_order((n, qw))
            .expect("contiguous");
    project(&layer.o_proj, ad(3), y2, tmp.view_mut());
    *x += &*tmp;
    fit2(&mut lc.x_mid, (n, c));
    lc.x_mid.assign(x);
    // n2 = RMSNorm(x)·w_post
    fit2(&mut lc.n2, (n, c));
    fit1(&mut lc.rstd2, n);
    rms_norm_forward(
        x.view(),
        vec1(&layer.post_attention_layernorm),
        eps,
        lc.n2.view_mut(),
        Some(lc.rstd2.view_mut()),
    );
    // x += (silu(n2·Wgᵀ) ⊙ n2·Wuᵀ)·Wdᵀ
    for buf in [&mut lc.g, &mut lc.u, &mut lc.a] {
        fit2(buf, (n, f));
    }
    project(&layer.gate_proj, ad(4), lc.n2.view(), lc.g.view_mut());
    project(&layer.up_proj, ad(5), lc.n2.view(), lc.u.view_mut());
    swiglu_forward(lc.g.view(), lc.u.view(), lc.a.view_mut());
    project(&layer.down_proj, ad(6), lc.a.view(), tmp.view_mut());
    *x += &*tmp;
}

impl Llama {
    /// Every weight matrix with its Hugging Face name (embedding, layers, untied head).
    fn named_weights(&self) -> Vec<(String, &Weight)> {
        let mut v = vec![("model.embed_tokens.weight".to_string(), &self.embed)];
        for (i, l) in self.layers.iter().enumerate() {
            for (k, w) in layer_weights(l) {
                v.push((format!("model.layers.{i}.{k}"), w));
            }
        }
        if let Some(h) = &self.lm_head {
            v.push(("lm_head.weight".to_string(), h));
        }
        v
    }

    /// Whether every weight is a trainable `f32` parameter (no encoded GGUF matrices).
    pub fn is_trainable(&self) -> bool {
        self.named_weights()
            .iter()
            .all(|(_, w)| matches!(w, Weight::Dense(_)))
    }

    /// `Err` naming the first encoded weight, telling the user to train an `f32` copy.
    fn check_trainable(&self, op: &str) -> Result<()> {
        if let Some((name, w)) = self
            .named_weights()
            .into_iter()
            .find(|(_, w)| !matches!(w, Weight::Dense(_)))
        {
            return Err(Error::State(format!(
                "Llama::{op}: {name} is stored encoded as {}, which has no gradient; train a \
                 dequantised copy: `let mut model = model.to_f32()?;`",
                w.type_name()
            )));
        }
        Ok(())
    }

    /// Checks `(ids, targets)` of a loss: shapes, positions, ids `< V`, targets `< V` or
    /// [`IGNORE_INDEX`], and trainable weights.
    fn check_batch(
        &self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
        op: &str,
    ) -> Result<()> {
        let (b, t) = ids.dim();
        let cfg = &self.config;
        if b == 0 || t == 0 || t > cfg.max_position_embeddings {
            return Err(Error::shape(
                format!("Llama::{op}"),
                format!(
                    "(B, T) token ids with B ≥ 1 and 1 ≤ T ≤ max_position_embeddings = {}",
                    cfg.max_position_embeddings
                ),
                &[b, t],
            ));
        }
        if targets.dim() != ids.dim() {
            return Err(Error::shape(
                format!("Llama::{op} targets"),
                format!("targets shaped like the ids {:?}", ids.shape()),
                targets.shape(),
            ));
        }
        self.check_ids(ids.iter(), op)?;
        self.check_shapes()?;
        let v = cfg.vocab_size;
        if let Some(((bb, tt), &id)) = targets
            .indexed_iter()
            .find(|&(_, &id)| id != IGNORE_INDEX && id >= v)
        {
            return Err(Error::label(
                format!("Llama::{op} targets"),
                format!(
                    "target {id} at (b={bb}, t={tt}) is out of range for vocab_size = {v} \
                     (use IGNORE_INDEX to skip a position)"
                ),
            ));
        }
        self.check_trainable(op)
    }

    /// A training forward and the mean next-token cross-entropy over the targets that are not
    /// [`IGNORE_INDEX`]; keeps what [`Llama::backward`] needs.
    ///
    /// `targets[b, t]` is the id that should follow `ids[b, ..=t]` (already shifted, as in
    /// [`crate::transformer::Gpt::forward_loss`]). Hugging Face's `LlamaForCausalLM(ids,
    /// labels=ids)` equals `targets[:, t] = ids[:, t + 1]` with the last column
    /// [`IGNORE_INDEX`] (see [`shift_labels`](super::shift_labels)). With no valid target the loss is NaN (as torch).
    ///
    /// # Shapes
    /// `ids: (B, T)`, `targets: (B, T)` → scalar.
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty batch, `T > max_position_embeddings` or targets shaped
    /// unlike the ids; [`Error::Label`] naming an id or target `≥ V`; [`Error::State`] when the
    /// model holds encoded (GGUF) weights: train `to_f32()`'s copy.
    pub fn forward_loss(
        &mut self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
    ) -> Result<f32> {
        self.forward_loss_with(ids, targets, None, true)
    }

    /// [`Llama::forward_loss`] (`train`) or [`Llama::loss`] with optional LoRA adapters.
    pub(crate) fn forward_loss_with(
        &mut self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
        lora: Option<&[LayerLora]>,
        train: bool,
    ) -> Result<f32> {
        self.train.ready = false;
        self.check_batch(ids, targets, if train { "forward_loss" } else { "loss" })?;
        let loss = self.train_forward(ids, targets, lora);
        self.train.ready = train;
        self.train.lora = lora.is_some();
        Ok(loss)
    }

    /// The mean next-token cross-entropy without preparing a backward (validation loss).
    ///
    /// # Shapes
    /// `ids: (B, T)`, `targets: (B, T)` → scalar.
    ///
    /// # Errors
    /// As [`Llama::forward_loss`].
    pub fn loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        self.forward_loss_with(ids, targets, None, false)
    }

    /// Turns activation recomputation (gradient checkpointing, Hugging Face's
    /// `gradient_checkpointing_enable()`) on or off; default off. On, the training forward keeps
    /// only each layer's input `(B·T, C)` and the backward re-runs one layer at a time into a
    /// single set of buffers before differentiating it: memory for activations drops from
    /// `L` layers' worth to one (plus `L·B·T·C` inputs) for about one extra forward of compute.
    /// The recomputation is the same arithmetic, so gradients are bit-identical either way.
    /// SmolLM2-135M at B = 4, T = 256: 1.32 GB of layer activations without, 71 MB + one layer's
    /// 44 MB with (the formula is in the [`llama`](crate::transformer::llama) module docs; the exact buffers by
    /// [`LlamaConfig::train_memory`]).
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.train.checkpointing = on;
        self.train.ready = false;
        self.train.layers.clear();
        self.train.scratch = LayerCache::default();
        self.train.xr = Array2::zeros((0, 0));
    }

    /// Whether [`Llama::set_gradient_checkpointing`] is on.
    pub fn gradient_checkpointing(&self) -> bool {
        self.train.checkpointing
    }

    /// The forward of checked inputs into the training cache; returns the loss.
    fn train_forward(
        &mut self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
        lora: Option<&[LayerLora]>,
    ) -> f32 {
        let mut tc = std::mem::take(&mut self.train);
        let cfg = &self.config;
        let (b, t) = ids.dim();
        let n = b * t;
        let (c, v) = (cfg.hidden_size, cfg.vocab_size);
        let eps = cfg.rms_norm_eps as f32;
        tc.ids.clear();
        tc.ids.extend(ids.iter().copied());
        tc.positions.clear();
        tc.positions.extend((0..n).map(|i| i % t));
        tc.bt = (b, t);
        tc.layers
            .resize_with(self.layers.len(), LayerCache::default);
        // x = embed_tokens[ids]                                                       (N, C)
        let mut x = std::mem::take(&mut tc.x_last);
        fit2(&mut x, (n, c));
        for (mut row, &id) in x.outer_iter_mut().zip(&tc.ids) {
            self.embed
                .row_into(id, row.as_slice_mut().expect("standard layout"));
        }
        let mut tmp = std::mem::take(&mut tc.dx); // (N, C) projection output before the add
        fit2(&mut tmp, (n, c));
        for (i, (layer, lc)) in self.layers.iter().zip(tc.layers.iter_mut()).enumerate() {
            let ad = lora.map(|l| &l[i]);
            if tc.checkpointing {
                // keep the input only; the backward recomputes the rest into `scratch`
                fit2(&mut lc.x_in, (n, c));
                lc.x_in.assign(&x);
                let sc = &mut tc.scratch;
                layer_forward(
                    cfg,
                    &self.rope,
                    layer,
                    ad,
                    sc,
                    &mut x,
                    &mut tmp,
                    &tc.positions,
                    (b, t),
                );
            } else {
                layer_forward(
                    cfg,
                    &self.rope,
                    layer,
                    ad,
                    lc,
                    &mut x,
                    &mut tmp,
                    &tc.positions,
                    (b, t),
                );
            }
        }
        tc.dx = tmp;
        // h = RMSNorm(x)·w_norm;  logits = h·Wheadᵀ                                  (N, V)
        fit2(&mut tc.h, (n, c));
        fit1(&mut tc.rstd_f, n);
        rms_norm_forward(
            x.view(),
            super::model::vec1(&self.norm),
            eps,
            tc.h.view_mut(),
            Some(tc.rstd_f.view_mut()),
        );
        tc.x_last = x;
        fit2(&mut tc.dlogits, (n, v));
        self.head().matmul_t(tc.h.view(), tc.dlogits.view_mut());
        let flat: Vec<usize> = targets.iter().copied().collect();
        let (loss, _) = lm_cross_entropy_in_place(tc.dlogits.view_mut(), &flat);
        self.train = tc;
        loss
    }
}
