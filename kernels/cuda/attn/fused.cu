// fused.cu: the kernels around the chunk kernel that complete the attention ops on CUDA:
// Hedgehog feature map, normalizer division, extended-state pack / split, and the
// window hybrid's prefill (window terms + combination, KV cache). They mirror
// kernels/wgsl/attn/{hedgehog,normalize,state_ext,window_fwd,window_cache}.wgsl, which
// are tested on lavapipe against the CPU references; see those headers for the math.
//
// Entry points (T = f32 | f16 | bf16):
//   hedgehog_v1_<T>(const T* x, const float* w, void* o, u32 rows, u32 heads, u32 in_dim,
//                   u32 features, u32 out_f32)
//       x [rows, H, D], w [H, D, F] f32, o [rows, H, 2F] in T (or f32 when out_f32);
//       one 128-thread block per (row, head), block-stride loop over rows * H;
//       u = x W_h (d in order), max / min and the two sums by shared-memory trees.
//   normalize_rows_v1_<T>(const float* raw, T* o, u32 groups, u32 value_dim, float eps)
//       o[g, c] = raw[g, c] / (raw[g, V] + eps), raw [groups, V + 1]; grid-stride.
//   state_ext_v1(float* ext, float* kv, float* z, u32 rows, u32 value_dim, u32 direction,
//                u32 has_z)
//       direction 0: ext [rows, V + 1] <- kv [rows, V], z [rows] (0 without z);
//       direction 1: kv, z <- ext. Grid-stride over rows * (V + 1).
//   window_fwd_v1_<T>(const T* q, const T* k, const T* v, const float* lin,
//                     const float* factor, const unsigned int* bounds, T* o, u32 rows,
//                     u32 heads, u32 key_dim, u32 value_dim, u32 num_seqs, u32 window,
//                     float scale)
//       one 64-thread block per (row, head), block-stride loop; pass 1 the exact window
//       maximum c, pass 2 tiles of 64 weights a exp(s q.k - c) (scores recomputed);
//       y = (num + lin[:V]) / (den + lin[V]).
//   window_cache_v1_<T>(const T* src, const unsigned int* bounds, float* dst,
//                       u32 num_seqs, u32 heads, u32 window, u32 width)
//       dst [N, H, W, X] f32 ring buffer of the last W tokens (slot m % W); grid-stride.
//
// Every global index is checked against the sizes before use; 64-bit offsets.
// Versions: v1 (this file). Build with `cargo xtask kernels`; launched from
// crates/attn/src/gpu/cuda.rs.
#include "linattn_common.cuh"

#define FU_HH_WG 128u
#define FU_WIN_WG 64u
#define FU_DMAX 256u

template <typename T>
__device__ __forceinline__ void hedgehog_v1(const T* __restrict__ x, const float* __restrict__ w, void* __restrict__ o,
                                            unsigned int rows, unsigned int heads, unsigned int in_dim,
                                            unsigned int features, unsigned int out_f32) {
    __shared__ float x_row[FU_DMAX];
    __shared__ float red_a[FU_HH_WG];
    __shared__ float red_b[FU_HH_WG];
    const unsigned int t = threadIdx.x;
    const unsigned int d = in_dim;
    const unsigned int f = features;
    if (blockDim.x != FU_HH_WG || d == 0u || d > FU_DMAX || f == 0u || f > FU_HH_WG || heads == 0u) return;
    const lat_u64 groups = (lat_u64)rows * heads;
    const lat_u64 w_len = (lat_u64)heads * d * f;
    for (lat_u64 g = blockIdx.x; g < groups; g += gridDim.x) {
        const unsigned int h = (unsigned int)(g % heads);
        __syncthreads();
        for (unsigned int e = t; e < d; e += FU_HH_WG) x_row[e] = lat_load(x, g * d + e);
        __syncthreads();
        float u = 0.0f;
        if (t < f) {
            for (unsigned int e = 0; e < d; ++e) {
                const lat_u64 wi = ((lat_u64)h * d + e) * f + t;
                if (wi < w_len) u += x_row[e] * w[wi];
            }
        }
        red_a[t] = t < f ? u : -3.4e38f;
        red_b[t] = t < f ? u : 3.4e38f;
        for (unsigned int stride = FU_HH_WG / 2u; stride > 0u; stride >>= 1u) {
            __syncthreads();
            if (t < stride) {
                red_a[t] = fmaxf(red_a[t], red_a[t + stride]);
                red_b[t] = fminf(red_b[t], red_b[t + stride]);
            }
        }
        __syncthreads();
        const float hi = red_a[0];
        const float lo = red_b[0];
        __syncthreads();
        const float e_pos = t < f ? expf(u - hi) : 0.0f;
        const float e_neg = t < f ? expf(lo - u) : 0.0f;
        red_a[t] = e_pos;
        red_b[t] = e_neg;
        for (unsigned int stride = FU_HH_WG / 2u; stride > 0u; stride >>= 1u) {
            __syncthreads();
            if (t < stride) {
                red_a[t] += red_a[t + stride];
                red_b[t] += red_b[t + stride];
            }
        }
        __syncthreads();
        const float inv_pos = 1.0f / red_a[0];
        const float inv_neg = 1.0f / red_b[0];
        if (t < f) {
            const lat_u64 base = g * 2u * f;
            if (out_f32 != 0u) {
                ((float*)o)[base + t] = e_pos * inv_pos;
                ((float*)o)[base + f + t] = e_neg * inv_neg;
            } else {
                lat_store((T*)o, base + t, e_pos * inv_pos);
                lat_store((T*)o, base + f + t, e_neg * inv_neg);
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void normalize_rows_v1(const float* __restrict__ raw, T* __restrict__ o,
                                                  unsigned int groups, unsigned int value_dim, float eps) {
    if (value_dim == 0u) return;
    const lat_u64 total = (lat_u64)groups * value_dim;
    for (lat_u64 i = lat_global_thread(); i < total; i += lat_grid_threads()) {
        const lat_u64 g = i / value_dim;
        const lat_u64 at = g * (value_dim + 1u);
        lat_store(o, i, raw[at + i % value_dim] / (raw[at + value_dim] + eps));
    }
}

extern "C" __global__ void __launch_bounds__(256) state_ext_v1(float* ext, float* kv, float* z, unsigned int rows,
                                                               unsigned int value_dim, unsigned int direction,
                                                               unsigned int has_z) {
    const lat_u64 vx = (lat_u64)value_dim + 1u;
    const lat_u64 total = (lat_u64)rows * vx;
    for (lat_u64 e = lat_global_thread(); e < total; e += lat_grid_threads()) {
        const lat_u64 r = e / vx;
        const lat_u64 c = e % vx;
        const lat_u64 kvi = r * value_dim + c;
        if (direction == 0u) {
            float value = 0.0f;
            if (c < value_dim) value = kv[kvi];
            else if (has_z != 0u) value = z[r];
            ext[e] = value;
        } else if (c < value_dim) {
            kv[kvi] = ext[e];
        } else {
            z[r] = ext[e];
        }
    }
}

template <typename T>
__device__ __forceinline__ void window_fwd_v1(const T* __restrict__ q, const T* __restrict__ k,
                                              const T* __restrict__ v, const float* __restrict__ lin,
                                              const float* __restrict__ factor,
                                              const unsigned int* __restrict__ bounds, T* __restrict__ o,
                                              unsigned int rows, unsigned int heads, unsigned int key_dim,
                                              unsigned int value_dim, unsigned int num_seqs, unsigned int window,
                                              float scale) {
    __shared__ float q_row[FU_DMAX];
    __shared__ float weights[FU_WIN_WG];
    __shared__ float red[FU_WIN_WG];
    const unsigned int t = threadIdx.x;
    const unsigned int kd = key_dim;
    const unsigned int vd = value_dim;
    if (blockDim.x != FU_WIN_WG || kd == 0u || kd > FU_DMAX || vd == 0u || vd > FU_DMAX || window == 0u ||
        heads == 0u)
        return;
    const lat_u64 groups = (lat_u64)rows * heads;
    for (lat_u64 g = blockIdx.x; g < groups; g += gridDim.x) {
        const unsigned int row = (unsigned int)(g / heads);
        const unsigned int h = (unsigned int)(g % heads);
        const float a = factor[h];
        __syncthreads();
        for (unsigned int e = t; e < kd; e += FU_WIN_WG) q_row[e] = lat_load(q, g * kd + e);
        __syncthreads();
        // First row of the sequence holding `row` (binary search over bounds).
        unsigned int lo_s = 0u, hi_s = num_seqs;
        while (lo_s < hi_s) {
            const unsigned int mid = (lo_s + hi_s + 1u) / 2u;
            if (bounds[mid] <= row) lo_s = mid;
            else hi_s = mid - 1u;
        }
        const unsigned int seq_start = min(bounds[lo_s], row);
        unsigned int lo = seq_start;
        if (row + 1u >= window && row + 1u - window > seq_start) lo = row + 1u - window;
        const unsigned int count = row + 1u - lo;
        auto score = [&](unsigned int key_row) {
            const lat_u64 base = ((lat_u64)key_row * heads + h) * kd;
            float acc = 0.0f;
            for (unsigned int e = 0; e < kd; ++e) acc += q_row[e] * lat_load(k, base + e);
            return scale * acc;
        };
        float local_max = -3.4e38f;
        for (unsigned int j = t; j < count; j += FU_WIN_WG) local_max = fmaxf(local_max, score(lo + j));
        red[t] = local_max;
        for (unsigned int stride = FU_WIN_WG / 2u; stride > 0u; stride >>= 1u) {
            __syncthreads();
            if (t < stride) red[t] = fmaxf(red[t], red[t + stride]);
        }
        __syncthreads();
        const float c = red[0];
        __syncthreads();
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        float den = 0.0f;
        for (unsigned int j0 = 0; j0 < count; j0 += FU_WIN_WG) {
            float wj = 0.0f;
            if (j0 + t < count) wj = a * expf(score(lo + j0 + t) - c);
            den += wj;
            weights[t] = wj;
            __syncthreads();
            const unsigned int tile = min(FU_WIN_WG, count - j0);
#pragma unroll
            for (unsigned int m = 0; m < 4u; ++m) {
                const unsigned int col = t + m * FU_WIN_WG;
                if (col < vd) {
                    float sum = 0.0f;
                    for (unsigned int jj = 0; jj < tile; ++jj)
                        sum += weights[jj] * lat_load(v, ((lat_u64)(lo + j0 + jj) * heads + h) * vd + col);
                    acc[m] += sum;
                }
            }
            __syncthreads();
        }
        red[t] = den;
        for (unsigned int stride = FU_WIN_WG / 2u; stride > 0u; stride >>= 1u) {
            __syncthreads();
            if (t < stride) red[t] += red[t + stride];
        }
        __syncthreads();
        const lat_u64 lin_base = g * (vd + 1u);
        const float total_den = red[0] + lin[lin_base + vd];
#pragma unroll
        for (unsigned int m = 0; m < 4u; ++m) {
            const unsigned int col = t + m * FU_WIN_WG;
            if (col < vd) lat_store(o, g * vd + col, (acc[m] + lin[lin_base + col]) / total_den);
        }
    }
}

template <typename T>
__device__ __forceinline__ void window_cache_v1(const T* __restrict__ src, const unsigned int* __restrict__ bounds,
                                                float* __restrict__ dst, unsigned int num_seqs, unsigned int heads,
                                                unsigned int window, unsigned int width) {
    if (width == 0u || window == 0u || heads == 0u) return;
    const lat_u64 total = (lat_u64)num_seqs * heads * window * width;
    for (lat_u64 e = lat_global_thread(); e < total; e += lat_grid_threads()) {
        const unsigned int x = (unsigned int)(e % width);
        const unsigned int slot = (unsigned int)((e / width) % window);
        const unsigned int h = (unsigned int)((e / ((lat_u64)width * window)) % heads);
        const unsigned int n = (unsigned int)(e / ((lat_u64)width * window * heads));
        const unsigned int start = bounds[n];
        const unsigned int len = max(bounds[n + 1u], start) - start;
        const unsigned int first = len > window ? len - window : 0u;
        const unsigned int m = first + (slot + window - first % window) % window;
        float value = 0.0f;
        if (m < len) value = lat_load(src, (((lat_u64)start + m) * heads + h) * width + x);
        dst[e] = value;
    }
}

#define FUSED_ENTRIES(SUFFIX, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(128) hedgehog_v1_##SUFFIX(                                   \
        const T* x, const float* w, void* o, unsigned int rows, unsigned int heads, unsigned int in_dim,        \
        unsigned int features, unsigned int out_f32) {                                                          \
        hedgehog_v1<T>(x, w, o, rows, heads, in_dim, features, out_f32);                                        \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) normalize_rows_v1_##SUFFIX(                             \
        const float* raw, T* o, unsigned int groups, unsigned int value_dim, float eps) {                       \
        normalize_rows_v1<T>(raw, o, groups, value_dim, eps);                                                   \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(64) window_fwd_v1_##SUFFIX(                                  \
        const T* q, const T* k, const T* v, const float* lin, const float* factor, const unsigned int* bounds,  \
        T* o, unsigned int rows, unsigned int heads, unsigned int key_dim, unsigned int value_dim,              \
        unsigned int num_seqs, unsigned int window, float scale) {                                              \
        window_fwd_v1<T>(q, k, v, lin, factor, bounds, o, rows, heads, key_dim, value_dim, num_seqs, window,    \
                         scale);                                                                                \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) window_cache_v1_##SUFFIX(                               \
        const T* src, const unsigned int* bounds, float* dst, unsigned int num_seqs, unsigned int heads,        \
        unsigned int window, unsigned int width) {                                                              \
        window_cache_v1<T>(src, bounds, dst, num_seqs, heads, window, width);                                   \
    }

LAT_FOR_EACH_DTYPE(FUSED_ENTRIES)
