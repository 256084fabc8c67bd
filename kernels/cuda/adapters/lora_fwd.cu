// adapters/lora_fwd.cu: fused unmerged LoRA forward, y = x W^T + bias + s (x A^T) B^T.
//
// Two launches (mirroring kernels/wgsl/adapters/lora_xa.wgsl and lora_fused.wgsl, which
// run in CI on lavapipe):
//   stage 1  xa = s * x A^T                      (xa f32 [rows, rank], tiny)
//   stage 2  y  = x W^T + xa B^T + bias           (written once, rounded once to T)
//
// Entry points (T = float | lat_f16 | lat_bf16, suffix _f32 | _f16 | _bf16):
//   lora_xa_block_<T>(const T* x, const float* a, float* xa,
//                     unsigned int rows, unsigned int n_in, unsigned int rank, float scaling)
//     128 threads per block; a block computes 4 rows x 4 ranks: threads stride over n_in
//     (coalesced), 16 partial sums per thread, warp shuffles then shared memory across
//     the 4 warps. Blocks stride over ceil(rows/4) * ceil(rank/4) (grid-stride loop).
//   lora_fused_matvec_<T>(const T* x, const T* w, const T* bias, const float* b,
//                         const float* xa, T* y, unsigned int rows, unsigned int n_in,
//                         unsigned int n_out, unsigned int rank, unsigned int has_bias)
//     v1 (decode, few rows): the stage-1 scheme over W: a block computes 4 rows x 4
//     outputs of x W^T; threads 0..15 add sum_j xa[row, j] B[o, j] and the bias and store.
//     Blocks stride over ceil(rows/4) * ceil(n_out/4).
//   lora_fused_tiled_<T>(same arguments as lora_fused_matvec)
//     v2 (prefill): 256 threads compute a 64 x 64 tile of y, 4 x 4 per thread (rows
//     ty + 16 i, cols tx + 16 j). K steps of 16 stage x and W tiles in shared memory
//     (zero past the edges), then the same loop runs over the rank with xa as the left
//     tile and B as the right one, into the same accumulators. Blocks stride over
//     ceil(rows/64) * ceil(n_out/64) tiles.
// Layout: x [rows, n_in], W [n_out, n_in], bias [n_out] (unread when has_bias == 0; any
//   valid pointer), y [rows, n_out] in T; A [rank, n_in], B [n_out, rank], xa
//   [rows, rank] f32. Row-major, contiguous.
// Numerics: f32 accumulation (fmaf); one rounding to T at the store. Element offsets are
//   64-bit; every load and store is bounds-checked against rows, n_in, n_out and rank.
#include "linattn_common.cuh"

#define LORA_SKINNY_THREADS 128
#define LORA_TILE 64
#define LORA_TILE_K 16
#define LORA_TILE_THREADS 256

// Shared by lora_xa_block and lora_fused_matvec: out[4 rows][4 cols] = sum_i x[row, i] *
// m[col, i] over the block (every thread of the block gets nothing; threads 0..15 get
// the total of element threadIdx.x in the return value).
template <typename TX, typename TM>
__device__ __forceinline__ float lora_skinny_dot(const TX* x, const TM* m, unsigned int rows, unsigned int n_cols,
                                                 unsigned int n_in, unsigned int row0, unsigned int col0,
                                                 float (*scratch)[16]) {
    float acc[16];
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] = 0.0f;
    for (unsigned int i = threadIdx.x; i < n_in; i += LORA_SKINNY_THREADS) {
        float xv[4], mv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            xv[r] = (row0 + r < rows) ? lat_load(x, (lat_u64)(row0 + r) * n_in + i) : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            mv[c] = (col0 + c < n_cols) ? lat_load(m, (lat_u64)(col0 + c) * n_in + i) : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[r * 4 + c] = fmaf(xv[r], mv[c], acc[r * 4 + c]);
    }
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[e] = lat_warp_sum(acc[e]);
    __syncthreads();  // scratch may still be read from the previous block iteration
    if (lane == 0) {
#pragma unroll
        for (int e = 0; e < 16; ++e) scratch[warp][e] = acc[e];
    }
    __syncthreads();
    float total = 0.0f;
    if (threadIdx.x < 16) {
        for (int wi = 0; wi < LORA_SKINNY_THREADS / 32; ++wi) total += scratch[wi][threadIdx.x];
    }
    return total;
}

template <typename T>
__device__ void lora_xa_block(const T* x, const float* a, float* xa, unsigned int rows, unsigned int n_in,
                              unsigned int rank, float scaling) {
    __shared__ float scratch[LORA_SKINNY_THREADS / 32][16];
    const unsigned int rank_blocks = (rank + 3) / 4;
    const lat_u64 total = (lat_u64)((rows + 3) / 4) * rank_blocks;
    for (lat_u64 block = blockIdx.x; block < total; block += gridDim.x) {
        const unsigned int row0 = (unsigned int)(block / rank_blocks) * 4;
        const unsigned int j0 = (unsigned int)(block % rank_blocks) * 4;
        const float v = lora_skinny_dot(x, a, rows, rank, n_in, row0, j0, scratch);
        if (threadIdx.x < 16) {
            const unsigned int row = row0 + threadIdx.x / 4;
            const unsigned int j = j0 + threadIdx.x % 4;
            if (row < rows && j < rank) xa[(lat_u64)row * rank + j] = scaling * v;
        }
    }
}

template <typename T>
__device__ void lora_fused_matvec(const T* x, const T* w, const T* bias, const float* b, const float* xa, T* y,
                                  unsigned int rows, unsigned int n_in, unsigned int n_out, unsigned int rank,
                                  unsigned int has_bias) {
    __shared__ float scratch[LORA_SKINNY_THREADS / 32][16];
    const unsigned int col_blocks = (n_out + 3) / 4;
    const lat_u64 total = (lat_u64)((rows + 3) / 4) * col_blocks;
    for (lat_u64 block = blockIdx.x; block < total; block += gridDim.x) {
        const unsigned int row0 = (unsigned int)(block / col_blocks) * 4;
        const unsigned int o0 = (unsigned int)(block % col_blocks) * 4;
        float v = lora_skinny_dot(x, w, rows, n_out, n_in, row0, o0, scratch);
        if (threadIdx.x < 16) {
            const unsigned int row = row0 + threadIdx.x / 4;
            const unsigned int o = o0 + threadIdx.x % 4;
            if (row < rows && o < n_out) {
                for (unsigned int j = 0; j < rank; ++j) {
                    v = fmaf(xa[(lat_u64)row * rank + j], b[(lat_u64)o * rank + j], v);
                }
                if (has_bias) v += lat_load(bias, o);
                lat_store(y, (lat_u64)row * n_out + o, v);
            }
        }
    }
}

template <typename T>
__device__ void lora_fused_tiled(const T* x, const T* w, const T* bias, const float* b, const float* xa, T* y,
                                 unsigned int rows, unsigned int n_in, unsigned int n_out, unsigned int rank,
                                 unsigned int has_bias) {
    __shared__ float lhs_tile[LORA_TILE_K][LORA_TILE];
    __shared__ float rhs_tile[LORA_TILE_K][LORA_TILE];
    const unsigned int t = threadIdx.x;
    const unsigned int tx = t % 16, ty = t / 16;
    const unsigned int col_blocks = (n_out + LORA_TILE - 1) / LORA_TILE;
    const lat_u64 total = (lat_u64)((rows + LORA_TILE - 1) / LORA_TILE) * col_blocks;
    const unsigned int base_steps = (n_in + LORA_TILE_K - 1) / LORA_TILE_K;
    const unsigned int lora_steps = (rank + LORA_TILE_K - 1) / LORA_TILE_K;
    for (lat_u64 tile = blockIdx.x; tile < total; tile += gridDim.x) {
        const unsigned int row0 = (unsigned int)(tile / col_blocks) * LORA_TILE;
        const unsigned int col0 = (unsigned int)(tile % col_blocks) * LORA_TILE;
        float acc[16];
#pragma unroll
        for (int e = 0; e < 16; ++e) acc[e] = 0.0f;
        for (unsigned int step = 0; step < base_steps + lora_steps; ++step) {
            const bool lora = step >= base_steps;
#pragma unroll
            for (int p = 0; p < 4; ++p) {
                const unsigned int e = t + p * LORA_TILE_THREADS;
                const unsigned int m = e / LORA_TILE_K, kk = e % LORA_TILE_K;
                float lv = 0.0f, rv = 0.0f;
                if (lora) {
                    const unsigned int k = (step - base_steps) * LORA_TILE_K + kk;
                    if (k < rank) {
                        if (row0 + m < rows) lv = xa[(lat_u64)(row0 + m) * rank + k];
                        if (col0 + m < n_out) rv = b[(lat_u64)(col0 + m) * rank + k];
                    }
                } else {
                    const unsigned int k = step * LORA_TILE_K + kk;
                    if (k < n_in) {
                        if (row0 + m < rows) lv = lat_load(x, (lat_u64)(row0 + m) * n_in + k);
                        if (col0 + m < n_out) rv = lat_load(w, (lat_u64)(col0 + m) * n_in + k);
                    }
                }
                lhs_tile[kk][m] = lv;
                rhs_tile[kk][m] = rv;
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < LORA_TILE_K; ++kk) {
                float a_reg[4], b_reg[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    a_reg[i] = lhs_tile[kk][ty + 16 * i];
                    b_reg[i] = rhs_tile[kk][tx + 16 * i];
                }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i * 4 + j] = fmaf(a_reg[i], b_reg[j], acc[i * 4 + j]);
            }
            __syncthreads();
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned int col = col0 + tx + 16 * j;
            if (col >= n_out) continue;
            const float bias_v = has_bias ? lat_load(bias, col) : 0.0f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const unsigned int row = row0 + ty + 16 * i;
                if (row < rows) lat_store(y, (lat_u64)row * n_out + col, acc[i * 4 + j] + bias_v);
            }
        }
    }
}

#define LORA_FWD_ENTRIES(suffix, T)                                                                                  \
    extern "C" __global__ void __launch_bounds__(LORA_SKINNY_THREADS)                                               \
        lora_xa_block_##suffix(const T* x, const float* a, float* xa, unsigned int rows, unsigned int n_in,         \
                               unsigned int rank, float scaling) {                                                  \
        lora_xa_block<T>(x, a, xa, rows, n_in, rank, scaling);                                                      \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(LORA_SKINNY_THREADS)                                               \
        lora_fused_matvec_##suffix(const T* x, const T* w, const T* bias, const float* b, const float* xa, T* y,    \
                                   unsigned int rows, unsigned int n_in, unsigned int n_out, unsigned int rank,     \
                                   unsigned int has_bias) {                                                         \
        lora_fused_matvec<T>(x, w, bias, b, xa, y, rows, n_in, n_out, rank, has_bias);                              \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(LORA_TILE_THREADS)                                                 \
        lora_fused_tiled_##suffix(const T* x, const T* w, const T* bias, const float* b, const float* xa, T* y,     \
                                  unsigned int rows, unsigned int n_in, unsigned int n_out, unsigned int rank,      \
                                  unsigned int has_bias) {                                                          \
        lora_fused_tiled<T>(x, w, bias, b, xa, y, rows, n_in, n_out, rank, has_bias);                               \
    }

LAT_FOR_EACH_DTYPE(LORA_FWD_ENTRIES)
