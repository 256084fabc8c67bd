// tensor/matmul.wgsl: tiled (batched) matrix product C[b] = A[b] * op(B[b]).
//
// Entry point: matmul_tiled (v2: shared-memory tiles; the CPU reference is v1).
//   Workgroup 16 x 16 = 256 invocations computes a 64 x 64 tile of C, each invocation
//   a 4 x 4 block at rows ty + 16 i and columns tx + 16 j. The K loop steps by 16: A and
//   B tiles (64 x 16 each, k-major) are staged in workgroup memory, zero-filled past the
//   matrix edges, so M, N and K need not be multiples of the tile.
// Layout: A [batch, M, K] row-major; B [K, N], or [N, K] when the override
//   RHS_TRANSPOSED is true; B has a leading batch dim when params.rhs_batch_stride is
//   its per-batch element count (0: one B shared by all batches); C [batch, M, N].
// Bindings: 0 lhs (read), 1 rhs (read), 2 dst (read_write, atomic words, must be
//   zero-filled: 16-bit results are OR-ed into their half word), 3 params (uniform).
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16. Accumulation in f32.
// Grid: batch * ceil(M / 64) * ceil(N / 64) workgroups, split over x and y by the host;
//   workgroups past params.total_tiles exit.

//#import common/elements.wgsl

override RHS_TRANSPOSED: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    rhs_batch_stride: u32,
    m_tiles: u32,
    n_tiles: u32,
    total_tiles: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> lhs: array<u32>;
@group(0) @binding(1) var<storage, read> rhs: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> params: Params;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const THREADS: u32 = 256u;
const PER_THREAD: u32 = 4u;

var<workgroup> lhs_tile: array<f32, 1024>; // [TILE_K][TILE_M]
var<workgroup> rhs_tile: array<f32, 1024>; // [TILE_K][TILE_N]

fn load_lhs(i: u32) -> f32 {
    return decode(lhs[word_of(i)], i);
}

fn load_rhs(i: u32) -> f32 {
    return decode(rhs[word_of(i)], i);
}

fn store_dst(i: u32, v: f32) {
    if DTYPE == DTYPE_F32 {
        atomicStore(&dst[i], bitcast<u32>(v));
    } else {
        atomicOr(&dst[word_of(i)], encode_bits(v) << lane_shift(i));
    }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = linear_workgroup(workgroup_id, num_workgroups);
    if tile >= params.total_tiles {
        return;
    }
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let n_tile = tile % params.n_tiles;
    let rest = tile / params.n_tiles;
    let m_tile = rest % params.m_tiles;
    let batch = rest / params.m_tiles;
    let row0 = m_tile * TILE_M;
    let col0 = n_tile * TILE_N;
    let lhs_base = batch * m * k;
    let rhs_base = batch * params.rhs_batch_stride;
    let tx = local_id.x;
    let ty = local_id.y;

    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    let k_steps = (k + TILE_K - 1u) / TILE_K;
    for (var step = 0u; step < k_steps; step++) {
        let k0 = step * TILE_K;
        for (var r = 0u; r < PER_THREAD; r++) {
            let e = local + r * THREADS;
            // A tile: 64 rows x 16 k, read along k.
            let a_row = e / TILE_K;
            let a_k = e % TILE_K;
            var a_val = 0.0;
            if row0 + a_row < m && k0 + a_k < k {
                a_val = load_lhs(lhs_base + (row0 + a_row) * k + k0 + a_k);
            }
            lhs_tile[a_k * TILE_M + a_row] = a_val;
            // B tile: 16 k x 64 columns, read along the contiguous dimension.
            var b_k: u32;
            var b_col: u32;
            if RHS_TRANSPOSED {
                b_col = e / TILE_K;
                b_k = e % TILE_K;
            } else {
                b_k = e / TILE_N;
                b_col = e % TILE_N;
            }
            var b_val = 0.0;
            if k0 + b_k < k && col0 + b_col < n {
                if RHS_TRANSPOSED {
                    b_val = load_rhs(rhs_base + (col0 + b_col) * k + k0 + b_k);
                } else {
                    b_val = load_rhs(rhs_base + (k0 + b_k) * n + col0 + b_col);
                }
            }
            rhs_tile[b_k * TILE_N + b_col] = b_val;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var a_reg: array<f32, 4>;
            var b_reg: array<f32, 4>;
            for (var i = 0u; i < PER_THREAD; i++) {
                a_reg[i] = lhs_tile[kk * TILE_M + ty + 16u * i];
                b_reg[i] = rhs_tile[kk * TILE_N + tx + 16u * i];
            }
            for (var i = 0u; i < PER_THREAD; i++) {
                for (var j = 0u; j < PER_THREAD; j++) {
                    acc[i * PER_THREAD + j] = fma(a_reg[i], b_reg[j], acc[i * PER_THREAD + j]);
                }
            }
        }
        workgroupBarrier();
    }

    let dst_base = batch * m * n;
    for (var i = 0u; i < PER_THREAD; i++) {
        let row = row0 + ty + 16u * i;
        for (var j = 0u; j < PER_THREAD; j++) {
            let col = col0 + tx + 16u * j;
            if row < m && col < n {
                store_dst(dst_base + row * n + col, acc[i * PER_THREAD + j]);
            }
        }
    }
}
