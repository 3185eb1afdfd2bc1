//! Space-filling designs: the first mixtures of a search, before a surrogate can be fitted.
//!
//! A greedy maximin design: draw many random points of the space (`SearchSpace::sample`, a
//! flat Dirichlet per block projected onto the bounds), then repeatedly take the candidate
//! farthest (Euclidean, in the space's coordinates) from every point already evaluated or
//! chosen. With nothing evaluated yet, the first point is the centre of the space (the
//! projection of the block-uniform point) or, when asked, a given start such as the natural
//! proportions ([`DesignStart`]), so a design starts from a sensible mixture and spreads out
//! from it.

use super::space::SearchSpace;
use crate::rng::SplitMix64;

/// Squared Euclidean distance.
fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The centre of the space: each block's mass spread evenly, projected onto the bounds.
pub fn centre(space: &SearchSpace) -> Vec<f64> {
    let mut x = vec![0.0; space.dim()];
    for b in &space.blocks {
        let k = b.coords.len().max(1) as f64;
        for &c in &b.coords {
            x[c] = b.mass / k;
        }
    }
    space.project(&mut x);
    x
}

/// Where a design starts when nothing has been evaluated yet.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DesignStart {
    /// The centre of the space (each block's mass spread evenly: the uniform mixture).
    #[default]
    Centre,
    /// The space's prior, the corpus's natural proportions (per-axis marginals in a
    /// factorized space), projected onto the bounds: the incumbent a user would otherwise
    /// train on, so the search knows its value from the first round.
    Natural,
    /// The held-out benchmarks' own mixture (their documents' share of each cell, recorded
    /// by `prepare`; [`SearchSpace::benchmarks`]) projected onto the bounds: the
    /// target-matched mixture importance resampling would train on. The centre when the
    /// corpus does not record it.
    Benchmarks,
}

impl DesignStart {
    /// The first design point in `space`'s coordinates.
    pub fn point(self, space: &SearchSpace) -> Vec<f64> {
        match self {
            DesignStart::Centre => centre(space),
            DesignStart::Natural => match space.from_mixture(&space.prior) {
                Ok(mut x) => {
                    space.project(&mut x);
                    x
                }
                // Fixed values that the natural proportions contradict: fall back to the centre.
                Err(_) => centre(space),
            },
            DesignStart::Benchmarks => {
                match space.benchmarks.as_ref().map(|w| space.from_mixture(w)) {
                    Some(Ok(mut x)) => {
                        space.project(&mut x);
                        x
                    }
                    _ => centre(space),
                }
            }
        }
    }
}

/// `q` points of `space` chosen greedily to maximise the smallest distance to `existing` and
/// to each other, from `candidates` random draws of `rng`; with nothing existing, the first
/// is `start`'s point. Deterministic for `rng`.
pub fn maximin(
    space: &SearchSpace,
    existing: &[Vec<f64>],
    q: usize,
    candidates: usize,
    rng: &mut SplitMix64,
    start: DesignStart,
) -> Vec<Vec<f64>> {
    if q == 0 {
        return Vec::new();
    }
    let mut pool = space.sample(rng, candidates.max(q));
    // Smallest squared distance of each candidate to the points chosen or evaluated so far.
    let mut nearest: Vec<f64> = pool
        .iter()
        .map(|c| {
            existing
                .iter()
                .map(|e| dist2(c, e))
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let mut chosen = Vec::with_capacity(q);
    if existing.is_empty() {
        let mid = start.point(space);
        let i = (0..pool.len())
            .min_by(|&a, &b| dist2(&pool[a], &mid).total_cmp(&dist2(&pool[b], &mid)))
            .expect("non-empty pool");
        // Use the exact start rather than the nearest draw.
        pool[i] = mid;
        take(&mut pool, &mut nearest, i, &mut chosen);
    }
    while chosen.len() < q && !pool.is_empty() {
        let i = (0..pool.len())
            .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]).then(b.cmp(&a)))
            .expect("non-empty pool");
        take(&mut pool, &mut nearest, i, &mut chosen);
    }
    chosen
}

/// Moves candidate `i` to `chosen` and updates the nearest distances of the rest.
fn take(pool: &mut Vec<Vec<f64>>, nearest: &mut Vec<f64>, i: usize, chosen: &mut Vec<Vec<f64>>) {
    let p = pool.swap_remove(i);
    nearest.swap_remove(i);
    for (c, n) in pool.iter().zip(nearest.iter_mut()) {
        *n = n.min(dist2(c, &p));
    }
    chosen.push(p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquisition::SpaceConstraints;

    fn simplex(d: usize) -> SearchSpace {
        SearchSpace::simplex(d, &SpaceConstraints::default()).unwrap()
    }

    #[test]
    fn design_is_valid_spread_and_deterministic() {
        let s = simplex(6);
        let a = maximin(
            &s,
            &[],
            8,
            1000,
            &mut SplitMix64::new(5),
            DesignStart::Centre,
        );
        let b = maximin(
            &s,
            &[],
            8,
            1000,
            &mut SplitMix64::new(5),
            DesignStart::Centre,
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
        for x in &a {
            assert!(s.contains(x, 1e-9));
        }
        assert!(a[0].iter().all(|v| (v - 1.0 / 6.0).abs() < 1e-12));
        // Maximin beats plain random draws on the smallest pairwise distance.
        let min_pair = |p: &[Vec<f64>]| {
            let mut m = f64::INFINITY;
            for i in 0..p.len() {
                for j in 0..i {
                    m = m.min(dist2(&p[i], &p[j]));
                }
            }
            m
        };
        let random = s.sample(&mut SplitMix64::new(5), 8);
        assert!(min_pair(&a) > min_pair(&random));
        // Existing points are avoided.
        let more = maximin(
            &s,
            &a,
            4,
            1000,
            &mut SplitMix64::new(6),
            DesignStart::Centre,
        );
        for x in &more {
            assert!(a.iter().all(|e| dist2(x, e) > 1e-6));
        }
    }

    #[test]
    fn natural_start_is_the_priors_marginals_projected_onto_the_bounds() {
        use crate::acquisition::space::SpaceKind;
        // 2 concepts × 2 tasks; prior = cell shares 0.5, 0.2, 0.2, 0.1 → concept marginals
        // (0.7, 0.3), task marginals (0.7, 0.3).
        let concepts = vec!["a".to_string(), "b".into()];
        let tasks = vec!["x".to_string(), "y".into()];
        let cells = vec!["a/x".into(), "a/y".into(), "b/x".into(), "b/y".into()];
        let axes = vec![(0, 0), (0, 1), (1, 0), (1, 1)];
        let prior = vec![0.5, 0.2, 0.2, 0.1];
        let space = |c: &SpaceConstraints| {
            SearchSpace::new(
                SpaceKind::Factorized,
                crate::acquisition::space::SpaceCells {
                    cells: cells.clone(),
                    cell_axes: axes.clone(),
                    concepts: concepts.clone(),
                    tasks: tasks.clone(),
                    prior: prior.clone(),
                },
                c,
            )
            .unwrap()
        };
        let free = space(&SpaceConstraints::default());
        let first = maximin(
            &free,
            &[],
            3,
            200,
            &mut SplitMix64::new(1),
            DesignStart::Natural,
        );
        for (got, want) in first[0].iter().zip([0.7, 0.3, 0.7, 0.3]) {
            assert!((got - want).abs() < 1e-12, "{:?}", first[0]);
        }
        // The centre start is the uniform mixture.
        let c = maximin(
            &free,
            &[],
            1,
            200,
            &mut SplitMix64::new(1),
            DesignStart::Centre,
        );
        assert!(c[0].iter().all(|v| (v - 0.5).abs() < 1e-12));
        // A floor of 0.4 on task y moves the natural start onto the bound: (0.6, 0.4).
        let mut bounds = SpaceConstraints::default();
        bounds.lower.insert("y".into(), 0.4);
        let floored = space(&bounds);
        let p = DesignStart::Natural.point(&floored);
        assert!(floored.contains(&p, 1e-9));
        for (got, want) in p.iter().zip([0.7, 0.3, 0.6, 0.4]) {
            assert!((got - want).abs() < 1e-9, "{p:?}");
        }
    }

    /// `Benchmarks` starts at the space's benchmark mixture (its marginals in a factorized
    /// space, projected onto the bounds) and at the centre when the corpus has none.
    #[test]
    fn benchmarks_start_is_the_projected_benchmark_mixture() {
        use super::super::space::{SpaceCells, SpaceConstraints, SpaceKind};
        let cells = SpaceCells {
            cells: vec!["c0/a".into(), "c0/b".into(), "c1/a".into(), "c1/b".into()],
            cell_axes: vec![(0, 0), (0, 1), (1, 0), (1, 1)],
            concepts: vec!["c0".into(), "c1".into()],
            tasks: vec!["a".into(), "b".into()],
            prior: vec![0.25; 4],
        };
        let mut space =
            SearchSpace::new(SpaceKind::Factorized, cells, &SpaceConstraints::default()).unwrap();
        assert_eq!(DesignStart::Benchmarks.point(&space), centre(&space));
        space.benchmarks = Some(vec![0.6, 0.2, 0.15, 0.05]);
        let p = DesignStart::Benchmarks.point(&space);
        // Concept marginals 0.8 / 0.2, task marginals 0.75 / 0.25 (coordinates in the
        // order concepts then tasks).
        let want = [0.8, 0.2, 0.75, 0.25];
        assert_eq!(p.len(), space.dim());
        let names = &space.coord_names;
        for (name, x) in names.iter().zip(&p) {
            let k = ["c0", "c1", "a", "b"]
                .iter()
                .position(|n| n == name)
                .unwrap();
            assert!((x - want[k]).abs() < 1e-9, "{name}: {x} vs {}", want[k]);
        }
    }
}
