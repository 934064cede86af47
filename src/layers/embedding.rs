//! [`Embedding`]: a table look-up for token ids (PyTorch `nn.Embedding`, GPT-2 `wte` / `wpe`).

use super::no_cache;
use crate::error::{Error, Result};
use crate::init::{normal, Rng};
use crate::ops::embedding::{embedding_backward, embedding_forward};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{Ix2, IxDyn};

/// A table of `V` learned vectors of width `C`, looked up by integer id.
///
/// Token ids are not a float [`Tensor`], so `Embedding` has its own typed API instead of the
/// [`crate::Layer`] trait: [`Embedding::forward_ids`] takes the ids with their `(B, T)` shape
/// and checks each against `V`; [`Embedding::backward`] scatter-adds `dL/dout` into the table's
/// gradient (rows of repeated ids accumulate; unused rows stay untouched). The one parameter is
/// `weight` (`[V, C]`, PyTorch's name and layout).
///
/// # Shapes
/// `ids: (B, T)` (flat, row-major) → `(B, T, C)`; `weight: (V, C)`.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Param,
    /// The ids of the last forward and their `(B, T)` shape (buffer reused across calls).
    ids: Vec<usize>,
    shape: Option<(usize, usize)>,
}

impl Embedding {
    /// A table of `num_embeddings` rows of width `dim`, drawn from `N(0, 1)` (PyTorch's
    /// `nn.Embedding` default; GPT-2 / nanoGPT use [`Embedding::with_std`] with 0.02).
    ///
    /// # Errors
    /// [`Error::Config`] when either size is 0.
    pub fn new(num_embeddings: usize, dim: usize, rng: &mut Rng) -> Result<Self> {
        Self::with_std(num_embeddings, dim, 1.0, rng)
    }

    /// A table drawn from `N(0, std²)`.
    ///
    /// # Errors
    /// [`Error::Config`] when a size is 0 or `std` is not finite and ≥ 0.
    pub fn with_std(num_embeddings: usize, dim: usize, std: f32, rng: &mut Rng) -> Result<Self> {
        if num_embeddings == 0 {
            return Err(Error::config(
                "Embedding",
                "num_embeddings",
                0,
                "at least 1",
            ));
        }
        if dim == 0 {
            return Err(Error::config("Embedding", "dim", 0, "at least 1"));
        }
        if !(std.is_finite() && std >= 0.0) {
            return Err(Error::config(
                "Embedding",
                "std",
                std,
                "a finite value >= 0",
            ));
        }
        Ok(Embedding {
            weight: Param::new(normal(&[num_embeddings, dim], std, rng)?),
            ids: Vec::new(),
            shape: None,
        })
    }

    /// An embedding over an existing table.
    ///
    /// # Shapes
    /// `weight: (V, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `weight` is not rank 2 with both sizes ≥ 1.
    pub fn from_weights(weight: Tensor) -> Result<Self> {
        if weight.ndim() != 2 || weight.is_empty() {
            return Err(Error::shape(
                "Embedding::from_weights",
                "a rank-2 [num_embeddings, dim] table with both sizes >= 1",
                weight.shape(),
            ));
        }
        Ok(Embedding {
            weight: Param::new(weight.as_standard_layout().into_owned()),
            ids: Vec::new(),
            shape: None,
        })
    }

    /// The number of rows `V`.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape().first().copied().unwrap_or(0)
    }

    /// The row width `C`.
    pub fn dim(&self) -> usize {
        self.weight.shape().get(1).copied().unwrap_or(0)
    }

    /// Checks that the table is still a rank-2 `[V, C]` with a gradient of its shape (a user may
    /// have replaced it through `params_mut()`).
    fn check_table(&self) -> Result<()> {
        if self.weight.value.ndim() != 2 {
            return Err(Error::param(
                "Embedding.weight",
                format!(
                    "has shape {:?}, expected a rank-2 [V, C] table (was it replaced through \
                     params_mut()?)",
                    self.weight.shape()
                ),
            ));
        }
        self.weight.check(&[self.num_embeddings(), self.dim()], || {
            "Embedding.weight".to_string()
        })
    }

    /// The table `[V, C]`.
    pub fn weight(&self) -> &Param {
        &self.weight
    }

    fn name(&self) -> String {
        format!(
            "Embedding(num_embeddings={}, dim={})",
            self.num_embeddings(),
            self.dim()
        )
    }

    /// Looks up `ids` (row-major, `shape = (B, T)`) and caches them for [`Embedding::backward`].
    ///
    /// # Shapes
    /// `ids: (B·T)` → `(B, T, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `ids.len() != B·T`; [`Error::Label`] naming the first id ≥ `V`,
    /// its position `(b, t)` and the vocabulary size.
    pub fn forward_ids(&mut self, ids: &[usize], shape: (usize, usize)) -> Result<Tensor> {
        self.check_table()?;
        let (b, t) = shape;
        if ids.len() != b * t {
            return Err(Error::shape(
                self.name(),
                format!("{} token ids for shape (B, T) = ({b}, {t})", b * t),
                &[ids.len()],
            ));
        }
        let v = self.num_embeddings();
        if let Some((n, &id)) = ids.iter().enumerate().find(|&(_, &id)| id >= v) {
            let (bb, tt) = (n / t.max(1), n % t.max(1));
            return Err(Error::label(
                self.name(),
                format!(
                    "token id {id} at position (b={bb}, t={tt}) is out of range for a vocabulary \
                     of {v} (ids must be < {v})"
                ),
            ));
        }
        let c = self.dim();
        let mut out = Tensor::zeros(IxDyn(&[b, t, c]));
        let w = self.weight.value.as_standard_layout();
        embedding_forward(
            ids,
            w.as_slice().expect("standard layout"),
            c,
            out.as_slice_mut().expect("fresh tensor"),
        );
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.shape = Some(shape);
        Ok(out)
    }

    /// Scatter-adds `dout` into `weight.grad` for the ids of the last forward.
    ///
    /// ```text
    /// forward: out[b, t] = weight[ids[b, t]]  ⇒  dweight[ids[b, t]] += dout[b, t]
    /// ```
    ///
    /// # Shapes
    /// `dout: (B, T, C)`, shaped like the last output.
    ///
    /// # Errors
    /// [`Error::State`] without a preceding forward, [`Error::Shape`] when `dout` does not match.
    pub fn backward(&mut self, dout: &Tensor) -> Result<()> {
        self.check_table()?;
        let name = self.name();
        let (b, t) = self.shape.ok_or_else(|| no_cache(&name))?;
        let c = self.dim();
        if dout.shape() != [b, t, c] {
            return Err(Error::shape(
                format!("{name} backward"),
                format!("dout shaped like the last output [{b}, {t}, {c}]"),
                dout.shape(),
            ));
        }
        let d = dout.as_standard_layout();
        let mut grad = self
            .weight
            .grad
            .view_mut()
            .into_dimensionality::<Ix2>()
            .expect("weight is [V, C]");
        embedding_backward(
            &self.ids,
            d.as_slice().expect("standard layout"),
            c,
            grad.as_slice_mut().expect("grad is contiguous"),
        );
        Ok(())
    }

    /// The parameter with its local name: `[("weight", …)]`.
    pub fn params(&self) -> Vec<(String, &Param)> {
        vec![("weight".to_string(), &self.weight)]
    }

    /// The parameter, mutably, with its local name.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![("weight".to_string(), &mut self.weight)]
    }
}
