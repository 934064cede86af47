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
    let max_new = prepare(model.vocab_size(), prompt, cfg)?;
    if cfg.num_beams > 1 {
        search::beam_search(model, prompt, cfg, max_new)
    } else {
        search::greedy_or_sample(model, prompt, cfg, max_new, &mut |_, _| Ok(()))
    }
}

/// Validates the config and the prompt's ids; returns the number of new tokens to generate.
fn prepare(v: usize, prompt: &[usize], cfg: &GenerateConfig) -> crate::Result<usize> {
    let max_new = cfg.validate(v, prompt.len())?;
    if let Some((i, &id)) = prompt.iter().enumerate().find(|&(_, &id)| id >= v) {
        return Err(crate::Error::config(
            "generate",
            "prompt",
            format!("token id {id} at position {i}"),
            format!("ids below the vocabulary size {v}"),
        ));
    }
    Ok(max_new)
}

/// [`generate`] with a callback that receives every new token as it is chosen: `on_token(row,
/// id)` (rows `0..num_returned_sequences`; a row that stopped gets no more calls). An `Err` from
/// the callback stops generation and is returned. Pair it with
/// [`crate::tokenizer::StreamDecoder`] to print text as it is generated.
///
/// # Errors
/// [`crate::Error::Config`] for beam search (`num_beams > 1`: its hypotheses are only final at
/// the end, as with Hugging Face streamers); otherwise as [`generate`] and the callback's.
pub fn generate_streaming<D: Decoder + ?Sized>(
    model: &mut D,
    prompt: &[usize],
    cfg: &GenerateConfig,
    on_token: &mut dyn FnMut(usize, usize) -> crate::Result<()>,
) -> crate::Result<Vec<Vec<usize>>> {
    if cfg.num_beams > 1 {
        return Err(crate::Error::config(
            "generate_streaming",
            "num_beams",
            cfg.num_beams,
            "1 (streaming shows tokens as they are chosen; beam search decides at the end)",
        ));
    }
    let max_new = prepare(model.vocab_size(), prompt, cfg)?;
    search::greedy_or_sample(model, prompt, cfg, max_new, on_token)
}
