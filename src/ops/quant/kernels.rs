//! `y = x·Wᵀ` on a quantised `W`: the run-time choice of kernel family, the scalar reference
//! kernels, the matrix-vector driver for small `M` and the tiled GEMM driver for large `M`.

use super::dequant::f16_at;
use super::types::{bf16_to_f32, QType};
use super::{simd, QMatrix};
use crate::ops::matmul::{gemm_into, Threads};
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::sync::OnceLock;

/// A family of row-dot kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// Portable Rust, the reference the SIMD paths are tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C, 8 lanes.
    Avx2Fma,
    /// x86-64 AVX-512F (with AVX2, FMA, F16C), 16 lanes.
    Avx512,
}

impl KernelPath {
    /// The best path this CPU supports, detected once at run time.
    pub fn detected() -> KernelPath {
        static PATH: OnceLock<KernelPath> = OnceLock::new();
        *PATH.get_or_init(|| {
            [KernelPath::Avx512, KernelPath::Avx2Fma]
                .into_iter()
                .find(|p| p.is_available())
                .unwrap_or(KernelPath::Scalar)
        })
    }

    /// Every path this CPU supports, best first (always ends with [`KernelPath::Scalar`]).
    pub fn available() -> Vec<KernelPath> {
        [KernelPath::Avx512, KernelPath::Avx2Fma, KernelPath::Scalar]
            .into_iter()
            .filter(|p| p.is_available())
            .collect()
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2Fma => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2Fma.is_available() && is_x86_feature_detected!("avx512f")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `"avx512"`, `"avx2+fma"` or `"scalar"`.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2Fma => "avx2+fma",
            KernelPath::Avx512 => "avx512",
        }
    }
}

/// Which kernel family runs on this machine: `"avx512"`, `"avx2+fma"` or `"scalar"`.
pub fn simd_path() -> &'static str {
    KernelPath::detected().name()
}

/// Up to this many activation rows use the matrix-vector kernels; more use the tiled GEMM.
pub(crate) const MATVEC_MAX_M: usize = 8;
/// Weight rows per rayon task of the matrix-vector driver.
const MATVEC_ROWS: usize = 16;
/// Weight rows per dequantised tile of the GEMM driver.
const GEMM_TILE_ROWS: usize = 64;
/// Activation rows decoded against one weight row at once.
const GROUP: usize = 4;

/// The scalar reference: `out[r] = Σ_j w[j]·xs[r][j]` with the scales factored out per block
/// as in the SIMD kernels (see [`super::simd`]).
fn dot_scalar<const R: usize>(
    qtype: QType,
    w: &[u8],
    xs: [&[f32]; R],
    xsum: [&[f32]; R],
) -> [f32; R] {
    let mut out = [0.0f32; R];
    let block = |bytes: usize, f: &mut dyn FnMut(usize, &[u8])| {
        for (b, blk) in w.chunks_exact(bytes).enumerate() {
            f(b, blk);
        }
    };
    match qtype {
        QType::F32 | QType::F16 | QType::BF16 => {
            for (j, c) in w.chunks_exact(qtype.block_bytes()).enumerate() {
                let v = match qtype {
                    QType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    QType::F16 => f16_at(c),
                    _ => bf16_to_f32(u16::from_le_bytes([c[0], c[1]])),
                };
                for r in 0..R {
                    out[r] += v * xs[r][j];
                }
            }
        }
        QType::Q8_0 => block(34, &mut |b, blk| {
            let d = f16_at(blk);
            for r in 0..R {
                let x = &xs[r][32 * b..32 * b + 32];
                let s: f32 = blk[2..]
                    .iter()
                    .zip(x)
                    .map(|(&q, &x)| (q as i8) as f32 * x)
                    .sum();
                out[r] += d * s;
            }
        }),
        QType::Q4_0 | QType::Q4_1 => {
            let (bytes, off, qs) = if qtype == QType::Q4_0 {
                (18, 8, 2)
            } else {
                (20, 0, 4)
            };
            block(bytes, &mut |b, blk| {
                let d = f16_at(blk);
                for r in 0..R {
                    let x = &xs[r][32 * b..32 * b + 32];
                    let mut s = 0.0f32;
                    for j in 0..16 {
                        let q = blk[qs + j];
                        s += ((q & 15) as i32 - off) as f32 * x[j];
                        s += ((q >> 4) as i32 - off) as f32 * x[16 + j];
                    }
                    out[r] += d * s;
                    if qtype == QType::Q4_1 {
                        out[r] += f16_at(&blk[2..]) * xsum[r][b];
                    }
                }
            })
        }
    }
    out
}

/// Consecutive weight rows against `R` activation rows on `path`: `out[i·R + r]` for row `i`.
fn dot_rows<const R: usize>(
    path: KernelPath,
    qtype: QType,
    w: &[u8],
    xs: [&[f32]; R],
    xsum: [&[f32]; R],
    out: &mut [f32],
) {
    match path {
        KernelPath::Scalar => {
            let rb = qtype.row_bytes(xs[0].len()).expect("row length");
            for (wr, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(R)) {
                o.copy_from_slice(&dot_scalar(qtype, wr, xs, xsum));
            }
        }
        _ => simd::dot_rows(path, qtype, w, xs, xsum, out),
    }
}

/// `y = x·Wᵀ` on `path`: matrix-vector kernels for `M ≤ MATVEC_MAX_M`, tiled GEMM above.
///
/// # Shapes
/// `x: (M, cols)` → `y: (M, rows)`.
pub(crate) fn matmul_t(
    path: KernelPath,
    w: &QMatrix,
    x: ArrayView2<f32>,
    mut y: ArrayViewMut2<f32>,
) {
    let (rows, cols) = (w.rows(), w.cols());
    let m = x.nrows();
    assert_eq!(
        x.ncols(),
        cols,
        "QMatrix::matmul_t: x is {:?}, W is ({rows}, {cols})",
        x.dim()
    );
    assert_eq!(
        y.dim(),
        (m, rows),
        "QMatrix::matmul_t: y is {:?}, expected ({m}, {rows})",
        y.dim()
    );
    if m == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0); // empty sums
        return;
    }
    if m <= MATVEC_MAX_M {
        matvec(path, w, x, y);
    } else {
        tiled_gemm(w, x, y);
    }
}

/// Per-block sums of each activation row (Q4_1's `m·Σx` term).
///
/// # Shapes
/// `x: (M, cols)` → `(M, cols / 32)`, row-major.
fn block_sums(x: &ArrayView2<f32>) -> Vec<f32> {
    x.rows()
        .into_iter()
        .flat_map(|r| {
            let r = r.to_slice().expect("standard layout");
            r.chunks_exact(32)
                .map(|c| c.iter().sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The matrix-vector driver: rayon over fixed chunks of weight rows; each weight row is decoded
/// once for up to [`GROUP`] activation rows.
fn matvec(path: KernelPath, w: &QMatrix, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
    let (cols, qtype) = (w.cols(), w.qtype());
    let x = x.as_standard_layout();
    let xv = x.view();
    let xsum = if qtype == QType::Q4_1 {
        block_sums(&xv)
    } else {
        Vec::new()
    };
    let nb = cols / 32;
    let xrow = |i: usize| &x.as_slice().expect("standard layout")[i * cols..(i + 1) * cols];
    let srow = |i: usize| {
        if xsum.is_empty() {
            &[][..]
        } else {
            &xsum[i * nb..(i + 1) * nb]
        }
    };
    let rb = qtype.row_bytes(cols).expect("checked by QMatrix::new");
    let data: &[u8] = w.data();
    let m = x.nrows();
    y.axis_chunks_iter_mut(Axis(1), MATVEC_ROWS)
        .into_par_iter()
        .enumerate()
        .for_each(|(c, mut yc)| {
            let (r0, n) = (c * MATVEC_ROWS, yc.ncols());
            let wr = &data[r0 * rb..(r0 + n) * rb];
            let mut out = [0.0f32; MATVEC_ROWS * GROUP];
            let mut i = 0;
            while i < m {
                let g = (m - i).min(GROUP);
                macro_rules! go {
                    ($r:literal) => {{
                        let xs: [&[f32]; $r] = std::array::from_fn(|k| xrow(i + k));
                        let ss: [&[f32]; $r] = std::array::from_fn(|k| srow(i + k));
                        dot_rows::<$r>(path, qtype, wr, xs, ss, &mut out[..n * $r]);
                        for j in 0..n {
                            for k in 0..$r {
                                yc[[i + k, j]] = out[j * $r + k];
                            }
                        }
                    }};
                }
                match g {
                    1 => go!(1),
                    2 => go!(2),
                    3 => go!(3),
                    _ => go!(4),
                }
                i += g;
            }
        });
}

/// The GEMM driver: rayon over fixed tiles of [`GEMM_TILE_ROWS`] weight rows, each dequantised
/// into a per-thread f32 scratch and multiplied with the shared SGEMM (serially inside the task).
/// Memory: one tile per thread, never a dequantised copy of the matrix.
fn tiled_gemm(w: &QMatrix, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
    let cols = w.cols();
    y.axis_chunks_iter_mut(Axis(1), GEMM_TILE_ROWS)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || vec![0.0f32; GEMM_TILE_ROWS * cols],
            |scratch, (t, yt)| {
                let r0 = t * GEMM_TILE_ROWS;
                let n = yt.ncols();
                let tile = &mut scratch[..n * cols];
                for (k, out) in tile.chunks_exact_mut(cols).enumerate() {
                    w.dequantize_row(r0 + k, out);
                }
                let tile = ArrayView2::from_shape((n, cols), &*tile).expect("tile shape");
                gemm_into(x, tile.t(), yt, false, Threads::Serial);
            },
        );
}
