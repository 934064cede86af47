//! Causal attention of new queries over a key/value cache (incremental decoding).
//!
//! Same arithmetic as [`super::attention`] for one query row: `s_j = (q·k_j)/√HS` for the
//! visible keys `j ≤ p` (`p` = the query's absolute position), `att = softmax(s)`,
//! `y = Σ_j att_j·v_j`. With a cache, a new token costs `O(T·C)` instead of re-running the
//! whole prefix. Grouped-query attention as in [`super::attention`]: query head `h` reads the
//! cached key/value head `h / (NH/NKV)`.

use super::attention::{softmax_visible, Heads, ROW_BLOCK};
use super::matmul::{gemm_into, Threads};
use ndarray::{s, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;
use std::cell::RefCell;

/// Attention for `Tn` new positions per row against cached keys and values that already include
/// them.
///
/// # Shapes
/// `q: (R, Tn, C)` (the new queries, `C = NH·HS`, heads packed `h·HS + d`), `keys[r·NKV + g]`
/// and `values[r·NKV + g]`: `(L·HS)` flattened `(L, HS)` with `L = past + Tn` positions,
/// `y: (R, Tn, C)`. Query `i` sits at absolute position `past + i` and sees keys `0..=past + i`.
///
/// # Panics
/// When the shapes disagree (checked one tier up).
pub fn attention_cached(
    q: ArrayView3<f32>,
    heads: Heads,
    keys: &[Vec<f32>],
    values: &[Vec<f32>],
    mut y: ArrayViewMut3<f32>,
) {
    let (rows, tn, c) = q.dim();
    assert_eq!(y.dim(), (rows, tn, c), "attention_cached: y shape");
    let (n_head, nkv) = (heads.n_head, heads.n_kv_head);
    assert!(
        n_head > 0 && nkv > 0 && n_head % nkv == 0 && c % n_head == 0,
        "attention_cached: C % NH != 0 or NH % NKV != 0"
    );
    let hs = c / n_head;
    let group = n_head / nkv;
    assert_eq!(
        keys.len(),
        rows * nkv,
        "attention_cached: one key list per (row, kv head)"
    );
    assert_eq!(
        values.len(),
        rows * nkv,
        "attention_cached: one value list per (row, kv head)"
    );
    let scale = 1.0 / (hs as f32).sqrt();
    // one task per (row, head): each writes its own columns of y, so the result is the same on
    // any number of threads
    let mut tasks = Vec::with_capacity(rows * n_head);
    for (r, y_r) in y.outer_iter_mut().enumerate() {
        for (h, y_h) in y_r.into_axis_chunks_iter_mut(Axis(1), hs).enumerate() {
            tasks.push((r, h, y_h));
        }
    }
    let one = |(r, h, y_h): (usize, usize, ArrayViewMut2<f32>)| {
        let g = r * nkv + h / group;
        let (k, v) = (&keys[g], &values[g]);
        let len = k.len() / hs;
        assert!(
            len >= tn && v.len() == k.len(),
            "attention_cached: cache too short"
        );
        let q_h = q.slice(s![r, .., h * hs..(h + 1) * hs]);
        let k = ArrayView2::from_shape((len, hs), k).expect("(L, HS) keys");
        let v = ArrayView2::from_shape((len, hs), v).expect("(L, HS) values");
        SCRATCH.with_borrow_mut(|scratch| {
            if tn >= GEMM_MIN_QUERIES {
                head_blocked(q_h, k, v, scale, y_h, scratch);
            } else {
                head_rows(q_h, k, v, scale, y_h, scratch);
            }
        });
    };
    let work = rows * n_head * tn * keys.first().map_or(0, Vec::len);
    if work > 1 << 14 {
        tasks.into_par_iter().for_each(one);
    } else {
        tasks.into_iter().for_each(one);
    }
}

/// From this many new queries on, a head's scores are computed as GEMM blocks (prompt
/// processing); fewer (decoding) take the row loop.
const GEMM_MIN_QUERIES: usize = 8;

thread_local! {
    /// Scores of the current block, per thread (reused across calls).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One head, query by query (decoding: one or a few new positions).
///
/// # Shapes
/// `q: (Tn, HS)`, `k, v: (L, HS)`, `y: (Tn, HS)`.
fn head_rows(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    scale: f32,
    mut y: ArrayViewMut2<f32>,
    scores: &mut Vec<f32>,
) {
    let (tn, len) = (q.nrows(), k.nrows());
    let past = len - tn;
    for i in 0..tn {
        let visible = past + i + 1;
        let qi = q.row(i);
        scores.clear();
        // s_j = q·k_j for j ≤ p
        scores.extend(k.outer_iter().take(visible).map(|kj| kj.dot(&qi)));
        softmax_visible(scores, visible, scale);
        // y = Σ_j att_j·v_j
        let mut yi = y.row_mut(i);
        yi.fill(0.0);
        for (&a, vj) in scores.iter().zip(v.outer_iter()) {
            yi.scaled_add(a, &vj);
        }
    }
}

/// One head in blocks of [`ROW_BLOCK`] queries: `S = Q·Kᵀ` and `Y = softmax(S)·V` as GEMMs over
/// the keys the block can see (prompt processing).
///
/// # Shapes
/// `q: (Tn, HS)`, `k, v: (L, HS)`, `y: (Tn, HS)`.
fn head_blocked(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    scale: f32,
    mut y: ArrayViewMut2<f32>,
    scratch: &mut Vec<f32>,
) {
    let (tn, len) = (q.nrows(), k.nrows());
    let past = len - tn;
    for i0 in (0..tn).step_by(ROW_BLOCK) {
        let i1 = (i0 + ROW_BLOCK).min(tn);
        let seen = past + i1;
        let n = (i1 - i0) * seen;
        if scratch.len() < n {
            scratch.resize(n, 0.0);
        }
        let mut att = ArrayViewMut2::from_shape((i1 - i0, seen), &mut scratch[..n]).expect("block");
        // raw[i, j] = q[i]·k[j] for the block's queries and the keys it can see
        gemm_into(
            q.slice(s![i0..i1, ..]),
            k.slice(s![..seen, ..]).t(),
            att.view_mut(),
            false,
            Threads::Serial,
        );
        for (ii, mut row) in att.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().expect("contiguous block rows");
            softmax_visible(row, past + i0 + ii + 1, scale);
        }
        // y[i] = Σ_{j ≤ p} att[i, j]·v[j]
        gemm_into(
            att.view(),
            v.slice(s![..seen, ..]),
            y.slice_mut(s![i0..i1, ..]),
            false,
            Threads::Serial,
        );
    }
}
