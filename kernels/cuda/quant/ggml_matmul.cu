// ggml_matmul.cu: fused dequantize + matmul `y [m, rows] = x [m, cols] W^T` for a ggml
// block-quantized weight W [rows, cols] kept as raw ggml block bytes (Q8_0, Q4_0, Q4_K,
// Q6_K).
// The CUDA twin of kernels/wgsl/quant/ggml_matmul.wgsl (same work split and numerics).
//
// Entry points (T = f32 | f16 | bf16 for x and y):
//   ggml_matmul_q8_0_<T>(const unsigned char* w, const T* x, T* y, u64 rows, u32 cols,
//                        u64 m, u64 row_bytes)
//   ggml_matmul_q4_0_<T>(same), ggml_matmul_q4_k_<T>(same), ggml_matmul_q6_k_<T>(same)
// m = 1 is the decode matvec.
//
// Byte layout (docs/formats.md): row r starts at byte r * row_bytes, row_bytes =
// (cols / 32) * block_bytes; blocks are byte-addressed (34 and 18 bytes: not aligned).
//   Q8_0, 34 bytes: f16 d (little-endian bytes 0..2), 32 x i8 qs; element j = d * qs[j].
//   Q4_0, 18 bytes: f16 d, 16 bytes qs; byte j holds element j (low nibble) and j + 16
//     (high nibble), value (nibble - 8) * d.
//   Q4_K, 144 bytes (super-block of 256): f16 d, f16 dmin, 12 bytes of 6-bit scales/mins
//     for 8 sub-blocks of 32, 128 bytes qs; unit = a quarter (64 elements: sub-blocks
//     2p and 2p + 1 from the low / high nibbles of 32 bytes), value d*sc*q - dmin*mn.
//   Q6_K, 210 bytes (super-block of 256): ql (0..128), qh (128..192), 16 x i8 scales
//     (192..208), f16 d (208..210); unit = one (half h, quad k): 32 elements in two
//     sub-blocks of 16. The layouts are spelled out in ggml_matmul.wgsl.
//
// Versions:
//   v1 (this file): a block of 128 threads per work item (weight row, tile of TILE_M = 4
//   rows of x); thread t walks the row's units t, t + 128, ... (a Q8_0 / Q4_0 block, a
//   Q4_K quarter or a Q6_K eighth), decodes each unit once and dots it with the tile's x
//   rows; per token a block reduction (lat_block_sum).
//   Grid-stride over rows * ceil(m / 4) work items.
//
// Numerics: d converted exactly from f16; per block sum q_j * x_j in f32 (fmaf), times d,
// accumulated in f32 per thread, block sum in f32, one rounding to T at the store.
// Bounds: cols is a multiple of the block size (the host checks row_bytes against it);
// every weight byte index is < rows * row_bytes (the host checks the buffer holds
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

// 6-bit (scale, min) of Q4_K sub-block j (0..8); `s` points at the 12 packed bytes.
__device__ __forceinline__ void q4_k_scale_min(const unsigned char* s, int j, float* sc, float* mn) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *mn = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *mn = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Quarter p (0..4) of the Q4_K super-block b: elements 64p .. 64p + 64 of the block;
// x_base is the x index of the block's first element for token 0.
template <typename T>
__device__ __forceinline__ void q4_k_unit(const unsigned char* b, int p, const T* x, lat_u64 x_base,
                                          unsigned int cols, int tokens, float* acc) {
    const float d = ggml_scale(b);
    const float dmin = ggml_scale(b + 2);
    float sc1, mn1, sc2, mn2;
    q4_k_scale_min(b + 4, 2 * p, &sc1, &mn1);
    q4_k_scale_min(b + 4, 2 * p + 1, &sc2, &mn2);
    const float d1 = d * sc1, m1 = dmin * mn1, d2 = d * sc2, m2 = dmin * mn2;
    float s1[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f}, s2[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
    float x1[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f}, x2[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
    const unsigned char* qs = b + 16 + 32 * p;
#pragma unroll 4
    for (int l = 0; l < 32; ++l) {
        const unsigned int byte = qs[l];
        const float lo = (float)(byte & 0xf);
        const float hi = (float)(byte >> 4);
#pragma unroll
        for (int t = 0; t < GGML_TILE_M; ++t) {
            if (t < tokens) {
                const lat_u64 base = x_base + (lat_u64)t * cols + 64 * p + l;
                const float xa = lat_load(x, base);
                const float xb = lat_load(x, base + 32);
                s1[t] = fmaf(lo, xa, s1[t]);
                s2[t] = fmaf(hi, xb, s2[t]);
                x1[t] += xa;
                x2[t] += xb;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < GGML_TILE_M; ++t) acc[t] += d1 * s1[t] - m1 * x1[t] + d2 * s2[t] - m2 * x2[t];
}

// Unit u (0..8) of the Q6_K super-block b: half h = u >> 2, quad k = u & 3, elements
// 128h + 32k .. + 32 of the block.
template <typename T>
__device__ __forceinline__ void q6_k_unit(const unsigned char* b, int u, const T* x, lat_u64 x_base,
                                          unsigned int cols, int tokens, float* acc) {
    const int h = u >> 2, k = u & 3;
    const float d = ggml_scale(b + 208);
    const float sc0 = d * (float)(signed char)b[192 + 8 * h + 2 * k];
    const float sc1 = d * (float)(signed char)b[193 + 8 * h + 2 * k];
    const unsigned char* ql = b + 64 * h + 32 * (k & 1);
    const unsigned char* qh = b + 128 + 32 * h;
    const int lo_shift = 4 * (k >> 1), hi_shift = 2 * k;
    float s0[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f}, s1[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int l = 0; l < 32; ++l) {
        const int q = (int)(((ql[l] >> lo_shift) & 15) | (((qh[l] >> hi_shift) & 3) << 4)) - 32;
        const float qf = (float)q;
#pragma unroll
        for (int t = 0; t < GGML_TILE_M; ++t) {
            if (t < tokens) {
                const float xv = lat_load(x, x_base + (lat_u64)t * cols + 128 * h + 32 * k + l);
                if (l < 16) {
                    s0[t] = fmaf(qf, xv, s0[t]);
                } else {
                    s1[t] = fmaf(qf, xv, s1[t]);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < GGML_TILE_M; ++t) acc[t] += sc0 * s0[t] + sc1 * s1[t];
}

#define GGML_FMT_Q8_0 0
#define GGML_FMT_Q4_0 1
#define GGML_FMT_Q4_K 2
#define GGML_FMT_Q6_K 3

template <typename T, int FORMAT>
__device__ __forceinline__ void ggml_matmul(const unsigned char* __restrict__ w, const T* __restrict__ x,
                                            T* __restrict__ y, lat_u64 rows, unsigned int cols, lat_u64 m,
                                            lat_u64 row_bytes) {
    __shared__ float scratch[32];
    // Bytes per block, elements per block and work units per block.
    const unsigned int block_bytes =
        FORMAT == GGML_FMT_Q8_0 ? 34u : FORMAT == GGML_FMT_Q4_0 ? 18u : FORMAT == GGML_FMT_Q4_K ? 144u : 210u;
    const unsigned int block_elems = FORMAT == GGML_FMT_Q8_0 || FORMAT == GGML_FMT_Q4_0 ? 32u : 256u;
    const unsigned int unit_shift = FORMAT == GGML_FMT_Q4_K ? 2u : FORMAT == GGML_FMT_Q6_K ? 3u : 0u;
    const unsigned int units = (cols / block_elems) << unit_shift;
    const lat_u64 m_tiles = (m + GGML_TILE_M - 1) / GGML_TILE_M;
    const lat_u64 items = rows * m_tiles;
    for (lat_u64 item = blockIdx.x; item < items; item += gridDim.x) {
        const lat_u64 row = item % rows;
        const lat_u64 t0 = (item / rows) * GGML_TILE_M;
        const int tokens = (int)(m - t0 < GGML_TILE_M ? m - t0 : GGML_TILE_M);
        float acc[GGML_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
        const unsigned char* w_row = w + row * row_bytes;
        for (unsigned int u = threadIdx.x; u < units; u += blockDim.x) {
            const unsigned int b = u >> unit_shift;
            const int part = (int)(u & ((1u << unit_shift) - 1u));
            const lat_u64 x_base = t0 * cols + (lat_u64)b * block_elems;
            const unsigned char* block = w_row + (lat_u64)b * block_bytes;
            if (FORMAT == GGML_FMT_Q4_0) {
                q4_0_block(block, x, x_base, cols, tokens, acc);
            } else if (FORMAT == GGML_FMT_Q8_0) {
                q8_0_block(block, x, x_base, cols, tokens, acc);
            } else if (FORMAT == GGML_FMT_Q4_K) {
                q4_k_unit(block, part, x, x_base, cols, tokens, acc);
            } else {
                q6_k_unit(block, part, x, x_base, cols, tokens, acc);
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
        ggml_matmul<T, GGML_FMT_Q8_0>(w, x, y, rows, cols, m, row_bytes);                                   \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        ggml_matmul_q4_0_##SUFFIX(const unsigned char* w, const T* x, T* y, lat_u64 rows, unsigned int cols, \
                                  lat_u64 m, lat_u64 row_bytes) {                                           \
        ggml_matmul<T, GGML_FMT_Q4_0>(w, x, y, rows, cols, m, row_bytes);                                   \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        ggml_matmul_q4_k_##SUFFIX(const unsigned char* w, const T* x, T* y, lat_u64 rows, unsigned int cols, \
                                  lat_u64 m, lat_u64 row_bytes) {                                           \
        ggml_matmul<T, GGML_FMT_Q4_K>(w, x, y, rows, cols, m, row_bytes);                                   \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(128)                                                       \
        ggml_matmul_q6_k_##SUFFIX(const unsigned char* w, const T* x, T* y, lat_u64 rows, unsigned int cols, \
                                  lat_u64 m, lat_u64 row_bytes) {                                           \
        ggml_matmul<T, GGML_FMT_Q6_K>(w, x, y, rows, cols, m, row_bytes);                                   \
    }

LAT_FOR_EACH_DTYPE(GGML_MATMUL_ENTRIES)
