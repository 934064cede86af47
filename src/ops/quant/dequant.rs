//! Dequantisation of one stored row to `f32`, bit-exact with ggml's `dequantize_row_*` and
//! gguf-py's numpy dequantisers: f32 arithmetic, exact f16 → f32 conversion, and for Q4_1
//! `(d·q) + m` with two roundings (no fused multiply-add).

use super::types::{bf16_to_f32, f16_to_f32, QType};

/// The f16 at `b[0..2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// Decodes one row: `src` holds exactly `qtype.row_bytes(out.len())` bytes.
///
/// # Shapes
/// `src: (row_bytes(cols),)` → `out: (cols,)`.
///
/// # Panics
/// When `src.len()` is not the row size of `out.len()` values (checked by the callers).
pub(crate) fn dequantize_row_into(qtype: QType, src: &[u8], out: &mut [f32]) {
    assert_eq!(
        Some(src.len()),
        qtype.row_bytes(out.len()),
        "dequantize_row: {} bytes for {} {} values",
        src.len(),
        out.len(),
        qtype.name()
    );
    match qtype {
        QType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        QType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        QType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        QType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
                let d = f16_at(b);
                for (o, &q) in o.iter_mut().zip(&b[2..34]) {
                    *o = d * (q as i8) as f32;
                }
            }
        }
        QType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(18)) {
                let d = f16_at(b);
                let (lo, hi) = o.split_at_mut(16);
                for j in 0..16 {
                    let q = b[2 + j];
                    lo[j] = d * ((q & 15) as i32 - 8) as f32;
                    hi[j] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
        }
        QType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(20)) {
                let d = f16_at(b);
                let m = f16_at(&b[2..]);
                let (lo, hi) = o.split_at_mut(16);
                for j in 0..16 {
                    let q = b[4 + j];
                    // Two roundings, as ggml: the product, then the sum (Rust never fuses).
                    lo[j] = d * (q & 15) as f32 + m;
                    hi[j] = d * (q >> 4) as f32 + m;
                }
            }
        }
    }
}
