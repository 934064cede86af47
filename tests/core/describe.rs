//! The describe pipeline on a tiny trained pair: a digits classifier and a char-level GPT.

use handgrad::data::{digits, LmDataset};
use handgrad::describe::{CausalLm, Describer, SequentialClassifier};
use handgrad::generate::GenerateConfig;
use handgrad::layers::Flatten;
use handgrad::prelude::*;
use handgrad::tokenizer::{CharTokenizer, Tokenizer};
use handgrad::transformer::{Gpt, GptConfig, LmTrainOptions, LmTrainer};
use ndarray::{Axis, IxDyn};

const NAMES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

#[test]
fn describe_classifies_fills_the_template_and_continues_it() {
    // a classifier of the embedded 8×8 digits, as 1×8×8 images
    let d = digits().unwrap();
    let (x, y) = d.clone().into_parts();
    let n = y.len();
    let x = x.into_shape_with_order(IxDyn(&[n, 1, 8, 8])).unwrap() / 16.0;
    let train = Dataset::new(x.clone(), y.clone()).unwrap();
    let mut cnn = Sequential::new(&[1, 8, 8])
        .add(Flatten::new())
        .add(Dense::new(32).relu())
        .add(Dense::new(10).softmax())
        .build(&mut rng(0))
        .unwrap();
    cnn.compile(
        Adam::new(1e-2),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    cnn.fit(
        &train,
        FitOptions::new().epochs(15).verbose(Verbose::Silent),
    )
    .unwrap();

    // a GPT that has learnt one sentence per digit
    let text: String = NAMES
        .iter()
        .map(|w| format!("a {w} is a digit. "))
        .collect::<String>()
        .repeat(3);
    let tok = CharTokenizer::from_text(&text);
    let data = LmDataset::new(tok.encode(&text).unwrap(), 32).unwrap();
    let mut gpt = Gpt::new(GptConfig::new(tok.vocab_size(), 48, 2, 2, 32), &mut rng(1)).unwrap();
    let opts = LmTrainOptions {
        steps: 200,
        batch_size: 8,
        lr: 1e-2,
        warmup_steps: Some(10),
        weight_decay: 0.0,
        verbose: false,
        ..Default::default()
    };
    LmTrainer::new(opts)
        .unwrap()
        .train(&mut gpt, &data, None)
        .unwrap();

    let mut describer = Describer::new(
        SequentialClassifier::new(cnn, &NAMES).unwrap(),
        CausalLm::new(gpt, tok).unwrap(),
    )
    .unwrap()
    .template("a {class}")
    .unwrap();
    let cfg = GenerateConfig::new().max_new_tokens(12);
    let mut right = 0;
    #[allow(clippy::needless_range_loop)]
    for i in 0..20 {
        let image = x.index_axis(Axis(0), i).to_owned();
        let out = describer.describe(&image, &cfg).unwrap();
        let best = out.best().clone();
        assert_eq!(best.name, NAMES[best.class]);
        assert_eq!(out.classes.len(), 3, "the default 3 top classes");
        assert_eq!(out.probabilities.len(), 10);
        assert_eq!(out.probabilities[best.class], best.probability);
        assert_eq!(
            out.prompt,
            format!("a {}", best.name),
            "the class is in the prompt"
        );
        assert_eq!(out.message, out.prompt, "no chat template");
        assert!(
            out.text.starts_with(&out.prompt) && out.text.len() == out.prompt.len() + 12,
            "{out:?}"
        );
        assert!((0.0..=1.0).contains(&best.probability));
        right += usize::from(best.class == y[i]);
        if i == 0 {
            assert!(
                out.text.starts_with(&format!("a {} is a digit", best.name)),
                "{out:?}"
            );
        }
    }
    assert!(right >= 18, "{right}/20 digits recognised");
    // a batch axis of 1 is accepted; other shapes are errors
    let one = x.slice(ndarray::s![0..1, .., .., ..]).to_owned().into_dyn();
    assert!(describer.classify(&one).is_ok());
    for bad in [&[8usize, 8][..], &[2, 1, 8, 8], &[1, 28, 28], &[3, 8, 8]] {
        let e = describer.classify(&Tensor::zeros(IxDyn(bad))).unwrap_err();
        assert!(e.to_string().contains("[1, 8, 8]"), "{e}");
    }
}

#[test]
fn mismatched_parts_are_errors() {
    let cnn = Sequential::new(&[4])
        .add(Dense::new(3).softmax())
        .build(&mut rng(0))
        .unwrap();
    let tok = CharTokenizer::from_text("abc");
    let gpt = Gpt::new(GptConfig::new(3, 8, 1, 1, 4), &mut rng(0)).unwrap();
    assert!(
        SequentialClassifier::new(cnn, &["a", "b"])
            .unwrap_err()
            .to_string()
            .contains("2 scores"),
        "2 names, 3 outputs"
    );
    assert!(CausalLm::new(gpt, tok.clone()).is_ok());
    let cnn = Sequential::new(&[4])
        .add(Dense::new(2).softmax())
        .build(&mut rng(0))
        .unwrap();
    assert!(SequentialClassifier::new(cnn, &["a", "b"]).is_ok());
    let big = Gpt::new(GptConfig::new(5, 8, 1, 1, 4), &mut rng(0)).unwrap();
    let e = CausalLm::new(big, tok).unwrap_err().to_string();
    assert!(e.contains("vocab_size = 3") && e.contains("5"), "{e}");
}
