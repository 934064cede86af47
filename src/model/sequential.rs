//! `Sequential`: a stack of layers applied in order (Keras `Sequential`, PyTorch `nn.Sequential`).

use super::{Loss, Metric, Targets};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::layers::{IntoLayers, Layer, Mode};
use crate::optim::Optimizer;
use crate::param::Param;
use crate::tensor::Tensor;

/// A stack of layers applied in order, built from a per-sample input shape.
///
/// Parameter names are `"<layer index>.<local name>"` (`"0.weight"`, `"2.bias"`), one index per
/// layer including activations, exactly as PyTorch's `nn.Sequential` numbers them.
///
/// ```
/// use handgrad::prelude::*;
/// let mut rng = handgrad::init::rng(7);
/// let model = Sequential::new(&[64]).add(Dense::new(32).relu()).add(Dense::new(10)).build(&mut rng)?;
/// assert_eq!(model.param_count(), 64 * 32 + 32 + 32 * 10 + 10);
/// assert_eq!(model.output_shape(), &[10]);
/// # Ok::<(), handgrad::Error>(())
/// ```
pub struct Sequential {
    input_shape: Vec<usize>,
    pub(super) layers: Vec<Box<dyn Layer>>,
    /// Per-sample output shape of every layer, filled by `build`.
    shapes: Vec<Vec<usize>>,
    built: bool,
    /// Optimizer, loss and metrics set by `compile`.
    pub(super) compiled: Option<Compiled>,
    /// Seed for `fit`'s shuffling and augmentation, drawn from the build RNG.
    pub(super) fit_seed: u64,
    /// How the last forward grouped the layers it ran: the length of each group in order (1 for
    /// a layer run alone, more for a layer that ran the following ones fused).
    groups: Vec<usize>,
}

/// What `compile` sets.
pub(super) struct Compiled {
    pub(super) optimizer: Box<dyn Optimizer>,
    pub(super) loss: Loss,
    pub(super) metrics: Vec<Metric>,
}

impl Sequential {
    /// An empty model taking per-sample inputs of shape `input_shape` (no batch axis), e.g.
    /// `&[64]` for 64 features or `&[1, 28, 28]` for grey 28×28 images.
    pub fn new(input_shape: &[usize]) -> Self {
        Sequential {
            input_shape: input_shape.to_vec(),
            layers: Vec::new(),
            shapes: Vec::new(),
            built: false,
            compiled: None,
            fit_seed: 0,
            groups: Vec::new(),
        }
    }

    /// Appends a layer (or a layer with its activation, e.g. `Dense::new(64).relu()`), as Keras
    /// `model.add` does.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl IntoLayers) -> Self {
        self.layers.extend(layer.into_layers());
        self.built = false;
        self
    }

    /// Builds every layer in order, inferring input sizes and creating parameters from `rng`.
    ///
    /// # Errors
    /// The first layer that cannot take its input shape, as [`Error::Shape`] naming the layer
    /// index; [`Error::State`] for a model without layers.
    pub fn build(mut self, rng: &mut Rng) -> Result<Self> {
        if self.layers.is_empty() {
            return Err(Error::State(
                "Sequential::build: the model has no layers".into(),
            ));
        }
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(Error::shape(
                "Sequential::new",
                "a non-empty per-sample input shape without zero sizes",
                &self.input_shape,
            ));
        }
        self.shapes.clear();
        let mut shape = self.input_shape.clone();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            shape = layer.build(&shape, rng).map_err(|e| match e {
                Error::Shape { op, expected, got } => Error::Shape {
                    op: format!("layer {i} ({op})"),
                    expected,
                    got,
                },
                other => other,
            })?;
            self.shapes.push(shape.clone());
        }
        self.built = true;
        self.fit_seed = rand::Rng::random(rng);
        Ok(self)
    }

    /// The per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The per-sample output shape (empty before `build`).
    pub fn output_shape(&self) -> &[usize] {
        self.shapes.last().map(|s| s.as_slice()).unwrap_or(&[])
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layers, mutably (e.g. to time or inspect them one by one).
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    pub(super) fn check_built(&self) -> Result<()> {
        if self.built {
            Ok(())
        } else {
            Err(Error::State(
                "Sequential used before build(); call .build(&mut rng)?".into(),
            ))
        }
    }

    pub(super) fn check_input(&self, x: &Tensor) -> Result<()> {
        if x.ndim() != self.input_shape.len() + 1 || x.shape()[1..] != self.input_shape[..] {
            return Err(Error::shape(
                "Sequential",
                format!(
                    "a batch of inputs shaped (B, {}){}",
                    dims(&self.input_shape),
                    self.input_hint(x.shape())
                ),
                x.shape(),
            ));
        }
        Ok(())
    }

    /// Checks that a data set's per-sample shape is the model's input shape; `what` names the
    /// data set in the error (e.g. `"fit: the training data"`).
    /// `len` and `sample_shape` describe the data set (its shape `(N, …)` is reported).
    pub(super) fn check_samples(
        &self,
        what: &str,
        len: usize,
        sample_shape: &[usize],
    ) -> Result<()> {
        if sample_shape != self.input_shape.as_slice() {
            let full = [&[len][..], sample_shape].concat();
            return Err(Error::shape(
                what,
                format!(
                    "samples shaped ({}) like the model's input, i.e. data (N, {}){}; its \
                     samples are shaped ({})",
                    dims(&self.input_shape),
                    dims(&self.input_shape),
                    self.input_hint(&full),
                    dims(sample_shape),
                ),
                &full,
            ));
        }
        Ok(())
    }

    /// A hint for a batch shape that is close to the input shape: one sample without the batch
    /// axis, or NHWC images for an NCHW model.
    fn input_hint(&self, got: &[usize]) -> String {
        let want = &self.input_shape;
        if got == want.as_slice() {
            return "; this is one sample without the batch axis: add it, e.g. \
                    x.insert_axis(Axis(0))"
                .into();
        }
        if let &[c, h, w] = want.as_slice()
            && c != h
            && crate::tensor::looks_nhwc(got, [c, h, w])
        {
            return "; this batch looks like NHWC (channels last), but handgrad expects NCHW \
                        (PyTorch layout): permute the axes, e.g. x.permuted_axes([0, 3, 1, 2])"
                .into();
        }
        String::new()
    }

    /// Runs the model on a batch.
    ///
    /// # Shapes
    /// `x: (B, …input_shape) → (B, …output_shape)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not a batch of `input_shape` inputs.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_range(x, mode, self.layers.len())
    }

    pub(super) fn forward_range(&mut self, x: &Tensor, mode: Mode, end: usize) -> Result<Tensor> {
        use std::borrow::Cow;
        self.check_built()?;
        self.check_input(x)?;
        self.groups.clear();
        let layers = &mut self.layers[..end];
        let mut h: Option<Tensor> = None;
        let mut i = 0;
        while i < layers.len() {
            // a layer may run the fusable layers after it in its own pass (`Layer::fuses`)
            let tail: Vec<_> = layers[i + 1..].iter().map_while(|l| l.fusable()).collect();
            let fused = layers[i].fuses(&tail).min(tail.len());
            // every later layer owns its input: elementwise layers then work in place
            let input = h.take().map_or(Cow::Borrowed(x), Cow::Owned);
            let out = match (fused, input) {
                (0, Cow::Borrowed(x)) => layers[i].forward(x, mode),
                (0, Cow::Owned(x)) => layers[i].forward_owned(x, mode),
                (k, input) => layers[i].forward_fused(input, mode, &tail[..k]),
            };
            h = Some(out?);
            self.groups.push(1 + fused);
            i += 1 + fused;
        }
        Ok(h.unwrap_or_else(|| x.clone()))
    }

    /// The groups of the last forward within layers `..end`, as `(first layer, length)` in
    /// order; an error when that forward ran another range.
    fn groups_until(&self, end: usize) -> Result<Vec<(usize, usize)>> {
        if self.groups.is_empty() {
            // no forward yet: every layer alone (each reports its missing cache)
            return Ok((0..end).map(|i| (i, 1)).collect());
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(self.groups.len());
        for &len in &self.groups {
            out.push((start, len));
            start += len;
        }
        if start != end {
            return Err(Error::State(format!(
                "Sequential backward through layers 0..{end}, but the last forward ran layers \
                 0..{start}"
            )));
        }
        Ok(out)
    }

    /// Every layer's output for a batch, in evaluation mode (for inspection and debugging):
    /// element `i` is the output of layer `i`.
    ///
    /// # Errors
    /// As [`Sequential::forward`].
    pub fn forward_all(&mut self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.check_built()?;
        self.check_input(x)?;
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for layer in &mut self.layers {
            let h = layer.forward(outs.last().unwrap_or(x), Mode::Eval)?;
            outs.push(h);
        }
        Ok(outs)
    }

    /// Back-propagates `dout = dL/d(output)` through the last training forward, accumulating
    /// every parameter's gradient, and returns `dL/dx`.
    ///
    /// # Errors
    /// [`Error::State`] without a preceding [`Mode::Train`] forward; [`Error::Shape`] for a
    /// gradient of the wrong shape.
    pub fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        self.backward_range(dout, self.layers.len())
    }

    fn backward_range(&mut self, dout: &Tensor, end: usize) -> Result<Tensor> {
        self.check_built()?;
        let mut d = dout.clone();
        // a fused group's first layer back-propagates through the whole group
        for (first, _) in self.groups_until(end)?.into_iter().rev() {
            d = self.layers[first].backward_owned(d)?;
        }
        Ok(d)
    }

    /// Backward through layers `..end` for training: the first layer skips its input gradient.
    fn backward_params(&mut self, dout: &Tensor, end: usize) -> Result<()> {
        self.check_built()?;
        if end == 0 {
            return Ok(());
        }
        let groups = self.groups_until(end)?;
        let mut d = dout.clone();
        for &(first, _) in groups[1..].iter().rev() {
            d = self.layers[first].backward_owned(d)?;
        }
        self.layers[0].backward_params_only(&d)
    }

    /// Inference: the model's output in [`Mode::Eval`] (probabilities when it ends in `Softmax`).
    ///
    /// # Shapes
    /// `x: (B, …input_shape) → (B, …output_shape)`.
    pub fn predict(&mut self, x: &Tensor) -> Result<Tensor> {
        self.forward(x, Mode::Eval)
    }

    /// The number of layers that produce the logits the loss sees: all of them, or all but a
    /// trailing softmax (which is then fused into the cross-entropy).
    pub(super) fn logits_end(&self, loss: Loss) -> usize {
        let n = self.layers.len();
        if loss.fuses_softmax() && n > 0 && self.layers[n - 1].is_softmax() {
            n - 1
        } else {
            n
        }
    }

    /// Forward in training mode, the loss against `labels`, and the backward pass: accumulates
    /// every parameter's gradient and returns the loss. A trailing `Softmax` layer is fused with
    /// the cross-entropy (the loss sees the logits before it).
    ///
    /// # Errors
    /// As [`Sequential::forward`] and [`Loss::forward_backward`] (label count or range).
    pub fn loss_backward(&mut self, x: &Tensor, labels: &[usize], loss: Loss) -> Result<f32> {
        self.loss_backward_targets(x, Targets::Labels(labels), loss)
            .map(|(l, _)| l)
    }

    /// As [`Sequential::loss_backward`] with any [`Targets`]; also returns the output the loss
    /// saw (the logits, when a trailing softmax is fused).
    ///
    /// # Errors
    /// As [`Sequential::forward`] and [`Loss::forward_backward`].
    pub fn loss_backward_targets(
        &mut self,
        x: &Tensor,
        targets: Targets<'_>,
        loss: Loss,
    ) -> Result<(f32, Tensor)> {
        let end = self.logits_end(loss);
        let logits = self.forward_range(x, Mode::Train, end)?;
        let (value, dlogits) = loss.forward_backward(&logits, targets)?;
        self.backward_params(&dlogits, end)?;
        Ok((value, logits))
    }

    /// One optimisation step on a batch: `zero_grad`, forward, sparse categorical cross-entropy,
    /// backward, `opt.step`. Returns the batch loss (before the update).
    ///
    /// # Errors
    /// As [`Sequential::loss_backward`] and [`Optimizer::step`].
    pub fn train_step(
        &mut self,
        x: &Tensor,
        labels: &[usize],
        opt: &mut dyn Optimizer,
    ) -> Result<f32> {
        self.zero_grad();
        let loss = self.loss_backward(x, labels, Loss::SparseCategoricalCrossentropy)?;
        opt.step(&mut self.params_mut())?;
        Ok(loss)
    }

    /// Every parameter with its hierarchical name (`"0.weight"`), in layer order.
    pub fn params(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, p) in layer.params() {
                out.push((format!("{i}.{name}"), p));
            }
        }
        out
    }

    /// Every parameter, mutably, with its hierarchical name, in layer order.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        named_params_mut(&mut self.layers)
    }

    /// Sets every parameter's gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.params_mut() {
            p.zero_grad();
        }
    }

    /// The total number of parameter scalars, frozen or not (see
    /// [`Sequential::trainable_param_count`]).
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|(_, p)| p.numel()).sum()
    }

    /// A Keras-like table: layer index and type, output shape (`None` = batch), parameter count,
    /// and the totals: all, trainable and non-trainable (frozen) parameters.
    pub fn summary(&self) -> String {
        let mut rows = vec![(
            "Layer (type)".to_string(),
            "Output Shape".to_string(),
            "Param #".to_string(),
        )];
        for (i, layer) in self.layers.iter().enumerate() {
            let shape = self
                .shapes
                .get(i)
                .map(|s| format!("(None, {})", dims(s)))
                .unwrap_or_else(|| "(not built)".into());
            let n: usize = layer.params().iter().map(|(_, p)| p.numel()).sum();
            rows.push((format!("{i} {}", layer.describe()), shape, group(n)));
        }
        let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0) + 2;
        let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0) + 2;
        let w2 = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(0);
        let rule = "─".repeat(w0 + w1 + w2);
        let mut s = format!("Model: \"sequential\"\n{rule}\n");
        for (k, (a, b, c)) in rows.iter().enumerate() {
            s += &format!("{a:<w0$}{b:<w1$}{c:>w2$}\n");
            if k == 0 {
                s += &format!("{}\n", "═".repeat(w0 + w1 + w2));
            }
        }
        s += &format!(
            "{rule}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n",
            group(self.param_count()),
            group(self.trainable_param_count()),
            group(self.non_trainable_param_count())
        );
        s
    }
}

/// Every parameter of `layers`, mutably, named `"<index>.<local name>"`.
pub(super) fn named_params_mut(layers: &mut [Box<dyn Layer>]) -> Vec<(String, &mut Param)> {
    let mut out = Vec::new();
    for (i, layer) in layers.iter_mut().enumerate() {
        for (name, p) in layer.params_mut() {
            out.push((format!("{i}.{name}"), p));
        }
    }
    out
}

pub(super) fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1234567` → `"1,234,567"`.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("input_shape", &self.input_shape)
            .field(
                "layers",
                &self.layers.iter().map(|l| l.describe()).collect::<Vec<_>>(),
            )
            .field("built", &self.built)
            .field(
                "compiled",
                &self
                    .compiled
                    .as_ref()
                    .map(|c| (c.optimizer.name(), c.loss.name())),
            )
            .finish()
    }
}
