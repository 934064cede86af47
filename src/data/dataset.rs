//! `Dataset`: inputs with integer labels, held in memory, and seeded mini-batches over it.

use crate::error::{Error, Result};
use crate::init::Rng;
use crate::tensor::Tensor;
use ndarray::{Axis, IxDyn};
use rand::seq::SliceRandom;

/// Inputs `(N, …)` with one class label per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    inputs: Tensor,
    labels: Vec<usize>,
}

impl Dataset {
    /// Pairs inputs (sample axis first) with their labels.
    ///
    /// # Shapes
    /// `inputs: (N, …)`, `labels: [N]`.
    ///
    /// # Errors
    /// [`Error::Shape`] for rank-0 inputs; [`Error::Label`] when `labels.len() != N`.
    pub fn new(inputs: Tensor, labels: Vec<usize>) -> Result<Self> {
        if inputs.ndim() == 0 {
            return Err(Error::shape(
                "Dataset::new",
                "inputs with a sample axis (N, …)",
                inputs.shape(),
            ));
        }
        if inputs.shape()[0] != labels.len() {
            return Err(Error::label(
                "Dataset::new",
                format!(
                    "{} labels for {} samples (inputs shape {:?})",
                    labels.len(),
                    inputs.shape()[0],
                    inputs.shape()
                ),
            ));
        }
        Ok(Dataset { inputs, labels })
    }

    /// The number of samples `N`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All inputs, `(N, …)`.
    pub fn inputs(&self) -> &Tensor {
        &self.inputs
    }

    /// All labels, `[N]`.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Takes the data set apart into its inputs `(N, …)` and labels `[N]`.
    pub fn into_parts(self) -> (Tensor, Vec<usize>) {
        (self.inputs, self.labels)
    }

    /// The per-sample input shape (without `N`).
    pub fn sample_shape(&self) -> &[usize] {
        &self.inputs.shape()[1..]
    }

    /// The samples at `indices`, in that order, as a new batch `(len, …)` with its labels.
    ///
    /// # Errors
    /// [`Error::Label`] naming the first index `≥ N`.
    pub fn select(&self, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        if let Some((pos, &i)) = indices.iter().enumerate().find(|&(_, &i)| i >= self.len()) {
            return Err(Error::label(
                "Dataset::select",
                format!(
                    "index {i} at position {pos} is out of range for a data set of {} samples",
                    self.len()
                ),
            ));
        }
        Ok(self.select_unchecked(indices))
    }

    /// [`Dataset::select`] for indices known to be in range (this crate's iterators).
    fn select_unchecked(&self, indices: &[usize]) -> (Tensor, Vec<usize>) {
        let x = self.inputs.select(Axis(0), indices);
        let y = indices.iter().map(|&i| self.labels[i]).collect();
        (x, y)
    }

    /// The first `min(n, N)` samples as a new data set, e.g. a few test images to `predict`:
    /// `model.predict(test.take(5).inputs())`.
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        let (inputs, labels) = self.select_unchecked(&idx);
        Dataset { inputs, labels }
    }

    /// Splits into `(first, rest)` after shuffling the sample order with `seed`, with
    /// `round(N·fraction)` samples in `first`: `split(0.9, seed)` gives 90 % for training and
    /// 10 % for validation, the same convention as [`crate::data::LmDataset::split`].
    ///
    /// # Errors
    /// [`Error::Config`] when `fraction` is not in `[0, 1]`.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(Error::config(
                "Dataset::split",
                "fraction",
                fraction,
                "a value in [0, 1]",
            ));
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut crate::init::rng(seed));
        let n_first = ((self.len() as f64 * fraction).round() as usize).min(self.len());
        let (a, b) = idx.split_at(n_first);
        let (xa, ya) = self.select_unchecked(a);
        let (xb, yb) = self.select_unchecked(b);
        Ok((
            Dataset {
                inputs: xa,
                labels: ya,
            },
            Dataset {
                inputs: xb,
                labels: yb,
            },
        ))
    }

    /// Mini-batches of `batch_size` samples (the last may be smaller), in a shuffled order drawn
    /// from `rng` when `shuffle`, else in order.
    ///
    /// # Errors
    /// [`Error::Config`] for `batch_size == 0`.
    pub fn batches(&self, batch_size: usize, shuffle: Option<&mut Rng>) -> Result<Batches<'_>> {
        if batch_size == 0 {
            return Err(Error::config(
                "Dataset::batches",
                "batch_size",
                0,
                "at least 1",
            ));
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(rng) = shuffle {
            order.shuffle(rng);
        }
        Ok(Batches {
            data: self,
            order,
            batch_size,
            pos: 0,
        })
    }

    /// Builds a dataset from flat rows: `inputs` holds `N·Π(sample_shape)` values.
    ///
    /// # Errors
    /// [`Error::Shape`] when the value count does not match.
    pub fn from_flat(values: Vec<f32>, sample_shape: &[usize], labels: Vec<usize>) -> Result<Self> {
        let mut shape = vec![labels.len()];
        shape.extend_from_slice(sample_shape);
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            return Err(Error::shape(
                "Dataset::from_flat",
                format!(
                    "{expected} values for {} samples of {sample_shape:?}",
                    labels.len()
                ),
                &[values.len()],
            ));
        }
        let inputs = Tensor::from_shape_vec(IxDyn(&shape), values).expect("checked length");
        Dataset::new(inputs, labels)
    }
}

/// An iterator of `(inputs, labels)` mini-batches over a [`Dataset`].
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Vec<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let batch = self.data.select_unchecked(&self.order[self.pos..end]);
        self.pos = end;
        Some(batch)
    }
}
