//! Chat templates: SmolLM2's template against smollm2_expect.json (rendered prompts, and their
//! ids under the tiny tokenizer's control tokens), other message lists rendered by Python's
//! jinja2 with transformers' settings (expected strings below), and template errors.

use crate::tokenizer_llama::fixtures;
use handgrad::tokenizer::{BpeTokenizer, ChatTemplate, Message, Tokenizer};
use serde_json::Value;

fn expect() -> Value {
    let text = std::fs::read_to_string(fixtures().join("smollm2_expect.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn err_text<T: std::fmt::Debug>(r: handgrad::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn smollm2_template_renders_every_expected_prompt() {
    let e = expect();
    let source = e["chat_template"].as_str().unwrap();
    let from_gguf_string = ChatTemplate::new(source).unwrap();
    let builtin = ChatTemplate::smollm2();
    assert_eq!(builtin.source(), source);
    let from_dir = ChatTemplate::from_dir(fixtures().join("llama_tiny")).unwrap();
    let cases = e["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for t in [&from_gguf_string, &builtin, &from_dir] {
        for case in cases {
            let rendered = t.render(&messages(&case["messages"]), true).unwrap();
            assert_eq!(rendered, case["rendered_prompt"].as_str().unwrap());
        }
    }
    assert_eq!(builtin.stop_strings(), ["<|im_end|>"]);
    assert_eq!(from_dir.stop_strings(), ["<|im_end|>"]);
    let tok = BpeTokenizer::from_dir(fixtures().join("llama_tiny")).unwrap();
    assert_eq!(builtin.stop_token_ids(&tok), [2]);
}

#[test]
fn smollm2_template_system_multi_turn_and_no_generation_prompt() {
    // Expected strings: jinja2 3.1 with trim_blocks and lstrip_blocks (as transformers).
    let t = ChatTemplate::smollm2();
    let sys = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
    let cases: Vec<(Vec<Message>, bool, String)> = vec![
        (
            vec![Message::system("You are terse."), Message::user("Hi")],
            true,
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".into(),
        ),
        (
            vec![
                Message::user("Hi"),
                Message::assistant("Hello! How can I help?"),
                Message::user("Tell me a joke."),
            ],
            true,
            format!("{sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nTell me a joke.<|im_end|>\n<|im_start|>assistant\n"),
        ),
        (
            vec![Message::user("Hi"), Message::assistant("Hello!")],
            false,
            format!("{sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"),
        ),
        (vec![], true, "<|im_start|>assistant\n".into()),
    ];
    for (m, add, expected) in cases {
        assert_eq!(t.render(&m, add).unwrap(), expected, "{m:?}");
    }
}

#[test]
fn rendered_prompt_tokenises_with_control_tokens_whole() {
    // The tiny tokenizer has SmolLM2's control tokens at the same ids (1, 2).
    let tok = BpeTokenizer::from_dir(fixtures().join("llama_tiny")).unwrap();
    let e = expect();
    for case in e["cases"].as_array().unwrap() {
        let prompt = ChatTemplate::smollm2()
            .render(&messages(&case["messages"]), true)
            .unwrap();
        let ids = tok.encode(&prompt).unwrap();
        let expected: Vec<usize> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let specials = |ids: &[usize]| -> Vec<usize> {
            ids.iter().copied().filter(|&id| id < 17).collect()
        };
        assert_eq!(specials(&ids), specials(&expected));
        assert_eq!(tok.decode(&ids).unwrap(), prompt);
    }
}

#[test]
fn whitespace_control_filters_and_methods_match_transformers() {
    // A Llama-2-like template exercising trim_blocks / lstrip_blocks, `| upper`, `| trim`,
    // Python's `.strip()` and the bos/eos variables; expected output from jinja2.
    let source = "{{ bos_token }}\n{% for message in messages %}\n    {% if message['role'] == 'system' %}\n<<SYS>>{{ message['content'].strip() }}<</SYS>>\n    {% else %}\n[{{ message['role'] | upper }}] {{ message['content'] | trim }}{{ eos_token }}\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}[ASSISTANT]{% endif %}\n";
    let t = ChatTemplate::new(source).unwrap().with_special_tokens("<s>", "</s>");
    let m = [
        Message::system("  Be kind. "),
        Message::user(" Hi\n"),
        Message::assistant("Hello"),
    ];
    assert_eq!(
        t.render(&m, true).unwrap(),
        "<s>\n<<SYS>>Be kind.<</SYS>>\n[USER] Hi</s>\n[ASSISTANT] Hello</s>\n[ASSISTANT]"
    );
    assert_eq!(t.stop_strings(), ["</s>"]);
    let chatml = ChatTemplate::chatml();
    assert_eq!(
        chatml.render(&[Message::user("Hi")], false).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn broken_templates_are_errors_with_the_engines_message() {
    let e = err_text(ChatTemplate::new("{% for m in messages %}{{ m.content }}"));
    assert!(e.starts_with("chat template: cannot parse: syntax error") && e.contains("unexpected end of input"), "{e}");
    // An unknown filter is found when rendering (the engine resolves filters at run time).
    let t = ChatTemplate::new("{{ messages | no_such_filter }}").unwrap();
    let e = err_text(t.render(&[], true));
    assert!(e.contains("unknown filter"), "{e}");
    let t = ChatTemplate::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}ok",
    )
    .unwrap();
    assert_eq!(t.render(&[Message::user("x")], true).unwrap(), "ok");
    let e = err_text(t.render(&[Message::assistant("x")], true));
    assert!(
        e.starts_with("chat template: cannot render")
            && e.contains("Conversations must start with a user message"),
        "{e}"
    );
    let e = err_text(ChatTemplate::new("{{ not_given }}").unwrap().render(&[], true));
    assert!(e.contains("undefined"), "{e}");
    // A defined-test on a missing variable is fine (as in Llama 3's template).
    let t = ChatTemplate::new("{% if date_string is not defined %}none{% endif %}{% if tools %}x{% endif %}").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "none");
    // A runaway loop stops at the fuel limit instead of hanging.
    let t = ChatTemplate::new("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}").unwrap();
    let e = err_text(t.render(&[], false));
    assert!(e.contains("fuel"), "{e}");
    // tokenizer_config.json sources.
    let e = err_text(ChatTemplate::from_tokenizer_config("{}"));
    assert!(e.contains("no \"chat_template\""), "{e}");
    let t = ChatTemplate::from_tokenizer_config(
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"{{ eos_token }}\"}], \"eos_token\": {\"content\": \"</s>\"}}",
    )
    .unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "</s>");
    let e = err_text(ChatTemplate::from_dir("/no/such/folder"));
    assert!(e.contains("/no/such/folder") && e.contains("chat_template.jinja"), "{e}");
}
