//! [`Weight`]: a bias-free `nn.Linear` weight `[out, in]` held either as a trainable `f32`
//! parameter or in a file's quantized / half-precision encoding, multiplied without a
//! dequantised copy.

use crate::error::{Error, Result};
use crate::ops::matmul::{matmul_into, matmul_nt_into, matmul_tn_into};
use crate::ops::quant::{QMatrix, QType};
use crate::param::Param;
use crate::tensor::Tensor;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Ix2};

/// A weight matrix `W: [rows = out, cols = in]` used as `y = x·Wᵀ` (and, for the embedding,
/// row by row).
///
/// - [`Weight::Dense`]: an `f32` [`Param`] (trainable: gradients accumulate into it);
/// - [`Weight::Quant`]: a [`QMatrix`] in F16 / BF16 / Q8_0 / Q4_0 / Q4_1 (inference only; the
///   blocks are expanded in registers inside the product, activations stay `f32`).
#[derive(Debug, Clone)]
pub enum Weight {
    /// A trainable `f32` matrix.
    Dense(Param),
    /// A frozen matrix in its stored encoding.
    Quant(QMatrix),
}

impl Weight {
    /// A dense weight from a rank-2 tensor.
    ///
    /// # Errors
    /// [`Error::Param`] naming `name` when the tensor is not `[rows, cols]`.
    pub fn dense(name: &str, t: Tensor, rows: usize, cols: usize) -> Result<Self> {
        if t.shape() != [rows, cols] {
            return Err(Error::Param {
                name: name.into(),
                message: format!("expected shape [{rows}, {cols}], got {:?}", t.shape()),
            });
        }
        Ok(Weight::Dense(Param::new(
            t.as_standard_layout().into_owned(),
        )))
    }

    /// A stored matrix, checked against the expected `[rows, cols]`; F32 is kept as a dense
    /// parameter (no benefit in keeping it encoded).
    ///
    /// # Errors
    /// [`Error::Param`] naming `name` when the shape differs.
    pub fn quant(name: &str, q: QMatrix, rows: usize, cols: usize) -> Result<Self> {
        if (q.rows(), q.cols()) != (rows, cols) {
            return Err(Error::Param {
                name: name.into(),
                message: format!(
                    "expected shape [{rows}, {cols}], got [{}, {}] ({})",
                    q.rows(),
                    q.cols(),
                    q.qtype().name()
                ),
            });
        }
        if q.qtype() == QType::F32 {
            return Ok(Weight::Dense(Param::new(q.dequantize().into_dyn())));
        }
        Ok(Weight::Quant(q))
    }

    /// `(rows, cols)` = `(out, in)`.
    pub fn dim(&self) -> (usize, usize) {
        match self {
            Weight::Dense(p) => {
                let s = p.shape();
                (
                    s.first().copied().unwrap_or(0),
                    s.get(1).copied().unwrap_or(0),
                )
            }
            Weight::Quant(q) => (q.rows(), q.cols()),
        }
    }

    /// The full shape (a dense parameter replaced by the user may have any rank).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Weight::Dense(p) => p.shape().to_vec(),
            Weight::Quant(q) => vec![q.rows(), q.cols()],
        }
    }

    /// The encoding: `"F32"` for dense weights, else the quantized type's name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Weight::Dense(_) => "F32",
            Weight::Quant(q) => q.qtype().name(),
        }
    }

    /// The bytes this weight occupies (memory-mapped ones included).
    pub fn nbytes(&self) -> usize {
        match self {
            Weight::Dense(p) => p.numel() * 4,
            Weight::Quant(q) => q.data().len(),
        }
    }

    /// The dense view of a [`Weight::Dense`] weight.
    fn matrix(p: &Param) -> ArrayView2<'_, f32> {
        p.value
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked [rows, cols]")
    }

    /// `y = x·Wᵀ`.
    ///
    /// # Shapes
    /// `x: (M, cols)` → `y: (M, rows)`.
    pub fn matmul_t(&self, x: ArrayView2<f32>, y: ArrayViewMut2<f32>) {
        match self {
            Weight::Dense(p) => matmul_nt_into(x, Self::matrix(p), y, false),
            Weight::Quant(q) => q.matmul_t(x, y),
        }
    }

    /// `y = x·[W_0; W_1; …]ᵀ`: the products of `x` with several weights of the same width,
    /// written side by side. Encoded weights of one type go through
    /// [`QMatrix::matmul_t_concat`] (decoding: `x` quantised once, one parallel call for the
    /// group); any other mix runs one [`Weight::matmul_t`] per weight. The results equal the
    /// separate products bit for bit.
    ///
    /// # Shapes
    /// `x: (M, cols)`, `ws[i]: (rows_i, cols)` → `y: (M, Σ rows_i)`.
    pub fn matmul_t_concat(ws: &[&Weight], x: ArrayView2<f32>, mut y: ArrayViewMut2<f32>) {
        let qs: Vec<&QMatrix> = ws
            .iter()
            .filter_map(|w| match w {
                Weight::Quant(q) => Some(q),
                Weight::Dense(_) => None,
            })
            .collect();
        let same = |q: &&QMatrix| q.qtype() == qs[0].qtype() && q.cols() == qs[0].cols();
        if !qs.is_empty() && qs.len() == ws.len() && qs.iter().all(same) {
            return QMatrix::matmul_t_concat(&qs, x, y);
        }
        let mut c0 = 0;
        for w in ws {
            let rows = w.dim().0;
            w.matmul_t(x, y.slice_mut(s![.., c0..c0 + rows]));
            c0 += rows;
        }
    }

    /// Writes row `r` of `W` (an embedding lookup) into `out`.
    ///
    /// # Shapes
    /// `out: (cols)`.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match self {
            Weight::Dense(p) => {
                // any memory layout: a parameter replaced by the user need not be row-major
                for (o, &v) in out.iter_mut().zip(Self::matrix(p).row(r)) {
                    *o = v;
                }
            }
            Weight::Quant(q) => q.dequantize_row(r, out),
        }
    }

    /// The matrix as `f32` (a dequantised copy for encoded weights).
    pub fn to_f32(&self) -> Array2<f32> {
        match self {
            Weight::Dense(p) => Self::matrix(p).to_owned(),
            Weight::Quant(q) => q.dequantize(),
        }
    }

    /// The trainable parameter, if this weight is dense.
    pub fn param(&self) -> Option<&Param> {
        match self {
            Weight::Dense(p) => Some(p),
            Weight::Quant(_) => None,
        }
    }

    /// The trainable parameter, mutably, if this weight is dense.
    pub fn param_mut(&mut self) -> Option<&mut Param> {
        match self {
            Weight::Dense(p) => Some(p),
            Weight::Quant(_) => None,
        }
    }

    /// Backward of [`Weight::matmul_t`]: adds `dW += dyᵀ·x` and writes (or adds) `dx = dy·W`.
    ///
    /// ```text
    /// forward: y = x·Wᵀ   ⇒ dW += dyᵀ·x,  dx = dy·W
    /// ```
    ///
    /// # Shapes
    /// `x: (M, cols)`, `dy: (M, rows)`, `dx: (M, cols)`.
    ///
    /// # Errors
    /// [`Error::State`] naming `name` for an encoded weight (train a dequantised copy:
    /// `Llama::to_f32`).
    pub fn backward(
        &mut self,
        name: &str,
        x: ArrayView2<f32>,
        dy: ArrayView2<f32>,
        dx: Option<ArrayViewMut2<f32>>,
        accumulate_dx: bool,
    ) -> Result<()> {
        let Weight::Dense(p) = self else {
            return Err(Error::State(format!(
                "{name} is stored as {}: it has no gradient; dequantise the model to f32 \
                 before training",
                self.type_name()
            )));
        };
        if let Some(dx) = dx {
            matmul_into(dy, Self::matrix(p), dx, accumulate_dx);
        }
        let mut g = p
            .grad
            .view_mut()
            .into_dimensionality::<Ix2>()
            .expect("grad shaped like the value");
        matmul_tn_into(dy, x, g.view_mut(), true);
        Ok(())
    }
}
