//! [`LanguageModel`]: the writing side of a [`super::Describer`]; [`CausalLm`] implements it for
//! any causal LM of the crate ([`crate::transformer::Gpt`], [`Llama`]) with any tokenizer, and an
//! optional chat template.

use crate::error::{Error, Result};
use crate::generate::{generate, generate_streaming, GenerateConfig};
use crate::io::GgufFile;
use crate::tokenizer::{BpeTokenizer, ChatTemplate, Message, Tokenizer};
use crate::transformer::{CachedLm, Llama, LmDecoder};
use std::path::Path;

/// The callback that receives generated text piece by piece as it is decoded (streaming):
/// `&mut |piece: &str| -> Result<()> { ... }`. An `Err` it returns stops generation and is
/// returned by the call that streams.
pub type TextSink<'a> = dyn FnMut(&str) -> Result<()> + 'a;

/// The default template of a completion model: the text it continues.
pub const COMPLETION_TEMPLATE: &str = "This is a picture of a {class}.";

/// The default template of a chat model: the user message it answers. It names the most
/// probable class as the subject and gives the classifier's top guesses with their
/// probabilities as context (SmolLM2-135M-Instruct then writes about the first class).
pub const CHAT_TEMPLATE: &str = "Write a caption of one or two sentences for a photo of a \
{class}. (An image classifier's guesses: {classes}.)";

/// A language model that writes from a prompt, as a [`super::Describer`] drives it.
pub trait LanguageModel {
    /// The prompt template to use when none is set ([`super::PromptTemplate`] syntax).
    fn default_template(&self) -> &str;

    /// The prompt the model sees for a message: the message itself for a completion model,
    /// the rendered chat (with the opening of the assistant's turn) for a chat model.
    ///
    /// # Errors
    /// The chat template's rendering errors.
    fn render_prompt(&self, message: &str) -> Result<String>;

    /// Generates from a rendered prompt and returns the text: for a completion model the
    /// prompt followed by its continuation (as Hugging Face's text-generation pipeline
    /// returns it), for a chat model the reply alone. With `on_text`, the new text is passed
    /// to it piece by piece as it is generated (the prompt is not). Of several returned
    /// sequences the first is used.
    ///
    /// # Errors
    /// The tokenizer's and the generation's errors; an `Err` from `on_text` stops generation
    /// and is returned; beam search cannot be streamed.
    fn write(
        &mut self,
        prompt: &str,
        cfg: &GenerateConfig,
        on_text: Option<&mut TextSink<'_>>,
    ) -> Result<String>;
}

/// A causal language model with its tokenizer and, for an instruct model, its chat template:
/// [`crate::transformer::Gpt`] + any [`Tokenizer`] (a char-level GPT, GPT-2), or [`Llama`] +
/// [`BpeTokenizer`] + [`ChatTemplate`] (SmolLM2-Instruct). Generation goes through the
/// model's KV cache ([`LmDecoder`]) with every [`GenerateConfig`] option.
///
/// ```
/// use handgrad::describe::{CausalLm, LanguageModel};
/// use handgrad::generate::GenerateConfig;
/// use handgrad::tokenizer::{CharTokenizer, Tokenizer};
/// use handgrad::transformer::{Gpt, GptConfig};
/// let tok = CharTokenizer::from_text("abc .");
/// let gpt = Gpt::new(GptConfig::tiny(tok.vocab_size()), &mut handgrad::init::rng(0))?;
/// let mut lm = CausalLm::new(gpt, tok)?;
/// let text = lm.write("a b", &GenerateConfig::new().max_new_tokens(4), None)?;
/// assert!(text.starts_with("a b") && text.chars().count() == 7);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug)]
pub struct CausalLm<M, T> {
    model: M,
    tokenizer: T,
    chat: Option<ChatTemplate>,
    system: Option<String>,
    stop: Vec<usize>,
}

impl<M: CachedLm, T: Tokenizer> CausalLm<M, T> {
    /// A completion model: it continues the prompt.
    ///
    /// # Errors
    /// [`Error::Config`] when the tokenizer's vocabulary size is not the model's.
    pub fn new(model: M, tokenizer: T) -> Result<Self> {
        if tokenizer.vocab_size() != model.vocab_size() {
            return Err(Error::config(
                "CausalLm::new",
                "tokenizer vocab_size",
                tokenizer.vocab_size(),
                format!("the model's vocab_size {}", model.vocab_size()),
            ));
        }
        Ok(CausalLm {
            model,
            tokenizer,
            chat: None,
            system: None,
            stop: Vec::new(),
        })
    }

    /// Adds tokens that end generation (added to the config's `eos_token_id`).
    pub fn with_stop_tokens(mut self, ids: &[usize]) -> Self {
        for &id in ids {
            if !self.stop.contains(&id) {
                self.stop.push(id);
            }
        }
        self
    }

    /// A system message for the chat template (ignored without one; default: none, so the
    /// template's own default applies, e.g. SmolLM2's "You are a helpful AI assistant…").
    pub fn with_system_prompt(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Whether prompts are rendered with a chat template.
    pub fn is_chat(&self) -> bool {
        self.chat.is_some()
    }

    /// The chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// The tokens that end generation besides the config's.
    pub fn stop_tokens(&self) -> &[usize] {
        &self.stop
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &T {
        &self.tokenizer
    }

    /// The model and the tokenizer back.
    pub fn into_parts(self) -> (M, T) {
        (self.model, self.tokenizer)
    }
}

impl<M: CachedLm> CausalLm<M, BpeTokenizer> {
    /// A chat model: prompts are rendered by `template` (with the tokenizer's BOS / EOS), and
    /// its end-of-turn tokens and the tokenizer's EOS end generation.
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        let template = template.with_tokenizer(&self.tokenizer);
        let mut stop = template.stop_token_ids(&self.tokenizer);
        stop.extend(self.tokenizer.eos_token_id());
        self.chat = Some(template);
        self.with_stop_tokens(&stop)
    }
}

impl CausalLm<Llama, BpeTokenizer> {
    /// A Llama-family model from a GGUF file: the model, its tokenizer, and its chat template
    /// when the file has one (`tokenizer.chat_template`), with the model's EOS as a stop token.
    ///
    /// # Errors
    /// As [`Llama::from_gguf_file`], [`BpeTokenizer::from_gguf`] and [`ChatTemplate::new`].
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path.as_ref())?;
        let model = Llama::from_gguf_file(&file)?;
        let tok = BpeTokenizer::from_gguf(&file)?;
        let eos = model.config().eos_token_id.clone();
        let lm = CausalLm::new(model, tok)?.with_stop_tokens(&eos);
        Ok(match file.string("tokenizer.chat_template") {
            Ok(source) => lm.with_chat_template(ChatTemplate::new(source)?),
            Err(_) => lm,
        })
    }

    /// A Llama-family model from a Hugging Face folder: the weights, `tokenizer.json`, and the
    /// chat template when the folder has one (`chat_template.jinja` or in
    /// `tokenizer_config.json`).
    ///
    /// # Errors
    /// As [`Llama::from_pretrained`], [`BpeTokenizer::from_dir`] and [`ChatTemplate::from_dir`]
    /// (other than finding no template).
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let model = Llama::from_pretrained(dir)?;
        let tok = BpeTokenizer::from_dir(dir)?;
        let eos = model.config().eos_token_id.clone();
        let lm = CausalLm::new(model, tok)?.with_stop_tokens(&eos);
        if has_chat_template(dir)? {
            Ok(lm.with_chat_template(ChatTemplate::from_dir(dir)?))
        } else {
            Ok(lm)
        }
    }
}

/// Whether a model folder has a chat template: `chat_template.jinja`, or a
/// `tokenizer_config.json` with a `chat_template` entry.
fn has_chat_template(dir: &Path) -> Result<bool> {
    if dir.join("chat_template.jinja").is_file() {
        return Ok(true);
    }
    let config = dir.join("tokenizer_config.json");
    if !config.is_file() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&config).map_err(|source| Error::Io {
        path: config.clone(),
        source,
    })?;
    let root: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(config.display().to_string(), format!("invalid JSON: {e}")))?;
    Ok(root.get("chat_template").is_some())
}

impl<M: CachedLm, T: Tokenizer> LanguageModel for CausalLm<M, T> {
    /// [`CHAT_TEMPLATE`] with a chat template, [`COMPLETION_TEMPLATE`] without.
    fn default_template(&self) -> &str {
        if self.is_chat() {
            CHAT_TEMPLATE
        } else {
            COMPLETION_TEMPLATE
        }
    }

    fn render_prompt(&self, message: &str) -> Result<String> {
        let Some(chat) = &self.chat else {
            return Ok(message.to_string());
        };
        let mut messages: Vec<Message> = self.system.iter().map(Message::system).collect();
        messages.push(Message::user(message));
        chat.render(&messages, true)
    }

    /// # Errors
    /// [`Error::Shape`] for a prompt longer than the model's context; as
    /// [`crate::generate::generate`] (or [`generate_streaming`] with `on_text`).
    fn write(
        &mut self,
        prompt: &str,
        cfg: &GenerateConfig,
        on_text: Option<&mut TextSink<'_>>,
    ) -> Result<String> {
        let CausalLm {
            model,
            tokenizer,
            chat,
            stop,
            ..
        } = self;
        let ids = tokenizer.encode(prompt)?;
        if ids.len() > model.context_len() {
            return Err(Error::shape(
                "CausalLm::write",
                format!(
                    "a prompt of at most the model's {} context tokens",
                    model.context_len()
                ),
                &[ids.len()],
            ));
        }
        let mut cfg = cfg.clone();
        for &id in stop.iter() {
            if !cfg.eos_token_id.contains(&id) {
                cfg.eos_token_id.push(id);
            }
        }
        let ends = cfg.eos_token_id.clone();
        let mut decoder = LmDecoder::new(model, true);
        let out = match on_text {
            None => generate(&mut decoder, &ids, &cfg)?,
            Some(on_text) => {
                let mut stream = TextStream::default();
                let out = generate_streaming(&mut decoder, &ids, &cfg, &mut |row, id| {
                    if row != 0 || ends.contains(&id) {
                        return Ok(());
                    }
                    let piece = stream.push(tokenizer, id)?;
                    if piece.is_empty() {
                        Ok(())
                    } else {
                        on_text(&piece)
                    }
                })?;
                let rest = stream.finish(tokenizer)?;
                if !rest.is_empty() {
                    on_text(&rest)?;
                }
                out
            }
        };
        let mut new = out[0][ids.len()..].to_vec();
        if new.last().is_some_and(|id| ends.contains(id)) {
            new.pop();
        }
        let text = tokenizer.decode(&new)?;
        Ok(if chat.is_some() {
            text
        } else {
            format!("{prompt}{text}")
        })
    }
}

/// Generated ids → the text that has become final, for any [`Tokenizer`]: the decoding of all
/// the new ids so far, without a trailing U+FFFD (a multi-byte char still incomplete), emitted
/// as it grows. For byte-level BPE and char tokenizers the pieces concatenate to the decoding
/// of all the ids.
#[derive(Debug, Default)]
struct TextStream {
    ids: Vec<usize>,
    emitted: String,
}

impl TextStream {
    fn push<T: Tokenizer>(&mut self, tok: &T, id: usize) -> Result<String> {
        self.ids.push(id);
        let full = tok.decode(&self.ids)?;
        let stable = full.trim_end_matches(char::REPLACEMENT_CHARACTER);
        Ok(self.advance(stable))
    }

    fn finish<T: Tokenizer>(&mut self, tok: &T) -> Result<String> {
        let full = tok.decode(&self.ids)?;
        Ok(self.advance(&full))
    }

    /// The part of `text` beyond what was emitted, if `text` extends it.
    fn advance(&mut self, text: &str) -> String {
        if text.len() > self.emitted.len() && text.starts_with(self.emitted.as_str()) {
            let piece = text[self.emitted.len()..].to_string();
            self.emitted.push_str(&piece);
            piece
        } else {
            String::new()
        }
    }
}
