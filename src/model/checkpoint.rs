//! Exact-resume checkpoints of a [`Sequential`] and the [`ModelCheckpoint`] callback.

use super::callbacks::{Callback, Control, MonitorMode};
use super::{Logs, Sequential};
use crate::error::{Error, Result};
use crate::io::Checkpoint;
use std::path::{Path, PathBuf};

/// The checkpoint `kind` of a Sequential model.
const KIND: &str = "sequential";

/// Everything [`Sequential::load_checkpoint`] may change, to roll back to on an error.
struct Snapshot {
    weights: std::collections::BTreeMap<String, crate::tensor::Tensor>,
    frozen: Vec<String>,
    optimizer: Option<(
        std::collections::BTreeMap<String, crate::tensor::Tensor>,
        f32,
    )>,
    rng: Vec<Option<String>>,
    fit_seed: u64,
}

impl Snapshot {
    fn take(model: &Sequential) -> Self {
        Snapshot {
            weights: model.state_dict(),
            frozen: model.frozen_params(),
            optimizer: model
                .compiled
                .as_ref()
                .map(|c| (c.optimizer.state(), c.optimizer.learning_rate())),
            rng: model.layers.iter().map(|l| l.rng_state()).collect(),
            fit_seed: model.fit_seed,
        }
    }

    /// Puts the model back; every part came from this model, so each restore fits.
    fn restore(self, model: &mut Sequential) {
        let _ = model.load_state_dict(&self.weights);
        for (n, p) in model.params_mut() {
            p.set_requires_grad(!self.frozen.contains(&n));
        }
        if let (Some(c), Some((state, lr))) = (model.compiled.as_mut(), self.optimizer) {
            let _ = c.optimizer.load_state(&state);
            c.optimizer.set_learning_rate(lr);
        }
        for (layer, s) in model.layers.iter_mut().zip(self.rng) {
            if let Some(s) = s {
                let _ = layer.set_rng_state(&s);
            }
        }
        model.fit_seed = self.fit_seed;
    }
}

impl Sequential {
    /// One line naming the input shape and every layer, stored in checkpoints and compared on
    /// load (so a checkpoint cannot be loaded into another architecture).
    pub fn architecture(&self) -> String {
        let layers: Vec<String> = self.layers.iter().map(|l| l.describe()).collect();
        format!("input {:?} → {}", self.input_shape(), layers.join(" → "))
    }

    /// Saves everything needed to resume training after `epochs_done` epochs: weights and
    /// buffers, the optimizer state and learning rate, every layer's random stream (dropout),
    /// the fit seed and the architecture. Atomic: a crash mid-save leaves the previous file.
    ///
    /// Resume with [`Sequential::load_checkpoint`] on a model built and compiled the same way,
    /// then `fit` with [`super::FitOptions::initial_epoch`]`(epochs_done)`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>, epochs_done: usize) -> Result<()> {
        let mut ck = Checkpoint::new(KIND);
        ck.weights = self.state_dict();
        ck.meta.insert("architecture".into(), self.architecture());
        ck.meta.insert("epoch".into(), epochs_done.to_string());
        ck.meta.insert("fit_seed".into(), self.fit_seed.to_string());
        ck.meta
            .insert("frozen".into(), self.frozen_params().join("\n"));
        if let Some(c) = &self.compiled {
            ck.optimizer = c.optimizer.state();
            ck.meta
                .insert("optimizer".into(), c.optimizer.name().to_string());
            ck.meta
                .insert("lr".into(), c.optimizer.learning_rate().to_string());
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(s) = layer.rng_state() {
                ck.meta.insert(format!("rng.{i}"), s);
            }
        }
        ck.save(path)
    }

    /// Restores a checkpoint written by [`Sequential::save_checkpoint`] into this model (built,
    /// and compiled with the same optimizer when the checkpoint has optimizer state); returns
    /// the number of epochs it had completed.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] naming the file (not a checkpoint, a newer version,
    /// another kind, another architecture or optimizer); [`Error::Param`] for missing or
    /// misshapen weights.
    ///
    /// Nothing changes unless everything fits: on any error the model's weights, buffers,
    /// frozen flags, optimizer state, learning rate and random streams are as before the call.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let before = Snapshot::take(self);
        let result = self.load_checkpoint_unguarded(path.as_ref());
        if result.is_err() {
            before.restore(self);
        }
        result
    }

    /// [`Sequential::load_checkpoint`] without the rollback.
    fn load_checkpoint_unguarded(&mut self, path: &Path) -> Result<usize> {
        let source = path.display().to_string();
        let ck = Checkpoint::load(path, KIND)?;
        self.restore_checkpoint(&ck, &source)
    }

    /// [`Sequential::load_checkpoint`] for a data-parallel run: rank 0 reads the file and
    /// broadcasts its bytes (it need only exist on rank 0's machine), every rank restores the
    /// same state; then `fit` with [`super::FitOptions::distributed`] and `initial_epoch`.
    /// ([`ModelCheckpoint`] writes on rank 0 only.)
    ///
    /// # Errors
    /// As [`Sequential::load_checkpoint`], on every rank (an [`Error::State`] on the others when
    /// rank 0 fails).
    pub fn load_checkpoint_distributed(
        &mut self,
        path: impl AsRef<Path>,
        world: &crate::distributed::Distributed,
    ) -> Result<usize> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = world.read_on_root(path)?;
        let restored = Checkpoint::from_bytes(&bytes, KIND, &source)
            .and_then(|ck| self.restore_checkpoint(&ck, &source));
        world.agree(restored, &format!("loading {source}"))
    }

    fn restore_checkpoint(&mut self, ck: &Checkpoint, source: &str) -> Result<usize> {
        let source = source.to_string();
        let arch = ck.get("architecture", &source)?;
        if arch != self.architecture() {
            return Err(Error::format(
                &source,
                format!(
                    "the checkpoint is of another architecture:\n  checkpoint: {arch}\n  this model: {}",
                    self.architecture()
                ),
            ));
        }
        // the frozen flags (absent in older checkpoints: the flags are left as they are)
        let frozen: Option<Vec<&str>> = ck
            .meta
            .get("frozen")
            .map(|f| f.split('\n').filter(|n| !n.is_empty()).collect());
        if let Some(names) = &frozen {
            let known: Vec<String> = self.params().into_iter().map(|(n, _)| n).collect();
            if let Some(bad) = names.iter().find(|n| !known.iter().any(|k| k == *n)) {
                return Err(Error::format(
                    &source,
                    format!("the checkpoint lists the frozen parameter {bad:?}, which this model does not have"),
                ));
            }
        }
        self.load_state_dict(&ck.weights)?;
        if let Some(names) = &frozen {
            for (n, p) in self.params_mut() {
                p.set_requires_grad(!names.contains(&n.as_str()));
            }
        }
        if let Some(name) = ck.meta.get("optimizer") {
            let c = self.compiled.as_mut().ok_or_else(|| {
                Error::State(format!(
                    "{source} holds {name} state: compile the model with {name} before loading"
                ))
            })?;
            if c.optimizer.name() != name {
                return Err(Error::format(
                    &source,
                    format!(
                        "optimizer state of {name}, but the model is compiled with {}",
                        c.optimizer.name()
                    ),
                ));
            }
            c.optimizer.load_state(&ck.optimizer)?;
            c.optimizer.set_learning_rate(ck.parse("lr", &source)?);
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            if layer.rng_state().is_some() {
                layer.set_rng_state(ck.get(&format!("rng.{i}"), &source)?)?;
            }
        }
        self.fit_seed = ck.parse("fit_seed", &source)?;
        ck.parse("epoch", &source)
    }
}

/// Saves a checkpoint during `fit` (Keras `ModelCheckpoint`): every `every` epochs, or only
/// when a monitored value improves (`save_best_only`). The file is overwritten atomically.
///
/// ```
/// use handgrad::model::ModelCheckpoint;
/// let cb = ModelCheckpoint::new("/tmp/model.ckpt").monitor("val_loss").save_best_only(true);
/// ```
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    path: PathBuf,
    every: usize,
    monitor: String,
    mode: MonitorMode,
    best_only: bool,
    best: Option<f32>,
}

impl ModelCheckpoint {
    /// Saves to `path` after every epoch.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModelCheckpoint {
            path: path.into(),
            every: 1,
            monitor: "val_loss".into(),
            mode: MonitorMode::Auto,
            best_only: false,
            best: None,
        }
    }

    /// Saves every `n` epochs (default 1; values below 1 count as 1).
    pub fn every(mut self, n: usize) -> Self {
        self.every = n.max(1);
        self
    }

    /// The logged value that `save_best_only` watches (default `"val_loss"`).
    pub fn monitor(mut self, key: &str) -> Self {
        self.monitor = key.to_string();
        self
    }

    /// Whether smaller or larger is better (default: smaller for names with "loss").
    pub fn mode(mut self, mode: MonitorMode) -> Self {
        self.mode = mode;
        self
    }

    /// Only save when the monitored value improves on the best so far (default false).
    pub fn save_best_only(mut self, best_only: bool) -> Self {
        self.best_only = best_only;
        self
    }
}

impl Callback for ModelCheckpoint {
    fn root_only(&self) -> bool {
        true
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        model: &mut Sequential,
    ) -> Result<Control> {
        if !(epoch + 1).is_multiple_of(self.every) {
            return Ok(Control::Continue);
        }
        if self.best_only {
            let v = *logs.get(&self.monitor).ok_or_else(|| {
                Error::config(
                    "ModelCheckpoint",
                    "monitor",
                    &self.monitor,
                    format!(
                        "one of the logged values {:?}",
                        logs.keys().collect::<Vec<_>>()
                    ),
                )
            })?;
            let minimise = match self.mode {
                MonitorMode::Min => true,
                MonitorMode::Max => false,
                MonitorMode::Auto => self.monitor.contains("loss"),
            };
            let better = match self.best {
                None => true,
                Some(b) => (minimise && v < b) || (!minimise && v > b),
            };
            if !better {
                return Ok(Control::Continue);
            }
            self.best = Some(v);
        }
        model.save_checkpoint(&self.path, epoch + 1)?;
        Ok(Control::Continue)
    }
}
