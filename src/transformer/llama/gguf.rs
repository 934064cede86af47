//! Loading [`Llama`] from a GGUF file (llama.cpp's format), weights kept in their encoding.

use super::{Llama, LlamaConfig, LlamaLayer, Weight};
use crate::error::{Error, Result};
use crate::io::GgufFile;
use crate::ops::rope::RopeLayout;
use crate::param::Param;
use std::path::Path;

impl Llama {
    /// Reads the model of a GGUF file (`general.architecture = "llama"`), keeping every matrix
    /// in its stored encoding (F32, F16, BF16, Q8_0, Q4_0, Q4_1) inside the memory map: no
    /// dequantised copy. RoPE uses llama.cpp's adjacent-pair layout, matching the file's
    /// permuted `attn_q` / `attn_k` rows.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] from the GGUF reader; [`Error::Config`] for another
    /// architecture or inconsistent hyper-parameters; [`Error::Param`] naming a missing or
    /// wrongly shaped tensor; the reader's error for an unsupported tensor type.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path.as_ref())?;
        Self::from_gguf_file(&file)
    }

    /// [`Llama::from_gguf`] on an opened file.
    ///
    /// # Errors
    /// As [`Llama::from_gguf`].
    pub fn from_gguf_file(file: &GgufFile) -> Result<Self> {
        let config = config_from_gguf(file)?;
        let (v, c, f) = (
            config.vocab_size,
            config.hidden_size,
            config.intermediate_size,
        );
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let mat = |name: String, rows: usize, cols: usize| -> Result<Weight> {
            Weight::quant(&name, file.matrix(&name)?, rows, cols)
        };
        let norm = |name: String| -> Result<Param> {
            let t = file.tensor_f32(&name)?;
            if t.shape() != [c] {
                return Err(Error::Param {
                    name,
                    message: format!("expected shape [{c}], got {:?}", t.shape()),
                });
            }
            Ok(Param::new(t))
        };
        let embed = mat("token_embd.weight".into(), v, c)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers.min(1024));
        for i in 0..config.num_hidden_layers {
            let p = format!("blk.{i}.");
            layers.push(LlamaLayer {
                input_layernorm: norm(format!("{p}attn_norm.weight"))?,
                q_proj: mat(format!("{p}attn_q.weight"), q, c)?,
                k_proj: mat(format!("{p}attn_k.weight"), kv, c)?,
                v_proj: mat(format!("{p}attn_v.weight"), kv, c)?,
                o_proj: mat(format!("{p}attn_output.weight"), c, q)?,
                post_attention_layernorm: norm(format!("{p}ffn_norm.weight"))?,
                gate_proj: mat(format!("{p}ffn_gate.weight"), f, c)?,
                up_proj: mat(format!("{p}ffn_up.weight"), f, c)?,
                down_proj: mat(format!("{p}ffn_down.weight"), c, f)?,
            });
        }
        let norm_f = norm("output_norm.weight".into())?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(mat("output.weight".into(), v, c)?)
        };
        Llama::from_parts(
            config,
            embed,
            layers,
            norm_f,
            lm_head,
            RopeLayout::Interleaved,
        )
    }
}

/// The config of a GGUF file's `llama.*` metadata (and its tokenizer's special ids).
///
/// # Errors
/// [`Error::Config`] for another architecture, partial RoPE, or a config that fails
/// [`LlamaConfig::validate`]; the reader's errors for missing or mistyped keys.
pub fn config_from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
    let arch = file.string("general.architecture")?;
    if arch != "llama" {
        return Err(Error::config(
            "Llama::from_gguf",
            "general.architecture",
            format!("{arch:?}"),
            "\"llama\" (the Llama architecture; other GGUF architectures are not implemented)",
        ));
    }
    let dim = |key: &str| -> Result<usize> {
        let n = file.u64(key)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= 1 << 31)
            .ok_or_else(|| Error::config("Llama::from_gguf", key, n, "a size ≤ 2^31"))
    };
    let opt_dim = |key: &str| -> Result<Option<usize>> {
        if file.get(key).is_some() {
            dim(key).map(Some)
        } else {
            Ok(None)
        }
    };
    let hidden = dim("llama.embedding_length")?;
    let heads = dim("llama.attention.head_count")?;
    let kv = opt_dim("llama.attention.head_count_kv")?.unwrap_or(heads);
    let embd = file
        .tensor_info("token_embd.weight")
        .ok_or_else(|| Error::Param {
            name: "token_embd.weight".into(),
            message: "missing from the GGUF file".into(),
        })?;
    let vocab = match opt_dim("llama.vocab_size")? {
        Some(v) => v,
        None => embd.dims.get(1).copied().unwrap_or(0) as usize,
    };
    let mut cfg = LlamaConfig::new(
        vocab,
        hidden,
        dim("llama.feed_forward_length")?,
        dim("llama.block_count")?,
        heads,
        kv,
    );
    cfg.head_dim = opt_dim("llama.attention.key_length")?.unwrap_or(hidden / heads.max(1));
    if let Some(rot) = opt_dim("llama.rope.dimension_count")?
        && rot != cfg.head_dim
    {
        return Err(Error::config(
            "Llama::from_gguf",
            "llama.rope.dimension_count",
            rot,
            format!(
                "the head size {} (partial RoPE is not implemented)",
                cfg.head_dim
            ),
        ));
    }
    cfg.max_position_embeddings = dim("llama.context_length")?;
    cfg.rms_norm_eps = file.f32("llama.attention.layer_norm_rms_epsilon")? as f64;
    if file.get("llama.rope.freq_base").is_some() {
        cfg.rope_theta = file.f32("llama.rope.freq_base")? as f64;
    }
    cfg.tie_word_embeddings = file.tensor_info("output.weight").is_none();
    let id = |key: &str| -> Result<Option<usize>> { opt_dim(key) };
    cfg.bos_token_id = id("tokenizer.ggml.bos_token_id")?;
    cfg.eos_token_id = id("tokenizer.ggml.eos_token_id")?.into_iter().collect();
    cfg.pad_token_id = id("tokenizer.ggml.padding_token_id")?;
    cfg.validate()?;
    Ok(cfg)
}
