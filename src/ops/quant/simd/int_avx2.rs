//! The AVX2 integer kernel: one weight block per 256-bit step, the unsigned weight bytes widened
//! to `i16` and multiplied with the activations' `i16` values by `vpmaddwd` (exact, no
//! saturation), one `f32` FMA per block. See [`super::super::intdot`] for the contract.

use super::QType;
use std::arch::x86_64::*;

/// As [`super::vnni512::dot_rows`], on AVX2 + FMA + F16C; `v` holds the `32·nb` activation
/// values as `i16`.
///
/// # Safety
/// As [`super::vnni512::dot_rows`], with AVX2, FMA and F16C.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_rows(
    qtype: QType,
    w: *const u8,
    rb: usize,
    n: usize,
    nb: usize,
    v: *const i16,
    ds: *const f32,
    out: *mut f32,
) {
    for i in 0..n {
        // SAFETY: row i < n is inside `w`, `out` has n values (caller's contract).
        unsafe {
            let p = w.add(i * rb);
            *out.add(i) = match qtype {
                QType::Q4_1 => row::<1>(p, nb, v, ds),
                QType::Q4_0 => row::<0>(p, nb, v, ds),
                _ => row::<8>(p, nb, v, ds),
            };
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row<const K: u8>(w: *const u8, nb: usize, v: *const i16, ds: *const f32) -> f32 {
    let bb = match K {
        8 => 34,
        0 => 18,
        _ => 20,
    };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut accm = _mm_setzero_ps();
    for b in 0..nb {
        // SAFETY (caller): block b is inside the row and the activation values.
        unsafe {
            let p = w.add(bb * b);
            let (lo, hi) = if K == 8 {
                let z = _mm256_xor_si256(
                    _mm256_loadu_si256(p.add(2) as *const __m256i),
                    _mm256_set1_epi8(-128),
                );
                (
                    _mm256_cvtepu8_epi16(_mm256_castsi256_si128(z)),
                    _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(z)),
                )
            } else {
                let q = _mm_loadu_si128(p.add(if K == 1 { 4 } else { 2 }) as *const __m128i);
                let m = _mm_set1_epi8(15);
                (
                    _mm256_cvtepu8_epi16(_mm_and_si128(q, m)),
                    _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(q), m)),
                )
            };
            let vp = v.add(32 * b);
            let dot = _mm256_add_epi32(
                _mm256_madd_epi16(lo, _mm256_loadu_si256(vp as *const __m256i)),
                _mm256_madd_epi16(hi, _mm256_loadu_si256(vp.add(16) as *const __m256i)),
            );
            let dmw = if K == 1 {
                (p as *const u32).read_unaligned()
            } else {
                let d = (p as *const u16).read_unaligned() as u32;
                d | (d << 16)
            };
            // [d·D, m·S]
            let sc = _mm_mul_ps(
                _mm_cvtph_ps(_mm_cvtsi32_si128(dmw as i32)),
                _mm_castsi128_ps(_mm_loadl_epi64(ds.add(2 * b) as *const __m128i)),
            );
            accm = _mm_add_ps(accm, sc);
            let s = _mm256_broadcastss_ps(sc);
            if b % 2 == 0 {
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, acc0);
            } else {
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, acc1);
            }
        }
    }
    let a = _mm256_add_ps(acc0, acc1);
    let a = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    let a = _mm_add_ss(a, _mm_movehdup_ps(a));
    _mm_cvtss_f32(a) + _mm_cvtss_f32(_mm_movehdup_ps(accm))
}
