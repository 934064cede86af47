//! Parallel elementwise passes over flat buffers: copies, residual additions and row
//! broadcasts, split into fixed chunks that run on the rayon pool when the buffer is large.
//!
//! Each element is computed alone (no reduction), so the result is the same whatever the
//! chunking and thread count. Run on the calling thread, these passes also leave the pool's
//! other threads idle long enough to fall asleep between two parallel products, and waking them
//! again costs a system call each time.

use ndarray::{ArrayView, ArrayViewMut, Dimension};
use rayon::prelude::*;

/// Buffers with more elements than this are split across the pool.
const PARALLEL_MIN_LEN: usize = super::activation::PARALLEL_MIN_LEN;

/// Elements per parallel task.
const CHUNK: usize = 1 << 13;

/// Runs `f` on matching chunks of `dst` and `src` (in parallel when large): the driver of these
/// passes and of the activations' `*_forward_into`.
///
/// # Panics
/// When the lengths differ.
pub(crate) fn zip_chunks(dst: &mut [f32], src: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(
        dst.len(),
        src.len(),
        "par: dst has {} elements, src {}",
        dst.len(),
        src.len()
    );
    if dst.len() > PARALLEL_MIN_LEN && rayon::current_num_threads() > 1 {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| f(d, s));
    } else {
        f(dst, src);
    }
}

/// `dst = src`.
///
/// # Panics
/// When the lengths differ.
pub fn copy(dst: &mut [f32], src: &[f32]) {
    zip_chunks(dst, src, |d, s| d.copy_from_slice(s));
}

/// `dst += src`, element by element.
///
/// # Panics
/// When the lengths differ.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    zip_chunks(dst, src, |d, s| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d += s;
        }
    });
}

/// Every row of `dst` (rows of `row.len()` floats) set to `row`: a bias broadcast.
///
/// # Panics
/// When `dst.len()` is not a multiple of `row.len()` (or `row` is empty and `dst` is not).
pub fn fill_rows(dst: &mut [f32], row: &[f32]) {
    let n = row.len();
    if dst.is_empty() {
        return;
    }
    assert!(
        n > 0 && dst.len().is_multiple_of(n),
        "fill_rows: {} elements are not rows of {n}",
        dst.len()
    );
    let fill = |d: &mut [f32]| {
        for r in d.chunks_exact_mut(n) {
            r.copy_from_slice(row);
        }
    };
    if dst.len() > PARALLEL_MIN_LEN && rayon::current_num_threads() > 1 {
        let rows_per_task = (CHUNK / n).max(1);
        dst.par_chunks_mut(rows_per_task * n).for_each(fill);
    } else {
        fill(dst);
    }
}

/// Runs `flat(dst, src)` on the two views' elements when both are the same shape and
/// contiguous in standard order, and returns whether it did.
fn on_slices<D: Dimension>(
    dst: &mut ArrayViewMut<f32, D>,
    src: &ArrayView<f32, D>,
    flat: impl FnOnce(&mut [f32], &[f32]),
) -> bool {
    if dst.shape() != src.shape() {
        return false;
    }
    match (dst.as_slice_mut(), src.as_slice()) {
        (Some(d), Some(s)) => {
            flat(d, s);
            true
        }
        _ => false,
    }
}

/// `dst.assign(&src)`, through [`copy`] when both are contiguous (ndarray's otherwise, which
/// also broadcasts).
///
/// # Panics
/// When `src` cannot be broadcast to `dst`'s shape.
pub fn assign<D: Dimension>(mut dst: ArrayViewMut<f32, D>, src: ArrayView<f32, D>) {
    if !on_slices(&mut dst, &src, copy) {
        dst.assign(&src);
    }
}

/// `dst += &src`, through [`add_assign`] when both are contiguous (ndarray's otherwise, which
/// also broadcasts).
///
/// # Panics
/// When `src` cannot be broadcast to `dst`'s shape.
pub fn add_arrays<D: Dimension>(mut dst: ArrayViewMut<f32, D>, src: ArrayView<f32, D>) {
    if !on_slices(&mut dst, &src, add_assign) {
        dst += &src;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_match_their_serial_definitions_on_large_and_small_buffers() {
        for n in [0usize, 5, 100_003] {
            let a: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 11) as f32 - 3.0).collect();
            let mut c = vec![0.0; n];
            copy(&mut c, &a);
            assert_eq!(c, a);
            add_assign(&mut c, &b);
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            assert_eq!(c, want);
        }
        // the array forms, contiguous and strided (ndarray's fallback)
        let x = ndarray::Array2::from_shape_fn((300, 200), |(i, j)| (i * 3 + j) as f32);
        let mut y = ndarray::Array2::<f32>::ones((300, 200));
        add_arrays(y.view_mut(), x.view());
        assert_eq!(y, &x + 1.0);
        let mut z = ndarray::Array2::<f32>::zeros((200, 300));
        assign(z.view_mut().reversed_axes(), x.view());
        assert_eq!(z.t(), x);
        add_arrays(z.view_mut().reversed_axes(), x.view());
        assert_eq!(z.t(), &x * 2.0);
        let row = [1.0f32, 2.0, 3.0];
        let mut d = vec![0.0; 3 * 40_000];
        fill_rows(&mut d, &row);
        assert!(d.chunks(3).all(|r| r == row));
    }
}
