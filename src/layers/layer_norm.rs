//! [`LayerNorm`]: layer normalisation over the last axis (PyTorch `nn.LayerNorm(C)`).

use super::{no_cache, not_built, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::layer_norm::{layer_norm_backward, layer_norm_forward};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::IxDyn;

/// Layer normalisation over the last axis with a learned per-channel scale and shift:
/// `out = (x − mean)/√(var + eps)·weight + bias`, biased variance, statistics per row.
///
/// The normalised size `C` is inferred from the last axis at [`Layer::build`] (or taken from the
/// weights in [`LayerNorm::from_weights`]). Parameters `weight` (init 1) and `bias` (init 0), as
/// PyTorch and GPT-2's `ln_1`, `ln_2`, `ln_f`. `eps` defaults to `1e-5`.
///
/// A [`Mode::Train`] forward caches the input and the per-row `mean` and `rstd` (buffers reused
/// across calls of the same shape); [`LayerNorm::stats`] exposes the last statistics.
///
/// # Shapes
/// `x: (B, …, C) → (B, …, C)`; `mean`, `rstd: (B, …)`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    eps: f32,
    size: Option<usize>,
    weight: Option<Param>,
    bias: Option<Param>,
    cache: Cache,
}

/// What the backward needs, kept in buffers that are reused while the shape stays the same.
#[derive(Debug, Clone, Default)]
struct Cache {
    /// The last input. Shapes: `(B, …, C)`.
    x: Tensor,
    /// Per-row mean and `1/√(var + eps)`. Shapes: `(B, …)`.
    mean: Tensor,
    /// See `mean`.
    rstd: Tensor,
    /// Whether the buffers hold a training forward that backward may use.
    valid: bool,
}

impl Default for LayerNorm {
    fn default() -> Self {
        LayerNorm::new()
    }
}

impl LayerNorm {
    /// A LayerNorm whose size is inferred at build time, with `eps = 1e-5`.
    pub fn new() -> Self {
        LayerNorm {
            eps: 1e-5,
            size: None,
            weight: None,
            bias: None,
            cache: Cache::default(),
        }
    }

    /// Sets `eps` (added to the variance inside the square root); must be finite and ≥ 0.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// A built LayerNorm from existing `weight` and `bias`.
    ///
    /// # Shapes
    /// `weight: (C)`, `bias: (C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when they are not both rank 1 of the same non-zero length.
    pub fn from_weights(weight: Tensor, bias: Tensor) -> Result<Self> {
        let c = weight.len();
        if weight.ndim() != 1 || c == 0 {
            return Err(Error::shape(
                "LayerNorm::from_weights",
                "a rank-1 (C) weight with C >= 1",
                weight.shape(),
            ));
        }
        if bias.shape() != [c] {
            return Err(Error::shape(
                "LayerNorm::from_weights",
                format!("a bias of shape [{c}] to match the weight"),
                bias.shape(),
            ));
        }
        Ok(LayerNorm {
            size: Some(c),
            weight: Some(Param::new(weight.as_standard_layout().into_owned())),
            bias: Some(Param::new(bias.as_standard_layout().into_owned())),
            ..LayerNorm::new()
        })
    }

    /// The configured `eps`.
    pub fn get_eps(&self) -> f32 {
        self.eps
    }

    /// The normalised size `C`, once built.
    pub fn size(&self) -> Option<usize> {
        self.size
    }

    /// Checks that `eps` is finite and ≥ 0.
    ///
    /// # Errors
    /// [`Error::Config`] naming the value otherwise.
    pub fn validate(&self) -> Result<()> {
        if self.eps.is_finite() && self.eps >= 0.0 {
            Ok(())
        } else {
            Err(Error::config(
                "LayerNorm",
                "eps",
                self.eps,
                "a finite value >= 0",
            ))
        }
    }

    /// The per-row `(mean, rstd)` of the last training forward.
    ///
    /// # Shapes
    /// both `(B, …)`: the input shape without its last axis.
    pub fn stats(&self) -> Option<(&Tensor, &Tensor)> {
        self.cache
            .valid
            .then_some((&self.cache.mean, &self.cache.rstd))
    }

    /// Builds the layer for per-sample or batch shapes ending in `C` without a model rng
    /// (LayerNorm's initialisation draws nothing): weight 1, bias 0.
    /// Inference through `&self` (evaluation mode, nothing kept for a backward): the same
    /// normalisation as `forward`, so one model can serve several threads.
    ///
    /// # Shapes
    /// `x: (B, …, C) → (B, …, C)`.
    ///
    /// # Errors
    /// As `forward`: an unbuilt layer, a last axis other than `C`, a replaced parameter of
    /// another shape.
    pub fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let stats = IxDyn(&x.shape()[..x.ndim().max(1) - 1]);
        let (mut mean, mut rstd) = (Tensor::zeros(stats.clone()), Tensor::zeros(stats));
        self.normalize(x, &mut mean, &mut rstd)
    }

    /// `out = (x − mean)·rstd·weight + bias` per row, writing the row statistics into
    /// `mean` / `rstd` (shaped `(B, …)`, the caller's buffers).
    fn normalize(&self, x: &Tensor, mean: &mut Tensor, rstd: &mut Tensor) -> Result<Tensor> {
        self.validate()?;
        let name = self.describe();
        let c = self.size.ok_or_else(|| not_built(&name))?;
        if x.ndim() < 1 || x.shape()[x.ndim() - 1] != c {
            return Err(Error::shape(
                name,
                format!("an input (B, …, {c}) whose last axis is {c}"),
                x.shape(),
            ));
        }
        let (w, b) = match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => (w, b),
            _ => return Err(not_built(&name)),
        };
        w.check(&[c], || format!("{name}.weight"))?;
        b.check(&[c], || format!("{name}.bias"))?;
        let x_std = x.as_standard_layout();
        let (wv, bv) = (w.value.as_standard_layout(), b.value.as_standard_layout());
        let mut out = crate::buffers::for_overwrite(x.raw_dim());
        layer_norm_forward(
            x_std.as_slice().expect("standard layout"),
            wv.as_slice().expect("standard layout"),
            bv.as_slice().expect("standard layout"),
            self.eps,
            out.as_slice_mut().expect("fresh tensor"),
            mean.as_slice_mut().expect("fresh tensor"),
            rstd.as_slice_mut().expect("fresh tensor"),
        );
        Ok(out)
    }

    pub(crate) fn init(&mut self, c: usize) {
        self.size = Some(c);
        self.weight = Some(Param::new(Tensor::ones(IxDyn(&[c]))));
        self.bias = Some(Param::new(Tensor::zeros(IxDyn(&[c]))));
    }
}

impl Layer for LayerNorm {
    fn describe(&self) -> String {
        match self.size {
            Some(c) => format!("LayerNorm({c}, eps={})", self.eps),
            None => format!("LayerNorm(eps={})", self.eps),
        }
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.validate()?;
        let c = match input_shape.last() {
            Some(&c) if c > 0 => c,
            _ => {
                return Err(Error::shape(
                    self.describe(),
                    "a per-sample shape (…, C) with C >= 1",
                    input_shape,
                ))
            }
        };
        match self.size {
            Some(s) if s != c => {
                return Err(Error::shape(
                    self.describe(),
                    format!("per-sample inputs (…, {s})"),
                    input_shape,
                ))
            }
            Some(_) if self.weight.is_some() => {}
            _ => self.init(c),
        }
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let stats_shape = &x.shape()[..x.ndim().max(1) - 1];
        let mut cache = std::mem::take(&mut self.cache);
        if cache.mean.shape() != stats_shape {
            cache.mean = Tensor::zeros(IxDyn(stats_shape));
            cache.rstd = Tensor::zeros(IxDyn(stats_shape));
        }
        let out = self.normalize(x, &mut cache.mean, &mut cache.rstd);
        self.cache = cache;
        let out = out?;
        let cache = &mut self.cache;
        let x_std = x.as_standard_layout();
        cache.valid = mode == Mode::Train;
        if cache.valid {
            if cache.x.shape() == x.shape() {
                crate::ops::par::assign(cache.x.view_mut(), x_std.view());
            } else {
                cache.x = x_std.into_owned();
            }
        }
        Ok(out)
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let name = self.describe();
        if !self.cache.valid {
            return Err(no_cache(&name));
        }
        if dout.shape() != self.cache.x.shape() {
            return Err(Error::shape(
                format!("{name} backward"),
                format!("dout shaped like the last input {:?}", self.cache.x.shape()),
                dout.shape(),
            ));
        }
        let (w, b) = match (&mut self.weight, &mut self.bias) {
            (Some(w), Some(b)) => (w, b),
            _ => return Err(not_built(&name)),
        };
        let c = *self.cache.x.shape().last().unwrap_or(&0);
        w.check(&[c], || format!("{name}.weight"))?;
        b.check(&[c], || format!("{name}.bias"))?;
        let d = dout.as_standard_layout();
        let wv = w.value.as_standard_layout();
        let mut dx = crate::buffers::for_overwrite(dout.raw_dim());
        layer_norm_backward(
            d.as_slice().expect("standard layout"),
            self.cache.x.as_slice().expect("cached input is contiguous"),
            wv.as_slice().expect("standard layout"),
            self.cache.mean.as_slice().expect("contiguous"),
            self.cache.rstd.as_slice().expect("contiguous"),
            dx.as_slice_mut().expect("fresh tensor"),
            w.grad.as_slice_mut().expect("grad is contiguous"),
            b.grad.as_slice_mut().expect("grad is contiguous"),
        );
        Ok(dx)
    }

    fn params(&self) -> Vec<(String, &Param)> {
        super::weight_bias(&self.weight, &self.bias)
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        super::weight_bias_mut(&mut self.weight, &mut self.bias)
    }
}
