#!/usr/bin/env python3
"""PyTorch peer of MixAtlas's built-in trainer: full training steps of the docs/model.md model.

The model is the architecture of docs/model.md (Hugging Face Qwen2 + LLaVA mlp2x_gelu projector)
written in plain PyTorch, float32 on the CPU:
  * token embedding; with --image-dim D > 0, the first --image-tokens positions after position 0
    of every row (positions 1..K) are image tokens whose embeddings are replaced by
    Linear(D, H) -> GELU(erf) -> Linear(H, H) of random patch features (default on, D=32, K=8,
    like the Rust trainer);
  * per layer: x + o_proj(attn(rope(q), rope(k), v)) with q/k/v biases, RMSNorm
    x * rsqrt(mean(x^2) + eps) * g before attention and before the SwiGLU MLP
    down(silu(gate(x)) * up(x)); attention is F.scaled_dot_product_attention(is_causal=True)
    with the n_kv key/value heads repeated to n_h (head j uses kv head j // (n_h / n_kv));
  * final RMSNorm, LM head tied to the embedding (all presets here are tied);
  * init N(0, 0.02) for every matrix and the embedding, biases 0, gains 1.

One training step, timed as a whole: forward, masked next-token cross-entropy (sum over counted
positions / their number; a target counts unless it is an image token), backward,
AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1 on every parameter, PyTorch's
defaults otherwise) step, zero_grad(set_to_none=True). Batches are random tokens drawn before
timing (4 batches, used in turn). --warmup steps are run first, then --steps are timed;
step_s is the median over the timed steps (wall clock, perf_counter; median
because a shared machine's load spikes skew the mean; the mean and min are printed too), tokens_per_s = B*T / step_s.

Presets (V, H, I, L, n_h, n_kv, theta; all tied, eps 1e-6):
  tiny    128,  64,  176, 2, 4, 2, 1e4   the Rust `tiny` preset
  small   128, 256,  704, 4, 8, 4, 1e4   the Rust `small` preset
  gpt-5m  128, 256, 1024, 4, 8, 8, 1e4   a GPT-sized check point: multi-head attention
          (n_kv = n_h), H=256, L=4 and a SwiGLU width of 1024; still this architecture (RMSNorm,
          RoPE, SwiGLU, q/k/v biases), not GPT-2's. About 4.2 M parameters (+ projector).

Usage:
    python3 benches/peers/torch_train.py --preset tiny [--batch 8] [--seq 256] [--threads 2]
        [--warmup 3] [--steps 10] [--image-dim 32] [--image-tokens 8] [--seed 0]
    (--image-dim 0 for text only)
Prints one JSON line:
  {"peer":"pytorch","preset","threads","batch","seq","params","step_s","tokens_per_s","torch",
   "image_dim","image_tokens","warmup","steps","step_s_mean","step_s_min","loss_first","loss_last"}
Needs: pip install torch
"""

import argparse
import json
import statistics
import sys
import time

PRESETS = {
    "tiny": dict(V=128, H=64, I=176, L=2, n_h=4, n_kv=2, theta=1e4),
    "small": dict(V=128, H=256, I=704, L=4, n_h=8, n_kv=4, theta=1e4),
    "gpt-5m": dict(V=128, H=256, I=1024, L=4, n_h=8, n_kv=8, theta=1e4),
}
EPS = 1e-6
INIT_STD = 0.02


def build(torch, cfg, image_dim, max_len):
    nn = torch.nn
    F = torch.nn.functional

    class RMSNorm(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            H, n_h, n_kv = cfg["H"], cfg["n_h"], cfg["n_kv"]
            self.n_h, self.n_kv, self.hd = n_h, n_kv, H // n_h
            self.q_proj = nn.Linear(H, n_h * self.hd, bias=True)
            self.k_proj = nn.Linear(H, n_kv * self.hd, bias=True)
            self.v_proj = nn.Linear(H, n_kv * self.hd, bias=True)
            self.o_proj = nn.Linear(n_h * self.hd, H, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, self.n_h, self.hd).transpose(1, 2)
            k = self.k_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
            v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            group = self.n_h // self.n_kv
            if group > 1:
                k = k.repeat_interleave(group, dim=1)
                v = v.repeat_interleave(group, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(o.transpose(1, 2).reshape(B, T, self.n_h * self.hd))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            H, I = cfg["H"], cfg["I"]
            self.gate_proj = nn.Linear(H, I, bias=False)
            self.up_proj = nn.Linear(H, I, bias=False)
            self.down_proj = nn.Linear(I, H, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(cfg["H"])
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(cfg["H"])
            self.mlp = MLP()

        def forward(self, h, cos, sin):
            h = h + self.self_attn(self.input_layernorm(h), cos, sin)
            return h + self.mlp(self.post_attention_layernorm(h))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            H = cfg["H"]
            self.embed_tokens = nn.Embedding(cfg["V"], H)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg["L"]))
            self.norm = RMSNorm(H)
            self.mm_projector = (
                nn.Sequential(nn.Linear(image_dim, H), nn.GELU(), nn.Linear(H, H)) if image_dim > 0 else None
            )
            hd = H // cfg["n_h"]
            inv_freq = cfg["theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            angle = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
            angle = torch.cat((angle, angle), dim=-1)
            self.register_buffer("cos", angle.cos().float(), persistent=False)
            self.register_buffer("sin", angle.sin().float(), persistent=False)
            for name, p in self.named_parameters():
                with torch.no_grad():
                    if name.endswith("norm.weight"):
                        p.fill_(1.0)
                    elif name.endswith("bias"):
                        p.zero_()
                    else:
                        p.normal_(0.0, INIT_STD)

        def forward(self, tokens, image_positions=None, patches=None):
            T = tokens.shape[1]
            h = self.embed_tokens(tokens)
            if patches is not None:
                # Replace the embeddings at the image positions (same positions in every row).
                h = h.clone()
                h[:, image_positions] = self.mm_projector(patches)
            cos, sin = self.cos[:T], self.sin[:T]
            for layer in self.layers:
                h = layer(h, cos, sin)
            return self.norm(h) @ self.embed_tokens.weight.t()  # tied head

    return Model()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--image-dim", type=int, default=32, help="0 disables the projector path")
    ap.add_argument("--image-tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print("missing Python package (%s); install with: pip install torch" % e, file=sys.stderr)
        return 2
    if args.image_dim > 0 and not 0 < args.image_tokens < args.seq:
        print("--image-tokens must be in [1, seq)", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = PRESETS[args.preset]
    B, T, K = args.batch, args.seq, (args.image_tokens if args.image_dim > 0 else 0)
    model = build(torch, cfg, args.image_dim, T)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    image_token = 3
    image_positions = torch.arange(1, 1 + K)
    batches = []
    for _ in range(4):
        tokens = torch.randint(0, cfg["V"], (B, T))
        mask = torch.ones(B, T)
        patches = None
        if K:
            tokens[:, image_positions] = image_token
            mask[:, image_positions] = 0.0
            patches = torch.randn(B, K, args.image_dim)
        batches.append((tokens, mask, patches))

    def step(i):
        tokens, mask, patches = batches[i % len(batches)]
        logits = model(tokens, image_positions if K else None, patches)
        per_token = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, cfg["V"]), tokens[:, 1:].reshape(-1), reduction="none"
        )
        counted = mask[:, 1:].reshape(-1)
        loss = (per_token * counted).sum() / counted.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step(i) for i in range(args.warmup)]
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        losses.append(step(args.warmup + i))
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    print(
        json.dumps(
            {
                "peer": "pytorch",
                "preset": args.preset,
                "threads": args.threads,
                "batch": B,
                "seq": T,
                "params": params,
                "step_s": step_s,
                "tokens_per_s": B * T / step_s,
                "torch": torch.__version__,
                "image_dim": args.image_dim,
                "image_tokens": K,
                "warmup": args.warmup,
                "steps": args.steps,
                "step_s_mean": sum(times) / len(times),
                "step_s_min": min(times),
                "loss_first": losses[0],
                "loss_last": losses[-1],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
