// adapters/lora_apply.cu: per-row ("mixed") LoRA / DoRA update added to a base output,
// mirroring kernels/wgsl/adapters/lora_mixed_xa.wgsl and lora_apply.wgsl (which run in CI
// on lavapipe). Used for AdapterSet::forward_mixed, DoRA and bases without a dense weight.
//
// Entry points (T = float | lat_f16 | lat_bf16, suffix _f32 | _f16 | _bf16):
//   lora_mixed_xa_<T>(const T* x, const float* a, const unsigned int* slots,
//                     const int* row_adapter, float* xa, unsigned int rows,
//                     unsigned int n_in, unsigned int max_rank, unsigned int n_slots,
//                     unsigned long long a_len)
//     xa[row, j] = s_k * x[row] . A_k[j] for k = row_adapter[row], j < r_k. 128 threads
//     per block; a block computes one row x 4 ranks: threads stride over n_in, warp
//     shuffles then shared memory across the 4 warps. Blocks stride over
//     rows * ceil(max_rank / 4).
//   lora_mixed_apply_<T>(const T* yb, const float* bias, const float* b_t, const float* c,
//                        const unsigned int* slots, const int* row_adapter,
//                        const float* xa, T* y, unsigned int rows, unsigned int n_out,
//                        unsigned int max_rank, unsigned int n_slots, unsigned int has_bias,
//                        unsigned int bias_in_base, unsigned long long bt_len,
//                        unsigned long long c_len)
//     one thread per output element (grid-stride): l = sum_j xa[row, j] B_k^T[j, o];
//     LoRA y = yb + l (+ bias unless already in yb); DoRA y = c_k[o] (yb - bias_in_yb + l)
//     + bias; base-only rows (k < 0, k >= n_slots, rank 0) y = yb (+ bias unless in yb).
// Layout: x [rows, n_in], yb and y [rows, n_out] in T; a = the A_k [r_k, n_in] of every
//   slot concatenated (a_len floats), b_t = the B_k^T [r_k, n_out] (bt_len floats),
//   c = DoRA factors [n_out] per DoRA slot (c_len floats), bias [n_out] f32 (unread when
//   has_bias = 0), slots: 8 u32 per slot (a_off, bt_off, rank, scaling bits, c_off,
//   has_c, 0, 0), row_adapter i32 per row, xa [rows, max_rank] f32 zero-filled.
// Numerics: f32 accumulation (fmaf), one rounding to T. 64-bit element offsets; every
//   load and store is bounds-checked (rows, n_in, n_out, max_rank, n_slots, lengths).
#include "linattn_common.cuh"

#define LORA_MIXED_THREADS 128
#define LORA_APPLY_THREADS 256

template <typename T>
__device__ void lora_mixed_xa(const T* x, const float* a, const unsigned int* slots, const int* row_adapter,
                              float* xa, unsigned int rows, unsigned int n_in, unsigned int max_rank,
                              unsigned int n_slots, lat_u64 a_len) {
    __shared__ float scratch[LORA_MIXED_THREADS / 32][4];
    const unsigned int rank_blocks = (max_rank + 3) / 4;
    const lat_u64 total = (lat_u64)rows * rank_blocks;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    for (lat_u64 block = blockIdx.x; block < total; block += gridDim.x) {
        const unsigned int row = (unsigned int)(block / rank_blocks);
        const unsigned int j0 = (unsigned int)(block % rank_blocks) * 4;
        const int k = row_adapter[row];
        unsigned int rank = 0, a_off = 0;
        float scaling = 0.0f;
        if (k >= 0 && (unsigned int)k < n_slots) {
            const unsigned int* m = slots + (lat_u64)k * 8;
            a_off = m[0];
            rank = min(m[2], max_rank);
            scaling = __uint_as_float(m[3]);
        }
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (j0 < rank) {
            for (unsigned int i = threadIdx.x; i < n_in; i += LORA_MIXED_THREADS) {
                const float xv = lat_load(x, (lat_u64)row * n_in + i);
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) {
                    const unsigned int j = j0 + jj;
                    const lat_u64 ai = (lat_u64)a_off + (lat_u64)j * n_in + i;
                    if (j < rank && ai < a_len) acc[jj] = fmaf(xv, a[ai], acc[jj]);
                }
            }
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) acc[jj] = lat_warp_sum(acc[jj]);
        __syncthreads();  // scratch may still be read from the previous block iteration
        if (lane == 0) {
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) scratch[warp][jj] = acc[jj];
        }
        __syncthreads();
        if (threadIdx.x < 4) {
            float total_v = 0.0f;
            for (int wi = 0; wi < LORA_MIXED_THREADS / 32; ++wi) total_v += scratch[wi][threadIdx.x];
            const unsigned int j = j0 + threadIdx.x;
            if (j < rank) xa[(lat_u64)row * max_rank + j] = scaling * total_v;
        }
    }
}

template <typename T>
__device__ void lora_mixed_apply(const T* yb, const float* bias, const float* b_t, const float* c,
                                 const unsigned int* slots, const int* row_adapter, const float* xa, T* y,
                                 unsigned int rows, unsigned int n_out, unsigned int max_rank, unsigned int n_slots,
                                 unsigned int has_bias, unsigned int bias_in_base, lat_u64 bt_len, lat_u64 c_len) {
    const lat_u64 total = (lat_u64)rows * n_out;
    for (lat_u64 e = (lat_u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (lat_u64)gridDim.x * blockDim.x) {
        const unsigned int row = (unsigned int)(e / n_out);
        const unsigned int o = (unsigned int)(e % n_out);
        float v = lat_load(yb, e);
        const float bias_v = has_bias ? bias[o] : 0.0f;
        const float bias_add = bias_in_base ? 0.0f : bias_v;
        const int k = row_adapter[row];
        unsigned int rank = 0;
        const unsigned int* m = slots;
        if (k >= 0 && (unsigned int)k < n_slots) {
            m = slots + (lat_u64)k * 8;
            rank = min(m[2], max_rank);
        }
        if (rank == 0) {
            lat_store(y, e, v + bias_add);
            continue;
        }
        float l = 0.0f;
        for (unsigned int j = 0; j < rank; ++j) {
            const lat_u64 bi = (lat_u64)m[1] + (lat_u64)j * n_out + o;
            if (bi < bt_len) l = fmaf(xa[(lat_u64)row * max_rank + j], b_t[bi], l);
        }
        if (m[5]) {
            const lat_u64 ci = (lat_u64)m[4] + o;
            const float scale = ci < c_len ? c[ci] : 1.0f;
            const float base = bias_in_base ? v - bias_v : v;
            v = scale * (base + l) + bias_v;
        } else {
            v = v + l + bias_add;
        }
        lat_store(y, e, v);
    }
}

#define LORA_APPLY_ENTRIES(suffix, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(LORA_MIXED_THREADS)                                               \
        lora_mixed_xa_##suffix(const T* x, const float* a, const unsigned int* slots, const int* row_adapter,      \
                               float* xa, unsigned int rows, unsigned int n_in, unsigned int max_rank,             \
                               unsigned int n_slots, unsigned long long a_len) {                                   \
        lora_mixed_xa<T>(x, a, slots, row_adapter, xa, rows, n_in, max_rank, n_slots, a_len);                      \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(LORA_APPLY_THREADS)                                               \
        lora_mixed_apply_##suffix(const T* yb, const float* bias, const float* b_t, const float* c,                 \
                                  const unsigned int* slots, const int* row_adapter, const float* xa, T* y,        \
                                  unsigned int rows, unsigned int n_out, unsigned int max_rank,                    \
                                  unsigned int n_slots, unsigned int has_bias, unsigned int bias_in_base,          \
                                  unsigned long long bt_len, unsigned long long c_len) {                           \
        lora_mixed_apply<T>(yb, bias, b_t, c, slots, row_adapter, xa, y, rows, n_out, max_rank, n_slots, has_bias, \
                            bias_in_base, bt_len, c_len);                                                          \
    }

LAT_FOR_EACH_DTYPE(LORA_APPLY_ENTRIES)
