//! [`Fusable`]: the layers a preceding layer may run inside its own kernel (see
//! [`Layer::fuses`](super::Layer::fuses)).

/// A parameter-free layer that the layer before it can apply in its own pass, while the values
/// are in cache ([`crate::Sequential`] asks every layer which of the following ones it absorbs).
/// A fused training forward is bit-identical to running the layers one by one, and so is its
/// backward below 16 input channels; with 16 or more the backward runs by the pooled gradient's
/// nonzeros and rounds differently, and a fused inference forward may round differently (see
/// [`crate::ops::conv2d::conv2d_relu_pool_forward`] and its backward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fusable {
    /// [`super::Relu`].
    Relu,
    /// [`super::MaxPool2d`] with a 2×2 window, stride 2, no padding, floor rounding (its
    /// default `MaxPool2d::new(2)`).
    MaxPool2x2,
}
