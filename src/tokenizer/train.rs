//! Learning byte-level BPE merges from a corpus: [`Gpt2Tokenizer::train`].

use super::bytes::{bytes_in_gpt2_order, bytes_to_token};
use super::gpt2::{Gpt2Tokenizer, ENDOFTEXT};
use super::load::Merge;
use super::pretokenize::pretokenize;
use crate::error::{Error, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

type Pair = (u32, u32);

impl Gpt2Tokenizer {
    /// Learns a GPT-2-style byte-level BPE with `vocab_size` tokens from `text`: ids `0..256`
    /// are the bytes (in GPT-2's order), then one token per merge, then `<|endoftext|>` last.
    ///
    /// The text is split by GPT-2's pattern (and at each `<|endoftext|>`), then the most
    /// frequent adjacent pair of tokens across the pieces is merged, repeatedly, until the vocab
    /// is full or no pair is left (the vocab is then smaller). Ties go to the pair with the
    /// smallest ids, so the result is deterministic. Cost: about linear in the text for the
    /// split, then each merge touches only the distinct pieces that hold its pair.
    ///
    /// ```
    /// use handgrad::prelude::*;
    ///
    /// let tok = Gpt2Tokenizer::train("the cat sat on the mat; the cat ate", 270)?;
    /// assert_eq!(tok.vocab_size(), 270);
    /// let ids = tok.encode("the cat")?;
    /// assert!(ids.len() < "the cat".len());
    /// assert_eq!(tok.decode(&ids)?, "the cat");
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] if `vocab_size < 257` (256 bytes and `<|endoftext|>`) or is not below
    /// 2^32.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self> {
        if !(257..u32::MAX as usize).contains(&vocab_size) {
            return Err(Error::config(
                "Gpt2Tokenizer::train",
                "vocab_size",
                vocab_size,
                "at least 257 (the 256 bytes and <|endoftext|>) and below 2^32",
            ));
        }
        let mut tokens: Vec<String> = bytes_in_gpt2_order()
            .map(|b| bytes_to_token(&[b]))
            .collect();
        let mut byte_id = [0u32; 256];
        for (id, b) in bytes_in_gpt2_order().enumerate() {
            byte_id[b as usize] = id as u32;
        }
        let mut ids: HashMap<String, u32> =
            (0..).zip(&tokens).map(|(i, t)| (t.clone(), i)).collect();

        // Distinct pieces, sorted so that nothing depends on hash order.
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for segment in text.split(ENDOFTEXT) {
            for piece in pretokenize(segment) {
                *counts.entry(piece).or_insert(0) += 1;
            }
        }
        let mut pieces: Vec<(&str, u64)> = counts.into_iter().collect();
        pieces.sort_unstable();
        let freq: Vec<i64> = pieces.iter().map(|&(_, n)| n as i64).collect();
        let mut words: Vec<Vec<u32>> = pieces
            .iter()
            .map(|(p, _)| p.bytes().map(|b| byte_id[b as usize]).collect())
            .collect();

        let mut pair_count: HashMap<Pair, i64> = HashMap::new();
        let mut where_: HashMap<Pair, Vec<usize>> = HashMap::new();
        for (w, word) in words.iter().enumerate() {
            for p in word.windows(2) {
                *pair_count.entry((p[0], p[1])).or_insert(0) += freq[w];
                where_.entry((p[0], p[1])).or_default().push(w);
            }
        }
        // Max-heap on (count, smallest pair); stale entries are skipped when popped.
        let mut heap: BinaryHeap<(i64, Reverse<Pair>)> =
            pair_count.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
        let mut merges: Vec<Merge> = Vec::new();
        let mut merged_pairs: HashSet<Pair> = HashSet::new();
        let mut delta: HashMap<Pair, i64> = HashMap::new();

        while tokens.len() < vocab_size - 1 {
            let Some((count, Reverse(pair))) = heap.pop() else {
                break;
            };
            if count <= 0 || pair_count.get(&pair) != Some(&count) || merged_pairs.contains(&pair) {
                continue;
            }
            let merged_token = format!("{}{}", tokens[pair.0 as usize], tokens[pair.1 as usize]);
            let merged = *ids.entry(merged_token.clone()).or_insert_with(|| {
                tokens.push(merged_token);
                tokens.len() as u32 - 1
            });
            merges.push(Merge {
                left: pair.0,
                right: pair.1,
                merged,
            });
            merged_pairs.insert(pair);

            let mut affected = where_.remove(&pair).unwrap_or_default();
            affected.sort_unstable();
            affected.dedup();
            delta.clear();
            for w in affected {
                let word = &mut words[w];
                if !word.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                for p in word.windows(2) {
                    *delta.entry((p[0], p[1])).or_insert(0) -= freq[w];
                }
                merge_in_place(word, pair, merged);
                for p in word.windows(2) {
                    *delta.entry((p[0], p[1])).or_insert(0) += freq[w];
                    if p[0] == merged || p[1] == merged {
                        where_.entry((p[0], p[1])).or_default().push(w);
                    }
                }
            }
            let mut changed: Vec<(Pair, i64)> = delta.drain().filter(|&(_, d)| d != 0).collect();
            changed.sort_unstable(); // pushes in a fixed order (the heap is ordered anyway)
            for (p, d) in changed {
                let c = pair_count.entry(p).or_insert(0);
                *c += d;
                if *c > 0 {
                    heap.push((*c, Reverse(p)));
                }
            }
        }
        ids.insert(ENDOFTEXT.to_string(), tokens.len() as u32);
        tokens.push(ENDOFTEXT.to_string());
        Self::from_gpt2_parts(tokens, ids, merges, "Gpt2Tokenizer::train")
    }
}

/// Merges every occurrence of `pair` in `word` left to right, as BPE encoding does.
fn merge_in_place(word: &mut Vec<u32>, pair: Pair, merged: u32) {
    let (n, mut read, mut write) = (word.len(), 0, 0);
    while read < n {
        if read + 1 < n && (word[read], word[read + 1]) == pair {
            word[write] = merged;
            read += 2;
        } else {
            word[write] = word[read];
            read += 1;
        }
        write += 1;
    }
    word.truncate(write);
}
