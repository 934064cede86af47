//! Batch normalisation over NCHW images (PyTorch `nn.BatchNorm2d`), forward and backward.
//!
//! Per channel `c`, over the `M = N·H·W` values `x[·, c, ·, ·]`:
//!
//! ```text
//! training:   μ = Σx / M,  σ² = Σ(x − μ)² / M   (biased: used to normalise)
//!             x̂ = (x − μ)·rstd,  rstd = 1/√(σ² + eps),  y = γ·x̂ + β
//!             running_mean ← (1 − m)·running_mean + m·μ
//!             running_var  ← (1 − m)·running_var  + m·σ²·M/(M − 1)   (unbiased)
//! evaluation: the same normalisation with μ = running_mean, σ² = running_var
//! ```
//!
//! Backward, training mode (μ and σ² depend on every `x` of the channel). With `dx̂ = γ·dy`:
//!
//! ```text
//! dγ += Σ dy·x̂,   dβ += Σ dy
//! ∂x̂_j/∂x_i = rstd·(δ_ij − 1/M − x̂_i·x̂_j/M)
//!   ⇒ dx_i = (rstd/M)·(M·dx̂_i − Σ dx̂ − x̂_i·Σ dx̂·x̂)
//!          = γ·rstd·(dy_i − mean(dy) − x̂_i·mean(dy·x̂))
//! ```
//!
//! Backward, evaluation mode (running statistics are constants): `dx = γ·rstd·dy`, with the
//! same `dγ`, `dβ`.
//!
//! Reductions: every per-channel sum (statistics, `Σ dy`, `Σ dy·x̂`) accumulates in `f64` over
//! 8 fixed lanes in index order, the statistics shifted by the channel's first value for
//! accuracy. One channel is always reduced by one task, so results are bit-identical for any
//! rayon thread count; channels run in parallel when the input is large.

use crate::ops::activation::PARALLEL_MIN_LEN;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis, Ix3};
use rayon::prelude::*;

/// Roughly how many elements one parallel task handles (channels are never split).
const TASK_LEN: usize = 1 << 13;

/// The number of independent `f64` accumulators of a reduction (a fixed, vectorisable order).
const LANES: usize = 8;

/// What the backward pass needs from a forward pass; buffers are reused between forwards.
#[derive(Debug, Clone)]
pub struct BatchNormCache {
    /// The normalised input `x̂ = (x − μ)·rstd`.
    ///
    /// # Shapes
    /// `(N, C, H, W)`.
    pub xhat: Array4<f32>,
    /// Per-channel mean `μ`: of the batch (training) or the running mean (evaluation). `(C)`.
    pub mean: Vec<f32>,
    /// Per-channel variance `σ²`: the **biased** batch variance (training) or the running
    /// variance (evaluation). `(C)`.
    pub var: Vec<f32>,
    /// Per-channel `rstd = 1/√(σ² + eps)`. `(C)`.
    pub rstd: Vec<f32>,
    /// `true` when `mean`/`var` are batch statistics (training), which selects the backward.
    pub batch_stats: bool,
}

impl Default for BatchNormCache {
    fn default() -> Self {
        BatchNormCache {
            xhat: Array4::zeros((0, 0, 0, 0)),
            mean: Vec::new(),
            var: Vec::new(),
            rstd: Vec::new(),
            batch_stats: true,
        }
    }
}

impl BatchNormCache {
    /// Sizes the buffers for an input of shape `dim`, reallocating only when it changed.
    fn prepare(&mut self, dim: (usize, usize, usize, usize), batch_stats: bool) {
        if self.xhat.dim() != dim {
            self.xhat = Array4::zeros(dim);
        }
        for v in [&mut self.mean, &mut self.var, &mut self.rstd] {
            v.resize(dim.1, 0.0);
        }
        self.batch_stats = batch_stats;
    }
}

/// Adds `f(a_i, b_i) = (u, v)` lane-wise into `s1`, `s2` (lane = index mod [`LANES`]).
#[inline]
fn lane_sums(
    a: &[f32],
    b: &[f32],
    s1: &mut [f64; LANES],
    s2: &mut [f64; LANES],
    f: impl Fn(f32, f32) -> (f64, f64),
) {
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (ra, rb) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            let (u, v) = f(ra[l], rb[l]);
            s1[l] += u;
            s2[l] += v;
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        let (u, v) = f(x, y);
        s1[l] += u;
        s2[l] += v;
    }
}

/// Channels per parallel task for `c` channels of `m` values (all in one task when small).
fn channels_per_task(c: usize, m: usize) -> usize {
    if c * m <= PARALLEL_MIN_LEN {
        c.max(1)
    } else {
        (TASK_LEN / m.max(1)).max(1)
    }
}

/// Views a standard-layout `(N, C, H, W)` array as `(N, C, H·W)`.
fn rows3<'a>(x: ArrayView4<'a, f32>) -> ndarray::ArrayView<'a, f32, Ix3> {
    let (n, c, h, w) = x.dim();
    x.into_shape_with_order((n, c, h * w))
        .expect("standard layout")
}

fn rows3_mut<'a>(x: ArrayViewMut4<'a, f32>) -> ndarray::ArrayViewMut<'a, f32, Ix3> {
    let (n, c, h, w) = x.dim();
    x.into_shape_with_order((n, c, h * w))
        .expect("standard layout")
}

/// Writes `x̂ = (x − μ)·rstd` (when `xhat` is given) and `y = γ·x̂ + β` for one channel.
///
/// # Shapes
/// `x`, `out`, `xhat`: `(N, H·W)` of one channel.
fn normalize_channel(
    x: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
    xhat: Option<ArrayViewMut2<f32>>,
    (mean, rstd, g, b): (f32, f32, f32, f32),
) {
    match xhat {
        Some(mut xhat) => {
            for ((xr, mut yr), mut hr) in x
                .outer_iter()
                .zip(out.outer_iter_mut())
                .zip(xhat.outer_iter_mut())
            {
                let (xr, yr, hr) = (
                    xr.to_slice().unwrap(),
                    yr.as_slice_mut().unwrap(),
                    hr.as_slice_mut().unwrap(),
                );
                for ((y, h), &x) in yr.iter_mut().zip(hr.iter_mut()).zip(xr) {
                    let xh = (x - mean) * rstd;
                    *h = xh;
                    *y = g * xh + b;
                }
            }
        }
        None => {
            for (xr, mut yr) in x.outer_iter().zip(out.outer_iter_mut()) {
                let (xr, yr) = (xr.to_slice().unwrap(), yr.as_slice_mut().unwrap());
                for (y, &x) in yr.iter_mut().zip(xr) {
                    *y = g * ((x - mean) * rstd) + b;
                }
            }
        }
    }
}

/// `(μ, σ²)` of one channel (biased variance), in `f64`, shifted by the first value.
fn channel_stats(x: ArrayView2<f32>) -> (f64, f64) {
    let m = x.len();
    let shift = x.iter().next().copied().unwrap_or(0.0) as f64;
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    for row in x.outer_iter() {
        let r = row.to_slice().expect("contiguous row");
        lane_sums(r, r, &mut s1, &mut s2, |v, _| {
            let d = v as f64 - shift;
            (d, d * d)
        });
    }
    let (s1, s2): (f64, f64) = (s1.iter().sum(), s2.iter().sum());
    let mf = m as f64;
    let mean_shifted = s1 / mf;
    let var = ((s2 - s1 * mean_shifted) / mf).max(0.0);
    (shift + mean_shifted, var)
}

/// Checks shapes and the per-channel affine parameters; returns `C`.
fn check(
    op: &str,
    x: &[usize],
    out: &[usize],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> usize {
    assert_eq!(x, out, "{op}: input shape {x:?} vs output shape {out:?}");
    let c = x[1];
    for (name, p) in [("weight", weight), ("bias", bias)] {
        if let Some(p) = p {
            assert_eq!(
                p.len(),
                c,
                "{op}: {name} has {} entries for {c} channels",
                p.len()
            );
        }
    }
    c
}

/// Training forward: per-channel batch statistics, then `y = γ·(x − μ)·rstd + β`, into `out`
/// (standard layout). Fills `cache` (`x̂`, batch `μ`, biased `σ²`, `rstd`) for the backward;
/// `weight = None` / `bias = None` mean `γ = 1` / `β = 0` (`affine=False`).
///
/// # Shapes
/// `x: (N, C, H, W)` → `out: (N, C, H, W)`; `weight`, `bias`: `(C)`.
pub fn batch_norm_train_forward_into(
    x: ArrayView4<f32>,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
    out: ArrayViewMut4<f32>,
    cache: &mut BatchNormCache,
) {
    let c = check("batch_norm", x.shape(), out.shape(), weight, bias);
    let x = x.as_standard_layout();
    cache.prepare(x.dim(), true);
    let m = x.len() / c.max(1);
    assert!(m > 0, "batch_norm: empty channels in input {:?}", x.shape());
    let BatchNormCache {
        xhat,
        mean,
        var,
        rstd,
        ..
    } = cache;
    let stats = mean
        .par_iter_mut()
        .zip(var.par_iter_mut())
        .zip(rstd.par_iter_mut());
    rows3(x.view())
        .axis_iter(Axis(1))
        .into_par_iter()
        .zip(rows3_mut(out).axis_iter_mut(Axis(1)).into_par_iter())
        .zip(
            rows3_mut(xhat.view_mut())
                .axis_iter_mut(Axis(1))
                .into_par_iter(),
        )
        .zip(stats)
        .enumerate()
        .with_min_len(channels_per_task(c, m))
        .for_each(|(ch, (((xc, oc), hc), ((mu, v), r)))| {
            let (mean, var) = channel_stats(xc.view());
            let rs = (1.0 / (var + eps as f64).sqrt()) as f32;
            (*mu, *v, *r) = (mean as f32, var as f32, rs);
            let g = weight.map_or(1.0, |w| w[ch]);
            let b = bias.map_or(0.0, |b| b[ch]);
            normalize_channel(xc, oc, Some(hc), (mean as f32, rs, g, b));
        });
}

/// Evaluation forward: `y = γ·(x − running_mean)·rstd + β` with `rstd = 1/√(running_var + eps)`,
/// into `out` (standard layout). With `cache`, also stores `x̂` and the running statistics for
/// the evaluation-mode backward.
///
/// # Shapes
/// `x: (N, C, H, W)` → `out: (N, C, H, W)`; `running = (mean, var)`, `weight`, `bias`: `(C)`.
pub fn batch_norm_eval_forward_into(
    x: ArrayView4<f32>,
    running: (&[f32], &[f32]),
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
    out: ArrayViewMut4<f32>,
    cache: Option<&mut BatchNormCache>,
) {
    let c = check("batch_norm eval", x.shape(), out.shape(), weight, bias);
    let (rm, rv) = running;
    assert!(
        rm.len() == c && rv.len() == c,
        "batch_norm eval: running stats for {c} channels"
    );
    let x = x.as_standard_layout();
    let rstd_of = |ch: usize| (1.0 / (rv[ch] as f64 + eps as f64).sqrt()) as f32;
    let coeffs = |ch: usize| {
        let g = weight.map_or(1.0, |w| w[ch]);
        (rm[ch], rstd_of(ch), g, bias.map_or(0.0, |b| b[ch]))
    };
    let m = x.len() / c.max(1);
    let chunk = channels_per_task(c, m);
    let xs = rows3(x.view());
    let mut outs = rows3_mut(out);
    match cache {
        Some(cache) => {
            cache.prepare(x.dim(), false);
            cache.mean.copy_from_slice(rm);
            cache.var.copy_from_slice(rv);
            for (ch, r) in cache.rstd.iter_mut().enumerate() {
                *r = rstd_of(ch);
            }
            xs.axis_iter(Axis(1))
                .into_par_iter()
                .zip(outs.axis_iter_mut(Axis(1)).into_par_iter())
                .zip(
                    rows3_mut(cache.xhat.view_mut())
                        .axis_iter_mut(Axis(1))
                        .into_par_iter(),
                )
                .enumerate()
                .with_min_len(chunk)
                .for_each(|(ch, ((xc, oc), hc))| normalize_channel(xc, oc, Some(hc), coeffs(ch)));
        }
        None => xs
            .axis_iter(Axis(1))
            .into_par_iter()
            .zip(outs.axis_iter_mut(Axis(1)).into_par_iter())
            .enumerate()
            .with_min_len(chunk)
            .for_each(|(ch, (xc, oc))| normalize_channel(xc, oc, None, coeffs(ch))),
    }
}

/// Updates the running statistics from a training forward's `cache` (PyTorch):
/// `running_mean ← (1 − m)·running_mean + m·μ`,
/// `running_var ← (1 − m)·running_var + m·σ²·M/(M − 1)` (unbiased), where `M = N·H·W`.
///
/// # Shapes
/// `running_mean`, `running_var`: `(C)`.
pub fn batch_norm_update_running(
    running_mean: &mut [f32],
    running_var: &mut [f32],
    cache: &BatchNormCache,
    momentum: f32,
) {
    assert!(
        cache.batch_stats,
        "batch_norm: running stats update needs batch statistics"
    );
    let (n, c, h, w) = cache.xhat.dim();
    let m = n * h * w;
    assert!(
        m > 1,
        "batch_norm: the unbiased variance needs more than one value per channel"
    );
    assert!(
        running_mean.len() == c && running_var.len() == c,
        "batch_norm: {c} channels"
    );
    let (mo, unbias) = (momentum as f64, m as f64 / (m - 1) as f64);
    for ch in 0..c {
        let rm = &mut running_mean[ch];
        *rm = ((1.0 - mo) * *rm as f64 + mo * cache.mean[ch] as f64) as f32;
        let rv = &mut running_var[ch];
        *rv = ((1.0 - mo) * *rv as f64 + mo * cache.var[ch] as f64 * unbias) as f32;
    }
}

/// Backward through the forward that filled `cache`: writes `dx` (overwritten, standard layout)
/// and **accumulates** `dweight += Σ dy·x̂`, `dbias += Σ dy` per channel. Training caches use the
/// full batch-statistics formula, evaluation caches the affine one (see the module docs).
///
/// # Shapes
/// `dout: (N, C, H, W)` → `dx: (N, C, H, W)`; `weight`, `dweight`, `dbias`: `(C)`.
pub fn batch_norm_backward_into(
    dout: ArrayView4<f32>,
    cache: &BatchNormCache,
    weight: Option<&[f32]>,
    dx: ArrayViewMut4<f32>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
) {
    let c = check(
        "batch_norm backward",
        dout.shape(),
        dx.shape(),
        weight,
        None,
    );
    assert_eq!(
        dout.dim(),
        cache.xhat.dim(),
        "batch_norm backward: dout vs cached x̂ shape"
    );
    let dout = dout.as_standard_layout();
    let m = dout.len() / c.max(1);
    let mut sums = vec![(0.0f64, 0.0f64); c];
    rows3(dout.view())
        .axis_iter(Axis(1))
        .into_par_iter()
        .zip(rows3(cache.xhat.view()).axis_iter(Axis(1)).into_par_iter())
        .zip(rows3_mut(dx).axis_iter_mut(Axis(1)).into_par_iter())
        .zip(sums.par_iter_mut())
        .enumerate()
        .with_min_len(channels_per_task(c, m))
        .for_each(|(ch, (((dyc, hc), mut dxc), s))| {
            let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
            for (dr, hr) in dyc.outer_iter().zip(hc.outer_iter()) {
                let (dr, hr) = (dr.to_slice().unwrap(), hr.to_slice().unwrap());
                lane_sums(dr, hr, &mut s1, &mut s2, |d, h| {
                    (d as f64, d as f64 * h as f64)
                });
            }
            let (sum_dy, sum_dy_xhat): (f64, f64) = (s1.iter().sum(), s2.iter().sum());
            *s = (sum_dy, sum_dy_xhat);
            let a = weight.map_or(1.0, |w| w[ch]) * cache.rstd[ch];
            let (mdy, mdyx) = if cache.batch_stats {
                ((sum_dy / m as f64) as f32, (sum_dy_xhat / m as f64) as f32)
            } else {
                (0.0, 0.0)
            };
            for ((dr, hr), mut xr) in dyc
                .outer_iter()
                .zip(hc.outer_iter())
                .zip(dxc.outer_iter_mut())
            {
                let (dr, hr) = (dr.to_slice().unwrap(), hr.to_slice().unwrap());
                for ((dx, &dy), &h) in xr.as_slice_mut().unwrap().iter_mut().zip(dr).zip(hr) {
                    // forward: y = γ·x̂ + β, x̂ = (x − μ)·rstd  ⇒  dx = γ·rstd·(dy − mean(dy) − x̂·mean(dy·x̂))
                    // (evaluation: μ, rstd constant  ⇒  dx = γ·rstd·dy)
                    *dx = a * (dy - mdy - h * mdyx);
                }
            }
        });
    if let Some(dw) = dweight {
        assert_eq!(dw.len(), c, "batch_norm backward: dweight length");
        for (g, &(_, s)) in dw.iter_mut().zip(&sums) {
            // forward: y = γ·x̂ + β  ⇒  dγ += Σ dy·x̂
            *g += s as f32;
        }
    }
    if let Some(db) = dbias {
        assert_eq!(db.len(), c, "batch_norm backward: dbias length");
        for (g, &(s, _)) in db.iter_mut().zip(&sums) {
            // forward: y = γ·x̂ + β  ⇒  dβ += Σ dy
            *g += s as f32;
        }
    }
}

/// Training forward, allocating (see [`batch_norm_train_forward_into`]): returns `y` and the
/// cache for [`batch_norm_backward`].
///
/// # Shapes
/// `x: (N, C, H, W)` → `y: (N, C, H, W)`; `weight`, `bias`: `(C)`.
pub fn batch_norm_train_forward(
    x: ArrayView4<f32>,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> (Array4<f32>, BatchNormCache) {
    let mut out = Array4::zeros(x.dim());
    let mut cache = BatchNormCache::default();
    batch_norm_train_forward_into(x, weight, bias, eps, out.view_mut(), &mut cache);
    (out, cache)
}

/// Backward, allocating (see [`batch_norm_backward_into`]): returns `(dx, dweight, dbias)`.
///
/// # Shapes
/// `dout: (N, C, H, W)` → `dx: (N, C, H, W)`, `dweight: (C)`, `dbias: (C)`.
pub fn batch_norm_backward(
    dout: ArrayView4<f32>,
    cache: &BatchNormCache,
    weight: Option<&[f32]>,
) -> (Array4<f32>, Vec<f32>, Vec<f32>) {
    let c = dout.dim().1;
    let mut dx = Array4::zeros(dout.dim());
    let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
    batch_norm_backward_into(
        dout,
        cache,
        weight,
        dx.view_mut(),
        Some(&mut dw),
        Some(&mut db),
    );
    (dx, dw, db)
}
