//! LoRA adapters (Hu et al. 2021; Hugging Face PEFT semantics) for fine-tuning a [`Llama`] with
//! its weights frozen: [`LoraConfig`], [`LoraLlama`].
//!
//! For a target projection `y = x·Wᵀ` of `W: [out, in]` LoRA adds a rank-`r` update:
//!
//! ```text
//! y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ,   A: [r, in], B: [out, r], s = alpha / r
//! forward: z = s·x·Aᵀ, y += z·Bᵀ  ⇒ dB += dyᵀ·z;  dz = s·dy·B;  dA += dzᵀ·x;  dx += dz·A
//! ```
//!
//! Initialisation as PEFT: `A` Kaiming-uniform (`a = √5`, bound `1/√in`), `B = 0`, so the
//! adapted model starts exactly at the base model. `W` receives no gradient.

use super::{Llama, Weight};
use crate::error::{Error, Result};
use crate::init::{rng, uniform};
use crate::ops::matmul::{matmul_into, matmul_nt_into, matmul_tn_into};
use crate::param::Param;
use crate::tensor::Tensor;
use crate::transformer::TrainableLm;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Ix2, IxDyn};

/// The projections of a layer, in the order adapters are stored.
pub(crate) const MODULES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// LoRA hyper-parameters (PEFT `LoraConfig` defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update (default 8).
    pub r: usize,
    /// `lora_alpha`: the update is scaled by `alpha / r` (default 8).
    pub alpha: f32,
    /// Short names of the adapted projections (default `["q_proj", "v_proj"]`, PEFT's choice
    /// for Llama); any of `q_proj k_proj v_proj o_proj gate_proj up_proj down_proj`.
    pub target_modules: Vec<String>,
    /// Seed of `A`'s initialisation (default 0).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 8.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            seed: 0,
        }
    }
}

/// One adapter `(A, B)` with its scale `s = alpha / r`.
#[derive(Debug, Clone)]
pub(crate) struct LoraPair {
    /// `lora_A.weight`: `[r, in]`.
    pub a: Param,
    /// `lora_B.weight`: `[out, r]`.
    pub b: Param,
    /// `alpha / r`.
    pub scale: f32,
}

/// The adapters of one layer, indexed like [`MODULES`].
pub(crate) type LayerLora = [Option<LoraPair>; 7];

fn mat(p: &Param) -> ArrayView2<'_, f32> {
    p.value
        .view()
        .into_dimensionality::<Ix2>()
        .expect("[rows, cols]")
}

fn grad_mat(p: &mut Param) -> ArrayViewMut2<'_, f32> {
    p.grad
        .view_mut()
        .into_dimensionality::<Ix2>()
        .expect("[rows, cols]")
}

impl LoraPair {
    /// `y += s·(x·Aᵀ)·Bᵀ`.
    ///
    /// # Shapes
    /// `x: (M, in)`, `y: (M, out)`.
    pub(crate) fn forward_add(&self, x: ArrayView2<f32>, y: ArrayViewMut2<f32>) {
        let r = self.a.shape()[0];
        let mut z = Array2::<f32>::zeros((x.nrows(), r));
        // z = s·x·Aᵀ
        matmul_nt_into(x, mat(&self.a), z.view_mut(), false);
        z *= self.scale;
        // y += z·Bᵀ
        matmul_nt_into(z.view(), mat(&self.b), y, true);
    }

    /// Backward of [`LoraPair::forward_add`]: adds into `dA`, `dB` and `dx`.
    ///
    /// ```text
    /// forward: z = s·x·Aᵀ   ⇒ dA += dzᵀ·x,  dx += dz·A   (dz = s·dy·B)
    /// forward: y += z·Bᵀ    ⇒ dB += dyᵀ·z,  dz = s·dy·B
    /// ```
    ///
    /// # Shapes
    /// `x: (M, in)`, `dy: (M, out)`, `dx: (M, in)`.
    pub(crate) fn backward(
        &mut self,
        x: ArrayView2<f32>,
        dy: ArrayView2<f32>,
        dx: ArrayViewMut2<f32>,
    ) {
        let r = self.a.shape()[0];
        let mut z = Array2::<f32>::zeros((x.nrows(), r));
        matmul_nt_into(x, mat(&self.a), z.view_mut(), false);
        z *= self.scale;
        matmul_tn_into(dy, z.view(), grad_mat(&mut self.b), true);
        // dz = s·dy·B (reuses z's buffer)
        matmul_into(dy, mat(&self.b), z.view_mut(), false);
        z *= self.scale;
        matmul_tn_into(z.view(), x, grad_mat(&mut self.a), true);
        matmul_into(z.view(), mat(&self.a), dx, true);
    }
}

/// A [`Llama`] with frozen weights and trainable LoRA adapters: what `peft.get_peft_model`
/// returns. Trains through [`crate::transformer::LmTrainer`] like the full model; for inference
/// or saving, [`LoraLlama::merge`] folds the adapters into the weights (`W += s·B·A`).
///
/// Parameter names follow PEFT's `adapter_model.safetensors`:
/// `base_model.model.model.layers.<i>.self_attn.q_proj.lora_A.weight`, `….lora_B.weight`.
#[derive(Debug, Clone)]
pub struct LoraLlama {
    base: Llama,
    adapters: Vec<LayerLora>,
    config: LoraConfig,
}

impl LoraLlama {
    /// Adds fresh adapters (`B = 0`: the output equals the base model's) to `base`.
    ///
    /// # Errors
    /// [`Error::Config`] for `r = 0`, a non-finite or non-positive `alpha`, an unknown or empty
    /// `target_modules`; [`Error::State`] when `base` holds encoded weights (train `to_f32()`'s
    /// copy).
    pub fn new(base: Llama, config: LoraConfig) -> Result<Self> {
        if config.r == 0 {
            return Err(Error::config("LoraConfig", "r", 0, "at least 1"));
        }
        if !(config.alpha.is_finite() && config.alpha > 0.0) {
            return Err(Error::config(
                "LoraConfig",
                "alpha",
                config.alpha,
                "a finite number > 0",
            ));
        }
        let mut wanted = [false; 7];
        for t in &config.target_modules {
            let i = MODULES
                .iter()
                .position(|m| m.rsplit('.').next() == Some(t.as_str()));
            let Some(i) = i else {
                return Err(Error::config(
                    "LoraConfig",
                    "target_modules",
                    t,
                    "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj",
                ));
            };
            wanted[i] = true;
        }
        if !wanted.iter().any(|&w| w) {
            return Err(Error::config(
                "LoraConfig",
                "target_modules",
                "[]",
                "at least one module",
            ));
        }
        if !base.is_trainable() {
            return Err(Error::State(
                "LoraLlama::new: the base model holds encoded weights; adapt `model.to_f32()?`"
                    .into(),
            ));
        }
        let mut g = rng(config.seed);
        let scale = config.alpha / config.r as f32;
        let mut adapters = Vec::with_capacity(base.layers.len());
        for layer in &base.layers {
            let ws = [
                &layer.q_proj,
                &layer.k_proj,
                &layer.v_proj,
                &layer.o_proj,
                &layer.gate_proj,
                &layer.up_proj,
                &layer.down_proj,
            ];
            let mut l: LayerLora = Default::default();
            for (k, w) in ws.into_iter().enumerate() {
                if wanted[k] {
                    let (out, inp) = w.dim();
                    l[k] = Some(LoraPair {
                        a: Param::new(uniform(
                            &[config.r, inp],
                            1.0 / (inp as f32).sqrt(),
                            &mut g,
                        )?),
                        b: Param::new(Tensor::zeros(IxDyn(&[out, config.r]))),
                        scale,
                    });
                }
            }
            adapters.push(l);
        }
        Ok(LoraLlama {
            base,
            adapters,
            config,
        })
    }

    /// The frozen base model.
    pub fn base(&self) -> &Llama {
        &self.base
    }

    /// The LoRA configuration.
    pub fn lora_config(&self) -> &LoraConfig {
        &self.config
    }

    /// Turns gradient checkpointing of the base model's layers on or off (see
    /// [`Llama::set_gradient_checkpointing`]).
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.base.set_gradient_checkpointing(on);
    }

    /// A plain model with the adapters folded in: `W ← W + s·B·A` for every adapted projection.
    ///
    /// # Errors
    /// Only if the base model's own state dict were inconsistent.
    pub fn merge(&self) -> Result<Llama> {
        let mut sd = self.base.state_dict();
        for (i, l) in self.adapters.iter().enumerate() {
            for (k, pair) in l.iter().enumerate() {
                let Some(p) = pair else { continue };
                let key = format!("model.layers.{i}.{}.weight", MODULES[k]);
                let w = sd.get_mut(&key).expect("state dict has every projection");
                let mut w2 = w
                    .view_mut()
                    .into_dimensionality::<Ix2>()
                    .expect("[out, in]");
                let mut ba = crate::ops::matmul::matmul(mat(&p.b), mat(&p.a));
                ba *= p.scale;
                w2 += &ba;
            }
        }
        Llama::from_state_dict(self.base.config.clone(), sd, "LoraLlama::merge")
    }

    /// The adapters' parameters with PEFT names, layer by layer (`lora_A` before `lora_B`).
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut v = Vec::new();
        for (i, l) in self.adapters.iter().enumerate() {
            for (k, p) in l.iter().enumerate() {
                if let Some(p) = p {
                    let n = format!("base_model.model.model.layers.{i}.{}", MODULES[k]);
                    v.push((format!("{n}.lora_A.weight"), &p.a));
                    v.push((format!("{n}.lora_B.weight"), &p.b));
                }
            }
        }
        v
    }

    /// [`LoraLlama::params`], mutably (what the optimizer steps).
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = Vec::new();
        for (i, l) in self.adapters.iter_mut().enumerate() {
            for (k, p) in l.iter_mut().enumerate() {
                if let Some(p) = p {
                    let n = format!("base_model.model.model.layers.{i}.{}", MODULES[k]);
                    v.push((format!("{n}.lora_A.weight"), &mut p.a));
                    v.push((format!("{n}.lora_B.weight"), &mut p.b));
                }
            }
        }
        v
    }

    /// Training forward + mean next-token loss (as [`Llama::forward_loss`]) through the adapters.
    ///
    /// # Shapes
    /// `ids: (B, T)`, `targets: (B, T)` → scalar.
    ///
    /// # Errors
    /// As [`Llama::forward_loss`].
    pub fn forward_loss(
        &mut self,
        ids: ArrayView2<usize>,
        targets: ArrayView2<usize>,
    ) -> Result<f32> {
        self.base
            .forward_loss_with(ids, targets, Some(&self.adapters), true)
    }

    /// Back-propagates into the adapters only (the base weights get no gradient).
    ///
    /// # Errors
    /// As [`Llama::backward`].
    pub fn backward(&mut self) -> Result<()> {
        self.base.backward_with(Some(&mut self.adapters[..]))
    }

    /// Sets the adapters' gradients to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params_mut() {
            p.zero_grad();
        }
    }
}

impl TrainableLm for LoraLlama {
    fn forward_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        LoraLlama::forward_loss(self, ids, targets)
    }
    fn backward(&mut self) -> Result<()> {
        LoraLlama::backward(self)
    }
    fn eval_loss(&mut self, ids: ArrayView2<usize>, targets: ArrayView2<usize>) -> Result<f32> {
        self.base
            .forward_loss_with(ids, targets, Some(&self.adapters), false)
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        LoraLlama::params_mut(self)
    }
    fn zero_grad(&mut self) {
        LoraLlama::zero_grad(self)
    }
    fn max_len(&self) -> (&'static str, usize) {
        (
            "max_position_embeddings",
            self.base.config.max_position_embeddings,
        )
    }
    fn vocab_size(&self) -> usize {
        self.base.config.vocab_size
    }
}

/// `y = x·Wᵀ (+ s·(x·Aᵀ)·Bᵀ)`: a projection with its optional adapter.
///
/// # Shapes
/// `x: (M, in)`, `y: (M, out)`.
pub(crate) fn project(
    w: &Weight,
    lora: Option<&LoraPair>,
    x: ArrayView2<f32>,
    mut y: ArrayViewMut2<f32>,
) {
    w.matmul_t(x, y.view_mut());
    if let Some(p) = lora {
        p.forward_add(x, y);
    }
}
