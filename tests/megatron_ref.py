#!/usr/bin/env python3
"""Independent reference reader/writer for Megatron-LM's MMapIndexedDataset files.

Why this exists: MixAtlas promises that its prepared cells are Megatron files and that it reads
files Megatron's tools wrote. This script checks both directions without sharing a line of code
with the Rust implementation. It is written from the layout published in Megatron-LM's
`megatron/core/datasets/indexed_dataset.py`, uses only the Python 3 standard library (no numpy,
so CI needs nothing beyond `python3`), and is driven by `tests/megatron_compat.rs`.

Layout (all little-endian):

  <prefix>.idx
    magic              9 bytes   b"MMIDIDX\\x00\\x00"
    version            uint64    1
    dtype code         uint8     1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
                                 6 float64, 7 float32, 8 uint16
    sequence count S   uint64
    doc-index count D  uint64    (= documents + 1)
    sequence_lengths   S x int32     elements per sequence
    sequence_pointers  S x int64     byte offset of each sequence in .bin
    document_indices   D x int64     first sequence of each document; starts at 0, ends at S
    sequence_modes     S x int8      optional; Megatron-core writes it for multimodal datasets

  <prefix>.bin         the sequences' elements, back to back, in the dtype above.

Subcommands:

  write PREFIX --dtype NAME --docs-json FILE [--multi-sequence] [--sequence-modes]
      Writes <PREFIX>.bin/.idx holding the documents in FILE (a JSON list of token lists) and
      prints {"sequences", "documents", "tokens"} as JSON.
      --multi-sequence splits documents into several sequences, as Megatron's sentence-split
      datasets do, by this rule (tests rely on it): a non-empty document is cut into pieces of
      1, 2, 3, ... elements (the last piece may be shorter); an empty document at an even
      position has no sequence at all, one at an odd position has a single empty sequence.
      Without it every document is one sequence (what Megatron's preprocess_data.py and
      MixAtlas write).
      --sequence-modes appends the S x int8 modes array (mode of sequence j = j % 2).

  read PREFIX [--docs 0,5,9]
      Parses and validates the pair and prints
      {"dtype", "sequences", "documents", "tokens", "sequence_modes", "doc_lengths",
       "doc_ids", "docs"}; "docs" holds every document (or those listed by --docs, in that
      order, as named by "doc_ids"). Integral float elements are printed as integers.

  corrupt PREFIX --kind KIND
      Damages a valid pair in place, one way per KIND (see CORRUPTIONS), to check that readers
      reject it.

  verify-corpus DIR
      Checks DIR/manifest.json against the files: every listed file's size and SHA-256, each
      cell's and benchmark's .bin/.idx (dtype, document and token counts), the .mask side file
      (one byte per token, values 0/1, count of ones = loss_tokens), the .img side file (size
      from the manifest's image shape) and token ids against vocab_size. Prints
      {"cells", "documents", "tokens", "loss_tokens", "benchmarks", "benchmark_documents",
       "benchmark_tokens", "files", "bytes"} (documents/tokens summed over cells only).

Any malformed input exits with status 1 and a message on stderr naming the file and the problem.
"""

import argparse
import array
import hashlib
import json
import os
import struct
import sys

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# Fixed header: magic (9) + version (8) + dtype code (1) + sequence count (8) + doc-index count (8).
HEADER = struct.Struct("<9sQBQQ")

# Megatron dtype code -> (numpy name, struct format, array typecode, itemsize, is_float).
DTYPES = {
    1: ("uint8", "B", "B", 1, False),
    2: ("int8", "b", "b", 1, False),
    3: ("int16", "h", "h", 2, False),
    4: ("int32", "i", "i", 4, False),
    5: ("int64", "q", "q", 8, False),
    6: ("float64", "d", "d", 8, True),
    7: ("float32", "f", "f", 4, True),
    8: ("uint16", "H", "H", 2, False),
}
CODE_OF_NAME = {v[0]: k for k, v in DTYPES.items()}
# Short spellings some tools use for the same dtypes.
ALIASES = {
    "u8": "uint8",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "f64": "float64",
    "f32": "float32",
    "u16": "uint16",
}

INT_RANGES = {
    "uint8": (0, 2**8 - 1),
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
}

CORRUPTIONS = {
    "truncate-bin": "drop the last element of .bin",
    "trailing-bin": "append one element to .bin",
    "truncate-idx": "drop the last 3 bytes of .idx",
    "magic": "replace the magic with b'NOTMMIDX\\x00'",
    "version": "set the version to 2",
    "dtype": "set the dtype code to 9",
    "negative-length": "set the first sequence length to -1",
    "pointer": "move the second sequence pointer one element forward",
    "doc-index": "make the last document index S - 1",
}


class Malformed(Exception):
    """A file that does not follow the layout; the message names the file."""


def fail(path, problem):
    raise Malformed("%s: %s" % (path, problem))


def canonical_dtype(name):
    name = ALIASES.get(name, name)
    if name not in CODE_OF_NAME:
        raise Malformed("unknown dtype %r, expected one of %s" % (name, ", ".join(CODE_OF_NAME)))
    return name


def typed_array(typecode, itemsize):
    """An empty array whose items are exactly `itemsize` bytes (array sizes vary by platform)."""
    a = array.array(typecode)
    if a.itemsize != itemsize:
        raise RuntimeError("array typecode %r is %d bytes here, need %d" % (typecode, a.itemsize, itemsize))
    return a


def from_le_bytes(typecode, itemsize, data):
    a = typed_array(typecode, itemsize)
    a.frombytes(data)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def to_le_bytes(a):
    if sys.byteorder == "big":
        a = array.array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def paths(prefix):
    return prefix + ".bin", prefix + ".idx"


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        fail(path, "cannot read: %s" % e.strerror)


# ---------------------------------------------------------------------------------------------
# Reading


class Dataset(object):
    """A parsed and validated .bin/.idx pair."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.bin_path, self.idx_path = paths(prefix)
        idx = read_file(self.idx_path)
        ip = self.idx_path
        if len(idx) < HEADER.size:
            fail(ip, "truncated header: %d bytes, need %d" % (len(idx), HEADER.size))
        magic, version, code, s, d = HEADER.unpack_from(idx, 0)
        if magic != MAGIC:
            fail(ip, "bad magic %r, expected %r" % (magic, MAGIC))
        if version != VERSION:
            fail(ip, "bad version %d, expected %d" % (version, VERSION))
        if code not in DTYPES:
            fail(ip, "bad dtype code %d, expected 1..8" % code)
        self.dtype, self.fmt, self.typecode, self.itemsize, self.is_float = DTYPES[code]
        self.code = code
        need = HEADER.size + 4 * s + 8 * s + 8 * d
        if len(idx) == need:
            self.has_modes = False
        elif len(idx) == need + s:
            self.has_modes = True
        else:
            fail(
                ip,
                "size %d bytes does not match header (%d sequences, %d document indices): "
                "expected %d, or %d with sequence modes" % (len(idx), s, d, need, need + s),
            )
        off = HEADER.size
        self.lengths = from_le_bytes("i", 4, idx[off : off + 4 * s])
        off += 4 * s
        self.pointers = from_le_bytes("q", 8, idx[off : off + 8 * s])
        off += 8 * s
        self.doc_index = from_le_bytes("q", 8, idx[off : off + 8 * d])
        off += 8 * d
        self.modes = from_le_bytes("b", 1, idx[off : off + s]) if self.has_modes else None
        self.sequences = s

        # Sequences: non-negative lengths, aligned pointers, back to back, covering .bin exactly.
        bin_size = self._bin_size()
        pos = 0
        for i in range(s):
            n, p = self.lengths[i], self.pointers[i]
            if n < 0:
                fail(ip, "sequence %d has negative length %d" % (i, n))
            if p != pos:
                fail(ip, "sequence %d starts at byte %d, expected %d (sequences must be contiguous)" % (i, p, pos))
            pos = p + n * self.itemsize
            if pos > bin_size:
                fail(
                    self.bin_path,
                    "size %d bytes, but sequence %d ends at byte %d (truncated)" % (bin_size, i, pos),
                )
        if pos != bin_size:
            fail(self.bin_path, "size %d bytes, but the index describes %d (extra data)" % (bin_size, pos))
        self.tokens = pos // self.itemsize

        # Documents: indices start at 0, never decrease, end at S.
        if d < 1:
            fail(ip, "document index is empty, expected at least [0]")
        if self.doc_index[0] != 0:
            fail(ip, "first document index is %d, expected 0" % self.doc_index[0])
        for j in range(1, d):
            if self.doc_index[j] < self.doc_index[j - 1]:
                fail(ip, "document index %d (%d) is below the previous one" % (j, self.doc_index[j]))
        if self.doc_index[d - 1] != s:
            fail(ip, "last document index is %d, expected the sequence count %d" % (self.doc_index[d - 1], s))
        self.documents = d - 1
        self._data = None

    def _bin_size(self):
        try:
            return os.path.getsize(self.bin_path)
        except OSError as e:
            fail(self.bin_path, "cannot read: %s" % e.strerror)

    def data(self):
        """Every element of .bin, decoded."""
        if self._data is None:
            raw = read_file(self.bin_path)
            if len(raw) != self.tokens * self.itemsize:
                fail(self.bin_path, "changed size while reading")
            self._data = from_le_bytes(self.typecode, self.itemsize, raw)
        return self._data

    def doc_range(self, k):
        """Element range [start, end) of document k (its sequences are contiguous)."""
        a, b = self.doc_index[k], self.doc_index[k + 1]
        if a == b:
            if a < self.sequences:
                start = self.pointers[a] // self.itemsize
            else:
                start = self.tokens
            return start, start
        start = self.pointers[a] // self.itemsize
        end = self.pointers[b - 1] // self.itemsize + self.lengths[b - 1]
        return start, end

    def doc_length(self, k):
        a, b = self.doc_range(k)
        return b - a

    def document(self, k):
        a, b = self.doc_range(k)
        values = self.data()[a:b]
        if self.is_float:
            return [int(v) if v.is_integer() else v for v in values]
        return list(values)


def cmd_read(args):
    ds = Dataset(args.prefix)
    if args.docs is None:
        ids = list(range(ds.documents))
    else:
        ids = []
        for part in args.docs.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                k = int(part)
            except ValueError:
                raise Malformed("--docs: %r is not a document number" % part)
            if not 0 <= k < ds.documents:
                raise Malformed("--docs: document %d out of range (%d documents)" % (k, ds.documents))
            ids.append(k)
    out = {
        "dtype": ds.dtype,
        "sequences": ds.sequences,
        "documents": ds.documents,
        "tokens": ds.tokens,
        "sequence_modes": ds.has_modes,
        "doc_lengths": [ds.doc_length(k) for k in range(ds.documents)],
        "doc_ids": ids,
        "docs": [ds.document(k) for k in ids],
    }
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------------------------------------
# Writing


def split_sequences(k, doc):
    """The --multi-sequence rule: pieces of 1, 2, 3, ... elements; see the module docstring."""
    if not doc:
        return [] if k % 2 == 0 else [[]]
    pieces, pos, size = [], 0, 1
    while pos < len(doc):
        pieces.append(doc[pos : pos + size])
        pos += size
        size += 1
    return pieces


def check_token(dtype, is_float, v, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Malformed("%s: %r is not a number" % (where, v))
    if is_float:
        return float(v)
    if isinstance(v, float):
        if v != int(v):
            raise Malformed("%s: %r is not an integer (dtype %s)" % (where, v, dtype))
        v = int(v)
    lo, hi = INT_RANGES[dtype]
    if not lo <= v <= hi:
        raise Malformed("%s: %d does not fit %s" % (where, v, dtype))
    return v


def cmd_write(args):
    dtype = canonical_dtype(args.dtype)
    code = CODE_OF_NAME[dtype]
    _, _, typecode, itemsize, is_float = DTYPES[code]
    try:
        with open(args.docs_json) as f:
            docs = json.load(f)
    except (OSError, ValueError) as e:
        raise Malformed("%s: cannot load documents: %s" % (args.docs_json, e))
    if not isinstance(docs, list) or not all(isinstance(d, list) for d in docs):
        raise Malformed("%s: expected a JSON list of token lists" % args.docs_json)

    lengths = typed_array("i", 4)
    pointers = typed_array("q", 8)
    doc_index = typed_array("q", 8)
    doc_index.append(0)
    bin_path, idx_path = paths(args.prefix)
    tokens = 0
    with open(bin_path, "wb") as binf:
        for k, doc in enumerate(docs):
            values = [check_token(dtype, is_float, v, "%s: document %d" % (args.docs_json, k)) for v in doc]
            seqs = split_sequences(k, values) if args.multi_sequence else [values]
            for seq in seqs:
                pointers.append(tokens * itemsize)
                lengths.append(len(seq))
                a = typed_array(typecode, itemsize)
                a.extend(seq)
                binf.write(to_le_bytes(a))
                tokens += len(seq)
            doc_index.append(len(lengths))
    s = len(lengths)
    with open(idx_path, "wb") as idxf:
        idxf.write(HEADER.pack(MAGIC, VERSION, code, s, len(doc_index)))
        idxf.write(to_le_bytes(lengths))
        idxf.write(to_le_bytes(pointers))
        idxf.write(to_le_bytes(doc_index))
        if args.sequence_modes:
            modes = typed_array("b", 1)
            modes.extend(j % 2 for j in range(s))
            idxf.write(modes.tobytes())
    json.dump({"sequences": s, "documents": len(docs), "tokens": tokens}, sys.stdout)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------------
# Corrupting (to test that readers reject damage)


def cmd_corrupt(args):
    ds = Dataset(args.prefix)  # must start valid
    bin_path, idx_path = ds.bin_path, ds.idx_path
    idx = bytearray(read_file(idx_path))
    binb = bytearray(read_file(bin_path))
    s = ds.sequences
    off_lengths = HEADER.size
    off_pointers = off_lengths + 4 * s
    off_docs = off_pointers + 8 * s
    kind = args.kind
    if kind == "truncate-bin":
        if not binb:
            raise Malformed("%s: empty, cannot truncate" % bin_path)
        del binb[-ds.itemsize :]
    elif kind == "trailing-bin":
        binb += b"\x01" * ds.itemsize
    elif kind == "truncate-idx":
        del idx[-3:]
    elif kind == "magic":
        idx[0:9] = b"NOTMMIDX\x00"
    elif kind == "version":
        struct.pack_into("<Q", idx, 9, 2)
    elif kind == "dtype":
        struct.pack_into("<B", idx, 17, 9)
    elif kind == "negative-length":
        if s < 1:
            raise Malformed("%s: needs at least one sequence" % idx_path)
        struct.pack_into("<i", idx, off_lengths, -1)
    elif kind == "pointer":
        if s < 2:
            raise Malformed("%s: needs at least two sequences" % idx_path)
        struct.pack_into("<q", idx, off_pointers + 8, ds.pointers[1] + ds.itemsize)
    elif kind == "doc-index":
        if s < 1:
            raise Malformed("%s: needs at least one sequence" % idx_path)
        d = len(ds.doc_index)
        struct.pack_into("<q", idx, off_docs + 8 * (d - 1), s - 1)
    else:
        raise Malformed("unknown corruption %r, expected one of %s" % (kind, ", ".join(CORRUPTIONS)))
    with open(idx_path, "wb") as f:
        f.write(idx)
    with open(bin_path, "wb") as f:
        f.write(binb)


# ---------------------------------------------------------------------------------------------
# Verifying a prepared corpus


def sha256_of(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
    except OSError as e:
        fail(path, "cannot read: %s" % e.strerror)
    return h.hexdigest()


def field(obj, key, kind, where):
    if not isinstance(obj, dict) or key not in obj:
        raise Malformed("%s: missing field %r" % (where, key))
    v = obj[key]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise Malformed("%s: field %r is %r, expected an integer" % (where, key, v))
    if kind is str and not isinstance(v, str):
        raise Malformed("%s: field %r is %r, expected a string" % (where, key, v))
    if kind is list and not isinstance(v, list):
        raise Malformed("%s: field %r is %r, expected a list" % (where, key, v))
    return v


def verify_entry(root, manifest_path, entry, where, dtype, vocab_size, image, stats):
    """Checks one cell or benchmark; `where` names it inside the manifest ("cells[3] (c01/ocr)")."""
    mwhere = "%s: %s" % (manifest_path, where)
    named = "%s %s" % (manifest_path, where)
    said = named + " says"
    prefix = field(entry, "prefix", str, mwhere)
    documents = field(entry, "documents", int, mwhere)
    tokens = field(entry, "tokens", int, mwhere)
    files = field(entry, "files", list, mwhere)
    full = os.path.join(root, prefix)
    listed = set()
    for j, fe in enumerate(files):
        fwhere = "%s.files[%d]" % (mwhere, j)
        rel = field(fe, "path", str, fwhere)
        size = field(fe, "bytes", int, fwhere)
        digest = field(fe, "sha256", str, fwhere)
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise Malformed("%s: path %r escapes the corpus directory" % (fwhere, rel))
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            fail(path, "missing (listed in %s.files[%d])" % (named, j))
        actual = os.path.getsize(path)
        if actual != size:
            fail(path, "size %d bytes, manifest says %d" % (actual, size))
        got = sha256_of(path)
        if got != digest.lower():
            fail(path, "sha256 %s, manifest says %s" % (got, digest))
        listed.add(os.path.normpath(path))
        stats["files"] += 1
        stats["bytes"] += size
    for ext in (".bin", ".idx", ".mask", ".img"):
        path = full + ext
        required = ext in (".bin", ".idx")
        if os.path.normpath(path) not in listed:
            if required:
                raise Malformed("%s: %s does not list %s" % (manifest_path, where, prefix + ext))
            if os.path.exists(path):
                fail(path, "exists but %s does not list it (no checksum)" % named)

    ds = Dataset(full)
    if dtype is not None and ds.dtype != dtype:
        fail(ds.idx_path, "dtype %s, manifest token_dtype is %s" % (ds.dtype, dtype))
    if ds.documents != documents:
        fail(ds.idx_path, "%d documents, %s %d" % (ds.documents, said, documents))
    if ds.tokens != tokens:
        fail(ds.idx_path, "%d tokens, %s %d" % (ds.tokens, said, tokens))
    if vocab_size is not None and ds.tokens:
        values = ds.data()
        lo, hi = min(values), max(values)
        if lo < 0 or hi >= vocab_size or (ds.is_float and not all(v.is_integer() for v in values)):
            fail(ds.bin_path, "token ids span %s..%s, expected integers in 0..%d" % (lo, hi, vocab_size - 1))

    loss = tokens
    mask_path = full + ".mask"
    if os.path.exists(mask_path):
        mask = read_file(mask_path)
        if len(mask) != tokens:
            fail(mask_path, "%d bytes, expected one per token (%d)" % (len(mask), tokens))
        ones = mask.count(1)
        if ones + mask.count(0) != len(mask):
            bad = next(i for i, b in enumerate(mask) if b > 1)
            fail(mask_path, "byte %d is %d, expected 0 or 1" % (bad, mask[bad]))
        loss = ones
    if "loss_tokens" in entry:
        want = field(entry, "loss_tokens", int, mwhere)
        if want != loss:
            what = mask_path if os.path.exists(mask_path) else manifest_path
            fail(what, "%d tokens have loss mask 1, %s %d" % (loss, said, want))

    img_path = full + ".img"
    if image is not None:
        if not os.path.exists(img_path):
            fail(img_path, "missing, but the manifest declares an image shape")
        want = documents * image[0] * image[1] * 2
        actual = os.path.getsize(img_path)
        if actual != want:
            fail(
                img_path,
                "%d bytes, expected %d documents x %d patches x %d dims x 2 bytes = %d"
                % (actual, documents, image[0], image[1], want),
            )
    elif os.path.exists(img_path):
        fail(img_path, "exists but the manifest declares no image shape")
    return ds.documents, ds.tokens, loss, prefix


def cmd_verify_corpus(args):
    root = args.dir
    manifest_path = os.path.join(root, "manifest.json")
    try:
        with open(manifest_path) as f:
            m = json.load(f)
    except OSError as e:
        fail(manifest_path, "cannot read: %s" % e.strerror)
    except ValueError as e:
        fail(manifest_path, "invalid JSON: %s" % e)
    if not isinstance(m, dict):
        fail(manifest_path, "expected a JSON object")
    if "format" in m and m["format"] != "mixatlas-corpus":
        fail(manifest_path, "format %r, expected 'mixatlas-corpus'" % m["format"])
    dtype = None
    if "token_dtype" in m:
        try:
            dtype = canonical_dtype(m["token_dtype"])
        except Malformed as e:
            fail(manifest_path, "token_dtype: %s" % e)
    vocab_size = m.get("vocab_size")
    image = None
    if m.get("image") is not None:
        img = m["image"]
        patches = field(img, "patches", int, "%s: image" % manifest_path)
        dim = field(img, "dim", int, "%s: image" % manifest_path)
        if img.get("dtype", "float16") != "float16":
            fail(manifest_path, "image dtype %r, expected 'float16'" % img["dtype"])
        image = (patches, dim)
    cells = field(m, "cells", list, manifest_path)
    benchmarks = m.get("benchmarks", [])
    stats = {"files": 0, "bytes": 0}
    prefixes = set()
    totals = {}
    for group, entries in (("cells", cells), ("benchmarks", benchmarks)):
        docs = toks = loss = 0
        for i, e in enumerate(entries):
            where = "%s[%d]" % (group, i)
            if isinstance(e, dict) and "name" in e:
                where += " (%s)" % e["name"]
            d, t, l, prefix = verify_entry(root, manifest_path, e, where, dtype, vocab_size, image, stats)
            if prefix in prefixes:
                fail(manifest_path, "prefix %r is used twice" % prefix)
            prefixes.add(prefix)
            docs, toks, loss = docs + d, toks + t, loss + l
        totals[group] = (len(entries), docs, toks, loss)
    out = {
        "cells": totals["cells"][0],
        "documents": totals["cells"][1],
        "tokens": totals["cells"][2],
        "loss_tokens": totals["cells"][3],
        "benchmarks": totals["benchmarks"][0],
        "benchmark_documents": totals["benchmarks"][1],
        "benchmark_tokens": totals["benchmarks"][2],
        "files": stats["files"],
        "bytes": stats["bytes"],
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="megatron_ref.py",
        description="Reference reader/writer for Megatron MMapIndexedDataset files (stdlib only).",
    )
    sub = p.add_subparsers(dest="command")
    w = sub.add_parser("write", help="write PREFIX.bin/.idx from a JSON list of token lists")
    w.add_argument("prefix")
    w.add_argument("--dtype", required=True, help="numpy dtype name, e.g. uint16")
    w.add_argument("--docs-json", required=True, help="JSON file: list of token lists")
    w.add_argument("--multi-sequence", action="store_true", help="split documents into several sequences")
    w.add_argument("--sequence-modes", action="store_true", help="append the int8 sequence modes")
    r = sub.add_parser("read", help="validate PREFIX.bin/.idx and print it as JSON")
    r.add_argument("prefix")
    r.add_argument("--docs", help="comma-separated document numbers to print (default: all)")
    c = sub.add_parser("corrupt", help="damage a valid PREFIX.bin/.idx in place")
    c.add_argument("prefix")
    c.add_argument("--kind", required=True, choices=sorted(CORRUPTIONS))
    v = sub.add_parser("verify-corpus", help="check a prepared corpus against its manifest.json")
    v.add_argument("dir")
    args = p.parse_args(argv)
    handlers = {
        "write": cmd_write,
        "read": cmd_read,
        "corrupt": cmd_corrupt,
        "verify-corpus": cmd_verify_corpus,
    }
    if args.command not in handlers:
        p.print_help(sys.stderr)
        return 2
    try:
        handlers[args.command](args)
        sys.stdout.flush()
    except Malformed as e:
        sys.stderr.write("megatron_ref.py: error: %s\n" % e)
        return 1
    except BrokenPipeError:
        # The consumer stopped reading (e.g. `| head`); not an error of the files.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
