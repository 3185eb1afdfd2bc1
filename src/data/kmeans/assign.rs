//! Assignment passes: the nearest centroid of every row with exact squared distances
//! (checking and normalising rows on the fly when asked), and exact distances to given labels.

use rayon::prelude::*;

use super::distance::{
    argmin_score, block_rows, products, simd_dispatch, sq_dist, sq_norm, Centers, CHUNK_ROWS,
};
use super::error::KMeansError;

/// What the rows of an assignment pass are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows {
    /// Row length.
    pub(super) d: usize,
    /// Fit data, already checked (and normalised for cosine): no checks on the fly.
    pub(super) validated: bool,
    /// Normalise each row before comparing (cosine).
    pub(super) normalize: bool,
}

/// Labels and exact squared distances of every row of `x` (`n × d`). Unless `rows.validated`
/// (fit data), rows are checked for non-finite values (and, when `rows.normalize`, normalised)
/// on the fly.
pub(super) fn assign_pass(
    x: &[f32],
    rows: Rows,
    centers: &Centers,
    labels: &mut [u32],
    dists: &mut [f32],
) -> Result<(), KMeansError> {
    let d = rows.d;
    let n = labels.len();
    let br = block_rows(n);
    let results: Vec<Result<(), KMeansError>> = x
        .par_chunks(br * d)
        .zip(labels.par_chunks_mut(br))
        .zip(dists.par_chunks_mut(br))
        .enumerate()
        .map(|(b, ((xb, lb), db))| assign_block(xb, rows, b * br, centers, lb, db))
        .collect();
    results.into_iter().collect()
}

simd_dispatch! {
    /// One block of [`assign_pass`].
    fn assign_block = assign_block_body(
        x: &[f32],
        rows: Rows,
        row0: usize,
        centers: &Centers,
        labels: &mut [u32],
        dists: &mut [f32],
    ) -> Result<(), KMeansError>
}

#[inline(always)]
fn assign_block_body(
    x: &[f32],
    rows: Rows,
    row0: usize,
    centers: &Centers,
    labels: &mut [u32],
    dists: &mut [f32],
) -> Result<(), KMeansError> {
    let Rows {
        d,
        validated,
        normalize,
    } = rows;
    let k = centers.k;
    let mut prod = vec![0f32; CHUNK_ROWS * k];
    let mut scratch = if normalize {
        vec![0f32; CHUNK_ROWS * d]
    } else {
        Vec::new()
    };
    for (c, xc) in x.chunks(CHUNK_ROWS * d).enumerate() {
        let m = xc.len() / d;
        let r0 = c * CHUNK_ROWS;
        if !validated || normalize {
            for (i, row) in xc.chunks_exact(d).enumerate() {
                if !validated && !row.iter().all(|v| v.is_finite()) {
                    let col = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
                    return Err(KMeansError::NonFinite {
                        row: row0 + r0 + i,
                        col,
                    });
                }
                if normalize {
                    let nrm = sq_norm(row);
                    if nrm == 0.0 && !validated {
                        return Err(KMeansError::ZeroRow { row: row0 + r0 + i });
                    }
                    // An all-zero row stays zero when not validated.
                    let inv = if nrm > 0.0 {
                        (1.0 / (nrm as f64).sqrt()) as f32
                    } else {
                        0.0
                    };
                    for (o, &v) in scratch[i * d..(i + 1) * d].iter_mut().zip(row) {
                        *o = v * inv;
                    }
                }
            }
        }
        let xc: &[f32] = if normalize { &scratch[..m * d] } else { xc };
        products(xc, m, d, centers.c, k, &mut prod[..m * k]);
        for (i, row) in xc.chunks_exact(d).enumerate() {
            let (best, _) = argmin_score(&prod[i * k..(i + 1) * k], centers.norms);
            let b = best as usize;
            labels[r0 + i] = best;
            dists[r0 + i] = sq_dist(row, &centers.c[b * d..(b + 1) * d]);
        }
    }
    Ok(())
}

/// Exact squared distances of every row to the centroid it is labelled with.
pub(super) fn exact_dists_pass(
    x: &[f32],
    d: usize,
    centers: &Centers,
    labels: &[u32],
    dists: &mut [f32],
) {
    let br = block_rows(labels.len());
    x.par_chunks(br * d)
        .zip(labels.par_chunks(br))
        .zip(dists.par_chunks_mut(br))
        .for_each(|((xb, lb), db)| exact_block(xb, d, centers.c, lb, db));
}

simd_dispatch! {
    /// One block of [`exact_dists_pass`].
    fn exact_block = exact_block_body(
        x: &[f32],
        d: usize,
        c: &[f32],
        labels: &[u32],
        dists: &mut [f32],
    )
}

#[inline(always)]
fn exact_block_body(x: &[f32], d: usize, c: &[f32], labels: &[u32], dists: &mut [f32]) {
    for ((row, &l), out) in x.chunks_exact(d).zip(labels).zip(dists.iter_mut()) {
        let l = l as usize;
        *out = sq_dist(row, &c[l * d..(l + 1) * d]);
    }
}
