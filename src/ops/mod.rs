//! Pure kernels: forward and backward side by side, no state, no `Result`.
//!
//! Inputs were checked one tier up (layers, losses); kernels `assert!` internal invariants only.

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod conv2d;
pub mod cross_entropy;
pub mod depthwise;
pub mod embedding;
pub mod fast_exp;
pub mod gemv;
pub mod global_pool;
pub mod kv_attention;
pub mod lanes;
pub mod layer_norm;
pub mod linear;
pub mod losses;
pub mod matmul;
pub mod par;
pub mod pool;
pub mod quant;
pub mod rms_norm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
pub mod tile_gemm;
pub mod wide;
