//! [`Mlp`]: GPT-2's position-wise feed-forward network.

use super::{check_btc, ensure_shape, prefixed, residual_init_std, Conv1D, INIT_STD};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::layers::Mode;
use crate::ops::activation::{bias_gelu_backward_in_place, bias_gelu_forward_into};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::Array2;

/// The GPT-2 MLP (Hugging Face `GPT2MLP`, no dropout): `c_proj(gelu_new(c_fc(x)))`.
///
/// ```text
/// fc  = x·c_fc.weight + c_fc.bias        (B, T, 4C)
/// act = gelu_tanh(fc)                    (B, T, 4C)
/// out = act·c_proj.weight + c_proj.bias  (B, T, C)
/// ```
///
/// Parameters (Hugging Face names, `Conv1D` layout `[in, out]`): `c_fc.weight` `[C, 4C]`,
/// `c_fc.bias` `[4C]`, `c_proj.weight` `[4C, C]`, `c_proj.bias` `[C]`. The hidden width is `4C`
/// for [`Mlp::new`] and whatever the weights say for [`Mlp::from_weights`].
///
/// # Shapes
/// `x: (B, T, C) → (B, T, C)`.
#[derive(Debug, Clone)]
pub struct Mlp {
    n_embd: usize,
    c_fc: Conv1D,
    c_proj: Conv1D,
    cache: Cache,
}

/// Buffers of the last forward, reused across calls.
#[derive(Debug, Clone, Default)]
struct Cache {
    /// The input as rows (training forwards only). Shapes: `(B·T, C)`.
    x: Array2<f32>,
    /// `x·W_fc`, the `c_fc` product before its bias (the GELU input is `fc + b_fc`, formed in
    /// the GELU's own passes, so the product is written once and not rewritten with the bias).
    /// Shapes: `(B·T, 4C)`.
    fc: Array2<f32>,
    /// `gelu(fc)`, the `c_proj` input. Shapes: `(B·T, 4C)`.
    act: Array2<f32>,
    /// Backward scratch `dL/dact`, overwritten in place with `dL/dfc`. Shapes: `(B·T, 4C)`.
    dact: Array2<f32>,
    /// The `(B, T)` and mode of the last forward.
    last: Option<((usize, usize), Mode)>,
}

impl Mlp {
    /// A freshly initialised MLP `C → 4C → C` for a model of `n_layer` blocks: `c_fc.weight`
    /// `N(0, 0.02)`, `c_proj.weight` `N(0, 0.02/√(2·n_layer))`, biases 0 (nanoGPT).
    ///
    /// # Errors
    /// [`Error::Config`] when `n_embd` or `n_layer` is 0.
    pub fn new(n_embd: usize, n_layer: usize, rng: &mut Rng) -> Result<Self> {
        if n_embd == 0 {
            return Err(Error::config("Mlp", "n_embd", 0, "at least 1"));
        }
        if n_layer == 0 {
            return Err(Error::config("Mlp", "n_layer", 0, "at least 1"));
        }
        let c_fc = Conv1D::new(n_embd, 4 * n_embd, INIT_STD, rng)?;
        let c_proj = Conv1D::new(4 * n_embd, n_embd, residual_init_std(n_layer), rng)?;
        Ok(Self::assemble(c_fc, c_proj))
    }

    /// An MLP from Hugging Face tensors (`[in, out]` layout).
    ///
    /// # Shapes
    /// `c_fc_weight: (C, H)`, `c_fc_bias: (H)`, `c_proj_weight: (H, C)`, `c_proj_bias: (C)`
    /// (`H = 4C` in GPT-2).
    ///
    /// # Errors
    /// [`Error::Shape`] when the tensors do not chain `C → H → C`.
    pub fn from_weights(
        c_fc_weight: Tensor,
        c_fc_bias: Tensor,
        c_proj_weight: Tensor,
        c_proj_bias: Tensor,
    ) -> Result<Self> {
        let c_fc = Conv1D::from_weights("c_fc", c_fc_weight, c_fc_bias)?;
        let c_proj = Conv1D::from_weights("c_proj", c_proj_weight, c_proj_bias)?;
        let (c, h) = (c_fc.n_in(), c_fc.n_out());
        if c == 0 || c_proj.weight().shape() != [h, c] {
            return Err(Error::shape(
                "Mlp c_proj.weight",
                format!("[H, C] = [{h}, {c}] to match c_fc.weight [{c}, {h}]"),
                c_proj.weight().shape(),
            ));
        }
        Ok(Self::assemble(c_fc, c_proj))
    }

    fn assemble(c_fc: Conv1D, c_proj: Conv1D) -> Self {
        Mlp {
            n_embd: c_fc.n_in(),
            c_fc,
            c_proj,
            cache: Cache {
                x: Array2::zeros((0, 0)),
                fc: Array2::zeros((0, 0)),
                act: Array2::zeros((0, 0)),
                dact: Array2::zeros((0, 0)),
                last: None,
            },
        }
    }

    /// The input and output width `C`.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// `c_fc` (`[C, H]`).
    pub(crate) fn c_fc(&self) -> &Conv1D {
        &self.c_fc
    }

    /// `c_proj` (`[H, C]`).
    pub(crate) fn c_proj(&self) -> &Conv1D {
        &self.c_proj
    }

    /// The hidden width `H` (`4C` in GPT-2).
    pub fn n_inner(&self) -> usize {
        self.c_fc.n_out()
    }

    fn name(&self) -> String {
        format!("Mlp(n_embd={}, n_inner={})", self.n_embd, self.n_inner())
    }

    /// Runs the MLP; with `Mode::Train` it keeps what [`Mlp::backward`] needs.
    ///
    /// # Shapes
    /// `x: (B, T, C) → (B, T, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, C)`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let train = mode == Mode::Train;
        let (b, t) = check_btc(x, self.n_embd, &self.name())?;
        let (c, rows) = (self.n_embd, b * t);
        let x = x.as_standard_layout();
        let x2 = x
            .view()
            .into_shape_with_order((rows, c))
            .expect("standard layout");
        let mut cache = std::mem::take(&mut self.cache);
        let out = self.run(x2, &mut cache.fc, &mut cache.act);
        self.cache = cache;
        let out = out?;
        let cache = &mut self.cache;
        if train {
            ensure_shape(&mut cache.x, ndarray::Dim([rows, c]));
            crate::ops::par::assign(cache.x.view_mut(), x2);
        }
        cache.last = Some(((b, t), if train { Mode::Train } else { Mode::Eval }));
        Ok(out
            .into_shape_with_order((b, t, c))
            .expect("contiguous")
            .into_dyn())
    }

    /// Inference through `&self` (nothing kept for a backward), the same arithmetic as
    /// `forward`.
    ///
    /// # Shapes
    /// `x: (B, T, C) → (B, T, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `(B, T, C)`.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = check_btc(x, self.n_embd, &self.name())?;
        let (c, rows) = (self.n_embd, b * t);
        let x = x.as_standard_layout();
        let x2 = x
            .view()
            .into_shape_with_order((rows, c))
            .expect("standard layout");
        let (mut fc, mut act) = (Array2::zeros((0, 0)), Array2::zeros((0, 0)));
        Ok(self
            .run(x2, &mut fc, &mut act)?
            .into_shape_with_order((b, t, c))
            .expect("contiguous")
            .into_dyn())
    }

    /// `fc = x·W_fc`, `act = gelu(fc + b_fc)`, returns `act·W_proj + b_proj`, with `fc` and
    /// `act` in the caller's buffers (reshaped to `(rows, H)` when needed).
    fn run(
        &self,
        x2: ndarray::ArrayView2<f32>,
        fc: &mut Array2<f32>,
        act: &mut Array2<f32>,
    ) -> Result<Array2<f32>> {
        let (rows, c, h) = (x2.nrows(), self.n_embd, self.n_inner());
        ensure_shape(fc, ndarray::Dim([rows, h]));
        ensure_shape(act, ndarray::Dim([rows, h]));
        // fc = x·W_fc, then act = gelu(fc + b_fc) in one pass
        self.c_fc.forward_product(x2, fc.view_mut())?;
        let b = self.c_fc.bias_row()?;
        let b = b.as_standard_layout();
        bias_gelu_forward_into(
            fc.as_slice().expect("contiguous buffer"),
            b.as_slice().expect("standard layout"),
            act.as_slice_mut().expect("contiguous buffer"),
        );
        // out = act·W_proj + b_proj
        let mut out: Array2<f32> = crate::buffers::for_overwrite((rows, c));
        self.c_proj.forward(act.view(), out.view_mut())?;
        Ok(out)
    }

    /// Back-propagates `dout` through the last training forward: accumulates the parameter
    /// gradients and returns `dL/dx`.
    ///
    /// ```text
    /// forward: out = act·W_proj + b_proj  ⇒ dact = dout·W_projᵀ, dW_proj += actᵀ·dout
    /// forward: act = gelu(fc)             ⇒ dfc = dact·gelu'(fc)
    /// forward: fc = x·W_fc + b_fc         ⇒ dx = dfc·W_fcᵀ, dW_fc += xᵀ·dfc
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
        let (b, t) = match self.cache.last {
            Some((bt, Mode::Train)) => bt,
            _ => return Err(crate::layers::no_cache(&name)),
        };
        let (c, h, rows) = (self.n_embd, self.n_inner(), b * t);
        if dout.shape() != [b, t, c] {
            return Err(Error::shape(
                format!("{name} backward"),
                format!("dout shaped like the last output [{b}, {t}, {c}]"),
                dout.shape(),
            ));
        }
        let d = dout.as_standard_layout();
        let d2 = d
            .view()
            .into_shape_with_order((rows, c))
            .expect("standard layout");
        let cache = &mut self.cache;
        ensure_shape(&mut cache.dact, ndarray::Dim([rows, h]));
        // dact = dout·W_projᵀ (overwritten), dW_proj += actᵀ·dout
        self.c_proj
            .backward(cache.act.view(), d2, cache.dact.view_mut())?;
        // dfc = dact·gelu'(fc + b_fc) in place of dact, and db_fc += Σ_rows dfc in the same pass
        let mut db = vec![0.0f32; h];
        let bias = self.c_fc.bias_row()?;
        let bias = bias.as_standard_layout();
        bias_gelu_backward_in_place(
            cache.fc.as_slice().expect("contiguous buffer"),
            bias.as_slice().expect("standard layout"),
            cache.dact.as_slice_mut().expect("contiguous buffer"),
            &mut db,
        );
        let mut bias_grad = self.c_fc.bias_grad_mut()?;
        bias_grad += &ndarray::ArrayView1::from(&db);
        // dx = dfc·W_fcᵀ, dW_fc += xᵀ·dfc (shapes fixed by the forward)
        let mut dx: Array2<f32> = crate::buffers::for_overwrite((rows, c));
        self.c_fc
            .backward_product(cache.x.view(), cache.dact.view(), dx.view_mut());
        Ok(dx
            .into_shape_with_order((b, t, c))
            .expect("contiguous")
            .into_dyn())
    }

    /// The parameters with their Hugging Face names: `c_fc.weight`, `c_fc.bias`,
    /// `c_proj.weight`, `c_proj.bias`.
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = prefixed("c_fc.", self.c_fc.params());
        v.extend(prefixed("c_proj.", self.c_proj.params()));
        v
    }

    /// The parameters, mutably, in the order of [`Mlp::params`].
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = prefixed("c_fc.", self.c_fc.params_mut());
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
