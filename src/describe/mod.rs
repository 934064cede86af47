//! [`Describer`]: an image classifier and a language model working together — the classifier
//! recognises what is in an image, the language model writes about it from a prompt built from
//! the most probable classes.
//!
//! - [`ImageClassifier`]: one image → a probability per named class; implemented by
//!   [`SequentialClassifier`] (any [`crate::Sequential`] with its class names) and by
//!   [`crate::vision::EfficientNetLite`] (decoded photos, the ImageNet names).
//! - [`LanguageModel`]: a prompt → text; implemented by [`CausalLm`] for
//!   [`crate::transformer::Gpt`] with any tokenizer (a char-level GPT, GPT-2) and
//!   [`crate::transformer::Llama`] with its chat template (SmolLM2-Instruct).
//! - [`PromptTemplate`]: `{class}`, `{probability}`, `{classes}`, `{names}`.
//! - [`html_page`]: the photos, their top classes as bars and the texts in one HTML file.
//!
//! ```no_run
//! use handgrad::describe::{CausalLm, Describer};
//! use handgrad::generate::GenerateConfig;
//! use handgrad::vision::{self, EfficientNetLite};
//!
//! let state = handgrad::io::torch::load_state_dict("efficientnet-lite0-57934424.pth")?;
//! let net = EfficientNetLite::lite0_from_state_dict(&state)?;
//! let lm = CausalLm::from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")?;   // with its chat template
//! let mut describer = Describer::new(net, lm)?.top_k_classes(3)?;
//! let d = describer.describe(&vision::load_rgb("photo.jpg")?,
//!                            &GenerateConfig::new().max_new_tokens(60))?;
//! println!("{} ({:.0} %): {}", d.best().name, 100.0 * d.best().probability, d.text);
//! # Ok::<(), handgrad::Error>(())
//! ```

mod classifier;
mod language;
mod page;
mod template;

pub use classifier::{top_classes, ClassScore, ImageClassifier, SequentialClassifier};
pub use language::{CausalLm, LanguageModel, TextSink, CHAT_TEMPLATE, COMPLETION_TEMPLATE};
pub use page::{base64, html_page, PageEntry};
pub use template::{percent, PromptTemplate, PLACEHOLDERS};

use crate::error::{Error, Result};
use crate::generate::GenerateConfig;

/// What [`Describer::describe`] saw and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The most probable classes, best first ([`Describer::top_k_classes`] of them): the ones
    /// the prompt was built from.
    pub classes: Vec<ClassScore>,
    /// The probability of every class, indexed by class.
    pub probabilities: Vec<f32>,
    /// The filled prompt template (the user message of a chat model).
    pub message: String,
    /// The prompt the language model saw: the message, rendered by the chat template if the
    /// model has one.
    pub prompt: String,
    /// What the model wrote: for a completion model the prompt followed by its continuation,
    /// for a chat model the reply alone.
    pub text: String,
}

impl Description {
    /// The most probable class.
    pub fn best(&self) -> &ClassScore {
        // a Description is only built from a non-empty ranking
        &self.classes[0]
    }
}

/// Classifies an image, fills a [`PromptTemplate`] with the top classes, and lets a language
/// model write from it. Generic over the two sides: any [`ImageClassifier`] with any
/// [`LanguageModel`].
///
/// Defaults: the language model's template ([`COMPLETION_TEMPLATE`] `"This is a picture of a
/// {class}."`, or [`CHAT_TEMPLATE`] for a chat model), 3 top classes.
///
/// ```
/// use handgrad::prelude::*;
/// use handgrad::describe::{CausalLm, Describer, SequentialClassifier};
/// use handgrad::generate::GenerateConfig;
/// use handgrad::tokenizer::CharTokenizer;
/// use handgrad::transformer::{Gpt, GptConfig};
///
/// let cnn = Sequential::new(&[1, 2, 2]).add(handgrad::layers::Flatten::new())
///     .add(Dense::new(2).softmax()).build(&mut handgrad::init::rng(0))?;
/// let tok = CharTokenizer::from_text("a cat or dog.");
/// let gpt = Gpt::new(GptConfig::tiny(tok.vocab_size()), &mut handgrad::init::rng(1))?;
/// let mut d = Describer::new(SequentialClassifier::new(cnn, &["cat", "dog"])?, CausalLm::new(gpt, tok)?)?
///     .template("a {class}")?;
/// let out = d.describe(&Tensor::zeros(ndarray::IxDyn(&[1, 2, 2])), &GenerateConfig::new().max_new_tokens(5))?;
/// assert_eq!(out.prompt, format!("a {}", out.best().name));
/// assert!(out.text.starts_with(&out.prompt));
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug)]
pub struct Describer<C, L> {
    classifier: C,
    lm: L,
    template: PromptTemplate,
    top_k: usize,
}

impl<C: ImageClassifier, L: LanguageModel> Describer<C, L> {
    /// Pairs a classifier with a language model, with the model's default template.
    ///
    /// # Errors
    /// [`Error::Config`] when the model's default template does not parse.
    pub fn new(classifier: C, lm: L) -> Result<Self> {
        let template = PromptTemplate::new(lm.default_template())?;
        Ok(Describer {
            classifier,
            lm,
            template,
            top_k: 3,
        })
    }

    /// Sets the prompt template (see [`PromptTemplate`] for the placeholders).
    ///
    /// # Errors
    /// As [`PromptTemplate::new`]: an unknown placeholder, an unclosed `{`, a lone `}`.
    pub fn template(mut self, template: &str) -> Result<Self> {
        self.template = PromptTemplate::new(template)?;
        Ok(self)
    }

    /// How many of the most probable classes fill the prompt (default 3; all of them if the
    /// classifier has fewer).
    ///
    /// # Errors
    /// [`Error::Config`] for 0.
    pub fn top_k_classes(mut self, k: usize) -> Result<Self> {
        if k == 0 {
            return Err(Error::config("Describer", "top_k_classes", k, "at least 1"));
        }
        self.top_k = k;
        Ok(self)
    }

    /// The prompt template.
    pub fn prompt_template(&self) -> &PromptTemplate {
        &self.template
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The classifier, mutably.
    pub fn classifier_mut(&mut self) -> &mut C {
        &mut self.classifier
    }

    /// The language model.
    pub fn language_model(&self) -> &L {
        &self.lm
    }

    /// The language model, mutably.
    pub fn language_model_mut(&mut self) -> &mut L {
        &mut self.lm
    }

    /// The classifier and the language model back.
    pub fn into_parts(self) -> (C, L) {
        (self.classifier, self.lm)
    }

    /// The probability of every class for one image.
    ///
    /// # Shapes
    /// `image → [K]`, `K` = the number of class names.
    ///
    /// # Errors
    /// The classifier's errors; [`Error::Shape`] when it returns a number of probabilities
    /// other than its number of class names, or none.
    pub fn classify(&mut self, image: &C::Image) -> Result<Vec<f32>> {
        let probs = self.classifier.probabilities(image)?;
        let n = self.classifier.class_names().len();
        if probs.len() != n || n == 0 {
            return Err(Error::shape(
                "Describer: classifier output",
                format!("one probability per class name ({n} names, at least 1)"),
                &[probs.len()],
            ));
        }
        Ok(probs)
    }

    /// The filled template for the top classes of `probabilities` (what
    /// [`Description::message`] holds).
    ///
    /// # Errors
    /// As [`top_classes`] (one probability per class name) and [`PromptTemplate::render`].
    pub fn message_for(&self, probabilities: &[f32]) -> Result<String> {
        let top = top_classes(probabilities, &self.classifier.class_names(), self.top_k)?;
        self.template.render(&top)
    }

    /// Classifies `image`, builds the prompt from the top classes and lets the language model
    /// write (all of `cfg` passes through; the first returned sequence is kept).
    ///
    /// # Errors
    /// As [`Describer::classify`] and [`LanguageModel::write`].
    pub fn describe(&mut self, image: &C::Image, cfg: &GenerateConfig) -> Result<Description> {
        let probs = self.classify(image)?;
        self.describe_probabilities(probs, cfg, None)
    }

    /// [`Describer::describe`] that passes the new text to `on_text` piece by piece as it is
    /// generated.
    ///
    /// # Errors
    /// As [`Describer::describe`]; an `Err` from `on_text` stops generation and is returned;
    /// beam search (`num_beams > 1`) is not streamed ([`Error::Config`]).
    pub fn describe_streaming(
        &mut self,
        image: &C::Image,
        cfg: &GenerateConfig,
        on_text: &mut TextSink<'_>,
    ) -> Result<Description> {
        let probs = self.classify(image)?;
        self.describe_probabilities(probs, cfg, Some(on_text))
    }

    /// The second half of [`Describer::describe`]: writes from class probabilities already
    /// computed by [`Describer::classify`] (e.g. to show them before the text is generated),
    /// streaming the new text to `on_text` if given.
    ///
    /// # Shapes
    /// `probabilities: [K]`, one per class name.
    ///
    /// # Errors
    /// [`Error::Shape`] for another number of probabilities; as [`LanguageModel::write`].
    pub fn describe_probabilities(
        &mut self,
        probabilities: Vec<f32>,
        cfg: &GenerateConfig,
        on_text: Option<&mut TextSink<'_>>,
    ) -> Result<Description> {
        let names = self.classifier.class_names();
        let classes = top_classes(&probabilities, &names, self.top_k)?;
        if classes.is_empty() {
            return Err(Error::shape(
                "Describer::describe_probabilities",
                "at least one class",
                &[0],
            ));
        }
        let message = self.template.render(&classes)?;
        let prompt = self.lm.render_prompt(&message)?;
        let text = self.lm.write(&prompt, cfg, on_text)?;
        Ok(Description {
            classes,
            probabilities,
            message,
            prompt,
            text,
        })
    }
}
