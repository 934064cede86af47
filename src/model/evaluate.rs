//! `evaluate` and batched `predict` (Keras `model.evaluate` / `model.predict`), in evaluation
//! mode.

use super::history::{Logs, Tally};
use super::{Loss, Metric, Sequential, Targets};
use crate::data::{BatchSource, Dataset};
use crate::error::{Error, Result};
use crate::layers::Mode;
use crate::tensor::Tensor;
use ndarray::{Axis, IxDyn};

impl Sequential {
    /// Loss and metrics over a whole data set in evaluation mode (Keras `model.evaluate`), in
    /// batches of 256. `data` is any [`BatchSource`] (a [`Dataset`], an
    /// [`crate::data::ImageFolder`]; never augmented). Uses the compiled loss and metrics (sparse categorical cross-entropy and
    /// accuracy before `compile`).
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty data set or inputs that do not fit; [`Error::Label`] for
    /// labels out of range.
    pub fn evaluate<S: BatchSource>(&mut self, data: &S) -> Result<Logs> {
        self.evaluate_with(data, 256, "")
    }

    pub(super) fn evaluate_with(
        &mut self,
        data: &dyn BatchSource,
        batch_size: usize,
        prefix: &str,
    ) -> Result<Logs> {
        if data.is_empty() {
            let mut shape = vec![0];
            shape.extend(data.sample_shape());
            return Err(Error::shape(
                "Sequential::evaluate",
                "a non-empty data set",
                &shape,
            ));
        }
        self.check_built()?;
        self.check_samples(
            if prefix.is_empty() {
                "evaluate: the data"
            } else {
                "fit: the validation data"
            },
            data.len(),
            &data.sample_shape(),
        )?;
        let loss = self.loss();
        let metrics = self.metrics();
        let from_logits = loss.fuses_softmax() || loss == Loss::BinaryCrossentropyWithLogits;
        let end = self.logits_end(loss);
        let mut tally = Tally::new(metrics.len());
        let order: Vec<usize> = (0..data.len()).collect();
        for idx in order.chunks(batch_size) {
            let (x, y) = data.batch(idx, None)?;
            let logits = self.forward_range(&x, Mode::Eval, end)?;
            let (value, _) = loss.forward_backward(&logits, Targets::Labels(&y))?;
            tally.add(value, &logits, &y, &metrics, from_logits)?;
        }
        Ok(tally.logs(prefix, &metrics))
    }

    /// Mean loss and accuracy of one batch in evaluation mode, with the compiled loss (sparse
    /// categorical cross-entropy before `compile`).
    ///
    /// # Errors
    /// As [`Sequential::evaluate`].
    pub fn evaluate_batch(&mut self, x: &Tensor, labels: &[usize]) -> Result<(f32, f32)> {
        let data = Dataset::new(x.clone(), labels.to_vec())?;
        let loss = self.loss();
        let from_logits = loss.fuses_softmax() || loss == Loss::BinaryCrossentropyWithLogits;
        let end = self.logits_end(loss);
        let logits = self.forward_range(data.inputs(), Mode::Eval, end)?;
        let (value, _) = loss.forward_backward(&logits, Targets::Labels(labels))?;
        let correct = Metric::Accuracy.count_correct(&logits, labels, from_logits)?;
        Ok((value, correct as f32 / labels.len().max(1) as f32))
    }

    /// Inference on many inputs in batches of `batch_size` (Keras `predict`): the model output in
    /// evaluation mode (probabilities when the model ends in `Softmax`).
    ///
    /// # Shapes
    /// `x: (N, …input_shape) → (N, …output_shape)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not a batch of `input_shape` inputs; [`Error::Config`] for
    /// `batch_size == 0`.
    pub fn predict_batched(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(Error::config("predict", "batch_size", 0, "at least 1"));
        }
        self.check_input(x)?;
        let mut parts = Vec::new();
        for chunk in x.axis_chunks_iter(Axis(0), batch_size) {
            parts.push(self.forward(&chunk.to_owned(), Mode::Eval)?);
        }
        if parts.is_empty() {
            let mut shape = vec![0];
            shape.extend_from_slice(self.output_shape());
            return Ok(Tensor::zeros(IxDyn(&shape)));
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        Ok(ndarray::concatenate(Axis(0), &views).expect("batches share the output shape"))
    }
}
