//! RMSprop, optionally centered and with momentum (`torch.optim.RMSprop`).

use super::{
    check_non_negative, check_params, check_state_shape, check_unit_interval, hp, lerp,
    missing_state, read_step, split_state_key, step_tensor, Optimizer, PAR_MIN_LEN,
};
use crate::error::Result;
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::Zip;
use std::collections::BTreeMap;

const OP: &str = "RMSprop";
const STEP: &str = "step";
const SQUARE_AVG: &str = "square_avg";
const GRAD_AVG: &str = "grad_avg";
const MOMENTUM_BUFFER: &str = "momentum_buffer";
const ENTRIES: [&str; 4] = [STEP, SQUARE_AVG, GRAD_AVG, MOMENTUM_BUFFER];

/// RMSprop with PyTorch's `torch.optim.RMSprop` semantics.
///
/// For every parameter `p` with gradient `g`, each step computes
///
/// ```text
/// g   ← g + weight_decay·p                        (if weight_decay ≠ 0)
/// v   ← α·v + (1 − α)·g²                          (v₀ = 0, no bias correction)
/// if centered:  ḡ ← α·ḡ + (1 − α)·g;  avg = √(v − ḡ²) + eps
/// else:                                avg = √v + eps
/// if momentum > 0:  buf ← momentum·buf + g/avg;  p ← p − lr·buf
/// else:                                           p ← p − lr·g/avg
/// ```
///
/// `eps` is added outside the square root, as PyTorch does (Keras/TensorFlow put it inside).
///
/// Defaults (as PyTorch): `alpha = 0.99`, `eps = 1e-8`, `weight_decay = 0`, `momentum = 0`,
/// `centered = false`; PyTorch's default learning rate is `0.01` ([`RmsProp::default`]).
///
/// State per parameter: `"<param>.step"`, `"<param>.square_avg"` (`v`), and
/// `"<param>.grad_avg"` (`ḡ`, when centered) and `"<param>.momentum_buffer"` (when
/// momentum > 0).
///
/// ```
/// use handgrad::optim::{Optimizer, RmsProp};
/// let opt = RmsProp::new(0.01).alpha(0.9).centered(true).momentum(0.5);
/// assert_eq!(opt.name(), "RMSprop");
/// assert!(opt.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct RmsProp {
    lr: f32,
    alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    centered: bool,
    state: BTreeMap<String, RmsState>,
}

/// The state of one parameter.
#[derive(Debug, Clone)]
struct RmsState {
    /// Steps taken on this parameter (kept, as PyTorch does, though the update does not use it).
    step: u64,
    /// Running average of `g²`.
    square_avg: Tensor,
    /// Running average of `g` (centered only).
    grad_avg: Option<Tensor>,
    /// Momentum buffer (momentum > 0 only).
    momentum_buffer: Option<Tensor>,
}

/// The per-step scalars, as torch casts them to `f32`.
#[derive(Clone, Copy)]
struct Scalars {
    neg_lr: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
}

/// One element of the update; `grad_avg` / `buf` are present when centered / with momentum.
#[inline(always)]
fn update(
    k: Scalars,
    p: &mut f32,
    g: f32,
    v: &mut f32,
    grad_avg: Option<&mut f32>,
    buf: Option<&mut f32>,
) {
    // grad = grad.add(param, alpha=weight_decay)
    let g = if k.weight_decay != 0.0 {
        g + k.weight_decay * *p
    } else {
        g
    };
    // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
    *v = *v * k.alpha + k.one_minus_alpha * g * g;
    let avg = match grad_avg {
        Some(ga) => {
            // grad_avg.lerp_(grad, 1 - alpha)
            *ga = lerp(*ga, g, k.one_minus_alpha);
            // avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            (*v + -*ga * *ga).sqrt()
        }
        // avg = square_avg.sqrt()
        None => v.sqrt(),
    };
    // avg = avg.add_(eps)
    let avg = avg + k.eps;
    match buf {
        Some(b) => {
            // buf.mul_(momentum).addcdiv_(grad, avg)
            *b = *b * k.momentum + g / avg;
            // param.add_(buf, alpha=-lr)
            *p += k.neg_lr * *b;
        }
        // param.addcdiv_(grad, avg, value=-lr)
        None => *p += k.neg_lr * g / avg,
    }
}

/// Runs `f` over a `Zip` in parallel for large tensors, sequentially otherwise.
macro_rules! zip_apply {
    ($par:expr, $zip:expr, $f:expr) => {
        if $par {
            $zip.par_for_each($f)
        } else {
            $zip.for_each($f)
        }
    };
}

impl RmsProp {
    /// RMSprop with learning rate `lr` and the defaults `alpha = 0.99`, `eps = 1e-8`,
    /// `weight_decay = 0`, `momentum = 0`, `centered = false`.
    pub fn new(lr: f32) -> Self {
        RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            state: BTreeMap::new(),
        }
    }

    /// Smoothing constant `α ∈ [0, 1)` of the running averages (default 0.99).
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Term added to the denominator after the square root (default `1e-8`).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// L2 penalty added to the gradient, `g ← g + wd·p` (default 0).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Momentum factor (default 0: no momentum buffer).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Centered RMSprop: normalise by an estimate of the gradient's variance, `v − ḡ²`
    /// (default `false`).
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }
}

impl Default for RmsProp {
    /// PyTorch's default learning rate, `0.01`.
    fn default() -> Self {
        RmsProp::new(0.01)
    }
}

impl Optimizer for RmsProp {
    fn name(&self) -> &str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_non_negative(OP, "lr", self.lr)?;
        check_unit_interval(OP, "alpha", self.alpha)?;
        check_non_negative(OP, "eps", self.eps)?;
        check_non_negative(OP, "weight_decay", self.weight_decay)?;
        check_non_negative(OP, "momentum", self.momentum)
    }

    fn step(&mut self, params: &mut [(String, &mut Param)]) -> Result<()> {
        self.validate()?;
        check_params(OP, params, |name| {
            self.state.get(name).map(|s| s.square_avg.shape())
        })?;
        // Scalars as torch forms them: Python floats (f64), cast to f32 by each tensor op.
        let k = Scalars {
            neg_lr: -hp(self.lr) as f32,
            alpha: self.alpha,
            one_minus_alpha: (1.0 - hp(self.alpha)) as f32,
            eps: self.eps,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
        };
        let (centered, with_momentum) = (self.centered, self.momentum > 0.0);
        for (name, p) in params.iter_mut() {
            if p.is_frozen() {
                // requires_grad = False: PyTorch's optimizers skip a parameter without a grad
                continue;
            }
            let Param { value, grad, .. } = &mut **p;
            if !self.state.contains_key(name.as_str()) {
                let st = RmsState {
                    step: 0,
                    square_avg: Tensor::zeros(value.raw_dim()),
                    grad_avg: None,
                    momentum_buffer: None,
                };
                self.state.insert(name.clone(), st);
            }
            let st = self.state.get_mut(name.as_str()).expect("inserted above");
            st.step += 1;
            if centered && st.grad_avg.is_none() {
                st.grad_avg = Some(Tensor::zeros(value.raw_dim()));
            }
            if with_momentum && st.momentum_buffer.is_none() {
                st.momentum_buffer = Some(Tensor::zeros(value.raw_dim()));
            }
            let par = value.len() >= PAR_MIN_LEN;
            let z = Zip::from(&mut *value).and(&*grad).and(&mut st.square_avg);
            match (
                st.grad_avg.as_mut().filter(|_| centered),
                st.momentum_buffer.as_mut().filter(|_| with_momentum),
            ) {
                (None, None) => zip_apply!(par, z, move |p: &mut f32, &g: &f32, v: &mut f32| {
                    update(k, p, g, v, None, None)
                }),
                (Some(ga), None) => zip_apply!(
                    par,
                    z.and(ga),
                    move |p: &mut f32, &g: &f32, v: &mut f32, ga: &mut f32| {
                        update(k, p, g, v, Some(ga), None)
                    }
                ),
                (None, Some(b)) => zip_apply!(
                    par,
                    z.and(b),
                    move |p: &mut f32, &g: &f32, v: &mut f32, b: &mut f32| {
                        update(k, p, g, v, None, Some(b))
                    }
                ),
                (Some(ga), Some(b)) => zip_apply!(
                    par,
                    z.and(ga).and(b),
                    move |p: &mut f32, &g: &f32, v: &mut f32, ga: &mut f32, b: &mut f32| {
                        update(k, p, g, v, Some(ga), Some(b))
                    }
                ),
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }

    /// `"<param>.step"`, `"<param>.square_avg"`, and `"<param>.grad_avg"` /
    /// `"<param>.momentum_buffer"` where present.
    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, st) in &self.state {
            out.insert(format!("{name}.{STEP}"), step_tensor(st.step));
            out.insert(format!("{name}.{SQUARE_AVG}"), st.square_avg.clone());
            if let Some(ga) = &st.grad_avg {
                out.insert(format!("{name}.{GRAD_AVG}"), ga.clone());
            }
            if let Some(b) = &st.momentum_buffer {
                out.insert(format!("{name}.{MOMENTUM_BUFFER}"), b.clone());
            }
        }
        out
    }

    /// Replaces the whole state. Every parameter needs `step` and `square_avg`, plus `grad_avg`
    /// when centered and `momentum_buffer` when momentum > 0, all of one shape.
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        #[derive(Default)]
        struct Parts<'a> {
            step: Option<u64>,
            square_avg: Option<&'a Tensor>,
            grad_avg: Option<&'a Tensor>,
            momentum_buffer: Option<&'a Tensor>,
        }
        let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
        for (key, t) in state {
            let (param, entry) = split_state_key(OP, key, &ENTRIES)?;
            let e = parts.entry(param).or_default();
            match entry {
                STEP => e.step = Some(read_step(OP, key, t)?),
                SQUARE_AVG => e.square_avg = Some(t),
                GRAD_AVG => e.grad_avg = Some(t),
                _ => e.momentum_buffer = Some(t),
            }
        }
        let mut new_state = BTreeMap::new();
        for (param, e) in parts {
            let step = e.step.ok_or_else(|| missing_state(OP, param, STEP))?;
            let v = e
                .square_avg
                .ok_or_else(|| missing_state(OP, param, SQUARE_AVG))?;
            if self.centered && e.grad_avg.is_none() {
                return Err(missing_state(OP, param, GRAD_AVG));
            }
            if self.momentum > 0.0 && e.momentum_buffer.is_none() {
                return Err(missing_state(OP, param, MOMENTUM_BUFFER));
            }
            for (entry, t) in [(GRAD_AVG, e.grad_avg), (MOMENTUM_BUFFER, e.momentum_buffer)] {
                if let Some(t) = t {
                    check_state_shape(OP, &format!("{param}.{entry}"), t, v.shape())?;
                }
            }
            let st = RmsState {
                step,
                square_avg: v.clone(),
                grad_avg: e.grad_avg.cloned(),
                momentum_buffer: e.momentum_buffer.cloned(),
            };
            new_state.insert(param.to_string(), st);
        }
        self.state = new_state;
        Ok(())
    }
}
