//! The cached (incremental) forward of [`Llama`] through the shared [`KvCache`] and attention
//! kernel, its [`CachedLm`] implementation, and generation.

use super::Llama;
use crate::error::{Error, Result};
use crate::generate::GenerateConfig;
use crate::ops::kv_attention::attention_cached;
use crate::transformer::{CachedLm, KvCache, LmDecoder};
use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, ShapeBuilder};

impl Llama {
    /// A fresh [`KvCache`] for `rows` sequences (one key/value list per row and kv head).
    pub fn new_cache(&self, rows: usize) -> KvCache {
        KvCache::new(
            self.config.num_hidden_layers,
            self.config.num_key_value_heads,
            rows,
        )
    }

    /// Runs `tokens` (`Tn` new positions per row) through the model with `cache`, appending
    /// their keys and values, and returns the logits of each row's last new position.
    /// Positions continue from [`KvCache::len`] (RoPE angles use them).
    ///
    /// # Shapes
    /// `tokens: (R, Tn)` → `(R, V)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `R` differs from the cache's rows, `Tn = 0`, or
    /// `len + Tn > max_position_embeddings`; [`Error::State`] when the cache was made for or
    /// filled by a model of another shape; [`Error::Label`] for an id `≥ V`;
    /// [`Error::Param`] for a weight replaced with another shape.
    pub fn forward_cached(
        &self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        let (rows, tn) = tokens.dim();
        let cfg = &self.config;
        cache.check_model(
            "Llama::forward_cached",
            (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim),
            (rows, tn),
        )?;
        let start = cache.len();
        if start + tn > cfg.max_position_embeddings {
            return Err(Error::shape(
                "Llama::forward_cached",
                format!(
                    "at most max_position_embeddings = {} positions in all ({start} cached + \
                     {tn} new)",
                    cfg.max_position_embeddings
                ),
                &[rows, tn],
            ));
        }
        self.check_ids(tokens.iter(), "forward_cached")?;
        self.check_shapes()?;
        let flat: Vec<usize> = tokens.iter().copied().collect();
        let positions: Vec<usize> = (0..rows * tn).map(|i| start + i % tn).collect();
        let (nh, nkv, hs) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (qw, kvw) = (nh * hs, nkv * hs);
        let mut x = self.embed_rows(&flat);
        for (l, layer) in self.layers.iter().enumerate() {
            let n = self.rms(x.view(), &layer.input_layernorm);
            let qkv = self.qkv(layer, n.view(), &positions);
            let (keys, values) = cache.layer_mut(l);
            for r in 0..rows {
                for i in 0..tn {
                    let row = qkv.row(r * tn + i);
                    let row = row.as_slice().expect("contiguous");
                    for g in 0..nkv {
                        let k0 = qw + g * hs;
                        keys[r * nkv + g].extend_from_slice(&row[k0..k0 + hs]);
                        let v0 = qw + kvw + g * hs;
                        values[r * nkv + g].extend_from_slice(&row[v0..v0 + hs]);
                    }
                }
            }
            // the query heads as a (R, Tn, NH·HS) view of the packed rows (no copy)
            let width = qkv.ncols();
            let q = ArrayView3::from_shape(
                (rows, tn, qw).strides((tn * width, width, 1)),
                qkv.as_slice().expect("a fresh standard-layout buffer"),
            )
            .expect("qkv holds R·Tn rows of width ≥ NH·HS");
            let mut y = Array3::<f32>::zeros((rows, tn, qw));
            attention_cached(q, cfg.heads(), keys, values, y.view_mut());
            let y = y
                .into_shape_with_order((rows * tn, qw))
                .expect("contiguous");
            let mut o = Array2::<f32>::zeros(x.raw_dim());
            layer.o_proj.matmul_t(y.view(), o.view_mut());
            x += &o;
            self.mlp_residual(layer, x.view_mut());
        }
        cache.advance(tn);
        let last: Vec<usize> = (0..rows).map(|r| r * tn + tn - 1).collect();
        let xl = x.select(ndarray::Axis(0), &last);
        Ok(self.logits_of(xl.view()))
    }

    /// A decoder for [`crate::generate::generate`] that uses the KV cache.
    pub fn decoder(&mut self) -> LmDecoder<'_, Llama> {
        LmDecoder::new(self, true)
    }

    /// A decoder that re-runs the whole context at every step (the reference for the cache).
    pub fn decoder_without_cache(&mut self) -> LmDecoder<'_, Llama> {
        LmDecoder::new(self, false)
    }

    /// Generates with Hugging Face `generate` semantics through the KV cache (greedy,
    /// sampling, beam search, penalties, stop tokens: see [`crate::generate::generate`]).
    /// Takes `&self`: the model keeps no state while generating (the cache is the decoder's),
    /// so one model can serve several threads.
    ///
    /// # Errors
    /// [`Error::Shape`] when the prompt is longer than `max_position_embeddings`; as
    /// [`crate::generate::generate`] otherwise.
    pub fn generate(&self, prompt: &[usize], cfg: &GenerateConfig) -> Result<Vec<Vec<usize>>> {
        self.check_prompt(prompt)?;
        let mut model = self;
        crate::generate::generate(&mut LmDecoder::new(&mut model, true), prompt, cfg)
    }

    /// [`Llama::generate`] with a callback that receives each new token as it is chosen
    /// (`on_token(row, id)`; see [`crate::generate::generate_streaming`]).
    ///
    /// # Errors
    /// As [`Llama::generate`]; beam search is not streamed ([`Error::Config`]).
    pub fn generate_streaming(
        &self,
        prompt: &[usize],
        cfg: &GenerateConfig,
        on_token: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Vec<Vec<usize>>> {
        self.check_prompt(prompt)?;
        let mut model = self;
        let mut decoder = LmDecoder::new(&mut model, true);
        crate::generate::generate_streaming(&mut decoder, prompt, cfg, on_token)
    }

    /// Checks that `prompt` fits the context.
    pub(crate) fn check_prompt(&self, prompt: &[usize]) -> Result<()> {
        let ctx = self.config.max_position_embeddings;
        if prompt.len() > ctx {
            return Err(Error::shape(
                "Llama::generate",
                format!("a prompt of at most max_position_embeddings = {ctx} tokens"),
                &[prompt.len()],
            ));
        }
        Ok(())
    }
}

/// A shared reference drives generation too: the cached forward needs only `&Llama`
/// ([`Llama::generate`] takes `&self`).
impl CachedLm for &Llama {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn context_len(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn new_cache(&self, rows: usize) -> KvCache {
        Llama::new_cache(self, rows)
    }
    fn forward_cached(
        &mut self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        Llama::forward_cached(self, tokens, cache)
    }
    fn forward_last(&mut self, tokens: ArrayView2<usize>) -> Result<Array2<f32>> {
        let logits = self.forward(tokens)?;
        let t = tokens.ncols();
        Ok(logits.slice(s![.., t - 1, ..]).to_owned())
    }
}

impl CachedLm for Llama {
    fn vocab_size(&self) -> usize {
        (&self).vocab_size()
    }
    fn context_len(&self) -> usize {
        (&self).context_len()
    }
    fn new_cache(&self, rows: usize) -> KvCache {
        Llama::new_cache(self, rows)
    }
    fn forward_cached(
        &mut self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        // the shared-reference implementation, spelled out (a plain `self.` call would recurse)
        <&Llama as CachedLm>::forward_cached(&mut &*self, tokens, cache)
    }
    fn forward_last(&mut self, tokens: ArrayView2<usize>) -> Result<Array2<f32>> {
        <&Llama as CachedLm>::forward_last(&mut &*self, tokens)
    }
}
