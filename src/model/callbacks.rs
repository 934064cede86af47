//! Callbacks run by `fit` at the end of every epoch: early stopping, learning-rate reduction on a
//! plateau, and user closures.

use super::history::Logs;
use super::Sequential;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Whether training goes on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on with the next epoch.
    Continue,
    /// Stop after this epoch.
    Stop,
}

/// A hook into `fit` (Keras `Callback`).
pub trait Callback {
    /// Before the first epoch.
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }
    /// After epoch `epoch` (0-based) with its logs (`loss`, `accuracy`, `val_loss`, …, `lr`).
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        model: &mut Sequential,
    ) -> Result<Control>;
    /// After the last epoch (also after an early stop).
    fn on_train_end(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }
    /// Whether, in a data-parallel `fit` ([`super::FitOptions::distributed`]), only rank 0 runs
    /// this callback (default `false`: every rank runs it on the same reduced logs, so decisions
    /// such as early stopping agree). Callbacks that write files, such as
    /// [`super::ModelCheckpoint`], return `true`; a `Stop` or an error from them still reaches
    /// every rank.
    fn root_only(&self) -> bool {
        false
    }
}

/// Whether a monitored quantity should go down or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MonitorMode {
    /// Down for names containing "loss", up otherwise (Keras `mode="auto"`).
    #[default]
    Auto,
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// Tracks the best value of a monitored quantity.
#[derive(Debug, Clone)]
struct Monitor {
    key: String,
    mode: MonitorMode,
    min_delta: f32,
    best: Option<f32>,
}

impl Monitor {
    fn new(key: &str, mode: MonitorMode, min_delta: f32) -> Self {
        Monitor {
            key: key.to_string(),
            mode,
            min_delta: min_delta.abs(),
            best: None,
        }
    }

    fn minimise(&self) -> bool {
        match self.mode {
            MonitorMode::Min => true,
            MonitorMode::Max => false,
            MonitorMode::Auto => self.key.contains("loss"),
        }
    }

    fn value(&self, logs: &Logs, who: &str) -> Result<f32> {
        logs.get(&self.key).copied().ok_or_else(|| {
            Error::config(
                who,
                "monitor",
                &self.key,
                format!(
                    "one of the logged values {:?}",
                    logs.keys().collect::<Vec<_>>()
                ),
            )
        })
    }

    /// Records `v`; returns whether it improved on the best by more than `min_delta`.
    fn improved(&mut self, v: f32) -> bool {
        let better = match self.best {
            None => true,
            Some(b) if self.minimise() => v < b - self.min_delta,
            Some(b) => v > b + self.min_delta,
        };
        if better {
            self.best = Some(v);
        }
        better
    }
}

/// Stops training when a monitored value stops improving (Keras `EarlyStopping`).
///
/// Defaults: monitor `"val_loss"`, `min_delta` 0, `patience` 0, mode auto,
/// `restore_best_weights` false.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    wait: usize,
    restore_best_weights: bool,
    best_weights: Option<BTreeMap<String, Tensor>>,
    stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    /// Monitors `"val_loss"` with patience 0.
    pub fn new() -> Self {
        EarlyStopping {
            monitor: Monitor::new("val_loss", MonitorMode::Auto, 0.0),
            patience: 0,
            wait: 0,
            restore_best_weights: false,
            best_weights: None,
            stopped_epoch: None,
        }
    }
    /// The logged value to watch, e.g. `"val_accuracy"`.
    pub fn monitor(mut self, key: &str) -> Self {
        self.monitor.key = key.to_string();
        self
    }
    /// Stop after this many consecutive epochs without improvement (default 0: the first one),
    /// as Keras counts it.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }
    /// The smallest change that counts as an improvement (default 0).
    pub fn min_delta(mut self, min_delta: f32) -> Self {
        self.monitor.min_delta = min_delta.abs();
        self
    }
    /// Whether smaller or larger is better (default auto).
    pub fn mode(mut self, mode: MonitorMode) -> Self {
        self.monitor.mode = mode;
        self
    }
    /// Whether to put back the weights of the best epoch when training ends (default false).
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }
    /// The epoch (0-based) after which training was stopped, if it was.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self::new()
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        self.wait = 0;
        self.monitor.best = None;
        self.best_weights = None;
        self.stopped_epoch = None;
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        model: &mut Sequential,
    ) -> Result<Control> {
        let v = self.monitor.value(logs, "EarlyStopping")?;
        if self.monitor.improved(v) {
            self.wait = 0;
            if self.restore_best_weights {
                self.best_weights = Some(model.state_dict());
            }
            return Ok(Control::Continue);
        }
        self.wait += 1;
        if self.wait >= self.patience {
            self.stopped_epoch = Some(epoch);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, model: &mut Sequential) -> Result<()> {
        if let Some(w) = self.best_weights.take() {
            model.load_state_dict(&w)?;
        }
        Ok(())
    }
}

/// Multiplies the learning rate by `factor` when a monitored value stops improving (Keras
/// `ReduceLROnPlateau`).
///
/// Defaults: monitor `"val_loss"`, `factor` 0.1, `patience` 10, `min_delta` 1e-4, `cooldown` 0,
/// `min_lr` 0.
#[derive(Debug, Clone)]
pub struct ReduceLROnPlateau {
    monitor: Monitor,
    factor: f32,
    patience: usize,
    cooldown: usize,
    min_lr: f32,
    wait: usize,
    cooldown_left: usize,
}

impl ReduceLROnPlateau {
    /// Monitors `"val_loss"` with Keras's defaults.
    pub fn new() -> Self {
        ReduceLROnPlateau {
            monitor: Monitor::new("val_loss", MonitorMode::Auto, 1e-4),
            factor: 0.1,
            patience: 10,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_left: 0,
        }
    }
    /// The logged value to watch.
    pub fn monitor(mut self, key: &str) -> Self {
        self.monitor.key = key.to_string();
        self
    }
    /// The factor applied to the learning rate, in `(0, 1)` (default 0.1).
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }
    /// Epochs without improvement before reducing (default 10).
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }
    /// Epochs to wait after a reduction before counting again (default 0).
    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }
    /// The learning rate is never reduced below this (default 0).
    pub fn min_lr(mut self, min_lr: f32) -> Self {
        self.min_lr = min_lr;
        self
    }
    /// The smallest change that counts as an improvement (default 1e-4).
    pub fn min_delta(mut self, min_delta: f32) -> Self {
        self.monitor.min_delta = min_delta.abs();
        self
    }
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        Self::new()
    }
}

impl Callback for ReduceLROnPlateau {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::config(
                "ReduceLROnPlateau",
                "factor",
                self.factor,
                "a value in (0, 1)",
            ));
        }
        self.wait = 0;
        self.cooldown_left = 0;
        self.monitor.best = None;
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &Logs,
        model: &mut Sequential,
    ) -> Result<Control> {
        let v = self.monitor.value(logs, "ReduceLROnPlateau")?;
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.wait = 0;
        }
        if self.monitor.improved(v) {
            self.wait = 0;
        } else if self.cooldown_left == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                if let Some(opt) = model.optimizer_mut() {
                    let lr = opt.learning_rate();
                    let new = (lr * self.factor).max(self.min_lr);
                    if new < lr {
                        opt.set_learning_rate(new);
                    }
                }
                self.cooldown_left = self.cooldown;
                self.wait = 0;
            }
        }
        Ok(Control::Continue)
    }
}

/// A user callback from a closure `FnMut(epoch, &logs, &mut model) -> Result<Control>` (Keras
/// `LambdaCallback` for `on_epoch_end`).
pub struct LambdaCallback<F>(pub F);

impl<F> Callback for LambdaCallback<F>
where
    F: FnMut(usize, &Logs, &mut Sequential) -> Result<Control>,
{
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        model: &mut Sequential,
    ) -> Result<Control> {
        (self.0)(epoch, logs, model)
    }
}
