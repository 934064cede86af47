//! Chat templates: [`Message`]s rendered into the prompt a chat model was trained on, by the
//! model's own Jinja template (GGUF `tokenizer.chat_template`, Hugging Face `chat_template.jinja`
//! or `tokenizer_config.json`'s `chat_template`), as `transformers`' `apply_chat_template` does.

use super::bpe_tokenizer::BpeTokenizer;
use super::gpt2::read;
use crate::error::{Error, Result};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The template name inside the engine (it appears in engine messages).
const NAME: &str = "chat_template";

/// Engine instructions one render may take: far above any real template, and a bound on
/// runaway loops in a hostile one.
const FUEL: u64 = 50_000_000;

/// End-of-turn markers that, when a template writes them, are where generation should stop.
const TURN_ENDS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|eom_id|>",
];

/// SmolLM2-Instruct's template (ChatML with a default system prompt), as its GGUF stores it.
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Plain ChatML (no default system prompt), the template of Hugging Face's chat docs.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One chat turn: a `role` (`"system"`, `"user"`, `"assistant"`, or whatever the template
/// knows) and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks: `"system"`, `"user"`, `"assistant"`.
    pub role: String,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A chat template: Jinja source rendered with the `minijinja` engine under the settings
/// `transformers` uses (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
/// Python string methods such as `.strip()`), with the variables `messages`,
/// `add_generation_prompt`, `bos_token`, `eos_token`, `tools` and `documents` (none).
/// Undefined variables may be tested (`{% if x is defined %}`, `{% if x %}`) but not printed:
/// printing one is an error, not empty text.
///
/// Cloning is cheap (the parsed template is shared).
///
/// # Example
///
/// ```
/// use handgrad::tokenizer::{ChatTemplate, Message};
///
/// let t = ChatTemplate::chatml();
/// let prompt = t.render(&[Message::system("Be brief."), Message::user("Hi!")], true)?;
/// assert_eq!(prompt, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
/// assert_eq!(t.stop_strings(), ["<|im_end|>"]);
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    bos_token: String,
    eos_token: String,
    stop: Vec<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_chars", &self.source.chars().count())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("stop", &self.stop)
            .finish()
    }
}

/// An engine error as an [`Error::Format`] naming the template.
fn engine_error(what: &str, e: &minijinja::Error) -> Error {
    Error::format("chat template", format!("{what}: {e}"))
}

impl ChatTemplate {
    /// Parses a template (Jinja source). BOS and EOS are empty until
    /// [`ChatTemplate::with_special_tokens`]; the stop strings are the end-of-turn markers the
    /// source writes (`<|im_end|>`, `<|eot_id|>`, `<|end|>`, `<end_of_turn>`, `<|eom_id|>`).
    ///
    /// # Errors
    /// [`Error::Format`] with the engine's message (kind, detail and line) if the source does not
    /// parse.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source: String = source.into();
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(syntax.build().map_err(|e| engine_error("syntax", &e))?);
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("the template raised an exception: {message}"),
                ))
            },
        );
        env.add_template_owned(NAME, source.clone())
            .map_err(|e| engine_error("cannot parse", &e))?;
        let stop = TURN_ENDS
            .iter()
            .filter(|m| source.contains(**m))
            .map(|m| m.to_string())
            .collect();
        Ok(Self {
            env: Arc::new(env),
            source: source.into(),
            bos_token: String::new(),
            eos_token: String::new(),
            stop,
        })
    }

    /// SmolLM2-Instruct's template: ChatML, with the default system prompt "You are a helpful AI
    /// assistant named SmolLM, trained by Hugging Face" when the first message is not a system
    /// message; BOS `<|im_start|>`, EOS `<|im_end|>`.
    pub fn smollm2() -> Self {
        Self::builtin(SMOLLM2).with_special_tokens("<|im_start|>", "<|im_end|>")
    }

    /// Plain ChatML (`<|im_start|>role\ncontent<|im_end|>\n` per message, no default system
    /// prompt); BOS `<|im_start|>`, EOS `<|im_end|>`.
    pub fn chatml() -> Self {
        Self::builtin(CHATML).with_special_tokens("<|im_start|>", "<|im_end|>")
    }

    fn builtin(source: &str) -> Self {
        match Self::new(source) {
            Ok(t) => t,
            Err(e) => unreachable!("the built-in template parses: {e}"),
        }
    }

    /// The template of a `tokenizer_config.json` (its text): `chat_template` as a string, or as
    /// a list of `{name, template}` (the one named `default`), with its `bos_token` /
    /// `eos_token`.
    ///
    /// # Errors
    /// [`Error::Format`] naming `tokenizer_config.json` for invalid JSON or no `chat_template`;
    /// as [`ChatTemplate::new`] for a template that does not parse.
    pub fn from_tokenizer_config(json: &str) -> Result<Self> {
        let bad = |m: String| Error::format("tokenizer_config.json", m);
        let root: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let source = match root.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .ok_or_else(|| bad("chat_template is a list without a \"default\" entry".into()))?
                .to_string(),
            _ => return Err(bad("no \"chat_template\" string".into())),
        };
        let name = |key: &str| {
            let v = root.get(key)?;
            v.as_str()
                .or_else(|| v.get("content")?.as_str())
                .map(str::to_string)
        };
        let (bos, eos) = (name("bos_token"), name("eos_token"));
        Ok(Self::new(source)?
            .with_special_tokens(bos.as_deref().unwrap_or(""), eos.as_deref().unwrap_or("")))
    }

    /// The template of a model folder: `chat_template.jinja` (transformers 5) if present, else
    /// `tokenizer_config.json`'s `chat_template`; BOS / EOS from `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] naming an unreadable file or, if neither file has a template, the folder;
    /// otherwise as [`ChatTemplate::from_tokenizer_config`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (jinja, config) = (
            dir.join("chat_template.jinja"),
            dir.join("tokenizer_config.json"),
        );
        let config_text = if config.is_file() {
            Some(read(&config)?)
        } else {
            None
        };
        if jinja.is_file() {
            let mut t = Self::new(read(&jinja)?)?;
            if let Some(text) = &config_text {
                let root: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    Error::format(config.display().to_string(), format!("invalid JSON: {e}"))
                })?;
                let name = |key: &str| {
                    let v = root.get(key)?;
                    v.as_str()
                        .or_else(|| v.get("content")?.as_str())
                        .map(str::to_string)
                };
                t = t.with_special_tokens(
                    name("bos_token").as_deref().unwrap_or(""),
                    name("eos_token").as_deref().unwrap_or(""),
                );
            }
            return Ok(t);
        }
        match config_text {
            Some(text) => Self::from_tokenizer_config(&text),
            None => Err(Error::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no chat template: looked for chat_template.jinja and tokenizer_config.json",
                ),
            }),
        }
    }

    /// Sets the `bos_token` / `eos_token` variables (HF passes the tokenizer's); a non-empty EOS
    /// is also a stop string.
    pub fn with_special_tokens(mut self, bos_token: &str, eos_token: &str) -> Self {
        self.bos_token = bos_token.to_string();
        self.eos_token = eos_token.to_string();
        if !eos_token.is_empty() && !self.stop.iter().any(|s| s == eos_token) {
            self.stop.push(eos_token.to_string());
        }
        self
    }

    /// Sets BOS / EOS from a tokenizer's ids (their vocab spellings).
    pub fn with_tokenizer(self, tok: &BpeTokenizer) -> Self {
        let name = |id: Option<usize>| {
            id.and_then(|id| tok.id_to_token(id))
                .unwrap_or("")
                .to_string()
        };
        let (bos, eos) = (name(tok.bos_token_id()), name(tok.eos_token_id()));
        self.with_special_tokens(&bos, &eos)
    }

    /// Replaces the stop strings.
    pub fn with_stop_strings(mut self, stop: &[&str]) -> Self {
        self.stop = stop.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where generation should stop: the end-of-turn markers of the template, then EOS.
    pub fn stop_strings(&self) -> &[String] {
        &self.stop
    }

    /// The ids of the stop strings that are single tokens of `tok` (`[2]` for SmolLM2).
    pub fn stop_token_ids(&self, tok: &BpeTokenizer) -> Vec<usize> {
        let mut ids: Vec<usize> = self
            .stop
            .iter()
            .filter_map(|s| tok.token_to_id(s))
            .collect();
        ids.dedup();
        ids
    }

    /// Renders `messages`; `add_generation_prompt` appends the opening of an assistant turn
    /// (`<|im_start|>assistant\n` for ChatML) so that the model answers.
    ///
    /// # Errors
    /// [`Error::Format`] with the engine's message if rendering fails: an unknown filter or
    /// function, `raise_exception(...)` in the template, printing an undefined variable, a type
    /// error, or more than the fuel limit of engine instructions.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| engine_error("cannot render", &e))?;
        let ctx = minijinja::context! {
            messages => Value::from(messages.iter().map(|m| Value::from_pairs([
                ("role", Value::from(m.role.as_str())),
                ("content", Value::from(m.content.as_str())),
            ])).collect::<Vec<_>>()),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            tools => Value::from(()),
            documents => Value::from(()),
        };
        template
            .render(ctx)
            .map_err(|e| engine_error("cannot render", &e))
    }
}
