//! Grouped convolution (`1 < G < C`): each group runs on the dense kernel in turn.

use super::*;

/// A grouped convolution (`1 < G`, not depthwise): each group is a dense convolution of its own
/// input channels into its own output channels, run one after the other on the shared kernel.
///
/// # Shapes
/// `x: (N, C, H, W)`, `w: (O, C/G, kh, kw)`, `bias: (O)` → `(N, O, OH, OW)`.
pub(super) fn grouped_forward(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
) -> Array4<f32> {
    let (oh, ow) = g.out_hw();
    let (cg, og) = g.group_channels();
    let sub = group_geom(g);
    let mut out = Array4::<f32>::zeros((x.dim().0, g.o, oh, ow));
    for gi in 0..g.groups {
        // out[:, group gi] = conv(x[:, group gi], w[group gi]) + bias[group gi]
        let (ci, oi) = (gi * cg..(gi + 1) * cg, gi * og..(gi + 1) * og);
        let xg = x.slice(s![.., ci, .., ..]);
        let wg = w.slice(s![oi.clone(), .., .., ..]);
        let bg = bias.as_ref().map(|b| b.slice(s![oi.clone()]));
        let yg = conv2d_forward(xg, wg, bg, &sub, ws);
        out.slice_mut(s![.., oi, .., ..]).assign(&yg);
    }
    out
}

/// The backward of [`grouped_forward`]: each group's gradients from its own slices (the input
/// gradient of a group lands in its own input channels only).
#[allow(clippy::too_many_arguments)]
pub(super) fn grouped_backward(
    dout: ArrayView4<f32>,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    g: &Conv2dGeom,
    ws: &mut Conv2dWorkspace,
    mut dw: ArrayViewMut4<f32>,
    mut dbias: Option<ArrayViewMut1<f32>>,
    want_dx: bool,
) -> Option<Array4<f32>> {
    let (cg, og) = g.group_channels();
    let sub = group_geom(g);
    let mut dx = want_dx.then(|| Array4::<f32>::zeros(x.raw_dim()));
    for gi in 0..g.groups {
        let (ci, oi) = (gi * cg..(gi + 1) * cg, gi * og..(gi + 1) * og);
        let dxg = conv2d_backward(
            dout.slice(s![.., oi.clone(), .., ..]),
            x.slice(s![.., ci.clone(), .., ..]),
            w.slice(s![oi.clone(), .., .., ..]),
            &sub,
            ws,
            dw.slice_mut(s![oi.clone(), .., .., ..]),
            dbias.as_mut().map(|b| b.slice_mut(s![oi])),
            want_dx,
        );
        if let (Some(dx), Some(dxg)) = (dx.as_mut(), dxg) {
            dx.slice_mut(s![.., ci, .., ..]).assign(&dxg);
        }
    }
    dx
}
