//! Finite-difference check of the matmul backward (`da = dout·bᵀ`, `db = aᵀ·dout`).

use crate::common;

use common::{grad_check, random_tensor, weighted_sum};
use handgrad::ops::matmul::{matmul, matmul_backward};
use handgrad::Tensor;
use ndarray::{Array2, Ix2};

fn ix2(t: &Tensor) -> ndarray::ArrayView2<'_, f32> {
    t.view().into_dimensionality::<Ix2>().unwrap()
}

#[test]
fn matmul_backward_matches_finite_differences() {
    for &(m, k, n) in &[(3, 4, 5), (1, 7, 2), (6, 1, 3)] {
        let a = random_tensor(&[m, k], 10 + m as u64);
        let b = random_tensor(&[k, n], 20 + n as u64);
        let r = random_tensor(&[m, n], 30);
        // Gradients accumulate: start from ones and subtract them afterwards.
        let mut da = Array2::<f32>::ones((m, k));
        let mut db = Array2::<f32>::ones((k, n));
        matmul_backward(
            ix2(&r),
            ix2(&a),
            ix2(&b),
            Some(da.view_mut()),
            Some(db.view_mut()),
        );
        let da = (da - 1.0).into_dyn();
        let db = (db - 1.0).into_dyn();
        // The product is bilinear, so central differences are exact up to f32 rounding of the
        // forward (~1e-7 relative / eps 1e-2): 1e-3 leaves a wide margin.
        grad_check(
            "matmul da",
            &a,
            &da,
            |ap| weighted_sum(&matmul(ix2(ap), ix2(&b)).into_dyn(), &r),
            1e-2,
            1e-3,
        );
        grad_check(
            "matmul db",
            &b,
            &db,
            |bp| weighted_sum(&matmul(ix2(&a), ix2(bp)).into_dyn(), &r),
            1e-2,
            1e-3,
        );
    }
}
