//! GPT-2 building blocks: [`CausalSelfAttention`], [`Mlp`] and the pre-LN [`Block`], each with a
//! hand-written backward pass, plus the [`Conv1D`] projection they share.
//!
//! Parameter names and layouts are exactly Hugging Face GPT-2's (`c_attn.weight` is `[C, 3C]`,
//! `[in, out]`, `y = x·W + b`), so a checkpoint maps one to one. Initialisation follows nanoGPT:
//! weights `N(0, 0.02)`, biases 0, LayerNorm weight 1 and bias 0, and the residual projections
//! (`attn.c_proj.weight`, `mlp.c_proj.weight`) `N(0, 0.02/√(2·n_layer))`.
//!
//! Every module has `forward(x, mode)` and `backward(dout)`: a `Mode::Train` forward keeps what
//! the backward needs in buffers owned by the module (reused while the shape stays the same);
//! `backward` accumulates (`+=`) into each [`Param::grad`] and returns `dL/dx`.

mod attention;
mod block;
mod checkpoint;
mod config;
mod decode;
mod gpt;
mod kv_cache;
pub mod llama;
mod mlp;
mod pretrained;
mod quantized;
mod train;
mod train_distributed;

pub use crate::ops::cross_entropy::IGNORE_INDEX;
pub use attention::CausalSelfAttention;
pub use block::Block;
pub use config::GptConfig;
pub use decode::{CachedLm, GptDecoder, LmDecoder};
pub use gpt::Gpt;
pub use kv_cache::KvCache;
pub use llama::{Llama, LlamaConfig};
pub use mlp::Mlp;
pub use quantized::QuantGpt;
pub use train::{LmBatches, LmHistory, LmTrainOptions, LmTrainer, TrainableLm};

use crate::error::{Error, Result};
use crate::init::{normal, Rng};
use crate::ops::matmul::{matmul_into, matmul_nt_into, matmul_tn_into};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{ArrayView2, ArrayViewMut2, Ix1, Ix2, IxDyn};

/// The standard deviation of nanoGPT's weight initialisation.
pub const INIT_STD: f32 = 0.02;

/// The init std of a residual projection (`c_proj`) in a model of `n_layer` blocks:
/// `0.02/√(2·n_layer)`.
pub fn residual_init_std(n_layer: usize) -> f32 {
    INIT_STD / ((2 * n_layer.max(1)) as f32).sqrt()
}

/// Hugging Face's `Conv1D`: an affine map `y = x·W + b` with the weight stored `[in, out]`.
///
/// Stateless apart from its parameters `weight` and `bias`: the caller keeps the input for the
/// backward (the modules above own one cache each, so no activation is stored twice).
///
/// # Shapes
/// `x: (rows, in) → (rows, out)`; `weight: (in, out)`, `bias: (out)`.
#[derive(Debug, Clone)]
pub struct Conv1D {
    weight: Param,
    bias: Param,
}

impl Conv1D {
    /// A projection `n_in → n_out` with weight `N(0, std²)` and a zero bias.
    ///
    /// # Errors
    /// [`Error::Config`] when `std` is not finite and ≥ 0.
    pub fn new(n_in: usize, n_out: usize, std: f32, rng: &mut Rng) -> Result<Self> {
        Ok(Conv1D {
            weight: Param::new(normal(&[n_in, n_out], std, rng)?),
            bias: Param::new(Tensor::zeros(IxDyn(&[n_out]))),
        })
    }

    /// A projection from existing tensors; `what` names it in errors (e.g. `"attn.c_attn"`).
    ///
    /// # Shapes
    /// `weight: (in, out)`, `bias: (out)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight is not rank 2 or the bias length is not `out`.
    pub fn from_weights(what: &str, weight: Tensor, bias: Tensor) -> Result<Self> {
        if weight.ndim() != 2 {
            return Err(Error::shape(
                format!("{what}.weight"),
                "a rank-2 [in, out] Conv1D weight",
                weight.shape(),
            ));
        }
        let out = weight.shape()[1];
        if bias.shape() != [out] {
            return Err(Error::shape(
                format!("{what}.bias"),
                format!(
                    "a bias of shape [{out}] to match weight {:?}",
                    weight.shape()
                ),
                bias.shape(),
            ));
        }
        Ok(Conv1D {
            weight: Param::new(weight.as_standard_layout().into_owned()),
            bias: Param::new(bias.as_standard_layout().into_owned()),
        })
    }

    /// The input width.
    pub fn n_in(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The output width.
    pub fn n_out(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `weight` `[in, out]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    /// `bias` `[out]`.
    pub fn bias(&self) -> &Param {
        &self.bias
    }

    fn w(&self) -> ArrayView2<'_, f32> {
        self.weight
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("Conv1D weight is [in, out]")
    }

    fn check(&self, op: &str, x: &ArrayView2<f32>, width: usize, y: (usize, usize)) -> Result<()> {
        let rows = x.nrows();
        if x.ncols() != width || y.0 != rows {
            return Err(Error::shape(
                format!("Conv1D(in={}, out={}) {op}", self.n_in(), self.n_out()),
                format!("({rows}, {width}) rows matching an output of {y:?}"),
                x.shape(),
            ));
        }
        Ok(())
    }

    /// The shape check of both forward forms: `x: (rows, in)`, `out: (rows, out)`.
    fn check_forward(&self, x: &ArrayView2<f32>, out: &ArrayViewMut2<f32>) -> Result<()> {
        self.check("forward", x, self.n_in(), out.dim())?;
        if out.ncols() != self.n_out() {
            return Err(Error::shape(
                "Conv1D forward",
                format!("an output with {} columns", self.n_out()),
                out.shape(),
            ));
        }
        Ok(())
    }

    /// `out = x·W + b`, written into `out`.
    ///
    /// # Shapes
    /// `x: (rows, in)`, `out: (rows, out)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the widths or row counts disagree.
    pub fn forward(&self, x: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) -> Result<()> {
        self.check_forward(&x, &out)?;
        let b = self.bias_row()?;
        // out[r, o] = b[o] + Σ_i x[r, i]·W[i, o]
        match (out.as_slice_mut(), b.as_slice()) {
            (Some(o), Some(b)) => crate::ops::par::fill_rows(o, b),
            _ => {
                for mut row in out.rows_mut() {
                    row.assign(&b);
                }
            }
        }
        matmul_into(x, self.w(), out, true);
        Ok(())
    }

    /// `out = x·W` without the bias, for a caller that adds [`Conv1D::bias_row`] in its own next
    /// pass over `out` (the MLP's fused bias + GELU).
    ///
    /// # Shapes
    /// `x: (rows, in)`, `out: (rows, out)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the widths or row counts disagree.
    pub(crate) fn forward_product(
        &self,
        x: ArrayView2<f32>,
        out: ArrayViewMut2<f32>,
    ) -> Result<()> {
        self.check_forward(&x, &out)?;
        matmul_into(x, self.w(), out, false);
        Ok(())
    }

    /// The bias as a row, `(out)`.
    ///
    /// # Errors
    /// [`Error::Param`] when the bias or its gradient was replaced by one of another shape.
    pub(crate) fn bias_row(&self) -> Result<ndarray::ArrayView1<'_, f32>> {
        self.bias.check(&[self.n_out()], || "Conv1D bias".into())?;
        self.bias
            .value
            .view()
            .into_dimensionality::<Ix1>()
            .map_err(|e| Error::param("Conv1D bias", e.to_string()))
    }

    /// Backward of [`Conv1D::forward`]: overwrites `dx`, accumulates the parameter gradients.
    ///
    /// ```text
    /// forward: out[r,o] = b[o] + Σ_i x[r,i]·W[i,o]
    ///   ⇒ dx[r,i]  = Σ_o dout[r,o]·W[i,o]    (dx = dout·Wᵀ)
    ///   ⇒ dW[i,o] += Σ_r x[r,i]·dout[r,o]    (dW += xᵀ·dout)
    ///   ⇒ db[o]   += Σ_r dout[r,o]           (rows in order: thread-count independent)
    /// ```
    ///
    /// # Shapes
    /// `x: (rows, in)` (the forward input), `dout: (rows, out)`, `dx: (rows, in)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes disagree.
    pub fn backward(
        &mut self,
        x: ArrayView2<f32>,
        dout: ArrayView2<f32>,
        dx: ArrayViewMut2<f32>,
    ) -> Result<()> {
        self.check("backward", &x, self.n_in(), dout.dim())?;
        self.check("backward", &dout, self.n_out(), dx.dim())?;
        if dx.ncols() != self.n_in() {
            return Err(Error::shape(
                "Conv1D backward",
                format!("dx with {} columns", self.n_in()),
                dx.shape(),
            ));
        }
        self.backward_product(x, dout, dx);
        crate::ops::linear::add_column_sums(dout, self.bias_grad_mut()?);
        Ok(())
    }

    /// [`Conv1D::backward`] without the bias gradient (`dx = dout·Wᵀ`, `dW += xᵀ·dout`), for a
    /// caller that sums `dout`'s columns into [`Conv1D::bias_grad_mut`] in its own pass; shapes
    /// checked by the caller.
    pub(crate) fn backward_product(
        &mut self,
        x: ArrayView2<f32>,
        dout: ArrayView2<f32>,
        dx: ArrayViewMut2<f32>,
    ) {
        matmul_nt_into(dout, self.w(), dx, false);
        let dw = self
            .weight
            .grad
            .view_mut()
            .into_dimensionality::<Ix2>()
            .expect("[in, out]");
        matmul_tn_into(x, dout, dw, true);
    }

    /// The bias gradient, `(out)`.
    ///
    /// # Errors
    /// [`Error::Param`] when the bias or its gradient was replaced by one of another shape.
    pub(crate) fn bias_grad_mut(&mut self) -> Result<ndarray::ArrayViewMut1<'_, f32>> {
        self.bias.check(&[self.n_out()], || "Conv1D bias".into())?;
        self.bias
            .grad
            .view_mut()
            .into_dimensionality::<Ix1>()
            .map_err(|e| Error::param("Conv1D bias", e.to_string()))
    }

    /// `[("weight", …), ("bias", …)]`.
    pub fn params(&self) -> Vec<(String, &Param)> {
        vec![
            ("weight".to_string(), &self.weight),
            ("bias".to_string(), &self.bias),
        ]
    }

    /// The parameters, mutably, in the order of [`Conv1D::params`].
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![
            ("weight".to_string(), &mut self.weight),
            ("bias".to_string(), &mut self.bias),
        ]
    }
}

/// Checks `x: (B, T, c)` and returns `(B, T)`; `op` names the module in the error.
pub(crate) fn check_btc(x: &Tensor, c: usize, op: &str) -> Result<(usize, usize)> {
    if x.ndim() != 3 || x.shape()[2] != c {
        return Err(Error::shape(op, format!("a (B, T, {c}) input"), x.shape()));
    }
    Ok((x.shape()[0], x.shape()[1]))
}

/// Prefixes each local parameter name with `prefix` (e.g. `"attn."`).
pub(crate) fn prefixed<P>(prefix: &str, params: Vec<(String, P)>) -> Vec<(String, P)> {
    params
        .into_iter()
        .map(|(n, p)| (format!("{prefix}{n}"), p))
        .collect()
}

/// Takes tensor `name` from a loader, or [`Error::Param`] saying it is missing.
pub(crate) fn take(get: &mut impl FnMut(&str) -> Option<Tensor>, name: &str) -> Result<Tensor> {
    get(name).ok_or_else(|| Error::Param {
        name: name.to_string(),
        message: "missing from the given weights".to_string(),
    })
}

/// A reused 2-D or higher buffer: reallocates only when the shape changes.
pub(crate) fn ensure_shape<D: ndarray::Dimension>(buf: &mut ndarray::Array<f32, D>, shape: D) {
    if buf.raw_dim() != shape {
        *buf = ndarray::Array::zeros(shape);
    }
}
