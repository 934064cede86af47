//! [`BatchSource`]: anything `fit` / `evaluate` can draw labelled mini-batches from — an
//! in-memory [`Dataset`] or a streaming [`super::ImageFolder`].

use super::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A labelled data set that produces batches on demand (Keras `Sequence`, a PyTorch
/// map-style `Dataset` + collate).
///
/// Implementations must be deterministic: the same `indices` and `epoch` give the same bits
/// whatever the thread count (augmenting sources derive their random numbers from the epoch
/// and each sample's index, never from the order of work).
pub trait BatchSource: Sync {
    /// The number of samples `N`.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-sample input shape (without `N`), e.g. `[3, 224, 224]`.
    fn sample_shape(&self) -> Vec<usize>;

    /// The samples at `indices`, in that order, with their labels.
    ///
    /// `epoch` is `Some(e)` while training (a source with augmentation draws epoch `e`'s random
    /// choices) and `None` for evaluation (no augmentation).
    ///
    /// # Shapes
    /// `indices: [B] → ((B, …sample_shape), [B])`.
    ///
    /// # Errors
    /// [`Error::Shape`] for an index `≥ N`; the source's own errors (e.g. a file that cannot be
    /// decoded, named).
    fn batch(&self, indices: &[usize], epoch: Option<usize>) -> Result<(Tensor, Vec<usize>)>;
}

/// The error for an index outside a source of `n` samples.
pub(crate) fn check_indices(op: &str, indices: &[usize], n: usize) -> Result<()> {
    match indices.iter().find(|&&i| i >= n) {
        Some(&i) => Err(Error::shape(
            op,
            format!("sample indices below {n}, got index {i}"),
            &[n],
        )),
        None => Ok(()),
    }
}

impl BatchSource for Dataset {
    fn len(&self) -> usize {
        Dataset::len(self)
    }

    fn sample_shape(&self) -> Vec<usize> {
        Dataset::sample_shape(self).to_vec()
    }

    fn batch(&self, indices: &[usize], _epoch: Option<usize>) -> Result<(Tensor, Vec<usize>)> {
        check_indices("Dataset::batch", indices, Dataset::len(self))?;
        self.select(indices)
    }
}

/// Samples `offset .. offset + len` of another source, renumbered from 0 (the
/// `validation_split` parts).
pub(crate) struct Range<'a> {
    pub(crate) inner: &'a dyn BatchSource,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl BatchSource for Range<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.inner.sample_shape()
    }

    fn batch(&self, indices: &[usize], epoch: Option<usize>) -> Result<(Tensor, Vec<usize>)> {
        check_indices("BatchSource range", indices, self.len)?;
        let shifted: Vec<usize> = indices.iter().map(|&i| i + self.offset).collect();
        self.inner.batch(&shifted, epoch)
    }
}
