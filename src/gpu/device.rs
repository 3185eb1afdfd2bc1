//! One CUDA device for this process: chosen by local rank from the launch environment, with
//! its primary context and one stream, and its architecture for NVRTC.
//!
//! cudarc panics when the driver library is missing, so every entry point first checks that
//! `libcuda` loads and returns [`GpuError::NoDriver`] otherwise.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use super::GpuError;
use crate::dist::LaunchEnv;

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// [`GpuError::NoDriver`] unless the driver library loads.
pub fn require_driver() -> Result<(), GpuError> {
    if driver_present() {
        Ok(())
    } else {
        Err(GpuError::NoDriver)
    }
}

/// Devices the driver reports.
pub fn device_count() -> Result<usize, GpuError> {
    require_driver()?;
    CudaContext::device_count()
        .map(|n| n.max(0) as usize)
        .map_err(|e| GpuError::driver("counting devices", e))
}

/// A device, its context and the stream all work of this process is queued on.
#[derive(Debug, Clone)]
pub struct GpuDevice {
    /// The primary context.
    pub ctx: Arc<CudaContext>,
    /// The stream kernels, copies and NCCL collectives run on.
    pub stream: Arc<CudaStream>,
}

impl GpuDevice {
    /// Device `index` (an ordinal among the visible devices).
    pub fn open(index: usize) -> Result<Self, GpuError> {
        let count = device_count()?;
        if index >= count {
            return Err(GpuError::NoDevice { index, count });
        }
        let ctx = CudaContext::new(index)
            .map_err(|e| GpuError::driver(format!("creating a context on device {index}"), e))?;
        // SAFETY: all work of this process is queued on the one stream below (kernels, copies,
        // NCCL), so cudarc's per-allocation events (which order several streams) are not
        // needed; without them a timed kernel is not interleaved with event records.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| GpuError::driver("creating a stream", e))?;
        Ok(Self { ctx, stream })
    }

    /// The device of this rank: local rank modulo the visible devices.
    pub fn for_rank(env: &LaunchEnv) -> Result<Self, GpuError> {
        let count = device_count()?;
        if count == 0 {
            return Err(GpuError::NoDevice { index: 0, count });
        }
        Self::open(env.device_index(count))
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device name, e.g. `NVIDIA H200`.
    pub fn name(&self) -> Result<String, GpuError> {
        self.ctx
            .name()
            .map_err(|e| GpuError::driver("reading the device name", e))
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> Result<(i32, i32), GpuError> {
        self.ctx
            .compute_capability()
            .map_err(|e| GpuError::driver("reading the compute capability", e))
    }

    /// The NVRTC architecture of this device (`sm_90` on an H100/H200).
    pub fn arch(&self) -> Result<String, GpuError> {
        let (major, minor) = self.compute_capability()?;
        Ok(super::nvrtc::arch_for(major, minor))
    }

    /// Waits for all work queued on the stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(|e| GpuError::driver("synchronising the stream", e))
    }
}
