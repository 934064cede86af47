//! The fully connected (`nn.Linear`) kernel: `out = x·Wᵀ + b`, forward and backward.

use super::matmul::{gemm_into, matmul_into, matmul_nt_into, matmul_tn_into, Threads};
use ndarray::{s, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rayon::prelude::*;

/// Reduction length per task of a long, narrow product ([`linear_forward_into`]).
const K_CHUNK: usize = 4096;

/// `out[b, o] = Σ_i x[b, i]·w[o, i] + bias[o]`, written into `out`.
///
/// A long reduction into a small output (`I ≥ 8192`, `B·O ≤ 65,536`: a Dense layer after a
/// Flatten, e.g. 12,544 inputs into 64 units at batch 32) is split into fixed chunks of
/// 4,096 inputs, one serial product each in parallel, summed in chunk order: each thread
/// then reads its own part of `w` once, and the result does not depend on the thread count.
///
/// # Shapes
/// `x: (B, I)`, `w: (O, I)` (PyTorch `[out, in]` layout), `bias: (O)`, `out: (B, O)`.
pub fn linear_forward_into(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
    mut out: ArrayViewMut2<f32>,
) {
    let ((m, k), n) = (x.dim(), w.nrows());
    if k >= 2 * K_CHUNK && m * n <= 16 * K_CHUNK && m * n > 0 {
        let chunks = k.div_ceil(K_CHUNK);
        let mut parts = vec![0.0f32; chunks * m * n];
        parts
            .par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(c, part)| {
                let ks = s![.., c * K_CHUNK..((c + 1) * K_CHUNK).min(k)];
                let part = ArrayViewMut2::from_shape((m, n), part).expect("(B, O)");
                gemm_into(x.slice(ks), w.slice(ks).t(), part, false, Threads::Serial);
            });
        // out[b, o] = bias[o] + ((part_0 + part_1) + …) in chunk order
        for ((b, o), v) in out.indexed_iter_mut() {
            let mut sum = parts[b * n + o];
            for part in parts.chunks_exact(m * n).skip(1) {
                sum += part[b * n + o];
            }
            *v = bias.map_or(0.0, |bias| bias[o]) + sum;
        }
        return;
    }
    match bias {
        Some(b) => {
            // out starts as the bias broadcast over rows, then accumulates x·Wᵀ.
            for mut row in out.rows_mut() {
                row.assign(&b);
            }
            matmul_nt_into(x, w, out, true);
        }
        None => matmul_nt_into(x, w, out, false),
    }
}

/// Backward of [`linear_forward_into`].
///
/// ```text
/// forward: out[b,o] = Σ_i x[b,i]·w[o,i] + bias[o]
///   ⇒ dx[b,i]   = Σ_o dout[b,o]·w[o,i]      (dx = dout·W, overwritten)
///   ⇒ dw[o,i]  += Σ_b dout[b,o]·x[b,i]      (dW += doutᵀ·x)
///   ⇒ dbias[o] += Σ_b dout[b,o]
/// ```
/// `dx` is skipped when `None` (the first layer needs no input gradient). The bias sum runs over
/// rows in order, so it is identical whatever the thread count.
///
/// # Shapes
/// `dout: (B, O)`, `x: (B, I)`, `w: (O, I)`, `dx: (B, I)`, `dw: (O, I)`, `dbias: (O)`.
pub fn linear_backward(
    dout: ArrayView2<f32>,
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    dx: Option<ArrayViewMut2<f32>>,
    dw: ArrayViewMut2<f32>,
    dbias: Option<ArrayViewMut1<f32>>,
) {
    if let Some(dx) = dx {
        matmul_into(dout, w, dx, false);
    }
    matmul_tn_into(dout, x, dw, true);
    if let Some(db) = dbias {
        add_column_sums(dout, db);
    }
}

/// `db[o] += Σ_r dout[r, o]`: the bias gradient of a linear map, each column summed over the rows
/// in order (so the same bits whatever the thread count), in parallel over blocks of columns and
/// vectorised across the columns of a block.
///
/// # Shapes
/// `dout: (R, O)`, `db: (O)`.
///
/// # Panics
/// When `db` does not have `O` entries.
pub fn add_column_sums(dout: ArrayView2<f32>, mut db: ArrayViewMut1<f32>) {
    /// Columns per task.
    const COLS: usize = 64;
    let (rows, cols) = dout.dim();
    assert_eq!(
        db.len(),
        cols,
        "add_column_sums: db has {} entries, dout {cols} columns",
        db.len()
    );
    let (Some(d), Some(out)) = (dout.as_slice(), db.as_slice_mut()) else {
        for row in dout.rows() {
            db += &row;
        }
        return;
    };
    let block = |(c, acc): (usize, &mut [f32])| {
        let c0 = c * COLS;
        crate::ops::wide::wide_loop!({
            for r in 0..rows {
                let src = &d[r * cols + c0..r * cols + c0 + acc.len()];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v;
                }
            }
        })
    };
    if rows * cols >= 1 << 16 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(COLS).enumerate().for_each(block);
    } else {
        out.chunks_mut(COLS).enumerate().for_each(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    #[test]
    fn column_sums_are_the_row_by_row_sums_bit_for_bit() {
        // 300 rows × 700 columns: parallel, with a partial last block of columns
        let d = Array2::from_shape_fn((300, 700), |(i, j)| {
            ((i * 31 + j * 17) % 101) as f32 * 0.013 - 0.6
        });
        // the whole (contiguous: the blocked path) and a column slice (strided: the fallback)
        for view in [d.view(), d.slice(s![.., ..650])] {
            let start = Array1::from_shape_fn(view.ncols(), |j| j as f32 * 0.5);
            let mut want = start.clone();
            for row in view.rows() {
                want += &row;
            }
            let mut got = start.clone();
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap()
                .install(|| add_column_sums(view, got.view_mut()));
            assert_eq!(got, want);
        }
    }
}
