//! Products with few rows (`M ≤ 4`): decoding one token per sequence reads every weight once per
//! token, so these products are bound by memory bandwidth, not by arithmetic.
//!
//! [`super::matmul::gemm_into`] sends them here when the weight operand has a unit stride; the
//! two layouts of the weight get one kernel each, both streaming it from memory in order:
//! - **rows form** `b: (K, N)` row-major (GPT-2's `Conv1D` `[in, out]` weights): `K` is cut into
//!   fixed chunks of [`K_CHUNK`] consecutive rows (each a contiguous run of memory); each chunk adds
//!   `a[r, k]·b[k, :]` into its own partial row, and the partial rows are summed in chunk order;
//! - **dots form** `b = wᵀ` with `w: (N, K)` row-major (`nn.Linear` weights, the tied LM head):
//!   each output is one dot product over a contiguous row of `w`, in 16 interleaved lanes summed in
//!   a fixed order at the end.
//!
//! The chunking never depends on the thread count, and every element sees the same sequence of
//! IEEE multiplications and additions on every path (no FMA contraction: the loops are plain
//! `a·b + c` that the compiler vectorises lane by lane), so results are bit-identical for 1 or N
//! threads and on the AVX-512, AVX2 and baseline paths, which [`GemvPath::detect`] picks at run
//! time.

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Most rows of `a` this module takes (beyond, SGEMM's blocking wins).
pub const MAX_ROWS: usize = 4;

/// Rows of `b` per chunk in the rows form (a chunk is `K_CHUNK·N·4` contiguous bytes).
pub const K_CHUNK: usize = 64;

/// Outputs per parallel task in the dots form.
const N_CHUNK: usize = 64;

/// Lanes of the dots form's accumulators.
const LANES: usize = 16;

/// Below this many weight elements a product runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// Which instruction set the loops are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvPath {
    /// 512-bit vectors (`avx512f`).
    Avx512,
    /// 256-bit vectors (`avx2`).
    Avx2,
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
}

impl GemvPath {
    /// The widest path this CPU runs (detected at run time).
    pub fn detect() -> GemvPath {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return GemvPath::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return GemvPath::Avx2;
            }
        }
        GemvPath::Baseline
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            GemvPath::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            GemvPath::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            GemvPath::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `"avx512f"`, `"avx2"` or `"baseline"`.
    pub fn name(self) -> &'static str {
        match self {
            GemvPath::Avx512 => "avx512f",
            GemvPath::Avx2 => "avx2",
            GemvPath::Baseline => "baseline",
        }
    }
}

/// `out = a·b` (or `+=` when `accumulate`) for `M ≤ MAX_ROWS` rows, when `b` has a unit stride
/// along one axis; returns `false` (and does nothing) otherwise, for SGEMM to take it.
///
/// # Shapes
/// `a: (M, K)` any strides, `b: (K, N)`, `out: (M, N)` with unit column stride.
///
/// # Panics
/// When the shapes disagree or `path` is not available on this CPU.
pub fn try_gemv(
    path: GemvPath,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    out: ArrayViewMut2<f32>,
    accumulate: bool,
    parallel: bool,
) -> bool {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        b.nrows() == k && out.dim() == (m, n),
        "gemv: a {:?}, b {:?}, out {:?}",
        a.dim(),
        b.dim(),
        out.dim()
    );
    assert!(
        path.is_available(),
        "gemv: {} is not available",
        path.name()
    );
    if m == 0 || m > MAX_ROWS || n == 0 || k == 0 {
        return false;
    }
    if out.strides()[1] != 1 && n > 1 {
        return false;
    }
    let parallel = parallel && k * n >= PARALLEL_MIN;
    // the activation rows, contiguous (M·K floats: small)
    let rows: Vec<Vec<f32>> = a.rows().into_iter().map(|r| r.to_vec()).collect();
    let (rs, cs) = (b.strides()[0], b.strides()[1]);
    if cs == 1 || n == 1 {
        match b.to_slice() {
            Some(bs) => {
                rows_form(path, &rows, bs, k, n, out, accumulate, parallel);
                true
            }
            None => false,
        }
    } else if rs == 1 {
        // b = wᵀ with w (N, K) row-major: `b`'s memory is w's
        let w = b.t();
        match w.to_slice() {
            Some(ws) => {
                dots_form(path, &rows, ws, k, n, out, accumulate, parallel);
                true
            }
            None => false,
        }
    } else {
        false
    }
}

/// The rows form: `out[r, :] (+)= Σ_chunks Σ_{k in chunk} a[r, k]·b[k, :]`.
#[allow(clippy::too_many_arguments)]
fn rows_form(
    path: GemvPath,
    rows: &[Vec<f32>],
    b: &[f32],
    k: usize,
    n: usize,
    mut out: ArrayViewMut2<f32>,
    accumulate: bool,
    parallel: bool,
) {
    let m = rows.len();
    let chunks = k.div_ceil(K_CHUNK);
    // partial[c][r·N + j] for chunk c
    let mut partial = vec![0.0f32; chunks * m * n];
    let work = |(c, p): (usize, &mut [f32])| {
        let k0 = c * K_CHUNK;
        let k1 = (k0 + K_CHUNK).min(k);
        for (r, x) in rows.iter().enumerate() {
            let acc = &mut p[r * n..(r + 1) * n];
            let mut kk = k0;
            while kk + 4 <= k1 {
                let s = [x[kk], x[kk + 1], x[kk + 2], x[kk + 3]];
                axpy4(path, s, &b[kk * n..(kk + 4) * n], acc);
                kk += 4;
            }
            for kk in kk..k1 {
                axpy(path, x[kk], &b[kk * n..(kk + 1) * n], acc);
            }
        }
    };
    if parallel {
        partial.par_chunks_mut(m * n).enumerate().for_each(work);
    } else {
        partial.chunks_mut(m * n).enumerate().for_each(work);
    }
    // `out (+)= a·b`: the product is summed first, so accumulating adds exactly `a·b`
    let mut total = vec![0.0f32; n];
    for r in 0..m {
        total.fill(0.0);
        for c in 0..chunks {
            let p = &partial[c * m * n + r * n..c * m * n + (r + 1) * n];
            axpy(path, 1.0, p, &mut total);
        }
        for (o, t) in out.row_mut(r).iter_mut().zip(&total) {
            *o = if accumulate { *o + t } else { *t };
        }
    }
}

/// The dots form: `out[r, j] (+)= dot(a[r, :], w[j, :])`.
#[allow(clippy::too_many_arguments)]
fn dots_form(
    path: GemvPath,
    rows: &[Vec<f32>],
    w: &[f32],
    k: usize,
    n: usize,
    mut out: ArrayViewMut2<f32>,
    accumulate: bool,
    parallel: bool,
) {
    let m = rows.len();
    // results[j·M + r], then written into `out`
    let mut res = vec![0.0f32; n * m];
    let work = |(c, chunk): (usize, &mut [f32])| {
        let j0 = c * N_CHUNK;
        for (i, slot) in chunk.chunks_mut(m).enumerate() {
            let wr = &w[(j0 + i) * k..(j0 + i + 1) * k];
            for (r, x) in rows.iter().enumerate() {
                slot[r] = dot(path, x, wr);
            }
        }
    };
    if parallel {
        res.par_chunks_mut(N_CHUNK * m).enumerate().for_each(work);
    } else {
        res.chunks_mut(N_CHUNK * m).enumerate().for_each(work);
    }
    for r in 0..m {
        let mut o = out.row_mut(r);
        for (j, v) in o.iter_mut().enumerate() {
            let d = res[j * m + r];
            *v = if accumulate { *v + d } else { d };
        }
    }
}

/// `acc[j] = acc[j] + s·x[j]` on `path`.
#[allow(unsafe_code)]
fn axpy(path: GemvPath, s: f32, x: &[f32], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        match path {
            // SAFETY: the path's CPU feature was detected at run time (`try_gemv` asserts
            // `is_available`); the functions only run safe slice code compiled for it.
            GemvPath::Avx512 => return unsafe { simd::axpy_avx512(s, x, acc) },
            GemvPath::Avx2 => return unsafe { simd::axpy_avx2(s, x, acc) },
            GemvPath::Baseline => {}
        }
    }
    let _ = path;
    axpy_body(s, x, acc)
}

/// `acc[j] = acc[j] + ((s0·b0[j] + s1·b1[j]) + (s2·b2[j] + s3·b3[j]))` for four consecutive
/// rows `b = [b0 b1 b2 b3]` (each `acc.len()` long) on `path`.
#[allow(unsafe_code)]
fn axpy4(path: GemvPath, s: [f32; 4], b: &[f32], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        match path {
            // SAFETY: as in `axpy`.
            GemvPath::Avx512 => return unsafe { simd::axpy4_avx512(s, b, acc) },
            GemvPath::Avx2 => return unsafe { simd::axpy4_avx2(s, b, acc) },
            GemvPath::Baseline => {}
        }
    }
    let _ = path;
    axpy4_body(s, b, acc)
}

/// `Σ_j a[j]·w[j]` in [`LANES`] interleaved lanes, summed in lane order, on `path`.
#[allow(unsafe_code)]
fn dot(path: GemvPath, a: &[f32], w: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        match path {
            // SAFETY: as in `axpy`.
            GemvPath::Avx512 => return unsafe { simd::dot_avx512(a, w) },
            GemvPath::Avx2 => return unsafe { simd::dot_avx2(a, w) },
            GemvPath::Baseline => {}
        }
    }
    let _ = path;
    dot_body(a, w)
}

#[inline(always)]
fn axpy_body(s: f32, x: &[f32], acc: &mut [f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += s * v;
    }
}

#[inline(always)]
fn axpy4_body(s: [f32; 4], b: &[f32], acc: &mut [f32]) {
    let n = acc.len();
    let (b0, rest) = b.split_at(n);
    let (b1, rest) = rest.split_at(n);
    let (b2, b3) = rest.split_at(n);
    let b3 = &b3[..n];
    for j in 0..n {
        acc[j] += (s[0] * b0[j] + s[1] * b1[j]) + (s[2] * b2[j] + s[3] * b3[j]);
    }
}

#[inline(always)]
fn dot_body(a: &[f32], w: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ac, wc) = (a.chunks_exact(LANES), w.chunks_exact(LANES));
    let (at, wt) = (ac.remainder(), wc.remainder());
    for (x, y) in ac.zip(wc) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in at.iter().zip(wt).enumerate() {
        lanes[l] += x * y;
    }
    // fixed pairwise order: (0+8, 1+9, …), then halves again
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// The same bodies compiled with wider vector units enabled.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd {
    #[target_feature(enable = "avx512f")]
    pub(super) fn axpy_avx512(s: f32, x: &[f32], acc: &mut [f32]) {
        super::axpy_body(s, x, acc)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn axpy_avx2(s: f32, x: &[f32], acc: &mut [f32]) {
        super::axpy_body(s, x, acc)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn axpy4_avx512(s: [f32; 4], b: &[f32], acc: &mut [f32]) {
        super::axpy4_body(s, b, acc)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn axpy4_avx2(s: [f32; 4], b: &[f32], acc: &mut [f32]) {
        super::axpy4_body(s, b, acc)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn dot_avx512(a: &[f32], w: &[f32]) -> f32 {
        super::dot_body(a, w)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_avx2(a: &[f32], w: &[f32]) -> f32 {
        super::dot_body(a, w)
    }
}
