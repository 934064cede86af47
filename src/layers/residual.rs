//! Composite layers: [`Residual`] (`y = f(x) + x` over named sub-layers) and the shared
//! [`Chain`] of named sub-layers that [`super::MbConv`] also uses.

use super::{IntoLayers, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::param::Param;
use crate::tensor::Tensor;

/// Named sub-layers applied in order. Parameters and buffers are named
/// `"<sub-layer name>.<local name>"` (`"_bn0.running_mean"`), so a composite maps to a PyTorch
/// module's state dict by name.
#[derive(Default)]
pub struct Chain {
    layers: Vec<(String, Box<dyn Layer>)>,
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `layer` under `name`.
    pub fn push(&mut self, name: impl Into<String>, layer: Box<dyn Layer>) {
        self.layers.push((name.into(), layer));
    }

    /// The sub-layers with their names, in order.
    pub fn layers(&self) -> &[(String, Box<dyn Layer>)] {
        &self.layers
    }

    /// Passes [`Layer::seek_examples`] to every sub-layer.
    pub fn seek_examples(&mut self, step: u64, first_row: usize) {
        for (_, layer) in &mut self.layers {
            layer.seek_examples(step, first_row);
        }
    }

    /// Whether the chain has no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Builds every sub-layer in order; returns the per-sample output shape.
    ///
    /// # Errors
    /// The first sub-layer's error, its op named `"<owner> › <name>"`.
    pub fn build(&mut self, owner: &str, input: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (name, layer) in &mut self.layers {
            shape = layer.build(&shape, rng).map_err(|e| match e {
                Error::Shape { op, expected, got } => Error::Shape {
                    op: format!("{owner} › {name} ({op})"),
                    expected,
                    got,
                },
                other => other,
            })?;
        }
        Ok(shape)
    }

    /// Runs the sub-layers on `x` (the first borrows it, the rest own their input).
    ///
    /// # Errors
    /// As each sub-layer's [`Layer::forward`].
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let Some(((_, first), rest)) = self.layers.split_first_mut() else {
            return Ok(x.clone());
        };
        let mut h = first.forward(x, mode)?;
        for (_, layer) in rest {
            h = layer.forward_owned(h, mode)?;
        }
        Ok(h)
    }

    /// Back-propagates through the sub-layers in reverse order; returns `dL/dx`.
    ///
    /// # Errors
    /// As each sub-layer's [`Layer::backward`].
    pub fn backward(&mut self, dout: Tensor) -> Result<Tensor> {
        let mut d = dout;
        for (_, layer) in self.layers.iter_mut().rev() {
            d = layer.backward_owned(d)?;
        }
        Ok(d)
    }

    /// As [`Chain::backward`], without the input gradient of the first sub-layer.
    ///
    /// # Errors
    /// As each sub-layer's [`Layer::backward`].
    pub fn backward_params_only(&mut self, dout: Tensor) -> Result<()> {
        let Some(((_, first), rest)) = self.layers.split_first_mut() else {
            return Ok(());
        };
        let mut d = dout;
        for (_, layer) in rest.iter_mut().rev() {
            d = layer.backward_owned(d)?;
        }
        first.backward_params_only(&d)
    }

    /// Every parameter as `"<name>.<local>"`, in order.
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        for (name, layer) in &self.layers {
            out.extend(
                layer
                    .params()
                    .into_iter()
                    .map(|(l, p)| (format!("{name}.{l}"), p)),
            );
        }
        out
    }

    /// [`Chain::params`], mutably.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        for (name, layer) in &mut self.layers {
            let name = name.clone();
            out.extend(
                layer
                    .params_mut()
                    .into_iter()
                    .map(|(l, p)| (format!("{name}.{l}"), p)),
            );
        }
        out
    }

    /// Every buffer as `"<name>.<local>"`, in order.
    pub fn buffers(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::new();
        for (name, layer) in &self.layers {
            out.extend(
                layer
                    .buffers()
                    .into_iter()
                    .map(|(l, b)| (format!("{name}.{l}"), b)),
            );
        }
        out
    }

    /// [`Chain::buffers`], mutably.
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        for (name, layer) in &mut self.layers {
            let name = name.clone();
            out.extend(
                layer
                    .buffers_mut()
                    .into_iter()
                    .map(|(l, b)| (format!("{name}.{l}"), b)),
            );
        }
        out
    }

    /// The sub-layers' descriptions joined with `" → "`.
    pub fn describe(&self) -> String {
        self.layers
            .iter()
            .map(|(_, l)| l.describe())
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.layers.iter().map(|(n, l)| (n, l.describe())))
            .finish()
    }
}

/// A residual connection around named sub-layers: `y = f(x) + x`, with `f` the sub-layers
/// applied in order (ResNet / MobileNetV2 skip). The sub-layers must give back the input's
/// shape (checked at build). Parameter names are `"<sub-layer name>.<local>"`; [`Residual::add`]
/// names sub-layers by position (`"0"`, `"1"`, … as `nn.Sequential`), [`Residual::add_named`]
/// by the given name.
///
/// ```
/// use handgrad::layers::{Activate, BatchNorm2d, Conv2d, Layer, Padding, Residual};
/// let mut block = Residual::new()
///     .add(Conv2d::new(8, 3).padding(Padding::Same).relu())
///     .add(Conv2d::new(8, 3).padding(Padding::Same))
///     .add(BatchNorm2d::new());
/// assert_eq!(block.build(&[8, 6, 6], &mut handgrad::init::rng(0))?, vec![8, 6, 6]);
/// assert_eq!(block.params()[0].0, "0.weight");
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Shapes
/// `x: (N, …) → (N, …)` (the same shape).
#[derive(Debug, Default)]
pub struct Residual {
    chain: Chain,
    shape: Option<Vec<usize>>,
}

impl Residual {
    /// An empty residual block (`y = x + x` until sub-layers are added: add some).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer (or a layer with its activation), named by its position.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl IntoLayers) -> Self {
        for l in layer.into_layers() {
            let name = self.chain.layers.len().to_string();
            self.chain.push(name, l);
        }
        self
    }

    /// Appends a layer named `name` (its parameters become `"<name>.weight"`, …).
    pub fn add_named(mut self, name: impl Into<String>, layer: impl Layer + 'static) -> Self {
        self.chain.push(name, Box::new(layer));
        self
    }
}

impl Layer for Residual {
    fn seek_examples(&mut self, step: u64, first_row: usize) {
        self.chain.seek_examples(step, first_row);
    }

    fn describe(&self) -> String {
        format!("Residual({} + x)", self.chain.describe())
    }

    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        if self.chain.is_empty() {
            return Err(Error::config(
                "Residual",
                "sub-layers",
                "none",
                "at least one sub-layer (add them with .add)",
            ));
        }
        let out = self.chain.build("Residual", input_shape, rng)?;
        if out != input_shape {
            return Err(Error::shape(
                "Residual",
                format!(
                    "sub-layers that keep the input shape {input_shape:?} (the skip adds the \
                     input to their output)"
                ),
                &out,
            ));
        }
        self.shape = Some(out.clone());
        Ok(out)
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if self.shape.is_none() {
            return Err(super::not_built("Residual"));
        }
        // y = f(x) + x
        let mut y = self.chain.forward(x, mode)?;
        y += x;
        Ok(y)
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        // forward: y = f(x) + x  ⇒  dx = f'(x)ᵀ·dy + dy
        let mut dx = self.chain.backward(dout.clone())?;
        dx += dout;
        Ok(dx)
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
