//! The CIFAR-10 binary batch reader on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = handgrad::data::parse_cifar10_batch(data, "fuzz");
});
