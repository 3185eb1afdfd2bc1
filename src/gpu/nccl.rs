//! The NCCL backend of the [`Communicator`]: collectives on device buffers over NVLink /
//! InfiniBand, with the control plane (the NCCL unique id, broadcasts of bytes, barriers,
//! splits) on a host communicator (MPI under `mpirun`/`srun`, or [`SingleProcess`] for one
//! rank).
//!
//! Rank 0 creates the NCCL unique id and broadcasts it over the host communicator; every rank
//! then joins with `ncclCommInitRank` on its device (chosen by local rank). The device
//! collectives ([`NcclComm::all_reduce_device`], [`NcclComm::reduce_scatter_device`],
//! [`NcclComm::all_gather_device`]) are what a GPU trainer uses; the [`Communicator`] methods
//! on host buffers stage through the device, so the CPU trainer runs unchanged on top of NCCL.
//!
//! [`SingleProcess`]: crate::dist::SingleProcess

use std::ffi::c_char;

use cudarc::driver::CudaSlice;
use cudarc::nccl::{Comm, Id, NcclType};
use half::{bf16, f16};

use super::device::GpuDevice;
use super::GpuError;
use crate::dist::{check_chunks, BufMut, Communicator, DistError, ReduceOp};

/// Bytes of an NCCL unique id.
pub const NCCL_ID_BYTES: usize = 128;

const NCCL_HINT: &str = "install NCCL (libnccl.so.2), e.g. the PyPI wheel nvidia-nccl-cu12, and make an unversioned libnccl.so symlink on LD_LIBRARY_PATH (cudarc looks for libnccl.so)";

/// Whether the NCCL library can be loaded.
pub fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// [`GpuError::NoLibrary`] unless NCCL loads.
pub fn require_nccl() -> Result<(), GpuError> {
    if nccl_present() {
        Ok(())
    } else {
        Err(GpuError::NoLibrary {
            library: "NCCL (libnccl.so)",
            hint: NCCL_HINT,
        })
    }
}

fn nccl_op(op: ReduceOp) -> cudarc::nccl::ReduceOp {
    match op {
        ReduceOp::Sum => cudarc::nccl::ReduceOp::Sum,
        ReduceOp::Mean => cudarc::nccl::ReduceOp::Avg,
    }
}

/// An NCCL communicator over the ranks of a host communicator, one device per rank.
pub struct NcclComm {
    comm: Comm,
    dev: GpuDevice,
    host: Box<dyn Communicator>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; MixAtlas drives it from one thread per process and only moves it.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Joins the NCCL communicator of `host`'s ranks on `dev` (collective over `host`: every
    /// rank must call it).
    pub fn new(host: Box<dyn Communicator>, dev: &GpuDevice) -> Result<Self, GpuError> {
        require_nccl()?;
        let (rank, size) = (host.rank(), host.size());
        let mut bytes = Vec::new();
        if rank == 0 {
            let id = Id::new().map_err(|e| GpuError::Nccl {
                op: "ncclGetUniqueId",
                rank,
                reason: format!("{:?}", e.0),
            })?;
            bytes = id.internal().iter().map(|&c| c as u8).collect();
        }
        host.broadcast_bytes(&mut bytes, 0)?;
        let internal = id_from_bytes(&bytes).ok_or_else(|| GpuError::Nccl {
            op: "unique id broadcast",
            rank,
            reason: format!("received {} bytes, expected {NCCL_ID_BYTES}", bytes.len()),
        })?;
        let comm =
            Comm::from_rank(dev.stream.clone(), rank, size, Id::uninit(internal)).map_err(|e| {
                GpuError::Nccl {
                    op: "ncclCommInitRank",
                    rank,
                    reason: format!("{:?}", e.0),
                }
            })?;
        Ok(Self {
            comm,
            dev: dev.clone(),
            host,
        })
    }

    /// The device this rank's buffers live on.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    fn fail(&self, op: &'static str, e: cudarc::nccl::result::NcclError) -> GpuError {
        GpuError::Nccl {
            op,
            rank: self.host.rank(),
            reason: format!("{:?}", e.0),
        }
    }

    /// Reduces `buf` in place across ranks (queued on the device's stream).
    pub fn all_reduce_device<T: NcclType>(
        &self,
        buf: &mut CudaSlice<T>,
        op: ReduceOp,
    ) -> Result<(), GpuError> {
        self.comm
            .all_reduce_in_place(buf, &nccl_op(op))
            .map_err(|e| self.fail("ncclAllReduce", e))?;
        Ok(())
    }

    /// Reduces `send` (`size · recv.len()` elements) and gives rank r the r-th chunk.
    pub fn reduce_scatter_device<T: NcclType>(
        &self,
        send: &CudaSlice<T>,
        recv: &mut CudaSlice<T>,
        op: ReduceOp,
    ) -> Result<(), GpuError> {
        check_chunks(
            "reduce_scatter",
            self.rank(),
            self.size(),
            send.len(),
            recv.len(),
        )?;
        self.comm
            .reduce_scatter(send, recv, &nccl_op(op))
            .map_err(|e| self.fail("ncclReduceScatter", e))?;
        Ok(())
    }

    /// Gathers every rank's `send` into `recv` in rank order.
    pub fn all_gather_device<T: NcclType>(
        &self,
        send: &CudaSlice<T>,
        recv: &mut CudaSlice<T>,
    ) -> Result<(), GpuError> {
        check_chunks(
            "all_gather",
            self.rank(),
            self.size(),
            recv.len(),
            send.len(),
        )?;
        self.comm
            .all_gather(send, recv)
            .map_err(|e| self.fail("ncclAllGather", e))?;
        Ok(())
    }

    fn dist(&self, op: &'static str, e: GpuError) -> DistError {
        DistError::Device {
            op,
            rank: self.host.rank(),
            source: Box::new(e),
        }
    }

    /// A host buffer reduced through the device: upload, all-reduce, download.
    fn all_reduce_host<T: NcclType + cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        buf: &mut [T],
        op: ReduceOp,
    ) -> Result<(), GpuError> {
        if buf.is_empty() {
            return Ok(());
        }
        let s = &self.dev.stream;
        let mut d = s
            .clone_htod(buf)
            .map_err(|e| GpuError::driver("staging an all-reduce", e))?;
        self.all_reduce_device(&mut d, op)?;
        s.memcpy_dtoh(&d, buf)
            .map_err(|e| GpuError::driver("reading an all-reduce back", e))?;
        self.dev.synchronize()
    }
}

impl NcclComm {
    /// Runs a collective from host `send` into host `recv` through device copies of both
    /// (uploaded, `collective`, read back, synchronised); `what` names it in errors.
    fn host_staged(
        &self,
        what: &str,
        send: &[f32],
        recv: &mut [f32],
        collective: impl FnOnce(&CudaSlice<f32>, &mut CudaSlice<f32>) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        let s = &self.dev.stream;
        let d_send = s
            .clone_htod(send)
            .map_err(|e| GpuError::driver(format!("staging {what}"), e))?;
        let mut d_recv = s
            .alloc_zeros::<f32>(recv.len())
            .map_err(|e| GpuError::driver(format!("allocating {what}"), e))?;
        collective(&d_send, &mut d_recv)?;
        s.memcpy_dtoh(&d_recv, recv)
            .map_err(|e| GpuError::driver(format!("reading {what} back"), e))?;
        self.dev.synchronize()
    }
}

/// The 128 NCCL id bytes as the `c_char` array cudarc takes.
fn id_from_bytes(bytes: &[u8]) -> Option<[c_char; NCCL_ID_BYTES]> {
    if bytes.len() != NCCL_ID_BYTES {
        return None;
    }
    let mut internal = [0 as c_char; NCCL_ID_BYTES];
    for (o, &b) in internal.iter_mut().zip(bytes) {
        *o = b as c_char;
    }
    Some(internal)
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn size(&self) -> usize {
        self.host.size()
    }

    fn all_reduce(&self, buf: BufMut<'_>, op: ReduceOp) -> Result<(), DistError> {
        let r = match buf {
            BufMut::F32(b) => self.all_reduce_host(b, op),
            BufMut::F64(b) => self.all_reduce_host(b, op),
            // Reduced in f32, as the MPI backend does.
            BufMut::BF16(b) => {
                let mut f: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
                let r = self.all_reduce_host(&mut f, op);
                b.iter_mut()
                    .zip(f)
                    .for_each(|(x, y)| *x = bf16::from_f32(y));
                r
            }
            BufMut::F16(b) => {
                let mut f: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
                let r = self.all_reduce_host(&mut f, op);
                b.iter_mut().zip(f).for_each(|(x, y)| *x = f16::from_f32(y));
                r
            }
        };
        r.map_err(|e| self.dist("all_reduce", e))
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        self.host.broadcast_bytes(bytes, root)
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<(), DistError> {
        check_chunks(
            "all_gather",
            self.rank(),
            self.size(),
            recv.len(),
            send.len(),
        )?;
        if send.is_empty() {
            return Ok(());
        }
        self.host_staged("an all-gather", send, recv, |d_send, d_recv| {
            self.all_gather_device(d_send, d_recv)
        })
        .map_err(|e| self.dist("all_gather", e))
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
            self.size(),
            send.len(),
            recv.len(),
        )?;
        if recv.is_empty() {
            return Ok(());
        }
        self.host_staged("a reduce-scatter", send, recv, |d_send, d_recv| {
            self.reduce_scatter_device(d_send, d_recv, op)
        })
        .map_err(|e| self.dist("reduce_scatter", e))
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.host.barrier()
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>, DistError> {
        let sub = self.host.split(color, key)?;
        let comm = NcclComm::new(sub, &self.dev).map_err(|e| self.dist("split", e))?;
        Ok(Box::new(comm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_bytes() {
        let bytes: Vec<u8> = (0..128u8).map(|b| b.wrapping_mul(37)).collect();
        let id = id_from_bytes(&bytes).unwrap();
        let back: Vec<u8> = id.iter().map(|&c| c as u8).collect();
        assert_eq!(back, bytes);
        assert!(id_from_bytes(&bytes[..127]).is_none());
    }
}
