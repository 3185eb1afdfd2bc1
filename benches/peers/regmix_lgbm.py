#!/usr/bin/env python3
"""LightGBM peer of `mixatlas bench regmix-predict`: RegMix's published regressor on RegMix's
released 1M-parameter proxy runs, the same split and the same figures.

Data (RegMix, sail-sg/regmix `data/`; a copy in ../shared/data/regmix/): train_mixture_1m.csv +
train_pile_loss_1m.csv (512 runs) to fit, test_mixture_1m.csv + test_pile_loss_1m.csv (256
runs) to score. Features: the 17 domain weights exactly as printed (3 decimals); target: the
validation loss on one Pile subset (default Pile-CC, `metric/the_pile_pile_cc_val_loss`).

Settings: those of RegMix's notebook (regression_fitting/regression.ipynb, the cell that fits
one LGBMRegressor per metric):

    LGBMRegressor(task='train', boosting_type='gbdt', objective='regression',
                  metric=['l1', 'l2'], num_iterations=1000, seed=42, learning_rate=1e-2,
                  verbosity=-1)   # LightGBM's defaults otherwise (num_leaves 31, ...)
    fit(X_train, y, eval_set=[(X_test, y_test)], eval_metric='l2',
        callbacks=[early_stopping(stopping_rounds=3)])

Note that the published fit stops early on the *held-out* runs themselves (eval_set is the
test set), i.e. it looks at the test losses to choose the number of rounds. Three variants are
printed, so the comparison is honest either way:

  published     exactly the above (early stopping on the 256 test runs);
  no-stopping   the same settings, all 1000 rounds, no look at the test runs;
  cv-stopping   rounds chosen by 5-fold cross-validation on the 512 training runs
                (lgb.cv, stopping_rounds=3, same params), then refitted on all 512.

Figures, on the 256 test runs: Spearman rho and Pearson r between predicted and true loss,
RMSE of the predicted loss, and the fit's wall time (seconds; the cv variant includes its
cross-validation). Prints a table, or one JSON object with --json.

    python3 benches/peers/regmix_lgbm.py [--data ../shared/data/regmix] [--target pile_cc] [--json]

(--data defaults to the repository's sibling directory shared/data/regmix.)

Needs: pip install lightgbm scikit-learn scipy numpy (run with OMP_NUM_THREADS=2 on a 2-core machine).
"""

import argparse
import csv
import json
import os
import sys
import time
import warnings


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def load(data, split, target):
    mh, mrows = read_csv(os.path.join(data, f"{split}_mixture_1m.csv"))
    lh, lrows = read_csv(os.path.join(data, f"{split}_pile_loss_1m.csv"))
    col = f"metric/the_pile_{target}_val_loss"
    if col not in lh:
        raise SystemExit(f"{split}_pile_loss_1m.csv: no column {col!r}; expected one of {lh[1:]}")
    loss = {r[0]: float(r[lh.index(col)]) for r in lrows}
    x, y = [], []
    for r in mrows:
        if r[0] not in loss:
            raise SystemExit(f"{split}_mixture_1m.csv: run index {r[0]} has no loss row")
        x.append([float(v) for v in r[1:]])
        y.append(loss[r[0]])
    return x, y


PARAMS = {
    "task": "train",
    "boosting_type": "gbdt",
    "objective": "regression",
    "metric": ["l1", "l2"],
    "num_iterations": 1000,
    "seed": 42,
    "learning_rate": 1e-2,
    "verbosity": -1,
}


def figures(np, spearmanr, pred, y, seconds, rounds):
    pred, y = np.asarray(pred), np.asarray(y)
    return {
        "spearman": float(spearmanr(pred, y)[0]),
        "pearson": float(np.corrcoef(pred, y)[0, 1]),
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "fit_seconds": seconds,
        "rounds": rounds,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    # The repository's sibling ../shared/data/regmix, as `mixatlas bench regmix-predict`.
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "..", "shared", "data", "regmix"))
    ap.add_argument("--target", default="pile_cc")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        import lightgbm as lgb
        import numpy as np
        from scipy.stats import spearmanr
    except ImportError as e:
        raise SystemExit(f"{e}: pip install lightgbm scikit-learn scipy numpy")
    xtr, ytr = load(a.data, "train", a.target)
    xte, yte = load(a.data, "test", a.target)
    xtr, ytr, xte, yte = map(np.asarray, (xtr, ytr, xte, yte))
    np.random.seed(42)
    # RegMix's call passes eval_set, which LightGBM 4.7 deprecates in favour of eval_X/eval_y.
    warnings.filterwarnings("ignore", message=".*eval_set.*")
    out = {}

    t = time.perf_counter()
    reg = lgb.LGBMRegressor(**PARAMS).fit(
        xtr, ytr, eval_set=[(xte, yte)], eval_metric="l2",
        callbacks=[lgb.early_stopping(stopping_rounds=3, verbose=False)])
    s = time.perf_counter() - t
    out["published"] = figures(np, spearmanr, reg.predict(xte), yte, s, int(reg.best_iteration_))

    t = time.perf_counter()
    reg = lgb.LGBMRegressor(**PARAMS).fit(xtr, ytr)
    s = time.perf_counter() - t
    out["no-stopping"] = figures(np, spearmanr, reg.predict(xte), yte, s, PARAMS["num_iterations"])

    t = time.perf_counter()
    p = {k: v for k, v in PARAMS.items() if k not in ("task", "num_iterations")}
    p["metric"] = "l2"
    cv = lgb.cv(p, lgb.Dataset(xtr, ytr), num_boost_round=PARAMS["num_iterations"], nfold=5,
                stratified=False, shuffle=True, seed=42,
                callbacks=[lgb.early_stopping(stopping_rounds=3, verbose=False)])
    rounds = len(next(iter(cv.values())))
    q = dict(PARAMS, num_iterations=rounds)
    reg = lgb.LGBMRegressor(**q).fit(xtr, ytr)
    s = time.perf_counter() - t
    out["cv-stopping"] = figures(np, spearmanr, reg.predict(xte), yte, s, rounds)

    out["n_train"], out["n_test"], out["target"] = len(ytr), len(yte), a.target
    out["versions"] = {"lightgbm": lgb.__version__, "numpy": np.__version__,
                       "python": sys.version.split()[0]}
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"LightGBM (RegMix's settings), {a.target} loss, {len(ytr)} train / {len(yte)} test runs")
    print(f"{'variant':<12} {'spearman':>9} {'pearson':>9} {'rmse':>8} {'fit s':>7} {'rounds':>6}")
    for k in ("published", "no-stopping", "cv-stopping"):
        f = out[k]
        print(f"{k:<12} {f['spearman']:9.4f} {f['pearson']:9.4f} {f['rmse']:8.4f} "
              f"{f['fit_seconds']:7.2f} {f['rounds']:6d}")


if __name__ == "__main__":
    main()
