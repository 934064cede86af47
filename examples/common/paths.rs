//! Checks of the paths the examples are given, made before any work: an output folder must be
//! writable, a model path must hold a model.

#![allow(dead_code)]

use super::args::{CliError, CliResult};
use std::path::Path;

/// Creates `dir` (and its parents) and checks that a file can be written in it, so that a run
/// does not fail at its end, after the training, when it saves.
///
/// # Errors
/// A runtime error naming `flag`, the folder and the operating system's reason.
pub fn prepare_out_dir(flag: &str, dir: &Path) -> CliResult {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::failed(format!(
            "{flag} {shown}: exists and is not a folder; pass a folder to write into"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::failed(format!(
            "{flag} {shown}: cannot create this folder ({e}); pass a folder you can write to"
        ))
    })?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        CliError::failed(format!(
            "{flag} {shown}: cannot write in this folder ({e}); pass a folder you can write to"
        ))
    })?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// One part of a model folder: any one of `alternatives` (each a set of files that must all be
/// there) will do.
pub struct Part {
    /// What the part is, e.g. `"the weights"`.
    pub what: &'static str,
    /// The accepted file sets, e.g. `&[&["model.safetensors"], &["model.safetensors.index.json"]]`.
    pub alternatives: &'static [&'static [&'static str]],
}

impl Part {
    /// `"model.safetensors or model.safetensors.index.json (the weights)"`.
    fn describe(&self) -> String {
        let alts: Vec<String> = self.alternatives.iter().map(|a| a.join(" + ")).collect();
        let files = match alts.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{}, or {last}", rest.join(", ")),
            _ => alts.join(""),
        };
        format!("{files} ({})", self.what)
    }

    fn present(&self, dir: &Path) -> bool {
        self.alternatives
            .iter()
            .any(|files| files.iter().all(|f| dir.join(f).is_file()))
    }
}

/// The config of a Hugging Face model folder.
pub const CONFIG: Part = Part {
    what: "the config",
    alternatives: &[&["config.json"]],
};
/// The weights of a Hugging Face model folder (one file or shards).
pub const WEIGHTS: Part = Part {
    what: "the weights",
    alternatives: &[&["model.safetensors"], &["model.safetensors.index.json"]],
};
/// The weights of a GPT-2 folder (safetensors, or an older folder's `torch.save` file).
pub const GPT_WEIGHTS: Part = Part {
    what: "the weights",
    alternatives: &[&["model.safetensors"], &["pytorch_model.bin"]],
};
/// A byte-level BPE tokenizer (Hugging Face or OpenAI files).
pub const BPE_TOKENIZER: Part = Part {
    what: "the tokenizer",
    alternatives: &[
        &["tokenizer.json"],
        &["vocab.json", "merges.txt"],
        &["encoder.json", "vocab.bpe"],
    ],
};
/// A chat template.
pub const CHAT_TEMPLATE: Part = Part {
    what: "the chat template",
    alternatives: &[&["chat_template.jinja"], &["tokenizer_config.json"]],
};

/// What a model path must be, in words: `parts` inside a folder, or (when `gguf`) a `.gguf`
/// file.
pub fn model_description(parts: &[&Part], gguf: bool) -> String {
    let inside: Vec<String> = parts.iter().map(|p| p.describe()).collect();
    let folder = format!("a model folder holds {}", inside.join("; "));
    if gguf {
        format!("{folder}; or give a .gguf file (weights, tokenizer and chat template in one)")
    } else {
        folder
    }
}

/// Checks that `path` (given with `flag`) is a model: a folder holding every one of `parts`,
/// or, when `gguf` is true, a `.gguf` file.
///
/// # Errors
/// A runtime error naming the path and what it lacks (and what a model is).
pub fn check_model(flag: &str, path: &Path, parts: &[&Part], gguf: bool) -> CliResult {
    let shown = path.display();
    if path.is_file() {
        if gguf
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Ok(());
        }
        return Err(CliError::failed(format!(
            "{flag} {shown}: is a file, not a model folder; {}",
            model_description(parts, gguf)
        )));
    }
    if !path.is_dir() {
        return Err(CliError::failed(format!(
            "{flag} {shown}: does not exist; {}",
            model_description(parts, gguf)
        )));
    }
    let missing: Vec<String> = parts
        .iter()
        .filter(|p| !p.present(path))
        .map(|p| p.describe())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let gguf_hint = if gguf {
        "; or give a .gguf file (weights, tokenizer and chat template in one)"
    } else {
        ""
    };
    Err(CliError::failed(format!(
        "{flag} {shown}: this model folder lacks {}{gguf_hint}",
        missing.join("; and ")
    )))
}
