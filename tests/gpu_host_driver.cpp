// Runs kernels/fused_sample.cu on the host (MIXATLAS_HOST_EMULATION) for tests/gpu.rs.
//
// Input (argv[1]): little-endian u64 words: 10 scalars (token width 2|4, mode, seed,
// first_sample, row0, rows, seq_len, pad_token, m, unused), then arrays, each as a u64
// length followed by its elements: tokens (u16 or u32), mask (u8), doc_start, cell_doc_base,
// cell_docs, counts, edges (u64), table_cells, plan_cell (u32), plan_ordinal (u64).
// Output (argv[2]): tokens (u32, rows*T), mask (u8, rows*T), docs (u64, 4*rows).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fused_sample.cu"

static FILE* in;

static u64 word() {
    u64 v;
    if (fread(&v, 8, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(3); }
    return v;
}

template <typename T>
static std::vector<T> array() {
    u64 n = word();
    std::vector<T> v(n ? n : 1);
    if (n && fread(v.data(), sizeof(T), n, in) != n) { fprintf(stderr, "short array\n"); exit(3); }
    return v;
}

template <typename Tok>
static int run(u64 s[10], FILE* out) {
    std::vector<Tok> tokens = array<Tok>();
    std::vector<u8> mask = array<u8>();
    std::vector<u64> doc_start = array<u64>(), base = array<u64>(), docs = array<u64>(),
                     counts = array<u64>(), edges = array<u64>();
    std::vector<u32> table = array<u32>(), plan_cell = array<u32>();
    std::vector<u64> plan_ordinal = array<u64>();
    u64 rows = s[5], t = s[6];
    u64 n = rows * t > 0 ? rows * t : 1, nd = rows > 0 ? 4 * rows : 1;
    std::vector<u32> out_tokens(n);
    std::vector<u8> out_mask(n);
    std::vector<u64> out_docs(nd);
    fused_sample_pad_host<Tok>(tokens.data(), mask.data(), doc_start.data(), base.data(),
                               docs.data(), counts.data(), edges.data(), table.data(), (u32)s[8],
                               plan_cell.data(), plan_ordinal.data(), (u32)s[1], s[2], s[3],
                               (u32)s[4], (u32)rows, (u32)t, (u32)s[7], out_tokens.data(),
                               out_mask.data(), out_docs.data());
    fwrite(out_tokens.data(), 4, rows * t, out);
    fwrite(out_mask.data(), 1, rows * t, out);
    fwrite(out_docs.data(), 8, 4 * rows, out);
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: driver IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    FILE* out = fopen(argv[2], "wb");
    if (!in || !out) { perror("open"); return 2; }
    u64 s[10];
    for (int i = 0; i < 10; ++i) s[i] = word();
    int rc = s[0] == 2 ? run<u16>(s, out) : run<u32>(s, out);
    fclose(out);
    return rc;
}
