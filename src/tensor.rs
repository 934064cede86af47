//! `Tensor` (a dynamic-rank `f32` array) and the shape checks used at every public boundary.

use crate::error::{Error, Result};
use ndarray::{ArrayD, ArrayView, ArrayViewD, Dimension, IxDyn};

/// The crate's tensor type: a dynamic-rank, row-major `f32` array.
pub type Tensor = ArrayD<f32>;

/// Views `x` as a fixed-rank array, or returns [`Error::Shape`] naming the layout.
///
/// `op` names the caller (e.g. `"Dense(in=64, out=10)"`) and `layout` the expected axes
/// (e.g. `"(B, C)"`), so the error reads `Dense(in=64, out=10) expects a rank-2 (B, C) input,
/// got shape [3, 4, 5]`.
///
/// # Shapes
/// `x`: any → the same data as rank `D::NDIM`.
pub fn expect_rank<'a, D: Dimension>(
    x: &'a ArrayViewD<'a, f32>,
    op: &str,
    layout: &str,
) -> Result<ArrayView<'a, f32, D>> {
    let want = D::NDIM.unwrap_or(x.ndim());
    if x.ndim() != want {
        return Err(Error::shape(
            op,
            format!("a rank-{want} {layout} input"),
            x.shape(),
        ));
    }
    x.view()
        .into_dimensionality::<D>()
        .map_err(|_| Error::shape(op, format!("a rank-{want} {layout} input"), x.shape()))
}

/// Checks that axis `axis` of `shape` has size `size`, else [`Error::Shape`].
///
/// `what` describes the expectation for the message, e.g. `"(B, 64) input"`.
pub fn expect_dim(shape: &[usize], axis: usize, size: usize, op: &str, what: &str) -> Result<()> {
    if shape.get(axis) != Some(&size) {
        return Err(Error::shape(op, what, shape));
    }
    Ok(())
}

/// Builds a tensor of the given shape from a flat row-major vector, or [`Error::Shape`].
pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    let n = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|_| {
        Error::shape(
            "Tensor::from_vec",
            format!("a shape with {n} elements"),
            shape,
        )
    })
}

/// Checks that `x` is a batch of NCHW images with per-sample shape `chw = [C, H, W]`, else
/// [`Error::Shape`] naming the expected layout — with a hint when `x` looks like NHWC.
pub fn expect_nchw(x: &Tensor, op: &str, chw: [usize; 3]) -> Result<()> {
    let [c, h, w] = chw;
    if x.ndim() == 4 && x.shape()[1..] == chw {
        return Ok(());
    }
    let mut expected = format!("an NCHW input (N, {c}, {h}, {w})");
    if looks_nhwc(x.shape(), chw) {
        expected += "; this input looks like NHWC, but handgrad expects NCHW (PyTorch layout): \
                     permute the axes to (N, C, H, W)";
    }
    Err(Error::shape(op, expected, x.shape()))
}

/// Whether a batch shape `(N, H, W, C)` is the NHWC layout of NCHW images `chw = [C, H, W]`.
pub(crate) fn looks_nhwc(shape: &[usize], chw: [usize; 3]) -> bool {
    let [c, h, w] = chw;
    shape.len() == 4 && shape[3] == c && shape[1..3] == [h, w]
}
