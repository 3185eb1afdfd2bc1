#!/usr/bin/env python3
"""scikit-learn peer of `benches/kmeans.rs`: k-means on the same raw f32 data, same settings.

Run by the Rust benchmark with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS set to its own rayon
thread count; can also be run by hand:

    OMP_NUM_THREADS=2 python3 benches/kmeans_sklearn.py \\
        --data target/bench-data/kmeans_1m_512.f32 --n 1000000 --d 512 --k 10

Two measurements, each the median over --repeats fits (data already in memory, loading and
the float64 recomputation excluded):
  own_seed      KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed,
                algorithm="lloyd").fit(X): scikit-learn's own k-means++ and Lloyd.
  shared_start  with --init-out PATH: the centres of sklearn.cluster.kmeans_plusplus(X, k,
                random_state=seed) are written to PATH (raw f32, k × d) and Lloyd is timed from
                them (init=<those centres>); the Rust side refines from the same file, so both
                run Lloyd from one start and should reach the same inertia.
Each reports: seconds, all_seconds, inertia (scikit-learn's inertia_, accumulated in float32 for
float32 input), inertia_f64 (same labels and centres, summed in float64), n_iter.
Prints one JSON object on stdout. Needs: pip install numpy scikit-learn
"""

import argparse
import json
import os
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="raw little-endian f32, n × d row-major")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--init-out", help="write scikit-learn's k-means++ centres here (raw f32)")
    args = ap.parse_args()

    try:
        import numpy as np
        import sklearn
        from sklearn.cluster import KMeans, kmeans_plusplus
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    except ImportError as e:
        print(f"missing Python package ({e}); install with: pip install numpy scikit-learn",
              file=sys.stderr)
        return 3

    x = np.fromfile(args.data, dtype="<f4", count=args.n * args.d)
    if x.size != args.n * args.d:
        print(f"{args.data}: expected {args.n * args.d} f32 values, found {x.size}",
              file=sys.stderr)
        return 2
    x = x.reshape(args.n, args.d)

    def measure(init):
        times = []
        km = None
        for _ in range(args.repeats):
            km = KMeans(
                n_clusters=args.k,
                init=init,
                n_init=1,
                max_iter=args.max_iter,
                tol=args.tol,
                random_state=args.seed,
                algorithm="lloyd",
            )
            t0 = time.perf_counter()
            km.fit(x)
            times.append(time.perf_counter() - t0)
        centers = km.cluster_centers_.astype(np.float64)
        labels = km.labels_
        inertia_f64 = 0.0
        step = 65536
        for i in range(0, args.n, step):
            diff = x[i:i + step].astype(np.float64) - centers[labels[i:i + step]]
            inertia_f64 += float(np.einsum("ij,ij->", diff, diff))
        return {
            "seconds": statistics.median(times),
            "all_seconds": times,
            "inertia": float(km.inertia_),
            "inertia_f64": inertia_f64,
            "n_iter": int(km.n_iter_),
        }

    out = {
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "threads": _openmp_effective_n_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "own_seed": measure("k-means++"),
    }
    if args.init_out:
        centres, _ = kmeans_plusplus(x, args.k, random_state=args.seed)
        centres = np.ascontiguousarray(centres, dtype="<f4")
        centres.tofile(args.init_out)
        out["shared_start"] = measure(centres)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
