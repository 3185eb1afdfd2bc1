#!/usr/bin/env python3
"""Independent reference of MixAtlas's end-of-run benchmark scores (src/train/eval.rs).

Why this exists: the trainer decodes every held-out answer greedily and scores it with its
benchmark's metric. This script redoes both from scratch: the float64 forward pass of
tests/qwen2_ref.py (no code shared with the Rust side), one document at a time, and the metrics
written out from their definitions. Standard library only.

    eval_ref.py --checkpoint DIR --raw RAW_DIR --samples N --vocab VOCAB_JSON

RAW_DIR is the `synth` output the corpus was prepared from: the first N documents of each
`benchmarks/<name>.jsonl` are the ones the trainer evaluates (prepare keeps their order; image
features are stored as float16, so they are rounded the same way here). Prints JSON
{"scores": {name: mean score}, "metrics": {name: metric}, "answers": {name: [[ids], ...]}}.

Decoding: greedy, the first of equal maxima; a row stops at <eos> (not part of the answer), at
an image token (kept: it makes the answer wrong) or at 5 tokens past its reference's length.
"""

import argparse
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qwen2_ref  # noqa: E402

EOS = 2


def f16(x):
    """x rounded to float32, then to float16 (how prepare stores image features)."""
    x32 = struct.unpack("<f", struct.pack("<f", x))[0]
    return struct.unpack("<e", struct.pack("<e", x32))[0]


def metric_for(name):
    n = name.lower()
    if any(k in n for k in ("docvqa", "textvqa", "st-vqa", "infovqa", "ocr")):
        return "anls"
    if "cap" in n:
        return "token_f1"
    if "det" in n:
        return "item_f1"
    return "exact_match"


def edit_distance(a, b):
    # Full dynamic-programming table, written independently of the Rust two-row version.
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[len(a)][len(b)]


def f1(pred, ref):
    if not pred and not ref:
        return 1.0
    left = {}
    for r in ref:
        left[r] = left.get(r, 0) + 1
    hits = 0
    for p in pred:
        if left.get(p, 0) > 0:
            left[p] -= 1
            hits += 1
    if hits == 0:
        return 0.0
    precision, recall = hits / len(pred), hits / len(ref)
    return 2 * precision * recall / (precision + recall)


def items(seq, sep):
    out, cur = [], []
    for t in seq:
        if t == sep:
            if cur:
                out.append(tuple(cur))
            cur = []
        else:
            cur.append(t)
    if cur:
        out.append(tuple(cur))
    return out


def score(metric, pred, ref, sep):
    if metric == "exact_match":
        return 1.0 if pred == ref else 0.0
    if metric == "anls":
        longest = max(len(pred), len(ref))
        if longest == 0:
            return 1.0
        nl = edit_distance(pred, ref) / longest
        return 1.0 - nl if nl < 0.5 else 0.0
    if metric == "token_f1":
        return f1(pred, ref)
    return f1(items(pred, sep), items(ref, sep))


def greedy(model, prompt, image, cap):
    seq, answer = list(prompt), []
    while True:
        logits = model.forward_sequence(0, seq, [image])[-1]
        nxt = max(range(len(logits)), key=lambda i: (logits[i], -i))
        seq.append(nxt)
        if nxt == EOS:
            return answer
        answer.append(nxt)
        if nxt == model.image_token or len(answer) >= cap:
            return answer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--vocab", required=True)
    args = ap.parse_args()
    config, tensors = qwen2_ref.load_checkpoint(args.checkpoint)
    model = qwen2_ref.Model(config, tensors)
    with open(args.vocab) as f:
        vocab = json.load(f)
    sep = vocab.index(";") if ";" in vocab else None
    bench_dir = os.path.join(args.raw, "benchmarks")
    scores, metrics, answers = {}, {}, {}
    for fname in sorted(os.listdir(bench_dir)):
        if not fname.endswith(".jsonl"):
            continue
        name = fname[: -len(".jsonl")]
        metric = metric_for(name)
        total, got = 0.0, []
        with open(os.path.join(bench_dir, fname)) as f:
            docs = [json.loads(line) for line, _ in zip(f, range(args.samples))]
        for doc in docs:
            tokens, p = doc["tokens"], doc["prompt_len"]
            ref = tokens[p:]
            if ref and ref[-1] == EOS:
                ref = ref[:-1]
            image = [[f16(x) for x in patch] for patch in doc["image"]]
            pred = greedy(model, tokens[:p], image, len(ref) + 5)
            got.append(pred)
            total += score(metric, pred, ref, sep)
        scores[name] = total / len(docs)
        metrics[name] = metric
        answers[name] = got
    print(json.dumps({"scores": scores, "metrics": metrics, "answers": answers}))


if __name__ == "__main__":
    main()
