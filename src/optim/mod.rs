//! Optimizers with PyTorch's exact update formulas, gradient clipping and learning-rate schedules.
//!
//! Optimizer state (momentum buffers, Adam moments, step counts) is kept per parameter **name**
//! (`"0.weight"`), so it can be saved, inspected and restored by name.

use crate::error::Result;
use crate::param::Param;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

mod adam;
mod clip;
mod rmsprop;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamW};
pub use clip::{check_grads_finite, clip_grad_norm, clip_grad_value};
pub use rmsprop::RmsProp;
pub use schedule::LrSchedule;
pub use sgd::Sgd;

/// An optimizer: updates parameters in place from their accumulated gradients.
pub trait Optimizer: Send {
    /// The optimizer's name, e.g. `"Adam"`.
    fn name(&self) -> &str;

    /// Checks the hyper-parameters (e.g. `lr ≥ 0`, betas in `[0, 1)`).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the bad hyper-parameter, its value and the allowed range.
    fn validate(&self) -> Result<()>;

    /// Applies one update to every parameter from its `grad`, in the order given. State is found
    /// (or created) by each parameter's name.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for invalid hyper-parameters; [`crate::Error::Param`] when a
    /// parameter's shape differs from the state stored under its name.
    fn step(&mut self, params: &mut [(String, &mut Param)]) -> Result<()>;

    /// The current learning rate.
    fn learning_rate(&self) -> f32;

    /// Sets the learning rate (used by schedules and callbacks).
    fn set_learning_rate(&mut self, lr: f32);

    /// The optimizer state as named tensors: `"<param name>.<state name>"`, e.g.
    /// `"0.weight.exp_avg"`, `"0.weight.step"` (a one-element tensor).
    fn state(&self) -> BTreeMap<String, Tensor>;

    /// Restores a state produced by [`Optimizer::state`].
    ///
    /// # Errors
    /// [`crate::Error::Param`] for an entry that this optimizer does not know or whose shape is
    /// inconsistent.
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()>;
}

/// Checks that a hyper-parameter is finite and ≥ 0.
pub(crate) fn check_non_negative(op: &str, name: &str, v: f32) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(crate::Error::config(op, name, v, "a finite value >= 0"))
    }
}

/// Checks that a hyper-parameter is in `[0, 1)`.
pub(crate) fn check_unit_interval(op: &str, name: &str, v: f32) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(crate::Error::config(op, name, v, "a value in [0, 1)"))
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers of the optimizers (sgd.rs, adam.rs, rmsprop.rs).
// ---------------------------------------------------------------------------------------------

/// Tensors with at least this many elements are updated with `Zip::par_for_each`; smaller ones
/// sequentially. Updates are elementwise, so the bits do not depend on the thread count.
pub(crate) const PAR_MIN_LEN: usize = 1 << 15;

/// A hyper-parameter as the `f64` that its shortest decimal spelling denotes (`0.999_f32` →
/// `0.999_f64`, not `0.99901…`), i.e. the Python float PyTorch would compute its scalars from.
///
/// This matters: `1 − β₂` from the `f32` value of `0.999` is off by 1.3e-5 relative, a bias in
/// Adam's second moment larger than the golden tolerance.
pub(crate) fn hp(v: f32) -> f64 {
    v.to_string().parse::<f64>().unwrap_or(v as f64)
}

/// torch's `lerp(start, end, w)` (`exp_avg.lerp_(grad, 1 − β₁)`), with its two branches.
#[inline(always)]
pub(crate) fn lerp(start: f32, end: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        start + w * (end - start)
    } else {
        end - (end - start) * (1.0 - w)
    }
}

/// Checks, before anything is updated, that every gradient has its parameter's shape, that no
/// name appears twice and that stored state (`state_shape(name)`) has the parameter's shape.
pub(crate) fn check_params<'s>(
    op: &str,
    params: &[(String, &mut Param)],
    state_shape: impl Fn(&str) -> Option<&'s [usize]>,
) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, p) in params {
        let param_err = |message: String| crate::Error::Param {
            name: name.clone(),
            message,
        };
        if !seen.insert(name.as_str()) {
            return Err(param_err(format!(
                "{op}: this name appears more than once in one step; every parameter needs a \
                 unique name"
            )));
        }
        if p.grad.shape() != p.value.shape() {
            return Err(param_err(format!(
                "{op}: gradient shape {:?} differs from the parameter shape {:?}",
                p.grad.shape(),
                p.value.shape()
            )));
        }
        if let Some(s) = state_shape(name)
            && s != p.value.shape()
        {
            return Err(param_err(format!(
                "{op}: parameter shape {:?} differs from the shape {s:?} of the optimizer \
                     state stored under this name (use a fresh optimizer after changing the model)",
                p.value.shape()
            )));
        }
    }
    Ok(())
}

/// Splits a state key `"<param name>.<entry>"` at its last dot; `Err` unless `entry` is one of
/// `known`.
pub(crate) fn split_state_key<'k>(
    op: &str,
    key: &'k str,
    known: &[&str],
) -> Result<(&'k str, &'k str)> {
    match key.rsplit_once('.') {
        Some((param, entry)) if !param.is_empty() && known.contains(&entry) => Ok((param, entry)),
        _ => Err(crate::Error::Param {
            name: key.to_string(),
            message: format!(
                "{op}: unknown optimizer state entry; expected \"<param name>.<entry>\" with \
                 <entry> one of {known:?}"
            ),
        }),
    }
}

/// A step count as the one-element tensor (shape `[1]`) that [`Optimizer::state`] reports.
pub(crate) fn step_tensor(step: u64) -> Tensor {
    Tensor::from_elem(ndarray::IxDyn(&[1]), step as f32)
}

/// Reads a step count written by [`step_tensor`]: one element, a whole number in `[0, 2^24]`.
pub(crate) fn read_step(op: &str, key: &str, t: &Tensor) -> Result<u64> {
    let v = if t.len() == 1 {
        t.iter().next().copied()
    } else {
        None
    };
    match v {
        Some(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 16_777_216.0 => {
            Ok(v as u64)
        }
        _ => Err(crate::Error::Param {
            name: key.to_string(),
            message: format!(
                "{op}: a step count must be one whole number in [0, 2^24], got shape {:?} with \
                 values {:?}",
                t.shape(),
                t.iter().take(4).collect::<Vec<_>>()
            ),
        }),
    }
}

/// Checks that a restored state tensor has the shape `want` (that of its sibling entries).
pub(crate) fn check_state_shape(op: &str, key: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() == want {
        Ok(())
    } else {
        Err(crate::Error::Param {
            name: key.to_string(),
            message: format!(
                "{op}: state shape {:?} is inconsistent with the shape {want:?} of the other \
                 entries for this parameter",
                t.shape()
            ),
        })
    }
}

/// The error for a parameter whose restored state lacks a required entry.
pub(crate) fn missing_state(op: &str, param: &str, entry: &str) -> crate::Error {
    crate::Error::Param {
        name: param.to_string(),
        message: format!("{op}: the state has no \"{param}.{entry}\" entry, which is required"),
    }
}
