//! Logits processors and sampling on one row of logits, as Hugging Face applies them.
//!
//! Order inside [`super::generate`]: [`repetition_penalty`], [`block_tokens`] (min_new_tokens),
//! then, when sampling, [`temperature`], [`top_k`], [`top_p`]; then [`softmax`] and
//! [`sample`], or [`argmax`]. Removed tokens get `−∞`.

use crate::init::Rng;
use rand::Rng as _;

/// `RepetitionPenaltyLogitsProcessor`: every distinct token of `previous` (prompt included) has
/// its logit divided by `penalty` when positive and multiplied by it when negative (so
/// `penalty > 1` always makes it less likely).
pub fn repetition_penalty(logits: &mut [f32], previous: &[usize], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; logits.len()];
    for &t in previous {
        if t < logits.len() && !seen[t] {
            seen[t] = true;
            let l = &mut logits[t];
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// Sets the logits of `tokens` to `−∞` (`MinNewTokensLengthLogitsProcessor` for the stop
/// tokens before `min_new_tokens`).
pub fn block_tokens(logits: &mut [f32], tokens: &[usize]) {
    for &t in tokens {
        if let Some(l) = logits.get_mut(t) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// `TemperatureLogitsWarper`: `logits / t`.
pub fn temperature(logits: &mut [f32], t: f32) {
    if t != 1.0 {
        for l in logits.iter_mut() {
            *l /= t;
        }
    }
}

/// `TopKLogitsWarper`: keeps the logits `≥` the `k`-th largest (ties with it are kept), sets
/// the others to `−∞`; `k ≥ V` keeps everything.
pub fn top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    // the k-th largest: select_nth on the descending order
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    for l in logits.iter_mut() {
        if *l < kth {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// `TopPLogitsWarper` (nucleus): with the tokens sorted by increasing probability, removes
/// those whose cumulative probability is `≤ 1 − p`, always keeping the most likely token. The
/// kept set is the smallest set of most likely tokens whose total probability is `≥ p`.
pub fn top_p(logits: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // ascending probability; equal values keep index order (a stable sort, like torch's)
    order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let mut cum = 0.0f32;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum <= 1.0 - p && rank != last {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// `softmax(logits)` (`−∞` entries get probability 0).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut p: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    for v in p.iter_mut() {
        *v /= sum;
    }
    p
}

/// `log_softmax(logits)`, computed as `x − logsumexp(x)` in f64 for the sum.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

/// The index of the largest logit (the first one on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Draws an index from `probs` with one uniform number from `rng` (inverse CDF in index
/// order), so a seed fixes every draw.
pub fn sample(probs: &[f32], rng: &mut Rng) -> usize {
    let u: f64 = rng.random::<f64>() * probs.iter().map(|&p| p as f64).sum::<f64>();
    let mut cum = 0.0f64;
    let mut last_nonzero = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += p as f64;
            last_nonzero = i;
            if u < cum {
                return i;
            }
        }
    }
    last_nonzero
}
