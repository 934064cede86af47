//! Frozen parameters on [`Sequential`] (transfer learning): `freeze` / `unfreeze` by name
//! prefix or by layer range, and trainable / non-trainable counts.
//!
//! Freezing sets [`crate::Param::set_requires_grad`]`(false)` (PyTorch `requires_grad_(False)`):
//! optimizers skip the parameter entirely (no update, no weight decay, no momentum or Adam
//! moments), gradient clipping and the non-finite-gradient guard ignore it.
//!
//! **BatchNorm of a frozen layer** follows PyTorch, not Keras: freezing only stops updates of
//! `weight` / `bias`; the train/eval [`crate::Mode`] still decides whether batch statistics are
//! used and the running statistics updated (`fit` trains in [`crate::Mode::Train`]). Keras
//! instead switches a frozen `BatchNormalization` to inference. We keep PyTorch's semantics
//! because the two flags are independent there (`requires_grad` vs `model.train()/eval()`),
//! the pretrained checkpoints and fine-tuning recipes this crate follows (torchvision, timm)
//! are PyTorch's, and a hidden mode switch would make a frozen model's training forward differ
//! from an unfrozen one's. To keep pretrained BatchNorm statistics fixed, freeze and run those
//! layers in evaluation mode yourself (or train only a head on features computed with
//! [`Sequential::predict`]).

use super::Sequential;
use crate::error::{Error, Result};
use std::ops::RangeBounds;

/// Whether the hierarchical name `name` lies under `prefix` (`""` matches everything; `"1"`
/// matches `"1.weight"` but not `"10.weight"`; `"1.weight"` matches itself).
fn under(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix)
            && (prefix.ends_with('.') || name.as_bytes().get(prefix.len()) == Some(&b'.')))
}

impl Sequential {
    fn set_requires_grad_prefix(&mut self, prefix: &str, on: bool, op: &str) -> Result<usize> {
        self.check_built()?;
        let names: Vec<String> = self.params().into_iter().map(|(n, _)| n).collect();
        if !names.iter().any(|n| under(n, prefix)) {
            return Err(Error::Param {
                name: prefix.to_string(),
                message: format!(
                    "Sequential::{op}: no parameter has this name or lies under it; the \
                     parameters are {names:?}"
                ),
            });
        }
        let mut n = 0;
        for (name, p) in self.params_mut() {
            if under(&name, prefix) {
                p.set_requires_grad(on);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Freezes every parameter whose name is `prefix` or lies under it (`"0"` → `"0.weight"`,
    /// `"0.bias"`; `""` → all), so that `fit` and optimizers leave them unchanged. Returns the
    /// number of parameters frozen. See the module docs for BatchNorm.
    ///
    /// # Errors
    /// [`Error::State`] before `build`; [`Error::Param`] when no parameter matches (the message
    /// lists the names).
    pub fn freeze(&mut self, prefix: &str) -> Result<usize> {
        self.set_requires_grad_prefix(prefix, false, "freeze")
    }

    /// Unfreezes the parameters under `prefix` (the inverse of [`Sequential::freeze`]).
    ///
    /// # Errors
    /// As [`Sequential::freeze`].
    pub fn unfreeze(&mut self, prefix: &str) -> Result<usize> {
        self.set_requires_grad_prefix(prefix, true, "unfreeze")
    }

    fn set_trainable_layers(
        &mut self,
        range: impl RangeBounds<usize>,
        on: bool,
        op: &str,
    ) -> Result<usize> {
        self.check_built()?;
        let n = self.layers.len();
        let start = match range.start_bound() {
            std::ops::Bound::Included(&s) => s,
            std::ops::Bound::Excluded(&s) => s + 1,
            std::ops::Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            std::ops::Bound::Included(&e) => e + 1,
            std::ops::Bound::Excluded(&e) => e,
            std::ops::Bound::Unbounded => n,
        };
        if start > end || end > n {
            return Err(Error::config(
                format!("Sequential::{op}"),
                "range",
                format!("{start}..{end}"),
                format!("a range of layer indices within 0..{n}"),
            ));
        }
        let mut count = 0;
        for layer in &mut self.layers[start..end] {
            for (_, p) in layer.params_mut() {
                p.set_requires_grad(on);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Freezes every parameter of the layers at `range` (indices as in parameter names, e.g.
    /// `..4` for a pretrained backbone's first four layers). Returns the number of parameters
    /// frozen (layers without parameters count 0).
    ///
    /// # Errors
    /// [`Error::State`] before `build`; [`Error::Config`] for a range outside the layers.
    pub fn freeze_layers(&mut self, range: impl RangeBounds<usize>) -> Result<usize> {
        self.set_trainable_layers(range, false, "freeze_layers")
    }

    /// Unfreezes every parameter of the layers at `range`.
    ///
    /// # Errors
    /// As [`Sequential::freeze_layers`].
    pub fn unfreeze_layers(&mut self, range: impl RangeBounds<usize>) -> Result<usize> {
        self.set_trainable_layers(range, true, "unfreeze_layers")
    }

    /// The number of scalars that optimizers update (not frozen).
    pub fn trainable_param_count(&self) -> usize {
        self.params()
            .iter()
            .filter(|(_, p)| p.requires_grad())
            .map(|(_, p)| p.numel())
            .sum()
    }

    /// The number of frozen scalars (buffers such as BatchNorm's running statistics are not
    /// parameters and are not counted, as in PyTorch's parameter counts).
    pub fn non_trainable_param_count(&self) -> usize {
        self.param_count() - self.trainable_param_count()
    }

    /// The names of the frozen parameters, in layer order.
    pub fn frozen_params(&self) -> Vec<String> {
        self.params()
            .into_iter()
            .filter(|(_, p)| p.is_frozen())
            .map(|(n, _)| n)
            .collect()
    }
}
