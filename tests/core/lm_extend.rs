//! Extending a finished language-model run (`LmTrainer::extend_to`, what `train_gpt --resume
//! --steps N` does): the learning-rate schedule keeps its length, checkpoints store it, and an
//! extended run saved and resumed is bit-identical to one that never stopped.

use handgrad::data::{ChatDataset, LmDataset};
use handgrad::init::rng;
use handgrad::io::Checkpoint;
use handgrad::optim::LrSchedule;
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate};
use handgrad::transformer::{Gpt, GptConfig, Llama, LmTrainOptions, LmTrainer};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("handgrad-extend-{}-{name}", std::process::id()))
}

fn data() -> LmDataset {
    LmDataset::new((0..600).map(|i| (i * 7 + i / 11) % 13).collect(), 16).unwrap()
}

fn opts(steps: usize) -> LmTrainOptions {
    LmTrainOptions {
        steps,
        batch_size: 4,
        warmup_steps: Some(2),
        lr: 3e-3,
        min_lr: Some(3e-4),
        verbose: false,
        ..Default::default()
    }
}

fn model() -> Gpt {
    Gpt::new(GptConfig::new(13, 16, 2, 2, 16).dropout(0.1), &mut rng(9)).unwrap()
}

/// The schedule of a run planned for `total` steps.
fn schedule(total: usize) -> LrSchedule {
    LrSchedule::WarmupCosine {
        warmup_steps: 2,
        total_steps: total,
        min_lr: 3e-4,
    }
}

#[test]
fn extend_to_refuses_steps_already_planned_and_changes_nothing() {
    let mut gpt = model();
    let mut trainer = LmTrainer::new(opts(6)).unwrap();
    trainer.train(&mut gpt, &data(), None).unwrap();
    for steps in [0, 5, 6] {
        let e = trainer.extend_to(steps).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "LmTrainer::extend_to: invalid steps = {steps}; expected more than the run's 6 \
                 steps (6 taken)"
            )
        );
    }
    assert_eq!(trainer.options().steps, 6);
    assert_eq!(*trainer.schedule(), schedule(6));
    // training again does nothing: the run is finished
    let h = trainer.train(&mut gpt, &data(), None).unwrap();
    assert!(h.loss.is_empty());
}

#[test]
fn an_extended_run_keeps_its_schedule_through_checkpoints() {
    // straight: 6 steps, extended to 10 in memory
    let mut straight = model();
    let mut t = LmTrainer::new(opts(6)).unwrap();
    t.train(&mut straight, &data(), None).unwrap();
    t.extend_to(10).unwrap();
    assert_eq!(t.options().steps, 10);
    assert_eq!(*t.schedule(), schedule(6), "the schedule keeps its length");
    let h = t.train(&mut straight, &data(), None).unwrap();
    assert_eq!((h.loss.len(), t.step_count()), (4, 10));
    // the steps after the schedule's end run at min_lr
    assert_eq!(t.schedule().lr_at(3e-3, 6), 3e-4);
    assert_eq!(t.schedule().lr_at(3e-3, 9), 3e-4);

    // with stops: 6 steps, save, resume, extend to 10, 2 steps, save, resume, the rest
    let path = tmp("gpt.ckpt");
    let mut gpt = model();
    let mut t = LmTrainer::new(opts(6)).unwrap();
    t.train(&mut gpt, &data(), None).unwrap();
    t.save_checkpoint(&gpt, &path).unwrap();
    drop((gpt, t));
    let (mut gpt, mut t) = LmTrainer::resume(&path).unwrap();
    assert_eq!(*t.schedule(), schedule(6));
    t.extend_to(10).unwrap();
    t.train_for(&mut gpt, &data(), None, 2).unwrap();
    t.save_checkpoint(&gpt, &path).unwrap();
    drop((gpt, t));
    let (mut gpt, mut t) = LmTrainer::resume(&path).unwrap();
    assert_eq!((t.step_count(), t.options().steps), (8, 10));
    assert_eq!(
        *t.schedule(),
        schedule(6),
        "the checkpoint kept the schedule"
    );
    t.train(&mut gpt, &data(), None).unwrap();
    assert_eq!(t.step_count(), 10);
    assert_eq!(
        gpt.state_dict(),
        straight.state_dict(),
        "resumed run differs"
    );

    // a checkpoint without a stored schedule (older files) takes the options' schedule
    let mut ck = Checkpoint::load(&path, "gpt").unwrap();
    ck.meta.remove("schedule");
    ck.save(&path).unwrap();
    let (_, t) = LmTrainer::resume(&path).unwrap();
    assert_eq!(*t.schedule(), schedule(10));
    // a malformed one is an error naming the file
    ck.meta.insert("schedule".into(), "{\"Cosine\":1}".into());
    ck.save(&path).unwrap();
    let e = LmTrainer::resume(&path).unwrap_err().to_string();
    assert!(
        e.contains("gpt.ckpt") && e.contains("learning-rate schedule"),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn an_extended_llama_run_keeps_its_schedule_through_checkpoints() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/llama/llama_tiny"
    );
    let tok = BpeTokenizer::from_dir(dir).unwrap();
    let chats =
        r#"{"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"4."}]}"#;
    let data = ChatDataset::from_jsonl(chats, &ChatTemplate::chatml(), &tok, 48, "chat").unwrap();
    let mut model = Llama::from_pretrained(dir).unwrap();
    let mut t = LmTrainer::new(LmTrainOptions {
        batch_size: 1,
        ..opts(3)
    })
    .unwrap();
    t.train(&mut model, &data, None).unwrap();
    t.extend_to(5).unwrap();
    let path = tmp("llama.ckpt");
    t.save_llama_checkpoint(&model, &path).unwrap();
    let (_, t) = LmTrainer::resume_llama(&path).unwrap();
    assert_eq!((t.step_count(), t.options().steps), (3, 5));
    assert_eq!(*t.schedule(), schedule(3));
    std::fs::remove_file(&path).unwrap();
}
