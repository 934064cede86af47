//! Large safetensors files take the memory-mapped path and read back exactly; a large file
//! truncated on disk is still an `Err`.

use handgrad::io::{read_safetensors, write_safetensors, MMAP_MIN_BYTES};
use handgrad::Tensor;
use ndarray::IxDyn;
use std::collections::BTreeMap;

#[test]
fn a_file_above_the_mmap_threshold_round_trips_and_truncation_is_an_error() {
    let n = (MMAP_MIN_BYTES as usize) / 4 + 1000; // just above the threshold
    let mut t = BTreeMap::new();
    t.insert(
        "big".to_string(),
        Tensor::from_shape_fn(IxDyn(&[n]), |i| (i[0] % 9973) as f32 * 0.5),
    );
    let path =
        std::env::temp_dir().join(format!("handgrad-mmap-{}.safetensors", std::process::id()));
    write_safetensors(&path, &t, None).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() >= MMAP_MIN_BYTES);
    assert_eq!(read_safetensors(&path).unwrap().tensors, t);
    // cut the data short: the header now lies about the file's size
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(MMAP_MIN_BYTES).unwrap();
    drop(f);
    let e = read_safetensors(&path).unwrap_err();
    assert!(e.to_string().contains("handgrad-mmap"), "{e}");
    std::fs::remove_file(&path).unwrap();
}
