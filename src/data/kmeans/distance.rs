//! The distance kernels of k-means and how passes are cut into blocks.
//!
//! Small kernels written with fixed-width lane arrays so they vectorise, fully inlined into the
//! block functions of the passes ([`super::points`], [`super::seed`], [`super::lloyd`],
//! [`super::assign`]), which are compiled twice (baseline and AVX2+FMA, [`simd_dispatch`]) and
//! picked at run time. Each kernel fixes its own summation order, so both builds give
//! identical bits. The `x·c` products of a chunk come from one faer matrix product.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Rows per distance-product chunk. 256 rows of 512 f32 are 512 KiB: they stay in L2 between
/// the product and the accumulation that re-reads them.
pub(super) const CHUNK_ROWS: usize = 256;
/// Blocks a pass aims for (a block is the unit of parallel work and of ordered reduction).
pub(super) const TARGET_BLOCKS: usize = 64;
/// Most chunks per block, bounding the per-block scratch and the reduction cost for huge `n`.
pub(super) const MAX_BLOCK_CHUNKS: usize = 64;

/// Rows per block for `n` rows: a function of `n` alone, so results do not depend on threads.
pub(super) fn block_rows(n: usize) -> usize {
    let chunks = n.div_ceil(CHUNK_ROWS);
    chunks.div_ceil(TARGET_BLOCKS).clamp(1, MAX_BLOCK_CHUNKS) * CHUNK_ROWS
}

/// Lane count of the reductions (sums run in this many independent partial sums).
const LANES: usize = 16;

/// `‖a‖²` in f32 with [`LANES`] partial sums.
#[inline(always)]
pub(super) fn sq_norm(a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut it = a.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            acc[l] += c[l] * c[l];
        }
    }
    let mut tail = 0f32;
    for &v in it.remainder() {
        tail += v * v;
    }
    hsum(&acc) + tail
}

/// `‖a − b‖²` in f32 with [`LANES`] partial sums.
#[inline(always)]
pub(super) fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let mut ia = a.chunks_exact(LANES);
    let mut ib = b.chunks_exact(LANES);
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for l in 0..LANES {
            let t = ca[l] - cb[l];
            acc[l] += t * t;
        }
    }
    let mut tail = 0f32;
    for (&x, &y) in ia.remainder().iter().zip(ib.remainder()) {
        tail += (x - y) * (x - y);
    }
    hsum(&acc) + tail
}

/// Pairwise sum of the lanes (fixed order).
#[inline(always)]
fn hsum(acc: &[f32; LANES]) -> f32 {
    let mut v = *acc;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

/// `acc += x` elementwise.
#[inline(always)]
pub(super) fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Index and value of the smallest `norms[j] − 2 prod[j]` (first index on ties).
#[inline(always)]
pub(super) fn argmin_score(prod: &[f32], norms: &[f32]) -> (u32, f32) {
    let mut best = 0u32;
    let mut best_score = f32::INFINITY;
    for (j, (&p, &cn)) in prod.iter().zip(norms).enumerate() {
        let s = cn - 2.0 * p;
        if s < best_score {
            best_score = s;
            best = j as u32;
        }
    }
    (best, best_score)
}

/// `out` (`m × k`) = `x` (`m × d`) · `c`ᵀ (`c`: `k × d`), all row-major, single-threaded.
pub(super) fn products(x: &[f32], m: usize, d: usize, c: &[f32], k: usize, out: &mut [f32]) {
    let xm = MatRef::from_row_major_slice(x, m, d);
    let cm = MatRef::from_row_major_slice(c, k, d);
    let om = MatMut::from_row_major_slice_mut(out, m, k);
    matmul(om, Accum::Replace, xm, cm.transpose(), 1.0f32, Par::Seq);
}

/// Whether the AVX2+FMA builds of the block functions can run here.
#[inline]
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn $name(args) -> ret` that runs `$body(args)` compiled for AVX2+FMA when the CPU
/// has it, and the baseline build otherwise. `$body` must be `#[inline(always)]`.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        simd_dispatch! { $(#[$meta])* fn $name = $body($($arg: $ty),*) -> () }
    };
    ($(#[$meta:meta])* fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if $crate::data::kmeans::distance::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(super) use simd_dispatch;

/// Centroids with their squared norms.
pub(super) struct Centers<'a> {
    /// `k × d` row-major.
    pub(super) c: &'a [f32],
    /// `‖c‖²` per centroid.
    pub(super) norms: &'a [f32],
    /// Number of centroids.
    pub(super) k: usize,
}

impl<'a> Centers<'a> {
    pub(super) fn new(c: &'a [f32], norms: &'a [f32], k: usize) -> Self {
        Self { c, norms, k }
    }
}
