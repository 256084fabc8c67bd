// int8_mixed.cu: LLM.int8 (bitsandbytes) `y [m, rows] = x [m, cols] W^T` with the
// mixed-precision outlier decomposition, the scheme of the CPU path
// (`Int8Weight::matmul_f32`, crates/quant/src/bnb/int8.rs):
//   outlier entry: NaN or Inf, or |x| >= threshold when split = 1 (threshold > 0);
//   outlier column c: some row t has an outlier entry x[t, c];
//   s_x[t] = max |x[t, c]| over the entries that are not outliers;
//   k[t] = 127 / s_x[t]; xq[t, c] = clamp(round_half_even(x[t, c] * k[t]), -127, 127),
//     0 in outlier columns and when s_x[t] = 0;
//   y[t, r] = f32(sum_c xq[t, c] * CB[r, c]) * (s_x[t] * SCB[r]) * INV_127_SQ
//             + sum over outlier columns c of x[t, c] * ((f32(CB[r, c]) * SCB[r]) * INV_127).
// The CUDA twin of kernels/wgsl/quant/int8_mixed.wgsl (same passes, layouts and numerics).
//
// Entry points (T = f32 | f16 | bf16 for x and y), launched in this order on one stream by
// crates/quant/src/gpu/int8_cuda.rs:
//   int8_row_stats_<T>(const T* x, float* stats, unsigned int* flags, u64 m, u32 cols,
//                      float threshold, u32 split)
//     one block of 128 threads per row t of x, grid-stride over m: sets the outlier column
//     bits (atomicOr) and writes stats[t] = (s_x, k) (block max-reduction).
//   int8_quantize_x_<T>(const T* x, const float* stats, const unsigned int* flags,
//                       unsigned int* xq, u64 m, u32 cols, u32 words)
//     one thread per word of xq (grid-stride over m * words): the int8 codes of 4 columns.
//   int8_mixed_matmul_<T>(const unsigned int* codes, const float* scb,
//                         const unsigned int* xq, const float* stats,
//                         const unsigned int* flags, const T* x, T* y, u64 rows, u32 cols,
//                         u64 m, u32 words)
//     one block of 128 threads per (weight row, tile of I8M_TILE_M = 4 rows of x),
//     grid-stride over rows * ceil(m / 4) items: thread l walks the words l, l + 128, ...
//     of the weight row, __dp4a with the tile's xq words into i32 sums and adds the
//     outlier columns of its words in f32; warp shuffles + shared memory reduce both.
//     m = 1 is the decode matvec.
//
// Layout: words = ceil(cols / 4). codes: CB as rows * words u32 words, row r at word
//   r * words, column c in byte c % 4 (little-endian) of word r * words + c / 4 as an
//   i8, padding bytes 0. xq: [m, words] words, the same packing. stats: f32 [m, 2]
//   (s_x, k). flags: bit c % 32 of word c / 32 marks outlier column c; ceil(cols / 32)
//   words, zero-filled by the host. y: [m, rows] in T.
// Bounds: the host checks that codes hold rows * words words, scb rows floats, x m * cols
//   and y m * rows elements, the scratch buffers the sizes above, and cols <= 132103 (the
//   i32 sum of 128 * 127 * cols cannot overflow; CB may hold -128 in foreign files).
//
// Numerics: k = __fdiv_rn(127, s_x) (IEEE round-to-nearest, as the CPU divides);
//   x * k is __fmul_rn and rintf rounds half to even, so xq equals the CPU's codes bit for
//   bit (no flush-to-zero: NVRTC's default -ftz=false). The integer part is an exact i32
//   sum (__dp4a, integer shuffles), converted once and scaled with __fmul_rn by the CPU's
//   products in the CPU's order; without outliers y equals the CPU's value bit for bit
//   before the rounding to T. The outlier part multiplies the CPU's f32 weight value
//   (f32(CB) * SCB) * INV_127 by x with fmaf per thread and sums by the block reduction:
//   only its summation order differs from the CPU. NaN and Inf in x make their
//   columns outlier columns at any threshold (an exponent-bit test), so they reach y.
// Build with `cargo xtask kernels`; `cargo xtask kernels --emulate` runs
// xtask/src/kernels/emulate/quant_int8_mixed.cpp against an exact host reference.
#include "linattn_common.cuh"

#define I8M_TILE_M 4
// bitsandbytes' 1/127 and 1/127^2 as f32, the constants of crates/quant/src/bnb/int8.rs.
#define I8M_INV_127 7.874016e-3f
#define I8M_INV_127_SQ 6.200124e-5f

__device__ __forceinline__ bool i8m_is_nan(float v) {
    return (__float_as_uint(v) & 0x7fffffffu) > 0x7f800000u;
}

// The int8 code of v with factor k, in the low byte: round-half-even(v * k) clamped to
// [-127, 127]; NaN gives 0.
__device__ __forceinline__ unsigned int i8m_quantize(float v, float k) {
    const float scaled = __fmul_rn(v, k);
    if (i8m_is_nan(scaled)) return 0u;
    const float code = fminf(fmaxf(rintf(scaled), -127.0f), 127.0f);
    return ((unsigned int)(int)code) & 0xffu;
}

// Max over the block of non-negative, non-NaN values; every thread gets it. `scratch` is
// __shared__ float[32]; contains __syncthreads, so every thread must call it.
__device__ __forceinline__ float i8m_block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    v = lat_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total = fmaxf(total, scratch[w]);
    return total;
}

// Exact (wrapping) i32 sum over the block; every thread gets it. `scratch` is
// __shared__ int[32]; contains __syncthreads, so every thread must call it.
__device__ __forceinline__ int i8m_block_sum_int(int v, int* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int total = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += scratch[w];
    return total;
}

template <typename T>
__device__ __forceinline__ void int8_row_stats(const T* __restrict__ x, float* __restrict__ stats,
                                               unsigned int* __restrict__ flags, lat_u64 m, unsigned int cols,
                                               float threshold, unsigned int split) {
    __shared__ float scratch[32];
    for (lat_u64 t = blockIdx.x; t < m; t += gridDim.x) {
        float local_max = 0.0f;
        for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) {
            const float value = lat_load(x, t * cols + c);
            const float magnitude = fabsf(value);
            // NaN and Inf (all exponent bits set) are outliers at any threshold.
            const bool non_finite = (__float_as_uint(value) & 0x7f800000u) == 0x7f800000u;
            if (non_finite || (split && magnitude >= threshold)) {
                atomicOr(&flags[c >> 5], 1u << (c & 31u));
            } else if (magnitude > local_max) {
                local_max = magnitude;
            }
        }
        const float s = i8m_block_max(local_max, scratch);
        if (threadIdx.x == 0) {
            stats[2 * t] = s;
            stats[2 * t + 1] = s > 0.0f ? __fdiv_rn(127.0f, s) : 0.0f;
        }
    }
}

template <typename T>
__device__ __forceinline__ void int8_quantize_x(const T* __restrict__ x, const float* __restrict__ stats,
                                                const unsigned int* __restrict__ flags, unsigned int* __restrict__ xq,
                                                lat_u64 m, unsigned int cols, unsigned int words) {
    const lat_u64 total = m * words;
    for (lat_u64 i = lat_global_thread(); i < total; i += lat_grid_threads()) {
        const lat_u64 t = i / words;
        const unsigned int w = (unsigned int)(i % words);
        const float s = stats[2 * t];
        const float k = stats[2 * t + 1];
        unsigned int packed = 0u;
        if (s > 0.0f) {
            const unsigned int outliers = (flags[w >> 3] >> ((w & 7u) * 4u)) & 15u;
#pragma unroll
            for (unsigned int j = 0; j < 4u; ++j) {
                const unsigned int c = w * 4u + j;
                if (c < cols && ((outliers >> j) & 1u) == 0u) packed |= i8m_quantize(lat_load(x, t * cols + c), k) << (8u * j);
            }
        }
        xq[i] = packed;
    }
}

template <typename T>
__device__ __forceinline__ void int8_mixed_matmul(const unsigned int* __restrict__ codes,
                                                  const float* __restrict__ scb, const unsigned int* __restrict__ xq,
                                                  const float* __restrict__ stats,
                                                  const unsigned int* __restrict__ flags, const T* __restrict__ x,
                                                  T* __restrict__ y, lat_u64 rows, unsigned int cols, lat_u64 m,
                                                  unsigned int words) {
    __shared__ float scratch_f32[32];
    __shared__ int scratch_i32[32];
    const lat_u64 m_tiles = (m + I8M_TILE_M - 1) / I8M_TILE_M;
    const lat_u64 items = rows * m_tiles;
    for (lat_u64 item = blockIdx.x; item < items; item += gridDim.x) {
        const lat_u64 row = item % rows;
        const lat_u64 t0 = (item / rows) * I8M_TILE_M;
        const int tokens = (int)(m - t0 < I8M_TILE_M ? m - t0 : I8M_TILE_M);
        const float scale = scb[row];
        const unsigned int* code_row = codes + row * words;
        int int_sum[I8M_TILE_M] = {0, 0, 0, 0};
        float outlier_sum[I8M_TILE_M] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (unsigned int w = threadIdx.x; w < words; w += blockDim.x) {
            const unsigned int weight_word = code_row[w];
#pragma unroll
            for (int t = 0; t < I8M_TILE_M; ++t) {
                if (t < tokens) int_sum[t] = __dp4a((int)weight_word, (int)xq[(t0 + t) * words + w], int_sum[t]);
            }
            const unsigned int outliers = (flags[w >> 3] >> ((w & 7u) * 4u)) & 15u;
            if (outliers != 0u) {
                for (unsigned int j = 0; j < 4u; ++j) {
                    if (((outliers >> j) & 1u) == 0u) continue;
                    const float code = (float)(signed char)(weight_word >> (8u * j));
                    const float weight = __fmul_rn(__fmul_rn(code, scale), I8M_INV_127);
                    const unsigned int c = w * 4u + j;
#pragma unroll
                    for (int t = 0; t < I8M_TILE_M; ++t) {
                        if (t < tokens) outlier_sum[t] = fmaf(lat_load(x, (t0 + t) * cols + c), weight, outlier_sum[t]);
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < I8M_TILE_M; ++t) {
            // Every thread calls both block sums (they synchronize); one thread stores.
            const int int_total = i8m_block_sum_int(int_sum[t], scratch_i32);
            const float outlier_total = lat_block_sum(outlier_sum[t], scratch_f32);
            if (threadIdx.x == 0 && t < tokens) {
                const float s_x = stats[2 * (t0 + t)];
                const float int_part = __fmul_rn(__fmul_rn((float)int_total, __fmul_rn(s_x, scale)), I8M_INV_127_SQ);
                lat_store(y, (t0 + t) * rows + row, __fadd_rn(int_part, outlier_total));
            }
        }
    }
}

#define INT8_MIXED_ENTRIES(SUFFIX, T)                                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        int8_row_stats_##SUFFIX(const T* x, float* stats, unsigned int* flags, lat_u64 m, unsigned int cols,      \
                                float threshold, unsigned int split) {                                            \
        int8_row_stats<T>(x, stats, flags, m, cols, threshold, split);                                            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                             \
        int8_quantize_x_##SUFFIX(const T* x, const float* stats, const unsigned int* flags, unsigned int* xq,     \
                                 lat_u64 m, unsigned int cols, unsigned int words) {                              \
        int8_quantize_x<T>(x, stats, flags, xq, m, cols, words);                                                  \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) int8_mixed_matmul_##SUFFIX(                                 \
        const unsigned int* codes, const float* scb, const unsigned int* xq, const float* stats,                  \
        const unsigned int* flags, const T* x, T* y, lat_u64 rows, unsigned int cols, lat_u64 m,                  \
        unsigned int words) {                                                                                     \
        int8_mixed_matmul<T>(codes, scb, xq, stats, flags, x, y, rows, cols, m, words);                           \
    }

LAT_FOR_EACH_DTYPE(INT8_MIXED_ENTRIES)
