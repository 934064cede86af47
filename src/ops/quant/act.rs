//! Quantisation of one `f32` activation row for the integer dot products ([`super::intdot`]):
//! blocks of 32 values as two `i8` planes (about 16-bit precision) with an `f32` scale, and the
//! per-block terms the weight encodings need.
//!
//! Per block `b` of 32 values: `d = max|x| / V` with `V = 32639`, `v = round(x / d)` (half to even) (so
//! `|v| ≤ V`), split as `v = 256·h + l` with `h = (v + 128) >> 8` and `l = v − 256·h`, both in
//! `i8` (`h ∈ [−127, 127]`, `l ∈ [−128, 127]`). A weight block of unsigned bytes `u` then
//! gives the exact integer `Σ u·v = 256·Σ u·h + Σ u·l` from two `u8 × i8` dot products. The
//! rounding error is at most `max|x| / (2V)` per value (one part in 65 278 of the block's
//! largest magnitude), about 256 times smaller than llama.cpp's single `i8` plane (Q8_1).

use super::types::QType;

/// Largest `|v|`: keeps `h = (v + 128) >> 8` within `[−127, 127]`.
pub(crate) const VMAX: f32 = 32639.0;
/// `1.5·2²³`: adding and subtracting it rounds an `f32` of magnitude `< 2²²` to an integer.
const ROUND: f32 = 12_582_912.0;

/// One quantised activation row: planes `h`, `l` (`cols` values each) and per block the pair
/// `(D, S)` the kernels multiply with a weight block's `(d, m)`: `D` the scale, `S` the block
/// term of the weight encoding (Q4_1: `Σx` of the unquantised values, in `f32`; Q4_0: `−8·D·Σv`; Q8_0:
/// `−128·D·Σv`, the offsets that make the weights unsigned).
pub(crate) struct QAct {
    pub(crate) h: Vec<i8>,
    pub(crate) l: Vec<i8>,
    /// `v = 256·h + l` as `i16` for the AVX2 kernel's `vpmaddwd` (`cols` values), or empty.
    pub(crate) v: Vec<i16>,
    /// `(D, S)` per block, interleaved: `2 · cols / 32` values.
    pub(crate) ds: Vec<f32>,
}

impl QAct {
    /// Quantises `x` for products with `qtype` weights (Q8_0, Q4_0 or Q4_1); `with_v` also
    /// fills [`QAct::v`] (otherwise empty).
    ///
    /// # Shapes
    /// `x: (cols,)`, `cols` a multiple of 32.
    ///
    /// # Panics
    /// When `cols` is not a multiple of 32 or `qtype` is a float type (checked by the callers).
    pub(crate) fn new(x: &[f32], qtype: QType, with_v: bool) -> QAct {
        assert!(
            x.len().is_multiple_of(32) && qtype.block_len() == 32,
            "QAct: {} values for {}",
            x.len(),
            qtype.name()
        );
        let nb = x.len() / 32;
        let (mut h, mut l) = (vec![0i8; x.len()], vec![0i8; x.len()]);
        let mut vv = vec![0i16; if with_v { x.len() } else { 0 }];
        let mut ds = vec![0.0f32; 2 * nb];
        let mut vb = [0i32; 32];
        for (b, blk) in x.chunks_exact(32).enumerate() {
            // max |x| as the largest magnitude bit pattern (same order for non-NaN floats;
            // an integer reduction vectorises)
            let amax = f32::from_bits(
                blk.iter()
                    .map(|v| v.to_bits() & 0x7fff_ffff)
                    .fold(0, u32::max),
            );
            let d = amax / VMAX;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (o, &xv) in vb.iter_mut().zip(blk) {
                // round half to even by the 1.5·2^23 trick (exact for |x·id| < 2^22; no libm
                // call, so the loop vectorises)
                *o = ((xv * id).clamp(-VMAX, VMAX) + ROUND - ROUND) as i32;
            }
            let (hb, lb) = (&mut h[32 * b..32 * b + 32], &mut l[32 * b..32 * b + 32]);
            for ((hv, lv), &v) in hb.iter_mut().zip(lb.iter_mut()).zip(&vb) {
                let hi = (v + 128) >> 8;
                *hv = hi as i8;
                *lv = (v - 256 * hi) as i8;
            }
            if with_v {
                for (o, &v) in vv[32 * b..32 * b + 32].iter_mut().zip(&vb) {
                    *o = v as i16;
                }
            }
            ds[2 * b] = d;
            ds[2 * b + 1] = match qtype {
                QType::Q4_1 => {
                    // Σx in a fixed order: 8 lane sums, then pairwise
                    let mut lanes = [0.0f32; 8];
                    for c in blk.chunks_exact(8) {
                        for (a, &v) in lanes.iter_mut().zip(c) {
                            *a += v;
                        }
                    }
                    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
                }
                QType::Q4_0 => -8.0 * (d * vb.iter().sum::<i32>() as f32),
                _ => -128.0 * (d * vb.iter().sum::<i32>() as f32),
            };
        }
        QAct { h, l, v: vv, ds }
    }

    /// Number of values.
    pub(crate) fn cols(&self) -> usize {
        self.h.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_rebuild_the_row_within_the_stated_error() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173 + if i == 40 { 9.0 } else { 0.0 })
            .collect();
        let q = QAct::new(&x, QType::Q4_1, false);
        for b in 0..2 {
            let d = q.ds[2 * b];
            let amax = x[32 * b..32 * b + 32]
                .iter()
                .fold(0.0f32, |a, &v| a.max(v.abs()));
            for (j, &xj) in x.iter().enumerate().skip(32 * b).take(32) {
                let v = 256 * q.h[j] as i32 + q.l[j] as i32;
                assert_ne!(q.h[j], -128);
                let err = (d * v as f32 - xj).abs();
                assert!(err <= amax / (2.0 * VMAX) * 1.01, "{j}: {err}");
            }
            let s: f64 = x[32 * b..32 * b + 32].iter().map(|&v| v as f64).sum();
            assert!(
                (q.ds[2 * b + 1] as f64 - s).abs() <= 1e-5,
                "Σx {}",
                q.ds[2 * b + 1]
            );
        }
    }
}
