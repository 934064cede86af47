//! Vision: decoding photos ([`image_io`]), Pillow-exact resizing ([`resize`]), torchvision's
//! transforms and presets ([`transforms`]), training augmentation ([`augment`]), the ImageNet
//! class names ([`imagenet`]) and two embedded sample photos.

pub mod augment;
pub mod image_io;
pub mod imagenet;
pub mod resize;
pub mod transforms;

pub use augment::{RandomResizedCrop, TrainTransform};
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
