//! The k-means model ([`KMeans`]): fitting (restarts of seeding then Lloyd), assignment, and
//! what a fit reports.

use serde::{Deserialize, Serialize};

use super::assign::{assign_pass, Rows};
use super::config::{KMeansConfig, Metric};
use super::distance::{sq_norm, Centers};
use super::error::KMeansError;
use super::lloyd::{FitProgress, Lloyd};
use super::points::{Prepared, Workspace};
use super::seed::kmeans_plus_plus;
use crate::rng::SplitMix64;

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
            let rows = Rows {
                d: self.dim,
                validated: trusted,
                normalize,
            };
            assign_pass(x, rows, &centers, &mut labels, &mut sq_dists)?;
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
    let lloyd = Lloyd {
        data,
        cfg,
        tol,
        progress,
    };
    let run = lloyd.run(init, restart, ws);
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
