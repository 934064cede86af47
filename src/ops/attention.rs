//! Causal multi-head scaled dot-product attention on a packed `qkv`, forward and backward, with
//! grouped-query attention (GQA: fewer key/value heads than query heads).
//!
//! Layout: `qkv = (B, T, (NH + 2·NKV)·HS)` holds the `NH` query heads, then the `NKV` key heads,
//! then the `NKV` value heads, `HS` channels each. GPT-2 is the case `NKV = NH` (`qkv = (B, T,
//! 3C)`, `q = qkv[.., 0..C]`, `k = qkv[.., C..2C]`, `v = qkv[.., 2C..3C]`). Query head `h` uses
//! key/value head `h / (NH/NKV)` (Llama's `repeat_kv`). Per batch row `b` and query head `h`
//! with its key/value head `g`:
//!
//! ```text
//! s[i,j]   = (q_h[i]·k_g[j]) / √HS        for j ≤ i   (j > i is masked: −∞)
//! att[i,j] = softmax_j(s[i,·])            (exactly 0 for j > i)
//! y_h[i]   = Σ_{j≤i} att[i,j]·v_g[j]
//! ```
//!
//! The mask has `f32::NEG_INFINITY` semantics, implemented by skipping the masked part: the
//! softmax runs over `j ≤ i` only and writes exact zeros above the diagonal (no `exp(−∞)`, no
//! sentinel like `−10000`).
//!
//! Work layout: one rayon task per `(b, h)` pair in the forward and per `(b, g)` key/value head
//! in the backward (its query heads run one after the other, so `dk_g`, `dv_g` are summed over
//! them in a fixed order without sharing a buffer between tasks), each running serial GEMMs
//! ([`Threads::Serial`]) on strided views of `qkv` (nothing is copied into per-head buffers) and
//! writing a disjoint part of the outputs. Rows are processed in blocks of [`ROW_BLOCK`] queries;
//! a block only multiplies against the keys `0..r1` it can see, so the masked upper triangle is
//! (mostly) never computed. Each task's arithmetic is independent of the thread count, so results
//! are bit-identical on 1 or N threads.
//!
//! Memory: the `(B, NH, T, T)` probabilities `att` are the only tensor of that size; the backward
//! works through a per-thread `(ROW_BLOCK, T)` scratch row block instead of a second one.

use super::matmul::{gemm_into, Threads};
use ndarray::{
    s, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis,
};
use rayon::prelude::*;
use std::cell::RefCell;

/// Query rows per block inside one `(b, h)` task.
pub const ROW_BLOCK: usize = 64;

/// Dropout on the attention probabilities (nanoGPT's `attn_dropout`): entries are zeroed with
/// probability `p` and the kept ones scaled by `1/(1 − p)`.
///
/// The mask is a pure function of `(seed, b, h, i, j)` (a splitmix64 hash), so the backward
/// regenerates exactly the forward's mask without storing a second `(B, NH, T, T)` tensor, and
/// the result does not depend on the thread count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnDropout {
    /// Drop probability in `[0, 1)`.
    pub p: f32,
    /// The seed of this forward (a new one for every training step).
    pub seed: u64,
    /// The global index of the batch's first row: row `b` draws the mask of row
    /// `first_row + b` (0 unless micro-batched, see [`crate::layers::Layer::seek_examples`]).
    pub first_row: usize,
}

impl AttnDropout {
    /// `1/(1 − p)` if entry `idx` is kept, else 0.
    #[inline]
    fn factor(&self, idx: u64) -> f32 {
        let mut z = self.seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 40) as f32 / (1u64 << 24) as f32;
        if u >= self.p {
            1.0 / (1.0 - self.p)
        } else {
            0.0
        }
    }

    /// Writes `out[j] = att[j]·factor(base + j)` for one row.
    #[inline]
    fn apply_row(&self, base: u64, att: &[f32], out: &mut [f32]) {
        for (j, (o, &a)) in out.iter_mut().zip(att).enumerate() {
            *o = a * self.factor(base + j as u64);
        }
    }
}

thread_local! {
    /// The backward's `datt`/`dpre` block for the current thread (reused across calls).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How the heads of a packed `qkv` are laid out: `n_head` query heads and `n_kv_head` key/value
/// heads of `head_size` channels (`n_kv_head` divides `n_head`; GPT-2: `n_kv_head = n_head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads `NH`.
    pub n_head: usize,
    /// Key/value heads `NKV` (divides `NH`).
    pub n_kv_head: usize,
}

impl Heads {
    /// Multi-head attention with as many key/value heads as query heads (GPT-2).
    pub fn mha(n_head: usize) -> Self {
        Heads {
            n_head,
            n_kv_head: n_head,
        }
    }

    /// Grouped-query attention: `n_kv_head` key/value heads shared by `n_head` query heads.
    pub fn gqa(n_head: usize, n_kv_head: usize) -> Self {
        Heads { n_head, n_kv_head }
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// The width of a packed `qkv` row for head size `hs`: `(NH + 2·NKV)·HS`.
    pub fn qkv_width(&self, hs: usize) -> usize {
        (self.n_head + 2 * self.n_kv_head) * hs
    }
}

/// The shape checks shared by forward and backward; returns `(B, T, NH·HS, HS)`.
fn dims(qkv: &ArrayView3<f32>, heads: Heads, op: &str) -> (usize, usize, usize, usize) {
    let (b, t, width) = qkv.dim();
    let (nh, nkv) = (heads.n_head, heads.n_kv_head);
    let per = nh + 2 * nkv;
    assert!(
        nh > 0 && nkv > 0 && nh.is_multiple_of(nkv) && width.is_multiple_of(per),
        "{op}: qkv width {width} is not (NH + 2·NKV)·HS with NH={nh}, NKV={nkv}"
    );
    let hs = width / per;
    (b, t, nh * hs, hs)
}

/// The `(T, HS)` views of `q` (query head `h`), `k`, `v` (its key/value head) for batch row `b`.
fn qkv_head<'a>(
    qkv: &ArrayView3<'a, f32>,
    heads: Heads,
    b: usize,
    h: usize,
    hs: usize,
) -> [ArrayView2<'a, f32>; 3] {
    let at = |lo: usize| (*qkv).slice_move(s![b, .., lo..lo + hs]);
    let g = h / heads.group();
    let k0 = heads.n_head * hs;
    let v0 = k0 + heads.n_kv_head * hs;
    [at(h * hs), at(k0 + g * hs), at(v0 + g * hs)]
}

/// Causal attention forward: writes the probabilities `att` and the merged head outputs `y`.
///
/// # Shapes
/// `qkv: (B, T, (NH + 2·NKV)·HS)`, `att: (B, NH, T, T)` (0 above the diagonal), `y: (B, T, C)`
/// with `C = NH·HS` (heads merged: `y[b, t, h·HS + d]`, ready for the output projection).
///
/// # Panics
/// When the shapes disagree (checked one tier up).
pub fn attention_forward(
    qkv: ArrayView3<f32>,
    heads: Heads,
    att: ArrayViewMut4<f32>,
    y: ArrayViewMut3<f32>,
    dropout: Option<AttnDropout>,
) {
    let n_head = heads.n_head;
    let (bsz, t, c, hs) = dims(&qkv, heads, "attention_forward");
    assert_eq!(
        att.dim(),
        (bsz, n_head, t, t),
        "attention_forward: att shape"
    );
    assert_eq!(y.dim(), (bsz, t, c), "attention_forward: y shape");
    if bsz == 0 || t == 0 {
        return;
    }
    let scale = 1.0 / (hs as f32).sqrt();
    let mut tasks = Vec::with_capacity(bsz * n_head);
    for (b, (att_b, y_b)) in att
        .into_outer_iter_mut()
        .zip(y.into_outer_iter_mut())
        .enumerate()
    {
        for (h, (att_bh, y_bh)) in att_b
            .into_outer_iter_mut()
            .zip(y_b.into_axis_chunks_iter_mut(Axis(1), hs))
            .enumerate()
        {
            tasks.push((b, h, att_bh, y_bh));
        }
    }
    tasks.into_par_iter().for_each(|(b, h, att, y)| {
        let [q, k, v] = qkv_head(&qkv, heads, b, h, hs);
        let drop = dropout.map(|d| (d, (((b + d.first_row) * n_head + h) * t * t) as u64));
        SCRATCH.with_borrow_mut(|scratch| {
            super::wide::wide_loop!(forward_head(q, k, v, scale, att, y, drop, scratch))
        });
    });
}

/// One causal softmax row: `att[j] = exp(s_j − max) / Σ_{j' < visible} exp(s_j' − max)` with
/// `s_j = att[j]·scale` for `j < visible`; the masked rest is set to exactly 0 (the −∞ of the
/// mask, never exp'd). Shared by this kernel and [`super::kv_attention`].
#[inline(always)]
pub(crate) fn softmax_visible(att: &mut [f32], visible: usize, scale: f32) {
    let (vis, masked) = att.split_at_mut(visible);
    let max = super::lanes::max_scaled(vis, scale);
    let sum = super::lanes::exp_in_place_sum(vis, scale, max);
    let inv = 1.0 / sum;
    for a in vis.iter_mut() {
        *a *= inv;
    }
    masked.fill(0.0);
}

/// One `(b, h)` pair of [`attention_forward`]; `drop` carries the dropout and the mask index of
/// this pair's entry `(0, 0)`.
///
/// # Shapes
/// `q, k, v: (T, HS)`, `att: (T, T)`, `y: (T, HS)`, `scratch`: grown to `(ROW_BLOCK·T)` when
/// dropout is on.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_head(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    scale: f32,
    mut att: ArrayViewMut2<f32>,
    mut y: ArrayViewMut2<f32>,
    drop: Option<(AttnDropout, u64)>,
    scratch: &mut Vec<f32>,
) {
    let t = q.nrows();
    for r0 in (0..t).step_by(ROW_BLOCK) {
        let r1 = (r0 + ROW_BLOCK).min(t);
        // raw[i, j] = q[i]·k[j] for the block's queries i ∈ r0..r1 and visible keys j < r1
        gemm_into(
            q.slice(s![r0..r1, ..]),
            k.slice(s![..r1, ..]).t(),
            att.slice_mut(s![r0..r1, ..r1]),
            false,
            Threads::Serial,
        );
        for i in r0..r1 {
            let mut row = att.row_mut(i);
            softmax_visible(
                row.as_slice_mut().expect("att rows are contiguous"),
                i + 1,
                scale,
            );
        }
        // y[i] = Σ_{j ≤ i} att[i, j]·v[j]   (att[i, j] = 0 for i < j < r1); with dropout the
        // masked, rescaled copy is used and `att` keeps the probabilities for the backward
        let a = match drop {
            None => att.slice(s![r0..r1, ..r1]),
            Some((d, base)) => {
                let n = (r1 - r0) * r1;
                if scratch.len() < n {
                    scratch.resize(n, 0.0);
                }
                for (ii, out) in scratch[..n].chunks_mut(r1).enumerate() {
                    let i = r0 + ii;
                    let row = att.row(i);
                    let row = row.as_slice().expect("att rows are contiguous");
                    d.apply_row(base + (i * t) as u64, &row[..r1], out);
                }
                ArrayView2::from_shape((r1 - r0, r1), &scratch[..n]).expect("scratch block")
            }
        };
        gemm_into(
            a,
            v.slice(s![..r1, ..]),
            y.slice_mut(s![r0..r1, ..]),
            false,
            Threads::Serial,
        );
    }
}

/// Causal attention backward: `dqkv` (overwritten) from `dy`, the cached `qkv` and `att`.
///
/// ```text
/// forward: y[i] = Σ_j att[i,j]·v[j]      ⇒ dv[j] += Σ_i att[i,j]·dy[i]  (dv = attᵀ·dy)
///                                         ⇒ datt[i,j] = dy[i]·v[j]       (datt = dy·vᵀ)
/// forward: att[i,·] = softmax(s[i,·]) over j ≤ i
///                                         ⇒ ds[i,j] = att[i,j]·(datt[i,j] − Σ_{j'≤i} att[i,j']·datt[i,j'])
/// forward: s[i,j] = scale·q[i]·k[j]      ⇒ dq[i] += scale·Σ_j ds[i,j]·k[j]   (dq = ds·k·scale)
///                                         ⇒ dk[j] += scale·Σ_i ds[i,j]·q[i]   (dk = dsᵀ·q·scale)
/// forward (GQA): k_g, v_g are used by the query heads h with h / (NH/NKV) = g
///                                         ⇒ dk_g = Σ_h dk_h, dv_g = Σ_h dv_h  (in head order)
/// ```
/// Masked entries (`j > i`) have `att = 0` and get `ds = 0`: no gradient flows through the mask.
///
/// # Shapes
/// `dy: (B, T, NH·HS)`, `qkv: (B, T, (NH + 2·NKV)·HS)`, `att: (B, NH, T, T)`, `dqkv` like `qkv`.
pub fn attention_backward(
    dy: ArrayView3<f32>,
    qkv: ArrayView3<f32>,
    heads: Heads,
    att: ArrayView4<f32>,
    dqkv: ArrayViewMut3<f32>,
    dropout: Option<AttnDropout>,
) {
    let n_head = heads.n_head;
    let (bsz, t, c, hs) = dims(&qkv, heads, "attention_backward");
    assert_eq!(
        att.dim(),
        (bsz, n_head, t, t),
        "attention_backward: att shape"
    );
    assert_eq!(dy.dim(), (bsz, t, c), "attention_backward: dy shape");
    assert_eq!(dqkv.dim(), qkv.dim(), "attention_backward: dqkv shape");
    if bsz == 0 || t == 0 {
        return;
    }
    let scale = 1.0 / (hs as f32).sqrt();
    let (nkv, group) = (heads.n_kv_head, heads.group());
    let mut tasks = Vec::with_capacity(bsz * nkv);
    for (b, dqkv_b) in dqkv.into_outer_iter_mut().enumerate() {
        // column chunks of width HS: q heads 0..NH, then k heads 0..NKV, then v heads
        let mut q: Vec<_> = dqkv_b.into_axis_chunks_iter_mut(Axis(1), hs).collect();
        let v = q.split_off(n_head + nkv);
        let k = q.split_off(n_head);
        let mut q = q.into_iter();
        for (g, (dk, dv)) in k.into_iter().zip(v).enumerate() {
            let dqs: Vec<_> = q.by_ref().take(group).collect();
            tasks.push((b, g, dqs, dk, dv));
        }
    }
    tasks
        .into_par_iter()
        .for_each(|(b, g, dqs, mut dk, mut dv)| {
            dk.fill(0.0);
            dv.fill(0.0);
            for (i, dq) in dqs.into_iter().enumerate() {
                let h = g * group + i;
                let [q, k, v] = qkv_head(&qkv, heads, b, h, hs);
                let dy = dy.slice(s![b, .., h * hs..(h + 1) * hs]);
                let att = att.slice(s![b, h, .., ..]);
                let drop = dropout.map(|d| (d, (((b + d.first_row) * n_head + h) * t * t) as u64));
                SCRATCH.with_borrow_mut(|scratch| {
                    super::wide::wide_loop!({
                        backward_head(
                            q,
                            k,
                            v,
                            att,
                            dy,
                            scale,
                            dq,
                            dk.view_mut(),
                            dv.view_mut(),
                            drop,
                            scratch,
                        )
                    })
                });
            }
        });
}

/// One `(b, h)` pair of [`attention_backward`]: overwrites `dq`, adds into `dk` and `dv`.
///
/// # Shapes
/// `q, k, v: (T, HS)`, `att: (T, T)`, `dy: (T, HS)`, `dq, dk, dv: (T, HS)`,
/// `scratch`: grown to `(ROW_BLOCK·T)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_head(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    att: ArrayView2<f32>,
    dy: ArrayView2<f32>,
    scale: f32,
    mut dq: ArrayViewMut2<f32>,
    mut dk: ArrayViewMut2<f32>,
    mut dv: ArrayViewMut2<f32>,
    drop: Option<(AttnDropout, u64)>,
    scratch: &mut Vec<f32>,
) {
    let t = q.nrows();
    dq.fill(0.0);
    if scratch.len() < ROW_BLOCK.min(t) * t {
        scratch.resize(ROW_BLOCK.min(t) * t, 0.0);
    }
    for r0 in (0..t).step_by(ROW_BLOCK) {
        let r1 = (r0 + ROW_BLOCK).min(t);
        let a = att.slice(s![r0..r1, ..r1]);
        let dyb = dy.slice(s![r0..r1, ..]);
        // dv[j] += Σ_i att_d[i, j]·dy[i]   (dv = att_dᵀ·dy over this block's queries, with
        // att_d = att ⊙ mask/(1 − p) under dropout, regenerated into the scratch block)
        let n = (r1 - r0) * r1;
        match drop {
            None => gemm_into(
                a.t(),
                dyb,
                dv.slice_mut(s![..r1, ..]),
                true,
                Threads::Serial,
            ),
            Some((d, base)) => {
                for (ii, out) in scratch[..n].chunks_mut(r1).enumerate() {
                    let i = r0 + ii;
                    let row = a.row(ii);
                    d.apply_row(
                        base + (i * t) as u64,
                        row.as_slice().expect("contiguous"),
                        out,
                    );
                }
                let ad = ArrayView2::from_shape((r1 - r0, r1), &scratch[..n]).expect("block");
                gemm_into(
                    ad.t(),
                    dyb,
                    dv.slice_mut(s![..r1, ..]),
                    true,
                    Threads::Serial,
                );
            }
        }
        // datt[i, j] = dy[i]·v[j]   (datt = dy·vᵀ)
        let mut ds = ArrayViewMut2::from_shape((r1 - r0, r1), &mut scratch[..(r1 - r0) * r1])
            .expect("scratch holds the block");
        gemm_into(
            dyb,
            v.slice(s![..r1, ..]).t(),
            ds.view_mut(),
            false,
            Threads::Serial,
        );
        for (ii, (mut d, p)) in ds.outer_iter_mut().zip(a.outer_iter()).enumerate() {
            let i = r0 + ii;
            let d = d.as_slice_mut().expect("scratch rows are contiguous");
            if let Some((drop, base)) = drop {
                // datt = datt_d ⊙ mask/(1 − p)
                let row_base = base + (i * t) as u64;
                for (j, d) in d[..=i].iter_mut().enumerate() {
                    *d *= drop.factor(row_base + j as u64);
                }
            }
            let (dvis, dmasked) = d.split_at_mut(i + 1);
            let p = p.slice(s![..i + 1]);
            // softmax backward over the causal part only; scale folded in for dq and dk
            let p = p.as_slice().expect("att rows are contiguous");
            let dot = super::lanes::dot(dvis, p);
            for (d, &p) in dvis.iter_mut().zip(p) {
                *d = p * (*d - dot) * scale;
            }
            dmasked.fill(0.0);
        }
        // dq[i] += Σ_j ds[i, j]·k[j]·scale
        gemm_into(
            ds.view(),
            k.slice(s![..r1, ..]),
            dq.slice_mut(s![r0..r1, ..]),
            true,
            Threads::Serial,
        );
        // dk[j] += Σ_i ds[i, j]·q[i]·scale
        gemm_into(
            ds.t(),
            q.slice(s![r0..r1, ..]),
            dk.slice_mut(s![..r1, ..]),
            true,
            Threads::Serial,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, Array4};

    #[test]
    fn rows_sum_to_one_and_mask_is_exactly_zero() {
        let (b, t, c, nh) = (2, 70, 8, 2); // T > ROW_BLOCK: two row blocks
        let qkv = Array3::from_shape_fn((b, t, 3 * c), |(i, j, k)| {
            ((i * 31 + j * 7 + k * 3) as f32 * 0.37).sin()
        });
        let mut att = Array4::from_elem((b, nh, t, t), f32::NAN);
        let mut y = Array3::from_elem((b, t, c), f32::NAN);
        attention_forward(
            qkv.view(),
            Heads::mha(nh),
            att.view_mut(),
            y.view_mut(),
            None,
        );
        for bi in 0..b {
            for h in 0..nh {
                for i in 0..t {
                    let row = att.slice(s![bi, h, i, ..]);
                    let sum: f32 = row.slice(s![..=i]).sum();
                    assert!((sum - 1.0).abs() < 1e-5);
                    assert!(row.slice(s![i + 1..]).iter().all(|&p| p == 0.0));
                }
            }
        }
        assert!(y.iter().all(|v| v.is_finite()));
        // the first query only sees itself: y[0] = v[0]
        for h in 0..nh {
            for d in 0..c / nh {
                assert_eq!(y[[0, 0, h * 4 + d]], qkv[[0, 0, 2 * c + h * 4 + d]]);
            }
        }
    }
}
