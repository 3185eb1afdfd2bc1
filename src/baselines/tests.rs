//! Unit tests of the simple baselines (uniform, natural, random search), the mapping of
//! mixtures into a space, and the check of trials every proposer shares.

use super::coords::block_prior;
use super::fixed::{Natural, Uniform};
use super::random::RandomSearch;
use crate::acquisition::{Observations, Proposer, SearchSpace, SpaceConstraints, SpaceKind};

fn space(kind: SpaceKind, c: &SpaceConstraints) -> SearchSpace {
    let concepts = vec!["c0".to_string(), "c1".into(), "c2".into()];
    let tasks = vec!["ocr".to_string(), "vqa".into()];
    let mut cells = Vec::new();
    let mut axes = Vec::new();
    for (ci, cn) in concepts.iter().enumerate() {
        for (ti, tn) in tasks.iter().enumerate() {
            cells.push(format!("{cn}/{tn}"));
            axes.push((ci, ti));
        }
    }
    let prior = vec![0.4, 0.2, 0.15, 0.1, 0.1, 0.05];
    SearchSpace::new(
        kind,
        crate::acquisition::space::SpaceCells {
            cells,
            cell_axes: axes,
            concepts,
            tasks,
            prior,
        },
        c,
    )
    .unwrap()
}

#[test]
fn fixed_baselines_are_their_mixtures() {
    let s = space(SpaceKind::Joint, &SpaceConstraints::default());
    let obs = Observations::default();
    let p = Uniform.propose(&s, &obs, 3, 0).unwrap();
    assert_eq!(p.len(), 3);
    for w in &p[0].mixture {
        assert!((w - 1.0 / 6.0).abs() < 1e-15);
    }
    let r = Natural.recommend(&s, &obs).unwrap();
    for (a, b) in r.mixture.iter().zip(&s.prior) {
        assert!((a - b).abs() < 1e-15);
    }
    // Factorized: the natural point is the prior's marginals.
    let f = space(SpaceKind::Factorized, &SpaceConstraints::default());
    let x = Natural::point(&f);
    let want = [0.6, 0.25, 0.15, 0.65, 0.35];
    for (a, b) in x.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{x:?}");
    }
}

#[test]
fn fixed_cells_and_bounds_are_respected() {
    let mut c = SpaceConstraints::default();
    c.fixed.insert("c0/ocr".into(), 0.1);
    c.upper.insert("c0/vqa".into(), 0.05);
    let s = space(SpaceKind::Joint, &c);
    for x in [Uniform::point(&s), Natural::point(&s)] {
        assert!(s.contains(&x, 1e-12), "{x:?}");
        assert!((s.to_mixture(&x)[0] - 0.1).abs() < 1e-12);
    }
    let p = block_prior(&s);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn random_search_is_seeded_per_round() {
    let s = space(SpaceKind::Factorized, &SpaceConstraints::default());
    let obs = Observations::default();
    let a = RandomSearch::new(7).propose(&s, &obs, 4, 2).unwrap();
    let b = RandomSearch::new(7).propose(&s, &obs, 4, 2).unwrap();
    let c = RandomSearch::new(7).propose(&s, &obs, 4, 3).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    for p in &a {
        assert!(s.contains(&p.x, 1e-12));
    }
}

#[test]
fn bad_observations_are_named() {
    let s = space(SpaceKind::Joint, &SpaceConstraints::default());
    let mut obs = Observations::default();
    obs.push(vec![1.0 / 6.0; 6], 0.5);
    obs.push(vec![1.0 / 6.0; 6], f64::NAN);
    let e = obs.validate(&s).unwrap_err().to_string();
    assert!(e.contains("trial 1") && e.contains("NaN"), "{e}");
    let mut obs = Observations::default();
    obs.push(vec![0.5; 3], 0.5);
    let e = obs.validate(&s).unwrap_err().to_string();
    assert!(e.contains("trial 0") && e.contains("3 coordinates"), "{e}");
}
