//! Text generation with Hugging Face `generate` semantics, for any model that implements
//! [`Decoder`] (a [`crate::transformer::Gpt`] through [`crate::transformer::GptDecoder`]).
//!
//! [`GenerateConfig`] holds the arguments (`max_length` / `max_new_tokens`,
//! `num_return_sequences`, `do_sample`, `temperature`, `top_k`, `top_p`,
//! `repetition_penalty`, stop tokens, `num_beams`, `seed`); [`generate`] runs greedy decoding,
//! multinomial sampling or beam search; [`processors`] are the logits processors, usable on
//! their own.

mod config;
pub mod processors;
mod search;

pub use config::GenerateConfig;

/// A model that generation drives: a batch of rows decoded one token at a time.
pub trait Decoder {
    /// Number of token ids (logits width V).
    fn vocab_size(&self) -> usize;
    /// Starts decoding: every row is a token sequence (all rows the same length, ≥ 1).
    /// Returns the logits of each row's last position, shape (rows, V).
    ///
    /// # Errors
    /// As the model's forward (e.g. an id ≥ V).
    fn prefill(&mut self, rows: &[Vec<usize>]) -> crate::Result<ndarray::Array2<f32>>;
    /// Appends `tokens[r]` to row r and returns the logits of the new last positions (rows, V).
    /// (The model crops its own context to its block size.)
    ///
    /// # Errors
    /// As the model's forward.
    fn step(&mut self, tokens: &[usize]) -> crate::Result<ndarray::Array2<f32>>;
    /// Reorders rows: new row i is old row `order[i]` (rows may be duplicated or dropped;
    /// `order.len()` becomes the new row count). Used by beam search.
    ///
    /// # Errors
    /// An index out of range.
    fn reorder(&mut self, order: &[usize]) -> crate::Result<()>;
}

/// Generates continuations of `prompt` and returns `num_return_sequences` sequences, each the
/// prompt followed by its new tokens (as Hugging Face `generate` returns them). A sequence
/// that produced a stop token ends with it.
///
/// - `do_sample = false, num_beams = 1`: greedy decoding;
/// - `do_sample = true`: sampling after the repetition penalty, temperature, top-k and top-p,
///   the `num_return_sequences` rows decoded as one batch, one seeded draw per row and step;
/// - `num_beams > 1`: beam search, the best `num_return_sequences` hypotheses first.
///
/// # Errors
/// [`crate::Error::Config`] from [`GenerateConfig::validate`] (including a prompt id
/// `≥ vocab_size`); the model's errors.
pub fn generate<D: Decoder + ?Sized>(
    model: &mut D,
    prompt: &[usize],
    cfg: &GenerateConfig,
) -> crate::Result<Vec<Vec<usize>>> {
    let v = model.vocab_size();
    let max_new = cfg.validate(v, prompt.len())?;
    if let Some((i, &id)) = prompt.iter().enumerate().find(|(_, &id)| id >= v) {
        return Err(crate::Error::config(
            "generate",
            "prompt",
            format!("token id {id} at position {i}"),
            format!("ids below the vocabulary size {v}"),
        ));
    }
    if cfg.num_beams > 1 {
        search::beam_search(model, prompt, cfg, max_new)
    } else {
        search::greedy_or_sample(model, prompt, cfg, max_new)
    }
}
