//! [`MbConv`]: the inverted-residual block of MobileNetV2 / EfficientNet-Lite.

use super::residual::Chain;
use super::{not_built, BatchNorm2d, Conv2d, Layer, Mode, Padding, Relu6};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::param::Param;
use crate::tensor::Tensor;

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
        }
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
        Ok(out)
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if self.channels.is_none() {
            return Err(not_built("MbConv"));
        }
        let mut y = self.chain.forward(x, mode)?;
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
        if !self.residual {
            return self.chain.backward(dout);
        }
        // forward: y = f(x) + x  ⇒  dx = f'(x)ᵀ·dy + dy
        let mut dx = self.chain.backward(dout.clone())?;
        dx += &dout;
        Ok(dx)
    }

    fn backward_params_only(&mut self, dout: &Tensor) -> Result<()> {
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
