// rms_norm.cu: RMSNorm over the last dimension of a contiguous [rows, cols] tensor.
//
// Entry points (T = f32 | f16 | bf16; weight [cols] in T; f32 math; one rounding):
//   rms_norm_warp_<T>(const T* x, const T* w, T* out, u64 rows, u32 cols, float eps)
//   rms_norm_block_<T>(const T* x, const T* w, T* out, u64 rows, u32 cols, float eps)
//
// Numerics: out[j] = x[j] * (1 / sqrt(sum(x^2) / cols + eps)) * w[j], the sum of squares
// accumulated in f32 (IEEE sqrt and division: NVRTC's default -prec-sqrt/-prec-div).
//
// Versions:
//   v1 (this file): warp per row for cols <= 1024 (block 128 = 4 rows per block), block
//   of 256 threads per row above that; grid-stride loops over rows.
// Launch: see crates/tensor/src/cuda/ops.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

template <typename T>
__device__ __forceinline__ void rms_norm_warp(const T* __restrict__ x, const T* __restrict__ w,
                                              T* __restrict__ out, lat_u64 rows, unsigned int cols,
                                              float eps) {
    const unsigned int lane = threadIdx.x & 31;
    const unsigned int warps_per_block = blockDim.x >> 5;
    const lat_u64 first_row = (lat_u64)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const lat_u64 row_stride = (lat_u64)gridDim.x * warps_per_block;
    for (lat_u64 row = first_row; row < rows; row += row_stride) {
        const lat_u64 base = row * cols;
        float sum_sq = 0.0f;
        for (unsigned int j = lane; j < cols; j += 32) {
            const float v = lat_load(x, base + j);
            sum_sq = fmaf(v, v, sum_sq);
        }
        sum_sq = lat_warp_sum(sum_sq);
        const float inv_rms = 1.0f / sqrtf(sum_sq / (float)cols + eps);
        for (unsigned int j = lane; j < cols; j += 32) {
            lat_store(out, base + j, lat_load(x, base + j) * inv_rms * lat_load(w, j));
        }
    }
}

template <typename T>
__device__ __forceinline__ void rms_norm_block(const T* __restrict__ x, const T* __restrict__ w,
                                               T* __restrict__ out, lat_u64 rows, unsigned int cols,
                                               float eps) {
    __shared__ float scratch[32];
    for (lat_u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const lat_u64 base = row * cols;
        float sum_sq = 0.0f;
        for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float v = lat_load(x, base + j);
            sum_sq = fmaf(v, v, sum_sq);
        }
        sum_sq = lat_block_sum(sum_sq, scratch);
        const float inv_rms = 1.0f / sqrtf(sum_sq / (float)cols + eps);
        for (unsigned int j = threadIdx.x; j < cols; j += blockDim.x) {
            lat_store(out, base + j, lat_load(x, base + j) * inv_rms * lat_load(w, j));
        }
    }
}

#define RMS_NORM_ENTRIES(SUFFIX, T)                                                                \
    extern "C" __global__ void rms_norm_warp_##SUFFIX(const T* x, const T* w, T* out,              \
                                                      lat_u64 rows, unsigned int cols, float eps) {\
        rms_norm_warp<T>(x, w, out, rows, cols, eps);                                              \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256) rms_norm_block_##SUFFIX(                     \
        const T* x, const T* w, T* out, lat_u64 rows, unsigned int cols, float eps) {              \
        rms_norm_block<T>(x, w, out, rows, cols, eps);                                             \
    }

LAT_FOR_EACH_DTYPE(RMS_NORM_ENTRIES)
