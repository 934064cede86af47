//! RMSNorm (Llama's `LlamaRMSNorm`), forward and backward, over the last dimension of row-major
//! rows.
//!
//! ```text
//! r[n]  = 1 / √(mean_c x[n,c]² + eps)
//! y[n,c] = w[c] · x[n,c] · r[n]
//! ```
//!
//! No mean subtraction and no bias (unlike LayerNorm). Each row is independent: rows run in
//! parallel and the result does not depend on the thread count. The mean of squares is summed in
//! `f64` (a row is at most a few thousand values, and Llama's reference casts to at least f32;
//! the wider sum keeps the result within an ulp of a float64 reference).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

/// `1/√(mean(x²) + eps)` of one row.
#[inline]
fn rstd(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    (1.0 / (ss / x.len() as f64 + eps as f64).sqrt()) as f32
}

/// RMSNorm forward: writes `y` and, if given, the per-row `rstd` the backward needs.
///
/// # Shapes
/// `x: (N, C)`, `w: (C)`, `y: (N, C)`, `rstd: (N)`.
///
/// # Panics
/// When the shapes disagree or a row is not contiguous (checked one tier up).
pub fn rms_norm_forward(
    x: ArrayView2<f32>,
    w: ArrayView1<f32>,
    eps: f32,
    mut y: ArrayViewMut2<f32>,
    rstd_out: Option<ArrayViewMut1<f32>>,
) {
    assert_eq!(x.dim(), y.dim(), "rms_norm_forward: y shape");
    assert_eq!(x.ncols(), w.len(), "rms_norm_forward: weight length");
    let w = w.as_slice().expect("contiguous weight");
    let row = |xr: ArrayView1<f32>, mut yr: ArrayViewMut1<f32>| -> f32 {
        let xr = xr.as_slice().expect("contiguous rows");
        let yr = yr.as_slice_mut().expect("contiguous rows");
        let r = rstd(xr, eps);
        // y[c] = w[c]·(x[c]·r)   (the order of transformers: normalise, then scale)
        for ((o, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
            *o = wv * (xv * r);
        }
        r
    };
    match rstd_out {
        Some(mut rs) => Zip::from(x.axis_iter(Axis(0)))
            .and(y.axis_iter_mut(Axis(0)))
            .and(&mut rs)
            .par_for_each(|xr, yr, r| *r = row(xr, yr)),
        None => Zip::from(x.axis_iter(Axis(0)))
            .and(y.axis_iter_mut(Axis(0)))
            .par_for_each(|xr, yr| {
                row(xr, yr);
            }),
    }
}

/// RMSNorm backward: overwrites `dx` and adds the weight gradient into `dw`.
///
/// ```text
/// forward: y[c] = w[c]·x̂[c], x̂ = x·r  ⇒ dw[c] += Σ_n dy[n,c]·x̂[n,c];  dx̂[c] = dy[c]·w[c]
/// forward: x̂[c] = x[c]·r, r = (mean x² + eps)^(−½)
///                                    ⇒ dx[c] = r·(dx̂[c] − x̂[c]·mean_c'(dx̂[c']·x̂[c']))
/// ```
/// `dw` is reduced over rows in row order (serial), so it is the same on any thread count.
///
/// # Shapes
/// `dy, x, dx: (N, C)`, `w, dw: (C)`, `rstd: (N)` from the forward.
pub fn rms_norm_backward(
    dy: ArrayView2<f32>,
    x: ArrayView2<f32>,
    w: ArrayView1<f32>,
    rstd: ArrayView1<f32>,
    mut dx: ArrayViewMut2<f32>,
    mut dw: ArrayViewMut1<f32>,
) {
    let c = x.ncols();
    assert_eq!(dy.dim(), x.dim(), "rms_norm_backward: dy shape");
    assert_eq!(dx.dim(), x.dim(), "rms_norm_backward: dx shape");
    assert_eq!(rstd.len(), x.nrows(), "rms_norm_backward: rstd length");
    assert!(
        w.len() == c && dw.len() == c,
        "rms_norm_backward: weight length"
    );
    let w = w.as_slice().expect("contiguous weight");
    Zip::from(dx.axis_iter_mut(Axis(0)))
        .and(dy.axis_iter(Axis(0)))
        .and(x.axis_iter(Axis(0)))
        .and(&rstd)
        .par_for_each(|mut dxr, dyr, xr, &r| {
            let (dxr, dyr, xr) = (
                dxr.as_slice_mut().expect("contiguous rows"),
                dyr.as_slice().expect("contiguous rows"),
                xr.as_slice().expect("contiguous rows"),
            );
            // mean_c (dy·w)·x̂
            let dot: f64 = dyr
                .iter()
                .zip(xr)
                .zip(w)
                .map(|((&d, &xv), &wv)| (d * wv) as f64 * (xv * r) as f64)
                .sum();
            let mean = (dot / c as f64) as f32;
            for (((o, &d), &xv), &wv) in dxr.iter_mut().zip(dyr).zip(xr).zip(w) {
                *o = r * (d * wv - xv * r * mean);
            }
        });
    let dw = dw.as_slice_mut().expect("contiguous weight gradient");
    for ((dyr, xr), &r) in dy.outer_iter().zip(x.outer_iter()).zip(rstd.iter()) {
        for ((g, &d), &xv) in dw.iter_mut().zip(dyr.iter()).zip(xr.iter()) {
            *g += d * (xv * r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    #[test]
    fn unit_rms_rows_are_scaled_by_the_weight() {
        let x = Array2::from_shape_vec((1, 4), vec![1.0, -1.0, 1.0, -1.0]).unwrap();
        let w = Array1::from(vec![1.0, 2.0, 3.0, 4.0]);
        let mut y = Array2::zeros((1, 4));
        let mut r = Array1::zeros(1);
        rms_norm_forward(x.view(), w.view(), 0.0, y.view_mut(), Some(r.view_mut()));
        assert_eq!(r[0], 1.0);
        assert_eq!(y.row(0).to_vec(), vec![1.0, -2.0, 3.0, -4.0]);
    }
}
