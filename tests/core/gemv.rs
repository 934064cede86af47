//! The few-rows products (`ops::gemv`, taken by `matmul` for M ≤ 8): against a float64
//! reference, bit-identical across the CPU paths and across thread counts, both weight layouts.

use handgrad::ndarray::{s, Array2};
use handgrad::ops::gemv::{try_gemv, KernelPath, K_CHUNK, MAX_ROWS};
use handgrad::ops::matmul::{matmul_into, matmul_nt_into};

fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut st = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array2::from_shape_simple_fn((rows, cols), || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        (st >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    })
}

fn reference(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f64> {
    Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
        (0..a.ncols())
            .map(|p| a[[i, p]] as f64 * b[[p, j]] as f64)
            .sum()
    })
}

fn paths() -> Vec<KernelPath> {
    KernelPath::available()
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// Shapes: K not a multiple of the chunk or of 4, N not a multiple of 16, big enough to run in
/// parallel.
const SHAPES: [(usize, usize); 4] = [(3 * K_CHUNK + 7, 301), (768, 2304), (5, 3), (130, 1)];

#[test]
fn both_layouts_match_the_float64_reference_on_every_path_bit_identically() {
    for &(k, n) in &SHAPES {
        for m in 1..=MAX_ROWS {
            let a = filled(m, k, 1 + m as u64);
            let b = filled(k, n, 7);
            let want = reference(&a, &b);
            let bt = b.t().as_standard_layout().into_owned(); // (N, K): the dots form
            let mut first: Option<(Array2<f32>, Array2<f32>)> = None;
            for path in paths() {
                let mut rows = Array2::<f32>::zeros((m, n));
                assert!(try_gemv(
                    path,
                    a.view(),
                    b.view(),
                    rows.view_mut(),
                    false,
                    true
                ));
                let mut dots = Array2::<f32>::zeros((m, n));
                assert!(try_gemv(
                    path,
                    a.view(),
                    bt.t(),
                    dots.view_mut(),
                    false,
                    true
                ));
                for (got, form) in [(&rows, "rows"), (&dots, "dots")] {
                    for ((i, j), &g) in got.indexed_iter() {
                        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                        assert!(
                            (g as f64 - want[[i, j]]).abs() <= tol,
                            "{form} form, {} path, m={m} k={k} n={n} at ({i},{j}): {g} vs {}",
                            path.name(),
                            want[[i, j]]
                        );
                    }
                }
                match &first {
                    None => first = Some((rows, dots)),
                    Some((r0, d0)) => {
                        assert_eq!(&rows, r0, "rows form differs on {}", path.name());
                        assert_eq!(&dots, d0, "dots form differs on {}", path.name());
                    }
                }
            }
        }
    }
}

#[test]
fn accumulating_adds_to_the_output_and_other_layouts_are_declined() {
    let (a, b) = (filled(2, 200, 3), filled(200, 70, 4));
    let path = KernelPath::detected();
    let mut once = Array2::<f32>::zeros((2, 70));
    assert!(try_gemv(
        path,
        a.view(),
        b.view(),
        once.view_mut(),
        false,
        false
    ));
    let mut acc = Array2::<f32>::from_elem((2, 70), 1.5);
    assert!(try_gemv(
        path,
        a.view(),
        b.view(),
        acc.view_mut(),
        true,
        false
    ));
    for (x, y) in acc.iter().zip(&once) {
        assert_eq!(*x, 1.5 + *y);
    }
    // more than MAX_ROWS rows, or a weight with no unit stride: left to SGEMM, output untouched
    let mut out = Array2::<f32>::from_elem((MAX_ROWS + 1, 70), 9.0);
    assert!(!try_gemv(
        path,
        filled(MAX_ROWS + 1, 200, 1).view(),
        b.view(),
        out.view_mut(),
        false,
        false
    ));
    assert!(out.iter().all(|&v| v == 9.0));
    let strided = filled(400, 140, 5);
    let bs = strided.slice(s![..;2, ..;2]);
    let mut out = Array2::<f32>::from_elem((2, 70), 9.0);
    assert!(!try_gemv(path, a.view(), bs, out.view_mut(), false, false));
    assert!(out.iter().all(|&v| v == 9.0));
}

#[test]
fn matmul_with_few_rows_is_bit_identical_on_one_and_two_threads() {
    for &(k, n) in &SHAPES {
        for m in [1, 3] {
            let a = filled(m, k, 11);
            let b = filled(k, n, 12);
            let w = filled(n, k, 13);
            let run = |threads: usize| {
                pool(threads).install(|| {
                    let mut x = Array2::<f32>::zeros((m, n));
                    matmul_into(a.view(), b.view(), x.view_mut(), false);
                    let mut y = Array2::<f32>::zeros((m, n));
                    matmul_nt_into(a.view(), w.view(), y.view_mut(), false);
                    (x, y)
                })
            };
            assert_eq!(run(1), run(2), "m={m} k={k} n={n}");
        }
    }
}
