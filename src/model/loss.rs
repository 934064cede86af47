//! Losses: the scalar a model is trained to minimise, with its gradient.

use crate::error::{Error, Result};
use crate::ops::cross_entropy::sparse_categorical_crossentropy;
use crate::ops::losses::{bce_with_logits, categorical_crossentropy, mse};
use crate::tensor::Tensor;
use ndarray::{Ix2, IxDyn};

/// What a loss compares the model output with.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One integer class per sample, `[B]`. Dense losses use it as a one-hot row (or, for a
    /// single-column output, as the value `0.0`/`1.0`).
    Labels(&'a [usize]),
    /// A target tensor shaped like the output (probabilities, regression values, 0/1 flags).
    Dense(&'a Tensor),
}

/// A training loss (Keras names in [`Loss::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// Softmax + cross-entropy against integer labels, mean over the batch (PyTorch
    /// `F.cross_entropy`, Keras `sparse_categorical_crossentropy`). The model output is taken as
    /// logits; when the model ends in a `Softmax` layer, the logits before it are used, so the pair
    /// is fused and stable on large logits.
    #[default]
    SparseCategoricalCrossentropy,
    /// Softmax + cross-entropy against probability (or one-hot) targets `(B, V)`; fused with a
    /// trailing `Softmax` like the sparse form. Labels are turned into one-hot rows.
    CategoricalCrossentropy,
    /// Mean squared error over all elements.
    MeanSquaredError,
    /// Binary cross-entropy on logits (sigmoid folded in, stable), mean over all elements.
    BinaryCrossentropyWithLogits,
}

impl Loss {
    /// The Keras name of the loss, e.g. `"sparse_categorical_crossentropy"`.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
            Loss::BinaryCrossentropyWithLogits => "binary_crossentropy_from_logits",
        }
    }

    /// Whether the loss takes logits and applies softmax itself, so that a model's trailing
    /// `Softmax` layer is skipped during training (fused).
    pub fn fuses_softmax(&self) -> bool {
        matches!(
            self,
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy
        )
    }

    /// The mean loss of `output` against `targets` and its gradient `dL/d(output)`.
    ///
    /// # Shapes
    /// Cross-entropies: `output: (B, V)` logits, labels `[B]` in `0..V` or dense `(B, V)`.
    /// MSE / BCE: any `output: (B, …)` with dense targets of the same shape, or labels `[B]` for
    /// `(B, 1)` (value 0/1) or `(B, V)` (one-hot) outputs.
    ///
    /// # Errors
    /// [`Error::Shape`] for outputs or targets of the wrong shape; [`Error::Label`] for a label
    /// count other than `B` or a label `≥ V`.
    pub fn forward_backward(&self, output: &Tensor, targets: Targets<'_>) -> Result<(f32, Tensor)> {
        match (self, targets) {
            (Loss::SparseCategoricalCrossentropy, Targets::Labels(labels)) => {
                sparse_categorical_crossentropy(output, labels)
            }
            (Loss::SparseCategoricalCrossentropy, Targets::Dense(t)) => Err(Error::label(
                self.name(),
                format!(
                    "needs integer labels, got a dense target tensor of shape {:?}",
                    t.shape()
                ),
            )),
            (Loss::CategoricalCrossentropy, _) => {
                let z = output
                    .view()
                    .into_dimensionality::<Ix2>()
                    .map_err(|_| Error::shape(self.name(), "(B, V) logits", output.shape()))?;
                let t = self.dense_targets(output, targets)?;
                let t2 = t
                    .view()
                    .into_dimensionality::<Ix2>()
                    .expect("same shape as logits");
                let (l, g) = categorical_crossentropy(z, t2);
                Ok((l, g.into_dyn()))
            }
            (Loss::MeanSquaredError, _) => {
                let t = self.dense_targets(output, targets)?;
                Ok(mse(output.view(), t.view()))
            }
            (Loss::BinaryCrossentropyWithLogits, _) => {
                let t = self.dense_targets(output, targets)?;
                Ok(bce_with_logits(output.view(), t.view()))
            }
        }
    }

    /// Dense targets shaped like `output`: given, or made from labels.
    fn dense_targets(&self, output: &Tensor, targets: Targets<'_>) -> Result<Tensor> {
        match targets {
            Targets::Dense(t) => {
                if t.shape() != output.shape() {
                    return Err(Error::shape(
                        self.name(),
                        format!("targets shaped like the output {:?}", output.shape()),
                        t.shape(),
                    ));
                }
                Ok(t.clone())
            }
            Targets::Labels(labels) => {
                if output.ndim() != 2 {
                    return Err(Error::shape(
                        self.name(),
                        "(B, V) outputs when the targets are integer labels",
                        output.shape(),
                    ));
                }
                let (b, v) = (output.shape()[0], output.shape()[1]);
                if labels.len() != b {
                    return Err(Error::label(
                        self.name(),
                        format!(
                            "{} labels for a batch of {b} outputs (shape {:?})",
                            labels.len(),
                            output.shape()
                        ),
                    ));
                }
                let classes = if v == 1 { 2 } else { v };
                let mut t = Tensor::zeros(IxDyn(&[b, v]));
                for (i, &l) in labels.iter().enumerate() {
                    if l >= classes {
                        return Err(Error::label(
                            self.name(),
                            format!("label {l} at index {i} is out of range for {classes} classes"),
                        ));
                    }
                    if v == 1 {
                        t[[i, 0]] = l as f32;
                    } else {
                        t[[i, l]] = 1.0;
                    }
                }
                Ok(t)
            }
        }
    }
}
