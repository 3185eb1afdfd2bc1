#!/usr/bin/env python3
"""One-off (optional, not run by CI) check of tests/qwen2_ref.py against Hugging Face transformers.

Needs `pip install torch transformers safetensors`; without them it prints a message and exits 0
("skipped"). Run from the repository root:

    python3 tests/qwen2_hf_check.py [--workdir DIR] [--tolerance 1e-10]

What it does, all in float64 on the CPU:
  * builds tiny random `Qwen2ForCausalLM` models (V=64, H=32, I=48, L=2, n_h=4, n_kv=2), with
    weights ~ N(0, 0.3^2) and RMSNorm gains 1 + N(0, 0.3^2) so that every tensor matters;
  * writes them with `save_pretrained(safe_serialization=True)`: tied and untied, as F64, F32,
    BF16 and F16 files, and sharded (model.safetensors.index.json);
  * adds a LLaVA `mlp2x_gelu` projector (nn.Linear(D, H), nn.GELU(), nn.Linear(H, H)) under
    `model.mm_projector.{0,2}.*` plus `mm_hidden_size`/`image_token_index` in config.json, and
    runs HF on `inputs_embeds` whose image-token rows are the projected patches (docs/model.md);
  * loads checkpoints written by `qwen2_ref.py make-random` with HF `from_pretrained`;
  * runs `qwen2_ref.py forward` on the same sequences (different lengths, 1..16 tokens) and
    compares logits and log-probabilities.

Precision note: transformers' Qwen2 computes the RMSNorm variance and the rotary cos/sin tables in
float32 even when the model is float64 (`hidden_states.to(torch.float32)` in Qwen2RMSNorm,
`inv_freq`/`freqs` in float32 in Qwen2RotaryEmbedding), which limits agreement to ~1e-7. The check
therefore runs HF twice: as shipped (reported, loose bound 1e-5), and with those two modules patched
to compute in float64 with the same formulas (the bound --tolerance applies to this one). Attention
runs through transformers' "sdpa" path, which stays in float64.
"""

import argparse
import copy
import json
import math
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "qwen2_ref.py")

try:
    import torch
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2 import modeling_qwen2
except ImportError as e:  # optional check
    print("qwen2_hf_check.py: skipped (%s); pip install torch transformers safetensors" % e)
    sys.exit(0)

V, H, I, L, N_H, N_KV, D, IMAGE_TOKEN = 64, 32, 48, 2, 4, 2, 12, 3
SIGMA = 0.3

ORIGINAL_NORM_FORWARD = modeling_qwen2.Qwen2RMSNorm.forward
ORIGINAL_ROPE_FORWARD = modeling_qwen2.Qwen2RotaryEmbedding.forward


def norm_forward_f64(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def rope_forward_f64(self, x, position_ids):
    base = self.config.rope_parameters["rope_theta"]
    dim = self.inv_freq.shape[0] * 2
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = position_ids[..., None].to(torch.float64) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def set_precision(full_f64):
    modeling_qwen2.Qwen2RMSNorm.forward = norm_forward_f64 if full_f64 else ORIGINAL_NORM_FORWARD
    modeling_qwen2.Qwen2RotaryEmbedding.forward = rope_forward_f64 if full_f64 else ORIGINAL_ROPE_FORWARD


def random_model(seed, tied, theta):
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=V,
        hidden_size=H,
        intermediate_size=I,
        num_hidden_layers=L,
        num_attention_heads=N_H,
        num_key_value_heads=N_KV,
        rope_theta=theta,
        rms_norm_eps=1e-6,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(config).to(torch.float64).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + SIGMA * torch.randn_like(p))
            else:
                p.copy_(SIGMA * torch.randn_like(p))
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def random_projector(seed):
    torch.manual_seed(seed)
    proj = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.GELU(), torch.nn.Linear(H, H)).to(torch.float64)
    with torch.no_grad():
        for p in proj.parameters():
            p.copy_(SIGMA * torch.randn_like(p))
    return proj


def add_projector(directory, proj):
    """Adds model.mm_projector.* to model.safetensors and mm_hidden_size/image_token_index to config.json."""
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    dtype = next(iter(tensors.values())).dtype
    for key, value in proj.state_dict().items():
        tensors["model.mm_projector." + key] = value.to(dtype).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
    cfg_path = os.path.join(directory, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["mm_hidden_size"] = D
    cfg["image_token_index"] = IMAGE_TOKEN
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)


def sequences(seed, with_images, vocab=V):
    rng = random.Random(seed)
    out = []
    for length in (16, 7, 1):
        tokens = [rng.randrange(vocab) for _ in range(length)]
        if with_images:
            tokens = [t if t != IMAGE_TOKEN else IMAGE_TOKEN + 1 for t in tokens]
        out.append({"tokens": tokens})
    if with_images:
        # Image tokens at the start, consecutive, and late; two images of 3 and 1 patches.
        tokens = [rng.randrange(vocab) for _ in range(12)]
        tokens = [t if t != IMAGE_TOKEN else IMAGE_TOKEN + 1 for t in tokens]
        for pos in (0, 1, 2, 9):
            tokens[pos] = IMAGE_TOKEN
        images = [[[rng.gauss(0, 1) for _ in range(D)] for _ in range(3)], [[rng.gauss(0, 1) for _ in range(D)]]]
        out.append({"tokens": tokens, "images": images})
        tokens = [5, IMAGE_TOKEN, 7, 8, IMAGE_TOKEN]
        images = [[[rng.gauss(0, 2) for _ in range(D)] for _ in range(2)]]
        out.append({"tokens": tokens, "images": images})
    return out


def hf_forward(model, proj, seqs):
    logits = []
    with torch.no_grad():
        for seq in seqs:
            ids = torch.tensor([seq["tokens"]], dtype=torch.long)
            emb = model.model.embed_tokens(ids)
            patches = [p for image in seq.get("images", []) for p in image]
            if patches:
                positions = [t for t, tok in enumerate(seq["tokens"]) if tok == IMAGE_TOKEN]
                assert len(positions) == len(patches)
                projected = proj(torch.tensor(patches, dtype=torch.float64))
                emb = emb.clone()
                emb[0, positions] = projected
            logits.append(model(inputs_embeds=emb).logits[0].to(torch.float64))
    return logits


def ref_forward(directory, seqs, workdir):
    inp = os.path.join(workdir, "input.json")
    out = os.path.join(workdir, "output.json")
    with open(inp, "w") as f:
        json.dump({"sequences": seqs}, f)
    subprocess.run([sys.executable, REF, "forward", "--checkpoint", directory, "--input", inp, "--output", out], check=True)
    with open(out) as f:
        return json.load(f)


def compare(ref, hf_logits, seqs):
    """(max |ref-hf| / max |hf| over logits, max |ref-hf| over log-probabilities)."""
    worst_abs, scale, worst_lp = 0.0, 0.0, 0.0
    for s, (seq, hf) in enumerate(zip(seqs, hf_logits)):
        ref_l = torch.tensor(ref["logits"][s], dtype=torch.float64)
        assert ref_l.shape == hf.shape, (ref_l.shape, hf.shape)
        worst_abs = max(worst_abs, (ref_l - hf).abs().max().item())
        scale = max(scale, hf.abs().max().item())
        lp = torch.log_softmax(hf, dim=-1)
        toks = seq["tokens"]
        hf_lp = [lp[t, toks[t + 1]].item() for t in range(len(toks) - 1)]
        assert len(ref["logprobs"][s]) == len(hf_lp)
        for a, b in zip(ref["logprobs"][s], hf_lp):
            worst_lp = max(worst_lp, abs(a - b))
    return worst_abs / scale, worst_lp


def proj_from_file(directory):
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    d = tensors["model.mm_projector.0.weight"].shape[1]
    h = tensors["model.mm_projector.0.weight"].shape[0]
    proj = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, h)).to(torch.float64)
    proj.load_state_dict({k[len("model.mm_projector.") :]: v.to(torch.float64) for k, v in tensors.items() if k.startswith("model.mm_projector.")})
    return proj


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", help="keep checkpoints here (default: a temporary directory)")
    ap.add_argument("--tolerance", type=float, default=1e-10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    workdir = args.workdir or tempfile.mkdtemp(prefix="qwen2_hf_check_")
    os.makedirs(workdir, exist_ok=True)
    print("torch %s, transformers %s; checkpoints in %s" % (torch.__version__, transformers.__version__, workdir))

    # (name, directory, model for HF, projector, sequences)
    cases = []

    def saved(name, model, dtype, proj=None, shard=None):
        directory = os.path.join(workdir, name)
        kwargs = {"safe_serialization": True}
        if shard:
            kwargs["max_shard_size"] = shard
        # Save a converted copy: converting `model` in place would also round its rotary
        # inv_freq buffer to `dtype`.
        copy.deepcopy(model).to(dtype).save_pretrained(directory, **kwargs)
        if dtype != torch.float64:
            # HF runs on exactly the values the file holds (rounded to dtype).
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(dtype).to(torch.float64))
        if proj is not None:
            add_projector(directory, copy.deepcopy(proj).to(dtype))
            with torch.no_grad():
                for p in proj.parameters():
                    p.copy_(p.to(dtype).to(torch.float64))
        return directory

    m = random_model(1, tied=True, theta=10000.0)
    cases.append(("hf tied F64 text", saved("tied_f64", m, torch.float64), m, None, sequences(11, False)))
    m = random_model(2, tied=False, theta=5000.0)
    cases.append(("hf untied F32 text", saved("untied_f32", m, torch.float32), m, None, sequences(12, False)))
    m = random_model(3, tied=False, theta=10000.0)
    cases.append(("hf untied F64 sharded", saved("untied_sharded", m, torch.float64, shard="40KB"), m, None, sequences(13, False)))
    m = random_model(4, tied=True, theta=1e6)
    cases.append(("hf tied BF16 text", saved("tied_bf16", m, torch.bfloat16), m, None, sequences(14, False)))
    m = random_model(5, tied=False, theta=10000.0)
    cases.append(("hf untied F16 text", saved("untied_f16", m, torch.float16), m, None, sequences(15, False)))
    m, p = random_model(6, tied=True, theta=10000.0), random_projector(60)
    cases.append(("hf tied F64 + projector", saved("tied_f64_proj", m, torch.float64, proj=p), m, p, sequences(16, True)))
    m, p = random_model(7, tied=False, theta=10000.0), random_projector(70)
    cases.append(("hf untied F32 + projector", saved("untied_f32_proj", m, torch.float32, proj=p), m, p, sequences(17, True)))

    # Checkpoints written by qwen2_ref.py make-random, loaded by HF.
    for name, flags, images in (
        ("make-random tied", ["--tied"], False),
        ("make-random untied", ["--untied"], False),
        ("make-random tied + projector", ["--tied", "--image-dim", str(D)], True),
    ):
        directory = os.path.join(workdir, name.replace(" ", "_").replace("+", "p"))
        subprocess.run([sys.executable, REF, "make-random", "--out", directory, "--seed", "9"] + flags, check=True, stdout=subprocess.DEVNULL)
        model = Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="sdpa").eval()
        proj = proj_from_file(directory) if images else None
        seqs = sequences(18, images, vocab=48)
        cases.append((name, directory, model, proj, seqs))

    # Also: HF reloads one of its own projector checkpoints (unexpected mm_projector keys are ignored).
    reloaded = Qwen2ForCausalLM.from_pretrained(os.path.join(workdir, "tied_f64_proj"), dtype=torch.float64, attn_implementation="sdpa").eval()
    cases.append(("hf reload tied F64 + projector", os.path.join(workdir, "tied_f64_proj"), reloaded, cases[5][3], cases[5][4]))

    worst_patched, worst_shipped, worst_lp = 0.0, 0.0, 0.0
    ok = True
    for name, directory, model, proj, seqs in cases:
        ref = ref_forward(directory, seqs, workdir)
        set_precision(full_f64=False)
        shipped, _ = compare(ref, hf_forward(model, proj, seqs), seqs)
        set_precision(full_f64=True)
        patched, lp = compare(ref, hf_forward(model, proj, seqs), seqs)
        worst_patched, worst_shipped, worst_lp = max(worst_patched, patched), max(worst_shipped, shipped), max(worst_lp, lp)
        good = patched <= args.tolerance and shipped <= 1e-5
        ok &= good
        print("%-34s rel err (f64 HF) %.2e  (HF as shipped) %.2e  logprob abs err %.2e  %s" % (name, patched, shipped, lp, "ok" if good else "FAIL"))
    print(
        json.dumps(
            {
                "max_rel_err_f64": worst_patched,
                "max_rel_err_hf_as_shipped": worst_shipped,
                "max_logprob_abs_err_f64": worst_lp,
                "tolerance": args.tolerance,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "passed": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
