//! Data-parallel and micro-batched steps of [`LmTrainer`] (see [`crate::distributed`]).

use super::train::{LmTrainer, TrainableLm};
use super::IGNORE_INDEX;
use crate::distributed::step::{
    add_grads, default_micro, grad_len, reduce_step, round_robin, set_grads, StepPlan,
};
use crate::distributed::Distributed;
use crate::error::{Error, Result};
use ndarray::{s, Array2, ArrayView2};
use std::ops::Range;

impl LmTrainer {
    /// Trains data-parallel over `world`: every rank runs the same trainer on the same data;
    /// each step every rank draws the same global batch of `batch_size` windows (the same
    /// seeded sampler) and computes a contiguous slice of its rows; the gradients are summed
    /// over the ranks in `world`'s [`crate::distributed::Reduction`] mode, each part weighted
    /// by its share of the batch's target tokens (so the loss is the mean over the global
    /// batch, also with padding or masked prompts); clipping and the finite checks run on the
    /// reduced gradient, identically everywhere. Rank 0's weights are broadcast when training
    /// starts; only rank 0 prints and writes checkpoints ([`LmTrainer::save_checkpoint`]);
    /// validation batches are split over the ranks and summed in order.
    ///
    /// In the deterministic mode the batch is cut into micro-batches of
    /// [`super::LmTrainOptions::micro_batch`] rows (default `⌈batch_size / 4⌉`): the weights
    /// after every step are bit-identical for any rank count and to
    /// `Distributed::single()`. Build the model with the same seed on every rank (its dropout
    /// streams are keyed by it, the step and the row).
    ///
    /// ```
    /// use handgrad::data::LmDataset;
    /// use handgrad::distributed::Distributed;
    /// use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
    /// let data = LmDataset::new((0..200).map(|i| i % 5).collect(), 8)?;
    /// let mut gpt = Gpt::new(GptConfig::new(5, 8, 1, 2, 16), &mut handgrad::init::rng(0))?;
    /// let opts = LmTrainOptions::new().steps(5).batch_size(4).warmup_steps(1).verbose(false);
    /// let world = Distributed::single();   // or Distributed::init()? under mpirun
    /// LmTrainer::new(opts)?.distributed(&world).train(&mut gpt, &data, None)?;
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    pub fn distributed(mut self, world: &Distributed) -> Self {
        self.world = Some(world.clone());
        self
    }

    /// The world of a data-parallel run, if any.
    pub fn world(&self) -> Option<&Distributed> {
        self.world.as_ref()
    }

    /// The world the step runs on: the given one, or this process alone when only
    /// `micro_batch` is set; `None` for the plain step.
    pub(super) fn data_parallel(&self) -> Option<Distributed> {
        match (&self.world, self.opts.micro_batch) {
            (Some(w), _) => Some(w.clone()),
            (None, Some(_)) => Some(Distributed::single()),
            (None, None) => None,
        }
    }

    /// One data-parallel step (see [`LmTrainer::distributed`]); returns the global batch's
    /// mean loss.
    pub(super) fn distributed_step<M: TrainableLm + ?Sized>(
        &mut self,
        gpt: &mut M,
        x: ArrayView2<usize>,
        y: ArrayView2<usize>,
        world: &Distributed,
    ) -> Result<f32> {
        if x.dim() != y.dim() {
            return Err(Error::shape(
                "LmTrainer::train_step targets",
                format!("targets shaped like the ids {:?}", x.shape()),
                y.shape(),
            ));
        }
        let when = format!("at step {}", self.step + 1);
        let total = y.iter().filter(|&&t| t != IGNORE_INDEX).count();
        if total == 0 {
            return Err(Error::State(format!(
                "the batch {when} has no target token (every target is IGNORE_INDEX)"
            )));
        }
        let len_g = grad_len(&gpt.params_mut());
        let micro = self
            .opts
            .micro_batch
            .unwrap_or_else(|| default_micro(self.opts.batch_size));
        let step = self.step as u64;
        let mut part = |rows: Range<usize>, buf: &mut [f32]| -> Result<()> {
            let ys = y.slice(s![rows.clone(), ..]);
            let n = ys.iter().filter(|&&t| t != IGNORE_INDEX).count();
            if n == 0 {
                return Ok(());
            }
            gpt.zero_grad();
            gpt.seek_examples(step, rows.start);
            let loss = gpt.forward_loss(x.slice(s![rows.clone(), ..]), ys)?;
            gpt.backward()?;
            // the gradient of this part's mean loss, weighted by its share of the target tokens
            let w = n as f32 / total as f32;
            add_grads(&gpt.params_mut(), w, &mut buf[..len_g]);
            buf[len_g] += loss * w;
            Ok(())
        };
        let plan = StepPlan {
            rows: x.nrows(),
            micro,
        };
        let v = reduce_step(world, plan, len_g + 1, &when, &mut part)?;
        let loss = v[len_g];
        self.check_loss(loss)?;
        let mut params = gpt.params_mut();
        set_grads(&mut params, &v[..len_g]);
        self.update(&mut params)?;
        Ok(loss)
    }

    /// [`LmTrainer::evaluate`] with the batches split round-robin over the ranks, summed in
    /// batch order (the same number as one process).
    pub(super) fn evaluate_split<M: TrainableLm + ?Sized>(
        world: &Distributed,
        gpt: &mut M,
        batches: &[(Array2<usize>, Array2<usize>)],
    ) -> Result<f32> {
        let mut item = |i: usize| -> Result<Vec<f64>> {
            let (x, y) = &batches[i];
            Ok(vec![
                gpt.eval_loss(x.view(), y.view())? as f64,
                x.nrows() as f64,
            ])
        };
        let recs = round_robin(
            world,
            batches.len(),
            2,
            "evaluating the validation loss",
            &mut item,
        )?;
        let mut total = 0.0f64;
        let mut rows = 0usize;
        for r in recs {
            total += r[0] * r[1];
            rows += r[1] as usize;
        }
        Ok((total / rows.max(1) as f64) as f32)
    }
}
