//! The data-parallel (and micro-batched) step of [`Sequential::fit`] and its validation; see
//! [`super::FitOptions::distributed`].

use super::history::{Logs, Tally};
use super::{Loss, Metric, Sequential, Targets};
use crate::data::{Augment, BatchSource};
use crate::distributed::step::{
    add_grads, grad_len, reduce_step, round_robin, set_grads, StepPlan,
};
use crate::distributed::{Distributed, Reduction};
use crate::error::{Error, Result};
use crate::layers::Mode;
use crate::tensor::Tensor;
use ndarray::Axis;
use std::ops::Range;

/// What one data-parallel step needs besides the model and the data.
pub(super) struct DistStep<'a> {
    pub epoch: usize,
    /// The global step (`epoch · steps_per_epoch + batch`), which keys dropout and augmentation.
    pub step: u64,
    pub micro: usize,
    pub augment: Option<&'a Augment>,
    pub seed: u64,
    pub loss: Loss,
    pub metrics: &'a [Metric],
    pub from_logits: bool,
    pub when: String,
}

/// splitmix64: the per-sample augmentation seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Augments each sample `i` of `x` (global row `first_row + i`) with its own stream.
fn augment_rows(a: &Augment, x: &Tensor, seed: u64, step: u64, first_row: usize) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(x.shape()[0]);
    for (i, row) in x.axis_chunks_iter(Axis(0), 1).enumerate() {
        let key = mix(mix(seed ^ mix(step)) ^ (first_row + i) as u64);
        parts.push(a.apply(&row.to_owned(), &mut crate::init::rng(key))?);
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::State(format!("fit: augmented samples do not stack: {e}")))
}

impl Sequential {
    /// Checks that the model can be trained data-parallel, then gives every rank rank 0's
    /// parameters and dropout streams.
    pub(super) fn prepare_distributed(&mut self, world: &Distributed) -> Result<()> {
        if let Some(layer) = self.layers.iter().find(|l| !l.buffers().is_empty()) {
            return Err(Error::config(
                "fit",
                "distributed",
                layer.describe(),
                "a model without running statistics (BatchNorm): data-parallel ranks would \
                 each update them from their own samples",
            ));
        }
        world.broadcast_params(&mut self.params_mut())?;
        let states: Vec<String> = self
            .layers
            .iter()
            .map(|l| l.rng_state().unwrap_or_default())
            .collect();
        let mut bytes = states.join("\n").into_bytes();
        world.communicator().broadcast_bytes(0, &mut bytes)?;
        let root = String::from_utf8_lossy(&bytes).into_owned();
        for (layer, state) in self.layers.iter_mut().zip(root.split('\n')) {
            if !state.is_empty() {
                layer.set_rng_state(state)?;
            }
        }
        Ok(())
    }

    /// One optimizer step on the global batch `idx`: this rank's micro-batches (or slice), the
    /// reduction, then the checks and the update, identical on every rank. Returns the global
    /// mean loss and the metric hits.
    pub(super) fn distributed_step(
        &mut self,
        world: &Distributed,
        train: &dyn BatchSource,
        idx: &[usize],
        s: &DistStep<'_>,
    ) -> Result<(f32, Vec<usize>)> {
        let total = idx.len();
        let nm = s.metrics.len();
        let len_g = grad_len(&self.params_mut());
        let plan = StepPlan {
            rows: total,
            micro: s.micro,
        };
        let mut part = |rows: Range<usize>, buf: &mut [f32]| -> Result<()> {
            let (mut x, y) = train.batch(&idx[rows.clone()], Some(s.epoch))?;
            if let Some(a) = s.augment {
                x = augment_rows(a, &x, s.seed, s.step, rows.start)?;
            }
            for layer in self.layers.iter_mut() {
                layer.seek_examples(s.step, rows.start);
            }
            self.zero_grad();
            let (value, logits) = self.loss_backward_targets(&x, Targets::Labels(&y), s.loss)?;
            // the gradient of this part's mean loss, weighted by its share of the global batch
            let w = rows.len() as f32 / total as f32;
            add_grads(&self.params_mut(), w, &mut buf[..len_g]);
            buf[len_g] += value * w;
            for (k, m) in s.metrics.iter().enumerate() {
                buf[len_g + 1 + k] += m.count_correct(&logits, &y, s.from_logits)? as f32;
            }
            Ok(())
        };
        let v = reduce_step(world, plan, len_g + 1 + nm, &s.when, &mut part)?;
        let value = v[len_g];
        if !value.is_finite() {
            return Err(Error::State(format!(
                "fit: the loss became {value} {}; training stopped before the update",
                s.when
            )));
        }
        set_grads(&mut self.params_mut(), &v[..len_g]);
        crate::optim::check_grads_finite(&self.params_mut(), &s.when)?;
        self.optimizer_step()?;
        let correct = v[len_g + 1..].iter().map(|&c| c.round() as usize).collect();
        Ok((value, correct))
    }

    /// [`Sequential::evaluate`]'s numbers with the batches split round-robin over the ranks and
    /// summed in batch order (the same bits as one process).
    pub(super) fn evaluate_distributed(
        &mut self,
        world: &Distributed,
        data: &dyn BatchSource,
        batch_size: usize,
        prefix: &str,
    ) -> Result<Logs> {
        if data.is_empty() || (world.size() == 1 && world.reduction() == Reduction::Deterministic) {
            return self.evaluate_with(data, batch_size, prefix);
        }
        let loss = self.loss();
        let metrics = self.metrics();
        let from_logits = loss.fuses_softmax() || loss == Loss::BinaryCrossentropyWithLogits;
        let end = self.logits_end(loss);
        let order: Vec<usize> = (0..data.len()).collect();
        let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
        let when = format!("evaluating {prefix}loss");
        let mut item = |i: usize| -> Result<Vec<f64>> {
            let (x, y) = data.batch(batches[i], None)?;
            let logits = self.forward_range(&x, Mode::Eval, end)?;
            let (value, _) = loss.forward_backward(&logits, Targets::Labels(&y))?;
            let mut rec = vec![value as f64, y.len() as f64];
            for m in &metrics {
                rec.push(m.count_correct(&logits, &y, from_logits)? as f64);
            }
            Ok(rec)
        };
        let recs = round_robin(world, batches.len(), 2 + metrics.len(), &when, &mut item)?;
        let mut tally = Tally::new(metrics.len());
        for r in recs {
            let correct: Vec<usize> = r[2..].iter().map(|&c| c as usize).collect();
            tally.add_counts(r[0] as f32, r[1] as usize, &correct);
        }
        Ok(tally.logs(prefix, &metrics))
    }
}
