//! EfficientNet-Lite: the tiny network golden (logits, loss, every gradient, BN buffers, SGD with
//! momentum for two steps, one Adam step, eval logits), the Lite0 layout against the released
//! checkpoint's state dict, timm names, head replacement and errors.

use crate::common::Fixture;
use handgrad::init::rng;
use handgrad::layers::Mode;
use handgrad::model::{Loss, Targets};
use handgrad::optim::{Adam, Optimizer, Sgd};
use handgrad::vision::efficientnet::timm_to_package;
use handgrad::vision::{BlockConfig, EfficientNetConfig, EfficientNetLite};
use handgrad::{Error, Tensor};
use std::collections::BTreeMap;

fn tiny_config() -> EfficientNetConfig {
    let block = |expand_ratio, kernel, stride| BlockConfig {
        expand_ratio,
        kernel,
        stride,
        out_channels: 12,
    };
    EfficientNetConfig {
        image_size: 32,
        in_channels: 3,
        stem_channels: 8,
        blocks: vec![block(3, 3, 2), block(3, 5, 1)],
        stages: vec![1, 1],
        head_channels: 32,
        num_classes: 5,
        dropout: 0.0,
        bn_eps: 1e-3,
        bn_momentum: 0.01,
    }
}

/// The tiny network's initial state dict from the fixture (package names).
fn tiny_state(f: &Fixture) -> BTreeMap<String, Tensor> {
    let names = EfficientNetLite::new(tiny_config(), &mut rng(0))
        .unwrap()
        .state_dict();
    names
        .into_keys()
        .map(|k| {
            let t = if k.ends_with("num_batches_tracked") {
                Tensor::from_elem(ndarray::IxDyn(&[]), f.i64(&k)[0] as f32)
            } else {
                f.f32(&k)
            };
            (k, t)
        })
        .collect()
}

fn tiny_batch(f: &Fixture) -> (Tensor, Vec<usize>) {
    let labels = f.i64("labels").into_iter().map(|l| l as usize).collect();
    (f.f32("x"), labels)
}

fn loss_backward(net: &mut EfficientNetLite, x: &Tensor, labels: &[usize]) -> (f32, Tensor) {
    net.zero_grad();
    net.loss_backward_targets(
        x,
        Targets::Labels(labels),
        Loss::SparseCategoricalCrossentropy,
    )
    .unwrap()
}

#[test]
fn golden_effnet_tiny_forward_loss_gradients_and_buffers() {
    let f = Fixture::load("vision/effnet_tiny_train");
    let state = tiny_state(&f);
    let mut net = EfficientNetLite::from_state_dict(tiny_config(), &state).unwrap();
    assert_eq!(net.param_count(), 3593);
    let (x, labels) = tiny_batch(&f);
    let (loss, logits) = loss_backward(&mut net, &x, &labels);
    f.check("logits", &logits);
    f.check("loss", &Tensor::from_elem(ndarray::IxDyn(&[]), loss));
    let mut checked = 0;
    for (name, p) in net.params() {
        f.check(&format!("grad.{name}"), &p.grad);
        checked += 1;
    }
    assert_eq!(checked, 26);
    for (name, t) in net.state_dict() {
        if name.ends_with("num_batches_tracked") {
            assert_eq!(
                t.iter().next().copied().unwrap() as i64,
                f.i64(&format!("after.{name}"))[0],
                "{name}"
            );
        } else if name.contains("running_") {
            f.check(&format!("after.{name}"), &t);
        }
    }
    // eval mode with the initial running statistics
    let mut fresh = EfficientNetLite::from_state_dict(tiny_config(), &state).unwrap();
    let eval = fresh.forward(&x, Mode::Eval).unwrap();
    f.check("eval_logits", &eval);
    // per-layer shapes as the fixture's hyper-parameters list them
    let outs = fresh.forward_all(&x).unwrap();
    assert_eq!(outs[1].shape(), &[4, 8, 16, 16]);
    assert_eq!(outs[3].shape(), &[4, 12, 8, 8]);
    assert_eq!(outs[4].shape(), &[4, 12, 8, 8]);
    assert_eq!(outs[5].shape(), &[4, 32, 8, 8]);
}

#[test]
fn golden_effnet_tiny_sgd_momentum_two_steps() {
    let f = Fixture::load("vision/effnet_tiny_train");
    let mut net = EfficientNetLite::from_state_dict(tiny_config(), &tiny_state(&f)).unwrap();
    let (x, labels) = tiny_batch(&f);
    let mut sgd = Sgd::new(0.05).momentum(0.9);
    loss_backward(&mut net, &x, &labels);
    sgd.step(&mut net.params_mut()).unwrap();
    for (name, p) in net.params() {
        f.check(&format!("sgd1.{name}"), &p.value);
    }
    let (loss2, logits2) = loss_backward(&mut net, &x, &labels);
    f.check("loss2", &Tensor::from_elem(ndarray::IxDyn(&[]), loss2));
    f.check("logits2", &logits2);
    sgd.step(&mut net.params_mut()).unwrap();
    for (name, p) in net.params() {
        f.check(&format!("sgd2.{name}"), &p.value);
    }
}

#[test]
fn golden_effnet_tiny_adam_step() {
    let f = Fixture::load("vision/effnet_tiny_train");
    let mut net = EfficientNetLite::from_state_dict(tiny_config(), &tiny_state(&f)).unwrap();
    let (x, labels) = tiny_batch(&f);
    loss_backward(&mut net, &x, &labels);
    Adam::new(1e-3).step(&mut net.params_mut()).unwrap();
    for (name, p) in net.params() {
        f.check(&format!("adam.{name}"), &p.value);
    }
}

#[test]
fn tiny_network_trains_through_the_sequential_api() {
    let f = Fixture::load("vision/effnet_tiny_train");
    let mut net = EfficientNetLite::from_state_dict(tiny_config(), &tiny_state(&f)).unwrap();
    let (x, labels) = tiny_batch(&f);
    let mut opt = Adam::new(1e-2);
    let first = net.train_step(&x, &labels, &mut opt).unwrap();
    let mut last = first;
    for _ in 0..15 {
        last = net.train_step(&x, &labels, &mut opt).unwrap();
    }
    assert!(last < 0.5 * first, "loss {first} → {last}");
    let probs = net.predict(&x).unwrap();
    assert_eq!(probs.shape(), &[4, 5]);
    let summary = net.summary();
    assert!(summary.contains("MbConv(8→24→12, k3, s2)"), "{summary}");
    assert!(
        summary.contains("MbConv(12→36→12, k5, s1, residual)"),
        "{summary}"
    );
    assert!(summary.contains("Total params: 3,593"), "{summary}");
}

#[test]
fn lite0_layout_matches_the_released_checkpoint() {
    // every key of efficientnet-lite0-57934424.pth, with its shape (from the fixture listing)
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vision/effnet_lite0_state_dict.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let entries = json["entries"].as_array().unwrap();
    let net = EfficientNetLite::new(EfficientNetConfig::lite0(), &mut rng(0)).unwrap();
    let ours = net.state_dict();
    assert_eq!(ours.len(), entries.len());
    assert_eq!(entries.len(), 296);
    for e in entries {
        let key = e["key"].as_str().unwrap();
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let t = ours.get(key).unwrap_or_else(|| panic!("model lacks {key}"));
        assert_eq!(t.shape(), shape.as_slice(), "{key}");
    }
    assert_eq!(net.param_count(), 4_652_008);
    assert_eq!(net.output_shape(), &[1000]);
    let blocks: Vec<String> = net.layers()[3..19].iter().map(|l| l.describe()).collect();
    assert_eq!(blocks[0], "MbConv(32→32→16, k3, s1)");
    assert_eq!(blocks[1], "MbConv(16→96→24, k3, s2)");
    assert_eq!(blocks[2], "MbConv(24→144→24, k3, s1, residual)");
    assert_eq!(blocks[15], "MbConv(192→1152→320, k3, s1)");
}

#[test]
fn lite_variants_scale_width_and_depth() {
    let lite0 = EfficientNetConfig::lite(0).unwrap();
    assert_eq!(lite0.blocks.len(), 16);
    assert_eq!(lite0.stages, vec![1, 2, 2, 3, 3, 4, 1]);
    let lite4 = EfficientNetConfig::lite(4).unwrap();
    assert_eq!(lite4.image_size, 300);
    // first and last stage keep their repeats; the others scale by ⌈1.8·r⌉
    assert_eq!(lite4.stages, vec![1, 4, 4, 6, 6, 8, 1]);
    assert_eq!(lite4.blocks[0].out_channels, 24); // round_filters(16·1.4) = 24
    assert_eq!(lite4.blocks.last().unwrap().out_channels, 448);
    let e = EfficientNetConfig::lite(5).unwrap_err().to_string();
    assert!(e.contains("variant") && e.contains('5'), "{e}");
}

#[test]
fn timm_names_follow_the_embedded_rule() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vision/effnet_lite0_timm_keymap.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let map = json["package_to_timm"].as_object().unwrap();
    assert_eq!(map.len(), 296);
    let cfg = EfficientNetConfig::lite0();
    for (pkg, timm) in map {
        assert_eq!(
            timm_to_package(timm.as_str().unwrap(), &cfg).as_deref(),
            Some(pkg.as_str()),
            "{timm}"
        );
    }
    assert_eq!(timm_to_package("blocks.7.0.conv_pw.weight", &cfg), None);
    assert_eq!(timm_to_package("blocks.0.0.conv_pwl.weight", &cfg), None);
    // a state dict in timm's names loads into the same tensors
    let src = EfficientNetLite::new(cfg.clone(), &mut rng(1)).unwrap();
    let reverse: BTreeMap<&str, &str> = map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let timm_state: BTreeMap<String, Tensor> = src
        .state_dict()
        .into_iter()
        .map(|(k, v)| (reverse[k.as_str()].to_string(), v))
        .collect();
    let net = EfficientNetLite::from_state_dict(cfg, &timm_state).unwrap();
    assert_eq!(net.state_dict(), src.state_dict());
}

#[test]
fn state_dict_errors_name_the_key() {
    let f = Fixture::load("vision/effnet_tiny_train");
    let state = tiny_state(&f);
    let mut net = EfficientNetLite::new(tiny_config(), &mut rng(3)).unwrap();
    let before = net.state_dict();

    let mut missing = state.clone();
    missing.remove("_blocks.1._bn1.running_var");
    let e = net.load_state_dict(&missing).unwrap_err();
    assert!(matches!(e, Error::Param { .. }));
    let e = e.to_string();
    assert!(
        e.contains("_blocks.1._bn1.running_var") && e.contains("missing"),
        "{e}"
    );

    let mut extra = state.clone();
    extra.insert(
        "_blocks.2._bn0.weight".into(),
        Tensor::zeros(ndarray::IxDyn(&[3])),
    );
    let e = net.load_state_dict(&extra).unwrap_err().to_string();
    assert!(
        e.contains("_blocks.2._bn0.weight") && e.contains("unexpected"),
        "{e}"
    );

    let mut wrong = state.clone();
    wrong.insert(
        "_blocks.0._depthwise_conv.weight".into(),
        Tensor::zeros(ndarray::IxDyn(&[24, 1, 5, 5])),
    );
    let e = net.load_state_dict(&wrong).unwrap_err().to_string();
    assert!(
        e.contains("_blocks.0._depthwise_conv.weight")
            && e.contains("[24, 1, 5, 5]")
            && e.contains("[24, 1, 3, 3]"),
        "{e}"
    );
    assert_eq!(net.state_dict(), before, "nothing changes on error");

    // num_batches_tracked may be absent (kept as is)
    let mut no_counts = state.clone();
    no_counts.retain(|k, _| !k.ends_with("num_batches_tracked"));
    net.load_state_dict(&no_counts).unwrap();
    assert_eq!(net.state_dict()["_fc.bias"], state["_fc.bias"]);

    let mut no_fc = state.clone();
    no_fc.remove("_fc.weight");
    let e = EfficientNetLite::from_state_dict(tiny_config(), &no_fc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("_fc.weight") && e.contains("missing"), "{e}");
}

#[test]
fn with_num_classes_replaces_only_the_head() {
    let f = Fixture::load("vision/effnet_tiny_train");
    let net = EfficientNetLite::from_state_dict(tiny_config(), &tiny_state(&f)).unwrap();
    let old = net.state_dict();
    let mut net = net.with_num_classes(3, &mut rng(9)).unwrap();
    assert_eq!(net.output_shape(), &[3]);
    let new = net.state_dict();
    assert_eq!(new["_fc.weight"].shape(), &[3, 32]);
    for (k, v) in &old {
        if !k.starts_with("_fc.") {
            assert_eq!(&new[k], v, "{k}");
        }
    }
    let (x, _) = tiny_batch(&f);
    assert_eq!(net.forward(&x, Mode::Eval).unwrap().shape(), &[4, 3]);
    let e = EfficientNetLite::new(tiny_config().with_num_classes(0), &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_classes"), "{e}");
}
