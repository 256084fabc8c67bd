// softmax.cu: softmax over the last dimension of a contiguous [rows, cols] tensor.
//
// Entry points (T = f32 | f16 | bf16; f32 statistics; output rounded once to T):
//   softmax_warp_<T>(const T* x, T* out, u64 rows, u32 cols)    one warp per row
//   softmax_block_<T>(const T* x, T* out, u64 rows, u32 cols)   one block per row
//
// Numerics: out = exp(x - max) / sum(exp(x - max)), with the max and sum gathered in one
// pass by online-softmax merging (lat_softmax_push / lat_softmax_merge), then a second
// pass that writes. -inf inputs give 0; a row of all -inf gives NaN (0 / 0), like the
// CPU reference.
//
// Versions:
//   v1 (this file): warp per row for cols <= 1024 (block 128 = 4 rows per block),
//   block of 256 threads per row above that. Both loop over rows with a grid stride, so
//   any row count fits the 2^31-1 grid limit.
// Launch: see crates/tensor/src/cuda/ops.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

template <typename T>
__device__ __forceinline__ void softmax_warp(const T* __restrict__ x, T* __restrict__ out,
                                             lat_u64 rows, unsigned int cols) {
    const unsigned int lane = threadIdx.x & 31;
    const unsigned int warps_per_block = blockDim.x >> 5;
    const lat_u64 first_row = (lat_u64)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const lat_u64 row_stride = (lat_u64)gridDim.x * warps_per_block;
    for (lat_u64 row = first_row; row < rows; row += row_stride) {
        const lat_u64 base = row * cols;
        LatSoftmaxStats st = {LAT_NEG_INF, 0.0f};
        for (unsigned int j = lane; j < cols; j += 32) st = lat_softmax_push(st, lat_load(x, base + j));
        st = lat_warp_softmax_merge(st);
        const float inv_sum = 1.0f / st.sum;
        for (unsigned int j = lane; j < cols; j += 32) {
            lat_store(out, base + j, expf(lat_load(x, base + j) - st.max) * inv_sum);
        }
    }
}

template <typename T>
__device__ __forceinline__ void softmax_block(const T* __restrict__ x, T* __restrict__ out,
                                              lat_u64 rows, unsigned int cols) {
    __shared__ float warp_max[32];
    __shared__ float warp_sum[32];
    const unsigned int lane = threadIdx.x & 31;
    const unsigned int warp = threadIdx.x >> 5;
    const unsigned int warps = blockDim.x >> 5;
    for (lat_u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const lat_u64 base = row * cols;
        LatSoftmaxStats st = {LAT_NEG_INF, 0.0f};
        for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
            st = lat_softmax_push(st, lat_load(x, base + j));
        }
        st = lat_warp_softmax_merge(st);
        __syncthreads();  // the previous row's readers are done with the scratch
        if (lane == 0) {
            warp_max[warp] = st.max;
            warp_sum[warp] = st.sum;
        }
        __syncthreads();
        LatSoftmaxStats total = {LAT_NEG_INF, 0.0f};
        for (unsigned int w = 0; w < warps; ++w) {
            LatSoftmaxStats part = {warp_max[w], warp_sum[w]};
            total = lat_softmax_merge(total, part);
        }
        const float inv_sum = 1.0f / total.sum;
        for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
            lat_store(out, base + j, expf(lat_load(x, base + j) - total.max) * inv_sum);
        }
    }
}

#define SOFTMAX_ENTRIES(SUFFIX, T)                                                                 \
    extern "C" __global__ void softmax_warp_##SUFFIX(const T* x, T* out, lat_u64 rows,             \
                                                     unsigned int cols) {                          \
        softmax_warp<T>(x, out, rows, cols);                                                       \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256) softmax_block_##SUFFIX(                      \
        const T* x, T* out, lat_u64 rows, unsigned int cols) {                                     \
        softmax_block<T>(x, out, rows, cols);                                                      \
    }

LAT_FOR_EACH_DTYPE(SOFTMAX_ENTRIES)
