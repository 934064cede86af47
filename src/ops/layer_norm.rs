//! Layer normalisation over the **last** axis (PyTorch `nn.LayerNorm`, GPT-2 `ln_1`/`ln_2`/`ln_f`),
//! forward and backward.
//!
//! An input of shape `(…, C)` is `rows` independent rows of `C` entries, passed as a flat
//! row-major slice. Per row: `mean = Σx/C`, the **biased** variance `var = Σ(x − mean)²/C`,
//! `rstd = 1/√(var + eps)`, `out = (x − mean)·rstd·weight + bias`. Row statistics are accumulated
//! in `f64` (two passes: mean, then centred squares) and stored as `f32`.
//!
//! Parallelism: rows are split into fixed chunks of [`ROWS_PER_TASK`] rows. Each chunk is one
//! rayon task; the backward's weight/bias gradients are summed per chunk (rows in order) and the
//! chunk partials are then added in chunk order, so results are bit-identical for 1 or N threads.
//! See `docs/derivations.md` for the backward formula.

use rayon::prelude::*;

/// Rows per parallel task (and per partial sum of the parameter gradients). Fixed, so the
/// reduction order depends only on the number of rows, never on the thread count.
pub const ROWS_PER_TASK: usize = 32;

/// Inputs with fewer elements than this run on the calling thread (same chunking, same result).
const PARALLEL_MIN_LEN: usize = 1 << 14;

/// One forward task's chunks: `((out, x), (mean, rstd))`.
type FwdChunk<'a> = ((&'a mut [f32], &'a [f32]), (&'a mut [f32], &'a mut [f32]));

/// One backward task's chunks: `(((dx, dout), x), (partials, (mean, rstd)))`.
type BwdChunk<'a> = (
    ((&'a mut [f32], &'a [f32]), &'a [f32]),
    (&'a mut [f32], (&'a [f32], &'a [f32])),
);

/// One row of the forward; returns `(mean, rstd)`.
#[inline(always)]
fn forward_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) -> (f32, f32) {
    use super::lanes::sum_f64_by;
    let c = x.len() as f64;
    // both sums in f64 lanes (see `lanes`): they vectorise, and the order is fixed
    let mean = sum_f64_by(x, |v| v as f64) / c;
    let var = sum_f64_by(x, |v| {
        let d = v as f64 - mean;
        d * d
    }) / c;
    let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
    let mean = mean as f32;
    for (((o, &x), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
        // forward: xhat = (x − mean)·rstd;  out = xhat·w + b
        *o = (x - mean) * rstd * w + b;
    }
    (mean, rstd)
}

/// LayerNorm forward over rows of `C = weight.len()` entries, into caller buffers.
///
/// Writes `out`, and the per-row `mean` and `rstd = 1/√(var + eps)` that the backward needs.
///
/// # Shapes
/// `x: (rows·C)`, `weight: (C)`, `bias: (C)`, `out: (rows·C)`, `mean: (rows)`, `rstd: (rows)`.
///
/// # Panics
/// When the lengths disagree (kernels are called with checked shapes).
pub fn layer_norm_forward(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let c = weight.len();
    let rows = check_lengths("layer_norm_forward", x.len(), c, bias.len(), mean.len());
    assert!(
        out.len() == x.len() && rstd.len() == rows,
        "layer_norm_forward: out has {} elements and rstd {}, expected {} and {rows}",
        out.len(),
        rstd.len(),
        x.len()
    );
    if rows == 0 {
        return;
    }
    let chunk = ROWS_PER_TASK * c;
    let task = |((out, x), (mean, rstd)): FwdChunk| {
        super::wide::wide_loop!({
            for (((o, x), m), r) in out
                .chunks_mut(c)
                .zip(x.chunks(c))
                .zip(mean.iter_mut())
                .zip(rstd.iter_mut())
            {
                (*m, *r) = forward_row(x, weight, bias, eps, o);
            }
        })
    };
    if x.len() >= PARALLEL_MIN_LEN {
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(
                mean.par_chunks_mut(ROWS_PER_TASK)
                    .zip(rstd.par_chunks_mut(ROWS_PER_TASK)),
            )
            .for_each(task);
    } else {
        out.chunks_mut(chunk)
            .zip(x.chunks(chunk))
            .zip(
                mean.chunks_mut(ROWS_PER_TASK)
                    .zip(rstd.chunks_mut(ROWS_PER_TASK)),
            )
            .for_each(task);
    }
}

/// Backward of [`layer_norm_forward`]: overwrites `dx`, **accumulates** into `dweight`, `dbias`.
///
/// ```text
/// forward: xhat = (x − mean)·rstd;  out = xhat·w + b
///   ⇒ dbias[c]   += Σ_rows dout[c]
///   ⇒ dweight[c] += Σ_rows dout[c]·xhat[c]
///   ⇒ dxhat = dout·w
///   ⇒ dx = rstd·(dxhat − mean_c(dxhat) − xhat·mean_c(dxhat·xhat))
/// ```
/// `xhat` is recomputed from `x`, `mean`, `rstd` (nothing else is cached).
///
/// # Shapes
/// `dout: (rows·C)`, `x: (rows·C)`, `weight: (C)`, `mean: (rows)`, `rstd: (rows)`,
/// `dx: (rows·C)`, `dweight: (C)`, `dbias: (C)`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    dout: &[f32],
    x: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
) {
    let c = weight.len();
    let rows = check_lengths("layer_norm_backward", x.len(), c, dbias.len(), mean.len());
    assert!(
        dout.len() == x.len()
            && dx.len() == x.len()
            && rstd.len() == rows
            && dweight.len() == c,
        "layer_norm_backward: inconsistent lengths (dout {}, dx {}, x {}, rstd {}, dweight {}, C {c})",
        dout.len(),
        dx.len(),
        x.len(),
        rstd.len(),
        dweight.len()
    );
    if rows == 0 {
        return;
    }
    let chunk = ROWS_PER_TASK * c;
    let n_chunks = rows.div_ceil(ROWS_PER_TASK);
    // partials[k] = [Σ dout·xhat (C) | Σ dout (C)] over the rows of chunk k.
    let mut partials = vec![0.0f32; n_chunks * 2 * c];
    let task = |(((dx, dout), x), (part, (mean, rstd))): BwdChunk| {
        super::wide::wide_loop!(backward_rows(dx, dout, x, weight, part, mean, rstd))
    };
    // (the rows of one task; inside `wide` so that its loops run on the widest vectors)
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward_rows(
        dx: &mut [f32],
        dout: &[f32],
        x: &[f32],
        weight: &[f32],
        part: &mut [f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let c = weight.len();
        let (pw, pb) = part.split_at_mut(c);
        for ((((dx, dout), x), &m), &r) in dx
            .chunks_mut(c)
            .zip(dout.chunks(c))
            .zip(x.chunks(c))
            .zip(mean)
            .zip(rstd)
        {
            // mean_c(dxhat) and mean_c(dxhat·xhat), dxhat = dout·w, in LANES interleaved
            // partial sums (element j into lane j mod LANES) so that the loop vectorises
            const L: usize = super::lanes::LANES;
            let (mut acc_d, mut acc_dx) = ([0.0f32; L], [0.0f32; L]);
            let mut lane_step = |j: usize, n: usize, pw: &mut [f32], pb: &mut [f32]| {
                let (d, x, w) = (&dout[j..j + n], &x[j..j + n], &weight[j..j + n]);
                let (pw, pb) = (&mut pw[j..j + n], &mut pb[j..j + n]);
                for l in 0..n {
                    let xhat = (x[l] - m) * r;
                    let dxhat = d[l] * w[l];
                    acc_d[l] += dxhat;
                    acc_dx[l] += dxhat * xhat;
                    pw[l] += d[l] * xhat;
                    pb[l] += d[l];
                }
            };
            let full = c - c % L;
            for j in (0..full).step_by(L) {
                lane_step(j, L, pw, pb);
            }
            lane_step(full, c - full, pw, pb);
            let sum_d = super::lanes::lanes_sum(acc_d);
            let sum_dx = super::lanes::lanes_sum(acc_dx);
            let mean_d = sum_d / c as f32;
            let mean_dx = sum_dx / c as f32;
            for (((dx, &d), &x), &w) in dx.iter_mut().zip(dout).zip(x).zip(weight) {
                let xhat = (x - m) * r;
                *dx = r * (d * w - mean_d - xhat * mean_dx);
            }
        }
    }
    if x.len() >= PARALLEL_MIN_LEN {
        dx.par_chunks_mut(chunk)
            .zip(dout.par_chunks(chunk))
            .zip(x.par_chunks(chunk))
            .zip(
                partials.par_chunks_mut(2 * c).zip(
                    mean.par_chunks(ROWS_PER_TASK)
                        .zip(rstd.par_chunks(ROWS_PER_TASK)),
                ),
            )
            .for_each(task);
    } else {
        dx.chunks_mut(chunk)
            .zip(dout.chunks(chunk))
            .zip(x.chunks(chunk))
            .zip(
                partials
                    .chunks_mut(2 * c)
                    .zip(mean.chunks(ROWS_PER_TASK).zip(rstd.chunks(ROWS_PER_TASK))),
            )
            .for_each(task);
    }
    // Chunk partials in chunk order: the same sums whatever the thread count.
    for part in partials.chunks(2 * c) {
        let (pw, pb) = part.split_at(c);
        for (g, &p) in dweight.iter_mut().zip(pw) {
            *g += p;
        }
        for (g, &p) in dbias.iter_mut().zip(pb) {
            *g += p;
        }
    }
}

/// Checks `x` is whole rows of `c`, `bias` has `c` entries and `stats` one per row; returns rows.
fn check_lengths(op: &str, x_len: usize, c: usize, bias_len: usize, stats_len: usize) -> usize {
    assert!(c > 0, "{op}: empty normalized axis");
    assert!(
        x_len.is_multiple_of(c) && bias_len == c,
        "{op}: {x_len} elements are not whole rows of C={c}, or bias has {bias_len} != C entries"
    );
    let rows = x_len / c;
    assert_eq!(
        stats_len, rows,
        "{op}: {stats_len} row statistics for {rows} rows"
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_rows_have_zero_mean_and_unit_variance() {
        let c = 16;
        let rows = 70; // more than two chunks, last one partial
        let x: Vec<f32> = (0..rows * c)
            .map(|i| ((i as f32) * 0.73).sin() * 3.0 + (i / c) as f32)
            .collect();
        let w = vec![1.0; c];
        let b = vec![0.0; c];
        let mut out = vec![0.0; rows * c];
        let (mut m, mut r) = (vec![0.0; rows], vec![0.0; rows]);
        layer_norm_forward(&x, &w, &b, 1e-5, &mut out, &mut m, &mut r);
        for row in out.chunks(c) {
            let mean: f32 = row.iter().sum::<f32>() / c as f32;
            let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }
}
