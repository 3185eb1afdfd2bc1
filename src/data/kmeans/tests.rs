//! Unit tests of k-means: recovery, determinism, errors, safetensors round trips.

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::config::MAX_TRIALS;
use super::distance::{block_rows, sq_norm, CHUNK_ROWS, MAX_BLOCK_CHUNKS, TARGET_BLOCKS};
use super::lloyd::Lloyd;
use super::points::{Prepared, Workspace};
use super::seed::kmeans_plus_plus;
use super::*;
use crate::data::cluster_metrics::adjusted_rand_index;
use crate::rng::SplitMix64;

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
            let lloyd = Lloyd {
                data: &data,
                cfg: &c,
                tol,
                progress: &|_| {},
            };
            lloyd.run(init, r, &mut ws).inertia
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
    let cfg3 = cfg(3);
    let lloyd = Lloyd {
        data: &data,
        cfg: &cfg3,
        tol: 0.0,
        progress: &|_| {},
    };
    let run = lloyd.run(init, 0, &mut ws);
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
