//! [`Describer`]: an image model and a language model working together — the CNN recognises
//! what is in an image, the GPT writes text from a prompt built from that class.

use crate::error::{Error, Result};
use crate::generate::GenerateConfig;
use crate::model::Sequential;
use crate::tensor::Tensor;
use crate::tokenizer::Tokenizer;
use crate::transformer::Gpt;

/// What [`Describer::describe`] saw and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The predicted class index.
    pub class: usize,
    /// Its name.
    pub label: String,
    /// The predicted probability of that class.
    pub probability: f32,
    /// The prompt built from the template.
    pub prompt: String,
    /// The prompt followed by the generated text.
    pub text: String,
}

/// Classifies an image with a [`Sequential`] classifier, fills a prompt template with the class
/// name, and lets a [`Gpt`] continue it.
///
/// The template's `{class}` is replaced by the class name (default template:
/// `"This is a picture of a {class}."`).
///
/// ```no_run
/// # use handgrad::prelude::*;
/// # fn demo(cnn: Sequential, gpt: handgrad::transformer::Gpt,
/// #         tok: handgrad::tokenizer::CharTokenizer, image: Tensor) -> handgrad::Result<()> {
/// use handgrad::describe::Describer;
/// use handgrad::generate::GenerateConfig;
/// let names = ["t-shirt", "trouser", "pullover", "dress", "coat",
///              "sandal", "shirt", "sneaker", "bag", "ankle boot"];
/// let mut d = Describer::new(cnn, &names, gpt, tok)?.template("The sailor found a {class} and");
/// let out = d.describe(&image, &GenerateConfig::new().max_new_tokens(40).do_sample(true))?;
/// println!("{} ({:.0} %): {}", out.label, 100.0 * out.probability, out.text);
/// # Ok(()) }
/// ```
pub struct Describer<T: Tokenizer> {
    cnn: Sequential,
    class_names: Vec<String>,
    gpt: Gpt,
    tokenizer: T,
    template: String,
}

impl<T: Tokenizer> Describer<T> {
    /// Pairs a classifier (ending in a softmax over `class_names.len()` classes) with a GPT and
    /// its tokenizer.
    ///
    /// # Errors
    /// [`Error::Shape`] when the classifier's output is not one score per class name;
    /// [`Error::Config`] when the tokenizer's vocabulary is not the GPT's.
    pub fn new(cnn: Sequential, class_names: &[&str], gpt: Gpt, tokenizer: T) -> Result<Self> {
        if cnn.output_shape() != [class_names.len()] {
            return Err(Error::shape(
                "Describer::new classifier",
                format!(
                    "an output of {} scores, one per class name",
                    class_names.len()
                ),
                cnn.output_shape(),
            ));
        }
        if tokenizer.vocab_size() != gpt.config().vocab_size {
            return Err(Error::config(
                "Describer::new",
                "tokenizer vocab_size",
                tokenizer.vocab_size(),
                format!("the GPT's vocab_size {}", gpt.config().vocab_size),
            ));
        }
        Ok(Describer {
            cnn,
            class_names: class_names.iter().map(|s| s.to_string()).collect(),
            gpt,
            tokenizer,
            template: "This is a picture of a {class}.".to_string(),
        })
    }

    /// Sets the prompt template; `{class}` is replaced by the class name.
    pub fn template(mut self, template: &str) -> Self {
        self.template = template.to_string();
        self
    }

    /// The prompt for a class name.
    pub fn prompt_for(&self, label: &str) -> String {
        self.template.replace("{class}", label)
    }

    /// The most probable class of one image and its probability.
    ///
    /// # Shapes
    /// `image`: the classifier's per-sample input shape (e.g. `(1, 28, 28)`), or that with a
    /// leading batch axis of 1.
    ///
    /// # Errors
    /// [`Error::Shape`] for an image of another shape.
    pub fn classify(&mut self, image: &Tensor) -> Result<(usize, f32)> {
        let want = self.cnn.input_shape().to_vec();
        let batch = if image.shape() == want.as_slice() {
            image.clone().insert_axis(ndarray::Axis(0))
        } else if image.ndim() == want.len() + 1
            && image.shape()[0] == 1
            && image.shape()[1..] == want[..]
        {
            image.clone()
        } else {
            return Err(Error::shape(
                "Describer image",
                format!("one image of shape {want:?} (optionally with a batch axis of 1)"),
                image.shape(),
            ));
        };
        let probs = self.cnn.predict(&batch)?;
        let row: Vec<f32> = probs.iter().copied().collect();
        let class = crate::generate::processors::argmax(&row);
        Ok((class, row[class]))
    }

    /// Classifies `image`, builds the prompt from the class name and generates its
    /// continuation (the first of the returned sequences).
    ///
    /// # Errors
    /// As [`Describer::classify`]; [`Error::Label`] when the tokenizer cannot encode the prompt;
    /// the generation errors of [`Gpt::generate`].
    pub fn describe(&mut self, image: &Tensor, cfg: &GenerateConfig) -> Result<Description> {
        let (class, probability) = self.classify(image)?;
        let label = self.class_names[class].clone();
        let prompt = self.prompt_for(&label);
        let ids = self.tokenizer.encode(&prompt)?;
        let out = self.gpt.generate(&ids, cfg)?;
        let text = self.tokenizer.decode(&out[0])?;
        Ok(Description {
            class,
            label,
            probability,
            prompt,
            text,
        })
    }

    /// The classifier, the GPT and the tokenizer back.
    pub fn into_parts(self) -> (Sequential, Gpt, T) {
        (self.cnn, self.gpt, self.tokenizer)
    }
}
