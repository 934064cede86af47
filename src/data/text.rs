//! The embedded text corpus: Melville's *Moby-Dick* (public domain, CC0).

use flate2::read::GzDecoder;
use std::io::Read;
use std::sync::OnceLock;

const MOBY_DICK_GZ: &[u8] = include_bytes!("../../data/moby-dick.txt.gz");

/// The full text of *Moby-Dick* (1,190,317 characters, 83 distinct), embedded in the crate and
/// decompressed once on first use (about 5 ms).
///
/// ```
/// let text = handgrad::data::moby_dick();
/// assert!(text.starts_with("CHAPTER 1. Loomings."));
/// ```
pub fn moby_dick() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut s = String::new();
        GzDecoder::new(MOBY_DICK_GZ)
            .read_to_string(&mut s)
            .expect("the embedded Moby-Dick text is valid gzip'd UTF-8 (checked by tests)");
        s
    })
}
