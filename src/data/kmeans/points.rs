//! The points a fit runs on: one preparation pass validates, (for cosine) normalises and
//! measures them; and the per-fit scratch reused across restarts.

use std::borrow::Cow;

use rayon::prelude::*;

use super::config::Metric;
use super::distance::{add_assign, block_rows, simd_dispatch, sq_norm, CHUNK_ROWS};
use super::error::KMeansError;

/// The points a fit runs on.
pub(super) struct Prepared<'a> {
    /// `n × d`: the input (Euclidean) or its normalised copy (cosine).
    pub(super) x: Cow<'a, [f32]>,
    /// `‖x_i‖²` (`n`).
    pub(super) norms: Vec<f32>,
    pub(super) n: usize,
    pub(super) d: usize,
    /// Mean per-feature variance, the scale of `tol`.
    pub(super) mean_variance: f64,
}

/// One block's share of the preparation pass.
struct PrepBlock {
    col_sums: Vec<f64>,
    sq_norm_sum: f64,
}

impl<'a> Prepared<'a> {
    pub(super) fn new(
        x: &'a [f32],
        n: usize,
        d: usize,
        metric: Metric,
    ) -> Result<Self, KMeansError> {
        let br = block_rows(n);
        let mut norms = vec![0f32; n];
        let normalize = metric == Metric::Cosine;
        let mut copy = if normalize {
            vec![0f32; n * d]
        } else {
            Vec::new()
        };
        let results: Vec<Result<PrepBlock, KMeansError>> = if normalize {
            x.par_chunks(br * d)
                .zip(copy.par_chunks_mut(br * d))
                .zip(norms.par_chunks_mut(br))
                .enumerate()
                .map(|(b, ((xb, ob), nb))| prep_block(xb, Some(ob), nb, d, b * br))
                .collect()
        } else {
            x.par_chunks(br * d)
                .zip(norms.par_chunks_mut(br))
                .enumerate()
                .map(|(b, (xb, nb))| prep_block(xb, None, nb, d, b * br))
                .collect()
        };
        let mut col_sums = vec![0f64; d];
        let mut sq_norm_sum = 0f64;
        for r in results {
            let r = r?;
            for (a, v) in col_sums.iter_mut().zip(&r.col_sums) {
                *a += v;
            }
            sq_norm_sum += r.sq_norm_sum;
        }
        let nf = n as f64;
        let mean_sq = col_sums.iter().map(|s| (s / nf) * (s / nf)).sum::<f64>();
        let mean_variance = ((sq_norm_sum / nf - mean_sq) / d as f64).max(0.0);
        Ok(Prepared {
            x: if normalize {
                Cow::Owned(copy)
            } else {
                Cow::Borrowed(x)
            },
            norms,
            n,
            d,
            mean_variance,
        })
    }
}

simd_dispatch! {
    /// Checks, (optionally) normalises and measures one block of rows starting at `row0`.
    fn prep_block = prep_block_body(
        x: &[f32],
        out: Option<&mut [f32]>,
        norms: &mut [f32],
        d: usize,
        row0: usize,
    ) -> Result<PrepBlock, KMeansError>
}

#[inline(always)]
fn prep_block_body(
    x: &[f32],
    mut out: Option<&mut [f32]>,
    norms: &mut [f32],
    d: usize,
    row0: usize,
) -> Result<PrepBlock, KMeansError> {
    let mut col_sums = vec![0f64; d];
    let mut chunk_sums = vec![0f32; d];
    let mut sq_norm_sum = 0f64;
    for (c, xc) in x.chunks(CHUNK_ROWS * d).enumerate() {
        chunk_sums.fill(0.0);
        for (i, row) in xc.chunks_exact(d).enumerate() {
            let r = c * CHUNK_ROWS + i;
            if !row.iter().all(|v| v.is_finite()) {
                let col = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
                return Err(KMeansError::NonFinite { row: row0 + r, col });
            }
            let nrm = sq_norm(row);
            match out.as_deref_mut() {
                None => {
                    norms[r] = nrm;
                    add_assign(&mut chunk_sums, row);
                }
                Some(out) => {
                    if nrm == 0.0 {
                        return Err(KMeansError::ZeroRow { row: row0 + r });
                    }
                    let inv = (1.0 / (nrm as f64).sqrt()) as f32;
                    let o = &mut out[r * d..(r + 1) * d];
                    for (ov, &v) in o.iter_mut().zip(row) {
                        *ov = v * inv;
                    }
                    norms[r] = sq_norm(o);
                    add_assign(&mut chunk_sums, o);
                }
            }
            sq_norm_sum += norms[r] as f64;
        }
        for (a, &v) in col_sums.iter_mut().zip(&chunk_sums) {
            *a += v as f64;
        }
    }
    Ok(PrepBlock {
        col_sums,
        sq_norm_sum,
    })
}

/// Per-fit scratch reused across restarts.
pub(super) struct Workspace {
    /// Current label of each point (`n`).
    pub(super) labels: Vec<u32>,
    /// Squared distance of each point to its centroid or nearest seed (`n`).
    pub(super) dists: Vec<f32>,
    /// Distance of each point to each k-means++ candidate (`n × trials`).
    pub(super) cand: Vec<f32>,
}

impl Workspace {
    pub(super) fn new(n: usize) -> Self {
        Self {
            labels: vec![u32::MAX; n],
            dists: vec![0.0; n],
            cand: Vec::new(),
        }
    }
}
