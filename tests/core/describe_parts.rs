//! The parts of the describe pipeline without pretrained models: prompt templates and their
//! errors, the classifier trait on a tiny `Sequential`, the language side (a char GPT, and the
//! tiny Llama fixture with its chat template), and streaming (the HTML page is in describe_page.rs).

use handgrad::describe::{
    percent, top_classes, CausalLm, ClassScore, Describer, Description, ImageClassifier,
    LanguageModel, PromptTemplate, SequentialClassifier,
};
use handgrad::generate::GenerateConfig;
use handgrad::layers::Flatten;
use handgrad::prelude::*;
use handgrad::tokenizer::CharTokenizer;
use handgrad::transformer::{Gpt, GptConfig};
use ndarray::IxDyn;

fn top() -> Vec<ClassScore> {
    vec![
        ClassScore::new(698, "palace", 0.3012),
        ClassScore::new(442, "bell tower", 0.168),
        ClassScore::new(663, "monastery", 0.004),
    ]
}

#[test]
fn template_placeholders_are_filled_from_the_top_classes() {
    let cases = [
        ("a {class}", "a palace"),
        ("{probability} sure", "30 % sure"),
        (
            "guesses: {classes}.",
            "guesses: palace (30 %), bell tower (17 %), monastery (0.4 %).",
        ),
        ("{names}", "palace, bell tower, monastery"),
        ("{{class}} is {class}}}", "{class} is palace}"),
        ("no placeholder", "no placeholder"),
        ("", ""),
        ("ünïcødé {class}✓", "ünïcødé palace✓"),
    ];
    for (source, want) in cases {
        let t = PromptTemplate::new(source).unwrap();
        assert_eq!(t.source(), source);
        assert_eq!(t.render(&top()).unwrap(), want, "{source:?}");
    }
    // one class: the lists hold just it
    let one = PromptTemplate::new("{classes} / {names}").unwrap();
    assert_eq!(one.render(&top()[..1]).unwrap(), "palace (30 %) / palace");
    for (p, want) in [
        (1.0, "100 %"),
        (0.3012, "30 %"),
        (0.0096, "1 %"),
        (0.004, "0.4 %"),
        (0.0, "0.0 %"),
    ] {
        assert_eq!(percent(p), want, "{p}");
    }
}

#[test]
fn template_errors_name_the_problem() {
    for (source, needle) in [
        ("a {colour} photo", "unknown placeholder {colour}"),
        ("a {} photo", "unknown placeholder {}"),
        ("a {Class}", "unknown placeholder {Class}"),
        ("a {class", "unclosed '{' at byte 2"),
        ("a } b", "lone '}' at byte 2"),
    ] {
        let e = PromptTemplate::new(source).unwrap_err().to_string();
        assert!(e.contains(needle), "{source:?}: {e}");
        assert!(
            e.contains("{class}, {probability}, {classes}, {names}"),
            "the allowed placeholders are listed: {e}"
        );
    }
    let t = PromptTemplate::new("{class}").unwrap();
    let e = t.render(&[]).unwrap_err().to_string();
    assert!(e.contains("at least one class"), "{e}");
    // the Describer checks its template and its class count the same way
    let (cnn, names) = tiny_classifier(false);
    let d = Describer::new(SequentialClassifier::new(cnn, &names).unwrap(), char_lm()).unwrap();
    let e = d.template("{nope}").unwrap_err().to_string();
    assert!(e.contains("{nope}"), "{e}");
    let (cnn, names) = tiny_classifier(false);
    let d = Describer::new(SequentialClassifier::new(cnn, &names).unwrap(), char_lm()).unwrap();
    let e = d.top_k_classes(0).unwrap_err().to_string();
    assert!(e.contains("top_k_classes = 0"), "{e}");
}

/// A 1×2×2 → 3 classifier with fixed weights, with or without a final softmax.
fn tiny_classifier(softmax: bool) -> (Sequential, [&'static str; 3]) {
    let net = Sequential::new(&[1, 2, 2]).add(Flatten::new());
    let net = if softmax {
        net.add(Dense::new(3).softmax())
    } else {
        net.add(Dense::new(3))
    };
    let mut net = net.build(&mut rng(0)).unwrap();
    for (name, p) in net.params_mut() {
        let n = p.value.len();
        for (i, v) in p.value.iter_mut().enumerate() {
            *v = if name.ends_with("weight") {
                (i as f32 - n as f32 / 2.0) * 0.25
            } else {
                0.1 * i as f32
            };
        }
    }
    (net, ["cat", "dog", "bird"])
}

fn image() -> Tensor {
    Tensor::from_shape_vec(IxDyn(&[1, 2, 2]), vec![1.0, -0.5, 0.25, 2.0]).unwrap()
}

#[test]
fn sequential_classifier_gives_probabilities_over_its_names() {
    let (net, names) = tiny_classifier(false);
    let mut reference = tiny_classifier(false).0;
    let mut c = SequentialClassifier::new(net, &names).unwrap();
    assert_eq!(c.class_names(), ["cat", "dog", "bird"]);
    let p = c.probabilities(&image()).unwrap();
    // logits → softmax, as the model has no softmax layer
    let logits = reference
        .predict(&image().insert_axis(ndarray::Axis(0)))
        .unwrap();
    let logits: Vec<f32> = logits.iter().copied().collect();
    let want = handgrad::generate::processors::softmax(&logits);
    assert_eq!(p, want);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(
        logits.iter().sum::<f32>() != 1.0,
        "the logits are not probabilities"
    );
    // a batch axis of 1 gives the same
    let batch = image().insert_axis(ndarray::Axis(0));
    assert_eq!(c.probabilities(&batch).unwrap(), p);
    // with a softmax layer the output is taken as it is
    let (net, names) = tiny_classifier(true);
    let mut s = SequentialClassifier::new(net, &names).unwrap();
    let q = s.probabilities(&image()).unwrap();
    assert!(
        q.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-6),
        "{q:?} vs {p:?}"
    );
    // other shapes are errors naming the input shape
    for bad in [&[2usize, 2][..], &[2, 1, 2, 2], &[1, 4], &[3, 2, 2]] {
        let e = c
            .probabilities(&Tensor::zeros(IxDyn(bad)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[1, 2, 2]") && e.contains(&format!("{bad:?}")),
            "{e}"
        );
    }
    // one name per output
    let (net, _) = tiny_classifier(false);
    let e = SequentialClassifier::new(net, &["a", "b"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 scores") && e.contains("[3]"), "{e}");
    assert_eq!(c.into_model().output_shape(), [3]);
}

#[test]
fn top_classes_rank_best_first() {
    let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let p = [0.1, 0.4, 0.1, 0.4];
    let t = top_classes(&p, &names, 3).unwrap();
    let got: Vec<(usize, &str)> = t.iter().map(|c| (c.class, c.name.as_str())).collect();
    assert_eq!(
        got,
        [(1, "b"), (3, "d"), (0, "a")],
        "ties keep the lower index first"
    );
    assert_eq!(top_classes(&p, &names, 10).unwrap().len(), 4);
    let e = top_classes(&p[..3], &names, 2).unwrap_err().to_string();
    assert!(e.contains("4 names") && e.contains("[3]"), "{e}");
}

/// A char GPT (random weights) over a small alphabet.
fn char_lm() -> CausalLm<Gpt, CharTokenizer> {
    let tok = CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyzT .,:()%0123456789");
    let gpt = Gpt::new(GptConfig::new(tok.vocab_size(), 64, 1, 2, 16), &mut rng(3)).unwrap();
    CausalLm::new(gpt, tok).unwrap()
}

fn describe_twice<C: ImageClassifier, L: LanguageModel>(
    d: &mut Describer<C, L>,
    image: &C::Image,
    cfg: &GenerateConfig,
) -> (Description, Description, String) {
    let plain = d.describe(image, cfg).unwrap();
    let mut streamed = String::new();
    let s = d
        .describe_streaming(image, cfg, &mut |piece| {
            assert!(!piece.is_empty());
            streamed.push_str(piece);
            Ok(())
        })
        .unwrap();
    (plain, s, streamed)
}

#[test]
fn describer_with_a_char_gpt_continues_the_prompt_and_streams_it() {
    let (net, names) = tiny_classifier(false);
    let mut d = Describer::new(SequentialClassifier::new(net, &names).unwrap(), char_lm())
        .unwrap()
        .top_k_classes(2)
        .unwrap()
        .template("a {class} ({probability}), or {classes}:")
        .unwrap();
    for cfg in [
        GenerateConfig::new().max_new_tokens(15),
        GenerateConfig::new()
            .max_new_tokens(15)
            .do_sample(true)
            .seed(5),
    ] {
        let (plain, streamed, pieces) = describe_twice(&mut d, &image(), &cfg);
        assert_eq!(plain, streamed, "streaming changes nothing");
        let probs = d.classify(&image()).unwrap();
        assert_eq!(plain.probabilities, probs);
        assert_eq!(
            plain.classes,
            top_classes(&probs, &d.classifier().class_names(), 2).unwrap()
        );
        let (b, r) = (&plain.classes[0], &plain.classes[1]);
        let want = format!(
            "a {} ({}), or {} ({}), {} ({}):",
            b.name,
            percent(b.probability),
            b.name,
            percent(b.probability),
            r.name,
            percent(r.probability)
        );
        assert_eq!(plain.message, want);
        assert_eq!(
            plain.prompt, want,
            "no chat template: the message is the prompt"
        );
        assert!(plain.text.starts_with(&plain.prompt), "{plain:?}");
        assert_eq!(plain.text.chars().count(), want.chars().count() + 15);
        assert_eq!(
            pieces,
            plain.text[plain.prompt.len()..],
            "the pieces are the new text"
        );
    }
    // the default template of a completion model, and the default 3 classes
    let (net, names) = tiny_classifier(true);
    let mut d = Describer::new(SequentialClassifier::new(net, &names).unwrap(), char_lm()).unwrap();
    assert_eq!(
        d.prompt_template().source(),
        handgrad::describe::COMPLETION_TEMPLATE
    );
    let out = d
        .describe(&image(), &GenerateConfig::new().max_new_tokens(3))
        .unwrap();
    assert_eq!(out.classes.len(), 3);
    assert_eq!(
        out.prompt,
        format!("This is a picture of a {}.", out.best().name)
    );
    // an Err from the callback stops generation and comes back
    let e = d
        .describe_streaming(
            &image(),
            &GenerateConfig::new().max_new_tokens(9),
            &mut |_| Err(Error::State("stop here".into())),
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "stop here");
    // beam search is not streamed, but passes through describe
    let beams = GenerateConfig::new().max_new_tokens(4).num_beams(2);
    assert!(d.describe(&image(), &beams).is_ok());
    let e = d
        .describe_streaming(&image(), &beams, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_beams"), "{e}");
    // a prompt longer than the context is an error, not a silent crop
    let mut d = d.template(&"{class} ".repeat(20)).unwrap();
    let e = d
        .describe(&image(), &GenerateConfig::new().max_new_tokens(2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("64 context tokens"), "{e}");
}

fn llama_tiny_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/llama_tiny")
}

#[test]
fn describer_with_a_chat_llama_renders_the_template_and_returns_the_reply() {
    // (a short system prompt and template: the tiny model has a 64-token context)
    let lm = CausalLm::from_pretrained(llama_tiny_dir())
        .unwrap()
        .with_system_prompt("Be brief.");
    assert!(lm.is_chat());
    let im_end = lm.tokenizer().token_to_id("<|im_end|>").unwrap();
    assert!(lm.stop_tokens().contains(&im_end), "{:?}", lm.stop_tokens());
    let (net, names) = tiny_classifier(false);
    let d = Describer::new(SequentialClassifier::new(net, &names).unwrap(), lm).unwrap();
    assert_eq!(
        d.prompt_template().source(),
        handgrad::describe::CHAT_TEMPLATE
    );
    let mut d = d.template("a {class}").unwrap();
    for cfg in [
        GenerateConfig::new().max_new_tokens(12),
        GenerateConfig::new()
            .max_new_tokens(12)
            .do_sample(true)
            .seed(2),
    ] {
        let (plain, streamed, pieces) = describe_twice(&mut d, &image(), &cfg);
        assert_eq!(plain, streamed);
        assert_eq!(plain.message, format!("a {}", plain.best().name));
        let want_prompt = format!(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n\
             <|im_start|>assistant\n",
            plain.message
        );
        assert_eq!(plain.prompt, want_prompt);
        assert!(
            !plain.text.is_empty() && !plain.text.contains("<|im_start|>user"),
            "the reply alone: {plain:?}"
        );
        assert_eq!(pieces, plain.text);
    }
    // from the GGUF file, without a system prompt: the template's default one
    let gguf = llama_tiny_dir().with_file_name("llama_tiny.q8_0.gguf");
    let lm = CausalLm::from_gguf(&gguf).unwrap();
    assert!(lm.is_chat());
    assert_eq!(
        lm.render_prompt("Hi").unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn stop_tokens_end_the_text_and_are_left_out() {
    let mut lm = CausalLm::from_pretrained(llama_tiny_dir())
        .unwrap()
        .with_system_prompt("Be brief.");
    let prompt = lm.render_prompt("a cat").unwrap();
    let cfg = GenerateConfig::new().max_new_tokens(16);
    let full = lm.write(&prompt, &cfg, None).unwrap();
    // the ids the model writes, to pick one as a stop token
    let ids = lm.tokenizer().encode(&prompt).unwrap();
    let stops = lm.stop_tokens().to_vec();
    let out = lm
        .model_mut()
        .generate(&ids, &cfg.clone().stop_tokens(&stops))
        .unwrap();
    let new = &out[0][ids.len()..];
    let ends = new.last().is_some_and(|id| stops.contains(id));
    let body = if ends { &new[..new.len() - 1] } else { new };
    assert_eq!(full, lm.tokenizer().decode(body).unwrap());
    let at = (1..body.len())
        .find(|&i| !body[..i].contains(&body[i]))
        .expect("a token not seen before");
    let (model, tok) = lm.into_parts();
    let mut lm = CausalLm::new(model, tok)
        .unwrap()
        .with_stop_tokens(&[body[at]]);
    let cut = lm.write(&prompt, &cfg, None).unwrap();
    assert_eq!(
        cut,
        format!("{prompt}{}", lm.tokenizer().decode(&body[..at]).unwrap())
    );
    let mut pieces = String::new();
    let streamed = lm
        .write(
            &prompt,
            &cfg,
            Some(&mut |p: &str| {
                pieces.push_str(p);
                Ok(())
            }),
        )
        .unwrap();
    assert_eq!(streamed, cut);
    assert_eq!(format!("{prompt}{pieces}"), cut);
}
