//! `Dense`: the fully connected layer (PyTorch `nn.Linear`, Keras `Dense`).

use super::{no_cache, not_built, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::{pytorch_default, Rng};
use crate::ops::linear::{linear_backward, linear_forward_into};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{Array2, Ix1, Ix2};

/// A fully connected layer: `y = x·Wᵀ + b` over the last axis.
///
/// The weight has PyTorch's `nn.Linear` layout `[out, in]` and parameter names `weight`, `bias`.
/// `in_features` is inferred from the input shape at `build` time. Initialisation is PyTorch's
/// default: weight and bias `U(-1/√in, 1/√in)`.
///
/// # Shapes
/// `x: (B, …, in) → (B, …, out)`; usually `(B, in) → (B, out)`.
#[derive(Debug, Clone)]
pub struct Dense {
    units: usize,
    use_bias: bool,
    in_features: Option<usize>,
    weight: Option<Param>,
    bias: Option<Param>,
    /// The last training input, flattened to rows: `(rows, in)`.
    cache: Option<(Array2<f32>, Vec<usize>)>,
}

impl Dense {
    /// A dense layer with `units` outputs and a bias (PyTorch `bias=True`).
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            use_bias: true,
            in_features: None,
            weight: None,
            bias: None,
            cache: None,
        }
    }

    /// Whether the layer has a bias (default `true`).
    pub fn with_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// A built layer from existing weights (`[out, in]`) and an optional bias (`[out]`).
    ///
    /// # Errors
    /// [`Error::Shape`] when the weight is not rank 2 or the bias length differs from `out`.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let w = weight.view().into_dimensionality::<Ix2>().map_err(|_| {
            Error::shape(
                "Dense::from_weights",
                "a rank-2 [out, in] weight",
                weight.shape(),
            )
        })?;
        let (out, inp) = w.dim();
        if let Some(b) = &bias
            && b.shape() != [out]
        {
            return Err(Error::shape(
                "Dense::from_weights",
                format!("a bias of shape [{out}] to match weight [{out}, {inp}]"),
                b.shape(),
            ));
        }
        Ok(Dense {
            units: out,
            use_bias: bias.is_some(),
            in_features: Some(inp),
            weight: Some(Param::new(weight)),
            bias: bias.map(Param::new),
            cache: None,
        })
    }

    /// The number of outputs.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The weight `[out, in]`, once built.
    pub fn weight(&self) -> Option<&Param> {
        self.weight.as_ref()
    }

    /// The bias `[out]`, once built (and when enabled).
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    fn name(&self) -> String {
        match self.in_features {
            Some(i) => format!("Dense(in={i}, out={})", self.units),
            None => format!("Dense(out={})", self.units),
        }
    }

    /// Checks the weight `[out, in]` and bias `[out]` (a user may have replaced them through
    /// `params_mut()`).
    fn check_params(&self) -> Result<()> {
        let (Some(inp), Some(w)) = (self.in_features, self.weight.as_ref()) else {
            return Err(not_built(&self.name()));
        };
        w.check(&[self.units, inp], || format!("{}.weight", self.name()))?;
        if let Some(b) = &self.bias {
            b.check(&[self.units], || format!("{}.bias", self.name()))?;
        }
        Ok(())
    }

    /// Checks `x: (B, …, in)` and returns it flattened to `(rows, in)` with the output shape.
    /// The forward of a borrowed or owned input (kept as the cache without a copy when owned).
    fn forward_cow(&mut self, x: std::borrow::Cow<'_, Tensor>, mode: Mode) -> Result<Tensor> {
        self.check_params()?;
        let in_shape = x.shape().to_vec();
        let (rows, out_shape) = self.rows_of(x)?;
        let w = self
            .weight
            .as_ref()
            .ok_or_else(|| not_built(&self.name()))?;
        let w = w
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("weight is [out, in]");
        let b = self.bias.as_ref().map(|b| {
            b.value
                .view()
                .into_dimensionality::<Ix1>()
                .expect("bias is [out]")
        });
        let mut out = Array2::<f32>::zeros((rows.nrows(), self.units));
        linear_forward_into(rows.view(), w, b, out.view_mut());
        self.cache = match mode {
            Mode::Train => Some((rows, in_shape)),
            Mode::Eval => None,
        };
        Ok(out
            .into_shape_with_order(out_shape)
            .expect("output reshape")
            .into_dyn())
    }

    fn rows_of(&self, x: std::borrow::Cow<'_, Tensor>) -> Result<(Array2<f32>, Vec<usize>)> {
        let inp = self.in_features.ok_or_else(|| not_built(&self.name()))?;
        if x.ndim() < 2 || x.shape()[x.ndim() - 1] != inp {
            return Err(Error::shape(
                self.name(),
                format!("a (B, {inp}) input (or (B, …, {inp}))"),
                x.shape(),
            ));
        }
        let rows = x.len() / inp;
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 2") = self.units;
        // an owned input in standard layout is reshaped in place (no copy)
        let owned = match x {
            std::borrow::Cow::Owned(x) if x.is_standard_layout() => x,
            x => x.as_standard_layout().into_owned(),
        };
        let flat = owned
            .into_shape_with_order((rows, inp))
            .expect("contiguous reshape");
        Ok((flat, out_shape))
    }
}

impl Layer for Dense {
    fn describe(&self) -> String {
        self.name()
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if self.units == 0 {
            return Err(Error::config("Dense", "units", 0, "at least 1"));
        }
        let Some(&inp) = input_shape.last() else {
            return Err(Error::shape(
                self.name(),
                "a per-sample shape (…, in) of rank >= 1",
                input_shape,
            ));
        };
        if inp == 0 {
            return Err(Error::shape(
                self.name(),
                "a non-empty feature axis",
                input_shape,
            ));
        }
        match self.in_features {
            Some(i) if i != inp => {
                return Err(Error::shape(
                    self.name(),
                    format!("per-sample inputs (…, {i})"),
                    input_shape,
                ))
            }
            Some(_) if self.weight.is_some() => {}
            _ => {
                self.in_features = Some(inp);
                self.weight = Some(Param::new(pytorch_default(&[self.units, inp], inp, rng)));
                self.bias = self
                    .use_bias
                    .then(|| Param::new(pytorch_default(&[self.units], inp, rng)));
            }
        }
        let mut out = input_shape.to_vec();
        *out.last_mut().expect("rank >= 1") = self.units;
        Ok(out)
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_cow(std::borrow::Cow::Borrowed(x), mode)
    }

    fn forward_owned(&mut self, x: Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_cow(std::borrow::Cow::Owned(x), mode)
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        Ok(self.backward_impl(dout, true)?.expect("dx requested"))
    }

    fn backward_params_only(&mut self, dout: &Tensor) -> Result<()> {
        self.backward_impl(dout, false).map(|_| ())
    }

    fn params(&self) -> Vec<(String, &Param)> {
        super::weight_bias(&self.weight, &self.bias)
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        super::weight_bias_mut(&mut self.weight, &mut self.bias)
    }
}

impl Dense {
    /// The backward pass; `dx` only when `want_dx`.
    fn backward_impl(&mut self, dout: &Tensor, want_dx: bool) -> Result<Option<Tensor>> {
        self.check_params()?;
        let name = self.name();
        let (x, in_shape) = self.cache.as_ref().ok_or_else(|| no_cache(&name))?;
        let rows = x.nrows();
        if dout.len() != rows * self.units || dout.shape().last() != Some(&self.units) {
            return Err(Error::shape(
                name,
                format!("a gradient with {rows} rows of {} outputs", self.units),
                dout.shape(),
            ));
        }
        let d = dout
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((rows, self.units))
            .expect("contiguous reshape");
        let w = self.weight.as_mut().ok_or_else(|| not_built(&name))?;
        let mut dx = Array2::<f32>::zeros(if want_dx {
            x.raw_dim()
        } else {
            ndarray::Ix2(0, 0)
        });
        let (wv, wg) = (&w.value, &mut w.grad);
        linear_backward(
            d.view(),
            x.view(),
            wv.view().into_dimensionality::<Ix2>().expect("[out, in]"),
            want_dx.then(|| dx.view_mut()),
            wg.view_mut()
                .into_dimensionality::<Ix2>()
                .expect("[out, in]"),
            self.bias.as_mut().map(|b| {
                b.grad
                    .view_mut()
                    .into_dimensionality::<Ix1>()
                    .expect("[out]")
            }),
        );
        if !want_dx {
            return Ok(None);
        }
        Ok(Some(
            dx.into_shape_with_order(in_shape.clone())
                .expect("input reshape")
                .into_dyn(),
        ))
    }
}
