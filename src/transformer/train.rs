//! [`LmTrainer`]: the language-model training loop (AdamW, warmup + cosine, clipping,
//! validation loss, progress line), for any [`TrainableLm`] (the GPT, the Llama) on any
//! [`LmBatches`] (a token stream, chat conversations).

use super::Gpt;
use crate::data::LmDataset;
use crate::error::{Error, Result};
use crate::init::{rng, Rng};
use crate::optim::{check_grads_finite, AdamW, LrSchedule, Optimizer};
use crate::param::Param;
use ndarray::{Array2, ArrayView2};

/// A causal language model that [`LmTrainer`] can train: a training forward with the mean
/// next-token loss, a backward accumulating into named parameters, and a validation loss.
pub trait TrainableLm {
    /// Training forward + mean cross-entropy over targets ≠ [`super::IGNORE_INDEX`], keeping
    /// what [`TrainableLm::backward`] needs.
    ///
    /// # Shapes
    /// `ids: (B, T)`, `targets: (B, T)` → scalar.
    ///
    /// # Errors
    /// The model's own shape, id and state errors.
    fn forward_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32>;
    /// Back-propagates the last [`TrainableLm::forward_loss`], accumulating gradients.
    ///
    /// # Errors
    /// [`Error::State`] without a preceding training forward.
    fn backward(&mut self) -> Result<()>;
    /// The mean loss in evaluation mode (no dropout, no backward).
    ///
    /// # Shapes
    /// `ids: (B, T)`, `targets: (B, T)` → scalar.
    ///
    /// # Errors
    /// As [`TrainableLm::forward_loss`].
    fn eval_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32>;
    /// The trainable parameters by name (what the optimizer steps and checkpoints store).
    fn params_mut(&mut self) -> Vec<(String, &mut Param)>;
    /// Sets every gradient to zero.
    fn zero_grad(&mut self);
    /// The longest sequence the model accepts and the config field that says so
    /// (`("block_size", 1024)` for GPT-2).
    fn max_len(&self) -> (&'static str, usize);
    /// The vocabulary size `V`: [`LmTrainer::train`] checks every token of the data against
    /// it before the first step (default `usize::MAX`: unknown, no check).
    fn vocab_size(&self) -> usize {
        usize::MAX
    }
    /// Keys the dropout of the next training forward by the global training `step` and the
    /// global index of the batch's first row (see [`crate::layers::Layer::seek_examples`]), as
    /// micro-batched and data-parallel training need. Models without dropout keep the default,
    /// which does nothing.
    fn seek_examples(&mut self, _step: u64, _first_row: usize) {}
}

impl TrainableLm for Gpt {
    fn forward_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        Gpt::forward_loss(self, ids, targets)
    }
    fn backward(&mut self) -> Result<()> {
        Gpt::backward(self)
    }
    fn eval_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        Gpt::loss(self, ids, targets)
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Gpt::params_mut(self)
    }
    fn zero_grad(&mut self) {
        Gpt::zero_grad(self)
    }
    fn max_len(&self) -> (&'static str, usize) {
        ("block_size", self.config().block_size)
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn seek_examples(&mut self, step: u64, first_row: usize) {
        Gpt::seek_examples(self, step, first_row)
    }
}

/// Where [`LmTrainer`] gets its batches: `(inputs, targets)` pairs of `(B, T)` token ids, with
/// [`super::IGNORE_INDEX`] targets where no loss is wanted (padding, prompts).
pub trait LmBatches {
    /// The sequence length `T` of every batch.
    fn seq_len(&self) -> usize;
    /// A random training batch of `batch_size` rows drawn with `rng` (a seed fixes the whole
    /// sequence of batches).
    ///
    /// # Shapes
    /// → `(B, T)`, `(B, T)`.
    fn sample_batch(&self, batch_size: usize, rng: &mut Rng) -> (Array2<usize>, Array2<usize>);
    /// Deterministic validation batches of at most `batch_size` rows, `max_rows` rows in all.
    ///
    /// # Shapes
    /// → `[(≤ B, T), (≤ B, T)]`.
    fn eval_batches(
        &self,
        max_rows: usize,
        batch_size: usize,
    ) -> Vec<(Array2<usize>, Array2<usize>)>;
    /// The largest input token id anywhere in the data and where it is (e.g.
    /// `"token 51234"`), checked against the model's vocabulary before training starts
    /// (default `None`: not known).
    fn max_token_id(&self) -> Option<(usize, String)> {
        None
    }
}

impl LmBatches for LmDataset {
    fn seq_len(&self) -> usize {
        self.block_size()
    }
    fn max_token_id(&self) -> Option<(usize, String)> {
        let (pos, &id) = self
            .tokens()
            .iter()
            .enumerate()
            .max_by_key(|&(i, &id)| (id, std::cmp::Reverse(i)))?;
        Some((id, format!("token {pos} of the stream")))
    }
    fn sample_batch(&self, batch_size: usize, rng: &mut Rng) -> (Array2<usize>, Array2<usize>) {
        self.batch(batch_size, rng)
    }
    fn eval_batches(
        &self,
        max_rows: usize,
        batch_size: usize,
    ) -> Vec<(Array2<usize>, Array2<usize>)> {
        self.eval_starts(max_rows)
            .chunks(batch_size.max(1))
            .map(|c| self.batch_at(c))
            .collect()
    }
}
use std::io::Write;
use std::time::Instant;

/// Options of [`LmTrainer`] (nanoGPT-style defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmTrainOptions {
    /// Optimizer steps (default 1000).
    pub steps: usize,
    /// Windows per step `B` (default 16); the window length is the dataset's `T`.
    pub batch_size: usize,
    /// Peak learning rate (default `1e-3`).
    pub lr: f32,
    /// Final learning rate of the cosine decay (default `None`: `lr / 10`); at most `lr`.
    pub min_lr: Option<f32>,
    /// Linear warmup steps (default `None`: `min(100, steps / 10)`, so that short runs warm
    /// up for a tenth of their steps); at most `steps`.
    pub warmup_steps: Option<usize>,
    /// AdamW decoupled weight decay on ≥ 2-D weights only (default 0.1).
    pub weight_decay: f32,
    /// AdamW `(β₁, β₂)` (default `(0.9, 0.95)`, as nanoGPT / GPT-3).
    pub betas: (f32, f32),
    /// Clip the global gradient norm to this value (default 1.0; `None`: no clipping).
    pub grad_clip: Option<f32>,
    /// Compute the validation loss every this many steps and after the last (default 100).
    pub eval_interval: usize,
    /// Windows of the validation set used for each validation loss (default 32).
    pub eval_windows: usize,
    /// Seed of the batch sampling (default 1337).
    pub seed: u64,
    /// Print a progress line to stderr at each validation (default true; in a data-parallel
    /// run only rank 0 prints).
    pub verbose: bool,
    /// Compute each step's gradient as the fixed-order sum of micro-batches of this many rows
    /// (default `None`: one forward per step, or `⌈batch_size / 4⌉` rows when
    /// [`LmTrainer::distributed`]); see [`crate::distributed`] for what that makes bit-identical.
    #[serde(default)]
    pub micro_batch: Option<usize>,
}

impl Default for LmTrainOptions {
    fn default() -> Self {
        LmTrainOptions {
            steps: 1000,
            batch_size: 16,
            lr: 1e-3,
            min_lr: None,
            warmup_steps: None,
            weight_decay: 0.1,
            betas: (0.9, 0.95),
            grad_clip: Some(1.0),
            eval_interval: 100,
            eval_windows: 32,
            seed: 1337,
            verbose: true,
            micro_batch: None,
        }
    }
}

impl LmTrainOptions {
    /// The defaults (see the fields); set what differs with the builder methods:
    ///
    /// ```
    /// use handgrad::transformer::LmTrainOptions;
    /// let opts = LmTrainOptions::new().steps(300).lr(3e-4).batch_size(8).verbose(false);
    /// assert_eq!((opts.warmup(), opts.final_lr()), (30, 3e-4 / 10.0));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The warmup length used: `warmup_steps`, or `min(100, steps / 10)` when unset.
    pub fn warmup(&self) -> usize {
        self.warmup_steps.unwrap_or((self.steps / 10).min(100))
    }

    /// The final learning rate used: `min_lr`, or `lr / 10` when unset.
    pub fn final_lr(&self) -> f32 {
        self.min_lr.unwrap_or(self.lr / 10.0)
    }

    /// Optimizer steps in all.
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Rows per step `B`.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Peak learning rate.
    pub fn lr(mut self, lr: f32) -> Self {
        self.lr = lr;
        self
    }

    /// Final learning rate of the cosine decay.
    pub fn min_lr(mut self, min_lr: f32) -> Self {
        self.min_lr = Some(min_lr);
        self
    }

    /// Linear warmup steps.
    pub fn warmup_steps(mut self, steps: usize) -> Self {
        self.warmup_steps = Some(steps);
        self
    }

    /// AdamW decoupled weight decay (on ≥ 2-D weights).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// AdamW `(β₁, β₂)`.
    pub fn betas(mut self, beta1: f32, beta2: f32) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// Clip the global gradient norm to `max_norm` (`None`: no clipping).
    pub fn grad_clip(mut self, max_norm: Option<f32>) -> Self {
        self.grad_clip = max_norm;
        self
    }

    /// Validate every this many steps (and after the last).
    pub fn eval_interval(mut self, steps: usize) -> Self {
        self.eval_interval = steps;
        self
    }

    /// Validation windows per validation loss.
    pub fn eval_windows(mut self, windows: usize) -> Self {
        self.eval_windows = windows;
        self
    }

    /// Seed of the batch sampling.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Print a progress line at each validation.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Checks every option; errors name the option (not the optimizer or schedule behind it).
    ///
    /// # Errors
    /// [`Error::Config`] for a zero `steps` / `batch_size` / `eval_interval`, a `lr`, `betas`,
    /// `weight_decay` or `grad_clip` out of range, `min_lr` outside `[0, lr]`, or a warmup
    /// longer than the run.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "LmTrainOptions";
        for (field, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("eval_interval", self.eval_interval),
        ] {
            if v == 0 {
                return Err(Error::config(OP, field, 0, "at least 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(OP, "lr", self.lr, "a finite number > 0"));
        }
        let min_lr = self.final_lr();
        if !(min_lr.is_finite() && (0.0..=self.lr).contains(&min_lr)) {
            return Err(Error::config(
                OP,
                "min_lr",
                min_lr,
                format!("a finite number in [0, lr = {}]", self.lr),
            ));
        }
        if self.warmup() > self.steps {
            return Err(Error::config(
                OP,
                "warmup_steps",
                self.warmup(),
                format!("at most steps = {}", self.steps),
            ));
        }
        if let Some(c) = self.grad_clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::config(OP, "grad_clip", c, "a finite number > 0"));
        }
        // the optimizer's own checks, reported under the option's name
        self.optimizer().validate().map_err(|e| match e {
            Error::Config {
                name,
                value,
                expected,
                ..
            } => {
                let field = match name.as_str() {
                    "beta1" | "beta2" | "betas" => "betas",
                    "weight_decay" => "weight_decay",
                    _ => "lr",
                };
                Error::Config {
                    op: OP.into(),
                    name: field.into(),
                    value: format!("{value} ({name})"),
                    expected,
                }
            }
            e => e,
        })
    }

    /// The AdamW these options describe.
    fn optimizer(&self) -> AdamW {
        let opt = AdamW::new(self.lr)
            .betas(self.betas.0, self.betas.1)
            .weight_decay(self.weight_decay)
            .decay_min_rank(2);
        // clipping inside the step: the same bits as clip_grad_norm + step, one pass fewer
        match self.grad_clip {
            Some(max_norm) => opt.max_grad_norm(max_norm),
            None => opt,
        }
    }

    /// The warmup + cosine schedule these options describe.
    fn schedule(&self) -> LrSchedule {
        LrSchedule::WarmupCosine {
            warmup_steps: self.warmup(),
            total_steps: self.steps,
            min_lr: self.final_lr(),
        }
    }
}

/// What [`LmTrainer::train`] measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LmHistory {
    /// The training loss of every step, in order.
    pub loss: Vec<f32>,
    /// `(step, validation loss)` at each evaluation (step counted from 1).
    pub val_loss: Vec<(usize, f32)>,
    /// Training throughput over the whole run, tokens per second.
    pub tokens_per_sec: f64,
}

/// Trains a [`TrainableLm`] ([`Gpt`], [`super::Llama`]) on [`LmBatches`] ([`LmDataset`] windows,
/// [`crate::data::ChatDataset`] conversations): AdamW (weight decay on ≥ 2-D weights only), a linear
/// warmup then cosine decay of the learning rate, global-norm gradient clipping, periodic
/// validation loss and a progress line with loss, tokens/s and ETA.
///
/// The trainer owns the optimizer state, the step counter and the batch RNG, so calling
/// [`LmTrainer::train`] twice continues the same run.
///
/// ```
/// use handgrad::data::LmDataset;
/// use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
/// let tokens: Vec<usize> = (0..200).map(|i| i % 5).collect();
/// let data = LmDataset::new(tokens, 8)?;
/// let mut gpt = Gpt::new(GptConfig::new(5, 8, 1, 2, 16), &mut handgrad::init::rng(0))?;
/// let opts = LmTrainOptions::new().steps(30).batch_size(4).lr(1e-2).verbose(false);
/// let history = LmTrainer::new(opts)?.train(&mut gpt, &data, None)?;
/// assert!(history.loss[29] < history.loss[0]);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LmTrainer {
    pub(super) opts: LmTrainOptions,
    pub(super) optimizer: AdamW,
    pub(super) schedule: LrSchedule,
    pub(super) rng: Rng,
    pub(super) step: usize,
    /// The world of a data-parallel run ([`LmTrainer::distributed`]).
    pub(super) world: Option<crate::distributed::Distributed>,
}

impl LmTrainer {
    /// A trainer at step 0.
    ///
    /// # Errors
    /// As [`LmTrainOptions::validate`].
    pub fn new(opts: LmTrainOptions) -> Result<Self> {
        opts.validate()?;
        let optimizer = opts.optimizer();
        let schedule = opts.schedule();
        crate::distributed::step::check_micro("LmTrainOptions", opts.micro_batch)?;
        schedule.validate()?;
        Ok(LmTrainer {
            rng: rng(opts.seed),
            opts,
            optimizer,
            schedule,
            step: 0,
            world: None,
        })
    }

    /// The number of optimizer steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The options.
    pub fn options(&self) -> &LmTrainOptions {
        &self.opts
    }

    /// The learning-rate schedule (built from the options by [`LmTrainer::new`]; restored from
    /// the checkpoint by `resume`).
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Extends the run to `steps` optimizer steps in all (e.g. a finished run restored by
    /// [`LmTrainer::resume`]), keeping the learning-rate schedule as it is: the warmup + cosine
    /// still reaches `min_lr` at the original [`LmTrainOptions::steps`], and the steps after it
    /// run at `min_lr`. Checkpoints store the schedule, so a run extended, saved and resumed
    /// continues exactly as one that never stopped.
    ///
    /// # Errors
    /// [`Error::Config`] when `steps` is not above the steps taken and to be taken
    /// (`max(step_count(), options().steps)`); nothing changes then.
    pub fn extend_to(&mut self, steps: usize) -> Result<()> {
        let floor = self.step.max(self.opts.steps);
        if steps <= floor {
            return Err(Error::config(
                "LmTrainer::extend_to",
                "steps",
                steps,
                format!("more than the run's {floor} steps ({} taken)", self.step),
            ));
        }
        self.opts.steps = steps;
        Ok(())
    }

    /// The schedule as checkpoint metadata.
    pub(super) fn schedule_meta(&self) -> String {
        serde_json::to_string(&self.schedule).expect("schedules serialise")
    }

    /// Restores [`LmTrainer::schedule_meta`] (absent in checkpoints written before it existed:
    /// then the schedule of the options is kept).
    pub(super) fn restore_schedule(&mut self, meta: Option<&String>, source: &str) -> Result<()> {
        if let Some(text) = meta {
            let schedule: LrSchedule = serde_json::from_str(text)
                .map_err(|e| Error::format(source, format!("learning-rate schedule: {e}")))?;
            schedule.validate()?;
            self.schedule = schedule;
        }
        Ok(())
    }

    /// One optimizer step on the batch `(x, y)`: zero the gradients, forward + loss, backward,
    /// clip, set the scheduled learning rate, AdamW. Returns the loss.
    ///
    /// # Errors
    /// As the model's `forward_loss`; [`Error::State`] naming the step when the loss is not finite
    /// (the weights are left untouched).
    pub fn train_step<M: TrainableLm + ?Sized>(
        &mut self,
        gpt: &mut M,
        x: ndarray::ArrayView2<usize>,
        y: ndarray::ArrayView2<usize>,
    ) -> Result<f32> {
        if let Some(world) = self.data_parallel() {
            return self.distributed_step(gpt, x, y, &world);
        }
        gpt.zero_grad();
        let loss = gpt.forward_loss(x, y)?;
        self.check_loss(loss)?;
        gpt.backward()?;
        self.update(&mut gpt.params_mut())?;
        Ok(loss)
    }

    /// The error of a non-finite training loss (before any update).
    pub(super) fn check_loss(&self, loss: f32) -> Result<()> {
        if !loss.is_finite() {
            return Err(Error::State(format!(
                "the training loss is {loss} at step {}: stopping before the weights are updated",
                self.step + 1
            )));
        }
        Ok(())
    }

    /// Clipping (or the finite-gradient check), the scheduled learning rate and the AdamW step
    /// on the accumulated gradients; counts the step.
    pub(super) fn update(&mut self, params: &mut [(String, &mut Param)]) -> Result<()> {
        let when = format!("at step {}", self.step + 1);
        if self.opts.grad_clip.is_none() {
            check_grads_finite(params, &when)?;
        }
        self.schedule
            .apply(&mut self.optimizer, self.opts.lr, self.step)?;
        // with `grad_clip`, the AdamW step clips (`max_grad_norm`) and names a non-finite
        // gradient before it changes anything
        self.optimizer.step(params).map_err(|e| match e {
            Error::Param { name, message } => Error::Param {
                name,
                message: format!("{message} ({when})"),
            },
            e => e,
        })?;
        self.step += 1;
        Ok(())
    }

    /// The mean loss over up to `eval_windows` rows of `data`'s validation batches (no
    /// dropout), each batch weighted by its rows.
    ///
    /// # Errors
    /// As the model's `eval_loss`.
    pub fn evaluate<M: TrainableLm + ?Sized, D: LmBatches + ?Sized>(
        &self,
        gpt: &mut M,
        data: &D,
    ) -> Result<f32> {
        let batches = data.eval_batches(self.opts.eval_windows.max(1), self.opts.batch_size);
        if let Some(world) = self.world.as_ref().filter(|w| w.size() > 1) {
            return Self::evaluate_split(world, gpt, &batches);
        }
        let mut total = 0.0f64;
        let mut rows = 0usize;
        for (x, y) in &batches {
            total += gpt.eval_loss(x.view(), y.view())? as f64 * x.nrows() as f64;
            rows += x.nrows();
        }
        Ok((total / rows.max(1) as f64) as f32)
    }

    /// Trains until [`LmTrainOptions::steps`] steps have been taken in all (a trainer restored
    /// by [`LmTrainer::resume`] continues where it stopped), evaluating on `val` every
    /// `eval_interval` steps and after the last.
    ///
    /// # Errors
    /// [`Error::Shape`] when the dataset's window is longer than the model's `block_size`;
    /// otherwise as [`LmTrainer::train_step`].
    pub fn train<M: TrainableLm + ?Sized, D: LmBatches + ?Sized>(
        &mut self,
        gpt: &mut M,
        train: &D,
        val: Option<&D>,
    ) -> Result<LmHistory> {
        self.train_for(gpt, train, val, usize::MAX)
    }

    /// As [`LmTrainer::train`] but stops after at most `max_steps` more steps (e.g. to save a
    /// checkpoint part-way; the learning-rate schedule still spans `LmTrainOptions::steps`).
    ///
    /// # Errors
    /// As [`LmTrainer::train`].
    pub fn train_for<M: TrainableLm + ?Sized, D: LmBatches + ?Sized>(
        &mut self,
        gpt: &mut M,
        train: &D,
        val: Option<&D>,
        max_steps: usize,
    ) -> Result<LmHistory> {
        let t = train.seq_len();
        let (field, limit) = gpt.max_len();
        if t > limit {
            return Err(Error::shape(
                "LmTrainer::train",
                format!("windows of at most {field} = {limit} tokens"),
                &[t],
            ));
        }
        let v = gpt.vocab_size();
        for (what, data) in [("training", Some(train)), ("validation", val)] {
            if let Some((id, at)) = data.and_then(|d| d.max_token_id())
                && id >= v
            {
                return Err(Error::label(
                    "LmTrainer::train",
                    format!(
                        "the {what} data holds token id {id} ({at}), out of range for the \
                             model's vocabulary of {v} (ids must be < {v}); nothing was trained"
                    ),
                ));
            }
        }
        if let Some(world) = &self.world {
            world.broadcast_params(&mut gpt.params_mut())?;
        }
        let verbose = self.opts.verbose && self.world.as_ref().is_none_or(|w| w.is_root());
        let mut history = LmHistory::default();
        let start = Instant::now();
        let first = self.step;
        let total = self.opts.steps;
        let stop = total.min(self.step.saturating_add(max_steps));
        while self.step < stop {
            let (x, y) = train.sample_batch(self.opts.batch_size, &mut self.rng);
            let loss = self.train_step(gpt, x.view(), y.view())?;
            history.loss.push(loss);
            let done = self.step;
            if done.is_multiple_of(self.opts.eval_interval) || done == stop {
                let val_loss = match val {
                    Some(v) => Some(self.evaluate(gpt, v)?),
                    None => None,
                };
                if let Some(v) = val_loss {
                    history.val_loss.push((done, v));
                }
                let secs = start.elapsed().as_secs_f64();
                let tokens = ((done - first) * self.opts.batch_size * t) as f64;
                let tps = tokens / secs.max(1e-9);
                if verbose {
                    let eta = secs / (done - first) as f64 * (total - done) as f64;
                    let val = val_loss.map_or(String::new(), |v| format!(" - val_loss: {v:.4}"));
                    eprintln!(
                        "step {done:>5}/{total} - loss: {loss:.4}{val} - lr: {:.2e} - {:.0} tokens/s - ETA {eta:.0} s",
                        self.optimizer.learning_rate(),
                        tps
                    );
                    let _ = std::io::stderr().flush();
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        history.tokens_per_sec =
            (history.loss.len() * self.opts.batch_size * t) as f64 / secs.max(1e-9);
        Ok(history)
    }
}
