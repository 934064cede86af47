//! [`GenerateConfig`]: Hugging Face `GenerationConfig` semantics.

use crate::error::{Error, Result};

/// How to generate (Hugging Face `generate` arguments, with their defaults).
///
/// ```
/// use handgrad::generate::GenerateConfig;
/// let cfg = GenerateConfig::new().max_length(50).num_return_sequences(5).do_sample(true)
///     .top_k(50).seed(7);
/// assert_eq!(cfg.validate(100, 6)?, 44); // 50 − a 6-token prompt
/// // greedy decoding cannot return 5 different sequences
/// assert!(GenerateConfig::new().num_return_sequences(5).validate(100, 6).is_err());
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Total length, prompt included (HF default 20). Ignored when `max_new_tokens` is set.
    pub max_length: usize,
    /// New tokens to generate, not counting the prompt (default unset; takes precedence).
    pub max_new_tokens: Option<usize>,
    /// The end-of-sequence token(s) cannot be produced before this many new tokens (default 0).
    pub min_new_tokens: usize,
    /// Sequences to return (default 1): rows decoded together when sampling, the best
    /// hypotheses with beam search.
    pub num_return_sequences: usize,
    /// Sample from the processed distribution instead of taking the arg-max (default false).
    pub do_sample: bool,
    /// Divides the logits before sampling (default 1.0). Only with `do_sample`: another value
    /// without it is an error (`temperature`, `top_k` other than 50 and `top_p` shape sampling,
    /// which greedy and beam search would silently ignore).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens when sampling (HF default 50; `None`: all).
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`
    /// (default 1.0: all; only when sampling).
    pub top_p: f32,
    /// Penalises tokens already in the sequence, prompt included (default 1.0: none).
    pub repetition_penalty: f32,
    /// Tokens that end a sequence (default none). A finished sequence ends with its stop token.
    pub eos_token_id: Vec<usize>,
    /// Beams for beam search (default 1: no beam search).
    pub num_beams: usize,
    /// Beam search: hypothesis score = log-prob sum / (new tokens ^ length_penalty) (default 1).
    pub length_penalty: f32,
    /// Beam search: stop as soon as `num_beams` hypotheses are finished (default false: HF's
    /// heuristic, stop when no running beam can beat the worst finished one).
    pub early_stopping: bool,
    /// Seed of the sampling (default 0): the same seed gives the same text.
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_length: 20,
            max_new_tokens: None,
            min_new_tokens: 0,
            num_return_sequences: 1,
            do_sample: false,
            temperature: 1.0,
            top_k: Some(50),
            top_p: 1.0,
            repetition_penalty: 1.0,
            eos_token_id: Vec::new(),
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: false,
            seed: 0,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $t:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $t) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl GenerateConfig {
    /// The Hugging Face defaults (see the fields).
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Total length including the prompt.
        max_length: usize,
        /// Stop tokens are blocked until this many new tokens.
        min_new_tokens: usize,
        /// Sequences to return.
        num_return_sequences: usize,
        /// Sample instead of greedy / beam search.
        do_sample: bool,
        /// Sampling temperature (> 0).
        temperature: f32,
        /// Nucleus probability in `(0, 1]`.
        top_p: f32,
        /// Repetition penalty (> 0; 1 = none).
        repetition_penalty: f32,
        /// Beams (1 = no beam search).
        num_beams: usize,
        /// Beam-search length penalty exponent.
        length_penalty: f32,
        /// Beam-search early stopping.
        early_stopping: bool,
        /// Sampling seed.
        seed: u64,
    }

    /// New tokens to generate, not counting the prompt (overrides `max_length`).
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = Some(n);
        self
    }

    /// Top-k filtering when sampling (`k ≥ 1`).
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    /// No top-k filtering.
    pub fn no_top_k(mut self) -> Self {
        self.top_k = None;
        self
    }

    /// One end-of-sequence token.
    pub fn eos_token_id(mut self, id: usize) -> Self {
        self.eos_token_id = vec![id];
        self
    }

    /// Several stop tokens.
    pub fn stop_tokens(mut self, ids: &[usize]) -> Self {
        self.eos_token_id = ids.to_vec();
        self
    }

    /// Checks the config against a model's vocabulary and a prompt length and returns how many
    /// new tokens to generate (at most).
    ///
    /// # Errors
    /// [`Error::Config`] naming the value given and what is expected: an empty prompt; a
    /// `max_length` not above the prompt length (without `max_new_tokens`); `temperature ≤ 0`
    /// or `top_k = 0` when sampling; `top_p` outside `(0, 1]`; `repetition_penalty ≤ 0`;
    /// `num_return_sequences` or `num_beams` of 0; greedy decoding with
    /// `num_return_sequences > 1`; `num_return_sequences > num_beams` in beam search; beam
    /// sampling; a stop token `≥ vocab_size`; `temperature ≠ 1`, `top_p ≠ 1` or a `top_k`
    /// other than the default 50 without `do_sample` (they would be ignored).
    pub fn validate(&self, vocab_size: usize, prompt_len: usize) -> Result<usize> {
        let op = "GenerateConfig";
        if prompt_len == 0 {
            return Err(Error::config(
                op,
                "prompt",
                "an empty prompt",
                "at least one token id",
            ));
        }
        let new = match self.max_new_tokens {
            Some(n) => n,
            None if self.max_length > prompt_len => self.max_length - prompt_len,
            None => {
                return Err(Error::config(
                    op,
                    "max_length",
                    self.max_length,
                    format!(
                        "more than the prompt's {prompt_len} tokens (max_length counts the \
                         prompt; set max_new_tokens to count only new tokens)"
                    ),
                ))
            }
        };
        if self.do_sample && !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::config(
                op,
                "temperature",
                self.temperature,
                "a finite number > 0",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config(op, "top_p", self.top_p, "in (0, 1]"));
        }
        if !self.do_sample {
            // Hugging Face warns and ignores these; a setting that silently does nothing
            // misleads, so it is an error here (top_k = 50 is the default and cannot be told
            // apart from an explicit top_k(50))
            let ignored = [
                (
                    "temperature",
                    self.temperature != 1.0,
                    self.temperature.to_string(),
                ),
                ("top_p", self.top_p != 1.0, self.top_p.to_string()),
                (
                    "top_k",
                    self.top_k.is_some_and(|k| k != 50),
                    format!("{:?}", self.top_k),
                ),
            ];
            if let Some((name, _, value)) = ignored.into_iter().find(|(_, set, _)| *set) {
                return Err(Error::config(
                    op,
                    name,
                    value,
                    "its default unless do_sample(true): it only shapes sampling, and greedy \
                     or beam search would ignore it",
                ));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::config(op, "top_k", 0, "at least 1 (or no_top_k())"));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::config(
                op,
                "repetition_penalty",
                self.repetition_penalty,
                "a finite number > 0 (1.0 = no penalty)",
            ));
        }
        if self.num_return_sequences == 0 {
            return Err(Error::config(op, "num_return_sequences", 0, "at least 1"));
        }
        if self.num_beams == 0 {
            return Err(Error::config(op, "num_beams", 0, "at least 1"));
        }
        if self.num_beams == 1 && !self.do_sample && self.num_return_sequences > 1 {
            return Err(Error::config(
                op,
                "num_return_sequences",
                self.num_return_sequences,
                "1 for greedy decoding, which would return the same sequence every time: set \
                 do_sample(true) to sample different sequences, or num_beams(n) with \
                 n ≥ num_return_sequences for beam search",
            ));
        }
        if self.num_beams > 1 {
            if self.do_sample {
                return Err(Error::config(
                    op,
                    "do_sample",
                    true,
                    "false with num_beams > 1 (beam sampling is not implemented)",
                ));
            }
            if self.num_return_sequences > self.num_beams {
                return Err(Error::config(
                    op,
                    "num_return_sequences",
                    self.num_return_sequences,
                    format!("at most num_beams = {}", self.num_beams),
                ));
            }
        }
        if let Some(&bad) = self.eos_token_id.iter().find(|&&id| id >= vocab_size) {
            return Err(Error::config(
                op,
                "eos_token_id",
                bad,
                format!("an id below the vocabulary size {vocab_size}"),
            ));
        }
        Ok(new)
    }
}
