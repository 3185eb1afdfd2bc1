//! Agreement between predictions and measurements: Spearman's rank correlation (ties get the
//! mean of their ranks, as `scipy.stats.spearmanr` does), Pearson's correlation and the root
//! mean squared error. Used by `mixatlas bench regmix-predict` to score a surrogate's
//! held-out predictions.

/// Ranks `1..=n` of `v` (ascending), ties sharing the mean of the ranks they span.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && v[idx[j]] == v[idx[i]] {
            j += 1;
        }
        // Positions i..j (0-based) hold ranks i+1..=j; their mean is (i + 1 + j) / 2.
        let mean = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            r[k] = mean;
        }
        i = j;
    }
    r
}

/// Pearson's correlation of `a` and `b` (equal lengths, at least 2); NaN when either is
/// constant.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "pearson: lengths differ");
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman's rank correlation: Pearson's correlation of the ranks ([`ranks`]).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Root mean squared difference of `a` and `b` (equal lengths).
pub fn rmse(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rmse: lengths differ");
    let s: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    (s / a.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            ranks(&[3.0, 1.0, 4.0, 1.0, 5.0]),
            vec![3.0, 1.5, 4.0, 1.5, 5.0]
        );
        assert_eq!(ranks(&[2.0, 2.0, 2.0]), vec![2.0, 2.0, 2.0]);
    }

    #[test]
    fn against_scipy() {
        // scipy.stats.spearmanr / numpy.corrcoef (scipy 1.17.1, numpy 2.x) on these values:
        // spearman 0.6087595874350709, pearson 0.5693040864574423.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [2.0, 1.0, 4.0, 3.0, 7.0, 3.0];
        assert!((spearman(&a, &b) - 0.608_759_587_435_070_9).abs() < 1e-12);
        assert!((pearson(&a, &b) - 0.569_304_086_457_442_3).abs() < 1e-12);
        // A monotone but non-linear map has rank correlation exactly 1 (and -1 reversed).
        let c: Vec<f64> = a.iter().map(|x: &f64| x.exp()).collect();
        assert!((spearman(&a, &c) - 1.0).abs() < 1e-15);
        let d: Vec<f64> = c.iter().map(|x| -x).collect();
        assert!((spearman(&a, &d) + 1.0).abs() < 1e-15);
        assert!(pearson(&a, &c) < 0.95);
    }

    #[test]
    fn rmse_closed_form() {
        assert!((rmse(&[0.0, 0.0], &[3.0, 4.0]) - 12.5f64.sqrt()).abs() < 1e-15);
    }
}
