//! `Conv2d`: 2-D convolution over NCHW images (PyTorch `nn.Conv2d`, Keras `Conv2D`).

use super::{no_cache, not_built, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::{pytorch_default, Rng};
use crate::ops::conv2d::{conv2d_backward, conv2d_forward, conv_out_len, Conv2dGeom};
use crate::param::Param;
use crate::tensor::{expect_nchw, Tensor};
use ndarray::{Ix1, Ix4};

/// Zero padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding (Keras `"valid"`, PyTorch `padding=0`).
    #[default]
    Valid,
    /// Output size = input size at stride 1 (Keras / PyTorch `"same"`); needs stride 1 and an
    /// even total padding `d·(k − 1)` (odd kernels).
    Same,
    /// Explicit `(top/bottom, left/right)` padding.
    Explicit(usize, usize),
}

/// A 2-D convolution: weight `[O, C, kh, kw]` (names `weight`, `bias`), in-channels `C` inferred
/// at build. PyTorch default initialisation `U(-1/√(C·kh·kw), 1/√(C·kh·kw))` for weight and bias.
///
/// # Shapes
/// `x: (N, C, H, W) → (N, O, OH, OW)`, `OH = ⌊(H + 2p − d(kh − 1) − 1)/s⌋ + 1`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    dilation: (usize, usize),
    use_bias: bool,
    geom: Option<Conv2dGeom>,
    weight: Option<Param>,
    bias: Option<Param>,
    /// The input of the last training forward.
    cache: Option<Tensor>,
}

impl Conv2d {
    /// `out_channels` filters of `kernel × kernel`, stride 1, no padding, dilation 1, with bias.
    pub fn new(out_channels: usize, kernel: usize) -> Self {
        Conv2d {
            out_channels,
            kernel: (kernel, kernel),
            stride: (1, 1),
            padding: Padding::Valid,
            dilation: (1, 1),
            use_bias: true,
            geom: None,
            weight: None,
            bias: None,
            cache: None,
        }
    }

    /// A rectangular `kh × kw` kernel.
    pub fn kernel(mut self, kh: usize, kw: usize) -> Self {
        self.kernel = (kh, kw);
        self
    }
    /// The same stride on both axes (default 1).
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// Different vertical and horizontal strides.
    pub fn stride_hw(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }
    /// The padding mode (default [`Padding::Valid`]).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
    /// Shorthand for `Padding::Explicit(p, p)`.
    pub fn pad(self, p: usize) -> Self {
        self.padding(Padding::Explicit(p, p))
    }
    /// The same dilation on both axes (default 1).
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// Whether the layer has a bias (default `true`).
    pub fn with_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// A layer with existing weights `[O, C, kh, kw]` and optional bias `[O]` (e.g. from PyTorch);
    /// stride, padding and dilation can still be set, and `build` checks the input channels.
    ///
    /// # Errors
    /// [`Error::Shape`] for a weight that is not rank 4 or a bias of the wrong length.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let &[o, _, kh, kw] = weight.shape() else {
            return Err(Error::shape(
                "Conv2d::from_weights",
                "a rank-4 [O, C, kh, kw] weight",
                weight.shape(),
            ));
        };
        if let Some(b) = &bias {
            if b.shape() != [o] {
                return Err(Error::shape(
                    "Conv2d::from_weights",
                    format!("a bias of shape [{o}]"),
                    b.shape(),
                ));
            }
        }
        let mut layer = Conv2d::new(o, kh).kernel(kh, kw).with_bias(bias.is_some());
        layer.weight = Some(Param::new(weight));
        layer.bias = bias.map(Param::new);
        Ok(layer)
    }

    fn name(&self) -> String {
        let cin = self
            .geom
            .map(|g| g.c.to_string())
            .unwrap_or_else(|| "?".into());
        let (ph, pw) = self.pads();
        format!(
            "Conv2d({cin}→{}, {}x{}, stride {}, pad {})",
            self.out_channels,
            self.kernel.0,
            self.kernel.1,
            if self.stride.0 == self.stride.1 {
                self.stride.0.to_string()
            } else {
                format!("{}x{}", self.stride.0, self.stride.1)
            },
            if ph == pw {
                ph.to_string()
            } else {
                format!("{ph}x{pw}")
            },
        ) + &if self.dilation != (1, 1) {
            format!(", dilation {}", self.dilation.0)
        } else {
            String::new()
        }
    }

    fn pads(&self) -> (usize, usize) {
        match self.padding {
            Padding::Valid => (0, 0),
            Padding::Explicit(ph, pw) => (ph, pw),
            Padding::Same => (
                self.dilation.0 * (self.kernel.0.max(1) - 1) / 2,
                self.dilation.1 * (self.kernel.1.max(1) - 1) / 2,
            ),
        }
    }
}

impl Layer for Conv2d {
    fn describe(&self) -> String {
        self.name()
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let name = self.name();
        let &[c, h, w] = input_shape else {
            return Err(Error::shape(
                name,
                "a per-sample (C, H, W) input (NCHW without the batch)",
                input_shape,
            ));
        };
        for (what, v) in [
            ("out_channels", self.out_channels),
            ("kernel size", self.kernel.0.min(self.kernel.1)),
            ("stride", self.stride.0.min(self.stride.1)),
            ("dilation", self.dilation.0.min(self.dilation.1)),
        ] {
            if v == 0 {
                return Err(Error::config("Conv2d", what, 0, "at least 1"));
            }
        }
        if self.padding == Padding::Same {
            if self.stride != (1, 1) {
                return Err(Error::config(
                    "Conv2d",
                    "padding",
                    format!("\"same\" with stride {:?}", self.stride),
                    "stride 1 with \"same\" padding (as PyTorch)",
                ));
            }
            if (self.dilation.0 * (self.kernel.0 - 1)) % 2 == 1
                || (self.dilation.1 * (self.kernel.1 - 1)) % 2 == 1
            {
                return Err(Error::config(
                    "Conv2d",
                    "padding",
                    format!("\"same\" with a {}x{} kernel", self.kernel.0, self.kernel.1),
                    "an odd kernel size (symmetric padding) with \"same\"",
                ));
            }
        }
        if let Some(wt) = &self.weight {
            if wt.shape()[1] != c {
                return Err(Error::shape(
                    name,
                    format!(
                        "per-sample inputs with {} channels (the weight's)",
                        wt.shape()[1]
                    ),
                    input_shape,
                ));
            }
        }
        let (ph, pw) = self.pads();
        let (oh, ow) = match (
            conv_out_len(h, self.kernel.0, self.stride.0, ph, self.dilation.0),
            conv_out_len(w, self.kernel.1, self.stride.1, pw, self.dilation.1),
        ) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(Error::shape(
                    name,
                    format!(
                    "an input of at least {}x{} (the dilated {}x{} kernel) after padding {ph}x{pw}",
                    self.dilation.0 * (self.kernel.0 - 1) + 1,
                    self.dilation.1 * (self.kernel.1 - 1) + 1,
                    self.kernel.0,
                    self.kernel.1
                ),
                    input_shape,
                ))
            }
        };
        let g = Conv2dGeom {
            c,
            h,
            w,
            o: self.out_channels,
            kh: self.kernel.0,
            kw: self.kernel.1,
            sh: self.stride.0,
            sw: self.stride.1,
            ph,
            pw,
            dh: self.dilation.0,
            dw: self.dilation.1,
        };
        if self.weight.is_none() {
            let fan_in = g.k_len();
            self.weight = Some(Param::new(pytorch_default(
                &[g.o, c, g.kh, g.kw],
                fan_in,
                rng,
            )));
            self.bias = self
                .use_bias
                .then(|| Param::new(pytorch_default(&[g.o], fan_in, rng)));
        }
        self.geom = Some(g);
        Ok(vec![self.out_channels, oh, ow])
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let g = self.geom.ok_or_else(|| not_built(&self.name()))?;
        expect_nchw(x, &self.name(), [g.c, g.h, g.w])?;
        let w = self.weight.as_ref().expect("built");
        let out = conv2d_forward(
            x.view().into_dimensionality::<Ix4>().expect("checked NCHW"),
            w.value
                .view()
                .into_dimensionality::<Ix4>()
                .expect("[O, C, kh, kw]"),
            self.bias
                .as_ref()
                .map(|b| b.value.view().into_dimensionality::<Ix1>().expect("[O]")),
            &g,
        );
        self.cache = (mode == Mode::Train).then(|| x.clone());
        Ok(out.into_dyn())
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        Ok(self
            .backward_impl(dout, true)?
            .expect("dx requested")
            .into_dyn())
    }

    fn backward_params_only(&mut self, dout: &Tensor) -> Result<()> {
        self.backward_impl(dout, false).map(|_| ())
    }

    fn params(&self) -> Vec<(String, &Param)> {
        let mut v: Vec<(String, &Param)> = self
            .weight
            .iter()
            .map(|w| ("weight".to_string(), w))
            .collect();
        v.extend(self.bias.iter().map(|b| ("bias".to_string(), b)));
        v
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v: Vec<(String, &mut Param)> = self
            .weight
            .iter_mut()
            .map(|w| ("weight".to_string(), w))
            .collect();
        v.extend(self.bias.iter_mut().map(|b| ("bias".to_string(), b)));
        v
    }
}

impl Conv2d {
    /// The backward pass; `dx` only when `want_dx`.
    fn backward_impl(
        &mut self,
        dout: &Tensor,
        want_dx: bool,
    ) -> Result<Option<ndarray::Array4<f32>>> {
        let name = self.name();
        let x = self.cache.as_ref().ok_or_else(|| no_cache(&name))?;
        let g = self.geom.expect("cached forward implies built");
        let (oh, ow) = g.out_hw();
        let n = x.shape()[0];
        if dout.shape() != [n, g.o, oh, ow] {
            return Err(Error::shape(
                format!("{name} backward"),
                format!("dout of shape [{n}, {}, {oh}, {ow}]", g.o),
                dout.shape(),
            ));
        }
        let w = self.weight.as_mut().expect("built");
        let dx = conv2d_backward(
            dout.view().into_dimensionality::<Ix4>().expect("checked"),
            x.view().into_dimensionality::<Ix4>().expect("checked"),
            w.value
                .view()
                .into_dimensionality::<Ix4>()
                .expect("[O, C, kh, kw]"),
            &g,
            w.grad
                .view_mut()
                .into_dimensionality::<Ix4>()
                .expect("[O, C, kh, kw]"),
            self.bias
                .as_mut()
                .map(|b| b.grad.view_mut().into_dimensionality::<Ix1>().expect("[O]")),
            want_dx,
        );
        Ok(dx)
    }
}
