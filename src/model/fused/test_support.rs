//! Test helpers shared by the kernels' tests: every fused op is checked against the
//! composition of elementary candle ops it replaces, in f64: values and the gradients of a
//! random linear functional of the output, to ~1e-10.

use candle_core::{Device, Tensor, Var};

use crate::rng::SplitMix64;

/// A variable of `shape` with elements uniform in `[−scale, scale]`.
pub(super) fn randn(rng: &mut SplitMix64, shape: &[usize], scale: f64) -> Var {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) * scale)
        .collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest difference between `a` and `b`, relative to the largest magnitude of `b`.
pub(super) fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f64::max)
}

/// Checks `fused(inputs)` against `composed(inputs)`: outputs, and the gradients of
/// `Σ w ⊙ output` with respect to every input.
pub(super) fn check(
    inputs: &[&Var],
    fused: impl Fn(&[Tensor]) -> Tensor,
    composed: impl Fn(&[Tensor]) -> Tensor,
    tol: f64,
) {
    let xs: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, yc) = (fused(&xs), composed(&xs));
    assert_eq!(yf.shape(), yc.shape());
    let err = max_rel(&yf, &yc);
    assert!(err < tol, "values differ by {err:e}");
    let mut rng = SplitMix64::new(99);
    let w = randn(&mut rng, yf.dims(), 1.0);
    let gf = (&yf * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gc = (&yc * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, x) in xs.iter().enumerate() {
        let (a, b) = (
            gf.get(x).expect("fused gradient"),
            gc.get(x).expect("gradient"),
        );
        let err = max_rel(a, b);
        assert!(err < tol, "gradient of input {i} differs by {err:e}");
    }
}
