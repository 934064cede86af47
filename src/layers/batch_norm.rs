//! [`BatchNorm2d`]: batch normalisation over NCHW images (PyTorch `nn.BatchNorm2d`).

use super::{no_cache, not_built, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::batch_norm::{
    batch_norm_backward_into, batch_norm_eval_forward_into, batch_norm_train_forward_into,
    batch_norm_update_running, BatchNormCache,
};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{Array4, Ix4, IxDyn};

/// Batch normalisation per channel over `(N, H, W)` (PyTorch `nn.BatchNorm2d`, Keras
/// `BatchNormalization(axis=1)`).
///
/// - [`Mode::Train`]: normalises with the batch mean and **biased** variance, then updates the
///   running statistics with `momentum` (`running = (1 − m)·running + m·batch`, the variance
///   entering **unbiased**, `·M/(M − 1)` with `M = N·H·W`) and counts `num_batches_tracked`.
///   Needs `M > 1`.
/// - [`Mode::Eval`]: normalises with the running statistics.
///
/// `y = weight·(x − μ)/√(σ² + eps) + bias`. Parameters `weight` (γ, init 1) and `bias` (β, init
/// 0) unless `affine(false)`; buffers `running_mean` (init 0), `running_var` (init 1) and
/// `num_batches_tracked` (a 0-d tensor, PyTorch's shape `[]`, holding the count as `f32`: exact
/// up to 2²⁴ batches): PyTorch's state-dict names. `num_features = C` is inferred at build.
///
/// Backward uses the statistics of the **last** forward: after a training forward the full
/// batch-statistics gradient, after an evaluation forward the affine one `dx = γ·rstd·dy` (frozen
/// statistics, as in PyTorch's `model.eval()` fine-tuning). Every forward therefore keeps the
/// normalised input `x̂` (in a buffer reused across batches of one shape) for the backward.
///
/// # Shapes
/// `x: (B, C, H, W)` → `y: (B, C, H, W)`; `weight`, `bias`, `running_*`: `(C)`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    momentum: f32,
    eps: f32,
    affine: bool,
    num_features: Option<usize>,
    weight: Option<Param>,
    bias: Option<Param>,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    cache: BatchNormCache,
    /// The mode of the last forward, whose `x̂` and statistics are in `cache`.
    cached: Option<Mode>,
}

impl Default for BatchNorm2d {
    fn default() -> Self {
        BatchNorm2d::new()
    }
}

impl BatchNorm2d {
    /// Batch norm with PyTorch's defaults: `momentum = 0.1`, `eps = 1e-5`, `affine = true`.
    pub fn new() -> Self {
        BatchNorm2d {
            momentum: 0.1,
            eps: 1e-5,
            affine: true,
            num_features: None,
            weight: None,
            bias: None,
            running_mean: Tensor::zeros(IxDyn(&[0])),
            running_var: Tensor::zeros(IxDyn(&[0])),
            num_batches_tracked: Tensor::zeros(IxDyn(&[])),
            cache: BatchNormCache::default(),
            cached: None,
        }
    }

    /// The running-statistics momentum `m` in `[0, 1]` (default 0.1).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// The variance offset `eps > 0` (default `1e-5`).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// Whether the layer has the learnable `weight` and `bias` (default `true`).
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Checks `momentum ∈ [0, 1]` and `eps` finite and `> 0`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the value.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::config(
                "BatchNorm2d",
                "momentum",
                self.momentum,
                "a value in [0, 1]",
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config(
                "BatchNorm2d",
                "eps",
                self.eps,
                "a finite value > 0",
            ));
        }
        Ok(())
    }

    /// The number of channels `C`, once built.
    pub fn num_features(&self) -> Option<usize> {
        self.num_features
    }

    /// γ (`weight`, `(C)`), once built with `affine`.
    pub fn weight(&self) -> Option<&Param> {
        self.weight.as_ref()
    }

    /// β (`bias`, `(C)`), once built with `affine`.
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The running mean `(C)` (empty before build).
    pub fn running_mean(&self) -> &Tensor {
        &self.running_mean
    }

    /// The running (unbiased) variance `(C)` (empty before build).
    pub fn running_var(&self) -> &Tensor {
        &self.running_var
    }

    /// The number of training forwards so far.
    pub fn num_batches_tracked(&self) -> u64 {
        self.num_batches_tracked
            .iter()
            .next()
            .map_or(0, |&v| v as u64)
    }

    fn name(&self) -> String {
        let mut s = match self.num_features {
            Some(c) => format!("BatchNorm2d({c}, "),
            None => "BatchNorm2d(".to_string(),
        };
        s += &format!("eps={:e}, momentum={}", self.eps, self.momentum);
        if !self.affine {
            s += ", affine=false";
        }
        s + ")"
    }

    /// Checks that buffers and parameters (which may have been replaced through
    /// `buffers_mut`/`params_mut`) still have `C` entries, and makes the buffers contiguous.
    fn check_state(&mut self, c: usize) -> Result<()> {
        for (name, t) in [
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
        ] {
            if t.shape() != [c] {
                return Err(Error::Param {
                    name: name.into(),
                    message: format!("expected shape [{c}], found {:?}", t.shape()),
                });
            }
            if !t.is_standard_layout() {
                *t = t.as_standard_layout().into_owned();
            }
        }
        if self.num_batches_tracked.len() != 1 {
            return Err(Error::Param {
                name: "num_batches_tracked".into(),
                message: format!(
                    "expected one element, found shape {:?}",
                    self.num_batches_tracked.shape()
                ),
            });
        }
        for (name, p) in [("weight", &mut self.weight), ("bias", &mut self.bias)] {
            if let Some(p) = p {
                if p.value.shape() != [c] || p.grad.shape() != [c] {
                    return Err(Error::Param {
                        name: name.into(),
                        message: format!("expected shape [{c}], found {:?}", p.value.shape()),
                    });
                }
                if !p.value.is_standard_layout() {
                    p.value = p.value.as_standard_layout().into_owned();
                }
                if !p.grad.is_standard_layout() {
                    p.grad = p.grad.as_standard_layout().into_owned();
                }
            }
        }
        Ok(())
    }
}

/// The contiguous values of an optional `(C)` parameter.
fn values(p: &Option<Param>) -> Option<&[f32]> {
    p.as_ref()
        .map(|p| p.value.as_slice().expect("contiguous (checked)"))
}

impl Layer for BatchNorm2d {
    fn describe(&self) -> String {
        self.name()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.validate()?;
        let &[c, _, _] = input_shape else {
            return Err(Error::shape(
                self.name(),
                "a per-sample (C, H, W) input",
                input_shape,
            ));
        };
        if input_shape.contains(&0) {
            return Err(Error::shape(
                self.name(),
                "a non-empty (C, H, W) input",
                input_shape,
            ));
        }
        match self.num_features {
            Some(have) if have != c => {
                return Err(Error::shape(
                    self.name(),
                    format!("a per-sample ({have}, H, W) input"),
                    input_shape,
                ))
            }
            Some(_) => {}
            None => {
                self.num_features = Some(c);
                if self.affine {
                    self.weight = Some(Param::new(Tensor::ones(IxDyn(&[c]))));
                    self.bias = Some(Param::new(Tensor::zeros(IxDyn(&[c]))));
                }
                self.running_mean = Tensor::zeros(IxDyn(&[c]));
                self.running_var = Tensor::ones(IxDyn(&[c]));
                self.num_batches_tracked = Tensor::zeros(IxDyn(&[]));
            }
        }
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = self.num_features.ok_or_else(|| not_built(&self.name()))?;
        if x.ndim() != 4 || x.shape()[1] != c {
            return Err(Error::shape(
                self.name(),
                format!("an NCHW input (B, {c}, H, W)"),
                x.shape(),
            ));
        }
        let m = x.len() / c;
        if mode == Mode::Train && m <= 1 {
            return Err(Error::shape(
                self.name(),
                "more than one value per channel in Mode::Train (B·H·W > 1)",
                x.shape(),
            ));
        }
        self.check_state(c)?;
        self.cached = None;
        let x4 = x.view().into_dimensionality::<Ix4>().expect("rank 4");
        let mut out = Array4::zeros(x4.dim());
        let (w, b) = (values(&self.weight), values(&self.bias));
        match mode {
            Mode::Train => {
                batch_norm_train_forward_into(x4, w, b, self.eps, out.view_mut(), &mut self.cache);
                batch_norm_update_running(
                    self.running_mean
                        .as_slice_mut()
                        .expect("contiguous (checked)"),
                    self.running_var
                        .as_slice_mut()
                        .expect("contiguous (checked)"),
                    &self.cache,
                    self.momentum,
                );
                self.num_batches_tracked.mapv_inplace(|n| n + 1.0);
            }
            Mode::Eval => {
                let running = (
                    self.running_mean.as_slice().expect("contiguous (checked)"),
                    self.running_var.as_slice().expect("contiguous (checked)"),
                );
                batch_norm_eval_forward_into(
                    x4,
                    running,
                    w,
                    b,
                    self.eps,
                    out.view_mut(),
                    Some(&mut self.cache),
                );
            }
        }
        self.cached = Some(mode);
        Ok(out.into_dyn())
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let name = self.name();
        let c = self.num_features.ok_or_else(|| not_built(&name))?;
        if self.cached.is_none() {
            return Err(no_cache(&name));
        }
        if dout.shape() != self.cache.xhat.shape() {
            return Err(Error::shape(
                format!("{name} backward"),
                format!(
                    "dout shaped like the last output {:?}",
                    self.cache.xhat.shape()
                ),
                dout.shape(),
            ));
        }
        self.check_state(c)?;
        let d = dout.view().into_dimensionality::<Ix4>().expect("rank 4");
        let mut dx = Array4::zeros(d.dim());
        let (w, dw) = match &mut self.weight {
            Some(p) => (
                Some(p.value.as_slice().expect("contiguous (checked)")),
                Some(p.grad.as_slice_mut().expect("contiguous (checked)")),
            ),
            None => (None, None),
        };
        let db = self
            .bias
            .as_mut()
            .map(|p| p.grad.as_slice_mut().expect("contiguous (checked)"));
        batch_norm_backward_into(d, &self.cache, w, dx.view_mut(), dw, db);
        Ok(dx.into_dyn())
    }

    fn params(&self) -> Vec<(String, &Param)> {
        super::weight_bias(&self.weight, &self.bias)
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        super::weight_bias_mut(&mut self.weight, &mut self.bias)
    }

    fn buffers(&self) -> Vec<(String, &Tensor)> {
        if self.num_features.is_none() {
            return Vec::new();
        }
        vec![
            ("running_mean".to_string(), &self.running_mean),
            ("running_var".to_string(), &self.running_var),
            ("num_batches_tracked".to_string(), &self.num_batches_tracked),
        ]
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        if self.num_features.is_none() {
            return Vec::new();
        }
        vec![
            ("running_mean".to_string(), &mut self.running_mean),
            ("running_var".to_string(), &mut self.running_var),
            (
                "num_batches_tracked".to_string(),
                &mut self.num_batches_tracked,
            ),
        ]
    }
}
