//! The GP surrogate and GP-UCB (issue 3): exactness against an independent reference,
//! analytic gradients, rank-1 updates, fitting, and the proposer's guarantees.
//!
//! `tests/gp_reference.py` is a textbook exact GP in pure-Python float64 (no numpy); the
//! tests need `python3` on `PATH` (or `MIXATLAS_PYTHON`) and fail, not skip, without it.

use std::io::Write;
use std::process::{Command, Stdio};

use faer::{Mat, Side};
use mixatlas::acquisition::ucb::{Beta, GpUcb, GpUcbConfig};
use mixatlas::acquisition::{Observations, Proposer, SearchSpace, SpaceConstraints, SpaceKind};
use mixatlas::rng::SplitMix64;
use mixatlas::surrogate::{
    Gp, GpConfig, GpError, GpHyperparameters, Kernel, LinearCombination, Posterior,
};
use serde_json::{json, Value};

/// Runs the Python reference on `input`.
fn reference(input: &Value) -> Value {
    let exe = std::env::var("MIXATLAS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gp_reference.py");
    let mut child = Command::new(&exe)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {exe:?} ({e}). The GP reference tests need Python 3 (standard \
                 library only, no numpy). Install python3 or point MIXATLAS_PYTHON at one."
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gp_reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference prints JSON")
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= rel * b.abs() + abs
}

/// `n` points in the unit cube, one of them a duplicate, and a smooth noisy objective.
fn data(n: usize, d: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut rng = SplitMix64::new(seed);
    let mut x: Vec<Vec<f64>> = (0..n)
        .map(|_| (0..d).map(|_| rng.next_f64()).collect())
        .collect();
    if n > 3 {
        x[n - 1] = x[1].clone();
    }
    let y = x
        .iter()
        .map(|p| (3.0 * p[0]).sin() + p.iter().map(|v| v * v).sum::<f64>() + 0.05 * rng.normal())
        .collect();
    (x, y)
}

/// Checks a GP's LML, posterior mean and variance against the Python reference.
fn check_against_reference(gp: &Gp, x: &[Vec<f64>], y: &[f64], queries: &[Vec<f64>], what: &str) {
    let h = gp.hyperparameters();
    let r = reference(&json!({
        "kernel": gp.kernel().name(),
        "x": x, "y": y,
        "lengthscales": h.lengthscales, "outputscale": h.outputscale,
        "noise": h.noise, "mean": h.mean, "linear": h.linear,
        "queries": queries,
    }));
    let lml = r["lml"].as_f64().unwrap();
    assert!(
        close(gp.lml(), lml, 1e-8, 0.0),
        "{what}: lml {} vs reference {lml}",
        gp.lml()
    );
    let flat: Vec<f64> = queries.iter().flatten().copied().collect();
    let (mean, var) = gp.predict(&flat);
    for (j, (m, v)) in mean.iter().zip(&var).enumerate() {
        let rm = r["mean"][j].as_f64().unwrap();
        let rv = r["var"][j].as_f64().unwrap();
        assert!(close(*m, rm, 1e-8, 1e-12), "{what}: mean[{j}] {m} vs {rm}");
        assert!(
            close(*v, rv, 1e-8, 1e-13 * h.outputscale),
            "{what}: var[{j}] {v} vs {rv}"
        );
        // The one-point path agrees with the batch path.
        let p = gp.predict_point(&queries[j]);
        assert!(close(p.mean, rm, 1e-8, 1e-12), "{what}: point mean[{j}]");
        assert!(
            close(p.std * p.std, rv, 1e-8, 1e-13 * h.outputscale),
            "{what}: point var[{j}]"
        );
    }
}

#[test]
fn lml_mean_and_variance_match_an_independent_reference() {
    let mut rng = SplitMix64::new(77);
    for kernel in [Kernel::Matern52, Kernel::Rbf] {
        for (case, &(n, d)) in [(2, 1), (6, 2), (15, 4), (30, 8), (24, 15)]
            .iter()
            .enumerate()
        {
            let (x, y) = data(n, d, 100 + case as u64);
            let h = GpHyperparameters {
                lengthscales: (0..d).map(|_| 0.2 + 1.3 * rng.next_f64()).collect(),
                outputscale: 0.5 + 1.5 * rng.next_f64(),
                noise: 10f64.powf(-3.0 + 2.0 * rng.next_f64()),
                mean: rng.normal(),
                // Every other case with the linear term.
                linear: if case % 2 == 1 {
                    0.5 + rng.next_f64()
                } else {
                    0.0
                },
            };
            let gp = Gp::with_hyperparameters(&x, &y, kernel, &h).unwrap();
            let mut queries: Vec<Vec<f64>> = (0..6)
                .map(|_| (0..d).map(|_| rng.next_f64()).collect())
                .collect();
            queries.push(x[0].clone()); // at a training point
            queries.push(vec![3.0; d]); // far away: prior variance
            check_against_reference(&gp, &x, &y, &queries, &format!("{kernel:?} n {n} d {d}"));
        }
    }
}

#[test]
fn fitted_model_matches_the_reference_at_its_hyperparameters() {
    for kernel in [Kernel::Matern52, Kernel::Rbf] {
        let (x, y) = data(25, 3, 5);
        let cfg = GpConfig {
            kernel,
            ..Default::default()
        };
        let gp = Gp::fit(&x, &y, &cfg).unwrap();
        assert_eq!(gp.jitter(), 0.0);
        let queries: Vec<Vec<f64>> = data(5, 3, 6).0;
        check_against_reference(&gp, &x, &y, &queries, &format!("fitted {kernel:?}"));
        let rep = gp.report();
        assert_eq!((rep.n, rep.d, rep.kernel), (25, 3, kernel));
        assert_eq!(rep.log_marginal_likelihood, gp.lml());
        // The report serialises with the names `suggest --json` shows.
        let v = serde_json::to_value(&rep).unwrap();
        for k in ["kernel", "lengthscales", "outputscale", "noise", "mean"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(v.get("log_marginal_likelihood").is_some());
    }
}

#[test]
fn lml_gradient_matches_central_differences() {
    let mut rng = SplitMix64::new(3);
    for kernel in [Kernel::Matern52, Kernel::Rbf] {
        for &(n, d) in &[(8, 2), (20, 5)] {
            let (x, y) = data(n, d, 40 + n as u64);
            let h = GpHyperparameters {
                lengthscales: vec![0.5; d],
                outputscale: 1.0,
                noise: 0.01,
                mean: 0.0,
                // With and without the linear term.
                linear: if d == 5 { 0.3 } else { 0.0 },
            };
            let gp = Gp::with_hyperparameters(&x, &y, kernel, &h).unwrap();
            for _ in 0..3 {
                let p: Vec<f64> = gp
                    .log_params()
                    .iter()
                    .map(|v| v + 0.5 * rng.normal())
                    .collect();
                let (f, g) = gp.lml_and_grad(&p).unwrap();
                assert!(f.is_finite());
                for k in 0..p.len() {
                    let step = 1e-5;
                    let mut a = p.clone();
                    a[k] += step;
                    let mut b = p.clone();
                    b[k] -= step;
                    let fd = (gp.lml_and_grad(&a).unwrap().0 - gp.lml_and_grad(&b).unwrap().0)
                        / (2.0 * step);
                    assert!(
                        close(g[k], fd, 1e-6, 1e-6),
                        "{kernel:?} n {n} d {d} param {k}: analytic {} vs fd {fd}",
                        g[k]
                    );
                }
            }
        }
    }
}

#[test]
fn posterior_gradients_match_central_differences() {
    let mut rng = SplitMix64::new(8);
    for kernel in [Kernel::Matern52, Kernel::Rbf] {
        let (x, y) = data(20, 4, 9);
        let cfg = GpConfig {
            kernel,
            restarts: 1,
            ..Default::default()
        };
        let gp = Gp::fit(&x, &y, &cfg).unwrap();
        for _ in 0..5 {
            let q: Vec<f64> = (0..4).map(|_| rng.next_f64()).collect();
            let p = gp.predict_point(&q);
            for k in 0..4 {
                let step = 1e-6;
                let mut a = q.clone();
                a[k] += step;
                let mut b = q.clone();
                b[k] -= step;
                let (pa, pb) = (gp.predict_point(&a), gp.predict_point(&b));
                let dm = (pa.mean - pb.mean) / (2.0 * step);
                let ds = (pa.std - pb.std) / (2.0 * step);
                assert!(close(p.grad_mean[k], dm, 1e-5, 1e-6), "{kernel:?} dμ/dx{k}");
                assert!(close(p.grad_std[k], ds, 1e-5, 1e-6), "{kernel:?} dσ/dx{k}");
            }
        }
    }
}

#[test]
fn linear_combination_equals_the_hand_computed_combination_of_single_gps() {
    let (x, ya) = data(18, 3, 21);
    let yb: Vec<f64> = x.iter().map(|p| 2.0 * p[1] - p[2] * p[0]).collect();
    let cfg = GpConfig {
        restarts: 1,
        ..Default::default()
    };
    let (ga, gb) = (
        Gp::fit(&x, &ya, &cfg).unwrap(),
        Gp::fit(&x, &yb, &cfg).unwrap(),
    );
    let (wa, wb) = (0.25, 0.75);
    let mut comb = LinearCombination::new(vec![(wa, ga.clone()), (wb, gb.clone())]);
    assert_eq!(comb.dim(), 3);
    let mut rng = SplitMix64::new(22);
    let queries: Vec<Vec<f64>> = (0..6)
        .map(|_| (0..3).map(|_| rng.next_f64()).collect())
        .chain([x[2].clone()])
        .collect();
    let check = |comb: &LinearCombination<Gp>, ga: &Gp, gb: &Gp, what: &str| {
        let flat: Vec<f64> = queries.concat();
        let (m, v) = comb.predict(&flat);
        let (ma, va) = ga.predict(&flat);
        let (mb, vb) = gb.predict(&flat);
        for i in 0..queries.len() {
            let (hm, hv) = (wa * ma[i] + wb * mb[i], wa * wa * va[i] + wb * wb * vb[i]);
            assert!(close(m[i], hm, 1e-12, 1e-14), "{what}: mean {i}");
            assert!(close(v[i], hv, 1e-12, 1e-16), "{what}: variance {i}");
            let p = comb.predict_point(&queries[i]);
            let (pa, pb) = (ga.predict_point(&queries[i]), gb.predict_point(&queries[i]));
            let hs = (wa * wa * pa.std * pa.std + wb * wb * pb.std * pb.std).sqrt();
            assert!(close(p.mean, hm, 1e-10, 1e-12), "{what}: point mean {i}");
            assert!(close(p.std, hs, 1e-10, 1e-12), "{what}: point std {i}");
            for k in 0..3 {
                let gm = wa * pa.grad_mean[k] + wb * pb.grad_mean[k];
                let gs =
                    (wa * wa * pa.std * pa.grad_std[k] + wb * wb * pb.std * pb.grad_std[k]) / hs;
                assert!(close(p.grad_mean[k], gm, 1e-12, 1e-14), "{what}: ∇μ {i}");
                assert!(close(p.grad_std[k], gs, 1e-10, 1e-12), "{what}: ∇σ {i}");
                // And the gradients are those of the combined mean and std.
                let step = 1e-6;
                let (mut a, mut b) = (queries[i].clone(), queries[i].clone());
                a[k] += step;
                b[k] -= step;
                let (qa, qb) = (comb.predict_point(&a), comb.predict_point(&b));
                let ds = (qa.std - qb.std) / (2.0 * step);
                assert!(
                    close(p.grad_std[k], ds, 1e-5, 1e-6),
                    "{what}: dσ/dx{k} at {i}"
                );
            }
        }
    };
    check(&comb, &ga, &gb, "fitted");
    // Fantasizing conditions each component on its own mean: the combination of the
    // fantasized GPs, and the combined mean is unchanged there.
    let at = vec![0.3, 0.6, 0.2];
    let before = comb.predict_point(&at);
    comb.fantasize(&at);
    let (mut fa, mut fb) = (ga.clone(), gb.clone());
    fa.fantasize(&at);
    fb.fantasize(&at);
    check(&comb, &fa, &fb, "fantasized");
    let after = comb.predict_point(&at);
    assert!(close(after.mean, before.mean, 1e-8, 1e-10));
    assert!(after.std < 0.7 * before.std);
    assert_eq!(comb.terms().len(), 2);
}

#[test]
fn rank_one_update_equals_a_full_refactorisation() {
    for (kernel, linear) in [
        (Kernel::Matern52, false),
        (Kernel::Rbf, false),
        (Kernel::Matern52, true),
    ] {
        let (x, y) = data(30, 4, 21);
        let cfg = GpConfig {
            kernel,
            restarts: 1,
            linear,
            ..Default::default()
        };
        let mut gp = Gp::fit(&x[..18], &y[..18], &cfg).unwrap();
        for i in 18..30 {
            gp.add_observation(&x[i], y[i]).unwrap();
        }
        assert_eq!(gp.n(), 30);
        let mut refactored = gp.clone();
        refactored.refactor().unwrap();
        let (l, r) = (gp.cholesky_factor(), refactored.cholesky_factor());
        let mut worst: f64 = 0.0;
        for j in 0..30 {
            for i in 0..30 {
                worst = worst.max((l[(i, j)] - r[(i, j)]).abs());
            }
        }
        assert!(worst < 1e-10, "{kernel:?}: factors differ by {worst}");
        if linear {
            // The linear term is centred on the trials of the fit: a model built from scratch
            // on more trials has another centre, hence another kernel.
            continue;
        }
        // And the same model built from scratch on all 30 points (other standardisation).
        let full = Gp::with_hyperparameters(&x, &y, kernel, &gp.hyperparameters()).unwrap();
        assert!(close(gp.lml(), full.lml(), 1e-10, 0.0));
        let q: Vec<f64> = data(50, 4, 22).0.concat();
        let (m1, v1) = gp.predict(&q);
        let (m2, v2) = full.predict(&q);
        for j in 0..50 {
            assert!(close(m1[j], m2[j], 1e-10, 1e-12));
            assert!(close(v1[j], v2[j], 1e-9, 1e-13));
        }
    }
}

/// Draws `f ~ GP(0, k)` at `x` with a Matérn-5/2 kernel of lengthscales `ls`.
fn draw_from_gp(x: &[Vec<f64>], ls: &[f64], seed: u64) -> Vec<f64> {
    let n = x.len();
    let k = Mat::from_fn(n, n, |i, j| {
        let r2: f64 = x[i]
            .iter()
            .zip(&x[j])
            .zip(ls)
            .map(|((a, b), l)| ((a - b) / l).powi(2))
            .sum();
        Kernel::Matern52.phi(r2) + if i == j { 1e-8 } else { 0.0 }
    });
    let llt = k.llt(Side::Lower).unwrap();
    let l = llt.L();
    let mut rng = SplitMix64::new(seed);
    let e: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    (0..n)
        .map(|i| (0..=i).map(|j| l[(i, j)] * e[j]).sum::<f64>())
        .collect()
}

#[test]
fn fit_recovers_lengthscales_of_data_drawn_from_a_gp() {
    let truth = [0.15, 0.8];
    let mut rng = SplitMix64::new(31);
    let x: Vec<Vec<f64>> = (0..150)
        .map(|_| vec![rng.next_f64(), rng.next_f64()])
        .collect();
    let f = draw_from_gp(&x, &truth, 32);
    let y: Vec<f64> = f
        .iter()
        .map(|v| 3.0 + 2.0 * v + 0.02 * rng.normal())
        .collect();
    let gp = Gp::fit(&x, &y, &GpConfig::default()).unwrap();
    let rep = gp.report();
    for (got, want) in rep.lengthscales.iter().zip(truth) {
        assert!(
            *got > want / 2.0 && *got < want * 2.0,
            "lengthscales {:?} vs truth {truth:?}",
            rep.lengthscales
        );
    }
    assert!(
        rep.outputscale > 4.0 / 3.0 && rep.outputscale < 4.0 * 3.0,
        "{rep:?}"
    );
    assert!(rep.noise < 0.01, "{rep:?}");
}

#[test]
fn bad_input_is_named_or_has_a_documented_fallback() {
    let (x, mut y) = data(10, 3, 1);
    let cfg = GpConfig::default();
    // Fewer than two points.
    assert_eq!(
        Gp::fit(&x[..1], &y[..1], &cfg).unwrap_err(),
        GpError::TooFewPoints { n: 1 }
    );
    // A NaN or infinite objective names the trial.
    y[4] = f64::NAN;
    let e = Gp::fit(&x, &y, &cfg).unwrap_err();
    assert!(e.to_string().contains("trial 4"), "{e}");
    y[4] = f64::INFINITY;
    assert!(Gp::fit(&x, &y, &cfg)
        .unwrap_err()
        .to_string()
        .contains("trial 4"));
    // A constant objective: standardised with std 1; predicts the constant.
    let yc = vec![0.7; 10];
    let gp = Gp::fit(&x, &yc, &cfg).unwrap();
    let (m, v) = gp.predict(&[0.3, 0.3, 0.3]);
    assert!((m[0] - 0.7).abs() < 1e-6 && v[0].is_finite(), "{m:?} {v:?}");
    // Many duplicate points are fine (the noise handles them).
    let xd = vec![
        vec![0.2, 0.5],
        vec![0.2, 0.5],
        vec![0.2, 0.5],
        vec![0.9, 0.1],
    ];
    let gp = Gp::fit(&xd, &[1.0, 1.1, 0.9, 2.0], &cfg).unwrap();
    assert!(gp.report().noise > 0.0 && gp.lml().is_finite());
    // Noise-free duplicates need jitter, and still factorise.
    let fixed = GpConfig {
        fixed_noise: Some(0.0),
        ..cfg.clone()
    };
    let gp = Gp::fit(&xd, &[1.0, 1.0, 1.0, 2.0], &fixed).unwrap();
    assert!(gp.jitter() > 0.0);
    // Non-finite coordinates name the trial.
    let mut xb = x.clone();
    xb[6][1] = f64::NAN;
    let e = Gp::fit(&xb, &data(10, 3, 1).1, &cfg).unwrap_err();
    assert!(e.to_string().contains("trial 6"), "{e}");
    // add_observation rejects a non-finite objective, naming its index.
    let mut gp = Gp::fit(&x, &data(10, 3, 1).1, &cfg).unwrap();
    let e = gp.add_observation(&x[0], f64::NAN).unwrap_err();
    assert!(e.to_string().contains("trial 10"), "{e}");
}

#[test]
fn configs_parse_with_documented_names() {
    let c: GpUcbConfig = serde_json::from_value(json!({
        "gp": {"kernel": "rbf", "restarts": 2, "fixed_noise": 0.001},
        "beta": {"srinivas": {"delta": 0.05}},
        "candidates": 512,
    }))
    .unwrap();
    assert_eq!(c.gp.kernel, Kernel::Rbf);
    assert_eq!(
        c.beta,
        Beta::Srinivas {
            delta: 0.05,
            scale: 0.1
        }
    );
    let c: GpUcbConfig = serde_json::from_value(json!({"beta": {"fixed": 4.0}})).unwrap();
    assert_eq!(c.beta.value(10, 5), 4.0);
    assert!(serde_json::from_value::<GpConfig>(json!({"kernal": "rbf"})).is_err());
    assert!(
        serde_json::from_value::<Beta>(json!({"srinivas": {"delta": 0.1, "scal": 1.0}})).is_err()
    );
    // β_t = 2 log(d t² π² / (6δ)) × scale, t = n + 1.
    let b = Beta::Srinivas {
        delta: 0.1,
        scale: 1.0,
    };
    let want = 2.0 * (10.0 * 36.0 * std::f64::consts::PI.powi(2) / 0.6).ln();
    assert!((b.value(10, 5) - want).abs() < 1e-12);
}

// ---------------------------------------------------------------------------------------
// GP-UCB

fn simplex(d: usize, constraints: &SpaceConstraints) -> SearchSpace {
    SearchSpace::simplex(d, constraints).unwrap()
}

fn factorized() -> SearchSpace {
    let concepts: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    let tasks: Vec<String> = ["ocr", "vqa", "cap"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut cells = Vec::new();
    let mut axes = Vec::new();
    for (ci, c) in concepts.iter().enumerate() {
        for (ti, t) in tasks.iter().enumerate() {
            cells.push(format!("{c}/{t}"));
            axes.push((ci, ti));
        }
    }
    let mut cons = SpaceConstraints::default();
    cons.upper.insert("ocr".into(), 0.5);
    SearchSpace::new(
        SpaceKind::Factorized,
        mixatlas::acquisition::space::SpaceCells {
            cells,
            cell_axes: axes,
            concepts,
            tasks,
            prior: vec![1.0 / 12.0; 12],
        },
        &cons,
    )
    .unwrap()
}

/// A concave objective with its maximum (0) at `target`.
fn concave(x: &[f64], target: &[f64]) -> f64 {
    -10.0
        * x.iter()
            .zip(target)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
}

fn observe(space: &SearchSpace, n: usize, seed: u64, target: &[f64]) -> Observations {
    let x = space.sample(&mut SplitMix64::new(seed), n);
    let y = x.iter().map(|p| concave(p, target)).collect();
    Observations { x, y }
}

fn min_pair_distance(xs: &[Vec<f64>]) -> f64 {
    let mut m = f64::INFINITY;
    for i in 0..xs.len() {
        for j in 0..i {
            let d: f64 = xs[i].iter().zip(&xs[j]).map(|(a, b)| (a - b).powi(2)).sum();
            m = m.min(d.sqrt());
        }
    }
    m
}

#[test]
fn gp_ucb_proposals_are_valid_distinct_and_deterministic() {
    let mut cons = SpaceConstraints::default();
    cons.fixed.insert("c0/t".into(), 0.1);
    cons.lower.insert("c3/t".into(), 0.15);
    cons.upper.insert("c5/t".into(), 0.05);
    for space in [simplex(8, &cons), factorized()] {
        let d = space.dim();
        let target = space.sample(&mut SplitMix64::new(99), 1).remove(0);
        let obs = observe(&space, 12, 4, &target);
        let cfg = GpUcbConfig {
            seed: 11,
            ..Default::default()
        };
        let a = GpUcb::new(cfg.clone()).propose(&space, &obs, 6, 3).unwrap();
        let b = GpUcb::new(cfg.clone()).propose(&space, &obs, 6, 3).unwrap();
        assert_eq!(a, b, "same seed, same proposals");
        assert_eq!(a.len(), 6);
        for p in &a {
            assert!(space.contains(&p.x, 1e-9), "{:?}", p.x);
            assert_eq!(p.x.len(), d);
            let s: f64 = p.mixture.iter().sum();
            assert!((s - 1.0).abs() < 1e-9);
            assert!(p.mixture.iter().all(|&w| w >= 0.0));
            assert!(p.mean.is_some() && p.std.is_some() && p.acquisition.is_some());
            assert!(p.reason.starts_with("ucb"), "{}", p.reason);
        }
        if space.kind == SpaceKind::Joint {
            for p in &a {
                assert!((p.mixture[0] - 0.1).abs() < 1e-9);
                assert!(p.mixture[3] >= 0.15 - 1e-9 && p.mixture[5] <= 0.05 + 1e-9);
            }
        }
        let xs: Vec<Vec<f64>> = a.iter().map(|p| p.x.clone()).collect();
        assert!(
            min_pair_distance(&xs) >= cfg.min_distance,
            "duplicates in {xs:?}"
        );
        // Another round draws other candidates but stays valid.
        let c = GpUcb::new(cfg).propose(&space, &obs, 6, 4).unwrap();
        assert!(c.iter().all(|p| space.contains(&p.x, 1e-9)));
    }
}

#[test]
fn gp_ucb_starts_with_a_space_filling_design() {
    let space = simplex(10, &SpaceConstraints::default());
    let mut ucb = GpUcb::new(GpUcbConfig::default());
    assert_eq!(ucb.config().initial_design_size(10), 5);
    let p = ucb.propose(&space, &Observations::default(), 5, 0).unwrap();
    assert_eq!(p.len(), 5);
    let xs: Vec<Vec<f64>> = p.iter().map(|p| p.x.clone()).collect();
    assert!(min_pair_distance(&xs) > 0.1);
    for q in &p {
        assert_eq!(q.reason, "initial design");
        assert!(q.mean.is_none() && space.contains(&q.x, 1e-9));
    }
    assert!(ucb.gp().is_none());
}

#[test]
fn bucb_conditioning_shrinks_the_variance_and_spreads_the_batch() {
    let space = simplex(6, &SpaceConstraints::default());
    let target = vec![0.3, 0.25, 0.2, 0.1, 0.1, 0.05];
    let obs = observe(&space, 15, 7, &target);
    let mut ucb = GpUcb::new(GpUcbConfig::default());
    let gp = ucb.fit(&obs).unwrap().clone();
    let x = space.sample(&mut SplitMix64::new(1), 1).remove(0);
    let before = gp.predict_point(&x);
    let mut cond = gp.clone();
    cond.fantasize(&x);
    let after = cond.predict_point(&x);
    assert!((after.mean - before.mean).abs() < 1e-9 * (1.0 + before.mean.abs()));
    assert!(
        after.std < 0.7 * before.std,
        "{} → {}",
        before.std,
        after.std
    );
    // Variance never grows anywhere.
    let q: Vec<f64> = space.sample(&mut SplitMix64::new(2), 200).concat();
    let (_, v0) = gp.predict(&q);
    let (_, v1) = cond.predict(&q);
    assert!(v0.iter().zip(&v1).all(|(a, b)| *b <= a + 1e-12));
    // In a batch, each point's conditioned UCB is at most the previous one's.
    let batch = ucb.propose(&space, &obs, 4, 0).unwrap();
    for w in batch.windows(2) {
        assert!(w[1].acquisition.unwrap() <= w[0].acquisition.unwrap() + 1e-9);
    }
}

#[test]
fn gp_ucb_rejects_bad_trials_naming_them() {
    let space = simplex(5, &SpaceConstraints::default());
    let target = vec![0.2; 5];
    let mut obs = observe(&space, 8, 3, &target);
    obs.y[2] = f64::NAN;
    let mut ucb = GpUcb::new(GpUcbConfig::default());
    let e = ucb.propose(&space, &obs, 2, 0).unwrap_err().to_string();
    assert!(e.contains("trial 2"), "{e}");
    let mut obs = observe(&space, 8, 3, &target);
    obs.x[5][0] += 0.3; // off the simplex
    let e = ucb.propose(&space, &obs, 2, 0).unwrap_err().to_string();
    assert!(e.contains("trial 5"), "{e}");
    // A constant objective still proposes (the GP falls back to std 1).
    let mut obs = observe(&space, 8, 3, &target);
    obs.y.iter_mut().for_each(|v| *v = 1.0);
    let p = ucb.propose(&space, &obs, 3, 0).unwrap();
    assert_eq!(p.len(), 3);
}

#[test]
fn gp_ucb_finds_the_optimum_of_a_concave_objective_on_a_10d_simplex() {
    let space = simplex(10, &SpaceConstraints::default());
    let raw: Vec<f64> = (1..=10).map(|i| i as f64).collect();
    let s: f64 = raw.iter().sum();
    let target: Vec<f64> = raw.iter().map(|v| v / s).collect();
    let mut ucb = GpUcb::new(GpUcbConfig {
        seed: 1,
        ..Default::default()
    });
    let mut obs = Observations::default();
    for round in 0..10 {
        for p in ucb.propose(&space, &obs, 4, round).unwrap() {
            let y = concave(&p.x, &target);
            obs.push(p.x, y);
        }
    }
    assert_eq!(obs.len(), 40);
    let best = obs.y[obs.best().unwrap()];
    // Random search with the same budget, for scale.
    let random = space.sample(&mut SplitMix64::new(5), 40);
    let random_best = random
        .iter()
        .map(|x| concave(x, &target))
        .fold(f64::NEG_INFINITY, f64::max);
    let centre = concave(&[0.1; 10], &target);
    eprintln!("GP-UCB best {best:.5}, random best {random_best:.5}, uniform {centre:.5}");
    assert!(
        best > -0.02 && best > 0.1 * random_best,
        "{best} vs random {random_best}"
    );
    let rec = ucb.recommend(&space, &obs).unwrap();
    assert!(rec.mean.is_some() && rec.std.is_some());
    assert!(concave(&rec.x, &target) > -0.05);
}

// ---------------------------------------------------------------------------------------
// Input warp

/// A GP with `warp: log:ε` is the plain GP fitted to `ln(x + ε)`: the same fit, predictions
/// and variances at raw query points, and gradients with respect to the raw coordinates
/// (checked against central differences), GP-BUCB fantasies included.
#[test]
fn log_warped_gp_is_the_gp_of_the_warped_inputs() {
    use mixatlas::surrogate::InputWarp;
    let eps = 1e-2;
    let (x, y) = data(24, 3, 21);
    let warped: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().map(|v| (v + eps).ln()).collect())
        .collect();
    let base = GpConfig {
        restarts: 1,
        ..Default::default()
    };
    let cfg = GpConfig {
        warp: InputWarp::Log { eps },
        ..base.clone()
    };
    let mut gw = Gp::fit(&x, &y, &cfg).unwrap();
    let mut gr = Gp::fit(&warped, &y, &base).unwrap();
    assert!(close(gw.lml(), gr.lml(), 1e-10, 1e-10));
    let mut rng = SplitMix64::new(5);
    let q: Vec<Vec<f64>> = (0..6)
        .map(|_| (0..3).map(|_| rng.next_f64()).collect())
        .collect();
    let qw: Vec<Vec<f64>> = q
        .iter()
        .map(|r| r.iter().map(|v| (v + eps).ln()).collect())
        .collect();
    let (mw, vw) = gw.predict(&q.concat());
    let (mr, vr) = gr.predict(&qw.concat());
    for i in 0..q.len() {
        assert!(close(mw[i], mr[i], 1e-9, 1e-12), "mean {i}");
        assert!(close(vw[i], vr[i], 1e-9, 1e-12), "variance {i}");
    }
    // Gradients with respect to the raw coordinates: the chain rule through ln(x + ε).
    for p in &q {
        let pp = gw.predict_point(p);
        for k in 0..3 {
            let step = 1e-6;
            let (mut a, mut b) = (p.clone(), p.clone());
            a[k] += step;
            b[k] -= step;
            let (pa, pb) = (gw.predict_point(&a), gw.predict_point(&b));
            let dm = (pa.mean - pb.mean) / (2.0 * step);
            let ds = (pa.std - pb.std) / (2.0 * step);
            assert!(
                close(pp.grad_mean[k], dm, 1e-5, 1e-6),
                "dμ/dx{k}: {} vs {dm}",
                pp.grad_mean[k]
            );
            assert!(
                close(pp.grad_std[k], ds, 1e-5, 1e-6),
                "dσ/dx{k}: {} vs {ds}",
                pp.grad_std[k]
            );
        }
    }
    // Fantasies at a raw point shrink the variance exactly as at the warped point.
    gw.fantasize(&q[0]);
    gr.fantasize(&qw[0]);
    let (_, vw) = gw.predict(&q[1]);
    let (_, vr) = gr.predict(&qw[1]);
    assert!(close(vw[0], vr[0], 1e-9, 1e-12));
    assert_eq!(gw.report().warp, InputWarp::Log { eps });
    // The warp is a config key; a bad ε is refused naming it.
    let c: GpConfig =
        serde_json::from_value(json!({"warp": {"kind": "log", "eps": 0.001}})).unwrap();
    assert_eq!(c.warp, InputWarp::Log { eps: 0.001 });
    let bad = GpConfig {
        warp: InputWarp::Log { eps: 0.0 },
        ..base
    };
    let e = Gp::fit(&x, &y, &bad).unwrap_err().to_string();
    assert!(e.contains("log:0") && e.contains("positive"), "{e}");
}

/// Asynchronous scheduling: GP-UCB given running trials chooses exactly what its own GP-BUCB
/// batch would choose after them (the pending points are fantasized like earlier batch
/// points), so `propose_pending(pending = [a], q = 1)` is the second point of the batch
/// `[a, b]`; and the initial design spreads away from pending points.
#[test]
fn gp_ucb_given_pending_points_continues_its_own_batch() {
    let space = simplex(8, &SpaceConstraints::default());
    let target = space.sample(&mut SplitMix64::new(5), 1).remove(0);
    let obs = observe(&space, 12, 4, &target);
    let cfg = GpUcbConfig {
        seed: 3,
        ..Default::default()
    };
    let batch = GpUcb::new(cfg.clone()).propose(&space, &obs, 3, 2).unwrap();
    let pending = vec![batch[0].x.clone()];
    let next = GpUcb::new(cfg.clone())
        .propose_pending(&space, &obs, &pending, 1, 2)
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].x, batch[1].x, "the batch's second point");
    let two = vec![batch[0].x.clone(), batch[1].x.clone()];
    let third = GpUcb::new(cfg.clone())
        .propose_pending(&space, &obs, &two, 1, 2)
        .unwrap();
    assert_eq!(third[0].x, batch[2].x, "the batch's third point");
    // No pending points: exactly `propose`.
    let same = GpUcb::new(cfg.clone())
        .propose_pending(&space, &obs, &[], 3, 2)
        .unwrap();
    assert_eq!(same, batch);
    // Before the GP: the design keeps away from what is running.
    let early = Observations::default();
    let first = GpUcb::new(cfg.clone())
        .propose(&space, &early, 1, 0)
        .unwrap();
    let after = GpUcb::new(cfg)
        .propose_pending(&space, &early, &[first[0].x.clone()], 2, 0)
        .unwrap();
    for p in &after {
        assert!(
            p.x.iter()
                .zip(&first[0].x)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                > 1e-4
        );
    }
    // A pending point of the wrong dimension is refused.
    assert!(GpUcb::new(GpUcbConfig::default())
        .propose_pending(&space, &obs, &[vec![0.5; 3]], 1, 2)
        .is_err());
}
