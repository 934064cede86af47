//! Saving and loading a `Sequential`'s weights by PyTorch state-dict names.

use super::Sequential;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

impl Sequential {
    /// Every parameter and buffer by its PyTorch state-dict name (`"0.weight"`,
    /// `"1.running_mean"`), copied.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, p) in layer.params() {
                out.insert(format!("{i}.{name}"), p.value.clone());
            }
            for (name, b) in layer.buffers() {
                out.insert(format!("{i}.{name}"), b.clone());
            }
        }
        out
    }

    /// Loads parameters and buffers by name, strictly (PyTorch `load_state_dict(strict=True)`):
    /// every entry must exist with the same shape and nothing may be missing. Nothing changes
    /// unless everything fits.
    ///
    /// # Errors
    /// [`Error::Param`] naming the missing, unexpected or mis-shaped entries;
    /// [`Error::State`] before `build`.
    pub fn load_state_dict(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        self.check_built()?;
        let own = self.state_dict();
        let missing: Vec<&String> = own.keys().filter(|k| !state.contains_key(*k)).collect();
        let unexpected: Vec<&String> = state.keys().filter(|k| !own.contains_key(*k)).collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::Param {
                name: missing.first().or(unexpected.first()).map(|s| s.to_string()).unwrap_or_default(),
                message: format!("state dict does not match the model: missing {missing:?}, unexpected {unexpected:?}"),
            });
        }
        for (name, t) in &own {
            if state[name].shape() != t.shape() {
                return Err(Error::Param {
                    name: name.clone(),
                    message: format!(
                        "shape {:?} in the state dict, the model has {:?}",
                        state[name].shape(),
                        t.shape()
                    ),
                });
            }
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, p) in layer.params_mut() {
                p.value.assign(&state[&format!("{i}.{name}")]);
            }
            for (name, b) in layer.buffers_mut() {
                b.assign(&state[&format!("{i}.{name}")]);
            }
        }
        Ok(())
    }

    /// Saves the weights (parameters and buffers) as safetensors with PyTorch `nn.Sequential`
    /// names, atomically.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn save_weights(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::io::write_safetensors(path, &self.state_dict(), None)
    }

    /// Loads weights saved by [`Sequential::save_weights`] or by PyTorch
    /// (`safetensors.torch.save_file(model.state_dict(), path)` for the same `nn.Sequential`).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] for unreadable files; as
    /// [`Sequential::load_state_dict`] for names or shapes that do not match.
    pub fn load_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let file = crate::io::read_safetensors(path)?;
        self.load_state_dict(&file.tensors)
    }
}
