//! [`KvCache`]: the keys and values of every layer for the rows being decoded, and the cached
//! forward of [`Gpt`] that uses it.

use super::{check_btc, Block, Gpt};
use crate::error::{Error, Result};

use crate::layers::LayerNorm;
use crate::ops::activation::gelu_forward_into;
use crate::ops::attention::Heads;
use crate::ops::kv_attention::attention_cached;
use crate::tensor::Tensor;
use ndarray::{s, Array2, Array3, ArrayView2, ArrayViewMut2, Ix2, IxDyn};

/// Keys and values of every layer, per row and head, for incremental decoding.
///
/// Layout: `k[layer][r·NKV + g]` (key/value head `g`; `NKV = NH` for GPT-2) is a flat `(L, HS)` list that grows by one `HS` row per new
/// position (`L` = [`KvCache::len`]). [`KvCache::reorder`] selects / duplicates rows (beam search).
///
/// A cache is tied to the model that fills it: every cached forward checks the cache's layer
/// count, key/value head count and (once something is cached) head width against the model's,
/// so a cache made for or filled by another model is an error, not wrong logits.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    rows: usize,
    len: usize,
    n_kv_head: usize,
    /// The width `HS` of the cached key/value rows, set by the first cached forward.
    head_dim: Option<usize>,
    k: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
}

impl KvCache {
    /// An empty cache for `rows` sequences of a model with `n_layer` blocks and `n_kv_head`
    /// key/value heads per block (GPT-2: its `n_head`; Llama: `num_key_value_heads`).
    pub fn new(n_layer: usize, n_kv_head: usize, rows: usize) -> Self {
        KvCache {
            rows,
            len: 0,
            n_kv_head,
            head_dim: None,
            k: vec![vec![Vec::new(); rows * n_kv_head]; n_layer],
            v: vec![vec![Vec::new(); rows * n_kv_head]; n_layer],
        }
    }

    /// Checks that a model with `n_layer` blocks, `n_kv_head` key/value heads of width
    /// `head_dim` can extend this cache with `tokens` (`(R, Tn)`, `Tn ≥ 1`, `R` = the cache's
    /// rows), and ties the cache to that head width.
    pub(crate) fn check_model(
        &mut self,
        who: &str,
        (n_layer, n_kv_head, head_dim): (usize, usize, usize),
        tokens: (usize, usize),
    ) -> Result<()> {
        let (rows, tn) = tokens;
        if rows != self.rows || tn == 0 {
            return Err(Error::shape(
                who,
                format!(
                    "(R, Tn) tokens with R = the cache's {} rows and Tn ≥ 1",
                    self.rows
                ),
                &[rows, tn],
            ));
        }
        let made_for = format!(
            "this cache holds {} layers of {} key/value heads{}",
            self.n_layer(),
            self.n_kv_head,
            self.head_dim
                .map_or(String::new(), |d| format!(" of width {d}"))
        );
        if self.n_layer() != n_layer
            || self.n_kv_head != n_kv_head
            || self.head_dim.is_some_and(|d| d != head_dim)
        {
            return Err(Error::State(format!(
                "{who}: the cache belongs to another model: {made_for}, the model has \
                 {n_layer} layers of {n_kv_head} key/value heads of width {head_dim} (make \
                 the cache with the model's new_cache(rows))"
            )));
        }
        self.head_dim = Some(head_dim);
        Ok(())
    }

    /// The number of key/value heads per layer this cache was made for.
    pub fn n_kv_head(&self) -> usize {
        self.n_kv_head
    }

    /// The number of layers this cache holds.
    pub fn n_layer(&self) -> usize {
        self.k.len()
    }

    /// The keys and values of layer `l`, one flat `(L, HS)` list per row and key/value head
    /// (crate-internal: the cached forwards append to them).
    pub(crate) fn layer_mut(&mut self, l: usize) -> (&mut [Vec<f32>], &mut [Vec<f32>]) {
        (&mut self.k[l], &mut self.v[l])
    }

    /// Records that `n` new positions were appended to every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// The number of cached positions `L`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of rows `R`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Keeps rows `order` (new row `i` is old row `order[i]`; rows may repeat or be dropped).
    ///
    /// # Errors
    /// [`Error::Label`] naming the first index `≥ rows` and its position in `order`.
    pub fn reorder(&mut self, order: &[usize]) -> Result<()> {
        if let Some((pos, &bad)) = order.iter().enumerate().find(|&(_, &r)| r >= self.rows) {
            return Err(Error::label(
                "KvCache::reorder",
                format!(
                    "row index {bad} at position {pos} of the order is out of range for a cache \
                     of {} rows (indices must be < {})",
                    self.rows, self.rows
                ),
            ));
        }
        let nh = self.n_kv_head;
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            let old = std::mem::take(layer);
            *layer = order
                .iter()
                .flat_map(|&r| old[r * nh..(r + 1) * nh].iter().cloned())
                .collect();
        }
        self.rows = order.len();
        Ok(())
    }
}

/// An affine projection `out = x·W + b` as the cached forward uses it: a [`super::Conv1D`]
/// (`f32`, `[in, out]`) or a stored-encoding one of [`super::QuantGpt`].
pub(crate) trait Affine {
    /// `out = x·W + b`, overwriting `out`.
    ///
    /// # Shapes
    /// `x: (rows, in)`, `out: (rows, out)`.
    fn affine(&self, x: ArrayView2<f32>, out: ArrayViewMut2<f32>) -> Result<()>;
    /// The output width.
    fn width(&self) -> usize;
}

impl Affine for super::Conv1D {
    fn affine(&self, x: ArrayView2<f32>, out: ArrayViewMut2<f32>) -> Result<()> {
        self.forward(x, out)
    }
    fn width(&self) -> usize {
        self.n_out()
    }
}

/// The parts of one pre-LN block that the cached forward runs, whatever holds the weights.
pub(crate) struct CachedBlock<'a, P: Affine> {
    pub(crate) ln_1: &'a LayerNorm,
    pub(crate) ln_2: &'a LayerNorm,
    /// `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`.
    pub(crate) proj: [&'a P; 4],
    pub(crate) n_head: usize,
}

impl<P: Affine> CachedBlock<'_, P> {
    /// Inference forward with a KV cache (no dropout): `x1 = x + attn(ln_1(x))`,
    /// `out = x1 + mlp(ln_2(x1))`, appending the new keys and values to `k` / `v` (one list
    /// per row and head) and attending over everything cached.
    ///
    /// # Shapes
    /// `x: (R, Tn, C) → (R, Tn, C)`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        k: &mut [Vec<f32>],
        v: &mut [Vec<f32>],
    ) -> Result<Tensor> {
        let c = self.proj[1].width();
        let (rows, tn) = check_btc(x, c, "CausalSelfAttention (cached)")?;
        let h1 = self.ln_1.infer(x)?;
        let mut x1 = self.attend(&h1, rows, tn, k, v)?;
        x1 += x;
        let h2 = self.ln_2.infer(&x1)?;
        let h2 = h2.as_standard_layout();
        let h2 = h2
            .view()
            .into_shape_with_order((rows * tn, c))
            .expect("standard layout");
        // fc = h2·W_fc + b_fc, act = gelu(fc), out = act·W_proj + b_proj
        let mut fc = Array2::<f32>::zeros((rows * tn, self.proj[2].width()));
        self.proj[2].affine(h2, fc.view_mut())?;
        let mut act = Array2::<f32>::zeros(fc.raw_dim());
        gelu_forward_into(
            fc.as_slice().expect("contiguous"),
            act.as_slice_mut().expect("contiguous"),
        );
        let mut out = Array2::<f32>::zeros((rows * tn, c));
        self.proj[3].affine(act.view(), out.view_mut())?;
        let mut out = out
            .into_shape_with_order(IxDyn(&[rows, tn, c]))
            .expect("contiguous");
        out += &x1;
        Ok(out)
    }

    /// `c_proj(attention(c_attn(x)))` over the cache.
    fn attend(
        &self,
        x: &Tensor,
        rows: usize,
        tn: usize,
        k: &mut [Vec<f32>],
        v: &mut [Vec<f32>],
    ) -> Result<Tensor> {
        let (c, nh) = (self.proj[1].width(), self.n_head);
        let hs = c / nh;
        let x = x.as_standard_layout();
        let x2 = x
            .view()
            .into_shape_with_order((rows * tn, c))
            .expect("standard layout");
        let mut qkv = Array2::<f32>::zeros((rows * tn, 3 * c));
        self.proj[0].affine(x2, qkv.view_mut())?;
        for r in 0..rows {
            for i in 0..tn {
                let row = qkv.row(r * tn + i);
                let row = row.as_slice().expect("contiguous");
                for h in 0..nh {
                    k[r * nh + h].extend_from_slice(&row[c + h * hs..c + (h + 1) * hs]);
                    v[r * nh + h].extend_from_slice(&row[2 * c + h * hs..2 * c + (h + 1) * hs]);
                }
            }
        }
        let q = qkv.slice(s![.., ..c]).to_owned();
        let q = q.into_shape_with_order((rows, tn, c)).expect("contiguous");
        let mut y = Array3::<f32>::zeros((rows, tn, c));
        attention_cached(q.view(), Heads::mha(nh), k, v, y.view_mut());
        let mut out = Array2::<f32>::zeros((rows * tn, c));
        let y2 = y
            .view()
            .into_shape_with_order((rows * tn, c))
            .expect("contiguous");
        self.proj[1].affine(y2, out.view_mut())?;
        Ok(out
            .into_shape_with_order(IxDyn(&[rows, tn, c]))
            .expect("contiguous"))
    }
}

impl Block {
    /// Inference forward with a KV cache (no dropout): `x + attn(ln_1(x))`, then the MLP.
    pub(crate) fn forward_cached(
        &self,
        x: &Tensor,
        k: &mut [Vec<f32>],
        v: &mut [Vec<f32>],
    ) -> Result<Tensor> {
        CachedBlock {
            ln_1: &self.ln_1,
            ln_2: &self.ln_2,
            proj: [
                &self.attn.c_attn,
                &self.attn.c_proj,
                self.mlp.c_fc(),
                self.mlp.c_proj(),
            ],
            n_head: self.attn.n_head(),
        }
        .forward(x, k, v)
    }
}

/// Checks a cached forward of `tokens` (`(R, Tn)`) on a model of config `cfg` against `cache`
/// (ids, rows, the model's shape, room left in `block_size`); returns the first new position.
pub(crate) fn check_cached(
    who: &str,
    cfg: &super::GptConfig,
    tokens: ArrayView2<usize>,
    cache: &mut KvCache,
) -> Result<usize> {
    super::gpt::check_token_ids(cfg, who, tokens)?;
    let (rows, tn) = tokens.dim();
    cache.check_model(who, (cfg.n_layer, cfg.n_head, cfg.head_size()), (rows, tn))?;
    let start = cache.len;
    if start + tn > cfg.block_size {
        return Err(Error::shape(
            who,
            format!(
                "at most block_size = {} positions in all ({start} cached + {tn} new)",
                cfg.block_size
            ),
            &[rows, tn],
        ));
    }
    Ok(start)
}

impl Gpt {
    /// Runs `tokens` (`Tn` new positions per row) through the model with `cache`, appending
    /// their keys and values, and returns the logits of each row's last new position.
    ///
    /// The first call (empty cache) is the prefill of the prompt; later calls usually pass one
    /// token per row. Positions continue from [`KvCache::len`].
    ///
    /// # Shapes
    /// `tokens: (R, Tn)` → `(R, V)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `R` differs from the cache's rows or `len + Tn > block_size`
    /// (crop the context and start a new cache); [`Error::State`] when the cache was made for
    /// or filled by a model of another shape; [`Error::Label`] for an id `≥ V`;
    /// [`Error::Param`] for a parameter replaced with another shape.
    pub fn forward_cached(
        &self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        self.ensure_shapes()?;
        let start = check_cached("Gpt::forward_cached", &self.config, tokens, cache)?;
        let (rows, tn) = tokens.dim();
        let cfg = &self.config;
        let c = cfg.n_embd;
        let wte = self
            .wte
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("[V, C]");
        let wpe = self
            .wpe
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("[P, C]");
        let mut x = Tensor::zeros(IxDyn(&[rows, tn, c]));
        for ((r, i), &id) in tokens.indexed_iter() {
            let mut xi = x.slice_mut(s![r, i, ..]);
            xi.assign(&wte.row(id));
            xi += &wpe.row(start + i);
        }
        for (l, block) in self.blocks.iter().enumerate() {
            x = block.forward_cached(&x, &mut cache.k[l], &mut cache.v[l])?;
        }
        cache.len += tn;
        let last = x.slice(s![.., tn - 1, ..]).to_owned();
        let h = self.ln_f.infer(&last.into_dyn())?;
        let h = h.into_dimensionality::<Ix2>().expect("(R, C)");
        let mut logits = Array2::<f32>::zeros((rows, cfg.vocab_size));
        self.lm_head(h.view(), logits.view_mut());
        Ok(logits)
    }

    /// A fresh [`KvCache`] for `rows` sequences of this model.
    pub fn new_cache(&self, rows: usize) -> KvCache {
        KvCache::new(self.config.n_layer, self.config.n_head, rows)
    }
}
