//! [`LmDataset`]: random training windows from a token stream for a language model.

use crate::error::{Error, Result};
use crate::init::Rng;
use ndarray::Array2;
use rand::Rng as _;

/// A token stream cut into `(input, target)` windows of length `T` for next-token training:
/// a window starting at `i` is `input = tokens[i..i+T]`, `target = tokens[i+1..i+T+1]`.
///
/// [`LmDataset::batch`] draws `B` random starts (nanoGPT's `get_batch`) from the given [`Rng`],
/// so a seed fixes the whole sequence of batches.
///
/// ```
/// use handgrad::data::LmDataset;
/// let data = LmDataset::new((0..100).collect(), 8)?;
/// let (x, y) = data.batch(4, &mut handgrad::init::rng(0));
/// assert_eq!(x.dim(), (4, 8));
/// assert_eq!(y[[0, 0]], x[[0, 1]]); // the target is the input shifted by one
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LmDataset {
    tokens: Vec<usize>,
    block_size: usize,
}

impl LmDataset {
    /// Windows of `block_size` tokens over `tokens`.
    ///
    /// # Errors
    /// [`Error::Config`] when `block_size` is 0 or the stream has fewer than `block_size + 1`
    /// tokens.
    pub fn new(tokens: Vec<usize>, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(Error::config("LmDataset", "block_size", 0, "at least 1"));
        }
        if tokens.len() <= block_size {
            return Err(Error::config(
                "LmDataset",
                "tokens",
                format!("{} tokens", tokens.len()),
                format!("at least block_size + 1 = {} tokens", block_size + 1),
            ));
        }
        Ok(LmDataset { tokens, block_size })
    }

    /// Splits the stream at `fraction` (e.g. 0.9) into a training and a validation dataset: the
    /// first holds the first `⌊fraction·len⌋` tokens, the same convention as
    /// [`crate::data::Dataset::split`] (the fraction names the first, training part).
    ///
    /// # Errors
    /// [`Error::Config`] when `fraction` is not in `(0, 1)` or a part is too short.
    pub fn split(&self, fraction: f64) -> Result<(LmDataset, LmDataset)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::config(
                "LmDataset::split",
                "fraction",
                fraction,
                "in (0, 1)",
            ));
        }
        let n = (self.tokens.len() as f64 * fraction) as usize;
        Ok((
            LmDataset::new(self.tokens[..n].to_vec(), self.block_size)?,
            LmDataset::new(self.tokens[n..].to_vec(), self.block_size)?,
        ))
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the stream is empty (never, for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The window length `T`.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The token stream.
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }

    /// The window starting at `start`: `(input, target)`, each `T` tokens.
    ///
    /// # Panics
    /// When `start + T + 1 > len` (starts come from [`LmDataset::batch`] or the caller's range).
    pub fn window(&self, start: usize) -> (&[usize], &[usize]) {
        let t = self.block_size;
        (
            &self.tokens[start..start + t],
            &self.tokens[start + 1..start + t + 1],
        )
    }

    /// `B` windows at uniformly random starts: `(inputs, targets)`, each `(B, T)`.
    pub fn batch(&self, batch_size: usize, rng: &mut Rng) -> (Array2<usize>, Array2<usize>) {
        let t = self.block_size;
        let starts: Vec<usize> = (0..batch_size)
            .map(|_| rng.random_range(0..self.tokens.len() - t))
            .collect();
        self.batch_at(&starts)
    }

    /// The windows at the given starts: `(inputs, targets)`, each `(starts.len(), T)`.
    ///
    /// # Panics
    /// When a start is `> len − T − 1`.
    pub fn batch_at(&self, starts: &[usize]) -> (Array2<usize>, Array2<usize>) {
        let t = self.block_size;
        let mut x = Array2::zeros((starts.len(), t));
        let mut y = Array2::zeros((starts.len(), t));
        for (b, &s) in starts.iter().enumerate() {
            let (input, target) = self.window(s);
            x.row_mut(b).assign(&ndarray::ArrayView1::from(input));
            y.row_mut(b).assign(&ndarray::ArrayView1::from(target));
        }
        (x, y)
    }

    /// Evenly spaced windows covering the stream (for a deterministic validation loss): up to
    /// `max_windows` non-overlapping starts `0, T, 2T, …`.
    pub fn eval_starts(&self, max_windows: usize) -> Vec<usize> {
        let t = self.block_size;
        (0..)
            .map(|i| i * t)
            .take_while(|&s| s + t < self.tokens.len())
            .take(max_windows)
            .collect()
    }
}
