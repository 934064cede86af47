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

/// Weight rows per call of the dot kernel (one stack buffer of outputs).
const ROWS: usize = 32;
/// Products smaller than this run on the calling thread (SmolLM2's 576→192 k / v projections
/// alone, 69 KB, took longer on two threads than on one).
const SERIAL_BYTES: usize = 96 << 10;
/// Pieces of equal size per pool thread: enough for a thread that starts late to be relieved
/// by the others, few enough that each piece streams tens of KB.
const PIECES_PER_THREAD: usize = 4;

/// `y = x·[W_0; W_1; …]ᵀ` for a few activation rows on the integer path `path`: the products
/// of `x` with matrices that share `cols` and the encoding, written side by side. Each row of
/// `x` is quantised once for all of them, and their rows, taken as one concatenated matrix, are
/// cut into `PIECES_PER_THREAD` pieces of equal rows (so equal bytes) per pool thread: one
/// fork-join for the whole group. Each output is computed by the same kernel on the same
/// quantised row whatever the grouping, the pieces or the number of threads, so the results
/// equal the separate products bit for bit on any number of threads.
///
/// # Shapes
/// `x: (M, cols)`, `ws[i]: (rows_i, cols)` → `y: (M, Σ rows_i)`; `W` Q8_0, Q4_0 or Q4_1.
pub(crate) fn matvec(path: IntPath, ws: &[&QMatrix], x: ArrayView2<f32>, y: ArrayViewMut2<f32>) {
    let (cols, qtype) = (x.ncols(), ws[0].qtype());
    assert!(
        ws.iter().all(|w| w.cols() == cols && w.qtype() == qtype),
        "intdot::matvec: matrices of different widths or encodings"
    );
    let total: usize = ws.iter().map(|w| w.rows()).sum();
    assert_eq!(y.dim(), (x.nrows(), total), "intdot::matvec: y shape");
    let acts: Vec<QAct> = x
        .rows()
        .into_iter()
        .map(|r| match r.as_slice() {
            Some(r) => QAct::new(r, qtype, path == IntPath::Avx2),
            None => QAct::new(&r.to_vec(), qtype, path == IntPath::Avx2),
        })
        .collect();
    let rb = qtype.row_bytes(cols).expect("checked by QMatrix::new");
    // the rows g0.. of the concatenation into the columns of `yp`, at most ROWS per kernel call
    let run = |(g0, mut yp): (usize, ArrayViewMut2<f32>)| {
        let n = yp.ncols();
        let mut out = [0.0f32; ROWS];
        let (mut k, mut first) = (0, 0); // matrix k holds global rows first..first + rows_k
        let mut done = 0;
        while done < n {
            let g = g0 + done;
            while g >= first + ws[k].rows() {
                first += ws[k].rows();
                k += 1;
            }
            let local = g - first;
            let take = (ws[k].rows() - local).min(n - done).min(ROWS);
            let data: &[u8] = ws[k].data();
            let wr = &data[local * rb..(local + take) * rb];
            for (i, a) in acts.iter().enumerate() {
                dot_rows(path, qtype, wr, a, &mut out[..take]);
                for (j, &o) in out[..take].iter().enumerate() {
                    yp[[i, done + j]] = o;
                }
            }
            done += take;
        }
    };
    let threads = rayon::current_num_threads();
    if threads == 1 || total * rb < SERIAL_BYTES {
        return run((0, y));
    }
    let pieces = (threads * PIECES_PER_THREAD).min(total);
    let mut parts = Vec::with_capacity(pieces);
    let (mut rest, mut start) = (y, 0);
    for p in 1..=pieces {
        let end = p * total / pieces;
        let (a, b) = rest.split_at(Axis(1), end - start);
        parts.push((start, a));
        (rest, start) = (b, end);
    }
    parts.into_par_iter().for_each(run);
}
