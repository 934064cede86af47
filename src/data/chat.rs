//! [`ChatDataset`]: conversations for supervised chat fine-tuning, rendered with the model's
//! chat template, with the loss on the assistant's tokens only.

use crate::error::{Error, Result};
use crate::init::Rng;
use crate::tokenizer::{BpeTokenizer, ChatTemplate, EncodeOptions, Message};
use crate::transformer::{LmBatches, IGNORE_INDEX};
use ndarray::Array2;
use rand::Rng as _;
use std::path::Path;

/// The longest sequence a [`ChatDataset`] pads to (far beyond any Llama context; a bound on the
/// `(conversations × seq_len)` allocation).
pub(crate) const MAX_SEQ_LEN: usize = 1 << 20;

/// One conversation of a JSON-lines file: `{"messages": [{"role": .., "content": ..}, ..]}`
/// (other keys are ignored, as TRL's `SFTTrainer` does).
#[derive(Debug, serde::Deserialize)]
struct Line {
    messages: Vec<Message>,
}

/// Tokenised conversations for chat fine-tuning (TRL `SFTTrainer` with `assistant_only_loss`):
///
/// - each conversation is rendered with the [`ChatTemplate`] and encoded without adding special
///   tokens (the template writes them, as `apply_chat_template(tokenize=True)`);
/// - the loss is on the assistant turns only: the tokens of each assistant message after its
///   header (for ChatML: the content, `<|im_end|>` and the newline after it), found by
///   rendering the conversation prefix by prefix; every other target is [`IGNORE_INDEX`];
/// - sequences longer than `seq_len` are truncated; shorter ones are padded to `seq_len` with
///   the tokenizer's pad id (else its EOS, else 0) as input and [`IGNORE_INDEX`] as target, so
///   padding never enters the loss and (causal attention) never changes the real tokens'
///   logits.
///
/// Inputs and targets are next-token pairs: `targets[t]` is `ids[t + 1]` where that token is
/// an assistant token, else [`IGNORE_INDEX`].
#[derive(Debug, Clone)]
pub struct ChatDataset {
    /// `(ids, targets)` per conversation, each `seq_len` long (padded).
    rows: Vec<(Vec<usize>, Vec<usize>)>,
    seq_len: usize,
}

impl ChatDataset {
    /// Tokenises `conversations`; `source` names them in errors.
    ///
    /// # Errors
    /// [`Error::Config`] for `seq_len` outside `1..=2²⁰` or no conversation; [`Error::Format`]
    /// naming the conversation when the template fails, renders a prefix inconsistently (a template that
    /// rewrites earlier turns), or no assistant token falls within `seq_len`.
    pub fn new(
        conversations: &[Vec<Message>],
        template: &ChatTemplate,
        tokenizer: &BpeTokenizer,
        seq_len: usize,
        source: &str,
    ) -> Result<Self> {
        if seq_len == 0 || seq_len > MAX_SEQ_LEN {
            return Err(Error::config(
                "ChatDataset",
                "seq_len",
                seq_len,
                format!("in 1..={MAX_SEQ_LEN}"),
            ));
        }
        if conversations.is_empty() {
            return Err(Error::config(
                "ChatDataset",
                "conversations",
                "none",
                format!("at least one conversation in {source}"),
            ));
        }
        let pad = tokenizer
            .pad_token_id()
            .or(tokenizer.eos_token_id())
            .unwrap_or(0);
        let mut rows = Vec::with_capacity(conversations.len());
        for (i, conv) in conversations.iter().enumerate() {
            let what = format!("{source}: conversation {}", i + 1);
            let (ids, mask) = encode_conversation(conv, template, tokenizer, &what)?;
            let n = ids.len().min(seq_len);
            let mut x = vec![pad; seq_len];
            let mut y = vec![IGNORE_INDEX; seq_len];
            x[..n].copy_from_slice(&ids[..n]);
            for t in 0..n {
                if t + 1 < ids.len() && mask[t + 1] {
                    y[t] = ids[t + 1];
                }
            }
            if y.iter().all(|&t| t == IGNORE_INDEX) {
                return Err(Error::format(
                    what,
                    format!(
                        "no assistant token within the first {seq_len} tokens (of {}): nothing \
                         to learn from; raise seq_len or drop it",
                        ids.len()
                    ),
                ));
            }
            rows.push((x, y));
        }
        Ok(ChatDataset { rows, seq_len })
    }

    /// Parses JSON lines (one conversation per non-empty line, see [`ChatDataset`]) and
    /// tokenises them; `source` names the text in errors.
    ///
    /// # Errors
    /// [`Error::Format`] naming the line of malformed JSON or a line without `messages`; as
    /// [`ChatDataset::new`] otherwise.
    pub fn from_jsonl(
        text: &str,
        template: &ChatTemplate,
        tokenizer: &BpeTokenizer,
        seq_len: usize,
        source: &str,
    ) -> Result<Self> {
        let mut convs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(line).map_err(|e| {
                Error::format(
                    format!("{source}:{}", n + 1),
                    format!("expected {{\"messages\": [{{\"role\": .., \"content\": ..}}]}}: {e}"),
                )
            })?;
            convs.push(parsed.messages);
        }
        Self::new(&convs, template, tokenizer, seq_len, source)
    }

    /// [`ChatDataset::from_jsonl`] on a file.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path; as [`ChatDataset::from_jsonl`].
    pub fn from_jsonl_file(
        path: impl AsRef<Path>,
        template: &ChatTemplate,
        tokenizer: &BpeTokenizer,
        seq_len: usize,
    ) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_jsonl(
            &text,
            template,
            tokenizer,
            seq_len,
            &path.display().to_string(),
        )
    }

    /// The number of conversations.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no conversations (never, for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Conversation `i` as `(ids, targets)`, `seq_len` each.
    ///
    /// # Panics
    /// When `i ≥ len()`.
    pub fn example(&self, i: usize) -> (&[usize], &[usize]) {
        let (x, y) = &self.rows[i];
        (x, y)
    }

    /// The conversations at `indices` as `(inputs, targets)`, each `(indices.len(), T)`.
    ///
    /// # Panics
    /// When an index is `≥ len()`.
    pub fn batch_at(&self, indices: &[usize]) -> (Array2<usize>, Array2<usize>) {
        let t = self.seq_len;
        let mut x = Array2::zeros((indices.len(), t));
        let mut y = Array2::zeros((indices.len(), t));
        for (b, &i) in indices.iter().enumerate() {
            let (ids, targets) = self.example(i);
            x.row_mut(b).assign(&ndarray::ArrayView1::from(ids));
            y.row_mut(b).assign(&ndarray::ArrayView1::from(targets));
        }
        (x, y)
    }
}

impl LmBatches for ChatDataset {
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// `batch_size` conversations drawn uniformly with replacement.
    fn sample_batch(&self, batch_size: usize, rng: &mut Rng) -> (Array2<usize>, Array2<usize>) {
        let idx: Vec<usize> = (0..batch_size)
            .map(|_| rng.random_range(0..self.rows.len()))
            .collect();
        self.batch_at(&idx)
    }

    fn max_token_id(&self) -> Option<(usize, String)> {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(c, (ids, _))| ids.iter().max().map(|&m| (m, c)))
            .max_by_key(|&(m, c)| (m, std::cmp::Reverse(c)))
            .map(|(m, c)| (m, format!("conversation {c}")))
    }

    /// The first `max_rows` conversations in order.
    fn eval_batches(
        &self,
        max_rows: usize,
        batch_size: usize,
    ) -> Vec<(Array2<usize>, Array2<usize>)> {
        let idx: Vec<usize> = (0..self.rows.len().min(max_rows)).collect();
        idx.chunks(batch_size.max(1))
            .map(|c| self.batch_at(c))
            .collect()
    }
}

/// The ids of one rendered conversation and, per id, whether it belongs to an assistant turn.
fn encode_conversation(
    conv: &[Message],
    template: &ChatTemplate,
    tok: &BpeTokenizer,
    what: &str,
) -> Result<(Vec<usize>, Vec<bool>)> {
    let opts = EncodeOptions {
        parse_special: true,
        add_special_tokens: false,
    };
    let render = |msgs: &[Message], add_generation_prompt: bool| {
        template
            .render(msgs, add_generation_prompt)
            .map_err(|e| Error::format(what, format!("chat template: {e}")))
    };
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut done = String::new(); // the text encoded so far
    let push =
        |piece: &str, train: bool, ids: &mut Vec<usize>, mask: &mut Vec<bool>| -> Result<()> {
            let enc = tok.encode_with(piece, opts)?;
            mask.extend(std::iter::repeat_n(train, enc.len()));
            ids.extend(enc);
            Ok(())
        };
    let inconsistent = |i: usize| {
        Error::format(
            what,
            format!(
                "the chat template renders message {} inconsistently with the conversation \
                 before it (each prefix must render as a prefix)",
                i + 1
            ),
        )
    };
    for (i, m) in conv.iter().enumerate() {
        let full = render(&conv[..=i], false)?;
        if m.role == "assistant" {
            // the assistant header is what add_generation_prompt appends to the prefix
            let head = render(&conv[..i], true)?;
            let (Some(h), Some(body)) = (
                head.strip_prefix(done.as_str()),
                full.strip_prefix(head.as_str()),
            ) else {
                return Err(inconsistent(i));
            };
            push(h, false, &mut ids, &mut mask)?;
            push(body, true, &mut ids, &mut mask)?;
        } else {
            let Some(piece) = full.strip_prefix(done.as_str()) else {
                return Err(inconsistent(i));
            };
            push(piece, false, &mut ids, &mut mask)?;
        }
        done = full;
    }
    Ok((ids, mask))
}
