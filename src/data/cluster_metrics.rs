//! How well the k-means concepts match ground-truth labels, when the data has them.
//!
//! The synthetic corpus (and any raw data with a `concept` field) knows which concept each
//! document came from; `prepare` records the adjusted Rand index and purity of the discovered
//! clusters against it in the manifest, so a run can tell whether concept discovery worked.
//! Both scores come from one contingency table, which `prepare` fills while it streams the
//! corpus (so the labels never need to be held in memory).

use std::collections::BTreeMap;

/// Counts of points per (true class, predicted cluster) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contingency {
    /// Number of true classes (rows).
    classes: usize,
    /// Number of predicted clusters (columns).
    clusters: usize,
    /// `classes × clusters` row-major.
    counts: Vec<u64>,
}

impl Contingency {
    /// A table from counts (`classes × clusters` row-major: `counts[t * clusters + p]` points
    /// of true class `t` were put in cluster `p`). Empty rows or columns are allowed and do not
    /// change either score.
    ///
    /// # Panics
    /// If `counts.len() != classes * clusters`.
    #[track_caller]
    pub fn from_counts(classes: usize, clusters: usize, counts: Vec<u64>) -> Self {
        assert_eq!(
            counts.len(),
            classes * clusters,
            "contingency table of {classes} × {clusters} needs that many counts"
        );
        Self {
            classes,
            clusters,
            counts,
        }
    }

    /// The table of two labelings of the same points. Label values need not be dense: classes
    /// and clusters are numbered in increasing label order.
    ///
    /// # Panics
    /// If the labelings have different lengths.
    #[track_caller]
    pub fn from_labels(truth: &[u32], pred: &[u32]) -> Self {
        assert_eq!(
            truth.len(),
            pred.len(),
            "truth and predicted labelings must have the same length"
        );
        let dense = |labels: &[u32]| -> BTreeMap<u32, usize> {
            let mut m: BTreeMap<u32, usize> = labels.iter().map(|&l| (l, 0)).collect();
            for (i, v) in m.values_mut().enumerate() {
                *v = i;
            }
            m
        };
        let (ti, pi) = (dense(truth), dense(pred));
        let mut table = Self::from_counts(ti.len(), pi.len(), vec![0; ti.len() * pi.len()]);
        for (t, p) in truth.iter().zip(pred) {
            table.counts[ti[t] * table.clusters + pi[p]] += 1;
        }
        table
    }

    /// Number of true classes (rows).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of predicted clusters (columns).
    pub fn clusters(&self) -> usize {
        self.clusters
    }

    /// Points of class `t` in cluster `p`.
    pub fn count(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.clusters + p]
    }

    /// Total number of points.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adjusted Rand index (Hubert & Arabie 1985), as scikit-learn's `adjusted_rand_score`:
    /// 1 for identical partitions (up to renaming), about 0 for independent ones, negative
    /// when worse than chance. Degenerate cases where both partitions put every pair the same
    /// way (everything in one cluster on both sides, or all singletons, or no points) give 1.
    pub fn adjusted_rand_index(&self) -> f64 {
        // Ordered pair counts (scikit-learn's pair_confusion_matrix), exact in u128.
        let n = self.total() as u128;
        let row_sums: Vec<u128> = (0..self.classes)
            .map(|t| (0..self.clusters).map(|p| self.count(t, p) as u128).sum())
            .collect();
        let col_sums: Vec<u128> = (0..self.clusters)
            .map(|p| (0..self.classes).map(|t| self.count(t, p) as u128).sum())
            .collect();
        let sum_sq: u128 = self.counts.iter().map(|&c| (c as u128) * (c as u128)).sum();
        let rows_sq: u128 = row_sums.iter().map(|&a| a * a).sum();
        let cols_sq: u128 = col_sums.iter().map(|&b| b * b).sum();
        // Same cluster in both / only in pred / only in truth / in neither.
        let both = sum_sq - n;
        let pred_only = cols_sq - sum_sq;
        let truth_only = rows_sq - sum_sq;
        let neither = n * n - cols_sq - rows_sq + sum_sq;
        if pred_only == 0 && truth_only == 0 {
            return 1.0;
        }
        let (tp, fp, fn_, tn) = (
            both as f64,
            pred_only as f64,
            truth_only as f64,
            neither as f64,
        );
        2.0 * (tp * tn - fn_ * fp) / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn))
    }

    /// Purity: the fraction of points that belong to the majority true class of their
    /// cluster. 1 for a perfect clustering (or for no points); it never penalises splitting a
    /// class over several clusters, so read it next to the adjusted Rand index.
    pub fn purity(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return 1.0;
        }
        let majority: u64 = (0..self.clusters)
            .map(|p| {
                (0..self.classes)
                    .map(|t| self.count(t, p))
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        majority as f64 / n as f64
    }
}

/// Adjusted Rand index of `pred` against `truth` (see [`Contingency::adjusted_rand_index`]).
///
/// # Panics
/// If the labelings have different lengths.
#[track_caller]
pub fn adjusted_rand_index(truth: &[u32], pred: &[u32]) -> f64 {
    Contingency::from_labels(truth, pred).adjusted_rand_index()
}

/// Purity of `pred` against `truth` (see [`Contingency::purity`]).
///
/// # Panics
/// If the labelings have different lengths.
#[track_caller]
pub fn purity(truth: &[u32], pred: &[u32]) -> f64 {
    Contingency::from_labels(truth, pred).purity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Pair-counting ARI straight from the definition, in f64 over unordered pairs.
    fn reference_ari(truth: &[u32], pred: &[u32]) -> f64 {
        let n = truth.len();
        let (mut a, mut b, mut c, mut d) = (0f64, 0f64, 0f64, 0f64);
        for i in 0..n {
            for j in i + 1..n {
                match (truth[i] == truth[j], pred[i] == pred[j]) {
                    (true, true) => a += 1.0,
                    (true, false) => b += 1.0,
                    (false, true) => c += 1.0,
                    (false, false) => d += 1.0,
                }
            }
        }
        let total = a + b + c + d;
        let expected = (a + b) * (a + c) / total;
        let max = ((a + b) + (a + c)) / 2.0;
        if max == expected {
            return 1.0;
        }
        (a - expected) / (max - expected)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn scikit_learn_doc_examples() {
        // Values printed by sklearn.metrics.adjusted_rand_score 1.9.
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 1]),
            1.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]),
            1.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]),
            4.0 / 7.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]),
            4.0 / 7.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]),
            -0.5
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]),
            8.0 / 33.0
        ));
    }

    #[test]
    fn textbook_example() {
        // Manning, Raghavan & Schütze, Introduction to IR, §16.3 (figure 16.4): clusters of
        // (5 x, 1 o), (1 x, 4 o, 1 ◇), (2 x, 3 ◇). Purity = (5 + 4 + 3) / 17. Unordered
        // pairs: 20 together in both, C(6,2)+C(6,2)+C(5,2) = 40 together in the clustering,
        // C(8,2)+C(5,2)+C(4,2) = 44 together in the truth, C(17,2) = 136 in all, so
        // ARI = (20 − 40·44/136) / ((40 + 44)/2 − 40·44/136) = 60/247 (sklearn: 0.242914979…).
        let (x, o, dia) = (0u32, 1u32, 2u32);
        let clusters: [&[u32]; 3] = [
            &[x, x, x, x, x, o],
            &[x, o, o, o, o, dia],
            &[x, x, dia, dia, dia],
        ];
        let mut truth = Vec::new();
        let mut pred = Vec::new();
        for (c, members) in clusters.iter().enumerate() {
            for &t in *members {
                truth.push(t);
                pred.push(c as u32);
            }
        }
        assert!(close(purity(&truth, &pred), 12.0 / 17.0));
        assert!(close(adjusted_rand_index(&truth, &pred), 60.0 / 247.0));
        let table = Contingency::from_labels(&truth, &pred);
        assert_eq!(
            (table.classes(), table.clusters(), table.total()),
            (3, 3, 17)
        );
        assert_eq!(table.count(x as usize, 0), 5);
        assert_eq!(table.count(dia as usize, 2), 3);
    }

    #[test]
    fn edge_cases() {
        // One cluster on both sides; all singletons on both sides; no points.
        assert_eq!(adjusted_rand_index(&[3, 3, 3], &[7, 7, 7]), 1.0);
        assert_eq!(adjusted_rand_index(&[0, 1, 2, 3], &[3, 2, 1, 0]), 1.0);
        assert_eq!(adjusted_rand_index(&[], &[]), 1.0);
        assert_eq!(purity(&[], &[]), 1.0);
        // One true class split in two: chance level (sklearn gives 0.0); purity still 1.
        assert_eq!(adjusted_rand_index(&[0, 0, 0, 0], &[0, 0, 1, 1]), 0.0);
        assert_eq!(purity(&[0, 0, 0, 0], &[0, 0, 1, 1]), 1.0);
        // Everything in one cluster: purity is the majority class share.
        assert!(close(purity(&[0, 0, 1, 2], &[5, 5, 5, 5]), 0.5));
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 2], &[5, 5, 5, 5]), 0.0);
        // Sparse label values are fine.
        assert_eq!(
            adjusted_rand_index(&[10, 10, 99], &[u32::MAX, u32::MAX, 0]),
            1.0
        );
    }

    #[test]
    fn matches_pair_counting_reference() {
        let mut rng = SplitMix64::new(17);
        for &(n, kt, kp) in &[
            (2, 2, 2),
            (10, 3, 2),
            (57, 4, 6),
            (300, 10, 10),
            (500, 2, 9),
        ] {
            let truth: Vec<u32> = (0..n).map(|_| rng.below(kt) as u32).collect();
            // Half the points keep their class (mapped), half are random: mid-range scores.
            let pred: Vec<u32> = truth
                .iter()
                .map(|&t| {
                    if rng.chance(0.5) {
                        (t * 7 + 1) % kp as u32
                    } else {
                        rng.below(kp) as u32
                    }
                })
                .collect();
            let got = adjusted_rand_index(&truth, &pred);
            let want = reference_ari(&truth, &pred);
            assert!((got - want).abs() < 1e-9, "n={n}: {got} vs {want}");
            assert!(close(adjusted_rand_index(&pred, &truth), got), "symmetric");
        }
    }

    #[test]
    fn from_counts_equals_from_labels() {
        let truth = [0, 0, 1, 1, 1, 2, 2];
        let pred = [1, 1, 0, 0, 1, 2, 2];
        let counts = vec![0, 2, 0, 2, 1, 0, 0, 0, 2];
        let table = Contingency::from_counts(3, 3, counts);
        assert_eq!(table, Contingency::from_labels(&truth, &pred));
        // Empty extra columns (clusters nobody landed in) change nothing.
        let padded = Contingency::from_counts(3, 4, vec![0, 2, 0, 0, 2, 1, 0, 0, 0, 0, 2, 0]);
        assert!(close(
            padded.adjusted_rand_index(),
            table.adjusted_rand_index()
        ));
        assert!(close(padded.purity(), table.purity()));
        assert!(close(table.purity(), 6.0 / 7.0));
    }

    #[test]
    #[should_panic(expected = "same length")]
    fn length_mismatch_panics() {
        adjusted_rand_index(&[0, 1], &[0]);
    }
}
