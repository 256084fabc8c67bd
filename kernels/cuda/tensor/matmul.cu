// matmul.cu: batched matrix product C[b] = A[b] * op(B[b]) (linattn-tensor).
//
// Layout: A [batch, m, k] row-major; B [k, n] (or [n, k] when rhs_transposed = 1), at
// b + bi * b_batch_stride (stride 0 shares B over the batch); C [batch, m, n].
// T = f32 | f16 | bf16 in memory, f32 in shared memory and registers, f32 accumulation
// with fmaf, one rounding to T on store. Any m, n, k (edges are bounds-checked and
// zero-filled); k = 0 writes zeros.
//
// Entry points:
//   matmul_naive_<T>(const T* a, const T* b, T* c, u32 m, u32 n, u32 k, u32 batch,
//                    u64 b_batch_stride, u32 rhs_transposed)
//       v1: one thread per output element; block (16, 16, 1), grid (ceil(n/16),
//       ceil(m/16), batch), all three dimensions walked with grid strides. Slow, simple:
//       the GPU-side cross-check for v2.
//   matmul_tiled_<T>(same arguments)
//       v2: 64x64 output tile per block of 256 threads, k in steps of 16 through shared
//       memory (A stored k-major so both operands are read along a row of shared
//       memory), 4x4 register micro-tile per thread at rows ty + 16 i, columns
//       tx + 16 j (conflict-free shared reads, coalesced stores). Grid (tiles_m,
//       tiles_n, batch) capped by the host; grid-stride loops cover the rest.
//   matmul_tiled128_<T>(same arguments)
//       v3: the v2 kernel with 128x128 tiles, k steps of 8 and an 8x8 micro-tile per
//       thread (64 FMAs per 16 shared loads instead of 16 per 8); for large outputs.
// Launch: see crates/tensor/src/cuda/ops.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

// Tiled kernels use 16 x 16 = 256 threads; a tile is (16 MICRO) x (16 MICRO) outputs.
#define MM_THREADS 256

template <typename T>
__device__ __forceinline__ void matmul_naive(const T* __restrict__ a, const T* __restrict__ b,
                                             T* __restrict__ c, unsigned int m, unsigned int n,
                                             unsigned int k, unsigned int batch,
                                             lat_u64 b_batch_stride, unsigned int rhs_transposed) {
    for (unsigned int bi = blockIdx.z; bi < batch; bi += gridDim.z) {
        const T* a_mat = a + (lat_u64)bi * m * k;
        const T* b_mat = b + (lat_u64)bi * b_batch_stride;
        T* c_mat = c + (lat_u64)bi * m * n;
        for (unsigned int row = blockIdx.y * blockDim.y + threadIdx.y; row < m;
             row += gridDim.y * blockDim.y) {
            for (unsigned int col = blockIdx.x * blockDim.x + threadIdx.x; col < n;
                 col += gridDim.x * blockDim.x) {
                float acc = 0.0f;
                for (unsigned int p = 0; p < k; ++p) {
                    const lat_u64 b_index = rhs_transposed ? (lat_u64)col * k + p : (lat_u64)p * n + col;
                    acc = fmaf(lat_load(a_mat, (lat_u64)row * k + p), lat_load(b_mat, b_index), acc);
                }
                lat_store(c_mat, (lat_u64)row * n + col, acc);
            }
        }
    }
}

template <typename T, int MM_MICRO, int MM_TILE_K>
__device__ __forceinline__ void matmul_tiled(const T* __restrict__ a, const T* __restrict__ b,
                                             T* __restrict__ c, unsigned int m, unsigned int n,
                                             unsigned int k, unsigned int batch,
                                             lat_u64 b_batch_stride, unsigned int rhs_transposed) {
    constexpr int MM_TILE_M = 16 * MM_MICRO;
    constexpr int MM_TILE_N = 16 * MM_MICRO;
    // +1 column of padding: the transposing stores hit at most 2 lanes per bank.
    __shared__ float a_tile[MM_TILE_K][MM_TILE_M + 1];
    __shared__ float b_tile[MM_TILE_K][MM_TILE_N + 1];
    const unsigned int tid = threadIdx.x;
    const unsigned int tx = tid % 16;
    const unsigned int ty = tid / 16;
    const unsigned int tiles_m = (m + MM_TILE_M - 1) / MM_TILE_M;
    const unsigned int tiles_n = (n + MM_TILE_N - 1) / MM_TILE_N;

    for (unsigned int bi = blockIdx.z; bi < batch; bi += gridDim.z) {
        const T* a_mat = a + (lat_u64)bi * m * k;
        const T* b_mat = b + (lat_u64)bi * b_batch_stride;
        T* c_mat = c + (lat_u64)bi * m * n;
        for (unsigned int tile_n = blockIdx.y; tile_n < tiles_n; tile_n += gridDim.y) {
            for (unsigned int tile_m = blockIdx.x; tile_m < tiles_m; tile_m += gridDim.x) {
                const unsigned int row0 = tile_m * MM_TILE_M;
                const unsigned int col0 = tile_n * MM_TILE_N;
                float acc[MM_MICRO][MM_MICRO];
#pragma unroll
                for (int i = 0; i < MM_MICRO; ++i)
#pragma unroll
                    for (int j = 0; j < MM_MICRO; ++j) acc[i][j] = 0.0f;

                for (unsigned int k0 = 0; k0 < k; k0 += MM_TILE_K) {
                    // A tile [64 rows, 16 k]: consecutive threads read along k.
#pragma unroll
                    for (unsigned int e = tid; e < MM_TILE_M * MM_TILE_K; e += MM_THREADS) {
                        const unsigned int r = e / MM_TILE_K;
                        const unsigned int kk = e % MM_TILE_K;
                        const unsigned int gr = row0 + r;
                        const unsigned int gk = k0 + kk;
                        a_tile[kk][r] = (gr < m && gk < k) ? lat_load(a_mat, (lat_u64)gr * k + gk) : 0.0f;
                    }
                    // B tile [16 k, 64 cols]: read along whichever axis is contiguous.
                    if (rhs_transposed) {
#pragma unroll
                        for (unsigned int e = tid; e < MM_TILE_K * MM_TILE_N; e += MM_THREADS) {
                            const unsigned int kk = e % MM_TILE_K;
                            const unsigned int cc = e / MM_TILE_K;
                            const unsigned int gk = k0 + kk;
                            const unsigned int gc = col0 + cc;
                            b_tile[kk][cc] = (gk < k && gc < n) ? lat_load(b_mat, (lat_u64)gc * k + gk) : 0.0f;
                        }
                    } else {
#pragma unroll
                        for (unsigned int e = tid; e < MM_TILE_K * MM_TILE_N; e += MM_THREADS) {
                            const unsigned int kk = e / MM_TILE_N;
                            const unsigned int cc = e % MM_TILE_N;
                            const unsigned int gk = k0 + kk;
                            const unsigned int gc = col0 + cc;
                            b_tile[kk][cc] = (gk < k && gc < n) ? lat_load(b_mat, (lat_u64)gk * n + gc) : 0.0f;
                        }
                    }
                    __syncthreads();
#pragma unroll
                    for (int kk = 0; kk < MM_TILE_K; ++kk) {
                        float a_frag[MM_MICRO];
                        float b_frag[MM_MICRO];
#pragma unroll
                        for (int i = 0; i < MM_MICRO; ++i) a_frag[i] = a_tile[kk][ty + 16 * i];
#pragma unroll
                        for (int j = 0; j < MM_MICRO; ++j) b_frag[j] = b_tile[kk][tx + 16 * j];
#pragma unroll
                        for (int i = 0; i < MM_MICRO; ++i)
#pragma unroll
                            for (int j = 0; j < MM_MICRO; ++j) acc[i][j] = fmaf(a_frag[i], b_frag[j], acc[i][j]);
                    }
                    __syncthreads();
                }

#pragma unroll
                for (int i = 0; i < MM_MICRO; ++i) {
                    const unsigned int row = row0 + ty + 16 * i;
                    if (row >= m) continue;
#pragma unroll
                    for (int j = 0; j < MM_MICRO; ++j) {
                        const unsigned int col = col0 + tx + 16 * j;
                        if (col < n) lat_store(c_mat, (lat_u64)row * n + col, acc[i][j]);
                    }
                }
            }
        }
    }
}

#define MATMUL_ENTRIES(SUFFIX, T)                                                                  \
    extern "C" __global__ void matmul_naive_##SUFFIX(const T* a, const T* b, T* c, unsigned int m, \
                                                     unsigned int n, unsigned int k,               \
                                                     unsigned int batch, lat_u64 b_batch_stride,   \
                                                     unsigned int rhs_transposed) {                \
        matmul_naive<T>(a, b, c, m, n, k, batch, b_batch_stride, rhs_transposed);                  \
    }                                                                                              \
    extern "C" __global__ void matmul_tiled_##SUFFIX(                \
        const T* a, const T* b, T* c, unsigned int m, unsigned int n, unsigned int k,              \
        unsigned int batch, lat_u64 b_batch_stride, unsigned int rhs_transposed) {                 \
        matmul_tiled<T, 4, 16>(a, b, c, m, n, k, batch, b_batch_stride, rhs_transposed);           \
    }                                                                                              \
    extern "C" __global__ void matmul_tiled128_##SUFFIX(                                           \
        const T* a, const T* b, T* c, unsigned int m, unsigned int n, unsigned int k,              \
        unsigned int batch, lat_u64 b_batch_stride, unsigned int rhs_transposed) {                 \
        matmul_tiled<T, 8, 8>(a, b, c, m, n, k, batch, b_batch_stride, rhs_transposed);            \
    }

LAT_FOR_EACH_DTYPE(MATMUL_ENTRIES)
