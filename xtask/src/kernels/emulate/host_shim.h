// host_shim.h: runs linattn CUDA kernels on the CPU for `cargo xtask kernels --emulate`.
//
// One block at a time; each of its threads is a std::thread. `__shared__` becomes
// `static` (one copy, shared by the block's threads), `__syncthreads` a std::barrier over
// the block, `__shfl_xor_sync` an exchange through a per-warp slot array between two
// per-warp barriers (so every lane of a warp must reach each shuffle, as on a GPU with a
// full mask; float and int overloads). `atomicMin` on u64 is a compare-exchange loop on
// `std::atomic_ref`, `atomicOr` on u32 a `fetch_or`; `__dp4a` and the `__f*_rn`
// intrinsics are plain host arithmetic (round to nearest on x86-64 SSE). Built
// with g++ -std=c++20; checks index math, bounds, grid-stride loops and synchronization,
// not GPU timing or memory-model corner cases.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define __shared__ static

inline std::unique_ptr<std::barrier<>> emu_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
inline float emu_shuffle_slots[1024];

inline unsigned int emu_linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned int, float v, int offset) {
    const unsigned int t = emu_linear_thread();
    emu_shuffle_slots[t] = v;
    emu_warp_barriers[t / 32]->arrive_and_wait();
    const float r = emu_shuffle_slots[t ^ (unsigned int)offset];
    emu_warp_barriers[t / 32]->arrive_and_wait();
    return r;
}

inline int emu_shuffle_slots_int[1024];

// The integer shuffle, through its own slots (no float round trip of the bits).
inline int __shfl_xor_sync(unsigned int, int v, int offset) {
    const unsigned int t = emu_linear_thread();
    emu_shuffle_slots_int[t] = v;
    emu_warp_barriers[t / 32]->arrive_and_wait();
    const int r = emu_shuffle_slots_int[t ^ (unsigned int)offset];
    emu_warp_barriers[t / 32]->arrive_and_wait();
    return r;
}

inline unsigned int atomicOr(unsigned int* address, unsigned int value) {
    return std::atomic_ref<unsigned int>(*address).fetch_or(value);
}

// Signed 4 x 8-bit dot product plus c, as the sm_61+ instruction.
inline int __dp4a(int a, int b, int c) {
    for (int j = 0; j < 4; ++j) c += (int)(signed char)(a >> (8 * j)) * (int)(signed char)(b >> (8 * j));
    return c;
}

// IEEE round-to-nearest arithmetic: the host's default rounding mode (SSE, no x87).
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
    std::atomic_ref<unsigned long long> target(*address);
    unsigned long long old = target.load();
    while (value < old && !target.compare_exchange_weak(old, value)) {
    }
    return old;
}

inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }

// Runs `kernel` over the whole grid, block after block.
template <typename Kernel>
void emu_launch(dim3 grid, dim3 block, Kernel kernel) {
    gridDim = grid;
    blockDim = block;
    const unsigned int threads = block.x * block.y * block.z;
    if (threads % 32 != 0) std::abort();  // our kernels use whole warps
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                emu_block_barrier = std::make_unique<std::barrier<>>(threads);
                emu_warp_barriers.clear();
                for (unsigned int w = 0; w < threads / 32; ++w) emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
                std::vector<std::thread> pool;
                for (unsigned int t = 0; t < threads; ++t) {
                    pool.emplace_back([=] {
                        blockIdx = {bx, by, bz};
                        threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        kernel();
                    });
                }
                for (auto& th : pool) th.join();
            }
}
