// matvec.cu: matrix-vector-shaped product C[b] = A[b] * op(B[b]) for m <= 8 (decode and
// small batches), where the 64x64 tiles of matmul.cu would waste almost all their work
// (linattn-tensor).
//
// Layout: A [batch, m, k] row-major; B [k, n] (or [n, k] when rhs_transposed = 1), at
// b + bi * b_batch_stride (stride 0 shares B over the batch); C [batch, m, n].
// T = f32 | f16 | bf16 in memory, f32 partial sums with fmaf, one rounding to T on store.
// Any n, k; 1 <= m <= 8 (MV_MAX_M; the host sends larger m to matmul_tiled). k = 0 writes
// zeros.
//
// Entry points:
//   matvec_splitk_<T>(const T* a, const T* b, T* c, u32 m, u32 n, u32 k, u32 batch,
//                     u64 b_batch_stride, u32 rhs_transposed)
//       v1 (v0 is matmul_naive): block of 256 threads owns a group of output columns of
//       one batch entry and all m rows; threads split k into interleaved slices and keep
//       m f32 partial sums each.
//       - rhs_transposed (W [n, k], the `linear` case): 8 columns per block, one warp per
//         column; its 32 lanes read consecutive elements of the W row (coalesced) and
//         are summed with lat_warp_sum (a CUDA warp is always 32 lanes).
//       - B [k, n]: 64 columns per block, 4 k slices; thread t reads column t % 64 of a B
//         row (coalesced), slice t / 64; slices are summed through shared memory.
//       Grid (column groups, batch) capped by the host; grid-stride loops cover the rest.
// Launch: see crates/tensor/src/cuda/ops.rs. Build with `cargo xtask kernels`.
#include "linattn_common.cuh"

#define MV_THREADS 256
#define MV_MAX_M 8
// Non-transposed geometry: MV_COLS columns x MV_SLICES k slices.
#define MV_COLS 64
#define MV_SLICES (MV_THREADS / MV_COLS)
// Transposed geometry: one warp per column.
#define MV_T_COLS (MV_THREADS / 32)

template <typename T>
__device__ __forceinline__ void matvec_splitk(const T* __restrict__ a, const T* __restrict__ b,
                                              T* __restrict__ c, unsigned int m, unsigned int n,
                                              unsigned int k, unsigned int batch,
                                              lat_u64 b_batch_stride, unsigned int rhs_transposed) {
    __shared__ float partial[MV_SLICES][MV_MAX_M][MV_COLS];
    const unsigned int tid = threadIdx.x;
    const unsigned int rows = m < MV_MAX_M ? m : MV_MAX_M;
    const unsigned int cols_per_block = rhs_transposed ? MV_T_COLS : MV_COLS;
    const unsigned int groups = (n + cols_per_block - 1) / cols_per_block;

    for (unsigned int bi = blockIdx.y; bi < batch; bi += gridDim.y) {
        const T* a_mat = a + (lat_u64)bi * m * k;
        const T* b_mat = b + (lat_u64)bi * b_batch_stride;
        T* c_mat = c + (lat_u64)bi * m * n;
        for (unsigned int group = blockIdx.x; group < groups; group += gridDim.x) {
            float acc[MV_MAX_M];
#pragma unroll
            for (int r = 0; r < MV_MAX_M; ++r) acc[r] = 0.0f;
            if (rhs_transposed) {
                const unsigned int lane = tid & 31;
                const unsigned int col = group * MV_T_COLS + (tid >> 5);
                if (col < n) {
                    const T* w_row = b_mat + (lat_u64)col * k;
                    for (unsigned int p = lane; p < k; p += 32) {
                        const float w = lat_load(w_row, p);
#pragma unroll
                        for (int r = 0; r < MV_MAX_M; ++r) {
                            if (r < (int)rows) acc[r] = fmaf(lat_load(a_mat, (lat_u64)r * k + p), w, acc[r]);
                        }
                    }
                }
                // Whole warps share one column, so every lane takes part in the shuffles.
#pragma unroll
                for (int r = 0; r < MV_MAX_M; ++r) {
                    if (r < (int)rows) acc[r] = lat_warp_sum(acc[r]);
                }
                if (lane == 0 && col < n) {
                    for (unsigned int r = 0; r < rows; ++r) lat_store(c_mat, (lat_u64)r * n + col, acc[r]);
                }
            } else {
                const unsigned int cc = tid % MV_COLS;
                const unsigned int slice = tid / MV_COLS;
                const unsigned int col = group * MV_COLS + cc;
                if (col < n) {
                    for (unsigned int p = slice; p < k; p += MV_SLICES) {
                        const float w = lat_load(b_mat, (lat_u64)p * n + col);
#pragma unroll
                        for (int r = 0; r < MV_MAX_M; ++r) {
                            if (r < (int)rows) acc[r] = fmaf(lat_load(a_mat, (lat_u64)r * k + p), w, acc[r]);
                        }
                    }
                }
#pragma unroll
                for (int r = 0; r < MV_MAX_M; ++r) partial[slice][r][cc] = acc[r];
                __syncthreads();
                if (slice == 0 && col < n) {
                    for (unsigned int r = 0; r < rows; ++r) {
                        float sum = 0.0f;
#pragma unroll
                        for (int s = 0; s < MV_SLICES; ++s) sum += partial[s][r][cc];
                        lat_store(c_mat, (lat_u64)r * n + col, sum);
                    }
                }
                __syncthreads();  // partial is reused by the next group
            }
        }
    }
}

#define MATVEC_ENTRIES(SUFFIX, T)                                                                  \
    extern "C" __global__ void matvec_splitk_##SUFFIX(                                             \
        const T* a, const T* b, T* c, unsigned int m, unsigned int n, unsigned int k,              \
        unsigned int batch, lat_u64 b_batch_stride, unsigned int rhs_transposed) {                 \
        matvec_splitk<T>(a, b, c, m, n, k, batch, b_batch_stride, rhs_transposed);                 \
    }

LAT_FOR_EACH_DTYPE(MATVEC_ENTRIES)
