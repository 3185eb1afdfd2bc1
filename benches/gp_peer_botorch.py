#!/usr/bin/env python3
"""BoTorch peer of `benches/gp.rs`: a whole `suggest` round in BoTorch, timed.

Run by the Rust benchmark (next to `benches/gp_peer.py`) with OMP_NUM_THREADS and the BLAS
thread counts set to its own rayon thread count; can also be run by hand:

    OMP_NUM_THREADS=2 python3 benches/gp_peer_botorch.py target/bench-data/gp_d50.json

On the training set of the data file (n = 128, d = 50, flat-Dirichlet mixtures) it times,
in float64 on the CPU, with BoTorch's defaults everywhere else:

  fit     SingleTaskGP(X, y) (its default Matern-5/2 ARD kernel, dimension-scaled priors,
          Standardize outcome transform) + fit_gpytorch_mll(ExactMarginalLogLikelihood);
          rmse = RMSE of the posterior mean on the held-out points against the noise-free f.
  acqf_q1 optimize_acqf(UpperConfidenceBound(beta), q=1, bounds [0, 1]^d, equality
          constraint sum(x) = 1, num_restarts=10, raw_samples=512) (BoTorch tutorial values).
  acqf_q8 the same with qUpperConfidenceBound(beta) and q=8, sequential=True (greedy batch,
          BoTorch's counterpart of our GP-BUCB round).

beta is the data file's `beta` (the β of our round: the scaled Srinivas schedule at
n = 128, d = 50), else computed the same way; BoTorch's UCB is mu + sqrt(beta) sigma, as ours.
round = fit + acqf_q8 is what our `suggest` round (fit + q = 8) is compared with.

Prints one JSON object: {fit_seconds, rmse, acqf_q1_seconds, acqf_q8_seconds,
round_seconds, beta, versions, ...}.
Needs: pip install botorch (pulls torch, gpytorch, linear_operator).
"""

import json
import math
import sys
import time
import warnings


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch
        import botorch
        import gpytorch
        from botorch.acquisition import UpperConfidenceBound, qUpperConfidenceBound
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.optim import optimize_acqf
        from gpytorch.mlls import ExactMarginalLogLikelihood
    except ImportError as e:
        print(f"missing Python package ({e}); install with: pip install botorch",
              file=sys.stderr)
        return 3

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    dtype = torch.float64
    with open(sys.argv[1]) as f:
        data = json.load(f)
    d = data["d"]
    xtr = torch.tensor(data["train"]["x"], dtype=dtype)
    ytr = torch.tensor(data["train"]["y"], dtype=dtype).unsqueeze(-1)
    xte = torch.tensor(data["test"]["x"], dtype=dtype)
    fte = torch.tensor(data["test"]["f"], dtype=dtype)
    n = xtr.shape[0]
    beta = data.get("beta")
    if beta is None:
        # Our default: 0.1 x Srinivas et al.'s beta_t, delta = 0.1, t = n + 1.
        beta = 0.1 * 2.0 * math.log(d * (n + 1) ** 2 * math.pi ** 2 / (6 * 0.1))

    def note(msg):
        print(f"[botorch peer] {msg}", file=sys.stderr, flush=True)

    note(f"fitting SingleTaskGP (n = {n}, d = {d}, {torch.get_num_threads()} threads)")
    t = time.perf_counter()
    model = SingleTaskGP(xtr, ytr)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    fit_gpytorch_mll(mll)
    fit_seconds = time.perf_counter() - t

    model.eval()
    with torch.no_grad():
        pred = model.posterior(xte).mean.squeeze(-1)
    rmse = float(torch.sqrt(torch.mean((pred - fte) ** 2)))

    bounds = torch.stack([torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)])
    simplex = [(torch.arange(d), torch.ones(d, dtype=dtype), 1.0)]

    def acqf(acq, q, **kw):
        t = time.perf_counter()
        x, v = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=10, raw_samples=512,
                             equality_constraints=simplex, **kw)
        return time.perf_counter() - t, x, v

    note(f"fit {fit_seconds:.2f} s, rmse {rmse:.5f}; optimize_acqf UCB q = 1")
    q1_seconds, x1, v1 = acqf(UpperConfidenceBound(model, beta=beta), 1)
    note(f"q = 1 {q1_seconds:.2f} s; optimize_acqf qUCB q = 8, sequential")
    q8_seconds, x8, _ = acqf(qUpperConfidenceBound(model, beta=beta), 8, sequential=True)

    json.dump({
        "fit_seconds": fit_seconds,
        "rmse": rmse,
        "acqf_q1_seconds": q1_seconds,
        "acqf_q8_seconds": q8_seconds,
        "round_seconds": fit_seconds + q8_seconds,
        "beta": beta,
        "ucb_q1": float(v1),
        "max_sum_error": float((torch.cat([x1, x8]).sum(-1) - 1).abs().max()),
        "min_coordinate": float(torch.cat([x1, x8]).min()),
        "threads": torch.get_num_threads(),
        "versions": {"botorch": botorch.__version__, "gpytorch": gpytorch.__version__,
                     "torch": torch.__version__},
    }, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
