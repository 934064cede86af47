//! Vision: the [`EfficientNetLite`] image classifier (EfficientNet-Lite0…4, ImageNet-pretrained
//! weights from PyTorch or timm state dicts), decoding photos ([`image_io`]), Pillow-exact resizing ([`mod@resize`]), torchvision's
//! transforms and presets ([`transforms`]), training augmentation ([`augment`]), the ImageNet
//! class names ([`imagenet`]) and two embedded sample photos.
//!
//! ```
//! use handgrad::vision::{self, imagenet, Preprocess};
//! let (name, jpeg) = vision::sample_photos()[1];
//! let img = vision::decode_rgb(jpeg, name)?;               // 640×427 RGB, as PIL decodes it
//! let x = Preprocess::imagenet_eval(224).apply(&img)?;   // resize 256 bicubic, crop 224, ±1
//! assert_eq!(x.shape(), &[1, 3, 224, 224]);
//! assert_eq!(imagenet::class_name(985), Some("daisy"));
//! # Ok::<(), handgrad::Error>(())
//! ```

pub mod augment;
pub mod efficientnet;
pub mod image_io;
pub mod imagenet;
pub mod resize;
pub mod transforms;

pub use augment::{RandomResizedCrop, TrainTransform};
pub use efficientnet::{BlockConfig, EfficientNetConfig, EfficientNetLite};
pub use image_io::{decode_rgb, load_rgb, RgbImage};
pub use resize::{resize, resize_short_side, Filter};
pub use transforms::{center_crop, to_tensor_normalized, Preprocess};

/// Two embedded 640×427 JPEG photos, `(file name, bytes)`: `"china.jpg"` (a palace) and
/// `"flower.jpg"` (a daisy), scikit-learn's sample images (CC BY 2.0; credits in NOTICE).
pub fn sample_photos() -> [(&'static str, &'static [u8]); 2] {
    [
        ("china.jpg", include_bytes!("../../data/photos/china.jpg")),
        ("flower.jpg", include_bytes!("../../data/photos/flower.jpg")),
    ]
}
