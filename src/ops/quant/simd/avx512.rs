//! The AVX-512F kernels (16 lanes); see [`super`] for the contract.

use super::x86::{elem, BF16, F16, F32};
use super::QType;
use std::arch::x86_64::*;

/// See [`super::dot_rows`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
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
                let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    p.add(2) as *const __m128i
                )));
                let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    p.add(18) as *const __m128i
                )));
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, [0.0; R]) }
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, [0.0; R]) }
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, extra) }
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
unsafe fn float<const R: usize, const K: u8>(
    w: *const u8,
    n: usize,
    x: [*const f32; R],
) -> [f32; R] {
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
    // SAFETY: the same CPU features as this function.
    unsafe { finish(acc0, acc1, tail) }
}
