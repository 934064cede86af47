//! Embedding look-ups (`nn.Embedding`, GPT-2 `wte` + `wpe`), forward and scatter-add backward.
//!
//! Tables and activations are flat row-major slices with the row width `C` passed explicitly.
//! Token ids were checked against the table size one tier up; here an out-of-range id panics.
//!
//! Determinism: the backward is a scatter-add, which cannot be split over the ids without two
//! tasks racing for one table row. Instead the **table rows** are split into fixed chunks of
//! [`TABLE_ROWS_PER_TASK`]; each task scans every id in position order and adds the rows that fall
//! in its chunk. Each table row is therefore summed by one task in position order, the same for 1
//! or N threads. The position gradient `dwpe[t] = Σ_b dout[b, t]` runs in parallel over `t`, summing
//! over `b` in order.

use rayon::prelude::*;

/// Table rows per parallel task of the scatter-add backward.
pub const TABLE_ROWS_PER_TASK: usize = 64;

/// Work below this many output elements stays on the calling thread (same order, same result).
const PARALLEL_MIN_LEN: usize = 1 << 14;

/// `out[n] = weight[ids[n]]`: one table row per id.
///
/// # Shapes
/// `ids: (N)` (e.g. `N = B·T`), `weight: (V·C)`, `out: (N·C)`.
///
/// # Panics
/// When an id is ≥ `V` or the lengths disagree.
pub fn embedding_forward(ids: &[usize], weight: &[f32], c: usize, out: &mut [f32]) {
    assert!(
        c > 0 && weight.len().is_multiple_of(c),
        "embedding: table is not rows of C={c}"
    );
    assert_eq!(
        out.len(),
        ids.len() * c,
        "embedding: out has the wrong length"
    );
    let v = weight.len() / c;
    let row = |(o, &id): (&mut [f32], &usize)| {
        assert!(id < v, "embedding: id {id} >= table size {v}");
        o.copy_from_slice(&weight[id * c..(id + 1) * c]);
    };
    if out.len() >= PARALLEL_MIN_LEN {
        out.par_chunks_mut(c).zip(ids.par_iter()).for_each(row);
    } else {
        out.chunks_mut(c).zip(ids.iter()).for_each(row);
    }
}

/// Backward of [`embedding_forward`]: scatter-**adds** `dout` rows into `dweight`.
///
/// ```text
/// forward: out[n] = weight[ids[n]]  ⇒  dweight[ids[n]] += dout[n]   (repeated ids accumulate)
/// ```
///
/// # Shapes
/// `ids: (N)`, `dout: (N·C)`, `dweight: (V·C)`.
pub fn embedding_backward(ids: &[usize], dout: &[f32], c: usize, dweight: &mut [f32]) {
    assert!(
        c > 0 && dweight.len().is_multiple_of(c),
        "embedding backward: table is not rows of C={c}"
    );
    assert_eq!(
        dout.len(),
        ids.len() * c,
        "embedding backward: dout has the wrong length"
    );
    let v = dweight.len() / c;
    let chunk = TABLE_ROWS_PER_TASK * c;
    let task = |(k, dw): (usize, &mut [f32])| {
        let lo = k * TABLE_ROWS_PER_TASK;
        let hi = lo + dw.len() / c;
        for (&id, d) in ids.iter().zip(dout.chunks(c)) {
            assert!(id < v, "embedding backward: id {id} >= table size {v}");
            if (lo..hi).contains(&id) {
                let row = &mut dw[(id - lo) * c..(id - lo + 1) * c];
                for (g, &d) in row.iter_mut().zip(d) {
                    *g += d;
                }
            }
        }
    };
    if dout.len() >= PARALLEL_MIN_LEN && v > TABLE_ROWS_PER_TASK {
        dweight.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        dweight.chunks_mut(chunk).enumerate().for_each(task);
    }
}

/// GPT-2's input embedding: `out[b, t] = wte[ids[b, t]] + wpe[t]` (positions `0..T`).
///
/// # Shapes
/// `ids: (B·T)`, `wte: (V·C)`, `wpe: (P·C)` with `P ≥ T`, `out: (B·T·C)`.
///
/// # Panics
/// When an id is ≥ `V`, `T > P` or the lengths disagree.
pub fn token_position_forward(
    ids: &[usize],
    t: usize,
    wte: &[f32],
    wpe: &[f32],
    c: usize,
    out: &mut [f32],
) {
    assert!(
        t > 0 && ids.len().is_multiple_of(t),
        "token_position: ids are not whole rows of T={t}"
    );
    assert!(
        wpe.len() >= t * c,
        "token_position: wpe has fewer than T={t} rows"
    );
    embedding_forward(ids, wte, c, out);
    let add_positions = |o: &mut [f32]| {
        // o: one sequence (T·C); out[b, t] += wpe[t]
        for (o, &p) in o.iter_mut().zip(&wpe[..t * c]) {
            *o += p;
        }
    };
    if out.len() >= PARALLEL_MIN_LEN {
        out.par_chunks_mut(t * c).for_each(add_positions);
    } else {
        out.chunks_mut(t * c).for_each(add_positions);
    }
}

/// Backward of [`token_position_forward`], **accumulating** into `dwte` and `dwpe`.
///
/// ```text
/// forward: out[b,t] = wte[ids[b,t]] + wpe[t]
///   ⇒ dwte[ids[b,t]] += dout[b,t]          (scatter-add, see embedding_backward)
///   ⇒ dwpe[t]        += Σ_b dout[b,t]      (rows t ≥ T untouched)
/// ```
///
/// # Shapes
/// `ids: (B·T)`, `dout: (B·T·C)`, `dwte: (V·C)`, `dwpe: (P·C)` with `P ≥ T`.
pub fn token_position_backward(
    ids: &[usize],
    t: usize,
    dout: &[f32],
    c: usize,
    dwte: &mut [f32],
    dwpe: &mut [f32],
) {
    assert!(
        t > 0 && ids.len().is_multiple_of(t),
        "token_position backward: ids are not whole rows of T={t}"
    );
    assert!(
        dwpe.len() >= t * c,
        "token_position backward: dwpe has fewer than T={t} rows"
    );
    embedding_backward(ids, dout, c, dwte);
    let bsz = ids.len() / t;
    let pos = |(tt, dw): (usize, &mut [f32])| {
        for b in 0..bsz {
            let d = &dout[(b * t + tt) * c..(b * t + tt + 1) * c];
            for (g, &d) in dw.iter_mut().zip(d) {
                *g += d;
            }
        }
    };
    let dwpe = &mut dwpe[..t * c];
    if dout.len() >= PARALLEL_MIN_LEN {
        dwpe.par_chunks_mut(c).enumerate().for_each(pos);
    } else {
        dwpe.chunks_mut(c).enumerate().for_each(pos);
    }
}
