//! The AVX-512 VNNI integer kernel: two weight blocks per 512-bit register, `vpdpbusd` on the
//! activation planes (`256·Σu·h` then `+ Σu·l` in the same accumulator), one `f32` FMA per
//! block pair. See [`super::super::intdot`] for the contract.

use super::QType;
use std::arch::x86_64::*;

/// `out[i] = Σ_b (d_b·D_b)·Σu·v + m_b·S_b` for the `n` consecutive weight rows at `w`.
///
/// # Safety
/// The CPU has AVX-512F/BW/VNNI and F16C; `w` holds `n` rows of `rb` bytes of `qtype`
/// (Q8_0, Q4_0, Q4_1) with `nb` blocks each, `h` and `l` `32·nb` values, `ds` `2·nb`, `out` `n`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_rows(
    qtype: QType,
    w: *const u8,
    rb: usize,
    n: usize,
    nb: usize,
    h: *const i8,
    l: *const i8,
    ds: *const f32,
    out: *mut f32,
) {
    for i in 0..n {
        // SAFETY: row i < n is inside `w`, `out` has n values (caller's contract).
        unsafe {
            let p = w.add(i * rb);
            *out.add(i) = match qtype {
                QType::Q4_1 => row::<1>(p, nb, h, l, ds),
                QType::Q4_0 => row::<0>(p, nb, h, l, ds),
                _ => row::<8>(p, nb, h, l, ds),
            };
        }
    }
}

/// The unsigned bytes of blocks `b` and `b + 1` (kind `K`: 8 = Q8_0, 0 = Q4_0, 1 = Q4_1) in
/// one register: bytes `32k..32k+32` are block `b + k`'s elements in order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn bytes2<const K: u8>(p0: *const u8, p1: *const u8) -> __m512i {
    // SAFETY (caller): both blocks are inside the row.
    unsafe {
        if K == 8 {
            let a = _mm256_loadu_si256(p0.add(2) as *const __m256i);
            let b = _mm256_loadu_si256(p1.add(2) as *const __m256i);
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b);
            _mm512_xor_si512(z, _mm512_set1_epi8(-128))
        } else {
            let off = if K == 1 { 4 } else { 2 };
            let a = _mm256_broadcastsi128_si256(_mm_loadu_si128(p0.add(off) as *const __m128i));
            let b = _mm256_broadcastsi128_si256(_mm_loadu_si128(p1.add(off) as *const __m128i));
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b);
            // 128-bit lanes: low nibbles, high nibbles, low, high
            let sh = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
            _mm512_and_si512(sh, _mm512_set1_epi8(15))
        }
    }
}

/// The `(d, m)` f16 pair of a block as one `u32` (Q4_0 / Q8_0: `(d, d)`).
#[inline(always)]
unsafe fn dm<const K: u8>(p: *const u8) -> u32 {
    // SAFETY (caller): the block header is inside the row.
    unsafe {
        if K == 1 {
            (p as *const u32).read_unaligned()
        } else {
            let d = (p as *const u16).read_unaligned() as u32;
            d | (d << 16)
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn row<const K: u8>(
    w: *const u8,
    nb: usize,
    h: *const i8,
    l: *const i8,
    ds: *const f32,
) -> f32 {
    let bb = match K {
        8 => 34,
        0 => 18,
        _ => 20,
    };
    let mut acc = _mm512_setzero_ps();
    let mut accm = _mm_setzero_ps();
    // lanes 0..8 ← scale of block b (lane 0), 8..16 ← block b + 1 (lane 2)
    let idx = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut b = 0;
    while b + 2 <= nb {
        // SAFETY (caller): blocks b, b + 1 are inside the row and the activation planes.
        unsafe {
            let (p0, p1) = (w.add(bb * b), w.add(bb * (b + 1)));
            let u = bytes2::<K>(p0, p1);
            let hv = _mm512_loadu_si512(h.add(32 * b) as *const __m512i);
            let lv = _mm512_loadu_si512(l.add(32 * b) as *const __m512i);
            let hd = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, hv);
            let dot = _mm512_dpbusd_epi32(_mm512_slli_epi32::<8>(hd), u, lv);
            let pair =
                _mm_cvtsi64_si128((dm::<K>(p0) as u64 | ((dm::<K>(p1) as u64) << 32)) as i64);
            // [d0·D0, m0·S0, d1·D1, m1·S1]
            let sc = _mm_mul_ps(_mm_cvtph_ps(pair), _mm_loadu_ps(ds.add(2 * b)));
            accm = _mm_add_ps(accm, sc);
            let s = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(sc));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc);
        }
        b += 2;
    }
    let mut tail = 0.0f32;
    if b < nb {
        // SAFETY (caller): block b is inside the row; scalar like the reference.
        unsafe {
            let p = w.add(bb * b);
            let mut dot = 0i32;
            for j in 0..32 {
                let u = match K {
                    8 => *p.add(2 + j) as i8 as i32 + 128,
                    0 => ((*p.add(2 + j % 16) >> (4 * (j / 16))) & 15) as i32,
                    _ => ((*p.add(4 + j % 16) >> (4 * (j / 16))) & 15) as i32,
                };
                dot += u * (256 * *h.add(32 * b + j) as i32 + *l.add(32 * b + j) as i32);
            }
            let dmv = _mm_cvtph_ps(_mm_cvtsi32_si128(dm::<K>(p) as i32));
            let (d, m) = (_mm_cvtss_f32(dmv), _mm_cvtss_f32(_mm_movehdup_ps(dmv)));
            tail = (d * *ds.add(2 * b)) * dot as f32 + m * *ds.add(2 * b + 1);
        }
    }
    let m = _mm_add_ss(
        _mm_movehdup_ps(accm),
        _mm_movehl_ps(accm, _mm_movehdup_ps(accm)),
    );
    _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(m) + tail
}
