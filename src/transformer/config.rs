//! [`GptConfig`]: the shape of a GPT-2–style model, its presets, and Hugging Face `config.json`.

use crate::error::{Error, Result};
use serde_json::{json, Value};

/// The hyper-parameters of a [`crate::transformer::Gpt`].
///
/// Defaults (nanoGPT / GPT-2): `dropout = 0.0`, `bias = true`, `layer_norm_eps = 1e-5`; the MLP
/// hidden width is `4·n_embd`, the activation GELU (tanh approximation, `gelu_new`), the LM head
/// is tied to `wte`.
///
/// ```
/// use handgrad::transformer::GptConfig;
/// let cfg = GptConfig::new(65, 128, 4, 4, 128).dropout(0.1);
/// assert!(cfg.validate().is_ok());
/// assert!(GptConfig::new(65, 128, 4, 3, 128).validate().is_err()); // 128 % 3 != 0
/// assert_eq!(GptConfig::gpt2().num_params(), 124_439_808);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GptConfig {
    /// Number of token ids `V` (GPT-2: 50257).
    pub vocab_size: usize,
    /// The longest context `T_max`, Hugging Face's `n_positions` (GPT-2: 1024).
    pub block_size: usize,
    /// Number of Transformer blocks.
    pub n_layer: usize,
    /// Number of attention heads `NH`; must divide `n_embd`.
    pub n_head: usize,
    /// The embedding width `C`.
    pub n_embd: usize,
    /// Dropout probability after the embeddings, on the attention probabilities and on both
    /// residual branches (default 0; nanoGPT's single `dropout`).
    pub dropout: f32,
    /// Biases in the linear layers and LayerNorms (GPT-2: `true`; only `true` is supported).
    pub bias: bool,
    /// LayerNorm epsilon (default `1e-5`).
    pub layer_norm_eps: f32,
}

impl GptConfig {
    /// A config with the given sizes and the defaults above.
    pub fn new(
        vocab_size: usize,
        block_size: usize,
        n_layer: usize,
        n_head: usize,
        n_embd: usize,
    ) -> Self {
        GptConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            dropout: 0.0,
            bias: true,
            layer_norm_eps: 1e-5,
        }
    }

    /// Sets the dropout probability (embeddings, attention probabilities, residual branches).
    pub fn dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }

    /// Sets the LayerNorm epsilon.
    pub fn layer_norm_eps(mut self, eps: f32) -> Self {
        self.layer_norm_eps = eps;
        self
    }

    /// GPT-2 small (124M): 12 layers, 12 heads, `C = 768`, 1024 positions, 50257 tokens.
    pub fn gpt2() -> Self {
        GptConfig::new(50257, 1024, 12, 12, 768)
    }

    /// GPT-2 medium (355M): 24 layers, 16 heads, `C = 1024`.
    pub fn gpt2_medium() -> Self {
        GptConfig::new(50257, 1024, 24, 16, 1024)
    }

    /// GPT-2 large (774M): 36 layers, 20 heads, `C = 1280`.
    pub fn gpt2_large() -> Self {
        GptConfig::new(50257, 1024, 36, 20, 1280)
    }

    /// GPT-2 XL (1.5B): 48 layers, 25 heads, `C = 1600`.
    pub fn gpt2_xl() -> Self {
        GptConfig::new(50257, 1024, 48, 25, 1600)
    }

    /// A small character-level model: 4 layers, 4 heads, `C = 128`, 128 positions (≈0.8M
    /// parameters plus the embeddings): trains in minutes on 2 cores.
    pub fn char_small(vocab_size: usize) -> Self {
        GptConfig::new(vocab_size, 128, 4, 4, 128)
    }

    /// A tiny model for tests: 2 layers, 4 heads, `C = 32`, 32 positions.
    pub fn tiny(vocab_size: usize) -> Self {
        GptConfig::new(vocab_size, 32, 2, 4, 32)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field, its value and what is expected: a size of 0,
    /// `n_embd % n_head != 0`, `dropout` outside `[0, 1)`, `bias = false`, or a
    /// `layer_norm_eps` that is not finite and positive.
    pub fn validate(&self) -> Result<()> {
        let op = "GptConfig";
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            if v == 0 {
                return Err(Error::config(op, field, 0, "at least 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::config(
                op,
                "n_embd",
                self.n_embd,
                format!(
                    "a multiple of n_head = {} (n_embd % n_head = {})",
                    self.n_head,
                    self.n_embd % self.n_head
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(op, "dropout", self.dropout, "in [0, 1)"));
        }
        if !self.bias {
            return Err(Error::config(
                op,
                "bias",
                false,
                "true (bias-free linear layers and LayerNorms are not implemented)",
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::config(
                op,
                "layer_norm_eps",
                self.layer_norm_eps,
                "a finite number > 0",
            ));
        }
        Ok(())
    }

    /// The head size `HS = n_embd / n_head`.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// The number of parameters (the tied LM head counted once), as Hugging Face counts them.
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        let per_block = 2 * 2 * c // ln_1, ln_2
            + c * 3 * c + 3 * c // c_attn
            + c * c + c // attn.c_proj
            + c * 4 * c + 4 * c // c_fc
            + 4 * c * c + c; // mlp.c_proj
        self.vocab_size * c + self.block_size * c + self.n_layer * per_block + 2 * c
    }

    /// Reads a Hugging Face GPT-2 `config.json` (`n_layer`, `n_head`, `n_embd`, `n_positions`,
    /// `vocab_size`, `layer_norm_epsilon`, `resid_pdrop`, `activation_function`, …).
    /// `source` names the file in errors.
    ///
    /// # Errors
    /// [`Error::Format`] for invalid JSON or a missing / mistyped field; [`Error::Config`] for
    /// an architecture handgrad does not implement (an activation other than `gelu_new` /
    /// `gelu_pytorch_tanh`, `n_inner ≠ 4·n_embd`, `scale_attn_by_inverse_layer_idx`,
    /// `reorder_and_upcast_attn`, cross-attention, untied embeddings) or a config that fails
    /// [`GptConfig::validate`].
    pub fn from_hf_json(text: &str, source: &str) -> Result<Self> {
        let v: Value = crate::io::parse_json_strict(text, source)?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::format(source, "expected a JSON object"))?;
        let int = |key: &str, default: Option<usize>| -> Result<usize> {
            match obj.get(key) {
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n <= 1 << 32)
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        Error::format(source, format!("\"{key}\" must be a whole number, got {x}"))
                    }),
                None => default
                    .ok_or_else(|| Error::format(source, format!("missing the field \"{key}\""))),
            }
        };
        let float = |key: &str, default: f64| -> Result<f64> {
            match obj.get(key) {
                Some(Value::Null) | None => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| {
                    Error::format(source, format!("\"{key}\" must be a number, got {x}"))
                }),
            }
        };
        let flag = |key: &str| obj.get(key).and_then(Value::as_bool).unwrap_or(false);
        let n_embd = int("n_embd", None)?;
        let mut cfg = GptConfig::new(
            int("vocab_size", None)?,
            int(
                "n_positions",
                obj.get("n_ctx").and_then(Value::as_u64).map(|n| n as usize),
            )?,
            int("n_layer", None)?,
            int("n_head", None)?,
            n_embd,
        );
        cfg.layer_norm_eps = float("layer_norm_epsilon", 1e-5)? as f32;
        cfg.dropout = float("resid_pdrop", 0.1)? as f32;
        let unsupported = |field: &str, value: String, expected: &str| {
            Err(Error::config(
                format!("GptConfig from {source}"),
                field,
                value,
                expected,
            ))
        };
        match obj.get("activation_function").and_then(Value::as_str) {
            None | Some("gelu_new") | Some("gelu_pytorch_tanh") => {}
            Some(other) => {
                return unsupported(
                    "activation_function",
                    other.to_string(),
                    "\"gelu_new\" or \"gelu_pytorch_tanh\" (GELU, tanh approximation)",
                )
            }
        }
        if let Some(inner) = obj.get("n_inner").filter(|x| !x.is_null())
            && inner.as_u64() != Some(4 * n_embd as u64)
        {
            return unsupported("n_inner", inner.to_string(), "null or 4·n_embd");
        }
        for key in [
            "scale_attn_by_inverse_layer_idx",
            "reorder_and_upcast_attn",
            "add_cross_attention",
        ] {
            if flag(key) {
                return unsupported(key, "true".into(), "false");
            }
        }
        if obj.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
            return unsupported("scale_attn_weights", "false".into(), "true");
        }
        if obj.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
            return unsupported(
                "tie_word_embeddings",
                "false".into(),
                "true (the LM head is tied to wte)",
            );
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as a Hugging Face GPT-2 `config.json` (loads with `GPT2LMHeadModel`).
    pub fn to_hf_json(&self) -> String {
        let v = json!({
            "activation_function": "gelu_new",
            "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "resid_pdrop": self.dropout,
            "initializer_range": 0.02,
            "layer_norm_epsilon": self.layer_norm_eps,
            "model_type": "gpt2",
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_inner": null,
            "n_layer": self.n_layer,
            "n_positions": self.block_size,
            "n_ctx": self.block_size,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "use_cache": true,
            "vocab_size": self.vocab_size,
        });
        serde_json::to_string_pretty(&v).expect("a JSON value serialises")
    }
}
