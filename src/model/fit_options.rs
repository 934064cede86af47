//! [`FitOptions`]: the arguments of `Sequential::fit` (Keras `fit`'s), as chained setters, and
//! [`Verbose`], how `fit` reports progress.

use super::callbacks::Callback;
use crate::data::{Augment, BatchSource};
use crate::distributed::Distributed;
use crate::error::{Error, Result};

/// How `fit` reports progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbose {
    /// Nothing (tests, libraries).
    Silent,
    /// One line per epoch (Keras `verbose=2`).
    EpochLine,
    /// A live progress bar redrawn during the epoch, then the epoch line (Keras `verbose=1`).
    ProgressBar,
    /// A progress bar when stderr is a terminal, else one line per epoch (the default).
    #[default]
    Auto,
}

/// Options of [`super::Sequential::fit`] (Keras `fit` arguments), built with chained setters.
///
/// Defaults: 1 epoch, batch size 32, shuffling on, the model's seed, no validation,
/// [`Verbose::Auto`], no callbacks, no augmentation.
pub struct FitOptions<'a> {
    pub(super) epochs: usize,
    pub(super) initial_epoch: usize,
    pub(super) batch_size: usize,
    pub(super) shuffle: bool,
    pub(super) seed: Option<u64>,
    pub(super) validation_data: Option<&'a dyn BatchSource>,
    pub(super) validation_split: f32,
    pub(super) verbose: Verbose,
    pub(super) callbacks: Vec<Box<dyn Callback + 'a>>,
    pub(super) augment: Option<Augment>,
    pub(super) world: Option<Distributed>,
    pub(super) micro_batch: Option<usize>,
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            initial_epoch: 0,
            batch_size: 32,
            shuffle: true,
            seed: None,
            validation_data: None,
            validation_split: 0.0,
            verbose: Verbose::Auto,
            callbacks: Vec::new(),
            augment: None,
            world: None,
            micro_batch: None,
        }
    }
}

impl<'a> FitOptions<'a> {
    /// The defaults (see [`FitOptions`]).
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of passes over the training data (default 1).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    /// The epoch to start at (Keras `initial_epoch`, default 0): to resume a run from a
    /// checkpoint saved after `k` epochs, load it and fit with `.initial_epoch(k)` and the same
    /// `epochs`; every epoch has its own shuffling stream, so the result is bit-identical to the
    /// uninterrupted run.
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }
    /// Samples per gradient step (default 32); the last batch of an epoch may be smaller.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// Whether to shuffle the training samples every epoch (default `true`).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// Seed of the shuffling (default: drawn from the RNG given to `build`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Data evaluated at the end of every epoch (`val_loss`, `val_<metric>`): a [`crate::data::Dataset`],
    /// an [`crate::data::ImageFolder`] or any other [`BatchSource`] (never augmented).
    pub fn validation_data<S: BatchSource>(mut self, data: &'a S) -> Self {
        self.validation_data = Some(data);
        self
    }
    /// Holds out the LAST `fraction` of the training samples (before shuffling) for validation,
    /// as Keras does. Ignored when `validation_data` is given.
    pub fn validation_split(mut self, fraction: f32) -> Self {
        self.validation_split = fraction;
        self
    }
    /// Progress reporting (default [`Verbose::Auto`]).
    pub fn verbose(mut self, verbose: Verbose) -> Self {
        self.verbose = verbose;
        self
    }
    /// Adds a callback (e.g. [`super::EarlyStopping`], [`super::ReduceLROnPlateau`]).
    pub fn callback(mut self, callback: impl Callback + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Augments every training batch (random crop with padding, horizontal flip) with the
    /// fit's seeded RNG; validation data is never augmented.
    pub fn augment(mut self, augment: Augment) -> Self {
        self.augment = Some(augment);
        self
    }

    /// Trains data-parallel over `world` (see [`crate::distributed`]): every rank runs `fit` on
    /// the same data with the same options; each takes the same seeded permutation per epoch and
    /// a contiguous slice of every global batch of `batch_size` samples; the gradients are summed
    /// over the ranks (in `world`'s [`crate::distributed::Reduction`] mode) and the loss is the
    /// mean over the global batch, so uneven last batches count correctly. Rank 0's parameters
    /// and dropout streams are broadcast first; only rank 0 prints and runs
    /// [`Callback::root_only`] callbacks (checkpoints). Validation batches are split over the
    /// ranks and summed in order (the same numbers as one process).
    ///
    /// In the deterministic mode the global batch is cut into micro-batches of
    /// [`FitOptions::micro_batch`] samples (default `⌈batch_size / 4⌉`), so the weights are
    /// bit-identical for any rank count and to `Distributed::single()`. Augmentation is drawn
    /// per sample, keyed by the seed, the global step and the sample's row, and dropout by the
    /// step and the row ([`crate::layers::Layer::seek_examples`]). Models with running statistics
    /// (BatchNorm) are refused: each rank would update them from its own samples only.
    pub fn distributed(mut self, world: &Distributed) -> Self {
        self.world = Some(world.clone());
        self
    }

    /// Computes each batch's gradient as the fixed-order sum of micro-batches of `rows` samples
    /// (see [`FitOptions::distributed`]); without `distributed` this runs the same
    /// micro-batched arithmetic in this process alone (the bits of any data-parallel run with
    /// the same micro-batch size). Default: off (one forward per batch); `⌈batch_size / 4⌉`
    /// when distributed.
    pub fn micro_batch(mut self, rows: usize) -> Self {
        self.micro_batch = Some(rows);
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        crate::distributed::step::check_micro("fit", self.micro_batch)?;
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        if self.epochs == 0 {
            return Err(Error::config("fit", "epochs", 0, "at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("fit", "batch_size", 0, "at least 1"));
        }
        if !(0.0..1.0).contains(&self.validation_split) {
            return Err(Error::config(
                "fit",
                "validation_split",
                self.validation_split,
                "a value in [0, 1)",
            ));
        }
        Ok(())
    }
}
