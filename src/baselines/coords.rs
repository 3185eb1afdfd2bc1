//! Mapping any mixture into a search space's coordinates ([`coords_of_mixture`]) and the
//! per-block prior RegMix samples around ([`block_prior`]): shared by the natural baseline and
//! RegMix.

use crate::acquisition::{SearchSpace, SpaceKind};

/// Coordinates of a (possibly non-product, possibly off-bounds) mixture `w` (one weight per
/// cell): joint spaces take the free cells' weights, factorized ones the per-axis marginals;
/// each block is then rescaled to its mass and projected onto its bounds. Unlike
/// [`SearchSpace::from_mixture`] this never fails: fixed cells simply keep their fixed value.
pub fn coords_of_mixture(space: &SearchSpace, w: &[f64]) -> Vec<f64> {
    assert_eq!(w.len(), space.cells(), "mixture of the wrong length");
    let entries: Vec<f64> = match space.kind {
        SpaceKind::Joint => w.to_vec(),
        SpaceKind::Factorized => {
            let nc = space.concepts.len();
            let mut m = vec![0.0; nc + space.tasks.len()];
            for (&(c, t), &v) in space.cell_axes.iter().zip(w) {
                m[c] += v;
                m[nc + t] += v;
            }
            m
        }
    };
    let mut x: Vec<f64> = entries
        .iter()
        .enumerate()
        .filter(|(e, _)| !space.fixed.contains_key(e))
        .map(|(_, &v)| v.max(0.0))
        .collect();
    for b in &space.blocks {
        let s: f64 = b.coords.iter().map(|&c| x[c]).sum();
        for &c in &b.coords {
            x[c] = if s > 0.0 {
                x[c] * b.mass / s
            } else {
                b.mass / b.coords.len() as f64
            };
        }
    }
    space.project(&mut x);
    x
}

/// The prior (natural token shares) in the space's coordinates, each block normalised to sum
/// to 1 (before scaling by the block's mass): the per-block prior RegMix samples around.
pub fn block_prior(space: &SearchSpace) -> Vec<f64> {
    let x = coords_of_mixture(space, &space.prior);
    let mut p = x.clone();
    for b in &space.blocks {
        let s: f64 = b.coords.iter().map(|&c| x[c]).sum();
        for &c in &b.coords {
            p[c] = if s > 0.0 {
                x[c] / s
            } else {
                1.0 / b.coords.len() as f64
            };
        }
    }
    p
}
