//! Gradient clipping: by total L2 norm (`torch.nn.utils.clip_grad_norm_`) and by value
//! (`torch.nn.utils.clip_grad_value_`).

use crate::error::{Error, Result};
use crate::param::Param;
use rayon::prelude::*;

/// Rescales all gradients together so that their total L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2, error_if_nonfinite=True)`.
///
/// ```text
/// total = √(Σ_params Σ_i grad_i²)          (accumulated in f64, params in the given order,
///                                            each in fixed chunks summed in parallel)
/// coef  = max_norm / (total + 1e-6)
/// grad ← grad·coef                          (only if coef < 1)
/// ```
///
/// Returns the total norm **before** clipping. The result does not depend on the thread count.
///
/// # Errors
/// - [`Error::Config`] when `max_norm` is not a finite value `> 0`;
/// - [`Error::Param`] naming the first parameter with a NaN or infinite gradient entry when the
///   total norm is not finite (no gradient is changed then).
///
/// ```
/// use handgrad::optim::clip_grad_norm;
/// use handgrad::{Param, Tensor};
/// let mut p = Param::new(Tensor::zeros(ndarray::IxDyn(&[2])));
/// p.grad = Tensor::from_shape_vec(vec![2], vec![3.0, 4.0]).unwrap();
/// let norm = clip_grad_norm(&mut [("w".to_string(), &mut p)], 1.0)?;
/// assert_eq!(norm, 5.0);
/// assert!((p.grad[[0]] - 0.6).abs() < 1e-6 && (p.grad[[1]] - 0.8).abs() < 1e-6);
/// # Ok::<(), handgrad::Error>(())
/// ```
pub fn clip_grad_norm(params: &mut [(String, &mut Param)], max_norm: f32) -> Result<f32> {
    let (total, coef) = clip_coef(params, max_norm, "clip_grad_norm")?;
    if let Some(coef) = coef {
        for (_, p) in params.iter_mut().filter(|(_, p)| !p.is_frozen()) {
            // g.mul_(clip_coef_clamped)
            match p.grad.as_slice_memory_order_mut() {
                Some(g) => g
                    .par_chunks_mut(SUM_CHUNK)
                    .for_each(|c| c.iter_mut().for_each(|g| *g *= coef)),
                None => p.grad.mapv_inplace(|g| g * coef),
            }
        }
    }
    Ok(total as f32)
}

/// The total gradient norm of `params` and, when it exceeds `max_norm`, the factor
/// `max_norm / (total + 1e-6)` (as `f32`) that [`clip_grad_norm`] multiplies every gradient by.
/// `op` names the caller in the errors (those of [`clip_grad_norm`]).
pub(crate) fn clip_coef(
    params: &[(String, &mut Param)],
    max_norm: f32,
    op: &str,
) -> Result<(f64, Option<f32>)> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::config(
            op,
            "max_norm",
            max_norm,
            "a finite value > 0",
        ));
    }
    // total_norm = vector_norm(stack([vector_norm(g) for g in grads])), as Σ g² in f64
    // frozen parameters have no gradient in PyTorch: they are left out
    // (each gradient in fixed chunks of SUM_CHUNK, summed in parallel, the partial sums added in
    // order: the same value for any thread count)
    let sum_sq: f64 = params
        .iter()
        .filter(|(_, p)| !p.is_frozen())
        .map(|(_, p)| sum_squares(&p.grad))
        .sum();
    let total = sum_sq.sqrt();
    if !total.is_finite() {
        // error_if_nonfinite=True
        let bad = params
            .iter()
            .find(|(_, p)| !p.is_frozen() && p.grad.iter().any(|g| !g.is_finite()));
        return Err(match bad {
            Some((name, _)) => Error::Param {
                name: name.clone(),
                message: format!(
                    "{op}: the total gradient norm is {total} (non-finite): this parameter's \
                     gradient has NaN or infinite entries; no gradient was clipped"
                ),
            },
            None => Error::config(op, "total_norm", total, "a finite value"),
        });
    }
    // clip_coef = max_norm / (total_norm + 1e-6); clip_coef_clamped = clamp(clip_coef, max=1.0)
    let coef = max_norm as f64 / (total + 1e-6);
    Ok((total, (coef < 1.0).then_some(coef as f32)))
}

/// Elements per task of [`sum_squares`] (fixed: the sum does not depend on the thread count).
const SUM_CHUNK: usize = 1 << 16;

/// `Σ g²` in `f64`: chunks of [`SUM_CHUNK`] elements in parallel, each summed in eight
/// interleaved partial sums (so that it vectorises) added in a fixed order, then the chunks'
/// sums added in order.
fn sum_squares(g: &crate::tensor::Tensor) -> f64 {
    // Σ g² of one chunk in eight f64 lanes
    #[inline(always)]
    fn chunk(c: &[f32]) -> f64 {
        crate::ops::lanes::sum_f64_by(c, |v| v as f64 * v as f64)
    }
    match g.as_slice_memory_order() {
        Some(s) if s.len() > SUM_CHUNK => {
            let parts: Vec<f64> = s
                .par_chunks(SUM_CHUNK)
                .map(|c| crate::ops::wide::wide_loop!(chunk(c)))
                .collect();
            parts.iter().sum()
        }
        Some(s) => chunk(s),
        None => chunk(&g.iter().copied().collect::<Vec<_>>()),
    }
}

/// Clamps every gradient entry to `[−clip_value, clip_value]`, as
/// `torch.nn.utils.clip_grad_value_`. NaN entries stay NaN.
///
/// # Errors
/// [`Error::Config`] when `clip_value` is not a finite value `≥ 0`.
///
/// ```
/// use handgrad::optim::clip_grad_value;
/// use handgrad::{Param, Tensor};
/// let mut p = Param::new(Tensor::zeros(ndarray::IxDyn(&[3])));
/// p.grad = Tensor::from_shape_vec(vec![3], vec![-2.0, 0.5, 3.0]).unwrap();
/// clip_grad_value(&mut [("w".to_string(), &mut p)], 1.0)?;
/// assert_eq!(p.grad.as_slice().unwrap(), &[-1.0, 0.5, 1.0]);
/// # Ok::<(), handgrad::Error>(())
/// ```
pub fn clip_grad_value(params: &mut [(String, &mut Param)], clip_value: f32) -> Result<()> {
    if !(clip_value.is_finite() && clip_value >= 0.0) {
        return Err(Error::config(
            "clip_grad_value",
            "clip_value",
            clip_value,
            "a finite value >= 0",
        ));
    }
    for (_, p) in params.iter_mut().filter(|(_, p)| !p.is_frozen()) {
        // grad.clamp_(min=-clip_value, max=clip_value)
        p.grad.mapv_inplace(|g| g.clamp(-clip_value, clip_value));
    }
    Ok(())
}

/// Checks that every gradient is finite (Keras's `TerminateOnNaN`, applied to gradients).
/// `when` says where training stands (e.g. `"at step 12"`) in the message.
///
/// # Errors
/// [`Error::Param`] naming the first parameter whose gradient has a NaN or infinite entry.
pub fn check_grads_finite(params: &[(String, &mut Param)], when: &str) -> Result<()> {
    match params
        .iter()
        .find(|(_, p)| !p.is_frozen() && p.grad.iter().any(|g| !g.is_finite()))
    {
        Some((name, p)) => {
            let bad = p.grad.iter().filter(|g| !g.is_finite()).count();
            Err(Error::Param {
                name: name.clone(),
                message: format!(
                    "the gradient has {bad} NaN or infinite entries {when}; training stopped \
                     before the weights were updated"
                ),
            })
        }
        None => Ok(()),
    }
}
