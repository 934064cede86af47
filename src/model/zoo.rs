//! Ready-made models.

use super::Sequential;
use crate::error::Result;
use crate::init::Rng;
use crate::layers::{Activate, Conv2d, Dense, Flatten, MaxPool2d};

/// The classic small Keras CNN for `input_shape = (C, H, W)` images and `classes` classes:
///
/// ```text
/// Conv2D(32, 3×3, relu) → MaxPool(2) → Conv2D(64, 3×3, relu) → MaxPool(2) → Flatten
///   → Dense(64, relu) → Dense(classes, softmax)
/// ```
///
/// 121,930 parameters on `(1, 28, 28)` with 10 classes; 167,562 on `(3, 32, 32)`.
///
/// ```
/// let model = handgrad::model::small_cnn(&[1, 28, 28], 10, &mut handgrad::init::rng(0))?;
/// assert_eq!(model.param_count(), 121_930);
/// # Ok::<(), handgrad::Error>(())
/// ```
///
/// # Errors
/// [`crate::Error::Shape`] when the images are too small for two 3×3 convolutions and pools.
pub fn small_cnn(input_shape: &[usize], classes: usize, rng: &mut Rng) -> Result<Sequential> {
    Sequential::new(input_shape)
        .add(Conv2d::new(32, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Conv2d::new(64, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(64).relu())
        .add(Dense::new(classes).softmax())
        .build(rng)
}
