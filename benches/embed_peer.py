#!/usr/bin/env python3
"""Peer of `mixatlas bench embed`: images/s of Hugging Face transformers
(CLIPImageProcessorPil + CLIPVisionModelWithProjection, float32, CPU) on the same checkpoint and
images, timed the same way (one warm-up batch, then the median of --repeats passes over all
images; each pass = open + preprocess + forward, batch by batch).

    python3 benches/embed_peer.py --make-checkpoint DIR      # a random ViT-B/32-shaped checkpoint
    python3 benches/embed_peer.py --model DIR --images LIST [--batch 32] [--threads 2]
    mixatlas bench embed --model DIR --images LIST [--batch 32]   # RAYON_NUM_THREADS=2

Needs torch, transformers, pillow; without them it prints "skipped" and exits 0.
"""

import argparse
import os
import statistics
import sys
import time

try:
    import torch
    from PIL import Image
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
except ImportError as e:
    print("skipped: %s" % e)
    sys.exit(0)


def make_checkpoint(out):
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, projection_dim=512,
                           num_hidden_layers=12, num_attention_heads=12, image_size=224,
                           patch_size=32, hidden_act="quick_gelu")
    CLIPVisionModelWithProjection(cfg).save_pretrained(out, safe_serialization=True)
    Processor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(out)


def read_list(path):
    base = os.path.dirname(os.path.abspath(path))
    return [os.path.join(base, l.split("\t", 1)[1]) for l in open(path).read().splitlines() if l.strip()]


def one_pass(proc, model, paths, batch):
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            imgs = [Image.open(p) for p in paths[i:i + batch]]
            px = proc(images=imgs, return_tensors="pt")["pixel_values"]
            model(pixel_values=px).image_embeds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-checkpoint")
    ap.add_argument("--model")
    ap.add_argument("--images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.make_checkpoint:
        make_checkpoint(a.make_checkpoint)
        return
    torch.set_num_threads(a.threads)
    proc = Processor.from_pretrained(a.model)
    model = CLIPVisionModelWithProjection.from_pretrained(a.model).eval()
    paths = read_list(a.images)
    one_pass(proc, model, paths[:a.batch], a.batch)
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        one_pass(proc, model, paths, a.batch)
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print("transformers %s: %d images, batch %d, %d threads: %.2f s, %.1f images/s"
          % (torch.__version__, len(paths), a.batch, a.threads, s, len(paths) / s))


if __name__ == "__main__":
    main()
