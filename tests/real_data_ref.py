"""Reference side of tests/real_data.rs: a real Hugging Face tokenizer, and what
`transformers` makes of the test pool.

    python3 tests/real_data_ref.py tokenizer DIR
        Trains a byte-level BPE tokenizer in Hugging Face format with the `tokenizers` package,
        shaped like Qwen2's (NFC, Qwen2's pre-tokenizer split regex, byte-level, the special
        tokens <|endoftext|>, <|im_start|>, <|im_end|>, <|image_pad|> added after the learnt
        vocabulary), and writes DIR/tokenizer.json and DIR/tokenizer_config.json with Qwen2's
        chat template (copied from Qwen2-7B-Instruct, independently of the Rust default).

    python3 tests/real_data_ref.py encode DIR POOL.json OUT.json
        POOL.json: a list of {"turns": [[role, text], ...], "rows": N}. For each, the
        messages (every <image> replaced by N <|image_pad|>) go through
        AutoTokenizer.from_pretrained(DIR).apply_chat_template(messages, tokenize=True,
        add_generation_prompt=False); the loss mask is found from the ChatML structure: 1 on
        the tokens starting inside `<|im_start|>assistant\\n(CONTENT<|im_end|>)`. Writes
        [{"ids": [...], "mask": [...], "text": "..."}].

    python3 tests/real_data_ref.py embeddings IDS.txt OUT.npy D SEED [FEATURES.npy P F]
        Writes one float32 [N, D] row per id (numpy's own NPY writer), drawn around one of
        four centres chosen by the id's hash, and optionally float16 [N, P, F] features.
"""

import json
import re
import sys
import zlib

# Qwen2-7B-Instruct's tokenizer_config.json chat_template, verbatim.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2-7B-Instruct).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>"]

TRAINING_TEXT = """
The quick brown fox jumps over the lazy dog. A picture of a cat sitting on a red sofa.
What is written on the sign? The sign says "Stop" in white letters on a red octagon.
Describe the image. A street at night with cars, lights and people walking by the shops.
How many people are in the photo? There are 3 people: two adults and one child, smiling.
Detect the objects: bus [12, 40, 200, 310]; person [220, 50, 260, 180]; dog [5, 7, 9, 11].
Read the text in the document. Invoice No. 2024-0017, total due: $1,234.56 by 31/12.
Où est la gare ? La gare est à gauche. 图片中有一只猫。 Das Bild zeigt einen Hund.
You are a helpful assistant. Answer briefly. Yes. No. The answer is 42. It's blue, isn't it?
Grounding: the man in the red shirt is at the left; the woman's bag is on the table.
"""


def make_tokenizer(out_dir):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [l for l in TRAINING_TEXT.splitlines() if l.strip()] * 4
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(SPECIAL)
    import os

    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": QWEN2_TEMPLATE,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def encode(tok_dir, pool_path, out_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    with open(pool_path) as f:
        pool = json.load(f)
    out = []
    span_re = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.S)
    for s in pool:
        pad = "<|image_pad|>" * s["rows"]
        messages = [
            {"role": role, "content": text.replace("<image>", pad)} for role, text in s["turns"]
        ]
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        ids = list(ids)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert list(enc["input_ids"]) == ids, "apply_chat_template tokenises the rendered text"
        spans = [m.span(1) for m in span_re.finditer(text)]
        mask = [int(any(a <= o[0] < b for a, b in spans)) for o in enc["offset_mapping"]]
        out.append({"ids": ids, "mask": mask, "text": text})
    with open(out_path, "w") as f:
        json.dump(out, f)


def embeddings(ids_path, out_path, dim, seed, features=None, p=0, fdim=0):
    import numpy as np

    with open(ids_path) as f:
        ids = [l.rstrip("\n") for l in f]
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * 5.0
    rows = []
    for i in ids:
        c = zlib.crc32(i.encode()) % 4
        rows.append(centres[c] + rng.normal(size=dim))
    np.save(out_path, np.asarray(rows, dtype=np.float32))
    if features:
        feats = rng.normal(size=(len(ids), p, fdim)).astype(np.float16)
        np.save(features, feats)


def main():
    cmd = sys.argv[1]
    if cmd == "tokenizer":
        make_tokenizer(sys.argv[2])
    elif cmd == "encode":
        encode(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "embeddings":
        a = sys.argv[2:]
        if len(a) > 4:
            embeddings(a[0], a[1], int(a[2]), int(a[3]), a[4], int(a[5]), int(a[6]))
        else:
            embeddings(a[0], a[1], int(a[2]), int(a[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
