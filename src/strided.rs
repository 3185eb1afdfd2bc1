//! Strided matrix products for the trainer's fused kernels (`model::fused`) and the CPU CLIP tower (`embed`), through the `gemm` crate candle itself uses:
//! `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each operand described by a pointer and its
//! strides, single-threaded inside a kernel's own tasks ([`mm`]) or split over the global
//! rayon pool ([`mm_par`]).

use candle_core::WithDType;
use gemm::{gemm, Parallelism};

/// An input matrix: its first element and its row and column strides, in elements.
#[derive(Clone, Copy)]
pub(crate) struct Src<T> {
    ptr: *const T,
    rs: usize,
    cs: usize,
}

impl<T> Src<T> {
    /// A row-major matrix whose rows start `stride` elements apart.
    pub(crate) fn rows(ptr: *const T, stride: usize) -> Self {
        Self {
            ptr,
            rs: stride,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows start `stride` elements apart (its
    /// columns are contiguous).
    pub(crate) fn cols(ptr: *const T, stride: usize) -> Self {
        Self {
            ptr,
            rs: 1,
            cs: stride,
        }
    }
}

/// The output matrix: row-major, rows `rs` elements apart, overwritten or (`accumulate`)
/// added to.
#[derive(Clone, Copy)]
pub(crate) struct Dst<T> {
    /// Its first element.
    pub(crate) ptr: *mut T,
    /// Row stride in elements.
    pub(crate) rs: usize,
    /// Add the product to what is there instead of overwriting it.
    pub(crate) accumulate: bool,
}

impl<T> Dst<T> {
    /// Overwrites rows `rs` elements apart.
    pub(crate) fn set(ptr: *mut T, rs: usize) -> Self {
        Self {
            ptr,
            rs,
            accumulate: false,
        }
    }

    /// Adds to rows `rs` elements apart.
    pub(crate) fn add(ptr: *mut T, rs: usize) -> Self {
        Self {
            ptr,
            rs,
            accumulate: true,
        }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` with the given parallelism.
///
/// # Safety
/// As for [`mm`].
unsafe fn product<T: 'static + WithDType>(
    (m, n, k): (usize, usize, usize),
    dst: Dst<T>,
    lhs: Src<T>,
    rhs: Src<T>,
    par: Parallelism,
) {
    gemm(
        m,
        n,
        k,
        dst.ptr,
        1,
        dst.rs as isize,
        dst.accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        T::from_f64(1.0),
        T::from_f64(1.0),
        false,
        false,
        false,
        par,
    )
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded.
///
/// # Safety
/// Every pointer must address the whole strided matrix it describes, and `dst` must not alias
/// the inputs.
pub(crate) unsafe fn mm<T: 'static + WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: Dst<T>,
    lhs: Src<T>,
    rhs: Src<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    product((m, n, k), dst, lhs, rhs, Parallelism::None)
}

/// [`mm`] split over the global rayon pool as candle's own matmul is (gemm partitions the
/// output, never the sum, so results do not depend on scheduling).
///
/// # Safety
/// As for [`mm`].
pub(crate) unsafe fn mm_par<T: 'static + WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: Dst<T>,
    lhs: Src<T>,
    rhs: Src<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    product((m, n, k), dst, lhs, rhs, par)
}
