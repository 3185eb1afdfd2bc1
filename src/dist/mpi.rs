//! The MPI backend of [`Communicator`] (rsmpi, cargo feature `mpi`): collectives on host
//! buffers for CPU training and for all control traffic (mixtures, results, NCCL ids).
//!
//! bf16/f16 buffers are reduced in f32 (converted, reduced, converted back), which is also
//! what NCCL does internally for accuracy. Every collective is watched by the
//! [`Watchdog`](super::watchdog::Watchdog): a rank that never arrives ends the job with an
//! error naming the operation instead of a silent hang. Point-to-point messages (the MPI
//! search's orders and results) are not watched: a trial group may rightly wait for an order
//! as long as other groups train.

use std::time::Duration;

use half::{bf16, f16};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Color, Communicator as _, SimpleCommunicator};

use super::communicator::{check_chunks, BufMut, Communicator, ReduceOp};
use super::error::DistError;
use super::watchdog::Watchdog;

/// An MPI communicator (the world or a split of it).
pub struct MpiComm {
    comm: SimpleCommunicator,
    watchdog: Watchdog,
    timeout: Duration,
    /// Send-side copy for all-reduces (MPI needs distinct send and receive buffers without
    /// MPI_IN_PLACE, which rsmpi does not expose); kept so its pages are faulted in once.
    scratch: std::cell::RefCell<Vec<f32>>,
}

// SAFETY: MixAtlas calls MPI from one thread per process (MPI_THREAD_FUNNELED semantics); the
// handle is only moved, never shared, between threads.
unsafe impl Send for MpiComm {}

/// MPI for the life of a command: initialised by [`MpiRuntime::init`], finalised when dropped
/// (keep it alive until every communicator is gone, e.g. as the first local of the command).
pub struct MpiRuntime {
    _universe: mpi::environment::Universe,
}

impl MpiRuntime {
    /// Initialises MPI; `None` when it was already initialised in this process.
    pub fn init() -> Option<Self> {
        mpi::initialize().map(|u| Self { _universe: u })
    }

    /// The world communicator; collectives taking longer than `timeout` abort the job (zero =
    /// never).
    pub fn world(&self, timeout: Duration) -> MpiComm {
        let comm = SimpleCommunicator::world();
        let rank = comm.rank() as usize;
        MpiComm {
            comm,
            watchdog: Watchdog::start(rank, timeout),
            timeout,
            scratch: Default::default(),
        }
    }
}

impl MpiComm {
    fn size_u(&self) -> usize {
        self.comm.size() as usize
    }
}

fn reduce_f32(
    comm: &SimpleCommunicator,
    scratch: &std::cell::RefCell<Vec<f32>>,
    buf: &mut [f32],
    op: ReduceOp,
) {
    let mut send = scratch.borrow_mut();
    send.clear();
    send.extend_from_slice(buf);
    comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
    if op == ReduceOp::Mean {
        let n = comm.size() as f32;
        buf.iter_mut().for_each(|x| *x /= n);
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.size_u()
    }

    fn all_reduce(&self, buf: BufMut<'_>, op: ReduceOp) -> Result<(), DistError> {
        let _g = self.watchdog.enter("all_reduce");
        match buf {
            BufMut::F32(b) => reduce_f32(&self.comm, &self.scratch, b, op),
            BufMut::F64(b) => {
                let send = b.to_vec();
                self.comm
                    .all_reduce_into(&send[..], &mut b[..], SystemOperation::sum());
                if op == ReduceOp::Mean {
                    let n = self.size_u() as f64;
                    b.iter_mut().for_each(|x| *x /= n);
                }
            }
            BufMut::BF16(b) => {
                let mut f: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
                reduce_f32(&self.comm, &self.scratch, &mut f, op);
                b.iter_mut()
                    .zip(f)
                    .for_each(|(x, y)| *x = bf16::from_f32(y));
            }
            BufMut::F16(b) => {
                let mut f: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
                reduce_f32(&self.comm, &self.scratch, &mut f, op);
                b.iter_mut().zip(f).for_each(|(x, y)| *x = f16::from_f32(y));
            }
        }
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        let _g = self.watchdog.enter("broadcast");
        let root_proc = self.comm.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root_proc.broadcast_into(&mut len);
        if self.rank() != root {
            bytes.resize(len as usize, 0);
        }
        if len > 0 {
            root_proc.broadcast_into(&mut bytes[..]);
        }
        Ok(())
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<(), DistError> {
        check_chunks(
            "all_gather",
            self.rank(),
            self.size_u(),
            recv.len(),
            send.len(),
        )?;
        let _g = self.watchdog.enter("all_gather");
        self.comm.all_gather_into(send, recv);
        Ok(())
    }

    fn reduce_scatter(
        &self,
        send: &[f32],
        recv: &mut [f32],
        op: ReduceOp,
    ) -> Result<(), DistError> {
        check_chunks(
            "reduce_scatter",
            self.rank(),
            self.size_u(),
            send.len(),
            recv.len(),
        )?;
        let _g = self.watchdog.enter("reduce_scatter");
        self.comm
            .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        if op == ReduceOp::Mean {
            let n = self.size_u() as f32;
            recv.iter_mut().for_each(|x| *x /= n);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        let _g = self.watchdog.enter("barrier");
        self.comm.barrier();
        Ok(())
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, DistError> {
        let _g = self.watchdog.enter("split");
        let sub = self
            .comm
            .split_by_color_with_key(Color::with_value(color as i32), key as i32)
            .ok_or_else(|| DistError::Backend {
                op: "split",
                rank: self.rank(),
                reason: "MPI_Comm_split returned no communicator".into(),
            })?;
        let rank = sub.rank() as usize;
        Ok(Box::new(MpiComm {
            comm: sub,
            watchdog: Watchdog::start(rank, self.timeout),
            timeout: self.timeout,
            scratch: Default::default(),
        }))
    }

    fn send_bytes(&self, bytes: &[u8], dest: usize) -> Result<(), DistError> {
        self.comm.process_at_rank(dest as i32).send(bytes);
        Ok(())
    }

    fn try_recv_bytes(&self, source: Option<usize>) -> Result<Option<(usize, Vec<u8>)>, DistError> {
        let probe = match source {
            Some(r) => self
                .comm
                .process_at_rank(r as i32)
                .immediate_matched_probe(),
            None => self.comm.any_process().immediate_matched_probe(),
        };
        Ok(probe.map(|m| {
            let (bytes, status) = m.matched_receive_vec::<u8>();
            (status.source_rank() as usize, bytes)
        }))
    }
}
