//! Data-parallel training over a world of ranks: every rank holds the whole model, takes a
//! contiguous slice of each global batch, and the gradients are summed over the ranks before
//! every (identical) optimizer step.
//!
//! - [`Distributed`]: the handle the training loops take ([`crate::model::FitOptions::distributed`],
//!   [`crate::transformer::LmTrainer::distributed`]): rank, size, barrier, broadcasts, and the
//!   [`Reduction`] mode.
//! - [`Communicator`]: the collectives, with [`SingleProcess`] and [`LocalWorld`] (ranks as
//!   threads of one process) always compiled, and `MpiWorld` behind the `mpi` feature
//!   (`Distributed::init()`).
//!
//! # What is bit-identical
//!
//! With [`Reduction::Deterministic`] (the default) a global batch is cut into fixed
//! micro-batches (`micro_batch` rows each, the last one possibly smaller); each micro-batch's
//! gradient is the gradient of its mean loss times `its examples / the global batch's examples`
//! (target tokens for language models), so uneven last batches are weighted correctly; and the
//! micro-batch gradients are summed by one fixed pairwise tree (see the `tree` module's order).
//! The weights after any number of steps are then **the same bits for 1, 2, 4, … ranks**, and the
//! same as one process training with the same global batch and micro-batch size (which is what
//! `Distributed::single()` with a `micro_batch` does). Dropout masks are keyed by the global
//! step and the global example (row), never by the rank.
//!
//! [`Reduction::AllReduce`] gives each rank one slice of the batch and sums with the transport's
//! own all-reduce (`MPI_Allreduce`): fastest, equal to single-process training within float
//! rounding, but its bits depend on the rank count and the algorithm MPI picks.
//!
//! # Communication
//!
//! Per optimizer step each rank sends and receives about `2(p − 1)/p × 4 × P` bytes for `P`
//! trainable parameters and `p` ranks, in both modes (the deterministic one does a reduce-scatter
//! by all-to-all and an all-gather, the volume of a ring all-reduce; a rank whose micro-batches
//! do not form one aligned subtree sends a few more node chunks). Communication grows linearly
//! with the parameter count and is nearly flat in the rank count, while each rank's compute
//! shrinks as `1/p`: scaling is good while `compute(P, B/p) ≫ 8P/bandwidth`.
//!
//! # Agreement
//!
//! Everything that decides whether to go on is decided on reduced values, which are the same on
//! every rank: the finite-loss and finite-gradient checks, clipping, early stopping. A rank
//! whose own part fails (a bad label in its slice, a file it cannot read) still takes part in
//! the step's status exchange, so every rank returns an error together instead of waiting.
//! Rank 0 alone prints progress and writes checkpoints.

mod comm;
mod local;
#[cfg(feature = "mpi")]
mod mpi;
pub(crate) mod step;
mod tree;

pub use comm::{Communicator, SingleProcess};
pub use local::LocalWorld;
#[cfg(feature = "mpi")]
pub use mpi::MpiWorld;

use crate::error::{Error, Result};
use crate::param::Param;
use std::sync::Arc;

/// How gradients are summed over the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Fixed micro-batches summed by a fixed pairwise tree (all-to-all + all-gather): the result
    /// is bit-identical to single-process training with the same global batch and micro-batch
    /// size, for any number of ranks (the default).
    #[default]
    Deterministic,
    /// One slice per rank, summed by the transport's all-reduce (`MPI_Allreduce`): the fastest,
    /// equal to the deterministic result within float rounding.
    AllReduce,
}

/// How many bytes of a failed rank's error message [`Distributed::agree`] sends to the others.
pub const AGREE_MESSAGE_BYTES: usize = 2000;

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A handle on a world of ranks (cheap to clone), with the [`Reduction`] mode used by the
/// training loops that take it.
///
/// ```
/// use handgrad::distributed::Distributed;
/// let world = Distributed::single();
/// assert_eq!((world.rank(), world.size(), world.is_root()), (0, 1, true));
/// ```
#[derive(Clone)]
pub struct Distributed {
    comm: Arc<dyn Communicator>,
    reduction: Reduction,
}

impl std::fmt::Debug for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributed")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("reduction", &self.reduction)
            .finish()
    }
}

impl Distributed {
    /// The world of this process alone: the same training code runs without MPI (with
    /// [`Reduction::Deterministic`] and a micro-batch size, it gives the bits of any
    /// multi-rank run).
    pub fn single() -> Self {
        Distributed::from_communicator(SingleProcess)
    }

    /// Initialises MPI and returns its world (feature `mpi`). Call it once per process (MPI
    /// cannot be initialised twice) and clone the handle; MPI is finalised when the last clone
    /// is dropped.
    ///
    /// ```text
    /// mpirun --allow-run-as-root -np 2 target/release/examples/distributed
    /// ```
    ///
    /// # Errors
    /// As [`MpiWorld::init`]: MPI already initialised, or a launcher of another MPI library
    /// (the launcher's world size differs from MPI's).
    #[cfg(feature = "mpi")]
    pub fn init() -> Result<Self> {
        Ok(Distributed::from_communicator(MpiWorld::init()?))
    }

    /// `size` ranks as threads of this process ([`LocalWorld`]): run rank `i`'s training on its
    /// own thread with handle `i`.
    ///
    /// # Errors
    /// [`Error::Config`] for `size == 0`.
    pub fn local(size: usize) -> Result<Vec<Distributed>> {
        Ok(LocalWorld::new(size)?
            .into_iter()
            .map(Distributed::from_communicator)
            .collect())
    }

    /// A handle on any [`Communicator`].
    pub fn from_communicator(comm: impl Communicator + 'static) -> Self {
        Distributed {
            comm: Arc::new(comm),
            reduction: Reduction::default(),
        }
    }

    /// The same world with another reduction mode.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The reduction mode (default [`Reduction::Deterministic`]).
    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// This rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// Whether this is rank 0 (the one that prints and writes files).
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The transport.
    pub fn communicator(&self) -> &dyn Communicator {
        self.comm.as_ref()
    }

    /// Returns when every rank has called it.
    ///
    /// # Errors
    /// Transport errors.
    pub fn barrier(&self) -> Result<()> {
        self.comm.barrier()
    }

    /// Every rank learns whether every rank's `result` is `Ok`: then each gets its own value
    /// back; otherwise the failing ranks get their own error and the others an
    /// [`Error::State`] naming the first failed rank, `when`, and that rank's error message (at
    /// most [`AGREE_MESSAGE_BYTES`] bytes of it), so rank 0 — the one that prints — reports the
    /// cause even when the launcher ends the failing rank before its own output is written.
    /// Every rank must call it (that is what keeps one rank's error from leaving the others
    /// waiting in a collective).
    ///
    /// # Errors
    /// As described; transport errors.
    pub fn agree<T>(&self, result: Result<T>, when: &str) -> Result<T> {
        // an empty message means Ok; a failed rank sends b"!" followed by its message
        let mine = match &result {
            Ok(_) => Vec::new(),
            Err(e) => {
                let mut m = b"!".to_vec();
                m.extend_from_slice(truncate_utf8(&e.to_string(), AGREE_MESSAGE_BYTES).as_bytes());
                m
            }
        };
        let all = self.comm.all_gather_bytes(&mine)?;
        let failed = all.iter().position(|m| !m.is_empty());
        match (result, failed) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(r)) => Err(Error::State(format!(
                "rank {r} of {} failed {when}: {}; rank {} stopped with it",
                self.size(),
                String::from_utf8_lossy(all[r].get(1..).unwrap_or_default()),
                self.rank()
            ))),
            (Ok(v), None) => Ok(v),
        }
    }

    /// Overwrites every rank's parameters with rank 0's, after checking that all ranks hold the
    /// same names and shapes.
    ///
    /// # Errors
    /// [`Error::Param`] naming the first parameter whose name or shape differs from rank 0's;
    /// transport errors.
    pub fn broadcast_params(&self, params: &mut [(String, &mut Param)]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let layout: String = params
            .iter()
            .map(|(n, p)| format!("{n}:{:?}\n", p.value.shape()))
            .collect();
        let mut root_layout = layout.clone().into_bytes();
        self.comm.broadcast_bytes(0, &mut root_layout)?;
        let root_layout = String::from_utf8_lossy(&root_layout).into_owned();
        let mismatch = layout
            .lines()
            .zip(root_layout.lines().chain(std::iter::repeat("")))
            .find(|(a, b)| a != b)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .or_else(|| {
                (root_layout.lines().count() > layout.lines().count()).then(|| {
                    (
                        String::new(),
                        root_layout
                            .lines()
                            .nth(layout.lines().count())
                            .unwrap_or("")
                            .into(),
                    )
                })
            });
        let check = match mismatch {
            Some((mine, root)) => Err(Error::Param {
                name: mine.split(':').next().unwrap_or("").to_string(),
                message: format!(
                    "broadcast_params: rank {} has {mine:?} where rank 0 has {root:?} (every rank \
                     must build the same model)",
                    self.rank()
                ),
            }),
            None => Ok(()),
        };
        self.agree(check, "comparing the parameters with rank 0's")?;
        for (_, p) in params.iter_mut() {
            let buf = p.value.as_slice_mut().ok_or_else(|| {
                Error::State("broadcast_params: a non-contiguous parameter".into())
            })?;
            self.comm.broadcast_f32(0, buf)?;
        }
        Ok(())
    }

    /// Rank 0 reads the file at `path` and every rank receives its bytes (checkpoints need not
    /// be on a shared file system).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file on rank 0 (an [`Error::State`] saying so on the others);
    /// transport errors.
    pub fn read_on_root(&self, path: &std::path::Path) -> Result<Vec<u8>> {
        let read = if self.is_root() {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
        } else {
            Ok(Vec::new())
        };
        let mut bytes = self.agree(read, &format!("reading {}", path.display()))?;
        self.comm.broadcast_bytes(0, &mut bytes)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_utf8;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("abc", 2), "ab");
        // "é" is two bytes: a cut inside it drops it
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
        assert_eq!(truncate_utf8("é", 0), "");
    }
}
