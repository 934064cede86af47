//! Regression tests for the public-API hardening: each misuse that used to panic, abort, mislead
//! or silently do the wrong thing returns an error that names what was given and expected.

use handgrad::data::{Dataset, LmDataset};
use handgrad::generate::{generate, Decoder, GenerateConfig};
use handgrad::layers::{Conv2d, Dense, Flatten, Layer, Mode};
use handgrad::model::{FitOptions, Loss, Verbose};
use handgrad::ndarray::{s, Array2, IxDyn};
use handgrad::optim::{Adam, LrSchedule, Optimizer, Sgd};
use handgrad::prelude::*;
use handgrad::transformer::{Conv1D, Gpt, GptConfig, KvCache, LmTrainOptions, LmTrainer};
use handgrad::{init, Error, Param, Sequential, Tensor};

fn tiny_gpt() -> Gpt {
    Gpt::new(GptConfig::new(11, 8, 2, 2, 8), &mut init::rng(0)).unwrap()
}

fn mlp() -> Sequential {
    Sequential::new(&[4])
        .add(Dense::new(6).relu())
        .add(Dense::new(3).softmax())
        .build(&mut init::rng(1))
        .unwrap()
}

fn toy_data(n: usize) -> Dataset {
    let x: Vec<f32> = (0..n * 4).map(|i| (i % 7) as f32 / 7.0).collect();
    Dataset::from_flat(x, &[4], (0..n).map(|i| i % 3).collect()).unwrap()
}

#[test]
fn a_dense_weight_replaced_with_another_shape_is_an_error_naming_it() {
    let mut model = mlp();
    let x = Tensor::zeros(IxDyn(&[2, 4]));
    for bad in [vec![6, 5], vec![24]] {
        let mut m = mlp();
        for (name, p) in m.params_mut() {
            if name == "0.weight" {
                *p = Param::new(Tensor::zeros(IxDyn(&bad)));
            }
        }
        let e = m.predict(&x).unwrap_err();
        assert!(matches!(e, Error::Param { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("weight") && msg.contains("[6, 4]"), "{msg}");
    }
    // a gradient of another shape than its value
    for (name, p) in model.params_mut() {
        if name == "2.bias" {
            p.grad = Tensor::zeros(IxDyn(&[7]));
        }
    }
    let e = model.predict(&x).unwrap_err().to_string();
    assert!(e.contains("gradient of shape [7]"), "{e}");
}

#[test]
fn a_gpt_parameter_replaced_with_another_shape_is_an_error_naming_it() {
    let mut gpt = tiny_gpt();
    for (name, p) in gpt.params_mut() {
        if name == "wte.weight" {
            *p = Param::new(Tensor::zeros(IxDyn(&[5, 8]))); // smaller than the vocabulary
        }
    }
    let ids = Array2::from_shape_vec((1, 3), vec![1, 9, 10]).unwrap();
    let e = gpt
        .forward(ids.view(), handgrad::Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wte.weight") && e.contains("[11, 8]"), "{e}");
    let mut cache = gpt.new_cache(1);
    let e = gpt.forward_cached(ids.view(), &mut cache).unwrap_err();
    assert!(e.to_string().contains("wte.weight"), "{e}");
    let mut gpt = tiny_gpt();
    for (name, p) in gpt.params_mut() {
        if name == "h.1.attn.c_attn.weight" {
            *p = Param::new(Tensor::zeros(IxDyn(&[8, 16])));
        }
    }
    let e = gpt
        .forward(ids.view(), handgrad::Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(e.contains("h.1.attn.c_attn.weight"), "{e}");
}

#[test]
fn a_kv_cache_is_tied_to_the_model_that_fills_it() {
    let gpt = tiny_gpt();
    let ids = Array2::from_shape_vec((1, 2), vec![1, 2]).unwrap();
    // another head count
    let mut cache = KvCache::new(2, 4, 1);
    let e = gpt.forward_cached(ids.view(), &mut cache).unwrap_err();
    assert!(matches!(e, Error::State(_)), "{e}");
    assert!(e.to_string().contains("4 key/value heads"), "{e}");
    // filled by a model of another width (same layers and heads)
    let wide = Gpt::new(GptConfig::new(11, 8, 2, 2, 16), &mut init::rng(0)).unwrap();
    let mut cache = wide.new_cache(1);
    wide.forward_cached(ids.view(), &mut cache).unwrap();
    let one = Array2::from_shape_vec((1, 1), vec![3]).unwrap();
    let e = gpt.forward_cached(one.view(), &mut cache).unwrap_err();
    assert!(e.to_string().contains("of width 8"), "{e}");
    assert_eq!(cache.len(), 2, "a rejected step must not change the cache");
    // its own cache still works
    let mut own = gpt.new_cache(1);
    assert_eq!(
        gpt.forward_cached(ids.view(), &mut own).unwrap().dim(),
        (1, 11)
    );
}

#[test]
fn kv_cache_reorder_reports_the_row_index_not_a_shape() {
    let mut cache = KvCache::new(1, 2, 3);
    let e = cache.reorder(&[0, 5, 1]).unwrap_err();
    assert!(matches!(e, Error::Label { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("row index 5 at position 1") && e.contains("3 rows"),
        "{e}"
    );
}

#[test]
fn initialisers_reject_bad_spreads_instead_of_panicking() {
    let mut rng = init::rng(0);
    for std in [f32::NAN, -0.5, f32::INFINITY] {
        let e = init::normal(&[2, 2], std, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("init::normal") && e.contains("std"), "{e}");
    }
    assert_eq!(init::normal(&[3], 0.0, &mut rng).unwrap().sum(), 0.0);
    for bound in [0.0, -1.0, f32::NAN] {
        let e = init::uniform(&[2], bound, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bound"), "{e}");
    }
    assert!(Conv1D::new(2, 3, f32::NAN, &mut rng).is_err());
}

/// A decoder whose logits turn NaN at the second step.
struct NanAfterOne(usize);
impl Decoder for NanAfterOne {
    fn vocab_size(&self) -> usize {
        4
    }
    fn prefill(&mut self, rows: &[Vec<usize>]) -> handgrad::Result<Array2<f32>> {
        Ok(Array2::from_elem((rows.len(), 4), 0.5))
    }
    fn step(&mut self, tokens: &[usize]) -> handgrad::Result<Array2<f32>> {
        self.0 += 1;
        Ok(Array2::from_elem((tokens.len(), 4), f32::NAN))
    }
    fn reorder(&mut self, _order: &[usize]) -> handgrad::Result<()> {
        Ok(())
    }
}

#[test]
fn sampling_from_nan_logits_is_an_error_not_token_zero() {
    for cfg in [
        GenerateConfig::new().max_new_tokens(3).do_sample(true),
        GenerateConfig::new().max_new_tokens(3),
        GenerateConfig::new().max_new_tokens(3).num_beams(2),
    ] {
        let e = generate(&mut NanAfterOne(0), &[1], &cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN") && e.contains("step 1"), "{e}");
    }
}

#[test]
fn sampling_settings_without_do_sample_are_errors() {
    let gpt = &mut tiny_gpt();
    for (cfg, name) in [
        (GenerateConfig::new().max_new_tokens(2).top_k(5), "top_k"),
        (GenerateConfig::new().max_new_tokens(2).top_p(0.9), "top_p"),
        (
            GenerateConfig::new().max_new_tokens(2).temperature(0.7),
            "temperature",
        ),
    ] {
        let e = gpt.generate(&[1, 2], &cfg).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("do_sample"), "{e}");
        assert!(gpt.generate(&[1, 2], &cfg.do_sample(true)).is_ok());
    }
}

#[test]
fn a_config_claiming_billions_of_layers_is_an_error_not_an_abort() {
    let dir = std::env::temp_dir().join(format!("handgrad-huge-{}", std::process::id()));
    tiny_gpt().save_pretrained(&dir).unwrap();
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let huge = cfg.replace("\"n_layer\": 2", "\"n_layer\": 4294967296");
    assert_ne!(cfg, huge, "the test must change n_layer: {cfg}");
    std::fs::write(dir.join("config.json"), huge).unwrap();
    let e = Gpt::from_pretrained(&dir).unwrap_err().to_string();
    assert!(e.contains("h.2."), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_checkpoint_with_another_optimizer_changes_nothing() {
    let path = std::env::temp_dir().join(format!("handgrad-ck-{}.ckpt", std::process::id()));
    let mut a = mlp();
    a.compile(Adam::new(1e-2), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    a.fit(
        &toy_data(12),
        FitOptions::new().epochs(1).verbose(Verbose::Silent),
    )
    .unwrap();
    a.save_checkpoint(&path, 1).unwrap();
    let mut b = Sequential::new(&[4])
        .add(Dense::new(6).relu())
        .add(Dense::new(3).softmax())
        .build(&mut init::rng(9))
        .unwrap();
    b.compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let before = b.state_dict();
    let lr = b.optimizer_mut().unwrap().learning_rate();
    let e = b.load_checkpoint(&path).unwrap_err().to_string();
    assert!(e.contains("Adam") && e.contains("SGD"), "{e}");
    assert_eq!(
        b.state_dict(),
        before,
        "the weights must be left as they were"
    );
    assert_eq!(b.optimizer_mut().unwrap().learning_rate(), lr);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn fit_names_the_data_set_whose_samples_do_not_fit() {
    let mut model = mlp();
    model
        .compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let wrong = Dataset::from_flat(vec![0.0; 15], &[5], vec![0, 1, 2]).unwrap();
    let e = model
        .fit(&wrong, FitOptions::new().verbose(Verbose::Silent))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("training data") && e.contains("(N, 4)") && e.contains("[3, 5]"),
        "{e}"
    );
    let e = model
        .fit(
            &toy_data(6),
            FitOptions::new()
                .verbose(Verbose::Silent)
                .validation_data(&wrong),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("validation data"), "{e}");
    let e = model.evaluate(&wrong).unwrap_err().to_string();
    assert!(e.contains("evaluate: the data"), "{e}");
}

#[test]
fn nhwc_images_through_a_sequential_get_the_layout_hint() {
    let mut cnn = Sequential::new(&[3, 8, 8])
        .add(Conv2d::new(4, 3))
        .add(Flatten::new())
        .add(Dense::new(2))
        .build(&mut init::rng(0))
        .unwrap();
    let nhwc = Tensor::zeros(IxDyn(&[2, 8, 8, 3]));
    let e = cnn.predict(&nhwc).unwrap_err().to_string();
    assert!(e.contains("NHWC") && e.contains("permuted_axes"), "{e}");
    let one = Tensor::zeros(IxDyn(&[3, 8, 8]));
    let e = cnn.predict(&one).unwrap_err().to_string();
    assert!(e.contains("batch axis"), "{e}");
}

#[test]
fn an_infinite_input_is_named_when_the_loss_becomes_non_finite() {
    let mut model = mlp();
    model
        .compile(Sgd::new(0.1), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let mut x = vec![0.1f32; 8 * 4];
    x[5 * 4 + 2] = f32::INFINITY;
    let data = Dataset::from_flat(x, &[4], vec![0; 8]).unwrap();
    let e = model
        .fit(
            &data,
            FitOptions::new()
                .batch_size(8)
                .shuffle(false)
                .verbose(Verbose::Silent),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample 5 of the training data holds inf"), "{e}");
}

#[test]
fn a_dense_head_after_a_convolution_without_flatten_fails_at_compile() {
    let mut cnn = Sequential::new(&[1, 6, 6])
        .add(Conv2d::new(2, 3))
        .add(Dense::new(3).softmax())
        .build(&mut init::rng(0))
        .unwrap();
    let e = cnn
        .compile(Adam::new(1e-3), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Flatten") && e.contains("[2, 4, 3]"), "{e}");
    // regression losses accept any output shape
    assert!(cnn
        .compile(Adam::new(1e-3), Loss::MeanSquaredError, &[])
        .is_ok());
}

#[test]
fn lm_train_options_errors_name_the_option() {
    let cases = [
        (LmTrainOptions::new().lr(-1.0), "LmTrainOptions: invalid lr"),
        (LmTrainOptions::new().betas(1.5, 0.9), "invalid betas"),
        (
            LmTrainOptions::new().weight_decay(-0.1),
            "invalid weight_decay",
        ),
        (
            LmTrainOptions::new().lr(1e-3).min_lr(1e-2),
            "invalid min_lr",
        ),
        (
            LmTrainOptions::new().steps(10).warmup_steps(20),
            "invalid warmup_steps",
        ),
    ];
    for (opts, want) in cases {
        let e = LmTrainer::new(opts).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains("AdamW") && !e.contains("LrSchedule"), "{e}");
    }
    // the defaults fit short runs: warmup a tenth of the steps, min_lr a tenth of lr
    let short = LmTrainOptions::new().steps(30).lr(2e-3);
    assert_eq!((short.warmup(), short.final_lr()), (3, 2e-3 / 10.0));
    assert_eq!(LmTrainOptions::new().steps(5000).warmup(), 100);
    assert!(LmTrainer::new(short).is_ok());
}

#[test]
fn a_token_id_out_of_range_is_found_before_the_first_step() {
    let mut gpt = tiny_gpt();
    let mut tokens: Vec<usize> = (0..300).map(|i| i % 11).collect();
    tokens[250] = 11;
    let data = LmDataset::new(tokens, 8).unwrap();
    let before = gpt
        .params()
        .iter()
        .map(|(_, p)| p.value.clone())
        .collect::<Vec<_>>();
    let mut trainer = LmTrainer::new(LmTrainOptions::new().steps(20).verbose(false)).unwrap();
    let e = trainer
        .train(&mut gpt, &data, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token id 11 (token 250 of the stream)"), "{e}");
    assert_eq!(trainer.step_count(), 0);
    let after = gpt
        .params()
        .iter()
        .map(|(_, p)| p.value.clone())
        .collect::<Vec<_>>();
    assert_eq!(before, after);
}

#[test]
fn a_schedule_that_gives_a_non_finite_rate_is_blamed_on_the_schedule() {
    let mut opt = Sgd::new(0.1);
    let s = LrSchedule::Exponential { gamma: 10.0 };
    let e = s.apply(&mut opt, 1.0, 100).unwrap_err().to_string();
    assert!(e.contains("LrSchedule") && e.contains("step 100"), "{e}");
    assert_eq!(opt.learning_rate(), 0.1, "the optimizer is left unchanged");
}

#[test]
fn dataset_and_lm_dataset_split_take_the_fraction_the_same_way() {
    let d = toy_data(100);
    let (train, val) = d.split(0.9, 0).unwrap();
    assert_eq!((train.len(), val.len()), (90, 10));
    let lm = LmDataset::new((0..1000).map(|i| i % 5).collect(), 8).unwrap();
    let (lt, lv) = lm.split(0.9).unwrap();
    assert_eq!((lt.len(), lv.len()), (900, 100));
    // select is checked, take gives the first samples
    let e = d.select(&[3, 100]).unwrap_err().to_string();
    assert!(
        e.contains("index 100 at position 1") && e.contains("100 samples"),
        "{e}"
    );
    let five = d.take(5);
    assert_eq!(five.inputs().shape(), [5, 4]);
    assert_eq!(
        five.inputs(),
        &d.inputs().slice(s![..5, ..]).to_owned().into_dyn()
    );
    assert_eq!(d.take(1000).len(), 100);
}

#[test]
fn io_errors_convert_and_name_the_file() {
    fn read(path: &str) -> handgrad::Result<String> {
        std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
    }
    let e = read("/nonexistent/handgrad.txt").unwrap_err().to_string();
    assert!(e.starts_with("/nonexistent/handgrad.txt: "), "{e}");
    fn plain() -> handgrad::Result<()> {
        Err(std::io::Error::other("broken pipe"))?;
        Ok(())
    }
    assert_eq!(plain().unwrap_err().to_string(), "broken pipe");
}

#[test]
fn conv2d_from_weights_runs_without_build() {
    let w = common_weight();
    let mut conv = Conv2d::from_weights(w, None).unwrap();
    let x = Tensor::ones(IxDyn(&[1, 2, 5, 5]));
    let y = conv.forward(&x, Mode::Eval).unwrap();
    assert_eq!(y.shape(), [1, 3, 3, 3]);
    // every output sums all 2·3·3 weights of its filter over a field of ones
    for o in 0..3 {
        let want: f32 = (0..18).map(|i| (o * 18 + i) as f32 * 0.01).sum();
        assert!((y[[0, o, 1, 1]] - want).abs() < 1e-5);
    }
}

fn common_weight() -> Tensor {
    Tensor::from_shape_vec(
        IxDyn(&[3, 2, 3, 3]),
        (0..54).map(|i| i as f32 * 0.01).collect(),
    )
    .unwrap()
}

#[test]
fn char_tokenizer_saves_and_loads_and_from_dir_finds_any_tokenizer() {
    use handgrad::tokenizer::{from_dir, CharTokenizer, Tokenizer};
    let dir = std::env::temp_dir().join(format!("handgrad-tok-{}", std::process::id()));
    let tok = CharTokenizer::from_text("Call me Ishmael.\nSome years ago");
    tok.save(&dir).unwrap();
    assert_eq!(CharTokenizer::load(&dir).unwrap(), tok);
    let any = from_dir(&dir).unwrap();
    assert_eq!(any.vocab_size(), tok.vocab_size());
    assert_eq!(
        any.encode("Ishmael").unwrap(),
        tok.encode("Ishmael").unwrap()
    );
    std::fs::write(dir.join("char_vocab.txt"), "aba").unwrap();
    let e = CharTokenizer::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("char_vocab.txt") && e.contains("'a' twice"),
        "{e}"
    );
    std::fs::remove_file(dir.join("char_vocab.txt")).unwrap();
    let e = from_dir(&dir).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("char_vocab.txt"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpt_generates_through_a_shared_reference_from_several_threads() {
    // `generate(&self)`: one model serves two threads at once, each with its own cache,
    // and both get what a sequential call gives (the cached forward keeps no model state).
    let gpt = tiny_gpt();
    let cfg = handgrad::generate::GenerateConfig::new()
        .max_new_tokens(6)
        .do_sample(true)
        .seed(3);
    let alone = gpt.generate(&[1, 2, 3], &cfg).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| gpt.generate(&[1, 2, 3], &cfg).unwrap());
        let b = s.spawn(|| gpt.generate(&[1, 2, 3], &cfg).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, alone);
    assert_eq!(b, alone);
    // and it equals the `&mut` decoder with its training-side layers
    let mut own = gpt.clone();
    let via_decoder = handgrad::generate::generate(&mut own.decoder(), &[1, 2, 3], &cfg).unwrap();
    assert_eq!(via_decoder, alone);
}
