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
//! them in a fixed order without sharing a buffer between tasks), each running the serial
//! register-tiled products of [`super::tile_gemm`] on `qkv` itself (rows of a head are read in
//! place when the head size is a multiple of its padding, as in every real model; `kᵀ`, `vᵀ`
//! and odd-sized heads go through padded per-thread copies) and writing a disjoint part of the
//! outputs. Rows are processed in blocks of [`ROW_BLOCK`] queries, and inside a block each tile
//! of query rows only multiplies against the keys it can see, so the masked upper triangle is
//! (mostly) never computed. Each task's arithmetic is independent of the thread count, so
//! results are bit-identical on 1 or N threads.
//!
//! Memory: the `(B, NH, T, T)` probabilities `att` are the only tensor of that size; the backward
//! works through a per-thread `(ROW_BLOCK, T)` scratch row block instead of a second one.

use super::tile_gemm::{gemm_tiles, pad, Span, Strided};
use ndarray::{s, ArrayView3, ArrayView4, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis};
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

/// Per-thread buffers of the attention kernels (reused across calls): padded copies of one
/// head's operands ([`super::tile_gemm::NPAD`]-wide rows), a score block and the head's gradients.
#[derive(Default)]
struct Scratch {
    /// `kᵀ: (HS, pad T)` for the scores `q·kᵀ`.
    kt: Vec<f32>,
    /// `vᵀ: (HS, pad T)` for `datt = dy·vᵀ`.
    vt: Vec<f32>,
    /// `k: (T, pad HS)` for `dq = ds·k`.
    kp: Vec<f32>,
    /// `v: (T, pad HS)` for `y = att·v`.
    vp: Vec<f32>,
    /// `q: (T, pad HS)` for `dk = dsᵀ·q`.
    qp: Vec<f32>,
    /// `dy: (T, pad HS)` for `dv = attᵀ·dy`.
    dyp: Vec<f32>,
    /// A `(ROW_BLOCK, pad T)` block of scores, probabilities or their gradients.
    s: Vec<f32>,
    /// A `(ROW_BLOCK, pad T)` block of dropped-out probabilities.
    pd: Vec<f32>,
    /// `(T, pad HS)` outputs: `y` or `dq`, and `dk`, `dv`.
    out: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `v[..n]`, grown (with zeros) when shorter.
fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `dst[r·ld + c] = src(r, c)` for `r < rows`, `c < cols`, zeros in columns `cols..ld`.
fn copy_rows(src: Strided, rows: usize, cols: usize, dst: &mut [f32], ld: usize) {
    for (r, d) in dst.chunks_exact_mut(ld).take(rows).enumerate() {
        let row = &src.data[r * src.rs..];
        if src.cs == 1 {
            copy_short(&mut d[..cols], &row[..cols]);
        } else {
            for (c, x) in d[..cols].iter_mut().enumerate() {
                *x = row[c * src.cs];
            }
        }
        d[cols..].fill(0.0);
    }
}

/// Extra floats (one cache line) at the end of each row of the scratch operands, so that rows
/// read one after another at a stride of the row length spread over the L1 cache's sets
/// instead of a power-of-two stride landing on a few of them.
const SKEW: usize = 16;

/// The rows of a `(rows, cols)` operand as [`gemm_tiles`] reads them, `(data, row stride)`:
/// `src` itself when its rows are contiguous and `cols` is a multiple of the padding (every
/// real model's head size; a copy measured slower, as the source rows are cold and the copy
/// pays their misses), else a zero-padded copy in `spare` with rows of `pad(cols) + SKEW`
/// floats.
fn padded_rows<'a>(
    src: Strided<'a>,
    rows: usize,
    cols: usize,
    spare: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    if src.cs == 1 && pad(cols) == cols {
        return (src.data, src.rs);
    }
    let ld = pad(cols) + SKEW;
    let dst = buf(spare, rows * ld);
    copy_rows(src, rows, cols, dst, ld);
    (dst, ld)
}

/// `dst[c·ld + r] = src(r, c)` (the transpose) for `r < rows`, `c < cols`, zeros in `rows..ld`.
fn copy_transposed(src: Strided, rows: usize, cols: usize, dst: &mut [f32], ld: usize) {
    assert!(
        cols * ld <= dst.len() && rows <= ld,
        "copy_transposed: dst too short"
    );
    let full = if src.cs == 1 { rows / 8 * 8 } else { 0 };
    // eight source rows at a time: each destination row gets 8 consecutive floats
    for r0 in (0..full).step_by(8) {
        let src_rows: [&[f32]; 8] = std::array::from_fn(|i| &src.data[(r0 + i) * src.rs..][..cols]);
        for c in 0..cols {
            let d = &mut dst[c * ld + r0..][..8];
            for (x, row) in d.iter_mut().zip(&src_rows) {
                *x = row[c];
            }
        }
    }
    for r in full..rows {
        let row = &src.data[r * src.rs..];
        for c in 0..cols {
            dst[c * ld + r] = row[c * src.cs];
        }
    }
    for d in dst.chunks_exact_mut(ld).take(cols) {
        d[rows..].fill(0.0);
    }
}

/// Writes `src[r·ld..r·ld + HS]` into row `r` of `dst: (T, HS)`.
fn write_rows(src: &[f32], ld: usize, mut dst: ArrayViewMut2<f32>) {
    for (mut row, s) in dst.outer_iter_mut().zip(src.chunks(ld)) {
        match row.as_slice_mut() {
            Some(d) => {
                let n = d.len();
                copy_short(d, &s[..n]);
            }
            None => {
                for (d, &v) in row.iter_mut().zip(s) {
                    *d = v;
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for rows of a few dozen floats: whole blocks of 16 as inline
/// vector moves (a `memcpy` call per short row costs more than the copy).
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_short: lengths");
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in d.by_ref().zip(s.by_ref()) {
        let d: &mut [f32; 16] = d.try_into().expect("a block of 16");
        *d = s.try_into().expect("a block of 16");
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
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

/// Where the heads of batch row `b` start in a standard-layout `qkv` (element offsets): query
/// head `h` and its key and value heads.
fn head_offsets(heads: Heads, b: usize, h: usize, t: usize, hs: usize) -> [usize; 3] {
    let width = heads.qkv_width(hs);
    let base = b * t * width;
    let g = h / heads.group();
    let k0 = heads.n_head * hs;
    let v0 = k0 + heads.n_kv_head * hs;
    [base + h * hs, base + k0 + g * hs, base + v0 + g * hs]
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
    mut att: ArrayViewMut4<f32>,
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
    if !att.is_standard_layout() {
        let mut tmp = ndarray::Array4::zeros(att.dim());
        attention_forward(qkv, heads, tmp.view_mut(), y, dropout);
        att.assign(&tmp);
        return;
    }
    let qkv = qkv.as_standard_layout();
    let data = qkv.as_slice().expect("standard layout");
    let width = heads.qkv_width(hs);
    let scale = 1.0 / (hs as f32).sqrt();
    let mut tasks = Vec::with_capacity(bsz * n_head);
    for (b, (att_b, y_b)) in att
        .outer_iter_mut()
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
    tasks.into_par_iter().for_each(|(b, h, mut att, y)| {
        let at = |o: usize| Strided {
            data: &data[o..],
            rs: width,
            cs: 1,
        };
        let [q, k, v] = head_offsets(heads, b, h, t, hs).map(at);
        let att = att.as_slice_mut().expect("a standard-layout (T, T) block");
        let drop = dropout.map(|d| (d, (((b + d.first_row) * n_head + h) * t * t) as u64));
        let keys = Keys { len: t, past: 0 };
        SCRATCH.with_borrow_mut(|sc| {
            super::wide::wide_loop!(forward_head(
                q,
                k,
                v,
                keys,
                hs,
                scale,
                Some(att),
                y,
                drop,
                sc
            ))
        });
    });
}

/// One causal softmax row: `att[j] = exp(s_j − max) / Σ_{j' < visible} exp(s_j' − max)` with
/// `s_j = att[j]·scale` for `j < visible`; the masked rest is set to exactly 0 (the −∞ of the
/// mask). Shared by this kernel and [`super::kv_attention`].
///
/// The entries past `visible` up to the next multiple of 16 (as far as the row reaches) are set
/// to −∞ first, so the reductions of [`super::lanes`] run over whole vectors: those lanes add
/// `exp(−∞) = 0` exactly, and the sum has the bits of the visible part alone.
#[inline(always)]
pub(crate) fn softmax_visible(att: &mut [f32], visible: usize, scale: f32) {
    let whole = (visible.div_ceil(super::lanes::LANES) * super::lanes::LANES).min(att.len());
    let (row, rest) = att.split_at_mut(whole);
    row[visible..].fill(f32::NEG_INFINITY);
    let max = super::lanes::max_scaled(row, scale);
    let sum = super::lanes::exp_in_place_sum(row, scale, max);
    let inv = 1.0 / sum;
    for a in row.iter_mut() {
        *a *= inv;
    }
    rest.fill(0.0);
}

/// The keys one head attends over: `len` of them, the first query sitting at position `past`
/// (query `i` sees keys `0..=past + i`). Training: `past = 0`, `len = T`.
#[derive(Debug, Clone, Copy)]
struct Keys {
    len: usize,
    past: usize,
}

/// One head of causal attention, for [`attention_forward`] (one `(b, h)` pair) and for prompt
/// processing over a KV cache ([`prefill_head`]); `drop` carries the dropout and the mask index
/// of entry `(0, 0)`.
///
/// Per block of [`ROW_BLOCK`] queries: the scores against the visible keys (each tile of rows
/// `i0..i1` only up to key `past + i1`, rounded up to the padding), the softmax in the score
/// block, its copy into `att` (when kept), and `y = att·v` (tile `i0..i1` over keys
/// `0..past + i1`).
///
/// # Shapes
/// `q: (Tq, HS)`, `k, v: (len, HS)` (strided), `att: (Tq·len)`, `y: (Tq, HS)` with
/// `Tq = len − past`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_head(
    q: Strided,
    k: Strided,
    v: Strided,
    keys: Keys,
    hs: usize,
    scale: f32,
    mut att: Option<&mut [f32]>,
    mut y: ArrayViewMut2<f32>,
    drop: Option<(AttnDropout, u64)>,
    sc: &mut Scratch,
) {
    let (t, past) = (keys.len, keys.past);
    let tq = t - past;
    let (tp, hp, rb) = (pad(t), pad(hs), ROW_BLOCK.min(tq));
    let kt = buf(&mut sc.kt, hs * tp);
    copy_transposed(k, t, hs, kt, tp);
    let (vp, ldv) = padded_rows(v, t, hs, &mut sc.vp);
    let s = buf(&mut sc.s, rb * tp);
    let out = buf(&mut sc.out, rb * hp);
    for r0 in (0..tq).step_by(ROW_BLOCK) {
        let r1 = (r0 + ROW_BLOCK).min(tq);
        let nb = r1 - r0;
        // s[ii, j] = q[r0 + ii]·k[j] for the keys j < past + r0 + i1 (rounded up) tile i0..i1
        // sees
        let qa = Strided {
            data: &q.data[r0 * q.rs..],
            ..q
        };
        gemm_tiles(nb, qa, kt, tp, s, tp, false, |_, i1| Span {
            n: pad(past + r0 + i1),
            k0: 0,
            k1: hs,
        });
        for (ii, row) in s.chunks_exact_mut(tp).take(nb).enumerate() {
            let i = r0 + ii;
            softmax_visible(row, past + i + 1, scale);
            if let Some(att) = att.as_deref_mut() {
                att[i * t..(i + 1) * t].copy_from_slice(&row[..t]);
            }
        }
        // y[i] = Σ_{j ≤ i} att[i, j]·v[j]; with dropout the masked, rescaled copy is used and
        // `att` keeps the probabilities for the backward
        let p: &[f32] = match drop {
            None => s,
            Some((d, base)) => {
                let pd = buf(&mut sc.pd, nb * tp);
                for (ii, out) in pd.chunks_exact_mut(tp).enumerate() {
                    let i = r0 + ii;
                    d.apply_row(
                        base + (i * t) as u64,
                        &s[ii * tp..ii * tp + past + r1],
                        &mut out[..past + r1],
                    );
                }
                pd
            }
        };
        let pa = Strided {
            data: p,
            rs: tp,
            cs: 1,
        };
        gemm_tiles(nb, pa, vp, ldv, out, hp, false, |_, i1| Span {
            n: hp,
            k0: 0,
            k1: past + r0 + i1,
        });
        write_rows(out, hp, y.slice_mut(s![r0..r1, ..]));
    }
}

/// Prompt processing for one head over a KV cache: `y = softmax(q·kᵀ/√HS, causal)·v` for `Tq`
/// new queries at positions `len − Tq..len` ([`super::kv_attention`]'s block path; the same
/// kernel as the training forward, nothing kept for a backward).
///
/// # Shapes
/// `q: (Tq, HS)` (strided), `k, v: (len, HS)` row-major (`len·HS` floats), `y: (Tq, HS)`.
pub(crate) fn prefill_head(
    q: Strided,
    k: &[f32],
    v: &[f32],
    hs: usize,
    scale: f32,
    y: ArrayViewMut2<f32>,
) {
    let (tq, len) = (y.nrows(), k.len() / hs);
    assert!(
        tq <= len && v.len() == k.len(),
        "prefill_head: cache shorter than the queries"
    );
    let keys = Keys {
        len,
        past: len - tq,
    };
    let at = |data| Strided {
        data,
        rs: hs,
        cs: 1,
    };
    SCRATCH.with_borrow_mut(|sc| {
        super::wide::wide_loop!(forward_head(
            q,
            at(k),
            at(v),
            keys,
            hs,
            scale,
            None,
            y,
            None,
            sc
        ))
    });
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
    let (qkv, dy, att) = (
        qkv.as_standard_layout(),
        dy.as_standard_layout(),
        att.as_standard_layout(),
    );
    let (data, dyd, attd) = (
        qkv.as_slice().expect("standard layout"),
        dy.as_slice().expect("standard layout"),
        att.as_slice().expect("standard layout"),
    );
    let width = heads.qkv_width(hs);
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
    tasks.into_par_iter().for_each(|(b, g, dqs, dk, dv)| {
        let at = |o: usize| Strided {
            data: &data[o..],
            rs: width,
            cs: 1,
        };
        let heads_of_g: Vec<Head> = (0..group)
            .map(|i| {
                let h = g * group + i;
                let [q, _, _] = head_offsets(heads, b, h, t, hs).map(at);
                Head {
                    q,
                    dy: Strided {
                        data: &dyd[(b * t * c) + h * hs..],
                        rs: c,
                        cs: 1,
                    },
                    att: &attd[(b * n_head + h) * t * t..(b * n_head + h + 1) * t * t],
                    drop: dropout.map(|d| (d, (((b + d.first_row) * n_head + h) * t * t) as u64)),
                }
            })
            .collect();
        let [_, k, v] = head_offsets(heads, b, g * group, t, hs).map(at);
        SCRATCH.with_borrow_mut(|sc| {
            super::wide::wide_loop!(backward_group(
                &heads_of_g,
                k,
                v,
                t,
                hs,
                scale,
                dqs,
                dk,
                dv,
                sc
            ))
        });
    });
}

/// One query head of a key/value group in [`attention_backward`].
struct Head<'a> {
    /// `q: (T, HS)`.
    q: Strided<'a>,
    /// `dy: (T, HS)`.
    dy: Strided<'a>,
    /// The probabilities `(T·T)`.
    att: &'a [f32],
    /// The dropout and the mask index of entry `(0, 0)`.
    drop: Option<(AttnDropout, u64)>,
}

/// The key/value head `g` of one batch row in [`attention_backward`]: overwrites each query
/// head's `dq` and the group's `dk`, `dv` (summed over its query heads in order).
///
/// # Shapes
/// `k, v: (T, HS)` (strided), `dqs`: one `(T, HS)` per query head, `dk, dv: (T, HS)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_group(
    heads: &[Head],
    k: Strided,
    v: Strided,
    t: usize,
    hs: usize,
    scale: f32,
    dqs: Vec<ArrayViewMut2<f32>>,
    dk: ArrayViewMut2<f32>,
    dv: ArrayViewMut2<f32>,
    sc: &mut Scratch,
) {
    let (tp, hp, rb) = (pad(t), pad(hs), ROW_BLOCK.min(t));
    let Scratch {
        kt: _,
        vt,
        kp,
        vp: _,
        qp,
        dyp,
        s,
        pd,
        out,
        dk: dkp,
        dv: dvp,
    } = sc;
    let vt = buf(vt, hs * tp);
    copy_transposed(v, t, hs, vt, tp);
    let (kp, ldk) = padded_rows(k, t, hs, kp);
    let dkp = buf(dkp, t * hp);
    dkp.fill(0.0);
    let dvp = buf(dvp, t * hp);
    dvp.fill(0.0);
    // the score block's rows are 16 floats longer than the keys: the column reads of `dsᵀ·q`
    // (stride ls) then spread over the cache sets instead of hitting a few (a 2^k stride)
    let ls = tp + SKEW;
    let s = buf(s, rb * ls);
    for (head, dq) in heads.iter().zip(dqs) {
        let (qp, ldq) = padded_rows(head.q, t, hs, qp);
        let (dyp, lddy) = padded_rows(head.dy, t, hs, dyp);
        let dqp = buf(out, t * hp);
        let att = head.att;
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            let nb = r1 - r0;
            // dv[j] += Σ_i att_d[i, j]·dy[i] over this block's queries i (only i ≥ j is
            // nonzero: tile j0..j1 starts at query j0), att_d = att ⊙ mask/(1 − p) under
            // dropout, regenerated into a block
            let (p, ld): (&[f32], usize) = match head.drop {
                None => (&att[r0 * t..], t),
                Some((d, base)) => {
                    let pd = buf(pd, nb * tp);
                    for (ii, o) in pd.chunks_exact_mut(tp).enumerate() {
                        let i = r0 + ii;
                        let row = &att[i * t..i * t + r1];
                        d.apply_row(base + (i * t) as u64, row, &mut o[..r1]);
                    }
                    (pd, tp)
                }
            };
            let pa = Strided {
                data: p,
                rs: 1,
                cs: ld,
            };
            gemm_tiles(r1, pa, &dyp[r0 * lddy..], lddy, dvp, hp, true, |j0, _| {
                Span {
                    n: hp,
                    k0: j0.saturating_sub(r0),
                    k1: nb,
                }
            });
            // datt[i, j] = dy[i]·v[j] for the keys j < r0 + i1 (rounded up) tile i0..i1 sees
            let dya = Strided {
                data: &head.dy.data[r0 * head.dy.rs..],
                ..head.dy
            };
            gemm_tiles(nb, dya, vt, tp, s, ls, false, |_, i1| Span {
                n: pad(r0 + i1),
                k0: 0,
                k1: hs,
            });
            for (ii, d) in s.chunks_exact_mut(ls).take(nb).enumerate() {
                let i = r0 + ii;
                if let Some((drop, base)) = head.drop {
                    // datt = datt_d ⊙ mask/(1 − p)
                    let row_base = base + (i * t) as u64;
                    for (j, d) in d[..=i].iter_mut().enumerate() {
                        *d *= drop.factor(row_base + j as u64);
                    }
                }
                let (dvis, dmasked) = d.split_at_mut(i + 1);
                // softmax backward over the causal part only; scale folded in for dq and dk
                let p = &att[i * t..i * t + i + 1];
                let dot = super::lanes::dot(dvis, p);
                for (d, &p) in dvis.iter_mut().zip(p) {
                    *d = p * (*d - dot) * scale;
                }
                // zeros up to the block's last key (the products below read them)
                dmasked[..r1 - i - 1].fill(0.0);
            }
            let da = Strided {
                data: s,
                rs: ls,
                cs: 1,
            };
            // dq[i] = Σ_{j ≤ i} ds[i, j]·k[j]·scale (tile i0..i1 over keys 0..i1)
            gemm_tiles(nb, da, kp, ldk, &mut dqp[r0 * hp..], hp, false, |_, i1| {
                Span {
                    n: hp,
                    k0: 0,
                    k1: r0 + i1,
                }
            });
            // dk[j] += Σ_i ds[i, j]·q[i]·scale over this block's queries i ≥ j
            let dsa = Strided {
                data: s,
                rs: 1,
                cs: ls,
            };
            gemm_tiles(r1, dsa, &qp[r0 * ldq..], ldq, dkp, hp, true, |j0, _| Span {
                n: hp,
                k0: j0.saturating_sub(r0),
                k1: nb,
            });
        }
        write_rows(dqp, hp, dq);
    }
    write_rows(dkp, hp, dk);
    write_rows(dvp, hp, dv);
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
