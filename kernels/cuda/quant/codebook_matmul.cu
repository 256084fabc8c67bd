// codebook_matmul.cu: fused dequantize + matmul `y [m, rows] = x [m, cols] W^T` for weights
// whose element is `table[code] * scale`: bitsandbytes NF4 / FP4 (4-bit codes, 16-entry
// table, blockwise absmax over the flattened weight) and FP8 E4M3 / E5M2 (8-bit codes,
// table = the exact FP8 decode, per-tensor or block scales). (LLM.int8 has its own
// kernels with the outlier decomposition: int8_mixed.cu.)
// The CUDA twin of kernels/wgsl/quant/codebook_matmul.wgsl (same work split and numerics).
//
// Entry points (T = f32 | f16 | bf16 for x and y):
//   codebook_matmul_u4_<T>(const unsigned char* codes, const float* table,
//                          const float* scales, const T* x, T* y, u64 rows, u32 cols,
//                          u64 m, u64 flat_block, u64 block_rows, u64 block_cols,
//                          u64 scale_cols)
//   codebook_matmul_u8_<T>(same)
// m = 1 is the decode matvec.
//
// Layout (docs/formats.md): element (r, c) has flat index e = r * cols + c.
//   u4: byte e / 2 holds element e in its HIGH nibble when e is even, LOW when odd;
//       table has 16 entries.
//   u8: byte e is the code; table has 256 entries.
//   Scale of (r, c): scales[e / flat_block] when flat_block > 0, otherwise
//     scales[(r / block_rows) * scale_cols + c / block_cols].
//
// Versions:
//   v1 (this file): the table is copied into shared memory once per block; a block of 128
//   threads per work item (weight row, tile of TILE_M = 4 rows of x); thread t walks the
//   row's units of 32 columns t, t + 128, ..., decodes each element once and dots it with
//   the tile's x rows; per token a block reduction (lat_block_sum). Grid-stride over
//   rows * ceil(m / 4) work items.
//
// Numerics: one f32 weight value per element, table[code] * scale as the CPU decoders
// form it, fmaf with x in f32 per thread, block sum in f32, one rounding to T.
// Bounds: the host checks that codes hold ceil(rows * cols / 2) (u4) or rows * cols (u8)
// bytes, the table 16 / 256 floats, scales every index the layout forms, x m * cols and
// y m * rows elements, and that the block dimensions are non-zero.
// Launch: crates/quant/src/gpu/cuda.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

#define CB_TILE_M 4
#define CB_UNIT 32

template <typename T, int NIBBLES>
__device__ __forceinline__ void codebook_matmul(const unsigned char* __restrict__ codes,
                                                const float* __restrict__ table, const float* __restrict__ scales,
                                                const T* __restrict__ x, T* __restrict__ y, lat_u64 rows,
                                                unsigned int cols, lat_u64 m, lat_u64 flat_block, lat_u64 block_rows,
                                                lat_u64 block_cols, lat_u64 scale_cols) {
    __shared__ float scratch[32];
    __shared__ float lut[256];
    const unsigned int table_len = NIBBLES ? 16u : 256u;
    for (unsigned int i = threadIdx.x; i < 256u; i += blockDim.x) lut[i] = i < table_len ? table[i] : 0.0f;
    __syncthreads();
    const lat_u64 m_tiles = (m + CB_TILE_M - 1) / CB_TILE_M;
    const lat_u64 items = rows * m_tiles;
    const unsigned int units = (cols + CB_UNIT - 1) / CB_UNIT;
    for (lat_u64 item = blockIdx.x; item < items; item += gridDim.x) {
        const lat_u64 row = item % rows;
        const lat_u64 t0 = (item / rows) * CB_TILE_M;
        const int tokens = (int)(m - t0 < CB_TILE_M ? m - t0 : CB_TILE_M);
        float acc[CB_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
        const lat_u64 e0 = row * cols;
        for (unsigned int u = threadIdx.x; u < units; u += blockDim.x) {
            const unsigned int c0 = u * CB_UNIT;
            const unsigned int c1 = c0 + CB_UNIT < cols ? c0 + CB_UNIT : cols;
            lat_u64 scale_idx = ~0ull;
            float scale = 0.0f;
            for (unsigned int c = c0; c < c1; ++c) {
                const lat_u64 e = e0 + c;
                unsigned int code;
                if (NIBBLES) {
                    const unsigned int byte = codes[e >> 1];
                    code = (e & 1) ? (byte & 15u) : (byte >> 4);
                } else {
                    code = codes[e];
                }
                const lat_u64 si = flat_block ? e / flat_block : (row / block_rows) * scale_cols + c / block_cols;
                if (si != scale_idx) {
                    scale_idx = si;
                    scale = scales[si];
                }
                const float w = lut[code] * scale;
#pragma unroll
                for (int t = 0; t < CB_TILE_M; ++t) {
                    if (t < tokens) acc[t] = fmaf(w, lat_load(x, (t0 + t) * cols + c), acc[t]);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < CB_TILE_M; ++t) {
            // Every thread calls the block sum (it synchronizes); one thread stores.
            const float total = lat_block_sum(acc[t], scratch);
            if (threadIdx.x == 0 && t < tokens) lat_store(y, (t0 + t) * rows + row, total);
        }
    }
}

#define CODEBOOK_MATMUL_ENTRIES(SUFFIX, T)                                                                        \
    extern "C" __global__ void __launch_bounds__(128) codebook_matmul_u4_##SUFFIX(                                \
        const unsigned char* codes, const float* table, const float* scales, const T* x, T* y, lat_u64 rows,      \
        unsigned int cols, lat_u64 m, lat_u64 flat_block, lat_u64 block_rows, lat_u64 block_cols,                 \
        lat_u64 scale_cols) {                                                                                     \
        codebook_matmul<T, 1>(codes, table, scales, x, y, rows, cols, m, flat_block, block_rows, block_cols,      \
                              scale_cols);                                                                        \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) codebook_matmul_u8_##SUFFIX(                                \
        const unsigned char* codes, const float* table, const float* scales, const T* x, T* y, lat_u64 rows,      \
        unsigned int cols, lat_u64 m, lat_u64 flat_block, lat_u64 block_rows, lat_u64 block_cols,                 \
        lat_u64 scale_cols) {                                                                                     \
        codebook_matmul<T, 0>(codes, table, scales, x, y, rows, cols, m, flat_block, block_rows, block_cols,      \
                              scale_cols);                                                                        \
    }

LAT_FOR_EACH_DTYPE(CODEBOOK_MATMUL_ENTRIES)
