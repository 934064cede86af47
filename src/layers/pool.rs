//! Pooling layers over NCHW images: [`MaxPool2d`] and [`AvgPool2d`] (PyTorch semantics).
//!
//! Both take per-sample `(C, H, W)` inputs and share one configuration: a `k×k` (or `kh×kw`)
//! window, a stride defaulting to the kernel, padding up to half the kernel (PyTorch's rule), and
//! floor or ceil rounding of the output size (see [`crate::ops::pool`] for the formulas).
//! Neither has parameters. Configuration errors surface in [`Layer::build`] (or in the first
//! forward of an unbuilt layer) as [`Error::Config`] / [`Error::Shape`] naming the sizes.

use super::{no_cache, Fusable, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::pool::{
    avg_pool2d_backward_into, avg_pool2d_forward_into, max_pool2d_backward_into,
    max_pool2d_forward_into, pool_output_len, PoolGeometry,
};
use crate::tensor::Tensor;
use ndarray::{Array4, ArrayView4, ArrayViewD, Ix4};

/// `a` for a square pair, `axb` otherwise.
fn pair(p: (usize, usize)) -> String {
    if p.0 == p.1 {
        p.0.to_string()
    } else {
        format!("{}x{}", p.0, p.1)
    }
}

/// The configuration shared by both pooling layers, and the per-sample input shape once built.
#[derive(Debug, Clone)]
struct PoolSpec {
    kind: &'static str,
    kernel: (usize, usize),
    /// `None`: stride = kernel (PyTorch's default).
    stride: Option<(usize, usize)>,
    padding: (usize, usize),
    ceil_mode: bool,
    /// Average pooling only: whether padding counts in the divisor.
    count_include_pad: Option<bool>,
    /// The per-sample `(C, H, W)` given to `build`.
    input: Option<[usize; 3]>,
}

impl PoolSpec {
    fn new(kind: &'static str, k: usize, count_include_pad: Option<bool>) -> Self {
        PoolSpec {
            kind,
            kernel: (k, k),
            stride: None,
            padding: (0, 0),
            ceil_mode: false,
            count_include_pad,
            input: None,
        }
    }

    fn geometry(&self) -> PoolGeometry {
        PoolGeometry {
            kernel: self.kernel,
            stride: self.stride.unwrap_or(self.kernel),
            padding: self.padding,
            ceil_mode: self.ceil_mode,
        }
    }

    fn describe(&self) -> String {
        let g = self.geometry();
        let mut s = format!(
            "{}({}x{}, stride {}",
            self.kind,
            g.kernel.0,
            g.kernel.1,
            pair(g.stride)
        );
        if g.padding != (0, 0) {
            s += &format!(", padding {}", pair(g.padding));
        }
        if g.ceil_mode {
            s += ", ceil_mode";
        }
        if self.count_include_pad == Some(false) {
            s += ", count_include_pad=false";
        }
        s + ")"
    }

    /// Checks the configuration against a per-sample `(C, H, W)` shape; returns `(OH, OW)`.
    fn check(&self, chw: &[usize]) -> Result<(usize, usize)> {
        let name = self.describe();
        let g = self.geometry();
        let ((kh, kw), (sh, sw), (ph, pw)) = (g.kernel, g.stride, g.padding);
        if kh == 0 || kw == 0 {
            return Err(Error::config(
                name,
                "kernel_size",
                pair(g.kernel),
                "at least 1",
            ));
        }
        if sh == 0 || sw == 0 {
            return Err(Error::config(name, "stride", pair(g.stride), "at least 1"));
        }
        if ph > kh / 2 || pw > kw / 2 {
            return Err(Error::config(
                name,
                "padding",
                pair(g.padding),
                format!(
                    "at most half the {kh}x{kw} kernel size, i.e. <= {}",
                    pair((kh / 2, kw / 2))
                ),
            ));
        }
        let &[c, h, w] = chw else {
            return Err(Error::shape(name, "a per-sample (C, H, W) input", chw));
        };
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::shape(name, "a non-empty (C, H, W) input", chw));
        }
        let oh = pool_output_len(h, kh, sh, ph, g.ceil_mode);
        let ow = pool_output_len(w, kw, sw, pw, g.ceil_mode);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(Error::shape(
                name,
                format!(
                    "a (C, H, W) input of at least {}x{} so that the {kh}x{kw} window fits the \
                     input padded by {}",
                    kh.saturating_sub(2 * ph),
                    kw.saturating_sub(2 * pw),
                    pair(g.padding)
                ),
                chw,
            )),
        }
    }

    fn build(&mut self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if input_shape.len() != 3 {
            return Err(Error::shape(
                self.describe(),
                "a per-sample (C, H, W) input (NCHW without the batch axis)",
                input_shape,
            ));
        }
        let (oh, ow) = self.check(input_shape)?;
        self.input = Some([input_shape[0], input_shape[1], input_shape[2]]);
        Ok(vec![input_shape[0], oh, ow])
    }

    /// Checks a batch `x: (B, C, H, W)` and returns it as a rank-4 view with `(OH, OW)`.
    fn check_batch<'a>(&self, x: &'a Tensor) -> Result<(ArrayView4<'a, f32>, (usize, usize))> {
        let expected = match self.input {
            Some([c, h, w]) => format!("an NCHW input (B, {c}, {h}, {w})"),
            None => "an NCHW input (B, C, H, W)".to_string(),
        };
        let fits = x.ndim() == 4 && self.input.is_none_or(|i| x.shape()[1..] == i);
        if !fits {
            return Err(Error::shape(self.describe(), expected, x.shape()));
        }
        let out_hw = self.check(&x.shape()[1..])?;
        let x4 = x.view().into_dimensionality::<Ix4>().expect("rank 4");
        Ok((x4, out_hw))
    }
}

/// Checks `dout` against the shape of the last output.
fn check_dout<'a>(name: &str, dout: &'a Tensor, out: [usize; 4]) -> Result<ArrayView4<'a, f32>> {
    if dout.shape() != out {
        return Err(Error::shape(
            format!("{name} backward"),
            format!("dout shaped like the last output {out:?}"),
            dout.shape(),
        ));
    }
    let d: ArrayViewD<f32> = dout.view();
    Ok(d.into_dimensionality::<Ix4>().expect("rank 4"))
}

/// The builder methods shared by both pooling layers.
macro_rules! pool_builders {
    () => {
        /// The window height/width separately (`kernel_size=(kh, kw)`); the stride still defaults
        /// to the kernel unless set.
        pub fn kernel_2d(mut self, kh: usize, kw: usize) -> Self {
            self.spec.kernel = (kh, kw);
            self
        }

        /// The step of the window in both directions (default: the kernel size).
        pub fn stride(self, s: usize) -> Self {
            self.stride_2d(s, s)
        }

        /// The vertical and horizontal steps separately.
        pub fn stride_2d(mut self, sh: usize, sw: usize) -> Self {
            self.spec.stride = Some((sh, sw));
            self
        }

        /// Implicit padding on every side (default 0; at most half the kernel, as in PyTorch).
        pub fn padding(self, p: usize) -> Self {
            self.padding_2d(p, p)
        }

        /// Vertical and horizontal padding separately.
        pub fn padding_2d(mut self, ph: usize, pw: usize) -> Self {
            self.spec.padding = (ph, pw);
            self
        }

        /// Round the output size up instead of down (PyTorch `ceil_mode`, default `false`); a
        /// window must still start inside the input or the left padding.
        pub fn ceil_mode(mut self, ceil: bool) -> Self {
            self.spec.ceil_mode = ceil;
            self
        }

        /// The resolved geometry (stride defaulted to the kernel).
        pub fn geometry(&self) -> PoolGeometry {
            self.spec.geometry()
        }
    };
}

// ---------------------------------------------------------------------------------------------

/// 2-D max pooling (PyTorch `nn.MaxPool2d`, Keras `MaxPooling2D`), NCHW.
///
/// Padding acts as `−∞`. Every forward records the argmax of each window (flat `h·W + w` within
/// its `(n, c)` plane, see [`MaxPool2d::indices`]); backward routes `dout` to it, summing where
/// overlapping windows share a maximum. Ties go to the first maximum in row-major scan order and
/// NaN counts as the maximum (PyTorch's CPU behaviour).
///
/// # Shapes
/// `x: (B, C, H, W)` → `y: (B, C, OH, OW)`, `OH = ⌊(H + 2p − k)/s⌋ + 1` (floor mode).
///
/// ```
/// use handgrad::layers::{Layer, MaxPool2d};
/// let mut pool = MaxPool2d::new(2);
/// let out = pool.build(&[3, 64, 64], &mut handgrad::init::rng(0))?;
/// assert_eq!(out, [3, 32, 32]);
/// assert_eq!(pool.describe(), "MaxPool2d(2x2, stride 2)");
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    spec: PoolSpec,
    /// Argmax of the last forward, `(B, C, OH, OW)`; reused between forwards of one shape.
    argmax: Array4<u32>,
    /// The input shape `(B, C, H, W)` of the last forward, and whether it was a training one.
    last: Option<([usize; 4], Mode)>,
}

impl MaxPool2d {
    /// A `k×k` max pool with stride `k`, no padding, floor mode.
    pub fn new(k: usize) -> Self {
        MaxPool2d {
            spec: PoolSpec::new("MaxPool2d", k, None),
            argmax: Array4::zeros((0, 0, 0, 0)),
            last: None,
        }
    }

    pool_builders!();

    /// The argmax of each window of the last forward (either mode), flattened as `h·W + w`
    /// within its `(n, c)` plane (PyTorch `return_indices=True`).
    ///
    /// # Shapes
    /// `(B, C, OH, OW)`.
    pub fn indices(&self) -> Option<ArrayView4<'_, u32>> {
        self.last.map(|_| self.argmax.view())
    }
}

impl Layer for MaxPool2d {
    fn describe(&self) -> String {
        self.spec.describe()
    }

    fn fusable(&self) -> Option<Fusable> {
        let g = self.spec.geometry();
        let plain = (g.kernel, g.stride, g.padding, g.ceil_mode) == ((2, 2), (2, 2), (0, 0), false);
        plain.then_some(Fusable::MaxPool2x2)
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.spec.build(input_shape)
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (x4, (oh, ow)) = self.spec.check_batch(x)?;
        let (n, c, h, w) = x4.dim();
        let mut out = Array4::zeros((n, c, oh, ow));
        if self.argmax.dim() != (n, c, oh, ow) {
            self.argmax = Array4::zeros((n, c, oh, ow));
        }
        max_pool2d_forward_into(
            x4,
            &self.spec.geometry(),
            out.view_mut(),
            self.argmax.view_mut(),
        );
        self.last = Some(([n, c, h, w], mode));
        Ok(out.into_dyn())
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let name = self.describe();
        let Some(([n, c, h, w], Mode::Train)) = self.last else {
            return Err(no_cache(&name));
        };
        let (_, _, oh, ow) = self.argmax.dim();
        let d = check_dout(&name, dout, [n, c, oh, ow])?;
        let mut dx = Array4::zeros((n, c, h, w));
        max_pool2d_backward_into(d, self.argmax.view(), dx.view_mut());
        Ok(dx.into_dyn())
    }
}

// ---------------------------------------------------------------------------------------------

/// 2-D average pooling (PyTorch `nn.AvgPool2d`, Keras `AveragePooling2D`), NCHW.
///
/// Padding counts as zeros in the divisor by default (PyTorch `count_include_pad=True`; the
/// window area is clipped to the padded input, which matters in ceil mode); switch it off with
/// [`AvgPool2d::count_include_pad`]. Backward spreads `dout / divisor` over each window.
///
/// # Shapes
/// `x: (B, C, H, W)` → `y: (B, C, OH, OW)`, same output size as [`MaxPool2d`].
#[derive(Debug, Clone)]
pub struct AvgPool2d {
    spec: PoolSpec,
    /// The input shape `(B, C, H, W)` of the last training forward.
    cache: Option<[usize; 4]>,
}

impl AvgPool2d {
    /// A `k×k` average pool with stride `k`, no padding, floor mode, `count_include_pad`.
    pub fn new(k: usize) -> Self {
        AvgPool2d {
            spec: PoolSpec::new("AvgPool2d", k, Some(true)),
            cache: None,
        }
    }

    pool_builders!();

    /// Whether padded zeros count in the divisor (default `true`, as PyTorch).
    pub fn count_include_pad(mut self, include: bool) -> Self {
        self.spec.count_include_pad = Some(include);
        self
    }

    fn include_pad(&self) -> bool {
        self.spec.count_include_pad.unwrap_or(true)
    }
}

impl Layer for AvgPool2d {
    fn describe(&self) -> String {
        self.spec.describe()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        self.spec.build(input_shape)
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (x4, (oh, ow)) = self.spec.check_batch(x)?;
        let (n, c, h, w) = x4.dim();
        let mut out = Array4::zeros((n, c, oh, ow));
        avg_pool2d_forward_into(
            x4,
            &self.spec.geometry(),
            self.include_pad(),
            out.view_mut(),
        );
        self.cache = (mode == Mode::Train).then_some([n, c, h, w]);
        Ok(out.into_dyn())
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let name = self.describe();
        let [n, c, h, w] = self.cache.ok_or_else(|| no_cache(&name))?;
        let g = self.spec.geometry();
        let (oh, ow) = g.output_size(h, w).expect("checked in forward");
        let d = check_dout(&name, dout, [n, c, oh, ow])?;
        let mut dx = Array4::zeros((n, c, h, w));
        avg_pool2d_backward_into(d, &g, self.include_pad(), dx.view_mut());
        Ok(dx.into_dyn())
    }
}
