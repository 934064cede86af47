//! Keras-style training: `compile`, `fit` (with validation, callbacks and progress),
//! `evaluate` and batched `predict`.

use super::callbacks::{Callback, Control};
use super::fit_distributed::DistStep;
use super::sequential::{named_params_mut, Compiled};
use super::{Loss, Metric, Sequential, Targets};
use crate::data::{Augment, BatchSource, Dataset};
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use crate::layers::Mode;
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use ndarray::{Axis, IxDyn};
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Loss and metric values by name (`"loss"`, `"accuracy"`, `"val_loss"`, …).
pub type Logs = BTreeMap<String, f32>;

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

/// Options of [`Sequential::fit`] (Keras `fit` arguments), built with chained setters.
///
/// Defaults: 1 epoch, batch size 32, shuffling on, the model's seed, no validation,
/// [`Verbose::Auto`], no callbacks, no augmentation.
pub struct FitOptions<'a> {
    epochs: usize,
    initial_epoch: usize,
    batch_size: usize,
    shuffle: bool,
    seed: Option<u64>,
    validation_data: Option<&'a dyn BatchSource>,
    validation_split: f32,
    verbose: Verbose,
    callbacks: Vec<Box<dyn Callback + 'a>>,
    augment: Option<Augment>,
    world: Option<Distributed>,
    micro_batch: Option<usize>,
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
    /// Data evaluated at the end of every epoch (`val_loss`, `val_<metric>`): a [`Dataset`],
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

    fn validate(&self) -> Result<()> {
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
    fn push(&mut self, logs: &Logs) {
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

    fn add(
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

    /// Trains the compiled model on `train` (Keras `model.fit`): per epoch, shuffled mini-batches
    /// (seeded), forward, loss, backward, optimizer step; then validation, the progress line and
    /// the callbacks. Returns the [`History`].
    ///
    /// `train` is any [`BatchSource`]: an in-memory [`Dataset`], or an
    /// [`crate::data::ImageFolder`] whose batches are decoded (and augmented, with epoch `e`'s
    /// stream) as they are needed. Parameters frozen with [`Sequential::freeze`] are not
    /// updated.
    ///
    /// # Errors
    /// [`Error::State`] before `compile`, or when the loss becomes NaN/infinite (naming the epoch
    /// and batch; the weights of the failing step are not updated); [`Error::Config`] for bad
    /// options; [`Error::Label`] / [`Error::Shape`] for data that does not fit the model; errors
    /// returned by callbacks.
    pub fn fit<S: BatchSource>(&mut self, train: &S, opts: FitOptions<'_>) -> Result<History> {
        self.fit_source(train, opts)
    }

    fn fit_source(&mut self, train: &dyn BatchSource, mut opts: FitOptions<'_>) -> Result<History> {
        opts.validate()?;
        self.check_built()?;
        if self.compiled.is_none() {
            return Err(Error::State(
                "Sequential::fit: call compile(optimizer, loss, metrics) first".into(),
            ));
        }
        if train.is_empty() {
            let mut shape = vec![0];
            shape.extend(train.sample_shape());
            return Err(Error::shape(
                "Sequential::fit",
                "a non-empty training set",
                &shape,
            ));
        }
        self.check_samples("fit: the training data", train.len(), &train.sample_shape())?;
        if let Some(v) = opts.validation_data {
            self.check_samples("fit: the validation data", v.len(), &v.sample_shape())?;
        }
        let (held_in, held_out);
        let (train, val): (&dyn BatchSource, Option<&dyn BatchSource>) =
            match (opts.validation_data, opts.validation_split) {
                (Some(v), _) => (train, Some(v)),
                (None, f) if f > 0.0 => {
                    let n_val = ((train.len() as f32) * f).round() as usize;
                    let n_train = train.len() - n_val;
                    if n_val == 0 || n_train == 0 {
                        return Err(Error::config(
                            "fit",
                            "validation_split",
                            f,
                            format!(
                                "a fraction leaving both parts non-empty for {} samples",
                                train.len()
                            ),
                        ));
                    }
                    held_in = crate::data::source::Range {
                        inner: train,
                        offset: 0,
                        len: n_train,
                    };
                    held_out = crate::data::source::Range {
                        inner: train,
                        offset: n_train,
                        len: n_val,
                    };
                    (&held_in, Some(&held_out))
                }
                _ => (train, None),
            };
        let loss = self.loss();
        let metrics = self.metrics();
        let from_logits = loss.fuses_softmax() || loss == Loss::BinaryCrossentropyWithLogits;
        let world = match (&opts.world, opts.micro_batch) {
            (Some(w), _) => Some(w.clone()),
            (None, Some(_)) => Some(Distributed::single()),
            (None, None) => None,
        };
        let micro = opts
            .micro_batch
            .unwrap_or_else(|| crate::distributed::step::default_micro(opts.batch_size));
        if let Some(w) = &world {
            self.prepare_distributed(w)?;
        }
        let root = world.as_ref().is_none_or(|w| w.is_root());
        let verbose = match opts.verbose {
            _ if !root => Verbose::Silent,
            Verbose::Auto if std::io::stderr().is_terminal() => Verbose::ProgressBar,
            Verbose::Auto => Verbose::EpochLine,
            v => v,
        };
        let mut callbacks = std::mem::take(&mut opts.callbacks);
        each_callback(
            self,
            &mut callbacks,
            world.as_ref(),
            "in a callback's on_train_begin",
            |cb, m| cb.on_train_begin(m).map(|()| Control::Continue),
        )?;
        let mut history = History::default();
        let steps = train.len().div_ceil(opts.batch_size);
        if opts.initial_epoch >= opts.epochs {
            return Err(Error::config(
                "fit",
                "initial_epoch",
                opts.initial_epoch,
                format!("less than epochs = {}", opts.epochs),
            ));
        }
        let seed = opts.seed.unwrap_or(self.fit_seed);
        for epoch in opts.initial_epoch..opts.epochs {
            let start = Instant::now();
            // one stream per epoch: a run resumed at `initial_epoch` shuffles and augments
            // exactly as the uninterrupted run did
            let mut rng = crate::init::rng(seed);
            rng.set_stream(epoch as u64);
            let mut order: Vec<usize> = (0..train.len()).collect();
            if opts.shuffle {
                order.shuffle(&mut rng);
            }
            let mut tally = Tally::new(metrics.len());
            for (b, idx) in order.chunks(opts.batch_size).enumerate() {
                if let Some(w) = &world {
                    let step = DistStep {
                        epoch,
                        step: (epoch * steps + b) as u64,
                        micro,
                        augment: opts.augment.as_ref(),
                        seed,
                        loss,
                        metrics: &metrics,
                        from_logits,
                        when: format!("at epoch {} batch {} (of {steps})", epoch + 1, b + 1),
                    };
                    let (value, correct) = self.distributed_step(w, train, idx, &step)?;
                    tally.add_counts(value, idx.len(), &correct);
                    if verbose == Verbose::ProgressBar {
                        progress_bar(
                            epoch,
                            opts.epochs,
                            b + 1,
                            steps,
                            start,
                            &tally.logs("", &metrics),
                        );
                    }
                    continue;
                }
                let (mut x, y) = train.batch(idx, Some(epoch))?;
                if let Some(a) = &opts.augment {
                    x = a.apply(&x, &mut rng)?;
                }
                self.zero_grad();
                let (value, logits) = self.loss_backward_targets(&x, Targets::Labels(&y), loss)?;
                if !value.is_finite() {
                    return Err(Error::State(format!(
                        "fit: the loss became {value} at epoch {} batch {} (of {steps}); training \
                         stopped before the update{}",
                        epoch + 1,
                        b + 1,
                        non_finite_input(&x, idx)
                    )));
                }
                let when = format!("at epoch {} batch {}", epoch + 1, b + 1);
                crate::optim::check_grads_finite(&self.params_mut(), &when)?;
                self.optimizer_step()?;
                tally.add(value, &logits, &y, &metrics, from_logits)?;
                if verbose == Verbose::ProgressBar {
                    progress_bar(
                        epoch,
                        opts.epochs,
                        b + 1,
                        steps,
                        start,
                        &tally.logs("", &metrics),
                    );
                }
            }
            let mut logs = tally.logs("", &metrics);
            if let Some(v) = val {
                logs.extend(match &world {
                    Some(w) => self.evaluate_distributed(w, v, opts.batch_size.max(256), "val_")?,
                    None => self.evaluate_with(v, opts.batch_size.max(256), "val_")?,
                });
            }
            if let Some(opt) = self.optimizer_mut() {
                logs.insert("lr".into(), opt.learning_rate());
            }
            history.push(&logs);
            if verbose != Verbose::Silent {
                let mut e = std::io::stderr().lock();
                let _ = writeln!(
                    e,
                    "{}Epoch {}/{} - {:.1}s - {}",
                    if verbose == Verbose::ProgressBar {
                        "\r\x1b[2K"
                    } else {
                        ""
                    },
                    epoch + 1,
                    opts.epochs,
                    start.elapsed().as_secs_f64(),
                    format_logs(&logs)
                );
            }
            let stop = each_callback(
                self,
                &mut callbacks,
                world.as_ref(),
                &format!("in a callback at the end of epoch {}", epoch + 1),
                |cb, m| cb.on_epoch_end(epoch, &logs, m),
            )?;
            if stop {
                break;
            }
        }
        each_callback(
            self,
            &mut callbacks,
            world.as_ref(),
            "in a callback's on_train_end",
            |cb, m| cb.on_train_end(m).map(|()| Control::Continue),
        )?;
        Ok(history)
    }

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

/// Runs `f` on every callback this rank runs (root-only ones on rank 0 alone), stopping at the
/// first error; returns whether a callback asked to stop. With a world, every rank learns
/// whether any rank failed (`when` names the moment) and whether any asked to stop, so all
/// ranks agree.
fn each_callback(
    model: &mut Sequential,
    callbacks: &mut [Box<dyn Callback + '_>],
    world: Option<&Distributed>,
    when: &str,
    mut f: impl FnMut(&mut dyn Callback, &mut Sequential) -> Result<Control>,
) -> Result<bool> {
    let root = world.is_none_or(|w| w.is_root());
    let mut stop = false;
    let mut result = Ok(());
    for cb in callbacks.iter_mut().filter(|cb| root || !cb.root_only()) {
        match f(cb.as_mut(), model) {
            Ok(c) => stop |= c == Control::Stop,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    match world {
        Some(w) => {
            w.agree(result, when)?;
            // a root-only callback may stop the run: every rank stops with it
            let flags = w.communicator().all_gather_bytes(&[u8::from(stop)])?;
            Ok(flags.iter().any(|f| f.first() == Some(&1)))
        }
        None => result.map(|()| stop),
    }
}

/// Where a batch holds a NaN or ±inf input (`idx` are the samples' indices in the data set):
/// `"; the input of sample 17 of the training data holds inf"`, or nothing.
fn non_finite_input(x: &Tensor, idx: &[usize]) -> String {
    let per = x.len() / idx.len().max(1);
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => format!(
            "; the input of sample {} of the training data holds {} (clean or rescale the data)",
            idx.get(i / per.max(1)).copied().unwrap_or(0),
            x.iter().nth(i).copied().unwrap_or(f32::NAN)
        ),
        None => String::new(),
    }
}

fn format_logs(logs: &Logs) -> String {
    let order = |k: &String| {
        (
            k == "lr",
            k.starts_with("val_"),
            k != "loss" && k != "val_loss",
        )
    };
    let mut keys: Vec<&String> = logs.keys().collect();
    keys.sort_by_key(|k| order(k));
    keys.iter()
        .map(|k| format!("{k}: {:.4}", logs[*k]))
        .collect::<Vec<_>>()
        .join(" - ")
}

fn progress_bar(
    epoch: usize,
    epochs: usize,
    step: usize,
    steps: usize,
    start: Instant,
    logs: &Logs,
) {
    const WIDTH: usize = 30;
    let done = WIDTH * step / steps.max(1);
    let bar: String = (0..WIDTH)
        .map(|i| {
            if i < done {
                '='
            } else if i == done {
                '>'
            } else {
                '.'
            }
        })
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    let eta = elapsed / step as f64 * (steps - step) as f64;
    let mut e = std::io::stderr().lock();
    let _ = write!(
        e,
        "\r\x1b[2KEpoch {}/{epochs} {step:>w$}/{steps} [{bar}] - ETA {eta:.0}s - {}",
        epoch + 1,
        format_logs(logs),
        w = steps.to_string().len()
    );
    let _ = e.flush();
}
