// tensor/matvec.wgsl: matrix-vector-shaped product C[b] = A[b] * op(B[b]) for m <= 8
// (decode and small batches), where the 64 x 64 tiles of matmul.wgsl would waste almost
// all their work.
//
// Entry point: matvec_split_k (v1; the CPU reference is v0, matmul_tiled the general
//   kernel). Workgroup of 256 invocations owns COLS output columns of one batch entry
//   and all m (<= 8) rows. Its invocations split K into SPLITS interleaved slices; each
//   keeps m f32 partial sums for its column in registers, then the partials are summed
//   by a tree reduction in workgroup memory and invocations of slice 0 store them.
//   - RHS_TRANSPOSED (B is W [N, K] row-major, the `linear` case): COLS = 8 columns,
//     SPLITS = 32 consecutive invocations per column reading consecutive elements of
//     the W row (coalesced), invocation t: column t / 32, slice t % 32.
//   - B [K, N]: COLS = 64 columns, SPLITS = 4; invocation t: column t % 64 (consecutive
//     invocations read consecutive elements of a B row), slice t / 64.
//   No subgroup operations, so no assumption about the subgroup size.
// Layout: A [batch, M, K] row-major; B [K, N] or [N, K], with a leading batch dim when
//   params.rhs_batch_stride is its per-batch element count (0: one B shared by all
//   batches); C [batch, M, N].
// Bindings: 0 lhs (read), 1 rhs (read), 2 dst (read_write, atomic words, must be
//   zero-filled: 16-bit results are OR-ed into their half word), 3 params (uniform).
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16. Accumulation in f32.
// Grid: batch * ceil(N / COLS) workgroups (params.total_groups), split over x and y by
//   the host; workgroups past params.total_groups exit. Requires 1 <= M <= 8 (the host
//   sends larger M to matmul_tiled).

//#import common/elements.wgsl

override RHS_TRANSPOSED: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    rhs_batch_stride: u32,
    col_groups: u32,
    total_groups: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> lhs: array<u32>;
@group(0) @binding(1) var<storage, read> rhs: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> params: Params;

const THREADS: u32 = 256u;
const MAX_M: u32 = 8u;

// Partial sums, [MAX_M][THREADS].
var<workgroup> partial: array<f32, 2048>;

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

// Output columns per workgroup.
fn cols_per_group() -> u32 {
    return select(64u, 8u, RHS_TRANSPOSED);
}

@compute @workgroup_size(256)
fn matvec_split_k(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let group = linear_workgroup(workgroup_id, num_workgroups);
    if group >= params.total_groups {
        return;
    }
    let m = min(params.m, MAX_M);
    let n = params.n;
    let k = params.k;
    let cols = cols_per_group();
    let splits = THREADS / cols;
    // Distance in invocation index between neighbouring slices of one column.
    var slice_stride = cols;
    var col_in_group = local % cols;
    var slice = local / cols;
    if RHS_TRANSPOSED {
        slice_stride = 1u;
        col_in_group = local / splits;
        slice = local % splits;
    }
    let batch = group / params.col_groups;
    let col = (group % params.col_groups) * cols + col_in_group;
    let lhs_base = batch * m * k;
    let rhs_base = batch * params.rhs_batch_stride;

    var acc: array<f32, 8>;
    for (var r = 0u; r < MAX_M; r++) {
        acc[r] = 0.0;
    }
    if col < n {
        for (var kk = slice; kk < k; kk += splits) {
            var b_index: u32;
            if RHS_TRANSPOSED {
                b_index = rhs_base + col * k + kk;
            } else {
                b_index = rhs_base + kk * n + col;
            }
            let b_val = load_rhs(b_index);
            for (var r = 0u; r < m; r++) {
                acc[r] = fma(load_lhs(lhs_base + r * k + kk), b_val, acc[r]);
            }
        }
    }
    for (var r = 0u; r < MAX_M; r++) {
        partial[r * THREADS + local] = acc[r];
    }
    workgroupBarrier();
    // Tree over the slices of each column; `splits` is a power of two.
    for (var half = splits / 2u; half > 0u; half = half / 2u) {
        if slice < half {
            for (var r = 0u; r < m; r++) {
                partial[r * THREADS + local] += partial[r * THREADS + local + half * slice_stride];
            }
        }
        workgroupBarrier();
    }
    if slice == 0u && col < n {
        let dst_base = batch * m * n;
        for (var r = 0u; r < m; r++) {
            store_dst(dst_base + r * n + col, partial[r * THREADS + local]);
        }
    }
}
