#!/usr/bin/env python3
"""Independent float64 reference of `mixatlas embed` (docs/real-data.md).

Why this exists: `mixatlas embed` implements Hugging Face `CLIPVisionModelWithProjection` and
`CLIPImageProcessor` in Rust (candle, the `image` crate, Pillow's resampling re-implemented).
This script computes the same thing from the equations with numpy in float64, decoding and
resizing with Pillow itself (what transformers' CLIPImageProcessor calls), without sharing a
line with the Rust side. tests/clip_hf_check.py checks it once against transformers.

Subcommands:

  make-checkpoint --out DIR --seed S [--hidden-act quick_gelu|gelu] [--dtype F32|F16|BF16]
                  [--wrapped] [--image-size 32] [--patch-size 8] [--shortest-edge N] [--drop KEY]
      Writes a small random checkpoint with transformers' exact key names and config fields:
      config.json (a CLIPVisionConfig, or with --wrapped a CLIPConfig holding it as
      vision_config), preprocessor_config.json (CLIPImageProcessor) and model.safetensors.
      H=32, I=48, L=2, heads=4, projection_dim=24; weights ~ N(0, 0.2^2), LayerNorm gains
      1 + N(0, 0.2^2).

  make-images --out DIR --seed S --count N
      Draws N images (PNG and JPEG; shapes, gradients, strokes like text; sizes from 9 to 300
      pixels a side, portrait, landscape, square; RGB, grey, RGBA and palette modes; JPEGs
      4:2:0, 4:4:4, progressive, or 4:2:2 with restart markers, in turn) and
      writes DIR/list.txt (`id<TAB>file`).

  embed --model DIR --images LIST --out FILE.json [--features none|pooled|patches:P]
      The reference as JSON: {"ids": [...], "embeds": [[D] ...], "features": [[[F] x P] ...]}.

  jpeg --spec FILE.json
      FILE holds [[png, variant, jpg, out], ...]: saves png as JPEG (quality 90 unless the
      variant says; variants: 444, 422, 420, 411, progressive, progressive444, restart (a
      restart marker every 2 MCUs), restart_rows, rgb (RGB-coded, no YCbCr), optimize, q5,
      q100, grey, grey_progressive, cmyk (Adobe CMYK)) and writes Pillow's
      `np.asarray(Image.open(jpg).convert("RGB"))` of it to out (raw uint8 [H, W, 3]).
      With png = "-", jpg is an existing JPEG, decoded only.

  resize --spec FILE.json
      FILE holds [[image, width, height, out], ...]; writes Pillow's
      `Image.open(image).convert("RGB").resize((width, height), BICUBIC)` (transparency
      composited onto white first, as transformers does) to each `out` as raw
      uint8 bytes [height, width, 3] (width, height = the image's own size: the decoded pixels).
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------- checkpoint

HIDDEN, INTER, LAYERS, HEADS, PROJ = 32, 48, 2, 4, 24


def vision_config(args):
    return {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "projection_dim": PROJ,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_channels": 3,
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "hidden_act": args.hidden_act,
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "torch_dtype": "float32",
    }


def random_weights(rng, cfg):
    h, i, p, s = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"], cfg["image_size"]
    t = (s // p) ** 2 + 1
    w = {}

    def n(*shape):
        return rng.normal(0.0, 0.2, size=shape)

    pre = "vision_model."
    w[pre + "embeddings.class_embedding"] = n(h)
    w[pre + "embeddings.patch_embedding.weight"] = n(h, 3, p, p)
    w[pre + "embeddings.position_embedding.weight"] = n(t, h)
    for name in ["pre_layrnorm", "post_layernorm"]:
        w[pre + name + ".weight"] = 1.0 + n(h)
        w[pre + name + ".bias"] = n(h)
    for layer in range(cfg["num_hidden_layers"]):
        lp = pre + "encoder.layers.%d." % layer
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            w[lp + "self_attn." + proj + ".weight"] = n(h, h)
            w[lp + "self_attn." + proj + ".bias"] = n(h)
        w[lp + "mlp.fc1.weight"] = n(i, h)
        w[lp + "mlp.fc1.bias"] = n(i)
        w[lp + "mlp.fc2.weight"] = n(h, i)
        w[lp + "mlp.fc2.bias"] = n(h)
        for ln in ["layer_norm1", "layer_norm2"]:
            w[lp + ln + ".weight"] = 1.0 + n(h)
            w[lp + ln + ".bias"] = n(h)
    w["visual_projection.weight"] = n(cfg["projection_dim"], h)
    return w


def to_dtype_bytes(a, dtype):
    """(the values as stored, raw little-endian bytes) of a float64 array in dtype."""
    if dtype == "F32":
        v = a.astype("<f4")
        return v.astype(np.float64), v.tobytes()
    if dtype == "F16":
        v = a.astype("<f2")
        return v.astype(np.float64), v.tobytes()
    # BF16: round to nearest even from float32.
    bits = a.astype("<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    stored = (rounded.astype(np.uint32) << 16).view("<f4").astype(np.float64)
    return stored.reshape(a.shape), rounded.tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        _, raw = to_dtype_bytes(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def preprocessor_config(args):
    edge = args.shortest_edge or args.image_size
    return {
        "crop_size": {"height": args.image_size, "width": args.image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": edge},
    }


def cmd_make_checkpoint(args):
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    cfg = vision_config(args)
    w = random_weights(rng, cfg)
    w.pop(args.drop, None)
    config = cfg
    if args.wrapped:
        config = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": PROJ,
                  "text_config": {"hidden_size": 16}, "vision_config": cfg}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor_config(args), f, indent=2)
    write_safetensors(os.path.join(args.out, "model.safetensors"), w, args.dtype)


# -------------------------------------------------------------------------------------- images

def draw_image(rng, k):
    w = int(rng.integers(9, 300))
    h = int(rng.integers(9, 300))
    if k % 5 == 0:
        h = w  # square
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    px = np.asarray(img).astype(np.float64)
    # A linear gradient in a random direction.
    yy, xx = np.mgrid[0:h, 0:w]
    ang = rng.uniform(0, 2 * math.pi)
    g = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)
    g = (g - g.min()) / max(g.max() - g.min(), 1e-9)
    col = rng.integers(0, 256, 3)
    px = px * (1 - g[..., None]) + col[None, None, :] * g[..., None]
    img = Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 6))):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        [d.rectangle, d.ellipse][int(rng.integers(0, 2))]([x0, y0, x1, y1], fill=fill)
    # Strokes like text: short thin polylines in rows.
    for row in range(int(rng.integers(0, 4))):
        y = int(rng.integers(0, h))
        x = int(rng.integers(0, max(w // 2, 1)))
        for _ in range(int(rng.integers(2, 10))):
            pts = [(x + int(rng.integers(0, 6)), y + int(rng.integers(-4, 5))) for _ in range(3)]
            d.line(pts, fill=(0, 0, 0), width=1)
            x += 7
    return img


JPEG_KINDS = [{}, {"subsampling": 0}, {"progressive": True},
              {"subsampling": 1, "restart_marker_blocks": 3}]


def cmd_make_images(args):
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    lines = []
    for k in range(args.count):
        img = draw_image(rng, k)
        mode = ["RGB", "RGB", "L", "RGBA", "P"][k % 5]
        if mode == "RGBA":
            a = Image.fromarray(rng.integers(0, 256, (img.size[1], img.size[0])).astype(np.uint8))
            img = img.convert("RGBA")
            img.putalpha(a)
        elif mode != "RGB":
            img = img.convert(mode)
        jpeg = k % 2 == 1 and mode in ("RGB", "L")
        name = "img%03d.%s" % (k, "jpg" if jpeg else "png")
        if jpeg:
            # JPEG kinds in turn: 4:2:0 baseline, 4:4:4, progressive, 4:2:2 with restart markers
            # (grey images cycle through the same options where they apply).
            opts = JPEG_KINDS[(k // 2) % len(JPEG_KINDS)]
            img.save(os.path.join(args.out, name), quality=90, **opts)
        else:
            img.save(os.path.join(args.out, name))
        lines.append("im%03d\t%s" % (k, name))
    with open(os.path.join(args.out, "list.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------- reference

def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        s, e = meta["data_offsets"]
        raw = data[base + s: base + e]
        if meta["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4").astype(np.float64)
        elif meta["dtype"] == "F16":
            a = np.frombuffer(raw, "<f2").astype(np.float64)
        elif meta["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
        else:
            raise SystemExit("unsupported dtype " + meta["dtype"])
        out[name] = a.reshape(meta["shape"])
    return out


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if isinstance(cfg.get("vision_config"), dict):
        cfg = cfg["vision_config"]
    with open(os.path.join(model_dir, "preprocessor_config.json")) as f:
        pre = json.load(f)
    return cfg, pre, load_safetensors(os.path.join(model_dir, "model.safetensors"))


def preprocess(path, pre):
    """CLIPImageProcessor: RGB (transparency over white), shortest-edge resize (Pillow bicubic), center crop, rescale,
    normalize; float64 [3, H, W]."""
    img = Image.open(path)
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        # transformers' convert_to_rgb: transparency is composited onto white.
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    img = img.convert("RGB")
    w, h = img.size
    size = pre["size"]
    edge = size["shortest_edge"] if isinstance(size, dict) else size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(edge * long / short)
    nw, nh = (edge, new_long) if w <= h else (new_long, edge)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample=pre.get("resample", 3))
    a = np.asarray(img)  # [H, W, 3] uint8
    ch, cw = pre["crop_size"]["height"], pre["crop_size"]["width"]
    H, W = a.shape[:2]
    top, left = (H - ch) // 2, (W - cw) // 2
    if ch > H or cw > W:
        nh2, nw2 = max(ch, H), max(cw, W)
        padded = np.zeros((nh2, nw2, 3), np.uint8)
        tp, lp = math.ceil((nh2 - H) / 2), math.ceil((nw2 - W) / 2)
        padded[tp:tp + H, lp:lp + W] = a
        a, top, left = padded, top + tp, left + lp
        H, W = nh2, nw2
    a = a[max(0, top):min(H, top + ch), max(0, left):min(W, left + cw)]
    x = a.astype(np.float64) * pre["rescale_factor"]
    x = (x - np.array(pre["image_mean"])) / np.array(pre["image_std"])
    return x.transpose(2, 0, 1)


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def act(x, name):
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    raise SystemExit("unsupported hidden_act " + name)


def tower(x, cfg, w):
    """x: [3, S, S] → (image_embeds [D], last_hidden [T, H])."""
    p, h, nh = cfg["patch_size"], cfg["hidden_size"], cfg["num_attention_heads"]
    eps = cfg.get("layer_norm_eps", 1e-5)
    g = x.shape[1] // p
    pre = "vision_model."
    conv = w[pre + "embeddings.patch_embedding.weight"]  # [h, 3, p, p]
    patches = np.zeros((g * g, h))
    for i in range(g):
        for j in range(g):
            patch = x[:, i * p:(i + 1) * p, j * p:(j + 1) * p]
            patches[i * g + j] = np.tensordot(conv, patch, axes=([1, 2, 3], [0, 1, 2]))
    cls = w[pre + "embeddings.class_embedding"][None, :]
    z = np.concatenate([cls, patches], 0) + w[pre + "embeddings.position_embedding.weight"]
    z = layer_norm(z, w[pre + "pre_layrnorm.weight"], w[pre + "pre_layrnorm.bias"], eps)
    hd = h // nh
    for layer in range(cfg["num_hidden_layers"]):
        lp = pre + "encoder.layers.%d." % layer

        def lin(v, name):
            return v @ w[lp + name + ".weight"].T + w[lp + name + ".bias"]

        y = layer_norm(z, w[lp + "layer_norm1.weight"], w[lp + "layer_norm1.bias"], eps)
        q = lin(y, "self_attn.q_proj") * hd ** -0.5
        k = lin(y, "self_attn.k_proj")
        v = lin(y, "self_attn.v_proj")
        out = np.zeros_like(y)
        for head in range(nh):
            sl = slice(head * hd, (head + 1) * hd)
            s = q[:, sl] @ k[:, sl].T
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out[:, sl] = s @ v[:, sl]
        z = z + lin(out, "self_attn.out_proj")
        y = layer_norm(z, w[lp + "layer_norm2.weight"], w[lp + "layer_norm2.bias"], eps)
        z = z + lin(act(lin(y, "mlp.fc1"), cfg.get("hidden_act", "quick_gelu")), "mlp.fc2")
    pooled = layer_norm(z[0], w[pre + "post_layernorm.weight"], w[pre + "post_layernorm.bias"], eps)
    return w["visual_projection.weight"] @ pooled, z


def pool_patches(tokens, grid, rows):
    """[grid², F] → [rows, F]: adaptive 2-D average pooling when rows is a square q² ≤ grid²
    (PyTorch's adaptive_avg_pool2d cells), else adaptive 1-D pooling of the raster order."""
    q = int(round(math.sqrt(rows)))
    out = []
    if q * q == rows and q <= grid:
        t = tokens.reshape(grid, grid, -1)
        for i in range(q):
            y0, y1 = i * grid // q, -((-(i + 1) * grid) // q)
            for j in range(q):
                x0, x1 = j * grid // q, -((-(j + 1) * grid) // q)
                out.append(t[y0:y1, x0:x1].reshape(-1, t.shape[-1]).mean(0))
    else:
        n = grid * grid
        for i in range(rows):
            s, e = i * n // rows, -((-(i + 1) * n) // rows)
            out.append(tokens[s:e].mean(0))
    return np.stack(out)


def read_list(path):
    base = os.path.dirname(os.path.abspath(path))
    items = []
    with open(path) as f:
        for line in f:
            if line.strip():
                i, p = line.rstrip("\n").split("\t", 1)
                items.append((i, os.path.join(base, p)))
    return items


def cmd_embed(args):
    cfg, pre, w = load_model(args.model)
    ids, embeds, feats = [], [], []
    g = cfg["image_size"] // cfg["patch_size"]
    for i, path in read_list(args.images):
        e, z = tower(preprocess(path, pre), cfg, w)
        ids.append(i)
        embeds.append(e)
        if args.features == "pooled":
            feats.append(e[None, :])
        elif args.features.startswith("patches:"):
            feats.append(pool_patches(z[1:], g, int(args.features.split(":")[1])))
    out = {"ids": ids, "embeds": [e.tolist() for e in embeds]}
    if feats:
        out["features"] = [f.tolist() for f in feats]
    with open(args.out, "w") as f:
        json.dump(out, f)


def cmd_resize(args):
    with open(args.spec) as f:
        spec = json.load(f)
    for image, width, height, out in spec:
        img = Image.open(image)
        if "A" in img.getbands():
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img.convert("RGBA"))
        img = img.convert("RGB")
        if (width, height) != img.size:
            img = img.resize((width, height), Image.BICUBIC)
        with open(out, "wb") as f:
            f.write(np.asarray(img).tobytes())


def cmd_jpeg(args):
    with open(args.spec) as f:
        spec = json.load(f)
    variants = {
        "444": {"subsampling": 0}, "422": {"subsampling": 1}, "420": {"subsampling": 2},
        "411": {"subsampling": "4:1:1"}, "progressive": {"progressive": True},
        "progressive444": {"progressive": True, "subsampling": 0},
        "restart": {"restart_marker_blocks": 2}, "restart_rows": {"restart_marker_rows": 1},
        "rgb": {"keep_rgb": True, "subsampling": 0}, "optimize": {"optimize": True},
        "q5": {"quality": 5}, "q100": {"quality": 100, "subsampling": 0},
        "grey": {}, "grey_progressive": {"progressive": True}, "cmyk": {},
    }
    for src, variant, jpg, out in spec:
        if src == "-":
            with open(out, "wb") as f:
                f.write(np.asarray(Image.open(jpg).convert("RGB")).tobytes())
            continue
        img = Image.open(src).convert("RGB")
        if variant.startswith("grey"):
            img = img.convert("L")
        elif variant == "cmyk":
            img = img.convert("CMYK")
        img.save(jpg, **{"quality": 90, **variants[variant]})
        with open(out, "wb") as f:
            f.write(np.asarray(Image.open(jpg).convert("RGB")).tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("make-checkpoint")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--hidden-act", default="quick_gelu")
    c.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    c.add_argument("--wrapped", action="store_true")
    c.add_argument("--image-size", type=int, default=32)
    c.add_argument("--patch-size", type=int, default=8)
    c.add_argument("--shortest-edge", type=int, default=0)
    c.add_argument("--drop", default="", help="leave this tensor out (error tests)")
    c = sub.add_parser("make-images")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--count", type=int, default=36)
    c = sub.add_parser("embed")
    c.add_argument("--model", required=True)
    c.add_argument("--images", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--features", default="none")
    c = sub.add_parser("resize")
    c.add_argument("--spec", required=True)
    c = sub.add_parser("jpeg")
    c.add_argument("--spec", required=True)
    args = ap.parse_args()
    {"make-checkpoint": cmd_make_checkpoint, "make-images": cmd_make_images,
     "embed": cmd_embed, "resize": cmd_resize, "jpeg": cmd_jpeg}[args.cmd](args)


if __name__ == "__main__":
    main()
