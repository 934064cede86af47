//! Loading [`Llama`] from a Hugging Face folder (config.json + model.safetensors, possibly
//! sharded) or a GGUF file, and saving a Hugging Face folder.

use super::{Llama, LlamaConfig, LlamaLayer, Weight};
use crate::error::{Error, Result};
use crate::io::{read_safetensors, write_safetensors};
use crate::ops::rope::RopeLayout;
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::Array2;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `dir/model.safetensors`, or every shard named by `dir/model.safetensors.index.json`.
fn read_hf_weights(dir: &Path) -> Result<(BTreeMap<String, Tensor>, String)> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        let f = read_safetensors(&single)?;
        return Ok((f.tensors, single.display().to_string()));
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(io_err(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors and no model.safetensors.index.json in this folder",
            ),
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| io_err(&index, e))?;
    let name = index.display().to_string();
    let v = crate::io::parse_json_strict(&text, &name)?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(&name, "expected an object \"weight_map\": tensor → file"))?;
    let mut files = BTreeSet::new();
    let mut owner = HashMap::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
            .ok_or_else(|| {
                Error::format(
                    &name,
                    format!("weight_map[{tensor:?}] must be a file name in the folder, got {file}"),
                )
            })?;
        files.insert(file.to_string());
        owner.insert(tensor.clone(), file.to_string());
    }
    let mut all = BTreeMap::new();
    for file in &files {
        let path = dir.join(file);
        for (k, t) in read_safetensors(&path)?.tensors {
            if owner.get(&k) != Some(file) {
                return Err(Error::format(
                    path.display().to_string(),
                    format!("holds {k:?}, which the index does not assign to this shard"),
                ));
            }
            all.insert(k, t);
        }
    }
    if let Some(missing) = owner.keys().find(|k| !all.contains_key(*k)) {
        return Err(Error::Param {
            name: missing.clone(),
            message: format!("listed in {name} but missing from its shard"),
        });
    }
    Ok((all, name))
}

impl Llama {
    /// Loads a Hugging Face `LlamaForCausalLM` folder: `config.json` plus `model.safetensors`
    /// (or the shards of `model.safetensors.index.json`), tensors in F32, F16 or BF16 (kept as
    /// `f32` parameters, so the model is trainable). RoPE uses the HF `rotate_half` layout.
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing file; [`Error::Format`] for a malformed file;
    /// [`Error::Config`] for an unsupported or invalid config; [`Error::Param`] naming a missing,
    /// unexpected or wrongly shaped tensor.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| io_err(&cfg_path, e))?;
        let config = LlamaConfig::from_hf_json(&text, &cfg_path.display().to_string())?;
        let (tensors, source) = read_hf_weights(dir)?;
        Self::from_state_dict(config, tensors, &source)
    }

    /// Builds a model from Hugging Face–named `f32` tensors (`model.embed_tokens.weight`,
    /// `model.layers.<i>.…`, `model.norm.weight`, `lm_head.weight` unless tied); `source` names
    /// where they came from in errors. Old checkpoints' `rotary_emb.inv_freq` buffers are
    /// ignored.
    ///
    /// # Errors
    /// As [`Llama::from_pretrained`].
    pub fn from_state_dict(
        config: LlamaConfig,
        mut tensors: BTreeMap<String, Tensor>,
        source: &str,
    ) -> Result<Self> {
        config.validate()?;
        tensors.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
        let (v, c, f) = (
            config.vocab_size,
            config.hidden_size,
            config.intermediate_size,
        );
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let mut take = |name: &str| {
            tensors.remove(name).ok_or_else(|| Error::Param {
                name: name.into(),
                message: format!("missing from {source}"),
            })
        };
        let mut mat = |name: String, rows: usize, cols: usize| -> Result<Weight> {
            Weight::dense(&name, take(&name)?, rows, cols)
        };
        let embed = mat("model.embed_tokens.weight".into(), v, c)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers.min(1024));
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}.");
            layers.push(LlamaLayer {
                input_layernorm: Param::new(Tensor::zeros(ndarray::IxDyn(&[0]))),
                q_proj: mat(format!("{p}self_attn.q_proj.weight"), q, c)?,
                k_proj: mat(format!("{p}self_attn.k_proj.weight"), kv, c)?,
                v_proj: mat(format!("{p}self_attn.v_proj.weight"), kv, c)?,
                o_proj: mat(format!("{p}self_attn.o_proj.weight"), c, q)?,
                post_attention_layernorm: Param::new(Tensor::zeros(ndarray::IxDyn(&[0]))),
                gate_proj: mat(format!("{p}mlp.gate_proj.weight"), f, c)?,
                up_proj: mat(format!("{p}mlp.up_proj.weight"), f, c)?,
                down_proj: mat(format!("{p}mlp.down_proj.weight"), c, f)?,
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(mat("lm_head.weight".into(), v, c)?)
        };
        let mut norm = |name: String| -> Result<Param> {
            let t = take(&name)?;
            if t.shape() != [c] {
                return Err(Error::Param {
                    name,
                    message: format!("expected shape [{c}], got {:?} (in {source})", t.shape()),
                });
            }
            Ok(Param::new(t))
        };
        for (i, l) in layers.iter_mut().enumerate() {
            l.input_layernorm = norm(format!("model.layers.{i}.input_layernorm.weight"))?;
            l.post_attention_layernorm =
                norm(format!("model.layers.{i}.post_attention_layernorm.weight"))?;
        }
        let final_norm = norm("model.norm.weight".into())?;
        if config.tie_word_embeddings {
            // transformers writes no lm_head for tied models; accept an identical copy
            if let Some(h) = tensors.remove("lm_head.weight")
                && Some(h.view()) != embed.param().map(|p| p.value.view())
            {
                return Err(Error::Param {
                    name: "lm_head.weight".into(),
                    message: format!(
                        "differs from model.embed_tokens.weight although the config ties \
                             them (in {source})"
                    ),
                });
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::Param {
                name: extra.clone(),
                message: format!("unexpected tensor in {source} for a LlamaForCausalLM"),
            });
        }
        Llama::from_parts(
            config,
            embed,
            layers,
            final_norm,
            lm_head,
            RopeLayout::HalfSplit,
        )
    }

    /// The weights as `f32` tensors with Hugging Face names in the Hugging Face RoPE layout
    /// (a GGUF model's `q_proj` / `k_proj` rows are un-permuted; encoded weights dequantised):
    /// what [`Llama::save_pretrained`] writes. No `lm_head.weight` when tied.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let cfg = &self.config;
        let hf = |w: &Weight, heads: Option<usize>| -> Tensor {
            let m = w.to_f32();
            match (heads, self.rope.layout()) {
                (Some(n), RopeLayout::Interleaved) => unpermute_rows(&m, n, cfg.head_dim),
                _ => m,
            }
            .into_dyn()
        };
        let mut out = BTreeMap::new();
        out.insert("model.embed_tokens.weight".into(), hf(&self.embed, None));
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}.");
            let mut put = |k: &str, t: Tensor| {
                out.insert(format!("{p}{k}"), t);
            };
            put("input_layernorm.weight", l.input_layernorm.value.clone());
            put(
                "post_attention_layernorm.weight",
                l.post_attention_layernorm.value.clone(),
            );
            put(
                "self_attn.q_proj.weight",
                hf(&l.q_proj, Some(cfg.num_attention_heads)),
            );
            put(
                "self_attn.k_proj.weight",
                hf(&l.k_proj, Some(cfg.num_key_value_heads)),
            );
            put("self_attn.v_proj.weight", hf(&l.v_proj, None));
            put("self_attn.o_proj.weight", hf(&l.o_proj, None));
            put("mlp.gate_proj.weight", hf(&l.gate_proj, None));
            put("mlp.up_proj.weight", hf(&l.up_proj, None));
            put("mlp.down_proj.weight", hf(&l.down_proj, None));
        }
        out.insert("model.norm.weight".into(), self.norm.value.clone());
        if let Some(h) = &self.lm_head {
            out.insert("lm_head.weight".into(), hf(h, None));
        }
        out
    }

    /// A copy with every weight as a trainable `f32` parameter in the Hugging Face RoPE layout
    /// (a GGUF model dequantised and its `q_proj` / `k_proj` rows un-permuted).
    ///
    /// # Errors
    /// Only if the model's own state dict were inconsistent (never for a loaded model).
    pub fn to_f32(&self) -> Result<Llama> {
        Llama::from_state_dict(self.config.clone(), self.state_dict(), "Llama::to_f32")
    }

    /// Writes `config.json`, `generation_config.json` and `model.safetensors` (F32, `{"format":
    /// "pt"}`) into `dir`, creating it: the folder loads with transformers'
    /// `LlamaForCausalLM.from_pretrained(dir)` and with [`Llama::from_pretrained`].
    ///
    /// # Errors
    /// [`Error::Io`] when the folder or a file cannot be written.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        write_safetensors(
            dir.join("model.safetensors"),
            &self.state_dict(),
            Some(meta),
        )?;
        let cfg = &self.config;
        let generation = serde_json::json!({
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id.first(),
            "pad_token_id": cfg.pad_token_id,
        });
        crate::io::write_atomic(
            dir.join("generation_config.json"),
            serde_json::to_string_pretty(&generation)
                .expect("JSON")
                .as_bytes(),
        )?;
        crate::io::write_atomic(dir.join("config.json"), cfg.to_hf_json().as_bytes())
    }
}

/// Undoes llama.cpp's converter permutation of `q_proj` / `k_proj` rows: within each of the
/// `n_heads` heads, GGUF row `2j` is HF row `j` and GGUF row `2j + 1` is HF row `j + HS/2`.
///
/// # Shapes
/// `w: (n_heads·HS, C)` → `(n_heads·HS, C)`.
pub fn unpermute_rows(w: &Array2<f32>, n_heads: usize, head_dim: usize) -> Array2<f32> {
    let half = head_dim / 2;
    let mut out = Array2::<f32>::zeros(w.raw_dim());
    for h in 0..n_heads {
        for j in 0..half {
            let base = h * head_dim;
            out.row_mut(base + j).assign(&w.row(base + 2 * j));
            out.row_mut(base + j + half)
                .assign(&w.row(base + 2 * j + 1));
        }
    }
    out
}
