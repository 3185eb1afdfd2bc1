//! Greedy k-means++ seeding (scikit-learn's variant): every candidate of a round shares one
//! pass over the data.

use rayon::prelude::*;

use super::config::MAX_TRIALS;
use super::distance::{block_rows, products, simd_dispatch, sq_norm, Centers, CHUNK_ROWS};
use super::points::{Prepared, Workspace};
use crate::rng::SplitMix64;

/// Greedy k-means++ (Arthur & Vassilvitskii 2007, scikit-learn's variant): each new centre is
/// the best of `trials` (default `2 + ⌊ln k⌋`) candidates drawn with probability ∝ squared
/// distance to the nearest centre so far. Returns `k × d` centroids.
pub(super) fn kmeans_plus_plus(
    data: &Prepared,
    k: usize,
    trials: Option<usize>,
    rng: &mut SplitMix64,
    ws: &mut Workspace,
) -> Vec<f32> {
    let (n, d) = (data.n, data.d);
    let x: &[f32] = &data.x;
    let trials = trials.unwrap_or(2 + (k as f64).ln() as usize);
    let mut centers = Vec::with_capacity(k * d);
    let first = rng.below(n as u64) as usize;
    centers.extend_from_slice(&x[first * d..(first + 1) * d]);

    // Distances to the first centre: one "candidate" against an infinite current distance.
    ws.dists.fill(f32::INFINITY);
    ws.cand.resize(n * trials, 0.0);
    let mut pot = candidate_pass(data, &centers, &ws.dists, &mut ws.cand[..n])[0];
    ws.dists.copy_from_slice(&ws.cand[..n]);

    let mut ids = vec![0usize; trials];
    let mut cands = vec![0f32; trials * d];
    for c in 1..k {
        let targets: Vec<f64> = (0..trials).map(|_| rng.next_f64() * pot).collect();
        sample_by_potential(&ws.dists, &targets, &mut ids);
        for (t, &id) in ids.iter().enumerate() {
            cands[t * d..(t + 1) * d].copy_from_slice(&x[id * d..(id + 1) * d]);
        }
        let pots = candidate_pass(data, &cands, &ws.dists, &mut ws.cand);
        let mut best = 0;
        for (t, &p) in pots.iter().enumerate() {
            if p < pots[best] {
                best = t;
            }
        }
        pot = pots[best];
        let cand = &ws.cand;
        ws.dists
            .par_chunks_mut(CHUNK_ROWS * 64)
            .enumerate()
            .for_each(|(b, db)| {
                let i0 = b * CHUNK_ROWS * 64;
                for (i, v) in db.iter_mut().enumerate() {
                    *v = v.min(cand[(i0 + i) * trials + best]);
                }
            });
        centers.extend_from_slice(&cands[best * d..(best + 1) * d]);
        tracing::trace!(center = c, potential = pot, "k-means++ centre chosen");
    }
    centers
}

/// For each target (a uniform draw times the total potential), the first point whose running
/// sum of `closest` exceeds it (scikit-learn's `searchsorted` on the cumulative sum). Points at
/// distance zero are never chosen while the potential is positive.
fn sample_by_potential(closest: &[f32], targets: &[f64], ids: &mut [usize]) {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| targets[a].total_cmp(&targets[b]));
    let mut last_positive = closest.len() - 1;
    let mut cum = 0f64;
    let mut next = 0;
    for (i, &v) in closest.iter().enumerate() {
        if v > 0.0 {
            last_positive = i;
        }
        cum += v as f64;
        while next < order.len() && cum > targets[order[next]] {
            ids[order[next]] = i;
            next += 1;
        }
        if next == order.len() {
            return;
        }
    }
    // Rounding left some targets at or beyond the total: take the last point that can be drawn.
    for &t in &order[next..] {
        ids[t] = last_positive;
    }
}

/// Distances of every point to the `t` candidate centres `cands` (`t × d`) into `out`
/// (`n × t`), and for each candidate the potential `Σ_i min(closest_i, dist_it)` it would give.
fn candidate_pass(data: &Prepared, cands: &[f32], closest: &[f32], out: &mut [f32]) -> Vec<f64> {
    let (n, d) = (data.n, data.d);
    let t = cands.len() / d;
    let out = &mut out[..n * t];
    let cnorms: Vec<f32> = cands.chunks_exact(d).map(sq_norm).collect();
    let centers = Centers::new(cands, &cnorms, t);
    let br = block_rows(n);
    let x: &[f32] = &data.x;
    let partials: Vec<Vec<f64>> = x
        .par_chunks(br * d)
        .zip(data.norms.par_chunks(br))
        .zip(closest.par_chunks(br))
        .zip(out.par_chunks_mut(br * t))
        .map(|(((xb, nb), cb), ob)| candidate_block(xb, nb, cb, d, &centers, ob))
        .collect();
    let mut pots = vec![0f64; t];
    for p in partials {
        for (a, v) in pots.iter_mut().zip(p) {
            *a += v;
        }
    }
    pots
}

simd_dispatch! {
    /// One block of [`candidate_pass`].
    fn candidate_block = candidate_block_body(
        x: &[f32],
        xnorms: &[f32],
        closest: &[f32],
        d: usize,
        cands: &Centers,
        out: &mut [f32],
    ) -> Vec<f64>
}

#[inline(always)]
fn candidate_block_body(
    x: &[f32],
    xnorms: &[f32],
    closest: &[f32],
    d: usize,
    cands: &Centers,
    out: &mut [f32],
) -> Vec<f64> {
    let t = cands.norms.len();
    let mut pots = vec![0f64; t];
    for (c, xc) in x.chunks(CHUNK_ROWS * d).enumerate() {
        let m = xc.len() / d;
        let r0 = c * CHUNK_ROWS;
        let oc = &mut out[r0 * t..(r0 + m) * t];
        products(xc, m, d, cands.c, t, oc);
        // Potentials within a chunk in f32, across chunks in f64.
        let mut chunk_pots = [0f32; MAX_TRIALS];
        for i in 0..m {
            let xn = xnorms[r0 + i];
            let cl = closest[r0 + i];
            for j in 0..t {
                let p = &mut oc[i * t + j];
                let dist = (xn + cands.norms[j] - 2.0 * *p).max(0.0);
                *p = dist;
                chunk_pots[j] += dist.min(cl);
            }
        }
        for (a, &v) in pots.iter_mut().zip(&chunk_pots) {
            *a += v as f64;
        }
    }
    pots
}
