//! [`Block`]: the pre-LN GPT-2 Transformer block.

use super::{check_btc, prefixed, take, CausalSelfAttention, Mlp};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::layers::{Dropout, Layer, LayerNorm, Mode};
use crate::param::Param;
use crate::tensor::Tensor;

/// A GPT-2 Transformer block (Hugging Face `GPT2Block`, pre-LN, no dropout):
///
/// ```text
/// x1  = x  + attn(ln_1(x))
/// out = x1 + mlp(ln_2(x1))
/// ```
///
/// Parameters, in Hugging Face order and names: `ln_1.weight`, `ln_1.bias`,
/// `attn.c_attn.weight`, `attn.c_attn.bias`, `attn.c_proj.weight`, `attn.c_proj.bias`,
/// `ln_2.weight`, `ln_2.bias`, `mlp.c_fc.weight`, `mlp.c_fc.bias`, `mlp.c_proj.weight`,
/// `mlp.c_proj.bias` (a GPT prefixes them with `h.<i>.`).
///
/// # Shapes
/// `x: (B, T, C) → (B, T, C)`.
#[derive(Debug, Clone)]
pub struct Block {
    pub(super) ln_1: LayerNorm,
    pub(super) attn: CausalSelfAttention,
    pub(super) ln_2: LayerNorm,
    pub(super) mlp: Mlp,
    /// Residual dropout after `attn` and after `mlp` (`p = 0`: identity, no work).
    pub(super) drop: [Dropout; 2],
}

impl Block {
    /// Passes [`crate::layers::Layer::seek_examples`] to the block's dropouts.
    pub fn seek_examples(&mut self, step: u64, first_row: usize) {
        self.attn.seek_examples(step, first_row);
        for d in &mut self.drop {
            d.seek_examples(step, first_row);
        }
    }

    /// A freshly initialised block (nanoGPT init, see [`crate::transformer`]) for a model of
    /// `n_layer` blocks, with LayerNorm `eps = 1e-5`.
    ///
    /// # Errors
    /// [`Error::Config`] when `n_embd % n_head != 0` (naming both) or a size is 0.
    pub fn new(n_embd: usize, n_head: usize, n_layer: usize, rng: &mut Rng) -> Result<Self> {
        let attn = CausalSelfAttention::new(n_embd, n_head, n_layer, rng)?;
        let mlp = Mlp::new(n_embd, n_layer, rng)?;
        let mut ln_1 = LayerNorm::new();
        ln_1.init(n_embd);
        let mut ln_2 = LayerNorm::new();
        ln_2.init(n_embd);
        Ok(Block {
            ln_1,
            attn,
            ln_2,
            mlp,
            drop: [Dropout::new(0.0), Dropout::new(0.0)],
        })
    }

    /// Sets the dropout probability of the attention probabilities, of the residual branch
    /// after `attn.c_proj` and of the MLP output (nanoGPT's `attn_dropout`, `resid_dropout`
    /// and the MLP's `dropout`), each seeded from `rng`.
    ///
    /// # Errors
    /// [`Error::Config`] when `p` is outside `[0, 1]`.
    pub fn with_dropout(mut self, p: f32, rng: &mut Rng) -> Result<Self> {
        use rand::Rng as _;
        let c = self.n_embd();
        self.attn = self.attn.with_attn_dropout(p, rng.random())?;
        self.drop = [
            super::Gpt::dropout_layer(p, c, rng)?,
            super::Gpt::dropout_layer(p, c, rng)?,
        ];
        Ok(self)
    }

    /// Sets the LayerNorm `eps` of `ln_1` and `ln_2` (GPT-2's `layer_norm_epsilon`).
    ///
    /// # Errors
    /// [`Error::Config`] when `eps` is not finite and ≥ 0.
    pub fn with_layer_norm_eps(mut self, eps: f32) -> Result<Self> {
        self.ln_1 = std::mem::take(&mut self.ln_1).eps(eps);
        self.ln_2 = std::mem::take(&mut self.ln_2).eps(eps);
        self.ln_1.validate()?;
        Ok(self)
    }

    /// A block from its four parts.
    ///
    /// # Errors
    /// [`Error::Shape`] when their widths differ, [`Error::State`] when a LayerNorm is unbuilt.
    pub fn from_parts(
        ln_1: LayerNorm,
        attn: CausalSelfAttention,
        ln_2: LayerNorm,
        mlp: Mlp,
    ) -> Result<Self> {
        let c = attn.n_embd();
        for (name, got) in [
            ("ln_1", ln_1.size()),
            ("ln_2", ln_2.size()),
            ("mlp", Some(mlp.n_embd())),
        ] {
            match got {
                Some(g) if g == c => {}
                Some(g) => {
                    return Err(Error::shape(
                        format!("Block {name}"),
                        format!("width C = {c} (from attn)"),
                        &[g],
                    ))
                }
                None => {
                    return Err(Error::State(format!(
                        "Block::from_parts: {name} is not built"
                    )))
                }
            }
        }
        Ok(Block {
            ln_1,
            attn,
            ln_2,
            mlp,
            drop: [Dropout::new(0.0), Dropout::new(0.0)],
        })
    }

    /// A block from tensors named as in a Hugging Face state dict without the `h.<i>.` prefix
    /// (`ln_1.weight`, `attn.c_attn.weight`, …; `[in, out]` layout); `get` returns each by name.
    ///
    /// # Errors
    /// [`Error::Param`] naming a missing tensor, [`Error::Shape`] / [`Error::Config`] when the
    /// tensors do not fit together or `C % n_head != 0`.
    pub fn from_weights(
        n_head: usize,
        layer_norm_eps: f32,
        mut get: impl FnMut(&str) -> Option<Tensor>,
    ) -> Result<Self> {
        let mut g = |name: &str| take(&mut get, name);
        let ln_1 = LayerNorm::from_weights(g("ln_1.weight")?, g("ln_1.bias")?)?.eps(layer_norm_eps);
        let attn = CausalSelfAttention::from_weights(
            n_head,
            g("attn.c_attn.weight")?,
            g("attn.c_attn.bias")?,
            g("attn.c_proj.weight")?,
            g("attn.c_proj.bias")?,
        )?;
        let ln_2 = LayerNorm::from_weights(g("ln_2.weight")?, g("ln_2.bias")?)?.eps(layer_norm_eps);
        let mlp = Mlp::from_weights(
            g("mlp.c_fc.weight")?,
            g("mlp.c_fc.bias")?,
            g("mlp.c_proj.weight")?,
            g("mlp.c_proj.bias")?,
        )?;
        ln_1.validate()?;
        Block::from_parts(ln_1, attn, ln_2, mlp)
    }

    /// The embedding width `C`.
    pub fn n_embd(&self) -> usize {
        self.attn.n_embd()
    }

    /// The first LayerNorm.
    pub fn ln_1(&self) -> &LayerNorm {
        &self.ln_1
    }

    /// The attention module.
    pub fn attn(&self) -> &CausalSelfAttention {
        &self.attn
    }

    /// The second LayerNorm.
    pub fn ln_2(&self) -> &LayerNorm {
        &self.ln_2
    }

    /// The MLP.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    fn name(&self) -> String {
        format!(
            "Block(n_embd={}, n_head={})",
            self.attn.n_embd(),
            self.attn.n_head()
        )
    }

    /// Runs the block; with `Mode::Train` every sub-module keeps what the backward needs.
    ///
    /// # Shapes
    /// `x: (B, T, C) → (B, T, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, C)`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        check_btc(x, self.n_embd(), &self.name())?;
        // x1 = x + attn(ln_1(x))
        let h1 = self.ln_1.forward(x, mode)?;
        let mut x1 = self.attn.forward(&h1, mode)?;
        crate::buffers::recycle(h1);
        if mode == Mode::Train && self.drop[0].p() > 0.0 {
            x1 = self.drop[0].forward(&x1, mode)?;
        }
        crate::ops::par::add_arrays(x1.view_mut(), x.view());
        // out = x1 + mlp(ln_2(x1))
        let h2 = self.ln_2.forward(&x1, mode)?;
        let mut out = self.mlp.forward(&h2, mode)?;
        crate::buffers::recycle(h2);
        if mode == Mode::Train && self.drop[1].p() > 0.0 {
            out = self.drop[1].forward(&out, mode)?;
        }
        crate::ops::par::add_arrays(out.view_mut(), x1.view());
        crate::buffers::recycle(x1);
        Ok(out)
    }

    /// Back-propagates `dout` through the last training forward: accumulates every parameter
    /// gradient and returns `dL/dx`.
    ///
    /// ```text
    /// forward: out = x1 + mlp(ln_2(x1))  ⇒ dx1 = dout + ln_2'ᵀ(mlp'ᵀ(dout))
    /// forward: x1  = x  + attn(ln_1(x))  ⇒ dx  = dx1  + ln_1'ᵀ(attn'ᵀ(dx1))
    /// ```
    ///
    /// # Shapes
    /// `dout: (B, T, C) → dx: (B, T, C)`.
    ///
    /// # Errors
    /// [`Error::State`] without a preceding `Mode::Train` forward, [`Error::Shape`] when `dout`
    /// is not shaped like the last output.
    pub fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let dh2 = if self.drop[1].p() > 0.0 {
            self.mlp.backward(&self.drop[1].backward(dout)?)?
        } else {
            self.mlp.backward(dout)?
        };
        let mut dx1 = self.ln_2.backward(&dh2)?;
        crate::buffers::recycle(dh2);
        crate::ops::par::add_arrays(dx1.view_mut(), dout.view());
        let dh1 = if self.drop[0].p() > 0.0 {
            self.attn.backward(&self.drop[0].backward(&dx1)?)?
        } else {
            self.attn.backward(&dx1)?
        };
        let mut dx = self.ln_1.backward(&dh1)?;
        crate::buffers::recycle(dh1);
        crate::ops::par::add_arrays(dx.view_mut(), dx1.view());
        crate::buffers::recycle(dx1);
        Ok(dx)
    }

    /// The parameters with their Hugging Face names, in state-dict order (see the type docs).
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = prefixed("ln_1.", self.ln_1.params());
        v.extend(prefixed("attn.", self.attn.params()));
        v.extend(prefixed("ln_2.", self.ln_2.params()));
        v.extend(prefixed("mlp.", self.mlp.params()));
        v
    }

    /// The parameters, mutably, in the order of [`Block::params`].
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = prefixed("ln_1.", self.ln_1.params_mut());
        v.extend(prefixed("attn.", self.attn.params_mut()));
        v.extend(prefixed("ln_2.", self.ln_2.params_mut()));
        v.extend(prefixed("mlp.", self.mlp.params_mut()));
        v
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params_mut() {
            p.zero_grad();
        }
    }
}
