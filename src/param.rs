//! `Param`: a trainable tensor and its gradient.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A trainable tensor together with its accumulated gradient.
///
/// Gradients accumulate (`+=`) during backward passes; call [`Param::zero_grad`] (or the
/// model's `zero_grad`) before each step. Parameters are addressed by hierarchical names such as
/// `"0.weight"` or `"h.0.attn.c_attn.bias"`, following PyTorch state-dict names.
///
/// A parameter can be frozen ([`Param::set_requires_grad`]`(false)`, PyTorch's
/// `requires_grad_(False)`): backward passes may still accumulate into `grad`, but every
/// optimizer skips it entirely — no update, no weight decay, no momentum or moment update, no
/// step count — so its value stays bit-identical (transfer learning).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The current value.
    pub value: Tensor,
    /// The gradient of the loss with respect to `value`, same shape.
    pub grad: Tensor,
    /// `false` when frozen (default `true`).
    requires_grad: bool,
}

impl Param {
    /// Wraps `value` with a zero gradient of the same shape.
    pub fn new(value: Tensor) -> Self {
        let grad = Tensor::zeros(value.raw_dim());
        Param {
            value,
            grad,
            requires_grad: true,
        }
    }

    /// Whether optimizers update this parameter (`true` unless frozen).
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Freezes (`false`) or unfreezes (`true`) the parameter (PyTorch `requires_grad_`).
    pub fn set_requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad = requires_grad;
    }

    /// Whether the parameter is frozen (`!requires_grad()`).
    pub fn is_frozen(&self) -> bool {
        !self.requires_grad
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// Number of scalar entries.
    pub fn numel(&self) -> usize {
        self.value.len()
    }

    /// The shape of the value (and of the gradient).
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Checks that the value has shape `expected` and the gradient the value's shape: the
    /// guard every layer runs before using a parameter that a user may have replaced through
    /// `params_mut()`.
    ///
    /// `name` is only called on an error, so a check on every forward allocates nothing.
    ///
    /// # Errors
    /// [`Error::Param`] naming the parameter (e.g. `"Dense(in=64, out=10).weight"`), the shape
    /// found and the one expected.
    pub fn check(&self, expected: &[usize], name: impl FnOnce() -> String) -> Result<()> {
        if self.value.shape() != expected {
            return Err(Error::param(
                name(),
                format!(
                    "has shape {:?}, expected {expected:?} (was it replaced through params_mut()?)",
                    self.value.shape()
                ),
            ));
        }
        if self.grad.shape() != expected {
            return Err(Error::param(
                name(),
                format!(
                    "has a gradient of shape {:?} for a value of shape {expected:?} \
                     (replace a parameter with Param::new(value), which resets the gradient)",
                    self.grad.shape()
                ),
            ));
        }
        Ok(())
    }
}

/// A parameter borrowed mutably together with its hierarchical name, as optimizers receive it.
pub type NamedParamMut<'a> = (String, &'a mut Param);

/// A parameter borrowed immutably together with its hierarchical name.
pub type NamedParam<'a> = (String, &'a Param);
