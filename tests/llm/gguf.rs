//! The GGUF reader on the llama_tiny fixtures, the writer's round trip, and hostile files.

use handgrad::io::{gguf_bytes, write_gguf, GgufFile, GgufTensorRef, GgufValue, SharedBytes};
use handgrad::ops::quant::{QMatrix, QType};
use ndarray::Array2;
use std::collections::BTreeMap;

pub const TYPES: [&str; 5] = ["f32", "f16", "q8_0", "q4_0", "q4_1"];

pub fn fixture_path(file: &str) -> String {
    format!("{}/tests/fixtures/llama/{file}", env!("CARGO_MANIFEST_DIR"))
}

pub fn open(kind: &str) -> GgufFile {
    GgufFile::open(fixture_path(&format!("llama_tiny.{kind}.gguf"))).expect("fixture parses")
}

/// `hyperparams` of `llama_tiny_gguf_<kind>.safetensors` (JSON).
pub fn hyperparams(kind: &str) -> serde_json::Value {
    let bytes =
        std::fs::read(fixture_path(&format!("llama_tiny_gguf_{kind}.safetensors"))).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    serde_json::from_str(&meta.metadata().as_ref().unwrap()["hyperparams"]).unwrap()
}

#[test]
fn metadata_values_and_types_as_the_readme_lists() {
    for (kind, file_type) in TYPES.iter().zip([0u32, 1, 7, 2, 3]) {
        let f = open(kind);
        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), 32);
        let u32s = [
            ("llama.block_count", 2),
            ("llama.context_length", 64),
            ("llama.embedding_length", 32),
            ("llama.feed_forward_length", 64),
            ("llama.attention.head_count", 4),
            ("llama.attention.head_count_kv", 2),
            ("llama.attention.key_length", 8),
            ("llama.attention.value_length", 8),
            ("general.file_type", file_type),
            ("llama.vocab_size", 333),
            ("llama.rope.dimension_count", 8),
            ("tokenizer.ggml.bos_token_id", 1),
            ("tokenizer.ggml.eos_token_id", 2),
            ("tokenizer.ggml.unknown_token_id", 0),
            ("tokenizer.ggml.padding_token_id", 2),
            ("general.quantization_version", 2),
        ];
        for (k, v) in u32s {
            assert_eq!(f.get(k), Some(&GgufValue::U32(v)), "{kind}: {k}");
            assert_eq!(f.u64(k).unwrap(), v as u64);
        }
        assert_eq!(
            f.get("llama.rope.freq_base"),
            Some(&GgufValue::F32(10000.0))
        );
        let eps = f.get("llama.attention.layer_norm_rms_epsilon").unwrap();
        assert_eq!(eps.type_name(), "float32");
        assert_eq!(eps.as_f64(), Some(9.999999747378752e-06));
        assert_eq!(
            f.f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
            1e-5f32
        );
        assert_eq!(f.string("general.architecture").unwrap(), "llama");
        assert_eq!(f.string("general.type").unwrap(), "model");
        assert_eq!(f.string("general.name").unwrap(), "Llama Tiny Dev");
        assert_eq!(f.string("tokenizer.ggml.model").unwrap(), "gpt2");
        assert_eq!(f.string("tokenizer.ggml.pre").unwrap(), "gpt2");
        let tokens = f.string_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.len(), 333);
        assert_eq!(tokens[..3], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
        let tt = f.i64_array("tokenizer.ggml.token_type").unwrap();
        assert_eq!(tt.len(), 333);
        assert!(tt[..17].iter().all(|&t| t == 3) && tt[17..].iter().all(|&t| t == 1));
        assert_eq!(
            f.get("tokenizer.ggml.token_type")
                .unwrap()
                .as_array()
                .unwrap()[0],
            GgufValue::I32(3)
        );
        let merges = f.string_array("tokenizer.ggml.merges").unwrap();
        assert_eq!(
            (merges.len(), merges[0], merges[1], merges[2]),
            (60, "Ġ t", "h e", "Ġ a")
        );
        for k in [
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.ggml.add_space_prefix",
        ] {
            assert_eq!(f.get(k), Some(&GgufValue::Bool(false)), "{k}");
        }
        let tpl = f.string("tokenizer.chat_template").unwrap();
        assert_eq!(tpl.chars().count(), 368);
        assert!(tpl.starts_with("{% for message in messages %}{% if loop.first and messages[0"));
        // File order: the README's list.
        assert_eq!(f.metadata()[0].0, "general.architecture");
        assert_eq!(
            f.metadata().last().unwrap().0,
            "general.quantization_version"
        );
        assert_eq!(f.metadata().len(), 30);
    }
}

#[test]
fn typed_getters_name_the_key_and_the_types() {
    let f = open("q4_1");
    let e = f.u64("llama.no_such_key").unwrap_err().to_string();
    assert!(
        e.contains("llama.no_such_key")
            && e.contains("missing")
            && e.contains("llama_tiny.q4_1.gguf"),
        "{e}"
    );
    let e = f.u64("general.name").unwrap_err().to_string();
    assert!(
        e.contains("general.name") && e.contains("string") && e.contains("non-negative integer"),
        "{e}"
    );
    let e = f.f32("llama.block_count").unwrap_err().to_string();
    assert!(e.contains("uint32") && e.contains("float32"), "{e}");
    let e = f
        .string_array("tokenizer.ggml.token_type")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("array<int32>") && e.contains("array of strings"),
        "{e}"
    );
    let e = f
        .i64_array("tokenizer.ggml.tokens")
        .unwrap_err()
        .to_string();
    assert!(e.contains("array<string>"), "{e}");
    let e = f.string("llama.rope.freq_base").unwrap_err().to_string();
    assert!(
        e.contains("float32") && e.contains("expected a string"),
        "{e}"
    );
}

#[test]
fn tensor_types_and_shapes_match_the_fixtures() {
    for kind in TYPES {
        let f = open(kind);
        let hp = hyperparams(kind);
        let want: BTreeMap<String, String> =
            serde_json::from_value(hp["tensor_types"].clone()).unwrap();
        assert_eq!(f.tensors().len(), 20, "{kind}");
        assert!(
            f.tensor_info("output.weight").is_none(),
            "tied head: no output.weight"
        );
        for t in f.tensors() {
            let ty = QType::from_ggml(t.ggml_type).unwrap();
            assert_eq!(ty.name(), want[&t.name], "{kind}: {}", t.name);
            assert_eq!(t.offset % 32, 0);
        }
        let emb = f.tensor_info("token_embd.weight").unwrap();
        assert_eq!(emb.dims, vec![32, 333]);
        let m = f.matrix("token_embd.weight").unwrap();
        assert_eq!((m.rows(), m.cols()), (333, 32));
        assert_eq!(
            f.tensor_info("blk.0.attn_k.weight").unwrap().dims,
            vec![32, 16]
        );
        assert_eq!(
            f.tensor_info("blk.0.ffn_down.weight").unwrap().dims,
            vec![64, 32]
        );
        let norm = f.tensor_f32("output_norm.weight").unwrap();
        assert_eq!(norm.shape(), &[32]);
        let e = f.matrix("output_norm.weight").unwrap_err().to_string();
        assert!(
            e.contains("output_norm.weight") && e.contains("[32]"),
            "{e}"
        );
        let e = f.matrix("output.weight").unwrap_err().to_string();
        assert!(e.contains("no tensor \"output.weight\""), "{e}");
        // Zero-copy: the matrix views the memory-mapped file.
        assert!(m.data().is_mapped());
    }
}

#[test]
fn f32_file_holds_the_hf_weights() {
    // The un-permuted tensors are bit-identical to model.safetensors (v, o, mlp, embeddings).
    let st = handgrad::io::read_safetensors(fixture_path("llama_tiny/model.safetensors")).unwrap();
    let f = open("f32");
    for (g, h) in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        (
            "blk.0.attn_v.weight",
            "model.layers.0.self_attn.v_proj.weight",
        ),
        (
            "blk.1.ffn_down.weight",
            "model.layers.1.mlp.down_proj.weight",
        ),
        ("output_norm.weight", "model.norm.weight"),
    ] {
        assert_eq!(f.tensor_f32(g).unwrap(), st.tensors[h], "{g}");
    }
}

/// A small valid file: a few metadata kinds and two tensors; the last tensor ends the file.
pub fn small_file() -> Vec<u8> {
    let meta = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String("llama".into()),
        ),
        ("a.u8".to_string(), GgufValue::U8(7)),
        ("a.i16".to_string(), GgufValue::I16(-3)),
        ("a.f64".to_string(), GgufValue::F64(0.25)),
        ("a.bool".to_string(), GgufValue::Bool(true)),
        (
            "a.nested".to_string(),
            GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::I64(-1), GgufValue::I64(2)]),
                GgufValue::Array(vec![GgufValue::I64(3)]),
            ]),
        ),
        (
            "a.strs".to_string(),
            GgufValue::Array(vec![
                GgufValue::String("x".into()),
                GgufValue::String("yz".into()),
            ]),
        ),
    ];
    let w = Array2::from_shape_fn((3, 32), |(i, j)| (i as f32 - 1.0) * 0.1 + j as f32 * 0.01);
    let q = QMatrix::quantize(w.view(), QType::Q4_1).unwrap();
    let v = QMatrix::quantize(Array2::from_elem((1, 8), 0.5f32).view(), QType::F32).unwrap();
    gguf_bytes(
        &meta,
        &[
            GgufTensorRef::matrix("w", &q),
            GgufTensorRef {
                name: "v",
                dims: vec![8],
                qtype: QType::F32,
                data: v.data(),
            },
        ],
    )
    .unwrap()
}

fn parse(bytes: &[u8]) -> handgrad::Result<GgufFile> {
    GgufFile::parse(SharedBytes::from_vec(bytes.to_vec()), "hostile.gguf")
}

#[test]
fn write_then_read_round_trips() {
    let bytes = small_file();
    let f = parse(&bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get("a.u8"), Some(&GgufValue::U8(7)));
    assert_eq!(f.get("a.i16"), Some(&GgufValue::I16(-3)));
    assert_eq!(f.get("a.f64").unwrap().as_f64(), Some(0.25));
    assert_eq!(f.get("a.bool"), Some(&GgufValue::Bool(true)));
    assert_eq!(
        f.get("a.nested").unwrap().as_array().unwrap()[0]
            .as_array()
            .unwrap()[0],
        GgufValue::I64(-1)
    );
    assert_eq!(f.string_array("a.strs").unwrap(), ["x", "yz"]);
    assert!(f.u64("a.i16").unwrap_err().to_string().contains("int16"));
    let w = f.matrix("w").unwrap();
    assert_eq!((w.rows(), w.cols(), w.qtype()), (3, 32, QType::Q4_1));
    assert_eq!(f.tensor_f32("v").unwrap().as_slice().unwrap(), &[0.5f32; 8]);
    // Through a file, atomically; a rewrite of a real fixture reproduces it byte for byte.
    let src = std::fs::read(fixture_path("llama_tiny.q4_1.gguf")).unwrap();
    let g = open("q4_1");
    let mats: Vec<(String, QMatrix, Vec<u64>)> = g
        .tensors()
        .iter()
        .map(|t| {
            let rows = t.dims[1..].iter().product::<u64>() as usize;
            let (q, b) = (
                QType::from_ggml(t.ggml_type).unwrap(),
                g.matrix(&t.name).ok(),
            );
            let m = b.unwrap_or_else(|| {
                let x = g
                    .tensor_f32(&t.name)
                    .unwrap()
                    .into_shape_with_order((rows, t.dims[0] as usize))
                    .unwrap();
                QMatrix::quantize(x.view(), q).unwrap()
            });
            (t.name.clone(), m, t.dims.clone())
        })
        .collect();
    let refs: Vec<GgufTensorRef> = mats
        .iter()
        .map(|(n, m, d)| GgufTensorRef {
            name: n,
            dims: d.clone(),
            qtype: m.qtype(),
            data: m.data(),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("handgrad-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("copy.gguf");
    write_gguf(&path, g.metadata(), &refs).unwrap();
    let copy = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(copy.len(), src.len());
    assert!(
        copy == src,
        "rewritten fixture differs from gguf-py's bytes"
    );
}

#[test]
fn writer_rejects_bad_input() {
    let m = QMatrix::quantize(Array2::zeros((2, 32)).view(), QType::Q8_0).unwrap();
    let bad = GgufTensorRef {
        name: "m",
        dims: vec![32, 3],
        qtype: QType::Q8_0,
        data: m.data(),
    };
    let e = gguf_bytes(&[], &[bad]).unwrap_err().to_string();
    assert!(e.contains("data of \"m\"") && e.contains("68 bytes"), "{e}");
    let dup = [
        GgufTensorRef::matrix("m", &m),
        GgufTensorRef::matrix("m", &m),
    ];
    assert!(gguf_bytes(&[], &dup)
        .unwrap_err()
        .to_string()
        .contains("each name once"));
    let mixed = vec![(
        "k".to_string(),
        GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]),
    )];
    assert!(gguf_bytes(&mixed, &[])
        .unwrap_err()
        .to_string()
        .contains("mixing uint8 and int8"));
    let align = vec![("general.alignment".to_string(), GgufValue::U32(24))];
    assert!(gguf_bytes(&align, &[])
        .unwrap_err()
        .to_string()
        .contains("power of two"));
}

#[test]
fn q_and_k_rows_are_permuted_as_llama_cpp_writes_them() {
    // Within each head, GGUF row 2j = HF row j and GGUF row 2j+1 = HF row j + hd/2.
    let st = handgrad::io::read_safetensors(fixture_path("llama_tiny/model.safetensors")).unwrap();
    let f = open("f32");
    let hd = f.u64("llama.rope.dimension_count").unwrap() as usize;
    for (g, h, heads) in [
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
            4,
        ),
        (
            "blk.1.attn_k.weight",
            "model.layers.1.self_attn.k_proj.weight",
            2,
        ),
    ] {
        let gm = f.matrix(g).unwrap().dequantize();
        let hm = &st.tensors[h];
        assert_eq!(gm.nrows(), heads * hd);
        for head in 0..heads {
            for j in 0..hd / 2 {
                for (gr, hr) in [(2 * j, j), (2 * j + 1, j + hd / 2)] {
                    let (gr, hr) = (head * hd + gr, head * hd + hr);
                    let hrow: Vec<f32> = (0..gm.ncols()).map(|c| hm[[hr, c]]).collect();
                    assert_eq!(gm.row(gr).to_vec(), hrow, "{g} row {gr} = {h} row {hr}");
                }
            }
        }
    }
}

#[test]
fn shared_bytes_slices_are_checked() {
    let b = SharedBytes::from_vec((0u8..10).collect());
    let s = b.slice(2..6).unwrap();
    assert_eq!(
        (&*s, s.len(), s.is_mapped()),
        (&[2u8, 3, 4, 5][..], 4, false)
    );
    assert_eq!(&*s.slice(1..3).unwrap(), &[3, 4]);
    let e = s.slice(2..5).unwrap_err().to_string();
    assert!(e.contains("2..5") && e.contains("inside 0..4"), "{e}");
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = b.slice(5..3);
    assert!(reversed.is_err());
    let e = SharedBytes::map_file("/nonexistent/x.gguf").unwrap_err();
    assert!(
        matches!(e, handgrad::Error::Io { .. }) && e.to_string().contains("/nonexistent/x.gguf")
    );
    let m = SharedBytes::map_file(fixture_path("llama_tiny.q4_0.gguf")).unwrap();
    assert!(m.is_mapped() && m.len() == 30688 && &m[..4] == b"GGUF");
}
