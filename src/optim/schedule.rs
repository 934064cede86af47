//! Learning-rate schedules: the learning rate as a function of the step `t = 0, 1, 2, …`.

use super::{check_non_negative, hp, Optimizer};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

const OP: &str = "LrSchedule";

/// A learning-rate schedule: [`LrSchedule::lr_at`] maps a base learning rate and a step
/// `t = 0, 1, 2, …` (the index of the optimizer step about to be taken) to a learning rate.
///
/// Values are computed in `f64` from the decimal values of the `f32` inputs and rounded to `f32`
/// once.
///
/// ```
/// use handgrad::optim::LrSchedule;
/// let s = LrSchedule::WarmupCosine { warmup_steps: 10, total_steps: 110, min_lr: 0.0 };
/// s.validate()?;
/// assert_eq!(s.lr_at(1.0, 0), 0.1);  // warmup: (t + 1)/10
/// assert_eq!(s.lr_at(1.0, 9), 1.0);  // end of warmup
/// assert_eq!(s.lr_at(1.0, 60), 0.5); // cosine midpoint
/// assert_eq!(s.lr_at(1.0, 110), 0.0);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum LrSchedule {
    /// `lr = base` at every step (the default).
    #[default]
    Constant,
    /// PyTorch's `StepLR`: `lr = base·gamma^⌊t / step_size⌋`, i.e. multiplied by `gamma` every
    /// `step_size` steps.
    Step {
        /// Steps between two decays, `≥ 1`.
        step_size: usize,
        /// Multiplicative factor, finite and `> 0` (usually `< 1`).
        gamma: f32,
    },
    /// PyTorch's `ExponentialLR`: `lr = base·gammaᵗ`.
    Exponential {
        /// Multiplicative factor per step, finite and `> 0`.
        gamma: f32,
    },
    /// Linear warmup, then cosine decay to `min_lr` (nanoGPT / GPT-3 style):
    ///
    /// ```text
    /// t < W:        lr = base·(t + 1)/W                                  (W = warmup_steps)
    /// W ≤ t < T:    lr = min_lr + (base − min_lr)·½·(1 + cos(π·(t − W)/(T − W)))
    /// t ≥ T:        lr = min_lr                                          (T = total_steps)
    /// ```
    ///
    /// So the warmup climbs linearly from `base/W` at `t = 0` to `base` at `t = W − 1`, the
    /// cosine phase starts at `base` (`t = W`), passes `(base + min_lr)/2` halfway, and would
    /// reach `min_lr` at `t = T`, from where the rate stays at `min_lr`. `W = 0` means no warmup.
    WarmupCosine {
        /// Warmup length `W ≤ total_steps`.
        warmup_steps: usize,
        /// Step `T ≥ 1` at which the decay reaches `min_lr`.
        total_steps: usize,
        /// Final learning rate, finite and `≥ 0`.
        min_lr: f32,
    },
}

impl LrSchedule {
    /// The learning rate for step `t` (0-based) given the base learning rate `base_lr`; see
    /// each variant for its formula.
    pub fn lr_at(&self, base_lr: f32, step: usize) -> f32 {
        let base = hp(base_lr);
        let t = step as f64;
        let lr = match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                // base_lr * gamma ** (last_epoch // step_size)
                let k = (step / step_size.max(1)) as f64;
                base * hp(gamma).powf(k)
            }
            // base_lr * gamma ** last_epoch
            LrSchedule::Exponential { gamma } => base * hp(gamma).powf(t),
            LrSchedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                let min_lr = hp(min_lr);
                if step < warmup_steps {
                    base * (t + 1.0) / warmup_steps as f64
                } else if step < total_steps {
                    let progress = (t - warmup_steps as f64) / (total_steps - warmup_steps) as f64;
                    min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                } else {
                    min_lr
                }
            }
        };
        lr as f32
    }

    /// Checks the schedule's settings.
    ///
    /// # Errors
    /// [`Error::Config`] for `step_size = 0`, a `gamma` that is not finite and `> 0`,
    /// `total_steps = 0`, `warmup_steps > total_steps`, or a `min_lr` that is not finite and
    /// `≥ 0`.
    pub fn validate(&self) -> Result<()> {
        let check_gamma = |gamma: f32| {
            if gamma.is_finite() && gamma > 0.0 {
                Ok(())
            } else {
                Err(Error::config(OP, "gamma", gamma, "a finite value > 0"))
            }
        };
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { step_size, gamma } => {
                if step_size == 0 {
                    return Err(Error::config(OP, "step_size", step_size, "a value >= 1"));
                }
                check_gamma(gamma)
            }
            LrSchedule::Exponential { gamma } => check_gamma(gamma),
            LrSchedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                if total_steps == 0 {
                    return Err(Error::config(
                        OP,
                        "total_steps",
                        total_steps,
                        "a value >= 1",
                    ));
                }
                if warmup_steps > total_steps {
                    return Err(Error::config(
                        OP,
                        "warmup_steps",
                        warmup_steps,
                        format!("a value <= total_steps = {total_steps}"),
                    ));
                }
                check_non_negative(OP, "min_lr", min_lr)
            }
        }
    }

    /// Sets `opt`'s learning rate to [`LrSchedule::lr_at`]`(base_lr, step)` and returns it.
    ///
    /// # Errors
    /// As [`LrSchedule::validate`]; the optimizer is left unchanged then.
    ///
    /// ```
    /// use handgrad::optim::{Adam, LrSchedule, Optimizer};
    /// let mut opt = Adam::new(1e-3);
    /// let s = LrSchedule::Step { step_size: 10, gamma: 0.5 };
    /// assert_eq!(s.apply(&mut opt, 1e-3, 10)?, 5e-4);
    /// assert_eq!(opt.learning_rate(), 5e-4);
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    pub fn apply(&self, opt: &mut dyn Optimizer, base_lr: f32, step: usize) -> Result<f32> {
        self.validate()?;
        let lr = self.lr_at(base_lr, step);
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::config(
                OP,
                format!("learning rate at step {step}"),
                lr,
                format!(
                    "a finite rate >= 0: {self:?} with the base rate {base_lr} gives {lr} (the \
                     optimizer was not changed)"
                ),
            ));
        }
        opt.set_learning_rate(lr);
        Ok(lr)
    }
}
