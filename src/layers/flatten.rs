//! [`Flatten`]: `(B, …)` → `(B, features)` in row-major order (PyTorch `x.flatten(1)`).

use super::{no_cache, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::tensor::Tensor;
use ndarray::IxDyn;

/// Flattens every axis after the batch axis, in row-major (C) order, like PyTorch's
/// `nn.Flatten()` / `x.flatten(1)`: for an NCHW input the feature index is `c·H·W + i·W + j`
/// (channel-major, so a following `Dense` matches a PyTorch `nn.Linear` weight as is).
///
/// No parameters. A [`Mode::Train`] forward remembers the input shape; backward reshapes `dout`
/// back to it.
///
/// # Shapes
/// `x: (B, d1, …, dk)` → `y: (B, d1·…·dk)`; per-sample `(d1, …, dk)` → `(d1·…·dk)`.
#[derive(Debug, Clone, Default)]
pub struct Flatten {
    /// The per-sample input shape given to `build`.
    input: Option<Vec<usize>>,
    /// The full input shape of the last training forward.
    cache: Option<Vec<usize>>,
}

impl Flatten {
    /// A new flatten layer (nothing to configure).
    pub fn new() -> Self {
        Flatten::default()
    }

    fn expected(&self) -> String {
        match &self.input {
            Some(s) => format!(
                "a (B, {}) input",
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "an input of rank >= 2 (B, …)".to_string(),
        }
    }
}

impl Layer for Flatten {
    fn describe(&self) -> String {
        "Flatten".to_string()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shape.is_empty() {
            return Err(Error::shape(
                "Flatten",
                "a per-sample shape of rank >= 1 (inputs (B, …) of rank >= 2)",
                input_shape,
            ));
        }
        self.input = Some(input_shape.to_vec());
        Ok(vec![input_shape.iter().product()])
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let out = self.check_forward(x, mode)?;
        // forward: y[b, c·H·W + i·W + j] = x[b, c, i, j]  (a row-major reshape)
        Ok(x.to_shape(out).expect("row-major reshape").into_owned())
    }

    /// As [`Layer::forward`] without a copy when `x` is in standard layout.
    fn forward_owned(&mut self, x: Tensor, mode: Mode) -> Result<Tensor> {
        if !x.is_standard_layout() {
            return self.forward(&x, mode);
        }
        let out = self.check_forward(&x, mode)?;
        Ok(x.into_shape_with_order(out).expect("row-major reshape"))
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let shape = self.check_backward(dout)?;
        // backward: dx[b, c, i, j] = dy[b, c·H·W + i·W + j]  (the inverse reshape)
        Ok(dout
            .to_shape(shape)
            .expect("row-major reshape")
            .into_owned())
    }

    /// As [`Layer::backward`] without a copy when `dout` is in standard layout.
    fn backward_owned(&mut self, dout: Tensor) -> Result<Tensor> {
        if !dout.is_standard_layout() {
            return self.backward(&dout);
        }
        let shape = self.check_backward(&dout)?;
        Ok(dout
            .into_shape_with_order(shape)
            .expect("row-major reshape"))
    }
}

impl Flatten {
    /// Checks a forward input, records its shape for training; returns the output shape.
    fn check_forward(&mut self, x: &Tensor, mode: Mode) -> Result<IxDyn> {
        let fits = x.ndim() >= 2 && self.input.as_ref().is_none_or(|s| x.shape()[1..] == s[..]);
        if !fits {
            return Err(Error::shape("Flatten", self.expected(), x.shape()));
        }
        let b = x.shape()[0];
        let features: usize = x.shape()[1..].iter().product();
        self.cache = (mode == Mode::Train).then(|| x.shape().to_vec());
        Ok(IxDyn(&[b, features]))
    }

    /// Checks `dout` against the last training forward; returns the input shape.
    fn check_backward(&self, dout: &Tensor) -> Result<IxDyn> {
        let shape = self.cache.as_ref().ok_or_else(|| no_cache("Flatten"))?;
        let want = [shape[0], shape[1..].iter().product()];
        if dout.shape() != want {
            return Err(Error::shape(
                "Flatten backward",
                format!("dout shaped like the last output {want:?}"),
                dout.shape(),
            ));
        }
        Ok(IxDyn(shape))
    }
}
