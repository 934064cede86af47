//! The MNIST IDX readers (raw and gzip) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = handgrad::data::parse_idx_images(data, "fuzz");
    let _ = handgrad::data::parse_idx_labels(data, "fuzz");
});
