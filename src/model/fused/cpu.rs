//! Access to the CPU storage the fused kernels read and write: which tensors they serve,
//! contiguous slices of a storage or tensor, a pointer that parallel tasks write through (each
//! to its own disjoint elements), and the fixed row partition of the row-wise kernels.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor, WithDType};

/// Rows per task of the row-wise kernels (RMSNorm, SwiGLU, cross-entropy).
pub(super) const ROWS_PER_TASK: usize = 32;

/// Whether the fused kernels serve `t`: a CPU tensor of f32 or f64.
pub fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The contiguous data of a CPU storage under `layout`.
pub(super) fn slice<'a, T: WithDType>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused op: input is not contiguous"),
    }
}

/// A read guard on a contiguous CPU tensor, for the backward passes.
pub(super) struct Read<'a>(candle_core::StorageRef<'a>, (usize, usize));

impl Read<'_> {
    /// The tensor's elements.
    pub(super) fn get<T: WithDType>(&self) -> Result<&[T]> {
        match &*self.0 {
            Storage::Cpu(c) => Ok(&T::cpu_storage_as_slice(c)?[self.1 .0..self.1 .1]),
            _ => bail!("fused ops run on the CPU only"),
        }
    }
}

/// A read guard on `t`, which must be contiguous.
pub(super) fn read(t: &Tensor) -> Result<Read<'_>> {
    let (s, l) = t.storage_and_layout();
    match l.contiguous_offsets() {
        Some(off) => Ok(Read(s, off)),
        None => bail!("fused op: tensor is not contiguous"),
    }
}

/// A raw pointer that several tasks write through, each to its own disjoint elements.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr<T>(pub(super) *mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer `offset` elements in (a method, so closures capture the whole wrapper).
    pub(super) fn at(self, offset: usize) -> *mut T {
        // SAFETY: callers stay inside the allocation the pointer came from.
        unsafe { self.0.add(offset) }
    }
}
