//! im2col for the convolution: the per-call [`Plan`] and the wide / row-wise unfoldings of
//! input patches and their folding back for the input gradient.

use super::*;

/// How one call unfolds its images: band sizes and the scratch layout, shared by all images.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// `C·kh·kw`.
    pub(super) k: usize,
    /// Stride 1: the wide unfolding; otherwise rows.
    pub(super) wide: bool,
    /// Height and width of the padded image.
    pub(super) hp: usize,
    pub(super) wp: usize,
    /// Whether the wide unfolding needs a zero-bordered copy of the image.
    pub(super) padded: bool,
    /// Output rows per band.
    pub(super) rows: usize,
    /// Columns of the largest band's patch matrix.
    pub(super) cols_max: usize,
}

impl Plan {
    pub(super) fn new(g: &Conv2dGeom) -> Plan {
        let (oh, ow) = g.out_hw();
        let k = g.k_len();
        let wide = g.sh == 1 && g.sw == 1;
        let (hp, wp) = (g.h + g.ph + g.ph_end, g.w + g.pw + g.pw_end);
        let pitch = if wide { wp } else { ow };
        let rows = (TILE_FLOATS / (k * pitch).max(1)).clamp(1, oh.max(1));
        let mut plan = Plan {
            oh,
            ow,
            k,
            wide,
            hp,
            wp,
            padded: wide && (hp, wp) != (g.h, g.w),
            rows,
            cols_max: 0,
        };
        plan.cols_max = plan.band_cols(0, rows);
        plan
    }

    /// Columns of the patch matrix of output rows `[i0, i1)`.
    pub(super) fn band_cols(&self, i0: usize, i1: usize) -> usize {
        if self.wide {
            (i1 - i0 - 1) * self.wp + self.ow
        } else {
            (i1 - i0) * self.ow
        }
    }

    /// The bands of output rows, in order.
    pub(super) fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.oh)
            .step_by(self.rows)
            .map(|i0| (i0, (i0 + self.rows).min(self.oh)))
    }

    /// Floats of one padded image.
    pub(super) fn padded_len(&self, g: &Conv2dGeom) -> usize {
        if self.padded {
            g.c * self.hp * self.wp
        } else {
            0
        }
    }
}

/// Copies `x: (C, H, W)` into the interior of the zero-bordered `xp: (C, Hp, Wp)`.
/// The image a band reads: `x` itself, or `x` zero-padded into `xp` when the plan pads.
pub(super) fn padded_source<'a>(
    x: &'a [f32],
    g: &Conv2dGeom,
    plan: &Plan,
    xp: &'a mut [f32],
) -> &'a [f32] {
    if plan.padded {
        pad_into(x, g, plan, xp);
        xp
    } else {
        x
    }
}

pub(super) fn pad_into(x: &[f32], g: &Conv2dGeom, plan: &Plan, xp: &mut [f32]) {
    xp.fill(0.0);
    for (src, dst) in x
        .chunks_exact(g.h * g.w)
        .zip(xp.chunks_exact_mut(plan.hp * plan.wp))
    {
        for (r, src_row) in src.chunks_exact(g.w).enumerate() {
            dst[(r + g.ph) * plan.wp + g.pw..][..g.w].copy_from_slice(src_row);
        }
    }
}

/// Adds the interior of `dxp: (C, Hp, Wp)` to `dx: (C, H, W)` (the adjoint of [`pad_into`]).
pub(super) fn crop_add(dxp: &[f32], g: &Conv2dGeom, plan: &Plan, dx: &mut [f32]) {
    for (src, dst) in dxp
        .chunks_exact(plan.hp * plan.wp)
        .zip(dx.chunks_exact_mut(g.h * g.w))
    {
        for (r, dst_row) in dst.chunks_exact_mut(g.w).enumerate() {
            let src_row = &src[(r + g.ph) * plan.wp + g.pw..][..g.w];
            dst_row.iter_mut().zip(src_row).for_each(|(d, s)| *d += *s);
        }
    }
}

/// Offset in the padded image of patch row `(c, u, v)` at the first wide column of band `i0`.
pub(super) fn wide_offset(r: usize, i0: usize, g: &Conv2dGeom, plan: &Plan) -> usize {
    let (c, u, v) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
    (c * plan.hp + i0 + u * g.dh) * plan.wp + v * g.dw
}

/// Wide unfolding of band `[i0, i1)` of the padded image `xp`: `cols: (C·kh·kw, L)`.
pub(super) fn unfold_wide(
    xp: &[f32],
    g: &Conv2dGeom,
    plan: &Plan,
    i0: usize,
    i1: usize,
    cols: &mut [f32],
) {
    let len = plan.band_cols(i0, i1);
    for (r, row) in cols[..plan.k * len].chunks_exact_mut(len).enumerate() {
        let off = wide_offset(r, i0, g, plan);
        row.copy_from_slice(&xp[off..off + len]);
    }
}

/// The adjoint of [`unfold_wide`]: `dxp[...] += dcols[(c,u,v), :]`, one run per patch row.
pub(super) fn fold_wide(
    dcols: &[f32],
    g: &Conv2dGeom,
    plan: &Plan,
    i0: usize,
    i1: usize,
    dxp: &mut [f32],
) {
    let len = plan.band_cols(i0, i1);
    for (r, row) in dcols[..plan.k * len].chunks_exact(len).enumerate() {
        let off = wide_offset(r, i0, g, plan);
        let dst = &mut dxp[off..off + len];
        dst.iter_mut().zip(row).for_each(|(d, s)| *d += *s);
    }
}

/// Rows unfolding of output rows `[i0, i1)` of `x: (C, H, W)`: `cols: (C·kh·kw, (i1 − i0)·OW)`,
/// zeros where the window lies in the padding.
pub(super) fn unfold_rows(
    x: &[f32],
    g: &Conv2dGeom,
    plan: &Plan,
    i0: usize,
    i1: usize,
    cols: &mut [f32],
) {
    let (ow, len) = (plan.ow, plan.band_cols(i0, i1));
    for (r, row) in cols[..plan.k * len].chunks_exact_mut(len).enumerate() {
        let (c, u, v) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        let (j0, j1, first) = g.valid_cols(v, ow);
        for (dst, i) in row.chunks_exact_mut(ow).zip(i0..i1) {
            let y = (i * g.sh + u * g.dh) as isize - g.ph as isize;
            if y < 0 || y >= g.h as isize || j0 == j1 {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[y as usize * g.w..][..g.w];
            dst[..j0].fill(0.0);
            dst[j1..].fill(0.0);
            let src = src[first..].iter().step_by(g.sw);
            dst[j0..j1].iter_mut().zip(src).for_each(|(d, s)| *d = *s);
        }
    }
}

/// The adjoint of [`unfold_rows`]: `dx[c, y, x] += dcols[(c,u,v), (i,j)]` (padding dropped).
pub(super) fn fold_rows(
    dcols: &[f32],
    g: &Conv2dGeom,
    plan: &Plan,
    i0: usize,
    i1: usize,
    dx: &mut [f32],
) {
    let (ow, len) = (plan.ow, plan.band_cols(i0, i1));
    for (r, row) in dcols[..plan.k * len].chunks_exact(len).enumerate() {
        let (c, u, v) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let plane = &mut dx[c * g.h * g.w..][..g.h * g.w];
        let (j0, j1, first) = g.valid_cols(v, ow);
        for (src, i) in row.chunks_exact(ow).zip(i0..i1) {
            let y = (i * g.sh + u * g.dh) as isize - g.ph as isize;
            if y < 0 || y >= g.h as isize || j0 == j1 {
                continue;
            }
            let dst = plane[y as usize * g.w + first..].iter_mut().step_by(g.sw);
            dst.zip(&src[j0..j1]).for_each(|(d, s)| *d += *s);
        }
    }
}

/// `Σ xs` in a fixed order with 16 independent partial sums (vectorisable, unlike a plain
/// sequential sum in which every addition waits for the previous one).
pub(super) fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}
