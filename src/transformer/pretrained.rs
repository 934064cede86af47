//! Hugging Face GPT-2 folders: [`Gpt::from_pretrained`] and [`Gpt::save_pretrained`].

use super::{Block, Gpt, GptConfig};
use crate::error::{Error, Result};
use crate::io::{read_safetensors, write_safetensors};
use crate::layers::LayerNorm;
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The prefix `GPT2LMHeadModel.save_pretrained` puts before every transformer key.
const PREFIX: &str = "transformer.";

/// Is `key` (without prefix) one of GPT-2's non-parameter attention buffers?
fn is_buffer(key: &str) -> bool {
    key.starts_with("h.") && (key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias"))
}

/// The parameters of block `h.i` and their shapes for width `c`, in state-dict order.
pub(super) fn block_shapes(c: usize) -> [(&'static str, Vec<usize>); 12] {
    [
        ("ln_1.weight", vec![c]),
        ("ln_1.bias", vec![c]),
        ("attn.c_attn.weight", vec![c, 3 * c]),
        ("attn.c_attn.bias", vec![3 * c]),
        ("attn.c_proj.weight", vec![c, c]),
        ("attn.c_proj.bias", vec![c]),
        ("ln_2.weight", vec![c]),
        ("ln_2.bias", vec![c]),
        ("mlp.c_fc.weight", vec![c, 4 * c]),
        ("mlp.c_fc.bias", vec![4 * c]),
        ("mlp.c_proj.weight", vec![4 * c, c]),
        ("mlp.c_proj.bias", vec![c]),
    ]
}

impl Gpt {
    /// Checks every parameter's shape against the config (and each gradient against its
    /// value): what [`Gpt::forward`], the training forward and the cached forward run first, so
    /// that a tensor replaced through [`Gpt::params_mut`] with another shape is an error naming
    /// it, not a panic or a silent wrong result.
    ///
    /// # Errors
    /// [`Error::Param`] naming the first parameter whose shape differs.
    pub fn check_shapes(&self) -> Result<()> {
        let cfg = self.config();
        let c = cfg.n_embd;
        let mut want = vec![
            ("wte.weight".to_string(), vec![cfg.vocab_size, c]),
            ("wpe.weight".to_string(), vec![cfg.block_size, c]),
        ];
        for i in 0..cfg.n_layer {
            want.extend(
                block_shapes(c)
                    .into_iter()
                    .map(|(n, s)| (format!("h.{i}.{n}"), s)),
            );
        }
        want.push(("ln_f.weight".to_string(), vec![c]));
        want.push(("ln_f.bias".to_string(), vec![c]));
        let have = self.params();
        if have.len() != want.len() {
            return Err(Error::State(format!(
                "Gpt: {} parameters, expected {} for this config",
                have.len(),
                want.len()
            )));
        }
        for ((name, p), (want_name, shape)) in have.iter().zip(&want) {
            debug_assert_eq!(name, want_name);
            p.check(shape, || name.clone())?;
        }
        Ok(())
    }

    /// A model from named tensors in Hugging Face GPT-2 layout (`wte.weight`,
    /// `h.0.attn.c_attn.weight` `[in, out]`, …, `ln_f.bias`), with or without the
    /// `transformer.` prefix. The `attn.bias` / `attn.masked_bias` buffers are skipped; an
    /// `lm_head.weight` must equal `wte.weight` (the head is tied). `source` names the weights
    /// in errors.
    ///
    /// # Errors
    /// [`Error::Param`] naming a missing, unexpected or wrongly shaped tensor (and `source`),
    /// [`Error::Config`] when `config` is invalid.
    pub fn from_weights(
        config: GptConfig,
        tensors: BTreeMap<String, Tensor>,
        source: &str,
    ) -> Result<Self> {
        config.validate()?;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        let mut lm_head = None;
        for (key, t) in tensors {
            let bare = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
            if is_buffer(&bare) {
                continue;
            }
            if bare == "lm_head.weight" {
                lm_head = Some(t);
                continue;
            }
            if map.insert(bare.clone(), t).is_some() {
                return Err(param_err(
                    source,
                    &bare,
                    "appears both with and without the prefix",
                ));
            }
        }
        let c = config.n_embd;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = map
                .remove(name)
                .ok_or_else(|| param_err(source, name, "is missing"))?;
            if t.shape() != shape {
                return Err(param_err(
                    source,
                    name,
                    &format!(
                        "has shape {:?}, expected {shape:?} for this config",
                        t.shape()
                    ),
                ));
            }
            Ok(t)
        };
        let wte = take("wte.weight", &[config.vocab_size, c])?;
        let wpe = take("wpe.weight", &[config.block_size, c])?;
        // dropout streams seeded deterministically (checkpoints restore their exact positions)
        let mut rng = crate::init::rng(0);
        // (no capacity from the config: a config.json may claim billions of layers; the loop
        // stops at the first missing tensor)
        let mut blocks = Vec::new();
        for i in 0..config.n_layer {
            let mut local = HashMap::new();
            for (name, shape) in &block_shapes(c) {
                local.insert(*name, take(&format!("h.{i}.{name}"), shape)?);
            }
            let block =
                Block::from_weights(config.n_head, config.layer_norm_eps, |n| local.remove(n))?
                    .with_dropout(config.dropout, &mut rng)?;
            blocks.push(block);
        }
        let ln_f = LayerNorm::from_weights(take("ln_f.weight", &[c])?, take("ln_f.bias", &[c])?)?
            .eps(config.layer_norm_eps);
        if let Some(name) = map.keys().min() {
            return Err(param_err(
                source,
                name,
                &format!(
                    "is not a GPT-2 parameter of this config ({} unexpected tensors)",
                    map.len()
                ),
            ));
        }
        if let Some(head) = lm_head
            && head != wte
        {
            return Err(param_err(
                source,
                "lm_head.weight",
                "differs from wte.weight (untied LM heads are not supported)",
            ));
        }
        Gpt::from_parts(config, wte, wpe, blocks, ln_f, &mut rng)
    }

    /// Loads a Hugging Face GPT-2 folder: `config.json` and `model.safetensors` (F32, F16 or
    /// BF16, keys with or without the `transformer.` prefix, as `save_pretrained` and the
    /// published `gpt2` files write them). A folder with `pytorch_model.bin` and no
    /// `model.safetensors` (older checkpoints) is read with [`crate::io::torch::load_state_dict`],
    /// which never executes code from the file.
    ///
    /// ```no_run
    /// let gpt2 = handgrad::transformer::Gpt::from_pretrained("path/to/gpt2")?;
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing file; [`Error::Format`] for a malformed file;
    /// [`Error::Config`] for an unsupported or invalid config; [`Error::Param`] naming the file
    /// and a missing or wrongly shaped tensor.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let config = GptConfig::from_hf_json(&text, &cfg_path.display().to_string())?;
        let st_path = dir.join("model.safetensors");
        let bin_path = dir.join("pytorch_model.bin");
        if !st_path.exists() && bin_path.exists() {
            // an older Hugging Face folder: a torch.save state dict, read by the safe unpickler
            let tensors = crate::io::torch::load_state_dict(&bin_path)?;
            return Gpt::from_weights(config, tensors, &bin_path.display().to_string());
        }
        let file = read_safetensors(&st_path)?;
        Gpt::from_weights(config, file.tensors, &st_path.display().to_string())
    }

    /// The weights as named tensors with Hugging Face names and the `transformer.` prefix (what
    /// `save_pretrained` writes; no `lm_head.weight`, which is tied).
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.params()
            .into_iter()
            .map(|(n, p)| (format!("{PREFIX}{n}"), p.value.clone()))
            .collect()
    }

    /// Writes `config.json` and `model.safetensors` (F32, `{"format": "pt"}` metadata) into
    /// `dir`, creating it: the folder loads with `GPT2LMHeadModel.from_pretrained(dir)` and
    /// with [`Gpt::from_pretrained`]. Each file is written atomically.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder or a file cannot be written.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        write_safetensors(
            dir.join("model.safetensors"),
            &self.state_dict(),
            Some(meta),
        )?;
        crate::io::write_atomic(dir.join("config.json"), self.config.to_hf_json().as_bytes())
    }
}

fn param_err(source: &str, name: &str, what: &str) -> Error {
    Error::Param {
        name: name.to_string(),
        message: format!("{what} (in {source})"),
    }
}
