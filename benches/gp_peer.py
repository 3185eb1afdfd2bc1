#!/usr/bin/env python3
"""scikit-learn / numpy peer of `benches/gp.rs`: the same GP problems, timed in Python.

Run by the Rust benchmark with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS set to its own rayon
thread count; can also be run by hand:

    OMP_NUM_THREADS=2 python3 benches/gp_peer.py target/bench-data/gp_d50.json

The data file (written by the benchmark) holds a training set (n = 128, d = 50), a held-out
set with noise-free targets, and a posterior problem (n = 512 points, 10 000 queries, fixed
Matern-5/2 hyperparameters). Two measurements:

  fit        GaussianProcessRegressor(ConstantKernel * Matern(length_scale=ones(d), nu=2.5)
             + WhiteKernel, n_restarts_optimizer=2, normalize_y=True, random_state=0).fit(X, y),
             timed once; rmse = RMSE of its predicted mean on the held-out points.
  posterior  plain numpy/SciPy with the given hyperparameters: Cholesky of K + noise I,
             K* by the |a|^2 + |b|^2 - 2ab expansion (one matmul), mean = K*^T alpha, variance
             from one triangular solve; median of 3 (the factorisation included).

Prints one JSON object: {fit_seconds, rmse, posterior_seconds, versions}.
Needs: pip install numpy scikit-learn (SciPy comes with scikit-learn).
"""

import json
import statistics
import sys
import time
import warnings


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import numpy as np
        import scipy
        import sklearn
        from scipy.linalg import cho_factor, cho_solve, solve_triangular
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    except ImportError as e:
        print(f"missing Python package ({e}); install with: pip install numpy scikit-learn",
              file=sys.stderr)
        return 3

    # Lengthscales at their bounds are reported as warnings; the fit is still what we time.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    d = data["d"]
    xtr = np.asarray(data["train"]["x"], dtype=np.float64)
    ytr = np.asarray(data["train"]["y"], dtype=np.float64)
    xte = np.asarray(data["test"]["x"], dtype=np.float64)
    fte = np.asarray(data["test"]["f"], dtype=np.float64)

    kernel = (ConstantKernel(1.0, (1e-3, 1e3))
              * Matern(length_scale=np.ones(d), length_scale_bounds=(1e-3, 1e5), nu=2.5)
              + WhiteKernel(1e-2, (1e-8, 1e1)))
    gpr = GaussianProcessRegressor(kernel=kernel, n_restarts_optimizer=2, normalize_y=True,
                                   random_state=0)
    t = time.perf_counter()
    gpr.fit(xtr, ytr)
    fit_seconds = time.perf_counter() - t
    pred = gpr.predict(xte)
    rmse = float(np.sqrt(np.mean((pred - fte) ** 2)))

    p = data["posterior"]
    x = np.asarray(p["x"], dtype=np.float64)
    y = np.asarray(p["y"], dtype=np.float64)
    q = np.asarray(p["queries"], dtype=np.float64).reshape(p["m"], d)
    ls = np.asarray(p["lengthscales"], dtype=np.float64)
    s2, noise, mean = p["outputscale"], p["noise"], p["mean"]
    s5 = np.sqrt(5.0)

    def matern(r2):
        r = np.sqrt(np.maximum(r2, 0.0))
        return s2 * (1.0 + s5 * r + 5.0 / 3.0 * r * r) * np.exp(-s5 * r)

    def posterior():
        a = x / ls
        b = q / ls
        na = (a * a).sum(1)
        nb = (b * b).sum(1)
        k = matern(na[:, None] + na[None, :] - 2.0 * a @ a.T)
        k[np.diag_indices_from(k)] += noise
        c = cho_factor(k, lower=True)
        alpha = cho_solve(c, y - mean)
        ks = matern(na[:, None] + nb[None, :] - 2.0 * a @ b.T)
        mu = mean + ks.T @ alpha
        v = solve_triangular(c[0], ks, lower=True, check_finite=False)
        var = s2 - (v * v).sum(0)
        return mu, var

    times = []
    for _ in range(3):
        t = time.perf_counter()
        posterior()
        times.append(time.perf_counter() - t)

    json.dump({
        "fit_seconds": fit_seconds,
        "rmse": rmse,
        "posterior_seconds": statistics.median(times),
        "fitted_kernel": str(gpr.kernel_),
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "sklearn": sklearn.__version__},
    }, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
