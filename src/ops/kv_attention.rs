//! Causal attention of new queries over a key/value cache (incremental decoding).
//!
//! Same arithmetic as [`super::attention`] for one query row: `s_j = (q·k_j)/√HS` for the
//! visible keys `j ≤ p` (`p` = the query's absolute position), `att = softmax(s)`,
//! `y = Σ_j att_j·v_j`. With a cache, a new token costs `O(T·C)` instead of re-running the
//! whole prefix. Grouped-query attention as in [`super::attention`]: query head `h` reads the
//! cached key/value head `h / (NH/NKV)`.

use super::attention::Heads;
use ndarray::{ArrayView3, ArrayViewMut3, Axis};
use rayon::prelude::*;

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
    assert_eq!(y.dim(), (rows, tn, c), "attention_cached: y shape");
    let scale = 1.0 / (hs as f32).sqrt();
    let one_row = |(r, mut y_r): (usize, ArrayViewMut3<f32>)| {
        let mut scores = Vec::new();
        for h in 0..n_head {
            let g = r * nkv + h / group;
            let (k, v) = (&keys[g], &values[g]);
            let len = k.len() / hs;
            assert!(
                len >= tn && v.len() == k.len(),
                "attention_cached: cache too short"
            );
            let past = len - tn;
            for i in 0..tn {
                let qi = q.slice(ndarray::s![r, i, h * hs..(h + 1) * hs]);
                let qi = qi.as_slice().expect("query rows are contiguous");
                let visible = past + i + 1;
                scores.clear();
                // s_j = (q·k_j)·scale for j ≤ p
                scores.extend(
                    k[..visible * hs]
                        .chunks_exact(hs)
                        .map(|kj| kj.iter().zip(qi).map(|(a, b)| a * b).sum::<f32>() * scale),
                );
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    *s = super::fast_exp::exp(*s - max);
                    sum += *s;
                }
                let inv = 1.0 / sum;
                // y = Σ_j att_j·v_j
                let mut yi = y_r.slice_mut(ndarray::s![0, i, h * hs..(h + 1) * hs]);
                let yi = yi.as_slice_mut().expect("output rows are contiguous");
                yi.fill(0.0);
                for (&p, vj) in scores.iter().zip(v.chunks_exact(hs)) {
                    let a = p * inv;
                    for (o, &vv) in yi.iter_mut().zip(vj) {
                        *o += a * vv;
                    }
                }
            }
        }
    };
    let work = rows * n_head * tn * keys.first().map_or(0, Vec::len);
    let chunks: Vec<_> = y.axis_chunks_iter_mut(Axis(0), 1).enumerate().collect();
    // each row writes only its own output: the same result on any number of threads
    if rows > 1 && work > 1 << 14 {
        chunks.into_par_iter().for_each(one_row);
    } else {
        chunks.into_iter().for_each(one_row);
    }
}
