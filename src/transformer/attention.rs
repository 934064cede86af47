//! [`CausalSelfAttention`]: GPT-2's multi-head causal self-attention module.

use super::{check_btc, ensure_shape, prefixed, residual_init_std, Conv1D, INIT_STD};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::layers::Mode;
use crate::ops::attention::{attention_backward, attention_forward, AttnDropout, Heads};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{Array2, Array3, Array4, ArrayView3, ArrayView4, Ix2};

/// Mixed into the seeds of step-keyed attention dropout, so they never equal a plain forward's.
const SEEK_TAG: u64 = 0x5EED_0F57_E9B0_0000;
/// Multi-head causal self-attention (Hugging Face `GPT2Attention`, eager, no dropout):
///
/// ```text
/// qkv = x·c_attn.weight + c_attn.bias          (B, T, 3C)  → q, k, v, each split into NH heads
/// att = softmax(q·kᵀ/√HS + causal mask)        (B, NH, T, T)
/// y   = att·v, heads merged                    (B, T, C)
/// out = y·c_proj.weight + c_proj.bias          (B, T, C)
/// ```
///
/// Parameters (Hugging Face names, `Conv1D` layout `[in, out]`): `c_attn.weight` `[C, 3C]`,
/// `c_attn.bias` `[3C]`, `c_proj.weight` `[C, C]`, `c_proj.bias` `[C]`.
///
/// The module owns its activation buffers (`x`, `qkv`, `att`, `y`, `dqkv`), reused while
/// `(B, T)` stays the same; `att` is the only `(B, NH, T, T)` tensor, computed once per forward.
///
/// # Shapes
/// `x: (B, T, C) → (B, T, C)`, `C = NH·HS`.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention {
    n_embd: usize,
    n_head: usize,
    pub(super) c_attn: Conv1D,
    pub(super) c_proj: Conv1D,
    /// Attention-probability dropout `p` (0: off).
    attn_pdrop: f32,
    /// Seed of the dropout masks; each training forward uses `hash(seed, calls)`.
    drop_seed: u64,
    /// Training forwards run so far (the dropout stream position).
    drop_calls: u64,
    /// `(step, first_row)` for the next training forward (see [`CausalSelfAttention::seek_examples`]).
    seek: Option<(u64, usize)>,
    cache: Cache,
}

/// Buffers of the last forward (and the backward's `dqkv`), reused across calls.
#[derive(Debug, Clone)]
struct Cache {
    /// The input, as rows. Shapes: `(B·T, C)` (kept only by a training forward).
    x: Array2<f32>,
    /// `x·c_attn.weight + c_attn.bias`. Shapes: `(B, T, 3C)`.
    qkv: Array3<f32>,
    /// Attention probabilities, 0 above the diagonal. Shapes: `(B, NH, T, T)`.
    att: Array4<f32>,
    /// Merged head outputs (the input of `c_proj`). Shapes: `(B, T, C)`.
    y: Array3<f32>,
    /// Backward scratch: `dL/dy`. Shapes: `(B, T, C)`.
    dy: Array3<f32>,
    /// Backward scratch: `dL/dqkv`. Shapes: `(B, T, 3C)`.
    dqkv: Array3<f32>,
    /// The mode of the last forward (`None` before any).
    mode: Option<Mode>,
    /// The dropout of the last training forward.
    dropout: Option<AttnDropout>,
}

impl Cache {
    fn new() -> Self {
        Cache {
            x: Array2::zeros((0, 0)),
            qkv: Array3::zeros((0, 0, 0)),
            att: Array4::zeros((0, 0, 0, 0)),
            y: Array3::zeros((0, 0, 0)),
            dy: Array3::zeros((0, 0, 0)),
            dqkv: Array3::zeros((0, 0, 0)),
            mode: None,
            dropout: None,
        }
    }
}

/// Checks `n_embd`, `n_head` (and `n_layer` when given).
fn validate(n_embd: usize, n_head: usize) -> Result<()> {
    if n_head == 0 {
        return Err(Error::config(
            "CausalSelfAttention",
            "n_head",
            0,
            "at least 1",
        ));
    }
    if n_embd == 0 || !n_embd.is_multiple_of(n_head) {
        return Err(Error::config(
            "CausalSelfAttention",
            "n_embd",
            n_embd,
            format!(
                "a positive multiple of n_head = {n_head} (n_embd % n_head = {})",
                n_embd % n_head
            ),
        ));
    }
    Ok(())
}

impl CausalSelfAttention {
    /// A freshly initialised module for a model of `n_layer` blocks: `c_attn.weight`
    /// `N(0, 0.02)`, `c_proj.weight` `N(0, 0.02/√(2·n_layer))`, biases 0 (nanoGPT).
    ///
    /// # Errors
    /// [`Error::Config`] when `n_embd % n_head != 0` (the message names both), or a size is 0.
    pub fn new(n_embd: usize, n_head: usize, n_layer: usize, rng: &mut Rng) -> Result<Self> {
        validate(n_embd, n_head)?;
        if n_layer == 0 {
            return Err(Error::config(
                "CausalSelfAttention",
                "n_layer",
                0,
                "at least 1",
            ));
        }
        let c_attn = Conv1D::new(n_embd, 3 * n_embd, INIT_STD, rng)?;
        let c_proj = Conv1D::new(n_embd, n_embd, residual_init_std(n_layer), rng)?;
        Ok(Self::assemble(n_embd, n_head, c_attn, c_proj))
    }

    /// A module from Hugging Face tensors (`[in, out]` layout); `C` is read from `c_proj_weight`.
    ///
    /// # Shapes
    /// `c_attn_weight: (C, 3C)`, `c_attn_bias: (3C)`, `c_proj_weight: (C, C)`, `c_proj_bias: (C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when a tensor does not fit, [`Error::Config`] when `C % n_head != 0`.
    pub fn from_weights(
        n_head: usize,
        c_attn_weight: Tensor,
        c_attn_bias: Tensor,
        c_proj_weight: Tensor,
        c_proj_bias: Tensor,
    ) -> Result<Self> {
        let c_proj = Conv1D::from_weights("c_proj", c_proj_weight, c_proj_bias)?;
        let c = c_proj.n_in();
        if c_proj.n_out() != c {
            return Err(Error::shape(
                "CausalSelfAttention c_proj.weight",
                "a square [C, C] weight",
                c_proj.weight().shape(),
            ));
        }
        validate(c, n_head)?;
        let c_attn = Conv1D::from_weights("c_attn", c_attn_weight, c_attn_bias)?;
        if c_attn.weight().shape() != [c, 3 * c] {
            return Err(Error::shape(
                "CausalSelfAttention c_attn.weight",
                format!("[C, 3C] = [{c}, {}] (C from c_proj.weight)", 3 * c),
                c_attn.weight().shape(),
            ));
        }
        Ok(Self::assemble(c, n_head, c_attn, c_proj))
    }

    fn assemble(n_embd: usize, n_head: usize, c_attn: Conv1D, c_proj: Conv1D) -> Self {
        CausalSelfAttention {
            n_embd,
            n_head,
            c_attn,
            c_proj,
            attn_pdrop: 0.0,
            drop_seed: 0,
            drop_calls: 0,
            seek: None,
            cache: Cache::new(),
        }
    }

    /// Sets dropout on the attention probabilities (nanoGPT's `attn_dropout`, default 0): in a
    /// training forward each probability is zeroed with probability `p` and the others scaled
    /// by `1/(1 − p)`; the masks follow from `seed` and the number of training forwards.
    ///
    /// # Errors
    /// [`Error::Config`] when `p` is not in `[0, 1)`.
    pub fn with_attn_dropout(mut self, p: f32, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::config(
                "CausalSelfAttention",
                "attn_pdrop",
                p,
                "in [0, 1)",
            ));
        }
        self.attn_pdrop = p;
        self.drop_seed = seed;
        self.drop_calls = 0;
        Ok(self)
    }

    /// The attention-probability dropout `p`.
    pub fn attn_pdrop(&self) -> f32 {
        self.attn_pdrop
    }

    /// Keys the attention dropout of the next training forward by the global training `step`
    /// and the global index of its first row, as [`crate::layers::Layer::seek_examples`] does
    /// for dropout layers (the mask of `(row, head, i, j)` then depends on neither the
    /// micro-batch nor the rank).
    pub fn seek_examples(&mut self, step: u64, first_row: usize) {
        self.seek = Some((step, first_row));
    }

    /// The dropout stream position `(seed, training forwards so far)` (checkpoints).
    pub fn dropout_state(&self) -> (u64, u64) {
        (self.drop_seed, self.drop_calls)
    }

    /// Restores a position from [`CausalSelfAttention::dropout_state`].
    pub fn set_dropout_state(&mut self, state: (u64, u64)) {
        (self.drop_seed, self.drop_calls) = state;
    }

    /// The embedding width `C`.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// The number of heads `NH`.
    pub fn n_head(&self) -> usize {
        self.n_head
    }

    fn name(&self) -> String {
        format!(
            "CausalSelfAttention(n_embd={}, n_head={})",
            self.n_embd, self.n_head
        )
    }

    /// Runs the module; with `Mode::Train` it keeps what [`CausalSelfAttention::backward`] needs.
    ///
    /// # Shapes
    /// `x: (B, T, C) → (B, T, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, C)`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let train = mode == Mode::Train;
        let (b, t) = check_btc(x, self.n_embd, &self.name())?;
        let (c, nh) = (self.n_embd, self.n_head);
        let rows = b * t;
        let x = x.as_standard_layout();
        let x2 = x
            .view()
            .into_shape_with_order((rows, c))
            .expect("standard layout");
        let cache = &mut self.cache;
        ensure_shape(&mut cache.qkv, ndarray::Dim([b, t, 3 * c]));
        ensure_shape(&mut cache.att, ndarray::Dim([b, nh, t, t]));
        ensure_shape(&mut cache.y, ndarray::Dim([b, t, c]));
        // qkv = x·W_attn + b_attn   (B·T, 3C)
        let qkv2 = cache
            .qkv
            .view_mut()
            .into_shape_with_order((rows, 3 * c))
            .expect("contiguous buffer");
        self.c_attn.forward(x2, qkv2)?;
        // att = softmax(q·kᵀ/√HS + mask), y = att·v   (B, NH, T, T), (B, T, C)
        let seek = self.seek.take();
        let dropout = (train && self.attn_pdrop > 0.0).then(|| match seek {
            // keyed by (step, global row): the stream position is left alone
            Some((step, first_row)) => AttnDropout {
                p: self.attn_pdrop,
                seed: splitmix64(self.drop_seed ^ splitmix64(step) ^ SEEK_TAG),
                first_row,
            },
            None => {
                self.drop_calls += 1;
                AttnDropout {
                    p: self.attn_pdrop,
                    seed: splitmix64(self.drop_seed ^ splitmix64(self.drop_calls)),
                    first_row: 0,
                }
            }
        });
        cache.dropout = dropout;
        attention_forward(
            cache.qkv.view(),
            Heads::mha(nh),
            cache.att.view_mut(),
            cache.y.view_mut(),
            dropout,
        );
        // out = y·W_proj + b_proj
        let mut out: Array2<f32> = crate::buffers::for_overwrite((rows, c));
        let y2 = cache
            .y
            .view()
            .into_shape_with_order((rows, c))
            .expect("contiguous buffer");
        self.c_proj.forward(y2, out.view_mut())?;
        if train {
            ensure_shape(&mut cache.x, ndarray::Dim([rows, c]));
            crate::ops::par::assign(cache.x.view_mut(), x2);
        }
        cache.mode = Some(if train { Mode::Train } else { Mode::Eval });
        Ok(out
            .into_shape_with_order((b, t, c))
            .expect("contiguous")
            .into_dyn())
    }

    /// Back-propagates `dout` through the last training forward: accumulates the four parameter
    /// gradients and returns `dL/dx`.
    ///
    /// ```text
    /// forward: out = y·W_proj + b_proj   ⇒ dy from Conv1D::backward
    /// forward: y = attention(qkv)        ⇒ dqkv from ops::attention::attention_backward
    /// forward: qkv = x·W_attn + b_attn   ⇒ dx from Conv1D::backward
    /// ```
    ///
    /// # Shapes
    /// `dout: (B, T, C) → dx: (B, T, C)`.
    ///
    /// # Errors
    /// [`Error::State`] without a preceding `Mode::Train` forward, [`Error::Shape`] when `dout`
    /// is not shaped like the last output.
    pub fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let name = self.name();
        if self.cache.mode != Some(Mode::Train) {
            return Err(crate::layers::no_cache(&name));
        }
        let (b, t, c) = self.cache.y.dim();
        if dout.shape() != [b, t, c] {
            return Err(Error::shape(
                format!("{name} backward"),
                format!("dout shaped like the last output [{b}, {t}, {c}]"),
                dout.shape(),
            ));
        }
        let rows = b * t;
        let heads = Heads::mha(self.n_head());
        let cache = &mut self.cache;
        let d = dout.as_standard_layout();
        let d2 = d
            .view()
            .into_dimensionality::<ndarray::Ix3>()
            .expect("rank 3")
            .into_shape_with_order((rows, c))
            .expect("standard layout");
        let y2 = cache
            .y
            .view()
            .into_shape_with_order((rows, c))
            .expect("contiguous buffer");
        ensure_shape(&mut cache.dy, ndarray::Dim([b, t, c]));
        ensure_shape(&mut cache.dqkv, ndarray::Dim([b, t, 3 * c]));
        // dy = dout·W_projᵀ (overwritten), dW_proj += yᵀ·dout
        self.c_proj.backward(
            y2,
            d2,
            cache
                .dy
                .view_mut()
                .into_shape_with_order((rows, c))
                .expect("contiguous buffer"),
        )?;
        // dqkv from dy through the attention kernel
        attention_backward(
            cache.dy.view(),
            cache.qkv.view(),
            heads,
            cache.att.view(),
            cache.dqkv.view_mut(),
            cache.dropout,
        );
        let mut dx: Array2<f32> = crate::buffers::for_overwrite((rows, c));
        let dqkv2 = cache
            .dqkv
            .view()
            .into_shape_with_order((rows, 3 * c))
            .expect("contiguous buffer");
        self.c_attn.backward(
            cache.x.view().into_dimensionality::<Ix2>().expect("rows"),
            dqkv2,
            dx.view_mut(),
        )?;
        Ok(dx
            .into_shape_with_order((b, t, c))
            .expect("contiguous")
            .into_dyn())
    }

    /// The attention probabilities of the last forward (0 above the diagonal).
    ///
    /// # Shapes
    /// `(B, NH, T, T)`.
    pub fn att(&self) -> Option<ArrayView4<'_, f32>> {
        self.cache.mode.map(|_| self.cache.att.view())
    }

    /// `qkv = x·c_attn.weight + c_attn.bias` of the last forward.
    ///
    /// # Shapes
    /// `(B, T, 3C)`.
    pub fn qkv(&self) -> Option<ArrayView3<'_, f32>> {
        self.cache.mode.map(|_| self.cache.qkv.view())
    }

    /// The merged head outputs `att·v` of the last forward (the input of `c_proj`).
    ///
    /// # Shapes
    /// `(B, T, C)`.
    pub fn y_heads(&self) -> Option<ArrayView3<'_, f32>> {
        self.cache.mode.map(|_| self.cache.y.view())
    }

    /// The parameters with their Hugging Face names: `c_attn.weight`, `c_attn.bias`,
    /// `c_proj.weight`, `c_proj.bias`.
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = prefixed("c_attn.", self.c_attn.params());
        v.extend(prefixed("c_proj.", self.c_proj.params()));
        v
    }

    /// The parameters, mutably, in the order of [`CausalSelfAttention::params`].
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = prefixed("c_attn.", self.c_attn.params_mut());
        v.extend(prefixed("c_proj.", self.c_proj.params_mut()));
        v
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params_mut() {
            p.zero_grad();
        }
    }
}

/// The splitmix64 finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
