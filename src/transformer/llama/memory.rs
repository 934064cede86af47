//! Training memory of a [`Llama`]: the bytes of activations a training forward keeps for the
//! backward ([`LlamaConfig::train_memory`], a formula) and the bytes its buffers actually hold
//! ([`Llama::train_memory_in_use`]), so that the formula can be checked against the allocation.
//!
//! The formula, with SmolLM2-135M's numbers, is in the [`llama`](crate::transformer::llama) module docs.

use super::train::LayerCache;
use super::{Llama, LlamaConfig};
use ndarray::{ArrayBase, Data, Dimension};

/// Bytes of a training state, by part. Built from a config by [`LlamaConfig::train_memory`] or
/// measured on a model by [`Llama::train_memory_in_use`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrainMemory {
    /// Activations kept for the backward, summed over the layers: every layer's full set
    /// without recomputation, only each layer's input with it.
    pub layers: usize,
    /// The recomputation buffers (one layer's activations and its residual stream); 0 without
    /// recomputation.
    pub recompute: usize,
    /// Outside the layers: token ids and positions, the final norm's input, output and `1/rms`,
    /// and the logits (overwritten by `dlogits`).
    pub head: usize,
    /// The backward's scratch gradients (`dx`, `dxr`, `dn`, `da`, `dg`, `du`, `dy`, `dqkv`, and
    /// a `(C)` sink for frozen norm weights).
    pub scratch: usize,
}

impl TrainMemory {
    /// The sum of the parts in bytes.
    pub fn total(&self) -> usize {
        self.layers + self.recompute + self.head + self.scratch
    }
}

const F32: usize = std::mem::size_of::<f32>();
const IDX: usize = std::mem::size_of::<usize>();

impl LlamaConfig {
    /// Bytes of activations one decoder layer keeps for the backward at batch `b`, length `t`
    /// without recomputation: `4·(N·(4C + W + Q + 3F + 2) + B·NH·T²)` with `N = B·T`,
    /// `W = (NH + 2·NKV)·HS`, `Q = NH·HS` (see the [`llama`](crate::transformer::llama) module docs); 44.0 MB for SmolLM2-135M
    /// at B = 4, T = 256.
    pub fn layer_activation_bytes(&self, b: usize, t: usize) -> usize {
        let n = b * t;
        let (c, f) = (self.hidden_size, self.intermediate_size);
        let heads = self.heads();
        let w = heads.qkv_width(self.head_dim);
        let q = heads.n_head * self.head_dim;
        F32 * (n * (4 * c + w + q + 3 * f + 2) + b * heads.n_head * t * t)
    }

    /// The bytes of every training buffer after a training forward and backward at batch `b`,
    /// length `t`, with recomputation (`recompute`, [`Llama::set_gradient_checkpointing`]) or
    /// without: what [`Llama::train_memory_in_use`] reports after that step (parameters,
    /// gradients and optimizer state not included; kernels' per-thread scratch rows neither).
    ///
    /// ```
    /// use handgrad::transformer::LlamaConfig;
    /// let cfg = LlamaConfig::smollm2_135m();
    /// let plain = cfg.train_memory(4, 256, false);
    /// let recompute = cfg.train_memory(4, 256, true);
    /// assert_eq!(plain.layers, 30 * cfg.layer_activation_bytes(4, 256)); // 1.32 GB
    /// assert!(recompute.total() < plain.total() / 3);
    /// ```
    pub fn train_memory(&self, b: usize, t: usize, recompute: bool) -> TrainMemory {
        let n = b * t;
        let (c, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let heads = self.heads();
        let w = heads.qkv_width(self.head_dim);
        let q = heads.n_head * self.head_dim;
        let layer = self.layer_activation_bytes(b, t);
        let (layers, recompute) = if recompute {
            (self.num_hidden_layers * F32 * n * c, layer + F32 * n * c)
        } else {
            (self.num_hidden_layers * layer, 0)
        };
        TrainMemory {
            layers,
            recompute,
            head: 2 * IDX * n + F32 * (2 * n * c + n + n * v),
            scratch: F32 * (3 * n * c + 3 * n * f + n * q + n * w + c),
        }
    }
}

/// Bytes held by an `f32` array.
fn bytes<S: Data<Elem = f32>, D: Dimension>(a: &ArrayBase<S, D>) -> usize {
    F32 * a.len()
}

impl LayerCache {
    /// Bytes held by this layer's buffers.
    fn bytes(&self) -> usize {
        bytes(&self.x_in)
            + bytes(&self.rstd1)
            + bytes(&self.n1)
            + bytes(&self.qkv)
            + bytes(&self.att)
            + bytes(&self.y)
            + bytes(&self.x_mid)
            + bytes(&self.rstd2)
            + bytes(&self.n2)
            + bytes(&self.g)
            + bytes(&self.u)
            + bytes(&self.a)
    }
}

impl Llama {
    /// The bytes the training buffers hold now, summed over the actual arrays (what
    /// [`LlamaConfig::train_memory`] predicts after a training step). Buffers are kept and reused
    /// between steps of one shape.
    pub fn train_memory_in_use(&self) -> TrainMemory {
        let tc = &self.train;
        TrainMemory {
            layers: tc.layers.iter().map(LayerCache::bytes).sum(),
            recompute: tc.scratch.bytes() + bytes(&tc.xr),
            head: IDX * (tc.ids.len() + tc.positions.len())
                + bytes(&tc.x_last)
                + bytes(&tc.rstd_f)
                + bytes(&tc.h)
                + bytes(&tc.dlogits),
            scratch: bytes(&tc.dx)
                + bytes(&tc.dxr)
                + bytes(&tc.dn)
                + bytes(&tc.da)
                + bytes(&tc.dg)
                + bytes(&tc.du)
                + bytes(&tc.dy)
                + bytes(&tc.dqkv)
                + bytes(&tc.dw_frozen),
        }
    }
}
