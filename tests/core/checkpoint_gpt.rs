//! GPT checkpoints: training N steps, saving, resuming in a fresh process state and training M
//! more is bit-identical to N + M steps straight (AdamW, warmup + cosine, dropout), on 1 and 2
//! threads; version / kind checks; a writer killed mid-save leaves the previous checkpoint
//! loadable.

use handgrad::data::LmDataset;
use handgrad::init::rng;
use handgrad::io::{Checkpoint, CHECKPOINT_VERSION};
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("handgrad-ck-{}-{name}", std::process::id()))
}

fn data() -> LmDataset {
    LmDataset::new((0..600).map(|i| (i * 7 + i / 11) % 13).collect(), 16).unwrap()
}

fn opts(steps: usize) -> LmTrainOptions {
    LmTrainOptions {
        steps,
        batch_size: 4,
        warmup_steps: Some(3),
        lr: 3e-3,
        verbose: false,
        ..Default::default()
    }
}

fn model() -> Gpt {
    Gpt::new(GptConfig::new(13, 16, 2, 2, 16).dropout(0.1), &mut rng(9)).unwrap()
}

fn straight(total: usize) -> Gpt {
    let mut gpt = model();
    LmTrainer::new(opts(total))
        .unwrap()
        .train(&mut gpt, &data(), None)
        .unwrap();
    gpt
}

fn resumed(first: usize, total: usize, path: &PathBuf) -> Gpt {
    let mut gpt = model();
    let mut trainer = LmTrainer::new(opts(total)).unwrap();
    trainer.train_for(&mut gpt, &data(), None, first).unwrap();
    trainer.save_checkpoint(&gpt, path).unwrap();
    drop((gpt, trainer));
    let (mut gpt, mut trainer) = LmTrainer::resume(path).unwrap();
    assert_eq!(trainer.step_count(), first);
    trainer.train(&mut gpt, &data(), None).unwrap();
    assert_eq!(trainer.step_count(), total);
    gpt
}

#[test]
fn resume_is_bit_identical_to_training_straight_on_1_and_2_threads() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let path = tmp(&format!("resume-{threads}.safetensors"));
            let a = straight(12).state_dict();
            let b = resumed(5, 12, &path).state_dict();
            assert_eq!(a, b, "{threads} thread(s): resumed run differs");
            std::fs::remove_file(&path).unwrap();
        });
    }
}

#[test]
fn newer_versions_other_kinds_and_foreign_files_are_clear_errors() {
    let path = tmp("version.safetensors");
    let mut gpt = model();
    let mut trainer = LmTrainer::new(opts(4)).unwrap();
    trainer.train_for(&mut gpt, &data(), None, 1).unwrap();
    trainer.save_checkpoint(&gpt, &path).unwrap();
    // a newer format version: patch the header bytes in place (same length)
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = format!("\"format_version\":\"{CHECKPOINT_VERSION}\"");
    let newer = format!("\"format_version\":\"{}\"", CHECKPOINT_VERSION + 1);
    assert_eq!(needle.len(), newer.len());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("metadata holds the version");
    bytes[at..at + newer.len()].copy_from_slice(newer.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = LmTrainer::resume(&path).unwrap_err().to_string();
    assert!(
        e.contains("newer handgrad") && e.contains("version.safetensors"),
        "{e}"
    );
    // another kind of model
    let other = Checkpoint::new("sequential");
    other.save(&path).unwrap();
    let e = LmTrainer::resume(&path).unwrap_err().to_string();
    assert!(e.contains("\"sequential\"") && e.contains("\"gpt\""), "{e}");
    // a plain weights file
    handgrad::io::write_safetensors(&path, &gpt.state_dict(), None).unwrap();
    let e = LmTrainer::resume(&path).unwrap_err().to_string();
    assert!(e.contains("not a handgrad checkpoint"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

/// The child side of the crash test: saves checkpoints to the given path in a loop until killed.
fn child_writer(path: &str) -> ! {
    let mut gpt = model();
    let mut trainer = LmTrainer::new(opts(1_000_000)).unwrap();
    loop {
        trainer.train_for(&mut gpt, &data(), None, 1).unwrap();
        trainer.save_checkpoint(&gpt, path).unwrap();
    }
}

#[test]
fn a_writer_killed_mid_save_leaves_a_loadable_checkpoint() {
    if let Ok(path) = std::env::var("HANDGRAD_CHILD_CHECKPOINT_WRITER") {
        child_writer(&path);
    }
    let path = tmp("crash.safetensors");
    let mut gpt = model();
    let mut trainer = LmTrainer::new(opts(10)).unwrap();
    trainer.train_for(&mut gpt, &data(), None, 2).unwrap();
    trainer.save_checkpoint(&gpt, &path).unwrap();
    for delay_ms in [5u64, 23, 61, 150] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_writer_killed_mid_save_leaves_a_loadable_checkpoint",
                "--nocapture",
            ])
            .env("HANDGRAD_CHILD_CHECKPOINT_WRITER", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let (_, t) = LmTrainer::resume(&path)
            .unwrap_or_else(|e| panic!("after a kill at {delay_ms} ms: {e}"));
        assert!(t.step_count() >= 1);
    }
    // leftover temporary files are not mistaken for the checkpoint
    let _ = std::fs::remove_file(&path);
    for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(".handgrad-ck-") && name.contains("crash.safetensors.tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
