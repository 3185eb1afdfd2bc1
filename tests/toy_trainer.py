#!/usr/bin/env python3
"""An external trainer for the search tests: speaks MixAtlas's trial protocol, trains nothing.

Reads the trial's mixture (MIXATLAS_MIXTURE, or --mixture), computes two benchmark scores from a
known function of the mixture's concept and task marginals, and writes metrics.json into the
trial directory (MIXATLAS_TRIAL_DIR, or --out) atomically (temp file + rename), as a real trainer
must. The optimum is known: marginals equal to TARGET_CONCEPTS / TARGET_TASKS give score 1.

    score(w) = 1 - 5 * (|p_concept(w) - c*|^2 + |p_task(w) - t*|^2)

Options: --sleep S (pretend to train), --fail-once (exit 1 on the first attempt: the search must
retry), --curve (also write a held-out `curve`: steps 10, 20, 40 with scores s - 0.3, s - 0.1,
s), --record-argv (write the arguments received to argv.json in the trial directory; --blend B
and extra positional arguments, such as a blend's words, are accepted and ignored), standard library only.
"""

import argparse
import json
import os
import sys
import time

TASKS = ["captioning", "ocr", "grounding", "detection", "vqa"]
TARGET_TASKS = {"captioning": 0.1, "ocr": 0.4, "grounding": 0.2, "detection": 0.1, "vqa": 0.2}


def target_concepts(concepts):
    """c*: weight 3 on the first two concepts, 1 on the rest, normalised."""
    raw = [3.0 if i < 2 else 1.0 for i in range(len(concepts))]
    s = sum(raw)
    return {c: r / s for c, r in zip(concepts, raw)}


def score(weights):
    concepts = sorted({name.split("/")[0] for name in weights})
    pc = {c: 0.0 for c in concepts}
    pt = {t: 0.0 for t in TASKS}
    for name, w in weights.items():
        c, t = name.split("/")
        pc[c] += w
        pt[t] = pt.get(t, 0.0) + w
    cstar = target_concepts(concepts)
    d = sum((pc[c] - cstar[c]) ** 2 for c in concepts)
    d += sum((pt.get(t, 0.0) - TARGET_TASKS.get(t, 0.0)) ** 2 for t in set(pt) | set(TARGET_TASKS))
    return 1.0 - 5.0 * d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixture", default=os.environ.get("MIXATLAS_MIXTURE"))
    ap.add_argument("--out", default=os.environ.get("MIXATLAS_TRIAL_DIR"))
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--fail-once", action="store_true")
    ap.add_argument("--score-of", help="print the score of a mixture file and exit")
    ap.add_argument("--curve", action="store_true")
    ap.add_argument("--record-argv", action="store_true")
    ap.add_argument("--blend")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    if a.record_argv:
        with open(os.path.join(a.out, "argv.json"), "w") as f:
            json.dump(sys.argv[1:], f)
    if a.score_of:
        with open(a.score_of) as f:
            m = json.load(f)
        print(score(m.get("weights", m)))
        return 0
    if a.fail_once and os.environ.get("MIXATLAS_ATTEMPT") == "1":
        print("simulated failure on the first attempt", file=sys.stderr)
        return 1
    with open(a.mixture) as f:
        weights = json.load(f)["weights"]
    time.sleep(a.sleep)
    s = score(weights)
    metrics = {"benchmarks": {"alpha": s, "beta": s}, "train_loss": 1.0 - s}
    if a.curve:
        metrics["curve"] = [
            {"step": step, "benchmarks": {"alpha": s - d, "beta": s - d}}
            for step, d in [(10, 0.3), (20, 0.1), (40, 0.0)]
        ]
    tmp = os.path.join(a.out, ".metrics.json.tmp")
    with open(tmp, "w") as f:
        json.dump(metrics, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(a.out, "metrics.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
