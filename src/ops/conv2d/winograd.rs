//! Winograd F(2×2, 3×3) for the inference forward of a fused 3×3 convolution + ReLU + 2×2 max
//! pool ([`conv2d_relu_pool_forward`] without codes).
//!
//! Each 2×2 pooling window of the output is one Winograd tile: its four outputs come from the
//! 4×4 input patch `d` at `(2p, 2q)` of the (padded) image as
//!
//! ```text
//! Y = Aᵀ · [ Σ_c (G·g[o,c]·Gᵀ) ⊙ (Bᵀ·d[c]·B) ] · A          (16 products per tile instead of 36)
//!
//!      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤        ⎡1  1  1  0⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢1/2  1/2  1/2⎥   Aᵀ = ⎣0  1 −1 −1⎦
//!      ⎢0 −1  1  0⎥        ⎢1/2 −1/2  1/2⎥
//!      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! The sum over input channels is, for each of the 16 positions `ξ` of the transformed tile, one
//! product `M_ξ = U_ξ · V_ξ` with `U_ξ: (O, C)` the transformed weights and `V_ξ: (C, T)` the
//! transformed patches of the image's `T` windows. Then `out = max(relu(Y + bias))` over the
//! tile, scanned as `MaxPool2d` scans its window. The products need 2.25× fewer multiplications
//! than im2col; the rounding differs from it (by a few ulps of the sum's magnitude), which is
//! why training, whose backward must match its forward, keeps im2col.

use super::*;
use crate::ops::activation::relu;
use crate::ops::pool::fold_max;

/// Fewest input channels for which the Winograd path pays (the transforms cost per channel what
/// the saved multiplications gain only when the products are long enough).
const MIN_CHANNELS: usize = 16;

/// Fewest windows per image for which the 16 per-image products are large enough.
const MIN_TILES: usize = 16;

/// Whether the inference path of [`conv2d_relu_pool_forward`] uses Winograd for `g`: a 3×3
/// stride-1 undilated dense convolution with at least [`MIN_CHANNELS`] inputs and
/// [`MIN_TILES`] pooled outputs per image.
pub(super) fn applies(g: &Conv2dGeom) -> bool {
    let (oh, ow) = g.out_hw();
    g.groups == 1
        && (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1)
        && g.c >= MIN_CHANNELS
        && (oh / 2) * (ow / 2) >= MIN_TILES
}

/// `U = G·g·Gᵀ` for every `(o, c)`: `(16, O, C)`, position `ξ = 4·row + column`.
fn transform_weights(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * o * c];
    for (oc, g) in w.chunks_exact(9).enumerate() {
        // t = G·g (4×3), then u = t·Gᵀ (4×4)
        let mut t = [[0.0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        for (r, [t0, t1, t2]) in t.into_iter().enumerate() {
            let row = [t0, 0.5 * (t0 + t1 + t2), 0.5 * (t0 - t1 + t2), t2];
            for (col, v) in row.into_iter().enumerate() {
                u[(4 * r + col) * o * c + oc] = v;
            }
        }
    }
    u
}

/// `V_ξ[c, col0 + tile] = (Bᵀ·d·B)_ξ` for one image `src: (C, Hp, Wp)` (padded), `d` the 4×4
/// patch at `(2p, 2q)`, `tile = p·PW + q`; `v: (16, C, cols)`, `tr: (4, Wp)` scratch. Bᵀ runs
/// on whole input rows, then B on each row's windows (contiguous or stride-2 loops).
fn transform_input(
    src: &[f32],
    g: &Conv2dGeom,
    plan: &Plan,
    (col0, cols): (usize, usize),
    v: &mut [f32],
    tr: &mut [f32],
) {
    let (ph, pw, wp, c) = (plan.oh / 2, plan.ow / 2, plan.wp, g.c);
    for (ci, plane) in src.chunks_exact(plan.hp * wp).take(c).enumerate() {
        for p in 0..ph {
            let r = |k: usize| &plane[(2 * p + k) * wp..][..wp];
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (t0, rest) = tr.split_at_mut(wp);
            let (t1, rest) = rest.split_at_mut(wp);
            let (t2, t3) = rest.split_at_mut(wp);
            for j in 0..wp {
                t0[j] = r0[j] - r2[j];
                t1[j] = r1[j] + r2[j];
                t2[j] = r2[j] - r1[j];
                t3[j] = r1[j] - r3[j];
            }
            for (rr, t) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
                let at = |col: usize| ((4 * rr + col) * c + ci) * cols + col0 + p * pw;
                let (a0, a1, a2, a3) = (at(0), at(1), at(2), at(3));
                for q in 0..pw {
                    let (x0, x1, x2, x3) = (t[2 * q], t[2 * q + 1], t[2 * q + 2], t[2 * q + 3]);
                    v[a0 + q] = x0 - x2;
                    v[a1 + q] = x1 + x2;
                    v[a2 + q] = x2 - x1;
                    v[a3 + q] = x1 - x3;
                }
            }
        }
    }
}

/// `out_n[o, tile] = max over the tile of relu(Aᵀ·M·A + bias[o])` (the tile scanned row-major)
/// for the image whose tiles are columns `col0..` of `m: (16, O, cols)`.
fn transform_output(
    m: &[f32],
    bias: Option<&[f32]>,
    o: usize,
    (col0, cols): (usize, usize),
    out_n: &mut [f32],
) {
    let t = out_n.len() / o.max(1);
    for (oi, out_plane) in out_n.chunks_exact_mut(t).enumerate().take(o) {
        let b = bias.map_or(0.0, |b| b[oi]);
        let ms: [&[f32]; 16] = std::array::from_fn(|xi| &m[(xi * o + oi) * cols + col0..][..t]);
        for (tile, dst) in out_plane.iter_mut().enumerate() {
            let mv = |xi: usize| ms[xi][tile];
            let s0: [f32; 4] = std::array::from_fn(|k| mv(k) + mv(4 + k) + mv(8 + k));
            let s1: [f32; 4] = std::array::from_fn(|k| mv(4 + k) - mv(8 + k) - mv(12 + k));
            let y = [
                s0[0] + s0[1] + s0[2],
                s0[1] - s0[2] - s0[3],
                s1[0] + s1[1] + s1[2],
                s1[1] - s1[2] - s1[3],
            ];
            let (mut best, mut at) = (f32::NEG_INFINITY, 0u32);
            for (i, yv) in (0u32..).zip(y) {
                fold_max(relu(yv + b), i, &mut best, &mut at);
            }
            *dst = best;
        }
    }
}

/// Windows per product: images are transformed in groups of about this many windows, so that
/// the 16 products are wide enough. The number of groups is a power of two (an even split over
/// 2 or 4 threads); it depends on the shape only, and no result depends on it.
const GROUP_TILES: usize = 512;

/// The inference forward of [`conv2d_relu_pool_forward`] by Winograd ([`applies`] holds):
/// writes `out: (N, O, PH, PW)`. Groups of images run in parallel, each computed by one task
/// (16 products `M_ξ = U_ξ·V_ξ` over the group's windows).
#[allow(clippy::too_many_arguments)]
pub(super) fn relu_pool_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &Conv2dGeom,
    plan: &Plan,
    ws: &mut Conv2dWorkspace,
    out: &mut [f32],
    threads: Threads,
) {
    let (ph, pw) = (plan.oh / 2, plan.ow / 2);
    let t = ph * pw;
    let n = out.len() / (g.o * t).max(1);
    let groups = (n * t)
        .div_ceil(GROUP_TILES)
        .next_power_of_two()
        .clamp(1, n.max(1));
    let group = n.div_ceil(groups).max(1);
    let threads = if n <= group { threads } else { Threads::Serial };
    let u = transform_weights(w, g.o, g.c);
    let cols_max = group * t;
    // scratch: V (16, C, cols), M (16, O, cols), four transformed rows (4, Wp), padded image
    let lens = [
        16 * g.c * cols_max,
        16 * g.o * cols_max,
        4 * plan.wp,
        plan.padded_len(g),
    ];
    let scratch_len = lens.iter().sum();
    ws.prepare(scratch_len);
    let scratch = &ws.scratch[..];
    let (xlen, olen) = (g.c * g.h * g.w, g.o * t);
    out.par_chunks_mut(group * olen)
        .zip(x.par_chunks(group * xlen))
        .for_each(|(out_g, x_g)| {
            with_scratch(scratch, scratch_len, |buf| {
                let [v, m, tr, xp] = carve(buf, lens);
                let cols = out_g.len() / olen * t;
                for (i, x_n) in x_g.chunks_exact(xlen).enumerate() {
                    let src: &[f32] = if plan.padded {
                        pad_into(x_n, g, plan, xp);
                        xp
                    } else {
                        x_n
                    };
                    transform_input(src, g, plan, (i * t, cols), v, tr);
                }
                // M_ξ = U_ξ · V_ξ
                let (o, c) = (g.o, g.c);
                for xi in 0..16 {
                    let um = ArrayView2::from_shape((o, c), &u[xi * o * c..][..o * c]);
                    let vm = ArrayView2::from_shape((c, cols), &v[xi * c * cols..][..c * cols]);
                    let mm =
                        ArrayViewMut2::from_shape((o, cols), &mut m[xi * o * cols..][..o * cols]);
                    gemm_into(
                        um.expect("(O, C)"),
                        vm.expect("(C, T)"),
                        mm.expect("(O, T)"),
                        false,
                        threads,
                    );
                }
                for (i, out_n) in out_g.chunks_exact_mut(olen).enumerate() {
                    transform_output(m, bias, g.o, (i * t, cols), out_n);
                }
            })
        });
}
