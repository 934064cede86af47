//! Stateful building blocks: the [`Layer`] trait and one file per layer.
//!
//! A layer owns its configuration, its [`Param`]s and the cache its backward pass needs. Shapes
//! given to [`Layer::build`] are per-sample (the batch axis `B` is
//! implicit); tensors given to [`Layer::forward`] carry the batch axis first.

use crate::error::Result;
use crate::init::Rng;
use crate::param::Param;
use crate::tensor::Tensor;

mod activation;
mod batch_norm;
mod conv2d;
mod dense;
mod dropout;
mod embedding;
mod flatten;
mod fusion;
mod global_pool;
mod layer_norm;
mod mbconv;
mod pool;
mod residual;

pub use activation::{Gelu, Relu, Relu6, Sigmoid, Softmax, Tanh};
pub use batch_norm::BatchNorm2d;
pub use conv2d::{Conv2d, Padding};
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use fusion::Fusable;
pub use global_pool::{GlobalAveragePooling2D, GlobalAvgPool2d};
pub use layer_norm::LayerNorm;
pub use mbconv::MbConv;
pub use pool::{AvgPool2d, MaxPool2d};
pub use residual::{Chain, Residual};

/// Whether a forward pass is for training (caches for backward, dropout active) or inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Training: layers cache what backward needs; dropout drops.
    #[default]
    Train,
    /// Inference: no caches are needed; dropout is the identity.
    Eval,
}

/// A building block with a forward and a hand-written backward pass.
///
/// Contract:
/// - [`Layer::build`] is called once with the per-sample input shape before any forward; layers
///   whose sizes are inferred (e.g. `Dense`'s `in_features`) create their parameters there.
/// - [`Layer::forward`] in [`Mode::Train`] caches what [`Layer::backward`] needs.
/// - [`Layer::backward`] takes `dL/dout`, **accumulates** (`+=`) parameter gradients into
///   `Param::grad` and returns `dL/dx`.
pub trait Layer: Send + Sync {
    /// A short description for summaries and error messages, e.g. `"Dense(in=64, out=10)"`.
    fn describe(&self) -> String;

    /// Prepares the layer for per-sample inputs of shape `input_shape` (no batch axis) and
    /// returns the per-sample output shape. Creates parameters when needed, drawing from `rng`.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when the layer cannot take that input.
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>>;

    /// Runs the layer on a batch `x` (batch axis first).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when `x` does not fit, [`crate::Error::State`] before `build`.
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor>;

    /// Back-propagates `dout = dL/dout` through the last training-mode forward: accumulates
    /// parameter gradients and returns `dL/dx`.
    ///
    /// # Errors
    /// [`crate::Error::State`] without a preceding training forward, [`crate::Error::Shape`] when
    /// `dout` does not match the last output.
    fn backward(&mut self, dout: &Tensor) -> Result<Tensor>;

    /// As [`Layer::forward`], taking ownership of `x` so that an elementwise layer can work in
    /// place instead of allocating its output (what [`crate::Sequential`] calls). The default
    /// delegates to [`Layer::forward`].
    ///
    /// # Errors
    /// As [`Layer::forward`].
    fn forward_owned(&mut self, x: Tensor, mode: Mode) -> Result<Tensor> {
        self.forward(&x, mode)
    }

    /// As [`Layer::backward`], taking ownership of `dout` (in-place backward for elementwise
    /// layers). The default delegates to [`Layer::backward`].
    ///
    /// # Errors
    /// As [`Layer::backward`].
    fn backward_owned(&mut self, dout: Tensor) -> Result<Tensor> {
        self.backward(&dout)
    }

    /// As [`Layer::backward`] when `dL/dx` is not needed (the first layer of a model during
    /// training): accumulates the parameter gradients and may skip computing the input gradient.
    ///
    /// # Errors
    /// As [`Layer::backward`].
    fn backward_params_only(&mut self, dout: &Tensor) -> Result<()> {
        self.backward(dout).map(|_| ())
    }

    /// What this layer is when a preceding layer runs it inside its own pass (`None`, the
    /// default: it cannot be fused).
    fn fusable(&self) -> Option<Fusable> {
        None
    }

    /// How many of the layers that follow (`tail`, their [`Layer::fusable`] kinds in order) this
    /// layer can run inside its own pass with [`Layer::forward_fused`]: 0 (the default) or a
    /// prefix length of `tail`.
    fn fuses(&self, _tail: &[Fusable]) -> usize {
        0
    }

    /// Runs this layer followed by the layers `tail` (a prefix accepted by [`Layer::fuses`]) in
    /// one pass, with the result of running them one by one (bit for bit in [`Mode::Train`]; an
    /// inference forward may take a faster path that rounds differently). After a
    /// [`Mode::Train`] call, [`Layer::backward`] takes the gradient of the last fused layer's
    /// output and returns this layer's input gradient; the fused layers themselves are not
    /// called (nor their caches updated). `x` is borrowed or owned, like [`Layer::forward`] and
    /// [`Layer::forward_owned`].
    ///
    /// # Errors
    /// As [`Layer::forward`]; [`crate::Error::State`] for a `tail` this layer does not fuse.
    fn forward_fused(
        &mut self,
        _x: std::borrow::Cow<'_, Tensor>,
        _mode: Mode,
        tail: &[Fusable],
    ) -> Result<Tensor> {
        Err(crate::Error::State(format!(
            "{}: cannot fuse the following layers {tail:?}",
            self.describe()
        )))
    }

    /// `true` for a softmax over the last axis: a following cross-entropy loss then takes the
    /// logits before it and uses the fused, numerically stable `(p − onehot)/N` backward.
    fn is_softmax(&self) -> bool {
        false
    }

    /// The layer's parameters with their local names (`"weight"`, `"bias"`), in a fixed order.
    fn params(&self) -> Vec<(String, &Param)> {
        Vec::new()
    }

    /// The layer's parameters, mutably, with their local names, in the order of [`Layer::params`].
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Vec::new()
    }

    /// Freezes (`false`) or unfreezes (`true`) every parameter of the layer (Keras
    /// `layer.trainable = …`; PyTorch `module.requires_grad_(…)`). Optimizers skip frozen
    /// parameters; the train/eval mode is not changed (see [`crate::Sequential::freeze`]).
    fn set_trainable(&mut self, trainable: bool) {
        for (_, p) in self.params_mut() {
            p.set_requires_grad(trainable);
        }
    }

    /// Whether every parameter of the layer is trainable (`true` for a layer without any).
    fn is_trainable(&self) -> bool {
        self.params().iter().all(|(_, p)| p.requires_grad())
    }

    /// Non-trainable state saved with the weights (PyTorch "buffers"), with local names, e.g.
    /// BatchNorm's `running_mean`, `running_var`, `num_batches_tracked`.
    fn buffers(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }

    /// The buffers, mutably, in the order of [`Layer::buffers`] (for loading weights).
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }

    /// The position of the layer's own random stream (dropout), for exact-resume checkpoints;
    /// `None` for deterministic layers. See [`crate::init::rng_state`].
    fn rng_state(&self) -> Option<String> {
        None
    }

    /// Keys the randomness of the next training forward by the global training `step` and the
    /// global index `first_row` of the first example (row) of the batch it sees, instead of the
    /// position in the layer's stream: data-parallel and micro-batched training
    /// ([`crate::distributed`]) call it before every micro-batch, so that an example's dropout
    /// mask does not depend on which rank, or which micro-batch, computes it. Layers without
    /// randomness ignore it (the default); containers pass it on.
    fn seek_examples(&mut self, _step: u64, _first_row: usize) {}

    /// Restores a position from [`Layer::rng_state`].
    ///
    /// # Errors
    /// [`crate::Error::State`] for a layer without a random stream (or before `build`),
    /// [`crate::Error::Format`] for malformed text.
    fn set_rng_state(&mut self, _state: &str) -> Result<()> {
        Err(crate::Error::State(format!(
            "{} has no random stream",
            self.describe()
        )))
    }
}

/// Something that expands into one or more layers, so that `Dense::new(64).relu()` adds two
/// layers (`Dense` then `ReLU`), keeping indices aligned with PyTorch's `nn.Sequential`.
pub trait IntoLayers {
    /// The layers, in order.
    fn into_layers(self) -> Vec<Box<dyn Layer>>;
}

impl<L: Layer + 'static> IntoLayers for L {
    fn into_layers(self) -> Vec<Box<dyn Layer>> {
        vec![Box::new(self)]
    }
}

/// A layer followed by an activation layer, made by e.g. `Dense::new(64).relu()`.
pub struct WithActivation {
    layers: Vec<Box<dyn Layer>>,
}

impl WithActivation {
    /// Pairs `layer` with the activation `act`.
    pub fn new(layer: Box<dyn Layer>, act: Box<dyn Layer>) -> Self {
        WithActivation {
            layers: vec![layer, act],
        }
    }
}

impl IntoLayers for WithActivation {
    fn into_layers(self) -> Vec<Box<dyn Layer>> {
        self.layers
    }
}

/// Builder methods that append an activation layer, available on every layer.
pub trait Activate: Layer + Sized + 'static {
    /// Appends a [`Relu`].
    fn relu(self) -> WithActivation {
        WithActivation::new(Box::new(self), Box::new(Relu::new()))
    }
    /// Appends a [`Relu6`] (`min(max(x, 0), 6)`).
    fn relu6(self) -> WithActivation {
        WithActivation::new(Box::new(self), Box::new(Relu6::new()))
    }
    /// Appends a [`Gelu`] (tanh approximation).
    fn gelu(self) -> WithActivation {
        WithActivation::new(Box::new(self), Box::new(Gelu::new()))
    }
    /// Appends a [`Sigmoid`].
    fn sigmoid(self) -> WithActivation {
        WithActivation::new(Box::new(self), Box::new(Sigmoid::new()))
    }
    /// Appends a [`Tanh`].
    fn tanh(self) -> WithActivation {
        WithActivation::new(Box::new(self), Box::new(Tanh::new()))
    }
    /// Appends a [`Softmax`] over the last axis.
    fn softmax(self) -> WithActivation {
        WithActivation::new(Box::new(self), Box::new(Softmax::new()))
    }
}

impl<L: Layer + Sized + 'static> Activate for L {}

/// The error for a backward pass without a cached training forward.
pub(crate) fn no_cache(layer: &str) -> crate::Error {
    crate::Error::State(format!(
        "{layer}: backward called without a preceding forward in Mode::Train"
    ))
}

/// The error for using a layer before `build`.
pub(crate) fn not_built(layer: &str) -> crate::Error {
    crate::Error::State(format!(
        "{layer}: used before build(); add it to a Sequential and call build(), or build it directly"
    ))
}

/// The optional `weight` and `bias` of a layer as named parameters (shared by Dense, Conv2d,
/// LayerNorm, BatchNorm2d).
pub(crate) fn weight_bias<'a>(
    w: &'a Option<Param>,
    b: &'a Option<Param>,
) -> Vec<(String, &'a Param)> {
    let named = |n: &str, p: &'a Option<Param>| p.as_ref().map(|p| (n.to_string(), p));
    named("weight", w)
        .into_iter()
        .chain(named("bias", b))
        .collect()
}

/// [`weight_bias`], mutably.
pub(crate) fn weight_bias_mut<'a>(
    w: &'a mut Option<Param>,
    b: &'a mut Option<Param>,
) -> Vec<(String, &'a mut Param)> {
    let w = w.as_mut().map(|p| ("weight".to_string(), p));
    let b = b.as_mut().map(|p| ("bias".to_string(), p));
    w.into_iter().chain(b).collect()
}
