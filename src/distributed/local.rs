//! [`LocalWorld`]: `n` ranks as threads of one process, for tests and for trying the
//! data-parallel code paths without MPI.

use super::comm::{check_counts, check_root, Communicator};
use crate::error::{Error, Result};
use std::sync::{Arc, Barrier, Mutex};

/// What one rank posted for the collective under way.
#[derive(Debug, Clone)]
enum Payload {
    Empty,
    Bytes(Vec<u8>),
    Floats(Vec<f32>, Vec<usize>),
}

#[derive(Debug)]
struct Shared {
    slots: Mutex<Vec<Payload>>,
    barrier: Barrier,
}

/// One rank of an in-process world of threads: every collective posts this rank's buffer,
/// waits for all ranks, reads what it needs and waits again. Sums run in rank order, so
/// [`Communicator::all_reduce_sum`] is deterministic here (unlike MPI's).
///
/// Each rank must run on its own thread (a rank calling a collective blocks until all have):
///
/// ```
/// use handgrad::distributed::{Communicator, LocalWorld};
/// let ranks = LocalWorld::new(3)?;
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let handles: Vec<_> = ranks.iter().map(|r| s.spawn(move || {
///         let mut buf = vec![r.rank() as f32; 2];
///         r.all_reduce_sum(&mut buf).map(|_| buf)
///     })).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect::<handgrad::Result<_>>()
/// })?;
/// assert!(sums.iter().all(|s| s == &[3.0, 3.0]));
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalWorld {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl LocalWorld {
    /// The `size` ranks of a new world, rank `i` at index `i`.
    ///
    /// # Errors
    /// [`Error::Config`] for `size == 0`.
    pub fn new(size: usize) -> Result<Vec<LocalWorld>> {
        if size == 0 {
            return Err(Error::config("LocalWorld", "size", 0, "at least 1 rank"));
        }
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![Payload::Empty; size]),
            barrier: Barrier::new(size),
        });
        Ok((0..size)
            .map(|rank| LocalWorld {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect())
    }

    /// Posts `mine`, waits for every rank, returns all posts in rank order.
    fn exchange(&self, mine: Payload) -> Result<Vec<Payload>> {
        self.lock()?[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self.lock()?.clone();
        // nobody may post the next collective's buffer before everyone has read this one
        self.shared.barrier.wait();
        Ok(all)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<Payload>>> {
        self.shared.slots.lock().map_err(|_| {
            Error::State("LocalWorld: another rank panicked inside a collective".into())
        })
    }

    fn floats(all: Vec<Payload>) -> Vec<(Vec<f32>, Vec<usize>)> {
        all.into_iter()
            .map(|p| match p {
                Payload::Floats(v, c) => (v, c),
                _ => (Vec::new(), Vec::new()),
            })
            .collect()
    }
}

impl Communicator for LocalWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn barrier(&self) -> Result<()> {
        self.exchange(Payload::Empty).map(|_| ())
    }
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        check_root("broadcast_bytes", root, self.size)?;
        let all = self.exchange(Payload::Bytes(buf.clone()))?;
        if let Payload::Bytes(b) = &all[root] {
            *buf = b.clone();
        }
        Ok(())
    }
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        check_root("broadcast_f32", root, self.size)?;
        let all = Self::floats(self.exchange(Payload::Floats(buf.to_vec(), Vec::new()))?);
        let theirs = &all[root].0;
        if theirs.len() != buf.len() {
            return Err(Error::shape(
                "broadcast_f32",
                format!("a buffer of the root's {} values", theirs.len()),
                &[buf.len()],
            ));
        }
        buf.copy_from_slice(theirs);
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let all = self.exchange(Payload::Bytes(mine.to_vec()))?;
        Ok(all
            .into_iter()
            .map(|p| match p {
                Payload::Bytes(b) => b,
                _ => Vec::new(),
            })
            .collect())
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let all = Self::floats(self.exchange(Payload::Floats(buf.to_vec(), Vec::new()))?);
        if let Some((s, (v, _))) = all
            .iter()
            .enumerate()
            .find(|(_, (v, _))| v.len() != buf.len())
        {
            return Err(Error::shape(
                "all_reduce_sum",
                format!("the same length on every rank (rank {s} has {})", v.len()),
                &[buf.len()],
            ));
        }
        // a fixed order: ((r0 + r1) + r2) + …
        buf.copy_from_slice(&all[0].0);
        for (v, _) in &all[1..] {
            for (b, x) in buf.iter_mut().zip(v) {
                *b += x;
            }
        }
        Ok(())
    }
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        check_counts("all_to_all_v", self.size, send_counts, send.len(), "send")?;
        check_counts("all_to_all_v", self.size, recv_counts, recv.len(), "recv")?;
        let all =
            Self::floats(self.exchange(Payload::Floats(send.to_vec(), send_counts.to_vec()))?);
        let mut at = 0;
        for (s, (v, counts)) in all.iter().enumerate() {
            let offset: usize = counts[..self.rank].iter().sum();
            let n = counts[self.rank];
            if n != recv_counts[s] {
                return Err(Error::shape(
                    "all_to_all_v",
                    format!("recv_counts[{s}] equal to what rank {s} sends ({n})"),
                    &[recv_counts[s]],
                ));
            }
            recv[at..at + n].copy_from_slice(&v[offset..offset + n]);
            at += n;
        }
        Ok(())
    }
    fn all_gather_v(&self, mine: &[f32], recv: &mut [f32], counts: &[usize]) -> Result<()> {
        check_counts("all_gather_v", self.size, counts, recv.len(), "recv")?;
        if mine.len() != counts[self.rank] {
            return Err(Error::shape(
                "all_gather_v",
                format!("this rank's part of counts[{}] values", self.rank),
                &[mine.len()],
            ));
        }
        let all = Self::floats(self.exchange(Payload::Floats(mine.to_vec(), Vec::new()))?);
        let mut at = 0;
        for (s, (v, _)) in all.iter().enumerate() {
            if v.len() != counts[s] {
                return Err(Error::shape(
                    "all_gather_v",
                    format!("counts[{s}] values from rank {s}"),
                    &[v.len()],
                ));
            }
            recv[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        }
        Ok(())
    }
}
