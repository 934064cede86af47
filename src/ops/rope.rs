//! Rotary position embeddings (RoPE), forward and backward, in both weight layouts.
//!
//! For a head vector `x` of `HS` channels at absolute position `p`, with
//! `θ_i = base^(−2i/HS)` for `i < HS/2`, each pair of channels is rotated by the angle `p·θ_i`:
//!
//! ```text
//! x'[a] = x[a]·cos(p·θ_i) − x[b]·sin(p·θ_i)
//! x'[b] = x[b]·cos(p·θ_i) + x[a]·sin(p·θ_i)
//! ```
//!
//! The pairing is the layout flag ([`RopeLayout`]): Hugging Face's `rotate_half` pairs
//! `(a, b) = (i, i + HS/2)` ([`RopeLayout::HalfSplit`]); llama.cpp pairs adjacent channels
//! `(2i, 2i + 1)` ([`RopeLayout::Interleaved`]) because its GGUF converter permutes the rows of
//! `q_proj` and `k_proj` accordingly. Both give the same attention scores on their own weights.
//!
//! The angle tables are computed once in `f64` and rounded to `f32` (transformers computes them
//! in `f32`; the float64 references agree with the f64 tables to an ulp). The backward is the
//! rotation by `−p·θ_i` (a rotation's transpose is its inverse).

use ndarray::{Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Which channels of a head RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// `(i, i + HS/2)`: Hugging Face `rotate_half` (safetensors weights).
    HalfSplit,
    /// `(2i, 2i + 1)`: llama.cpp / GGUF (its permuted `attn_q` / `attn_k` rows).
    Interleaved,
}

/// Precomputed `cos` / `sin` of `p·θ_i` for positions `0..max_positions`.
///
/// # Shapes
/// `cos, sin: (P, HS/2)`.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Array2<f32>,
    sin: Array2<f32>,
    head_size: usize,
    layout: RopeLayout,
}

impl RopeTables {
    /// Tables for heads of `head_size` channels (even), base `theta` and `max_positions`.
    ///
    /// # Panics
    /// When `head_size` is odd or zero (checked by the model config).
    pub fn new(head_size: usize, theta: f64, max_positions: usize, layout: RopeLayout) -> Self {
        assert!(
            head_size > 0 && head_size.is_multiple_of(2),
            "RoPE head size must be even"
        );
        let half = head_size / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_size as f64))
            .collect();
        let cos = Array2::from_shape_fn((max_positions, half), |(p, i)| {
            (p as f64 * inv[i]).cos() as f32
        });
        let sin = Array2::from_shape_fn((max_positions, half), |(p, i)| {
            (p as f64 * inv[i]).sin() as f32
        });
        RopeTables {
            cos,
            sin,
            head_size,
            layout,
        }
    }

    /// The number of positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.nrows()
    }

    /// The head size `HS`.
    pub fn head_size(&self) -> usize {
        self.head_size
    }

    /// The pairing layout.
    pub fn layout(&self) -> RopeLayout {
        self.layout
    }

    /// `cos(p·θ_i)` and `sin(p·θ_i)` rows of position `p`.
    ///
    /// # Shapes
    /// `→ (HS/2), (HS/2)`.
    pub fn row(&self, p: usize) -> (&[f32], &[f32]) {
        (
            self.cos.row(p).to_slice().expect("contiguous"),
            self.sin.row(p).to_slice().expect("contiguous"),
        )
    }

    /// Rotates one head vector in place by `sign·p·θ_i` (`sign` = 1 forward, −1 backward).
    #[inline]
    fn rotate(&self, x: &mut [f32], p: usize, sign: f32) {
        let (cos, sin) = self.row(p);
        let half = self.head_size / 2;
        match self.layout {
            RopeLayout::HalfSplit => {
                let (lo, hi) = x.split_at_mut(half);
                for i in 0..half {
                    let (c, s) = (cos[i], sign * sin[i]);
                    let (a, b) = (lo[i], hi[i]);
                    lo[i] = a * c - b * s;
                    hi[i] = b * c + a * s;
                }
            }
            RopeLayout::Interleaved => {
                for (i, pair) in x.chunks_exact_mut(2).enumerate() {
                    let (c, s) = (cos[i], sign * sin[i]);
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * c - b * s;
                    pair[1] = b * c + a * s;
                }
            }
        }
    }

    /// Applies RoPE in place to the first `n_heads·HS` channels of every row: row `n` holds
    /// position `positions[n]`, heads packed `h·HS + d`. `inverse` rotates backwards (the
    /// backward pass: `dx = Rᵀ·dy`).
    ///
    /// ```text
    /// forward:  x' = R(p)·x            ⇒ dx = R(p)ᵀ·dx' = R(−p)·dx'
    /// ```
    ///
    /// # Shapes
    /// `x: (N, ≥ n_heads·HS)`, `positions: (N)`.
    ///
    /// # Panics
    /// When a position is beyond the tables or the shapes disagree (checked one tier up).
    pub fn apply(
        &self,
        mut x: ArrayViewMut2<f32>,
        n_heads: usize,
        positions: &[usize],
        inverse: bool,
    ) {
        let hs = self.head_size;
        assert_eq!(x.nrows(), positions.len(), "rope: one position per row");
        assert!(
            x.ncols() >= n_heads * hs,
            "rope: row narrower than n_heads·HS"
        );
        assert!(
            positions.iter().all(|&p| p < self.max_positions()),
            "rope: position beyond the tables"
        );
        let sign = if inverse { -1.0 } else { 1.0 };
        let rows: Vec<_> = x.axis_iter_mut(Axis(0)).zip(positions).collect();
        let work = |(mut row, &p): (ndarray::ArrayViewMut1<f32>, &usize)| {
            let row = row.as_slice_mut().expect("contiguous rows");
            for head in row[..n_heads * hs].chunks_exact_mut(hs) {
                self.rotate(head, p, sign);
            }
        };
        if rows.len() * n_heads * hs > 1 << 15 {
            rows.into_par_iter().for_each(work);
        } else {
            rows.into_iter().for_each(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_up_to_the_channel_permutation() {
        let hs = 8;
        let half = RopeTables::new(hs, 10000.0, 16, RopeLayout::HalfSplit);
        let inter = RopeTables::new(hs, 10000.0, 16, RopeLayout::Interleaved);
        let x: Vec<f32> = (0..hs).map(|i| (i as f32 * 0.7).sin()).collect();
        // interleaved channel 2j = half-split channel j, 2j+1 = j + hs/2
        let xi: Vec<f32> = (0..hs)
            .map(|c| {
                if c % 2 == 0 {
                    x[c / 2]
                } else {
                    x[c / 2 + hs / 2]
                }
            })
            .collect();
        let mut a = Array2::from_shape_vec((1, hs), x).unwrap();
        let mut b = Array2::from_shape_vec((1, hs), xi).unwrap();
        half.apply(a.view_mut(), 1, &[5], false);
        inter.apply(b.view_mut(), 1, &[5], false);
        for c in 0..hs {
            let src = if c % 2 == 0 { c / 2 } else { c / 2 + hs / 2 };
            assert_eq!(b[[0, c]], a[[0, src]]);
        }
        // and the inverse undoes it
        half.apply(a.view_mut(), 1, &[5], true);
        assert!((a[[0, 1]] - (0.7f32).sin()).abs() < 1e-6);
    }
}
