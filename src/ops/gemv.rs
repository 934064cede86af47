//! Products with few rows (`M ≤ 8`): decoding one token per sequence reads every weight once per
//! token, so these products are bound by memory bandwidth, not by arithmetic.
//!
//! [`super::matmul::gemm_into`] sends them here when the weight operand has a unit stride; the
//! two layouts of the weight get one kernel each, both streaming it from memory in order:
//! - **rows form** `b: (K, N)` row-major (GPT-2's `Conv1D` `[in, out]` weights): `K` is cut into
//!   fixed chunks of [`K_CHUNK`] consecutive rows (each a contiguous run of memory); each chunk adds
//!   `a[r, k]·b[k, :]` into its own partial row, eight rows of `b` per pass over it (one at a
//!   time for a tail of fewer than eight), and the partial rows are summed in chunk order;
//! - **dots form** `b = wᵀ` with `w: (N, K)` row-major (`nn.Linear` weights, the tied LM head):
//!   each output is one dot product over a contiguous row of `w`, in 16 interleaved lanes summed in
//!   a fixed order at the end.
//!
//! The chunking never depends on the thread count, and every element sees the same sequence of
//! IEEE multiplications and additions on every path (no FMA contraction: the loops are plain
//! `a·b + c` that the compiler vectorises lane by lane), so results are bit-identical for 1 or N
//! threads and on the AVX-512, AVX2 and portable paths, which [`KernelPath::detected`] picks
//! at run time (the quantised and depthwise kernels' choice).

pub use crate::ops::quant::KernelPath;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Most rows of `a` this module takes (beyond, SGEMM's blocking wins; at five to eight rows
/// these kernels beat it by 1.4× in GPT-2's five-sequence sampling).
pub const MAX_ROWS: usize = 8;

/// Rows of `b` per chunk in the rows form (a chunk is `K_CHUNK·N·4` contiguous bytes).
pub const K_CHUNK: usize = 64;

/// Outputs per parallel task in the dots form.
const N_CHUNK: usize = 64;

/// Below this many weight elements a product runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// `out = a·b` (or `+=` when `accumulate`) for `M ≤ MAX_ROWS` rows, when `b` has a unit stride
/// along one axis; returns `false` (and does nothing) otherwise, for SGEMM to take it.
///
/// # Shapes
/// `a: (M, K)` any strides, `b: (K, N)`, `out: (M, N)` with unit column stride.
///
/// # Panics
/// When the shapes disagree or `path` is not available on this CPU.
pub fn try_gemv(
    path: KernelPath,
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
    path: KernelPath,
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
        // each block of eight weight rows is used by every activation row while it is in
        // cache (the order of each row's operations is that of a pass per row)
        let mut kk = k0;
        while kk + 8 <= k1 {
            let bb = &b[kk * n..(kk + 8) * n];
            for (acc, x) in p.chunks_exact_mut(n).zip(rows) {
                axpy8(path, &x[kk..kk + 8], bb, acc);
            }
            kk += 8;
        }
        for kk in kk..k1 {
            let bb = &b[kk * n..(kk + 1) * n];
            for (acc, x) in p.chunks_exact_mut(n).zip(rows) {
                axpy(path, x[kk], bb, acc);
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
    path: KernelPath,
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

/// For each loop body `NAME_body`, a function `NAME(path, args…)` that runs it compiled for
/// `path`'s vector width (the same IEEE operations on every path, only wider).
macro_rules! on_path {
    ($($name:ident / $body:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        $(
            #[allow(unsafe_code)]
            fn $name(path: KernelPath, $($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    fn wide($($arg: $ty),*) $(-> $ret)? {
                        $body($($arg),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    fn narrow($($arg: $ty),*) $(-> $ret)? {
                        $body($($arg),*)
                    }
                    match path {
                        // SAFETY: `try_gemv` asserted that the path's CPU features are present;
                        // the bodies only run safe slice code.
                        KernelPath::Avx512 => return unsafe { wide($($arg),*) },
                        KernelPath::Avx2Fma => return unsafe { narrow($($arg),*) },
                        KernelPath::Scalar => {}
                    }
                }
                let _ = path;
                $body($($arg),*)
            }
        )*
    };
}

on_path! {
    axpy / axpy_body(s: f32, x: &[f32], acc: &mut [f32]);
    axpy8 / axpy8_body(s: &[f32], b: &[f32], acc: &mut [f32]);
    dot / dot_body(a: &[f32], w: &[f32]) -> f32;
}

/// `acc[j] = acc[j] + s·x[j]` (a multiply and a separate add: the same bits on every vector
/// width; inline it into a [`super::wide`] loop for the wide copies).
#[inline(always)]
pub(crate) fn axpy_body(s: f32, x: &[f32], acc: &mut [f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += s * v;
    }
}

/// `acc[j] = acc[j] + (lo + hi)` with `lo = (s0·b0[j] + s1·b1[j]) + (s2·b2[j] + s3·b3[j])` and
/// `hi = (s4·b4[j] + s5·b5[j]) + (s6·b6[j] + s7·b7[j])`, for eight consecutive rows
/// `b = [b0 … b7]`, each `acc.len()` long: eight streams from memory per pass over `acc`
/// (10–15 % more of the read bandwidth than four rows per pass on a 2-core AMD EPYC).
#[inline(always)]
fn axpy8_body(s: &[f32], b: &[f32], acc: &mut [f32]) {
    let n = acc.len();
    let s = &s[..8];
    let (b0, rest) = b.split_at(n);
    let (b1, rest) = rest.split_at(n);
    let (b2, rest) = rest.split_at(n);
    let (b3, rest) = rest.split_at(n);
    let (b4, rest) = rest.split_at(n);
    let (b5, rest) = rest.split_at(n);
    let (b6, b7) = rest.split_at(n);
    let b7 = &b7[..n];
    for j in 0..n {
        let lo = (s[0] * b0[j] + s[1] * b1[j]) + (s[2] * b2[j] + s[3] * b3[j]);
        let hi = (s[4] * b4[j] + s[5] * b5[j]) + (s[6] * b6[j] + s[7] * b7[j]);
        acc[j] += lo + hi;
    }
}

/// `Σ_j a[j]·w[j]` in 16 interleaved lanes, folded in a fixed order ([`super::lanes::dot`]).
#[inline(always)]
fn dot_body(a: &[f32], w: &[f32]) -> f32 {
    super::lanes::dot(a, w)
}
