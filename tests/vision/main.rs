//! Vision and model-import integration tests in one binary: grouped/depthwise convolution,
//! TF-SAME padding, ReLU6, global average pooling, BatchNorm, MBConv blocks, EfficientNet-Lite,
//! photos and preprocessing, image folders, frozen parameters, the PyTorch checkpoint reader,
//! and the real photo describer (EfficientNet-Lite0 + SmolLM2) when the models are fetched.

#[path = "../core/common.rs"]
#[allow(dead_code)]
mod common;
mod describe_photos;
mod efficientnet;
mod efficientnet_pretrained;
mod freeze;
mod fused;
mod image_folder;
mod mbconv;
mod photos;
mod torch_mutations;
mod torch_pickle;
mod torch_save;
mod vision_ops;
