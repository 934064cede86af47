//! Integration tests of the vision and model-import work in one binary (one link): one module
//! per file. Vision: grouped/depthwise convolution, TF-SAME padding, ReLU6, global average
//! pooling, BatchNorm (EfficientNet settings), MBConv blocks and EfficientNet-Lite.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;

mod efficientnet;
mod efficientnet_pretrained;
mod mbconv;
mod torch_pickle;
mod vision_ops;
