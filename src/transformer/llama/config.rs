//! [`LlamaConfig`]: the hyper-parameters of a Llama-architecture model, from and to Hugging Face
//! `config.json` and from GGUF `llama.*` metadata.

use crate::error::{Error, Result};
use serde_json::{json, Value};

/// The largest size any single dimension may have (2³¹): configs read from files are checked
/// against it before anything is allocated.
const MAX_DIM: usize = 1 << 31;

/// Hyper-parameters of a Llama-family decoder (Hugging Face `LlamaConfig` names and defaults).
///
/// ```text
/// x = embed_tokens[ids]                                   (B, T, C)     C = hidden_size
/// per layer: x += o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rms(x)
///            x += down_proj(silu(gate_proj(n)) ⊙ up_proj(n)),                 n = rms(x)
/// logits = lm_head(rms(x))                                (B, T, V)     (tied: embed_tokensᵀ)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size `V`.
    pub vocab_size: usize,
    /// Residual width `C`.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads `NH`.
    pub num_attention_heads: usize,
    /// Key/value heads `NKV` (divides `NH`; `NKV < NH` is grouped-query attention).
    pub num_key_value_heads: usize,
    /// Channels per head `HS` (even). Default `C / NH`.
    pub head_dim: usize,
    /// The context length: positions `0..max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon (default 1e-6, as transformers).
    pub rms_norm_eps: f64,
    /// RoPE base θ (default 10000).
    pub rope_theta: f64,
    /// Whether the LM head is the token embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<usize>,
    /// End-of-sequence token ids (generation stops at any of them).
    pub eos_token_id: Vec<usize>,
    /// Padding token id.
    pub pad_token_id: Option<usize>,
}

impl LlamaConfig {
    /// A config with the required sizes; `head_dim = hidden / heads`, eps 1e-6, θ 10000,
    /// 2048 positions, untied head, no special tokens.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
    ) -> Self {
        LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads.max(1),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_id: Vec::new(),
            pad_token_id: None,
        }
    }

    /// SmolLM2-135M(-Instruct): 30 layers, C 576, MLP 1536, 9 heads / 3 kv heads of 64, vocab
    /// 49152, 8192 positions, θ 100000, eps 1e-5, tied head, bos 1, eos 2, pad 2.
    pub fn smollm2_135m() -> Self {
        LlamaConfig {
            max_position_embeddings: 8192,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: vec![2],
            pad_token_id: Some(2),
            ..LlamaConfig::new(49152, 576, 1536, 30, 9, 3)
        }
    }

    /// A tiny config for tests: 2 layers, C 32, MLP 64, 4 heads / 2 kv heads, 64 positions,
    /// tied head.
    pub fn tiny(vocab_size: usize) -> Self {
        LlamaConfig {
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            ..LlamaConfig::new(vocab_size, 32, 64, 2, 4, 2)
        }
    }

    /// The attention head layout `(NH, NKV)`.
    pub fn heads(&self) -> crate::ops::attention::Heads {
        crate::ops::attention::Heads::gqa(self.num_attention_heads, self.num_key_value_heads)
    }

    /// Checks every size and their relations.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field: a zero or absurd (> 2³¹) size, `NKV ∤ NH`, an odd
    /// `head_dim`, a non-positive eps or θ, a special token id `≥ V`.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, value: String, expected: &str| {
            Err(Error::config("LlamaConfig", name, value, expected))
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 || v > MAX_DIM {
                return bad(name, v.to_string(), "a whole number in 1..=2^31");
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(
                "num_key_value_heads",
                self.num_key_value_heads.to_string(),
                &format!(
                    "a divisor of num_attention_heads = {}",
                    self.num_attention_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                self.head_dim.to_string(),
                "an even number (RoPE pairs)",
            );
        }
        if self
            .num_attention_heads
            .checked_mul(self.head_dim)
            .is_none_or(|w| w > MAX_DIM)
        {
            return bad("head_dim", self.head_dim.to_string(), "NH·head_dim ≤ 2^31");
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(
                "rms_norm_eps",
                self.rms_norm_eps.to_string(),
                "a finite value > 0",
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(
                "rope_theta",
                self.rope_theta.to_string(),
                "a finite value > 0",
            );
        }
        let ids = self
            .bos_token_id
            .iter()
            .map(|&id| ("bos_token_id", id))
            .chain(self.eos_token_id.iter().map(|&id| ("eos_token_id", id)))
            .chain(self.pad_token_id.iter().map(|&id| ("pad_token_id", id)));
        for (name, id) in ids {
            if id >= self.vocab_size {
                return bad(
                    name,
                    id.to_string(),
                    &format!("an id below vocab_size = {}", self.vocab_size),
                );
            }
        }
        Ok(())
    }

    /// The number of parameters (tied head counted once).
    pub fn num_params(&self) -> usize {
        let (c, f) = (self.hidden_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let layer = 2 * c + c * q + 2 * c * kv + q * c + 3 * c * f;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * c
        };
        self.vocab_size * c + self.num_hidden_layers * layer + c + head
    }

    /// Parses a Hugging Face `config.json` of a `LlamaForCausalLM` (`model_type` "llama"; the
    /// RoPE base from `rope_theta` or transformers 5's `rope_parameters.rope_theta`); `source`
    /// names the file in errors.
    ///
    /// # Errors
    /// [`Error::Format`] for invalid JSON or a missing / mistyped field; [`Error::Config`] for an
    /// architecture handgrad does not implement (another `model_type` or `hidden_act`, biases,
    /// RoPE scaling other than the default) or a config that fails [`LlamaConfig::validate`].
    pub fn from_hf_json(text: &str, source: &str) -> Result<Self> {
        let v: Value = crate::io::parse_json_strict(text, source)?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::format(source, "expected a JSON object"))?;
        let int = |key: &str, default: Option<usize>| -> Result<usize> {
            match obj.get(key) {
                Some(x) if !x.is_null() => x
                    .as_u64()
                    .filter(|&n| n <= MAX_DIM as u64)
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        Error::format(
                            source,
                            format!("\"{key}\" must be a whole number ≤ 2^31, got {x}"),
                        )
                    }),
                _ => default
                    .ok_or_else(|| Error::format(source, format!("missing the field \"{key}\""))),
            }
        };
        let float = |x: Option<&Value>, key: &str, default: f64| -> Result<f64> {
            match x {
                Some(Value::Null) | None => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| {
                    Error::format(source, format!("\"{key}\" must be a number, got {x}"))
                }),
            }
        };
        let ids = |key: &str| -> Result<Vec<usize>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_u64().map(|n| n as usize).ok_or_else(|| {
                            Error::format(source, format!("\"{key}\" must hold token ids, got {x}"))
                        })
                    })
                    .collect(),
                Some(x) => x.as_u64().map(|n| vec![n as usize]).ok_or_else(|| {
                    Error::format(source, format!("\"{key}\" must be a token id, got {x}"))
                }),
            }
        };
        let unsupported = |field: &str, value: String, expected: &str| {
            Err(Error::config(
                format!("LlamaConfig from {source}"),
                field,
                value,
                expected,
            ))
        };
        match obj.get("model_type").and_then(Value::as_str) {
            Some("llama") | None => {}
            Some(other) => return unsupported("model_type", other.into(), "\"llama\""),
        }
        match obj.get("hidden_act").and_then(Value::as_str) {
            Some("silu") | None => {}
            Some(other) => return unsupported("hidden_act", other.into(), "\"silu\""),
        }
        for key in ["attention_bias", "mlp_bias"] {
            if obj.get(key).and_then(Value::as_bool) == Some(true) {
                return unsupported(key, "true".into(), "false (bias-free projections)");
            }
        }
        let rope = obj
            .get("rope_parameters")
            .or_else(|| obj.get("rope_scaling"));
        let mut theta = float(obj.get("rope_theta"), "rope_theta", 10000.0)?;
        if let Some(Value::Object(r)) = rope {
            match r
                .get("rope_type")
                .or_else(|| r.get("type"))
                .and_then(Value::as_str)
            {
                Some("default") | None => {}
                Some(other) => {
                    return unsupported("rope_type", other.into(), "\"default\" (no RoPE scaling)")
                }
            }
            if r.contains_key("rope_theta") {
                theta = float(r.get("rope_theta"), "rope_parameters.rope_theta", theta)?;
            }
        }
        let hidden = int("hidden_size", None)?;
        let heads = int("num_attention_heads", None)?;
        let mut cfg = LlamaConfig::new(
            int("vocab_size", None)?,
            hidden,
            int("intermediate_size", None)?,
            int("num_hidden_layers", None)?,
            heads,
            int("num_key_value_heads", Some(heads))?,
        );
        cfg.head_dim = int("head_dim", Some(hidden / heads.max(1)))?;
        cfg.max_position_embeddings = int("max_position_embeddings", Some(2048))?;
        cfg.rms_norm_eps = float(obj.get("rms_norm_eps"), "rms_norm_eps", 1e-6)?;
        cfg.rope_theta = theta;
        cfg.tie_word_embeddings = match obj.get("tie_word_embeddings") {
            None | Some(Value::Null) => false,
            Some(x) => x.as_bool().ok_or_else(|| {
                Error::format(
                    source,
                    format!("\"tie_word_embeddings\" must be a bool, got {x}"),
                )
            })?,
        };
        cfg.bos_token_id = ids("bos_token_id")?.first().copied();
        cfg.eos_token_id = ids("eos_token_id")?;
        cfg.pad_token_id = ids("pad_token_id")?.first().copied();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as a Hugging Face `config.json` that transformers' `LlamaForCausalLM` loads.
    pub fn to_hf_json(&self) -> String {
        let eos = match self.eos_token_id.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let v = json!({
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": false,
            "model_type": "llama",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pad_token_id": self.pad_token_id,
            "pretraining_tp": 1,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": null,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": true,
            "vocab_size": self.vocab_size,
        });
        serde_json::to_string_pretty(&v).expect("a JSON value serialises")
    }
}
