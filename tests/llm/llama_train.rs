//! Training the Llama model by hand-written backprop: the whole tiny GQA Llama against the
//! float64 reference (loss, per-token loss, every parameter's gradient, both parts of the tied
//! embedding's gradient), finite-difference checks of the RMSNorm, RoPE, SwiGLU and GQA
//! attention backwards, thread-count independence, over-fitting a string, and errors.

use crate::common::{grad_check, random_tensor, weighted_sum, Fixture};
use crate::llama::{ids, TINY};
use handgrad::ops::attention::{attention_backward, attention_forward, Heads};
use handgrad::ops::quant::{QMatrix, QType};
use handgrad::ops::rms_norm::{rms_norm_backward, rms_norm_forward};
use handgrad::ops::rope::{RopeLayout, RopeTables};
use handgrad::ops::swiglu::{swiglu_backward, swiglu_forward};
use handgrad::optim::{AdamW, Optimizer};
use handgrad::tokenizer::{Gpt2Tokenizer, Tokenizer};
use handgrad::transformer::llama::{shift_labels, Weight};
use handgrad::transformer::{Llama, LlamaConfig, IGNORE_INDEX};
use handgrad::{Error, Tensor};
use ndarray::{s, Array2, Array3, Array4, Ix1, Ix2, Ix3, IxDyn};

/// The tiny model, the fixture and its HF-shifted batch.
fn tiny_batch() -> (Llama, Fixture, Array2<usize>, Array2<usize>) {
    let f = Fixture::load("llama/llama_tiny_train");
    let model = Llama::from_pretrained(TINY).unwrap();
    let x = ids(&f, "input_ids");
    let y = shift_labels(x.view());
    (model, f, x, y)
}

#[test]
fn tiny_llama_loss_and_every_gradient_match_the_reference() {
    let (mut model, f, x, y) = tiny_batch();
    // the explicit targets of the fixture are the shifted ids
    let targets = ids(&f, "targets");
    assert_eq!(y.slice(s![.., ..targets.ncols()]), targets);
    assert!(y.column(y.ncols() - 1).iter().all(|&t| t == IGNORE_INDEX));

    let logits = model.forward(x.view()).unwrap();
    f.check("logits", &logits.clone().into_dyn());
    // per-token CE of logits[:, :-1] against ids[:, 1:] (the crate's fused kernel)
    let (b, t, v) = logits.dim();
    let rows = logits
        .slice(s![.., ..t - 1, ..])
        .to_owned()
        .into_shape_with_order(((t - 1) * b, v))
        .unwrap();
    let labels: Vec<usize> = targets.iter().copied().collect();
    let (token_loss, _) =
        handgrad::ops::cross_entropy::softmax_cross_entropy_per_sample(rows.view(), &labels);
    f.check(
        "debug.token_loss",
        &token_loss
            .into_shape_with_order(IxDyn(&[b, t - 1]))
            .unwrap(),
    );

    model.zero_grad();
    let loss = model.forward_loss(x.view(), y.view()).unwrap();
    f.check("loss", &Tensor::from_elem(IxDyn(&[]), loss));
    model.backward().unwrap();
    let params = model.params();
    assert_eq!(
        params.len(),
        20,
        "every tensor of model.safetensors is a parameter"
    );
    for (name, p) in &params {
        f.check(&format!("grad.{name}"), &p.grad);
    }
    // the training forward computes the inference forward's logits (same kernels, same order)
    let again = model.forward(x.view()).unwrap();
    assert_eq!(again, logits);
}

#[test]
fn tied_embedding_gradient_is_the_lookup_part_plus_the_head_part() {
    let (tied, f, x, y) = tiny_batch();
    // the same weights untied: lm_head.weight a copy of the embedding
    let mut sd = tied.state_dict();
    sd.insert(
        "lm_head.weight".into(),
        sd["model.embed_tokens.weight"].clone(),
    );
    let mut cfg: LlamaConfig = tied.config().clone();
    cfg.tie_word_embeddings = false;
    let mut untied = Llama::from_state_dict(cfg, sd, "untied copy").unwrap();
    untied.forward_loss(x.view(), y.view()).unwrap();
    untied.backward().unwrap();
    let grads: std::collections::BTreeMap<_, _> = untied
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.grad.clone()))
        .collect();
    assert_eq!(grads.len(), 21);
    f.check(
        "debug.grad_embed_from_embedding",
        &grads["model.embed_tokens.weight"],
    );
    f.check("debug.grad_embed_from_lm_head", &grads["lm_head.weight"]);
    f.check(
        "grad.model.embed_tokens.weight",
        &(&grads["model.embed_tokens.weight"] + &grads["lm_head.weight"]),
    );
}

#[test]
fn gradients_accumulate_until_zero_grad() {
    let (mut model, _, x, y) = tiny_batch();
    model.forward_loss(x.view(), y.view()).unwrap();
    model.backward().unwrap();
    let once: Vec<Tensor> = model.params().iter().map(|(_, p)| p.grad.clone()).collect();
    model.forward_loss(x.view(), y.view()).unwrap();
    model.backward().unwrap();
    for ((name, p), g) in model.params().iter().zip(&once) {
        let twice = g * 2.0;
        crate::common::assert_close(&p.grad, &twice, 1e-6, 1e-5, name);
    }
    model.zero_grad();
    assert!(model
        .params()
        .iter()
        .all(|(_, p)| p.grad.iter().all(|&g| g == 0.0)));
}

#[test]
fn rms_norm_backward_matches_finite_differences() {
    let (n, c, eps) = (4, 6, 1e-5f32);
    let x = random_tensor(&[n, c], 1);
    let w = random_tensor(&[c], 2).mapv(|v| 1.0 + 0.5 * v);
    let r = random_tensor(&[n, c], 3);
    let forward = |x: &Tensor, w: &Tensor| -> f64 {
        let mut y = Array2::<f32>::zeros((n, c));
        let x2 = x.view().into_dimensionality::<Ix2>().unwrap();
        let w1 = w.view().into_dimensionality::<Ix1>().unwrap();
        rms_norm_forward(x2, w1, eps, y.view_mut(), None);
        weighted_sum(&y.into_dyn(), &r)
    };
    let mut y = Array2::<f32>::zeros((n, c));
    let mut rstd = ndarray::Array1::<f32>::zeros(n);
    let (x2, w1) = (
        x.view().into_dimensionality::<Ix2>().unwrap(),
        w.view().into_dimensionality::<Ix1>().unwrap(),
    );
    rms_norm_forward(x2, w1, eps, y.view_mut(), Some(rstd.view_mut()));
    let mut dx = Array2::<f32>::zeros((n, c));
    let mut dw = ndarray::Array1::<f32>::zeros(c);
    let r2 = r.view().into_dimensionality::<Ix2>().unwrap();
    rms_norm_backward(r2, x2, w1, rstd.view(), dx.view_mut(), dw.view_mut());
    grad_check(
        "rms_norm dx",
        &x,
        &dx.into_dyn(),
        |x| forward(x, &w),
        1e-2,
        2e-3,
    );
    grad_check(
        "rms_norm dw",
        &w,
        &dw.into_dyn(),
        |w| forward(&x, w),
        1e-2,
        2e-3,
    );
}

#[test]
fn rope_backward_matches_finite_differences_in_both_layouts() {
    let (hs, nh) = (8, 3);
    let positions = [0usize, 3, 7, 12];
    for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
        let rope = RopeTables::new(hs, 10000.0, 16, layout);
        // rows wider than the rotated heads: the extra channels pass through untouched
        let width = nh * hs + 4;
        let x = random_tensor(&[positions.len(), width], 4);
        let r = random_tensor(&[positions.len(), width], 5);
        let forward = |x: &Tensor| -> f64 {
            let mut y = x.clone().into_dimensionality::<Ix2>().unwrap();
            rope.apply(y.view_mut(), nh, &positions, false);
            weighted_sum(&y.into_dyn(), &r)
        };
        let mut dx = r.clone().into_dimensionality::<Ix2>().unwrap();
        let mut dx_heads = dx.view_mut();
        rope.apply(dx_heads.view_mut(), nh, &positions, true);
        grad_check(
            &format!("rope {layout:?} dx"),
            &x,
            &dx.into_dyn(),
            forward,
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let (n, f) = (3, 7);
    let g = random_tensor(&[n, f], 6).mapv(|v| 3.0 * v);
    let u = random_tensor(&[n, f], 7);
    let r = random_tensor(&[n, f], 8);
    let forward = |g: &Tensor, u: &Tensor| -> f64 {
        let mut a = Array2::<f32>::zeros((n, f));
        swiglu_forward(
            g.view().into_dimensionality::<Ix2>().unwrap(),
            u.view().into_dimensionality::<Ix2>().unwrap(),
            a.view_mut(),
        );
        weighted_sum(&a.into_dyn(), &r)
    };
    let (mut dg, mut du) = (Array2::<f32>::zeros((n, f)), Array2::<f32>::zeros((n, f)));
    swiglu_backward(
        r.view().into_dimensionality::<Ix2>().unwrap(),
        g.view().into_dimensionality::<Ix2>().unwrap(),
        u.view().into_dimensionality::<Ix2>().unwrap(),
        dg.view_mut(),
        du.view_mut(),
    );
    grad_check(
        "swiglu dg",
        &g,
        &dg.into_dyn(),
        |g| forward(g, &u),
        1e-2,
        2e-3,
    );
    grad_check(
        "swiglu du",
        &u,
        &du.into_dyn(),
        |u| forward(&g, u),
        1e-2,
        2e-3,
    );
}

#[test]
fn gqa_attention_backward_matches_finite_differences() {
    // 4 query heads share 2 key/value heads: dk, dv are sums over the two query heads of a group
    let (b, t, hs) = (2, 5, 4);
    let heads = Heads::gqa(4, 2);
    let width = heads.qkv_width(hs);
    let qkv = random_tensor(&[b, t, width], 9).mapv(|v| 2.0 * v);
    let r = random_tensor(&[b, t, heads.n_head * hs], 10);
    let forward = |qkv: &Tensor| -> f64 {
        let mut att = Array4::<f32>::zeros((b, heads.n_head, t, t));
        let mut y = Array3::<f32>::zeros((b, t, heads.n_head * hs));
        let q3 = qkv.view().into_dimensionality::<Ix3>().unwrap();
        attention_forward(q3, heads, att.view_mut(), y.view_mut(), None);
        weighted_sum(&y.into_dyn(), &r)
    };
    let mut att = Array4::<f32>::zeros((b, heads.n_head, t, t));
    let mut y = Array3::<f32>::zeros((b, t, heads.n_head * hs));
    let q3 = qkv.view().into_dimensionality::<Ix3>().unwrap();
    attention_forward(q3, heads, att.view_mut(), y.view_mut(), None);
    let mut dqkv = Array3::<f32>::zeros((b, t, width));
    let r3 = r.view().into_dimensionality::<Ix3>().unwrap();
    attention_backward(r3, q3, heads, att.view(), dqkv.view_mut(), None);
    // a key/value head's gradient is not zero only because both of its query heads use it
    assert!(dqkv.slice(s![.., .., 4 * hs..]).iter().any(|&g| g != 0.0));
    grad_check(
        "GQA attention dqkv",
        &qkv,
        &dqkv.into_dyn(),
        forward,
        1e-2,
        3e-3,
    );
}

/// `steps` AdamW steps on the tiny model (longer batch than the fixture: wide enough for the
/// kernels to split work); returns the losses and the final parameters.
fn train_run(steps: usize) -> (Vec<f32>, Vec<Tensor>) {
    let mut model = Llama::from_pretrained(TINY).unwrap();
    let (b, t) = (4, 64);
    let x = Array2::from_shape_fn((b, t), |(i, j)| (i * 37 + j * 11 + (i * j) % 7) % 333);
    let y = shift_labels(x.view());
    let mut opt = AdamW::new(1e-2).weight_decay(0.1).decay_min_rank(2);
    let mut losses = Vec::new();
    for _ in 0..steps {
        model.zero_grad();
        losses.push(model.forward_loss(x.view(), y.view()).unwrap());
        model.backward().unwrap();
        opt.step(&mut model.params_mut()).unwrap();
    }
    let params = model
        .params()
        .into_iter()
        .map(|(_, p)| p.value.clone())
        .collect();
    (losses, params)
}

#[test]
fn training_is_bit_identical_on_one_and_two_threads() {
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| train_run(3))
    };
    let (l1, p1) = run(1);
    let (l2, p2) = run(2);
    assert_eq!(l1, l2, "losses differ between 1 and 2 threads");
    for (i, (a, b)) in p1.iter().zip(&p2).enumerate() {
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "parameter {i} differs between 1 and 2 threads"
        );
    }
    assert!(l1[2] < l1[0], "the loss went down: {l1:?}");
}

#[test]
fn fine_tuning_overfits_a_string() {
    let tok = Gpt2Tokenizer::from_dir(TINY).unwrap();
    let text = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps again.";
    let ids_v = tok.encode(text).unwrap();
    let t = ids_v.len().min(64);
    let x = Array2::from_shape_vec((1, t), ids_v[..t].to_vec()).unwrap();
    let y = shift_labels(x.view());
    let mut model = Llama::from_pretrained(TINY).unwrap();
    let mut opt = AdamW::new(1e-2).weight_decay(0.0);
    let first = model.loss(x.view(), y.view()).unwrap();
    let mut last = first;
    for _ in 0..60 {
        model.zero_grad();
        last = model.forward_loss(x.view(), y.view()).unwrap();
        model.backward().unwrap();
        opt.step(&mut model.params_mut()).unwrap();
    }
    let after = model.loss(x.view(), y.view()).unwrap();
    assert!(first > 5.0, "starts near uniform: {first}");
    assert!(
        after < 0.5,
        "loss after 60 AdamW steps: {after} (last training loss {last})"
    );
}

#[test]
fn training_errors_name_the_problem() {
    let (mut model, _, x, y) = tiny_batch();
    // backward without a training forward
    let e = model.backward().unwrap_err();
    assert!(
        e.to_string().contains("needs a preceding forward_loss"),
        "{e}"
    );
    // an inference-only forward in between also invalidates the cache
    model.forward_loss(x.view(), y.view()).unwrap();
    model.loss(x.view(), y.view()).unwrap();
    assert!(matches!(model.backward(), Err(Error::State(_))));
    // targets shaped unlike the ids
    let e = model
        .forward_loss(x.view(), y.slice(s![.., ..3]))
        .unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("targets shaped like"),
        "{e}"
    );
    // a target out of range
    let mut bad = y.clone();
    bad[[1, 2]] = 333;
    let e = model.forward_loss(x.view(), bad.view()).unwrap_err();
    assert!(e.to_string().contains("target 333 at (b=1, t=2)"), "{e}");
    // too long for the position tables
    let long = Array2::<usize>::zeros((1, 65));
    let e = model.forward_loss(long.view(), long.view()).unwrap_err();
    assert!(
        e.to_string().contains("max_position_embeddings = 64"),
        "{e}"
    );
    // encoded (GGUF-style) weights are not trainable: the message says what to do
    let sd = model.state_dict();
    let cfg = model.config().clone();
    let mut layers = model.layers().to_vec();
    let wq = layers[1].q_proj.to_f32();
    layers[1].q_proj = Weight::quant(
        "q",
        QMatrix::quantize(wq.view(), QType::Q8_0).unwrap(),
        32,
        32,
    )
    .unwrap();
    let embed = Weight::dense("e", sd["model.embed_tokens.weight"].clone(), 333, 32).unwrap();
    let norm = handgrad::param::Param::new(sd["model.norm.weight"].clone());
    let q = Llama::from_parts(cfg, embed, layers, norm, None, RopeLayout::HalfSplit).unwrap();
    assert!(!q.is_trainable());
    let mut q2 = q.clone();
    let e = q2.forward_loss(x.view(), y.view()).unwrap_err();
    assert!(matches!(e, Error::State(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("model.layers.1.self_attn.q_proj.weight")
            && msg.contains("Q8_0")
            && msg.contains("to_f32()"),
        "{msg}"
    );
    // ... and its f32 copy is
    let mut f = q.to_f32().unwrap();
    assert!(f.is_trainable());
    assert!(f.forward_loss(x.view(), y.view()).unwrap().is_finite());
    f.backward().unwrap();
}

#[test]
fn gradient_checkpointing_gives_bit_identical_gradients() {
    let (mut plain, f, x, y) = tiny_batch();
    let mut ckpt = plain.clone();
    ckpt.set_gradient_checkpointing(true);
    assert!(ckpt.gradient_checkpointing() && !plain.gradient_checkpointing());
    for _ in 0..2 {
        // twice: the second step reuses every buffer
        plain.zero_grad();
        ckpt.zero_grad();
        let a = plain.forward_loss(x.view(), y.view()).unwrap();
        let b = ckpt.forward_loss(x.view(), y.view()).unwrap();
        assert_eq!(a.to_bits(), b.to_bits());
        plain.backward().unwrap();
        ckpt.backward().unwrap();
        for ((name, p), (_, q)) in plain.params().iter().zip(ckpt.params()) {
            assert!(
                p.grad
                    .iter()
                    .zip(q.grad.iter())
                    .all(|(u, v)| u.to_bits() == v.to_bits()),
                "{name}: checkpointed gradient differs"
            );
        }
    }
    // and the checkpointed gradients are the reference ones
    for (name, p) in ckpt.params() {
        f.check(&format!("grad.{name}"), &p.grad);
    }
}
