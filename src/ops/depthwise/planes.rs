//! The per-plane loops of the depthwise convolution, compiled three times (AVX-512, AVX2+FMA and
//! portable Rust) and chosen at run time with [`KernelPath`].
//!
//! The three builds are the same safe Rust source: the SIMD ones are that source inlined into a
//! function compiled with the CPU features enabled, so the compiler vectorises the contiguous
//! row loops with 16 (8) lanes and fused multiply-adds; the portable one is the plain
//! `o += w·x` of the baseline target. The only `unsafe` here is calling a feature-enabled
//! function, after the features were detected.
//!
//! Rounding: the SIMD builds fuse `w·x + o` (one rounding instead of two) and sum the weight
//! gradient in 16 lanes, so they differ from the portable build within f32 rounding; each build
//! is deterministic on its own (no result depends on the thread count).
#![allow(unsafe_code)]

use super::super::conv2d::Conv2dGeom;
pub use crate::ops::quant::KernelPath;

/// Per kernel column `v`: the output columns `[j0, j1)` whose input column lies inside the
/// image, and the input column of `j0`.
pub(super) type Cols = [(usize, usize, usize)];

/// The input row of output row `i` and kernel row `u`, or `None` in the padding.
#[inline(always)]
fn input_row(g: &Conv2dGeom, i: usize, u: usize) -> Option<usize> {
    let y = (i * g.sh + u * g.dh) as isize - g.ph as isize;
    (y >= 0 && (y as usize) < g.h).then_some(y as usize)
}

/// Where input column `c` lives in a row split into its `sw` column phases
/// (`[c ≡ 0 mod sw | c ≡ 1 | …]`, each phase in column order): every strided tap then reads a
/// contiguous run. Stride 1 is the identity.
#[derive(Debug, Clone)]
pub(super) struct Phases {
    sw: usize,
    /// Offset of each phase inside a row.
    start: Vec<usize>,
}

impl Phases {
    pub(super) fn new(g: &Conv2dGeom) -> Phases {
        let sw = g.sw.max(1);
        let mut start = Vec::with_capacity(sw);
        let mut at = 0;
        for r in 0..sw {
            start.push(at);
            at += g.w.saturating_sub(r).div_ceil(sw);
        }
        Phases { sw, start }
    }

    #[inline(always)]
    fn at(&self, c: usize) -> usize {
        if self.sw == 1 {
            c
        } else {
            self.start[c % self.sw] + c / self.sw
        }
    }

    /// `dst[y, at(c)] = src[y, c]` for every row of a `(H, W)` plane.
    fn split(&self, src: &[f32], w: usize, dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
            for (r, &at) in self.start.iter().enumerate() {
                let phase = s[r.min(w)..].iter().step_by(self.sw);
                d[at..].iter_mut().zip(phase).for_each(|(o, &v)| *o = v);
            }
        }
    }

    /// `dst[y, c] += src[y, at(c)]`: the adjoint of [`Phases::split`].
    fn merge_add(&self, src: &[f32], w: usize, dst: &mut [f32]) {
        for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
            for (r, &at) in self.start.iter().enumerate() {
                let phase = d[r.min(w)..].iter_mut().step_by(self.sw);
                phase.zip(&s[at..]).for_each(|(o, &v)| *o += v);
            }
        }
    }
}

#[inline(always)]
fn madd<const FMA: bool>(w: f32, x: f32, o: f32) -> f32 {
    if FMA {
        w.mul_add(x, o)
    } else {
        o + w * x
    }
}

/// `Σ a·b`: sequential (portable) or in 16 lanes summed in a fixed order (SIMD).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    if !FMA {
        return a.iter().zip(b).map(|(x, y)| x * y).sum();
    }
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ar.iter().zip(br) {
        tail = x.mul_add(*y, tail);
    }
    acc.iter().sum::<f32>() + tail
}

/// The arguments of one plane's forward.
pub(super) struct Fwd<'a> {
    /// Input plane `(H, W)`.
    pub x: &'a [f32],
    /// Kernel `(kh, kw)`.
    pub wk: &'a [f32],
    pub bias: f32,
    /// The epilogue's factor for this channel (applied before the bias), or `None`.
    pub scale: Option<f32>,
    pub clamp: Option<(f32, f32)>,
    /// Scratch of `H·W` floats (strided convolutions).
    pub tmp: &'a mut [f32],
    /// Output plane `(OH, OW)`.
    pub out: &'a mut [f32],
}

#[inline(always)]
fn forward_body<const FMA: bool>(g: &Conv2dGeom, cols: &Cols, ph: &Phases, a: Fwd<'_>) {
    let ow = g.out_hw().1;
    let src: &[f32] = if g.sw == 1 {
        a.x
    } else {
        ph.split(a.x, g.w, a.tmp);
        a.tmp
    };
    for (i, orow) in a.out.chunks_exact_mut(ow).enumerate() {
        orow.fill(if a.scale.is_some() { 0.0 } else { a.bias });
        for u in 0..g.kh {
            let Some(y) = input_row(g, i, u) else {
                continue;
            };
            let xrow = &src[y * g.w..][..g.w];
            for (v, &(j0, j1, first)) in cols.iter().enumerate() {
                if j0 == j1 {
                    continue;
                }
                let wv = a.wk[u * g.kw + v];
                let s = ph.at(first);
                let xs = &xrow[s..s + (j1 - j0)];
                for (o, &xv) in orow[j0..j1].iter_mut().zip(xs) {
                    *o = madd::<FMA>(wv, xv, *o);
                }
            }
        }
        if let Some(s) = a.scale {
            for o in orow.iter_mut() {
                *o = madd::<FMA>(*o, s, a.bias);
            }
        }
        if let Some((lo, hi)) = a.clamp {
            for o in orow.iter_mut() {
                *o = o.clamp(lo, hi);
            }
        }
    }
}

/// The arguments of one plane's backward.
pub(super) struct Bwd<'a> {
    /// Input plane `(H, W)` of the forward.
    pub x: &'a [f32],
    /// Kernel `(kh, kw)`.
    pub wk: &'a [f32],
    /// `dout` plane `(OH, OW)`.
    pub dout: &'a [f32],
    /// Weight-gradient partials `(kh·kw)`, overwritten.
    pub dw: &'a mut [f32],
    /// Input-gradient plane `(H, W)` to overwrite, or empty.
    pub dx: &'a mut [f32],
    /// Scratch of `2·H·W` floats (strided convolutions).
    pub tmp: &'a mut [f32],
}

#[inline(always)]
fn backward_body<const FMA: bool>(g: &Conv2dGeom, cols: &Cols, ph: &Phases, a: Bwd<'_>) {
    let ow = g.out_hw().1;
    let want_dx = !a.dx.is_empty();
    let hw = g.h * g.w;
    let (xs_tmp, dx_tmp) = a.tmp.split_at_mut(hw.min(a.tmp.len()));
    let src: &[f32] = if g.sw == 1 {
        a.x
    } else {
        ph.split(a.x, g.w, xs_tmp);
        xs_tmp
    };
    a.dw.fill(0.0);
    let dxs: &mut [f32] = if g.sw == 1 { a.dx } else { &mut dx_tmp[..] };
    if want_dx {
        dxs[..hw].fill(0.0);
    }
    for (i, drow) in a.dout.chunks_exact(ow).enumerate() {
        for u in 0..g.kh {
            let Some(y) = input_row(g, i, u) else {
                continue;
            };
            let xrow = &src[y * g.w..][..g.w];
            for (v, &(j0, j1, first)) in cols.iter().enumerate() {
                if j0 == j1 {
                    continue;
                }
                let s = ph.at(first);
                let d = &drow[j0..j1];
                // forward: out[i,j] += w[u,v]·x[y, first + (j − j0)·sw]
                //   ⇒ dw[u,v] += Σ_j dout[i,j]·x[…];  dx[y, …] += w[u,v]·dout[i,j]
                a.dw[u * g.kw + v] += dot::<FMA>(d, &xrow[s..s + d.len()]);
                if want_dx {
                    let wv = a.wk[u * g.kw + v];
                    let dst = &mut dxs[y * g.w + s..][..d.len()];
                    for (o, &dv) in dst.iter_mut().zip(d) {
                        *o = madd::<FMA>(wv, dv, *o);
                    }
                }
            }
        }
    }
    if want_dx && g.sw != 1 {
        a.dx.fill(0.0);
        ph.merge_add(&dx_tmp[..hw], g.w, a.dx);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn forward_avx512(g: &Conv2dGeom, cols: &Cols, ph: &Phases, a: Fwd<'_>) {
        forward_body::<true>(g, cols, ph, a)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn forward_avx2(g: &Conv2dGeom, cols: &Cols, ph: &Phases, a: Fwd<'_>) {
        forward_body::<true>(g, cols, ph, a)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn backward_avx512(g: &Conv2dGeom, cols: &Cols, ph: &Phases, a: Bwd<'_>) {
        backward_body::<true>(g, cols, ph, a)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn backward_avx2(g: &Conv2dGeom, cols: &Cols, ph: &Phases, a: Bwd<'_>) {
        backward_body::<true>(g, cols, ph, a)
    }
}

/// One output plane, `out[i, j] = clamp(s·Σ_{u,v} w[u, v] · xpad[i·sh + u·dh, j·sw + v·dw] + b)`,
/// on `path`.
///
/// # Panics
/// When `path` is not available on this CPU.
pub(super) fn plane_forward(
    path: KernelPath,
    g: &Conv2dGeom,
    cols: &Cols,
    ph: &Phases,
    a: Fwd<'_>,
) {
    assert!(
        path.is_available(),
        "depthwise: {} is not available",
        path.name()
    );
    match path {
        KernelPath::Scalar => forward_body::<false>(g, cols, ph, a),
        // SAFETY: the CPU features these functions enable were detected at run time
        // (`is_available` above); they only index slices (bounds-checked).
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => unsafe { x86::forward_avx512(g, cols, ph, a) },
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => unsafe { x86::forward_avx2(g, cols, ph, a) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => forward_body::<false>(g, cols, ph, a),
    }
}

/// One plane's weight-gradient partials and (when `a.dx` is not empty) input gradient, on `path`.
///
/// # Panics
/// When `path` is not available on this CPU.
pub(super) fn plane_backward(
    path: KernelPath,
    g: &Conv2dGeom,
    cols: &Cols,
    ph: &Phases,
    a: Bwd<'_>,
) {
    assert!(
        path.is_available(),
        "depthwise: {} is not available",
        path.name()
    );
    match path {
        KernelPath::Scalar => backward_body::<false>(g, cols, ph, a),
        // SAFETY: as in `plane_forward`.
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => unsafe { x86::backward_avx512(g, cols, ph, a) },
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => unsafe { x86::backward_avx2(g, cols, ph, a) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => backward_body::<false>(g, cols, ph, a),
    }
}
