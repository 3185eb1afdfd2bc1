//! The mixture search space: the coordinates the surrogate works in and the map to mixtures.
//!
//! A mixture is a weight per (concept, task) cell, non-negative, summing to 1. The space is a
//! product of *blocks*, each a bounded simplex `{x : Σ x = mass, lower ≤ x ≤ upper}`:
//!
//! - `joint`: one block over the free cells (fixed cells take their mass out of it);
//!   coordinates are the free cells' weights.
//! - `factorized`: one block per axis (concept shares, task shares, each summing to 1); a
//!   cell's weight is the product of its concept's and its task's share, renormalised over
//!   the cells the corpus has. Bounds and fixed values apply to axis entries.
//!
//! Every proposal is projected onto the blocks (Euclidean projection onto a bounded simplex,
//! by bisection on the shift), so it is a valid mixture within bounds by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::corpus::Manifest;
use crate::rng::SplitMix64;

/// How mixtures are parameterised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceKind {
    /// One simplex over all cells.
    #[default]
    Joint,
    /// One simplex per axis; cell weight = concept share × task share (renormalised).
    Factorized,
}

/// A space could not be built or a point is not in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    /// A bound or fixed value names something that is not a cell (or axis entry).
    #[error("unknown {what} {name:?} in the search space; expected one of {examples}")]
    Unknown {
        /// "cell" or "axis entry".
        what: &'static str,
        /// The name given.
        name: String,
        /// A few valid names.
        examples: String,
    },
    /// Bounds that no mixture can satisfy.
    #[error("infeasible search space: {0}")]
    Infeasible(String),
    /// A mixture that is not a valid point of the space.
    #[error("mixture is not valid: {0}")]
    BadMixture(String),
}

/// Optional constraints of a search space (names are `concept/task` for joint spaces, axis
/// labels such as `c03` or `ocr` for factorized ones).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpaceConstraints {
    /// Lower bounds by name.
    pub lower: BTreeMap<String, f64>,
    /// Upper bounds by name.
    pub upper: BTreeMap<String, f64>,
    /// Fixed values by name (excluded from the search).
    pub fixed: BTreeMap<String, f64>,
}

/// One bounded simplex over some coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Coordinate indices of this block.
    pub coords: Vec<usize>,
    /// What the block's coordinates sum to.
    pub mass: f64,
    /// Lower bound per coordinate of the block.
    pub lower: Vec<f64>,
    /// Upper bound per coordinate of the block.
    pub upper: Vec<f64>,
}

/// The search space over a corpus's cells.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    /// Parameterisation.
    pub kind: SpaceKind,
    /// Cell names (`concept/task`) in manifest order: the mixture's entries.
    pub cells: Vec<String>,
    /// `(concept, task)` axis indices of each cell.
    pub cell_axes: Vec<(usize, usize)>,
    /// Concept labels.
    pub concepts: Vec<String>,
    /// Task labels.
    pub tasks: Vec<String>,
    /// Natural proportions (token shares) of the cells: the prior of RegMix and `natural`.
    pub prior: Vec<f64>,
    /// The held-out benchmarks' own mixture over the cells, when the corpus records it
    /// ([`Manifest::benchmark_weights`]): where `--start benchmarks` begins a design.
    pub benchmarks: Option<Vec<f64>>,
    /// Names of the coordinates (free cells, or axis entries).
    pub coord_names: Vec<String>,
    /// The simplex blocks partitioning the coordinates.
    pub blocks: Vec<Block>,
    /// Fixed values: cell index → weight (joint), or axis entry → share (factorized,
    /// index into `concepts ++ tasks`).
    pub fixed: BTreeMap<usize, f64>,
}

/// Euclidean projection of `v` onto `{x : Σx = mass, lo ≤ x ≤ hi}` (in place).
///
/// Solves for τ with `Σ clip(v − τ, lo, hi) = mass` by bisection; exact to ~1e-15.
pub fn project_bounded_simplex(v: &mut [f64], mass: f64, lo: &[f64], hi: &[f64]) {
    assert_eq!(v.len(), lo.len());
    assert_eq!(v.len(), hi.len());
    if v.is_empty() {
        return;
    }
    let f = |tau: f64, v: &[f64]| -> f64 {
        v.iter()
            .zip(lo.iter().zip(hi))
            .map(|(&x, (&l, &h))| (x - tau).clamp(l, h))
            .sum::<f64>()
    };
    let vmax = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let vmin = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hmax = hi.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lmin = lo.iter().cloned().fold(f64::INFINITY, f64::min);
    // f is non-increasing in τ; bracket [a, b] with f(a) ≥ mass ≥ f(b).
    let mut a = vmin - hmax.max(0.0) - 1.0;
    let mut b = vmax - lmin.min(0.0) + 1.0;
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if f(m, v) > mass {
            a = m;
        } else {
            b = m;
        }
        if b - a < 1e-16 {
            break;
        }
    }
    let tau = 0.5 * (a + b);
    for ((x, &l), &h) in v.iter_mut().zip(lo).zip(hi) {
        *x = (*x - tau).clamp(l, h);
    }
    // Remove the last rounding error from the sum on a coordinate with room.
    let err = mass - v.iter().sum::<f64>();
    if err != 0.0 {
        if let Some(i) = (0..v.len()).find(|&i| v[i] + err >= lo[i] && v[i] + err <= hi[i]) {
            v[i] += err;
        }
    }
}

fn examples(names: &[String]) -> String {
    names
        .iter()
        .take(4)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cells a space is built over ([`SearchSpace::new`]): their names, their (concept, task)
/// coordinates, the axes' labels and the prior (natural) share of each cell.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceCells {
    /// Cell names, `concept/task`.
    pub cells: Vec<String>,
    /// (concept, task) index of each cell.
    pub cell_axes: Vec<(usize, usize)>,
    /// Concept labels.
    pub concepts: Vec<String>,
    /// Task labels.
    pub tasks: Vec<String>,
    /// Prior (natural) weight of each cell.
    pub prior: Vec<f64>,
}

impl SearchSpace {
    /// Builds the space over a corpus manifest's cells.
    pub fn from_manifest(
        m: &Manifest,
        kind: SpaceKind,
        constraints: &SpaceConstraints,
    ) -> Result<Self, SpaceError> {
        let cells: Vec<String> = m.cells.iter().map(|c| c.data.name.clone()).collect();
        let cell_axes = m.cells.iter().map(|c| (c.concept, c.task)).collect();
        let total: u64 = m.cells.iter().map(|c| c.data.tokens).sum();
        let prior = m
            .cells
            .iter()
            .map(|c| c.data.tokens as f64 / total.max(1) as f64)
            .collect();
        let mut space = Self::new(
            kind,
            SpaceCells {
                cells,
                cell_axes,
                concepts: m.axes.concepts.clone(),
                tasks: m.axes.tasks.clone(),
                prior,
            },
            constraints,
        )?;
        space.benchmarks = m.benchmark_weights(&BTreeMap::new());
        Ok(space)
    }

    /// Builds a space from explicit cells (`cells.cell_axes[i]` = (concept, task) of cell i).
    pub fn new(
        kind: SpaceKind,
        cells: SpaceCells,
        constraints: &SpaceConstraints,
    ) -> Result<Self, SpaceError> {
        let SpaceCells {
            cells,
            cell_axes,
            concepts,
            tasks,
            prior,
        } = cells;
        assert_eq!(cells.len(), cell_axes.len());
        assert_eq!(cells.len(), prior.len());
        let entries: Vec<String> = match kind {
            SpaceKind::Joint => cells.clone(),
            SpaceKind::Factorized => concepts.iter().chain(tasks.iter()).cloned().collect(),
        };
        let what = match kind {
            SpaceKind::Joint => "cell",
            SpaceKind::Factorized => "axis entry",
        };
        let index = |name: &String| -> Result<usize, SpaceError> {
            entries
                .iter()
                .position(|e| e == name)
                .ok_or_else(|| SpaceError::Unknown {
                    what,
                    name: name.clone(),
                    examples: examples(&entries),
                })
        };
        let n = entries.len();
        let mut lower = vec![0.0; n];
        let mut upper = vec![1.0; n];
        let mut fixed = BTreeMap::new();
        let check = |name: &str, v: f64| -> Result<(), SpaceError> {
            if !(0.0..=1.0).contains(&v) {
                return Err(SpaceError::Infeasible(format!(
                    "{name:?} = {v}; expected a value in [0, 1]"
                )));
            }
            Ok(())
        };
        for (k, &v) in &constraints.lower {
            check(k, v)?;
            lower[index(k)?] = v;
        }
        for (k, &v) in &constraints.upper {
            check(k, v)?;
            upper[index(k)?] = v;
        }
        for (k, &v) in &constraints.fixed {
            check(k, v)?;
            fixed.insert(index(k)?, v);
        }
        let groups: Vec<(Vec<usize>, &str)> = match kind {
            SpaceKind::Joint => vec![((0..n).collect(), "cells")],
            SpaceKind::Factorized => vec![
                ((0..concepts.len()).collect(), "concepts"),
                ((concepts.len()..n).collect(), "tasks"),
            ],
        };
        let mut coord_names = Vec::new();
        let mut blocks = Vec::new();
        let mut entry_to_coord = vec![usize::MAX; n];
        for (group, label) in groups {
            let fixed_mass: f64 = group.iter().filter_map(|i| fixed.get(i)).sum();
            let free: Vec<usize> = group
                .iter()
                .copied()
                .filter(|i| !fixed.contains_key(i))
                .collect();
            let mass = 1.0 - fixed_mass;
            if mass < -1e-12 {
                return Err(SpaceError::Infeasible(format!(
                    "fixed {label} sum to {fixed_mass} > 1"
                )));
            }
            let lo: Vec<f64> = free.iter().map(|&i| lower[i]).collect();
            let hi: Vec<f64> = free.iter().map(|&i| upper[i]).collect();
            if let Some(i) = free.iter().position(|&e| lower[e] > upper[e]) {
                return Err(SpaceError::Infeasible(format!(
                    "{:?} has lower bound {} above upper bound {}",
                    entries[free[i]], lo[i], hi[i]
                )));
            }
            let (sl, sh): (f64, f64) = (lo.iter().sum(), hi.iter().sum());
            if free.is_empty() && mass.abs() > 1e-9 {
                return Err(SpaceError::Infeasible(format!(
                    "all {label} are fixed but sum to {fixed_mass}, not 1"
                )));
            }
            if !free.is_empty() && (sl > mass + 1e-12 || sh < mass - 1e-12) {
                return Err(SpaceError::Infeasible(format!(
                    "free {label} must sum to {mass:.6} but their bounds allow [{sl:.6}, {sh:.6}]"
                )));
            }
            let coords: Vec<usize> = (coord_names.len()..coord_names.len() + free.len()).collect();
            for (&e, &c) in free.iter().zip(&coords) {
                entry_to_coord[e] = c;
                coord_names.push(entries[e].clone());
            }
            blocks.push(Block {
                coords,
                mass: mass.max(0.0),
                lower: lo,
                upper: hi,
            });
        }
        Ok(Self {
            kind,
            cells,
            cell_axes,
            concepts,
            tasks,
            prior,
            benchmarks: None,
            coord_names,
            blocks,
            fixed,
        })
    }

    /// A joint space over `d` cells `c0/t … c{d-1}/t` (one task) with a uniform prior: the
    /// plain `d`-simplex, for tests, benchmarks and synthetic objectives.
    pub fn simplex(d: usize, constraints: &SpaceConstraints) -> Result<Self, SpaceError> {
        Self::new(
            SpaceKind::Joint,
            SpaceCells {
                cells: (0..d).map(|i| format!("c{i}/t")).collect(),
                cell_axes: (0..d).map(|i| (i, 0)).collect(),
                concepts: (0..d).map(|i| format!("c{i}")).collect(),
                tasks: vec!["t".into()],
                prior: vec![1.0 / d as f64; d],
            },
            constraints,
        )
    }

    /// Dimension `d` of the coordinates (the GP's input dimension).
    pub fn dim(&self) -> usize {
        self.coord_names.len()
    }

    /// Number of cells (entries of a mixture).
    pub fn cells(&self) -> usize {
        self.cells.len()
    }

    /// Projects `x` (`d` coordinates) onto the space in place.
    pub fn project(&self, x: &mut [f64]) {
        assert_eq!(x.len(), self.dim(), "coordinate vector of the wrong length");
        for b in &self.blocks {
            let mut v: Vec<f64> = b.coords.iter().map(|&c| x[c]).collect();
            project_bounded_simplex(&mut v, b.mass, &b.lower, &b.upper);
            for (&c, val) in b.coords.iter().zip(v) {
                x[c] = val;
            }
        }
    }

    /// Whether `x` lies in the space (sums within `tol`, bounds within `tol`).
    pub fn contains(&self, x: &[f64], tol: f64) -> bool {
        x.len() == self.dim()
            && self.blocks.iter().all(|b| {
                let s: f64 = b.coords.iter().map(|&c| x[c]).sum();
                (s - b.mass).abs() <= tol
                    && b.coords
                        .iter()
                        .zip(b.lower.iter().zip(&b.upper))
                        .all(|(&c, (&l, &h))| x[c] >= l - tol && x[c] <= h + tol)
            })
    }

    /// Draws `n` points: flat Dirichlet per block (scaled to its mass), projected onto the
    /// bounds. Deterministic for `rng`.
    pub fn sample(&self, rng: &mut SplitMix64, n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let mut x = vec![0.0; self.dim()];
                for b in &self.blocks {
                    let e: Vec<f64> = b
                        .coords
                        .iter()
                        .map(|_| -(1.0 - rng.next_f64()).ln())
                        .collect();
                    let s: f64 = e.iter().sum();
                    for (&c, v) in b.coords.iter().zip(e) {
                        x[c] = b.mass * v / s;
                    }
                }
                self.project(&mut x);
                x
            })
            .collect()
    }

    /// The mixture (one weight per cell, summing to 1) of coordinates `x`.
    pub fn to_mixture(&self, x: &[f64]) -> Vec<f64> {
        assert_eq!(x.len(), self.dim(), "coordinate vector of the wrong length");
        match self.kind {
            SpaceKind::Joint => {
                let mut w = vec![0.0; self.cells()];
                let mut c = 0;
                for (i, wi) in w.iter_mut().enumerate() {
                    if let Some(&v) = self.fixed.get(&i) {
                        *wi = v;
                    } else {
                        *wi = x[c].max(0.0);
                        c += 1;
                    }
                }
                normalise(w)
            }
            SpaceKind::Factorized => {
                let entries = self.concepts.len() + self.tasks.len();
                let mut full = vec![0.0; entries];
                let mut c = 0;
                for (e, f) in full.iter_mut().enumerate() {
                    if let Some(&v) = self.fixed.get(&e) {
                        *f = v;
                    } else {
                        *f = x[c].max(0.0);
                        c += 1;
                    }
                }
                let nc = self.concepts.len();
                let w = self
                    .cell_axes
                    .iter()
                    .map(|&(ci, ti)| full[ci] * full[nc + ti])
                    .collect();
                normalise(w)
            }
        }
    }

    /// Coordinates of a mixture given as one weight per cell. Joint: the free cells' weights
    /// (checked against fixed values and bounds); factorized: the per-axis marginals (exact
    /// for product-form mixtures).
    pub fn from_mixture(&self, w: &[f64]) -> Result<Vec<f64>, SpaceError> {
        /// How far (per coordinate) a factorized space's realised marginals may be moved back
        /// onto its bounds when cells are empty.
        const EMPTY_CELL_SLACK: f64 = 0.05;
        if w.len() != self.cells() {
            return Err(SpaceError::BadMixture(format!(
                "{} weights for {} cells",
                w.len(),
                self.cells()
            )));
        }
        if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(SpaceError::BadMixture(format!(
                "weight of {:?} is {}; expected a finite non-negative number",
                self.cells[i], w[i]
            )));
        }
        let s: f64 = w.iter().sum();
        if (s - 1.0).abs() > 1e-6 {
            return Err(SpaceError::BadMixture(format!(
                "weights sum to {s}; expected 1 (within 1e-6)"
            )));
        }
        let entries: Vec<f64> = match self.kind {
            SpaceKind::Joint => w.to_vec(),
            SpaceKind::Factorized => {
                let mut m = vec![0.0; self.concepts.len() + self.tasks.len()];
                for (&(c, t), &v) in self.cell_axes.iter().zip(w) {
                    m[c] += v;
                    m[self.concepts.len() + t] += v;
                }
                m
            }
        };
        let mut x = Vec::with_capacity(self.dim());
        for (e, &v) in entries.iter().enumerate() {
            if let Some(&f) = self.fixed.get(&e) {
                if (f - v).abs() > 1e-6 {
                    return Err(SpaceError::BadMixture(format!(
                        "{:?} is fixed at {f} but the mixture gives it {v}",
                        self.entry_name(e)
                    )));
                }
            } else {
                x.push(v);
            }
        }
        let empty_cells = self.concepts.len() * self.tasks.len() > self.cells.len();
        if self.kind == SpaceKind::Factorized && empty_cells && !self.contains(&x, 1e-9) {
            // With empty cells the product of the marginals is renormalised over the cells
            // that exist, so a mixture made from a point of the space has marginals a little
            // off it (below a floor by up to the empty cells' share): its point is the nearest
            // one of the space. Mixtures further off stay outside, for the caller to refuse.
            let mut p = x.clone();
            self.project(&mut p);
            let moved = p
                .iter()
                .zip(&x)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            if moved <= EMPTY_CELL_SLACK {
                x = p;
            }
        }
        Ok(x)
    }

    fn entry_name(&self, e: usize) -> &str {
        match self.kind {
            SpaceKind::Joint => &self.cells[e],
            SpaceKind::Factorized => {
                if e < self.concepts.len() {
                    &self.concepts[e]
                } else {
                    &self.tasks[e - self.concepts.len()]
                }
            }
        }
    }
}

fn normalise(mut w: Vec<f64>) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    if s > 0.0 {
        w.iter_mut().for_each(|x| *x /= s);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(kind: SpaceKind, c: &SpaceConstraints) -> Result<SearchSpace, SpaceError> {
        let concepts = vec!["c0".to_string(), "c1".into(), "c2".into()];
        let tasks = vec!["ocr".to_string(), "vqa".into()];
        let mut cells = Vec::new();
        let mut axes = Vec::new();
        for (ci, cn) in concepts.iter().enumerate() {
            for (ti, tn) in tasks.iter().enumerate() {
                if (ci, ti) != (2, 0) {
                    cells.push(format!("{cn}/{tn}"));
                    axes.push((ci, ti));
                }
            }
        }
        let prior = vec![0.2; 5];
        SearchSpace::new(
            kind,
            SpaceCells {
                cells,
                cell_axes: axes,
                concepts,
                tasks,
                prior,
            },
            c,
        )
    }

    /// With an empty cell, a factorized point's mixture has marginals a little off the point
    /// (the product is renormalised over the cells that exist); under floors they may fall
    /// below a floor, and the point read back must still be one of the space.
    #[test]
    fn factorized_mixtures_with_empty_cells_read_back_inside_the_floors() {
        let mut c = SpaceConstraints::default();
        c.lower.insert("ocr".into(), 0.2);
        c.lower.insert("c2".into(), 0.1);
        let s = space(SpaceKind::Factorized, &c).unwrap();
        // c2 and ocr at their floors: the empty cell c2/ocr would carry 0.02 of the product.
        let x = vec![0.45, 0.45, 0.1, 0.2, 0.8];
        assert!(s.contains(&x, 1e-12));
        let w = s.to_mixture(&x);
        let back = s.from_mixture(&w).unwrap();
        assert!(s.contains(&back, 1e-9), "{back:?}");
        // The raw marginals of that mixture fall below the ocr floor (independent recomputation).
        let ocr: f64 = s
            .cells
            .iter()
            .zip(&w)
            .filter(|(n, _)| n.ends_with("/ocr"))
            .map(|x| x.1)
            .sum();
        assert!(ocr < 0.2 - 1e-3, "{ocr}");
        // A mixture far outside the bounds is not moved in: still refused.
        let mut far = vec![0.0; s.cells()];
        far[1] = 1.0; // all on c0/vqa: ocr share 0, c2 share 0
        let x = s.from_mixture(&far).unwrap();
        assert!(!s.contains(&x, 1e-6));
    }

    /// Brute-force check of the projection's optimality (KKT): x is feasible and no feasible
    /// direction between two coordinates decreases the distance to v.
    #[test]
    fn projection_is_the_nearest_feasible_point() {
        let mut rng = SplitMix64::new(3);
        for n in [1usize, 2, 5, 17, 50] {
            for _ in 0..50 {
                let v: Vec<f64> = (0..n).map(|_| 2.0 * rng.normal()).collect();
                let lo: Vec<f64> = (0..n).map(|_| 0.02 * rng.next_f64() / n as f64).collect();
                let hi: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { 0.5 } else { 1.0 }).collect();
                let mass = if n == 1 { 0.5 } else { 0.9 };
                let mut x = v.clone();
                project_bounded_simplex(&mut x, mass, &lo, &hi);
                let s: f64 = x.iter().sum();
                assert!((s - mass).abs() < 1e-12, "sum {s}");
                for i in 0..n {
                    assert!(x[i] >= lo[i] - 1e-12 && x[i] <= hi[i] + 1e-12);
                }
                // KKT: g = x - v; for any i with room to grow and j with room to shrink,
                // g_i >= g_j (moving mass from j to i does not reduce distance).
                for i in 0..n {
                    for j in 0..n {
                        if x[i] < hi[i] - 1e-9 && x[j] > lo[j] + 1e-9 {
                            let (gi, gj) = (x[i] - v[i], x[j] - v[j]);
                            assert!(gi >= gj - 1e-9, "n {n}: i {i} j {j} {gi} < {gj}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn joint_space_roundtrips_and_respects_bounds() {
        let mut c = SpaceConstraints::default();
        c.fixed.insert("c0/ocr".into(), 0.1);
        c.lower.insert("c1/vqa".into(), 0.3);
        c.upper.insert("c0/vqa".into(), 0.05);
        let s = space(SpaceKind::Joint, &c).unwrap();
        assert_eq!(s.dim(), 4);
        let mut rng = SplitMix64::new(1);
        for x in s.sample(&mut rng, 200) {
            assert!(s.contains(&x, 1e-9), "{x:?}");
            let w = s.to_mixture(&x);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!((w[0] - 0.1).abs() < 1e-12);
            assert!(w[3] >= 0.3 - 1e-12 && w[1] <= 0.05 + 1e-12);
            let back = s.from_mixture(&w).unwrap();
            for (a, b) in back.iter().zip(&x) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn factorized_space_is_a_renormalised_product() {
        let s = space(SpaceKind::Factorized, &SpaceConstraints::default()).unwrap();
        assert_eq!(s.dim(), 5);
        assert_eq!(s.blocks.len(), 2);
        let x = vec![0.5, 0.3, 0.2, 0.6, 0.4];
        let w = s.to_mixture(&x);
        // Cell (c2, ocr) is absent: renormalise over the other five.
        let raw = [0.5 * 0.6, 0.5 * 0.4, 0.3 * 0.6, 0.3 * 0.4, 0.2 * 0.4];
        let z: f64 = raw.iter().sum();
        for (a, b) in w.iter().zip(raw) {
            assert!((a - b / z).abs() < 1e-15);
        }
    }

    #[test]
    fn bad_constraints_and_mixtures_are_named() {
        let mut c = SpaceConstraints::default();
        c.lower.insert("c9/ocr".into(), 0.1);
        let e = space(SpaceKind::Joint, &c).unwrap_err().to_string();
        assert!(e.contains("c9/ocr") && e.contains("c0/ocr"), "{e}");
        let mut c = SpaceConstraints::default();
        for n in ["c0/ocr", "c0/vqa", "c1/ocr"] {
            c.lower.insert(n.into(), 0.4);
        }
        let e = space(SpaceKind::Joint, &c).unwrap_err().to_string();
        assert!(e.contains("infeasible"), "{e}");
        let s = space(SpaceKind::Joint, &SpaceConstraints::default()).unwrap();
        let e = s
            .from_mixture(&[0.5, 0.5, 0.5, 0.0, 0.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sum to 1.5"), "{e}");
        let e = s
            .from_mixture(&[f64::NAN, 0.5, 0.5, 0.0, 0.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("c0/ocr"), "{e}");
    }
}
