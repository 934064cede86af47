//! [`MpiWorld`]: the ranks of an MPI job (feature `mpi`), through the `mpi` crate.
//!
//! Tested with Debian's Open MPI 4.1.4 (`libopenmpi-dev`, `openmpi-bin`), started by
//! `mpirun --allow-run-as-root -np N`.

use super::comm::{check_counts, check_root, Communicator};
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Equivalence, Root};
use mpi::Threading;
use std::sync::{Mutex, MutexGuard};

/// Environment variables in which launchers announce the world size they started.
const LAUNCHER_SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The MPI world of this process (`MPI_COMM_WORLD`), initialised by [`MpiWorld::init`] and
/// finalised when dropped (drop it on the thread that created it, normally `main`).
///
/// MPI is initialised with `MPI_THREAD_SERIALIZED` and every call holds a lock, so the world
/// can be shared between threads; rayon's worker threads never call MPI.
pub struct MpiWorld {
    /// The universe (finalised on drop) and the all-reduce's receive buffer, reused.
    universe: Mutex<(Universe, Vec<f32>)>,
    rank: usize,
    size: usize,
}

/// The locked universe and receive buffer of [`MpiWorld`], held for the length of an MPI call.
type WorldGuard<'a> = MutexGuard<'a, (Universe, Vec<f32>)>;

impl std::fmt::Debug for MpiWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiWorld")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl MpiWorld {
    /// Initialises MPI (once per process) and checks that the launcher's world is the one MPI
    /// reports: a binary linked to one MPI library but started by another library's launcher
    /// runs N single-rank copies, which is refused here.
    ///
    /// # Errors
    /// [`Error::State`] when MPI was already initialised in this process, when it does not
    /// provide `MPI_THREAD_SERIALIZED`, or when the launcher started another number of
    /// processes than the world size MPI reports.
    pub fn init() -> Result<MpiWorld> {
        let (universe, provided) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                Error::State(
                    "MPI is already initialised in this process: call Distributed::init() once \
                     and clone the handle"
                        .into(),
                )
            })?;
        if matches!(provided, Threading::Single | Threading::Funneled) {
            return Err(Error::State(format!(
                "MPI provides thread level {provided:?}; handgrad needs Serialized (calls from \
                 one thread at a time)"
            )));
        }
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        for var in LAUNCHER_SIZE_VARS {
            let launched = std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(n) = launched.filter(|&n| n != size) {
                return Err(Error::State(format!(
                    "the launcher started {n} processes ({var}={n}) but MPI reports a world \
                     of {size}: this binary is linked to another MPI library than the \
                     launcher's (rebuild against the launcher's library or use its mpirun)"
                )));
            }
        }
        Ok(MpiWorld {
            universe: Mutex::new((universe, Vec::new())),
            rank,
            size,
        })
    }

    /// The world communicator, with the lock that serialises MPI calls.
    fn world(&self) -> Result<(WorldGuard<'_>, SimpleCommunicator)> {
        let guard = self
            .universe
            .lock()
            .map_err(|_| Error::State("MpiWorld: a thread panicked inside an MPI call".into()))?;
        let world = guard.0.world();
        Ok((guard, world))
    }
}

/// A count or displacement as MPI's `int`.
fn count(n: usize, op: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::config(
            op,
            "count",
            n,
            "at most 2^31 - 1 values per rank in one MPI call",
        )
    })
}

/// Counts and displacements (prefix sums) as MPI's `int`s.
fn counts_displs(counts: &[usize], op: &str) -> Result<(Vec<i32>, Vec<i32>)> {
    let mut c = Vec::with_capacity(counts.len());
    let mut d = Vec::with_capacity(counts.len());
    let mut at = 0usize;
    for &n in counts {
        c.push(count(n, op)?);
        d.push(count(at, op)?);
        at += n;
    }
    Ok((c, d))
}

impl MpiWorld {
    fn gather_counts(&self, world: &SimpleCommunicator, n: usize, op: &str) -> Result<Vec<usize>> {
        let mine = count(n, op)?;
        let mut all = vec![0i32; self.size];
        world.all_gather_into(&mine, &mut all[..]);
        Ok(all.into_iter().map(|c| c as usize).collect())
    }

    fn gather_v<T: Equivalence + Copy + Default>(
        &self,
        world: &SimpleCommunicator,
        mine: &[T],
        counts: &[usize],
        op: &str,
    ) -> Result<Vec<T>> {
        let (c, d) = counts_displs(counts, op)?;
        let total: usize = counts.iter().sum();
        if total == 0 {
            // every rank knows the counts: nothing to move
            return Ok(Vec::new());
        }
        let mut recv = vec![T::default(); total];
        // An empty slice's pointer is dangling, and for one-byte types it is the address 1,
        // which Open MPI reads as MPI_IN_PLACE: send an empty slice of a real buffer instead.
        let one = [T::default()];
        let send = if mine.is_empty() { &one[..0] } else { mine };
        let mut part = PartitionMut::new(&mut recv[..], c, d);
        world.all_gather_varcount_into(send, &mut part);
        Ok(recv)
    }
}

impl Communicator for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn barrier(&self) -> Result<()> {
        let (_g, world) = self.world()?;
        world.barrier();
        Ok(())
    }
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        check_root("broadcast_bytes", root, self.size)?;
        let (_g, world) = self.world()?;
        let proc = world.process_at_rank(root as i32);
        let mut len = buf.len() as u64;
        proc.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        // in pieces below MPI's int count limit
        for piece in buf.chunks_mut(1 << 30) {
            proc.broadcast_into(piece);
        }
        Ok(())
    }
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        check_root("broadcast_f32", root, self.size)?;
        let (_g, world) = self.world()?;
        let proc = world.process_at_rank(root as i32);
        let mut len = buf.len() as u64;
        proc.broadcast_into(&mut len);
        if len as usize != buf.len() {
            return Err(Error::shape(
                "broadcast_f32",
                format!("a buffer of the root's {len} values"),
                &[buf.len()],
            ));
        }
        for piece in buf.chunks_mut(1 << 28) {
            proc.broadcast_into(piece);
        }
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let (_g, world) = self.world()?;
        let counts = self.gather_counts(&world, mine.len(), "all_gather_bytes")?;
        let flat = self.gather_v(&world, mine, &counts, "all_gather_bytes")?;
        let mut out = Vec::with_capacity(self.size);
        let mut at = 0;
        for n in counts {
            out.push(flat[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let (mut guard, world) = self.world()?;
        let out = &mut guard.1;
        out.resize(buf.len().min(1 << 28), 0.0);
        for piece in buf.chunks_mut(1 << 28) {
            let out = &mut out[..piece.len()];
            world.all_reduce_into(&*piece, out, SystemOperation::sum());
            piece.copy_from_slice(out);
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
        let (sc, sd) = counts_displs(send_counts, "all_to_all_v")?;
        let (rc, rd) = counts_displs(recv_counts, "all_to_all_v")?;
        let (_g, world) = self.world()?;
        let send = Partition::new(send, sc, sd);
        let mut recv = PartitionMut::new(recv, rc, rd);
        world.all_to_all_varcount_into(&send, &mut recv);
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
        let (c, d) = counts_displs(counts, "all_gather_v")?;
        let (_g, world) = self.world()?;
        let mut part = PartitionMut::new(recv, c, d);
        world.all_gather_varcount_into(mine, &mut part);
        Ok(())
    }
}
