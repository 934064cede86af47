//! The per-step machinery shared by `fit` and `LmTrainer`: which examples a rank computes, the
//! flat gradient vector, the reduction, and work split round-robin (validation).

use super::tree::{cover, node_sum, rank_range, reduce_tree};
use super::{Distributed, Reduction};
use crate::error::{Error, Result};
use crate::param::Param;
use std::ops::Range;

/// A global batch of `rows` examples cut into micro-batches of `micro` rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepPlan {
    /// Examples (rows) in the global batch.
    pub rows: usize,
    /// Rows per micro-batch (the last may have fewer).
    pub micro: usize,
}

impl StepPlan {
    /// The number of micro-batches.
    fn leaves(&self) -> usize {
        self.rows.div_ceil(self.micro)
    }
    /// The rows of micro-batch `i`.
    fn leaf_rows(&self, i: usize) -> Range<usize> {
        i * self.micro..((i + 1) * self.micro).min(self.rows)
    }
}

/// Checks a micro-batch size given by the user.
pub(crate) fn check_micro(op: &str, micro: Option<usize>) -> Result<()> {
    if micro == Some(0) {
        return Err(Error::config(op, "micro_batch", 0, "at least 1 row"));
    }
    Ok(())
}

/// The micro-batch size used when none is given: a quarter of the batch (rounded up), so that
/// 1, 2 and 4 ranks each get whole, aligned micro-batches.
pub(crate) fn default_micro(batch_size: usize) -> usize {
    batch_size.div_ceil(4).max(1)
}

/// What [`reduce_step`] calls to add a part of the step's sum: `(rows, buf)`, see there.
pub(crate) type StepPart<'a> = dyn FnMut(Range<usize>, &mut [f32]) -> Result<()> + 'a;

/// One step's vector of `len` values summed over the world. `part(rows, buf)` adds into the
/// zeroed `buf` the (already weighted) contribution of the global batch's examples `rows`;
/// in [`Reduction::Deterministic`] it is called once per micro-batch this rank owns, in
/// [`Reduction::AllReduce`] once for the rank's contiguous slice (if not empty). Every rank
/// takes part even when its own `part` fails (see [`Distributed::agree`]).
///
/// # Errors
/// This rank's `part` error, or an [`Error::State`] naming the rank that failed; transport
/// errors.
pub(crate) fn reduce_step(
    world: &Distributed,
    plan: StepPlan,
    len: usize,
    when: &str,
    part: &mut StepPart<'_>,
) -> Result<Vec<f32>> {
    let (p, r) = (world.size(), world.rank());
    match world.reduction() {
        Reduction::Deterministic => {
            let m = plan.leaves();
            let nodes = cover(m, rank_range(m, p, r));
            let mut leaf = |i: usize, buf: &mut [f32]| part(plan.leaf_rows(i), buf);
            let values: Result<Vec<Vec<f32>>> =
                nodes.iter().map(|&n| node_sum(n, len, &mut leaf)).collect();
            let values = world.agree(values, when)?;
            reduce_tree(world.communicator(), m, len, &values)
        }
        Reduction::AllReduce => {
            let rows = rank_range(plan.rows, p, r);
            let mut v = vec![0.0f32; len];
            let done = if rows.is_empty() {
                Ok(())
            } else {
                part(rows, &mut v)
            };
            world.agree(done, when)?;
            world.communicator().all_reduce_sum(&mut v)?;
            Ok(v)
        }
    }
}

/// The number of gradient values of the trainable (not frozen) parameters.
pub(crate) fn grad_len(params: &[(String, &mut Param)]) -> usize {
    params
        .iter()
        .filter(|(_, p)| !p.is_frozen())
        .map(|(_, p)| p.numel())
        .sum()
}

/// `buf[k] += w·grad_k` over the trainable parameters, in order.
pub(crate) fn add_grads(params: &[(String, &mut Param)], w: f32, buf: &mut [f32]) {
    let mut at = 0;
    for (_, p) in params.iter().filter(|(_, p)| !p.is_frozen()) {
        for (b, &g) in buf[at..at + p.numel()].iter_mut().zip(p.grad.iter()) {
            *b += w * g;
        }
        at += p.numel();
    }
}

/// Writes the reduced `buf` back into the trainable parameters' gradients.
pub(crate) fn set_grads(params: &mut [(String, &mut Param)], buf: &[f32]) {
    let mut at = 0;
    for (_, p) in params.iter_mut().filter(|(_, p)| !p.is_frozen()) {
        let n = p.numel();
        for (g, &b) in p.grad.iter_mut().zip(&buf[at..at + n]) {
            *g = b;
        }
        at += n;
    }
}

/// Runs `item(i)` for `i in 0..n` split round-robin over the ranks (rank `r` takes
/// `r, r + p, …`) and gives every rank all results in item order; each result is `k` numbers.
///
/// # Errors
/// An item's error (or an [`Error::State`] naming the failed rank); transport errors.
pub(crate) fn round_robin(
    world: &Distributed,
    n: usize,
    k: usize,
    when: &str,
    item: &mut dyn FnMut(usize) -> Result<Vec<f64>>,
) -> Result<Vec<Vec<f64>>> {
    let (p, r) = (world.size(), world.rank());
    let mine: Result<Vec<u8>> = (r..n).step_by(p).try_fold(Vec::new(), |mut out, i| {
        let v = item(i)?;
        debug_assert_eq!(v.len(), k);
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        Ok(out)
    });
    let mine = world.agree(mine, when)?;
    let all = world.communicator().all_gather_bytes(&mine)?;
    let decoded: Vec<Vec<f64>> = all
        .iter()
        .map(|b| {
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (s, j) = (i % p, i / p);
        let rec = decoded[s].get(j * k..(j + 1) * k).ok_or_else(|| {
            Error::State(format!("rank {s} sent fewer results than expected {when}"))
        })?;
        out.push(rec.to_vec());
    }
    Ok(out)
}
