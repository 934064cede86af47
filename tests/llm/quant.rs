//! Quantised matrices: bit-exact dequantisation and quantisation against the GGUF fixtures, and
//! `matmul_t` on every kernel path against "dequantise, then multiply in f32".

use super::common::{random_tensor, Fixture};
use super::gguf::{open, TYPES};
use handgrad::ops::quant::{decode_int_path, simd_path, IntPath, KernelPath, QMatrix, QType};
use ndarray::{Array2, ArrayView2};

const ALL: [QType; 6] = [
    QType::F32,
    QType::F16,
    QType::BF16,
    QType::Q8_0,
    QType::Q4_0,
    QType::Q4_1,
];

#[test]
fn dequantised_tensors_are_bit_exact() {
    for kind in TYPES {
        let fx = Fixture::load(&format!("llama/llama_tiny_gguf_{kind}"));
        let f = open(kind);
        for name in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"] {
            let want = fx.f32(&format!("dequant.{name}"));
            let m = f.matrix(name).unwrap();
            let got = m.dequantize().into_dyn();
            assert_eq!(got.shape(), want.shape(), "{kind} {name}");
            for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{kind} {name}[{i}]: {a} vs {b}");
            }
            assert_eq!(
                f.tensor_f32(name).unwrap(),
                want,
                "{kind} {name} via tensor_f32"
            );
            let mut row = vec![0.0; m.cols()];
            m.dequantize_row(5, &mut row);
            assert_eq!(
                row.as_slice(),
                want.as_slice().unwrap()[5 * m.cols()..6 * m.cols()].as_ref()
            );
        }
    }
}

#[test]
fn quantize_reproduces_the_files_bytes() {
    let f32_file = open("f32");
    let mut checked = 0;
    for kind in ["f16", "q8_0", "q4_0", "q4_1"] {
        let f = open(kind);
        for t in f.tensors() {
            let qtype = QType::from_ggml(t.ggml_type).unwrap();
            if t.dims.len() != 2 {
                continue;
            }
            let src = f32_file.matrix(&t.name).unwrap().dequantize();
            let q = QMatrix::quantize(src.view(), qtype).unwrap();
            let stored = f.matrix(&t.name).unwrap();
            assert_eq!(q.qtype(), stored.qtype());
            let (a, b): (&[u8], &[u8]) = (q.data(), stored.data());
            if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
                panic!("{kind} {}: byte {i} differs ({} vs {})", t.name, a[i], b[i]);
            }
            assert_eq!(a.len(), b.len());
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * 15);
}

#[test]
fn quantize_rejects_ragged_rows() {
    let e = QMatrix::quantize(Array2::zeros((2, 33)).view(), QType::Q4_0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of 32") && e.contains("[2, 33]"), "{e}");
    assert!(QMatrix::quantize(Array2::zeros((2, 33)).view(), QType::F16).is_ok());
}

#[test]
fn ggml_ids_and_sizes() {
    for t in ALL {
        assert_eq!(QType::from_ggml(t.ggml_id()).unwrap(), t);
        assert_eq!(t.row_bytes(64), Some(64 / t.block_len() * t.block_bytes()));
    }
    assert_eq!(ALL.map(|t| t.block_bytes()), [4, 2, 2, 34, 18, 20]);
    assert_eq!(QType::Q4_1.name(), "Q4_1");
    assert_eq!(QType::Q8_0.row_bytes(31), None);
    let e = QType::from_ggml(14).unwrap_err().to_string();
    assert!(
        e.contains(
            "ggml type 14 (Q6_K) is not supported; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"
        ),
        "{e}"
    );
    assert!(["avx512", "avx2+fma", "scalar"].contains(&simd_path()));
    assert_eq!(KernelPath::available().last(), Some(&KernelPath::Scalar));
}

/// A random weight matrix (with a spread of row scales) and its quantised form.
fn weights(rows: usize, cols: usize, qtype: QType, seed: u64) -> QMatrix {
    let w: Array2<f32> = random_tensor(&[rows, cols], seed)
        .into_dimensionality()
        .unwrap();
    let w = Array2::from_shape_fn((rows, cols), |(r, c): (usize, usize)| {
        w[[r, c]] * (0.05 + (r % 7) as f32 * 0.1)
    });
    QMatrix::quantize(w.view(), qtype).unwrap()
}

/// Checks `y` against the f64 product of the dequantised matrix: |err| ≤ tol·Σ|w·x| per entry.
fn check(y: &Array2<f32>, w: &Array2<f32>, x: ArrayView2<f32>, tol: f64, what: &str) {
    for i in 0..x.nrows() {
        for r in 0..w.nrows() {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for c in 0..w.ncols() {
                let p = w[[r, c]] as f64 * x[[i, c]] as f64;
                s += p;
                a += p.abs();
            }
            let err = (y[[i, r]] as f64 - s).abs();
            assert!(
                err <= tol * a + 1e-30,
                "{what}: y[{i},{r}] = {} vs {s} (err {err:e}, Σ|wx| {a:e})",
                y[[i, r]]
            );
        }
    }
}

fn run(w: &QMatrix, path: KernelPath, x: ArrayView2<f32>, threads: usize) -> Array2<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut y = Array2::from_elem((x.nrows(), w.rows()), f32::NAN);
    pool.install(|| w.matmul_t_with(path, x, y.view_mut()));
    y
}

#[test]
fn matmul_t_matches_dequantise_then_f32_on_every_path() {
    for qtype in ALL {
        let mut shapes = vec![(67, 96), (33, 320), (9, 576)];
        if qtype.block_len() == 1 {
            shapes.push((5, 37)); // float rows with a SIMD tail
        }
        for (si, &(rows, cols)) in shapes.iter().enumerate() {
            let w = weights(rows, cols, qtype, 11 + si as u64);
            let wd = w.dequantize();
            for m in [1usize, 2, 3, 6, 64, 300] {
                if m == 300 && cols > 96 {
                    continue; // keeps the f64 reference quick
                }
                let x: Array2<f32> = random_tensor(&[m, cols], 1000 + m as u64)
                    .into_dimensionality()
                    .unwrap();
                let scalar = run(&w, KernelPath::Scalar, x.view(), 1);
                for path in KernelPath::available() {
                    let what = format!("{} {rows}x{cols} M={m} {}", qtype.name(), path.name());
                    let y1 = run(&w, path, x.view(), 1);
                    let y2 = run(&w, path, x.view(), 2);
                    assert!(
                        y1.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: 1 vs 2 threads differ"
                    );
                    check(&y1, &wd, x.view(), 1e-6, &what);
                    // SIMD against scalar: both within float rounding of each other.
                    for (a, b) in y1.iter().zip(&scalar) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{what}: {a} vs scalar {b}"
                        );
                    }
                }
                // The default entry point runs the detected path: the integer one when decoding
                // block-quantised weights (checked in the next test), the f32 one otherwise.
                let mut y = Array2::zeros((m, rows));
                w.matmul_t(x.view(), y.view_mut());
                match decode_int_path() {
                    Some(p) if w.uses_int_path(m) => assert_eq!(y, run_int(&w, p, x.view(), 1)),
                    _ => assert_eq!(y, run(&w, KernelPath::detected(), x.view(), 1)),
                }
            }
        }
    }
}

fn run_int(w: &QMatrix, path: IntPath, x: ArrayView2<f32>, threads: usize) -> Array2<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut y = Array2::from_elem((x.nrows(), w.rows()), f32::NAN);
    pool.install(|| w.matmul_t_int_with(path, x, y.view_mut()));
    y
}

/// The integer path's stated accuracy: each activation value is rounded to a multiple of its
/// block's `max|x| / 32639`, so `|y − x·Wᵀ| ≤ Σ_b max_b|x| / 65278 · Σ_{j∈b} |w_j|` plus f32
/// rounding (`1e-6·Σ|w·x|`, as for the f32 kernels).
fn check_int(y: &Array2<f32>, w: &Array2<f32>, x: ArrayView2<f32>, what: &str) {
    for i in 0..x.nrows() {
        for r in 0..w.nrows() {
            let (mut s, mut a, mut bound) = (0.0f64, 0.0f64, 0.0f64);
            for b in 0..w.ncols() / 32 {
                let amax = (32 * b..32 * b + 32).fold(0.0f64, |m, c| m.max(x[[i, c]].abs() as f64));
                for c in 32 * b..32 * b + 32 {
                    let p = w[[r, c]] as f64 * x[[i, c]] as f64;
                    s += p;
                    a += p.abs();
                    bound += amax / 65278.0 * (w[[r, c]] as f64).abs();
                }
            }
            let err = (y[[i, r]] as f64 - s).abs();
            assert!(
                err <= bound + 1e-6 * a + 1e-30,
                "{what}: y[{i},{r}] = {} vs {s} (err {err:e}, bound {bound:e}, Σ|wx| {a:e})",
                y[[i, r]]
            );
        }
    }
}

#[test]
fn integer_paths_match_the_scalar_path_and_the_stated_error() {
    for qtype in [QType::Q8_0, QType::Q4_0, QType::Q4_1] {
        for (si, &(rows, cols)) in [(67, 96), (33, 320), (9, 576), (40, 1536)]
            .iter()
            .enumerate()
        {
            let w = weights(rows, cols, qtype, 21 + si as u64);
            let wd = w.dequantize();
            for m in [1usize, 2, 5] {
                let mut x: Array2<f32> = random_tensor(&[m, cols], 2000 + m as u64)
                    .into_dimensionality()
                    .unwrap();
                x[[0, 3]] = 7.5; // an outlier: its block's scale is coarser
                let scalar = run_int(&w, IntPath::Scalar, x.view(), 1);
                for path in IntPath::available() {
                    let what = format!("{} {rows}x{cols} M={m} {}", qtype.name(), path.name());
                    let y1 = run_int(&w, path, x.view(), 1);
                    let y2 = run_int(&w, path, x.view(), 2);
                    assert!(
                        y1.iter().zip(&y2).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: 1 vs 2 threads differ"
                    );
                    check_int(&y1, &wd, x.view(), &what);
                    // the block dots are exact integers: only the f32 summation order differs
                    for (a, b) in y1.iter().zip(&scalar) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{what}: {a} vs scalar {b}"
                        );
                    }
                    // one row at a time gives the same bits as several
                    for i in 0..m {
                        let xi = x.slice(ndarray::s![i..i + 1, ..]);
                        assert_eq!(run_int(&w, path, xi, 1).row(0), y1.row(i), "{what} row {i}");
                    }
                }
            }
        }
    }
    assert_eq!(IntPath::available().last(), Some(&IntPath::Scalar));
}

/// `matmul_t_concat` in a pool of `threads`, into a NaN-filled `(M, Σ rows)` buffer.
fn run_concat(ws: &[&QMatrix], x: ArrayView2<f32>, threads: usize) -> Array2<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let total = ws.iter().map(|w| w.rows()).sum();
    let mut y = Array2::from_elem((x.nrows(), total), f32::NAN);
    pool.install(|| QMatrix::matmul_t_concat(ws, x, y.view_mut()));
    y
}

#[test]
fn concatenated_products_equal_the_separate_ones_on_any_threads() {
    // q | k | v and gate | up shaped groups, large enough for the parallel pieces (≥ 96 KB),
    // with row counts that do not divide evenly into the pieces
    for qtype in [QType::Q4_1, QType::Q4_0, QType::Q8_0, QType::F16] {
        for (gi, rows) in [vec![577, 193, 191], vec![1536, 1536], vec![35, 1000]]
            .into_iter()
            .enumerate()
        {
            let ws: Vec<QMatrix> = rows
                .iter()
                .enumerate()
                .map(|(i, &r)| weights(r, 576, qtype, 50 + 3 * gi as u64 + i as u64))
                .collect();
            let refs: Vec<&QMatrix> = ws.iter().collect();
            for m in [1usize, 3] {
                let x: Array2<f32> = random_tensor(&[m, 576], 70 + m as u64)
                    .into_dimensionality()
                    .unwrap();
                let what = format!("{} {rows:?} M={m}", qtype.name());
                // the separate products, one thread
                let mut sep = Array2::from_elem((m, rows.iter().sum()), f32::NAN);
                let mut c0 = 0;
                for w in &ws {
                    let mut y = Array2::zeros((m, w.rows()));
                    w.matmul_t(x.view(), y.view_mut());
                    sep.slice_mut(ndarray::s![.., c0..c0 + w.rows()]).assign(&y);
                    c0 += w.rows();
                }
                for threads in [1, 2, 3] {
                    let y = run_concat(&refs, x.view(), threads);
                    assert!(
                        y.iter().zip(&sep).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: concatenated on {threads} threads differs from the separate products"
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "matrices of different widths or encodings")]
fn concatenated_products_need_one_width_and_encoding() {
    let (a, b) = (
        weights(4, 64, QType::Q4_1, 1),
        weights(4, 64, QType::Q8_0, 2),
    );
    let x = Array2::zeros((1, 64));
    let mut y = Array2::zeros((1, 8));
    QMatrix::matmul_t_concat(&[&a, &b], x.view(), y.view_mut());
}

#[test]
fn matmul_t_takes_strided_activations_and_rows_agree_across_m() {
    let w = weights(40, 64, QType::Q4_1, 3);
    let xt: Array2<f32> = random_tensor(&[64, 5], 9).into_dimensionality().unwrap();
    let x = xt.t(); // column-major (5, 64)
    let mut y = Array2::zeros((5, 40));
    w.matmul_t(x, y.view_mut());
    let xs = x.as_standard_layout().into_owned();
    let mut y1 = Array2::zeros((1, 40));
    for i in 0..5 {
        w.matmul_t(xs.slice(ndarray::s![i..i + 1, ..]), y1.view_mut());
        // Decoding one row or five gives the same bits (same kernel, same order).
        assert_eq!(y1.row(0), y.row(i));
    }
}

#[test]
#[should_panic(expected = "QMatrix::matmul_t: x is (2, 31)")]
fn matmul_t_panics_on_a_shape_mismatch() {
    let w = weights(4, 32, QType::Q8_0, 1);
    let x = Array2::zeros((2, 31));
    let mut y = Array2::zeros((2, 4));
    w.matmul_t(x.view(), y.view_mut());
}

#[test]
fn empty_shapes_are_fine() {
    for qtype in ALL {
        let w = QMatrix::quantize(Array2::zeros((3, 0)).view(), qtype).unwrap();
        for m in [1, 64] {
            let mut y = Array2::from_elem((m, 3), 1.0f32);
            w.matmul_t(Array2::zeros((m, 0)).view(), y.view_mut());
            assert!(y.iter().all(|&v| v == 0.0), "{}", qtype.name());
        }
        let w = QMatrix::quantize(Array2::zeros((0, 32)).view(), qtype).unwrap();
        let mut y = Array2::zeros((2, 0));
        w.matmul_t(Array2::zeros((2, 32)).view(), y.view_mut());
        assert_eq!(w.dequantize().dim(), (0, 32));
    }
}
