//! Keras-style training: `fit`, its epoch loop with validation, callbacks and the progress
//! line.

use super::callbacks::{Callback, Control};
use super::fit_distributed::DistStep;
use super::history::{History, Logs, Tally};
use super::{FitOptions, Loss, Sequential, Targets, Verbose};
use crate::data::BatchSource;
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::seq::SliceRandom;
use std::io::{IsTerminal, Write};
use std::time::Instant;

impl Sequential {
    /// Trains the compiled model on `train` (Keras `model.fit`): per epoch, shuffled mini-batches
    /// (seeded), forward, loss, backward, optimizer step; then validation, the progress line and
    /// the callbacks. Returns the [`History`].
    ///
    /// `train` is any [`BatchSource`]: an in-memory [`crate::data::Dataset`], or an
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
