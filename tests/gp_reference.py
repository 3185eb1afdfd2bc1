#!/usr/bin/env python3
"""Independent float64 reference for `tests/gp.rs`: textbook exact GP regression.

Pure Python standard library (no numpy), for small problems (n <= ~40). Reads one JSON object
on stdin:

    {"kernel": "matern52" | "rbf", "x": [[...], ...], "y": [...],
     "lengthscales": [...], "outputscale": s2, "noise": sigma2, "mean": m,
     "linear": c (optional, default 0), "queries": [[...], ...]}

and prints {"lml": ..., "mean": [...], "var": [...]} where, with
K = s2 * phi(r) + c (x - xbar)^T (x' - xbar) + sigma2 * I, r^2 = sum_k ((x_k - x'_k) / l_k)^2
and xbar the mean of the training inputs,

    lml  = -1/2 (y - m)^T K^-1 (y - m) - 1/2 log det K - n/2 log(2 pi)
    mean = m + k*^T K^-1 (y - m)
    var  = k(x*, x*) - k*^T K^-1 k*   (latent function, no observation noise)

Nothing is standardised or rescaled here: the Rust side does both internally, and the
comparison checks that its results do not depend on that.
"""

import json
import math
import sys


def phi(kernel, r2):
    if kernel == "matern52":
        r = math.sqrt(r2)
        s5 = math.sqrt(5.0)
        return (1.0 + s5 * r + 5.0 / 3.0 * r2) * math.exp(-s5 * r)
    if kernel == "rbf":
        return math.exp(-0.5 * r2)
    raise ValueError(f"unknown kernel {kernel!r}")


def cov(kernel, a, b, ls, s2, c=0.0, xbar=None):
    r2 = sum(((u - v) / l) ** 2 for u, v, l in zip(a, b, ls))
    lin = c * sum((u - z) * (v - z) for u, v, z in zip(a, b, xbar)) if c else 0.0
    return s2 * phi(kernel, r2) + lin


def cholesky(a):
    n = len(a)
    l = [[0.0] * n for _ in range(n)]
    for j in range(n):
        s = a[j][j] - sum(l[j][k] ** 2 for k in range(j))
        if s <= 0.0:
            raise ValueError(f"matrix not positive definite at pivot {j}")
        l[j][j] = math.sqrt(s)
        for i in range(j + 1, n):
            l[i][j] = (a[i][j] - sum(l[i][k] * l[j][k] for k in range(j))) / l[j][j]
    return l


def solve_lower(l, b):
    n = len(l)
    x = [0.0] * n
    for i in range(n):
        x[i] = (b[i] - sum(l[i][k] * x[k] for k in range(i))) / l[i][i]
    return x


def solve_upper_t(l, b):
    """Solves L^T x = b."""
    n = len(l)
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (b[i] - sum(l[k][i] * x[k] for k in range(i + 1, n))) / l[i][i]
    return x


def main():
    p = json.load(sys.stdin)
    kernel, x, y = p["kernel"], p["x"], p["y"]
    ls, s2, noise, m = p["lengthscales"], p["outputscale"], p["noise"], p["mean"]
    n = len(y)
    c = p.get("linear", 0.0)
    xbar = [sum(col) / n for col in zip(*x)]
    k = [[cov(kernel, x[i], x[j], ls, s2, c, xbar) + (noise if i == j else 0.0)
          for j in range(n)] for i in range(n)]
    l = cholesky(k)
    r = [v - m for v in y]
    u = solve_lower(l, r)
    alpha = solve_upper_t(l, u)
    lml = (-0.5 * math.fsum(v * v for v in u) - math.fsum(math.log(l[i][i]) for i in range(n))
           - 0.5 * n * math.log(2.0 * math.pi))
    means, variances = [], []
    for q in p["queries"]:
        ks = [cov(kernel, xi, q, ls, s2, c, xbar) for xi in x]
        means.append(m + math.fsum(a * b for a, b in zip(ks, alpha)))
        v = solve_lower(l, ks)
        variances.append(cov(kernel, q, q, ls, s2, c, xbar) - math.fsum(t * t for t in v))
    json.dump({"lml": lml, "mean": means, "var": variances}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
