//! Exact-resume checkpoints of a fine-tuned [`Llama`] and its [`LmTrainer`].

use super::{Llama, LlamaConfig};
use crate::error::{Error, Result};
use crate::init::{rng_from_state, rng_state};
use crate::io::Checkpoint;
use crate::ops::rope::RopeLayout;
use crate::optim::Optimizer;
use crate::transformer::{LmTrainOptions, LmTrainer};
use std::path::Path;

/// The checkpoint `kind` of a Llama with its trainer.
const KIND: &str = "llama";

impl LmTrainer {
    /// Saves everything needed to continue a Llama fine-tuning run exactly: the config, every
    /// weight (Hugging Face names and layout), the AdamW state, the step, the options, the
    /// learning-rate schedule and the batch RNG. The write is atomic (a crash mid-save keeps
    /// the previous file).
    ///
    /// # Errors
    /// [`Error::State`] for a model with encoded weights or GGUF's permuted q/k rows (train
    /// `to_f32()`'s copy, which has the Hugging Face layout); [`Error::Io`] naming the path.
    pub fn save_llama_checkpoint(&self, model: &Llama, path: impl AsRef<Path>) -> Result<()> {
        if !model.is_trainable() || model.rope_layout() != RopeLayout::HalfSplit {
            return Err(Error::State(
                "LmTrainer::save_llama_checkpoint: the model holds encoded or GGUF-permuted \
                 weights; fine-tune `model.to_f32()?` (f32, Hugging Face layout) instead"
                    .into(),
            ));
        }
        let mut ck = Checkpoint::new(KIND);
        ck.weights = model
            .params()
            .into_iter()
            .map(|(n, p)| (n, p.value.clone()))
            .collect();
        ck.optimizer = self.optimizer.state();
        ck.meta.insert("config".into(), model.config().to_hf_json());
        ck.meta.insert("step".into(), self.step.to_string());
        ck.meta.insert(
            "options".into(),
            serde_json::to_string(&self.opts).expect("options serialise"),
        );
        ck.meta.insert("rng.batches".into(), rng_state(&self.rng));
        ck.meta.insert("schedule".into(), self.schedule_meta());
        ck.save(path)
    }

    /// Loads a checkpoint written by [`LmTrainer::save_llama_checkpoint`]: the model and a
    /// trainer that continue the run bit-identically to never having stopped.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] naming the file (not a handgrad checkpoint, another kind
    /// of model, missing entries); [`Error::Param`] for weights that do not fit the config.
    pub fn resume_llama(path: impl AsRef<Path>) -> Result<(Llama, LmTrainer)> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let ck = Checkpoint::load(path, KIND)?;
        let config = LlamaConfig::from_hf_json(ck.get("config", &source)?, &source)?;
        let model = Llama::from_state_dict(config, ck.weights.clone(), &source)?;
        let opts: LmTrainOptions = serde_json::from_str(ck.get("options", &source)?)
            .map_err(|e| Error::format(&source, format!("trainer options: {e}")))?;
        let mut trainer = LmTrainer::new(opts)?;
        trainer.optimizer.load_state(&ck.optimizer)?;
        trainer.step = ck.parse("step", &source)?;
        trainer.rng = rng_from_state(ck.get("rng.batches", &source)?)?;
        trainer.restore_schedule(ck.meta.get("schedule"), &source)?;
        Ok((model, trainer))
    }
}
