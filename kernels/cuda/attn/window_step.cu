// window_step.cu: the decode step of the LoLCATs window hybrid on CUDA (one new token per
// sequence). It mirrors kernels/wgsl/attn/window_step_{gather,state,cache,out}.wgsl,
// which are tested on lavapipe against the CPU reference (crates/attn/src/window/
// decode.rs); see those headers for the math. With m = tokens seen of sequence n before
// this step, the token in ring slot m % W (position m - W) leaves the window when m >= W
// and moves into S and z; the new key / value take its slot; the output is
//   y = (phi_q^T S + sum_j a exp(s q.k_j - c) v_j) / (phi_q . z + sum_j a exp(s q.k_j - c))
// over the count = min(m + 1, W) cached tokens (c their exact maximum score).
//
// Entry points (T = f32 | f16 | bf16):
//   window_step_gather_v1_<T>(const T* q, const float* keys, const unsigned int* seen,
//                             float* q32, float* old_k, u32 num_seqs, u32 heads, u32 dim,
//                             u32 window)
//       q [N, H, D] in T, keys [N, H, W, D] f32, seen [N]; q32 = q as f32, old_k = the
//       key in slot m % W when m >= W (else 0), both [N, H, D] f32; grid-stride.
//   window_step_state_v1(const float* ext_in, const float* phi_old, const float* values,
//                        const unsigned int* seen, float* ext_out, u32 num_seqs,
//                        u32 heads, u32 feature_dim, u32 value_dim, u32 window)
//       ext [N, H, K', V + 1] f32 (S with z as the last column), phi_old [N, H, K'],
//       values [N, H, W, V] (the cache before this step); ext_out = ext_in +
//       phi_old[r] [v_old, 1] when m >= W; grid-stride.
//   window_step_cache_v1_<T>(const T* src, const float* cache_in, const unsigned int* seen,
//                            float* cache_out, u32 num_seqs, u32 heads, u32 window,
//                            u32 width)
//       cache [N, H, W, X] f32 with slot m % W replaced by src [N, H, X]; grid-stride.
//   window_step_out_v1_<T>(const T* q, const float* phi_q, const float* ext,
//                          const float* keys, const float* values,
//                          const unsigned int* seen, const float* factor, T* o,
//                          u32 num_seqs, u32 heads, u32 key_dim, u32 feature_dim,
//                          u32 value_dim, u32 window, float scale)
//       after the state and cache updates: one 64-thread block per (n, h), block-stride
//       loop; pass 1 the exact maximum c, pass 2 tiles of 64 weights (scores
//       recomputed, any W), value columns t, t + 64, .. (V <= 256), shared-memory trees.
//
// Every global index is checked against the sizes given by the arguments (the host
// checks the buffers against them); 64-bit offsets. Versions: v1 (this file). Build with
// `cargo xtask kernels`; launched from crates/attn/src/gpu/cuda.rs (`window_step`).
#include "linattn_common.cuh"

#define WS_WG 64u
#define WS_DMAX 256u

template <typename T>
__device__ __forceinline__ void window_step_gather_v1(const T* __restrict__ q, const float* __restrict__ keys,
                                                      const unsigned int* __restrict__ seen, float* __restrict__ q32,
                                                      float* __restrict__ old_k, unsigned int num_seqs,
                                                      unsigned int heads, unsigned int dim, unsigned int window) {
    if (dim == 0u || window == 0u || heads == 0u) return;
    const lat_u64 total = (lat_u64)num_seqs * heads * dim;
    const lat_u64 keys_len = total * window;
    for (lat_u64 e = lat_global_thread(); e < total; e += lat_grid_threads()) {
        const lat_u64 nh = e / dim;
        const lat_u64 n = nh / heads;
        q32[e] = lat_load(q, e);
        float kv = 0.0f;
        if (n < num_seqs && seen[n] >= window) {
            const lat_u64 ki = (nh * window + seen[n] % window) * dim + e % dim;
            if (ki < keys_len) kv = keys[ki];
        }
        old_k[e] = kv;
    }
}

extern "C" __global__ void __launch_bounds__(256)
    window_step_state_v1(const float* __restrict__ ext_in, const float* __restrict__ phi_old,
                         const float* __restrict__ values, const unsigned int* __restrict__ seen,
                         float* __restrict__ ext_out, unsigned int num_seqs, unsigned int heads,
                         unsigned int feature_dim, unsigned int value_dim, unsigned int window) {
    const lat_u64 vx = (lat_u64)value_dim + 1u;
    const lat_u64 kf = feature_dim;
    if (kf == 0u || window == 0u || heads == 0u) return;
    const lat_u64 total = (lat_u64)num_seqs * heads * kf * vx;
    const lat_u64 phi_len = (lat_u64)num_seqs * heads * kf;
    const lat_u64 values_len = (lat_u64)num_seqs * heads * window * value_dim;
    for (lat_u64 e = lat_global_thread(); e < total; e += lat_grid_threads()) {
        const lat_u64 c = e % vx;
        const lat_u64 nhr = e / vx;  // (n * H + h) * K' + r
        const lat_u64 nh = nhr / kf;
        const lat_u64 n = nh / heads;
        float s = ext_in[e];
        if (n < num_seqs && seen[n] >= window && nhr < phi_len) {
            float old_v = 1.0f;
            if (c < value_dim) {
                const lat_u64 vi = (nh * window + seen[n] % window) * value_dim + c;
                old_v = 0.0f;
                if (vi < values_len) old_v = values[vi];
            }
            s += phi_old[nhr] * old_v;
        }
        ext_out[e] = s;
    }
}

template <typename T>
__device__ __forceinline__ void window_step_cache_v1(const T* __restrict__ src, const float* __restrict__ cache_in,
                                                     const unsigned int* __restrict__ seen,
                                                     float* __restrict__ cache_out, unsigned int num_seqs,
                                                     unsigned int heads, unsigned int window, unsigned int width) {
    if (width == 0u || window == 0u || heads == 0u) return;
    const lat_u64 total = (lat_u64)num_seqs * heads * window * width;
    const lat_u64 src_len = (lat_u64)num_seqs * heads * width;
    for (lat_u64 e = lat_global_thread(); e < total; e += lat_grid_threads()) {
        const lat_u64 x = e % width;
        const lat_u64 slot = (e / width) % window;
        const lat_u64 nh = e / ((lat_u64)width * window);
        const lat_u64 n = nh / heads;
        float value = cache_in[e];
        if (n < num_seqs && slot == seen[n] % window) {
            const lat_u64 i = nh * width + x;
            value = 0.0f;
            if (i < src_len) value = lat_load(src, i);
        }
        cache_out[e] = value;
    }
}

template <typename T>
__device__ __forceinline__ void window_step_out_v1(const T* __restrict__ q, const float* __restrict__ phi_q,
                                                   const float* __restrict__ ext, const float* __restrict__ keys,
                                                   const float* __restrict__ values,
                                                   const unsigned int* __restrict__ seen,
                                                   const float* __restrict__ factor, T* __restrict__ o,
                                                   unsigned int num_seqs, unsigned int heads, unsigned int key_dim,
                                                   unsigned int feature_dim, unsigned int value_dim,
                                                   unsigned int window, float scale) {
    __shared__ float q_row[WS_DMAX];
    __shared__ float weights[WS_WG];
    __shared__ float red[WS_WG];
    const unsigned int t = threadIdx.x;
    const unsigned int kd = key_dim;
    const unsigned int kf = feature_dim;
    const unsigned int vd = value_dim;
    const unsigned int w = window;
    if (blockDim.x != WS_WG || kd == 0u || kd > WS_DMAX || vd == 0u || vd > WS_DMAX || w == 0u || heads == 0u)
        return;
    const lat_u64 groups = (lat_u64)num_seqs * heads;
    const lat_u64 vx = (lat_u64)vd + 1u;
    const lat_u64 phi_len = groups * kf;
    const lat_u64 ext_len = phi_len * vx;
    const lat_u64 keys_len = groups * w * kd;
    const lat_u64 values_len = groups * w * vd;
    for (lat_u64 nh = blockIdx.x; nh < groups; nh += gridDim.x) {
        const lat_u64 n = nh / heads;
        const unsigned int h = (unsigned int)(nh % heads);
        const float a = factor[h];
        __syncthreads();
        for (unsigned int e = t; e < kd; e += WS_WG) q_row[e] = lat_load(q, nh * kd + e);
        __syncthreads();
        const unsigned int count = min(seen[n], w - 1u) + 1u;
        auto score = [&](unsigned int slot) {
            const lat_u64 base = (nh * w + slot) * kd;
            float acc = 0.0f;
            for (unsigned int e = 0; e < kd; ++e)
                if (base + e < keys_len) acc += q_row[e] * keys[base + e];
            return scale * acc;
        };
        float local_max = -3.4e38f;
        for (unsigned int j = t; j < count; j += WS_WG) local_max = fmaxf(local_max, score(j));
        red[t] = local_max;
        for (unsigned int stride = WS_WG / 2u; stride > 0u; stride >>= 1u) {
            __syncthreads();
            if (t < stride) red[t] = fmaxf(red[t], red[t + stride]);
        }
        __syncthreads();
        const float c = red[0];
        __syncthreads();
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        // Linear part phi_q^T S, and phi_q . z (counted once, by thread 0).
        float den = 0.0f;
        for (unsigned int r = 0; r < kf; ++r) {
            const lat_u64 pi = nh * kf + r;
            const float p = pi < phi_len ? phi_q[pi] : 0.0f;
            const lat_u64 row = pi * vx;
#pragma unroll
            for (unsigned int m = 0; m < 4u; ++m) {
                const unsigned int col = t + m * WS_WG;
                if (col < vd && row + col < ext_len) acc[m] += p * ext[row + col];
            }
            if (t == 0u && row + vd < ext_len) den += p * ext[row + vd];
        }
        for (unsigned int j0 = 0; j0 < count; j0 += WS_WG) {
            float wj = 0.0f;
            if (j0 + t < count) wj = a * expf(score(j0 + t) - c);
            den += wj;
            weights[t] = wj;
            __syncthreads();
            const unsigned int tile = min(WS_WG, count - j0);
#pragma unroll
            for (unsigned int m = 0; m < 4u; ++m) {
                const unsigned int col = t + m * WS_WG;
                if (col < vd) {
                    float sum = 0.0f;
                    for (unsigned int jj = 0; jj < tile; ++jj) {
                        const lat_u64 vi = (nh * w + j0 + jj) * vd + col;
                        if (vi < values_len) sum += weights[jj] * values[vi];
                    }
                    acc[m] += sum;
                }
            }
            __syncthreads();
        }
        red[t] = den;
        for (unsigned int stride = WS_WG / 2u; stride > 0u; stride >>= 1u) {
            __syncthreads();
            if (t < stride) red[t] += red[t + stride];
        }
        __syncthreads();
        const float total_den = red[0];
#pragma unroll
        for (unsigned int m = 0; m < 4u; ++m) {
            const unsigned int col = t + m * WS_WG;
            if (col < vd) lat_store(o, nh * vd + col, acc[m] / total_den);
        }
    }
}

#define WINDOW_STEP_ENTRIES(SUFFIX, T)                                                                           \
    extern "C" __global__ void __launch_bounds__(256) window_step_gather_v1_##SUFFIX(                            \
        const T* q, const float* keys, const unsigned int* seen, float* q32, float* old_k, unsigned int num_seqs, \
        unsigned int heads, unsigned int dim, unsigned int window) {                                             \
        window_step_gather_v1<T>(q, keys, seen, q32, old_k, num_seqs, heads, dim, window);                       \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(256) window_step_cache_v1_##SUFFIX(                             \
        const T* src, const float* cache_in, const unsigned int* seen, float* cache_out, unsigned int num_seqs,  \
        unsigned int heads, unsigned int window, unsigned int width) {                                           \
        window_step_cache_v1<T>(src, cache_in, seen, cache_out, num_seqs, heads, window, width);                 \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(64) window_step_out_v1_##SUFFIX(                                \
        const T* q, const float* phi_q, const float* ext, const float* keys, const float* values,                \
        const unsigned int* seen, const float* factor, T* o, unsigned int num_seqs, unsigned int heads,          \
        unsigned int key_dim, unsigned int feature_dim, unsigned int value_dim, unsigned int window,             \
        float scale) {                                                                                           \
        window_step_out_v1<T>(q, phi_q, ext, keys, values, seen, factor, o, num_seqs, heads, key_dim,            \
                              feature_dim, value_dim, window, scale);                                            \
    }

LAT_FOR_EACH_DTYPE(WINDOW_STEP_ENTRIES)
