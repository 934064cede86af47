//! [`QuantGpt`]: GPT-2 for inference with its matrices kept in a stored encoding (F16, BF16,
//! Q8_0, …) and multiplied by the quantized kernels of [`crate::ops::quant`], without a
//! dequantised copy.

use super::kv_cache::{check_cached, Affine, CachedBlock};
use super::{Gpt, GptConfig, KvCache};
use crate::error::{Error, Result};
use crate::layers::LayerNorm;
use crate::ops::quant::{QMatrix, QType};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Ix1, Ix2, IxDyn};

/// A GPT-2 model for inference whose matrices are stored in `qtype` ([`Gpt::quantize`]):
/// the four projections of every block and the token embedding `wte`, which is also the tied
/// LM head. The position table `wpe`, the biases and the LayerNorms stay `f32`.
///
/// Hugging Face's `Conv1D` weights are `[in, out]` while the quantized blocks run along the
/// input, so each projection is stored transposed, as an `nn.Linear` `[out, in]` [`QMatrix`];
/// `wte` `[V, C]` is stored as it is. Products with at most 8 rows (decoding) run the
/// matrix-vector kernels (Q8_0: the integer path of [`crate::ops::quant::decode_int_path`]);
/// longer prompts dequantise tiles of 64 weight rows into a scratch and run SGEMM.
///
/// Inference only: there are no gradients, and [`super::TrainableLm`]'s training calls return
/// [`Error::State`] (train the `f32` [`Gpt`], then quantize it).
///
/// ```
/// use handgrad::generate::GenerateConfig;
/// use handgrad::ops::quant::QType;
/// use handgrad::transformer::{Gpt, GptConfig};
/// let gpt = Gpt::new(GptConfig::new(50, 16, 2, 2, 32), &mut handgrad::init::rng(0))?;
/// let q = gpt.quantize(QType::Q8_0)?;                     // C = 32: one Q8_0 block per row
/// let out = q.generate(&[1, 2, 3], &GenerateConfig::new().max_new_tokens(5))?;
/// assert_eq!(out[0].len(), 8);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct QuantGpt {
    config: GptConfig,
    qtype: QType,
    /// Token embedding and tied LM head. Shapes: `[V, C]`.
    wte: QMatrix,
    /// Position embedding. Shapes: `(P, C)`.
    wpe: Array2<f32>,
    blocks: Vec<QuantBlock>,
    ln_f: LayerNorm,
}

/// One block of a [`QuantGpt`].
#[derive(Debug, Clone)]
struct QuantBlock {
    ln_1: LayerNorm,
    ln_2: LayerNorm,
    /// `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`.
    proj: [QuantConv1D; 4],
}

/// `y = x·W + b` with `W` stored transposed (`[out, in]`) in a quantized encoding.
#[derive(Debug, Clone)]
struct QuantConv1D {
    /// `Wᵀ`. Shapes: `[out, in]`.
    w: QMatrix,
    /// Shapes: `(out)`.
    bias: Vec<f32>,
}

impl Affine for QuantConv1D {
    fn affine(&self, x: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) -> Result<()> {
        // out = x·W (the kernels' `x·(Wᵀ)ᵀ`), then + b: the same sum as b + x·W
        self.w.matmul_t(x, out.view_mut());
        for mut row in out.rows_mut() {
            for (o, b) in row.iter_mut().zip(&self.bias) {
                *o += b;
            }
        }
        Ok(())
    }
    fn width(&self) -> usize {
        self.w.rows()
    }
}

/// Encodes `w` (`[rows, cols]`, any layout) as `qtype`; `name` names the parameter in errors.
fn encode(name: &str, w: ArrayView2<f32>, qtype: QType) -> Result<QMatrix> {
    QMatrix::quantize(w.as_standard_layout().view(), qtype).map_err(|e| Error::Param {
        name: name.into(),
        message: format!("cannot be stored as {}: {e}", qtype.name()),
    })
}

/// A `[in, out]` Conv1D weight and its bias, the weight stored transposed.
fn encode_conv(name: &str, w: &Param, b: &Param, qtype: QType) -> Result<QuantConv1D> {
    let w = w
        .value
        .view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::shape(format!("{name}.weight"), "[in, out]", w.shape()))?;
    let bias = b
        .value
        .view()
        .into_dimensionality::<Ix1>()
        .map_err(|_| Error::shape(format!("{name}.bias"), "[out]", b.shape()))?;
    Ok(QuantConv1D {
        w: encode(&format!("{name}.weight"), w.t(), qtype)?,
        bias: bias.to_vec(),
    })
}

impl Gpt {
    /// An inference copy of this model with the projections and `wte` (the tied head) stored
    /// as `qtype` (see [`QuantGpt`]). Drop the `f32` model afterwards to keep only the
    /// encoded weights (GPT-2 124M: about 498 MB in `f32`, 250 MB in F16 / BF16 and 135 MB in
    /// Q8_0, the `f32` position table included).
    ///
    /// # Errors
    /// [`Error::Param`] naming a matrix whose input width is not a multiple of the encoding's
    /// block length (32 for Q8_0 / Q4_0 / Q4_1; GPT-2's 768 and 3072 are); the shape errors of
    /// [`Gpt::check_shapes`].
    pub fn quantize(&self, qtype: QType) -> Result<QuantGpt> {
        self.ensure_shapes()?;
        let wte = self
            .wte
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked [V, C]");
        let wpe = self
            .wpe
            .value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked [P, C]");
        let blocks = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (a, m) = (&b.attn, &b.mlp);
                let (fc, proj) = (m.c_fc(), m.c_proj());
                let h = format!("h.{i}.");
                Ok(QuantBlock {
                    ln_1: b.ln_1.clone(),
                    ln_2: b.ln_2.clone(),
                    proj: [
                        (format!("{h}attn.c_attn"), &a.c_attn),
                        (format!("{h}attn.c_proj"), &a.c_proj),
                        (format!("{h}mlp.c_fc"), fc),
                        (format!("{h}mlp.c_proj"), proj),
                    ]
                    .map(|(n, c)| encode_conv(&n, c.weight(), c.bias(), qtype))
                    .into_iter()
                    .collect::<Result<Vec<_>>>()?
                    .try_into()
                    .expect("four projections"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QuantGpt {
            config: self.config.clone(),
            qtype,
            wte: encode("wte.weight", wte, qtype)?,
            wpe: wpe.as_standard_layout().into_owned(),
            blocks,
            ln_f: self.ln_f.clone(),
        })
    }
}

impl QuantGpt {
    /// Reads a Hugging Face GPT-2 folder ([`Gpt::from_pretrained`]) and encodes it as `qtype`;
    /// the `f32` model is dropped before this returns.
    ///
    /// # Errors
    /// As [`Gpt::from_pretrained`] and [`Gpt::quantize`].
    pub fn from_pretrained(dir: impl AsRef<std::path::Path>, qtype: QType) -> Result<Self> {
        Gpt::from_pretrained(dir)?.quantize(qtype)
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The encoding of the matrices.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// The bytes a decoding step reads: every matrix in its encoding plus the `f32` biases
    /// and LayerNorms (the position table, one row per step, is not counted).
    pub fn weight_bytes(&self) -> usize {
        let ln = |l: &LayerNorm| 8 * l.size().unwrap_or(0);
        self.wte.data().len()
            + ln(&self.ln_f)
            + self
                .blocks
                .iter()
                .map(|b| {
                    ln(&b.ln_1)
                        + ln(&b.ln_2)
                        + b.proj
                            .iter()
                            .map(|p| p.w.data().len() + 4 * p.bias.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// A fresh [`KvCache`] for `rows` sequences of this model.
    pub fn new_cache(&self, rows: usize) -> KvCache {
        KvCache::new(self.config.n_layer, self.config.n_head, rows)
    }

    /// As [`Gpt::forward_cached`]: runs `tokens` (`Tn` new positions per row) through the model
    /// with `cache` and returns the logits of each row's last new position.
    ///
    /// # Shapes
    /// `tokens: (R, Tn)` → `(R, V)`.
    ///
    /// # Errors
    /// As [`Gpt::forward_cached`].
    pub fn forward_cached(
        &self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        let start = check_cached("QuantGpt::forward_cached", &self.config, tokens, cache)?;
        let (rows, tn) = tokens.dim();
        let c = self.config.n_embd;
        let mut x = Tensor::zeros(IxDyn(&[rows, tn, c]));
        let mut row = vec![0.0f32; c];
        for ((r, i), &id) in tokens.indexed_iter() {
            self.wte.dequantize_row(id, &mut row);
            for ((o, e), p) in x
                .slice_mut(s![r, i, ..])
                .iter_mut()
                .zip(&row)
                .zip(self.wpe.row(start + i))
            {
                *o = e + p;
            }
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let (k, v) = cache.layer_mut(l);
            x = CachedBlock {
                ln_1: &b.ln_1,
                ln_2: &b.ln_2,
                proj: [&b.proj[0], &b.proj[1], &b.proj[2], &b.proj[3]],
                n_head: self.config.n_head,
            }
            .forward(&x, k, v)?;
        }
        cache.advance(tn);
        let last = x.slice(s![.., tn - 1, ..]).to_owned();
        let h = self.ln_f.infer(&last.into_dyn())?;
        let h = h.into_dimensionality::<Ix2>().expect("(R, C)");
        let mut logits = Array2::<f32>::zeros((rows, self.config.vocab_size));
        self.wte.matmul_t(h.view(), logits.view_mut());
        Ok(logits)
    }

    /// Generates with Hugging Face `generate` semantics through the KV cache, as
    /// [`Gpt::generate`].
    ///
    /// # Errors
    /// As [`crate::generate::generate`].
    pub fn generate(
        &self,
        prompt: &[usize],
        cfg: &crate::generate::GenerateConfig,
    ) -> Result<Vec<Vec<usize>>> {
        let mut model = self;
        crate::generate::generate(&mut super::LmDecoder::new(&mut model, true), prompt, cfg)
    }

    /// The error of every training call.
    fn not_trainable(&self) -> Error {
        Error::State(format!(
            "QuantGpt is inference-only: its matrices are stored as {} and have no gradients \
             (train the f32 Gpt, then quantize it)",
            self.qtype.name()
        ))
    }
}

impl super::CachedLm for &QuantGpt {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn context_len(&self) -> usize {
        self.config.block_size
    }
    fn new_cache(&self, rows: usize) -> KvCache {
        QuantGpt::new_cache(self, rows)
    }
    fn forward_cached(
        &mut self,
        tokens: ArrayView2<usize>,
        cache: &mut KvCache,
    ) -> Result<Array2<f32>> {
        QuantGpt::forward_cached(self, tokens, cache)
    }
    fn forward_last(&mut self, tokens: ArrayView2<usize>) -> Result<Array2<f32>> {
        let mut cache = QuantGpt::new_cache(self, tokens.nrows());
        QuantGpt::forward_cached(self, tokens, &mut cache)
    }
}

/// Training a [`QuantGpt`] is an error at the first call (it has no gradients).
impl super::TrainableLm for QuantGpt {
    fn forward_loss(&mut self, _: ArrayView2<usize>, _: ArrayView2<usize>) -> Result<f32> {
        Err(self.not_trainable())
    }
    fn backward(&mut self) -> Result<()> {
        Err(self.not_trainable())
    }
    fn eval_loss(&mut self, _: ArrayView2<usize>, _: ArrayView2<usize>) -> Result<f32> {
        Err(self.not_trainable())
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Vec::new()
    }
    fn zero_grad(&mut self) {}
    fn max_len(&self) -> (&'static str, usize) {
        ("block_size", self.config.block_size)
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}
