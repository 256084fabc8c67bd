// chunk_fwd.cu: chunked forward of gated linear attention (linear attention, simple GLA /
// RetNet with a scalar log-decay, GLA with a per-key-dim log-decay), and its decode step.
//
// Entry points (T = f32 | f16 | bf16 for q, k, v, o; gates f32/f16/bf16 by `gate_dtype`
// 0/1/2; `gate_mode` 0 none, 1 per head [H], 2 per token, 3 per key):
//   chunk_fwd_v1_<T>(const T* q, const T* k, const T* v, const void* gates,
//                    const float* init, const unsigned int* bounds, T* o, float* state,
//                    u32 heads, u32 key_dim, u32 value_dim, u32 num_seqs, u32 v_tiles,
//                    u32 chunk, u32 total_rows, u32 has_init, u32 gate_mode,
//                    u32 gate_dtype, float scale)
//   chunk_fwd_v2_<T>(const void* q, const void* k, const T* v, const void* gates,
//                    const float* init, const unsigned int* bounds, void* o, float* state,
//                    u32 heads, u32 key_dim, u32 value_dim, u32 num_seqs, u32 v_tiles,
//                    u32 chunk, u32 total_rows, u32 has_init, u32 gate_mode,
//                    u32 gate_dtype, float scale, u32 q_f32, u32 k_f32, u32 value_width,
//                    u32 key_shift, u32 out_f32)
//   decode_step_v1_<T>(const T* q, const T* k, const T* v, const void* gates,
//                      const float* state_in, T* o, float* state_out, u32 rows,
//                      u32 heads, u32 key_dim, u32 value_dim, u32 gate_mode,
//                      u32 gate_dtype, float scale)
//
// Layout: q, k [B, T, H, K]; v, o [B, T, H, V]; gates [H], [B, T, H] or [B, T, H, K];
// init, state [N, H, K, V] f32; bounds u32 [N + 1] = flat token rows of each sequence
// (n * T for a batch, cu_seqlens for varlen). Decode: q, k [N, H, K], v, o [N, H, V],
// gates [H], [N, H] or [N, H, K].
//
// chunk_fwd: one block of 256 threads per (sequence, head, 16-column value tile) in a
// 1-D grid (blockIdx.x, < 2^31); the block walks its chunks in order carrying its f32
// state slice in `state` (owned exclusively; __syncthreads makes global writes visible
// within the block). Per chunk of L <= C rows, b = chunk-local inclusive cumsum of g:
//   A_ij = s * sum_r q_ir k_jr exp(b_ir - b_jr)   (j <= i, masked before exp)
//   o_i  = s * sum_r q_ir exp(b_ir) S_r + sum_{j<=i} A_ij v_j
//   S_r <- exp(b_Lr) S_r + sum_j k_jr exp(b_Lr - b_jr) v_j
// Every exponent is <= 0 for log-decays <= 0. Per-key gates are evaluated element-wise
// in f32. Static shared memory: 6848 floats (27.4 KiB). This mirrors
// kernels/wgsl/attn/chunk_fwd.wgsl line by line (that one is tested on lavapipe).
// decode_step: one thread per (n, h, value column), 64-thread blocks, 1-D grid.
// Every global index is checked against the problem sizes before use.
//
// chunk_fwd_v2 is v1 with the extensions of kernels/wgsl/attn/chunk_fwd.wgsl: q and k
// are T or f32 (q_f32 / k_f32: outputs of the Hedgehog kernel); value_width = V or V + 1
// with a virtual ones column at index V (normalizer: that state column accumulates z,
// the output column V is q . z; init and state are [N, H, K, value_width]); key_shift =
// W makes row m of a sequence read the key, value and ones of row m - W (zeros before);
// out_f32 writes o as f32 [B, T, H, value_width] instead of T [B, T, H, V].
//
// Versions: v1 (this file) scalar f32 tiles; v2 = v1 + the extensions above. Build with `cargo xtask kernels`; launched
// from crates/attn/src/gpu/cuda.rs.
#include "linattn_common.cuh"

#define CF_WG 256u
#define CF_CMAX 64u
#define CF_BK 8u
#define CF_BV 16u

__device__ __forceinline__ float cf_load_gate(const void* gates, lat_u64 i, lat_u64 len,
                                              unsigned int gate_dtype) {
    if (i >= len) return 0.0f;
    if (gate_dtype == 1u) return lat_to_f32(((const lat_f16*)gates)[i]);
    if (gate_dtype == 2u) return lat_to_f32(((const lat_bf16*)gates)[i]);
    return ((const float*)gates)[i];
}

template <typename T>
__device__ __forceinline__ float cf_load_qk(const void* p, lat_u64 i, unsigned int is_f32) {
    return is_f32 != 0u ? ((const float*)p)[i] : lat_load((const T*)p, i);
}

template <typename T>
__device__ __forceinline__ void chunk_fwd_v2(const void* __restrict__ q, const void* __restrict__ k,
                                             const T* __restrict__ v, const void* __restrict__ gates,
                                             const float* __restrict__ init,
                                             const unsigned int* __restrict__ bounds, void* __restrict__ o,
                                             float* __restrict__ state, unsigned int heads,
                                             unsigned int key_dim, unsigned int value_dim,
                                             unsigned int num_seqs, unsigned int v_tiles, unsigned int chunk,
                                             unsigned int total_rows, unsigned int has_init,
                                             unsigned int gate_mode, unsigned int gate_dtype, float scale,
                                             unsigned int q_f32, unsigned int k_f32, unsigned int value_width,
                                             unsigned int key_shift, unsigned int out_f32) {
    __shared__ float a_tile[CF_CMAX * CF_CMAX];
    __shared__ float q_tile[CF_CMAX * CF_BK];
    __shared__ float k_tile[CF_CMAX * CF_BK];
    __shared__ float g_tile[CF_CMAX * CF_BK];
    __shared__ float v_tile[CF_CMAX * CF_BV];
    __shared__ float s_tile[CF_BK * CF_BV];
    __shared__ float b_row[CF_CMAX];

    const unsigned int t = threadIdx.x;
    const lat_u64 per_seq = (lat_u64)heads * v_tiles;
    const lat_u64 wg = blockIdx.x;
    if (v_tiles == 0u || heads == 0u || wg >= (lat_u64)num_seqs * per_seq || blockDim.x != CF_WG) return;
    if (value_width < value_dim || value_width > value_dim + 1u) return;
    const unsigned int n = (unsigned int)(wg / per_seq);
    const unsigned int h = (unsigned int)((wg / v_tiles) % heads);
    const unsigned int v0 = (unsigned int)(wg % v_tiles) * CF_BV;
    const unsigned int c = chunk < 1u ? 1u : (chunk > CF_CMAX ? CF_CMAX : chunk);
    const unsigned int seq_end = min(bounds[n + 1u], total_rows);
    const unsigned int seq_start = min(bounds[n], seq_end);
    const lat_u64 hk = (lat_u64)heads * key_dim;
    const lat_u64 hv = (lat_u64)heads * value_dim;
    const lat_u64 qk_len = (lat_u64)total_rows * hk;
    const lat_u64 state_len = (lat_u64)num_seqs * heads * key_dim * value_width;
    lat_u64 gate_len = 0;
    if (gate_mode == 1u) gate_len = heads;
    if (gate_mode == 2u) gate_len = (lat_u64)total_rows * heads;
    if (gate_mode == 3u) gate_len = qk_len;
    const lat_u64 state_base = ((lat_u64)n * heads + h) * key_dim;  // row index of S[n, h, 0]
    const bool scalar_gate = gate_mode == 1u || gate_mode == 2u;

    if (has_init != 0u) {
        for (unsigned int e = t; e < key_dim * CF_BV; e += CF_WG) {
            const unsigned int col = v0 + e % CF_BV;
            const lat_u64 si = (state_base + e / CF_BV) * value_width + col;
            if (col < value_width && si < state_len) state[si] = init[si];
        }
    }
    __syncthreads();

    for (unsigned int row0 = seq_start; row0 < seq_end; row0 += c) {
        const unsigned int len = min(c, seq_end - row0);
        if (t == 0u) {
            float acc = 0.0f;
            for (unsigned int i = 0; i < CF_CMAX; ++i) {
                if (i < len) {
                    if (gate_mode == 1u) acc += cf_load_gate(gates, h, gate_len, gate_dtype);
                    if (gate_mode == 2u)
                        acc += cf_load_gate(gates, (lat_u64)(row0 + i) * heads + h, gate_len, gate_dtype);
                }
                b_row[i] = acc;
            }
        }
        __syncthreads();

        // Pass 1 over key tiles: A = q k^T (decayed) and the inter-chunk q S.
        float acc_a[16];
        float acc_o[4];
#pragma unroll
        for (int m = 0; m < 16; ++m) acc_a[m] = 0.0f;
#pragma unroll
        for (int m = 0; m < 4; ++m) acc_o[m] = 0.0f;
        for (unsigned int r0 = 0; r0 < key_dim; r0 += CF_BK) {
            for (unsigned int e = t; e < CF_CMAX * CF_BK; e += CF_WG) {
                const unsigned int i = e / CF_BK;
                const unsigned int r = r0 + e % CF_BK;
                float qv = 0.0f, kv = 0.0f, gv = 0.0f;
                const lat_u64 idx = (lat_u64)(row0 + i) * hk + (lat_u64)h * key_dim + r;
                if (i < len && r < key_dim && idx < qk_len) {
                    qv = cf_load_qk<T>(q, idx, q_f32);
                    if ((lat_u64)row0 + i >= (lat_u64)seq_start + key_shift) {
                        const lat_u64 kidx = idx - (lat_u64)key_shift * hk;
                        kv = cf_load_qk<T>(k, kidx, k_f32);
                    }
                    if (gate_mode == 3u) gv = cf_load_gate(gates, idx, gate_len, gate_dtype);
                }
                q_tile[e] = qv;
                k_tile[e] = kv;
                g_tile[e] = gv;
            }
            if (t < CF_BK * CF_BV) {
                const unsigned int r = r0 + t / CF_BV;
                const unsigned int col = v0 + t % CF_BV;
                const lat_u64 si = (state_base + r) * value_width + col;
                s_tile[t] = (r < key_dim && col < value_width && si < state_len) ? state[si] : 0.0f;
            }
            __syncthreads();
            if (gate_mode == 3u && t < CF_BK) {
                float acc = 0.0f;
                for (unsigned int i = 0; i < len; ++i) {
                    acc += g_tile[i * CF_BK + t];
                    g_tile[i * CF_BK + t] = acc;
                }
            }
            __syncthreads();
#pragma unroll
            for (int m = 0; m < 16; ++m) {
                const unsigned int e = t + m * CF_WG;
                const unsigned int i = e / c;
                const unsigned int j = e % c;
                if (e < c * c && i < len && j <= i) {
                    float sum = 0.0f;
#pragma unroll
                    for (unsigned int rr = 0; rr < CF_BK; ++rr) {
                        float term = q_tile[i * CF_BK + rr] * k_tile[j * CF_BK + rr];
                        if (gate_mode == 3u) term *= expf(g_tile[i * CF_BK + rr] - g_tile[j * CF_BK + rr]);
                        sum += term;
                    }
                    acc_a[m] += sum;
                }
            }
#pragma unroll
            for (int m = 0; m < 4; ++m) {
                const unsigned int e = t + m * CF_WG;
                const unsigned int i = e / CF_BV;
                const unsigned int j = e % CF_BV;
                if (i < len) {
                    float sum = 0.0f;
#pragma unroll
                    for (unsigned int rr = 0; rr < CF_BK; ++rr) {
                        float qv = q_tile[i * CF_BK + rr];
                        if (gate_mode == 3u) qv *= expf(g_tile[i * CF_BK + rr]);
                        sum += qv * s_tile[rr * CF_BV + j];
                    }
                    acc_o[m] += sum;
                }
            }
            __syncthreads();
        }

        // A into shared memory (masked, decayed, scaled); the v tile.
#pragma unroll
        for (int m = 0; m < 16; ++m) {
            const unsigned int e = t + m * CF_WG;
            if (e < c * c) {
                const unsigned int i = e / c;
                const unsigned int j = e % c;
                float value = 0.0f;
                if (i < len && j <= i) {
                    value = acc_a[m] * scale;
                    if (scalar_gate) value *= expf(b_row[i] - b_row[j]);
                }
                a_tile[i * CF_CMAX + j] = value;
            }
        }
        for (unsigned int e = t; e < CF_CMAX * CF_BV; e += CF_WG) {
            const unsigned int i = e / CF_BV;
            const unsigned int col = v0 + e % CF_BV;
            float value = 0.0f;
            if (i < len && (lat_u64)row0 + i >= (lat_u64)seq_start + key_shift) {
                const lat_u64 src = (lat_u64)row0 + i - key_shift;
                const lat_u64 idx = src * hv + (lat_u64)h * value_dim + col;
                if (col < value_dim && idx < (lat_u64)total_rows * hv) value = lat_load(v, idx);
                else if (col == value_dim && col < value_width) value = 1.0f;
            }
            v_tile[e] = value;
        }
        __syncthreads();

        // Outputs.
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            const unsigned int e = t + m * CF_WG;
            const unsigned int i = e / CF_BV;
            const unsigned int j = e % CF_BV;
            const unsigned int col = v0 + j;
            if (i < len && col < value_width) {
                float value = acc_o[m] * scale;
                if (scalar_gate) value *= expf(b_row[i]);
                for (unsigned int jj = 0; jj <= i; ++jj) value += a_tile[i * CF_CMAX + jj] * v_tile[jj * CF_BV + j];
                // Raw f32 rows have value_width columns; T rows have V.
                const lat_u64 width = out_f32 != 0u ? value_width : value_dim;
                const lat_u64 idx = ((lat_u64)(row0 + i) * heads + h) * width + col;
                if (col < width && idx < (lat_u64)total_rows * heads * width) {
                    if (out_f32 != 0u) ((float*)o)[idx] = value;
                    else lat_store((T*)o, idx, value);
                }
            }
        }
        if (scalar_gate) {
            __syncthreads();
            for (unsigned int e = t; e < CF_CMAX * CF_BV; e += CF_WG) {
                const unsigned int i = e / CF_BV;
                if (i < len) v_tile[e] *= expf(b_row[len - 1u] - b_row[i]);
            }
        }
        __syncthreads();

        // Pass 2 over key tiles: the state update.
        for (unsigned int r0 = 0; r0 < key_dim; r0 += CF_BK) {
            for (unsigned int e = t; e < CF_CMAX * CF_BK; e += CF_WG) {
                const unsigned int i = e / CF_BK;
                const unsigned int r = r0 + e % CF_BK;
                float kv = 0.0f, gv = 0.0f;
                const lat_u64 idx = (lat_u64)(row0 + i) * hk + (lat_u64)h * key_dim + r;
                if (i < len && r < key_dim && idx < qk_len) {
                    if ((lat_u64)row0 + i >= (lat_u64)seq_start + key_shift) {
                        kv = cf_load_qk<T>(k, idx - (lat_u64)key_shift * hk, k_f32);
                    }
                    if (gate_mode == 3u) gv = cf_load_gate(gates, idx, gate_len, gate_dtype);
                }
                k_tile[e] = kv;
                g_tile[e] = gv;
            }
            __syncthreads();
            if (gate_mode == 3u && t < CF_BK) {
                float acc = 0.0f;
                for (unsigned int i = 0; i < len; ++i) {
                    acc += g_tile[i * CF_BK + t];
                    g_tile[i * CF_BK + t] = acc;
                }
            }
            __syncthreads();
            if (t < CF_BK * CF_BV) {
                const unsigned int rr = t / CF_BV;
                const unsigned int r = r0 + rr;
                const unsigned int j = t % CF_BV;
                const unsigned int col = v0 + j;
                const lat_u64 si = (state_base + r) * value_width + col;
                if (r < key_dim && col < value_width && si < state_len) {
                    float s = state[si];
                    if (scalar_gate) s *= expf(b_row[len - 1u]);
                    if (gate_mode == 3u) {
                        const float last = g_tile[(len - 1u) * CF_BK + rr];
                        s *= expf(last);
                        for (unsigned int i = 0; i < len; ++i)
                            s += k_tile[i * CF_BK + rr] * expf(last - g_tile[i * CF_BK + rr]) * v_tile[i * CF_BV + j];
                    } else {
                        for (unsigned int i = 0; i < len; ++i) s += k_tile[i * CF_BK + rr] * v_tile[i * CF_BV + j];
                    }
                    state[si] = s;
                }
            }
            __syncthreads();
        }
    }
}

template <typename T>
__device__ __forceinline__ void decode_step_v1(const T* __restrict__ q, const T* __restrict__ k,
                                               const T* __restrict__ v, const void* __restrict__ gates,
                                               const float* __restrict__ state_in, T* __restrict__ o,
                                               float* __restrict__ state_out, unsigned int rows,
                                               unsigned int heads, unsigned int key_dim, unsigned int value_dim,
                                               unsigned int gate_mode, unsigned int gate_dtype, float scale) {
    const lat_u64 id = lat_global_thread();
    const lat_u64 columns = (lat_u64)rows * heads * value_dim;
    if (id >= columns || heads == 0u || value_dim == 0u) return;
    const lat_u64 j = id % value_dim;
    const lat_u64 nh = id / value_dim;
    const lat_u64 h = nh % heads;
    lat_u64 gate_len = 0;
    if (gate_mode == 1u) gate_len = heads;
    if (gate_mode == 2u) gate_len = (lat_u64)rows * heads;
    if (gate_mode == 3u) gate_len = (lat_u64)rows * heads * key_dim;
    const float vj = lat_load(v, id);
    float decay = 1.0f;
    if (gate_mode == 1u) decay = expf(cf_load_gate(gates, h, gate_len, gate_dtype));
    if (gate_mode == 2u) decay = expf(cf_load_gate(gates, nh, gate_len, gate_dtype));
    float acc = 0.0f;
    for (unsigned int r = 0; r < key_dim; ++r) {
        const lat_u64 qk = nh * key_dim + r;
        const lat_u64 si = qk * value_dim + j;
        float d = decay;
        if (gate_mode == 3u) d = expf(cf_load_gate(gates, qk, gate_len, gate_dtype));
        const float s = d * state_in[si] + lat_load(k, qk) * vj;
        state_out[si] = s;
        acc += lat_load(q, qk) * s;
    }
    lat_store(o, id, acc * scale);
}

#define CHUNK_FWD_ENTRIES(SUFFIX, T)                                                                        \
    extern "C" __global__ void __launch_bounds__(256) chunk_fwd_v1_##SUFFIX(                                \
        const T* q, const T* k, const T* v, const void* gates, const float* init, const unsigned int* bounds, \
        T* o, float* state, unsigned int heads, unsigned int key_dim, unsigned int value_dim,                 \
        unsigned int num_seqs, unsigned int v_tiles, unsigned int chunk, unsigned int total_rows,             \
        unsigned int has_init, unsigned int gate_mode, unsigned int gate_dtype, float scale) {                \
        chunk_fwd_v2<T>(q, k, v, gates, init, bounds, o, state, heads, key_dim, value_dim, num_seqs, v_tiles, \
                        chunk, total_rows, has_init, gate_mode, gate_dtype, scale, 0u, 0u, value_dim, 0u, 0u); \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(256, 1) chunk_fwd_v2_##SUFFIX(                             \
        const void* q, const void* k, const T* v, const void* gates, const float* init,                     \
        const unsigned int* bounds, void* o, float* state, unsigned int heads, unsigned int key_dim,         \
        unsigned int value_dim, unsigned int num_seqs, unsigned int v_tiles, unsigned int chunk,             \
        unsigned int total_rows, unsigned int has_init, unsigned int gate_mode, unsigned int gate_dtype,     \
        float scale, unsigned int q_f32, unsigned int k_f32, unsigned int value_width, unsigned int key_shift, \
        unsigned int out_f32) {                                                                             \
        chunk_fwd_v2<T>(q, k, v, gates, init, bounds, o, state, heads, key_dim, value_dim, num_seqs, v_tiles, \
                        chunk, total_rows, has_init, gate_mode, gate_dtype, scale, q_f32, k_f32, value_width, \
                        key_shift, out_f32);                                                                  \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(64, 8) decode_step_v1_##SUFFIX(                               \
        const T* q, const T* k, const T* v, const void* gates, const float* state_in, T* o, float* state_out, \
        unsigned int rows, unsigned int heads, unsigned int key_dim, unsigned int value_dim,                  \
        unsigned int gate_mode, unsigned int gate_dtype, float scale) {                                       \
        decode_step_v1<T>(q, k, v, gates, state_in, o, state_out, rows, heads, key_dim, value_dim, gate_mode, \
                          gate_dtype, scale);                                                                 \
    }

LAT_FOR_EACH_DTYPE(CHUNK_FWD_ENTRIES)
