//! The BPE merge loop of GPT-2's `encoder.py`, on ids:
//!
//! ```text
//! while the word has an adjacent pair in the merges:
//!     (a, b) = the pair with the lowest rank
//!     merge every occurrence of (a, b), left to right, without overlaps   ("aaa" → "aa" "a")
//! ```
//!
//! [`bpe_simple`] is that loop verbatim, `O(n²)` in the piece length `n`, which is fastest for
//! the short pieces of ordinary text. [`bpe_heap`] gives the same result in `O(n log n)` for long
//! pieces (a megabyte of letters without a space is one piece): a min-heap of `(rank, position)`
//! pairs over a linked list of symbols, taking all occurrences of the lowest rank as one batch so
//! that the merge order is exactly the loop's even for merges files whose ranks are not in
//! creation order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative (FxHash-like) hasher for the merge table's id pairs and the merge cache's
/// pieces: SipHash costs more than the rest of a lookup. Not collision-resistant against chosen
/// input, which here could only slow down the cache of one tokenizer.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(tail));
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `(left, right) → (rank, merged)`.
pub(crate) type MergeMap = HashMap<(u32, u32), (u32, u32), FastBuild>;

/// The [`FastHasher`] builder.
pub(crate) type FastBuild = BuildHasherDefault<FastHasher>;

/// Pieces longer than this many bytes go to [`bpe_heap`].
const LONG_PIECE: usize = 96;

/// BPE-merges the byte ids of `word` into `out` (cleared first).
pub(crate) fn bpe(word: &[u8], byte_ids: &[u32; 256], merges: &MergeMap, out: &mut Vec<u32>) {
    out.clear();
    out.extend(word.iter().map(|&b| byte_ids[b as usize]));
    if word.len() > LONG_PIECE {
        bpe_heap(out, merges);
    } else {
        bpe_simple(out, merges);
    }
}

/// The `encoder.py` loop on the symbols in `syms`, in place.
pub(crate) fn bpe_simple(syms: &mut Vec<u32>, merges: &MergeMap) {
    while syms.len() > 1 {
        let mut best: Option<(u32, u32, u32, u32)> = None; // (rank, left, right, merged)
        for w in syms.windows(2) {
            if let Some(&(rank, merged)) = merges.get(&(w[0], w[1]))
                && best.is_none_or(|b| rank < b.0)
            {
                best = Some((rank, w[0], w[1], merged));
            }
        }
        let Some((_, left, right, merged)) = best else {
            break;
        };
        let (n, mut read, mut write) = (syms.len(), 0, 0);
        while read < n {
            if read + 1 < n && syms[read] == left && syms[read + 1] == right {
                syms[write] = merged;
                read += 2;
            } else {
                syms[write] = syms[read];
                read += 1;
            }
            write += 1;
        }
        syms.truncate(write);
    }
}

const NONE: usize = usize::MAX;

/// The same result as [`bpe_simple`] in `O(n log n)`.
pub(crate) fn bpe_heap(syms: &mut Vec<u32>, merges: &MergeMap) {
    let n = syms.len();
    if n < 2 {
        return;
    }
    // A doubly linked list over the original positions; a merge keeps the left position.
    let mut sym = syms.clone();
    let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect(); // 0 → NONE
    let mut alive = vec![true; n];
    let rank_at = |sym: &[u32], next: &[usize], p: usize| -> Option<(u32, u32)> {
        let q = next[p];
        if q == NONE {
            return None;
        }
        merges.get(&(sym[p], sym[q])).copied()
    };
    let mut heap: BinaryHeap<Reverse<(u32, usize)>> = (0..n - 1)
        .filter_map(|p| rank_at(&sym, &next, p).map(|(rank, _)| Reverse((rank, p))))
        .collect();
    let mut batch: Vec<usize> = Vec::new();
    while let Some(Reverse((rank, p))) = heap.pop() {
        // All entries of this rank are occurrences of one pair; stale ones fail the check.
        batch.clear();
        batch.push(p);
        while let Some(&Reverse((r, q))) = heap.peek() {
            if r != rank {
                break;
            }
            heap.pop();
            batch.push(q);
        }
        batch.sort_unstable();
        batch.dedup();
        let mut merged_at = Vec::new();
        for &p in &batch {
            if !alive[p] {
                continue;
            }
            let Some((r, merged)) = rank_at(&sym, &next, p) else {
                continue;
            };
            if r != rank {
                continue;
            }
            let q = next[p];
            sym[p] = merged;
            alive[q] = false;
            next[p] = next[q];
            if next[q] != NONE {
                prev[next[q]] = p;
            }
            merged_at.push(p);
        }
        // The new pairs around each merged symbol.
        for &p in &merged_at {
            if !alive[p] {
                continue;
            }
            if prev[p] != NONE
                && let Some((r, _)) = rank_at(&sym, &next, prev[p])
            {
                heap.push(Reverse((r, prev[p])));
            }
            if let Some((r, _)) = rank_at(&sym, &next, p) {
                heap.push(Reverse((r, p)));
            }
        }
    }
    syms.clear();
    let mut p = 0;
    while p != NONE {
        syms.push(sym[p]);
        p = next[p];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// A random merges table over ids `0..4` whose ranks are deliberately not in creation order.
    fn random_merges(rng: &mut rand_chacha::ChaCha8Rng) -> MergeMap {
        let mut merges = MergeMap::default();
        let mut next_id = 4;
        let mut ranks: Vec<u32> = (0..40).collect();
        ranks.shuffle(rng); // distinct ranks, as in a merges file
        for rank in ranks {
            let a = rng.random_range(0..next_id);
            let b = rng.random_range(0..next_id);
            if merges.contains_key(&(a, b)) {
                continue;
            }
            merges.insert((a, b), (rank, next_id));
            next_id += 1;
        }
        merges
    }

    #[test]
    fn heap_equals_simple() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..300 {
            let merges = random_merges(&mut rng);
            for _ in 0..20 {
                let len = rng.random_range(0..300);
                let alphabet = rng.random_range(1..=4);
                let word: Vec<u32> = (0..len).map(|_| rng.random_range(0..alphabet)).collect();
                let (mut a, mut b) = (word.clone(), word.clone());
                bpe_simple(&mut a, &merges);
                bpe_heap(&mut b, &merges);
                assert_eq!(a, b, "word {word:?}");
            }
        }
    }

    #[test]
    fn overlapping_occurrences_merge_left_to_right() {
        let mut merges = MergeMap::default();
        merges.insert((0, 0), (0, 1));
        for f in [bpe_simple, bpe_heap] {
            let mut w = vec![0, 0, 0];
            f(&mut w, &merges);
            assert_eq!(w, [1, 0]);
            let mut w = vec![0, 0, 0, 0];
            f(&mut w, &merges);
            assert_eq!(w, [1, 1]);
        }
    }
}
