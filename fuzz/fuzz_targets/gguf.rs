//! The GGUF reader on arbitrary bytes: Ok or Err, never a panic, a hang or an allocation beyond
//! a bounded multiple of the input's size; every accessor of a parsed file likewise.
#![no_main]
use handgrad::io::{GgufFile, SharedBytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::parse(SharedBytes::from_vec(data.to_vec()), "fuzz") {
        for (k, _) in f.metadata() {
            let _ = (f.u64(k), f.f32(k), f.string(k), f.string_array(k), f.i64_array(k));
        }
        for t in f.tensors() {
            if let Ok(m) = f.matrix(&t.name) {
                let _ = m.dequantize();
            }
            let _ = f.tensor_f32(&t.name);
        }
    }
});
