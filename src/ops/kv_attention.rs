//! Causal attention of new queries over a key/value cache (incremental decoding).
//!
//! Same arithmetic as [`super::attention`] for one query row: `s_j = (q·k_j)/√HS` for the
//! visible keys `j ≤ p` (`p` = the query's absolute position), `att = softmax(s)`,
//! `y = Σ_j att_j·v_j`. With a cache, a new token costs `O(T·C)` instead of re-running the
//! whole prefix. Grouped-query attention as in [`super::attention`]: query head `h` reads the
//! cached key/value head `h / (NH/NKV)`.

use super::attention::{prefill_head, softmax_visible, Heads};
use super::tile_gemm::Strided;
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
    let q_std = q.as_standard_layout();
    let qd = q_std.as_slice().expect("standard layout");
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
        if tn >= GEMM_MIN_QUERIES {
            let q_h = Strided {
                data: &qd[(r * tn) * c + h * hs..],
                rs: c,
                cs: 1,
            };
            prefill_head(q_h, k, v, hs, scale, y_h);
        } else {
            let q_h = q.slice(s![r, .., h * hs..(h + 1) * hs]);
            let k = ArrayView2::from_shape((len, hs), k).expect("(L, HS) keys");
            let v = ArrayView2::from_shape((len, hs), v).expect("(L, HS) values");
            SCRATCH.with_borrow_mut(|scratch| head_rows(q_h, k, v, scale, y_h, scratch));
        }
    };
    let work = rows * n_head * tn * keys.first().map_or(0, Vec::len);
    if work > 1 << 14 {
        tasks.into_par_iter().for_each(one);
    } else {
        tasks.into_iter().for_each(one);
    }
}

/// From this many new queries on, a head runs the blocked kernel of the training forward
/// ([`prefill_head`], prompt processing); fewer (decoding) take the row loop.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::attention_forward;
    use ndarray::{Array3, Array4};

    /// The cached forms (the blocked prefill with a past, and the query-by-query rows) against
    /// the training forward over the whole sequence, with GQA, odd and padded-free head sizes.
    #[test]
    fn cached_attention_matches_the_full_forward() {
        for &(t, nh, nkv, hs, past) in &[
            (90, 4, 2, 5, 17),
            (75, 2, 2, 32, 3),
            (20, 2, 1, 8, 12),
            (30, 2, 1, 8, 25),
        ] {
            let heads = Heads::gqa(nh, nkv);
            let w = heads.qkv_width(hs);
            let qkv = Array3::from_shape_fn((1, t, w), |(_, i, j)| {
                ((i * 13 + j * 7) as f32 * 0.31).sin()
            });
            let mut att = Array4::zeros((1, nh, t, t));
            let mut want = Array3::zeros((1, t, nh * hs));
            attention_forward(qkv.view(), heads, att.view_mut(), want.view_mut(), None);
            // the cache holds every position; the last t − past are the new queries
            let cache = |first: usize| -> Vec<Vec<f32>> {
                (0..nkv)
                    .map(|g| {
                        let c0 = first + g * hs;
                        qkv.slice(s![0, .., c0..c0 + hs]).iter().copied().collect()
                    })
                    .collect()
            };
            let (keys, values) = (cache(nh * hs), cache((nh + nkv) * hs));
            let q = qkv.slice(s![.., past.., ..nh * hs]).to_owned();
            let mut y = Array3::zeros((1, t - past, nh * hs));
            attention_cached(q.view(), heads, &keys, &values, y.view_mut());
            for (g, w) in y.iter().zip(want.slice(s![.., past.., ..]).iter()) {
                assert!(
                    (g - w).abs() <= 1e-5,
                    "t={t} hs={hs} past={past}: {g} vs {w}"
                );
            }
        }
    }
}
