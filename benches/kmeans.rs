//! k-means fit and assignment on 1M × 512 f32 embeddings (k = 10) against scikit-learn.
//!
//! Target (issue): faster than scikit-learn's `KMeans` on the same data and thread count, with
//! equal inertia.
//!
//! The data are 10 Gaussian clusters in 512 dimensions, deterministic (seed 2024): a shared
//! mean vector (as CLIP embeddings have), centres around it, unequal cluster sizes (20 % down
//! to 5 %) and spreads (σ = 0.8 … 1.25 per coordinate). Points of different clusters are only
//! about 1.25× farther apart (in squared distance) than points of the same cluster, roughly
//! the contrast of CLIP concept clusters, though the clusters remain separable in 512-d.
//! They are written once to `<target>/bench-data/kmeans_<n>_<d>.f32` (raw little-endian f32,
//! row-major, with a `.json` shape file) so the peer script `benches/kmeans_sklearn.py` reads
//! exactly the same values.
//!
//! Measured, in one run (2 comparisons, since k-means++ with one restart lands in a worse local
//! optimum for some seeds, and the two libraries draw from different random streams):
//! - own k-means++: scikit-learn's `KMeans(n_clusters=10, init="k-means++", n_init=1,
//!   random_state=0, algorithm="lloyd").fit(X)` (peer script, median of 3, loading excluded)
//!   against our `kmeans/fit` ([`KMeans::fit`]: k-means++, one restart, `max_iter` 300,
//!   `tol` 1e-4, seed 0; 10 samples, flat sampling);
//! - same start: the peer script writes `sklearn.cluster.kmeans_plusplus(X, 10,
//!   random_state=0)` centres to `<data>.sklearn_init.f32` and times `KMeans(init=centres)`;
//!   `kmeans/refine_shared_start` times [`KMeans::refine`] from the same centres. Both run
//!   Lloyd from one start, so they should agree on the inertia and the iteration count.
//! - `kmeans/assign`: [`KMeans::assign`] of all points (the streaming path of `prepare`).
//!
//! The peer runs with `OMP_NUM_THREADS` = `OPENBLAS_NUM_THREADS` = our rayon thread count.
//! Inertias are compared in float64 (scikit-learn's own `inertia_` is accumulated in float32
//! for float32 data; the script also recomputes it in float64). Without Python, numpy or
//! scikit-learn the comparison is skipped with the install command.
//!
//! Run with `cargo bench --bench kmeans`; `MIXATLAS_KMEANS_N=100000 cargo bench --bench
//! kmeans` for a quick run. Under `cargo test` the benchmark runs once on 20 000 points and
//! skips scikit-learn.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use mixatlas::data::cluster_metrics::adjusted_rand_index;
use mixatlas::data::kmeans::{KMeans, KMeansConfig};
use mixatlas::rng::SplitMix64;
use rayon::prelude::*;

mod common;

const D: usize = 512;
const K: usize = 10;
const SEED: u64 = 2024;
/// Bump when the generator changes, so stale data files are rewritten.
const DATA_VERSION: u32 = 2;
const WEIGHTS: [f64; K] = [0.20, 0.15, 0.12, 0.10, 0.10, 0.09, 0.08, 0.06, 0.05, 0.05];
/// Per-coordinate spread of the cluster centres around the shared mean.
const SPREAD: f64 = 1.5;
/// Rows per generator stream (each block of rows draws from its own derived stream).
const GEN_ROWS: usize = 4096;

/// The k-means settings both sides use.
fn config() -> KMeansConfig {
    KMeansConfig {
        k: K,
        max_iter: 300,
        tol: 1e-4,
        restarts: 1,
        seed: 0,
        ..KMeansConfig::default()
    }
}

/// `n × D` points and their generating cluster.
fn generate(n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SplitMix64::derive(SEED, 0);
    let mean: Vec<f64> = (0..D).map(|_| 0.5 * rng.normal()).collect();
    let centres: Vec<f64> = (0..K * D)
        .map(|i| mean[i % D] + SPREAD * rng.normal())
        .collect();
    let sigma: Vec<f64> = (0..K).map(|c| 0.8 + 0.05 * c as f64).collect();
    let mut x = vec![0f32; n * D];
    let mut y = vec![0u32; n];
    x.par_chunks_mut(GEN_ROWS * D)
        .zip(y.par_chunks_mut(GEN_ROWS))
        .enumerate()
        .for_each(|(b, (xb, yb))| {
            let mut rng = SplitMix64::derive(SEED, 1 + b as u64);
            for (row, label) in xb.chunks_exact_mut(D).zip(yb.iter_mut()) {
                let c = rng.categorical(&WEIGHTS);
                *label = c as u32;
                let centre = &centres[c * D..(c + 1) * D];
                for (v, &m) in row.iter_mut().zip(centre) {
                    *v = (m + sigma[c] * rng.normal()) as f32;
                }
            }
        });
    (x, y)
}

fn data_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-data")
}

/// `1m`, `100k` or the plain number.
fn size_label(n: usize) -> String {
    if n % 1_000_000 == 0 {
        format!("{}m", n / 1_000_000)
    } else if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Writes `x` as raw f32 unless an up-to-date copy (same shape file) exists; returns its path.
fn ensure_data_file(x: &[f32], n: usize) -> PathBuf {
    let dir = data_root();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("kmeans_{}_{D}.f32", size_label(n)));
    let shape_path = path.with_extension("json");
    // Every generator parameter is in the shape file, so a stale file is never reused.
    let shape = format!(
        "{{\"n\": {n}, \"d\": {D}, \"k\": {K}, \"dtype\": \"float32\", \"order\": \"row-major\", \
         \"generator\": {{\"version\": {DATA_VERSION}, \"seed\": {SEED}, \"spread\": {SPREAD}, \
         \"weights\": {WEIGHTS:?}}}}}\n"
    );
    let complete = std::fs::metadata(&path).is_ok_and(|m| m.len() == (n * D * 4) as u64);
    if complete && std::fs::read_to_string(&shape_path).ok().as_deref() == Some(shape.as_str()) {
        return path;
    }
    eprintln!(
        "writing {} ({:.1} GB) …",
        path.display(),
        (n * D * 4) as f64 / 1e9
    );
    let tmp = path.with_extension("f32.tmp");
    let mut w = BufWriter::with_capacity(1 << 22, std::fs::File::create(&tmp).unwrap());
    for v in x {
        w.write_all(&v.to_le_bytes()).unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    std::fs::write(&shape_path, shape).unwrap();
    path
}

/// One measurement of the peer script.
struct SkRun {
    seconds: f64,
    inertia: f64,
    inertia_f64: f64,
    n_iter: u64,
}

impl SkRun {
    fn parse(v: &serde_json::Value) -> Option<SkRun> {
        Some(SkRun {
            seconds: v["seconds"].as_f64()?,
            inertia: v["inertia"].as_f64()?,
            inertia_f64: v["inertia_f64"].as_f64()?,
            n_iter: v["n_iter"].as_u64()?,
        })
    }
}

/// What the peer script reports.
struct Sklearn {
    version: String,
    /// scikit-learn's own k-means++ (seed 0) and Lloyd.
    own_seed: SkRun,
    /// Lloyd from scikit-learn's k-means++ centres, which were written to the init file.
    shared_start: SkRun,
}

/// Runs `benches/kmeans_sklearn.py`, which also writes its k-means++ centres to `init_path`;
/// `None` (with a hint) when Python or its packages are missing or the script fails.
fn run_sklearn(path: &Path, init_path: &Path, n: usize, threads: usize) -> Option<Sklearn> {
    let cfg = config();
    let _ = std::fs::remove_file(init_path);
    let args: Vec<String> = [
        "--data",
        &path.display().to_string(),
        "--init-out",
        &init_path.display().to_string(),
        "--n",
        &n.to_string(),
        "--d",
        &D.to_string(),
        "--k",
        &K.to_string(),
        "--max-iter",
        &cfg.max_iter.to_string(),
        "--tol",
        &cfg.tol.to_string(),
        "--seed",
        &cfg.seed.to_string(),
        "--repeats",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = common::run_python_peer("kmeans_sklearn.py", &args, threads)?;
    Some(Sklearn {
        version: v["sklearn"].as_str().unwrap_or("?").to_string(),
        own_seed: SkRun::parse(&v["own_seed"])?,
        shared_start: SkRun::parse(&v["shared_start"])?,
    })
}

/// Reads `K × D` raw f32 centres.
fn read_centres(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        bytes.len(),
        K * D * 4,
        "{}: expected {K} × {D} f32",
        path.display()
    );
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MIXATLAS_KMEANS_N")
        .ok()
        .map(|s| s.parse().expect("MIXATLAS_KMEANS_N must be a number"))
        .unwrap_or(if benchmarking { 1_000_000 } else { 20_000 });
    let threads = rayon::current_num_threads();
    let cfg = config();

    let t = Instant::now();
    let (x, truth) = generate(n);
    eprintln!("generated {n} × {D} in {:.1} s", t.elapsed().as_secs_f64());
    let sklearn = if benchmarking {
        let path = ensure_data_file(&x, n);
        let init_path = path.with_extension("sklearn_init.f32");
        run_sklearn(&path, &init_path, n, threads).map(|sk| (sk, read_centres(&init_path)))
    } else {
        None
    };
    // The shared start: scikit-learn's k-means++ centres, or our own without scikit-learn.
    let start = match &sklearn {
        Some((_, centres)) => KMeans::from_centroids(centres.clone(), D, cfg.metric).unwrap(),
        None => KMeans::init_plus_plus(&x, D, &cfg).unwrap(),
    };

    let mut group = c.benchmark_group("kmeans");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(n as u64));
    let size = format!("{}x{D}_k{K}", size_label(n));

    let mut fit_seconds = Vec::new();
    let mut fit = None;
    group.bench_function(format!("fit_{size}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let out = KMeans::fit(&x, D, &cfg).unwrap();
                let dt = t.elapsed();
                total += dt;
                fit_seconds.push(dt.as_secs_f64());
                fit = Some(out);
            }
            total
        })
    });
    let mut refine_seconds = Vec::new();
    let mut refined = None;
    group.bench_function(format!("refine_shared_start_{size}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let out = start.refine(&x, &cfg).unwrap();
                let dt = t.elapsed();
                total += dt;
                refine_seconds.push(dt.as_secs_f64());
                refined = Some(out);
            }
            total
        })
    });
    let (model, report) = fit.expect("the fit ran");
    group.bench_function(format!("assign_{size}"), |b| b.iter(|| model.assign(&x)));
    group.finish();
    c.final_summary();

    let (_, shared) = refined.expect("the refinement ran");
    let ours = median(&mut fit_seconds);
    let ours_shared = median(&mut refine_seconds);
    let ari = adjusted_rand_index(&truth, &model.assign(&x).labels);
    println!();
    println!("k-means {n} × {D}, k = {K}, {threads} threads");
    println!("own k-means++ (seed 0 each, different random streams):");
    println!(
        "  mixatlas: {ours:8.3} s (median of {}), inertia {:.9e}, {:3} iterations, ARI vs \
         generating labels {ari:.4}",
        fit_seconds.len(),
        report.inertia,
        report.iterations
    );
    if let Some((sk, _)) = &sklearn {
        let own = &sk.own_seed;
        println!(
            "  sklearn:  {:8.3} s (median of 3), inertia {:.9e}, {:3} iterations (inertia_ \
             {:.9e}, f32-accumulated)",
            own.seconds, own.inertia_f64, own.n_iter, own.inertia
        );
        println!(
            "  → {:.2}× faster; inertia rel. diff {:+.2e}",
            own.seconds / ours,
            (report.inertia - own.inertia_f64) / own.inertia_f64
        );
    }
    let what = if sklearn.is_some() {
        "scikit-learn's k-means++ centres"
    } else {
        "our k-means++ centres"
    };
    println!("same start ({what}), Lloyd only:");
    println!(
        "  mixatlas: {ours_shared:8.3} s (median of {}), inertia {:.9e}, {:3} iterations",
        refine_seconds.len(),
        shared.inertia,
        shared.iterations
    );
    if let Some((sk, _)) = &sklearn {
        let st = &sk.shared_start;
        println!(
            "  sklearn:  {:8.3} s (median of 3), inertia {:.9e}, {:3} iterations (inertia_ \
             {:.9e}, f32-accumulated)",
            st.seconds, st.inertia_f64, st.n_iter, st.inertia
        );
        println!(
            "  → {:.2}× faster; inertia rel. diff {:+.2e} (scikit-learn {})",
            st.seconds / ours_shared,
            (shared.inertia - st.inertia_f64) / st.inertia_f64,
            sk.version
        );
    } else if benchmarking {
        println!("  sklearn: skipped (see above)");
    }
}
