//! [`Llama::backward`]: the hand-written backward pass of the training forward in `train.rs`,
//! each step below quoting the forward line it differentiates (derivations in
//! `docs/derivations.md`).

use super::lora::{LayerLora, LoraPair};
use super::train::{fit1, fit2, fit3, layer_forward};
use super::{Llama, Weight};
use crate::error::{Error, Result};
use crate::ops::attention::attention_backward;
use crate::ops::embedding::embedding_backward;
use crate::ops::matmul::matmul_into;
use crate::ops::rms_norm::rms_norm_backward;
use crate::ops::swiglu::swiglu_backward;
use crate::param::Param;
use ndarray::{s, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Ix1, Ix2};

/// The adapter `k` of a layer's adapters, if any.
fn pair<'a>(ad: &'a mut Option<&mut LayerLora>, k: usize) -> Option<&'a mut LoraPair> {
    ad.as_deref_mut().and_then(|l| l[k].as_mut())
}

/// The `(C)` value and gradient views of a norm weight.
fn norm_views(p: &mut Param) -> (ArrayView1<'_, f32>, ArrayViewMut1<'_, f32>) {
    (
        p.value
            .view()
            .into_dimensionality::<Ix1>()
            .expect("checked (C)"),
        p.grad
            .view_mut()
            .into_dimensionality::<Ix1>()
            .expect("checked (C)"),
    )
}

/// Backward of one projection `y = x·Wᵀ (+ LoRA)`: `dx` written (or added, `acc`) as `dy·W`;
/// `dW += dyᵀ·x` unless the base is `frozen`; the adapter's `dA`, `dB` and its share of `dx`.
///
/// # Shapes
/// `x: (M, in)`, `dy: (M, out)`, `dx: (M, in)`.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    w: &mut Weight,
    name: &str,
    x: ArrayView2<f32>,
    dy: ArrayView2<f32>,
    mut dx: ArrayViewMut2<f32>,
    acc: bool,
    frozen: bool,
    lora: Option<&mut LoraPair>,
) -> Result<()> {
    if frozen {
        // forward: y = x·Wᵀ with W frozen ⇒ dx = dy·W only
        let Weight::Dense(p) = w else {
            return Err(Error::State(format!(
                "{name} is stored encoded; adapt a to_f32() copy"
            )));
        };
        let m = p
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("[out, in]");
        matmul_into(dy, m, dx.view_mut(), acc);
    } else {
        w.backward(name, x, dy, Some(dx.view_mut()), acc)?;
    }
    if let Some(pair) = lora {
        pair.backward(x, dy, dx);
    }
    Ok(())
}

impl Llama {
    /// Back-propagates the loss of the last [`Llama::forward_loss`]: **accumulates** (`+=`) the
    /// gradient of every parameter (call [`Llama::zero_grad`] between steps). With a tied head
    /// the embedding's gradient is the sum of the lookup's and the head's parts.
    ///
    /// ```text
    /// logits = h·Wheadᵀ            ⇒ dh = dlogits·Whead,  dWhead += dlogitsᵀ·h
    /// h = RMSNorm(x_L)·w_norm      ⇒ dx_L, dw_norm       (rms_norm_backward)
    /// per layer, last first: the MLP, then attention (see the body)
    /// x_0 = embed[ids]             ⇒ dembed[ids] += dx_0 (scatter-add, ids in order)
    /// ```
    ///
    /// # Errors
    /// [`Error::State`] without a preceding [`Llama::forward_loss`] (or after another forward).
    pub fn backward(&mut self) -> Result<()> {
        self.backward_with(None)
    }

    /// [`Llama::backward`], through LoRA adapters when given (then the base weights are frozen:
    /// they get no gradient, and only `dx` flows through them).
    pub(crate) fn backward_with(&mut self, mut lora: Option<&mut [LayerLora]>) -> Result<()> {
        if !self.train.ready || self.train.lora != lora.is_some() {
            return Err(Error::State(
                "Llama::backward needs a preceding forward_loss (a training forward)".into(),
            ));
        }
        self.train.ready = false;
        let frozen = lora.is_some();
        let Llama {
            config,
            embed,
            layers,
            norm,
            lm_head,
            rope,
            train: tc,
        } = self;
        let (b, t) = tc.bt;
        let n = b * t;
        let (c, f) = (config.hidden_size, config.intermediate_size);
        let heads = config.heads();
        let hs = config.head_dim;
        let (qw, kvw) = (heads.n_head * hs, heads.n_kv_head * hs);
        let width = heads.qkv_width(hs);
        for buf in [&mut tc.dx, &mut tc.dxr, &mut tc.dn] {
            fit2(buf, (n, c));
        }
        for buf in [&mut tc.da, &mut tc.dg, &mut tc.du] {
            fit2(buf, (n, f));
        }
        fit3(&mut tc.dy, (b, t, qw));
        fit3(&mut tc.dqkv, (b, t, width));

        // forward: logits = h·Wheadᵀ  ⇒ dh = dlogits·Whead; dWhead += dlogitsᵀ·h
        //          (tied: Whead = embed, so this is the head's share of dembed)
        let head: &mut Weight = lm_head.as_mut().unwrap_or(&mut *embed);
        let head_name = if config.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        linear_backward(
            head,
            head_name,
            tc.h.view(),
            tc.dlogits.view(),
            tc.dn.view_mut(),
            false,
            frozen,
            None,
        )?;
        fit1(&mut tc.dw_frozen, c);
        // forward: h = RMSNorm(x_L)·w_norm  ⇒ dx_L = rms_norm_backward(dh), dw_norm += Σ dh·x̂
        let (w, dw) = norm_views(norm);
        let dw = if frozen { tc.dw_frozen.view_mut() } else { dw };
        rms_norm_backward(
            tc.dn.view(),
            tc.x_last.view(),
            w,
            tc.rstd_f.view(),
            tc.dx.view_mut(),
            dw,
        );
        for (i, layer) in layers.iter_mut().enumerate().rev() {
            let name = |k: &str| format!("model.layers.{i}.{k}.weight");
            let mut ad: Option<&mut LayerLora> = lora.as_deref_mut().map(|l| &mut l[i]);
            let lc = if tc.checkpointing {
                // recompute this layer's activations from its stored input (same arithmetic as
                // the forward, so bit-identical); `dxr` is free until the norm backward below
                fit2(&mut tc.xr, (n, c));
                tc.xr.assign(&tc.layers[i].x_in);
                let sc = &mut tc.scratch;
                layer_forward(
                    config,
                    rope,
                    layer,
                    ad.as_deref(),
                    sc,
                    &mut tc.xr,
                    &mut tc.dxr,
                    &tc.positions,
                    (b, t),
                );
                &tc.scratch
            } else {
                &tc.layers[i]
            };
            // --- MLP: x_out = x_mid + a·Wdᵀ, a = silu(g) ⊙ u, g = n2·Wgᵀ, u = n2·Wuᵀ ---
            // forward: x += a·Wdᵀ            ⇒ da = dx·Wd;  dWd += dxᵀ·a   (dx passes through)
            let w = &mut layer.down_proj;
            linear_backward(
                w,
                &name("mlp.down_proj"),
                lc.a.view(),
                tc.dx.view(),
                tc.da.view_mut(),
                false,
                frozen,
                pair(&mut ad, 6),
            )?;
            // forward: a = silu(g)·u         ⇒ dg = da·u·silu'(g), du = da·silu(g)
            swiglu_backward(
                tc.da.view(),
                lc.g.view(),
                lc.u.view(),
                tc.dg.view_mut(),
                tc.du.view_mut(),
            );
            // forward: g = n2·Wgᵀ, u = n2·Wuᵀ ⇒ dn2 = dg·Wg + du·Wu;  dWg += dgᵀ·n2, dWu += duᵀ·n2
            let w = &mut layer.gate_proj;
            linear_backward(
                w,
                &name("mlp.gate_proj"),
                lc.n2.view(),
                tc.dg.view(),
                tc.dn.view_mut(),
                false,
                frozen,
                pair(&mut ad, 4),
            )?;
            let w = &mut layer.up_proj;
            linear_backward(
                w,
                &name("mlp.up_proj"),
                lc.n2.view(),
                tc.du.view(),
                tc.dn.view_mut(),
                true,
                frozen,
                pair(&mut ad, 5),
            )?;
            // forward: n2 = RMSNorm(x_mid)·w_post ⇒ dx_mid = dx + rms_norm_backward(dn2)
            let (w, dw) = norm_views(&mut layer.post_attention_layernorm);
            let dw = if frozen { tc.dw_frozen.view_mut() } else { dw };
            rms_norm_backward(
                tc.dn.view(),
                lc.x_mid.view(),
                w,
                lc.rstd2.view(),
                tc.dxr.view_mut(),
                dw,
            );
            tc.dx += &tc.dxr;
            // --- attention: x_mid = x_in + y·Woᵀ ---
            // forward: x += y·Woᵀ            ⇒ dy = dx·Wo;  dWo += dxᵀ·y
            {
                let y2 =
                    lc.y.view()
                        .into_shape_with_order((n, qw))
                        .expect("contiguous");
                let dy2 = tc
                    .dy
                    .view_mut()
                    .into_shape_with_order((n, qw))
                    .expect("contiguous");
                let w = &mut layer.o_proj;
                linear_backward(
                    w,
                    &name("self_attn.o_proj"),
                    y2,
                    tc.dx.view(),
                    dy2,
                    false,
                    frozen,
                    pair(&mut ad, 3),
                )?;
            }
            // forward: y = softmax(q·kᵀ/√HS + causal)·v (GQA) ⇒ dq, dk, dv (dk/dv summed over
            // the query heads sharing them)
            attention_backward(
                tc.dy.view(),
                lc.qkv.view(),
                heads,
                lc.att.view(),
                tc.dqkv.view_mut(),
                None,
            );
            let mut dqkv = tc
                .dqkv
                .view_mut()
                .into_shape_with_order((n, width))
                .expect("contiguous");
            // forward: q' = R(p)·q, k' = R(p)·k ⇒ dq = R(p)ᵀ·dq', dk = R(p)ᵀ·dk'
            rope.apply(
                dqkv.slice_mut(s![.., ..qw]),
                heads.n_head,
                &tc.positions,
                true,
            );
            rope.apply(
                dqkv.slice_mut(s![.., qw..qw + kvw]),
                heads.n_kv_head,
                &tc.positions,
                true,
            );
            // forward: q, k, v = n1·Wqᵀ, n1·Wkᵀ, n1·Wvᵀ ⇒ dn1 = dq·Wq + dk·Wk + dv·Wv;
            //          dWq += dqᵀ·n1, dWk += dkᵀ·n1, dWv += dvᵀ·n1
            let dqkv = dqkv.view();
            linear_backward(
                &mut layer.q_proj,
                &name("self_attn.q_proj"),
                lc.n1.view(),
                dqkv.slice(s![.., ..qw]),
                tc.dn.view_mut(),
                false,
                frozen,
                pair(&mut ad, 0),
            )?;
            linear_backward(
                &mut layer.k_proj,
                &name("self_attn.k_proj"),
                lc.n1.view(),
                dqkv.slice(s![.., qw..qw + kvw]),
                tc.dn.view_mut(),
                true,
                frozen,
                pair(&mut ad, 1),
            )?;
            linear_backward(
                &mut layer.v_proj,
                &name("self_attn.v_proj"),
                lc.n1.view(),
                dqkv.slice(s![.., qw + kvw..]),
                tc.dn.view_mut(),
                true,
                frozen,
                pair(&mut ad, 2),
            )?;
            // forward: n1 = RMSNorm(x_in)·w_in ⇒ dx_in = dx_mid + rms_norm_backward(dn1)
            let (w, dw) = norm_views(&mut layer.input_layernorm);
            let dw = if frozen { tc.dw_frozen.view_mut() } else { dw };
            rms_norm_backward(
                tc.dn.view(),
                lc.x_in.view(),
                w,
                lc.rstd1.view(),
                tc.dxr.view_mut(),
                dw,
            );
            tc.dx += &tc.dxr;
        }
        if frozen {
            return Ok(()); // the embedding is frozen too
        }
        // forward: x_0 = embed[ids] ⇒ dembed[ids[r]] += dx_0[r]   (the lookup's share)
        let Weight::Dense(p) = embed else {
            return Err(Error::State(format!(
                "Llama::backward: model.embed_tokens.weight is stored as {}; train a \
                 dequantised copy (to_f32())",
                embed.type_name()
            )));
        };
        if !p.grad.is_standard_layout() {
            p.grad = p.grad.as_standard_layout().into_owned();
        }
        embedding_backward(
            &tc.ids,
            tc.dx.as_slice().expect("standard layout"),
            c,
            p.grad.as_slice_mut().expect("standard layout"),
        );
        Ok(())
    }
}
