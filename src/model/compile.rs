//! `compile` (Keras `model.compile`): the optimizer, loss and metrics of a [`Sequential`], and
//! the optimizer step over its parameters.

use super::sequential::{named_params_mut, Compiled};
use super::{Loss, Metric, Sequential};
use crate::error::{Error, Result};
use crate::optim::Optimizer;

impl Sequential {
    /// Sets the optimizer, the loss and the metrics used by `fit` and `evaluate` (Keras
    /// `model.compile`).
    ///
    /// # Errors
    /// [`Error::Config`] when the optimizer's hyper-parameters are invalid; [`Error::Shape`]
    /// when a built model's output is not one score vector per sample `(K)` for a
    /// cross-entropy loss (e.g. a `Dense` after a convolution without `Flatten`).
    pub fn compile(
        &mut self,
        optimizer: impl Optimizer + 'static,
        loss: Loss,
        metrics: &[Metric],
    ) -> Result<&mut Self> {
        optimizer.validate()?;
        let per_class = matches!(
            loss,
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy
        );
        if self.check_built().is_ok() && per_class && self.output_shape().len() != 1 {
            let flatten_hint = if self.output_shape().len() > 1 {
                ": add a Flatten (or a global pooling) layer before the Dense head, which acts \
                 on the last axis only"
            } else {
                ""
            };
            return Err(Error::shape(
                format!("compile({})", loss.name()),
                format!(
                    "a model whose per-sample output is one score per class, (K){flatten_hint}"
                ),
                self.output_shape(),
            ));
        }
        self.compiled = Some(Compiled {
            optimizer: Box::new(optimizer),
            loss,
            metrics: metrics.to_vec(),
        });
        Ok(self)
    }

    /// The compiled optimizer (e.g. to read or change its learning rate), if any.
    pub fn optimizer_mut(&mut self) -> Option<&mut (dyn Optimizer + 'static)> {
        self.compiled.as_mut().map(|c| c.optimizer.as_mut())
    }

    /// The compiled loss, or sparse categorical cross-entropy before `compile`.
    pub fn loss(&self) -> Loss {
        self.compiled.as_ref().map(|c| c.loss).unwrap_or_default()
    }

    /// The compiled metrics, or `[Accuracy]` before `compile`.
    pub fn metrics(&self) -> Vec<Metric> {
        self.compiled
            .as_ref()
            .map(|c| c.metrics.clone())
            .unwrap_or_else(|| vec![Metric::Accuracy])
    }

    /// Applies the compiled optimizer to every parameter's accumulated gradient.
    ///
    /// # Errors
    /// [`Error::State`] before `compile`; as [`Optimizer::step`].
    pub fn optimizer_step(&mut self) -> Result<()> {
        let Sequential {
            layers, compiled, ..
        } = self;
        let compiled = compiled.as_mut().ok_or_else(|| {
            Error::State("Sequential: call compile(optimizer, loss, metrics) before fit".into())
        })?;
        let mut params = named_params_mut(layers);
        compiled.optimizer.step(&mut params)
    }
}
