//! Quantised weight matrices (ggml's F32, F16, BF16, Q8_0, Q4_0, Q4_1 encodings) and their
//! products with `f32` activations, without a dequantised copy of the matrix.
//!
//! # Kernel design
//!
//! - **Which products quantise activations.** Decoding (`M ≤ 8` activation rows) on Q8_0 /
//!   Q4_0 / Q4_1 weights runs the *integer path* ([`IntPath`], as llama.cpp does with Q8_1):
//!   each activation row is quantised once per product (once per group of products for
//!   [`QMatrix::matmul_t_concat`]) into blocks of 32 with an `f32` scale,
//!   the block dots are exact integers, the scales are applied in `f32`. Everything else keeps
//!   `f32` activations: F32 / F16 / BF16 weights, and prompt processing (`M > 8`, below).
//! - **What it costs in accuracy.** llama.cpp's single `i8` plane per block rounds each value to
//!   1/254 of its block's largest magnitude; with that, SmolLM2's greedy answer to "What is a
//!   sneaker?" already leaves transformers' (the golden test allows logits `2e-3` apart, and
//!   some greedy steps are won by a margin of `0.012`). Here each block
//!   holds *two* `i8` planes, `v = 256·h + l` with `|v| ≤ 32639` (see `act.rs`), so a value is
//!   off by at most `max|x| / 65278` of its block — `|y − x·Wᵀ| ≤ Σ_b max_b|x|/65278 · Σ_b|w|`
//!   plus `f32` rounding, which the tests check — at the price of a second `u8 × i8` dot per
//!   block. The golden tests (SmolLM2 against transformers' float64 logits, the tiny GGUF
//!   models) pass unchanged. `HANDGRAD_QUANT_DOT=f32` ([`decode_int_path`]) restores the
//!   `f32`-activation kernels, which agree with "dequantise, then multiply in f32" to float
//!   rounding (about 1e-6 relative to `Σ|w·x|`).
//! - **Integer kernels** (chosen at run time, never assumed): AVX-512 VNNI — two weight blocks
//!   per 512-bit register, `vpdpbusd` on the unsigned weight bytes (Q4 nibbles; Q8_0 as
//!   `q + 128`, the offsets folded into a per-block activation term) against both planes; AVX2
//!   — the weight bytes widened to `i16` against the activations' `i16` values by `vpmaddwd`;
//!   and a scalar reference. Q4_1's `m·Σx` uses the unquantised block sum (in `f32`).
//! - **`f32`-activation kernels** ([`KernelPath`]), for the float encodings and on request: each
//!   row's blocks are expanded in registers (nibbles / bytes → f32, f16 scales through F16C,
//!   BF16 by a shift) and multiplied with up to four activation rows at once, the block scale
//!   factored out: Q8_0 `d·Σ q·x`, Q4_0 `d·Σ (q − 8)·x`, Q4_1 `d·Σ q·x + m·Σx`. Rayon runs over
//!   fixed chunks of 16 weight rows; the integer path cuts the rows (of all the matrices of a
//!   group) into 4 pieces of equal rows per pool thread, and products under 96 KB run on the
//!   calling thread (each row's dot is the same whatever the piece).
//! - **Large `M` (prompt processing)**: tiles of 64 weight rows are dequantised into a per-thread
//!   `f32` scratch (bit-exact with [`QMatrix::dequantize`]) and multiplied with the crate's SGEMM
//!   ([`crate::ops::matmul::gemm_into`], serial inside each rayon task over tiles).
//! - Every output element is computed by one task in a fixed order (and each activation row is
//!   quantised the same way whatever `M`), so results are bit-identical on 1 and N threads.
//! - [`QMatrix::matmul_t_with`] runs a given `f32` family and [`QMatrix::matmul_t_int_with`] a
//!   given integer one; the tests check every SIMD path against the scalar one.

mod act;
mod dequant;
mod intdot;
mod kernels;
mod quantise;
mod simd;
mod types;

pub use intdot::{decode_int_path, IntPath};
pub use kernels::{simd_path, KernelPath};
pub use types::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, QType};
pub(crate) use types::{ggml_type_info, unsupported_message};

use crate::error::{Error, Result};
use crate::io::SharedBytes;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use std::fmt;

/// A row-major weight matrix kept in its stored encoding, in `nn.Linear` layout
/// `[out = rows, in = cols]`; each row is `qtype.row_bytes(cols)` bytes.
#[derive(Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    qtype: QType,
    data: SharedBytes,
}

impl fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("qtype", &self.qtype)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl QMatrix {
    /// Wraps stored bytes (no copy).
    ///
    /// # Shapes
    /// `data: (rows · qtype.row_bytes(cols),)` bytes → a `(rows, cols)` matrix.
    ///
    /// # Errors
    /// [`Error::Shape`] when `cols` is not a multiple of the type's block length or `data` is not
    /// exactly `rows · row_bytes(cols)` bytes long.
    pub fn new(rows: usize, cols: usize, qtype: QType, data: SharedBytes) -> Result<Self> {
        let op = format!("QMatrix({rows}x{cols}, {})", qtype.name());
        let rb = qtype.row_bytes(cols).ok_or_else(|| {
            Error::shape(
                &op,
                format!(
                    "cols a multiple of {} (the {} block length)",
                    qtype.block_len(),
                    qtype.name()
                ),
                &[rows, cols],
            )
        })?;
        let want = rb.checked_mul(rows);
        if want != Some(data.len()) {
            return Err(Error::shape(
                &op,
                format!(
                    "{} bytes of data ({rows} rows of {rb} bytes)",
                    want.map_or("too many".into(), |w| w.to_string())
                ),
                &[data.len()],
            ));
        }
        Ok(QMatrix {
            rows,
            cols,
            qtype,
            data,
        })
    }

    /// Encodes `w` with ggml's reference quantisers (`quantize_row_*_ref`, which gguf-py and
    /// `llama-quantize` without an importance matrix reproduce byte for byte); F16 / BF16 round
    /// to nearest even.
    ///
    /// # Shapes
    /// `w: (rows, cols)`, `cols` a multiple of `qtype.block_len()`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `cols` is not a multiple of the block length.
    pub fn quantize(w: ArrayView2<f32>, qtype: QType) -> Result<Self> {
        let (rows, cols) = w.dim();
        let rb = qtype.row_bytes(cols).ok_or_else(|| {
            Error::shape(
                format!("QMatrix::quantize({})", qtype.name()),
                format!("(rows, cols) with cols a multiple of {}", qtype.block_len()),
                &[rows, cols],
            )
        })?;
        let mut bytes = vec![0u8; rb * rows];
        let mut row = vec![0.0f32; cols];
        for (r, out) in bytes.chunks_exact_mut(rb.max(1)).enumerate().take(rows) {
            for (d, s) in row.iter_mut().zip(w.row(r)) {
                *d = *s;
            }
            quantise::quantize_row_into(qtype, &row, out);
        }
        QMatrix::new(rows, cols, qtype, SharedBytes::from_vec(bytes))
    }

    /// Number of rows (`out` features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (`in` features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage encoding.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// The stored bytes, `rows · qtype.row_bytes(cols)` of them.
    pub fn data(&self) -> &SharedBytes {
        &self.data
    }

    /// The stored bytes of row `r`.
    ///
    /// # Panics
    /// When `r >= rows`.
    pub fn row_data(&self, r: usize) -> &[u8] {
        assert!(r < self.rows, "QMatrix: row {r} of {}", self.rows);
        let rb = self.data.len() / self.rows;
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantises row `r` into `out`, bit-exact with ggml / gguf-py (Q4_1 as `(d·q) + m`, two
    /// roundings, no FMA).
    ///
    /// # Shapes
    /// `out: (cols,)`.
    ///
    /// # Panics
    /// When `r >= rows` or `out.len() != cols` (ops tier: checked above).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.cols,
            "QMatrix::dequantize_row: out has {} values, expected {}",
            out.len(),
            self.cols
        );
        dequant::dequantize_row_into(self.qtype, self.row_data(r), out);
    }

    /// The whole matrix as `f32` (allocates `rows · cols` values; the products never do this).
    ///
    /// # Shapes
    /// `→ (rows, cols)`.
    pub fn dequantize(&self) -> Array2<f32> {
        let mut out = Array2::zeros((self.rows, self.cols));
        for (r, mut row) in out.rows_mut().into_iter().enumerate() {
            self.dequantize_row(r, row.as_slice_mut().expect("standard layout"));
        }
        out
    }

    /// `y = x·Wᵀ` with the kernels detected on this machine (see the module docs): for
    /// Q8_0 / Q4_0 / Q4_1 and `M ≤ 8` the integer path of [`decode_int_path`], otherwise the
    /// `f32`-activation family [`KernelPath::detected`].
    ///
    /// # Shapes
    /// `x: (M, cols)` → `y: (M, rows)`.
    ///
    /// # Panics
    /// On a shape mismatch (ops tier: checked above).
    pub fn matmul_t(&self, x: ArrayView2<f32>, y: ArrayViewMut2<f32>) {
        match decode_int_path() {
            Some(p) if self.uses_int_path(x.nrows()) => self.matmul_t_int_with(p, x, y),
            _ => kernels::matmul_t(KernelPath::detected(), self, x, y),
        }
    }

    /// `y = x·[W_0; W_1; …]ᵀ`: the products of one activation matrix with several matrices of
    /// the same width and encoding (Llama's `q | k | v`, `gate | up`), written side by side.
    /// On the integer path (see [`QMatrix::matmul_t`]) each row of `x` is quantised once for
    /// the group and the rows of all the matrices run as one parallel call, cut into pieces of
    /// equal bytes per thread; otherwise each product runs as [`QMatrix::matmul_t`]. Either way
    /// the results equal the separate products bit for bit.
    ///
    /// # Shapes
    /// `x: (M, cols)`, `ws[i]: (rows_i, cols)` → `y: (M, Σ rows_i)`.
    ///
    /// # Panics
    /// When `ws` is empty, the matrices differ in `cols` or encoding, or on a shape mismatch
    /// (ops tier: checked above).
    pub fn matmul_t_concat(ws: &[&QMatrix], x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
        assert!(!ws.is_empty(), "QMatrix::matmul_t_concat: no matrices");
        let (cols, qtype) = (ws[0].cols, ws[0].qtype);
        assert!(
            ws.iter().all(|w| w.cols == cols && w.qtype == qtype),
            "QMatrix::matmul_t_concat: matrices of different widths or encodings"
        );
        let total: usize = ws.iter().map(|w| w.rows).sum();
        let m = x.nrows();
        assert_eq!(
            (x.ncols(), y.dim()),
            (cols, (m, total)),
            "QMatrix::matmul_t_concat: x is {:?} and y {:?} for {} matrices of width {cols} \
             and {total} rows in all",
            x.dim(),
            y.dim(),
            ws.len()
        );
        match decode_int_path() {
            Some(p) if ws[0].uses_int_path(m) && cols > 0 && total > 0 => {
                intdot::matvec(p, ws, x, y)
            }
            _ => {
                let mut c0 = 0;
                for w in ws {
                    w.matmul_t(x, y.slice_mut(ndarray::s![.., c0..c0 + w.rows]));
                    c0 += w.rows;
                }
            }
        }
    }

    /// Whether [`QMatrix::matmul_t`] runs the integer path for `m` activation rows (when
    /// [`decode_int_path`] is not `None`): block-quantised weights and `1 ≤ m ≤ 8`.
    pub fn uses_int_path(&self, m: usize) -> bool {
        self.qtype.block_len() == 32 && (1..=kernels::MATVEC_MAX_M).contains(&m)
    }

    /// `y = x·Wᵀ` on the integer path `path`, for any `M` (the rows are quantised one by one;
    /// for tests and benchmarks). Float-encoded weights run the `f32` kernels.
    ///
    /// # Shapes
    /// `x: (M, cols)` → `y: (M, rows)`.
    ///
    /// # Panics
    /// On a shape mismatch, or when `path` is not available on this CPU.
    pub fn matmul_t_int_with(&self, path: IntPath, x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
        assert!(
            path.is_available(),
            "QMatrix::matmul_t_int_with: {} is not available on this CPU",
            path.name()
        );
        let (m, rows) = (x.nrows(), self.rows);
        assert_eq!(
            x.ncols(),
            self.cols,
            "QMatrix::matmul_t: x is {:?}, W is ({rows}, {})",
            x.dim(),
            self.cols
        );
        assert_eq!(
            y.dim(),
            (m, rows),
            "QMatrix::matmul_t: y is {:?}, expected ({m}, {rows})",
            y.dim()
        );
        if self.qtype.block_len() != 32 {
            return kernels::matmul_t(KernelPath::detected(), self, x, y);
        }
        if m == 0 || rows == 0 {
            return;
        }
        if self.cols == 0 {
            y.fill(0.0);
            return;
        }
        intdot::matvec(path, &[self], x, y);
    }

    /// `y = x·Wᵀ` with a given kernel family (for tests and benchmarks).
    ///
    /// # Shapes
    /// `x: (M, cols)` → `y: (M, rows)`.
    ///
    /// # Panics
    /// On a shape mismatch, or when `path` is not available on this CPU.
    pub fn matmul_t_with(&self, path: KernelPath, x: ArrayView2<f32>, y: ArrayViewMut2<f32>) {
        assert!(
            path.is_available(),
            "QMatrix::matmul_t_with: {} is not available on this CPU",
            path.name()
        );
        kernels::matmul_t(path, self, x, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_and_rounds_to_even() {
        for h in 0u16..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f32_to_f16(f) & 0x7c00 == 0x7c00 && f32_to_f16(f) & 0x3ff != 0);
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "f16 {h:#06x} = {f}");
            // The midpoint to the next value (same sign, towards larger magnitude) ties to even.
            if h & 0x7fff < 0x7bff {
                let next = f16_to_f32(h + 1);
                let mid = ((f as f64 + next as f64) / 2.0) as f32;
                let even = if h & 1 == 0 { h } else { h + 1 };
                assert_eq!(f32_to_f16(mid), even, "midpoint after {h:#06x}");
            }
        }
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(-1e-9), 0x8000);
    }

    #[test]
    fn bf16_rounds_to_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_to_f32(0x4049), f32::from_bits(0x4049_0000));
    }

    #[test]
    fn new_checks_sizes() {
        let e = QMatrix::new(2, 30, QType::Q4_1, SharedBytes::from_vec(vec![0; 40])).unwrap_err();
        assert!(e.to_string().contains("multiple of 32"), "{e}");
        let e = QMatrix::new(2, 32, QType::Q4_1, SharedBytes::from_vec(vec![0; 39])).unwrap_err();
        assert!(e.to_string().contains("40 bytes"), "{e}");
        assert!(QMatrix::new(2, 32, QType::Q4_1, SharedBytes::from_vec(vec![0; 40])).is_ok());
    }
}
