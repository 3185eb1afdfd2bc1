//! k-means over CLIP image embeddings: the concept axis of the mixture space.
//!
//! `mixatlas prepare` fits k-means (k ≈ 10) on an in-memory sample of image embeddings, then
//! streams the whole corpus through [`KMeans::assign`] chunk by chunk; each document's cluster is
//! its concept cell. The centroids are saved next to the prepared corpus as safetensors so
//! later runs (and other tools) label new data the same way.
//!
//! The algorithm follows scikit-learn's `KMeans(algorithm="lloyd")`, so the two can be compared
//! on the same data (`benches/kmeans.rs`):
//!
//! - greedy k-means++ seeding over all points (`2 + ⌊ln k⌋` candidates per centre, keeping the
//!   one that lowers the potential most);
//! - Lloyd iterations, each a single pass over the data: per chunk of rows, the products
//!   `x·c` come from one faer matrix product, the nearest centroid is
//!   `argmin_c ‖c‖² − 2 x·c` and the row is added to its cluster's sum in the same loop, while
//!   it is still in cache;
//! - empty clusters are re-seeded from the points farthest from their centroid;
//! - stop when the labels no longer change or when the total squared centroid shift falls below
//!   `tol` times the mean per-feature variance of the data;
//! - a final pass relabels against the final centroids and computes the inertia from exact
//!   (direct-difference) squared distances.
//!
//! Cosine mode is spherical k-means: rows and centroids are L2-normalised and the Euclidean
//! machinery runs on the unit sphere.
//!
//! Determinism: for a given seed the result is bit-for-bit the same whatever the number of
//! threads. Rows are cut into blocks whose size depends only on the number of rows; each block
//! is reduced sequentially and the block results are combined in block order. Distance
//! products run single-threaded inside a block (`Par::Seq`), so faer's own blocking never
//! depends on the thread count either. (Different CPUs may pick different SIMD kernels in faer
//! and can differ in the last bits.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::fsutil::{write_atomic, IoContext, PathIoError};
use crate::rng::SplitMix64;

/// Name of the centroid tensor in a saved model.
pub const CENTROIDS_TENSOR: &str = "centroids";

/// Rows per distance-product chunk. 256 rows of 512 f32 are 512 KiB: they stay in L2 between
/// the product and the accumulation that re-reads them.
const CHUNK_ROWS: usize = 256;
/// Blocks a pass aims for (a block is the unit of parallel work and of ordered reduction).
const TARGET_BLOCKS: usize = 64;
/// Most chunks per block, bounding the per-block scratch and the reduction cost for huge `n`.
const MAX_BLOCK_CHUNKS: usize = 64;

/// Errors from fitting, applying, saving or loading k-means.
#[derive(Debug, thiserror::Error)]
pub enum KMeansError {
    /// A configuration field is out of range.
    #[error("invalid k-means config: {field} {problem}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The input holds no points.
    #[error("no points to cluster (empty input)")]
    Empty,
    /// The dimension is zero.
    #[error("embedding dimension must be at least 1")]
    ZeroDim,
    /// The data is not a whole number of rows of the expected dimension.
    #[error("input of {len} values is not a whole number of {dim}-dimensional rows")]
    DimensionMismatch {
        /// The expected row length.
        dim: usize,
        /// The number of values given.
        len: usize,
    },
    /// More clusters were asked for than there are points.
    #[error("k = {k} exceeds the number of points ({n})")]
    TooFewPoints {
        /// Clusters asked for.
        k: usize,
        /// Points given.
        n: usize,
    },
    /// A value is NaN or infinite.
    #[error("row {row} holds a non-finite value (column {col})")]
    NonFinite {
        /// The first offending row.
        row: usize,
        /// The first offending column in that row.
        col: usize,
    },
    /// A row is all zeros, so cosine k-means cannot normalise it.
    #[error("row {row} is all zeros; cosine k-means cannot normalise it")]
    ZeroRow {
        /// The first all-zero row.
        row: usize,
    },
    /// A metric name is neither `euclidean` nor `cosine`.
    #[error("unknown metric {name:?} (expected \"euclidean\" or \"cosine\")")]
    UnknownMetric {
        /// The name given.
        name: String,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A file is not valid safetensors (or the tensors could not be serialised).
    #[error("{}: invalid safetensors: {source}", path.display())]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: SafeTensorError,
    },
    /// A safetensors file does not hold what a saved k-means model holds.
    #[error("{}: {problem}", path.display())]
    BadModelFile {
        /// The file concerned.
        path: PathBuf,
        /// What was expected and what was found.
        problem: String,
    },
}

/// How distances between embeddings are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Squared Euclidean distance (scikit-learn's `KMeans`).
    #[default]
    Euclidean,
    /// Spherical k-means: rows and centroids are L2-normalised, then squared Euclidean distance
    /// (`‖a − b‖² = 2 − 2 cos(a, b)` on the unit sphere). The usual choice for raw CLIP
    /// embeddings.
    Cosine,
}

impl Metric {
    /// The lowercase name used in configs, manifests and saved models.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Euclidean => "euclidean",
            Metric::Cosine => "cosine",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = KMeansError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "euclidean" => Ok(Metric::Euclidean),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(KMeansError::UnknownMetric { name: s.into() }),
        }
    }
}

/// k-means settings (the `[kmeans]` table of a prepare config; every field is optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KMeansConfig {
    /// Number of clusters (concepts).
    pub k: usize,
    /// Most Lloyd iterations per restart.
    pub max_iter: usize,
    /// Convergence threshold on the total squared centroid shift, relative to the mean
    /// per-feature variance of the data (scikit-learn's `tol`).
    pub tol: f64,
    /// Independent k-means++ seedings; the fit with the lowest inertia wins (`n_init`).
    pub restarts: usize,
    /// Seed of every random choice; restart `r` draws from `SplitMix64::derive(seed, r)`.
    pub seed: u64,
    /// k-means++ candidates tried per centre (the one lowering the potential most is kept).
    /// `None` is scikit-learn's `2 + ⌊ln k⌋`. The default is 16: more candidates make a bad
    /// seeding much rarer (on the 100k × 512 benchmark data the optimum was found by 76 of 80
    /// seeds with 16, 43 of 80 with `2 + ⌊ln k⌋`) at about 5 % more seeding time, since all
    /// candidates share one pass over the data. At most 32.
    pub local_trials: Option<usize>,
    /// Distance between embeddings.
    pub metric: Metric,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            k: 10,
            max_iter: 100,
            tol: 1e-4,
            restarts: 1,
            seed: 0,
            local_trials: Some(16),
            metric: Metric::Euclidean,
        }
    }
}

impl KMeansConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), KMeansError> {
        let bad = |field, problem: &str| {
            Err(KMeansError::InvalidConfig {
                field,
                problem: problem.into(),
            })
        };
        if self.k == 0 {
            return bad("k", "must be at least 1");
        }
        if self.k > u32::MAX as usize {
            return bad("k", "must fit in a u32 label");
        }
        if self.max_iter == 0 {
            return bad("max_iter", "must be at least 1");
        }
        if self.restarts == 0 {
            return bad("restarts", "must be at least 1");
        }
        if let Some(t) = self.local_trials {
            if !(1..=MAX_TRIALS).contains(&t) {
                return bad(
                    "local_trials",
                    &format!("must be in 1..={MAX_TRIALS}, got {t}"),
                );
            }
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return bad(
                "tol",
                &format!("must be finite and non-negative, got {}", self.tol),
            );
        }
        Ok(())
    }
}

/// What a fit did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Sum of squared distances of the fitted points to their final centroids (exact
    /// per-row differences, summed in f64). For cosine, of the normalised points.
    pub inertia: f64,
    /// Lloyd iterations of the winning restart.
    pub iterations: usize,
    /// Whether the winning restart stopped before `max_iter` (labels stable or shift below
    /// `tol`).
    pub converged: bool,
    /// Points per cluster under the final centroids.
    pub sizes: Vec<u64>,
    /// Restarts run (`cfg.restarts`; 1 for [`KMeans::refine`]).
    pub restarts: usize,
    /// Index of the winning restart.
    pub best_restart: usize,
}

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

/// Nearest centroids of a batch of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Cluster of each row (`n`).
    pub labels: Vec<u32>,
    /// Squared distance of each row to its centroid (`n`), from direct differences. For
    /// cosine, between the normalised row and the centroid.
    pub sq_dists: Vec<f32>,
}

impl Assignment {
    /// Rows per cluster (`k` entries).
    pub fn sizes(&self, k: usize) -> Vec<u64> {
        let mut sizes = vec![0u64; k];
        for &l in &self.labels {
            sizes[l as usize] += 1;
        }
        sizes
    }

    /// Sum of the squared distances in f64.
    pub fn inertia(&self) -> f64 {
        self.sq_dists.iter().map(|&v| v as f64).sum()
    }
}

/// A fitted k-means model: `k` centroids in `dim` dimensions and the metric they live in.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// `k × dim` row-major.
    centroids: Vec<f32>,
    /// `‖c‖²` per centroid.
    norms: Vec<f32>,
    k: usize,
    dim: usize,
    metric: Metric,
}

impl KMeans {
    /// Fits k-means to `x` (`n × dim` row-major) with `cfg`, on the current rayon pool.
    ///
    /// For [`Metric::Cosine`] the rows are normalised into a copy first (`n × dim` f32 more
    /// memory); Euclidean mode reads `x` in place.
    pub fn fit(
        x: &[f32],
        dim: usize,
        cfg: &KMeansConfig,
    ) -> Result<(KMeans, FitReport), KMeansError> {
        Self::fit_with_progress(x, dim, cfg, &|_| {})
    }

    /// [`KMeans::fit`], calling `progress` after every Lloyd iteration (iterations are also
    /// logged with `tracing::debug!`).
    pub fn fit_with_progress(
        x: &[f32],
        dim: usize,
        cfg: &KMeansConfig,
        progress: &dyn Fn(&FitProgress),
    ) -> Result<(KMeans, FitReport), KMeansError> {
        let data = prepare_fit(x, dim, cfg)?;
        let mut ws = Workspace::new(data.n);
        let mut best: Option<(KMeans, FitReport)> = None;
        for restart in 0..cfg.restarts {
            let init = seed_restart(&data, cfg, restart, &mut ws);
            let (model, report) = run_restart(&data, init, cfg, restart, &mut ws, progress);
            if best
                .as_ref()
                .is_none_or(|(_, rep)| report.inertia < rep.inertia)
            {
                best = Some((model, report));
            }
        }
        Ok(best.expect("at least one restart"))
    }

    /// The k-means++ seeds [`KMeans::fit`] starts its first restart from, as a model (the
    /// draw of `SplitMix64::derive(cfg.seed, 0)`); `fit` with one restart equals
    /// `init_plus_plus` followed by [`KMeans::refine`].
    pub fn init_plus_plus(
        x: &[f32],
        dim: usize,
        cfg: &KMeansConfig,
    ) -> Result<KMeans, KMeansError> {
        let data = prepare_fit(x, dim, cfg)?;
        let mut ws = Workspace::new(data.n);
        let init = seed_restart(&data, cfg, 0, &mut ws);
        Ok(KMeans::from_parts(init, cfg.k, dim, cfg.metric))
    }

    /// Lloyd iterations on `x` (`n × dim`) starting from this model's centroids, with
    /// `cfg.max_iter` and `cfg.tol` (warm start, or a start shared with another
    /// implementation). `cfg.k` and `cfg.metric` must match the model; `restarts` and `seed`
    /// are not used.
    pub fn refine(
        &self,
        x: &[f32],
        cfg: &KMeansConfig,
    ) -> Result<(KMeans, FitReport), KMeansError> {
        if cfg.k != self.k {
            return Err(KMeansError::InvalidConfig {
                field: "k",
                problem: format!("is {} but the model has {} centroids", cfg.k, self.k),
            });
        }
        if cfg.metric != self.metric {
            return Err(KMeansError::InvalidConfig {
                field: "metric",
                problem: format!("is {} but the model's is {}", cfg.metric, self.metric),
            });
        }
        let data = prepare_fit(x, self.dim, cfg)?;
        let mut ws = Workspace::new(data.n);
        let (model, mut report) =
            run_restart(&data, self.centroids.clone(), cfg, 0, &mut ws, &|_| {});
        report.restarts = 1;
        Ok((model, report))
    }

    /// A model from given centroids (`k × dim` row-major). For cosine, the centroids are used
    /// as given (a fit leaves them unit-norm).
    pub fn from_centroids(
        centroids: Vec<f32>,
        dim: usize,
        metric: Metric,
    ) -> Result<KMeans, KMeansError> {
        let k = check_shape(&centroids, dim)?;
        if let Some((row, col)) = first_non_finite(&centroids, dim) {
            return Err(KMeansError::NonFinite { row, col });
        }
        if k > u32::MAX as usize {
            return Err(KMeansError::InvalidConfig {
                field: "k",
                problem: "must fit in a u32 label".into(),
            });
        }
        Ok(Self::from_parts(centroids, k, dim, metric))
    }

    fn from_parts(centroids: Vec<f32>, k: usize, dim: usize, metric: Metric) -> KMeans {
        let norms = centroids.chunks_exact(dim).map(sq_norm).collect();
        KMeans {
            centroids,
            norms,
            k,
            dim,
            metric,
        }
    }

    /// The centroids, `k × dim` row-major.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric the centroids live in.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Nearest centroid of every row of `x` (`n × dim` row-major), in parallel on the current
    /// rayon pool; ties go to the lowest cluster index. Meant for successive chunks of a
    /// streamed corpus; an empty `x` gives an empty assignment.
    ///
    /// Rows are trusted to be finite, as validated embeddings are: a row holding NaN or ±∞ gets
    /// a NaN distance, and in cosine mode an all-zero row is compared as the zero vector. Use
    /// [`KMeans::try_assign`] to reject such rows with a typed error instead.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of [`KMeans::dim`].
    #[track_caller]
    pub fn assign(&self, x: &[f32]) -> Assignment {
        assert!(
            x.len() % self.dim == 0,
            "k-means assign: {} values are not a whole number of {}-dimensional rows",
            x.len(),
            self.dim
        );
        self.assign_checked(x, true)
            .expect("unvalidated assignment cannot fail")
    }

    /// [`KMeans::assign`] that first checks the input: a length that is not a whole number of
    /// rows, a non-finite value or (cosine) an all-zero row is an error naming the first
    /// offending row.
    pub fn try_assign(&self, x: &[f32]) -> Result<Assignment, KMeansError> {
        if x.len() % self.dim != 0 {
            return Err(KMeansError::DimensionMismatch {
                dim: self.dim,
                len: x.len(),
            });
        }
        self.assign_checked(x, false)
    }

    fn assign_checked(&self, x: &[f32], trusted: bool) -> Result<Assignment, KMeansError> {
        let n = x.len() / self.dim;
        let mut labels = vec![0u32; n];
        let mut sq_dists = vec![0f32; n];
        if n > 0 {
            let centers = Centers::new(&self.centroids, &self.norms, self.k);
            let normalize = self.metric == Metric::Cosine;
            assign_pass(
                x,
                trusted,
                self.dim,
                &centers,
                normalize,
                &mut labels,
                &mut sq_dists,
            )?;
        }
        Ok(Assignment { labels, sq_dists })
    }

    /// Sum of squared distances of the rows of `x` (`n × dim`) to their nearest centroids
    /// (f64). Same input contract as [`KMeans::assign`].
    #[track_caller]
    pub fn inertia(&self, x: &[f32]) -> f64 {
        self.assign(x).inertia()
    }

    /// The same model with clusters renumbered by decreasing `sizes` (ties keep the lower
    /// index first), so that cluster 0 is the largest. `sizes` has `k` entries, e.g.
    /// [`FitReport::sizes`].
    ///
    /// # Panics
    /// If `sizes.len() != k`.
    #[track_caller]
    pub fn sorted_by_size(self, sizes: &[u64]) -> KMeans {
        assert_eq!(sizes.len(), self.k, "sorted_by_size: one size per cluster");
        let mut order: Vec<usize> = (0..self.k).collect();
        order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
        let d = self.dim;
        let centroids = order
            .iter()
            .flat_map(|&j| self.centroids[j * d..(j + 1) * d].iter().copied())
            .collect();
        KMeans::from_parts(centroids, self.k, d, self.metric)
    }

    /// Writes the model to `path` atomically (temp file, fsync, rename) as safetensors:
    /// tensor `centroids` f32 `[k, dim]`, metadata `{"metric", "k", "dim"}`.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), KMeansError> {
        let bytes: Vec<u8> = self
            .centroids
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view =
            TensorView::new(Dtype::F32, vec![self.k, self.dim], &bytes).map_err(|source| {
                KMeansError::Safetensors {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let metadata = HashMap::from([
            ("metric".to_string(), self.metric.name().to_string()),
            ("k".to_string(), self.k.to_string()),
            ("dim".to_string(), self.dim.to_string()),
        ]);
        let file = safetensors::serialize([(CENTROIDS_TENSOR, view)], Some(metadata)).map_err(
            |source| KMeansError::Safetensors {
                path: path.to_path_buf(),
                source,
            },
        )?;
        write_atomic(path, &file)?;
        Ok(())
    }

    /// Reads a model written by [`KMeans::save_safetensors`]. A missing `metric` entry means
    /// Euclidean (files written by other tools); a `k` entry, if present, must match the tensor.
    pub fn load_safetensors(path: &Path) -> Result<KMeans, KMeansError> {
        let bytes = std::fs::read(path).at("reading", path)?;
        let bad = |problem: String| KMeansError::BadModelFile {
            path: path.to_path_buf(),
            problem,
        };
        let st_err = |source| KMeansError::Safetensors {
            path: path.to_path_buf(),
            source,
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(st_err)?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(st_err)?;
        let view = tensors.tensor(CENTROIDS_TENSOR).map_err(|_| {
            bad(format!(
                "expected a tensor {CENTROIDS_TENSOR:?} (f32 [k, dim]); found {:?}",
                tensors.names()
            ))
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {CENTROIDS_TENSOR:?} must be F32, found {:?}",
                view.dtype()
            )));
        }
        let &[k, dim] = view.shape() else {
            return Err(bad(format!(
                "tensor {CENTROIDS_TENSOR:?} must have rank 2 [k, dim], found shape {:?}",
                view.shape()
            )));
        };
        if k == 0 || dim == 0 {
            return Err(bad(format!(
                "tensor {CENTROIDS_TENSOR:?} is empty (shape [{k}, {dim}])"
            )));
        }
        let meta = header.metadata().clone().unwrap_or_default();
        let metric = match meta.get("metric") {
            None => Metric::Euclidean,
            Some(name) => name
                .parse()
                .map_err(|e: KMeansError| bad(format!("metadata \"metric\": {e}")))?,
        };
        if let Some(meta_k) = meta.get("k") {
            if meta_k.parse::<usize>().ok() != Some(k) {
                return Err(bad(format!(
                    "metadata \"k\" = {meta_k:?} does not match the tensor's {k} rows"
                )));
            }
        }
        let centroids: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        KMeans::from_centroids(centroids, dim, metric).map_err(|e| bad(e.to_string()))
    }
}

/// Number of rows of `x` (`n × dim`), checking the shape.
fn check_shape(x: &[f32], dim: usize) -> Result<usize, KMeansError> {
    if dim == 0 {
        return Err(KMeansError::ZeroDim);
    }
    if x.len() % dim != 0 {
        return Err(KMeansError::DimensionMismatch { dim, len: x.len() });
    }
    if x.is_empty() {
        return Err(KMeansError::Empty);
    }
    Ok(x.len() / dim)
}

/// Validates `cfg` and `x` (`n × dim`) and runs the preparation pass.
fn prepare_fit<'a>(
    x: &'a [f32],
    dim: usize,
    cfg: &KMeansConfig,
) -> Result<Prepared<'a>, KMeansError> {
    cfg.validate()?;
    let n = check_shape(x, dim)?;
    if cfg.k > n {
        return Err(KMeansError::TooFewPoints { k: cfg.k, n });
    }
    Prepared::new(x, n, dim, cfg.metric)
}

/// k-means++ seeds of restart `restart` (`k × d`).
fn seed_restart(
    data: &Prepared,
    cfg: &KMeansConfig,
    restart: usize,
    ws: &mut Workspace,
) -> Vec<f32> {
    let mut rng = SplitMix64::derive(cfg.seed, restart as u64);
    kmeans_plus_plus(data, cfg.k, cfg.local_trials, &mut rng, ws)
}

/// Lloyd from `init` (`k × d`) and the final labelling: the model and its report.
fn run_restart(
    data: &Prepared,
    init: Vec<f32>,
    cfg: &KMeansConfig,
    restart: usize,
    ws: &mut Workspace,
    progress: &dyn Fn(&FitProgress),
) -> (KMeans, FitReport) {
    let tol = cfg.tol * data.mean_variance;
    let run = lloyd(data, init, cfg, tol, restart, ws, progress);
    tracing::debug!(
        restart,
        inertia = run.inertia,
        iterations = run.iterations,
        converged = run.converged,
        "k-means restart done"
    );
    if run.sizes.contains(&0) {
        tracing::warn!(
            k = cfg.k,
            "k-means ended with empty clusters (fewer distinct points than k?)"
        );
    }
    let model = KMeans::from_parts(run.centroids, cfg.k, data.d, cfg.metric);
    let report = FitReport {
        inertia: run.inertia,
        iterations: run.iterations,
        converged: run.converged,
        sizes: run.sizes,
        restarts: cfg.restarts,
        best_restart: restart,
    };
    (model, report)
}

/// First (row, column) holding a non-finite value.
fn first_non_finite(x: &[f32], dim: usize) -> Option<(usize, usize)> {
    x.chunks_exact(dim).enumerate().find_map(|(r, row)| {
        if row.iter().all(|v| v.is_finite()) {
            None
        } else {
            row.iter().position(|v| !v.is_finite()).map(|c| (r, c))
        }
    })
}

/// Rows per block for `n` rows: a function of `n` alone, so results do not depend on threads.
fn block_rows(n: usize) -> usize {
    let chunks = n.div_ceil(CHUNK_ROWS);
    chunks.div_ceil(TARGET_BLOCKS).clamp(1, MAX_BLOCK_CHUNKS) * CHUNK_ROWS
}

// ---------------------------------------------------------------------------------------------
// Small kernels. Written with fixed-width lane arrays so they vectorise, and fully inlined into
// the block functions below, which are compiled twice (baseline and AVX2+FMA) and picked at run
// time. Each fixes its own summation order, so both builds give identical bits.
// ---------------------------------------------------------------------------------------------

/// Most k-means++ candidates per centre (the default `2 + ⌊ln k⌋` is at most 24 for
/// `k ≤ u32::MAX`).
const MAX_TRIALS: usize = 32;

/// Lane count of the reductions (sums run in this many independent partial sums).
const LANES: usize = 16;

/// `‖a‖²` in f32 with [`LANES`] partial sums.
#[inline(always)]
fn sq_norm(a: &[f32]) -> f32 {
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
fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
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
fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Index and value of the smallest `norms[j] − 2 prod[j]` (first index on ties).
#[inline(always)]
fn argmin_score(prod: &[f32], norms: &[f32]) -> (u32, f32) {
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
fn products(x: &[f32], m: usize, d: usize, c: &[f32], k: usize, out: &mut [f32]) {
    let xm = MatRef::from_row_major_slice(x, m, d);
    let cm = MatRef::from_row_major_slice(c, k, d);
    let om = MatMut::from_row_major_slice_mut(out, m, k);
    matmul(om, Accum::Replace, xm, cm.transpose(), 1.0f32, Par::Seq);
}

/// Whether the AVX2+FMA builds of the block functions can run here.
#[inline]
fn has_avx2() -> bool {
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
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Data preparation: validation, normalisation, row norms and the tolerance scale in one pass.
// ---------------------------------------------------------------------------------------------

/// The points a fit runs on.
struct Prepared<'a> {
    /// `n × d`: the input (Euclidean) or its normalised copy (cosine).
    x: Cow<'a, [f32]>,
    /// `‖x_i‖²` (`n`).
    norms: Vec<f32>,
    n: usize,
    d: usize,
    /// Mean per-feature variance, the scale of `tol`.
    mean_variance: f64,
}

/// One block's share of the preparation pass.
struct PrepBlock {
    col_sums: Vec<f64>,
    sq_norm_sum: f64,
}

impl<'a> Prepared<'a> {
    fn new(x: &'a [f32], n: usize, d: usize, metric: Metric) -> Result<Self, KMeansError> {
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

// ---------------------------------------------------------------------------------------------
// k-means++ seeding.
// ---------------------------------------------------------------------------------------------

/// Per-fit scratch reused across restarts.
struct Workspace {
    /// Current label of each point (`n`).
    labels: Vec<u32>,
    /// Squared distance of each point to its centroid or nearest seed (`n`).
    dists: Vec<f32>,
    /// Distance of each point to each k-means++ candidate (`n × trials`).
    cand: Vec<f32>,
}

impl Workspace {
    fn new(n: usize) -> Self {
        Self {
            labels: vec![u32::MAX; n],
            dists: vec![0.0; n],
            cand: Vec::new(),
        }
    }
}

/// Greedy k-means++ (Arthur & Vassilvitskii 2007, scikit-learn's variant): each new centre is
/// the best of `trials` (default `2 + ⌊ln k⌋`) candidates drawn with probability ∝ squared
/// distance to the nearest centre so far. Returns `k × d` centroids.
fn kmeans_plus_plus(
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
    let br = block_rows(n);
    let x: &[f32] = &data.x;
    let partials: Vec<Vec<f64>> = x
        .par_chunks(br * d)
        .zip(data.norms.par_chunks(br))
        .zip(closest.par_chunks(br))
        .zip(out.par_chunks_mut(br * t))
        .map(|(((xb, nb), cb), ob)| candidate_block(xb, nb, cb, d, cands, &cnorms, ob))
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
        cands: &[f32],
        cnorms: &[f32],
        out: &mut [f32],
    ) -> Vec<f64>
}

#[inline(always)]
fn candidate_block_body(
    x: &[f32],
    xnorms: &[f32],
    closest: &[f32],
    d: usize,
    cands: &[f32],
    cnorms: &[f32],
    out: &mut [f32],
) -> Vec<f64> {
    let t = cnorms.len();
    let mut pots = vec![0f64; t];
    for (c, xc) in x.chunks(CHUNK_ROWS * d).enumerate() {
        let m = xc.len() / d;
        let r0 = c * CHUNK_ROWS;
        let oc = &mut out[r0 * t..(r0 + m) * t];
        products(xc, m, d, cands, t, oc);
        // Potentials within a chunk in f32, across chunks in f64.
        let mut chunk_pots = [0f32; MAX_TRIALS];
        for i in 0..m {
            let xn = xnorms[r0 + i];
            let cl = closest[r0 + i];
            for j in 0..t {
                let p = &mut oc[i * t + j];
                let dist = (xn + cnorms[j] - 2.0 * *p).max(0.0);
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

// ---------------------------------------------------------------------------------------------
// Lloyd iterations.
// ---------------------------------------------------------------------------------------------

/// Centroids with their squared norms.
struct Centers<'a> {
    c: &'a [f32],
    norms: &'a [f32],
    k: usize,
}

impl<'a> Centers<'a> {
    fn new(c: &'a [f32], norms: &'a [f32], k: usize) -> Self {
        Self { c, norms, k }
    }
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
struct Run {
    centroids: Vec<f32>,
    inertia: f64,
    iterations: usize,
    converged: bool,
    sizes: Vec<u64>,
}

/// Lloyd iterations from `centroids` (`k × d`) until convergence or `max_iter`, then a final
/// labelling pass with exact distances.
fn lloyd(
    data: &Prepared,
    mut centroids: Vec<f32>,
    cfg: &KMeansConfig,
    tol: f64,
    restart: usize,
    ws: &mut Workspace,
    progress: &dyn Fn(&FitProgress),
) -> Run {
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
    let norms: Vec<f32> = centroids.chunks_exact(d).map(sq_norm).collect();
    let centers = Centers::new(&centroids, &norms, k);
    if labels_final {
        exact_dists_pass(x, d, &centers, &ws.labels, &mut ws.dists);
    } else {
        assign_pass(x, true, d, &centers, false, &mut ws.labels, &mut ws.dists)
            .expect("fit data was validated");
    }
    let mut sizes = vec![0u64; k];
    for &l in &ws.labels {
        sizes[l as usize] += 1;
    }
    let inertia = ordered_sum(&ws.dists);
    Run {
        centroids,
        inertia,
        iterations,
        converged,
        sizes,
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

// ---------------------------------------------------------------------------------------------
// Assignment.
// ---------------------------------------------------------------------------------------------

/// Labels and exact squared distances of every row of `x` (`n × d`). Unless `validated`
/// (fit data), rows are checked for non-finite values (and, when `normalize`, normalised) on
/// the fly.
fn assign_pass(
    x: &[f32],
    validated: bool,
    d: usize,
    centers: &Centers,
    normalize: bool,
    labels: &mut [u32],
    dists: &mut [f32],
) -> Result<(), KMeansError> {
    let n = labels.len();
    let br = block_rows(n);
    let results: Vec<Result<(), KMeansError>> = x
        .par_chunks(br * d)
        .zip(labels.par_chunks_mut(br))
        .zip(dists.par_chunks_mut(br))
        .enumerate()
        .map(|(b, ((xb, lb), db))| {
            assign_block(xb, validated, d, centers, normalize, b * br, lb, db)
        })
        .collect();
    results.into_iter().collect()
}

simd_dispatch! {
    /// One block of [`assign_pass`].
    fn assign_block = assign_block_body(
        x: &[f32],
        validated: bool,
        d: usize,
        centers: &Centers,
        normalize: bool,
        row0: usize,
        labels: &mut [u32],
        dists: &mut [f32],
    ) -> Result<(), KMeansError>
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn assign_block_body(
    x: &[f32],
    validated: bool,
    d: usize,
    centers: &Centers,
    normalize: bool,
    row0: usize,
    labels: &mut [u32],
    dists: &mut [f32],
) -> Result<(), KMeansError> {
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
fn exact_dists_pass(x: &[f32], d: usize, centers: &Centers, labels: &[u32], dists: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cluster_metrics::adjusted_rand_index;

    /// `n × d` points around `k` centres (coordinates `N(0, spread²)`, resampled until every
    /// pair is at least `min_sep` apart) with unit Gaussian noise, and their labels. The first
    /// `k` points cover every cluster.
    fn blobs(
        n: usize,
        d: usize,
        k: usize,
        spread: f64,
        min_sep: f64,
        seed: u64,
    ) -> (Vec<f32>, Vec<u32>) {
        let mut rng = SplitMix64::new(seed);
        let mut tries = 0;
        let centres = loop {
            assert!(
                tries < 1000,
                "min_sep {min_sep} unreachable with spread {spread}"
            );
            tries += 1;
            let c: Vec<f64> = (0..k * d).map(|_| rng.normal() * spread).collect();
            let ok = (0..k).all(|a| {
                (0..a).all(|b| {
                    let dist: f64 = (0..d).map(|t| (c[a * d + t] - c[b * d + t]).powi(2)).sum();
                    dist.sqrt() >= min_sep
                })
            });
            if ok {
                break c;
            }
        };
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = if i < k {
                i
            } else {
                rng.below(k as u64) as usize
            };
            y.push(c as u32);
            for j in 0..d {
                x.push((centres[c * d + j] + rng.normal()) as f32);
            }
        }
        (x, y)
    }

    /// Brute-force nearest centroid in f64.
    fn reference_assign(x: &[f32], c: &[f32], d: usize) -> (Vec<u32>, Vec<f64>) {
        let k = c.len() / d;
        let mut labels = Vec::new();
        let mut dists = Vec::new();
        for row in x.chunks_exact(d) {
            let (mut best, mut bd) = (0, f64::INFINITY);
            for j in 0..k {
                let dist: f64 = row
                    .iter()
                    .zip(&c[j * d..(j + 1) * d])
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum();
                if dist < bd {
                    bd = dist;
                    best = j as u32;
                }
            }
            labels.push(best);
            dists.push(bd);
        }
        (labels, dists)
    }

    fn cfg(k: usize) -> KMeansConfig {
        KMeansConfig {
            k,
            ..Default::default()
        }
    }

    #[test]
    fn assign_matches_brute_force_f64() {
        for &(n, d, k) in &[
            (1, 1, 1),
            (7, 3, 2),
            (300, 17, 5),
            (1000, 64, 10),
            (5000, 130, 33),
        ] {
            let mut rng = SplitMix64::new(n as u64);
            let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
            let c: Vec<f32> = (0..k * d).map(|_| rng.normal() as f32).collect();
            let model = KMeans::from_centroids(c.clone(), d, Metric::Euclidean).unwrap();
            let got = model.assign(&x);
            let (labels, dists) = reference_assign(&x, &c, d);
            for i in 0..n {
                let l = got.labels[i] as usize;
                // Same label, or a near-tie that f32 rounding may break either way.
                if got.labels[i] != labels[i] {
                    let alt: f64 = x[i * d..(i + 1) * d]
                        .iter()
                        .zip(&c[l * d..(l + 1) * d])
                        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                        .sum();
                    assert!((alt - dists[i]).abs() <= 1e-5 * dists[i], "row {i} (n={n})");
                }
                let rel = (got.sq_dists[i] as f64 - dists[i]).abs() / dists[i].max(1e-12);
                assert!(rel < 1e-5, "row {i}: {} vs {}", got.sq_dists[i], dists[i]);
            }
        }
    }

    #[test]
    fn blobs_are_recovered_exactly_for_several_sizes() {
        for &(n, d, k) in &[(200, 2, 3), (2000, 16, 5), (20_000, 64, 10), (3000, 300, 8)] {
            let (x, y) = blobs(n, d, k, 12.0, 12.0, 11 + n as u64);
            let many_trials = KMeansConfig {
                local_trials: Some(16),
                ..cfg(k)
            };
            let (model, report) = KMeans::fit(&x, d, &cfg(k)).unwrap();
            assert!(report.converged, "n={n}");
            let (other, _) = KMeans::fit(&x, d, &many_trials).unwrap();
            let ari = adjusted_rand_index(&y, &other.assign(&x).labels);
            assert_eq!(ari, 1.0, "n={n} with 16 local trials");
            let pred = model.assign(&x).labels;
            let ari = adjusted_rand_index(&y, &pred);
            assert_eq!(ari, 1.0, "n={n} d={d} k={k}: ARI {ari}");
            assert_eq!(report.sizes.iter().sum::<u64>(), n as u64);
        }
    }

    #[test]
    fn inertia_matches_f64_recomputation() {
        for &(n, d, k) in &[(500, 8, 4), (4000, 33, 7), (40_000, 48, 10)] {
            let (x, _) = blobs(n, d, k, 1.0, 0.0, 5);
            let (model, report) = KMeans::fit(&x, d, &cfg(k)).unwrap();
            let (_, dists) = reference_assign(&x, model.centroids(), d);
            let reference: f64 = dists.iter().sum();
            let rel = (report.inertia - reference).abs() / reference;
            assert!(rel < 1e-6, "n={n}: {} vs {reference}", report.inertia);
            let again = model.inertia(&x);
            assert!((again - reference).abs() / reference < 1e-6);
        }
    }

    #[test]
    fn centroids_are_means_of_their_points() {
        let (d, k) = (12, 6);
        let (x, _) = blobs(3000, d, k, 0.7, 0.0, 2);
        let c = KMeansConfig {
            tol: 0.0,
            max_iter: 300,
            ..cfg(k)
        };
        let (model, report) = KMeans::fit(&x, d, &c).unwrap();
        assert!(report.converged);
        let labels = model.assign(&x).labels;
        for j in 0..k {
            let members: Vec<&[f32]> = x
                .chunks_exact(d)
                .zip(&labels)
                .filter(|(_, &l)| l as usize == j)
                .map(|(r, _)| r)
                .collect();
            for t in 0..d {
                let mean = members.iter().map(|r| r[t] as f64).sum::<f64>() / members.len() as f64;
                let got = model.centroids()[j * d + t] as f64;
                assert!(
                    (mean - got).abs() < 1e-5,
                    "cluster {j} dim {t}: {mean} vs {got}"
                );
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_independent_of_threads() {
        let (x, _) = blobs(30_000, 20, 8, 0.5, 0.0, 3);
        let c = KMeansConfig {
            restarts: 2,
            seed: 42,
            ..cfg(8)
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| KMeans::fit(&x, 20, &c).unwrap())
        };
        let (m1, r1) = run(1);
        let (m3, r3) = run(3);
        let (m4, r4) = run(4);
        assert_eq!(m1, m3);
        assert_eq!(m1, m4);
        assert_eq!(r1, r3);
        assert_eq!(r1.inertia.to_bits(), r4.inertia.to_bits());
        let other = KMeans::fit(
            &x,
            20,
            &KMeansConfig {
                seed: 43,
                ..c.clone()
            },
        )
        .unwrap();
        assert_ne!(other.0.centroids(), m1.centroids());
    }

    #[test]
    fn restarts_keep_the_best_inertia() {
        let (d, k) = (8, 12);
        let (x, _) = blobs(5000, d, k, 0.8, 0.0, 9);
        let c = KMeansConfig {
            restarts: 4,
            seed: 7,
            ..cfg(k)
        };
        let (model, report) = KMeans::fit(&x, d, &c).unwrap();
        assert_eq!(report.restarts, 4);
        // Restart r runs from SplitMix64::derive(seed, r); the report is the best of them.
        let data = Prepared::new(&x, 5000, d, Metric::Euclidean).unwrap();
        let tol = c.tol * data.mean_variance;
        let mut ws = Workspace::new(5000);
        let inertias: Vec<f64> = (0..4)
            .map(|r| {
                let mut rng = SplitMix64::derive(7, r as u64);
                let init = kmeans_plus_plus(&data, k, c.local_trials, &mut rng, &mut ws);
                lloyd(&data, init, &c, tol, r, &mut ws, &|_| {}).inertia
            })
            .collect();
        let best = inertias.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(report.inertia, best, "{inertias:?}");
        assert_eq!(inertias[report.best_restart], best);
        assert_eq!(model.inertia(&x), best);
    }

    #[test]
    fn fit_is_init_plus_plus_then_refine() {
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let (x, _) = blobs(6000, 16, 7, 0.6, 0.0, 13);
            let c = KMeansConfig {
                metric,
                seed: 5,
                ..cfg(7)
            };
            let (fitted, report) = KMeans::fit(&x, 16, &c).unwrap();
            let init = KMeans::init_plus_plus(&x, 16, &c).unwrap();
            let (refined, again) = init.refine(&x, &c).unwrap();
            assert_eq!(fitted, refined);
            assert_eq!(report, again);
            // Refining a converged model stops at once with the same inertia.
            let (_, twice) = refined.refine(&x, &c).unwrap();
            assert_eq!(twice.iterations, 1);
            // (A fit stopped by the centroid-shift tolerance may still improve a little.)
            assert!(twice.inertia <= report.inertia * (1.0 + 1e-9));
            assert!(report.inertia - twice.inertia <= 1e-4 * report.inertia);
            let wrong_k = KMeansConfig { k: 6, ..c.clone() };
            assert!(matches!(
                init.refine(&x, &wrong_k),
                Err(KMeansError::InvalidConfig { field: "k", .. })
            ));
        }
    }

    #[test]
    fn cosine_mode_clusters_directions() {
        // Directions around k random unit vectors, at random lengths: only the direction counts.
        let (n, d, k) = (3000, 32, 6);
        let (raw, y) = blobs(n, d, k, 2.0, 8.0, 21);
        let mut rng = SplitMix64::new(4);
        let x: Vec<f32> = raw
            .chunks_exact(d)
            .flat_map(|r| {
                let s = (0.1 + 10.0 * rng.next_f64()) as f32;
                r.iter().map(move |v| v * s).collect::<Vec<_>>()
            })
            .collect();
        let c = KMeansConfig {
            metric: Metric::Cosine,
            ..cfg(k)
        };
        let (model, report) = KMeans::fit(&x, d, &c).unwrap();
        for row in model.centroids().chunks_exact(d) {
            assert!((sq_norm(row) - 1.0).abs() < 1e-5);
        }
        let a = model.assign(&x);
        assert_eq!(adjusted_rand_index(&y, &a.labels), 1.0);
        // The inertia is that of the normalised rows.
        let normed: Vec<f32> = x
            .chunks_exact(d)
            .flat_map(|r| {
                let s = sq_norm(r).sqrt();
                r.iter().map(move |v| v / s).collect::<Vec<_>>()
            })
            .collect();
        let (_, dists) = reference_assign(&normed, model.centroids(), d);
        let reference: f64 = dists.iter().sum();
        assert!((report.inertia - reference).abs() / reference < 1e-5);
        assert!((a.inertia() - reference).abs() / reference < 1e-5);
        // Scaling a row does not change its cluster.
        let scaled: Vec<f32> = x[..d].iter().map(|v| v * 123.0).collect();
        assert_eq!(model.assign(&scaled).labels[0], a.labels[0]);
    }

    #[test]
    fn empty_clusters_are_reseeded() {
        // Duplicate points: k-means++ must still pick distinct points while it can; here force
        // an empty cluster by starting Lloyd from a centroid far from everything.
        let d = 2;
        let x = vec![0.0, 0.0, 0.1, 0.0, 10.0, 10.0, 10.1, 10.0, 20.0, 0.0];
        let n = 5;
        let data = Prepared::new(&x, n, d, Metric::Euclidean).unwrap();
        let mut ws = Workspace::new(n);
        let init = vec![0.05, 0.0, 10.05, 10.0, 1000.0, 1000.0];
        let run = lloyd(&data, init, &cfg(3), 0.0, 0, &mut ws, &|_| {});
        assert!(run.sizes.iter().all(|&s| s > 0), "{:?}", run.sizes);
        assert!(run.inertia < 0.02, "{}", run.inertia);
    }

    #[test]
    fn k_equal_to_n_and_duplicates() {
        let x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (model, report) = KMeans::fit(&x, 2, &cfg(3)).unwrap();
        assert_eq!(report.inertia, 0.0);
        assert_eq!(report.sizes, vec![1, 1, 1]);
        assert_eq!(model.k(), 3);
        // All points identical: degenerate but no panic or NaN.
        let same = vec![1.0f32; 20];
        let (m, r) = KMeans::fit(&same, 2, &cfg(3)).unwrap();
        assert!(m.centroids().iter().all(|v| v.is_finite()));
        assert_eq!(r.inertia, 0.0);
    }

    #[test]
    fn errors_are_named() {
        let x = vec![0f32; 12];
        assert!(matches!(
            KMeans::fit(&x, 3, &cfg(5)),
            Err(KMeansError::TooFewPoints { k: 5, n: 4 })
        ));
        assert!(matches!(
            KMeans::fit(&x, 5, &cfg(1)),
            Err(KMeansError::DimensionMismatch { dim: 5, len: 12 })
        ));
        assert!(matches!(
            KMeans::fit(&[], 3, &cfg(1)),
            Err(KMeansError::Empty)
        ));
        assert!(matches!(
            KMeans::fit(&x, 0, &cfg(1)),
            Err(KMeansError::ZeroDim)
        ));
        let mut bad = blobs(1000, 4, 2, 1.0, 0.0, 1).0;
        bad[777 * 4 + 2] = f32::NAN;
        bad[901 * 4] = f32::INFINITY;
        match KMeans::fit(&bad, 4, &cfg(2)) {
            Err(KMeansError::NonFinite { row: 777, col: 2 }) => {}
            other => panic!("{other:?}"),
        }
        let err = KMeans::fit(&bad, 4, &cfg(2)).unwrap_err().to_string();
        assert!(err.contains("row 777"), "{err}");
        let model = KMeans::from_centroids(vec![0.0; 8], 4, Metric::Cosine).unwrap();
        assert!(matches!(
            model.try_assign(&bad),
            Err(KMeansError::NonFinite { row: 777, col: 2 })
        ));
        assert!(matches!(
            model.try_assign(&[1.0; 7]),
            Err(KMeansError::DimensionMismatch { dim: 4, len: 7 })
        ));
        assert!(matches!(
            model.try_assign(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
            Err(KMeansError::ZeroRow { row: 1 })
        ));
        assert!(model.try_assign(&[]).unwrap().labels.is_empty());
        // The trusting path keeps a zero row as the zero vector (distance 1 to unit centroids).
        let unit = KMeans::from_centroids(vec![1.0, 0.0, 0.0, 0.0], 4, Metric::Cosine).unwrap();
        let a = unit.assign(&[0.0; 4]);
        assert_eq!((a.labels[0], a.sq_dists[0]), (0, 1.0));
        let zero_k = KMeansConfig { k: 0, ..cfg(1) };
        assert!(matches!(
            KMeans::fit(&x, 3, &zero_k),
            Err(KMeansError::InvalidConfig { field: "k", .. })
        ));
        assert!(matches!(
            "manhattan".parse::<Metric>(),
            Err(KMeansError::UnknownMetric { .. })
        ));
    }

    #[test]
    fn config_serde_names_and_defaults() {
        let c: KMeansConfig = toml::from_str("k = 12\nmetric = \"cosine\"").unwrap();
        assert_eq!(c.k, 12);
        assert_eq!(c.metric, Metric::Cosine);
        assert_eq!(c.max_iter, 100);
        assert_eq!(c.tol, 1e-4);
        assert_eq!(c.restarts, 1);
        assert_eq!(c.local_trials, Some(16));
        assert!(toml::from_str::<KMeansConfig>("kk = 3").is_err());
        let t: KMeansConfig = toml::from_str("local_trials = 16").unwrap();
        assert_eq!(t.local_trials, Some(16));
        for bad in [0, MAX_TRIALS + 1] {
            let c = KMeansConfig {
                local_trials: Some(bad),
                ..Default::default()
            };
            assert!(matches!(
                c.validate(),
                Err(KMeansError::InvalidConfig {
                    field: "local_trials",
                    ..
                })
            ));
        }
        assert_eq!(
            serde_json::to_string(&Metric::Euclidean).unwrap(),
            "\"euclidean\""
        );
        assert_eq!("cosine".parse::<Metric>().unwrap(), Metric::Cosine);
    }

    #[test]
    fn safetensors_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (x, _) = blobs(2000, 24, 5, 2.0, 0.0, 8);
        let c = KMeansConfig {
            metric: Metric::Cosine,
            ..cfg(5)
        };
        let (model, _) = KMeans::fit(&x, 24, &c).unwrap();
        let path = dir.path().join("centroids.safetensors");
        model.save_safetensors(&path).unwrap();
        let back = KMeans::load_safetensors(&path).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.assign(&x), model.assign(&x));
        // The metadata names the metric and k.
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["metric"], "cosine");
        assert_eq!(meta["k"], "5");

        let write = |name: &str, dtype: Dtype, shape: Vec<usize>, bytes: &[u8]| {
            let p = dir.path().join("bad.safetensors");
            let v = TensorView::new(dtype, shape, bytes).unwrap();
            std::fs::write(&p, safetensors::serialize([(name, v)], None).unwrap()).unwrap();
            let err = KMeans::load_safetensors(&p).unwrap_err();
            assert!(err.to_string().contains("bad.safetensors"), "{err}");
            err.to_string()
        };
        let err = write("weights", Dtype::F32, vec![2, 2], &[0u8; 16]);
        assert!(err.contains("expected a tensor \"centroids\""), "{err}");
        let err = write("centroids", Dtype::F64, vec![2, 2], &[0u8; 32]);
        assert!(err.contains("must be F32"), "{err}");
        let err = write("centroids", Dtype::F32, vec![4], &[0u8; 16]);
        assert!(err.contains("rank 2"), "{err}");
        let missing = dir.path().join("missing.safetensors");
        assert!(matches!(
            KMeans::load_safetensors(&missing),
            Err(KMeansError::Io(_))
        ));
        std::fs::write(dir.path().join("junk.safetensors"), b"not a file").unwrap();
        assert!(matches!(
            KMeans::load_safetensors(&dir.path().join("junk.safetensors")),
            Err(KMeansError::Safetensors { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "not a whole number")]
    fn assign_panics_on_a_ragged_input() {
        let model = KMeans::from_centroids(vec![0.0; 6], 3, Metric::Euclidean).unwrap();
        model.assign(&[1.0; 4]);
    }

    #[test]
    fn sorted_by_size_renumbers_largest_first() {
        let c = vec![0.0, 1.0, 2.0, 3.0];
        let model = KMeans::from_centroids(c, 1, Metric::Euclidean).unwrap();
        let sorted = model.sorted_by_size(&[5, 9, 5, 20]);
        assert_eq!(sorted.centroids(), &[3.0, 1.0, 0.0, 2.0]);
        assert_eq!(sorted.assign(&[2.9]).labels, vec![0]);
    }

    #[test]
    fn block_rows_depend_only_on_n() {
        assert_eq!(block_rows(1), CHUNK_ROWS);
        assert_eq!(block_rows(1_000_000) % CHUNK_ROWS, 0);
        assert!(1_000_000usize.div_ceil(block_rows(1_000_000)) <= TARGET_BLOCKS);
        assert_eq!(block_rows(usize::MAX / 2), CHUNK_ROWS * MAX_BLOCK_CHUNKS);
    }

    #[test]
    fn kmeans_plus_plus_never_picks_a_duplicate_while_it_can() {
        // Three distinct points, many copies each: the 3 seeds must be the 3 distinct points.
        let d = 3;
        let mut x = Vec::new();
        for i in 0..300 {
            let p = [[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]][i % 3];
            x.extend_from_slice(&p);
        }
        for seed in 0..20 {
            let data = Prepared::new(&x, 300, d, Metric::Euclidean).unwrap();
            let mut ws = Workspace::new(300);
            let mut rng = SplitMix64::new(seed);
            let mut c = kmeans_plus_plus(&data, 3, None, &mut rng, &mut ws)
                .chunks_exact(d)
                .map(|r| r.to_vec())
                .collect::<Vec<_>>();
            c.sort_by(|a, b| a.partial_cmp(b).unwrap());
            c.dedup();
            assert_eq!(c.len(), 3, "seed {seed}");
        }
    }
}
