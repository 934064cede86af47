//! Metrics reported during `fit` and `evaluate`.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A metric over class labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// The fraction of samples whose predicted class is the label: the argmax of a `(B, V)`
    /// output, or for a `(B, 1)` output the value above 0.5 (probabilities) / 0 (logits).
    Accuracy,
    /// The fraction of samples whose label is among the `k` highest outputs (Keras
    /// `top_k_categorical_accuracy`; a tie with the label's score counts in its favour).
    TopKAccuracy(usize),
}

impl Metric {
    /// The name used in logs and [`super::History`], e.g. `"accuracy"`, `"top_5_accuracy"`.
    pub fn name(&self) -> String {
        match self {
            Metric::Accuracy => "accuracy".into(),
            Metric::TopKAccuracy(k) => format!("top_{k}_accuracy"),
        }
    }

    /// How many samples of the batch are correct. `logits` tells whether a single-column output
    /// is a logit (threshold 0) or a probability (threshold 0.5).
    ///
    /// # Shapes
    /// `output: (B, V)`, `labels: [B]`.
    ///
    /// # Errors
    /// [`Error::Shape`] for an output that is not `(B, V)`; [`Error::Label`] for a label count
    /// other than `B`; [`Error::Config`] for `k == 0`.
    pub fn count_correct(&self, output: &Tensor, labels: &[usize], logits: bool) -> Result<usize> {
        if output.ndim() != 2 {
            return Err(Error::shape(self.name(), "(B, V) outputs", output.shape()));
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
        let out = output.as_standard_layout();
        let rows = out.as_slice().expect("standard layout").chunks(v.max(1));
        let correct = match *self {
            Metric::Accuracy if v == 1 => {
                let threshold = if logits { 0.0 } else { 0.5 };
                rows.zip(labels)
                    .filter(|(r, l)| usize::from(r[0] > threshold) == **l)
                    .count()
            }
            Metric::Accuracy => rows.zip(labels).filter(|(r, l)| argmax(r) == **l).count(),
            Metric::TopKAccuracy(0) => {
                return Err(Error::config("top_k_accuracy", "k", 0, "at least 1"))
            }
            Metric::TopKAccuracy(k) => rows
                .zip(labels)
                .filter(|(r, l)| **l < v && r.iter().filter(|&&x| x > r[**l]).count() < k)
                .count(),
        };
        Ok(correct)
    }
}

/// Index of the largest value (the first one on ties), as `torch.argmax` / `np.argmax`.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The confusion matrix of predicted classes against labels: entry `[t, p]` counts samples of
/// true class `t` predicted as `p` (rows = truth, as scikit-learn).
///
/// # Shapes
/// `output: (B, V)` scores or probabilities, `labels: [B]` → `(classes, classes)`.
///
/// # Errors
/// [`Error::Shape`] for an output that is not `(B, classes)`; [`Error::Label`] for a label count
/// other than `B` or a label `≥ classes`.
pub fn confusion_matrix(
    output: &Tensor,
    labels: &[usize],
    classes: usize,
) -> Result<ndarray::Array2<usize>> {
    if output.ndim() != 2 || output.shape()[1] != classes {
        return Err(Error::shape(
            "confusion_matrix",
            format!("(B, {classes}) scores"),
            output.shape(),
        ));
    }
    if labels.len() != output.shape()[0] {
        return Err(Error::label(
            "confusion_matrix",
            format!(
                "{} labels for {} predictions",
                labels.len(),
                output.shape()[0]
            ),
        ));
    }
    let mut m = ndarray::Array2::<usize>::zeros((classes, classes));
    let out = output.as_standard_layout();
    for (i, (row, &t)) in out
        .as_slice()
        .expect("standard layout")
        .chunks(classes)
        .zip(labels)
        .enumerate()
    {
        if t >= classes {
            return Err(Error::label(
                "confusion_matrix",
                format!("label {t} at index {i} is out of range for {classes} classes"),
            ));
        }
        m[[t, argmax(row)]] += 1;
    }
    Ok(m)
}
