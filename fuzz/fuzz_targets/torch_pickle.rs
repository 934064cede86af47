//! The PyTorch checkpoint reader (zip and legacy formats, the restricted pickle machine) on
//! arbitrary bytes: Ok or Err, never a panic, a hang or an allocation beyond its budget.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = handgrad::io::torch::load_bytes(data, "fuzz") {
        let _ = v.flatten_tensors();
    }
});
