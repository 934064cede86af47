//! Data-parallel training on an in-process world of ranks (threads): the deterministic
//! reduction gives the same bits for 1, 2, 3 and 4 ranks as one micro-batched process, the
//! all-reduce mode agrees within rounding, uneven batches and masked targets are weighted
//! right, and one rank's failure is an error on every rank instead of a hang.

use crate::common;
use handgrad::data::LmDataset;
use handgrad::distributed::{Distributed, LocalWorld, Reduction};
use handgrad::layers::{Conv2d, Flatten, MaxPool2d};
use handgrad::model::Logs;
use handgrad::prelude::*;
use handgrad::transformer::{Gpt, GptConfig, LmBatches, LmTrainOptions, LmTrainer, IGNORE_INDEX};
use ndarray::Array2;

/// Runs `f` on every rank of a `size`-rank world, each on its own thread.
fn on_ranks<T: Send>(
    size: usize,
    reduction: Reduction,
    f: impl Fn(Distributed) -> T + Sync,
) -> Vec<T> {
    let worlds = Distributed::local(size).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = worlds
            .into_iter()
            .map(|w| {
                let f = &f;
                s.spawn(move || f(w.with_reduction(reduction)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn bits(params: Vec<(String, &Param)>) -> Vec<u32> {
    params
        .iter()
        .flat_map(|(_, p)| p.value.iter().map(|v| v.to_bits()))
        .collect()
}

fn floats(params: Vec<(String, &Param)>) -> Vec<f32> {
    params
        .iter()
        .flat_map(|(_, p)| p.value.iter().copied())
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A small CNN with dropout on (1, 12, 12) images, 5 classes.
fn cnn(seed: u64) -> Sequential {
    let mut m = Sequential::new(&[1, 12, 12])
        .add(Conv2d::new(4, 3).relu())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dropout::new(0.25))
        .add(Dense::new(5).softmax())
        .build(&mut handgrad::init::rng(seed))
        .unwrap();
    m.compile(
        Adam::new(1e-2),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn images(n: usize, seed: u64) -> Dataset {
    let x = common::random_tensor(&[n, 1, 12, 12], seed);
    Dataset::new(x, (0..n).map(|i| (i * 7 + 3) % 5).collect()).unwrap()
}

/// 70 samples in batches of 16: the last batch has 6, cut into micro-batches of 4 and 2.
fn fit_run(world: Option<&Distributed>) -> (Vec<u32>, History) {
    let train = images(70, 1);
    let val = images(20, 2);
    let mut model = cnn(0);
    let mut opts = FitOptions::new()
        .epochs(2)
        .batch_size(16)
        .micro_batch(4)
        .seed(5)
        .augment(Augment::new().random_crop(1).horizontal_flip(0.5))
        .validation_data(&val)
        .verbose(Verbose::Silent);
    if let Some(w) = world {
        opts = opts.distributed(w);
    }
    let history = model.fit(&train, opts).unwrap();
    (bits(model.params()), history)
}

fn history_bits(h: &History) -> Vec<(String, Vec<u32>)> {
    h.history
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn fit_deterministic_mode_is_bit_identical_on_1_2_3_and_4_ranks() {
    let (single, history) = fit_run(None);
    assert_eq!(history.epochs(), 2);
    assert!(history.val_loss().iter().all(|v| v.is_finite()));
    for size in [1, 2, 3, 4] {
        let runs = on_ranks(size, Reduction::Deterministic, |w| fit_run(Some(&w)));
        for (rank, (weights, h)) in runs.iter().enumerate() {
            assert!(
                weights == &single,
                "{size} ranks: rank {rank}'s weights differ from one process"
            );
            assert_eq!(
                history_bits(h),
                history_bits(&history),
                "{size} ranks: rank {rank}'s history"
            );
        }
    }
}

#[test]
fn fit_all_reduce_mode_agrees_within_rounding() {
    let (single, _) = fit_run(None);
    let single: Vec<f32> = single.iter().map(|b| f32::from_bits(*b)).collect();
    let runs = on_ranks(2, Reduction::AllReduce, |w| fit_run(Some(&w)));
    assert_eq!(runs[0].0, runs[1].0, "both ranks hold the same weights");
    let w: Vec<f32> = runs[0].0.iter().map(|b| f32::from_bits(*b)).collect();
    let d = max_abs_diff(&w, &single);
    // 10 Adam steps at lr 1e-2 from sums taken in another order
    assert!(
        d < 2e-3,
        "all-reduce weights differ from the deterministic ones by {d}"
    );
}

#[test]
fn micro_batches_weight_an_uneven_batch_like_one_forward() {
    // one step on 22 samples: micro-batches 4, 4, 4, 4, 4, 2
    let data = images(22, 3);
    let step = |micro: Option<usize>| {
        let mut m = Sequential::new(&[1, 12, 12])
            .add(Flatten::new())
            .add(Dense::new(5).softmax())
            .build(&mut handgrad::init::rng(1))
            .unwrap();
        m.compile(Sgd::new(0.5), Loss::SparseCategoricalCrossentropy, &[])
            .unwrap();
        let mut opts = FitOptions::new()
            .batch_size(22)
            .shuffle(false)
            .verbose(Verbose::Silent);
        if let Some(n) = micro {
            opts = opts.micro_batch(n);
        }
        let h = m.fit(&data, opts).unwrap();
        (h.loss()[0], floats(m.params()))
    };
    let (plain_loss, plain) = step(None);
    let (micro_loss, micro) = step(Some(4));
    assert!(
        (plain_loss - micro_loss).abs() < 1e-6 * plain_loss.abs(),
        "loss {plain_loss} in one forward, {micro_loss} in micro-batches"
    );
    let d = max_abs_diff(&plain, &micro);
    assert!(d < 1e-6, "weights after one SGD step differ by {d}");
}

#[test]
fn a_failing_rank_is_an_error_on_every_rank() {
    // sample 20 has label 9 for 5 classes: in a batch of 32 cut into 4 micro-batches of 8 on 4
    // ranks, only rank 2 sees it
    let x = common::random_tensor(&[32, 1, 12, 12], 4);
    let mut labels: Vec<usize> = (0..32).map(|i| i % 5).collect();
    labels[20] = 9;
    let data = Dataset::new(x, labels).unwrap();
    let results = on_ranks(4, Reduction::Deterministic, |w| {
        let mut m = cnn(0);
        m.fit(
            &data,
            FitOptions::new()
                .batch_size(32)
                .micro_batch(8)
                .shuffle(false)
                .verbose(Verbose::Silent)
                .distributed(&w),
        )
        .map(|_| ())
    });
    let own = results[2].as_ref().unwrap_err().to_string();
    assert!(own.contains('9') && own.contains('5'), "rank 2: {own}");
    for (rank, r) in results.iter().enumerate() {
        let e = r.as_ref().unwrap_err().to_string();
        if rank != 2 {
            // the others name rank 2 and carry its message, so rank 0 can print the cause
            // even when the launcher ends rank 2 before its own output is written
            assert!(
                e.contains("rank 2 of 4 failed at epoch 1 batch 1")
                    && e.contains(&own)
                    && e.ends_with(&format!("rank {rank} stopped with it")),
                "rank {rank}: {e}"
            );
        }
    }
    // the same in the all-reduce mode (rank 1 of 2 holds samples 16..32)
    let results = on_ranks(2, Reduction::AllReduce, |w| {
        let mut m = cnn(0);
        let opts = FitOptions::new()
            .batch_size(32)
            .shuffle(false)
            .verbose(Verbose::Silent)
            .distributed(&w);
        m.fit(&data, opts).map(|_| ())
    });
    assert!(results[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("rank 1 of 2 failed"));
    assert!(results[1].as_ref().unwrap_err().to_string().contains('9'));
}

/// Stops after epoch 2 on rank 0 only (a file-writing kind of callback).
struct RootStops;

impl Callback for RootStops {
    fn on_epoch_end(&mut self, epoch: usize, _: &Logs, _: &mut Sequential) -> Result<Control> {
        Ok(if epoch == 1 {
            Control::Stop
        } else {
            Control::Continue
        })
    }
    fn root_only(&self) -> bool {
        true
    }
}

#[test]
fn stopping_is_decided_for_every_rank() {
    let data = images(24, 5);
    let epochs = on_ranks(3, Reduction::Deterministic, |w| {
        let mut m = cnn(0);
        let opts = FitOptions::new()
            .epochs(5)
            .batch_size(8)
            .verbose(Verbose::Silent)
            .callback(RootStops)
            .distributed(&w);
        m.fit(&data, opts).unwrap().epochs()
    });
    assert_eq!(epochs, vec![2, 2, 2]);
    // early stopping runs on every rank on the same reduced logs
    let stopped = on_ranks(2, Reduction::Deterministic, |w| {
        let mut m = cnn(0);
        let opts = FitOptions::new()
            .epochs(30)
            .batch_size(8)
            .verbose(Verbose::Silent)
            .callback(
                EarlyStopping::new()
                    .monitor("loss")
                    .patience(0)
                    .min_delta(10.0),
            )
            .distributed(&w);
        m.fit(&data, opts).unwrap().epochs()
    });
    assert_eq!(stopped, vec![2, 2]);
}

#[test]
fn rank_zeros_parameters_are_broadcast() {
    let data = images(16, 6);
    let weights = on_ranks(2, Reduction::Deterministic, |w| {
        // each rank initialises differently; fit starts from rank 0's weights
        let mut m = cnn(w.rank() as u64);
        let opts = FitOptions::new()
            .batch_size(16)
            .verbose(Verbose::Silent)
            .distributed(&w);
        m.fit(&data, opts).unwrap();
        bits(m.params())
    });
    assert_eq!(weights[0], weights[1]);
    // a model of another shape on one rank is refused on every rank
    let errs = on_ranks(2, Reduction::Deterministic, |w| {
        let mut m = Sequential::new(&[1, 12, 12])
            .add(Flatten::new())
            .add(Dense::new(3 + w.rank()).softmax())
            .build(&mut handgrad::init::rng(0))
            .unwrap();
        m.compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
            .unwrap();
        let opts = FitOptions::new().verbose(Verbose::Silent).distributed(&w);
        m.fit(&images(8, 7), opts).unwrap_err().to_string()
    });
    assert!(errs[1].contains("where rank 0 has"), "{}", errs[1]);
    assert!(errs[0].contains("rank 1 of 2 failed"), "{}", errs[0]);
}

#[test]
fn distributed_fit_refuses_what_it_cannot_do() {
    let data = images(8, 8);
    let mut m = cnn(0);
    let e = m
        .fit(
            &data,
            FitOptions::new().micro_batch(0).verbose(Verbose::Silent),
        )
        .unwrap_err();
    assert!(e.to_string().contains("micro_batch = 0"), "{e}");
    let mut bn = Sequential::new(&[1, 12, 12])
        .add(Conv2d::new(2, 3))
        .add(BatchNorm2d::new())
        .add(Flatten::new())
        .add(Dense::new(5).softmax())
        .build(&mut handgrad::init::rng(0))
        .unwrap();
    bn.compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let world = Distributed::single();
    let e = bn
        .fit(
            &data,
            FitOptions::new()
                .verbose(Verbose::Silent)
                .distributed(&world),
        )
        .unwrap_err();
    assert!(e.to_string().contains("running statistics"), "{e}");
    assert!(LocalWorld::new(0).is_err());
}

/// Windows of Moby-Dick whose row `r` ignores its first `r` targets (masked prompts).
struct Masked(LmDataset);

impl LmBatches for Masked {
    fn seq_len(&self) -> usize {
        self.0.seq_len()
    }
    fn sample_batch(&self, b: usize, rng: &mut Rng) -> (Array2<usize>, Array2<usize>) {
        let (x, mut y) = self.0.sample_batch(b, rng);
        for ((r, t), v) in y.indexed_iter_mut() {
            if t < r * 3 {
                *v = IGNORE_INDEX;
            }
        }
        (x, y)
    }
    fn eval_batches(&self, rows: usize, b: usize) -> Vec<(Array2<usize>, Array2<usize>)> {
        self.0.eval_batches(rows, b)
    }
}

fn char_data() -> (LmDataset, LmDataset, usize) {
    let text = &handgrad::data::moby_dick()[..6000];
    let tok = handgrad::tokenizer::CharTokenizer::from_text(text);
    let ids = handgrad::tokenizer::Tokenizer::encode(&tok, text).unwrap();
    let (a, b) = ids.split_at(5000);
    let v = handgrad::tokenizer::Tokenizer::vocab_size(&tok);
    (
        LmDataset::new(a.to_vec(), 16).unwrap(),
        LmDataset::new(b.to_vec(), 16).unwrap(),
        v,
    )
}

fn lm_opts(micro: Option<usize>) -> LmTrainOptions {
    LmTrainOptions {
        steps: 6,
        batch_size: 6,
        warmup_steps: Some(2),
        lr: 3e-3,
        eval_interval: 3,
        eval_windows: 10,
        verbose: false,
        micro_batch: micro,
        ..Default::default()
    }
}

fn gpt(vocab: usize) -> Gpt {
    Gpt::new(
        GptConfig::new(vocab, 16, 2, 2, 16).dropout(0.1),
        &mut handgrad::init::rng(3),
    )
    .unwrap()
}

fn lm_run(world: Option<&Distributed>) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let (train, val, v) = char_data();
    let mut model = gpt(v);
    let mut trainer = LmTrainer::new(lm_opts(Some(2))).unwrap();
    if let Some(w) = world {
        trainer = trainer.distributed(w);
    }
    let h = trainer.train(&mut model, &train, Some(&val)).unwrap();
    (
        bits(model.params()),
        h.loss.iter().map(|l| l.to_bits()).collect(),
        h.val_loss.iter().map(|(_, l)| l.to_bits()).collect(),
    )
}

#[test]
fn lm_trainer_deterministic_mode_is_bit_identical_on_1_2_3_and_4_ranks() {
    let single = lm_run(None);
    assert_eq!(single.1.len(), 6);
    assert_eq!(single.2.len(), 2);
    for size in [1, 2, 3, 4] {
        let runs = on_ranks(size, Reduction::Deterministic, |w| lm_run(Some(&w)));
        for (rank, r) in runs.iter().enumerate() {
            assert!(
                r.0 == single.0,
                "{size} ranks: rank {rank}'s weights differ"
            );
            assert_eq!(r.1, single.1, "{size} ranks: rank {rank}'s losses");
            assert_eq!(
                r.2, single.2,
                "{size} ranks: rank {rank}'s validation losses"
            );
        }
    }
    // the all-reduce mode: the same within rounding
    let runs = on_ranks(2, Reduction::AllReduce, |w| lm_run(Some(&w)));
    let f = |b: &[u32]| b.iter().map(|x| f32::from_bits(*x)).collect::<Vec<_>>();
    assert_eq!(runs[0].0, runs[1].0);
    let d = max_abs_diff(&f(&runs[0].0), &f(&single.0));
    assert!(d < 1e-3, "all-reduce weights differ by {d}");
}

#[test]
fn lm_micro_batches_weight_masked_targets_by_token() {
    let (train, _, v) = char_data();
    let data = Masked(train);
    let step = |micro: Option<usize>| {
        let mut model =
            Gpt::new(GptConfig::new(v, 16, 1, 2, 16), &mut handgrad::init::rng(3)).unwrap();
        let mut opts = lm_opts(micro);
        opts.steps = 1;
        opts.warmup_steps = Some(0);
        let h = LmTrainer::new(opts)
            .unwrap()
            .train(&mut model, &data, None)
            .unwrap();
        (h.loss[0], floats(model.params()))
    };
    let (plain_loss, plain) = step(None);
    // micro-batches of 1, 2 and 4 rows: rows hold 16, 13, 10, … target tokens
    for micro in [1, 2, 4] {
        let (loss, w) = step(Some(micro));
        assert!(
            (loss - plain_loss).abs() < 2e-6 * plain_loss,
            "micro {micro}: loss {loss} vs {plain_loss}"
        );
        // AdamW's first step is about lr·sign(g) (lr = 3e-3): rounding moves it by ~1e-6
        let d = max_abs_diff(&w, &plain);
        assert!(d < 1e-5, "micro {micro}: weights differ by {d}");
    }
}

#[test]
fn lm_checkpoint_on_rank_zero_resumes_bit_identically() {
    let dir = std::env::temp_dir().join(format!("handgrad-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let (train, val, v) = char_data();
    let whole = on_ranks(2, Reduction::Deterministic, |w| {
        let mut model = gpt(v);
        let mut t = LmTrainer::new(lm_opts(None)).unwrap().distributed(&w);
        t.train(&mut model, &train, Some(&val)).unwrap();
        bits(model.params())
    });
    let resumed = on_ranks(2, Reduction::Deterministic, |w| {
        let mut model = gpt(v);
        let mut t = LmTrainer::new(lm_opts(None)).unwrap().distributed(&w);
        t.train_for(&mut model, &train, Some(&val), 4).unwrap();
        t.save_checkpoint(&model, &path).unwrap();
        let (mut model, mut t) = LmTrainer::resume_distributed(&path, &w).unwrap();
        assert_eq!(t.step_count(), 4);
        t.train(&mut model, &train, Some(&val)).unwrap();
        bits(model.params())
    });
    assert_eq!(whole[0], whole[1]);
    assert!(resumed[0] == whole[0] && resumed[1] == whole[0]);
    // a missing file on rank 0 is an error on both ranks
    let errs = on_ranks(2, Reduction::Deterministic, |w| {
        LmTrainer::resume_distributed(dir.join("missing.ckpt"), &w)
            .unwrap_err()
            .to_string()
    });
    assert!(errs[0].contains("missing.ckpt"), "{}", errs[0]);
    assert!(errs[1].contains("rank 0 of 2 failed"), "{}", errs[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn local_world_collectives_move_the_right_values() {
    let out = on_ranks(3, Reduction::Deterministic, |w| {
        let c = w.communicator();
        let r = c.rank();
        // rank r sends q + 1 copies of 10·r + q to rank q
        let mut send = Vec::new();
        let mut counts = Vec::new();
        for q in 0..3 {
            send.extend(std::iter::repeat_n((10 * r + q) as f32, q + 1));
            counts.push(q + 1);
        }
        let mut recv = vec![0.0; 3 * (r + 1)];
        c.all_to_all_v(&send, &counts, &mut recv, &[r + 1; 3])
            .unwrap();
        let mut gathered = vec![0.0; 6];
        let mine = vec![r as f32; r + 1];
        c.all_gather_v(&mine, &mut gathered, &[1, 2, 3]).unwrap();
        let mut bytes = if r == 0 { b"root".to_vec() } else { Vec::new() };
        c.broadcast_bytes(0, &mut bytes).unwrap();
        let e = c.all_to_all_v(&send, &[1, 1, 1], &mut recv, &[r + 1; 3]);
        (recv, gathered, bytes, e.is_err())
    });
    for (r, (recv, gathered, bytes, bad)) in out.into_iter().enumerate() {
        let want: Vec<f32> = (0..3)
            .flat_map(|s| std::iter::repeat_n((10 * s + r) as f32, r + 1))
            .collect();
        assert_eq!(recv, want);
        assert_eq!(gathered, vec![0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(bytes, b"root");
        assert!(bad, "counts that do not add up are an error");
    }
}
