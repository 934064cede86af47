//! [`Gpt`]: the GPT-2 language model (token + position embeddings, blocks, `ln_f`, tied head).

use super::{Block, GptConfig, INIT_STD};
use crate::error::{Error, Result};
use crate::init::{normal, Rng};
use crate::layers::{Dropout, Layer, LayerNorm, Mode};
use crate::ops::cross_entropy::{lm_cross_entropy_in_place, IGNORE_INDEX};
use crate::ops::embedding::{token_position_backward, token_position_forward};
use crate::ops::matmul::{matmul_into, matmul_nt_into, matmul_tn_into};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{Array2, ArrayView2, Ix2, IxDyn};

/// A GPT-2–style causal language model (Hugging Face `GPT2LMHeadModel`, nanoGPT `GPT`):
///
/// ```text
/// x      = wte[ids] + wpe[0..T]                  (B, T, C)   (+ dropout)
/// x      = h.i(x)            for i in 0..n_layer (pre-LN blocks, see Block)
/// logits = ln_f(x)·wteᵀ                          (B, T, V)   (LM head tied to wte, no bias)
/// ```
///
/// Parameters, with Hugging Face names in state-dict order: `wte.weight` `[V, C]`,
/// `wpe.weight` `[P, C]`, `h.<i>.…` (twelve per block, see [`Block`]), `ln_f.weight`,
/// `ln_f.bias`. A Hugging Face checkpoint adds a `transformer.` prefix: see
/// [`Gpt::from_pretrained`].
///
/// ```
/// use handgrad::prelude::*;
/// use handgrad::transformer::{Gpt, GptConfig};
/// let mut rng = handgrad::init::rng(0);
/// let mut gpt = Gpt::new(GptConfig::tiny(10), &mut rng)?;
/// let ids = ndarray::array![[1usize, 2, 3, 4]];
/// let logits = gpt.forward(ids.view(), handgrad::Mode::Eval)?;          // (B, T, V) = (1, 4, 10)
/// assert_eq!(logits.shape(), &[1, 4, 10]);
/// let targets = ndarray::array![[2usize, 3, 4, 5]];
/// let loss = gpt.forward_loss(ids.view(), targets.view())?; // ≈ ln 10 at init
/// gpt.backward()?;                                         // gradients in gpt.params()
/// assert!((loss - 10f32.ln()).abs() < 0.1);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gpt {
    pub(crate) config: GptConfig,
    pub(crate) wte: Param,
    pub(crate) wpe: Param,
    pub(crate) drop: Dropout,
    pub(crate) blocks: Vec<Block>,
    pub(crate) ln_f: LayerNorm,
    cache: LmCache,
    /// Whether [`Gpt::check_shapes`] passed since the parameters were last handed out mutably
    /// ([`Gpt::params_mut`] clears it), so a forward checks them once, not at every token.
    shapes_checked: CheckedFlag,
}

/// A flag set through `&self` (the cached forward checks the shapes once, from any thread),
/// cleared through `&mut self`; cloning copies its value.
#[derive(Debug, Default)]
struct CheckedFlag(std::sync::atomic::AtomicBool);

impl CheckedFlag {
    fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
    fn clear(&mut self) {
        *self.0.get_mut() = false;
    }
}

impl Clone for CheckedFlag {
    fn clone(&self) -> Self {
        CheckedFlag(std::sync::atomic::AtomicBool::new(self.get()))
    }
}

/// What the last training forward keeps for [`Gpt::backward`] (buffers reused across steps).
#[derive(Debug, Clone, Default)]
struct LmCache {
    /// The token ids, row-major. Shapes: `(B·T)`.
    ids: Vec<usize>,
    /// `(B, T)` of the last forward.
    bt: (usize, usize),
    /// `ln_f` output rows. Shapes: `(B·T, C)`.
    h: Array2<f32>,
    /// Logits, then `dlogits` after the loss. Shapes: `(B·T, V)`.
    dlogits: Array2<f32>,
    /// Whether a training forward + loss is waiting for its backward.
    ready: bool,
}

impl Gpt {
    /// A freshly initialised model (nanoGPT init: embeddings and weights `N(0, 0.02)`, residual
    /// projections `N(0, 0.02/√(2·n_layer))`, biases 0, LayerNorms 1 and 0).
    ///
    /// # Errors
    /// [`Error::Config`] when [`GptConfig::validate`] fails.
    pub fn new(config: GptConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let c = config.n_embd;
        let wte = Param::new(normal(&[config.vocab_size, c], INIT_STD, rng)?);
        let wpe = Param::new(normal(&[config.block_size, c], INIT_STD, rng)?);
        let blocks = (0..config.n_layer)
            .map(|_| {
                Block::new(c, config.n_head, config.n_layer, rng)?
                    .with_layer_norm_eps(config.layer_norm_eps)?
                    .with_dropout(config.dropout, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ln_f = LayerNorm::new().eps(config.layer_norm_eps);
        ln_f.init(c);
        let drop = Self::dropout_layer(config.dropout, c, rng)?;
        Ok(Gpt {
            config,
            wte,
            wpe,
            drop,
            blocks,
            ln_f,
            cache: LmCache::default(),
            shapes_checked: CheckedFlag::default(),
        })
    }

    /// A built dropout layer with its own seed drawn from `rng`.
    pub(crate) fn dropout_layer(p: f32, c: usize, rng: &mut Rng) -> Result<Dropout> {
        use rand::Rng as _;
        let mut d = Dropout::with_seed(p, rng.random());
        d.build(&[c], rng)?;
        Ok(d)
    }

    /// Assembles a model from its parts (used by the loaders).
    pub(crate) fn from_parts(
        config: GptConfig,
        wte: Tensor,
        wpe: Tensor,
        blocks: Vec<Block>,
        ln_f: LayerNorm,
        rng: &mut Rng,
    ) -> Result<Self> {
        let drop = Self::dropout_layer(config.dropout, config.n_embd, rng)?;
        Ok(Gpt {
            config,
            wte: Param::new(wte),
            wpe: Param::new(wpe),
            drop,
            blocks,
            ln_f,
            cache: LmCache::default(),
            shapes_checked: CheckedFlag::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Checks ids `(B, T)`: `1 ≤ T ≤ block_size` and every id `< V`.
    pub(crate) fn check_ids(&self, ids: ArrayView2<usize>, what: &str) -> Result<()> {
        check_token_ids(&self.config, &format!("Gpt {what}"), ids)
    }

    /// [`Gpt::check_shapes`] unless it passed since the last [`Gpt::params_mut`].
    pub(crate) fn ensure_shapes(&self) -> Result<()> {
        if !self.shapes_checked.get() {
            self.check_shapes()?;
            self.shapes_checked.set();
        }
        Ok(())
    }

    /// `x = wte[ids] + wpe[0..T]` through the blocks and `ln_f`; returns the final hidden rows.
    ///
    /// # Shapes
    /// `ids: (B, T)` → `(B·T, C)`.
    fn hidden(&mut self, ids: ArrayView2<usize>, mode: Mode) -> Result<Array2<f32>> {
        self.check_ids(ids, "forward")?;
        self.ensure_shapes()?;
        let (b, t) = ids.dim();
        let c = self.config.n_embd;
        let ids: Vec<usize> = ids.iter().copied().collect();
        let mut x = crate::buffers::for_overwrite(IxDyn(&[b, t, c]));
        // (a user may have replaced a weight by one in another memory layout)
        let (wte, wpe) = (
            self.wte.value.as_standard_layout(),
            self.wpe.value.as_standard_layout(),
        );
        token_position_forward(
            &ids,
            t,
            wte.as_slice().expect("standard layout"),
            wpe.as_slice().expect("standard layout"),
            c,
            x.as_slice_mut().expect("fresh tensor"),
        );
        let train = mode == Mode::Train;
        if train && self.drop.p() > 0.0 {
            x = self.drop.forward(&x, mode)?;
        }
        for block in &mut self.blocks {
            let y = block.forward(&x, mode)?;
            crate::buffers::recycle(std::mem::replace(&mut x, y));
        }
        let h = self.ln_f.forward(&x, mode)?;
        crate::buffers::recycle(x);
        self.cache.ids = ids;
        self.cache.bt = (b, t);
        Ok(h.into_shape_with_order((b * t, c))
            .expect("standard layout")
            .into_dimensionality::<Ix2>()
            .expect("rank 2"))
    }

    /// `logits = h·wteᵀ` into `out`.
    pub(super) fn lm_head(&self, h: ArrayView2<f32>, out: ndarray::ArrayViewMut2<f32>) {
        let wte = self
            .wte
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("[V, C]");
        matmul_nt_into(h, wte, out, false);
    }

    /// Logits for every position. `Mode::Train` runs dropout (when configured) but keeps
    /// nothing for a backward; training goes through [`Gpt::forward_loss`].
    ///
    /// # Shapes
    /// `ids: (B, T)` with `T ≤ block_size` → `(B, T, V)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `B` or `T` is 0 or `T > block_size`; [`Error::Label`] naming the
    /// first id `≥ V` and its position.
    pub fn forward(&mut self, ids: ArrayView2<usize>, mode: Mode) -> Result<Tensor> {
        let h = self.hidden(ids, mode)?;
        self.cache.ready = false;
        let (b, t) = ids.dim();
        let mut logits = Array2::<f32>::zeros((b * t, self.config.vocab_size));
        self.lm_head(h.view(), logits.view_mut());
        Ok(logits
            .into_shape_with_order(IxDyn(&[b, t, self.config.vocab_size]))
            .expect("contiguous"))
    }

    /// A training forward and the mean next-token cross-entropy; keeps what [`Gpt::backward`]
    /// needs. `targets[b, t]` is the id that should follow `ids[b, 0..=t]`; a target equal to
    /// [`IGNORE_INDEX`] is skipped (Hugging Face's `-100`).
    ///
    /// # Shapes
    /// `ids: (B, T)`, `targets: (B, T)` → scalar.
    ///
    /// # Errors
    /// As [`Gpt::forward`]; [`Error::Shape`] when `targets` is not shaped like `ids`;
    /// [`Error::Label`] naming a target `≥ V` (other than [`IGNORE_INDEX`]).
    pub fn forward_loss(
        &mut self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
    ) -> Result<f32> {
        self.loss_with_mode(ids, targets, Mode::Train)
    }

    /// The mean next-token cross-entropy without dropout or a backward (validation loss).
    ///
    /// # Errors
    /// As [`Gpt::forward_loss`].
    pub fn loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        self.loss_with_mode(ids, targets, Mode::Eval)
    }

    fn loss_with_mode(
        &mut self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
        mode: Mode,
    ) -> Result<f32> {
        if targets.dim() != ids.dim() {
            return Err(Error::shape(
                "Gpt loss targets",
                format!("targets shaped like the ids {:?}", ids.shape()),
                targets.shape(),
            ));
        }
        let v = self.config.vocab_size;
        if let Some(((b, t), &id)) = targets
            .indexed_iter()
            .find(|&(_, &id)| id != IGNORE_INDEX && id >= v)
        {
            return Err(Error::label(
                "Gpt loss targets",
                format!("target {id} at (b={b}, t={t}) is out of range for a vocabulary of {v}"),
            ));
        }
        self.cache.ready = false;
        let h = self.hidden(ids, mode)?;
        let (b, t) = ids.dim();
        let mut dlogits = std::mem::take(&mut self.cache.dlogits);
        if dlogits.dim() != (b * t, v) {
            dlogits = Array2::zeros((b * t, v));
        }
        self.lm_head(h.view(), dlogits.view_mut());
        let targets: Vec<usize> = targets.iter().copied().collect();
        let (loss, _) = lm_cross_entropy_in_place(dlogits.view_mut(), &targets);
        self.cache.dlogits = dlogits;
        self.cache.h = h;
        self.cache.ready = mode == Mode::Train;
        Ok(loss)
    }

    /// Back-propagates the loss of the last [`Gpt::forward_loss`]: **accumulates** every
    /// parameter gradient (call [`Gpt::zero_grad`] between steps).
    ///
    /// ```text
    /// logits = h·wteᵀ          ⇒ dh = dlogits·wte,  dwte += dlogitsᵀ·h
    /// h = ln_f(x_L), x_{i+1} = block_i(x_i)  ⇒ each module's backward, last block first
    /// x_0 = wte[ids] + wpe[t]  ⇒ dwte[ids] += dx_0 (scatter-add), dwpe[t] += Σ_b dx_0[b, t]
    /// ```
    ///
    /// # Errors
    /// [`Error::State`] without a preceding [`Gpt::forward_loss`] (or after another forward).
    pub fn backward(&mut self) -> Result<()> {
        if !self.cache.ready {
            return Err(Error::State(
                "Gpt::backward needs a preceding forward_loss (a training forward)".into(),
            ));
        }
        self.cache.ready = false;
        let (b, t) = self.cache.bt;
        let c = self.config.n_embd;
        let wte = self
            .wte
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("[V, C]");
        let mut dh: Array2<f32> = crate::buffers::for_overwrite((b * t, c));
        // dh = dlogits·wte
        matmul_into(self.cache.dlogits.view(), wte, dh.view_mut(), false);
        // dwte += dlogitsᵀ·h   (the tied head's share)
        let dwte = self
            .wte
            .grad
            .view_mut()
            .into_dimensionality::<Ix2>()
            .expect("[V, C]");
        matmul_tn_into(self.cache.dlogits.view(), self.cache.h.view(), dwte, true);
        let dh = dh
            .into_shape_with_order(IxDyn(&[b, t, c]))
            .expect("contiguous");
        let mut dx = self.ln_f.backward(&dh)?;
        crate::buffers::recycle(dh);
        for block in self.blocks.iter_mut().rev() {
            let d = block.backward(&dx)?;
            crate::buffers::recycle(std::mem::replace(&mut dx, d));
        }
        if self.drop.p() > 0.0 {
            dx = self.drop.backward(&dx)?;
        }
        let dx = dx.as_standard_layout();
        for p in [&mut self.wte, &mut self.wpe] {
            if !p.grad.is_standard_layout() {
                p.grad = p.grad.as_standard_layout().into_owned();
            }
        }
        token_position_backward(
            &self.cache.ids,
            t,
            dx.as_slice().expect("standard layout"),
            c,
            self.wte.grad.as_slice_mut().expect("contiguous"),
            self.wpe.grad.as_slice_mut().expect("contiguous"),
        );
        Ok(())
    }

    /// The parameters with their Hugging Face names (without the `transformer.` prefix), in
    /// state-dict order: `wte.weight`, `wpe.weight`, `h.0.ln_1.weight`, …, `ln_f.bias`.
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = vec![
            ("wte.weight".to_string(), &self.wte),
            ("wpe.weight".to_string(), &self.wpe),
        ];
        for (i, block) in self.blocks.iter().enumerate() {
            v.extend(super::prefixed(&format!("h.{i}."), block.params()));
        }
        v.extend(super::prefixed("ln_f.", self.ln_f.params()));
        v
    }

    /// The parameters, mutably, in the order of [`Gpt::params`] (what an optimizer steps).
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.shapes_checked.clear();
        let mut v = vec![
            ("wte.weight".to_string(), &mut self.wte),
            ("wpe.weight".to_string(), &mut self.wpe),
        ];
        for (i, block) in self.blocks.iter_mut().enumerate() {
            v.extend(super::prefixed(&format!("h.{i}."), block.params_mut()));
        }
        v.extend(super::prefixed("ln_f.", self.ln_f.params_mut()));
        v
    }

    /// Keys the dropout of the next training forward by the global training `step` and the
    /// global index of its first row (see [`crate::layers::Layer::seek_examples`]): what
    /// micro-batched and data-parallel training call before each micro-batch.
    pub fn seek_examples(&mut self, step: u64, first_row: usize) {
        self.drop.seek_examples(step, first_row);
        for b in &mut self.blocks {
            b.seek_examples(step, first_row);
        }
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params_mut() {
            p.zero_grad();
        }
    }

    /// The number of parameters (the tied head counted once).
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|(_, p)| p.numel()).sum()
    }
}

/// Checks ids `(B, T)` for a model of config `cfg`: `1 ≤ T ≤ block_size` and every id `< V`;
/// `who` names the model and call in the errors.
pub(crate) fn check_token_ids(cfg: &GptConfig, who: &str, ids: ArrayView2<usize>) -> Result<()> {
    let (b, t) = ids.dim();
    if b == 0 || t == 0 {
        return Err(Error::shape(
            who,
            "token ids (B, T) with B ≥ 1 and T ≥ 1",
            &[b, t],
        ));
    }
    if t > cfg.block_size {
        return Err(Error::shape(
            who,
            format!(
                "a sequence length T ≤ block_size = {} (crop the context to the last {} \
                 tokens)",
                cfg.block_size, cfg.block_size
            ),
            &[b, t],
        ));
    }
    if let Some(((bb, tt), &id)) = ids.indexed_iter().find(|&(_, &id)| id >= cfg.vocab_size) {
        return Err(Error::label(
            who,
            format!(
                "token id {id} at position (b={bb}, t={tt}) is out of range for a vocabulary \
                 of {} (ids must be < {})",
                cfg.vocab_size, cfg.vocab_size
            ),
        ));
    }
    Ok(())
}
