//! The single-process communicator: rank 0 of 1, every collective a copy or a no-op. What the
//! same binary uses on a laptop, so code paths are identical with and without MPI. No
//! point-to-point message ever arrives (there is no other rank).

use super::communicator::{check_chunks, BufMut, Communicator, ReduceOp};
use super::error::DistError;

/// Rank 0 of a group of 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce(&self, _buf: BufMut<'_>, _op: ReduceOp) -> Result<(), DistError> {
        Ok(())
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<(), DistError> {
        Ok(())
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<(), DistError> {
        check_chunks("all_gather", 0, 1, recv.len(), send.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn reduce_scatter(
        &self,
        send: &[f32],
        recv: &mut [f32],
        _op: ReduceOp,
    ) -> Result<(), DistError> {
        check_chunks("reduce_scatter", 0, 1, send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
    fn barrier(&self) -> Result<(), DistError> {
        Ok(())
    }
    fn split(&self, _color: usize, _key: usize) -> Result<Box<dyn Communicator>, DistError> {
        Ok(Box::new(SingleProcess))
    }
    /// No other rank exists to send to.
    fn send_bytes(&self, _bytes: &[u8], dest: usize) -> Result<(), DistError> {
        Err(DistError::Backend {
            op: "send",
            rank: 0,
            reason: format!("rank {dest} does not exist in a group of 1"),
        })
    }
    /// No other rank sends: nothing ever arrives.
    fn try_recv_bytes(
        &self,
        _source: Option<usize>,
    ) -> Result<Option<(usize, Vec<u8>)>, DistError> {
        Ok(None)
    }
}
