//! Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay), with
//! PyTorch's exact update order (`torch.optim.Adam`, `torch.optim.AdamW`, `amsgrad=False`).

use super::{
    check_non_negative, check_params, check_state_shape, check_unit_interval, hp, lerp,
    missing_state, read_step, split_state_key, step_tensor, Optimizer, PAR_MIN_LEN,
};
use crate::error::Result;
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::Zip;
use std::collections::BTreeMap;

const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const STEP: &str = "step";
const ENTRIES: [&str; 3] = [EXP_AVG, EXP_AVG_SQ, STEP];

/// One chunk of the update: `(((param, grad), exp_avg), exp_avg_sq)`.
type UpdChunk<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// The state of one parameter: step count `t` and the two moments (not bias-corrected).
#[derive(Debug, Clone)]
struct AdamState {
    /// Steps taken on this parameter (PyTorch keeps one count per parameter).
    step: u64,
    /// First moment `m_t`.
    exp_avg: Tensor,
    /// Second moment `v_t`.
    exp_avg_sq: Tensor,
}

/// What Adam and AdamW share; `decoupled` selects AdamW's weight decay.
#[derive(Debug, Clone)]
struct AdamCore {
    op: &'static str,
    decoupled: bool,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// Weight decay applies only to parameters of at least this rank (0: all).
    decay_min_rank: usize,
    /// Clip the gradients' total norm to this inside the step (`None`: no clipping).
    max_grad_norm: Option<f32>,
    /// The total gradient norm the last step measured (with `max_grad_norm` set).
    last_grad_norm: Option<f32>,
    state: BTreeMap<String, AdamState>,
}

impl AdamCore {
    fn new(op: &'static str, decoupled: bool, lr: f32, weight_decay: f32) -> Self {
        AdamCore {
            op,
            decoupled,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decay_min_rank: 0,
            max_grad_norm: None,
            last_grad_norm: None,
            state: BTreeMap::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        check_non_negative(self.op, "lr", self.lr)?;
        check_unit_interval(self.op, "beta1", self.beta1)?;
        check_unit_interval(self.op, "beta2", self.beta2)?;
        check_non_negative(self.op, "eps", self.eps)?;
        check_non_negative(self.op, "weight_decay", self.weight_decay)?;
        match self.max_grad_norm {
            Some(m) if !(m.is_finite() && m > 0.0) => Err(crate::error::Error::config(
                self.op,
                "max_grad_norm",
                m,
                "a finite value > 0",
            )),
            _ => Ok(()),
        }
    }

    fn step(&mut self, params: &mut [(String, &mut Param)]) -> Result<()> {
        self.validate()?;
        check_params(self.op, params, |name| {
            self.state.get(name).map(|s| s.exp_avg.shape())
        })?;
        // Scalars as torch forms them: Python floats (f64), cast to f32 by each tensor op.
        let (lr, beta1, beta2, wd) = (
            hp(self.lr),
            hp(self.beta1),
            hp(self.beta2),
            hp(self.weight_decay),
        );
        let min_rank = self.decay_min_rank;
        let w1 = (1.0 - beta1) as f32;
        let b2 = self.beta2;
        let one_minus_b2 = (1.0 - beta2) as f32;
        let eps = self.eps;
        // clip_grad_norm_ folded into the update: g·coef is formed where g is read, the bits
        // clip_grad_norm would have stored (the gradients themselves are left unscaled)
        let gscale = match self.max_grad_norm {
            Some(max_norm) => {
                let (total, coef) = super::clip::clip_coef(params, max_norm, self.op)?;
                self.last_grad_norm = Some(total as f32);
                coef
            }
            None => None,
        };
        for (name, p) in params.iter_mut() {
            if p.is_frozen() {
                // requires_grad = False: PyTorch's optimizers skip a parameter without a grad
                continue;
            }
            let Param { value, grad, .. } = &mut **p;
            // nanoGPT's parameter groups: no decay below `decay_min_rank` (biases, LayerNorm)
            let wd = if value.ndim() >= min_rank { wd } else { 0.0 };
            let decoupled = self.decoupled;
            // AdamW: param.mul_(1 - lr * weight_decay)
            let decay = (1.0 - lr * wd) as f32;
            // Adam: `if weight_decay != 0: grad = grad.add(param, alpha=weight_decay)`
            let l2 = !decoupled && wd != 0.0;
            let wd32 = wd as f32;
            if !self.state.contains_key(name.as_str()) {
                let zeros = Tensor::zeros(value.raw_dim());
                let st = AdamState {
                    step: 0,
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                };
                self.state.insert(name.clone(), st);
            }
            let st = self.state.get_mut(name.as_str()).expect("inserted above");
            // step_t += 1
            st.step += 1;
            let t = st.step as f64;
            // bias_correction1 = 1 - beta1 ** step; bias_correction2 = 1 - beta2 ** step
            let bias_correction1 = 1.0 - beta1.powf(t);
            let bias_correction2 = 1.0 - beta2.powf(t);
            // step_size = lr / bias_correction1 (enters addcdiv_ as value=-step_size)
            let neg_step_size = (-(lr / bias_correction1)) as f32;
            // bias_correction2_sqrt = bias_correction2 ** 0.5
            let bc2_sqrt = bias_correction2.sqrt() as f32;
            let upd = move |p: &mut f32, &g: &f32, m: &mut f32, v: &mut f32| {
                // g.mul_(clip_coef_clamped)
                let g = match gscale {
                    Some(c) => g * c,
                    None => g,
                };
                if decoupled {
                    // param.mul_(1 - lr * weight_decay)
                    *p *= decay;
                }
                // grad = grad.add(param, alpha=weight_decay)
                let g = if l2 { g + wd32 * *p } else { g };
                // exp_avg.lerp_(grad, 1 - beta1)   (m = β1·m + (1 − β1)·g)
                *m = lerp(*m, g, w1);
                // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                *v = *v * b2 + one_minus_b2 * g * g;
                // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                let denom = v.sqrt() / bc2_sqrt + eps;
                // param.addcdiv_(exp_avg, denom, value=-step_size)
                *p += neg_step_size * *m / denom;
            };
            let par = value.len() >= PAR_MIN_LEN;
            // contiguous tensors in the same layout (always, unless a user replaced one):
            // fixed chunks, each in `wide` (the same update, on the widest vectors)
            let same_layout = value.strides() == grad.strides()
                && value.strides() == st.exp_avg.strides()
                && value.strides() == st.exp_avg_sq.strides();
            if let (true, Some(p), Some(g), Some(m), Some(v)) = (
                same_layout,
                value.as_slice_memory_order_mut(),
                grad.as_slice_memory_order(),
                st.exp_avg.as_slice_memory_order_mut(),
                st.exp_avg_sq.as_slice_memory_order_mut(),
            ) {
                use rayon::prelude::*;
                let run = |(((p, g), m), v): UpdChunk| {
                    crate::ops::wide::wide_loop!({
                        for (((p, g), m), v) in
                            p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                        {
                            upd(p, g, m, v);
                        }
                    })
                };
                const CHUNK: usize = 1 << 14;
                if par {
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .for_each(run);
                } else {
                    run((((p, g), m), v));
                }
                continue;
            }
            let z = Zip::from(&mut *value)
                .and(&*grad)
                .and(&mut st.exp_avg)
                .and(&mut st.exp_avg_sq);
            if par {
                z.par_for_each(upd)
            } else {
                z.for_each(upd)
            }
        }
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, st) in &self.state {
            out.insert(format!("{name}.{EXP_AVG}"), st.exp_avg.clone());
            out.insert(format!("{name}.{EXP_AVG_SQ}"), st.exp_avg_sq.clone());
            out.insert(format!("{name}.{STEP}"), step_tensor(st.step));
        }
        out
    }

    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        type Parts<'a> = (Option<&'a Tensor>, Option<&'a Tensor>, Option<u64>);
        let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
        for (key, t) in state {
            let (param, entry) = split_state_key(self.op, key, &ENTRIES)?;
            let e = parts.entry(param).or_default();
            match entry {
                EXP_AVG => e.0 = Some(t),
                EXP_AVG_SQ => e.1 = Some(t),
                _ => e.2 = Some(read_step(self.op, key, t)?),
            }
        }
        let mut new_state = BTreeMap::new();
        for (param, (m, v, step)) in parts {
            let m = m.ok_or_else(|| missing_state(self.op, param, EXP_AVG))?;
            let v = v.ok_or_else(|| missing_state(self.op, param, EXP_AVG_SQ))?;
            let step = step.ok_or_else(|| missing_state(self.op, param, STEP))?;
            check_state_shape(self.op, &format!("{param}.{EXP_AVG_SQ}"), v, m.shape())?;
            let st = AdamState {
                step,
                exp_avg: m.clone(),
                exp_avg_sq: v.clone(),
            };
            new_state.insert(param.to_string(), st);
        }
        self.state = new_state;
        Ok(())
    }
}

/// Adam with PyTorch's `torch.optim.Adam` semantics (`amsgrad = false`).
///
/// For every parameter `p` with gradient `g`, at its step `t = 1, 2, …`:
///
/// ```text
/// g  ← g + weight_decay·p                       (L2 penalty, if weight_decay ≠ 0)
/// m  ← β₁·m + (1 − β₁)·g                        (m₀ = 0)
/// v  ← β₂·v + (1 − β₂)·g²                       (v₀ = 0)
/// p  ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
///
/// i.e. `p −= lr·m̂/(√v̂ + eps)` with both moments bias-corrected and `eps` added after the
/// square root, in torch's arithmetic order (`denom = sqrt(v)/sqrt(bc2) + eps`,
/// `step_size = lr/bc1`, `p −= step_size·m/denom`).
///
/// Defaults (as PyTorch): `betas = (0.9, 0.999)`, `eps = 1e-8`, `weight_decay = 0`; PyTorch's
/// default learning rate is `1e-3` ([`Adam::default`]).
///
/// State per parameter: `"<param>.exp_avg"` (`m`), `"<param>.exp_avg_sq"` (`v`), both not
/// bias-corrected, and `"<param>.step"` (`t`, a one-element tensor).
///
/// Hyper-parameters are read as the decimal numbers they are written as (`0.999`), as PyTorch's
/// Python floats are, before the scalars (`1 − β₂`, bias corrections) are formed in `f64`.
///
/// ```
/// use handgrad::optim::{Adam, Optimizer};
/// let opt = Adam::new(1e-3).betas(0.9, 0.95).eps(1e-8).weight_decay(0.0);
/// assert_eq!(opt.name(), "Adam");
/// assert!(opt.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Adam(AdamCore);

/// AdamW with PyTorch's `torch.optim.AdamW` semantics (`amsgrad = false`): decoupled weight
/// decay, applied to the parameter before the Adam update and never entering the moments.
///
/// ```text
/// p  ← p·(1 − lr·weight_decay)
/// m  ← β₁·m + (1 − β₁)·g;   v ← β₂·v + (1 − β₂)·g²
/// p  ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
///
/// Defaults (as PyTorch): `betas = (0.9, 0.999)`, `eps = 1e-8`, `weight_decay = 0.01`;
/// PyTorch's default learning rate is `1e-3` ([`AdamW::default`]).
///
/// State: as [`Adam`] (`exp_avg`, `exp_avg_sq`, `step` per parameter).
///
/// ```
/// use handgrad::optim::{AdamW, Optimizer};
/// let opt = AdamW::new(6e-4).betas(0.9, 0.95).weight_decay(0.1);
/// assert_eq!(opt.name(), "AdamW");
/// assert!(opt.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct AdamW(AdamCore);

impl Adam {
    /// Adam with learning rate `lr` and the defaults `betas = (0.9, 0.999)`, `eps = 1e-8`,
    /// `weight_decay = 0`.
    pub fn new(lr: f32) -> Self {
        Adam(AdamCore::new("Adam", false, lr, 0.0))
    }

    /// L2 penalty added to the gradient before the moments, `g ← g + wd·p` (default 0). For
    /// decoupled decay use [`AdamW`].
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.0.weight_decay = weight_decay;
        self
    }
}

impl AdamW {
    /// AdamW with learning rate `lr` and the defaults `betas = (0.9, 0.999)`, `eps = 1e-8`,
    /// `weight_decay = 0.01`.
    pub fn new(lr: f32) -> Self {
        AdamW(AdamCore::new("AdamW", true, lr, 0.01))
    }

    /// Decoupled weight decay, `p ← p·(1 − lr·wd)` before each update (default 0.01).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.0.weight_decay = weight_decay;
        self
    }
}

/// The builders and the [`Optimizer`] impl that Adam and AdamW share.
macro_rules! adam_common {
    ($t:ident) => {
        impl $t {
            /// Moment decay rates `(β₁, β₂)`, each in `[0, 1)` (default `(0.9, 0.999)`).
            pub fn betas(mut self, beta1: f32, beta2: f32) -> Self {
                self.0.beta1 = beta1;
                self.0.beta2 = beta2;
                self
            }

            /// Term added to the denominator after the square root (default `1e-8`).
            pub fn eps(mut self, eps: f32) -> Self {
                self.0.eps = eps;
                self
            }

            /// Applies weight decay only to parameters of rank `≥ min_rank` (default 0: all).
            /// `decay_min_rank(2)` is nanoGPT's grouping: matrices and embeddings decay, biases
            /// and LayerNorm parameters do not.
            pub fn decay_min_rank(mut self, min_rank: usize) -> Self {
                self.0.decay_min_rank = min_rank;
                self
            }

            /// Clips the gradients' total L2 norm to `max_norm` as part of each step (Hugging
            /// Face `Trainer`'s `max_grad_norm`): the step gives the parameters and moments,
            /// bit for bit, that [`crate::optim::clip_grad_norm`]`(params, max_norm)` followed by
            /// the step would, without a pass that rewrites the gradients (they are left as the
            /// backward wrote them). A NaN or infinite gradient is an [`crate::Error::Param`]
            /// naming it, before anything changes. Default: no clipping.
            pub fn max_grad_norm(mut self, max_norm: f32) -> Self {
                self.0.max_grad_norm = Some(max_norm);
                self
            }

            /// The total gradient norm (before clipping) that the last step measured; `None`
            /// before the first step or without [`Self::max_grad_norm`].
            pub fn last_grad_norm(&self) -> Option<f32> {
                self.0.last_grad_norm
            }
        }

        impl Default for $t {
            /// PyTorch's default learning rate, `1e-3`.
            fn default() -> Self {
                $t::new(1e-3)
            }
        }

        impl Optimizer for $t {
            fn name(&self) -> &str {
                self.0.op
            }

            fn validate(&self) -> Result<()> {
                self.0.validate()
            }

            fn step(&mut self, params: &mut [(String, &mut Param)]) -> Result<()> {
                self.0.step(params)
            }

            fn learning_rate(&self) -> f32 {
                self.0.lr
            }

            fn set_learning_rate(&mut self, lr: f32) {
                self.0.lr = lr;
            }

            /// `"<param>.exp_avg"`, `"<param>.exp_avg_sq"` and `"<param>.step"` per parameter.
            fn state(&self) -> BTreeMap<String, Tensor> {
                self.0.state()
            }

            /// Replaces the whole state; every parameter needs all three entries, with equal
            /// shapes for the two moments.
            fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
                self.0.load_state(state)
            }
        }
    };
}

adam_common!(Adam);
adam_common!(AdamW);
