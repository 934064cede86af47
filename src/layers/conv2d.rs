//! `Conv2d`: 2-D convolution over NCHW images (PyTorch `nn.Conv2d`, Keras `Conv2D`).

use super::{no_cache, not_built, Fusable, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::{pytorch_default, Rng};
use crate::ops::conv2d::{
    conv2d_backward, conv2d_forward, conv2d_relu_pool_backward, conv2d_relu_pool_forward,
    supports_relu_pool, tf_same_pads, Conv2dGeom, Conv2dWorkspace,
};
use crate::param::Param;
use crate::tensor::{expect_nchw, Tensor};
use ndarray::{Array4, ArrayView4, Ix1, Ix4};
use rayon::prelude::*;

/// Zero padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding (Keras `"valid"`, PyTorch `padding=0`).
    #[default]
    Valid,
    /// The output has the input's size (Keras / PyTorch `"same"`): a total of `d·(k − 1)` zeros
    /// per axis, half before and the rest after (so an even kernel pads one more at the
    /// bottom/right, as both frameworks do). Needs stride 1, as in PyTorch.
    Same,
    /// Explicit `(top and bottom, left and right)` padding.
    Explicit(usize, usize),
    /// Explicit padding that may differ on each side (e.g. what `F.pad(x, (l, r, t, b))` before
    /// an unpadded PyTorch convolution gives).
    Asymmetric {
        /// Zero rows above.
        top: usize,
        /// Zero rows below.
        bottom: usize,
        /// Zero columns on the left.
        left: usize,
        /// Zero columns on the right.
        right: usize,
    },
    /// TensorFlow `"SAME"` (EfficientNet, MobileNet; timm's `Conv2dSame`): the output has
    /// `⌈n/s⌉` rows/columns for an input of `n`, any stride, and the padding is computed from
    /// the actual input size, `total = max((⌈n/s⌉ − 1)·s + d·(k − 1) + 1 − n, 0)`, `⌊total/2⌋`
    /// before and the rest after (the odd extra row/column goes to the bottom/right).
    TfSame,
}

/// A 2-D convolution (cross-correlation) over NCHW images, PyTorch `nn.Conv2d` semantics.
///
/// The weight has layout `[O, C/G, kh, kw]` (`G` = [`Conv2d::groups`], default 1) and the parameters are named `weight` and `bias`. The
/// input channels `C` are inferred at [`Layer::build`] from the per-sample shape `(C, H, W)`.
/// Initialisation is PyTorch's default, `U(-1/√(C·kh·kw), 1/√(C·kh·kw))` for weight and bias.
/// Defaults: stride 1, [`Padding::Valid`], dilation 1, groups 1, with bias. With
/// [`Padding::TfSame`] the padding is computed from the input size given at build.
///
/// The layer keeps its scratch buffers ([`Conv2dWorkspace`]) and the buffer of its cached input
/// across calls, so a training loop does not reallocate them.
///
/// ```
/// use handgrad::layers::{Conv2d, Layer, Padding};
/// let mut conv = Conv2d::new(16, 3).padding(Padding::Same);
/// let out = conv.build(&[3, 32, 32], &mut handgrad::init::rng(0))?;
/// assert_eq!(out, vec![16, 32, 32]);
/// assert_eq!(conv.describe(), "Conv2d(3→16, 3x3, stride 1, pad same)");
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Shapes
/// `x: (N, C, H, W) → (N, O, OH, OW)` with `OH = ⌊(H + pt + pb − dh·(kh − 1) − 1)/sh⌋ + 1` (and
/// likewise `OW`); `OH = ⌈H/sh⌉` with [`Padding::TfSame`].
#[derive(Debug, Clone)]
pub struct Conv2d {
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    dilation: (usize, usize),
    groups: usize,
    use_bias: bool,
    geom: Option<Conv2dGeom>,
    weight: Option<Param>,
    bias: Option<Param>,
    /// The input of the last training forward, `(N, C, H, W)`; its buffer is reused.
    cache: Option<Array4<f32>>,
    /// Scratch buffers of the kernel, reused across calls.
    ws: Conv2dWorkspace,
    /// Whether the last training forward ran fused with a ReLU and a 2×2 max pool.
    fused: bool,
    /// The argmax codes of that fused forward, `(N, O, OH/2, OW/2)`; the buffer is reused.
    codes: Vec<u8>,
}

impl Conv2d {
    /// `out_channels` filters of `kernel × kernel`; stride 1, no padding, dilation 1, with bias.
    pub fn new(out_channels: usize, kernel: usize) -> Self {
        Conv2d {
            out_channels,
            kernel: (kernel, kernel),
            stride: (1, 1),
            padding: Padding::Valid,
            dilation: (1, 1),
            groups: 1,
            use_bias: true,
            geom: None,
            weight: None,
            bias: None,
            cache: None,
            ws: Conv2dWorkspace::new(),
            fused: false,
            codes: Vec::new(),
        }
    }

    /// A rectangular `kh × kw` kernel.
    pub fn kernel(mut self, kh: usize, kw: usize) -> Self {
        self.kernel = (kh, kw);
        self
    }

    /// The same stride on both axes (default 1).
    pub fn stride(self, s: usize) -> Self {
        self.stride_hw(s, s)
    }

    /// Vertical and horizontal strides.
    pub fn stride_hw(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }

    /// The padding mode (default [`Padding::Valid`]).
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Shorthand for `.padding(Padding::Explicit(p, p))`.
    pub fn pad(self, p: usize) -> Self {
        self.padding(Padding::Explicit(p, p))
    }

    /// The same dilation on both axes (default 1).
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }

    /// Channel groups `G` (PyTorch `groups`, default 1): input channels `[g·C/G, (g+1)·C/G)` feed
    /// only output channels `[g·O/G, (g+1)·O/G)`, the weight is `[O, C/G, kh, kw]`. `G = C = O`
    /// is a depthwise convolution (a dedicated direct kernel). `G` must divide `C` and `O`
    /// (checked at build).
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Whether the layer has a bias (default `true`).
    pub fn with_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// A layer with existing weights `[O, C/G, kh, kw]` (e.g. from PyTorch) and an optional bias
    /// `[O]`. Stride, padding, dilation and groups can still be set with the builder methods;
    /// `build` checks that the input has `C` channels.
    ///
    /// # Errors
    /// [`Error::Shape`] for a weight that is not rank 4 (or has a zero-sized axis) or a bias
    /// whose length is not `O`.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (o, kh, kw) = match *weight.shape() {
            [o, c, kh, kw] if o > 0 && c > 0 && kh > 0 && kw > 0 => (o, kh, kw),
            _ => {
                return Err(Error::shape(
                    "Conv2d::from_weights",
                    "a rank-4 [O, C, kh, kw] weight with non-zero sizes",
                    weight.shape(),
                ))
            }
        };
        if let Some(b) = &bias
            && b.shape() != [o]
        {
            return Err(Error::shape(
                "Conv2d::from_weights",
                format!(
                    "a bias of shape [{o}] to match the weight {:?}",
                    weight.shape()
                ),
                b.shape(),
            ));
        }
        let mut layer = Conv2d::new(o, kh).kernel(kh, kw).with_bias(bias.is_some());
        layer.weight = Some(Param::new(weight));
        layer.bias = bias.map(Param::new);
        Ok(layer)
    }

    /// The number of output channels `O`.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The weight `[O, C, kh, kw]`, once built (or from [`Conv2d::from_weights`]).
    pub fn weight(&self) -> Option<&Param> {
        self.weight.as_ref()
    }

    /// The bias `[O]`, once built (and when enabled).
    pub fn bias(&self) -> Option<&Param> {
        self.bias.as_ref()
    }

    /// The geometry (input and output sizes, stride, padding, dilation), once built.
    pub fn geometry(&self) -> Option<Conv2dGeom> {
        self.geom
    }

    fn name(&self) -> String {
        let cin = match (&self.geom, &self.weight) {
            (Some(g), _) => g.c.to_string(),
            (None, Some(w)) => w.shape()[1].to_string(),
            _ => "?".into(),
        };
        let pair = |(a, b): (usize, usize)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}x{b}")
            }
        };
        let pad = match self.padding {
            Padding::Valid => "0".to_string(),
            Padding::Same => "same".to_string(),
            Padding::TfSame => "tf-same".to_string(),
            Padding::Explicit(ph, pw) => pair((ph, pw)),
            Padding::Asymmetric {
                top,
                bottom,
                left,
                right,
            } => format!("t{top} b{bottom} l{left} r{right}"),
        };
        let mut s = format!(
            "Conv2d({cin}→{}, {}x{}, stride {}, pad {pad}",
            self.out_channels,
            self.kernel.0,
            self.kernel.1,
            pair(self.stride),
        );
        if self.dilation != (1, 1) {
            s += &format!(", dilation {}", pair(self.dilation));
        }
        if self.groups != 1 {
            s += &format!(", groups {}", self.groups);
        }
        if !self.use_bias {
            s += ", no bias";
        }
        s + ")"
    }

    /// `((top, bottom), (left, right))` zero padding for an `h × w` input.
    fn pads(&self, h: usize, w: usize) -> ((usize, usize), (usize, usize)) {
        let same = |k: usize, d: usize| {
            let total = d * k.saturating_sub(1);
            (total / 2, total - total / 2)
        };
        match self.padding {
            Padding::Valid => ((0, 0), (0, 0)),
            Padding::Explicit(ph, pw) => ((ph, ph), (pw, pw)),
            Padding::Asymmetric {
                top,
                bottom,
                left,
                right,
            } => ((top, bottom), (left, right)),
            Padding::TfSame => (
                tf_same_pads(h, self.kernel.0, self.stride.0, self.dilation.0),
                tf_same_pads(w, self.kernel.1, self.stride.1, self.dilation.1),
            ),
            Padding::Same => (
                same(self.kernel.0, self.dilation.0),
                same(self.kernel.1, self.dilation.1),
            ),
        }
    }

    /// Checks a batch against the built geometry: `(N, C, H, W)`, with hints for NHWC input and
    /// for a single image without the batch axis.
    /// Checks the weight `[O, C/groups, kh, kw]` and bias `[O]` against the geometry (a user
    /// may have replaced them through `params_mut()`).
    fn check_params(&self, g: &Conv2dGeom) -> Result<()> {
        let w = self
            .weight
            .as_ref()
            .ok_or_else(|| not_built(&self.name()))?;
        w.check(&[g.o, g.c / self.groups, g.kh, g.kw], || {
            format!("{}.weight", self.name())
        })?;
        if let Some(b) = &self.bias {
            b.check(&[g.o], || format!("{}.bias", self.name()))?;
        }
        Ok(())
    }

    fn check_input(&self, x: &Tensor, g: &Conv2dGeom) -> Result<()> {
        if x.shape() == [g.c, g.h, g.w] {
            return Err(Error::shape(
                self.name(),
                format!(
                    "an NCHW input (N, {}, {}, {}); this is one (C, H, W) image: add the batch \
                     axis, e.g. x.insert_axis(Axis(0))",
                    g.c, g.h, g.w
                ),
                x.shape(),
            ));
        }
        expect_nchw(x, &self.name(), [g.c, g.h, g.w])
    }

    /// The backward pass; `dx` only when `want_dx`.
    fn backward_impl(&mut self, dout: &Tensor, want_dx: bool) -> Result<Option<Array4<f32>>> {
        let name = self.name();
        let g = self.geom.ok_or_else(|| not_built(&name))?;
        self.check_params(&g)?;
        let x = self.cache.as_ref().ok_or_else(|| no_cache(&name))?;
        let (oh, ow) = g.out_hw();
        let n = x.dim().0;
        // after a fused forward, dout is the gradient of the pooled output
        let (oh, ow, what) = match self.fused {
            true => (oh / 2, ow / 2, "the last fused ReLU + max-pool output"),
            false => (oh, ow, "the last output"),
        };
        if dout.shape() != [n, g.o, oh, ow] {
            return Err(Error::shape(
                format!("{name} backward"),
                format!(
                    "dout shaped like {what} (N, O, OH, OW) = [{n}, {}, {oh}, {ow}]",
                    g.o
                ),
                dout.shape(),
            ));
        }
        let w = self.weight.as_mut().ok_or_else(|| not_built(&name))?;
        let dout = dout.view().into_dimensionality::<Ix4>().expect("checked");
        let w_value = w
            .value
            .view()
            .into_dimensionality::<Ix4>()
            .expect("[O, C, kh, kw]");
        let dw = w
            .grad
            .view_mut()
            .into_dimensionality::<Ix4>()
            .expect("[O, C, kh, kw]");
        let dbias = self
            .bias
            .as_mut()
            .map(|b| b.grad.view_mut().into_dimensionality::<Ix1>().expect("[O]"));
        if self.fused {
            let (codes, ws) = (&self.codes, &mut self.ws);
            return Ok(conv2d_relu_pool_backward(
                dout,
                codes,
                x.view(),
                w_value,
                &g,
                ws,
                dw,
                dbias,
                want_dx,
            ));
        }
        Ok(conv2d_backward(
            dout,
            x.view(),
            w_value,
            &g,
            &mut self.ws,
            dw,
            dbias,
            want_dx,
        ))
    }

    /// The unfused forward of a borrowed or owned input.
    fn forward_cow(&mut self, x: std::borrow::Cow<'_, Tensor>, mode: Mode) -> Result<Tensor> {
        let g = self.prepare_forward(&x)?;
        let w = self
            .weight
            .as_ref()
            .ok_or_else(|| not_built(&self.name()))?;
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
            &mut self.ws,
        );
        self.keep_input(x, mode, false);
        Ok(out.into_dyn())
    }

    /// The checks of a forward; returns the geometry.
    fn prepare_forward(&mut self, x: &Tensor) -> Result<Conv2dGeom> {
        if self.geom.is_none() && self.weight.is_some() && x.ndim() == 4 {
            // a layer from `Conv2d::from_weights` used on its own: its geometry comes from the
            // first input (the weights exist, so the generator is never drawn from)
            self.build(&x.shape()[1..], &mut crate::init::rng(0))?;
        }
        let g = self.geom.ok_or_else(|| not_built(&self.name()))?;
        self.check_params(&g)?;
        self.check_input(x, &g)?;
        Ok(g)
    }

    /// Keeps the input of a training forward (moved when owned, else copied into the reused
    /// buffer), or drops the cache in evaluation mode.
    fn keep_input(&mut self, x: std::borrow::Cow<'_, Tensor>, mode: Mode, fused: bool) {
        self.fused = fused && mode == Mode::Train;
        match (mode, x) {
            (Mode::Eval, _) => self.cache = None,
            (Mode::Train, std::borrow::Cow::Owned(x)) if x.is_standard_layout() => {
                self.cache = Some(x.into_dimensionality::<Ix4>().expect("checked NCHW"));
            }
            (Mode::Train, x) => {
                let x = x.view().into_dimensionality::<Ix4>().expect("checked NCHW");
                store_input(&mut self.cache, x);
            }
        }
    }
}

/// Copies `x` into the cache, reusing the cached buffer when the shape matches.
fn store_input(cache: &mut Option<Array4<f32>>, x: ArrayView4<f32>) {
    match cache {
        Some(c) if c.dim() == x.dim() => match (c.as_slice_mut(), x.as_slice()) {
            (Some(dst), Some(src)) => dst
                .par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s)),
            _ => c.assign(&x),
        },
        _ => *cache = Some(x.as_standard_layout().into_owned()),
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
                "a per-sample (C, H, W) input (NCHW without the batch axis)",
                input_shape,
            ));
        };
        for (what, v) in [
            ("out_channels", self.out_channels),
            ("kernel size", self.kernel.0.min(self.kernel.1)),
            ("stride", self.stride.0.min(self.stride.1)),
            ("dilation", self.dilation.0.min(self.dilation.1)),
            ("groups", self.groups),
        ] {
            if v == 0 {
                return Err(Error::config(name, what, 0, "at least 1"));
            }
        }
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                name,
                "a per-sample (C, H, W) input with non-zero sizes",
                input_shape,
            ));
        }
        if !c.is_multiple_of(self.groups) || !self.out_channels.is_multiple_of(self.groups) {
            return Err(Error::config(
                name,
                "groups",
                self.groups,
                format!(
                    "a divisor of both the input channels ({c}) and out_channels ({})",
                    self.out_channels
                ),
            ));
        }
        if self.padding == Padding::Same && self.stride != (1, 1) {
            return Err(Error::config(
                name,
                "padding",
                format!("\"same\" with stride {}x{}", self.stride.0, self.stride.1),
                "stride 1 with \"same\" padding (as PyTorch); use Padding::TfSame (TensorFlow \
                 \"SAME\") or Padding::Explicit for strided convolutions",
            ));
        }
        if let Some(wt) = &self.weight {
            let want = [
                self.out_channels,
                wt.shape()[1],
                self.kernel.0,
                self.kernel.1,
            ];
            if wt.shape() != want {
                return Err(Error::config(
                    name,
                    "kernel",
                    format!(
                        "{}x{} with {} outputs",
                        self.kernel.0, self.kernel.1, self.out_channels
                    ),
                    format!("the kernel of the given weight {:?}", wt.shape()),
                ));
            }
            if wt.shape()[1] * self.groups != c {
                return Err(Error::shape(
                    name,
                    format!(
                        "per-sample inputs (C, H, W) with {} channels (the weight's {:?} with \
                         {} group(s))",
                        wt.shape()[1] * self.groups,
                        wt.shape(),
                        self.groups
                    ),
                    input_shape,
                ));
            }
        }
        let (rows, cols) = self.pads(h, w);
        let g = Conv2dGeom::new(c, h, w, self.out_channels, self.kernel.0, self.kernel.1)
            .with_stride(self.stride.0, self.stride.1)
            .with_padding_asym(rows, cols)
            .with_dilation(self.dilation.0, self.dilation.1)
            .with_groups(self.groups);
        let Some((oh, ow)) = g.try_out_hw() else {
            return Err(Error::shape(
                name,
                format!(
                    "an input of at least {}x{} after padding (the {}x{} kernel{}), but the \
                     padded input is {}x{}",
                    self.dilation.0 * (self.kernel.0 - 1) + 1,
                    self.dilation.1 * (self.kernel.1 - 1) + 1,
                    self.kernel.0,
                    self.kernel.1,
                    if self.dilation == (1, 1) {
                        String::new()
                    } else {
                        format!(" dilated by {}x{}", self.dilation.0, self.dilation.1)
                    },
                    h + rows.0 + rows.1,
                    w + cols.0 + cols.1,
                ),
                input_shape,
            ));
        };
        let fan_in = g.k_len();
        if self.weight.is_none() {
            let shape = [g.o, c / self.groups, g.kh, g.kw];
            self.weight = Some(Param::new(pytorch_default(&shape, fan_in, rng)));
        }
        if !self.use_bias {
            self.bias = None;
        } else if self.bias.is_none() {
            self.bias = Some(Param::new(pytorch_default(&[g.o], fan_in, rng)));
        }
        self.geom = Some(g);
        self.cache = None;
        self.fused = false;
        Ok(vec![self.out_channels, oh, ow])
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_cow(std::borrow::Cow::Borrowed(x), mode)
    }

    fn forward_owned(&mut self, x: Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_cow(std::borrow::Cow::Owned(x), mode)
    }

    /// A dense stride-1 convolution runs a following `ReLU → MaxPool2d(2)` in its own pass
    /// ([`crate::ops::conv2d::conv2d_relu_pool_forward`]).
    fn fuses(&self, tail: &[Fusable]) -> usize {
        let pair = tail.starts_with(&[Fusable::Relu, Fusable::MaxPool2x2]);
        if pair && self.geom.is_some_and(|g| supports_relu_pool(&g)) {
            2
        } else {
            0
        }
    }

    fn forward_fused(
        &mut self,
        x: std::borrow::Cow<'_, Tensor>,
        mode: Mode,
        tail: &[Fusable],
    ) -> Result<Tensor> {
        if tail.is_empty() {
            return self.forward_cow(x, mode);
        }
        if self.fuses(tail) != tail.len() {
            return Err(Error::State(format!(
                "{}: cannot fuse the following layers {tail:?}; it fuses [Relu, MaxPool2x2] \
                 after a stride-1 convolution without groups",
                self.name()
            )));
        }
        let g = self.prepare_forward(&x)?;
        let w = self
            .weight
            .as_ref()
            .ok_or_else(|| not_built(&self.name()))?;
        let codes = (mode == Mode::Train).then_some(&mut self.codes);
        let out = conv2d_relu_pool_forward(
            x.view().into_dimensionality::<Ix4>().expect("checked NCHW"),
            w.value
                .view()
                .into_dimensionality::<Ix4>()
                .expect("[O, C, kh, kw]"),
            self.bias
                .as_ref()
                .map(|b| b.value.view().into_dimensionality::<Ix1>().expect("[O]")),
            &g,
            &mut self.ws,
            codes,
        );
        self.keep_input(x, mode, true);
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
        super::weight_bias(&self.weight, &self.bias)
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        super::weight_bias_mut(&mut self.weight, &mut self.bias)
    }
}
