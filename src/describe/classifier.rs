//! [`ImageClassifier`]: one image in, a probability per named class out; implemented by
//! [`SequentialClassifier`] (any [`Sequential`] with the names of its classes) and by
//! [`EfficientNetLite`] (decoded photos, ImageNet names).

use crate::error::{Error, Result};
use crate::layers::Mode;
use crate::model::Sequential;
use crate::tensor::Tensor;
use crate::vision::{imagenet, EfficientNetLite, Preprocess, RgbImage};
use ndarray::Axis;

/// One class as the classifier ranked it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    /// The class index (the position in [`ImageClassifier::class_names`]).
    pub class: usize,
    /// Its name.
    pub name: String,
    /// Its probability, in `[0, 1]`.
    pub probability: f32,
}

impl ClassScore {
    /// A class index, its name and its probability.
    pub fn new(class: usize, name: impl Into<String>, probability: f32) -> Self {
        ClassScore {
            class,
            name: name.into(),
            probability,
        }
    }
}

/// An image classifier: one image → a probability for each of its [`class_names`].
///
/// [`class_names`]: ImageClassifier::class_names
pub trait ImageClassifier {
    /// What one image is for this classifier: a [`Tensor`] of the model's input shape for
    /// [`SequentialClassifier`], a decoded photo ([`RgbImage`]) for [`EfficientNetLite`].
    type Image: ?Sized;

    /// The class names, indexed by class.
    fn class_names(&self) -> Vec<String>;

    /// The probability of every class for one image (they sum to 1).
    ///
    /// # Shapes
    /// `image → [class_names().len()]`.
    ///
    /// # Errors
    /// An image the model cannot take (as the implementation documents).
    fn probabilities(&mut self, image: &Self::Image) -> Result<Vec<f32>>;
}

/// The `k` most probable classes, best first (equal probabilities keep the lower index first);
/// a `k` above the number of classes gives them all.
///
/// # Shapes
/// `probabilities: [K]`, `names: [K]` → `min(k, K)` classes.
///
/// # Errors
/// [`Error::Shape`] when there is not one name per probability.
pub fn top_classes(probabilities: &[f32], names: &[String], k: usize) -> Result<Vec<ClassScore>> {
    if probabilities.len() != names.len() {
        return Err(Error::shape(
            "top_classes",
            format!("one probability per class name ({} names)", names.len()),
            &[probabilities.len()],
        ));
    }
    Ok(imagenet::top_k(probabilities, k)
        .into_iter()
        .map(|(class, p)| ClassScore::new(class, names[class].clone(), p))
        .collect())
}

/// A [`Sequential`] classifier with the names of its classes: its output is one score per name,
/// turned into probabilities by a softmax unless the model already ends in one.
///
/// ```
/// use handgrad::prelude::*;
/// use handgrad::describe::{ImageClassifier, SequentialClassifier};
/// let net = Sequential::new(&[4]).add(Dense::new(2)).build(&mut handgrad::init::rng(0))?;
/// let mut c = SequentialClassifier::new(net, &["cat", "dog"])?;
/// let p = c.probabilities(&Tensor::zeros(ndarray::IxDyn(&[4])))?;
/// assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug)]
pub struct SequentialClassifier {
    model: Sequential,
    names: Vec<String>,
}

impl SequentialClassifier {
    /// Pairs a built classifier with the names of its classes.
    ///
    /// # Errors
    /// [`Error::Shape`] when the model's output is not one score per name.
    pub fn new<S: AsRef<str>>(model: Sequential, names: &[S]) -> Result<Self> {
        if model.output_shape() != [names.len()] {
            return Err(Error::shape(
                "SequentialClassifier::new",
                format!("an output of {} scores, one per class name", names.len()),
                model.output_shape(),
            ));
        }
        Ok(SequentialClassifier {
            model,
            names: names.iter().map(|s| s.as_ref().to_string()).collect(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Sequential {
        &self.model
    }

    /// The model, mutably.
    pub fn model_mut(&mut self) -> &mut Sequential {
        &mut self.model
    }

    /// The model back.
    pub fn into_model(self) -> Sequential {
        self.model
    }
}

impl ImageClassifier for SequentialClassifier {
    /// One input of the model's per-sample shape (e.g. `(1, 28, 28)`), or that with a leading
    /// batch axis of 1.
    type Image = Tensor;

    fn class_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// # Errors
    /// [`Error::Shape`] for an image of another shape (naming the model's input shape).
    fn probabilities(&mut self, image: &Tensor) -> Result<Vec<f32>> {
        let want = self.model.input_shape().to_vec();
        let batch = if image.shape() == want.as_slice() {
            image.clone().insert_axis(Axis(0))
        } else if image.ndim() == want.len() + 1
            && image.shape()[0] == 1
            && image.shape()[1..] == want[..]
        {
            image.clone()
        } else {
            return Err(Error::shape(
                "SequentialClassifier image",
                format!("one image of shape {want:?} (optionally with a batch axis of 1)"),
                image.shape(),
            ));
        };
        let out = self.model.predict(&batch)?;
        let row: Vec<f32> = out.iter().copied().collect();
        let ends_in_softmax = self.model.layers().last().is_some_and(|l| l.is_softmax());
        Ok(if ends_in_softmax {
            row
        } else {
            crate::generate::processors::softmax(&row)
        })
    }
}

impl ImageClassifier for EfficientNetLite {
    /// A decoded photo of any size: it is preprocessed with
    /// [`Preprocess::imagenet_eval`]`(image_size)` (timm's eval transform: bicubic resize of
    /// the short side to `image_size / 0.875`, centre crop, values in `[−1, 1]`).
    type Image = RgbImage;

    /// The ImageNet-1k names ([`imagenet::class_names`]) for a 1,000-class network; `"class
    /// 0"`, `"class 1"`, … for another head (e.g. after
    /// [`EfficientNetLite::with_num_classes`]).
    fn class_names(&self) -> Vec<String> {
        let n = self.config().num_classes;
        if n == imagenet::NUM_CLASSES {
            imagenet::class_names()
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            (0..n).map(|i| format!("class {i}")).collect()
        }
    }

    /// # Errors
    /// As [`Preprocess::apply`] and the network's forward.
    fn probabilities(&mut self, image: &RgbImage) -> Result<Vec<f32>> {
        let x = Preprocess::imagenet_eval(self.config().image_size).apply(image)?;
        let logits = self.forward(&x, Mode::Eval)?;
        let row: Vec<f32> = logits.iter().copied().collect();
        Ok(crate::generate::processors::softmax(&row))
    }
}
