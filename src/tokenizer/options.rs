//! [`BpeOptions`] (special ids and settings of a tokenizer) and [`EncodeOptions`] (how one call
//! treats special tokens).

use super::pretokenize::Pretokenizer;

/// The special-token ids and encoding settings of a [`BpeTokenizer`](super::BpeTokenizer).
///
/// Defaults: GPT-2's pattern, no special ids, nothing added, merges always applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpeOptions {
    /// How text is split before BPE (default [`Pretokenizer::Gpt2`]).
    pub pretokenizer: Pretokenizer,
    /// Beginning-of-sequence id (HF `bos_token`, GGUF `tokenizer.ggml.bos_token_id`).
    pub bos_token_id: Option<usize>,
    /// End-of-sequence id (HF `eos_token`, GGUF `tokenizer.ggml.eos_token_id`).
    pub eos_token_id: Option<usize>,
    /// Padding id (HF `pad_token`, GGUF `tokenizer.ggml.padding_token_id`).
    pub pad_token_id: Option<usize>,
    /// Unknown-token id (HF `unk_token`, GGUF `tokenizer.ggml.unknown_token_id`); byte-level BPE
    /// never produces it.
    pub unk_token_id: Option<usize>,
    /// Prepend BOS when special tokens are added (HF `add_bos_token`, GGUF
    /// `tokenizer.ggml.add_bos_token`; default false).
    pub add_bos_token: bool,
    /// Append EOS when special tokens are added (HF `add_eos_token`; default false).
    pub add_eos_token: bool,
    /// A piece that is itself a vocab token is taken whole, without merging (HF BPE
    /// `ignore_merges`, set by Llama 3; default false).
    pub ignore_merges: bool,
}

/// How [`BpeTokenizer::encode_with`](super::BpeTokenizer::encode_with) treats special tokens.
///
/// Default: both true, as HF `tokenizer.encode(text)` (and
/// [`Tokenizer::encode`](super::Tokenizer::encode)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Match special-token spellings (`<|im_start|>`) in the text as their ids (llama.cpp
    /// `parse_special`; HF `split_special_tokens=False`). If false they are encoded as plain
    /// text; non-special added tokens are matched either way. Default true.
    pub parse_special: bool,
    /// Add BOS / EOS as the tokenizer's `add_bos_token` / `add_eos_token` say (HF
    /// `add_special_tokens`, llama.cpp `add_special`). Default true.
    pub add_special_tokens: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            parse_special: true,
            add_special_tokens: true,
        }
    }
}
