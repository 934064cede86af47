//! The safetensors reader and the checkpoint reader on arbitrary bytes: Ok or Err, never a
//! panic, a hang or an allocation beyond the input's size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = handgrad::io::parse_safetensors(data, "fuzz");
    let _ = handgrad::io::Checkpoint::from_bytes(data, "gpt", "fuzz");
});
