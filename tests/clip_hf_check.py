#!/usr/bin/env python3
"""Check (run by tests/embed.rs when MIXATLAS_TORCH_PYTHON names a python with torch, as
scripts/test.sh sets it) of `mixatlas embed` and tests/clip_ref.py against
Hugging Face transformers' CLIPVisionModelWithProjection and its Pillow image processor.

Needs `pip install torch transformers numpy pillow`; without them it prints a message and exits 0
("skipped"). Run from the repository root after `cargo build --release`:

    python3 tests/clip_hf_check.py [--bin target/release/mixatlas] [--workdir DIR]

What it does:
  * builds small random CLIPVisionModelWithProjection models with transformers (H=32, I=48,
    L=2, 4 heads, projection 24, image 32, patch 8; quick_gelu and gelu), every parameter
    redrawn ~ N(0, 0.2^2) (LayerNorm gains 1 + N(0, 0.2^2)) so that each one matters, and
    writes them with `save_pretrained` (safetensors, F32 and F16) plus
    `CLIPImageProcessorPil(...).save_pretrained` (preprocessor_config.json);
  * draws PNG and JPEG images with tests/clip_ref.py make-images;
  * computes image_embeds with transformers (float32, and float64 for the reference), through
    CLIPImageProcessorPil (transformers 5 names the Pillow backend so; with torchvision
    installed, plain CLIPImageProcessor is a torchvision backend with another resize);
  * runs `mixatlas embed` and `clip_ref.py embed` on the same directory and images and prints
    the max relative errors (max |a - b| / max |b| per image), PNG and JPEG separately.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "clip_ref.py")

try:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4: the Pillow processor is CLIPImageProcessor
        from transformers import CLIPImageProcessor as Processor
except ImportError as e:
    print("skipped: %s (pip install torch transformers numpy pillow)" % e)
    sys.exit(0)


def make_model(out, act, dtype, seed):
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=48, projection_dim=24,
                           num_hidden_layers=2, num_attention_heads=4, image_size=32,
                           patch_size=8, hidden_act=act)
    model = CLIPVisionModelWithProjection(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn_like(p) * 0.2
            p.copy_(1.0 + noise if ("norm" in name or "layrnorm" in name) and name.endswith("weight") else noise)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)


def hf_embeds(model_dir, paths, dtype):
    proc = Processor.from_pretrained(model_dir)
    model = CLIPVisionModelWithProjection.from_pretrained(model_dir, torch_dtype=torch.float32)
    model = model.to(dtype).eval()
    out = []
    with torch.no_grad():
        for p in paths:
            px = proc(images=Image.open(p), return_tensors="pt")["pixel_values"].to(dtype)
            out.append(model(pixel_values=px).image_embeds[0].double().numpy())
    return np.stack(out)


def rel(a, b):
    return np.abs(a - b).max(1) / np.abs(b).max(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "mixatlas"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--count", type=int, default=36)
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="clip_hf_")
    im = os.path.join(work, "im")
    subprocess.run([sys.executable, REF, "make-images", "--out", im, "--count", str(args.count)], check=True)
    lines = [l.split("\t") for l in open(os.path.join(im, "list.txt")).read().split("\n") if l]
    paths = [os.path.join(im, p) for _, p in lines]
    jpeg = np.array([p.endswith(".jpg") for p in paths])
    worst = 0.0
    for act, dt in [("quick_gelu", torch.float32), ("gelu", torch.float32), ("quick_gelu", torch.float16)]:
        ck = os.path.join(work, "ck_%s_%s" % (act, str(dt).split(".")[1]))
        make_model(ck, act, dt, seed=len(ck))
        hf32 = hf_embeds(ck, paths, torch.float32)
        hf64 = hf_embeds(ck, paths, torch.float64)
        out = os.path.join(work, "out_" + os.path.basename(ck))
        subprocess.run([args.bin, "embed", "--model", ck, "--images", os.path.join(im, "list.txt"),
                        "--out", out, "--part-size", "10"], check=True)
        ours = np.concatenate([np.load(f) for f in sorted(glob.glob(os.path.join(out, "part-*[0-9].npy")))])
        ref_json = os.path.join(work, "ref_%s.json" % os.path.basename(ck))
        subprocess.run([sys.executable, REF, "embed", "--model", ck, "--images",
                        os.path.join(im, "list.txt"), "--out", ref_json], check=True)
        ref = np.array(json.load(open(ref_json))["embeds"])
        for name, a, b in [("mixatlas vs transformers f32", ours, hf32),
                           ("mixatlas vs transformers f64", ours, hf64),
                           ("clip_ref.py vs transformers f64", ref, hf64),
                           ("transformers f32 vs f64", hf32, hf64)]:
            r = rel(a, b)
            print("%-12s %-8s %-34s PNG %.2e  JPEG %.2e" % (act, str(dt).split(".")[1], name,
                                                            r[~jpeg].max(), r[jpeg].max()))
            if name.startswith("mixatlas vs transformers f"):
                worst = max(worst, r.max())
    print("worst relative error of mixatlas embed against transformers: %.2e" % worst)
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
