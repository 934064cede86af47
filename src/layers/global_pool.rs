//! [`GlobalAvgPool2d`]: the mean over each channel's spatial plane.

use super::{no_cache, not_built, Layer, Mode};
use crate::error::{Error, Result};
use crate::init::Rng;
use crate::ops::global_pool::{global_avg_pool_backward, global_avg_pool_forward};
use crate::tensor::{expect_nchw, Tensor};
use ndarray::{Ix2, Ix4};

/// Global average pooling: `out[n, c] = mean_{h,w} x[n, c, h, w]` (Keras
/// `GlobalAveragePooling2D`; PyTorch `nn.AdaptiveAvgPool2d(1)` followed by `flatten(1)`, as in
/// EfficientNet's head). No parameters.
///
/// # Shapes
/// `x: (N, C, H, W)` → `(N, C)`.
#[derive(Debug, Clone, Default)]
pub struct GlobalAvgPool2d {
    /// The per-sample input shape `(C, H, W)`, once built.
    input: Option<[usize; 3]>,
    /// The batch size of the last training forward.
    cached_n: Option<usize>,
}

/// Keras' name for [`GlobalAvgPool2d`].
pub type GlobalAveragePooling2D = GlobalAvgPool2d;

impl GlobalAvgPool2d {
    /// A new layer (no parameters, nothing to configure).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Layer for GlobalAvgPool2d {
    fn describe(&self) -> String {
        "GlobalAvgPool2d".to_string()
    }

    fn build(&mut self, input_shape: &[usize], _rng: &mut Rng) -> Result<Vec<usize>> {
        let &[c, h, w] = input_shape else {
            return Err(Error::shape(
                "GlobalAvgPool2d",
                "a per-sample (C, H, W) input",
                input_shape,
            ));
        };
        if h == 0 || w == 0 {
            return Err(Error::shape(
                "GlobalAvgPool2d",
                "a non-empty (C, H, W) input",
                input_shape,
            ));
        }
        self.input = Some([c, h, w]);
        Ok(vec![c])
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let shape = self.input.ok_or_else(|| not_built("GlobalAvgPool2d"))?;
        expect_nchw(x, "GlobalAvgPool2d", shape)?;
        let x4 = x.view().into_dimensionality::<Ix4>().expect("checked NCHW");
        self.cached_n = (mode == Mode::Train).then_some(x4.dim().0);
        Ok(global_avg_pool_forward(x4).into_dyn())
    }

    fn backward(&mut self, dout: &Tensor) -> Result<Tensor> {
        let [c, h, w] = self.input.ok_or_else(|| not_built("GlobalAvgPool2d"))?;
        let n = self.cached_n.ok_or_else(|| no_cache("GlobalAvgPool2d"))?;
        if dout.shape() != [n, c] {
            return Err(Error::shape(
                "GlobalAvgPool2d backward",
                format!("dout shaped like the last output [{n}, {c}]"),
                dout.shape(),
            ));
        }
        let d = dout.view().into_dimensionality::<Ix2>().expect("checked");
        Ok(global_avg_pool_backward(d, (h, w)).into_dyn())
    }
}
