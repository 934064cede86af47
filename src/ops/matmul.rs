//! Matrix products in the three forms backprop needs: `A·B`, `Aᵀ·B` and `A·Bᵀ`.
//!
//! All three are one call to the `gemm` crate's SGEMM (AVX2 / AVX-512 micro-kernels chosen at run
//! time) with the operands' strides, so a transposed operand is never copied. The product runs in
//! parallel with rayon over disjoint blocks of the output when the calling thread pool has more
//! than one thread; every output element is reduced over `K` in the same order whatever the
//! thread count, so results are bit-identical for 1 or N threads (tested in `tests/determinism.rs`).
//!
//! Products with at most eight rows of `a` (decoding, small-batch inference) go to the
//! bandwidth-bound kernels of [`super::gemv`] instead when the weight operand has a unit stride.
//!
//! Outputs are written into caller-provided buffers (`*_into`), optionally accumulating, so hot
//! loops reuse their buffers instead of allocating per call.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// How many threads a product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Every thread of the current rayon pool.
    Pool,
    /// The calling thread only: for products issued from inside a parallel loop.
    Serial,
}

/// `out = a·b` (or `out += a·b` when `accumulate`), using the current rayon pool.
///
/// # Shapes
/// `a: (M, K)`, `b: (K, N)`, `out: (M, N)`. Any strides (transposed views are fine).
///
/// # Panics
/// When the shapes do not agree (kernels are called with checked shapes).
pub fn matmul_into(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    out: ArrayViewMut2<f32>,
    accumulate: bool,
) {
    gemm_into(a, b, out, accumulate, Threads::Pool);
}

/// `out = aᵀ·b` (or `+=`): the weight gradient form `dW = xᵀ·dy`.
///
/// # Shapes
/// `a: (K, M)`, `b: (K, N)`, `out: (M, N)`.
pub fn matmul_tn_into(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    out: ArrayViewMut2<f32>,
    accumulate: bool,
) {
    gemm_into(a.t(), b, out, accumulate, Threads::Pool);
}

/// `out = a·bᵀ` (or `+=`): the `nn.Linear` forward form `y = x·Wᵀ`.
///
/// # Shapes
/// `a: (M, K)`, `b: (N, K)`, `out: (M, N)`.
pub fn matmul_nt_into(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    out: ArrayViewMut2<f32>,
    accumulate: bool,
) {
    gemm_into(a, b.t(), out, accumulate, Threads::Pool);
}

/// The SGEMM micro-kernel family chosen at run time on this CPU: `"avx512"`, `"avx2+fma"` or
/// `"portable"` (what the benches print beside their figures).
pub fn sgemm_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "portable"
}

/// `a·b` into a new array (convenience; hot loops use [`matmul_into`]).
///
/// # Shapes
/// `a: (M, K)`, `b: (K, N)` → `(M, N)`.
pub fn matmul(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    let mut out = Array2::zeros((a.nrows(), b.ncols()));
    matmul_into(a, b, out.view_mut(), false);
    out
}

/// Backward of `out = a·b`, accumulating (`+=`) into the gradients that are asked for.
///
/// ```text
/// forward: out[i,j] = Σ_p a[i,p]·b[p,j]
///   ⇒ da[i,p] += Σ_j dout[i,j]·b[p,j]   (da += dout·bᵀ)
///   ⇒ db[p,j] += Σ_i a[i,p]·dout[i,j]   (db += aᵀ·dout)
/// ```
///
/// # Shapes
/// `dout: (M, N)`, `a: (M, K)`, `b: (K, N)`, `da: (M, K)`, `db: (K, N)`.
pub fn matmul_backward(
    dout: ArrayView2<f32>,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    da: Option<ArrayViewMut2<f32>>,
    db: Option<ArrayViewMut2<f32>>,
) {
    if let Some(da) = da {
        matmul_nt_into(dout, b, da, true);
    }
    if let Some(db) = db {
        matmul_tn_into(a, dout, db, true);
    }
}

/// `out = a·b` or `out += a·b`, with the given threading. The one entry point to SGEMM.
///
/// # Shapes
/// `a: (M, K)`, `b: (K, N)`, `out: (M, N)`; any non-negative strides (others are copied first).
pub fn gemm_into(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    mut out: ArrayViewMut2<f32>,
    accumulate: bool,
    threads: Threads,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(
        k, k2,
        "matmul: inner dimensions differ: a is {m}x{k}, b is {k2}x{n}"
    );
    assert_eq!(
        out.dim(),
        (m, n),
        "matmul: out is {:?}, expected ({m}, {n})",
        out.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    // The kernel takes raw strides; negative strides (reversed views) are made standard first.
    let a_owned;
    let a = if a.strides().iter().any(|&s| s < 0) {
        a_owned = a.as_standard_layout().into_owned();
        a_owned.view()
    } else {
        a
    };
    let b_owned;
    let b = if b.strides().iter().any(|&s| s < 0) {
        b_owned = b.as_standard_layout().into_owned();
        b_owned.view()
    } else {
        b
    };
    if out.strides().iter().any(|&s| s < 0) {
        let mut tmp = Array2::zeros((m, n));
        if accumulate {
            tmp.assign(&out);
        }
        gemm_into(a, b, tmp.view_mut(), accumulate, threads);
        out.assign(&tmp);
        return;
    }
    let pool = threads == Threads::Pool && rayon::current_num_threads() > 1;
    if m <= super::gemv::MAX_ROWS
        && super::gemv::try_gemv(
            super::quant::KernelPath::detected(),
            a,
            b,
            out.view_mut(),
            accumulate,
            pool,
        )
    {
        return;
    }
    let parallelism = match threads {
        Threads::Pool if rayon::current_num_threads() > 1 => {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => gemm::Parallelism::None,
    };
    if let Some(w) = staged_weight(&a, &b) {
        // see `stage`: B is a transposed row-major matrix; multiply a transposed copy instead
        stage(a, w, out, accumulate, parallelism);
        return;
    }
    sgemm::call(m, n, k, a, b, out, accumulate, parallelism);
}
/// The largest right operand [`stage`] copies (16 MB; GPT-2's tied 50,257×768 LM head is left
/// to the kernel's own packing).
const STAGE_MAX: usize = 1 << 22;

thread_local! {
    /// The staged block of [`stage`] for this thread (reused across calls).
    static STAGED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `Some(w)` when `b = wᵀ` for a row-major `w: (N, K)` (`nn.Linear`'s weight, or GPT-2's
/// `Conv1D` weight in `dx = dy·Wᵀ`) and the product is large enough for [`stage`] to pay.
fn staged_weight<'a>(a: &ArrayView2<f32>, b: &ArrayView2<'a, f32>) -> Option<ArrayView2<'a, f32>> {
    let (k, n) = b.dim();
    // measured in GPT-2's training step (2 threads): staging wins 1.1-2× for K ≥ N (dx of the
    // MLP's c_fc, of c_attn and of the attention projection) and loses for K < N (dx of c_proj)
    let small = a.nrows() < 16 || k < 16 || k * n < 1 << 16;
    if small || k < n || k * n > STAGE_MAX || b.strides()[0] != 1 || b.strides()[1] <= 1 {
        return None;
    }
    let w = b.reversed_axes();
    w.is_standard_layout().then_some(w)
}

/// `out (+)= a·wᵀ` through a transposed copy of `w`.
///
/// The SGEMM kernel packs its left operand in column strips; for a row-major product
/// `a·wᵀ` it works on the transposed problem `outᵀ = w·aᵀ`, whose left operand `w` is then
/// row-major and gets transposed element by element while packing: 2.5× slower than the same
/// product with `wᵀ` stored row-major (a 256×3072 by 3072×768 product: 7.5 ms against 2.9 ms on
/// 2 threads). Here `wᵀ` (at most [`STAGE_MAX`] elements) is written in 16×16 tiles into a
/// reused per-thread buffer and multiplied as a plain `a·B`. The copy is exact, so the result
/// is that of the plain product, independent of the thread count.
///
/// # Shapes
/// `a: (M, K)`, `w: (N, K)` row-major, `out: (M, N)`.
fn stage(
    a: ArrayView2<f32>,
    w: ArrayView2<f32>,
    out: ArrayViewMut2<f32>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    use rayon::prelude::*;
    const TILE: usize = 16;
    let (n, k) = w.dim();
    let w = w
        .as_slice()
        .expect("standard layout (checked by staged_weight)");
    // taken out of the thread-local so that a nested call (work stealing) cannot alias it
    let mut buf = STAGED.with_borrow_mut(std::mem::take);
    buf.resize(k * n, 0.0);
    // staged[kk, j] = w[j, kk], TILE rows of `staged` per task
    let fill = |(t, rows): (usize, &mut [f32])| {
        let k0 = t * TILE;
        let kn = rows.len() / n;
        for j0 in (0..n).step_by(TILE) {
            let jn = TILE.min(n - j0);
            // one 16×16 tile through a local copy: each row of `staged` is then written a
            // whole cache line at a time (with row strides of 4 KiB multiples, 16 partial
            // writes would evict each other's lines)
            let mut tile = [[0.0f32; TILE]; TILE];
            for (jj, t) in tile.iter_mut().enumerate().take(jn) {
                let at = (j0 + jj) * k + k0;
                t[..kn].copy_from_slice(&w[at..at + kn]);
            }
            for kk in 0..kn {
                let dst = &mut rows[kk * n + j0..kk * n + j0 + jn];
                for (jj, d) in dst.iter_mut().enumerate() {
                    *d = tile[jj][kk];
                }
            }
        }
    };
    if matches!(parallelism, gemm::Parallelism::None) {
        buf.chunks_mut(TILE * n).enumerate().for_each(fill);
    } else {
        buf.par_chunks_mut(TILE * n).enumerate().for_each(fill);
    }
    let bv = ArrayView2::from_shape((k, n), &buf[..]).expect("staged (K, N)");
    sgemm::call(a.nrows(), n, k, a, bv, out, accumulate, parallelism);
    STAGED.with_borrow_mut(|b| *b = buf);
}

#[allow(unsafe_code)]
mod sgemm {
    use ndarray::{ArrayView2, ArrayViewMut2};

    /// Calls `gemm::gemm` on checked views.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call(
        m: usize,
        n: usize,
        k: usize,
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
        mut out: ArrayViewMut2<f32>,
        accumulate: bool,
        parallelism: gemm::Parallelism,
    ) {
        debug_assert_eq!(a.dim(), (m, k));
        debug_assert_eq!(b.dim(), (k, n));
        debug_assert_eq!(out.dim(), (m, n));
        let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
        let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
        let (o_rs, o_cs) = (out.strides()[0], out.strides()[1]);
        debug_assert!([a_rs, a_cs, b_rs, b_cs, o_rs, o_cs].iter().all(|&s| s >= 0));
        // SAFETY: the three views are valid for (m, k), (k, n) and (m, n) elements at the given
        // element strides, all non-negative (checked by the caller), and `as_ptr` points at each
        // view's element [0, 0]. `out` is a unique mutable borrow, so it aliases neither `a` nor
        // `b`. gemm computes dst := alpha·dst + beta·lhs·rhs and reads dst only when `read_dst`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                o_cs,
                o_rs,
                accumulate,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
        let (m, k) = a.dim();
        let n = b.ncols();
        Array2::from_shape_fn((m, n), |(i, j)| {
            (0..k)
                .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
                .sum::<f64>() as f32
        })
    }

    fn arr(m: usize, n: usize, seed: u32) -> Array2<f32> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            let h = (i as u32 * 7919 + j as u32 * 104_729 + seed * 31).wrapping_mul(2_654_435_761);
            (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    #[test]
    fn staged_transposed_weights_give_the_plain_products_bits() {
        // K ≥ N and large enough to be staged; odd sizes leave partial 16×16 tiles
        let (m, k, n) = (37, 300, 229);
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 23) as f32 * 0.1 - 1.0);
        let w = Array2::from_shape_fn((n, k), |(i, j)| ((i * 5 + j * 11) % 19) as f32 * 0.1 - 0.9);
        assert!(staged_weight(&a.view(), &w.t()).is_some());
        let wt = w.t().as_standard_layout().into_owned();
        for accumulate in [false, true] {
            let start = Array2::from_shape_fn((m, n), |(i, j)| (i + j) as f32 * 0.01);
            let (mut staged, mut plain) = (start.clone(), start.clone());
            matmul_nt_into(a.view(), w.view(), staged.view_mut(), accumulate);
            matmul_into(a.view(), wt.view(), plain.view_mut(), accumulate);
            assert_eq!(staged, plain);
            let want = naive(a.view(), wt.view());
            let want = if accumulate { want + &start } else { want };
            for (x, y) in staged.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0));
            }
        }
        // K < N, or a weight that is not row-major: the kernel's own packing
        assert!(staged_weight(&a.t().view(), &a.view()).is_none());
        assert!(staged_weight(&a.view(), &wt.view()).is_none());
    }

    #[test]
    fn three_forms_match_naive_on_odd_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 9),
            (64, 1, 65),
            (130, 70, 33),
        ] {
            let a = arr(m, k, 1);
            let b = arr(k, n, 2);
            let want = naive(a.view(), b.view());
            let got = matmul(a.view(), b.view());
            let mut tn = Array2::zeros((m, n));
            let at = a.t().to_owned();
            matmul_tn_into(at.view(), b.view(), tn.view_mut(), false);
            let mut nt = Array2::zeros((m, n));
            let bt = b.t().to_owned();
            matmul_nt_into(a.view(), bt.view(), nt.view_mut(), false);
            for out in [&got, &tn, &nt] {
                for (x, y) in out.iter().zip(want.iter()) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{m}x{k}x{n}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn accumulate_adds_and_overwrite_replaces() {
        let a = arr(4, 3, 3);
        let b = arr(3, 5, 4);
        let want = naive(a.view(), b.view());
        let mut out = Array2::from_elem((4, 5), 1.0f32);
        matmul_into(a.view(), b.view(), out.view_mut(), true);
        for (x, y) in out.iter().zip(want.iter()) {
            assert!((x - (y + 1.0)).abs() < 1e-5);
        }
        matmul_into(a.view(), b.view(), out.view_mut(), false);
        for (x, y) in out.iter().zip(want.iter()) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let a = Array2::<f32>::zeros((3, 0));
        let b = Array2::<f32>::zeros((0, 2));
        let mut out = Array2::from_elem((3, 2), 5.0f32);
        matmul_into(a.view(), b.view(), out.view_mut(), false);
        assert!(out.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn reversed_views_are_handled() {
        let a = arr(6, 4, 5);
        let b = arr(4, 3, 6);
        let ar = a.slice(ndarray::s![..;-1, ..]);
        let want = naive(ar, b.view());
        let got = matmul(ar, b.view());
        for (x, y) in got.iter().zip(want.iter()) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}
