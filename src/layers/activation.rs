//! Activation layers: [`Relu`], [`Relu6`], [`Gelu`], [`Sigmoid`], [`Tanh`] and [`Softmax`] (last axis).
//!
//! Each is a thin stateful wrapper over a kernel pair in [`crate::ops::activation`] or
//! [`crate::ops::softmax`]: no parameters, any input rank, output shape = input shape. A
//! [`Mode::Train`] forward caches the one tensor the backward needs (the input for ReLU and GELU,
//! the output for the others); a [`Mode::Eval`] forward caches nothing and drops any earlier
//! cache, so a backward can never use a stale one.

use super::{no_cache, Fusable, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::{activation as act, softmax as sm};
use crate::tensor::Tensor;

/// The tensor a training forward keeps for the backward pass.
#[derive(Debug, Clone, Default)]
struct Cache(Option<Tensor>);

impl Cache {
    /// Keeps `t` in training mode; forgets any earlier cache in evaluation mode.
    fn store(&mut self, mode: Mode, t: &Tensor) {
        self.0 = match mode {
            Mode::Train => Some(t.clone()),
            Mode::Eval => None,
        };
    }

    /// The cached tensor, checked against `dout` (elementwise layers: cache shape = out shape).
    fn get(&self, layer: &str, dout: &Tensor) -> Result<&Tensor> {
        let cached = self.0.as_ref().ok_or_else(|| no_cache(layer))?;
        if dout.shape() != cached.shape() {
            return Err(Error::shape(
                format!("{layer} backward"),
                format!("dout shaped like the last output {:?}", cached.shape()),
                dout.shape(),
            ));
        }
        Ok(cached)
    }
}

/// Defines one activation layer over a forward/backward kernel pair.
///
/// `caches = input` keeps `x` for the backward kernel, `caches = output` keeps `y`.
macro_rules! activation_layer {
    (
        $(#[$doc:meta])*
        $name:ident, $describe:literal, caches = $what:ident,
        forward = $forward:path, backward = $backward:path
        $(, is_softmax = $softmax:literal)? $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            cache: Cache,
        }

        impl $name {
            /// A new layer (no parameters, nothing to configure).
            pub fn new() -> Self {
                Self::default()
            }
        }

        impl Layer for $name {
            fn describe(&self) -> String {
                $describe.to_string()
            }

            fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
                Ok(input_shape.to_vec())
            }

            fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
                let y = $forward(x.view());
                activation_layer!(@store $what, self.cache, mode, x, &y);
                Ok(y)
            }

            fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
                let cached = self.cache.get($describe, dout)?;
                Ok($backward(cached.view(), dout.view()))
            }

            fn is_softmax(&self) -> bool {
                false $(|| $softmax)?
            }
        }
    };
    (@store input, $cache:expr, $mode:expr, $x:expr, $y:expr) => {
        $cache.store($mode, $x)
    };
    (@store output, $cache:expr, $mode:expr, $x:expr, $y:expr) => {
        $cache.store($mode, $y)
    };
}

/// A clamp-like activation (`Relu`, `Relu6`) that works in place through
/// [`Layer::forward_owned`] and keeps only a one-bit-per-element mask of where the gradient
/// passes; [`Layer::forward`] keeps the input. One body for both layers.
macro_rules! masked_activation_layer {
    (
        $(#[$doc:meta])*
        $name:ident, $describe:literal, mask = $mask_doc:literal,
        forward = $forward:path, in_place = $in_place:path,
        in_place_with_mask = $with_mask:path, backward = $backward:path,
        fusable = $fusable:expr $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            cache: Cache,
            #[doc = concat!("`", $mask_doc, "` bits of the last owned training forward, with its shape.")]
            mask: Option<(Vec<u64>, Vec<usize>)>,
        }

        impl $name {
            /// A new layer (no parameters, nothing to configure).
            pub fn new() -> Self {
                Self::default()
            }
        }

        impl Layer for $name {
            fn describe(&self) -> String {
                $describe.to_string()
            }

            fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
                Ok(input_shape.to_vec())
            }

            fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
                let y = $forward(x.view());
                self.mask = None;
                self.cache.store(mode, x);
                Ok(y)
            }

            fn fusable(&self) -> Option<Fusable> {
                $fusable
            }

            fn forward_owned(&mut self, mut x: Tensor, mode: Mode) -> Result<Tensor> {
                if !x.is_standard_layout() {
                    return self.forward(&x, mode);
                }
                self.cache = Cache::default();
                let data = x.as_slice_mut().expect("standard layout");
                match mode {
                    Mode::Train => {
                        let mut bits = self.mask.take().map(|(b, _)| b).unwrap_or_default();
                        $with_mask(data, &mut bits);
                        self.mask = Some((bits, x.shape().to_vec()));
                    }
                    Mode::Eval => {
                        self.mask = None;
                        $in_place(data);
                    }
                }
                Ok(x)
            }

            fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
                if self.mask.is_some() {
                    return self.backward_owned(dout.clone());
                }
                let cached = self.cache.get($describe, dout)?;
                Ok($backward(cached.view(), dout.view()))
            }

            fn backward_owned(&mut self, mut dout: Tensor) -> Result<Tensor> {
                let Some((bits, shape)) = &self.mask else {
                    return self.backward(&dout);
                };
                if dout.shape() != shape.as_slice() {
                    return Err(Error::shape(
                        concat!($describe, " backward"),
                        format!("dout shaped like the last output {shape:?}"),
                        dout.shape(),
                    ));
                }
                if !dout.is_standard_layout() {
                    dout = dout.as_standard_layout().into_owned();
                }
                // dx = dy·mask: the mask records where the forward's derivative is 1
                act::relu_backward_in_place_with_mask(
                    dout.as_slice_mut().expect("standard layout"),
                    bits,
                );
                Ok(dout)
            }
        }
    };
}

masked_activation_layer!(
    /// ReLU, `y = max(x, 0)`, elementwise (PyTorch `nn.ReLU`).
    ///
    /// Through [`Layer::forward_owned`] (what `Sequential` calls) it works in place and a training
    /// forward keeps only a one-bit-per-element mask of `x > 0` for the backward, which is then also
    /// in place: no activation-sized allocation or copy. [`Layer::forward`] keeps the input.
    ///
    /// # Shapes
    /// `x: (B, …)` → `y: (B, …)`.
    Relu, "ReLU", mask = "x > 0",
    forward = act::relu_forward, in_place = act::relu_in_place,
    in_place_with_mask = act::relu_in_place_with_mask, backward = act::relu_backward,
    fusable = Some(Fusable::Relu),
);

masked_activation_layer!(
    /// ReLU6, `y = min(max(x, 0), 6)`, elementwise (PyTorch `nn.ReLU6`; MobileNet and
    /// EfficientNet-Lite). The gradient passes strictly inside `(0, 6)`, as in torch.
    ///
    /// Like [`Relu`], through [`Layer::forward_owned`] it works in place and a training forward
    /// keeps only a one-bit-per-element mask of `0 < x < 6`; [`Layer::forward`] keeps the input.
    ///
    /// # Shapes
    /// `x: (B, …)` → `y: (B, …)`.
    Relu6, "ReLU6", mask = "0 < x < 6",
    forward = act::relu6_forward, in_place = act::relu6_in_place,
    in_place_with_mask = act::relu6_in_place_with_mask, backward = act::relu6_backward,
    fusable = None,
);

activation_layer!(
    /// GELU with the tanh approximation (GPT-2 `gelu_new`, PyTorch
    /// `nn.GELU(approximate="tanh")`), elementwise.
    ///
    /// # Shapes
    /// `x: (B, …)` → `y: (B, …)`. Caches the input.
    Gelu, "GELU(tanh)", caches = input,
    forward = act::gelu_forward, backward = act::gelu_backward,
);

activation_layer!(
    /// Logistic sigmoid `y = 1 / (1 + e^(−x))`, elementwise and stable for large `|x|`.
    ///
    /// # Shapes
    /// `x: (B, …)` → `y: (B, …)`. Caches the output.
    Sigmoid, "Sigmoid", caches = output,
    forward = act::sigmoid_forward, backward = act::sigmoid_backward,
);

activation_layer!(
    /// Hyperbolic tangent, elementwise (PyTorch `nn.Tanh`).
    ///
    /// # Shapes
    /// `x: (B, …)` → `y: (B, …)`. Caches the output.
    Tanh, "Tanh", caches = output,
    forward = act::tanh_forward, backward = act::tanh_backward,
);

activation_layer!(
    /// Softmax over the last axis (PyTorch `nn.Softmax(dim=-1)`), numerically stable.
    ///
    /// When a `Sequential` ends in this layer and trains with sparse categorical cross-entropy,
    /// the loss takes the logits before it and uses the fused
    /// [`sparse_categorical_crossentropy`](crate::ops::cross_entropy::sparse_categorical_crossentropy),
    /// whose gradient `(p − onehot)/N` stays exact where probabilities underflow.
    ///
    /// # Shapes
    /// `x: (B, …, C)` → `y: (B, …, C)`, each row over `C` sums to 1. Caches the output.
    Softmax, "Softmax", caches = output,
    forward = sm::softmax_forward, backward = sm::softmax_backward, is_softmax = true,
);
