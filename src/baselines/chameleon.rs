//! Chameleon (Xie, Tonin & Cevher, ICML 2025, "Chameleon: A Flexible Data-mixing Framework
//! for Language Model Pretraining and Finetuning"), as published in `LIONS-EPFL/Chameleon`
//! (`utils.py`, `compute_chameleon_weights.py`): domain weights from kernel ridge leverage
//! scores of domain embeddings, with no proxy runs at all.
//!
//! For `k` domains with embeddings `x_1 … x_k` (here: the cells, each embedded by its mean
//! CLIP embedding from the manifest, [`CellEmbedding`](crate::data::corpus::CellEmbedding)):
//!
//! 1. the domain affinity matrix is the **centred linear Gram matrix**
//!    `K = H X Xᵀ H`, `H = I − 11ᵀ/k` (the reference's `embeddings @ embeddings.T` then
//!    sklearn's `KernelCenterer`), i.e. `K_ij = ⟨x_i − x̄, x_j − x̄⟩`;
//! 2. the **kernel ridge leverage scores** are `τ_i = [K (K + λ k I)⁻¹]_ii` (the reference
//!    scales the ridge `λ` by the number of domains), normalised to sum 1: `S_i = τ_i / Σ τ`;
//! 3. the weights are a softmax of them at a temperature `T`:
//!    - **pretraining** (general knowledge: up-weights domains that share a common
//!      representation, low leverage): `α = softmax((1 / (S + 10⁻¹²)) / T)`, `T = 5`;
//!    - **finetuning** (domain-specific uniqueness, high leverage): `α = softmax(S / T)`,
//!      `T = 0.2`;
//!
//!    with the reference's defaults `λ = 10`. [`ChameleonParams::default`] is pretraining,
//!    the stage a midtraining mixture is closest to.
//!
//! **Task.** The cells of one concept hold images of the same cluster, so their mean CLIP
//! embeddings nearly coincide whatever the task; with the embedding alone, Chameleon tells
//! concepts apart but splits a concept's weight among its tasks by the small differences of
//! their images only. As the issue asks ("the cells' mean CLIP embeddings"), that is the
//! default; [`ChameleonParams::task_scale`] > 0 appends `task_scale · e_task` (a scaled
//! one-hot of the cell's task) to each embedding, so tasks become directions of their own.
//!
//! The weights are a fixed mixture: [`Chameleon`] proposes it once (not `q` identical
//! replicates: every trial of a search trains with the same seed) and recommends it, mapped
//! into the space like the natural proportions ([`coords_of_mixture`]: each block rescaled to
//! its mass and projected onto its bounds, so task and concept floors hold).

use serde::{Deserialize, Serialize};

use super::coords::coords_of_mixture;
use super::ridge::{cholesky, cholesky_solve};
use crate::acquisition::{Observations, Proposal, ProposeError, Proposer, SearchSpace};
use crate::data::corpus::Manifest;

/// Which stage the weights are for: how leverage scores become weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ChameleonMode {
    /// Inverse leverage: common domains up-weighted (`softmax(S⁻¹ / T)`, `T = 5`).
    #[default]
    Pretrain,
    /// Leverage: unique domains up-weighted (`softmax(S / T)`, `T = 0.2`).
    Finetune,
}

impl ChameleonMode {
    /// The reference's temperature for this mode (`--pt_temperature 5`, `--ft_temperature
    /// 0.2`).
    pub fn default_temperature(self) -> f64 {
        match self {
            ChameleonMode::Pretrain => 5.0,
            ChameleonMode::Finetune => 0.2,
        }
    }

    /// `pretrain` or `finetune`.
    pub fn name(self) -> &'static str {
        match self {
            ChameleonMode::Pretrain => "pretrain",
            ChameleonMode::Finetune => "finetune",
        }
    }
}

/// Settings of Chameleon (`[search.chameleon]`); `Default` is the reference's pretraining
/// setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChameleonParams {
    /// Pretraining (inverse leverage) or finetuning (leverage) weights.
    pub mode: ChameleonMode,
    /// Ridge `λ` of the leverage scores (multiplied by the number of domains); > 0.
    pub lambda: f64,
    /// Softmax temperature; `None` = the mode's reference value (5 or 0.2).
    pub temperature: Option<f64>,
    /// Weight of a one-hot task indicator appended to each cell's embedding (0 = the mean
    /// CLIP embedding alone); ≥ 0.
    pub task_scale: f64,
}

impl Default for ChameleonParams {
    fn default() -> Self {
        Self {
            mode: ChameleonMode::Pretrain,
            lambda: 10.0,
            temperature: None,
            task_scale: 0.0,
        }
    }
}

impl ChameleonParams {
    /// The temperature used.
    pub fn temperature(&self) -> f64 {
        self.temperature
            .unwrap_or_else(|| self.mode.default_temperature())
    }

    /// Whether these are the defaults (then `search.json` leaves the table out).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the values: `lambda` and the temperature finite and > 0, `task_scale` finite
    /// and ≥ 0.
    pub fn validate(&self) -> Result<(), ChameleonError> {
        let bad = |field: &'static str, value: f64, expected: &'static str| {
            Err(ChameleonError::Param {
                field,
                value,
                expected,
            })
        };
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return bad("lambda", self.lambda, "a finite number > 0");
        }
        let t = self.temperature();
        if !(t > 0.0 && t.is_finite()) {
            return bad("temperature", t, "a finite number > 0");
        }
        if !(self.task_scale >= 0.0 && self.task_scale.is_finite()) {
            return bad("task_scale", self.task_scale, "a finite number ≥ 0");
        }
        Ok(())
    }
}

/// Chameleon's weights cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChameleonError {
    /// A cell of the manifest has no mean CLIP embedding (a corpus prepared before they were
    /// recorded).
    #[error(
        "cell {cell:?} has no `embedding` (its mean CLIP embedding), which \
         --method chameleon needs; the corpus was prepared by an older mixatlas: re-run \
         `mixatlas prepare` to record it"
    )]
    MissingEmbedding {
        /// The cell.
        cell: String,
    },
    /// Domain embeddings of different lengths.
    #[error("domain {index}: embedding of {got} values, the first has {expected}")]
    EmbeddingDim {
        /// The domain.
        index: usize,
        /// Its length.
        got: usize,
        /// The first domain's length.
        expected: usize,
    },
    /// A NaN or infinite embedding value.
    #[error("domain {index}: embedding value {value} is not finite")]
    NonFinite {
        /// The domain.
        index: usize,
        /// The value.
        value: f64,
    },
    /// No domains, or every domain with the same embedding (all leverage scores zero).
    #[error(
        "{0} domain(s) with no spread between their embeddings: every leverage score is 0 \
         (Chameleon needs at least 2 distinct domain embeddings)"
    )]
    Degenerate(usize),
    /// A setting out of range.
    #[error("chameleon.{field} = {value}: expected {expected}")]
    Param {
        /// The key.
        field: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// The leverage scores' linear system is not positive definite (numerical failure).
    #[error("numerical failure: K + λkI is not positive definite (pivot {pivot}: {value})")]
    NotPositiveDefinite {
        /// The failing pivot.
        pivot: usize,
        /// Its value.
        value: f64,
    },
    /// A cell of the search space that the weights do not cover.
    #[error("space cell {0:?} has no Chameleon weight (the space is not the corpus's cells)")]
    UnknownCell(String),
    /// The proposer was built without the corpus manifest.
    #[error("--method chameleon needs the corpus manifest's cell embeddings (give --corpus)")]
    NoManifest,
}

/// The centred linear Gram matrix `K = H X Xᵀ H` of `k` embeddings (row-major `k × k`):
/// `K_ij = ⟨x_i − x̄, x_j − x̄⟩`.
pub fn centered_gram(x: &[Vec<f64>]) -> Vec<f64> {
    let k = x.len();
    let mut g = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let v: f64 = x[i].iter().zip(&x[j]).map(|(a, b)| a * b).sum();
            g[i * k + j] = v;
            g[j * k + i] = v;
        }
    }
    // H G H: subtract row and column means, add back the grand mean.
    let row: Vec<f64> = (0..k)
        .map(|i| g[i * k..(i + 1) * k].iter().sum::<f64>() / k as f64)
        .collect();
    let all = row.iter().sum::<f64>() / k as f64;
    for i in 0..k {
        for j in 0..k {
            g[i * k + j] += all - row[i] - row[j];
        }
    }
    g
}

/// Kernel ridge leverage scores `τ_i = [K (K + c I)⁻¹]_ii` of the symmetric positive
/// semi-definite `n × n` row-major `K`, for the ridge `c > 0` (unnormalised). Computed as
/// `Σ_j K_ij [(K + cI)⁻¹]_ji` from a Cholesky factor, without the cancellation of `1 − c[(K +
/// cI)⁻¹]_ii`.
pub fn ridge_leverage_scores(k: &[f64], n: usize, c: f64) -> Result<Vec<f64>, ChameleonError> {
    assert_eq!(k.len(), n * n, "K is not n × n");
    let mut a = k.to_vec();
    for i in 0..n {
        a[i * n + i] += c;
    }
    cholesky(&mut a, n).map_err(|e| match e {
        super::FitError::NotPositiveDefinite { pivot, value } => {
            ChameleonError::NotPositiveDefinite { pivot, value }
        }
        _ => ChameleonError::NotPositiveDefinite {
            pivot: 0,
            value: f64::NAN,
        },
    })?;
    let mut tau = Vec::with_capacity(n);
    let mut z = vec![0.0; n];
    for i in 0..n {
        z.iter_mut().for_each(|v| *v = 0.0);
        z[i] = 1.0;
        cholesky_solve(&a, n, &mut z);
        tau.push(
            k[i * n..(i + 1) * n]
                .iter()
                .zip(&z)
                .map(|(x, y)| x * y)
                .sum(),
        );
    }
    Ok(tau)
}

/// `softmax(logits)`, shifted by the maximum for stability.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The normalised leverage scores `S` (sum 1) of `k` domain embeddings under `params`
/// (centred Gram, ridge `λ k`).
pub fn domain_scores(
    embeddings: &[Vec<f64>],
    params: &ChameleonParams,
) -> Result<Vec<f64>, ChameleonError> {
    params.validate()?;
    let k = embeddings.len();
    let dim = embeddings.first().map_or(0, Vec::len);
    for (index, e) in embeddings.iter().enumerate() {
        if e.len() != dim {
            return Err(ChameleonError::EmbeddingDim {
                index,
                got: e.len(),
                expected: dim,
            });
        }
        if let Some(&value) = e.iter().find(|v| !v.is_finite()) {
            return Err(ChameleonError::NonFinite { index, value });
        }
    }
    let g = centered_gram(embeddings);
    // Spread around the mean relative to the embeddings' size: identical embeddings leave
    // only rounding in the centred Gram matrix.
    let spread = (0..k).map(|i| g[i * k + i]).fold(0.0, f64::max);
    let size = embeddings
        .iter()
        .map(|e| e.iter().map(|v| v * v).sum::<f64>())
        .fold(0.0, f64::max);
    if k < 2 || spread <= 1e-12 * size {
        return Err(ChameleonError::Degenerate(k));
    }
    let tau = ridge_leverage_scores(&g, k, params.lambda * k as f64)?;
    let total: f64 = tau.iter().sum();
    Ok(tau.iter().map(|t| t / total).collect())
}

/// Chameleon's domain weights (sum 1) for `k` domain embeddings: the normalised leverage
/// scores through the mode's softmax.
pub fn domain_weights(
    embeddings: &[Vec<f64>],
    params: &ChameleonParams,
) -> Result<Vec<f64>, ChameleonError> {
    let s = domain_scores(embeddings, params)?;
    let t = params.temperature();
    let logits: Vec<f64> = match params.mode {
        ChameleonMode::Pretrain => s.iter().map(|v| 1.0 / (v + 1e-12) / t).collect(),
        ChameleonMode::Finetune => s.iter().map(|v| v / t).collect(),
    };
    Ok(softmax(&logits))
}

/// The domain embedding of every cell of `manifest`, in manifest order: its mean CLIP
/// embedding, with `task_scale · e_task` appended when `task_scale > 0`.
pub fn cell_embeddings(
    manifest: &Manifest,
    params: &ChameleonParams,
) -> Result<Vec<Vec<f64>>, ChameleonError> {
    let tasks = manifest.axes.tasks.len();
    manifest
        .cells
        .iter()
        .map(|c| {
            let e = c
                .embedding
                .as_ref()
                .ok_or_else(|| ChameleonError::MissingEmbedding {
                    cell: c.data.name.clone(),
                })?;
            let mut v: Vec<f64> = e.mean.iter().map(|&x| x as f64).collect();
            if params.task_scale > 0.0 {
                v.extend((0..tasks).map(|t| if t == c.task { params.task_scale } else { 0.0 }));
            }
            Ok(v)
        })
        .collect()
}

/// Chameleon's weights of `manifest`'s cells (manifest order, sum 1): the entry point for
/// callers outside the search (the demo, reports). Before any space constraint: a search
/// maps them into its space with [`Chameleon`].
pub fn chameleon_weights(
    manifest: &Manifest,
    params: &ChameleonParams,
) -> Result<Vec<f64>, ChameleonError> {
    domain_weights(&cell_embeddings(manifest, params)?, params)
}

/// Chameleon as a search method: a fixed mixture computed from the corpus, proposed once and
/// recommended whatever the trials.
#[derive(Debug, Clone)]
pub struct Chameleon {
    /// `(cell name, weight)` in manifest order; `None` when built without a manifest.
    weights: Option<Vec<(String, f64)>>,
}

impl Chameleon {
    /// Chameleon's mixture of `manifest`'s cells under `params`.
    pub fn from_manifest(
        manifest: &Manifest,
        params: &ChameleonParams,
    ) -> Result<Self, ChameleonError> {
        let w = chameleon_weights(manifest, params)?;
        Ok(Self {
            weights: Some(
                manifest
                    .cells
                    .iter()
                    .map(|c| c.data.name.clone())
                    .zip(w)
                    .collect(),
            ),
        })
    }

    /// A Chameleon without a manifest (for callers that build methods by name only): every
    /// call fails with [`ChameleonError::NoManifest`].
    pub fn without_manifest() -> Self {
        Self { weights: None }
    }

    /// The mixture's point in `space` (weights by cell name, then [`coords_of_mixture`]).
    pub fn point(&self, space: &SearchSpace) -> Result<Vec<f64>, ChameleonError> {
        let weights = self.weights.as_ref().ok_or(ChameleonError::NoManifest)?;
        let w = space
            .cells
            .iter()
            .map(|name| {
                weights
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| ChameleonError::UnknownCell(name.clone()))
            })
            .collect::<Result<Vec<f64>, _>>()?;
        Ok(coords_of_mixture(space, &w))
    }

    fn proposal(&self, space: &SearchSpace) -> Result<Proposal, ProposeError> {
        let x = self.point(space).map_err(|e| ProposeError::Surrogate {
            model: "chameleon".into(),
            source: Box::new(e),
        })?;
        Ok(Proposal::unscored(space, x, "chameleon"))
    }
}

impl Proposer for Chameleon {
    fn name(&self) -> &str {
        "chameleon"
    }

    /// The mixture once, unless a trial already has it (then nothing: the search stops).
    fn propose(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        _q: usize,
        _round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        let p = self.proposal(space)?;
        let seen = obs
            .x
            .iter()
            .any(|x| x.iter().zip(&p.x).all(|(a, b)| (a - b).abs() < 1e-9));
        Ok(if seen { Vec::new() } else { vec![p] })
    }

    fn recommend(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
    ) -> Result<Proposal, ProposeError> {
        self.proposal(space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquisition::space::{SpaceCells, SpaceConstraints, SpaceKind};
    use crate::rng::SplitMix64;

    /// `A⁻¹` by Gauss–Jordan elimination with partial pivoting (an algorithm independent of
    /// the Cholesky solve under test).
    fn gauss_jordan_inverse(a: &[f64], n: usize) -> Vec<f64> {
        let mut m: Vec<f64> = Vec::new();
        for i in 0..n {
            m.extend_from_slice(&a[i * n..(i + 1) * n]);
            m.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
        }
        let w = 2 * n;
        for col in 0..n {
            let p = (col..n)
                .max_by(|&x, &y| m[x * w + col].abs().total_cmp(&m[y * w + col].abs()))
                .unwrap();
            for j in 0..w {
                m.swap(col * w + j, p * w + j);
            }
            let d = m[col * w + col];
            for j in 0..w {
                m[col * w + j] /= d;
            }
            for r in 0..n {
                if r != col {
                    let f = m[r * w + col];
                    for j in 0..w {
                        m[r * w + j] -= f * m[col * w + j];
                    }
                }
            }
        }
        (0..n)
            .flat_map(|i| m[i * w + n..(i + 1) * w].to_vec())
            .collect()
    }

    /// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations.
    fn jacobi_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
        let mut m = a.to_vec();
        for _ in 0..100 {
            let off: f64 = (0..n)
                .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
                .map(|(i, j)| m[i * n + j] * m[i * n + j])
                .sum();
            if off < 1e-30 {
                break;
            }
            for p in 0..n {
                for q in p + 1..n {
                    let apq = m[p * n + q];
                    if apq.abs() < 1e-300 {
                        continue;
                    }
                    let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let c = 1.0 / (t * t + 1.0).sqrt();
                    let s = t * c;
                    for k in 0..n {
                        let (akp, akq) = (m[k * n + p], m[k * n + q]);
                        m[k * n + p] = c * akp - s * akq;
                        m[k * n + q] = s * akp + c * akq;
                    }
                    for k in 0..n {
                        let (apk, aqk) = (m[p * n + k], m[q * n + k]);
                        m[p * n + k] = c * apk - s * aqk;
                        m[q * n + k] = s * apk + c * aqk;
                    }
                }
            }
        }
        (0..n).map(|i| m[i * n + i]).collect()
    }

    fn random_embeddings(k: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut r = SplitMix64::new(seed);
        (0..k)
            .map(|_| (0..d).map(|_| r.normal()).collect())
            .collect()
    }

    #[test]
    fn centred_gram_is_the_gram_of_the_centred_embeddings() {
        let x = random_embeddings(5, 3, 1);
        let mean: Vec<f64> = (0..3)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / 5.0)
            .collect();
        let g = centered_gram(&x);
        for i in 0..5 {
            for j in 0..5 {
                let want: f64 = (0..3)
                    .map(|d| (x[i][d] - mean[d]) * (x[j][d] - mean[d]))
                    .sum();
                assert!((g[i * 5 + j] - want).abs() < 1e-12, "K[{i},{j}]");
            }
        }
    }

    #[test]
    fn leverage_scores_match_closed_forms() {
        // Diagonal K: τ_i = a_i / (a_i + c).
        let k = [2.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0];
        let tau = ridge_leverage_scores(&k, 3, 1.5).unwrap();
        for (t, want) in tau.iter().zip([2.0 / 3.5, 0.5 / 2.0, 0.0]) {
            assert!((t - want).abs() < 1e-14, "{t} vs {want}");
        }
        // K = [[a, b], [b, a]]: eigenvalues a ± b on (1, ±1)/√2, so
        // τ_1 = τ_2 = ½ ((a+b)/(a+b+c) + (a−b)/(a−b+c)).
        let (a, b, c) = (3.0, 1.0, 2.0);
        let tau = ridge_leverage_scores(&[a, b, b, a], 2, c).unwrap();
        let want = 0.5 * ((a + b) / (a + b + c) + (a - b) / (a - b + c));
        for t in tau {
            assert!((t - want).abs() < 1e-14, "{t} vs {want}");
        }
    }

    #[test]
    fn leverage_scores_sum_to_the_effective_dimension() {
        // Σ τ_i = tr(K (K + cI)⁻¹) = Σ_j μ_j / (μ_j + c) over K's eigenvalues μ (Jacobi),
        // and each τ_i against diag(K (K + cI)⁻¹) by Gauss–Jordan.
        for (n, d, seed) in [(4, 2, 3), (7, 5, 4), (12, 3, 5)] {
            let k = centered_gram(&random_embeddings(n, d, seed));
            let c = 0.7;
            let tau = ridge_leverage_scores(&k, n, c).unwrap();
            let mu = jacobi_eigenvalues(&k, n);
            let eff: f64 = mu.iter().map(|m| m / (m + c)).sum();
            let sum: f64 = tau.iter().sum();
            assert!(
                (sum - eff).abs() < 1e-10,
                "n={n}: Σ τ = {sum}, Σ μ/(μ+c) = {eff}"
            );
            let mut a = k.clone();
            for i in 0..n {
                a[i * n + i] += c;
            }
            let inv = gauss_jordan_inverse(&a, n);
            for i in 0..n {
                let want: f64 = (0..n).map(|j| k[i * n + j] * inv[j * n + i]).sum();
                assert!((tau[i] - want).abs() < 1e-12, "τ_{i}");
                assert!((0.0..1.0).contains(&tau[i]));
            }
        }
    }

    /// The reference pipeline in float64 from the formulas (`utils.py`,
    /// `compute_chameleon_weights.py`): explicit centring, Gauss–Jordan inverse, normalised
    /// scores, the mode's softmax.
    fn reference_weights(x: &[Vec<f64>], lambda: f64, mode: ChameleonMode, t: f64) -> Vec<f64> {
        let (k, d) = (x.len(), x[0].len());
        let mean: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / k as f64)
            .collect();
        let mut g = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                g[i * k + j] = (0..d)
                    .map(|c| (x[i][c] - mean[c]) * (x[j][c] - mean[c]))
                    .sum();
            }
        }
        let mut a = g.clone();
        for i in 0..k {
            a[i * k + i] += lambda * k as f64;
        }
        let inv = gauss_jordan_inverse(&a, k);
        let s: Vec<f64> = (0..k)
            .map(|i| (0..k).map(|j| g[i * k + j] * inv[j * k + i]).sum())
            .collect();
        let total: f64 = s.iter().sum();
        let logits: Vec<f64> = s
            .iter()
            .map(|v| match mode {
                ChameleonMode::Pretrain => 1.0 / (v / total + 1e-12) / t,
                ChameleonMode::Finetune => v / total / t,
            })
            .collect();
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        logits.iter().map(|l| l.exp() / z).collect()
    }

    #[test]
    fn weights_match_the_reference_pipeline() {
        let x = random_embeddings(7, 4, 9);
        for mode in [ChameleonMode::Pretrain, ChameleonMode::Finetune] {
            for lambda in [0.05, 10.0] {
                let p = ChameleonParams {
                    mode,
                    lambda,
                    ..ChameleonParams::default()
                };
                let w = domain_weights(&x, &p).unwrap();
                let want = reference_weights(&x, lambda, mode, mode.default_temperature());
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                for (a, b) in w.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-10,
                        "{mode:?} λ={lambda}: {w:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn pretraining_favours_the_common_domain_and_finetuning_the_unique_ones() {
        // x3, x4 sit near the centre (low leverage); x1 and x2 are mirror images.
        let x = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.5, 0.5],
            vec![0.55, 0.55],
        ];
        let pt = domain_weights(&x, &ChameleonParams::default()).unwrap();
        let ft = domain_weights(
            &x,
            &ChameleonParams {
                mode: ChameleonMode::Finetune,
                lambda: 0.01,
                ..ChameleonParams::default()
            },
        )
        .unwrap();
        assert!((pt[0] - pt[1]).abs() < 1e-12 && (ft[0] - ft[1]).abs() < 1e-12);
        assert!(pt[2] > pt[0] && pt[3] > pt[0], "{pt:?}");
        assert!(ft[2] < ft[0] && ft[3] < ft[0], "{ft:?}");
    }

    #[test]
    fn degenerate_and_invalid_inputs_are_errors() {
        let same = vec![vec![0.3, 0.4]; 3];
        let p = ChameleonParams::default();
        assert_eq!(
            domain_weights(&same, &p),
            Err(ChameleonError::Degenerate(3))
        );
        assert_eq!(
            domain_weights(&[vec![1.0]], &p),
            Err(ChameleonError::Degenerate(1))
        );
        let ragged = vec![vec![1.0, 0.0], vec![1.0]];
        assert!(matches!(
            domain_weights(&ragged, &p),
            Err(ChameleonError::EmbeddingDim { index: 1, .. })
        ));
        let bad = ChameleonParams { lambda: 0.0, ..p };
        let e = domain_weights(&[vec![1.0], vec![0.0]], &bad).unwrap_err();
        assert!(e.to_string().contains("chameleon.lambda = 0"), "{e}");
    }

    /// A 2 × 2 space (c0, c1 × ocr, vqa) and Chameleon weights for its cells.
    fn space_and_chameleon(c: &SpaceConstraints) -> (SearchSpace, Chameleon) {
        let cells: Vec<String> = ["c0/ocr", "c0/vqa", "c1/ocr", "c1/vqa"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let space = SearchSpace::new(
            SpaceKind::Joint,
            SpaceCells {
                cells: cells.clone(),
                cell_axes: vec![(0, 0), (0, 1), (1, 0), (1, 1)],
                concepts: vec!["c0".into(), "c1".into()],
                tasks: vec!["ocr".into(), "vqa".into()],
                prior: vec![0.25; 4],
            },
            c,
        )
        .unwrap();
        let ch = Chameleon {
            weights: Some(cells.into_iter().zip([0.7, 0.1, 0.1, 0.1]).collect()),
        };
        (space, ch)
    }

    #[test]
    fn the_proposer_proposes_its_mixture_once_within_the_bounds() {
        let (space, mut ch) = space_and_chameleon(&SpaceConstraints::default());
        let mut obs = Observations::default();
        let p = ch.propose(&space, &obs, 4, 0).unwrap();
        assert_eq!(p.len(), 1);
        for (a, b) in p[0].mixture.iter().zip([0.7, 0.1, 0.1, 0.1]) {
            assert!((a - b).abs() < 1e-12);
        }
        obs.push(p[0].x.clone(), 0.0);
        assert!(ch.propose(&space, &obs, 4, 1).unwrap().is_empty());
        assert_eq!(ch.recommend(&space, &obs).unwrap().x, p[0].x);
        // With a floor of 0.2 on c0/vqa the mixture is projected onto the bounds.
        let c: SpaceConstraints =
            serde_json::from_value(serde_json::json!({"lower": {"c0/vqa": 0.2}})).unwrap();
        let (space, mut ch) = space_and_chameleon(&c);
        let p = ch.propose(&space, &Observations::default(), 1, 0).unwrap();
        assert!(space.contains(&p[0].x, 1e-9));
        assert!(p[0].mixture[1] >= 0.2 - 1e-12, "{:?}", p[0].mixture);
        // Without a manifest: a clear error.
        let e = Chameleon::without_manifest()
            .propose(&space, &Observations::default(), 1, 0)
            .unwrap_err();
        assert!(e.to_string().contains("give --corpus"), "{e}");
    }
}
