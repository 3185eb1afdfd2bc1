//! Lloyd iterations: each a single pass over the data that labels every row and adds it to its
//! cluster's sum while it is still in cache; empty clusters re-seeded; then a final labelling
//! pass with exact distances.

use rayon::prelude::*;

use super::assign::{assign_pass, exact_dists_pass, Rows};
use super::config::{KMeansConfig, Metric};
use super::distance::{
    add_assign, argmin_score, block_rows, products, simd_dispatch, sq_norm, Centers, CHUNK_ROWS,
};
use super::points::{Prepared, Workspace};

/// One Lloyd iteration, as reported to the callback of [`KMeans::fit_with_progress`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitProgress {
    /// Restart index (0-based).
    pub restart: usize,
    /// Iteration within the restart (1-based).
    pub iteration: usize,
    /// Inertia of this iteration's labels against the centroids they were chosen for, from the
    /// expanded form `‖x‖² − 2 x·c + ‖c‖²` in f32 (close to, not exactly, the final inertia).
    pub inertia: f64,
    /// Total squared centroid shift of the update.
    pub center_shift: f64,
    /// Points whose label changed in this iteration.
    pub changed: u64,
}

/// One block's share of a Lloyd pass.
struct LloydBlock {
    /// Per-cluster coordinate sums (`k × d`).
    sums: Vec<f64>,
    counts: Vec<u64>,
    inertia: f64,
    changed: u64,
}

/// Result of one restart.
pub(super) struct Run {
    /// Final centroids (`k × d`).
    pub(super) centroids: Vec<f32>,
    /// Exact inertia of the final labelling.
    pub(super) inertia: f64,
    /// Lloyd iterations run.
    pub(super) iterations: usize,
    /// Whether it stopped before `max_iter`.
    pub(super) converged: bool,
    /// Points per cluster.
    pub(super) sizes: Vec<u64>,
}

/// The settings of the Lloyd iterations of one fit.
pub(super) struct Lloyd<'a> {
    /// The prepared points.
    pub(super) data: &'a Prepared<'a>,
    /// `k`, `max_iter` and the metric.
    pub(super) cfg: &'a KMeansConfig,
    /// Stop when the total squared centroid shift is at most this (absolute).
    pub(super) tol: f64,
    /// Called after every iteration.
    pub(super) progress: &'a dyn Fn(&FitProgress),
}

impl Lloyd<'_> {
    /// Lloyd iterations of restart `restart` from `centroids` (`k × d`) until convergence or
    /// `max_iter`, then a final labelling pass with exact distances.
    pub(super) fn run(&self, mut centroids: Vec<f32>, restart: usize, ws: &mut Workspace) -> Run {
        let Lloyd {
            data,
            cfg,
            tol,
            progress,
        } = *self;
        let (n, d, k) = (data.n, data.d, cfg.k);
        let x: &[f32] = &data.x;
        let br = block_rows(n);
        ws.labels.fill(u32::MAX);
        let mut iterations = 0;
        let mut converged = false;
        let mut labels_final = false;
        let mut sums = vec![0f64; k * d];
        let mut counts = vec![0u64; k];
        for it in 1..=cfg.max_iter {
            iterations = it;
            let norms: Vec<f32> = centroids.chunks_exact(d).map(sq_norm).collect();
            let centers = Centers::new(&centroids, &norms, k);
            let blocks: Vec<LloydBlock> = x
                .par_chunks(br * d)
                .zip(data.norms.par_chunks(br))
                .zip(ws.labels.par_chunks_mut(br))
                .zip(ws.dists.par_chunks_mut(br))
                .map(|(((xb, nb), lb), db)| lloyd_block(xb, nb, d, &centers, lb, db))
                .collect();
            sums.fill(0.0);
            counts.fill(0);
            let (mut inertia, mut changed) = (0f64, 0u64);
            for b in blocks {
                for (a, v) in sums.iter_mut().zip(&b.sums) {
                    *a += v;
                }
                for (a, v) in counts.iter_mut().zip(&b.counts) {
                    *a += v;
                }
                inertia += b.inertia;
                changed += b.changed;
            }
            relocate_empty_clusters(x, d, &ws.labels, &ws.dists, &mut sums, &mut counts);
            let new = centroids_from_sums(&sums, &counts, &centroids, d, cfg.metric);
            let shift: f64 = new
                .iter()
                .zip(&centroids)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
            let report = FitProgress {
                restart,
                iteration: it,
                inertia,
                center_shift: shift,
                changed,
            };
            tracing::debug!(
                restart,
                iteration = it,
                inertia,
                shift,
                changed,
                "k-means iteration"
            );
            progress(&report);
            // When the update left every centroid bit-identical (as unchanged labels do, unless
            // an empty cluster was re-seeded), this pass's labels are already the argmin for the
            // final centroids and only the exact distances remain to compute.
            labels_final = new == centroids;
            centroids = new;
            if changed == 0 || shift <= tol {
                converged = true;
                break;
            }
        }
        let (inertia, sizes) = self.final_labels(&centroids, labels_final, ws);
        Run {
            centroids,
            inertia,
            iterations,
            converged,
            sizes,
        }
    }

    /// The final labelling against `centroids` with exact distances (only the distances when
    /// `labels_final`, the labels being already the argmin): the inertia and the cluster sizes.
    fn final_labels(
        &self,
        centroids: &[f32],
        labels_final: bool,
        ws: &mut Workspace,
    ) -> (f64, Vec<u64>) {
        let (d, k) = (self.data.d, self.cfg.k);
        let x: &[f32] = &self.data.x;
        let norms: Vec<f32> = centroids.chunks_exact(d).map(sq_norm).collect();
        let centers = Centers::new(centroids, &norms, k);
        if labels_final {
            exact_dists_pass(x, d, &centers, &ws.labels, &mut ws.dists);
        } else {
            let rows = Rows {
                d,
                validated: true,
                normalize: false,
            };
            assign_pass(x, rows, &centers, &mut ws.labels, &mut ws.dists)
                .expect("fit data was validated");
        }
        let mut sizes = vec![0u64; k];
        for &l in &ws.labels {
            sizes[l as usize] += 1;
        }
        (ordered_sum(&ws.dists), sizes)
    }
}

/// Sum of `v` in f64, block by block in order (deterministic).
fn ordered_sum(v: &[f32]) -> f64 {
    let partials: Vec<f64> = v
        .par_chunks(block_rows(v.len()))
        .map(|c| c.iter().map(|&x| x as f64).sum::<f64>())
        .collect();
    partials.iter().sum()
}

simd_dispatch! {
    /// One block of a Lloyd pass: labels, distances and per-cluster sums.
    fn lloyd_block = lloyd_block_body(
        x: &[f32],
        xnorms: &[f32],
        d: usize,
        centers: &Centers,
        labels: &mut [u32],
        dists: &mut [f32],
    ) -> LloydBlock
}

#[inline(always)]
fn lloyd_block_body(
    x: &[f32],
    xnorms: &[f32],
    d: usize,
    centers: &Centers,
    labels: &mut [u32],
    dists: &mut [f32],
) -> LloydBlock {
    let k = centers.k;
    let mut out = LloydBlock {
        sums: vec![0f64; k * d],
        counts: vec![0u64; k],
        inertia: 0.0,
        changed: 0,
    };
    let mut prod = vec![0f32; CHUNK_ROWS * k];
    // Sums within a chunk in f32 (at most CHUNK_ROWS terms), across chunks in f64.
    let mut chunk_sums = vec![0f32; k * d];
    let mut chunk_counts = vec![0u64; k];
    for (c, xc) in x.chunks(CHUNK_ROWS * d).enumerate() {
        let m = xc.len() / d;
        let r0 = c * CHUNK_ROWS;
        products(xc, m, d, centers.c, k, &mut prod[..m * k]);
        for (i, row) in xc.chunks_exact(d).enumerate() {
            let (best, score) = argmin_score(&prod[i * k..(i + 1) * k], centers.norms);
            let r = r0 + i;
            let dist = (xnorms[r] + score).max(0.0);
            if labels[r] != best {
                out.changed += 1;
                labels[r] = best;
            }
            dists[r] = dist;
            out.inertia += dist as f64;
            let b = best as usize;
            add_assign(&mut chunk_sums[b * d..(b + 1) * d], row);
            chunk_counts[b] += 1;
        }
        for j in 0..k {
            if chunk_counts[j] > 0 {
                let cs = &mut chunk_sums[j * d..(j + 1) * d];
                for (a, v) in out.sums[j * d..(j + 1) * d].iter_mut().zip(cs.iter_mut()) {
                    *a += *v as f64;
                    *v = 0.0;
                }
                out.counts[j] += chunk_counts[j];
                chunk_counts[j] = 0;
            }
        }
    }
    out
}

/// Re-seeds empty clusters (scikit-learn's rule): each takes one of the points farthest from
/// their centroid (ties to the lower index), which leaves its old cluster.
fn relocate_empty_clusters(
    x: &[f32],
    d: usize,
    labels: &[u32],
    dists: &[f32],
    sums: &mut [f64],
    counts: &mut [u64],
) {
    let empty: Vec<usize> = (0..counts.len()).filter(|&j| counts[j] == 0).collect();
    if empty.is_empty() {
        return;
    }
    let mut far: Vec<usize> = (0..dists.len()).collect();
    let by_distance = |a: &usize, b: &usize| dists[*b].total_cmp(&dists[*a]).then(a.cmp(b));
    let take = empty.len().min(far.len());
    if take < far.len() {
        far.select_nth_unstable_by(take, by_distance);
        far.truncate(take);
    }
    far.sort_by(by_distance);
    for (&j, &i) in empty.iter().zip(&far) {
        let row = &x[i * d..(i + 1) * d];
        let old = labels[i] as usize;
        for (a, &v) in sums[old * d..(old + 1) * d].iter_mut().zip(row) {
            *a -= v as f64;
        }
        counts[old] -= 1;
        for (a, &v) in sums[j * d..(j + 1) * d].iter_mut().zip(row) {
            *a = v as f64;
        }
        counts[j] = 1;
        tracing::debug!(cluster = j, point = i, "re-seeded empty k-means cluster");
    }
}

/// New centroids: cluster means (normalised for cosine); clusters still empty keep `old`.
fn centroids_from_sums(
    sums: &[f64],
    counts: &[u64],
    old: &[f32],
    d: usize,
    metric: Metric,
) -> Vec<f32> {
    let mut new = old.to_vec();
    let mut mean = vec![0f64; d];
    for (j, &cnt) in counts.iter().enumerate() {
        if cnt == 0 {
            continue;
        }
        let s = &sums[j * d..(j + 1) * d];
        let inv = 1.0 / cnt as f64;
        for (m, &v) in mean.iter_mut().zip(s) {
            *m = v * inv;
        }
        if metric == Metric::Cosine {
            let nrm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            if nrm > 0.0 {
                mean.iter_mut().for_each(|v| *v /= nrm);
            }
        }
        for (c, &m) in new[j * d..(j + 1) * d].iter_mut().zip(&mean) {
            *c = m as f32;
        }
    }
    new
}
