//! The [`Communicator`] trait (the collectives data-parallel training needs) and its
//! single-process implementation.

use crate::error::{Error, Result};

/// A world of `size` ranks that exchange buffers: the seam between the training loops and the
/// transport (one process, threads of one process, or MPI processes).
///
/// Every rank must call the same collectives in the same order with matching sizes; the
/// training loops in this crate do so even when a rank fails (they first agree on a status,
/// see [`super::Distributed::agree`]), so one rank's error never leaves the others waiting.
pub trait Communicator: Send + Sync + std::fmt::Debug {
    /// This process's (or thread's) rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Returns when every rank has called it.
    ///
    /// # Errors
    /// Transport errors.
    fn barrier(&self) -> Result<()>;
    /// Replaces `buf` on every rank by `root`'s `buf` (the lengths may differ before the call).
    ///
    /// # Errors
    /// [`Error::Config`] for a `root` outside the world; transport errors.
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()>;
    /// Overwrites `buf` on every rank with `root`'s `buf`, which has the same length everywhere.
    ///
    /// # Errors
    /// As [`Communicator::broadcast_bytes`].
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()>;
    /// Every rank's `mine`, in rank order (the lengths may differ between ranks).
    ///
    /// # Errors
    /// Transport errors.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Elementwise sum of `buf` over all ranks, left in `buf` on every rank, in the order the
    /// transport chooses (for MPI: `MPI_Allreduce`, whose float bits depend on the rank count,
    /// the message size and the algorithm picked).
    ///
    /// # Errors
    /// Transport errors.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// All-to-all with varying counts: `send` holds, one after the other, `send_counts[q]`
    /// values for each rank `q`; `recv` receives, one after the other, `recv_counts[s]` values
    /// from each rank `s`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the counts do not add up to the buffer lengths; transport errors.
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()>;
    /// All-gather with varying counts: `recv` receives `counts[s]` values from each rank `s`,
    /// in rank order; `mine.len()` must equal `counts[rank]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the counts do not fit the buffers; transport errors.
    fn all_gather_v(&self, mine: &[f32], recv: &mut [f32], counts: &[usize]) -> Result<()>;
}

/// Checks the counts of [`Communicator::all_to_all_v`] against the buffers.
pub(crate) fn check_counts(
    op: &str,
    size: usize,
    counts: &[usize],
    len: usize,
    what: &str,
) -> Result<()> {
    if counts.len() != size {
        return Err(Error::shape(
            op,
            format!("{what}: one count per rank ({size})"),
            &[counts.len()],
        ));
    }
    let total: usize = counts.iter().sum();
    if total != len {
        return Err(Error::shape(
            op,
            format!("{what}: a buffer of the counts' sum {total}"),
            &[len],
        ));
    }
    Ok(())
}

/// Checks a `root` rank.
pub(crate) fn check_root(op: &str, root: usize, size: usize) -> Result<()> {
    if root >= size {
        return Err(Error::config(
            op,
            "root",
            root,
            format!("a rank below the world size {size}"),
        ));
    }
    Ok(())
}

/// The world of one rank: every collective is a copy (or nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, root: usize, _buf: &mut Vec<u8>) -> Result<()> {
        check_root("broadcast_bytes", root, 1)
    }
    fn broadcast_f32(&self, root: usize, _buf: &mut [f32]) -> Result<()> {
        check_root("broadcast_f32", root, 1)
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        check_counts("all_to_all_v", 1, send_counts, send.len(), "send")?;
        check_counts("all_to_all_v", 1, recv_counts, recv.len(), "recv")?;
        if send.len() != recv.len() {
            return Err(Error::shape(
                "all_to_all_v",
                format!("a receive buffer of the {} values sent", send.len()),
                &[recv.len()],
            ));
        }
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_v(&self, mine: &[f32], recv: &mut [f32], counts: &[usize]) -> Result<()> {
        check_counts("all_gather_v", 1, counts, recv.len(), "recv")?;
        if mine.len() != recv.len() {
            return Err(Error::shape(
                "all_gather_v",
                format!("this rank's part of counts[0] = {} values", recv.len()),
                &[mine.len()],
            ));
        }
        recv.copy_from_slice(mine);
        Ok(())
    }
}
