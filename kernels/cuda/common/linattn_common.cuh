// linattn_common.cuh: device helpers shared by every linattn CUDA kernel.
//
// Compiled by NVRTC with no CUDA toolkit headers: this file avoids cuda_fp16.h and
// cuda_bf16.h and defines its own 16-bit float storage types and conversions.
//
// - `lat_bf16`, `lat_f16`: 2-byte storage structs (the bit patterns of bfloat16 and IEEE
//   half). Kernels load them, convert to f32, compute in f32 and convert back once.
// - bf16 -> f32 is exact (the top 16 bits of an f32); f32 -> bf16 rounds to nearest
//   even and keeps NaN a (quiet) NaN. f16 <-> f32 uses the PTX `cvt` instructions
//   (`cvt.rn.f16.f32` rounds to nearest even, handles subnormals, inf and NaN).
// - `lat_load<T>` / `lat_store<T>`: read or write one element as f32.
// - `lat_warp_sum`, `lat_warp_max`: butterfly reductions over a full 32-lane warp.
// - `LAT_FOR_EACH_DTYPE(X)`: expands `X(suffix, storage_type)` for f32, f16 and bf16, so a
//   templated kernel gets one extern "C" entry point per dtype: `<op>_<variant>_<suffix>`.
//
// Index arithmetic in kernels uses 64-bit integers wherever an offset can exceed 2^31.
#pragma once

struct __align__(2) lat_bf16 {
    unsigned short bits;
};

struct __align__(2) lat_f16 {
    unsigned short bits;
};

typedef unsigned long long lat_u64;

// -inf without math.h (NVRTC without toolkit headers has no INFINITY macro).
#define LAT_NEG_INF (__int_as_float(0xff800000))

__device__ __forceinline__ float lat_bf16_to_f32(lat_bf16 v) {
    return __uint_as_float(((unsigned int)v.bits) << 16);
}

__device__ __forceinline__ lat_bf16 lat_f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    lat_bf16 out;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        // NaN: keep the sign, force a quiet NaN (rounding could carry into inf).
        out.bits = (unsigned short)((u >> 16) | 0x0040u);
        return out;
    }
    unsigned int rounding_bias = 0x7fffu + ((u >> 16) & 1u);
    out.bits = (unsigned short)((u + rounding_bias) >> 16);
    return out;
}

#ifdef LINATTN_HOST_EMULATION
// Host emulation (`cargo xtask kernels --emulate`, g++ on x86-64): _Float16 converts with
// the same round-to-nearest-even as cvt.rn.f16.f32.
__device__ __forceinline__ float lat_f16_to_f32(lat_f16 v) {
    _Float16 h;
    __builtin_memcpy(&h, &v.bits, 2);
    return (float)h;
}

__device__ __forceinline__ lat_f16 lat_f32_to_f16(float f) {
    _Float16 h = (_Float16)f;
    lat_f16 out;
    __builtin_memcpy(&out.bits, &h, 2);
    return out;
}
#else
__device__ __forceinline__ float lat_f16_to_f32(lat_f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

__device__ __forceinline__ lat_f16 lat_f32_to_f16(float f) {
    lat_f16 out;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out.bits) : "f"(f));
    return out;
}
#endif

__device__ __forceinline__ float lat_to_f32(float v) { return v; }
__device__ __forceinline__ float lat_to_f32(lat_bf16 v) { return lat_bf16_to_f32(v); }
__device__ __forceinline__ float lat_to_f32(lat_f16 v) { return lat_f16_to_f32(v); }

template <typename T> struct LatFromF32;
template <> struct LatFromF32<float> {
    static __device__ __forceinline__ float convert(float v) { return v; }
};
template <> struct LatFromF32<lat_bf16> {
    static __device__ __forceinline__ lat_bf16 convert(float v) { return lat_f32_to_bf16(v); }
};
template <> struct LatFromF32<lat_f16> {
    static __device__ __forceinline__ lat_f16 convert(float v) { return lat_f32_to_f16(v); }
};

template <typename T> __device__ __forceinline__ T lat_from_f32(float v) {
    return LatFromF32<T>::convert(v);
}

template <typename T> __device__ __forceinline__ float lat_load(const T* p, lat_u64 i) {
    return lat_to_f32(p[i]);
}

template <typename T> __device__ __forceinline__ void lat_store(T* p, lat_u64 i, float v) {
    p[i] = lat_from_f32<T>(v);
}

__device__ __forceinline__ float lat_warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ float lat_warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// Sum over a whole block of up to 1024 threads (blockDim.x a multiple of 32). `scratch`
// is __shared__ float[32]; every thread gets the total. Contains __syncthreads, so all
// threads of the block must call it.
__device__ __forceinline__ float lat_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = lat_warp_sum(v);
    __syncthreads();  // scratch may still be read from a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

// Online-softmax statistics: running max `m` and sum `s` of exp(x - m). Combining with an
// empty side (m = -inf) must not produce exp(-inf - -inf) = NaN, hence the guards.
struct LatSoftmaxStats {
    float max;
    float sum;
};

__device__ __forceinline__ LatSoftmaxStats lat_softmax_push(LatSoftmaxStats st, float x) {
    if (x > st.max) {
        st.sum = (st.max == LAT_NEG_INF ? 0.0f : st.sum * expf(st.max - x)) + 1.0f;
        st.max = x;
    } else if (x != LAT_NEG_INF) {
        st.sum += expf(x - st.max);
    }
    return st;
}

__device__ __forceinline__ LatSoftmaxStats lat_softmax_merge(LatSoftmaxStats a, LatSoftmaxStats b) {
    const float m = fmaxf(a.max, b.max);
    if (m == LAT_NEG_INF) return a;
    LatSoftmaxStats out;
    out.max = m;
    out.sum = (a.max == LAT_NEG_INF ? 0.0f : a.sum * expf(a.max - m)) +
              (b.max == LAT_NEG_INF ? 0.0f : b.sum * expf(b.max - m));
    return out;
}

__device__ __forceinline__ LatSoftmaxStats lat_warp_softmax_merge(LatSoftmaxStats st) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        LatSoftmaxStats other;
        other.max = __shfl_xor_sync(0xffffffffu, st.max, offset);
        other.sum = __shfl_xor_sync(0xffffffffu, st.sum, offset);
        st = lat_softmax_merge(st, other);
    }
    return st;
}

// Global thread index and total thread count of a 1-D grid, in 64 bits.
__device__ __forceinline__ lat_u64 lat_global_thread() {
    return (lat_u64)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ lat_u64 lat_grid_threads() {
    return (lat_u64)gridDim.x * blockDim.x;
}

#define LAT_FOR_EACH_DTYPE(X) \
    X(f32, float)             \
    X(f16, lat_f16)           \
    X(bf16, lat_bf16)
