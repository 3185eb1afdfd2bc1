// Fused mixture sampling: for a slice of the global batch, draw each row's cell, pick its
// document, and gather its tokens and loss mask into the [rows, T] output, in one pass.
//
// The generator is the one of src/data/sampler.rs (the CPU reference) and docs/sampler.md
// (the definition); docs/sampler.md section 6 gives this kernel's parameter layout. Every
// integer operation below mirrors a Rust function of that file and is wrapping unsigned
// arithmetic, so the kernel's output is bit-identical to the CPU sampler in Packing::Pad mode.
//
// Compiled at run time by NVRTC (src/gpu/nvrtc.rs) for the device's architecture, and in CI
// for sm_80 and sm_90 (scripts/nvrtc-check.sh). No headers: NVRTC ships none we rely on.
//
// Built as host C++ with -DMIXATLAS_HOST_EMULATION (tests/gpu.rs), the same device functions
// run on the CPU through fused_sample_pad_host(), a serial emulation of the grid, so the
// arithmetic is tested on machines without a GPU.
//
// Grid: x = local row (one per sample), y = ceil(T / (4 * blockDim.x)) chunks of the row.
// Block: any multiple of 32 threads (the launcher uses 256).

#ifdef MIXATLAS_HOST_EMULATION
#define MX_FN static inline
#else
#define MX_FN __device__ __forceinline__
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// Philox counter word 2 of the cell draw ("CELL") and word 3 of the permutation keys ("PERM").
#define STREAM_CELL 0x43454C4Cu
#define STREAM_PERM 0x5045524Du

// Philox4x32-10 (src/data/rng.rs philox4x32_10): counter c[4], key k[2], result in c.
MX_FN void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        u64 p0 = (u64)0xD2511F53u * (u64)c[0];
        u64 p1 = (u64)0xCD9E8D57u * (u64)c[2];
        u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0;
        u32 hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
        u32 n0 = hi1 ^ c[1] ^ k0;
        u32 n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// 64 uniform bits of global sample g (sampler.rs sample_bits).
MX_FN u64 sample_bits(u64 seed, u64 g) {
    u32 c[4] = {(u32)g, (u32)(g >> 32), STREAM_CELL, 0u};
    philox4x32_10(c, (u32)seed, (u32)(seed >> 32));
    return ((u64)c[0] << 32) | (u64)c[1];
}

// CellTable::lookup: cells[#{k : edges[k] <= u}] (edges sorted, m - 1 of them).
MX_FN u32 table_lookup(const u64* edges, const u32* cells, u32 m, u64 u) {
    u32 lo = 0, hi = m - 1;
    while (lo < hi) {
        u32 mid = lo + (hi - lo) / 2;
        if (edges[mid] <= u) lo = mid + 1; else hi = mid;
    }
    return cells[lo];
}

// SplitMix64's finaliser (sampler.rs mix64).
MX_FN u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// 2 * max(2, ceil(32 / bits)) (sampler.rs feistel_rounds).
MX_FN u32 feistel_rounds(u32 bits) {
    u32 b = bits > 0 ? bits : 1;
    u32 r = (32u + b - 1) / b;
    return 2u * (r > 2u ? r : 2u);
}

MX_FN u64 low_mask(u32 bits) { return (1ull << bits) - 1ull; }  // bits <= 32 here

// Alternating Feistel bijection of [0, 2^bits) (sampler.rs feistel).
MX_FN u64 feistel(u64 x, u32 bits, const u32 keys[4]) {
    u32 a = bits / 2, b = bits - a;
    u64 l = x >> b, r = x & low_mask(b);
    u32 wl = a, wr = b;
    u32 rounds = feistel_rounds(bits);
    for (u32 round = 0; round < rounds; ++round) {
        u32 k = keys[round & 3u] ^ ((round >> 2) * 0x9E3779B9u);
        u64 f = mix64(((u64)k << 32) | r) & low_mask(wl);
        u64 nl = r, nr = l ^ f;
        l = nl;
        r = nr;
        u32 t = wl;
        wl = wr;
        wr = t;
    }
    return (l << wr) | r;
}

// 64 - leading_zeros(v) for v > 0, without intrinsics (identical on host and device).
MX_FN u32 bit_width(u64 v) {
    u32 n = 0;
    while (v != 0) {
        ++n;
        v >>= 1;
    }
    return n;
}

// Position `position` (< n) of the permutation of cell's documents in `epoch`
// (sampler.rs permute): Feistel over ceil(log2 n) bits with cycle-walking.
MX_FN u64 permute(u64 seed, u32 cell, u64 epoch, u64 position, u64 n) {
    if (n <= 1) return 0;
    u32 keys[4] = {(u32)epoch, (u32)(epoch >> 32), cell, STREAM_PERM};
    philox4x32_10(keys, (u32)seed, (u32)(seed >> 32));
    u32 bits = bit_width(n - 1);
    u64 x = feistel(position, bits, keys);
    while (x >= n) x = feistel(x, bits, keys);
    return x;
}

// Where one row's document lives: resolved once per block.
struct RowDoc {
    u32 cell;
    u64 document;
    u64 epoch;
    u64 start;   // global token index of the document's first token
    u32 placed;  // tokens placed: min(document length, T)
};

// The document of a row given its cell and the cell's ordinal (sampler.rs document_for).
MX_FN RowDoc resolve_doc(u64 seed, u32 cell, u64 ordinal, const u64* doc_start,
                         const u64* cell_doc_base, const u64* cell_docs, u32 seq_len) {
    RowDoc d;
    u64 n = cell_docs[cell];
    d.cell = cell;
    d.epoch = ordinal / n;
    d.document = permute(seed, cell, d.epoch, ordinal % n, n);
    u64 base = cell_doc_base[cell] + d.document;
    d.start = doc_start[base];
    u64 len = doc_start[base + 1] - d.start;
    d.placed = (u32)(len < (u64)seq_len ? len : (u64)seq_len);
    return d;
}

// Token i of the row (< T): the document's token and mask, or padding.
template <typename Tok>
MX_FN void gather_one(const Tok* tokens, const u8* mask, const RowDoc& d, u32 i, u32 pad,
                      u32* tok_out, u8* mask_out) {
    if (i < d.placed) {
        *tok_out = (u32)tokens[d.start + i];
        *mask_out = mask[d.start + i];
    } else {
        *tok_out = pad;
        *mask_out = 0;
    }
}

#ifndef MIXATLAS_HOST_EMULATION

// Cells of positive weight whose table is staged in shared memory (12 bytes each).
#define MX_SHARED_TABLE 512

template <typename Tok>
__device__ void fused_sample_pad(
    const Tok* __restrict__ tokens, const u8* __restrict__ mask,
    const u64* __restrict__ doc_start, const u64* __restrict__ cell_doc_base,
    const u64* __restrict__ cell_docs, const u64* __restrict__ counts,
    const u64* __restrict__ edges, const u32* __restrict__ table_cells, u32 m,
    const u32* __restrict__ plan_cell, const u64* __restrict__ plan_ordinal, u32 mode,
    u64 seed, u64 first_sample, u32 row0, u32 seq_len, u32 pad_token,
    u32* __restrict__ out_tokens, u8* __restrict__ out_mask, u64* __restrict__ out_docs) {
    __shared__ RowDoc s_doc;
    // The cell table in shared memory (one round of global loads instead of a dependent load
    // per binary-search step); tables larger than MX_SHARED_TABLE stay in global memory.
    __shared__ u64 s_edges[MX_SHARED_TABLE];
    __shared__ u32 s_cells[MX_SHARED_TABLE];
    const u32 local = blockIdx.x;
    const u32 row = row0 + local;
    u32 cell;
    u64 ordinal;
    if (mode == 0) {
        const u64* e = edges;
        const u32* c = table_cells;
        if (m <= MX_SHARED_TABLE) {
            for (u32 i = threadIdx.x; i < m; i += blockDim.x) {
                s_cells[i] = table_cells[i];
                if (i + 1 < m) s_edges[i] = edges[i];
            }
            __syncthreads();
            e = s_edges;
            c = s_cells;
        }
        // I.i.d.: the cell is a pointwise draw; its ordinal is the cell's count before the
        // step plus the earlier rows of the step (all ranks' rows) that drew the same cell.
        cell = table_lookup(e, c, m, sample_bits(seed, first_sample + row));
        u32 earlier = 0;
        for (u32 base = 0; base < row; base += blockDim.x) {
            u32 k = base + threadIdx.x;
            int same = 0;
            if (k < row) {
                same = table_lookup(e, c, m, sample_bits(seed, first_sample + k)) == cell;
            }
            earlier += (u32)__syncthreads_count(same);
        }
        ordinal = counts[cell] + earlier;
    } else {
        // Blend: cells and ordinals planned on the host (a sequential scan over the step).
        cell = plan_cell[local];
        ordinal = plan_ordinal[local];
    }
    if (threadIdx.x == 0) {
        s_doc = resolve_doc(seed, cell, ordinal, doc_start, cell_doc_base, cell_docs, seq_len);
        if (blockIdx.y == 0) {
            out_docs[4 * (u64)local + 0] = s_doc.cell;
            out_docs[4 * (u64)local + 1] = s_doc.document;
            out_docs[4 * (u64)local + 2] = s_doc.epoch;
            out_docs[4 * (u64)local + 3] = s_doc.placed;
        }
    }
    __syncthreads();
    const RowDoc d = s_doc;
    u32* trow = out_tokens + (u64)local * seq_len;
    u8* mrow = out_mask + (u64)local * seq_len;
    const u32 i0 = 4u * (blockIdx.y * blockDim.x + threadIdx.x);
    if (i0 >= seq_len) return;
    if ((seq_len & 3u) == 0) {
        // Four tokens per thread: one 16-byte and one 4-byte store (rows are 4-aligned).
        u32 t[4];
        u8 k[4];
        for (u32 j = 0; j < 4; ++j) gather_one(tokens, mask, d, i0 + j, pad_token, &t[j], &k[j]);
        *reinterpret_cast<uint4*>(trow + i0) = make_uint4(t[0], t[1], t[2], t[3]);
        *reinterpret_cast<uchar4*>(mrow + i0) = make_uchar4(k[0], k[1], k[2], k[3]);
    } else {
        for (u32 j = 0; j < 4 && i0 + j < seq_len; ++j) {
            gather_one(tokens, mask, d, i0 + j, pad_token, trow + i0 + j, mrow + i0 + j);
        }
    }
}

// Token buffers of 16-bit ids (u8/u16 cells) and of 32-bit ids (i32/u32/i64 cells whose
// values fit, validated on the host). Arguments: see docs/sampler.md section 6.
#define MX_ENTRY(NAME, TOK)                                                                   \
    extern "C" __global__ void NAME(                                                          \
        const TOK* tokens, const u8* mask, const u64* doc_start, const u64* cell_doc_base,    \
        const u64* cell_docs, const u64* counts, const u64* edges, const u32* table_cells,    \
        u32 m, const u32* plan_cell, const u64* plan_ordinal, u32 mode, u64 seed,             \
        u64 first_sample, u32 row0, u32 seq_len, u32 pad_token, u32* out_tokens,              \
        u8* out_mask, u64* out_docs) {                                                        \
        fused_sample_pad<TOK>(tokens, mask, doc_start, cell_doc_base, cell_docs, counts,      \
                              edges, table_cells, m, plan_cell, plan_ordinal, mode, seed,     \
                              first_sample, row0, seq_len, pad_token, out_tokens, out_mask,   \
                              out_docs);                                                      \
    }

MX_ENTRY(fused_sample_pad_u16, u16)
MX_ENTRY(fused_sample_pad_u32, u32)

#else  // MIXATLAS_HOST_EMULATION

// The grid run serially on the host: the same functions, the block-wide count done as a loop.
template <typename Tok>
static void fused_sample_pad_host(
    const Tok* tokens, const u8* mask, const u64* doc_start, const u64* cell_doc_base,
    const u64* cell_docs, const u64* counts, const u64* edges, const u32* table_cells, u32 m,
    const u32* plan_cell, const u64* plan_ordinal, u32 mode, u64 seed, u64 first_sample,
    u32 row0, u32 rows, u32 seq_len, u32 pad_token, u32* out_tokens, u8* out_mask,
    u64* out_docs) {
    for (u32 local = 0; local < rows; ++local) {
        const u32 row = row0 + local;
        u32 cell;
        u64 ordinal;
        if (mode == 0) {
            cell = table_lookup(edges, table_cells, m, sample_bits(seed, first_sample + row));
            u32 earlier = 0;
            for (u32 k = 0; k < row; ++k) {
                earlier += table_lookup(edges, table_cells, m, sample_bits(seed, first_sample + k)) == cell;
            }
            ordinal = counts[cell] + earlier;
        } else {
            cell = plan_cell[local];
            ordinal = plan_ordinal[local];
        }
        RowDoc d = resolve_doc(seed, cell, ordinal, doc_start, cell_doc_base, cell_docs, seq_len);
        out_docs[4 * (u64)local + 0] = d.cell;
        out_docs[4 * (u64)local + 1] = d.document;
        out_docs[4 * (u64)local + 2] = d.epoch;
        out_docs[4 * (u64)local + 3] = d.placed;
        for (u32 i = 0; i < seq_len; ++i) {
            gather_one(tokens, mask, d, i, pad_token, out_tokens + (u64)local * seq_len + i,
                       out_mask + (u64)local * seq_len + i);
        }
    }
}

#endif
