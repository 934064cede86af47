//! Training checkpoints: one safetensors file with the weights, the optimizer state and the
//! metadata needed to resume exactly (format version, model kind and config, step / epoch,
//! RNG positions, …). Writes are atomic (see [`super::write_atomic`]).

use super::{parse_safetensors, to_safetensors_bytes, write_atomic};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The `format` metadata value of a handgrad checkpoint.
pub const CHECKPOINT_FORMAT: &str = "handgrad-checkpoint";
/// The checkpoint format version this build writes; it reads this version and older ones.
pub const CHECKPOINT_VERSION: u32 = 1;

const MODEL: &str = "model/";
const OPTIM: &str = "optimizer/";

/// The contents of a checkpoint file.
///
/// Tensors are stored as `model/<parameter name>` and `optimizer/<state key>`; the metadata
/// holds `format`, `format_version`, `kind` (`"gpt"`, `"sequential"`) and the caller's entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// What model wrote it: `"gpt"` or `"sequential"`.
    pub kind: String,
    /// Model weights (and buffers) by parameter name.
    pub weights: BTreeMap<String, Tensor>,
    /// Optimizer state by `"<parameter>.<entry>"` (see [`crate::optim::Optimizer::state`]).
    pub optimizer: BTreeMap<String, Tensor>,
    /// Everything else (config, step, RNG positions, …), as text.
    pub meta: BTreeMap<String, String>,
}

impl Checkpoint {
    /// An empty checkpoint of the given kind.
    pub fn new(kind: &str) -> Self {
        Checkpoint {
            kind: kind.to_string(),
            ..Default::default()
        }
    }

    /// A metadata entry, or [`Error::Format`] naming it and the file.
    ///
    /// # Errors
    /// When the entry is missing.
    pub fn get(&self, key: &str, source: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::format(source, format!("checkpoint metadata has no \"{key}\"")))
    }

    /// A metadata entry parsed as `T`.
    ///
    /// # Errors
    /// When the entry is missing or does not parse.
    pub fn parse<T: std::str::FromStr>(&self, key: &str, source: &str) -> Result<T> {
        let v = self.get(key, source)?;
        v.parse().map_err(|_| {
            Error::format(
                source,
                format!("checkpoint metadata \"{key}\" = {v:?} does not parse"),
            )
        })
    }

    /// The file's bytes.
    ///
    /// # Errors
    /// [`Error::Format`] when a key is reserved or a tensor cannot be serialised.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = BTreeMap::new();
        for (k, t) in &self.weights {
            tensors.insert(format!("{MODEL}{k}"), t.clone());
        }
        for (k, t) in &self.optimizer {
            tensors.insert(format!("{OPTIM}{k}"), t.clone());
        }
        let mut meta: HashMap<String, String> = HashMap::new();
        for (k, v) in &self.meta {
            if matches!(k.as_str(), "format" | "format_version" | "kind") {
                return Err(Error::format(
                    "checkpoint",
                    format!("metadata key \"{k}\" is reserved"),
                ));
            }
            meta.insert(k.clone(), v.clone());
        }
        meta.insert("format".into(), CHECKPOINT_FORMAT.into());
        meta.insert("format_version".into(), CHECKPOINT_VERSION.to_string());
        meta.insert("kind".into(), self.kind.clone());
        to_safetensors_bytes(&tensors, Some(meta))
    }

    /// Writes the checkpoint atomically: a crash mid-save leaves the previous file intact.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint of the expected `kind`.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file; [`Error::Format`] naming the file when it is not a
    /// handgrad checkpoint, was written by a newer format version, holds another kind of model,
    /// or is malformed.
    pub fn load(path: impl AsRef<Path>, kind: &str) -> Result<Self> {
        super::safetensors::with_file_bytes(path.as_ref(), |bytes, name| {
            Self::from_bytes(bytes, kind, name)
        })
    }

    /// Parses checkpoint bytes; `source` names them in errors.
    ///
    /// # Errors
    /// As [`Checkpoint::load`].
    pub fn from_bytes(bytes: &[u8], kind: &str, source: &str) -> Result<Self> {
        let file = parse_safetensors(bytes, source)?;
        let meta = file.metadata;
        match meta.get("format").map(String::as_str) {
            Some(CHECKPOINT_FORMAT) => {}
            other => {
                return Err(Error::format(
                    source,
                    format!(
                        "not a handgrad checkpoint (metadata format = {other:?}, expected \
                         \"{CHECKPOINT_FORMAT}\")"
                    ),
                ))
            }
        }
        let version: u32 = meta
            .get("format_version")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::format(source, "checkpoint without a valid format_version"))?;
        if version > CHECKPOINT_VERSION {
            return Err(Error::format(
                source,
                format!(
                    "checkpoint format version {version} was written by a newer handgrad; this \
                     build reads versions up to {CHECKPOINT_VERSION}"
                ),
            ));
        }
        let got = meta.get("kind").cloned().unwrap_or_default();
        if got != kind {
            return Err(Error::format(
                source,
                format!("this is a checkpoint of a \"{got}\" model, expected a \"{kind}\" one"),
            ));
        }
        let mut ck = Checkpoint::new(kind);
        for (k, t) in file.tensors {
            if let Some(name) = k.strip_prefix(MODEL) {
                ck.weights.insert(name.to_string(), t);
            } else if let Some(name) = k.strip_prefix(OPTIM) {
                ck.optimizer.insert(name.to_string(), t);
            } else {
                return Err(Error::format(
                    source,
                    format!("unexpected tensor \"{k}\" in a checkpoint"),
                ));
            }
        }
        ck.meta = meta
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "format" | "format_version" | "kind"))
            .collect();
        Ok(ck)
    }
}
