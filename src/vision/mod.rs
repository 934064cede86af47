//! Vision models: [`EfficientNetLite`] (EfficientNet-Lite0…4, ImageNet-pretrained weights from
//! PyTorch or timm state dicts).

pub mod efficientnet;

pub use efficientnet::{BlockConfig, EfficientNetConfig, EfficientNetLite};
