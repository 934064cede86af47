//! Generation (being merged): the `Decoder` trait.

/// A model that generation drives: a batch of rows decoded one token at a time.
pub trait Decoder {
    /// Number of token ids (logits width V).
    fn vocab_size(&self) -> usize;
    /// Starts decoding: every row is a token sequence (all rows the same length, ≥ 1).
    /// Returns the logits of each row's last position, shape (rows, V).
    fn prefill(&mut self, rows: &[Vec<usize>]) -> crate::Result<ndarray::Array2<f32>>;
    /// Appends `tokens[r]` to row r and returns the logits of the new last positions (rows, V).
    /// (The model crops its own context to its block size.)
    fn step(&mut self, tokens: &[usize]) -> crate::Result<ndarray::Array2<f32>>;
    /// Reorders rows: new row i is old row `order[i]` (rows may be duplicated or dropped;
    /// `order.len()` becomes the new row count). Used by beam search.
    fn reorder(&mut self, order: &[usize]) -> crate::Result<()>;
}
