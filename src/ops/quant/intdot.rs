//! The integer matrix-vector path for Q8_0 / Q4_0 / Q4_1 weights: each activation row is
//! quantised once per product ([`QAct`]), every block dot is an exact integer, and the block
//! scales are applied in `f32`.
//!
//! Per weight block with scale `d` and unsigned bytes `u` (Q4_1: the nibbles, minimum `m`;
//! Q4_0: the nibbles, `m = d` with the `−8` offset in the activation term; Q8_0: `q + 128`,
//! likewise) and activation block `(v, D, S)`: `d·D·Σ u·v + m·S` (`m = d` for Q4_0 / Q8_0).

use super::act::QAct;
use super::dequant::f16_at;
use super::types::QType;
use super::QMatrix;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::sync::OnceLock;

/// A family of integer block-dot kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntPath {
    /// Portable Rust, the reference the SIMD paths are tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (`vpmaddwd` on the activations' `i16` values), 256-bit.
    Avx2,
    /// x86-64 AVX-512 VNNI (`vpdpbusd`, with AVX-512F/BW/DQ and F16C), 512-bit.
    Avx512Vnni,
}

impl IntPath {
    /// Every path this CPU supports, best first (always ends with [`IntPath::Scalar`]).
    pub fn available() -> Vec<IntPath> {
        [IntPath::Avx512Vnni, IntPath::Avx2, IntPath::Scalar]
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }

    /// The best path this CPU supports, detected once at run time.
    pub fn detected() -> IntPath {
        static PATH: OnceLock<IntPath> = OnceLock::new();
        *PATH.get_or_init(|| IntPath::available()[0])
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            IntPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            IntPath::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            IntPath::Avx512Vnni => {
                IntPath::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `"int-scalar"`, `"int-avx2"` or `"int-avx512vnni"`.
    pub fn name(self) -> &'static str {
        match self {
            IntPath::Scalar => "int-scalar",
            IntPath::Avx2 => "int-avx2",
            IntPath::Avx512Vnni => "int-avx512vnni",
        }
    }
}

/// How [`QMatrix::matmul_t`] decodes (`M ≤ 8`) on Q8_0 / Q4_0 / Q4_1 weights: the integer
/// path, or `None` for the `f32`-activation kernels. Detected once; the environment variable
/// `HANDGRAD_QUANT_DOT` forces a choice: `f32`, or a name of [`IntPath::name`] (an unknown or
/// unavailable name is ignored with a message on stderr).
pub fn decode_int_path() -> Option<IntPath> {
    static PATH: OnceLock<Option<IntPath>> = OnceLock::new();
    *PATH.get_or_init(|| {
        let Ok(v) = std::env::var("HANDGRAD_QUANT_DOT") else {
            return Some(IntPath::detected());
        };
        if v == "f32" {
            return None;
        }
        let all = [IntPath::Scalar, IntPath::Avx2, IntPath::Avx512Vnni];
        match all.into_iter().find(|p| p.name() == v) {
            Some(p) if p.is_available() => Some(p),
            _ => {
                eprintln!(
                    "HANDGRAD_QUANT_DOT={v} ignored: expected f32 or an available one of {}",
                    IntPath::available()
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Some(IntPath::detected())
            }
        }
    })
}

/// The unsigned weight byte `u` of element `j` of a block, and the block's `(d, m)`.
fn block_u(qtype: QType, blk: &[u8], j: usize) -> i32 {
    match qtype {
        QType::Q8_0 => blk[2 + j] as i8 as i32 + 128,
        QType::Q4_0 => ((blk[2 + j % 16] >> (4 * (j / 16))) & 15) as i32,
        _ => ((blk[4 + j % 16] >> (4 * (j / 16))) & 15) as i32,
    }
}

/// The scalar reference: `Σ_b (d_b·D_b)·Σ u·v + m_b·S_b` over one weight row.
fn dot_scalar(qtype: QType, w: &[u8], a: &QAct) -> f32 {
    let bb = qtype.block_bytes();
    let (mut acc, mut accm) = (0.0f32, 0.0f32);
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        let mut dot = 0i32;
        for j in 0..32 {
            let v = 256 * a.h[32 * b + j] as i32 + a.l[32 * b + j] as i32;
            dot += block_u(qtype, blk, j) * v;
        }
        let d = f16_at(blk);
        let m = if qtype == QType::Q4_1 {
            f16_at(&blk[2..])
        } else {
            d
        };
        acc += (d * a.ds[2 * b]) * dot as f32;
        accm += m * a.ds[2 * b + 1];
    }
    acc + accm
}

/// `out[i] = Σ_j w_i[j]·x[j]` for the consecutive weight rows `w_i` of `w` on `path`.
fn dot_rows(path: IntPath, qtype: QType, w: &[u8], a: &QAct, out: &mut [f32]) {
    let rb = qtype.row_bytes(a.cols()).expect("row length");
    assert_eq!(w.len(), out.len() * rb, "intdot: weight rows / outputs");
    match path {
        IntPath::Scalar => {
            for (wr, o) in w.chunks_exact(rb).zip(out.iter_mut()) {
                *o = dot_scalar(qtype, wr, a);
            }
        }
        _ => super::simd::dot_rows_int(path, qtype, w, a, out),
    }
}

/// Weight rows per rayon task.
const ROWS: usize = 32;
/// Matrices smaller than this run on the calling thread (SmolLM2's 576→192 k / v projections,
/// 69 KB, took longer on two threads than on one).
const SERIAL_BYTES: usize = 96 << 10;

/// `y = x·Wᵀ` for a few activation rows on the integer path `path` (rayon over fixed chunks
/// of weight rows; each output computed by one task in a fixed order).
///
/// # Shapes
/// `x: (M, cols)` → `y: (M, rows)`; `W` Q8_0, Q4_0 or Q4_1.
pub(crate) fn matvec(path: IntPath, w: &QMatrix, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
    let (cols, qtype) = (w.cols(), w.qtype());
    let acts: Vec<QAct> = x
        .rows()
        .into_iter()
        .map(|r| match r.as_slice() {
            Some(r) => QAct::new(r, qtype, path == IntPath::Avx2),
            None => QAct::new(&r.to_vec(), qtype, path == IntPath::Avx2),
        })
        .collect();
    let rb = qtype.row_bytes(cols).expect("checked by QMatrix::new");
    let data: &[u8] = w.data();
    let chunk = |(c, mut yc): (usize, ArrayViewMut2<f32>)| {
        let (r0, n) = (c * ROWS, yc.ncols());
        let wr = &data[r0 * rb..(r0 + n) * rb];
        let mut out = [0.0f32; ROWS];
        for (i, a) in acts.iter().enumerate() {
            dot_rows(path, qtype, wr, a, &mut out[..n]);
            for (j, &o) in out[..n].iter().enumerate() {
                yc[[i, j]] = o;
            }
        }
    };
    let chunks = y.axis_chunks_iter_mut(Axis(1), ROWS);
    // the same chunks either way (same results): small matrices skip the fork-join
    if data.len() < SERIAL_BYTES {
        chunks.enumerate().for_each(chunk);
    } else {
        chunks.into_par_iter().enumerate().for_each(chunk);
    }
}
