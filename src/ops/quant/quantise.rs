//! Quantisation of `f32` rows with ggml's reference quantisers (`quantize_row_*_ref` in
//! ggml-quants.c), which gguf-py's numpy quantisers and `llama-quantize` (without an importance
//! matrix) reproduce: the same f32 operations in the same order, so the bytes agree exactly.

use super::types::{f32_to_bf16, f32_to_f16, QType};

/// ggml's `roundf`-based rounding as used by `quantize_row_q8_0_ref`: half away from zero.
#[inline]
fn round_half_away(x: f32) -> f32 {
    x.round()
}

/// Encodes one row of `src.len()` values into `out` (`qtype.row_bytes(src.len())` bytes).
///
/// # Shapes
/// `src: (cols,)` → `out: (row_bytes(cols),)`.
///
/// # Panics
/// When the sizes do not agree (checked by the callers).
pub(crate) fn quantize_row_into(qtype: QType, src: &[f32], out: &mut [u8]) {
    assert_eq!(
        Some(out.len()),
        qtype.row_bytes(src.len()),
        "quantize_row sizes"
    );
    match qtype {
        QType::F32 => {
            for (o, &x) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        QType::F16 => {
            for (o, &x) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_f16(x).to_le_bytes());
            }
        }
        QType::BF16 => {
            for (o, &x) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
            }
        }
        QType::Q8_0 => {
            for (o, x) in out.chunks_exact_mut(34).zip(src.chunks_exact(32)) {
                // amax = max |x|; d = amax / 127; q = roundf(x / d) (as x · (1/d)).
                let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                o[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                for (q, &v) in o[2..].iter_mut().zip(x) {
                    *q = round_half_away(v * id) as i8 as u8;
                }
            }
        }
        QType::Q4_0 => {
            for (o, x) in out.chunks_exact_mut(18).zip(src.chunks_exact(32)) {
                // The value of largest magnitude (first one on ties) maps to −8: d = max / −8.
                let (mut amax, mut max) = (0.0f32, 0.0f32);
                for &v in x {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                o[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                for j in 0..16 {
                    let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
                    let q1 = ((x[16 + j] * id + 8.5) as i8).min(15) as u8;
                    o[2 + j] = q0 | (q1 << 4);
                }
            }
        }
        QType::Q4_1 => {
            for (o, x) in out.chunks_exact_mut(20).zip(src.chunks_exact(32)) {
                // d = (max − min) / 15, m = min; q = trunc((x − min) / d + 0.5), at most 15.
                let (mut min, mut max) = (f32::MAX, -f32::MAX);
                for &v in x {
                    if v < min {
                        min = v;
                    }
                    if v > max {
                        max = v;
                    }
                }
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                o[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                o[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
                for j in 0..16 {
                    let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
                    let q1 = (((x[16 + j] - min) * id + 0.5) as i8).min(15) as u8;
                    o[4 + j] = q0 | (q1 << 4);
                }
            }
        }
    }
}
