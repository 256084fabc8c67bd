// ggml_matmul.cu: fused dequantize + matmul `y [m, rows] = x [m, cols] W^T` for a ggml
// block-quantized weight W [rows, cols] kept as raw ggml block bytes (Q8_0, Q4_0).
// The CUDA twin of kernels/wgsl/quant/ggml_matmul.wgsl (same work split and numerics).
//
// Entry points (T = f32 | f16 | bf16 for x and y):
//   ggml_matmul_q8_0_<T>(const unsigned char* w, const T* x, T* y, u64 rows, u32 cols,
//                        u64 m, u64 row_bytes)
//   ggml_matmul_q4_0_<T>(same)
// m = 1 is the decode matvec.
//
// Byte layout (docs/formats.md): row r starts at byte r * row_bytes, row_bytes =
// (cols / 32) * block_bytes; blocks are byte-addressed (34 and 18 bytes: not aligned).
//   Q8_0, 34 bytes: f16 d (little-endian bytes 0..2), 32 x i8 qs; element j = d * qs[j].
//   Q4_0, 18 bytes: f16 d, 16 bytes qs; byte j holds element j (low nibble) and j + 16
//     (high nibble), value (nibble - 8) * d.
//
// Versions:
//   v1 (this file): a block of 128 threads per work item (weight row, tile of TILE_M = 4
//   rows of x); thread t walks the row's blocks t, t + 128, ..., decodes each block once
//   and dots it with the tile's x rows; per token a block reduction (lat_block_sum).
//   Grid-stride over rows * ceil(m / 4) work items.
//
// Numerics: d converted exactly from f16; per block sum q_j * x_j in f32 (fmaf), times d,
// accumulated in f32 per thread, block sum in f32, one rounding to T at the store.
// Bounds: every weight byte index is < rows * row_bytes (the host checks the buffer holds
// that many), every x index < m * cols, every y index < m * rows.
// Launch: crates/quant/src/gpu/cuda.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

#define GGML_TILE_M 4
#define GGML_BLOCK_ELEMS 32

__device__ __forceinline__ float ggml_scale(const unsigned char* b) {
    lat_f16 h;
    h.bits = (unsigned short)(b[0] | (b[1] << 8));
    return lat_f16_to_f32(h);
}

// acc[t] += d * dot(block, x[t0 + t, col0 .. col0 + 32]) for t < tokens.
template <typename T>
__device__ __forceinline__ void q8_0_block(const unsigned char* b, const T* x, lat_u64 x_base, unsigned int cols,
                                           int tokens, float* acc) {
    const float d = ggml_scale(b);
    float sums[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int j = 0; j < GGML_BLOCK_ELEMS; ++j) {
        const float q = (float)(signed char)b[2 + j];
#pragma unroll
        for (int t = 0; t < GGML_TILE_M; ++t) {
            if (t < tokens) sums[t] = fmaf(q, lat_load(x, x_base + (lat_u64)t * cols + j), sums[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < GGML_TILE_M; ++t) acc[t] = fmaf(d, sums[t], acc[t]);
}

template <typename T>
__device__ __forceinline__ void q4_0_block(const unsigned char* b, const T* x, lat_u64 x_base, unsigned int cols,
                                           int tokens, float* acc) {
    const float d = ggml_scale(b);
    float sums[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int j = 0; j < 16; ++j) {
        const unsigned int byte = b[2 + j];
        const float lo = (float)((int)(byte & 0xf) - 8);
        const float hi = (float)((int)(byte >> 4) - 8);
#pragma unroll
        for (int t = 0; t < GGML_TILE_M; ++t) {
            if (t < tokens) {
                const lat_u64 base = x_base + (lat_u64)t * cols + j;
                sums[t] = fmaf(lo, lat_load(x, base), sums[t]);
                sums[t] = fmaf(hi, lat_load(x, base + 16), sums[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < GGML_TILE_M; ++t) acc[t] = fmaf(d, sums[t], acc[t]);
}

template <typename T, int FORMAT_Q4>
__device__ __forceinline__ void ggml_matmul(const unsigned char* __restrict__ w, const T* __restrict__ x,
                                            T* __restrict__ y, lat_u64 rows, unsigned int cols, lat_u64 m,
                                            lat_u64 row_bytes) {
    __shared__ float scratch[32];
    const unsigned int block_bytes = FORMAT_Q4 ? 18u : 34u;
    const unsigned int blocks = cols / GGML_BLOCK_ELEMS;
    const lat_u64 m_tiles = (m + GGML_TILE_M - 1) / GGML_TILE_M;
    const lat_u64 items = rows * m_tiles;
    for (lat_u64 item = blockIdx.x; item < items; item += gridDim.x) {
        const lat_u64 row = item % rows;
        const lat_u64 t0 = (item / rows) * GGML_TILE_M;
        const int tokens = (int)(m - t0 < GGML_TILE_M ? m - t0 : GGML_TILE_M);
        float acc[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
        const unsigned char* w_row = w + row * row_bytes;
        for (unsigned int b = threadIdx.x; b < blocks; b += blockDim.x) {
            const lat_u64 x_base = t0 * cols + (lat_u64)b * GGML_BLOCK_ELEMS;
            if (FORMAT_Q4) {
                q4_0_block(w_row + (lat_u64)b * block_bytes, x, x_base, cols, tokens, acc);
            } else {
                q8_0_block(w_row + (lat_u64)b * block_bytes, x, x_base, cols, tokens, acc);
            }
        }
#pragma unroll
        for (int t = 0; t < GGML_TILE_M; ++t) {
            // Every thread calls the block sum (it synchronizes); one thread stores.
            const float total = lat_block_sum(acc[t], scratch);
            if (threadIdx.x == 0 && t < tokens) lat_store(y, (t0 + t) * rows + row, total);
        }
    }
}

#define GGML_MATMUL_ENTRIES(SUFFIX, T)                                                                      \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        ggml_matmul_q8_0_##SUFFIX(const unsigned char* w, const T* x, T* y, lat_u64 rows, unsigned int cols, \
                                  lat_u64 m, lat_u64 row_bytes) {                                           \
        ggml_matmul<T, 0>(w, x, y, rows, cols, m, row_bytes);                                               \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        ggml_matmul_q4_0_##SUFFIX(const unsigned char* w, const T* x, T* y, lat_u64 rows, unsigned int cols, \
                                  lat_u64 m, lat_u64 row_bytes) {                                           \
        ggml_matmul<T, 1>(w, x, y, rows, cols, m, row_bytes);                                               \
    }

LAT_FOR_EACH_DTYPE(GGML_MATMUL_ENTRIES)
