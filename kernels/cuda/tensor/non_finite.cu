// non_finite.cu: the first non-finite (NaN, +Inf, -Inf) element of a tensor (linattn-tensor).
//
// Entry points (T = f32 | f16 | bf16; `found` holds u64 pairs [index, value bits] per
// slot, the index initialised to ~0 = none by the host):
//   first_non_finite_<T>(const T* x, u64 n, u64* found, u32 slot)
//       grid-stride over x; a thread tests its elements in index order and, at the first
//       non-finite one, does atomicMin(&found[2 * slot], index) and stops. The minimum
//       over all threads is the first non-finite element of x.
//   non_finite_value_<T>(const T* x, u64 n, u64* found, u32 slot)
//       thread 0 of one block: when found[2 * slot] < n, writes x[index] widened to f32
//       bits into found[2 * slot + 1]. Launched after first_non_finite on the same stream.
//
// Test: integer tests on the stored bits (exponent all ones: f32 0x7f800000, f16 0x7c00,
// bf16 0x7f80), no float compares. Widening: f32 as stored, bf16 the high half of an f32,
// f16 Inf keeps its sign and a NaN its sign and payload with the quiet bit set (as the
// `half` crate widens; no cvt, which would canonicalize the NaN).
//
// Versions:
//   v1 (this file): 1-D grid-stride loop, 64-bit indices, one atomic per thread that
//   finds something (none on the common all-finite path).
//
// Launch: first_non_finite: block (256, 1, 1), grid (min(ceil(n / 256), 32 * SMs), 1, 1);
// non_finite_value: block (32, 1, 1), grid (1, 1, 1). See crates/tensor/src/cuda/non_finite.rs.
// Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

__device__ __forceinline__ bool non_finite_bits(float v) {
    return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u;
}
__device__ __forceinline__ bool non_finite_bits(lat_f16 v) { return (v.bits & 0x7c00u) == 0x7c00u; }
__device__ __forceinline__ bool non_finite_bits(lat_bf16 v) { return (v.bits & 0x7f80u) == 0x7f80u; }

__device__ __forceinline__ unsigned int widened_bits(float v) { return __float_as_uint(v); }
__device__ __forceinline__ unsigned int widened_bits(lat_bf16 v) { return ((unsigned int)v.bits) << 16; }
__device__ __forceinline__ unsigned int widened_bits(lat_f16 v) {
    const unsigned int sign = ((unsigned int)(v.bits & 0x8000u)) << 16;
    const unsigned int mantissa = v.bits & 0x3ffu;
    return mantissa == 0 ? (sign | 0x7f800000u) : (sign | 0x7fc00000u | (mantissa << 13));
}

template <typename T>
__device__ __forceinline__ void first_non_finite(const T* __restrict__ x, lat_u64 n, lat_u64* found,
                                                 unsigned int slot) {
    for (lat_u64 i = lat_global_thread(); i < n; i += lat_grid_threads()) {
        if (non_finite_bits(x[i])) {
            atomicMin(&found[2ull * slot], i);
            return;
        }
    }
}

template <typename T>
__device__ __forceinline__ void non_finite_value(const T* __restrict__ x, lat_u64 n, lat_u64* found,
                                                 unsigned int slot) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const lat_u64 index = found[2ull * slot];
    if (index < n) found[2ull * slot + 1] = widened_bits(x[index]);
}

#define NON_FINITE_ENTRIES(SUFFIX, T)                                                                 \
    extern "C" __global__ void first_non_finite_##SUFFIX(const T* x, lat_u64 n, lat_u64* found,       \
                                                         unsigned int slot) {                         \
        first_non_finite<T>(x, n, found, slot);                                                       \
    }                                                                                                 \
    extern "C" __global__ void non_finite_value_##SUFFIX(const T* x, lat_u64 n, lat_u64* found,       \
                                                         unsigned int slot) {                         \
        non_finite_value<T>(x, n, found, slot);                                                       \
    }

LAT_FOR_EACH_DTYPE(NON_FINITE_ENTRIES)
