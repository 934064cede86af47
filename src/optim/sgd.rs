//! Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay
//! (`torch.optim.SGD`).

use super::{check_non_negative, check_params, hp, split_state_key, Optimizer, PAR_MIN_LEN};
use crate::error::{Error, Result};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::Zip;
use std::collections::BTreeMap;

const OP: &str = "SGD";
const MOMENTUM_BUFFER: &str = "momentum_buffer";

/// Stochastic gradient descent with PyTorch's `torch.optim.SGD` semantics.
///
/// For every parameter `p` with gradient `g`, each step computes
///
/// ```text
/// g ← g + weight_decay·p                         (if weight_decay ≠ 0)
/// if momentum ≠ 0:
///     buf ← g                                    (first step: a copy of g, no dampening)
///     buf ← momentum·buf + (1 − dampening)·g     (later steps)
///     g   ← g + momentum·buf   if nesterov, else   g ← buf
/// p ← p − lr·g
/// ```
///
/// Defaults (as PyTorch): `momentum = 0`, `dampening = 0`, `nesterov = false`,
/// `weight_decay = 0`. Nesterov needs `momentum > 0` and `dampening = 0`.
///
/// State: `"<param>.momentum_buffer"` (only when `momentum ≠ 0`; SGD keeps no step count).
///
/// ```
/// use handgrad::optim::{Optimizer, Sgd};
/// let opt = Sgd::new(0.1).momentum(0.9).nesterov(true);
/// assert!(opt.validate().is_ok());
/// assert!(Sgd::new(0.1).nesterov(true).validate().is_err()); // needs momentum
/// ```
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    dampening: f32,
    nesterov: bool,
    weight_decay: f32,
    /// Momentum buffers by parameter name (absent before the first step with momentum).
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// SGD with learning rate `lr` and no momentum, dampening or weight decay.
    pub fn new(lr: f32) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: BTreeMap::new(),
        }
    }

    /// Momentum factor `μ ≥ 0` (default 0: plain SGD).
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Dampening of the gradient added to the momentum buffer, `buf ← μ·buf + (1 − d)·g`
    /// (default 0).
    pub fn dampening(mut self, dampening: f32) -> Self {
        self.dampening = dampening;
        self
    }

    /// Nesterov momentum, `g ← g + μ·buf` (default `false`; needs momentum > 0, dampening = 0).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// L2 penalty added to the gradient, `g ← g + wd·p` (default 0).
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_non_negative(OP, "lr", self.lr)?;
        check_non_negative(OP, "momentum", self.momentum)?;
        check_non_negative(OP, "dampening", self.dampening)?;
        check_non_negative(OP, "weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                OP,
                "nesterov",
                self.nesterov,
                format!(
                    "nesterov = false unless momentum > 0 and dampening = 0 (got momentum = {}, \
                     dampening = {})",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }

    fn step(&mut self, params: &mut [(String, &mut Param)]) -> Result<()> {
        self.validate()?;
        check_params(OP, params, |name| self.buffers.get(name).map(|b| b.shape()))?;
        // Scalars as torch forms them: Python floats, cast to f32 by each tensor op.
        let neg_lr = -hp(self.lr) as f32;
        let wd = self.weight_decay;
        let mu = self.momentum;
        let one_minus_damp = (1.0 - hp(self.dampening)) as f32;
        let nesterov = self.nesterov;
        for (name, p) in params.iter_mut() {
            if p.is_frozen() {
                // requires_grad = False: PyTorch's optimizers skip a parameter without a grad
                continue;
            }
            let Param { value, grad, .. } = &mut **p;
            let par = value.len() >= PAR_MIN_LEN;
            if mu == 0.0 {
                let upd = move |p: &mut f32, &g: &f32| {
                    // d_p = grad.add(param, alpha=weight_decay)
                    let d = if wd != 0.0 { g + wd * *p } else { g };
                    // param.add_(d_p, alpha=-lr)
                    *p += neg_lr * d;
                };
                let z = Zip::from(value).and(&*grad);
                if par {
                    z.par_for_each(upd)
                } else {
                    z.for_each(upd)
                }
                continue;
            }
            let first = !self.buffers.contains_key(name.as_str());
            if first {
                self.buffers
                    .insert(name.clone(), Tensor::zeros(value.raw_dim()));
            }
            let buf = self.buffers.get_mut(name.as_str()).expect("inserted above");
            let upd = move |p: &mut f32, &g: &f32, b: &mut f32| {
                // d_p = grad.add(param, alpha=weight_decay)
                let d = if wd != 0.0 { g + wd * *p } else { g };
                // first step: buf = torch.clone(d_p)
                // later:      buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                *b = if first {
                    d
                } else {
                    *b * mu + one_minus_damp * d
                };
                // nesterov: d_p = d_p.add(buf, alpha=momentum); else d_p = buf
                let d = if nesterov { d + mu * *b } else { *b };
                // param.add_(d_p, alpha=-lr)
                *p += neg_lr * d;
            };
            let z = Zip::from(value).and(&*grad).and(buf);
            if par {
                z.par_for_each(upd)
            } else {
                z.for_each(upd)
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

    /// `"<param>.momentum_buffer"` for every parameter that has one.
    fn state(&self) -> BTreeMap<String, Tensor> {
        self.buffers
            .iter()
            .map(|(name, b)| (format!("{name}.{MOMENTUM_BUFFER}"), b.clone()))
            .collect()
    }

    /// Replaces all momentum buffers by those in `state` (keys `"<param>.momentum_buffer"`).
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (key, t) in state {
            let (param, _) = split_state_key(OP, key, &[MOMENTUM_BUFFER])?;
            buffers.insert(param.to_string(), t.clone());
        }
        self.buffers = buffers;
        Ok(())
    }
}
