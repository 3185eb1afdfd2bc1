//! Gradient-boosted regression trees (squared error), small and exact: RegMix's LightGBM
//! regressor, hand-written.
//!
//! LightGBM's algorithm for `objective = regression` with its defaults, on exact rather than
//! histogram splits (at a few hundred rows every distinct value is its own bin anyway):
//!
//! - start from the mean of `y` (`boost_from_average`);
//! - each round fits one tree to the residuals `rᵢ = yᵢ − ŷᵢ`, grown **leaf-wise**
//!   (best-first): the leaf whose best split has the largest gain is split next, until
//!   `num_leaves` leaves, `max_depth`, or no split with positive gain respecting
//!   `min_data_in_leaf` remains;
//! - split search is exact greedy on pre-sorted features: every threshold between two
//!   consecutive distinct values of a feature among the leaf's rows, gain
//!   `G_L²/(n_L+λ) + G_R²/(n_R+λ) − G²/(n+λ)` with `G` the residual sum and `λ` = `lambda_l2`;
//! - a leaf predicts `learning_rate · G/(n+λ)`;
//! - optional row subsampling per tree (`bagging_fraction`) and feature subsampling per tree
//!   (`feature_fraction`), seeded.
//!
//! Training is deterministic for a seed; prediction is a walk per tree.

use super::error::FitError;
use crate::rng::SplitMix64;

/// Settings of [`Gbdt::fit`]. `Default` is LightGBM's defaults with RegMix's
/// `num_iterations = 1000` and `learning_rate = 1e-2`, except `min_data_in_leaf`
/// (see [`GbdtConfig::min_data_in_leaf`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtConfig {
    /// Boosting rounds (trees). RegMix: 1000.
    pub n_trees: usize,
    /// Shrinkage. RegMix: 0.01 (LightGBM's default is 0.1).
    pub learning_rate: f64,
    /// Maximum leaves per tree (LightGBM: 31).
    pub num_leaves: usize,
    /// Maximum depth of a leaf (`None`: unlimited, LightGBM's `-1`).
    pub max_depth: Option<usize>,
    /// Minimum rows in a leaf. LightGBM's default is 20, with which a tree on fewer than 40
    /// rows cannot split at all; the default here is 5, so RegMix's trees can model the small
    /// budgets of a proxy search (a favour to the baseline).
    pub min_data_in_leaf: usize,
    /// L2 penalty on leaf values `λ` (LightGBM: 0).
    pub lambda_l2: f64,
    /// Minimum gain to split (LightGBM: 0).
    pub min_gain_to_split: f64,
    /// Fraction of rows drawn (without replacement) for each tree (LightGBM: 1, no bagging).
    pub bagging_fraction: f64,
    /// Fraction of features drawn for each tree (LightGBM: 1).
    pub feature_fraction: f64,
    /// Seed of the subsampling.
    pub seed: u64,
}

impl Default for GbdtConfig {
    fn default() -> Self {
        Self {
            n_trees: 1000,
            learning_rate: 0.01,
            num_leaves: 31,
            max_depth: None,
            min_data_in_leaf: 5,
            lambda_l2: 0.0,
            min_gain_to_split: 0.0,
            bagging_fraction: 1.0,
            feature_fraction: 1.0,
            seed: 0,
        }
    }
}

/// One node of a tree: a split (`feature`, `threshold`, children) or a leaf (`value`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Split feature, or `usize::MAX` for a leaf.
    pub feature: usize,
    /// Rows with `x[feature] <= threshold` go left.
    pub threshold: f64,
    /// Left child index.
    pub left: usize,
    /// Right child index.
    pub right: usize,
    /// Leaf output (already multiplied by the learning rate); 0 for splits.
    pub value: f64,
}

impl Node {
    /// Whether this node is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.feature == usize::MAX
    }

    fn leaf(value: f64) -> Self {
        Self {
            feature: usize::MAX,
            threshold: 0.0,
            left: 0,
            right: 0,
            value,
        }
    }
}

/// One regression tree; node 0 is the root.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The nodes.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The tree's output at `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let mut i = 0;
        loop {
            let n = &self.nodes[i];
            if n.is_leaf() {
                return n.value;
            }
            i = if x[n.feature] <= n.threshold {
                n.left
            } else {
                n.right
            };
        }
    }

    /// Number of leaves.
    pub fn leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_leaf()).count()
    }
}

/// A fitted boosted ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct Gbdt {
    /// The starting value (mean of `y`).
    pub base: f64,
    /// The trees, in boosting order.
    pub trees: Vec<Tree>,
    /// Input dimension.
    pub dim: usize,
}

/// The best split of one leaf.
#[derive(Debug, Clone, Copy)]
struct Split {
    gain: f64,
    feature: usize,
    threshold: f64,
}

/// A leaf under construction.
struct Leaf {
    node: usize,
    depth: usize,
    rows: Vec<usize>,
    best: Option<Split>,
}

fn score(g: f64, n: f64, lambda: f64) -> f64 {
    g * g / (n + lambda)
}

impl Gbdt {
    /// Fits on `n` rows `x` (each of length `d`) and targets `y`.
    ///
    /// Panics if the rows have different lengths or `x` and `y` differ in length; returns an
    /// error for no rows, non-finite values or invalid settings.
    pub fn fit(x: &[Vec<f64>], y: &[f64], cfg: &GbdtConfig) -> Result<Self, FitError> {
        assert_eq!(x.len(), y.len(), "x and y differ in length");
        let n = y.len();
        if n == 0 {
            return Err(FitError::TooFewSamples { need: 1, got: 0 });
        }
        let d = x[0].len();
        assert!(x.iter().all(|r| r.len() == d), "rows of different lengths");
        if x.iter().flatten().chain(y).any(|v| !v.is_finite()) {
            return Err(FitError::NonFinite);
        }
        let frac_ok = |f: f64| f > 0.0 && f <= 1.0;
        let lr_ok = cfg.learning_rate > 0.0 && cfg.learning_rate.is_finite();
        let lambda_ok = cfg.lambda_l2 >= 0.0 && cfg.lambda_l2.is_finite();
        if cfg.num_leaves < 2
            || cfg.min_data_in_leaf < 1
            || !lr_ok
            || !lambda_ok
            || !frac_ok(cfg.bagging_fraction)
            || !frac_ok(cfg.feature_fraction)
        {
            return Err(FitError::GbdtSettings(format!("{cfg:?}")));
        }
        // Row indices sorted by each feature (ties by index), computed once.
        let order: Vec<Vec<usize>> = (0..d)
            .map(|f| {
                let mut o: Vec<usize> = (0..n).collect();
                o.sort_by(|&a, &b| x[a][f].total_cmp(&x[b][f]).then(a.cmp(&b)));
                o
            })
            .collect();
        let base = y.iter().sum::<f64>() / n as f64;
        let mut pred = vec![base; n];
        let mut trees = Vec::with_capacity(cfg.n_trees);
        let mut rng = SplitMix64::derive(cfg.seed, 0x6762_6474);
        let mut grower = Grower {
            x,
            order: &order,
            cfg,
            leaf_of: vec![usize::MAX; n],
            scratch: Vec::with_capacity(n),
        };
        for _ in 0..cfg.n_trees {
            let resid: Vec<f64> = y.iter().zip(&pred).map(|(a, b)| a - b).collect();
            let rows: Vec<usize> = if cfg.bagging_fraction < 1.0 {
                let k = ((cfg.bagging_fraction * n as f64).round() as usize).clamp(1, n);
                let mut all: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut all);
                let mut r = all[..k].to_vec();
                r.sort_unstable();
                r
            } else {
                (0..n).collect()
            };
            let features: Vec<usize> = if cfg.feature_fraction < 1.0 {
                let k = ((cfg.feature_fraction * d as f64).round() as usize).clamp(1, d);
                let mut all: Vec<usize> = (0..d).collect();
                rng.shuffle(&mut all);
                let mut f = all[..k].to_vec();
                f.sort_unstable();
                f
            } else {
                (0..d).collect()
            };
            let tree = grower.grow(&resid, rows, &features);
            for (p, xi) in pred.iter_mut().zip(x) {
                *p += tree.predict(xi);
            }
            trees.push(tree);
        }
        Ok(Self {
            base,
            trees,
            dim: d,
        })
    }

    /// Prediction at one point `x` (length `d`).
    pub fn predict(&self, x: &[f64]) -> f64 {
        assert_eq!(x.len(), self.dim, "point of the wrong length");
        self.base + self.trees.iter().map(|t| t.predict(x)).sum::<f64>()
    }
}

/// Grows the trees of one fit: the rows, their per-feature order and the settings, shared by
/// every tree, and the buffers each tree reuses.
struct Grower<'a> {
    /// The training rows.
    x: &'a [Vec<f64>],
    /// Row indices sorted by each feature (ties by index).
    order: &'a [Vec<usize>],
    /// The settings.
    cfg: &'a GbdtConfig,
    /// The leaf (node index) each row of the current tree is in; `usize::MAX` for rows left
    /// out of the tree's sample.
    leaf_of: Vec<usize>,
    /// (feature value, residual) of one leaf's rows in feature order.
    scratch: Vec<(f64, f64)>,
}

impl Grower<'_> {
    /// Best split of the leaf `id` (rows marked in `leaf_of`) on `features`, or `None`.
    fn best_split(
        &mut self,
        resid: &[f64],
        features: &[usize],
        leaf: &Leaf,
        id: usize,
    ) -> Option<Split> {
        let (x, cfg) = (self.x, self.cfg);
        let n = leaf.rows.len();
        let m = cfg.min_data_in_leaf;
        if n < 2 * m || cfg.max_depth.is_some_and(|md| leaf.depth >= md) {
            return None;
        }
        let lambda = cfg.lambda_l2;
        let g: f64 = leaf.rows.iter().map(|&i| resid[i]).sum();
        let parent = score(g, n as f64, lambda);
        // A split's gain is at most the leaf's residual sum of squares; gains below a relative
        // 1e-12 of it are rounding, not signal.
        let ss: f64 = leaf.rows.iter().map(|&i| resid[i] * resid[i]).sum();
        let min_gain = cfg.min_gain_to_split.max(1e-12 * ss).max(f64::MIN_POSITIVE);
        let mut best: Option<Split> = None;
        let scratch = &mut self.scratch;
        for &f in features {
            scratch.clear();
            scratch.extend(
                self.order[f]
                    .iter()
                    .filter(|&&i| self.leaf_of[i] == id)
                    .map(|&i| (x[i][f], resid[i])),
            );
            let mut gl = 0.0;
            for k in 0..n - 1 {
                gl += scratch[k].1;
                let nl = k + 1;
                if nl < m {
                    continue;
                }
                if n - nl < m {
                    break;
                }
                let (v, w) = (scratch[k].0, scratch[k + 1].0);
                if v == w {
                    continue;
                }
                let gain =
                    score(gl, nl as f64, lambda) + score(g - gl, (n - nl) as f64, lambda) - parent;
                if gain > min_gain && best.is_none_or(|b| gain > b.gain) {
                    // Midpoint, unless rounding puts it on the right value.
                    let mut t = 0.5 * (v + w);
                    if t >= w {
                        t = v;
                    }
                    best = Some(Split {
                        gain,
                        feature: f,
                        threshold: t,
                    });
                }
            }
        }
        best
    }

    /// One tree fitted leaf-wise to the residuals `resid` of `rows`, splitting on `features`.
    fn grow(&mut self, resid: &[f64], rows: Vec<usize>, features: &[usize]) -> Tree {
        let (x, cfg) = (self.x, self.cfg);
        self.leaf_of.iter_mut().for_each(|l| *l = usize::MAX);
        for &i in &rows {
            self.leaf_of[i] = 0;
        }
        let mut nodes = vec![Node::leaf(0.0)];
        let mut leaves = vec![Leaf {
            node: 0,
            depth: 0,
            rows,
            best: None,
        }];
        leaves[0].best = self.best_split(resid, features, &leaves[0], 0);
        while leaves.len() < cfg.num_leaves {
            let Some(li) = (0..leaves.len())
                .filter(|&i| leaves[i].best.is_some())
                .max_by(|&a, &b| {
                    let (ga, gb) = (leaves[a].best.unwrap().gain, leaves[b].best.unwrap().gain);
                    ga.total_cmp(&gb).then(b.cmp(&a))
                })
            else {
                break;
            };
            let s = leaves[li].best.unwrap();
            let parent = leaves.swap_remove(li);
            let (left_rows, right_rows): (Vec<usize>, Vec<usize>) = parent
                .rows
                .iter()
                .partition(|&&i| x[i][s.feature] <= s.threshold);
            let (ln, rn) = (nodes.len(), nodes.len() + 1);
            nodes[parent.node] = Node {
                feature: s.feature,
                threshold: s.threshold,
                left: ln,
                right: rn,
                value: 0.0,
            };
            nodes.push(Node::leaf(0.0));
            nodes.push(Node::leaf(0.0));
            for (node, r) in [(ln, left_rows), (rn, right_rows)] {
                // Leaf ids in `leaf_of` are node indices: unique and stable.
                for &i in &r {
                    self.leaf_of[i] = node;
                }
                let mut leaf = Leaf {
                    node,
                    depth: parent.depth + 1,
                    rows: r,
                    best: None,
                };
                leaf.best = self.best_split(resid, features, &leaf, node);
                leaves.push(leaf);
            }
        }
        for leaf in &leaves {
            let g: f64 = leaf.rows.iter().map(|&i| resid[i]).sum();
            nodes[leaf.node].value =
                cfg.learning_rate * g / (leaf.rows.len() as f64 + cfg.lambda_l2);
        }
        Tree { nodes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_tree(leaves: usize, min_leaf: usize) -> GbdtConfig {
        GbdtConfig {
            n_trees: 1,
            learning_rate: 1.0,
            num_leaves: leaves,
            min_data_in_leaf: min_leaf,
            ..GbdtConfig::default()
        }
    }

    /// A stump equals the brute-force best split: every feature, every threshold between
    /// consecutive distinct values, squared error computed directly from the two means.
    #[test]
    fn stump_equals_brute_force() {
        let mut rng = SplitMix64::new(9);
        for trial in 0..20 {
            let n = 10 + trial;
            let d = 1 + trial % 4;
            let x: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..d).map(|_| (rng.next_f64() * 8.0).floor()).collect())
                .collect();
            let y: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let m = Gbdt::fit(&x, &y, &one_tree(2, 2)).unwrap();
            // Brute force.
            let sse = |idx: &[usize]| -> f64 {
                let mu = idx.iter().map(|&i| y[i]).sum::<f64>() / idx.len() as f64;
                idx.iter().map(|&i| (y[i] - mu).powi(2)).sum()
            };
            let mut best = (f64::INFINITY, 0, 0.0);
            for f in 0..d {
                let mut vals: Vec<f64> = x.iter().map(|r| r[f]).collect();
                vals.sort_by(f64::total_cmp);
                vals.dedup();
                for w in vals.windows(2) {
                    let t = 0.5 * (w[0] + w[1]);
                    let (l, r): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| x[i][f] <= t);
                    if l.len() < 2 || r.len() < 2 {
                        continue;
                    }
                    let s = sse(&l) + sse(&r);
                    if s < best.0 - 1e-12 {
                        best = (s, f, t);
                    }
                }
            }
            let tree = &m.trees[0];
            if best.0.is_infinite() {
                assert_eq!(tree.leaves(), 1);
                continue;
            }
            assert_eq!(tree.nodes[0].feature, best.1, "trial {trial}");
            assert_eq!(tree.nodes[0].threshold, best.2, "trial {trial}");
            let fit_sse: f64 = x
                .iter()
                .zip(&y)
                .map(|(r, t)| (t - m.predict(r)).powi(2))
                .sum();
            assert!((fit_sse - best.0).abs() < 1e-9, "{fit_sse} {}", best.0);
        }
    }

    #[test]
    fn fits_a_step_function() {
        let x: Vec<Vec<f64>> = (0..40).map(|i| vec![i as f64 / 39.0]).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| if r[0] > 0.5 { 3.0 } else { -1.0 })
            .collect();
        // One tree with lr 1 is exactly the step.
        let m = Gbdt::fit(&x, &y, &one_tree(31, 1)).unwrap();
        assert_eq!(m.trees[0].leaves(), 2);
        let t = m.trees[0].nodes[0].threshold;
        assert!(t > 19.0 / 39.0 && t < 20.0 / 39.0, "{t}");
        for (r, v) in x.iter().zip(&y) {
            assert!((m.predict(r) - v).abs() < 1e-12);
        }
        // Boosting with shrinkage converges geometrically: residual (1 − lr)^T of the step.
        let cfg = GbdtConfig {
            n_trees: 200,
            learning_rate: 0.1,
            ..GbdtConfig::default()
        };
        let m = Gbdt::fit(&x, &y, &cfg).unwrap();
        let want = 0.9f64.powi(200) * 4.0 * 0.5;
        for (r, v) in x.iter().zip(&y) {
            assert!(
                (m.predict(r) - v).abs() <= want + 1e-9,
                "{} {v}",
                m.predict(r)
            );
        }
    }

    #[test]
    fn fits_a_smooth_function() {
        let mut rng = SplitMix64::new(4);
        let f = |r: &[f64]| (std::f64::consts::TAU * r[0]).sin() + 2.0 * r[1] * r[1];
        let x: Vec<Vec<f64>> = (0..400)
            .map(|_| (0..3).map(|_| rng.next_f64()).collect())
            .collect();
        let y: Vec<f64> = x.iter().map(|r| f(r)).collect();
        let cfg = GbdtConfig {
            n_trees: 300,
            learning_rate: 0.1,
            min_data_in_leaf: 5,
            ..GbdtConfig::default()
        };
        let m = Gbdt::fit(&x, &y, &cfg).unwrap();
        let test: Vec<Vec<f64>> = (0..500)
            .map(|_| (0..3).map(|_| rng.next_f64()).collect())
            .collect();
        let truth: Vec<f64> = test.iter().map(|r| f(r)).collect();
        let mean = truth.iter().sum::<f64>() / truth.len() as f64;
        let var = truth.iter().map(|t| (t - mean).powi(2)).sum::<f64>();
        let err = test
            .iter()
            .zip(&truth)
            .map(|(r, t)| (m.predict(r) - t).powi(2))
            .sum::<f64>();
        let r2 = 1.0 - err / var;
        assert!(r2 > 0.95, "held-out R² {r2}");
    }

    #[test]
    fn respects_min_data_in_leaf_and_is_deterministic() {
        let mut rng = SplitMix64::new(1);
        let x: Vec<Vec<f64>> = (0..30)
            .map(|_| (0..4).map(|_| rng.next_f64()).collect())
            .collect();
        let y: Vec<f64> = (0..30).map(|_| rng.normal()).collect();
        // LightGBM's default of 20 rows per leaf: 30 rows cannot split.
        let cfg = GbdtConfig {
            min_data_in_leaf: 20,
            n_trees: 5,
            ..GbdtConfig::default()
        };
        let m = Gbdt::fit(&x, &y, &cfg).unwrap();
        assert!(m.trees.iter().all(|t| t.leaves() == 1));
        let cfg = GbdtConfig {
            n_trees: 20,
            bagging_fraction: 0.7,
            feature_fraction: 0.5,
            seed: 3,
            min_data_in_leaf: 4,
            ..GbdtConfig::default()
        };
        let a = Gbdt::fit(&x, &y, &cfg).unwrap();
        let b = Gbdt::fit(&x, &y, &cfg).unwrap();
        assert_eq!(a, b);
        for t in &a.trees {
            assert!(t.leaves() <= 30 / 4);
        }
    }
}
