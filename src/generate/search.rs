//! The decoding loops: greedy / multinomial sampling over a batch of rows, and beam search.

use super::processors::{
    argmax, block_tokens, log_softmax, repetition_penalty, sample, softmax, temperature, top_k,
    top_p,
};
use super::{Decoder, GenerateConfig};
use crate::error::{Error, Result};
use ndarray::Array2;

/// Checks the logits the decoder returned at `step`, `(rows, V)`, and puts them in row-major
/// layout (a user's `Decoder` may return any layout). Like PyTorch's `multinomial`, NaN or +inf
/// logits are an error (they would silently pick token 0); `-inf` masks a token, but a row
/// must keep at least one finite logit.
fn check(logits: &mut Array2<f32>, rows: usize, v: usize, step: usize) -> Result<()> {
    if logits.dim() != (rows, v) {
        return Err(Error::shape(
            "generate: decoder logits",
            format!("({rows}, {v}) logits, one row per sequence"),
            logits.shape(),
        ));
    }
    if !logits.is_standard_layout() {
        *logits = logits.as_standard_layout().into_owned();
    }
    for (r, row) in logits.outer_iter().enumerate() {
        if let Some((t, x)) = row
            .iter()
            .enumerate()
            .find(|(_, x)| x.is_nan() || **x == f32::INFINITY)
        {
            return Err(Error::State(format!(
                "generate: the model's logits at step {step} hold {x} (row {r}, token {t}); \
                 expected finite numbers or -inf (are the weights or the input corrupt?)"
            )));
        }
        if !row.iter().any(|x| x.is_finite()) {
            return Err(Error::State(format!(
                "generate: every logit of row {r} at step {step} is -inf: no token can be chosen"
            )));
        }
    }
    Ok(())
}

/// Greedy decoding or sampling of `num_return_sequences` rows decoded as one batch.
pub(super) fn greedy_or_sample<D: Decoder + ?Sized>(
    model: &mut D,
    prompt: &[usize],
    cfg: &GenerateConfig,
    max_new: usize,
    on_token: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Vec<Vec<usize>>> {
    let v = model.vocab_size();
    let n = cfg.num_return_sequences;
    let mut seqs: Vec<Vec<usize>> = vec![prompt.to_vec(); n];
    let mut done = vec![false; n];
    if max_new == 0 {
        return Ok(seqs);
    }
    let pad = cfg.eos_token_id.first().copied().unwrap_or(0);
    let mut rng = crate::init::rng(cfg.seed);
    let mut logits = model.prefill(&seqs)?;
    for step in 0..max_new {
        check(&mut logits, n, v, step)?;
        let mut next = vec![pad; n];
        for r in 0..n {
            if done[r] {
                continue;
            }
            let row = logits.row_mut(r);
            let row = row
                .into_slice()
                .expect("decoder logits rows are contiguous");
            repetition_penalty(row, &seqs[r], cfg.repetition_penalty);
            if step < cfg.min_new_tokens {
                block_tokens(row, &cfg.eos_token_id);
            }
            next[r] = if cfg.do_sample {
                temperature(row, cfg.temperature);
                if let Some(k) = cfg.top_k {
                    top_k(row, k);
                }
                top_p(row, cfg.top_p);
                sample(&softmax(row), &mut rng)
            } else {
                argmax(row)
            };
            seqs[r].push(next[r]);
            on_token(r, next[r])?;
            if cfg.eos_token_id.contains(&next[r]) {
                done[r] = true;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == max_new {
            break;
        }
        logits = model.step(&next)?;
    }
    Ok(seqs)
}

/// A finished beam-search hypothesis.
#[derive(Debug, Clone)]
struct Hypothesis {
    tokens: Vec<usize>,
    score: f64,
}

/// The `num_beams` best finished hypotheses (Hugging Face `BeamHypotheses`).
struct Finished {
    keep: usize,
    length_penalty: f64,
    hyps: Vec<Hypothesis>,
}

impl Finished {
    /// Adds a hypothesis of `new_len` new tokens with log-probability sum `sum_logprobs`.
    fn add(&mut self, tokens: Vec<usize>, sum_logprobs: f64, new_len: usize) {
        let score = sum_logprobs / (new_len.max(1) as f64).powf(self.length_penalty);
        if self.hyps.len() < self.keep || score > self.worst() {
            self.hyps.push(Hypothesis { tokens, score });
            if self.hyps.len() > self.keep {
                let worst = (0..self.hyps.len())
                    .min_by(|&a, &b| self.hyps[a].score.total_cmp(&self.hyps[b].score))
                    .expect("non-empty");
                self.hyps.remove(worst);
            }
        }
    }

    fn worst(&self) -> f64 {
        self.hyps
            .iter()
            .map(|h| h.score)
            .fold(f64::INFINITY, f64::min)
    }

    /// HF's `is_done`: all `keep` slots full and (early stopping, or no running beam — best
    /// running sum `best_sum` over `new_len` tokens — can still beat the worst finished one).
    fn is_done(&self, best_sum: f64, new_len: usize, early_stopping: bool) -> bool {
        if self.hyps.len() < self.keep {
            return false;
        }
        early_stopping
            || self.worst() >= best_sum / (new_len.max(1) as f64).powf(self.length_penalty)
    }
}

/// Beam search (Hugging Face `_beam_search`, batch of one prompt): beam scores are cumulative
/// log-softmax values after the logits processors; each step keeps the `num_beams` best
/// continuations out of `max(2, 1 + #eos)·num_beams` candidates, and a candidate ending in a
/// stop token (ranked within the first `num_beams`) becomes a finished hypothesis scored
/// `sum_logprobs / new_tokens^length_penalty`.
pub(super) fn beam_search<D: Decoder + ?Sized>(
    model: &mut D,
    prompt: &[usize],
    cfg: &GenerateConfig,
    max_new: usize,
) -> Result<Vec<Vec<usize>>> {
    let v = model.vocab_size();
    let nb = cfg.num_beams;
    let mut seqs: Vec<Vec<usize>> = vec![prompt.to_vec(); nb];
    if max_new == 0 {
        return Ok(seqs[..cfg.num_return_sequences].to_vec());
    }
    // only the first beam is live at the start, so the identical copies do not all expand
    let mut beam_scores: Vec<f64> = (0..nb).map(|b| if b == 0 { 0.0 } else { -1e9 }).collect();
    let mut finished = Finished {
        keep: nb,
        length_penalty: cfg.length_penalty as f64,
        hyps: Vec::new(),
    };
    let n_keep = (1 + cfg.eos_token_id.len()).max(2) * nb;
    let mut logits = model.prefill(&seqs)?;
    let mut done = false;
    for step in 0..max_new {
        check(&mut logits, nb, v, step)?;
        // candidate scores (beam, token) → beam score + processed log-prob
        let mut cands: Vec<(f64, usize)> = Vec::with_capacity(nb * v);
        for b in 0..nb {
            let mut lp = log_softmax(logits.row(b).as_slice().expect("contiguous rows"));
            repetition_penalty(&mut lp, &seqs[b], cfg.repetition_penalty);
            if step < cfg.min_new_tokens {
                block_tokens(&mut lp, &cfg.eos_token_id);
            }
            cands.extend(
                lp.iter()
                    .enumerate()
                    .map(|(t, &s)| (beam_scores[b] + s as f64, b * v + t)),
            );
        }
        // the n_keep best, best first (ties: lower flat index first)
        let k = n_keep.min(cands.len());
        cands.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        cands.truncate(k);
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let new_len = step + 1;
        let mut next: Vec<(usize, usize, f64)> = Vec::with_capacity(nb);
        for (rank, &(score, flat)) in cands.iter().enumerate() {
            let (b, t) = (flat / v, flat % v);
            if cfg.eos_token_id.contains(&t) {
                if rank < nb {
                    let mut tokens = seqs[b].clone();
                    tokens.push(t);
                    finished.add(tokens, score, new_len);
                }
            } else {
                next.push((b, t, score));
            }
            if next.len() == nb {
                break;
            }
        }
        let best = cands.first().map_or(f64::NEG_INFINITY, |c| c.0);
        if finished.is_done(best, new_len, cfg.early_stopping) {
            done = true;
            break;
        }
        let order: Vec<usize> = next.iter().map(|n| n.0).collect();
        seqs = next
            .iter()
            .map(|&(b, t, _)| {
                let mut s = seqs[b].clone();
                s.push(t);
                s
            })
            .collect();
        beam_scores = next.iter().map(|n| n.2).collect();
        if step + 1 == max_new {
            break;
        }
        model.reorder(&order)?;
        let tokens: Vec<usize> = next.iter().map(|n| n.1).collect();
        logits = model.step(&tokens)?;
    }
    if !done {
        for (s, &score) in seqs.iter().zip(&beam_scores) {
            let new_len = s.len() - prompt.len();
            finished.add(s.clone(), score, new_len);
        }
    }
    let mut hyps = finished.hyps;
    hyps.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(hyps
        .into_iter()
        .take(cfg.num_return_sequences)
        .map(|h| h.tokens)
        .collect())
}
