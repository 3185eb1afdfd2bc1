//! The fused sampling kernel on the device: the corpus uploaded once ([`DeviceCorpus`]), the
//! kernel compiled by NVRTC for the device and loaded ([`FusedSampler`]), one step's
//! parameters uploaded ([`DeviceStep`]) and the output `[rows, T]` buffers ([`DeviceBatch`]).
//!
//! The parameters come from [`StepParams`], built on the host from the CPU sampler's state;
//! the kernel's arguments and grid are documented in `docs/sampler.md` section 6.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::device::GpuDevice;
use super::layout::{CorpusLayout, KernelOutput, StepParams, TokenBuf};
use super::{nvrtc, GpuError, FUSED_SAMPLE, KERNEL_DIR_VAR};

/// Threads per block of the sampling kernel (each thread writes 4 tokens).
pub const BLOCK_THREADS: u32 = 256;

/// Copies `v` to the device; an empty slice becomes one zero (the driver refuses empty
/// allocations, and the kernel never reads it).
fn upload<T: DeviceRepr + Default + Clone>(
    dev: &GpuDevice,
    what: &str,
    v: &[T],
) -> Result<CudaSlice<T>, GpuError> {
    let one = [T::default()];
    let src: &[T] = if v.is_empty() { &one } else { v };
    dev.stream
        .clone_htod(src)
        .map_err(|e| GpuError::driver(format!("uploading {what} ({} elements)", src.len()), e))
}

/// Token ids on the device.
#[derive(Debug)]
enum DeviceTokens {
    U16(CudaSlice<u16>),
    U32(CudaSlice<u32>),
}

/// A [`CorpusLayout`] in device memory.
#[derive(Debug)]
pub struct DeviceCorpus {
    tokens: DeviceTokens,
    mask: CudaSlice<u8>,
    doc_start: CudaSlice<u64>,
    cell_doc_base: CudaSlice<u64>,
    cell_docs: CudaSlice<u64>,
    /// Bytes per token id (2 or 4).
    pub token_bytes: usize,
    /// Bytes uploaded.
    pub bytes: usize,
}

impl DeviceCorpus {
    /// Uploads `layout` (synchronously: the host arrays may be dropped afterwards).
    pub fn upload(dev: &GpuDevice, layout: &CorpusLayout) -> Result<Self, GpuError> {
        let tokens = match &layout.tokens {
            TokenBuf::U16(v) => DeviceTokens::U16(upload(dev, "tokens", v)?),
            TokenBuf::U32(v) => DeviceTokens::U32(upload(dev, "tokens", v)?),
        };
        let corpus = Self {
            tokens,
            mask: upload(dev, "loss mask", &layout.mask)?,
            doc_start: upload(dev, "document offsets", &layout.doc_start)?,
            cell_doc_base: upload(dev, "cell offsets", &layout.cell_doc_base)?,
            cell_docs: upload(dev, "cell sizes", &layout.cell_docs)?,
            token_bytes: layout.tokens.elem_bytes(),
            bytes: layout.device_bytes(),
        };
        dev.synchronize()?;
        Ok(corpus)
    }
}

/// One step's [`StepParams`] on the device.
#[derive(Debug)]
pub struct DeviceStep {
    counts: CudaSlice<u64>,
    edges: CudaSlice<u64>,
    table_cells: CudaSlice<u32>,
    plan_cell: CudaSlice<u32>,
    plan_ordinal: CudaSlice<u64>,
    /// The scalars and shapes.
    pub params: StepParams,
}

impl DeviceStep {
    /// Uploads the arrays of `p`.
    pub fn upload(dev: &GpuDevice, p: &StepParams) -> Result<Self, GpuError> {
        Ok(Self {
            counts: upload(dev, "cell counts", &p.counts)?,
            edges: upload(dev, "cell table edges", &p.edges)?,
            table_cells: upload(dev, "cell table cells", &p.table_cells)?,
            plan_cell: upload(dev, "blend cells", &p.plan_cell)?,
            plan_ordinal: upload(dev, "blend ordinals", &p.plan_ordinal)?,
            params: p.clone(),
        })
    }
}

/// The kernel's output buffers: `rows × T` tokens and mask, 4 values per row.
#[derive(Debug)]
pub struct DeviceBatch {
    /// Token ids.
    pub tokens: CudaSlice<u32>,
    /// Loss mask.
    pub mask: CudaSlice<u8>,
    /// `[cell, document, epoch, placed]` per row.
    pub docs: CudaSlice<u64>,
    /// Rows.
    pub rows: usize,
    /// `T`.
    pub seq_len: usize,
}

impl DeviceBatch {
    /// Allocates the buffers for `rows × seq_len`.
    pub fn alloc(dev: &GpuDevice, rows: usize, seq_len: usize) -> Result<Self, GpuError> {
        let n = (rows * seq_len).max(1);
        let op = |e| GpuError::driver(format!("allocating a {rows} × {seq_len} batch"), e);
        Ok(Self {
            tokens: dev.stream.alloc_zeros(n).map_err(op)?,
            mask: dev.stream.alloc_zeros(n).map_err(op)?,
            docs: dev.stream.alloc_zeros((4 * rows).max(1)).map_err(op)?,
            rows,
            seq_len,
        })
    }

    /// Fills every output element with a value the kernel never writes by chance (all bits
    /// set), so an element the kernel skips shows up in a comparison.
    pub fn poison(&mut self, dev: &GpuDevice) -> Result<(), GpuError> {
        let op = |e| GpuError::driver("poisoning the output", e);
        dev.stream
            .memcpy_htod(&vec![u32::MAX; self.tokens.len()], &mut self.tokens)
            .map_err(op)?;
        dev.stream
            .memcpy_htod(&vec![0xA5u8; self.mask.len()], &mut self.mask)
            .map_err(op)?;
        dev.stream
            .memcpy_htod(&vec![u64::MAX; self.docs.len()], &mut self.docs)
            .map_err(op)?;
        Ok(())
    }

    /// Copies the output to the host.
    pub fn download(&self, dev: &GpuDevice) -> Result<KernelOutput, GpuError> {
        let op = |e| GpuError::driver("downloading the batch", e);
        let n = self.rows * self.seq_len;
        let mut out = KernelOutput {
            tokens: dev.stream.clone_dtoh(&self.tokens).map_err(op)?,
            mask: dev.stream.clone_dtoh(&self.mask).map_err(op)?,
            docs: dev.stream.clone_dtoh(&self.docs).map_err(op)?,
        };
        dev.synchronize()?;
        out.tokens.truncate(n);
        out.mask.truncate(n);
        out.docs.truncate(4 * self.rows);
        Ok(out)
    }
}

/// The sampling kernel, compiled for one device and loaded.
#[derive(Debug)]
pub struct FusedSampler {
    _module: Arc<CudaModule>,
    u16: CudaFunction,
    u32: CudaFunction,
    /// The architecture it was compiled for.
    pub arch: String,
    /// How it was loaded (compiled CUBIN, PTX, or a prebuilt CUBIN).
    pub loaded_as: &'static str,
}

impl FusedSampler {
    /// Compiles `kernels/fused_sample.cu` for `dev` with NVRTC and loads it (the CUBIN; the
    /// PTX, JIT-compiled by the driver, if the CUBIN is refused). Without NVRTC, loads the
    /// prebuilt CUBIN from the directory in `MIXATLAS_KERNEL_DIR` ([`KERNEL_DIR_VAR`]) when
    /// its recorded source hash equals the embedded source's.
    pub fn load(dev: &GpuDevice) -> Result<Self, GpuError> {
        let arch = dev.arch()?;
        let (module, loaded_as) = if nvrtc::nvrtc_present() {
            let compiled = nvrtc::compile(&FUSED_SAMPLE, &arch)?;
            match dev.ctx.load_module(Ptx::from_binary(compiled.cubin)) {
                Ok(m) => (m, "cubin compiled by NVRTC"),
                Err(cubin_err) => match dev.ctx.load_module(Ptx::from_src(compiled.ptx)) {
                    Ok(m) => (m, "ptx compiled by NVRTC (the driver refused the CUBIN)"),
                    Err(e) => {
                        return Err(GpuError::Driver {
                            op: format!("loading {} for {arch}", FUSED_SAMPLE.file),
                            reason: format!("CUBIN: {cubin_err:?}; PTX: {e:?}"),
                        })
                    }
                },
            }
        } else if let Some(dir) = std::env::var_os(KERNEL_DIR_VAR) {
            let cubin = prebuilt_cubin(std::path::Path::new(&dir), &arch)?;
            let m = dev.ctx.load_module(Ptx::from_binary(cubin)).map_err(|e| {
                GpuError::driver(
                    format!("loading the prebuilt {} for {arch}", FUSED_SAMPLE.file),
                    e,
                )
            })?;
            (
                m,
                "prebuilt cubin (MIXATLAS_KERNEL_DIR; NVRTC not installed)",
            )
        } else {
            return Err(GpuError::NoLibrary {
                library: "NVRTC (libnvrtc.so)",
                hint: "install the CUDA toolkit or the PyPI wheel nvidia-cuda-nvrtc-cu12 (lib dir on LD_LIBRARY_PATH), or set MIXATLAS_KERNEL_DIR to kernels prebuilt with `mixatlas gpu compile-kernels --out DIR`",
            });
        };
        let function = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| GpuError::driver(format!("finding kernel {name}"), e))
        };
        Ok(Self {
            u16: function("fused_sample_pad_u16")?,
            u32: function("fused_sample_pad_u32")?,
            _module: module,
            arch,
            loaded_as,
        })
    }

    /// The launch grid for a step: x = rows, y = chunks of `4 · BLOCK_THREADS` tokens.
    pub fn launch_config(p: &StepParams) -> Result<LaunchConfig, GpuError> {
        let chunks = p.seq_len.div_ceil(4 * BLOCK_THREADS);
        if chunks > 65_535 || p.rows == 0 || p.rows > i32::MAX as u32 {
            return Err(GpuError::Unsupported {
                what: format!("{} rows of {} tokens", p.rows, p.seq_len),
                expected: format!(
                    "1 ..= 2^31 - 1 rows of at most {} tokens",
                    65_535 * 4 * BLOCK_THREADS
                ),
            });
        }
        Ok(LaunchConfig {
            grid_dim: (p.rows, chunks, 1),
            block_dim: (BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    /// Queues the kernel for `step` on `dev`'s stream, writing `out` (asynchronous).
    pub fn launch(
        &self,
        dev: &GpuDevice,
        corpus: &DeviceCorpus,
        step: &DeviceStep,
        out: &mut DeviceBatch,
    ) -> Result<(), GpuError> {
        let p = &step.params;
        if out.rows != p.rows as usize || out.seq_len != p.seq_len as usize {
            return Err(GpuError::Unsupported {
                what: format!("an output of {} × {}", out.rows, out.seq_len),
                expected: format!("the step's {} × {}", p.rows, p.seq_len),
            });
        }
        let cfg = Self::launch_config(p)?;
        let m = p.table_cells.len() as u32;
        let func = match corpus.tokens {
            DeviceTokens::U16(_) => &self.u16,
            DeviceTokens::U32(_) => &self.u32,
        };
        let mut b = dev.stream.launch_builder(func);
        match &corpus.tokens {
            DeviceTokens::U16(t) => b.arg(t),
            DeviceTokens::U32(t) => b.arg(t),
        };
        b.arg(&corpus.mask)
            .arg(&corpus.doc_start)
            .arg(&corpus.cell_doc_base)
            .arg(&corpus.cell_docs)
            .arg(&step.counts)
            .arg(&step.edges)
            .arg(&step.table_cells)
            .arg(&m)
            .arg(&step.plan_cell)
            .arg(&step.plan_ordinal)
            .arg(&p.mode)
            .arg(&p.seed)
            .arg(&p.first_sample)
            .arg(&p.row0)
            .arg(&p.seq_len)
            .arg(&p.pad_token)
            .arg(&mut out.tokens)
            .arg(&mut out.mask)
            .arg(&mut out.docs);
        // SAFETY: the arguments match the kernel's signature in order and type (docs/sampler.md
        // section 6); every array holds what the kernel indexes: the layout and the step come
        // from the same sampler (cells, documents and offsets), `out` is rows × T (checked).
        unsafe { b.launch(cfg) }
            .map_err(|e| GpuError::driver(format!("launching {}", func_name(corpus)), e))?;
        Ok(())
    }
}

/// `<dir>/fused_sample.<arch>.cubin`, after checking `<dir>/fused_sample.sha256` names the
/// embedded source (a stale CUBIN would not match the CPU reference).
fn prebuilt_cubin(dir: &std::path::Path, arch: &str) -> Result<Vec<u8>, GpuError> {
    let stem = FUSED_SAMPLE.stem();
    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).map_err(|source| GpuError::Prebuilt { path: p, source })
    };
    let hash = read(dir.join(format!("{stem}.sha256")))?;
    let want = FUSED_SAMPLE.source_sha256();
    if String::from_utf8_lossy(&hash).trim() != want {
        return Err(GpuError::Layout {
            reason: format!(
                "prebuilt kernels in {} were compiled from another {} (sha256 {}, this build's is {want}); rebuild them with `mixatlas gpu compile-kernels --out DIR`",
                dir.display(),
                FUSED_SAMPLE.file,
                String::from_utf8_lossy(&hash).trim()
            ),
        });
    }
    read(dir.join(format!("{stem}.{arch}.cubin")))
}

fn func_name(corpus: &DeviceCorpus) -> &'static str {
    match corpus.tokens {
        DeviceTokens::U16(_) => "fused_sample_pad_u16",
        DeviceTokens::U32(_) => "fused_sample_pad_u32",
    }
}
