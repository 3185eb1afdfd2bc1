//! The [`Communicator`] trait every collective goes through, the buffer and reduction types
//! it takes, and [`broadcast_value`] on top of it. Backends (`single.rs`, `mpi.rs`, and NCCL
//! in `crate::gpu::nccl`) implement the trait; the trainer and the search call it.

use half::{bf16, f16};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::DistError;

/// How values combine in a reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise mean over ranks.
    Mean,
}

/// A mutable buffer of one of the element types the collectives support.
#[derive(Debug)]
pub enum BufMut<'a> {
    /// f32.
    F32(&'a mut [f32]),
    /// f64.
    F64(&'a mut [f64]),
    /// bfloat16 (reduced in f32).
    BF16(&'a mut [bf16]),
    /// float16 (reduced in f32).
    F16(&'a mut [f16]),
}

impl BufMut<'_> {
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            BufMut::F32(b) => b.len(),
            BufMut::F64(b) => b.len(),
            BufMut::BF16(b) => b.len(),
            BufMut::F16(b) => b.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The collectives MixAtlas uses, over a group of ranks.
///
/// All ranks of the group must call the same collectives in the same order with buffers of the
/// same size (the MPI rule). Implementations: [`SingleProcess`](super::SingleProcess), `mpi::MpiComm`, and NCCL.
pub trait Communicator: Send {
    /// This process's rank in the group.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// Reduces `buf` across ranks in place; every rank gets the result.
    fn all_reduce(&self, buf: BufMut<'_>, op: ReduceOp) -> Result<(), DistError>;
    /// Broadcasts `bytes` from `root`; other ranks' vectors are replaced (any length).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError>;
    /// Gathers every rank's `send` (same length everywhere) into `recv` in rank order
    /// (`recv.len() = size · send.len()`).
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<(), DistError>;
    /// Reduces `send` (`size · recv.len()` elements) across ranks and gives rank r the r-th
    /// chunk of the result in `recv`.
    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32], op: ReduceOp)
        -> Result<(), DistError>;
    /// Waits until every rank reaches it.
    fn barrier(&self) -> Result<(), DistError>;
    /// Splits into sub-groups: ranks with the same `color` form a group, ordered by `key`.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, DistError>;

    /// Sends `bytes` to rank `dest` alone (point to point, for control messages such as the
    /// MPI search's orders and results; not watched by a collective timeout). The default:
    /// this backend has no point-to-point messages.
    fn send_bytes(&self, _bytes: &[u8], _dest: usize) -> Result<(), DistError> {
        Err(no_point_to_point("send", self.rank()))
    }

    /// The next message sent to this rank by `source` (any rank: `None`), if one has
    /// arrived: `(sender, bytes)`; returns at once. The default: no point-to-point messages.
    fn try_recv_bytes(
        &self,
        _source: Option<usize>,
    ) -> Result<Option<(usize, Vec<u8>)>, DistError> {
        Err(no_point_to_point("receive", self.rank()))
    }
}

fn no_point_to_point(op: &'static str, rank: usize) -> DistError {
    DistError::Backend {
        op,
        rank,
        reason: "this backend has no point-to-point messages".into(),
    }
}

/// Waits for the next message from `source` (any rank: `None`): `(sender, bytes)`. Polls
/// with a 1 ms sleep instead of a blocking receive, so a rank that waits long (an idle
/// trial group, the MPI search's controller) does not spin a core the trainers need.
pub fn recv_bytes(
    comm: &dyn Communicator,
    source: Option<usize>,
) -> Result<(usize, Vec<u8>), DistError> {
    loop {
        if let Some(m) = comm.try_recv_bytes(source)? {
            return Ok(m);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Broadcasts a serialisable value from `root` (JSON on the wire); every rank returns it.
pub fn broadcast_value<T: Serialize + DeserializeOwned>(
    comm: &dyn Communicator,
    value: Option<&T>,
    root: usize,
) -> Result<T, DistError> {
    let rank = comm.rank();
    let mut bytes = match (comm.rank() == root, value) {
        (true, Some(v)) => {
            serde_json::to_vec(v).map_err(|source| DistError::Json { rank, source })?
        }
        (true, None) => {
            return Err(DistError::Codec {
                rank,
                reason: "the root has no value to broadcast".into(),
            })
        }
        (false, _) => Vec::new(),
    };
    comm.broadcast_bytes(&mut bytes, root)?;
    serde_json::from_slice(&bytes).map_err(|source| DistError::Json { rank, source })
}

/// Checks `reduce_scatter`/`all_gather` sizes (`big = size · small`).
pub(crate) fn check_chunks(
    op: &'static str,
    rank: usize,
    size: usize,
    big: usize,
    small: usize,
) -> Result<(), DistError> {
    if big != size * small {
        return Err(DistError::Shape {
            op,
            rank,
            reason: format!("buffer of {big} elements is not {size} ranks × {small}"),
        });
    }
    Ok(())
}
