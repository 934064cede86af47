//! The SIMD row-dot kernels (AVX2+FMA+F16C and AVX-512), the only `unsafe` of the quantised ops.
//!
//! Each kernel computes, for `R` activation rows at once (the weight row is decoded once),
//! `Σ_j w[j]·x[r][j]` with the per-block scales factored out: Q8_0 `d·Σ q·x`, Q4_0
//! `d·Σ (q − 8)·x`, Q4_1 `d·Σ q·x + m·Σx` (Σx per block precomputed by the caller). Two
//! independent vector accumulators (even / odd blocks) hide the FMA latency. Every lane and
//! reduction runs in a fixed order, so results do not depend on threads or on `R`.
//! [`super::kernels`] tests them against the scalar path.
#![allow(unsafe_code)]

use super::kernels::KernelPath;
use super::types::QType;

/// `out[i·R + r] = Σ_j w_i[j]·xs[r][j]` for the consecutive weight rows `w_i` of `w`, on a SIMD
/// path.
///
/// # Shapes
/// `w: (n · row_bytes(cols),)`, `xs[r]: (cols,)`, `xsum[r]: (cols / 32,)` (per-block sums of
/// `xs[r]`, read for Q4_1 only) → `out: (n · R,)`.
///
/// # Panics
/// When a length does not match or `path` is not available on this CPU.
pub(super) fn dot_rows<const R: usize>(
    path: KernelPath,
    qtype: QType,
    w: &[u8],
    xs: [&[f32]; R],
    xsum: [&[f32]; R],
    out: &mut [f32],
) {
    let cols = xs[0].len();
    assert!(xs.iter().all(|x| x.len() == cols), "dot: activation rows differ in length");
    let rb = qtype.row_bytes(cols).expect("dot: row length");
    let n = out.len() / R;
    assert!(out.len() == n * R && w.len() == n * rb, "dot: weight rows / outputs");
    if qtype == QType::Q4_1 {
        assert!(xsum.iter().all(|s| s.len() == cols / 32), "dot: block sums");
    }
    assert!(path.is_available(), "dot: {} is not available", path.name());
    #[cfg(target_arch = "x86_64")]
    {
        let x = xs.map(|x| x.as_ptr());
        let s = xsum.map(|s| s.as_ptr());
        let (w, o) = (w.as_ptr(), out.as_mut_ptr());
        // SAFETY: the CPU features of `path` were detected at run time (`is_available`); `w`
        // holds exactly `n` rows of `rb` bytes, `out` n·R values, every `xs[r]` `cols` values,
        // `xsum[r]` `cols/32` values for Q4_1 (asserted above); the kernels read and write only
        // inside those ranges, with unaligned accesses.
        unsafe {
            match path {
                KernelPath::Avx512 => x86::avx512::dot_rows::<R>(qtype, w, rb, n, cols, x, s, o),
                KernelPath::Avx2Fma => x86::avx2::dot_rows::<R>(qtype, w, rb, n, cols, x, s, o),
                KernelPath::Scalar => unreachable!("dot: scalar path is not SIMD"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xsum, rb);
        unreachable!("dot: no SIMD path on this architecture")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::QType;

    /// Element kinds of the float rows.
    const F32: u8 = 0;
    const F16: u8 = 1;
    const BF16: u8 = 2;

    /// A scalar float-row element, for the tails.
    unsafe fn elem<const K: u8>(w: *const u8, i: usize) -> f32 {
        // SAFETY (caller): `i` is inside the row.
        unsafe {
            match K {
                F32 => (w.add(4 * i) as *const f32).read_unaligned(),
                F16 => super::super::types::f16_to_f32((w.add(2 * i) as *const u16).read_unaligned()),
                _ => super::super::types::bf16_to_f32((w.add(2 * i) as *const u16).read_unaligned()),
            }
        }
    }

    pub(super) mod avx512 {
        use super::{elem, QType, BF16, F16, F32};
        use std::arch::x86_64::*;

        /// See [`super::super::dot_rows`].
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        pub(in super::super) unsafe fn dot_rows<const R: usize>(
            qtype: QType,
            w: *const u8,
            rb: usize,
            n: usize,
            cols: usize,
            x: [*const f32; R],
            xsum: [*const f32; R],
            out: *mut f32,
        ) {
            let nb = cols / 32;
            macro_rules! each_row {
                ($f:expr) => {
                    for i in 0..n {
                        // SAFETY: forwarded from the caller's contract (row i < n).
                        unsafe {
                            let o: [f32; R] = $f(w.add(i * rb));
                            for r in 0..R {
                                *out.add(i * R + r) = o[r];
                            }
                        }
                    }
                };
            }
            match qtype {
                QType::Q8_0 => each_row!(|p| q8_0::<R>(p, nb, x)),
                QType::Q4_0 => each_row!(|p| q4_0::<R>(p, nb, x)),
                QType::Q4_1 => each_row!(|p| q4_1::<R>(p, nb, x, xsum)),
                QType::F32 => each_row!(|p| float::<R, F32>(p, cols, x)),
                QType::F16 => each_row!(|p| float::<R, F16>(p, cols, x)),
                QType::BF16 => each_row!(|p| float::<R, BF16>(p, cols, x)),
            }
        }

        /// `acc[r] += d · (lo·x[r][0..16] + hi·x[r][16..32])` for block `b`.
        #[inline]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn fma_block<const R: usize>(
            acc: &mut [__m512; R],
            d: __m512,
            lo: __m512,
            hi: __m512,
            x: &[*const f32; R],
            b: usize,
        ) {
            for r in 0..R {
                // SAFETY (caller): block b is inside every activation row.
                unsafe {
                    let xp = x[r].add(32 * b);
                    let s = _mm512_fmadd_ps(
                        hi,
                        _mm512_loadu_ps(xp.add(16)),
                        _mm512_mul_ps(lo, _mm512_loadu_ps(xp)),
                    );
                    acc[r] = _mm512_fmadd_ps(d, s, acc[r]);
                }
            }
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn finish<const R: usize>(a: [__m512; R], b: [__m512; R], extra: [f32; R]) -> [f32; R] {
            let mut out = [0.0f32; R];
            for r in 0..R {
                out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r])) + extra[r];
            }
            out
        }

        /// The f16 at `p` broadcast to 16 lanes.
        #[inline]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn scale(p: *const u8) -> __m512 {
            // SAFETY (caller): two bytes at p.
            let h = unsafe { (p as *const u16).read_unaligned() };
            _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
        }

        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn q8_0<const R: usize>(w: *const u8, nb: usize, x: [*const f32; R]) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
            macro_rules! block {
                ($b:expr, $acc:ident, $accm:ident) => {
                // SAFETY (caller): block b (34 bytes) is inside the row.
                unsafe {
                    let p = w.add(34 * $b);
                    let d = scale(p);
                    let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i)));
                    let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18) as *const __m128i)));
                    fma_block(&mut $acc, d, lo, hi, &x, $b);
                }
                };
            }
            let mut b = 0;
            while b + 2 <= nb {
                block!(b, acc0, accm0);
                block!(b + 1, acc1, accm1);
                b += 2;
            }
            if b < nb {
                block!(b, acc0, accm0);
            }
            finish(acc0, acc1, [0.0; R])
        }

        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn q4_0<const R: usize>(w: *const u8, nb: usize, x: [*const f32; R]) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
            let (mask, eight) = (_mm512_set1_epi32(15), _mm512_set1_epi32(8));
            macro_rules! block {
                ($b:expr, $acc:ident, $accm:ident) => {
                // SAFETY (caller): block b (18 bytes) is inside the row.
                unsafe {
                    let p = w.add(18 * $b);
                    let d = scale(p);
                    let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i));
                    let lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(q, mask), eight));
                    let hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32::<4>(q), eight));
                    fma_block(&mut $acc, d, lo, hi, &x, $b);
                }
                };
            }
            let mut b = 0;
            while b + 2 <= nb {
                block!(b, acc0, accm0);
                block!(b + 1, acc1, accm1);
                b += 2;
            }
            if b < nb {
                block!(b, acc0, accm0);
            }
            finish(acc0, acc1, [0.0; R])
        }

        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn q4_1<const R: usize>(
            w: *const u8,
            nb: usize,
            x: [*const f32; R],
            xsum: [*const f32; R],
        ) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
            let (mut accm0, mut accm1) = ([0.0f32; R], [0.0f32; R]);
            let mask = _mm512_set1_epi32(15);
            macro_rules! block {
                ($b:expr, $acc:ident, $accm:ident) => {
                // SAFETY (caller): block b (20 bytes) is inside the row, xsum[r] has nb values.
                unsafe {
                    let p = w.add(20 * $b);
                    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
                    let d = _mm512_broadcastss_ps(dm);
                    let m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                    let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(4) as *const __m128i));
                    let lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, mask));
                    let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(q));
                    fma_block(&mut $acc, d, lo, hi, &x, $b);
                    for r in 0..R {
                        $accm[r] += m * *xsum[r].add($b);
                    }
                }
                };
            }
            let mut b = 0;
            while b + 2 <= nb {
                block!(b, acc0, accm0);
                block!(b + 1, acc1, accm1);
                b += 2;
            }
            if b < nb {
                block!(b, acc0, accm0);
            }
            let mut extra = [0.0f32; R];
            for r in 0..R {
                extra[r] = accm0[r] + accm1[r];
            }
            finish(acc0, acc1, extra)
        }

        /// 16 float-row values starting at element `i`, as f32.
        #[inline]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn load16<const K: u8>(w: *const u8, i: usize) -> __m512 {
            // SAFETY (caller): elements i..i+16 are inside the row.
            unsafe {
                match K {
                    F32 => _mm512_loadu_ps(w.add(4 * i) as *const f32),
                    F16 => _mm512_cvtph_ps(_mm256_loadu_si256(w.add(2 * i) as *const __m256i)),
                    _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                        _mm256_loadu_si256(w.add(2 * i) as *const __m256i),
                    ))),
                }
            }
        }

        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn float<const R: usize, const K: u8>(w: *const u8, n: usize, x: [*const f32; R]) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
            let mut i = 0;
            while i + 2 * 16 <= n {
                // SAFETY (caller): elements i..i+2·16 are inside the row and every x[r].
                unsafe {
                    let (v0, v1) = (load16::<K>(w, i), load16::<K>(w, i + 16));
                    for r in 0..R {
                        acc0[r] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(x[r].add(i)), acc0[r]);
                        acc1[r] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(x[r].add(i + 16)), acc1[r]);
                    }
                }
                i += 2 * 16;
            }
            if i + 16 <= n {
                // SAFETY (caller): elements i..i+16 are inside the row and every x[r].
                unsafe {
                    let v = load16::<K>(w, i);
                    for r in 0..R {
                        acc0[r] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x[r].add(i)), acc0[r]);
                    }
                }
                i += 16;
            }
            let mut tail = [0.0f32; R];
            for j in i..n {
                // SAFETY (caller): j < n.
                let v = unsafe { elem::<K>(w, j) };
                for r in 0..R {
                    tail[r] += v * unsafe { *x[r].add(j) };
                }
            }
            finish(acc0, acc1, tail)
        }
    }

    pub(super) mod avx2 {
        use super::{elem, QType, BF16, F16, F32};
        use std::arch::x86_64::*;

        /// See [`super::super::dot_rows`].
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) unsafe fn dot_rows<const R: usize>(
            qtype: QType,
            w: *const u8,
            rb: usize,
            n: usize,
            cols: usize,
            x: [*const f32; R],
            xsum: [*const f32; R],
            out: *mut f32,
        ) {
            let nb = cols / 32;
            macro_rules! each_row {
                ($f:expr) => {
                    for i in 0..n {
                        // SAFETY: forwarded from the caller's contract (row i < n).
                        unsafe {
                            let o: [f32; R] = $f(w.add(i * rb));
                            for r in 0..R {
                                *out.add(i * R + r) = o[r];
                            }
                        }
                    }
                };
            }
            match qtype {
                QType::Q8_0 => each_row!(|p| q8_0::<R>(p, nb, x)),
                QType::Q4_0 => each_row!(|p| q4_0::<R>(p, nb, x)),
                QType::Q4_1 => each_row!(|p| q4_1::<R>(p, nb, x, xsum)),
                QType::F32 => each_row!(|p| float::<R, F32>(p, cols, x)),
                QType::F16 => each_row!(|p| float::<R, F16>(p, cols, x)),
                QType::BF16 => each_row!(|p| float::<R, BF16>(p, cols, x)),
            }
        }

        /// `acc[r] += d · Σ_i v[i]·x[r][8i..8i+8]` for block `b`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn fma_block<const R: usize>(
            acc: &mut [__m256; R],
            d: __m256,
            v: [__m256; 4],
            x: &[*const f32; R],
            b: usize,
        ) {
            for r in 0..R {
                // SAFETY (caller): block b is inside every activation row.
                unsafe {
                    let xp = x[r].add(32 * b);
                    let mut s = _mm256_mul_ps(v[0], _mm256_loadu_ps(xp));
                    s = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xp.add(8)), s);
                    s = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xp.add(16)), s);
                    s = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xp.add(24)), s);
                    acc[r] = _mm256_fmadd_ps(d, s, acc[r]);
                }
            }
        }

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn finish<const R: usize>(a: [__m256; R], b: [__m256; R], extra: [f32; R]) -> [f32; R] {
            let mut out = [0.0f32; R];
            for r in 0..R {
                out[r] = hsum(_mm256_add_ps(a[r], b[r])) + extra[r];
            }
            out
        }

        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn scale(p: *const u8) -> __m256 {
            // SAFETY (caller): two bytes at p.
            let h = unsafe { (p as *const u16).read_unaligned() };
            _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
        }

        /// 8 signed bytes at p → 8 f32.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn i8x8(p: *const u8) -> __m256 {
            // SAFETY (caller): eight bytes at p.
            unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn q8_0<const R: usize>(w: *const u8, nb: usize, x: [*const f32; R]) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
            macro_rules! block {
                ($b:expr, $acc:ident, $accm:ident) => {
                // SAFETY (caller): block b (34 bytes) is inside the row.
                unsafe {
                    let p = w.add(34 * $b);
                    let v = [i8x8(p.add(2)), i8x8(p.add(10)), i8x8(p.add(18)), i8x8(p.add(26))];
                    fma_block(&mut $acc, scale(p), v, &x, $b);
                }
                };
            }
            let mut b = 0;
            while b + 2 <= nb {
                block!(b, acc0, accm0);
                block!(b + 1, acc1, accm1);
                b += 2;
            }
            if b < nb {
                block!(b, acc0, accm0);
            }
            finish(acc0, acc1, [0.0; R])
        }

        /// The 32 nibbles of 16 bytes at p as f32, minus `off`: low nibbles then high nibbles.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn nibbles(p: *const u8, off: i32) -> [__m256; 4] {
            // SAFETY (caller): sixteen bytes at p.
            let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
            let qa = _mm256_cvtepu8_epi32(q);
            let qb = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(q));
            let (mask, o) = (_mm256_set1_epi32(15), _mm256_set1_epi32(off));
            let f = |v: __m256i| _mm256_cvtepi32_ps(_mm256_sub_epi32(v, o));
            [
                f(_mm256_and_si256(qa, mask)),
                f(_mm256_and_si256(qb, mask)),
                f(_mm256_srli_epi32::<4>(qa)),
                f(_mm256_srli_epi32::<4>(qb)),
            ]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn q4_0<const R: usize>(w: *const u8, nb: usize, x: [*const f32; R]) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
            macro_rules! block {
                ($b:expr, $acc:ident, $accm:ident) => {
                // SAFETY (caller): block b (18 bytes) is inside the row.
                unsafe {
                    let p = w.add(18 * $b);
                    fma_block(&mut $acc, scale(p), nibbles(p.add(2), 8), &x, $b);
                }
                };
            }
            let mut b = 0;
            while b + 2 <= nb {
                block!(b, acc0, accm0);
                block!(b + 1, acc1, accm1);
                b += 2;
            }
            if b < nb {
                block!(b, acc0, accm0);
            }
            finish(acc0, acc1, [0.0; R])
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn q4_1<const R: usize>(
            w: *const u8,
            nb: usize,
            x: [*const f32; R],
            xsum: [*const f32; R],
        ) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
            let (mut accm0, mut accm1) = ([0.0f32; R], [0.0f32; R]);
            macro_rules! block {
                ($b:expr, $acc:ident, $accm:ident) => {
                // SAFETY (caller): block b (20 bytes) is inside the row, xsum[r] has nb values.
                unsafe {
                    let p = w.add(20 * $b);
                    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
                    let m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                    fma_block(&mut $acc, _mm256_broadcastss_ps(dm), nibbles(p.add(4), 0), &x, $b);
                    for r in 0..R {
                        $accm[r] += m * *xsum[r].add($b);
                    }
                }
                };
            }
            let mut b = 0;
            while b + 2 <= nb {
                block!(b, acc0, accm0);
                block!(b + 1, acc1, accm1);
                b += 2;
            }
            if b < nb {
                block!(b, acc0, accm0);
            }
            let mut extra = [0.0f32; R];
            for r in 0..R {
                extra[r] = accm0[r] + accm1[r];
            }
            finish(acc0, acc1, extra)
        }

        /// 8 float-row values starting at element `i`, as f32.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load8<const K: u8>(w: *const u8, i: usize) -> __m256 {
            // SAFETY (caller): elements i..i+8 are inside the row.
            unsafe {
                match K {
                    F32 => _mm256_loadu_ps(w.add(4 * i) as *const f32),
                    F16 => _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i)),
                    _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                        _mm_loadu_si128(w.add(2 * i) as *const __m128i),
                    ))),
                }
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn float<const R: usize, const K: u8>(w: *const u8, n: usize, x: [*const f32; R]) -> [f32; R] {
            let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
            let mut i = 0;
            while i + 2 * 8 <= n {
                // SAFETY (caller): elements i..i+2·8 are inside the row and every x[r].
                unsafe {
                    let (v0, v1) = (load8::<K>(w, i), load8::<K>(w, i + 8));
                    for r in 0..R {
                        acc0[r] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(x[r].add(i)), acc0[r]);
                        acc1[r] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(x[r].add(i + 8)), acc1[r]);
                    }
                }
                i += 2 * 8;
            }
            if i + 8 <= n {
                // SAFETY (caller): elements i..i+8 are inside the row and every x[r].
                unsafe {
                    let v = load8::<K>(w, i);
                    for r in 0..R {
                        acc0[r] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x[r].add(i)), acc0[r]);
                    }
                }
                i += 8;
            }
            let mut tail = [0.0f32; R];
            for j in i..n {
                // SAFETY (caller): j < n.
                let v = unsafe { elem::<K>(w, j) };
                for r in 0..R {
                    tail[r] += v * unsafe { *x[r].add(j) };
                }
            }
            finish(acc0, acc1, tail)
        }
    }
}
