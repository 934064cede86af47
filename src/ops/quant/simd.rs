//! The SIMD row-dot kernels (AVX2+FMA+F16C and AVX-512 on `f32` activations; AVX2 and
//! AVX-512 VNNI integer kernels on quantised activations), the only `unsafe` of the quantised
//! ops.
//!
//! Each kernel computes, for `R` activation rows at once (the weight row is decoded once),
//! `Σ_j w[j]·x[r][j]` with the per-block scales factored out: Q8_0 `d·Σ q·x`, Q4_0
//! `d·Σ (q − 8)·x`, Q4_1 `d·Σ q·x + m·Σx` (Σx per block precomputed by the caller). Two
//! independent vector accumulators (even / odd blocks) hide the FMA latency. Every lane and
//! reduction runs in a fixed order, so results do not depend on threads or on `R`.
//! [`super::kernels`] tests them against the scalar path.
#![allow(unsafe_code)]

use super::act::QAct;
use super::intdot::IntPath;
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
    assert!(
        xs.iter().all(|x| x.len() == cols),
        "dot: activation rows differ in length"
    );
    let rb = qtype.row_bytes(cols).expect("dot: row length");
    let n = out.len() / R;
    assert!(
        out.len() == n * R && w.len() == n * rb,
        "dot: weight rows / outputs"
    );
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
                KernelPath::Avx512 => avx512::dot_rows::<R>(qtype, w, rb, n, cols, x, s, o),
                KernelPath::Avx2Fma => avx2::dot_rows::<R>(qtype, w, rb, n, cols, x, s, o),
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

/// `out[i] = Σ_j w_i[j]·x[j]` for the consecutive weight rows `w_i` of `w` against one
/// quantised activation row, on an integer SIMD path (see [`super::intdot`]).
///
/// # Shapes
/// `w: (n · row_bytes(cols),)`, `a`: `cols` values → `out: (n,)`.
///
/// # Panics
/// When a length does not match or `path` is not available on this CPU.
pub(super) fn dot_rows_int(path: IntPath, qtype: QType, w: &[u8], a: &QAct, out: &mut [f32]) {
    let cols = a.cols();
    let rb = qtype.row_bytes(cols).expect("dot: row length");
    let n = out.len();
    assert!(
        w.len() == n * rb
            && a.l.len() == cols
            && (path != IntPath::Avx2 || a.v.len() == cols)
            && a.ds.len() == 2 * (cols / 32),
        "dot: weight rows / outputs / activation blocks"
    );
    assert!(
        matches!(qtype, QType::Q8_0 | QType::Q4_0 | QType::Q4_1),
        "dot: {} has no integer kernel",
        qtype.name()
    );
    assert!(path.is_available(), "dot: {} is not available", path.name());
    #[cfg(target_arch = "x86_64")]
    {
        let (wp, o) = (w.as_ptr(), out.as_mut_ptr());
        let (h, l, ds) = (a.h.as_ptr(), a.l.as_ptr(), a.ds.as_ptr());
        // SAFETY: the CPU features of `path` were detected at run time (`is_available`); `w`
        // holds exactly `n` rows of `rb` bytes, `out` n values, the planes `cols` values and
        // `ds` 2·cols/32 (asserted above); the kernels stay inside those ranges (unaligned).
        unsafe {
            match path {
                IntPath::Avx512Vnni => vnni512::dot_rows(qtype, wp, rb, n, cols / 32, h, l, ds, o),
                IntPath::Avx2 => {
                    int_avx2::dot_rows(qtype, wp, rb, n, cols / 32, a.v.as_ptr(), ds, o)
                }
                IntPath::Scalar => unreachable!("dot: scalar path is not SIMD"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rb, n);
        unreachable!("dot: no SIMD path on this architecture")
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod int_avx2;
#[cfg(target_arch = "x86_64")]
mod vnni512;

/// Shared by the x86 kernels: float-row element kinds and the scalar tail.
#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Element kinds of the float rows.
    pub(super) const F32: u8 = 0;
    pub(super) const F16: u8 = 1;
    pub(super) const BF16: u8 = 2;

    /// A scalar float-row element, for the tails.
    pub(super) unsafe fn elem<const K: u8>(w: *const u8, i: usize) -> f32 {
        // SAFETY (caller): `i` is inside the row.
        unsafe {
            match K {
                F32 => (w.add(4 * i) as *const f32).read_unaligned(),
                F16 => {
                    super::super::types::f16_to_f32((w.add(2 * i) as *const u16).read_unaligned())
                }
                _ => {
                    super::super::types::bf16_to_f32((w.add(2 * i) as *const u16).read_unaligned())
                }
            }
        }
    }
}
