//! What training reports: [`Logs`] (one step's or epoch's values by name), the per-epoch
//! [`History`] `fit` returns, and the per-epoch tally of losses and metric counts.

use super::Metric;
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Loss and metric values by name (`"loss"`, `"accuracy"`, `"val_loss"`, …).
pub type Logs = BTreeMap<String, f32>;

/// Per-epoch values returned by `fit` (Keras `History.history`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Values by name: `"loss"`, `"accuracy"`, `"val_loss"`, `"val_accuracy"`, `"lr"`, … one entry
    /// per completed epoch.
    pub history: BTreeMap<String, Vec<f32>>,
}

impl History {
    /// The curve named `name`, if recorded.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.history.get(name).map(|v| v.as_slice())
    }
    /// Training loss per epoch.
    pub fn loss(&self) -> &[f32] {
        self.get("loss").unwrap_or(&[])
    }
    /// Training accuracy per epoch (empty unless `Metric::Accuracy` was compiled).
    pub fn accuracy(&self) -> &[f32] {
        self.get("accuracy").unwrap_or(&[])
    }
    /// Validation loss per epoch (empty without validation data).
    pub fn val_loss(&self) -> &[f32] {
        self.get("val_loss").unwrap_or(&[])
    }
    /// Validation accuracy per epoch.
    pub fn val_accuracy(&self) -> &[f32] {
        self.get("val_accuracy").unwrap_or(&[])
    }
    /// Number of completed epochs.
    pub fn epochs(&self) -> usize {
        self.loss().len()
    }
    pub(super) fn push(&mut self, logs: &Logs) {
        for (k, v) in logs {
            self.history.entry(k.clone()).or_default().push(*v);
        }
    }
}

/// Sums of the loss and metric counts over the batches of an epoch.
pub(super) struct Tally {
    loss: f64,
    samples: usize,
    correct: Vec<usize>,
}

impl Tally {
    pub(super) fn new(metrics: usize) -> Self {
        Tally {
            loss: 0.0,
            samples: 0,
            correct: vec![0; metrics],
        }
    }

    pub(super) fn add(
        &mut self,
        loss: f32,
        output: &Tensor,
        labels: &[usize],
        metrics: &[Metric],
        from_logits: bool,
    ) -> Result<()> {
        self.loss += loss as f64 * labels.len() as f64;
        self.samples += labels.len();
        for (c, m) in self.correct.iter_mut().zip(metrics) {
            *c += m.count_correct(output, labels, from_logits)?;
        }
        Ok(())
    }

    /// Adds a batch of `n` samples with mean loss `loss` and `correct[k]` hits of metric `k`.
    pub(super) fn add_counts(&mut self, loss: f32, n: usize, correct: &[usize]) {
        self.loss += loss as f64 * n as f64;
        self.samples += n;
        for (c, k) in self.correct.iter_mut().zip(correct) {
            *c += k;
        }
    }

    pub(super) fn logs(&self, prefix: &str, metrics: &[Metric]) -> Logs {
        let n = self.samples.max(1) as f64;
        let mut logs = Logs::new();
        logs.insert(format!("{prefix}loss"), (self.loss / n) as f32);
        for (c, m) in self.correct.iter().zip(metrics) {
            logs.insert(format!("{prefix}{}", m.name()), (*c as f64 / n) as f32);
        }
        logs
    }
}
