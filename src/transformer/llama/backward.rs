//! [`Llama::backward`]: the hand-written backward pass of the training forward in `train.rs`,
//! each step below quoting the forward line it differentiates (derivations in
//! `docs/derivations.md`).

use super::train::{fit2, fit3, layer_forward};
use super::{Llama, Weight};
use crate::error::{Error, Result};
use crate::ops::attention::attention_backward;
use crate::ops::embedding::embedding_backward;
use crate::ops::rms_norm::rms_norm_backward;
use crate::ops::swiglu::swiglu_backward;
use crate::param::Param;
use ndarray::{s, ArrayView1, ArrayViewMut1, Ix1};

/// The `(C)` value and gradient views of a norm weight.
fn norm_views(p: &mut Param) -> (ArrayView1<'_, f32>, ArrayViewMut1<'_, f32>) {
    (
        p.value.view().into_dimensionality::<Ix1>().expect("checked (C)"),
        p.grad.view_mut().into_dimensionality::<Ix1>().expect("checked (C)"),
    )
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
        if !self.train.ready {
            return Err(Error::State(
                "Llama::backward needs a preceding forward_loss (a training forward)".into(),
            ));
        }
        self.train.ready = false;
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
        let head_name = if config.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
        head.backward(head_name, tc.h.view(), tc.dlogits.view(), Some(tc.dn.view_mut()), false)?;
        // forward: h = RMSNorm(x_L)·w_norm  ⇒ dx_L = rms_norm_backward(dh), dw_norm += Σ dh·x̂
        let (w, dw) = norm_views(norm);
        rms_norm_backward(tc.dn.view(), tc.x_last.view(), w, tc.rstd_f.view(), tc.dx.view_mut(), dw);
        for (i, layer) in layers.iter_mut().enumerate().rev() {
            let name = |k: &str| format!("model.layers.{i}.{k}.weight");
            let lc = if tc.checkpointing {
                // recompute this layer's activations from its stored input (same arithmetic as
                // the forward, so bit-identical); `dxr` is free until the norm backward below
                fit2(&mut tc.xr, (n, c));
                tc.xr.assign(&tc.layers[i].x_in);
                layer_forward(config, rope, layer, &mut tc.scratch, &mut tc.xr, &mut tc.dxr, &tc.positions, (b, t));
                &tc.scratch
            } else {
                &tc.layers[i]
            };
            // --- MLP: x_out = x_mid + a·Wdᵀ, a = silu(g) ⊙ u, g = n2·Wgᵀ, u = n2·Wuᵀ ---
            // forward: x += a·Wdᵀ            ⇒ da = dx·Wd;  dWd += dxᵀ·a   (dx passes through)
            layer
                .down_proj
                .backward(&name("mlp.down_proj"), lc.a.view(), tc.dx.view(), Some(tc.da.view_mut()), false)?;
            // forward: a = silu(g)·u         ⇒ dg = da·u·silu'(g), du = da·silu(g)
            swiglu_backward(tc.da.view(), lc.g.view(), lc.u.view(), tc.dg.view_mut(), tc.du.view_mut());
            // forward: g = n2·Wgᵀ, u = n2·Wuᵀ ⇒ dn2 = dg·Wg + du·Wu;  dWg += dgᵀ·n2, dWu += duᵀ·n2
            layer
                .gate_proj
                .backward(&name("mlp.gate_proj"), lc.n2.view(), tc.dg.view(), Some(tc.dn.view_mut()), false)?;
            layer
                .up_proj
                .backward(&name("mlp.up_proj"), lc.n2.view(), tc.du.view(), Some(tc.dn.view_mut()), true)?;
            // forward: n2 = RMSNorm(x_mid)·w_post ⇒ dx_mid = dx + rms_norm_backward(dn2)
            let (w, dw) = norm_views(&mut layer.post_attention_layernorm);
            rms_norm_backward(tc.dn.view(), lc.x_mid.view(), w, lc.rstd2.view(), tc.dxr.view_mut(), dw);
            tc.dx += &tc.dxr;
            // --- attention: x_mid = x_in + y·Woᵀ ---
            // forward: x += y·Woᵀ            ⇒ dy = dx·Wo;  dWo += dxᵀ·y
            {
                let y2 = lc.y.view().into_shape_with_order((n, qw)).expect("contiguous");
                let dy2 = tc.dy.view_mut().into_shape_with_order((n, qw)).expect("contiguous");
                layer
                    .o_proj
                    .backward(&name("self_attn.o_proj"), y2, tc.dx.view(), Some(dy2), false)?;
            }
            // forward: y = softmax(q·kᵀ/√HS + causal)·v (GQA) ⇒ dq, dk, dv (dk/dv summed over
            // the query heads sharing them)
            attention_backward(tc.dy.view(), lc.qkv.view(), heads, lc.att.view(), tc.dqkv.view_mut(), None);
            let mut dqkv = tc.dqkv.view_mut().into_shape_with_order((n, width)).expect("contiguous");
            // forward: q' = R(p)·q, k' = R(p)·k ⇒ dq = R(p)ᵀ·dq', dk = R(p)ᵀ·dk'
            rope.apply(dqkv.slice_mut(s![.., ..qw]), heads.n_head, &tc.positions, true);
            rope.apply(dqkv.slice_mut(s![.., qw..qw + kvw]), heads.n_kv_head, &tc.positions, true);
            // forward: q, k, v = n1·Wqᵀ, n1·Wkᵀ, n1·Wvᵀ ⇒ dn1 = dq·Wq + dk·Wk + dv·Wv;
            //          dWq += dqᵀ·n1, dWk += dkᵀ·n1, dWv += dvᵀ·n1
            let dqkv = dqkv.view();
            layer.q_proj.backward(
                &name("self_attn.q_proj"),
                lc.n1.view(),
                dqkv.slice(s![.., ..qw]),
                Some(tc.dn.view_mut()),
                false,
            )?;
            layer.k_proj.backward(
                &name("self_attn.k_proj"),
                lc.n1.view(),
                dqkv.slice(s![.., qw..qw + kvw]),
                Some(tc.dn.view_mut()),
                true,
            )?;
            layer.v_proj.backward(
                &name("self_attn.v_proj"),
                lc.n1.view(),
                dqkv.slice(s![.., qw + kvw..]),
                Some(tc.dn.view_mut()),
                true,
            )?;
            // forward: n1 = RMSNorm(x_in)·w_in ⇒ dx_in = dx_mid + rms_norm_backward(dn1)
            let (w, dw) = norm_views(&mut layer.input_layernorm);
            rms_norm_backward(tc.dn.view(), lc.x_in.view(), w, lc.rstd1.view(), tc.dxr.view_mut(), dw);
            tc.dx += &tc.dxr;
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
