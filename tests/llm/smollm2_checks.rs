//! The SmolLM2 tokenizer checks, shared by the GGUF test (and usable on any other source of the
//! same tokenizer): every case of smollm2_tokenizer_cases.json and the prompt ids of
//! smollm2_expect.json.

use crate::tokenizer_llama::fixtures;
use handgrad::tokenizer::{
    BpeTokenizer, ChatTemplate, EncodeOptions, Message, Pretokenizer, Tokenizer,
};
use serde_json::Value;

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect(name);
    serde_json::from_str(&text).expect(name)
}

fn ids(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// `smol` is the tokenizer as the GGUF describes it (pre-tokenizer `smollm`); `gpt2` the same
/// with [`Pretokenizer::Gpt2`] (what transformers builds from the GGUF).
pub(crate) fn check_smollm2(smol: &BpeTokenizer, gpt2: &BpeTokenizer) {
    assert_eq!(smol.pretokenizer(), Pretokenizer::SmolLm);
    assert_eq!(gpt2.pretokenizer(), Pretokenizer::Gpt2);
    assert_eq!(smol.vocab_size(), 49152);
    assert_eq!(smol.num_merges(), 48900);
    assert_eq!(
        (smol.bos_token_id(), smol.eos_token_id()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (smol.pad_token_id(), smol.unk_token_id()),
        (Some(2), Some(0))
    );
    assert!(!smol.options().add_bos_token);
    let cases = json("smollm2_tokenizer_cases.json");
    let list = cases["cases"].as_array().unwrap();
    assert_eq!(list.len(), 36);
    let mut differs = 0;
    for case in list {
        let text = case["text"].as_str().unwrap();
        let got = gpt2.encode(text).unwrap();
        assert_eq!(got, ids(&case["ids"]), "GPT-2 pre: {text:?}");
        let tokens: Vec<&str> = got
            .iter()
            .map(|&id| gpt2.id_to_token(id).unwrap())
            .collect();
        let expected: Vec<&str> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens, expected, "{text:?}");
        assert_eq!(
            gpt2.decode(&got).unwrap(),
            case["decoded"].as_str().unwrap()
        );
        let smol_ids = smol.encode(text).unwrap();
        assert_eq!(
            smol_ids,
            ids(&case["ids_smollm_pre"]),
            "smollm pre: {text:?}"
        );
        differs += usize::from(smol_ids != got);
        if let Some(as_text) = case.get("ids_special_as_text") {
            let o = EncodeOptions {
                parse_special: false,
                ..Default::default()
            };
            assert_eq!(
                gpt2.encode_with(text, o).unwrap(),
                ids(as_text),
                "{text:?} as text"
            );
            assert_eq!(
                smol.encode_with(text, o).unwrap(),
                ids(as_text),
                "{text:?} as text"
            );
        }
    }
    assert_eq!(
        differs,
        cases["n_smollm_pre_differs"].as_u64().unwrap() as usize
    );
    // The chat prompts: rendered by the GGUF's template, tokenised with control tokens whole.
    let expect = json("smollm2_expect.json");
    let template = ChatTemplate::new(expect["chat_template"].as_str().unwrap()).unwrap();
    for case in expect["cases"].as_array().unwrap() {
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let prompt = template.render(&messages, true).unwrap();
        assert_eq!(prompt, case["rendered_prompt"].as_str().unwrap());
        assert_eq!(gpt2.encode(&prompt).unwrap(), ids(&case["prompt_ids"]));
        assert_eq!(smol.encode(&prompt).unwrap(), ids(&case["prompt_ids"]));
    }
    assert_eq!(template.stop_token_ids(smol), [2]);
}
