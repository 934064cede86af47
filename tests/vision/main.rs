//! Vision tests: grouped/depthwise convolution, TF-SAME padding, ReLU6, global average pooling,
//! BatchNorm (EfficientNet settings), MBConv blocks and EfficientNet-Lite.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;

mod efficientnet;
mod mbconv;
mod vision_ops;
