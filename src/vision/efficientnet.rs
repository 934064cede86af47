//! [`EfficientNetLite`]: EfficientNet-Lite (Tan & Le 2019, the "Lite" variants for mobile
//! accelerators: ReLU6, no squeeze-excitation, fixed stem and head) as a [`Sequential`].
//!
//! The network is a plain Keras-style stack, so `compile`, `fit`, `evaluate`, `predict` and
//! `summary` come from [`Sequential`] (through `Deref`):
//!
//! ```text
//! layer 0      _conv_stem   Conv2d 3×3 s2 TF-SAME, 3 → stem, no bias
//! layer 1      _bn0         BatchNorm2d (eps 1e-3, momentum 0.01)
//! layer 2                   ReLU6
//! layers 3…    _blocks.<i>  MbConv (16 blocks for Lite0)
//! then         _conv_head   Conv2d 1×1 → head, no bias;  _bn1 BatchNorm2d;  ReLU6
//!                           GlobalAvgPool2d;  Dropout(p);  _fc Dense(num_classes)
//! ```
//!
//! Names: [`EfficientNetLite::params`] and [`EfficientNetLite::state_dict`] use the state-dict
//! keys of `efficientnet-lite-pytorch` (the names inside the released EfficientNet-Lite0
//! checkpoint); [`EfficientNetLite::load_state_dict`] also accepts timm's
//! `tf_efficientnet_lite*` names (mapping rule in [`timm_to_package`]). The
//! [`Sequential`] underneath names the same tensors by layer index (`"3._bn0.weight"`), which is
//! what its optimizers and checkpoints see.

use crate::error::{Error, Result};
use crate::init::Rng;
use crate::layers::{
    Activate, BatchNorm2d, Conv2d, Dense, Dropout, GlobalAvgPool2d, MbConv, Padding,
};
use crate::model::Sequential;
use crate::param::Param;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// One MBConv block of an [`EfficientNetConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// Expansion ratio `e` (1: no expand conv).
    pub expand_ratio: usize,
    /// Depthwise kernel size `k`.
    pub kernel: usize,
    /// Depthwise stride `s`.
    pub stride: usize,
    /// Output channels.
    pub out_channels: usize,
}

/// The architecture of an [`EfficientNetLite`].
#[derive(Debug, Clone, PartialEq)]
pub struct EfficientNetConfig {
    /// Input resolution `H = W` (224 for Lite0).
    pub image_size: usize,
    /// Input channels (3).
    pub in_channels: usize,
    /// Stem conv output channels (32).
    pub stem_channels: usize,
    /// Every block, in order.
    pub blocks: Vec<BlockConfig>,
    /// Blocks per stage (timm names blocks `blocks.<stage>.<j>`); sums to `blocks.len()`.
    pub stages: Vec<usize>,
    /// Head conv output channels (1280).
    pub head_channels: usize,
    /// Classifier outputs (1000 for ImageNet-1k).
    pub num_classes: usize,
    /// Dropout before the classifier (0.2 for Lite0/1, 0.3 for Lite2–4).
    pub dropout: f32,
    /// BatchNorm eps (1e-3).
    pub bn_eps: f32,
    /// BatchNorm PyTorch momentum (0.01, TF's decay 0.99).
    pub bn_momentum: f32,
}

/// The EfficientNet-B0 stages `(repeats, kernel, stride, expand, in, out)`.
const BASE_STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// `round_filters` of the reference implementation: `f·width` to a multiple of 8, never more than
/// 10 % below.
fn round_filters(f: usize, width: f64) -> usize {
    let divisor: f64 = 8.0;
    let f = f as f64 * width;
    let mut new = (divisor).max(((f + divisor / 2.0) / divisor).floor() * divisor);
    if new < 0.9 * f {
        new += divisor;
    }
    new as usize
}

impl EfficientNetConfig {
    /// EfficientNet-Lite`variant` (0…4) for 1000 classes: width / depth multipliers, resolution
    /// and dropout `(1.0, 1.0, 224, 0.2)`, `(1.0, 1.1, 240, 0.2)`, `(1.1, 1.2, 260, 0.3)`,
    /// `(1.2, 1.4, 280, 0.3)`, `(1.4, 1.8, 300, 0.3)`. As in the Lite definition, the stem (32)
    /// and head (1280) are not scaled, nor are the repeats of the first and last stage.
    ///
    /// # Errors
    /// [`Error::Config`] for a variant above 4.
    pub fn lite(variant: usize) -> Result<Self> {
        let (width, depth, image_size, dropout) = match variant {
            0 => (1.0, 1.0, 224, 0.2),
            1 => (1.0, 1.1, 240, 0.2),
            2 => (1.1, 1.2, 260, 0.3),
            3 => (1.2, 1.4, 280, 0.3),
            4 => (1.4, 1.8, 300, 0.3),
            v => {
                return Err(Error::config(
                    "EfficientNetConfig::lite",
                    "variant",
                    v,
                    "0, 1, 2, 3 or 4",
                ))
            }
        };
        let mut blocks = Vec::new();
        let mut stages = Vec::new();
        let last = BASE_STAGES.len() - 1;
        for (i, &(r, k, s, e, _cin, cout)) in BASE_STAGES.iter().enumerate() {
            let repeats = if i == 0 || i == last {
                r
            } else {
                (depth * r as f64).ceil() as usize
            };
            let out = round_filters(cout, width);
            for j in 0..repeats {
                blocks.push(BlockConfig {
                    expand_ratio: e,
                    kernel: k,
                    stride: if j == 0 { s } else { 1 },
                    out_channels: out,
                });
            }
            stages.push(repeats);
        }
        Ok(EfficientNetConfig {
            image_size,
            in_channels: 3,
            stem_channels: 32,
            blocks,
            stages,
            head_channels: 1280,
            num_classes: 1000,
            dropout,
            bn_eps: 1e-3,
            bn_momentum: 0.01,
        })
    }

    /// EfficientNet-Lite0: 224×224 inputs, 16 blocks, 1000 classes, 4.65 M parameters.
    pub fn lite0() -> Self {
        Self::lite(0).expect("variant 0 exists")
    }

    /// With `n` classifier outputs.
    pub fn with_num_classes(mut self, n: usize) -> Self {
        self.num_classes = n;
        self
    }

    /// Checks sizes (non-zero), the stage counts and the dropout/BN settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let what = "EfficientNetConfig";
        for (field, v) in [
            ("image_size", self.image_size),
            ("in_channels", self.in_channels),
            ("stem_channels", self.stem_channels),
            ("head_channels", self.head_channels),
            ("num_classes", self.num_classes),
            ("blocks", self.blocks.len()),
        ] {
            if v == 0 {
                return Err(Error::config(what, field, 0, "at least 1"));
            }
        }
        if self.stages.iter().sum::<usize>() != self.blocks.len() {
            return Err(Error::config(
                what,
                "stages",
                format!("{:?}", self.stages),
                format!("block counts per stage summing to {}", self.blocks.len()),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                what,
                "dropout",
                self.dropout,
                "a value in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// A Sequential layer-index name (`"3._bn0.weight"`) → the package name
/// (`"_blocks.0._bn0.weight"`), for `n_blocks` blocks.
fn package_name(seq: &str, n_blocks: usize) -> Option<String> {
    let (idx, rest) = seq.split_once('.')?;
    let i: usize = idx.parse().ok()?;
    let prefix = match i {
        0 => "_conv_stem".to_string(),
        1 => "_bn0".to_string(),
        i if (3..3 + n_blocks).contains(&i) => format!("_blocks.{}", i - 3),
        i if i == 3 + n_blocks => "_conv_head".to_string(),
        i if i == 4 + n_blocks => "_bn1".to_string(),
        i if i == 8 + n_blocks => "_fc".to_string(),
        _ => return None,
    };
    Some(format!("{prefix}.{rest}"))
}

/// A timm `tf_efficientnet_lite*` state-dict key → the `efficientnet-lite-pytorch` key, or
/// `None` for a key that is not part of the network.
///
/// The rule: `conv_stem` → `_conv_stem`, `bn1` → `_bn0` (stem BN), `conv_head` → `_conv_head`,
/// `bn2` → `_bn1` (head BN), `classifier` → `_fc`; `blocks.<stage>.<j>` → `_blocks.<i>` with
/// `i` = the blocks of the earlier stages + `j`. Inside a block with expand ratio 1 (timm's
/// `DepthwiseSeparableConv`): `conv_dw/bn1/conv_pw/bn2` → `_depthwise_conv/_bn1/_project_conv/_bn2`;
/// otherwise (`InvertedResidual`): `conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3` →
/// `_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`.
pub fn timm_to_package(key: &str, config: &EfficientNetConfig) -> Option<String> {
    let top = |from: &str, to: &str| {
        key.strip_prefix(from)
            .and_then(|r| r.strip_prefix('.'))
            .map(|r| format!("{to}.{r}"))
    };
    for (from, to) in [
        ("conv_stem", "_conv_stem"),
        ("bn1", "_bn0"),
        ("conv_head", "_conv_head"),
        ("bn2", "_bn1"),
        ("classifier", "_fc"),
    ] {
        if let Some(k) = top(from, to) {
            return Some(k);
        }
    }
    let rest = key.strip_prefix("blocks.")?;
    let mut parts = rest.splitn(4, '.');
    let stage: usize = parts.next()?.parse().ok()?;
    let j: usize = parts.next()?.parse().ok()?;
    let module = parts.next()?;
    let leaf = parts.next()?;
    if stage >= config.stages.len() || j >= config.stages[stage] {
        return None;
    }
    let i = config.stages[..stage].iter().sum::<usize>() + j;
    let sub = if config.blocks[i].expand_ratio == 1 {
        match module {
            "conv_dw" => "_depthwise_conv",
            "bn1" => "_bn1",
            "conv_pw" => "_project_conv",
            "bn2" => "_bn2",
            _ => return None,
        }
    } else {
        match module {
            "conv_pw" => "_expand_conv",
            "bn1" => "_bn0",
            "conv_dw" => "_depthwise_conv",
            "bn2" => "_bn1",
            "conv_pwl" => "_project_conv",
            "bn3" => "_bn2",
            _ => return None,
        }
    };
    Some(format!("_blocks.{i}.{sub}.{leaf}"))
}

/// EfficientNet-Lite as a [`Sequential`] (which it dereferences to: `compile`, `fit`,
/// `evaluate`, `predict`, `forward`, `backward`, `summary`), with the package's parameter names.
///
/// The inherent [`EfficientNetLite::params`], [`EfficientNetLite::state_dict`] and
/// [`EfficientNetLite::load_state_dict`] use the package names; what is reached through the
/// `Sequential` (its optimizer steps, `save_weights`, checkpoints) uses layer-index names
/// (`"3._bn0.weight"`), which is fine for resuming with the same class but not for exchange
/// with PyTorch: export with `state_dict()` for that.
///
/// ```
/// use handgrad::vision::{EfficientNetConfig, EfficientNetLite};
/// let net = EfficientNetLite::new(EfficientNetConfig::lite0(), &mut handgrad::init::rng(0))?;
/// assert_eq!(net.param_count(), 4_652_008);
/// assert_eq!(net.params()[0].0, "_conv_stem.weight");
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Shapes
/// `x: (N, 3, S, S) → logits (N, num_classes)`, `S = image_size`.
pub struct EfficientNetLite {
    config: EfficientNetConfig,
    model: Sequential,
}

impl std::fmt::Debug for EfficientNetLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EfficientNetLite")
            .field("config", &self.config)
            .finish()
    }
}

impl std::ops::Deref for EfficientNetLite {
    type Target = Sequential;
    fn deref(&self) -> &Sequential {
        &self.model
    }
}

impl std::ops::DerefMut for EfficientNetLite {
    fn deref_mut(&mut self) -> &mut Sequential {
        &mut self.model
    }
}

impl EfficientNetLite {
    /// A randomly initialised network (PyTorch default initialisers, BN γ = 1, β = 0).
    ///
    /// # Errors
    /// As [`EfficientNetConfig::validate`]; [`Error::Shape`] when the image is too small.
    pub fn new(config: EfficientNetConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let bn = || {
            BatchNorm2d::new()
                .eps(config.bn_eps)
                .momentum(config.bn_momentum)
        };
        let mut seq = Sequential::new(&[config.in_channels, config.image_size, config.image_size])
            .add(
                Conv2d::new(config.stem_channels, 3)
                    .stride(2)
                    .padding(Padding::TfSame)
                    .with_bias(false),
            )
            .add(bn().relu6());
        for b in &config.blocks {
            seq = seq.add(
                MbConv::new(b.out_channels, b.expand_ratio, b.kernel, b.stride)
                    .batch_norm(config.bn_eps, config.bn_momentum),
            );
        }
        let model = seq
            .add(Conv2d::new(config.head_channels, 1).with_bias(false))
            .add(bn().relu6())
            .add(GlobalAvgPool2d::new())
            .add(Dropout::new(config.dropout))
            .add(Dense::new(config.num_classes))
            .build(rng)?;
        Ok(EfficientNetLite { config, model })
    }

    /// A network for `config` with the weights of a PyTorch state dict in the
    /// `efficientnet-lite-pytorch` names or timm's (see [`EfficientNetLite::load_state_dict`]).
    /// `num_classes` is taken from the classifier weight in the state dict.
    ///
    /// # Errors
    /// As [`EfficientNetLite::load_state_dict`].
    pub fn from_state_dict(
        config: EfficientNetConfig,
        state: &BTreeMap<String, Tensor>,
    ) -> Result<Self> {
        let fc = state
            .get("_fc.weight")
            .or_else(|| state.get("classifier.weight"));
        let num_classes = match fc.map(|t| t.shape().to_vec()) {
            Some(s) if s.len() == 2 => s[0],
            Some(s) => {
                return Err(Error::Param {
                    name: "_fc.weight".into(),
                    message: format!(
                        "expected a [num_classes, {}] weight, found {s:?}",
                        config.head_channels
                    ),
                })
            }
            None => {
                return Err(Error::Param {
                    name: "_fc.weight".into(),
                    message: "missing from the state dict (timm: classifier.weight)".into(),
                })
            }
        };
        let mut net = Self::new(
            config.with_num_classes(num_classes),
            &mut crate::init::rng(0),
        )?;
        net.load_state_dict(state)?;
        Ok(net)
    }

    /// EfficientNet-Lite0 from a state dict (e.g. the released
    /// `efficientnet-lite0-57934424.pth` read by a PyTorch checkpoint reader).
    ///
    /// # Errors
    /// As [`EfficientNetLite::from_state_dict`].
    pub fn lite0_from_state_dict(state: &BTreeMap<String, Tensor>) -> Result<Self> {
        Self::from_state_dict(EfficientNetConfig::lite0(), state)
    }

    /// The architecture.
    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }

    /// The underlying [`Sequential`] (index names).
    pub fn sequential(&self) -> &Sequential {
        &self.model
    }

    /// The underlying [`Sequential`], mutably.
    pub fn sequential_mut(&mut self) -> &mut Sequential {
        &mut self.model
    }

    /// The underlying [`Sequential`], by value.
    pub fn into_sequential(self) -> Sequential {
        self.model
    }

    fn rename<T>(&self, named: Vec<(String, T)>) -> Vec<(String, T)> {
        let n = self.config.blocks.len();
        named
            .into_iter()
            .map(|(k, v)| (package_name(&k, n).unwrap_or(k), v))
            .collect()
    }

    /// Every parameter with its package name (`"_blocks.3._bn1.weight"`), in layer order.
    pub fn params(&self) -> Vec<(String, &Param)> {
        self.rename(self.model.params())
    }

    /// Every parameter, mutably, with its package name, in layer order.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let n = self.config.blocks.len();
        self.model
            .params_mut()
            .into_iter()
            .map(|(k, v)| (package_name(&k, n).unwrap_or(k), v))
            .collect()
    }

    /// Every parameter and buffer (BN running statistics, `num_batches_tracked`) by package name.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let n = self.config.blocks.len();
        self.model
            .state_dict()
            .into_iter()
            .map(|(k, v)| (package_name(&k, n).unwrap_or(k), v))
            .collect()
    }

    /// Loads every parameter and buffer from `state`, keyed by the `efficientnet-lite-pytorch`
    /// names (`_conv_stem.weight`, `_blocks.0._bn1.running_var`, …) or by timm's
    /// (`conv_stem.weight`, `blocks.0.0.bn1.running_var`, …; detected from the keys). Strict, as
    /// PyTorch's `load_state_dict`: every key must be present with the model's shape and
    /// nothing else may be there, except that missing `num_batches_tracked` entries keep their
    /// current value (files written for inference often drop them). Nothing changes unless
    /// everything fits.
    ///
    /// # Errors
    /// [`Error::Param`] naming (in the file's naming) the first missing, unexpected or
    /// mis-shaped entry.
    pub fn load_state_dict(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let timm = state
            .keys()
            .any(|k| k.starts_with("conv_stem.") || k.starts_with("blocks."));
        // package name → (key in the file, tensor)
        let mut given: BTreeMap<String, (&String, &Tensor)> = BTreeMap::new();
        for (k, t) in state {
            let pkg = if timm {
                timm_to_package(k, &self.config)
            } else {
                Some(k.clone())
            };
            match pkg {
                Some(p) => {
                    given.insert(p, (k, t));
                }
                None => {
                    return Err(Error::Param {
                        name: k.clone(),
                        message: "unexpected key: not a tensor of this timm EfficientNet-Lite"
                            .into(),
                    })
                }
            }
        }
        let own = self.model.state_dict();
        let n = self.config.blocks.len();
        let mut by_seq = BTreeMap::new();
        let mut used = 0;
        for (seq_name, t) in &own {
            let pkg = package_name(seq_name, n).unwrap_or_else(|| seq_name.clone());
            match given.get(&pkg) {
                Some((file_key, v)) => {
                    used += 1;
                    if v.shape() != t.shape() {
                        return Err(Error::Param {
                            name: (*file_key).clone(),
                            message: format!(
                                "shape {:?} in the state dict, the model has {:?}",
                                v.shape(),
                                t.shape()
                            ),
                        });
                    }
                    by_seq.insert(seq_name.clone(), (*v).clone());
                }
                None if pkg.ends_with(".num_batches_tracked") => {
                    by_seq.insert(seq_name.clone(), t.clone());
                }
                None => {
                    let shown = if timm {
                        format!("{pkg} (timm name not found; package name shown)")
                    } else {
                        pkg.clone()
                    };
                    return Err(Error::Param {
                        name: pkg,
                        message: format!(
                            "missing from the state dict: {shown} with shape {:?}",
                            t.shape()
                        ),
                    });
                }
            }
        }
        if used != given.len() {
            let own_pkg: std::collections::BTreeSet<String> = own
                .keys()
                .map(|k| package_name(k, n).unwrap_or_else(|| k.clone()))
                .collect();
            let extra = given
                .iter()
                .find(|(p, _)| !own_pkg.contains(*p))
                .map(|(_, (k, _))| (*k).clone())
                .unwrap_or_default();
            return Err(Error::Param {
                name: extra.clone(),
                message: format!("unexpected key {extra}: this network has no such tensor"),
            });
        }
        self.model.load_state_dict(&by_seq)
    }

    /// The same network with a fresh classifier of `n` outputs (transfer learning): every other
    /// weight and buffer is kept, `_fc` is re-initialised from `rng` (PyTorch's `nn.Linear`
    /// default). Call `compile` again afterwards.
    ///
    /// # Errors
    /// [`Error::Config`] for `n = 0`.
    pub fn with_num_classes(self, n: usize, rng: &mut Rng) -> Result<Self> {
        let config = self.config.clone().with_num_classes(n);
        let mut fresh = EfficientNetLite::new(config, rng)?;
        let mut state = self.state_dict();
        let fc: BTreeMap<String, Tensor> = fresh
            .state_dict()
            .into_iter()
            .filter(|(k, _)| k.starts_with("_fc."))
            .collect();
        state.retain(|k, _| !k.starts_with("_fc."));
        state.extend(fc);
        fresh.load_state_dict(&state)?;
        Ok(fresh)
    }
}
