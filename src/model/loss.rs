//! Losses: the scalar a model is trained to minimise, with its gradient.

use crate::error::Result;
use crate::ops::cross_entropy::sparse_categorical_crossentropy;
use crate::tensor::Tensor;

/// A training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// Softmax + cross-entropy against integer class labels, mean over the batch (PyTorch
    /// `F.cross_entropy`, Keras `sparse_categorical_crossentropy`). The model output is taken as
    /// logits; when the model ends in a `Softmax` layer, the model passes the logits before it, so
    /// the pair is fused and stable on large logits.
    #[default]
    SparseCategoricalCrossentropy,
}

impl Loss {
    /// The Keras name of the loss, e.g. `"sparse_categorical_crossentropy"`.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
        }
    }

    /// The mean loss of `logits` against `labels` and its gradient `dL/dlogits`.
    ///
    /// # Shapes
    /// `logits: (B, V)`, `labels: [B]` with values in `0..V` → `(loss, (B, V))`.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] for logits that are not `(B, V)`; [`crate::Error::Label`] for a
    /// label count other than `B` or a label `≥ V`.
    pub fn forward_backward(&self, logits: &Tensor, labels: &[usize]) -> Result<(f32, Tensor)> {
        match self {
            Loss::SparseCategoricalCrossentropy => sparse_categorical_crossentropy(logits, labels),
        }
    }
}
