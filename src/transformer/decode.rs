//! [`LmDecoder`]: any causal LM with a KV cache ([`Gpt`], [`super::Llama`]) as a [`Decoder`]
//! for [`crate::generate`], with or without the cache, cropping the context to the model's
//! context length.

use super::{Gpt, KvCache};
use crate::error::{Error, Result};
use crate::generate::Decoder;
use ndarray::{Array2, ArrayView2, Axis};

/// A causal language model that generation can drive through a [`KvCache`].
pub trait CachedLm {
    /// Number of token ids `V`.
    fn vocab_size(&self) -> usize;
    /// The most positions one forward can see (`block_size`, `max_position_embeddings`).
    fn context_len(&self) -> usize;
    /// A fresh cache for `rows` sequences.
    fn new_cache(&self, rows: usize) -> KvCache;
    /// Runs `Tn` new positions per row through the cache; the logits of each row's last one.
    ///
    /// # Shapes
    /// `tokens: (R, Tn)` → `(R, V)`.
    ///
    /// # Errors
    /// As the model's cached forward (an id `≥ V`, a full context, rows ≠ the cache's).
    fn forward_cached(
        &mut self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>>;
    /// The logits of each row's last position from a full forward without a cache.
    ///
    /// # Shapes
    /// `tokens: (R, T)` → `(R, V)`.
    ///
    /// # Errors
    /// As the model's forward.
    fn forward_last(&mut self, tokens: ArrayView2<usize>) -> Result<Array2<f32>>;
}

/// An owned model: the cached forward as `&Gpt`'s; the uncached reference path is the full
/// training-side forward.
impl CachedLm for Gpt {
    fn vocab_size(&self) -> usize {
        (&self).vocab_size()
    }
    fn context_len(&self) -> usize {
        (&self).context_len()
    }
    fn new_cache(&self, rows: usize) -> KvCache {
        Gpt::new_cache(self, rows)
    }
    fn forward_cached(
        &mut self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        // the shared-reference implementation, spelled out (a plain `self.` call would recurse)
        <&Gpt as CachedLm>::forward_cached(&mut &*self, tokens, cache)
    }
    fn forward_last(&mut self, tokens: ArrayView2<usize>) -> Result<Array2<f32>> {
        let logits = self.forward(tokens, crate::Mode::Eval)?;
        let t = tokens.ncols();
        Ok(logits
            .index_axis(Axis(1), t - 1)
            .to_owned()
            .into_dimensionality()
            .expect("(R, V)"))
    }
}

/// A shared reference drives generation too: the cached forward needs only `&Gpt`
/// ([`Gpt::generate`] takes `&self`). Its uncached reference path runs the whole context
/// through a fresh cache.
impl CachedLm for &Gpt {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn context_len(&self) -> usize {
        self.config().block_size
    }
    fn new_cache(&self, rows: usize) -> KvCache {
        Gpt::new_cache(self, rows)
    }
    fn forward_cached(
        &mut self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        Gpt::forward_cached(self, tokens, cache)
    }
    fn forward_last(&mut self, tokens: ArrayView2<usize>) -> Result<Array2<f32>> {
        let mut cache = Gpt::new_cache(self, tokens.nrows());
        Gpt::forward_cached(self, tokens, &mut cache)
    }
}

/// Drives a [`CachedLm`] for generation: every row is decoded together as one batch.
///
/// With the cache (the default, e.g. [`Gpt::decoder`]) the prompt is run once and each new
/// token costs one position per row. Without it ([`Gpt::decoder_without_cache`]) every step
/// re-runs the whole context, the reference the cached path is tested against. When a row
/// reaches the context length the context is cropped to its last `context_len` tokens
/// (nanoGPT's `idx[:, -block_size:]`) and, with the cache, the cropped context is re-run once
/// per step.
#[derive(Debug)]
pub struct LmDecoder<'a, M: CachedLm + ?Sized> {
    gpt: &'a mut M,
    use_cache: bool,
    cache: KvCache,
    /// The tokens of every row so far.
    rows: Vec<Vec<usize>>,
}

/// A [`Gpt`] as a [`Decoder`] (see [`LmDecoder`]).
pub type GptDecoder<'a> = LmDecoder<'a, Gpt>;

impl Gpt {
    /// A decoder that uses a KV cache (see [`GptDecoder`]).
    pub fn decoder(&mut self) -> GptDecoder<'_> {
        GptDecoder::new(self, true)
    }

    /// A decoder that re-runs the whole context at every step (no KV cache).
    pub fn decoder_without_cache(&mut self) -> GptDecoder<'_> {
        GptDecoder::new(self, false)
    }
}

impl<'a, M: CachedLm + ?Sized> LmDecoder<'a, M> {
    /// A decoder over `model`, with or without the KV cache.
    pub fn new(gpt: &'a mut M, use_cache: bool) -> Self {
        let cache = gpt.new_cache(0);
        LmDecoder {
            gpt,
            use_cache,
            cache,
            rows: Vec::new(),
        }
    }

    /// The last `block_size` tokens of every row, as a `(R, T)` batch.
    fn context(&self) -> Result<Array2<usize>> {
        let bs = self.gpt.context_len();
        let len = self.rows.first().map_or(0, Vec::len);
        if len == 0 || self.rows.iter().any(|r| r.len() != len) {
            return Err(Error::shape(
                "LmDecoder",
                "rows of one common length ≥ 1",
                &self.rows.iter().map(Vec::len).collect::<Vec<_>>(),
            ));
        }
        let t = len.min(bs);
        let flat: Vec<usize> = self
            .rows
            .iter()
            .flat_map(|r| r[len - t..].iter().copied())
            .collect();
        Ok(Array2::from_shape_vec((self.rows.len(), t), flat).expect("R·T tokens"))
    }

    /// Runs the (cropped) context from scratch: a fresh cache, or a full forward without one.
    fn run_context(&mut self) -> Result<Array2<f32>> {
        let ctx = self.context()?;
        if self.use_cache {
            self.cache = self.gpt.new_cache(ctx.nrows());
            self.gpt.forward_cached(ctx.view(), &mut self.cache)
        } else {
            self.gpt.forward_last(ctx.view())
        }
    }
}

impl<M: CachedLm + ?Sized> Decoder for LmDecoder<'_, M> {
    fn vocab_size(&self) -> usize {
        self.gpt.vocab_size()
    }

    fn prefill(&mut self, rows: &[Vec<usize>]) -> Result<Array2<f32>> {
        self.rows = rows.to_vec();
        self.run_context()
    }

    fn step(&mut self, tokens: &[usize]) -> Result<Array2<f32>> {
        if tokens.len() != self.rows.len() {
            return Err(Error::shape(
                "LmDecoder::step",
                format!("one token per row ({} rows)", self.rows.len()),
                &[tokens.len()],
            ));
        }
        for (row, &t) in self.rows.iter_mut().zip(tokens) {
            row.push(t);
        }
        let fits = self.cache.len() < self.gpt.context_len();
        if self.use_cache && fits {
            let x = Array2::from_shape_vec((tokens.len(), 1), tokens.to_vec()).expect("(R, 1)");
            self.gpt.forward_cached(x.view(), &mut self.cache)
        } else {
            self.run_context()
        }
    }

    fn reorder(&mut self, order: &[usize]) -> Result<()> {
        if let Some(&bad) = order.iter().find(|&&r| r >= self.rows.len()) {
            return Err(Error::shape(
                "LmDecoder::reorder",
                format!("row indices < {}", self.rows.len()),
                &[bad],
            ));
        }
        self.rows = order.iter().map(|&r| self.rows[r].clone()).collect();
        if self.use_cache {
            self.cache.reorder(order)?;
        }
        Ok(())
    }
}

impl Gpt {
    /// Generates with Hugging Face `generate` semantics through the KV cache (see
    /// [`crate::generate::generate`]); the context is cropped to `block_size`. Takes `&self`:
    /// the model keeps no state while generating (the cache is the decoder's), so one model
    /// can serve several threads.
    ///
    /// ```
    /// use handgrad::generate::GenerateConfig;
    /// use handgrad::transformer::{Gpt, GptConfig};
    /// let gpt = Gpt::new(GptConfig::tiny(10), &mut handgrad::init::rng(0))?;
    /// let cfg = GenerateConfig::new().max_length(12).num_return_sequences(3).do_sample(true).seed(1);
    /// let out = gpt.generate(&[1, 2, 3], &cfg)?;
    /// assert_eq!(out.len(), 3);
    /// assert!(out.iter().all(|s| s.len() == 12 && s[..3] == [1, 2, 3]));
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`crate::generate::generate`].
    pub fn generate(
        &self,
        prompt: &[usize],
        cfg: &crate::generate::GenerateConfig,
    ) -> Result<Vec<Vec<usize>>> {
        let mut model = self;
        crate::generate::generate(&mut LmDecoder::new(&mut model, true), prompt, cfg)
    }
}
