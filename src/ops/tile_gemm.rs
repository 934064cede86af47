//! Register-tiled products of small matrices, for the per-head products of attention.
//!
//! Attention multiplies, per `(batch row, head)`, blocks of at most 64 queries by at most `T`
//! keys through a head of 32 to 128 channels: products of a few hundred thousand FLOPs, where a
//! general SGEMM spends much of its time packing operands and dispatching (measured: 59–88
//! GFLOP/s on one thread for the char GPT's 64×32·32×128 products, against ~110 at peak). This
//! kernel packs nothing: the left operand is read element by element (broadcast, any strides),
//! the right operand and the output are row-major with a multiple of [`NPAD`] columns, so that
//! a tile of `MR` rows × `NR` columns of the output stays in registers through the whole inner
//! dimension. Each output tile may use its own inner range and width ([`Span`]), which is how
//! the causal mask skips the zero upper triangle.
//!
//! Arithmetic: every output element is `c = fma(a[p], b[p], c)` over `p` in increasing order,
//! starting from `0` (or from the output when accumulating). The tile shape does not enter the
//! result, so the AVX-512 and the AVX2 + FMA paths give the same bits; the portable path (no
//! FMA) rounds the product separately. Results do not depend on the thread count (the kernel is
//! serial; callers run it per task).

use super::quant::KernelPath;

/// The products' widths are multiples of this many columns.
pub const NPAD: usize = 32;

/// `n` rounded up to a multiple of [`NPAD`].
#[inline]
pub fn pad(n: usize) -> usize {
    n.div_ceil(NPAD) * NPAD
}

/// The height of a full output tile on this CPU's path (the unit of [`gemm_tiles`]'s spans).
pub fn tile_rows() -> usize {
    tile_rows_on(KernelPath::detected())
}

/// [`tile_rows`] of a given path.
fn tile_rows_on(path: KernelPath) -> usize {
    match path {
        KernelPath::Avx512 => 8,
        KernelPath::Avx2Fma => 6,
        KernelPath::Scalar => 4,
    }
}

/// A read-only matrix addressed element by element: `a(i, p) = data[i·rs + p·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    /// The elements, starting at `a(0, 0)`.
    pub data: &'a [f32],
    /// Row stride (elements).
    pub rs: usize,
    /// Column stride (elements).
    pub cs: usize,
}

/// The part of the product one tile of output rows computes: columns `0..n` (a multiple of
/// [`NPAD`]) over the inner range `k0..k1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Output columns, a multiple of [`NPAD`].
    pub n: usize,
    /// First inner index.
    pub k0: usize,
    /// One past the last inner index.
    pub k1: usize,
}

/// `c[i, j] (+)= Σ_{p ∈ k0..k1} a(i, p)·b[p·ldb + j]` for `i < m` and `j < n`, where the tile of
/// rows `i0..i1` (at most 8 rows, starting at a multiple of its height) takes `(n, k0, k1)` from
/// `span(i0, i1)`. Columns `n..` of `c` are left as they are; with `accumulate = false` the
/// columns `0..n` are overwritten (with zeros when `k0 ≥ k1`).
///
/// # Panics
/// When a span's `n` is not a multiple of [`NPAD`] or exceeds `ldb` or `ldc`, or an index falls
/// outside `a`, `b` or `c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tiles(
    m: usize,
    a: Strided,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    span: impl Fn(usize, usize) -> Span,
) {
    let path = KernelPath::detected();
    gemm_tiles_on(path, m, a, b, ldb, c, ldc, accumulate, span);
}

/// [`gemm_tiles`] on a given path (the CPU must support it).
#[allow(clippy::too_many_arguments)]
fn gemm_tiles_on(
    path: KernelPath,
    m: usize,
    a: Strided,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    span: impl Fn(usize, usize) -> Span,
) {
    assert!(
        path.is_available(),
        "gemm_tiles: {} is not available",
        path.name()
    );
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => {
            // SAFETY: the path is available (asserted): the CPU has AVX-512F and FMA.
            #[allow(unsafe_code)]
            unsafe {
                x86::avx512(m, a, b, ldb, c, ldc, accumulate, &span)
            }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => {
            // SAFETY: the path is available (asserted): the CPU has AVX2 and FMA.
            #[allow(unsafe_code)]
            unsafe {
                x86::avx2(m, a, b, ldb, c, ldc, accumulate, &span)
            }
        }
        _ => rows::<4, 16>(m, a, b, ldb, c, ldc, accumulate, &span, |x, y, z| x * y + z),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{rows, Span, Strided};

    /// `$name`: [`rows`] with `$mr`×`$nr` tiles, compiled with `$features` (one copy per
    /// instruction set; the arguments are passed as they are, so the accumulators stay in
    /// registers).
    macro_rules! path {
        ($(#[$doc:meta])* $name:ident, $features:literal, $mr:literal, $nr:literal) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) fn $name(
                m: usize,
                a: Strided,
                b: &[f32],
                ldb: usize,
                c: &mut [f32],
                ldc: usize,
                accumulate: bool,
                span: &dyn Fn(usize, usize) -> Span,
            ) {
                rows::<$mr, $nr>(m, a, b, ldb, c, ldc, accumulate, span, f32::mul_add)
            }
        };
    }

    path!(
        /// 8×32 tiles (16 accumulators of 16 lanes) for AVX-512.
        avx512, "avx512f,avx512vl,avx2,fma", 8, 32
    );
    path!(
        /// 6×16 tiles (12 accumulators of 8 lanes) for AVX2 + FMA.
        avx2, "avx2,fma", 6, 16
    );
}

/// The row loop of [`gemm_tiles`]: full tiles of `MR` rows, then single rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows<const MR: usize, const NR: usize>(
    m: usize,
    a: Strided,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    span: &dyn Fn(usize, usize) -> Span,
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let full = m / MR * MR;
    for i0 in (0..full).step_by(MR) {
        let s = span(i0, i0 + MR);
        tiles::<MR, NR>(i0, s, a, b, ldb, c, ldc, accumulate, fma);
    }
    for i0 in full..m {
        let s = span(i0, i0 + 1);
        tiles::<1, NR>(i0, s, a, b, ldb, c, ldc, accumulate, fma);
    }
}

/// Rows `i0..i0 + MR` of the output, in column tiles of `NR`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles<const MR: usize, const NR: usize>(
    i0: usize,
    s: Span,
    a: Strided,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    assert!(
        s.n.is_multiple_of(NPAD) && s.n <= ldb && s.n <= ldc,
        "gemm_tiles: span width {} (ldb {ldb}, ldc {ldc})",
        s.n
    );
    let (k0, k1) = (s.k0, s.k1.max(s.k0));
    if k1 > k0 {
        // every `a` and `b` element the tile reads is in bounds (checked once, not per load)
        let last_a = (i0 + MR - 1) * a.rs + (k1 - 1) * a.cs;
        assert!(last_a < a.data.len(), "gemm_tiles: a too short");
        assert!((k1 - 1) * ldb + s.n <= b.len(), "gemm_tiles: b too short");
    }
    assert!(
        (i0 + MR - 1) * ldc + s.n <= c.len(),
        "gemm_tiles: c too short"
    );
    for j0 in (0..s.n).step_by(NR) {
        let mut acc = [[0.0f32; NR]; MR];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                acc.copy_from_slice(&c[(i0 + r) * ldc + j0..][..NR]);
            }
        }
        // SAFETY: the asserts above bound every index read here: `a` up to
        // (i0 + MR − 1)·rs + (k1 − 1)·cs, `b` up to (k1 − 1)·ldb + n (j0 + NR ≤ n).
        #[allow(unsafe_code)]
        unsafe {
            let (ap, bp) = (a.data.as_ptr(), b.as_ptr());
            for p in k0..k1 {
                let brow = &*(bp.add(p * ldb + j0) as *const [f32; NR]);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = *ap.add((i0 + r) * a.rs + p * a.cs);
                    for (x, &bv) in acc.iter_mut().zip(brow) {
                        *x = fma(av, bv, *x);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            c[(i0 + r) * ldc + j0..][..NR].copy_from_slice(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 2.0)
            .collect()
    }

    /// The reference: the same chain per element in scalar code (fused on the FMA paths).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        path: KernelPath,
        m: usize,
        a: Strided,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
        span: impl Fn(usize, usize) -> Span,
    ) {
        let (tile, fused) = (tile_rows_on(path), path != KernelPath::Scalar);
        let full = m / tile * tile;
        for i in 0..m {
            let s = if i < full {
                span(i / tile * tile, i / tile * tile + tile)
            } else {
                span(i, i + 1)
            };
            for j in 0..s.n {
                let mut x = if accumulate { c[i * ldc + j] } else { 0.0 };
                for p in s.k0..s.k1 {
                    let (u, v) = (a.data[i * a.rs + p * a.cs], b[p * ldb + j]);
                    x = if fused { u.mul_add(v, x) } else { u * v + x };
                }
                c[i * ldc + j] = x;
            }
        }
    }

    #[test]
    fn matches_the_scalar_chain_bit_for_bit_with_spans_and_strides() {
        for path in KernelPath::available() {
            check_path(path);
        }
    }

    fn check_path(path: KernelPath) {
        for &(m, k, n) in &[
            (1, 1, 32),
            (7, 5, 64),
            (17, 33, 32),
            (64, 32, 128),
            (13, 70, 96),
        ] {
            let (lda, ldb, ldc) = (k + 3, pad(n), pad(n) + NPAD);
            let b = vals(k * ldb, 2);
            for transposed in [false, true] {
                // a(i, p) at i·rs + p·cs: row-major with a padded stride, or column-major
                let (a, rs, cs) = if transposed {
                    (vals(k * m, 3), 1, m)
                } else {
                    (vals(m * lda, 1), lda, 1)
                };
                let av = Strided { data: &a, rs, cs };
                for accumulate in [false, true] {
                    for causal in [false, true] {
                        // causal-like spans: rows i0..i1 see inner i0/2..i1, width pad(i1)
                        let span = |i0: usize, i1: usize| {
                            if causal {
                                Span {
                                    n: pad(i1).min(pad(n)),
                                    k0: i0 / 2,
                                    k1: i1.min(k),
                                }
                            } else {
                                Span {
                                    n: pad(n),
                                    k0: 0,
                                    k1: k,
                                }
                            }
                        };
                        let start = vals(m * ldc, 4);
                        let mut got = start.clone();
                        gemm_tiles_on(path, m, av, &b, ldb, &mut got, ldc, accumulate, span);
                        let mut want = start.clone();
                        reference(path, m, av, &b, ldb, &mut want, ldc, accumulate, span);
                        let what = format!(
                            "{}: {m}x{k}x{n} t={transposed} acc={accumulate}",
                            path.name()
                        );
                        assert_eq!(got, want, "{what}");
                        if causal {
                            continue;
                        }
                        // the full product against f64 sums; padding columns untouched
                        for i in 0..m {
                            for j in 0..ldc {
                                let x = got[i * ldc + j];
                                if j >= pad(n) {
                                    assert_eq!(x, start[i * ldc + j]);
                                    continue;
                                }
                                let mut y = if accumulate {
                                    start[i * ldc + j] as f64
                                } else {
                                    0.0
                                };
                                for p in 0..k {
                                    y += a[i * rs + p * cs] as f64 * b[p * ldb + j] as f64;
                                }
                                assert!((x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs()));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_fma_paths_give_the_same_bits() {
        let fma: Vec<KernelPath> = KernelPath::available()
            .into_iter()
            .filter(|&p| p != KernelPath::Scalar)
            .collect();
        let (m, k, n) = (29, 45, 96);
        let (a, b) = (vals(m * k, 5), vals(k * n, 6));
        let av = Strided {
            data: &a,
            rs: k,
            cs: 1,
        };
        let span = |_: usize, _: usize| Span { n, k0: 0, k1: k };
        let outs: Vec<Vec<f32>> = fma
            .iter()
            .map(|&path| {
                let mut c = vec![0.0f32; m * n];
                gemm_tiles_on(path, m, av, &b, n, &mut c, n, false, span);
                c
            })
            .collect();
        for (path, c) in fma.iter().zip(&outs).skip(1) {
            assert_eq!(c, &outs[0], "{} vs {}", path.name(), fma[0].name());
        }
    }

    #[test]
    fn an_empty_inner_range_writes_zeros_or_keeps_the_output() {
        let b = vec![1.0f32; 2 * NPAD];
        let a = vec![2.0f32; 4];
        let av = Strided {
            data: &a,
            rs: 2,
            cs: 1,
        };
        let span = |_: usize, _: usize| Span {
            n: NPAD,
            k0: 1,
            k1: 1,
        };
        let mut c = vec![5.0f32; 2 * NPAD];
        gemm_tiles(2, av, &b, NPAD, &mut c, NPAD, true, span);
        assert!(c.iter().all(|&x| x == 5.0));
        gemm_tiles(2, av, &b, NPAD, &mut c, NPAD, false, span);
        assert!(c.iter().all(|&x| x == 0.0));
    }
}
