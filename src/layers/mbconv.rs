//! [`MbConv`]: the inverted-residual block of MobileNetV2 / EfficientNet-Lite.

use super::residual::Chain;
use super::{not_built, BatchNorm2d, Conv2d, Layer, Mode, Padding, Relu6};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::conv2d::{conv2d_forward_fused, Conv2dGeom, Conv2dWorkspace, Epilogue};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{Array1, Ix4};

/// An EfficientNet-Lite MBConv block (no squeeze-excitation, ReLU6), as
/// `efficientnet-lite-pytorch`'s `MBConvBlock`:
///
/// ```text
/// h1 = relu6(_bn0(_expand_conv(x)))            1×1, C → C·e   (skipped when e = 1: h1 = x)
/// h2 = relu6(_bn1(_depthwise_conv(h1)))        k×k depthwise, stride s, TF "SAME" padding
/// y  = _bn2(_project_conv(h2)) (+ x)           1×1, C·e → cout; + x iff s = 1 and C = cout
/// ```
///
/// Every convolution is bias-free. Parameters and buffers carry the package's state-dict names
/// (`_expand_conv.weight`, `_bn0.weight`, `_bn0.running_mean`, …, `_depthwise_conv.weight`,
/// `_bn1.*`, `_project_conv.weight`, `_bn2.*`), so a [`crate::Sequential`] of blocks maps to a
/// PyTorch state dict by name. Defaults: BatchNorm `eps = 1e-3`, `momentum = 0.01` (TF's decay
/// 0.99), as EfficientNet-Lite. Stochastic depth (the package's training-time drop-connect) is
/// not applied.
///
/// An evaluation forward folds each BatchNorm into the convolution before it, as the
/// convolution's epilogue `s·conv + (β − μ·s)` with `s = γ/√(σ²+eps)` (running statistics), and
/// applies ReLU6 there too: three convolutions and no separate normalisation or activation
/// pass, equal to the unfolded chain within f32 rounding. Training is unchanged;
/// [`MbConv::fold_batch_norm`] turns the folding off.
///
/// ```
/// use handgrad::layers::{Layer, MbConv};
/// let mut block = MbConv::new(24, 6, 3, 2);
/// assert_eq!(block.build(&[16, 112, 112], &mut handgrad::init::rng(0))?, vec![24, 56, 56]);
/// assert_eq!(block.describe(), "MbConv(16→96→24, k3, s2)");
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Shapes
/// `x: (N, C, H, W) → (N, cout, ⌈H/s⌉, ⌈W/s⌉)`.
#[derive(Debug)]
pub struct MbConv {
    out_channels: usize,
    expand_ratio: usize,
    kernel: usize,
    stride: usize,
    bn_eps: f32,
    bn_momentum: f32,
    /// `(C, C·e)` once built.
    channels: Option<(usize, usize)>,
    residual: bool,
    chain: Chain,
    /// Fold the BatchNorms into the convolutions in an evaluation forward (default true).
    fold: bool,
    /// The per-sample input shape given to build.
    input_shape: Vec<usize>,
    /// Whether the last forward was a folded evaluation one (the sub-layers hold no caches
    /// of it, so a backward must fail as after any evaluation forward).
    folded_last: bool,
    /// Scratch of the folded convolutions.
    ws: Conv2dWorkspace,
}

impl MbConv {
    /// A block giving `out_channels`, with expansion ratio `expand_ratio` (1: no expand conv),
    /// a `kernel × kernel` depthwise convolution and `stride`.
    pub fn new(out_channels: usize, expand_ratio: usize, kernel: usize, stride: usize) -> Self {
        MbConv {
            out_channels,
            expand_ratio,
            kernel,
            stride,
            bn_eps: 1e-3,
            bn_momentum: 0.01,
            channels: None,
            residual: false,
            chain: Chain::new(),
            fold: true,
            input_shape: Vec::new(),
            folded_last: false,
            ws: Conv2dWorkspace::new(),
        }
    }

    /// Whether an evaluation forward folds each BatchNorm into the convolution before it and
    /// fuses the ReLU6 (default `true`; `false` runs every sub-layer in turn, as in training).
    pub fn fold_batch_norm(mut self, fold: bool) -> Self {
        self.fold = fold;
        self
    }

    /// BatchNorm `eps` and PyTorch `momentum` of the three BNs (default `1e-3`, `0.01`).
    pub fn batch_norm(mut self, eps: f32, momentum: f32) -> Self {
        self.bn_eps = eps;
        self.bn_momentum = momentum;
        self
    }

    /// Whether the block adds its input (stride 1 and `C = cout`); known after build.
    pub fn has_residual(&self) -> bool {
        self.residual
    }

    /// The named sub-layers (after build).
    pub fn sublayers(&self) -> &[(String, Box<dyn Layer>)] {
        self.chain.layers()
    }

    fn bn(&self) -> BatchNorm2d {
        BatchNorm2d::new()
            .eps(self.bn_eps)
            .momentum(self.bn_momentum)
    }
}

impl Layer for MbConv {
    fn seek_examples(&mut self, step: u64, first_row: usize) {
        self.chain.seek_examples(step, first_row);
    }

    fn describe(&self) -> String {
        let (c, ce) = match self.channels {
            Some((c, ce)) => (c.to_string(), ce.to_string()),
            None => ("?".into(), "?".into()),
        };
        let mut s = format!(
            "MbConv({c}→{ce}→{}, k{}, s{}",
            self.out_channels, self.kernel, self.stride
        );
        if self.residual {
            s += ", residual";
        }
        s + ")"
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let &[c, _, _] = input_shape else {
            return Err(Error::shape(
                "MbConv",
                "a per-sample (C, H, W) input",
                input_shape,
            ));
        };
        for (what, v) in [
            ("out_channels", self.out_channels),
            ("expand_ratio", self.expand_ratio),
            ("kernel", self.kernel),
            ("stride", self.stride),
        ] {
            if v == 0 {
                return Err(Error::config("MbConv", what, 0, "at least 1"));
            }
        }
        let ce = c * self.expand_ratio;
        let mut chain = Chain::new();
        if self.expand_ratio != 1 {
            chain.push(
                "_expand_conv",
                Box::new(Conv2d::new(ce, 1).with_bias(false)),
            );
            chain.push("_bn0", Box::new(self.bn()));
            chain.push("_act0", Box::new(Relu6::new()));
        }
        let dw = Conv2d::new(ce, self.kernel)
            .stride(self.stride)
            .groups(ce)
            .padding(Padding::TfSame)
            .with_bias(false);
        chain.push("_depthwise_conv", Box::new(dw));
        chain.push("_bn1", Box::new(self.bn()));
        chain.push("_act1", Box::new(Relu6::new()));
        chain.push(
            "_project_conv",
            Box::new(Conv2d::new(self.out_channels, 1).with_bias(false)),
        );
        chain.push("_bn2", Box::new(self.bn()));
        let out = chain.build(&self.describe(), input_shape, rng)?;
        self.residual = self.stride == 1 && c == self.out_channels;
        self.channels = Some((c, ce));
        self.chain = chain;
        self.input_shape = input_shape.to_vec();
        Ok(out)
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if self.channels.is_none() {
            return Err(not_built("MbConv"));
        }
        self.folded_last = false;
        let folded = self.fold && mode == Mode::Eval && x.ndim() == 4;
        let mut y = if folded && x.shape()[1..] == self.input_shape[..] {
            let y = self.forward_folded(x)?;
            self.folded_last = true;
            y
        } else {
            self.chain.forward(x, mode)?
        };
        if self.residual {
            // y = project(…) + x
            y += x;
        }
        Ok(y)
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        self.backward_owned(dout.clone())
    }

    fn backward_owned(&mut self, dout: Tensor) -> Result<Tensor> {
        if self.folded_last {
            return Err(super::no_cache("MbConv"));
        }
        if !self.residual {
            return self.chain.backward(dout);
        }
        // forward: y = f(x) + x  ⇒  dx = f'(x)ᵀ·dy + dy
        let mut dx = self.chain.backward(dout.clone())?;
        dx += &dout;
        Ok(dx)
    }

    fn backward_params_only(&mut self, dout: &Tensor) -> Result<()> {
        if self.folded_last {
            return Err(super::no_cache("MbConv"));
        }
        self.chain.backward_params_only(dout.clone())
    }

    fn params(&self) -> Vec<(String, &Param)> {
        self.chain.params()
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.chain.params_mut()
    }

    fn buffers(&self) -> Vec<(String, &Tensor)> {
        self.chain.buffers()
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.chain.buffers_mut()
    }
}

/// `(scale, shift)` of a BN's evaluation forward as the epilogue of the convolution before it:
/// `scale = γ·rstd` with `rstd = 1/√(σ² + eps)` (as the BN's evaluation forward computes it),
/// `shift = β − μ·scale`, so `bn(conv(x)) = scale·conv(x) + shift`.
///
/// # Shapes
/// `gamma, beta, mean, var: (O)` → `((O), (O))`.
fn fold_bn(
    o: usize,
    [gamma, beta, mean, var]: [&Tensor; 4],
    eps: f32,
) -> Result<(Vec<f32>, Array1<f32>)> {
    for t in [gamma, beta, mean, var] {
        if t.len() != o {
            return Err(Error::shape(
                "MbConv",
                format!("BatchNorm parameters and statistics of {o} channels"),
                t.shape(),
            ));
        }
    }
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var.iter())
        .map(|(&g, &v)| g * (1.0 / (v as f64 + eps as f64).sqrt()) as f32)
        .collect();
    let shift = Array1::from_iter(
        beta.iter()
            .zip(mean.iter())
            .zip(&scale)
            .map(|((&b, &m), &s)| b - m * s),
    );
    Ok((scale, shift))
}

impl MbConv {
    /// The evaluation forward with every BatchNorm folded into its convolution and ReLU6
    /// applied inside the convolution (see the type's docs); `x` matches the built shape.
    fn forward_folded(&mut self, x: &Tensor) -> Result<Tensor> {
        let (c, ce) = self.channels.ok_or_else(|| not_built("MbConv"))?;
        let (h, w) = (self.input_shape[1], self.input_shape[2]);
        let named: std::collections::BTreeMap<String, &Tensor> = self
            .chain
            .params()
            .into_iter()
            .map(|(k, p)| (k, &p.value))
            .chain(self.chain.buffers())
            .collect();
        let get = |k: &str| {
            named.get(k).copied().ok_or_else(|| Error::Param {
                name: k.to_string(),
                message: "missing from the MbConv block".into(),
            })
        };
        // (weight, BN scale, BN shift) of `conv → bn`
        let folded = |conv: &str, bn: &str, o: usize| {
            let stats = ["weight", "bias", "running_mean", "running_var"]
                .map(|leaf| get(&format!("{bn}.{leaf}")));
            let [g, b, m, v] = stats;
            let w = get(&format!("{conv}.weight"))?;
            let w = w.view().into_dimensionality::<Ix4>().map_err(|_| {
                Error::shape("MbConv", "a convolution weight (O, C, kh, kw)", w.shape())
            })?;
            let (scale, shift) = fold_bn(o, [g?, b?, m?, v?], self.bn_eps)?;
            Ok::<_, Error>((w, scale, shift))
        };
        let relu6 = Some((0.0, 6.0));
        let ws = &mut self.ws;
        let x4 = x
            .view()
            .into_dimensionality::<Ix4>()
            .expect("rank 4 (checked)");
        // h1 = relu6(bn0(expand(x)))
        let h1 = if self.expand_ratio != 1 {
            let (wt, scale, shift) = folded("_expand_conv", "_bn0", ce)?;
            let g = Conv2dGeom::new(c, h, w, ce, 1, 1);
            let epi = Epilogue {
                scale: Some(&scale),
                clamp: relu6,
            };
            Some(conv2d_forward_fused(
                x4,
                wt,
                Some(shift.view()),
                &g,
                ws,
                epi,
            ))
        } else {
            None
        };
        let h1v = h1.as_ref().map_or(x4.view(), |a| a.view());
        // h2 = relu6(bn1(depthwise(h1)))
        let (wt, scale, shift) = folded("_depthwise_conv", "_bn1", ce)?;
        let g = Conv2dGeom::new(ce, h, w, ce, self.kernel, self.kernel)
            .with_stride(self.stride, self.stride)
            .with_groups(ce)
            .with_tf_same_padding();
        let (oh, ow) = g.out_hw();
        let epi = Epilogue {
            scale: Some(&scale),
            clamp: relu6,
        };
        let h2 = conv2d_forward_fused(h1v, wt, Some(shift.view()), &g, ws, epi);
        drop(h1);
        // y = bn2(project(h2))
        let (wt, scale, shift) = folded("_project_conv", "_bn2", self.out_channels)?;
        let g = Conv2dGeom::new(ce, oh, ow, self.out_channels, 1, 1);
        let epi = Epilogue {
            scale: Some(&scale),
            clamp: None,
        };
        let y = conv2d_forward_fused(h2.view(), wt, Some(shift.view()), &g, ws, epi);
        Ok(y.into_dyn())
    }
}
