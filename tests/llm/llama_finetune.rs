//! Chat fine-tuning of the tiny Llama: the JSON-lines chat dataset (template rendering, loss
//! only on assistant tokens, IGNORE_INDEX padding, errors naming the line), training through
//! `LmTrainer` (loss goes down, validation), and checkpoints that resume bit-identically.

use crate::llama::TINY;
use handgrad::data::ChatDataset;
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate, Tokenizer};
use handgrad::transformer::{Llama, LmBatches, LmTrainOptions, LmTrainer, IGNORE_INDEX};
use handgrad::Error;

const CHATS: &str = r#"{"messages":[{"role":"user","content":"Capital of France?"},{"role":"assistant","content":"Paris."}]}
{"messages":[{"role":"user","content":"2+2?"},{"role":"assistant","content":"4."},{"role":"user","content":"3+3?"},{"role":"assistant","content":"6."}]}

{"messages":[{"role":"user","content":"Say hi."},{"role":"assistant","content":"Hi!"}],"id":7}
"#;

/// The tiny tokenizer and plain ChatML (the folder's SmolLM2 template adds a long default
/// system prompt, more than the tiny model's 64 positions in its tiny vocabulary).
fn tok_and_template() -> (BpeTokenizer, ChatTemplate) {
    (
        BpeTokenizer::from_dir(TINY).unwrap(),
        ChatTemplate::chatml(),
    )
}

#[test]
fn chat_dataset_trains_only_on_assistant_tokens_and_pads_with_ignore_index() {
    let (tok, tpl) = tok_and_template();
    let seq = 64;
    let data = ChatDataset::from_jsonl(CHATS, &tpl, &tok, seq, "chats.jsonl").unwrap();
    assert_eq!(data.len(), 3, "the empty line is skipped");
    assert_eq!(data.seq_len(), seq);
    let (x, y) = data.example(1);
    assert_eq!((x.len(), y.len()), (seq, seq));
    // the inputs are the rendered conversation, then padding (pad id 2 = <|im_end|>)
    let rendered = tpl
        .render(
            &[
                handgrad::tokenizer::Message::user("2+2?"),
                handgrad::tokenizer::Message::assistant("4."),
                handgrad::tokenizer::Message::user("3+3?"),
                handgrad::tokenizer::Message::assistant("6."),
            ],
            false,
        )
        .unwrap();
    let n = tok.encode(&rendered).unwrap().len();
    assert!(n < seq);
    assert_eq!(tok.decode(&x[..n]).unwrap(), rendered);
    assert!(x[n..].iter().all(|&id| id == 2));
    assert!(
        y[n - 1..].iter().all(|&t| t == IGNORE_INDEX),
        "no target at or after the end"
    );
    // targets are next tokens, and exactly the assistant turns (content + end-of-turn)
    for t in 0..seq - 1 {
        if y[t] != IGNORE_INDEX {
            assert_eq!(y[t], x[t + 1]);
        }
    }
    let trained: Vec<usize> = y.iter().copied().filter(|&t| t != IGNORE_INDEX).collect();
    assert_eq!(
        tok.decode(&trained).unwrap(),
        "4.<|im_end|>\n6.<|im_end|>\n",
        "only the assistant contents and their end-of-turn are learned"
    );
    // a batch stacks conversations
    let (bx, by) = data.batch_at(&[0, 2]);
    assert_eq!(bx.dim(), (2, seq));
    assert_eq!(by.row(1).to_vec(), data.example(2).1);
}

#[test]
fn chat_dataset_errors_name_the_line_and_the_problem() {
    let (tok, tpl) = tok_and_template();
    let bad = "{\"messages\":[]}\n{\"messages\": [{\"role\": \"user\"}]}\n";
    let e = ChatDataset::from_jsonl(bad, &tpl, &tok, 32, "bad.jsonl").unwrap_err();
    assert!(matches!(e, Error::Format { .. }));
    assert!(e.to_string().starts_with("bad.jsonl:2:"), "{e}");
    let e = ChatDataset::from_jsonl("not json\n", &tpl, &tok, 32, "x.jsonl").unwrap_err();
    assert!(
        e.to_string().contains("x.jsonl:1") && e.to_string().contains("messages"),
        "{e}"
    );
    // truncated before the assistant answers: nothing to learn
    let e = ChatDataset::from_jsonl(CHATS, &tpl, &tok, 8, "c.jsonl").unwrap_err();
    assert!(
        e.to_string().contains("conversation 1") && e.to_string().contains("no assistant token"),
        "{e}"
    );
    let e = ChatDataset::from_jsonl(CHATS, &tpl, &tok, 0, "c.jsonl").unwrap_err();
    assert!(e.to_string().contains("invalid seq_len = 0"), "{e}");
    let e = ChatDataset::from_jsonl(CHATS, &tpl, &tok, usize::MAX, "c.jsonl").unwrap_err();
    assert!(
        e.to_string().contains("seq_len") && e.to_string().contains("1..=1048576"),
        "{e}"
    );
    let e = ChatDataset::from_jsonl("\n\n", &tpl, &tok, 16, "empty.jsonl").unwrap_err();
    assert!(e.to_string().contains("empty.jsonl"), "{e}");
    let e = ChatDataset::from_jsonl_file("/nonexistent/chats.jsonl", &tpl, &tok, 16).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/nonexistent/chats.jsonl"));
}

fn opts(steps: usize) -> LmTrainOptions {
    LmTrainOptions {
        steps,
        batch_size: 3,
        lr: 3e-3,
        min_lr: Some(3e-4),
        warmup_steps: Some(2),
        eval_interval: 5,
        eval_windows: 3,
        seed: 11,
        verbose: false,
        ..Default::default()
    }
}

#[test]
fn lm_trainer_fine_tunes_the_llama_on_chats() {
    let (tok, tpl) = tok_and_template();
    let data = ChatDataset::from_jsonl(CHATS, &tpl, &tok, 48, "chats.jsonl").unwrap();
    let mut model = Llama::from_pretrained(TINY).unwrap();
    let mut trainer = LmTrainer::new(opts(40)).unwrap();
    let before = trainer.evaluate(&mut model, &data).unwrap();
    let h = trainer.train(&mut model, &data, Some(&data)).unwrap();
    assert_eq!(h.loss.len(), 40);
    assert_eq!(
        h.val_loss.iter().map(|v| v.0).collect::<Vec<_>>(),
        [5, 10, 15, 20, 25, 30, 35, 40]
    );
    let after = h.val_loss.last().unwrap().1;
    assert!(
        before > 4.0,
        "the untrained model does not know the answers: {before}"
    );
    assert!(
        after < 1.0,
        "validation loss after 40 steps: {after} (from {before})"
    );
    // a window longer than the model's positions is refused up front
    let long = ChatDataset::from_jsonl(CHATS, &tpl, &tok, 65, "chats.jsonl").unwrap();
    let e = LmTrainer::new(opts(4))
        .unwrap()
        .train(&mut model, &long, None)
        .unwrap_err();
    assert!(
        e.to_string().contains("max_position_embeddings = 64"),
        "{e}"
    );
}

#[test]
fn llama_checkpoint_resumes_exactly() {
    let (tok, tpl) = tok_and_template();
    let data = ChatDataset::from_jsonl(CHATS, &tpl, &tok, 40, "chats.jsonl").unwrap();
    // uninterrupted
    let mut a = Llama::from_pretrained(TINY).unwrap();
    let mut ta = LmTrainer::new(opts(8)).unwrap();
    let ha = ta.train(&mut a, &data, None).unwrap();
    // 3 steps, save, resume, 5 more
    let mut b = Llama::from_pretrained(TINY).unwrap();
    let mut tb = LmTrainer::new(opts(8)).unwrap();
    let h1 = tb.train_for(&mut b, &data, None, 3).unwrap();
    let path = std::env::temp_dir().join(format!(
        "handgrad-llama-ckpt-{}.safetensors",
        std::process::id()
    ));
    tb.save_llama_checkpoint(&b, &path).unwrap();
    let (mut c, mut tc) = LmTrainer::resume_llama(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(tc.step_count(), 3);
    let h2 = tc.train(&mut c, &data, None).unwrap();
    let joined: Vec<f32> = h1.loss.iter().chain(&h2.loss).copied().collect();
    assert_eq!(joined, ha.loss, "losses of the resumed run");
    for ((name, p), (_, q)) in a.params().iter().zip(c.params()) {
        assert!(
            p.value
                .iter()
                .zip(q.value.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs after resuming"
        );
    }
    // a GPT checkpoint is not a Llama checkpoint
    let e = LmTrainer::resume_llama("/nonexistent/ckpt.safetensors").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}
