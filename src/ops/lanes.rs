//! Row reductions in fixed interleaved lanes, so the compiler vectorises them.
//!
//! A loop such as `x.iter().fold(m, f32::max)` or `sum += exp(x)` carries one scalar from each
//! element to the next; Rust never reorders floating-point operations, so it runs one element at a
//! time. These helpers keep [`LANES`] partial results (element `i` goes to lane `i mod LANES`)
//! and combine them in one fixed order at the end: the loops then run as wide as the vectors are
//! (inside [`super::wide::wide`]: AVX-512 or AVX2), and the result depends on the data only —
//! not on the vector width nor on the thread count.
//!
//! Used by the softmax rows of attention, the language-model cross-entropy, LayerNorm, the
//! few-rows products of `gemv` and the gradient norm of `optim::clip_grad_norm`.

/// Interleaved lanes of the `f32` reductions (one AVX-512 register, two AVX2 ones).
pub const LANES: usize = 16;

/// `max_i x[i]·scale` (`−∞` for an empty row; NaN elements are skipped, as `f32::max` does).
#[inline(always)]
pub fn max_scaled(x: &[f32], scale: f32) -> f32 {
    // `if v > m { v } else { m }` is one `maxps` per vector (NaNs are skipped as by `f32::max`),
    // and the lanes fold in a tree rather than a serial chain.
    #[inline(always)]
    fn pick(m: f32, v: f32) -> f32 {
        if v > m {
            v
        } else {
            m
        }
    }
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in chunks.by_ref() {
        for l in 0..LANES {
            m[l] = pick(m[l], c[l] * scale);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        m[l] = pick(m[l], v * scale);
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            m[l] = pick(m[l], m[l + width]);
        }
        width /= 2;
    }
    m[0]
}

/// Folds [`LANES`] partial sums in a fixed tree (the end of a lane-wise reduction): lane `l`
/// += lane `l + 8`, then `l + 4`, `l + 2`, `l + 1`.
#[inline(always)]
pub fn lanes_sum(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// Folds eight `f64` partial sums as `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))`.
#[inline(always)]
fn fold8(a: [f64; 8]) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Overwrites `x[i] = e^(x[i]·scale − shift)` and returns `Σ_i x[i]` (after the overwrite) in
/// [`LANES`] `f32` lanes, folded at the end as in [`lanes_sum`].
#[inline(always)]
pub fn exp_in_place_sum(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in chunks.by_ref() {
        for l in 0..LANES {
            let e = super::fast_exp::exp(c[l] * scale - shift);
            c[l] = e;
            acc[l] += e;
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        let e = super::fast_exp::exp(*v * scale - shift);
        *v = e;
        acc[l] += e;
    }
    lanes_sum(acc)
}

/// Overwrites `x[i] = e^(x[i] − shift)` and returns `Σ_i x[i]` accumulated in `f64`: eight lanes
/// (element `i` into lane `i mod 8`), folded as in [`sum_f64_by`].
/// For long rows (a vocabulary of 50,257 logits) where an `f32` sum would lose digits.
#[inline(always)]
pub fn exp_in_place_sum_f64(x: &mut [f32], shift: f32) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in chunks.by_ref() {
        let mut e = [0.0f32; LANES];
        for l in 0..LANES {
            e[l] = super::fast_exp::exp(c[l] - shift);
            c[l] = e[l];
        }
        // elements i and i + 8 of the chunk go to lane i, in index order
        for l in 0..8 {
            acc[l] += e[l] as f64;
        }
        for l in 0..8 {
            acc[l] += e[8 + l] as f64;
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        let e = super::fast_exp::exp(*v - shift);
        *v = e;
        acc[l % 8] += e as f64;
    }
    fold8(acc)
}

/// `Σ_i f(x[i])` accumulated in `f64`: eight lanes (element `i` into lane `i mod 8`), added as
/// `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))`.
#[inline(always)]
pub fn sum_f64_by(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in chunks.by_ref() {
        for l in 0..8 {
            acc[l] += f(c[l]);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] += f(v);
    }
    fold8(acc)
}

/// `Σ_i a[i]·b[i]` in [`LANES`] `f32` lanes, folded at the end as in [`lanes_sum`] (the dot
/// product of the few-rows kernels in `gemv`, too).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    // The tail as one more zero-padded vector, so that every lane is handled alike and the loop
    // above stays one register wide: the padding adds `0·0 = +0` to lanes that can never hold
    // `−0` (they start at `+0`, and a sum is `−0` only when both terms are), so the bits are
    // those of adding the tail's products alone.
    if !ra.is_empty() {
        let (mut x, mut y) = ([0.0f32; LANES], [0.0f32; LANES]);
        x[..ra.len()].copy_from_slice(ra);
        y[..rb.len()].copy_from_slice(rb);
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    lanes_sum(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 * 0.173).sin() * 4.0)
            .collect()
    }

    #[test]
    fn reductions_agree_with_f64_references_and_each_vector_width() {
        for n in [0, 1, 7, 16, 17, 33, 128, 50_257] {
            let x = row(n);
            let m = max_scaled(&x, 0.5);
            let want = x.iter().map(|&v| v * 0.5).fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(m, want, "max, n={n}");

            let mut y = x.clone();
            let s = exp_in_place_sum(&mut y, 0.5, m.max(0.0));
            let want: f64 = x
                .iter()
                .map(|&v| ((v * 0.5 - m.max(0.0)) as f64).exp())
                .sum();
            assert!(
                (s as f64 - want).abs() <= 1e-5 * want.max(1.0),
                "sum, n={n}"
            );
            let mut y64 = x.clone();
            let s64 = exp_in_place_sum_f64(&mut y64, 1.0);
            let want64: f64 = x.iter().map(|&v| ((v - 1.0) as f64).exp()).sum();
            assert!(
                (s64 - want64).abs() <= 1e-6 * want64.max(1.0),
                "sum f64, n={n}"
            );

            let d = dot(&x, &y);
            let want: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (d as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                "dot, n={n}"
            );

            // the wide copies give the same bits as the baseline build
            let mut z = x.clone();
            let wide = super::super::wide::wide_loop!({
                (
                    max_scaled(&x, 0.5),
                    exp_in_place_sum(&mut z, 0.5, 1.0),
                    dot(&x, &x),
                )
            });
            let mut z2 = x.clone();
            let base = (
                max_scaled(&x, 0.5),
                exp_in_place_sum(&mut z2, 0.5, 1.0),
                dot(&x, &x),
            );
            assert_eq!(wide.0.to_bits(), base.0.to_bits());
            assert_eq!(wide.1.to_bits(), base.1.to_bits());
            assert_eq!(wide.2.to_bits(), base.2.to_bits());
            assert_eq!(z, z2);
        }
    }

    #[test]
    fn dot_is_its_lane_definition_bit_for_bit() {
        // element i into lane i mod LANES, lanes folded by `lanes_sum`: the zero-padded tail
        // must add nothing, also with signed zeros, cancellations, infinities and NaN
        let specials = [
            -0.0f32,
            0.0,
            -1.5,
            1.5,
            f32::INFINITY,
            f32::NAN,
            1e-30,
            -3.25,
        ];
        for n in [0, 1, 5, 15, 16, 17, 31, 33, 768, 777] {
            for case in 0..3 {
                let x: Vec<f32> = (0..n)
                    .map(|i| match case {
                        0 => -0.0,
                        1 => specials[i % 6],
                        _ => ((i * 37 % 101) as f32 * 0.173).sin(),
                    })
                    .collect();
                let y: Vec<f32> = (0..n)
                    .map(|i| match case {
                        0 => 1.0,
                        1 => specials[(i * 3 + 1) % specials.len()],
                        _ => -(((i * 11 % 53) as f32) * 0.31).cos(),
                    })
                    .collect();
                let mut lanes = [0.0f32; LANES];
                for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                    lanes[i % LANES] += a * b;
                }
                let want = lanes_sum(lanes);
                let got = dot(&x, &y);
                assert_eq!(got.to_bits(), want.to_bits(), "n={n}, case {case}");
            }
        }
    }
}
