#!/usr/bin/env python3
"""Independent float64 reference of MixAtlas's built-in model (docs/model.md).

Why this exists: the Rust trainer implements Hugging Face's `Qwen2ForCausalLM` plus LLaVA-1.5's
`mlp2x_gelu` image projector in candle. This script computes the same forward pass from the
equations in docs/model.md without sharing a line of code with the Rust side. It uses only the
Python 3 standard library (no numpy: CI has nothing but `python3`), computes in float64 with plain
loops, and parses safetensors by hand. It has been checked once against Hugging Face
transformers (tests/qwen2_hf_check.py; see docs/model-reference.md for the figure).

Subcommands:

  forward --checkpoint DIR --input FILE [--output FILE]
      DIR holds config.json and model.safetensors, or the shards named in
      model.safetensors.index.json. FILE is JSON:
          {"sequences": [{"tokens": [ids], "images": [[[D floats] x patches] ...]}, ...]}
      ("images" optional: a list of images, each a list of patch feature vectors of length
      mm_hidden_size). Every sequence is its own row starting at position 0; lengths may differ.
      Image patches go to the positions of `image_token_index`: the k-th such token of a
      sequence takes the k-th patch of that sequence's images, in order. The number of image
      tokens must equal the number of patches (either surplus is an error).
      Writes (to --output, or stdout) JSON:
          {"logits": [[[V floats] per position] per sequence],
           "logprobs": [[log p(tokens[t+1] | tokens[..=t]) for t in 0..len-1] per sequence]}

  make-random --out DIR --seed S [--tied | --untied] [--image-dim D]
      Writes a small random checkpoint (config.json + model.safetensors, F32) that the Rust
      loader can be tested on: V=48, H=16, I=40, L=2, n_h=4, n_kv=2, theta=10000, eps=1e-6,
      max_position_embeddings=64; with --image-dim D also mm_hidden_size=D,
      image_token_index=3 and the projector. Every weight matrix and bias ~ N(0, 0.3^2) and
      every RMSNorm gain ~ 1 + N(0, 0.3^2) (far from HF's init, so that a transposed matrix, a
      dropped bias or a skipped gain changes the logits visibly). Default --tied.

Any invalid input exits with status 1 and a message on stderr naming the problem (a missing
tensor by name, a wrong shape with both shapes).
"""

import argparse
import array
import json
import math
import os
import random
import struct
import sys


class Invalid(Exception):
    """Bad checkpoint, config or input; the message says what and where."""


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def decode_floats(dtype, raw, where):
    """Little-endian raw bytes of `dtype` -> list of Python floats."""
    if dtype == "F64":
        a = array.array("d")
        a.frombytes(raw)
    elif dtype == "F32":
        a = array.array("f")
        a.frombytes(raw)
    elif dtype == "F16":
        return list(struct.unpack("<%de" % (len(raw) // 2), raw))
    elif dtype == "BF16":
        # bfloat16 is the upper half of a float32: widen each u16 to u32 << 16.
        halves = array.array("H")
        halves.frombytes(raw)
        if sys.byteorder == "big":
            halves.byteswap()
        words = array.array("I", (h << 16 for h in halves))
        if sys.byteorder == "big":
            words.byteswap()
        a = array.array("f")
        a.frombytes(words.tobytes())
        return list(a)
    else:
        raise Invalid("%s: unsupported dtype %r (supported: %s)" % (where, dtype, ", ".join(DTYPE_SIZES)))
    if sys.byteorder == "big":
        a.byteswap()
    return list(a)


def read_safetensors(path):
    """Returns {name: (shape, flat list of floats)} of one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise Invalid("%s: shorter than the 8-byte header length" % path)
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise Invalid("%s: header length %d runs past the end of the file (%d bytes)" % (path, header_len, len(data)))
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Invalid("%s: header is not JSON: %s" % (path, e))
    if not isinstance(header, dict):
        raise Invalid("%s: header is not a JSON object" % path)
    body = data[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = "%s: tensor %s" % (path, name)
        try:
            dtype = info["dtype"]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise Invalid("%s: header entry needs dtype, shape and data_offsets, got %r" % (where, info))
        if dtype not in DTYPE_SIZES:
            raise Invalid("%s: unsupported dtype %r (supported: %s)" % (where, dtype, ", ".join(DTYPE_SIZES)))
        count = 1
        for s in shape:
            count *= s
        if not (0 <= begin <= end <= len(body)):
            raise Invalid("%s: data_offsets [%d, %d] outside the %d data bytes" % (where, begin, end, len(body)))
        if end - begin != count * DTYPE_SIZES[dtype]:
            raise Invalid(
                "%s: %d bytes for shape %s of %s, expected %d" % (where, end - begin, shape, dtype, count * DTYPE_SIZES[dtype])
            )
        tensors[name] = (shape, decode_floats(dtype, body[begin:end], where))
    return tensors


def load_checkpoint(directory):
    """(config dict, {name: (shape, flat floats)}) from a Hugging Face style directory."""
    config_path = os.path.join(directory, "config.json")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except OSError as e:
        raise Invalid("%s: cannot read: %s" % (config_path, e))
    except ValueError as e:
        raise Invalid("%s: not JSON: %s" % (config_path, e))
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(single):
        tensors = read_safetensors(single)
    elif os.path.exists(index):
        with open(index) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise Invalid("%s: needs a JSON object with a weight_map" % index)
        for shard in sorted(set(weight_map.values())):
            for name, value in read_safetensors(os.path.join(directory, shard)).items():
                if name in tensors:
                    raise Invalid("%s: tensor %s appears in more than one shard" % (directory, name))
                tensors[name] = value
        for name, shard in weight_map.items():
            if name not in tensors:
                raise Invalid("%s: weight_map puts %s in %s, which lacks it" % (index, name, shard))
    else:
        raise Invalid("%s: neither model.safetensors nor model.safetensors.index.json" % directory)
    return config, tensors


def write_safetensors(path, tensors):
    """tensors: {name: (shape, flat floats)}, written as F32, header padded to 8 bytes."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        a = array.array("f", values)
        if sys.byteorder == "big":
            a.byteswap()
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def config_int(config, key, default=None):
    value = config.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Invalid("config.json: %s must be a positive integer, got %r" % (key, value))
    return value


def config_float(config, key, default=None):
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise Invalid("config.json: %s must be a positive number, got %r" % (key, value))
    return float(value)


def rope_theta(config):
    """theta from `rope_theta` (transformers 4.x and docs/model.md) or from
    `rope_parameters.rope_theta` (what transformers 5.x writes instead); 10000 if neither, as
    Qwen2Config's default. Only plain RoPE is supported (no scaling)."""
    top = config.get("rope_theta")
    params = config.get("rope_parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise Invalid("config.json: rope_parameters must be an object, got %r" % (params,))
        if params.get("rope_type", "default") != "default":
            raise Invalid("config.json: rope_parameters.rope_type %r: only \"default\" is supported" % params.get("rope_type"))
        nested = params.get("rope_theta")
        if top is not None and nested is not None and float(top) != float(nested):
            raise Invalid("config.json: rope_theta %r and rope_parameters.rope_theta %r differ" % (top, nested))
        if top is None:
            top = nested
    scaling = config.get("rope_scaling")
    if scaling is not None and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise Invalid("config.json: rope_scaling %r is not supported" % (scaling,))
    return config_float({"rope_theta": 10000.0 if top is None else top}, "rope_theta")


class Model:
    def __init__(self, config, tensors):
        c = config
        self.V = config_int(c, "vocab_size")
        self.H = config_int(c, "hidden_size")
        self.I = config_int(c, "intermediate_size")
        self.L = config_int(c, "num_hidden_layers")
        self.n_h = config_int(c, "num_attention_heads")
        self.n_kv = config_int(c, "num_key_value_heads", self.n_h)
        self.theta = rope_theta(c)
        self.eps = config_float(c, "rms_norm_eps", 1e-6)
        self.max_pos = config_int(c, "max_position_embeddings", 32768)
        # Hugging Face's Qwen2Config defaults tie_word_embeddings to false.
        self.tied = bool(c.get("tie_word_embeddings", False))
        act = c.get("hidden_act", "silu")
        if act != "silu":
            raise Invalid("config.json: hidden_act must be \"silu\", got %r" % (act,))
        if self.H % self.n_h:
            raise Invalid("config.json: hidden_size %d is not a multiple of num_attention_heads %d" % (self.H, self.n_h))
        if self.n_h % self.n_kv:
            raise Invalid(
                "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d" % (self.n_h, self.n_kv)
            )
        self.hd = self.H // self.n_h
        if self.hd % 2:
            raise Invalid("config.json: head_dim %d must be even for rotary embeddings" % self.hd)
        if "head_dim" in c and c["head_dim"] is not None and c["head_dim"] != self.hd:
            raise Invalid("config.json: head_dim %r differs from hidden_size / num_attention_heads = %d" % (c["head_dim"], self.hd))
        if c.get("use_sliding_window"):
            raise Invalid("config.json: use_sliding_window is not supported (docs/model.md has full causal attention)")
        layer_types = c.get("layer_types")
        if layer_types is not None and any(t != "full_attention" for t in layer_types):
            raise Invalid("config.json: layer_types %r: only \"full_attention\" is supported" % (layer_types,))
        self.D = c.get("mm_hidden_size")
        if self.D is not None:
            self.D = config_int(c, "mm_hidden_size")
            self.image_token = c.get("image_token_index")
            if isinstance(self.image_token, bool) or not isinstance(self.image_token, int) or not 0 <= self.image_token < self.V:
                raise Invalid("config.json: image_token_index must be a token id below vocab_size, got %r" % (self.image_token,))
        else:
            self.image_token = None

        self.tensors = tensors
        H, I, V, hd = self.H, self.I, self.V, self.hd
        self.embed = self.matrix("model.embed_tokens.weight", V, H)
        self.layers = []
        for l in range(self.L):
            p = "model.layers.%d." % l
            self.layers.append(
                {
                    "g_in": self.vector(p + "input_layernorm.weight", H),
                    "Wq": self.matrix(p + "self_attn.q_proj.weight", self.n_h * hd, H),
                    "bq": self.vector(p + "self_attn.q_proj.bias", self.n_h * hd),
                    "Wk": self.matrix(p + "self_attn.k_proj.weight", self.n_kv * hd, H),
                    "bk": self.vector(p + "self_attn.k_proj.bias", self.n_kv * hd),
                    "Wv": self.matrix(p + "self_attn.v_proj.weight", self.n_kv * hd, H),
                    "bv": self.vector(p + "self_attn.v_proj.bias", self.n_kv * hd),
                    "Wo": self.matrix(p + "self_attn.o_proj.weight", H, self.n_h * hd),
                    "g_post": self.vector(p + "post_attention_layernorm.weight", H),
                    "Wg": self.matrix(p + "mlp.gate_proj.weight", I, H),
                    "Wu": self.matrix(p + "mlp.up_proj.weight", I, H),
                    "Wd": self.matrix(p + "mlp.down_proj.weight", H, I),
                }
            )
        self.g_final = self.vector("model.norm.weight", H)
        # Tied: the head is the embedding (a stored lm_head.weight is ignored, as HF does).
        self.head = self.embed if self.tied else self.matrix("lm_head.weight", V, H)
        # The projector is needed only when images are given (a text-only Qwen2 checkpoint has none).
        self.projector = None
        if self.D is not None and "model.mm_projector.0.weight" in tensors:
            self.projector = (
                self.matrix("model.mm_projector.0.weight", H, self.D),
                self.vector("model.mm_projector.0.bias", H),
                self.matrix("model.mm_projector.2.weight", H, H),
                self.vector("model.mm_projector.2.bias", H),
            )

        # Rotary frequencies: inv_freq[i] = theta^(-2i/hd), i < hd/2.
        self.inv_freq = [self.theta ** (-2.0 * i / hd) for i in range(hd // 2)]

    def tensor(self, name, shape):
        if name not in self.tensors:
            raise Invalid("checkpoint: missing tensor %s (expected shape %s)" % (name, shape))
        got, values = self.tensors[name]
        if list(got) != list(shape):
            raise Invalid("checkpoint: tensor %s has shape %s, expected %s" % (name, list(got), list(shape)))
        return values

    def matrix(self, name, rows, cols):
        flat = self.tensor(name, [rows, cols])
        return [flat[r * cols : (r + 1) * cols] for r in range(rows)]

    def vector(self, name, n):
        return self.tensor(name, [n])

    # ---- building blocks -------------------------------------------------------------------

    @staticmethod
    def linear(x, W, b=None):
        """x W^T + b for one vector x."""
        out = [sum(w_i * x_i for w_i, x_i in zip(row, x)) for row in W]
        if b is not None:
            out = [o + b_i for o, b_i in zip(out, b)]
        return out

    def rmsnorm(self, v, g):
        scale = 1.0 / math.sqrt(sum(x * x for x in v) / len(v) + self.eps)
        return [x * scale * g_i for x, g_i in zip(v, g)]

    @staticmethod
    def gelu(u):
        return u * 0.5 * (1.0 + math.erf(u / math.sqrt(2.0)))

    @staticmethod
    def silu(u):
        # u / (1 + e^-u), written so that a large negative u does not overflow exp.
        if u >= 0:
            return u / (1.0 + math.exp(-u))
        e = math.exp(u)
        return u * e / (1.0 + e)

    def rope(self, v, t):
        """Rotary embedding of one head vector v (length hd) at position t."""
        half = self.hd // 2
        out = [0.0] * self.hd
        for i in range(half):
            angle = t * self.inv_freq[i]
            c, s = math.cos(angle), math.sin(angle)
            a, b = v[i], v[i + half]
            # v*cos + rotate_half(v)*sin with rotate_half([a, b]) = [-b, a]
            out[i] = a * c - b * s
            out[i + half] = b * c + a * s
        return out

    def project(self, patch):
        if self.projector is None:
            raise Invalid("checkpoint: images given but the projector tensor model.mm_projector.0.weight is missing")
        W0, b0, W2, b2 = self.projector
        hidden = [self.gelu(u) for u in self.linear(patch, W0, b0)]
        return self.linear(hidden, W2, b2)

    # ---- forward -----------------------------------------------------------------------------

    def embed_sequence(self, seq_index, tokens, images):
        where = "sequence %d" % seq_index
        h = []
        for t, tok in enumerate(tokens):
            if isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < self.V:
                raise Invalid("%s: token %d is %r, not an id in [0, %d)" % (where, t, tok, self.V))
            h.append(list(self.embed[tok]))
        patches = []
        if images is not None:
            if self.D is None:
                raise Invalid("%s: images given but config.json has no mm_hidden_size (text-only model)" % where)
            if not isinstance(images, list):
                raise Invalid("%s: images must be a list of images" % where)
            for i, image in enumerate(images):
                if not isinstance(image, list):
                    raise Invalid("%s: image %d must be a list of patches" % (where, i))
                for j, patch in enumerate(image):
                    if not isinstance(patch, list) or len(patch) != self.D:
                        n = len(patch) if isinstance(patch, list) else type(patch).__name__
                        raise Invalid("%s: image %d patch %d has %s features, expected mm_hidden_size %d" % (where, i, j, n, self.D))
                    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in patch):
                        raise Invalid("%s: image %d patch %d holds a non-number" % (where, i, j))
                    patches.append([float(x) for x in patch])
        positions = [] if self.image_token is None else [t for t, tok in enumerate(tokens) if tok == self.image_token]
        if len(positions) != len(patches):
            raise Invalid(
                "%s: %d image tokens (id %s) but %d image patches; they must match"
                % (where, len(positions), self.image_token, len(patches))
            )
        for t, patch in zip(positions, patches):
            h[t] = self.project(patch)
        return h

    def forward_sequence(self, seq_index, tokens, images=None):
        """Logits [T][V] of one sequence (positions 0..T-1)."""
        T = len(tokens)
        if T == 0:
            raise Invalid("sequence %d: no tokens" % seq_index)
        if T > self.max_pos:
            raise Invalid("sequence %d: %d tokens exceed max_position_embeddings %d" % (seq_index, T, self.max_pos))
        hd, group = self.hd, self.n_h // self.n_kv
        h = self.embed_sequence(seq_index, tokens, images)
        for layer in self.layers:
            # attention block
            q_heads, k_heads, v_heads = [], [], []  # [position][head] -> vector of hd
            for t in range(T):
                a = self.rmsnorm(h[t], layer["g_in"])
                q = self.linear(a, layer["Wq"], layer["bq"])
                k = self.linear(a, layer["Wk"], layer["bk"])
                v = self.linear(a, layer["Wv"], layer["bv"])
                q_heads.append([self.rope(q[j * hd : (j + 1) * hd], t) for j in range(self.n_h)])
                k_heads.append([self.rope(k[j * hd : (j + 1) * hd], t) for j in range(self.n_kv)])
                v_heads.append([v[j * hd : (j + 1) * hd] for j in range(self.n_kv)])
            scale = 1.0 / math.sqrt(hd)
            for t in range(T):
                o = []
                for j in range(self.n_h):
                    kv = j // group
                    qv = q_heads[t][j]
                    scores = [sum(x * y for x, y in zip(qv, k_heads[u][kv])) * scale for u in range(t + 1)]
                    top = max(scores)
                    weights = [math.exp(s - top) for s in scores]
                    total = sum(weights)
                    head_out = [0.0] * hd
                    for u in range(t + 1):
                        w = weights[u] / total
                        vu = v_heads[u][kv]
                        for d in range(hd):
                            head_out[d] += w * vu[d]
                    o.extend(head_out)
                q_heads[t] = o  # reuse the slot: row t's attention output (heads concatenated)
            for t in range(T):
                h[t] = [x + y for x, y in zip(h[t], self.linear(q_heads[t], layer["Wo"]))]
            # MLP block
            for t in range(T):
                m = self.rmsnorm(h[t], layer["g_post"])
                gate = self.linear(m, layer["Wg"])
                up = self.linear(m, layer["Wu"])
                inner = [self.silu(g) * u for g, u in zip(gate, up)]
                h[t] = [x + y for x, y in zip(h[t], self.linear(inner, layer["Wd"]))]
        return [self.linear(self.rmsnorm(h[t], self.g_final), self.head) for t in range(T)]


def log_softmax_at(logits, index):
    top = max(logits)
    return logits[index] - top - math.log(sum(math.exp(z - top) for z in logits))


def forward(checkpoint, request):
    config, tensors = load_checkpoint(checkpoint)
    model = Model(config, tensors)
    if not isinstance(request, dict) or not isinstance(request.get("sequences"), list):
        raise Invalid('input: expected {"sequences": [...]}')
    all_logits, all_logprobs = [], []
    for i, seq in enumerate(request["sequences"]):
        if not isinstance(seq, dict) or not isinstance(seq.get("tokens"), list):
            raise Invalid('input: sequence %d must be {"tokens": [...], "images": [...] (optional)}' % i)
        tokens = seq["tokens"]
        logits = model.forward_sequence(i, tokens, seq.get("images"))
        all_logits.append(logits)
        all_logprobs.append([log_softmax_at(logits[t], tokens[t + 1]) for t in range(len(tokens) - 1)])
    return {"logits": all_logits, "logprobs": all_logprobs}


# --------------------------------------------------------------------------------------------
# random checkpoint
# --------------------------------------------------------------------------------------------


def make_random(out, seed, tied, image_dim):
    V, H, I, L, n_h, n_kv = 48, 16, 40, 2, 4, 2
    hd = H // n_h
    sigma = 0.3
    rng = random.Random(seed)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": V,
        "hidden_size": H,
        "intermediate_size": I,
        "num_hidden_layers": L,
        "num_attention_heads": n_h,
        "num_key_value_heads": n_kv,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 64,
        "tie_word_embeddings": tied,
        "initializer_range": 0.02,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "torch_dtype": "float32",
    }
    if image_dim is not None:
        config["mm_hidden_size"] = image_dim
        config["image_token_index"] = 3
    tensors = {}

    def normal(name, shape, mean=0.0):
        n = 1
        for s in shape:
            n *= s
        tensors[name] = (shape, [mean + rng.gauss(0.0, sigma) for _ in range(n)])

    normal("model.embed_tokens.weight", [V, H])
    for l in range(L):
        p = "model.layers.%d." % l
        normal(p + "input_layernorm.weight", [H], mean=1.0)
        for proj, rows in (("q_proj", n_h * hd), ("k_proj", n_kv * hd), ("v_proj", n_kv * hd)):
            normal(p + "self_attn.%s.weight" % proj, [rows, H])
            normal(p + "self_attn.%s.bias" % proj, [rows])
        normal(p + "self_attn.o_proj.weight", [H, n_h * hd])
        normal(p + "post_attention_layernorm.weight", [H], mean=1.0)
        normal(p + "mlp.gate_proj.weight", [I, H])
        normal(p + "mlp.up_proj.weight", [I, H])
        normal(p + "mlp.down_proj.weight", [H, I])
    normal("model.norm.weight", [H], mean=1.0)
    if not tied:
        normal("lm_head.weight", [V, H])
    if image_dim is not None:
        normal("model.mm_projector.0.weight", [H, image_dim])
        normal("model.mm_projector.0.bias", [H])
        normal("model.mm_projector.2.weight", [H, H])
        normal("model.mm_projector.2.bias", [H])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    return {"out": out, "tensors": len(tensors), "params": sum(len(v) for _, v in tensors.values()), "config": config}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    fw = sub.add_parser("forward", help="logits and next-token log-probabilities")
    fw.add_argument("--checkpoint", required=True)
    fw.add_argument("--input", required=True)
    fw.add_argument("--output")
    mr = sub.add_parser("make-random", help="write a small random checkpoint")
    mr.add_argument("--out", required=True)
    mr.add_argument("--seed", type=int, required=True)
    tie = mr.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=True)
    tie.add_argument("--untied", dest="tied", action="store_false")
    mr.add_argument("--image-dim", type=int)
    args = ap.parse_args(argv)
    try:
        if args.command == "forward":
            try:
                with open(args.input) as f:
                    request = json.load(f)
            except OSError as e:
                raise Invalid("%s: cannot read: %s" % (args.input, e))
            except ValueError as e:
                raise Invalid("%s: not JSON: %s" % (args.input, e))
            text = json.dumps(forward(args.checkpoint, request))
            if args.output:
                with open(args.output, "w") as f:
                    f.write(text + "\n")
            else:
                print(text)
        else:
            if args.image_dim is not None and args.image_dim <= 0:
                raise Invalid("--image-dim must be positive")
            print(json.dumps(make_random(args.out, args.seed, args.tied, args.image_dim)))
    except Invalid as e:
        print("qwen2_ref.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
