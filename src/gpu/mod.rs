//! The GPU path: the fused sampling kernel (`kernels/fused_sample.cu`), its host-side
//! parameter packing, device setup, run-time compilation with NVRTC, and the NCCL backend of
//! the [`Communicator`](crate::dist::Communicator).
//!
//! Why it exists: on a GPU node, batch assembly and gradient reduction should happen on the
//! device, from the same counter-based stream the CPU sampler defines, so a GPU run and a CPU
//! run see bit-identical batches (`docs/gpu.md`). Everything that needs CUDA sits behind the
//! cargo feature `cuda` and loads its libraries at run time (cudarc's dynamic loading), so
//! the feature builds on machines without CUDA and a missing library is a [`GpuError`], not a
//! panic. The packing ([`layout`]) and the kernel sources ([`KERNELS`]) are always compiled,
//! so their tests run everywhere.

pub mod layout;

#[cfg(feature = "cuda")]
pub mod check;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod nccl;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod sample;

/// One CUDA C source file of `kernels/`, embedded at build time.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// File name under `kernels/`.
    pub file: &'static str,
    /// The source text.
    pub source: &'static str,
    /// Its `extern "C" __global__` entry points.
    pub entries: &'static [&'static str],
}

/// Every kernel source of `kernels/` (the NVRTC check compiles each of them).
pub const KERNELS: &[KernelSource] = &[FUSED_SAMPLE];

/// `kernels/fused_sample.cu`: draw cell, pick document, gather tokens and mask (pad mode).
pub const FUSED_SAMPLE: KernelSource = KernelSource {
    file: "fused_sample.cu",
    source: include_str!("../../kernels/fused_sample.cu"),
    entries: &["fused_sample_pad_u16", "fused_sample_pad_u32"],
};

impl KernelSource {
    /// Hex SHA-256 of the source text: names the exact source a prebuilt CUBIN was compiled
    /// from (`mixatlas gpu compile-kernels --out DIR` writes it beside the CUBINs).
    pub fn source_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        crate::data::corpus::hex(&Sha256::digest(self.source.as_bytes()))
    }

    /// The file stem (`fused_sample`).
    pub fn stem(&self) -> &'static str {
        self.file.trim_end_matches(".cu")
    }
}

/// Environment variable naming a directory of prebuilt kernels (`<stem>.<arch>.cubin` and
/// `<stem>.sha256`), used when NVRTC is not installed on the GPU machine.
pub const KERNEL_DIR_VAR: &str = "MIXATLAS_KERNEL_DIR";

/// Options every kernel is compiled with. `--fmad=false` keeps NVRTC from contracting
/// `a * b - c` into a fused multiply-add, which would change floating-point results against
/// the CPU reference (the sampling kernel itself is integer-only: blending is planned on the
/// host).
pub const NVRTC_OPTIONS: &[&str] = &["--fmad=false"];

/// What can go wrong on the GPU path. Every variant names the library, device or value.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The CUDA driver library cannot be loaded.
    #[error("no CUDA driver (libcuda.so) found: this machine has no NVIDIA driver, or it is not on the library path (LD_LIBRARY_PATH)")]
    NoDriver,
    /// A CUDA library other than the driver cannot be loaded.
    #[error("{library} not found: {hint}")]
    NoLibrary {
        /// The library, e.g. `NVRTC (libnvrtc.so)`.
        library: &'static str,
        /// Where to get it.
        hint: &'static str,
    },
    /// The driver has no device with this index.
    #[error("CUDA device {index} requested but {count} visible (CUDA_VISIBLE_DEVICES?)")]
    NoDevice {
        /// The requested ordinal.
        index: usize,
        /// Devices the driver reports.
        count: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {op}: {reason}")]
    Driver {
        /// What was being done.
        op: String,
        /// The driver's error.
        reason: String,
    },
    /// NVRTC rejected a kernel source.
    #[error("NVRTC: compiling {file} for {arch}: {reason}\n{log}")]
    Compile {
        /// The kernel file.
        file: String,
        /// The target architecture (`sm_90`).
        arch: String,
        /// NVRTC's error code.
        reason: String,
        /// The compiler log.
        log: String,
    },
    /// An NCCL call failed.
    #[error("NCCL: {op} on rank {rank}: {reason}")]
    Nccl {
        /// The call.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// NCCL's result code.
        reason: String,
    },
    /// The corpus cannot be laid out for the device.
    #[error("device corpus layout: {reason}")]
    Layout {
        /// What is wrong.
        reason: String,
    },
    /// A file of the check's synthetic corpus could not be written.
    #[error("device corpus layout: {}: {source}", path.display())]
    LayoutIo {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document of a cell could not be read.
    #[error("device corpus layout: cell {cell} document {doc}: {source}")]
    Document {
        /// The cell.
        cell: usize,
        /// The document.
        doc: usize,
        /// The read error.
        #[source]
        source: crate::data::megatron::MegatronError,
    },
    /// A prebuilt kernel file could not be read.
    #[error("device corpus layout: prebuilt kernel {}: {source}", path.display())]
    Prebuilt {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A cell of the check's synthetic corpus could not be written.
    #[error("device corpus layout: {0}")]
    Dataset(#[from] crate::data::megatron::MegatronError),
    /// A cell of the check's synthetic corpus could not be read back.
    #[error("device corpus layout: {0}")]
    Corpus(#[from] crate::data::corpus::CorpusError),
    /// The CPU sampler the device output is compared with rejected its configuration.
    #[error("device corpus layout: {0}")]
    Sampler(#[from] crate::data::sampler::SamplerError),
    /// A configuration the GPU path does not support.
    #[error("the GPU path does not support {what}; expected {expected}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// What is supported.
        expected: String,
    },
    /// A collective on the host communicator failed (NCCL id exchange).
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
}

#[cfg(feature = "cuda")]
impl GpuError {
    /// Wraps a cudarc driver error with what was being done.
    pub(crate) fn driver(op: impl Into<String>, e: cudarc::driver::DriverError) -> Self {
        GpuError::Driver {
            op: op.into(),
            reason: format!("{e:?}"),
        }
    }
}
