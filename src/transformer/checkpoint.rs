//! Exact-resume checkpoints of a [`Gpt`] and its [`LmTrainer`].

use super::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use crate::error::{Error, Result};
use crate::init::{rng_from_state, rng_state};
use crate::io::Checkpoint;
use crate::layers::Layer;
use crate::optim::Optimizer;
use std::collections::BTreeMap;
use std::path::Path;

/// The checkpoint `kind` of a GPT with its trainer.
const KIND: &str = "gpt";

impl Gpt {
    /// The positions of every dropout stream (embedding, residual and attention dropout),
    /// by name, for checkpoints.
    pub fn dropout_states(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(s) = self.drop.rng_state() {
            m.insert("drop".to_string(), s);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            for (k, d) in b.drop.iter().enumerate() {
                if let Some(s) = d.rng_state() {
                    m.insert(format!("h.{i}.drop.{k}"), s);
                }
            }
            let (seed, calls) = b.attn.dropout_state();
            m.insert(format!("h.{i}.attn.drop"), format!("{seed}:{calls}"));
        }
        m
    }

    /// Restores [`Gpt::dropout_states`].
    ///
    /// # Errors
    /// [`Error::Format`] naming a missing or malformed entry.
    pub fn set_dropout_states(&mut self, states: &BTreeMap<String, String>) -> Result<()> {
        let get = |k: &str| {
            states
                .get(k)
                .ok_or_else(|| Error::format("dropout state", format!("missing \"{k}\"")))
        };
        if self.drop.rng_state().is_some() {
            self.drop.set_rng_state(get("drop")?)?;
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (k, d) in b.drop.iter_mut().enumerate() {
                if d.rng_state().is_some() {
                    d.set_rng_state(get(&format!("h.{i}.drop.{k}"))?)?;
                }
            }
            let key = format!("h.{i}.attn.drop");
            let text = get(&key)?;
            let parsed = text
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            let state = parsed.ok_or_else(|| {
                Error::format(
                    "dropout state",
                    format!("\"{key}\" = {text:?} is not <seed>:<calls>"),
                )
            })?;
            b.attn.set_dropout_state(state);
        }
        Ok(())
    }
}

impl LmTrainer {
    /// Saves everything needed to continue this run exactly: the model's config and weights,
    /// the AdamW state, the step, the options, the learning-rate schedule, the batch RNG and
    /// every dropout stream. The write is atomic, so a crash mid-save leaves the previous
    /// checkpoint intact. In a data-parallel trainer ([`LmTrainer::distributed`]) every rank
    /// calls it and rank 0 alone writes; a failed write is an error on every rank.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path (an [`Error::State`] on the other ranks when rank 0's write
    /// failed).
    pub fn save_checkpoint(&self, gpt: &Gpt, path: impl AsRef<Path>) -> Result<()> {
        match &self.world {
            Some(w) if w.size() > 1 => {
                let saved = if w.is_root() {
                    self.write_checkpoint(gpt, path.as_ref())
                } else {
                    Ok(())
                };
                w.agree(saved, &format!("saving {}", path.as_ref().display()))
            }
            _ => self.write_checkpoint(gpt, path.as_ref()),
        }
    }

    fn write_checkpoint(&self, gpt: &Gpt, path: &Path) -> Result<()> {
        let mut ck = Checkpoint::new(KIND);
        ck.weights = gpt
            .params()
            .into_iter()
            .map(|(n, p)| (n, p.value.clone()))
            .collect();
        ck.optimizer = self.optimizer.state();
        let cfg = gpt.config();
        ck.meta.insert("config".into(), cfg.to_hf_json());
        ck.meta.insert("dropout".into(), cfg.dropout.to_string());
        ck.meta.insert("step".into(), self.step.to_string());
        ck.meta.insert(
            "options".into(),
            serde_json::to_string(&self.opts).expect("options serialise"),
        );
        ck.meta.insert("rng.batches".into(), rng_state(&self.rng));
        ck.meta.insert("schedule".into(), self.schedule_meta());
        for (k, v) in gpt.dropout_states() {
            ck.meta.insert(format!("rng.{k}"), v);
        }
        ck.save(path)
    }

    /// Loads a checkpoint written by [`LmTrainer::save_checkpoint`]: a model and a trainer that
    /// continue the run exactly where it stopped (bit-identical to never having stopped).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] naming the file (not a handgrad checkpoint, a newer
    /// format version, another kind of model, missing entries); [`Error::Param`] for weights
    /// that do not fit the stored config.
    pub fn resume(path: impl AsRef<Path>) -> Result<(Gpt, LmTrainer)> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let ck = Checkpoint::load(path, KIND)?;
        Self::from_checkpoint(&ck, &source)
    }

    /// [`LmTrainer::resume`] for a data-parallel run: rank 0 reads the checkpoint and
    /// broadcasts its bytes (the file need only exist on rank 0's machine); every rank gets the
    /// same model and a trainer on `world`.
    ///
    /// # Errors
    /// As [`LmTrainer::resume`], on every rank (an [`Error::State`] on the others when rank 0
    /// cannot read the file).
    pub fn resume_distributed(
        path: impl AsRef<Path>,
        world: &crate::distributed::Distributed,
    ) -> Result<(Gpt, LmTrainer)> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = world.read_on_root(path)?;
        let parsed = Checkpoint::from_bytes(&bytes, KIND, &source)
            .and_then(|ck| Self::from_checkpoint(&ck, &source));
        let (gpt, trainer) = world.agree(parsed, &format!("loading {source}"))?;
        Ok((gpt, trainer.distributed(world)))
    }

    fn from_checkpoint(ck: &Checkpoint, source: &str) -> Result<(Gpt, LmTrainer)> {
        let source = source.to_string();
        let mut config = GptConfig::from_hf_json(ck.get("config", &source)?, &source)?;
        config.dropout = ck.parse("dropout", &source)?;
        let mut gpt = Gpt::from_weights(config, ck.weights.clone(), &source)?;
        let states: BTreeMap<String, String> = ck
            .meta
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("rng.")?.to_string(), v.clone())))
            .collect();
        gpt.set_dropout_states(&states)?;
        let opts: LmTrainOptions = serde_json::from_str(ck.get("options", &source)?)
            .map_err(|e| Error::format(&source, format!("trainer options: {e}")))?;
        let mut trainer = LmTrainer::new(opts)?;
        trainer.optimizer.load_state(&ck.optimizer)?;
        trainer.step = ck.parse("step", &source)?;
        trainer.rng = rng_from_state(ck.get("rng.batches", &source)?)?;
        trainer.restore_schedule(ck.meta.get("schedule"), &source)?;
        Ok((gpt, trainer))
    }
}
