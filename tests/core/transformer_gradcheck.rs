//! Finite-difference gradient checks of LayerNorm, the embeddings, causal self-attention and the
//! GPT-2 block; bit-identical results on 1 and 2 rayon threads; initialisation; error contracts.
//!
//! Tolerances: the checks run the f32 forward and accumulate `L = Σ out ⊙ r` in f64, with a
//! central difference of step `EPS = 1e-2`. The truncation error of a central difference is
//! `O(eps²·|f'''|)` ≈ 1e-4 for these smooth, O(1)-scaled functions, and f32 rounding in the
//! forward (~1e-7 relative on an `L` of order 1–10) becomes ~1e-7·10/(2·eps) ≈ 5e-5 in the
//! difference quotient. A relative tolerance of `TOL = 1e-2` (of `max(1, |num|, |ana|)`) is therefore
//! ~100× above the noise, yet a wrong formula (a missing term, a transposed product, a wrong
//! scale) is off by O(1) and fails. The embedding is linear, so it gets `1e-3`.

use crate::common;

use common::{grad_check, random_tensor, weighted_sum};
use handgrad::init::rng;
use handgrad::layers::{Embedding, LayerNorm};
use handgrad::ops::embedding as emb;
use handgrad::transformer::{Block, CausalSelfAttention, Mlp};
use handgrad::{Error, Layer, Mode, Param, Tensor};
use ndarray::IxDyn;

const EPS: f32 = 1e-2;
const TOL: f64 = 1e-2;

/// The forward/backward/param interface shared by the modules under test.
trait Module: Clone {
    fn fwd(&mut self, x: &Tensor, train: bool) -> Tensor;
    fn bwd(&mut self, dout: &Tensor) -> Tensor;
    fn param_mut(&mut self, name: &str) -> &mut Param;
}

fn find<'a>(params: Vec<(String, &'a mut Param)>, name: &str) -> &'a mut Param {
    params
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
}

impl Module for LayerNorm {
    fn fwd(&mut self, x: &Tensor, train: bool) -> Tensor {
        let mode = if train { Mode::Train } else { Mode::Eval };
        self.forward(x, mode).unwrap()
    }
    fn bwd(&mut self, dout: &Tensor) -> Tensor {
        self.backward(dout).unwrap()
    }
    fn param_mut(&mut self, name: &str) -> &mut Param {
        find(self.params_mut(), name)
    }
}

macro_rules! module {
    ($t:ty) => {
        impl Module for $t {
            fn fwd(&mut self, x: &Tensor, train: bool) -> Tensor {
                self.forward(
                    x,
                    if train {
                        handgrad::Mode::Train
                    } else {
                        handgrad::Mode::Eval
                    },
                )
                .unwrap()
            }
            fn bwd(&mut self, dout: &Tensor) -> Tensor {
                self.backward(dout).unwrap()
            }
            fn param_mut(&mut self, name: &str) -> &mut Param {
                find(self.params_mut(), name)
            }
        }
    };
}
module!(CausalSelfAttention);
module!(Mlp);
module!(Block);

/// Checks `dL/dx` and `dL/d<param>` for each of `params` by central differences.
fn check_module<M: Module>(what: &str, m: &M, x: &Tensor, params: &[&str]) {
    let out = m.clone().fwd(x, false);
    let r = random_tensor(out.shape(), 99);
    let mut trained = m.clone();
    let out_train = trained.fwd(x, true);
    assert_eq!(out, out_train, "{what}: eval and train forwards differ");
    let dx = trained.bwd(&r);
    let loss_x = |xp: &Tensor| weighted_sum(&m.clone().fwd(xp, false), &r);
    grad_check(&format!("{what} dx"), x, &dx, loss_x, EPS, TOL);
    for &name in params {
        let p = trained.param_mut(name).clone();
        let loss_w = |wp: &Tensor| {
            let mut mm = m.clone();
            mm.param_mut(name).value = wp.clone();
            weighted_sum(&mm.fwd(x, false), &r)
        };
        grad_check(
            &format!("{what} d{name}"),
            &p.value,
            &p.grad,
            loss_w,
            EPS,
            TOL,
        );
    }
}

/// Random tensor in `[-scale, scale)`.
fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    random_tensor(shape, seed) * scale
}

fn attention(c: usize, nh: usize, seed: u64) -> CausalSelfAttention {
    // O(1) weights (not the 0.02 init) so the softmax is far from uniform and every term matters.
    CausalSelfAttention::from_weights(
        nh,
        rand(&[c, 3 * c], seed, 0.6),
        rand(&[3 * c], seed + 1, 0.3),
        rand(&[c, c], seed + 2, 0.5),
        rand(&[c], seed + 3, 0.3),
    )
    .unwrap()
}

fn block(c: usize, nh: usize, seed: u64) -> Block {
    let mut b = Block::new(c, nh, 2, &mut rng(seed)).unwrap();
    for (i, (name, p)) in b.params_mut().into_iter().enumerate() {
        let scale = if name.ends_with("bias") { 0.3 } else { 0.5 };
        let base = if name.starts_with("ln_") && name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        p.value = rand(p.shape(), seed * 100 + i as u64, scale) + base;
    }
    b
}

// ------------------------------------------------------------------------ finite differences

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let c = 7;
    let mut layer = LayerNorm::from_weights(rand(&[c], 1, 0.5) + 1.0, rand(&[c], 2, 0.5)).unwrap();
    // rows with an offset, like a residual stream
    let x = rand(&[2, 3, c], 3, 1.5) + 0.7;
    check_module("LayerNorm", &layer, &x, &["weight", "bias"]);
    // also with a non-default eps and a rank-2 input
    layer = layer.eps(1e-3);
    check_module(
        "LayerNorm eps=1e-3",
        &layer,
        &rand(&[5, c], 4, 1.0),
        &["weight", "bias"],
    );
}

#[test]
fn attention_gradients_match_finite_differences() {
    let attn = attention(8, 2, 10);
    let x = rand(&[2, 5, 8], 11, 1.0);
    check_module(
        "CausalSelfAttention",
        &attn,
        &x,
        &[
            "c_attn.weight",
            "c_attn.bias",
            "c_proj.weight",
            "c_proj.bias",
        ],
    );
}

#[test]
fn attention_gradients_match_finite_differences_across_row_blocks() {
    // T = 70 > ROW_BLOCK = 64: a second block of queries that sees keys of the first.
    let attn = attention(4, 1, 20);
    let x = rand(&[1, 70, 4], 21, 1.0);
    check_module("CausalSelfAttention T=70", &attn, &x, &["c_attn.weight"]);
}

#[test]
fn mlp_gradients_match_finite_differences() {
    let mut mlp = Mlp::new(6, 1, &mut rng(3)).unwrap();
    for (i, (_, p)) in mlp.params_mut().into_iter().enumerate() {
        p.value = rand(p.shape(), 30 + i as u64, 0.5);
    }
    let x = rand(&[2, 3, 6], 40, 1.0);
    check_module(
        "Mlp",
        &mlp,
        &x,
        &["c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"],
    );
}

#[test]
fn block_gradients_match_finite_differences() {
    let b = block(8, 2, 5);
    let x = rand(&[2, 4, 8], 50, 1.0);
    check_module(
        "Block",
        &b,
        &x,
        &[
            "ln_1.weight",
            "ln_1.bias",
            "attn.c_attn.weight",
            "attn.c_proj.bias",
            "ln_2.weight",
            "mlp.c_fc.weight",
            "mlp.c_proj.weight",
        ],
    );
}

#[test]
fn embedding_gradients_match_finite_differences() {
    let (b, t, c, v, p) = (2, 4, 3, 6, 5);
    let ids = [1usize, 4, 1, 0, 5, 1, 2, 4]; // repeated ids accumulate
    let wte = rand(&[v, c], 60, 1.0);
    let wpe = rand(&[p, c], 61, 1.0);
    let forward = |wte: &Tensor, wpe: &Tensor| {
        let mut out = Tensor::zeros(IxDyn(&[b, t, c]));
        emb::token_position_forward(
            &ids,
            t,
            wte.as_slice().unwrap(),
            wpe.as_slice().unwrap(),
            c,
            out.as_slice_mut().unwrap(),
        );
        out
    };
    let r = random_tensor(&[b, t, c], 62);
    let mut dwte = Tensor::zeros(wte.raw_dim());
    let mut dwpe = Tensor::zeros(wpe.raw_dim());
    emb::token_position_backward(
        &ids,
        t,
        r.as_slice().unwrap(),
        c,
        dwte.as_slice_mut().unwrap(),
        dwpe.as_slice_mut().unwrap(),
    );
    grad_check(
        "wte",
        &wte,
        &dwte,
        |w| weighted_sum(&forward(w, &wpe), &r),
        EPS,
        1e-3,
    );
    grad_check(
        "wpe",
        &wpe,
        &dwpe,
        |w| weighted_sum(&forward(&wte, w), &r),
        EPS,
        1e-3,
    );

    // the Embedding layer's scatter-add
    let mut layer = Embedding::from_weights(wte.clone()).unwrap();
    layer.forward_ids(&ids, (b, t)).unwrap();
    layer.backward(&r).unwrap();
    let loss = |w: &Tensor| {
        let mut l = Embedding::from_weights(w.clone()).unwrap();
        weighted_sum(&l.forward_ids(&ids, (b, t)).unwrap(), &r)
    };
    grad_check(
        "Embedding.weight",
        &wte,
        &layer.weight().grad,
        loss,
        EPS,
        1e-3,
    );
}

// ---------------------------------------------------------------------------- determinism

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// Output, dx and every parameter gradient of one forward/backward.
fn run_module<M: Module>(m: &M, x: &Tensor, names: &[String]) -> Vec<Tensor> {
    let mut m = m.clone();
    let out = m.fwd(x, true);
    let r = random_tensor(out.shape(), 7);
    let dx = m.bwd(&r);
    let mut v = vec![out, dx];
    for n in names {
        v.push(m.param_mut(n).grad.clone());
    }
    v
}

fn assert_bit_identical<M: Module + Send + Sync>(
    what: &str,
    m: &M,
    x: &Tensor,
    names: Vec<String>,
) {
    let one = pool(1).install(|| run_module(m, x, &names));
    let two = pool(2).install(|| run_module(m, x, &names));
    let labels: Vec<String> = ["out".to_string(), "dx".to_string()]
        .into_iter()
        .chain(names)
        .collect();
    for ((a, b), label) in one.iter().zip(&two).zip(&labels) {
        assert!(
            a.iter().all(|v| v.is_finite()),
            "{what} {label}: not finite"
        );
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{what} {label}: differs between 1 and 2 threads"
        );
    }
}

#[test]
fn attention_is_bit_identical_on_1_and_2_threads() {
    // T = 80 spans two row blocks; B·NH = 16 parallel tasks.
    let attn = CausalSelfAttention::new(64, 4, 2, &mut rng(8)).unwrap();
    let names = attn.params().into_iter().map(|(n, _)| n).collect();
    assert_bit_identical("attention", &attn, &rand(&[4, 80, 64], 9, 1.0), names);
}

#[test]
fn block_is_bit_identical_on_1_and_2_threads() {
    // Large enough that LayerNorm, GELU and the GEMMs take their parallel paths.
    let b = Block::new(64, 4, 2, &mut rng(12)).unwrap();
    let names = b.params().into_iter().map(|(n, _)| n).collect();
    assert_bit_identical("block", &b, &rand(&[4, 80, 64], 13, 1.0), names);
}

#[test]
fn embedding_backward_is_bit_identical_on_1_and_2_threads() {
    let (b, t, c, v) = (8, 64, 32, 200);
    let ids: Vec<usize> = (0..b * t).map(|i| (i * 37 + i / 5) % v).collect();
    let dout = random_tensor(&[b, t, c], 70);
    let run = |n: usize| {
        pool(n).install(|| {
            let mut dwte = vec![0.0f32; v * c];
            let mut dwpe = vec![0.0f32; t * c];
            emb::token_position_backward(
                &ids,
                t,
                dout.as_slice().unwrap(),
                c,
                &mut dwte,
                &mut dwpe,
            );
            (dwte, dwpe)
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one
        .0
        .iter()
        .zip(&two.0)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(one
        .1
        .iter()
        .zip(&two.1)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

// ------------------------------------------------------------------------------- init

#[test]
fn block_init_follows_nanogpt_and_uses_hf_names_and_shapes() {
    let (c, n_layer) = (64, 6);
    let b = Block::new(c, 4, n_layer, &mut rng(0)).unwrap();
    let want: [(&str, &[usize]); 12] = [
        ("ln_1.weight", &[c]),
        ("ln_1.bias", &[c]),
        ("attn.c_attn.weight", &[c, 3 * c]),
        ("attn.c_attn.bias", &[3 * c]),
        ("attn.c_proj.weight", &[c, c]),
        ("attn.c_proj.bias", &[c]),
        ("ln_2.weight", &[c]),
        ("ln_2.bias", &[c]),
        ("mlp.c_fc.weight", &[c, 4 * c]),
        ("mlp.c_fc.bias", &[4 * c]),
        ("mlp.c_proj.weight", &[4 * c, c]),
        ("mlp.c_proj.bias", &[c]),
    ];
    let params = b.params();
    assert_eq!(params.len(), want.len());
    let resid = 0.02 / ((2 * n_layer) as f64).sqrt();
    for ((name, p), (wname, wshape)) in params.iter().zip(want) {
        assert_eq!((name.as_str(), p.shape()), (wname, wshape));
        let n = p.value.len() as f64;
        let mean = p.value.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (p
            .value
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        if name.starts_with("ln_") && name.ends_with("weight") {
            assert!(p.value.iter().all(|&v| v == 1.0), "{name}");
        } else if name.ends_with("bias") {
            assert!(p.value.iter().all(|&v| v == 0.0), "{name}");
        } else {
            let target = if name.ends_with("c_proj.weight") {
                resid
            } else {
                0.02
            };
            assert!(
                (std / target - 1.0).abs() < 0.1 && mean.abs() < 0.1 * target,
                "{name}: std {std}, want {target}"
            );
        }
        assert!(p.grad.iter().all(|&g| g == 0.0));
    }
}

// ------------------------------------------------------------------------------- errors

#[test]
fn n_embd_not_divisible_by_n_head_is_an_error_naming_both() {
    for err in [
        CausalSelfAttention::new(30, 4, 1, &mut rng(0)).unwrap_err(),
        Block::new(30, 4, 1, &mut rng(0)).unwrap_err(),
        CausalSelfAttention::from_weights(
            4,
            Tensor::zeros(IxDyn(&[30, 90])),
            Tensor::zeros(IxDyn(&[90])),
            Tensor::zeros(IxDyn(&[30, 30])),
            Tensor::zeros(IxDyn(&[30])),
        )
        .unwrap_err(),
    ] {
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("n_embd = 30") && msg.contains("n_head = 4"),
            "{msg}"
        );
    }
    let err = CausalSelfAttention::new(16, 0, 1, &mut rng(0)).unwrap_err();
    assert!(err.to_string().contains("n_head"), "{err}");
}

#[test]
fn wrong_input_width_or_rank_is_a_shape_error() {
    let mut attn = CausalSelfAttention::new(16, 4, 1, &mut rng(0)).unwrap();
    let err = attn
        .forward(&Tensor::zeros(IxDyn(&[2, 3, 12])), handgrad::Mode::Train)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("CausalSelfAttention(n_embd=16, n_head=4)")
            && msg.contains("(B, T, 16)")
            && msg.contains("[2, 3, 12]"),
        "{msg}"
    );
    let mut block = Block::new(16, 4, 1, &mut rng(0)).unwrap();
    let err = block
        .forward(&Tensor::zeros(IxDyn(&[6, 16])), handgrad::Mode::Eval)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Block(n_embd=16, n_head=4) expects a (B, T, 16) input"),
        "{err}"
    );
    let mut mlp = Mlp::new(16, 1, &mut rng(0)).unwrap();
    assert!(mlp
        .forward(&Tensor::zeros(IxDyn(&[1, 2, 8])), handgrad::Mode::Train)
        .is_err());
    let mut ln =
        LayerNorm::from_weights(Tensor::ones(IxDyn(&[8])), Tensor::zeros(IxDyn(&[8]))).unwrap();
    let err = ln
        .forward(&Tensor::zeros(IxDyn(&[2, 5])), Mode::Train)
        .unwrap_err();
    assert!(err.to_string().contains("LayerNorm(8"), "{err}");
    // a dout of the wrong shape
    attn.forward(&Tensor::zeros(IxDyn(&[2, 3, 16])), handgrad::Mode::Train)
        .unwrap();
    let err = attn
        .backward(&Tensor::zeros(IxDyn(&[2, 4, 16])))
        .unwrap_err();
    assert!(err.to_string().contains("[2, 3, 16]"), "{err}");
}

#[test]
fn token_id_out_of_range_names_the_id_its_position_and_the_vocab() {
    let mut e = Embedding::new(13, 4, &mut rng(0)).unwrap();
    let ids = [0usize, 3, 12, 5, 13, 1];
    let err = e.forward_ids(&ids, (2, 3)).unwrap_err();
    assert!(matches!(err, Error::Label { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("token id 13")
            && msg.contains("(b=1, t=1)")
            && msg.contains("vocabulary of 13"),
        "{msg}"
    );
    let err = e.forward_ids(&ids[..5], (2, 3)).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(Embedding::new(0, 4, &mut rng(0)).is_err());
    // backward before any forward
    let mut fresh = Embedding::new(13, 4, &mut rng(0)).unwrap();
    assert!(matches!(
        fresh.backward(&Tensor::zeros(IxDyn(&[2, 3, 4]))),
        Err(Error::State(_))
    ));
}

#[test]
fn backward_needs_a_training_forward() {
    let x = rand(&[1, 3, 8], 1, 1.0);
    let d = rand(&[1, 3, 8], 2, 1.0);
    let mut attn = CausalSelfAttention::new(8, 2, 1, &mut rng(0)).unwrap();
    assert!(matches!(attn.backward(&d), Err(Error::State(_))));
    attn.forward(&x, handgrad::Mode::Eval).unwrap();
    assert!(attn.att().is_some(), "eval forwards still expose att");
    assert!(matches!(attn.backward(&d), Err(Error::State(_))));
    let mut block = Block::new(8, 2, 1, &mut rng(0)).unwrap();
    block.forward(&x, handgrad::Mode::Eval).unwrap();
    assert!(matches!(block.backward(&d), Err(Error::State(_))));
    let mut mlp = Mlp::new(8, 1, &mut rng(0)).unwrap();
    assert!(matches!(mlp.backward(&d), Err(Error::State(_))));
}

#[test]
fn bad_weights_are_rejected_with_names() {
    let mut rng0 = rng(0);
    let good = Block::new(8, 2, 1, &mut rng0).unwrap();
    let tensors: Vec<(String, Tensor)> = good
        .params()
        .into_iter()
        .map(|(n, p)| (n, p.value.clone()))
        .collect();
    let get = |skip: &str| {
        let t = tensors.clone();
        let skip = skip.to_string();
        move |name: &str| {
            (name != skip)
                .then(|| t.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
                .flatten()
        }
    };
    assert!(Block::from_weights(2, 1e-5, get("")).is_ok());
    let err = Block::from_weights(2, 1e-5, get("mlp.c_fc.bias")).unwrap_err();
    assert!(
        matches!(&err, Error::Param { name, .. } if name == "mlp.c_fc.bias"),
        "{err}"
    );
    let err = Block::from_weights(3, 1e-5, get("")).unwrap_err();
    assert!(err.to_string().contains("n_head = 3"), "{err}");
    let err = Block::from_weights(2, -1.0, get("")).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    // c_attn of the wrong width
    let err = CausalSelfAttention::from_weights(
        2,
        Tensor::zeros(IxDyn(&[8, 16])),
        Tensor::zeros(IxDyn(&[16])),
        Tensor::zeros(IxDyn(&[8, 8])),
        Tensor::zeros(IxDyn(&[8])),
    )
    .unwrap_err();
    assert!(err.to_string().contains("[8, 24]"), "{err}");
    let err = LayerNorm::new()
        .eps(f32::NAN)
        .build(&[4], &mut rng0)
        .unwrap_err();
    assert!(err.to_string().contains("eps"), "{err}");
}

// ------------------------------------------------------------------------ dropout

/// Gradient check of a training forward with dropout: every loss evaluation runs on a clone
/// of the same module, so it draws the same masks as the analytic forward.
fn check_train_mode<M: Module>(what: &str, m: &M, x: &Tensor, params: &[&str]) {
    let out = m.clone().fwd(x, true);
    let r = random_tensor(out.shape(), 98);
    let mut trained = m.clone();
    trained.fwd(x, true);
    let dx = trained.bwd(&r);
    let loss_x = |xp: &Tensor| weighted_sum(&m.clone().fwd(xp, true), &r);
    grad_check(&format!("{what} dx"), x, &dx, loss_x, EPS, TOL);
    for &name in params {
        let p = trained.param_mut(name).clone();
        let loss_w = |wp: &Tensor| {
            let mut mm = m.clone();
            mm.param_mut(name).value = wp.clone();
            weighted_sum(&mm.fwd(x, true), &r)
        };
        grad_check(
            &format!("{what} d{name}"),
            &p.value,
            &p.grad,
            loss_w,
            EPS,
            TOL,
        );
    }
}

#[test]
fn attention_with_dropout_gradients_match_finite_differences() {
    let m = attention(8, 2, 40).with_attn_dropout(0.3, 7).unwrap();
    // T = 70 > ROW_BLOCK: two row blocks of the kernel, masks in both
    let x = rand(&[2, 70, 8], 41, 1.0);
    check_train_mode("attention+dropout", &m, &x, &["c_attn.weight"]);
    let x = rand(&[2, 5, 8], 42, 1.0);
    check_train_mode(
        "attention+dropout",
        &m,
        &x,
        &[
            "c_attn.weight",
            "c_attn.bias",
            "c_proj.weight",
            "c_proj.bias",
        ],
    );
}

#[test]
fn block_with_dropout_gradients_match_finite_differences() {
    let b = block(8, 2, 50).with_dropout(0.2, &mut rng(3)).unwrap();
    let x = rand(&[2, 6, 8], 51, 1.0);
    check_train_mode(
        "block+dropout",
        &b,
        &x,
        &["attn.c_attn.weight", "mlp.c_fc.weight", "ln_1.weight"],
    );
}

#[test]
fn attention_dropout_drops_about_p_rescales_the_rest_and_is_off_in_eval() {
    let mut m = attention(16, 2, 60).with_attn_dropout(0.25, 11).unwrap();
    let x = rand(&[4, 64, 16], 61, 1.0);
    let eval = m.fwd(&x, false);
    assert_eq!(eval, m.clone().fwd(&x, false), "eval is deterministic");
    let t1 = m.fwd(&x, true);
    let t2 = m.fwd(&x, true);
    assert_ne!(eval, t1, "a training forward drops");
    assert_ne!(t1, t2, "each training forward draws new masks");
    // same seed and position → same masks
    let mut again = attention(16, 2, 60).with_attn_dropout(0.25, 11).unwrap();
    assert_eq!(again.fwd(&x, true), t1);
    // the kept fraction: compare y = att_d·v with a zero-p run through the public pieces is
    // indirect; instead count how the dropped output differs from eval on average: E[y] = eval
    let mean_diff: f64 = (0..40)
        .map(|_| {
            let y = m.fwd(&x, true);
            (&y - &eval).iter().map(|&d| d as f64).sum::<f64>() / y.len() as f64
        })
        .sum::<f64>()
        / 40.0;
    assert!(
        mean_diff.abs() < 2e-3,
        "inverted dropout keeps the expectation: {mean_diff}"
    );
    assert!(attention(16, 2, 60).with_attn_dropout(1.0, 0).is_err());
}
