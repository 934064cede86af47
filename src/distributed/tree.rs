//! The fixed-order reduction: gradients of fixed micro-batches summed by a fixed pairwise tree,
//! whatever the number of ranks that computed them.
//!
//! A global batch of `rows` examples is cut into `m = ⌈rows / micro⌉` micro-batches (leaves
//! `0..m`, the last one possibly smaller). The tree over leaves `lo..hi` is
//! `sum(lo, hi) = sum(lo, mid) + sum(mid, hi)` with `mid = lo + (hi − lo)/2`. Rank `r` of `p`
//! owns the contiguous leaves `r·m/p .. (r+1)·m/p` and computes the largest subtrees inside them
//! (its *cover*: one node when `p` divides `m` evenly into aligned halves, a few otherwise).
//! The reduction then:
//!
//! 1. all-to-all: rank `q` receives chunk `q` (of `p` contiguous chunks of the vector) of every
//!    rank's cover nodes;
//! 2. rank `q` finishes the tree for its chunk from those nodes (the same additions, in the
//!    same order, as one process summing all leaves);
//! 3. all-gather of the chunks.
//!
//! Each rank sends and receives about `(p − 1)/p` of the vector in each of steps 1 and 3 (times
//! the number of its cover nodes), the volume of a ring all-reduce: `2(p − 1)/p × len × 4` bytes.

use super::comm::Communicator;
use crate::error::Result;
use std::ops::Range;

/// A tree node: the leaves `lo..hi`.
pub(crate) type Node = (usize, usize);

/// The split point of node `lo..hi` (`hi − lo ≥ 2`).
fn mid(lo: usize, hi: usize) -> usize {
    lo + (hi - lo) / 2
}

/// The leaves of rank `rank` in a world of `size` ranks: `rank·m/size .. (rank+1)·m/size`.
pub(crate) fn rank_range(m: usize, size: usize, rank: usize) -> Range<usize> {
    rank * m / size..(rank + 1) * m / size
}

/// The maximal subtrees of the tree over `0..m` inside the leaves `range`, left to right.
pub(crate) fn cover(m: usize, range: Range<usize>) -> Vec<Node> {
    fn walk(lo: usize, hi: usize, a: usize, b: usize, out: &mut Vec<Node>) {
        if b <= lo || hi <= a {
            return;
        }
        if a <= lo && hi <= b {
            out.push((lo, hi));
            return;
        }
        let m = mid(lo, hi);
        walk(lo, m, a, b, out);
        walk(m, hi, a, b, out);
    }
    let mut out = Vec::new();
    if m > 0 && range.start < range.end {
        walk(0, m, range.start, range.end, &mut out);
    }
    out
}

/// The value of node `lo..hi` computed locally: `leaf(i, buf)` fills leaf `i`'s vector.
pub(crate) fn node_sum(
    node: Node,
    len: usize,
    leaf: &mut dyn FnMut(usize, &mut [f32]) -> Result<()>,
) -> Result<Vec<f32>> {
    let (lo, hi) = node;
    if hi - lo == 1 {
        let mut v = vec![0.0f32; len];
        leaf(lo, &mut v)?;
        return Ok(v);
    }
    let m = mid(lo, hi);
    let mut a = node_sum((lo, m), len, leaf)?;
    let b = node_sum((m, hi), len, leaf)?;
    add_into(&mut a, &b);
    Ok(a)
}

/// `a += b`, elementwise (the one addition of the tree).
fn add_into(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Chunk `q` of `p` of a vector of `len` values.
pub(crate) fn chunk(len: usize, p: usize, q: usize) -> Range<usize> {
    q * len / p..(q + 1) * len / p
}

/// Finishes the tree over `0..m` for one chunk from the received node values (`known`,
/// a value per node; the nodes partition `0..m`).
fn finish(node: Node, known: &[(Node, &[f32])]) -> Vec<f32> {
    if let Some((_, v)) = known.iter().find(|(n, _)| *n == node) {
        return v.to_vec();
    }
    let (lo, hi) = node;
    assert!(hi - lo >= 2, "the received nodes cover every leaf");
    let m = mid(lo, hi);
    let mut a = finish((lo, m), known);
    let b = finish((m, hi), known);
    add_into(&mut a, &b);
    a
}

/// Step 1–3 of the module docs: `mine` are this rank's cover-node values (in cover order),
/// every one of `len` values; returns the full tree sum on every rank.
pub(crate) fn reduce_tree(
    comm: &dyn Communicator,
    m: usize,
    len: usize,
    mine: &[Vec<f32>],
) -> Result<Vec<f32>> {
    let (p, r) = (comm.size(), comm.rank());
    if p == 1 {
        // one process: its cover of 0..m is the root
        return Ok(mine.first().cloned().unwrap_or_else(|| vec![0.0; len]));
    }
    let covers: Vec<Vec<Node>> = (0..p).map(|s| cover(m, rank_range(m, p, s))).collect();
    let mut send = Vec::with_capacity(mine.len() * len);
    let mut send_counts = Vec::with_capacity(p);
    for q in 0..p {
        let c = chunk(len, p, q);
        for v in mine {
            send.extend_from_slice(&v[c.clone()]);
        }
        send_counts.push(mine.len() * c.len());
    }
    let my_chunk = chunk(len, p, r);
    let recv_counts: Vec<usize> = covers.iter().map(|c| c.len() * my_chunk.len()).collect();
    let mut recv = vec![0.0f32; recv_counts.iter().sum()];
    comm.all_to_all_v(&send, &send_counts, &mut recv, &recv_counts)?;
    let n = my_chunk.len();
    let mut known: Vec<(Node, &[f32])> = Vec::new();
    let mut at = 0;
    for c in &covers {
        for node in c {
            known.push((*node, &recv[at..at + n]));
            at += n;
        }
    }
    let part = if m == 0 {
        vec![0.0; n]
    } else {
        finish((0, m), &known)
    };
    let counts: Vec<usize> = (0..p).map(|q| chunk(len, p, q).len()).collect();
    let mut out = vec![0.0f32; len];
    comm.all_gather_v(&part, &mut out, &counts)?;
    Ok(out)
}
