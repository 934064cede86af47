//! The AVX2 + FMA + F16C kernels (8 lanes); see [`super`] for the contract.

use super::x86::{elem, BF16, F16, F32};
use super::QType;
use std::arch::x86_64::*;

/// See [`super::dot_rows`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_rows<const R: usize>(
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
        // SAFETY: the same CPU features as this function.
        out[r] = unsafe { hsum(_mm256_add_ps(a[r], b[r])) } + extra[r];
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
                let v = [
                    i8x8(p.add(2)),
                    i8x8(p.add(10)),
                    i8x8(p.add(18)),
                    i8x8(p.add(26)),
                ];
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, [0.0; R]) }
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, [0.0; R]) }
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
                fma_block(
                    &mut $acc,
                    _mm256_broadcastss_ps(dm),
                    nibbles(p.add(4), 0),
                    &x,
                    $b,
                );
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, extra) }
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
unsafe fn float<const R: usize, const K: u8>(
    w: *const u8,
    n: usize,
    x: [*const f32; R],
) -> [f32; R] {
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, tail) }
}
