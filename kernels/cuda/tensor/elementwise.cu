// elementwise.cu: add, mul and scale over contiguous tensors (linattn-tensor).
//
// Entry points (T = f32 | f16 | bf16, storage in T, arithmetic in f32, one rounding):
//   add_contig_<T>(const T* a, const T* b, T* out, u64 n)      out[i] = a[i] + b[i]
//   mul_contig_<T>(const T* a, const T* b, T* out, u64 n)      out[i] = a[i] * b[i]
//   scale_contig_<T>(const T* a, T* out, float s, u64 n)       out[i] = s * a[i]
//
// Versions:
//   v1 (this file): 1-D grid-stride loop, one element per thread per iteration, 64-bit
//   indices; the host caps the grid so any n works.
//
// Launch: block (256, 1, 1), grid (min(ceil(n / 256), cap), 1, 1); see
// crates/tensor/src/cuda/ops.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

template <typename T>
__device__ __forceinline__ void add_contig(const T* __restrict__ a, const T* __restrict__ b,
                                           T* __restrict__ out, lat_u64 n) {
    for (lat_u64 i = lat_global_thread(); i < n; i += lat_grid_threads()) {
        lat_store(out, i, lat_load(a, i) + lat_load(b, i));
    }
}

template <typename T>
__device__ __forceinline__ void mul_contig(const T* __restrict__ a, const T* __restrict__ b,
                                           T* __restrict__ out, lat_u64 n) {
    for (lat_u64 i = lat_global_thread(); i < n; i += lat_grid_threads()) {
        lat_store(out, i, lat_load(a, i) * lat_load(b, i));
    }
}

template <typename T>
__device__ __forceinline__ void scale_contig(const T* __restrict__ a, T* __restrict__ out, float s,
                                             lat_u64 n) {
    for (lat_u64 i = lat_global_thread(); i < n; i += lat_grid_threads()) {
        lat_store(out, i, s * lat_load(a, i));
    }
}

#define ELEMENTWISE_ENTRIES(SUFFIX, T)                                                          \
    extern "C" __global__ void add_contig_##SUFFIX(const T* a, const T* b, T* out, lat_u64 n) { \
        add_contig<T>(a, b, out, n);                                                            \
    }                                                                                           \
    extern "C" __global__ void mul_contig_##SUFFIX(const T* a, const T* b, T* out, lat_u64 n) { \
        mul_contig<T>(a, b, out, n);                                                            \
    }                                                                                           \
    extern "C" __global__ void scale_contig_##SUFFIX(const T* a, T* out, float s, lat_u64 n) {  \
        scale_contig<T>(a, out, s, n);                                                          \
    }

LAT_FOR_EACH_DTYPE(ELEMENTWISE_ENTRIES)
